/* session-sync.js: the browser side of sessiond's cross-tab sync.
 *
 * Plain ES2020, no build step, no framework: include it with
 *   <script src="/session/sync.js"></script>
 * and call SessionSync.start(). It talks to the endpoints of
 * sessiond.flask's blueprint (GET /session/config, POST /session/heartbeat,
 * GET/PUT /session/state, GET /session/events) and honours every setting
 * GetClientConfig serves:
 *
 * - features.cross_tab_sync off: start() reads the configuration and stops
 *   there. Nothing is stored, no timer runs, no request follows, set()
 *   rejects with FeatureDisabled: the script is inert.
 * - sync.localstorage_prefix: every key this script keeps in localStorage
 *   (state, session, leader, activity, message) and the BroadcastChannel's
 *   name start with it.
 * - One tab of the origin is the leader: it holds a lease in localStorage
 *   (the leader key: its id and the time it last answered). Every
 *   sync.check_interval each tab looks at the lease; the leader renews it,
 *   checks the session with the server (GET /session/state, which does not
 *   touch) and holds the one event stream (GET /session/events) for all
 *   tabs; what it learns goes to the others over the BroadcastChannel (or
 *   localStorage events where there is none). A leader that has not
 *   answered for sync.tab_response_timeout past its due time is given up
 *   on and another tab takes the lease; a leader that closes hands it back
 *   at once (pagehide).
 * - sync.heartbeat_interval: the leader sends POST /session/heartbeat at
 *   most that often, and only when a tab saw the user active (pointer,
 *   keys, wheel, touch) since the last one, so that an open but abandoned
 *   tab lets the session reach its idle timeout. heartbeat() forces one
 *   (a "stay signed in" button).
 * - sync.timeout: a request the server has not answered by then is
 *   abandoned; the script fires "offline" and tries again at the next
 *   check ("online" when it answers again).
 * - sync.max_data_size: set() refuses data whose JSON is larger (in UTF-8
 *   bytes) before sending anything. The server also counts its own part of
 *   the state, so a write under the limit may still answer 413.
 * - warning_threshold: "warning" fires once when the session's remaining
 *   time reaches it (from the expires_in of the last check or heartbeat);
 *   a heartbeat that moves the end later allows the next warning.
 * - features.optimistic_ui: set() shows the new state at once ("change"
 *   with optimistic: true) and rolls back to the server's state if the
 *   server refuses it (Conflict or TooLarge: "change" with rolledBack:
 *   true, then "conflict"); without it the state changes only once the
 *   server has taken it.
 * - A session that ends (logout in another tab, logout everywhere, expiry)
 *   is noticed by the leader's stream at once or its next check at the
 *   latest, and reaches every tab: "logout" (destroyed, terminated,
 *   evicted, or the cookie gone) or "expired" (idle, lifetime, absolute).
 *
 * API: SessionSync.start(options) -> Promise; .state, .version, .session,
 * .enabled, .isLeader; .set(data) -> Promise(version); .heartbeat();
 * .stop(); .on(name, fn) (fn gets the event's detail) or
 * addEventListener(name, fn). Events: change, warning, expired, logout,
 * and also session (a new expiry from the server), conflict, platform,
 * offline, online.
 */
(function (global) {
  'use strict';

  const EXPIRY_REASONS = new Set(['idle', 'lifetime', 'absolute']);
  const ACTIVITY_EVENTS = ['pointerdown', 'keydown', 'wheel', 'touchstart'];

  function sameJSON(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
  }

  function utf8Length(text) {
    return new TextEncoder().encode(text).length;
  }

  function syncError(name, message, detail) {
    const e = new Error(message);
    e.name = name;
    Object.assign(e, detail || {});
    return e;
  }

  class SessionSyncClient extends EventTarget {
    constructor() {
      super();
      this.tabId = Math.random().toString(36).slice(2) + Date.now().toString(36);
      this.state = null;
      this.version = null;
      this.session = null;
      this.config = null;
      this.enabled = false;
      this.isLeader = false;
      this.ended = false;
      this._started = null;
      this._timer = null;
      this._warnTimer = null;
      this._deadline = null;
      this._warned = false;
      this._offline = false;
      this._events = null;
      this._channel = null;
      this._writes = Promise.resolve();
      this._lastHeartbeat = Date.now();
      this._lastActivityWrite = 0;
      this._listeners = [];
    }

    on(name, fn) {
      this.addEventListener(name, (e) => fn(e.detail));
      return this;
    }

    _emit(name, detail) {
      this.dispatchEvent(new CustomEvent(name, { detail: detail || {} }));
    }

    // -- start and stop ------------------------------------------------------

    start(options) {
      if (!this._started) this._started = this._start(options || {});
      return this._started;
    }

    async _start(options) {
      this.base = (options.base || '/session').replace(/\/$/, '');
      // The configuration comes first; the sync timeout is not known yet.
      const res = await fetch(this.base + '/config', { credentials: 'same-origin', cache: 'no-store' });
      if (!res.ok) throw syncError('SyncError', 'GET ' + this.base + '/config: ' + res.status);
      this.config = await res.json();
      const features = this.config.features || {};
      if (!features.cross_tab_sync) {
        this.enabled = false; // inert: nothing stored, no timer, no request
        return this;
      }
      const s = this.config.sync;
      this.enabled = true;
      this.prefix = s.localstorage_prefix;
      this.checkMs = s.check_interval * 1000;
      this.heartbeatMs = s.heartbeat_interval * 1000;
      this.timeoutMs = s.timeout * 1000;
      this.tabMs = s.tab_response_timeout * 1000;
      this.maxSize = s.max_data_size;
      this.warningMs = this.config.warning_threshold * 1000;
      this.optimistic = !!features.optimistic_ui;

      const cached = this._read('state');
      if (cached) {
        this.state = cached.data;
        this.version = cached.version;
      }
      if (typeof BroadcastChannel === 'function') {
        this._channel = new BroadcastChannel(this.prefix + 'channel');
        this._channel.onmessage = (e) => this._onMessage(e.data);
      }
      this._listen(global, 'storage', (e) => this._onStorage(e));
      this._listen(global, 'pagehide', () => this._resign());
      const activity = () => this._activity();
      for (const name of ACTIVITY_EVENTS) this._listen(global, name, activity, { passive: true, capture: true });

      await this._check();
      if (!this.ended && this.session) {
        this._timer = setInterval(() => this._tick(), this.checkMs);
        this._tick();
      }
      return this;
    }

    _listen(target, name, fn, opts) {
      target.addEventListener(name, fn, opts);
      this._listeners.push([target, name, fn, opts]);
    }

    stop() {
      clearInterval(this._timer);
      clearTimeout(this._warnTimer);
      this._timer = null;
      this._resign();
      for (const [target, name, fn, opts] of this._listeners) target.removeEventListener(name, fn, opts);
      this._listeners = [];
      if (this._channel) this._channel.close();
      this._channel = null;
    }

    // -- localStorage and messages between tabs -----------------------------

    _key(name) {
      return this.prefix + name;
    }

    _read(name) {
      try {
        return JSON.parse(global.localStorage.getItem(this._key(name)));
      } catch (e) {
        return null;
      }
    }

    _write(name, value) {
      try {
        if (value === null) global.localStorage.removeItem(this._key(name));
        else global.localStorage.setItem(this._key(name), JSON.stringify(value));
      } catch (e) {
        // Storage full or refused (private mode): the tabs then share less.
      }
    }

    _post(message) {
      message.from = this.tabId;
      if (this._channel) {
        this._channel.postMessage(message);
      } else {
        // No BroadcastChannel: a localStorage write raises "storage" in the
        // other tabs (a nonce makes every message a change).
        message.nonce = Math.random();
        this._write('message', message);
      }
    }

    _onStorage(e) {
      if (!e.key || !e.key.startsWith(this.prefix) || e.newValue === null) return;
      let value;
      try {
        value = JSON.parse(e.newValue);
      } catch (err) {
        return;
      }
      if (e.key === this._key('message') && !this._channel) this._onMessage(value);
      else if (e.key === this._key('state')) this._applyState(value.version, value.data, 'tab');
    }

    _onMessage(m) {
      if (!m || m.from === this.tabId || this.ended) return;
      switch (m.type) {
        case 'state':
          this._applyState(m.version, m.data, 'tab');
          break;
        case 'session':
          this._applySession(m.session, m.deadline, false);
          break;
        case 'warning':
          this._warn();
          break;
        case 'ended':
          this._end(m.kind, m.reason, false);
          break;
        case 'platform':
          this._emit('platform', m.detail);
          break;
        case 'resign':
          this._tick(); // the leader left: take over now, not at the next check
          break;
      }
    }

    // -- leader election ------------------------------------------------------

    _tick() {
      // A tab without a session (a login page) never leads: it would hold
      // a lease it does not renew.
      if (this.ended || !this.enabled || !this.session) return;
      const now = Date.now();
      const lease = this._read('leader');
      const free = !lease || lease.id === this.tabId || now - lease.ts > this.checkMs + this.tabMs;
      if (!free) {
        if (this.isLeader) this._stepDown();
        return;
      }
      this._write('leader', { id: this.tabId, ts: now });
      if (!this.isLeader) {
        this.isLeader = true;
        this._openEvents();
      }
      this._check();
      const active = Number(global.localStorage.getItem(this._key('activity')) || 0);
      if (active > this._lastHeartbeat && now - this._lastHeartbeat >= this.heartbeatMs) this.heartbeat();
    }

    _stepDown() {
      this.isLeader = false;
      if (this._events) this._events.close();
      this._events = null;
    }

    _resign() {
      if (!this.isLeader) return;
      this._stepDown();
      const lease = this._read('leader');
      if (lease && lease.id === this.tabId) this._write('leader', null);
      this._post({ type: 'resign' });
    }

    _activity() {
      const now = Date.now();
      if (now - this._lastActivityWrite < 1000) return;
      this._lastActivityWrite = now;
      try {
        global.localStorage.setItem(this._key('activity'), String(now));
      } catch (e) {
        // see _write
      }
    }

    // -- the server -----------------------------------------------------------

    async _request(method, path, body) {
      const ctrl = new AbortController();
      const timer = setTimeout(() => ctrl.abort(), this.timeoutMs);
      const init = { method, credentials: 'same-origin', cache: 'no-store', signal: ctrl.signal, headers: {} };
      if (body !== undefined) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      try {
        const res = await fetch(this.base + path, init);
        let json = null;
        try {
          json = await res.json();
        } catch (e) {
          json = null;
        }
        if (this._offline) {
          this._offline = false;
          this._emit('online');
        }
        return { status: res.status, body: json || {} };
      } catch (e) {
        if (!this._offline) {
          this._offline = true;
          this._emit('offline', { error: String(e) });
        }
        throw syncError('SyncTimeout', 'the server did not answer ' + method + ' ' + path +
                        ' within sync.timeout');
      } finally {
        clearTimeout(timer);
      }
    }

    async _check() {
      let r;
      try {
        r = await this._request('GET', '/state');
      } catch (e) {
        return;
      }
      if (r.status === 200) {
        this._applySession(r.body, Date.now() + r.body.expires_in * 1000, true);
        this._applyState(r.body.version, r.body.data, 'server');
      } else if (r.status === 401) {
        this._lost(r.body);
      }
    }

    _openEvents() {
      if (this._events || typeof EventSource !== 'function') return;
      const es = new EventSource(this.base + '/events');
      this._events = es;
      const data = (e) => JSON.parse(e.data);
      es.addEventListener('state', (e) => this._applyState(data(e).version, data(e).data, 'server'));
      es.addEventListener('sync', (e) => this._applyState(data(e).version, data(e).data, 'server'));
      es.addEventListener('warning', () => {
        this._warn();
        this._post({ type: 'warning' });
      });
      es.addEventListener('platform', (e) => {
        this._emit('platform', data(e));
        this._post({ type: 'platform', detail: data(e) });
      });
      es.addEventListener('ended', (e) => {
        const d = data(e);
        es.close();
        this._events = null;
        // A session past its grace period ends without an end_reason (it is
        // computed, not stored): the check gets it from the server.
        if (d.reason) this._end(EXPIRY_REASONS.has(d.reason) ? 'expired' : 'logout', d.reason, true);
        else this._check();
      });
      // "rotated": the server ends the stream and EventSource reconnects
      // with the new cookie by itself.
    }

    _lost(body) {
      const hadSession = this.session || this._read('session');
      this.session = null;
      if (!hadSession) return; // never logged in here: nothing ended
      const reason = body.error === 'ended' ? body.reason : 'no_session';
      this._end(EXPIRY_REASONS.has(reason) ? 'expired' : 'logout', reason, true);
    }

    _end(kind, reason, broadcast) {
      if (this.ended) return;
      this.ended = true;
      clearInterval(this._timer);
      clearTimeout(this._warnTimer);
      this._resign();
      this._write('state', null);
      this._write('session', null);
      if (broadcast) this._post({ type: 'ended', kind, reason });
      this.session = null;
      this._emit(kind, { reason });
    }

    // -- state and session ------------------------------------------------------

    _applyState(version, data, source) {
      if (version === undefined || version === null) return;
      if (version === this.version && sameJSON(data, this.state)) return;
      if (this.version !== null && version < this.version && source !== 'rollback') return;
      this.version = version;
      this.state = data === undefined ? null : data;
      if (source !== 'tab') {
        this._write('state', { version, data: this.state });
        this._post({ type: 'state', version, data: this.state });
      }
      this._emit('change', { state: this.state, version, source, rolledBack: source === 'rollback' && this.optimistic });
    }

    _applySession(summary, deadline, broadcast) {
      if (!summary) return;
      const previous = this.session;
      this.session = {
        user_id: summary.user_id, session_id: summary.session_id, platform_id: summary.platform_id,
        state: summary.state, expires_at: deadline,
      };
      if (previous && previous.user_id && summary.user_id && previous.user_id !== summary.user_id) {
        this._end('logout', 'switched', true);
        return;
      }
      if (broadcast) {
        this._write('session', this.session);
        this._post({ type: 'session', session: summary, deadline });
      }
      this._armWarning(deadline, !!summary.warning);
      this._emit('session', { session: this.session, expires_in: Math.round((deadline - Date.now()) / 1000) });
    }

    _armWarning(deadline, warningNow) {
      clearTimeout(this._warnTimer);
      this._deadline = deadline;
      const wait = deadline - this.warningMs - Date.now();
      if (warningNow || wait <= 0) {
        this._warn();
        return;
      }
      this._warned = false; // the end moved out of the warning window
      this._warnTimer = setTimeout(() => this._warn(), wait);
    }

    _warn() {
      if (this._warned || this.ended) return;
      this._warned = true;
      // The end is known to the second (expires_in is whole seconds): the
      // time left is never shown above the threshold that warned.
      const left = this._deadline === null ? null
        : Math.min(this.warningMs / 1000, Math.max(0, Math.floor((this._deadline - Date.now()) / 1000)));
      this._emit('warning', { expires_in: left, expires_at: this._deadline });
    }

    // -- the API ----------------------------------------------------------------

    async heartbeat() {
      if (!this.enabled || this.ended) return null;
      this._lastHeartbeat = Date.now();
      const r = await this._request('POST', '/heartbeat');
      if (r.status === 200) this._applySession(r.body, Date.now() + r.body.expires_in * 1000, true);
      else if (r.status === 401) this._lost(r.body);
      return r.body;
    }

    set(data) {
      if (!this.enabled) {
        return Promise.reject(syncError('FeatureDisabled', 'cross-tab sync is off (features.cross_tab_sync)',
                                        { feature: 'cross_tab_sync' }));
      }
      if (this.ended) return Promise.reject(syncError('NoSession', 'the session has ended'));
      const size = utf8Length(JSON.stringify(data === undefined ? null : data));
      if (size > this.maxSize) {
        return Promise.reject(syncError('TooLarge', 'the state is ' + size + ' bytes, over sync.max_data_size (' +
                                        this.maxSize + ')', { max: this.maxSize }));
      }
      const before = { version: this.version, data: this.state };
      if (this.optimistic) {
        this.state = data;
        this._emit('change', { state: data, version: this.version, source: 'local', optimistic: true });
      }
      // Writes go one after the other, each with the version the previous left.
      const write = this._writes.then(() => this._put(data, before));
      this._writes = write.catch(() => undefined);
      return write;
    }

    async _put(data, before) {
      const r = await this._request('PUT', '/state', { data, expected_version: this.version });
      if (r.status === 200) {
        this._applyState(r.body.version, r.body.data, 'server');
        return r.body.version;
      }
      if (r.status === 401) {
        this._lost(r.body);
        throw syncError('NoSession', 'the session has ended');
      }
      const refused = r.status === 409 ? syncError('Conflict', 'the state changed meanwhile', { version: r.body.version })
        : r.status === 413 ? syncError('TooLarge', 'the server refused the state as too large', { max: r.body.max })
          : syncError('SyncError', 'PUT /state: ' + r.status);
      if (r.status === 409) {
        this._applyState(r.body.version, r.body.data, 'rollback');
      } else if (this.optimistic && !sameJSON(this.state, before.data)) {
        this.state = before.data;
        this._emit('change', { state: this.state, version: this.version, source: 'rollback', rolledBack: true });
      }
      if (r.status === 409) this._emit('conflict', { version: r.body.version, state: r.body.data });
      throw refused;
    }
  }

  global.SessionSync = new SessionSyncClient();
  global.SessionSync.SessionSyncClient = SessionSyncClient;
})(window);
