/* Watch streams: see watch.h.
 *
 * The watchers of all sessions live in one registry, an engine observer
 * (found again with engine_find_observer(), freed with the engine), hashed
 * by session id. Engine events arrive after their transaction committed,
 * from a zero timer, never from inside a handler; each is turned into a
 * reply on the watchers of that session.
 *
 * The expiry warning and the end of the grace period are not engine events
 * (expiry is computed, not stored), so each watcher has a timer armed for
 * the next moment its state can change: when expires_in reaches the
 * warning threshold, then when the grace period is over. A touch moves the
 * end; the timer then finds the session still fine, clears its warning
 * flag, and re-arms itself. Only watched sessions have timers.
 *
 * Lifetime: a watcher is referenced by its call (until the final reply, an
 * error from call_reply_continues(), or the call's cancel callback when the
 * client hangs up) and by a delivery in progress; its embedded timer is
 * closed when the last reference goes, and the memory freed in the close
 * callback. A client that stops reading makes call_reply_continues() fail
 * with -ENOBUFS once the server's output cap is reached, which ends the
 * stream: a slow reader costs at most that cap.
 *
 * The final reply (the session ended, or left memory before the first
 * reply) tells the ended row, read from the store with
 * engine_session_by_id_later(): on the loop at once when not a fleet
 * (SQLite); on a fleet by the store's writer after the next commit, so
 * that the loop never waits for PostgreSQL. Meanwhile the watcher hears
 * nothing more, and the read holds a reference: the reply goes out when it
 * is in, to nobody if the client went away, and not at all when the
 * engine is freed first.
 */
#include "watch.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "clock.h"
#include "daemon.h"
#include "engine.h"
#include "log.h"
#include "macro.h"
#include "methods.h"
#include "server.h"

#define WATCH_BUCKETS 1024

struct watcher {
        struct registry *reg;
        struct call *call; /* NULL once the stream is over */
        struct engine_ref ref;
        char id[TOKEN_ID_STRING_LEN + 1];
        struct watcher *prev, *next; /* bucket list */
        bool linked;
        bool warned;
        int64_t version_told; /* the newest sync version sent */
        /* A fleet's store: the sync state is read after a commit, off the
         * loop (engine_sync_get_ref_later); the first reply ("state")
         * waits for it, and sync events heard meanwhile make one more read. */
        bool state_pending, sync_pending, sync_again;
        /* The final reply waits for its ended row (final_read_start). */
        bool final_pending;
        bool final_or_event; /* no row read: {"event"} alone (else an error) */
        const char *final_event;
        unsigned refs;
        uv_timer_t timer;
};

struct registry {
        struct daemon *d;
        struct watcher *buckets[WATCH_BUCKETS];
        size_t count;
};

static size_t bucket_of(const char *id) {
        size_t h = 5381;

        for (const char *p = id; *p; p++)
                h = h * 33 + (unsigned char) *p;
        return h % WATCH_BUCKETS;
}

static void watcher_close_cb(uv_handle_t *h) {
        free(h->data);
}

static void watcher_unlink(struct watcher *w) {
        struct registry *reg = w->reg;

        if (!w->linked)
                return;
        if (w->prev)
                w->prev->next = w->next;
        else
                reg->buckets[bucket_of(w->id)] = w->next;
        if (w->next)
                w->next->prev = w->prev;
        w->prev = w->next = NULL;
        w->linked = false;
        reg->count--;
}

static void watcher_unref(struct watcher *w) {
        assert(w->refs > 0);
        if (--w->refs > 0)
                return;
        watcher_unlink(w);
        uv_timer_stop(&w->timer);
        uv_close((uv_handle_t *) &w->timer, watcher_close_cb);
}

/* The stream is over (final reply sent, or the call is gone). */
static void watcher_end(struct watcher *w) {
        if (!w->call)
                return;
        w->call = NULL;
        watcher_unlink(w);
        watcher_unref(w); /* the call's reference */
}

static json_t *event_reply(const char *event, const struct engine_info *info) {
        json_t *session = methods_session_info(info);

        if (!session)
                return NULL;
        return json_pack("{s:s, s:o}", "event", event, "session", session);
}

/* Sends a continues reply; ends the watcher when the stream broke. */
static void send_continues(struct watcher *w, json_t *params) {
        int r;

        if (!w->call) {
                json_decref(params);
                return;
        }
        if (!params) {
                /* Out of memory: end the stream rather than skip an event. */
                struct call *c = w->call;
                watcher_end(w);
                methods_reply_oom(c);
                return;
        }
        r = call_reply_continues(w->call, params);
        if (r < 0) {
                /* The server freed the call (without its cancel callback). */
                log_debug("Watch stream of session %s ended: %s", w->id, strerror(-r));
                watcher_end(w);
        }
}

/* The final reply: params, or without them the error r (out of memory
 * when r says nothing else). */
static void send_final(struct watcher *w, json_t *params, int r) {
        struct call *c = w->call;

        if (!c) {
                json_decref(params);
                return;
        }
        watcher_end(w);
        if (params)
                call_reply(c, params);
        else if (r < 0 && r != -ENOMEM && r != -ENOENT)
                methods_reply_error(c, METHODS_SESSION_INTERFACE, r, &(struct engine_error){0});
        else
                methods_reply_oom(c);
}

static void timer_cb(uv_timer_t *t);

/* Arms the timer for Unix millisecond `at` of the daemon's clock (a few ms
 * after it, so that clock_now_ms() has reached it when the callback runs:
 * a timer that fires early only finds nothing changed and re-arms). */
static void arm_at(struct watcher *w, int64_t at) {
        int64_t delay = at - clock_now_ms() + 5;

        uv_timer_start(&w->timer, timer_cb, delay > 0 ? (uint64_t) delay : 0, 0);
}

/* Looks at the session and tells what changed since last time. */
static void evaluate(struct watcher *w) {
        struct engine *e = w->reg->d->engine;
        const struct sessiond_config *c = w->reg->d->config;
        int64_t now = methods_now_ms();
        struct engine_info info;

        if (!w->call || w->final_pending)
                return;
        if (engine_peek(e, now, &w->ref, &info) < 0)
                return; /* ended: the "ended" event is on its way */
        switch (info.state) {
        case ENGINE_STATE_ACTIVE:
                if (!info.warning) {
                        w->warned = false;
                        arm_at(w, info.expires_at_ms - c->timeout.warning_threshold * 1000);
                        return;
                }
                if (!w->warned) {
                        w->warned = true;
                        send_continues(w, event_reply("warning", &info));
                        if (!w->call)
                                return;
                }
                arm_at(w, info.expires_at_ms); /* then grace, or a touch moved it */
                return;
        case ENGINE_STATE_GRACE:
                if (!w->warned) {
                        w->warned = true;
                        send_continues(w, event_reply("warning", &info));
                        if (!w->call)
                                return;
                }
                arm_at(w, info.expires_at_ms + c->timeout.expiration_grace * 1000);
                return;
        case ENGINE_STATE_EXPIRED:
        case ENGINE_STATE_ENDED:
                /* No longer honoured: the stream is over, even if cleanup
                 * has not ended the session in the store yet. */
                send_final(w, event_reply("ended", &info), 0);
                return;
        }
}

static void timer_cb(uv_timer_t *t) {
        struct watcher *w = t->data;

        w->refs++;
        evaluate(w);
        watcher_unref(w);
}

struct final_reply {
        const char *event;
        json_t *reply;
};

static int final_cb(const struct engine_info *info, void *userdata) {
        struct final_reply *f = userdata;

        if (strcmp(f->event, "ended") == 0 && info->state == ENGINE_STATE_ENDED &&
            info->end_reason == ENGINE_END_ROTATED)
                f->event = "rotated"; /* as the "ended" event with reason rotated says it */
        f->reply = event_reply(f->event, info);
        return 1;
}

/* The sync state as it is now; its version (-1: none could be read). */
static int64_t sync_fields(struct engine *e, const char *id, json_t *reply) {
        int64_t version = 0;
        char *data = NULL;
        size_t size = 0;

        if (!reply || engine_sync_get_by_id(e, id, &version, &data, &size) < 0)
                return -1;
        json_object_set_new(reply, "version", json_integer(version));
        if (data)
                json_object_set_new(reply, "data", json_stringn(data, size));
        free(data);
        return version;
}

/* The ended row is in (or could not be read): the final reply. */
static void final_got(int r, const struct engine_info *info, void *userdata) {
        struct watcher *w = userdata;
        struct final_reply f = {w->final_event, NULL};

        w->final_pending = false;
        if (r == -ECANCELED) {
                watcher_unref(w);
                return;
        }
        if (info)
                (void) final_cb(info, &f);
        if (!f.reply && w->final_or_event)
                f.reply = json_pack("{s:s}", "event", "ended");
        send_final(w, f.reply, r); /* a read that failed: StorageError */
        watcher_unref(w);
}

/* Reads the ended row for the final reply: event "ended" or "rotated";
 * or_event: without a row the reply is the event alone. */
static void final_read_start(struct watcher *w, const char *event, bool or_event) {
        int r;

        w->refs++;
        w->final_pending = true;
        w->final_event = event;
        w->final_or_event = or_event;
        r = engine_session_by_id_later(w->reg->d->engine, methods_now_ms(), w->id, &w->ref, final_got, w, NULL);
        if (r < 0)
                final_got(r, NULL, w);
}

static void sync_read_start(struct watcher *w);

/* A sync state read after a commit, for the first reply or a sync event:
 * the reply is built from the session as memory has it now. */
static void sync_got(int r, int64_t version, const char *data, size_t size, void *userdata) {
        struct watcher *w = userdata;
        struct engine *e = w->reg->d->engine;
        bool state = w->state_pending;
        struct engine_info info;
        json_t *reply;

        w->state_pending = w->sync_pending = false;
        if (!w->call || r == -ECANCELED || w->final_pending) {
                watcher_unref(w);
                return;
        }
        if (engine_peek(e, methods_now_ms(), &w->ref, &info) < 0) {
                /* Left memory meanwhile: its "ended" event may already have
                 * been told to nobody (the first reply had not gone out). */
                if (state)
                        final_read_start(w, "ended", true);
                watcher_unref(w);
                return;
        }
        reply = event_reply(state ? "state" : "sync", &info);
        if (reply && r == 0) {
                json_object_set_new(reply, "version", json_integer(version));
                if (data)
                        json_object_set_new(reply, "data", json_stringn(data, size));
        }
        if (state) {
                w->version_told = r == 0 ? version : -1;
                send_continues(w, reply);
                evaluate(w); /* arms the timer; warns at once if it is due */
        } else if (r == 0 && version > w->version_told) {
                w->version_told = version;
                send_continues(w, reply);
        } else
                json_decref(reply);
        if (w->call && w->sync_again) {
                w->sync_again = false;
                sync_read_start(w);
        }
        watcher_unref(w);
}

static void sync_read_start(struct watcher *w) {
        struct engine_sync_read *x;
        int r;

        w->refs++;
        w->sync_pending = true;
        r = engine_sync_get_ref_later(w->reg->d->engine, &w->ref, sync_got, w, &x);
        if (r < 0)
                sync_got(r, 0, NULL, 0, w);
}

/* One watcher hears one event: an end is its final reply, a sync write or a
 * platform switch a reply that continues, an extension a new evaluation. */
static void watcher_hear(struct engine *e, struct watcher *w, const struct engine_event *ev) {
        struct engine_info info;
        int64_t now = methods_now_ms();
        const char *reason;

        if (!w->call || w->final_pending)
                return;
        if (w->state_pending && strcmp(ev->kind, "ended") != 0)
                return; /* the first reply, still to come, tells the state after it */
        if (strcmp(ev->kind, "ended") == 0) {
                reason = json_string_value(json_object_get(ev->detail, "reason"));
                final_read_start(w, reason && strcmp(reason, "rotated") == 0 ? "rotated" : "ended", false);
        } else if (engine_peek(e, now, &w->ref, &info) < 0) {
                return;
        } else if (strcmp(ev->kind, "sync") == 0 && engine_sync_reads_later(e)) {
                if (w->sync_pending)
                        w->sync_again = true;
                else
                        sync_read_start(w);
        } else if (strcmp(ev->kind, "sync") == 0) {
                /* The state is read as it is now, so several writes heard
                 * at once (another daemon's, read after they all landed),
                 * or heard out of order (this daemon's and another's),
                 * are told once, newest version first: never a version
                 * twice, never one going back. */
                json_t *reply = event_reply("sync", &info);
                int64_t version = sync_fields(e, w->id, reply);

                if (version >= 0 && version <= w->version_told) {
                        json_decref(reply);
                        return;
                }
                if (version > w->version_told)
                        w->version_told = version;
                send_continues(w, reply);
        } else if (strcmp(ev->kind, "platform_switched") == 0) {
                send_continues(w, event_reply("platform", &info));
        } else {
                evaluate(w); /* extended: the end moved */
        }
}

/* The engine's events: the sessions some watcher follows. */
static void observer_cb(const struct engine_event *ev, void *userdata) {
        struct registry *reg = userdata;
        struct engine *e = reg->d->engine;
        _cleanup_free_ struct watcher **list = NULL;
        struct watcher *w;
        size_t n = 0, allocated = 0;

        if (!ev->session_id || reg->count == 0)
                return;
        if (strcmp(ev->kind, "sync") != 0 && strcmp(ev->kind, "platform_switched") != 0 &&
            strcmp(ev->kind, "ended") != 0 && strcmp(ev->kind, "extended") != 0)
                return;
        /* Take references first: a reply may end a watcher. */
        for (w = reg->buckets[bucket_of(ev->session_id)]; w; w = w->next)
                if (strcmp(w->id, ev->session_id) == 0) {
                        if (n == allocated) {
                                size_t k = allocated ? allocated * 2 : 4;
                                struct watcher **p = realloc(list, k * sizeof *p);
                                if (!p)
                                        break;
                                list = p;
                                allocated = k;
                        }
                        w->refs++;
                        list[n++] = w;
                }
        for (size_t i = 0; i < n; i++) {
                watcher_hear(e, list[i], ev);
                watcher_unref(list[i]);
        }
}

static void registry_free(void *userdata) {
        struct registry *reg = userdata;

        /* The server closed every connection before the engine goes, so the
         * cancel callbacks have ended every watcher; what is left are timers
         * being closed, which free themselves. */
        for (size_t b = 0; b < WATCH_BUCKETS; b++)
                while (reg->buckets[b]) {
                        struct watcher *w = reg->buckets[b];

                        if (w->call)
                                call_set_cancel(w->call, NULL, NULL);
                        w->call = NULL;
                        watcher_unlink(w);
                        watcher_unref(w);
                }
        free(reg);
}

static struct registry *registry_get(struct daemon *d) {
        struct registry *reg = engine_find_observer(d->engine, observer_cb);

        if (reg)
                return reg;
        reg = calloc(1, sizeof *reg);
        if (!reg)
                return NULL;
        reg->d = d;
        if (engine_add_observer(d->engine, observer_cb, registry_free, reg) < 0) {
                free(reg);
                return NULL;
        }
        return reg;
}

static void cancel_cb(struct call *c, void *userdata) {
        struct watcher *w = userdata;

        (void) c;
        log_debug("Watch stream of session %s cancelled: the client went away.", w->id);
        watcher_end(w);
}

void watch_start(struct daemon *d, struct call *c, const char *token) {
        struct engine_error err = {0};
        struct engine_info info;
        struct registry *reg;
        struct watcher *w;
        json_t *reply;
        size_t b;
        int r;

        w = calloc(1, sizeof *w);
        if (!w) {
                methods_reply_oom(c);
                return;
        }
        r = engine_resolve(d->engine, methods_now_ms(), token, &w->ref, &info, &err);
        if (r < 0) {
                free(w);
                methods_reply_error(c, METHODS_SESSION_INTERFACE, r, &err);
                return;
        }
        reg = registry_get(d);
        if (!reg) {
                free(w);
                methods_reply_oom(c);
                return;
        }
        w->reg = reg;
        w->call = c;
        w->refs = 1; /* the call's */
        memcpy(w->id, info.id, sizeof w->id);
        uv_timer_init(d->loop, &w->timer);
        w->timer.data = w;

        reply = event_reply("state", &info);
        if (reply && d->config->features.cross_tab_sync && !engine_sync_reads_later(d->engine))
                w->version_told = sync_fields(d->engine, w->id, reply);
        if (!reply) {
                w->call = NULL;
                watcher_unref(w);
                methods_reply_oom(c);
                return;
        }
        b = bucket_of(w->id);
        w->next = reg->buckets[b];
        if (w->next)
                w->next->prev = w;
        reg->buckets[b] = w;
        w->linked = true;
        reg->count++;
        call_set_cancel(c, cancel_cb, w);

        if (d->config->features.cross_tab_sync && engine_sync_reads_later(d->engine)) {
                json_decref(reply); /* built again once the sync state is read */
                w->state_pending = true;
                sync_read_start(w);
                return;
        }
        w->refs++;
        send_continues(w, reply);
        evaluate(w); /* arms the timer; warns at once if it is due */
        watcher_unref(w);
}
