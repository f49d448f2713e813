/* The PostgreSQL backend's part in a fleet (DESIGN 8; postgres-internal.h
 * lists the backend's files): what daemons sharing one database need of
 * each other.
 *
 *   - The auxiliary connection (its own mutex: called without s->lock):
 *     each daemon's heartbeat row, the daemons seen (Status).
 *   - The leader (features.clustering): a session-level advisory lock,
 *     PG_LEADER_LOCK, held on a connection of its own; losing the
 *     connection loses the lock (the server frees it at once, even after
 *     kill -9), and another daemon's next try takes it.
 *   - The listener (on the loop, never blocking it after its first
 *     connection): LISTEN sessiond_changes, each other daemon's committed
 *     changes read as "<origin>:<kind>:<row>,..." and handed to the engine,
 *     which reads those rows again (fleet.c). Ends, rotations, renewals,
 *     client changes, sync writes, platform switches and evictions are
 *     NOTIFYs of the transaction that made them (postgres-uow.c): delivered
 *     if and only if it commits. Creations are not: they are announced by
 *     this file after their commit, and a daemon that died before
 *     announcing its last ones is noticed by the others' liveness check,
 *     which makes them read the live sessions again ("announcing creations"
 *     below says why and the bound).
 *   - When the listening connection is lost, changes may have been missed:
 *     the engine is told (lost = true), and again once it is back.
 */
#include "postgres-internal.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* ---- the auxiliary connection: without s->lock ----------------------------------------- */

/* Runs sql with text parameters on the auxiliary connection (aux_lock
 * held); *ret (if given) gets the result. */
int pg_aux_query(struct pg_store *p, const char *sql, const struct params *a, ExecStatusType want, const char *what,
                 PGresult **ret) {
        PGresult *res;
        int r = pg_conn_ready(p, &p->aux);

        if (r < 0)
                return r;
        res = PQexecParams(p->aux.c, sql, a ? a->n : 0, NULL, a ? a->v : NULL, NULL, NULL, 0);
        r = pg_result_check(p->name, p->aux.c, res, want, what);
        if (r < 0 || !ret)
                PQclear(res);
        else
                *ret = res;
        return r;
}

int pg_heartbeat(struct store *s, const char *daemon_id, bool leader, int64_t now) {
        struct pg_store *p = pg(s);
        struct params a = {0};
        int r;

        param_text(&a, daemon_id);
        param_int(&a, now);
        param_text(&a, leader ? "true" : "false");
        pthread_mutex_lock(&p->aux_lock);
        r = pg_aux_query(p,
                         "INSERT INTO sessiond_daemons (daemon_id, seen_ms, leader) VALUES ($1, $2, $3) "
                         "ON CONFLICT (daemon_id) DO UPDATE SET seen_ms = EXCLUDED.seen_ms, leader = EXCLUDED.leader",
                         &a, PGRES_COMMAND_OK, "writing the heartbeat", NULL);
        pthread_mutex_unlock(&p->aux_lock);
        return r < 0 ? r : 0;
}

int pg_daemons_each(struct store *s, int64_t since_ms, store_daemon_fn cb, void *userdata) {
        struct pg_store *p = pg(s);
        struct params a = {0};
        _cleanup_pqclear_ PGresult *res = NULL;
        int r;

        param_int(&a, since_ms);
        pthread_mutex_lock(&p->aux_lock);
        r = pg_aux_query(p,
                         "SELECT daemon_id, seen_ms, leader FROM sessiond_daemons WHERE seen_ms >= $1 "
                         "ORDER BY seen_ms DESC, daemon_id COLLATE \"C\"",
                         &a, PGRES_TUPLES_OK, "reading the daemons", &res);
        pthread_mutex_unlock(&p->aux_lock);
        /* The callback runs without the lock: it may ask again. */
        for (int i = 0; r == 0 && i < PQntuples(res); i++) {
                struct store_daemon_row row = {
                        .daemon_id = PQgetvalue(res, i, 0),
                        .seen_ms = pg_value_int(res, i, 1),
                        .leader = strcmp(PQgetvalue(res, i, 2), "t") == 0,
                };
                r = cb(&row, userdata);
        }
        return r;
}

/* ---- the leader ----------------------------------------------------------------------------- */

/* Holding: a round trip proves the connection (and so the lock) is still
 * there. Not holding: take it if free. A lost connection is leadership
 * lost: false now, a new connection and a new try later (backoff). */
int pg_leader_try(struct store *s, bool *is_leader) {
        struct pg_store *p = pg(s);
        struct params a = {0};
        int r;

        *is_leader = false;
        if (p->leader_held) {
                _cleanup_pqclear_ PGresult *res = PQexec(p->leader.c, "SELECT 1");

                if (PQresultStatus(res) == PGRES_TUPLES_OK) {
                        *is_leader = true;
                        return 0;
                }
                log_warning("Store %s: the leader's connection was lost; this daemon is no longer the leader.",
                            p->name);
                p->leader_held = false;
                pg_conn_close(&p->leader);
                pg_backoff(&p->leader);
                return 0;
        }
        r = pg_conn_ready(p, &p->leader);
        if (r < 0)
                return r;
        param_int(&a, PG_LEADER_LOCK);
        _cleanup_pqclear_ PGresult *res =
                PQexecParams(p->leader.c, "SELECT pg_try_advisory_lock($1::bigint)", 1, NULL, a.v, NULL, NULL, 0);
        r = pg_result_check(p->name, p->leader.c, res, PGRES_TUPLES_OK, "trying the leader's lock");
        if (r < 0)
                return r;
        p->leader_held = *is_leader = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        return 0;
}

/* ---- the listener: LISTEN on the loop ---------------------------------------------------- */

enum listener_state {
        L_WAITING,    /* for the timer, to connect again */
        L_CONNECTING, /* PQconnectPoll */
        L_LISTEN,     /* SET application_name and LISTEN sent, their results awaited */
        L_LISTENING,
};

/* The statement in flight on the listener's connection (one at a time). */
enum listener_query {
        LQ_NONE,
        LQ_ANNOUNCE, /* NOTIFY of this daemon's creations (l->sending) */
        LQ_LIVENESS, /* which daemons are connected */
};

struct pg_listener {
        struct pg_store *store; /* NULL once the store is closed */
        uv_loop_t *loop;
        store_change_fn fn;
        void *userdata;
        char origin[PG_ORIGIN_LEN + 1];
        PGconn *conn;
        enum listener_state state;
        uv_poll_t *poll;
        int poll_fd;
        uv_timer_t *timer; /* to connect again */
        uv_timer_t *pace;  /* the next announcement, PG_ANNOUNCE_MS after the last */
        uv_timer_t *tick;  /* the liveness check, every PG_LIVENESS_MS */
        uv_async_t *async; /* the writer thread queued creations */
        int delay_ms;
        bool lost;        /* reported lost, recovery not yet reported */
        bool listened;    /* a LISTEN has taken effect once */
        unsigned handles; /* uv handles not yet closed (each frees itself) */

        enum listener_query busy;
        bool query_ok;        /* the statement in flight succeeded */
        bool check_due;       /* a liveness check is to be sent */
        int64_t announced_at; /* monotonic ms */
        int64_t *sending;     /* the creations of the announcement in flight */
        size_t n_sending, allocated_sending;
        /* The other daemons known to be up: connected at the last check,
         * or heard from since (a hello or any change). */
        char (*live)[PG_ORIGIN_LEN + 1];
        size_t n_live, allocated_live;
};

static void listener_free_maybe(struct pg_listener *l) {
        if (!l->store && l->handles == 0) {
                free(l->sending);
                free(l->live);
                free(l);
        }
}

static void handle_closed(uv_handle_t *h) {
        struct pg_listener *l = h->data;

        free(h);
        l->handles--;
        listener_free_maybe(l);
}

static void handle_close(void *h) {
        if (h)
                uv_close((uv_handle_t *) h, handle_closed);
}

static void listener_close_poll(struct pg_listener *l) {
        handle_close(l->poll);
        l->poll = NULL;
}

static void listener_poll_cb(uv_poll_t *h, int status, int events);
static void listener_timer_cb(uv_timer_t *t);
static void listener_pump(struct pg_listener *l);
static void listener_lost(struct pg_listener *l);
static void listener_pace_cb(uv_timer_t *t);

/* Watches the connection's socket for events (a new handle when libpq
 * has a new socket). */
static int listener_watch(struct pg_listener *l, int events) {
        int fd = PQsocket(l->conn), r;

        if (fd < 0)
                return -EBADF;
        if (l->poll && l->poll_fd != fd)
                listener_close_poll(l);
        if (!l->poll) {
                l->poll = malloc(sizeof *l->poll);
                if (!l->poll)
                        return -ENOMEM;
                r = uv_poll_init(l->loop, l->poll, fd);
                if (r < 0) {
                        free(l->poll);
                        l->poll = NULL;
                        return r;
                }
                l->poll->data = l;
                l->poll_fd = fd;
                l->handles++;
                uv_unref((uv_handle_t *) l->poll);
        }
        return uv_poll_start(l->poll, events, listener_poll_cb);
}

static void listener_report(struct pg_listener *l, enum store_change_kind kind, int64_t row_key, bool lost) {
        struct store_change c = {.kind = kind, .row_key = lost ? 0 : row_key};

        l->fn(&c, lost, l->userdata);
}

/* ---- announcing creations ----
 * A transaction that sends NOTIFY takes PostgreSQL's database-wide notify
 * lock before its commit record and holds it until that commit is flushed:
 * such commits never share a WAL flush, so creations announced in their
 * own transaction made three daemons' creates slower than one daemon's.
 * A creation needs no such guarantee: a daemon that does not know a
 * session finds it in the store by its token (fleet_lookup), so a late
 * announcement makes nothing valid that should not be. Creations
 * (STORE_OP_INSERT; a rotation's new row goes with its old row's end) are
 * therefore queued at commit (pg_announce_created()) and sent here, on the
 * listener's connection, in one statement of their own, at most one in
 * flight and one every PG_ANNOUNCE_MS per daemon. Ends, rotations,
 * renewals, client changes, sync writes, platform switches and evictions
 * stay NOTIFYs of their own transaction: delivered if and only if it
 * commits, even if the daemon dies right after.
 *
 * What a creation announced late or never costs, and its catch-up. The
 * queue is lost only with the daemon's process (a lost connection keeps
 * it: the announcement is sent again once reconnected; one sent twice
 * is harmless, the others read the row again). Every listener sets its
 * application_name to PG_APP_PREFIX + origin and, every PG_LIVENESS_MS,
 * reads which daemons are connected to the database (pg_stat_activity); a
 * daemon that was connected at the previous check and no longer is may
 * have died with creations unannounced, and the listener reports changes
 * missed (lost = true: the engine reads the live sessions again), unless
 * that daemon said goodbye: at store_close a daemon sends what it still
 * has queued and "x" (the bye) in one statement. Bound: a daemon's creation
 * is known to the others within PG_ANNOUNCE_MS plus a commit while it
 * runs; if its process dies, within PG_LIVENESS_MS of the server seeing
 * its connections close (at once for a process that died; for a host
 * that vanished, the server's TCP keepalive, which the listener sets to
 * about PG_DEAD_PEER_S) plus one pass over the live sessions. */

/* The pending creations, under the store's lock. */
static bool announce_pending(struct pg_store *p) {
        bool r;

        pthread_mutex_lock(&p->announce_lock);
        r = p->n_announce > 0;
        pthread_mutex_unlock(&p->announce_lock);
        return r;
}

/* The announcement in flight failed: its creations go back to the front of
 * the queue. */
static void listener_requeue(struct pg_listener *l) {
        struct pg_store *p = l->store;
        size_t need;

        if (!p || l->n_sending == 0)
                return;
        pthread_mutex_lock(&p->announce_lock);
        need = p->n_announce + l->n_sending;
        if (need > p->allocated_announce) {
                int64_t *a = reallocarray(p->announce, need, sizeof *a);

                if (!a) {
                        pthread_mutex_unlock(&p->announce_lock);
                        log_error("Store %s: out of memory; %zu creations are not announced to the other daemons.",
                                  p->name, l->n_sending);
                        l->n_sending = 0;
                        return;
                }
                p->announce = a;
                p->allocated_announce = need;
        }
        memmove(p->announce + l->n_sending, p->announce, p->n_announce * sizeof *p->announce);
        memcpy(p->announce, l->sending, l->n_sending * sizeof *l->sending);
        p->n_announce = need;
        pthread_mutex_unlock(&p->announce_lock);
        l->n_sending = 0;
}

/* A PostgreSQL text[] literal of the payloads announcing rows (each at
 * most PG_NOTIFY_MAX bytes: "<origin>:c:<row>,c:<row>..."), then, with bye,
 * "<origin>:x:0". NULL when out of memory. */
static char *announcement(const char *origin, const int64_t *rows, size_t n, bool bye) {
        char *buf = NULL;
        size_t size = 0, len = 0;
        FILE *f = open_memstream(&buf, &size);

        if (!f)
                return NULL;
        fputc('{', f);
        for (size_t i = 0; i < n; i++) {
                char item[32];
                int k = snprintf(item, sizeof item, "c:%" PRId64, rows[i]);

                if (len > 0 && len + 1 + (size_t) k > PG_NOTIFY_MAX) {
                        fputs("\",", f);
                        len = 0;
                }
                if (len == 0)
                        len = (size_t) fprintf(f, "\"%s:%s", origin, item) - 1;
                else
                        len += (size_t) fprintf(f, ",%s", item);
        }
        if (len > 0)
                fputc('"', f);
        if (bye)
                fprintf(f, "%s\"%s:x:0\"", n > 0 ? "," : "", origin);
        fputc('}', f);
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

#define PG_LIVENESS_SQL                                                 \
        "SELECT substr(application_name, " PG_STRINGIFY(                \
                PG_APP_PREFIX_LEN) " + 1) FROM pg_stat_activity WHERE " \
                                   "datname = current_database() AND application_name LIKE '" PG_APP_PREFIX "%'"
#define PG_ANNOUNCE_SQL "SELECT count(pg_notify('" PG_CHANNEL "', x)) FROM unnest($1::text[]) AS x"

/* Sends what is in flight; the rest goes when the socket can take it. */
static void listener_flush(struct pg_listener *l) {
        int r = PQflush(l->conn);

        if (r < 0 || listener_watch(l, r > 0 ? UV_READABLE | UV_WRITABLE : UV_READABLE) < 0)
                listener_lost(l);
}

static void listener_send(struct pg_listener *l, enum listener_query q, const char *sql, const char *param) {
        const char *v[1] = {param};

        if (!PQsendQueryParams(l->conn, sql, param ? 1 : 0, NULL, param ? v : NULL, NULL, NULL, 0)) {
                listener_lost(l);
                return;
        }
        l->busy = q;
        l->query_ok = false;
        listener_flush(l);
}

static void listener_announce(struct pg_listener *l) {
        struct pg_store *p = l->store;
        _cleanup_free_ char *arr = NULL;
        int64_t *t;
        size_t ta;

        /* The queue and the (empty) in-flight buffer change places. */
        pthread_mutex_lock(&p->announce_lock);
        t = l->sending;
        ta = l->allocated_sending;
        l->sending = p->announce;
        l->allocated_sending = p->allocated_announce;
        l->n_sending = p->n_announce;
        p->announce = t;
        p->allocated_announce = ta;
        p->n_announce = 0;
        pthread_mutex_unlock(&p->announce_lock);

        arr = announcement(l->origin, l->sending, l->n_sending, false);
        if (!arr) {
                listener_requeue(l);
                return;
        }
        l->announced_at = pg_mono_ms();
        listener_send(l, LQ_ANNOUNCE, PG_ANNOUNCE_SQL, arr);
}

/* The next statement, if none is in flight: a due liveness check, or the
 * queued creations (not sooner than PG_ANNOUNCE_MS after the last). */
static void listener_pump(struct pg_listener *l) {
        int64_t now, wait;

        if (!l->store || l->state != L_LISTENING || l->busy != LQ_NONE)
                return;
        if (l->check_due) {
                l->check_due = false;
                listener_send(l, LQ_LIVENESS, PG_LIVENESS_SQL, NULL);
                return;
        }
        if (!announce_pending(l->store))
                return;
        now = pg_mono_ms();
        wait = l->announced_at + PG_ANNOUNCE_MS - now;
        if (wait > 0) {
                if (!uv_is_active((uv_handle_t *) l->pace))
                        uv_timer_start(l->pace, listener_pace_cb, (uint64_t) wait, 0);
                return;
        }
        listener_announce(l);
}

static void listener_pace_cb(uv_timer_t *t) {
        listener_pump(t->data);
}

static void listener_async_cb(uv_async_t *a) {
        listener_pump(a->data);
}

static void listener_tick_cb(uv_timer_t *t) {
        struct pg_listener *l = t->data;

        l->check_due = true;
        listener_pump(l);
}

/* A daemon that said goodbye (announced all it created) needs no catch-up. */
static void live_forget(struct pg_listener *l, const char *origin, size_t n) {
        for (size_t i = 0; i < l->n_live; i++)
                if (strlen(l->live[i]) == n && strncmp(l->live[i], origin, n) == 0) {
                        memmove(l->live + i, l->live + i + 1, (l->n_live - i - 1) * sizeof *l->live);
                        l->n_live--;
                        return;
                }
}

static bool live_has(char (*live)[PG_ORIGIN_LEN + 1], size_t n, const char *origin, size_t len) {
        for (size_t i = 0; i < n; i++)
                if (strlen(live[i]) == len && strncmp(live[i], origin, len) == 0)
                        return true;
        return false;
}

/* Another daemon heard from: watched from now on, even if it dies before
 * this listener's next check sees it connected. */
static void live_note(struct pg_listener *l, const char *origin, size_t len) {
        if (len != PG_ORIGIN_LEN || live_has(l->live, l->n_live, origin, len))
                return;
        if (l->n_live == l->allocated_live) {
                size_t m = l->allocated_live ? 2 * l->allocated_live : 8;
                char(*a)[PG_ORIGIN_LEN + 1] = reallocarray(l->live, m, sizeof *a);

                if (!a)
                        return;
                l->live = a;
                l->allocated_live = m;
        }
        memcpy(l->live[l->n_live], origin, len);
        l->live[l->n_live++][len] = '\0';
}

/* The daemons connected now, against those of the last check. */
static void listener_liveness(struct pg_listener *l, const PGresult *res) {
        char(*now)[PG_ORIGIN_LEN + 1] = calloc((size_t) PQntuples(res) + 1, sizeof *now);
        size_t n = 0, gone = 0;

        if (!now)
                return;
        for (int i = 0; i < PQntuples(res); i++) {
                const char *o = PQgetvalue(res, i, 0);

                if (strlen(o) != PG_ORIGIN_LEN || strcmp(o, l->origin) == 0 || live_has(now, n, o, PG_ORIGIN_LEN))
                        continue;
                memcpy(now[n++], o, PG_ORIGIN_LEN + 1);
        }
        for (size_t i = 0; i < l->n_live; i++)
                if (!live_has(now, n, l->live[i], PG_ORIGIN_LEN)) {
                        log_notice("Store %s: daemon %s left without saying goodbye; its last creations may not "
                                   "have been announced.",
                                   l->store->name, l->live[i]);
                        gone++;
                }
        free(l->live);
        l->live = now;
        l->n_live = n;
        l->allocated_live = (size_t) PQntuples(res) + 1;
        if (gone > 0)
                listener_report(l, STORE_CHANGE_UPDATED, 0, true); /* the engine reads the live sessions again */
}

/* The connection is gone: tell once, close, connect again later. */
static void listener_lost(struct pg_listener *l) {
        if (l->busy == LQ_ANNOUNCE)
                listener_requeue(l);
        l->busy = LQ_NONE;
        if (l->store && !l->lost) {
                log_warning("Store %s: the connection that listens for other daemons' changes was lost; "
                            "reconnecting.",
                            l->store->name);
                l->lost = true;
                listener_report(l, STORE_CHANGE_UPDATED, 0, true);
        }
        if (!l->store) /* closed by the callback */
                return;
        listener_close_poll(l);
        PQfinish(l->conn);
        l->conn = NULL;
        l->state = L_WAITING;
        l->delay_ms = l->delay_ms ? l->delay_ms * 2 : PG_BACKOFF_MIN_MS;
        if (l->delay_ms > PG_BACKOFF_MAX_MS)
                l->delay_ms = PG_BACKOFF_MAX_MS;
        uv_timer_start(l->timer, listener_timer_cb, (uint64_t) l->delay_ms, 0);
}

static bool change_kind(char k, enum store_change_kind *kind) {
        switch (k) {
        case 'c':
                *kind = STORE_CHANGE_CREATED;
                return true;
        case 'e':
                *kind = STORE_CHANGE_ENDED;
                return true;
        case 'u':
                *kind = STORE_CHANGE_UPDATED;
                return true;
        case 's':
                *kind = STORE_CHANGE_SYNC;
                return true;
        case 'r':
                *kind = STORE_CHANGE_RENEWED;
                return true;
        case 'p':
                *kind = STORE_CHANGE_PLATFORM;
                return true;
        default:
                return false;
        }
}

/* The rows a payload names, read in one statement for the engine's reads
 * that follow (pg_prefetch()); without them (out of memory, a failure),
 * each is read by itself. */
static void listener_prefetch(struct pg_listener *l, const char *items) {
        _cleanup_free_ int64_t *rows = NULL;
        size_t n = 0, max = 1;
        enum store_change_kind kind;

        for (const char *q = items; *q; q++)
                max += *q == ',';
        rows = malloc(max * sizeof *rows);
        if (!rows)
                return;
        for (const char *q = items; *q && n < max;) {
                char *end;
                int64_t row_key;

                if (q[0] == '\0' || q[1] != ':')
                        break;
                row_key = strtoll(q + 2, &end, 10);
                if (change_kind(q[0], &kind))
                        rows[n++] = row_key;
                q = *end == ',' ? end + 1 : end + strlen(end);
        }
        if (n < 2)
                return;
        pthread_mutex_lock(&l->store->core.lock);
        (void) pg_prefetch(l->store, rows, n);
        pthread_mutex_unlock(&l->store->core.lock);
}

/* "kind:row" items after the origin. */
static void listener_dispatch(struct pg_listener *l, const char *payload) {
        const char *colon = strchr(payload, ':'), *p;
        struct pg_store *st = l->store;

        if (!colon ||
            ((size_t) (colon - payload) == strlen(l->origin) && strncmp(payload, l->origin, strlen(l->origin)) == 0))
                return; /* ours, or not ours to read */
        live_note(l, payload, (size_t) (colon - payload));
        listener_prefetch(l, colon + 1);
        for (p = colon + 1; *p && l->store;) {
                enum store_change_kind kind;
                char k = p[0];
                char *end;
                int64_t row_key;

                if (p[1] != ':')
                        break;
                row_key = strtoll(p + 2, &end, 10);
                if (change_kind(k, &kind))
                        listener_report(l, kind, row_key, false);
                else if (k == 'x')
                        live_forget(l, payload, (size_t) (colon - payload));
                p = *end == ',' ? end + 1 : end + strlen(end);
        }
        /* The store may have been closed by a callback (then it dropped them). */
        if (l->store) {
                pthread_mutex_lock(&st->core.lock);
                pg_prefetch_drop(st);
                pthread_mutex_unlock(&st->core.lock);
        }
}

static void listener_notifies(struct pg_listener *l) {
        PGnotify *n;

        while (l->store && l->conn && (n = PQnotifies(l->conn))) {
                listener_dispatch(l, n->extra);
                PQfreemem(n);
        }
}

/* The results of the statement in flight, as far as they came. */
static void listener_results(struct pg_listener *l) {
        while (l->store && l->conn && l->busy != LQ_NONE && !PQisBusy(l->conn)) {
                PGresult *res = PQgetResult(l->conn);

                if (!res) { /* the statement is done */
                        if (l->busy == LQ_ANNOUNCE) {
                                if (l->query_ok)
                                        l->n_sending = 0;
                                else
                                        listener_requeue(l);
                        }
                        l->busy = LQ_NONE;
                        continue;
                }
                if (PQresultStatus(res) == PGRES_TUPLES_OK) {
                        l->query_ok = true;
                        if (l->busy == LQ_LIVENESS) {
                                listener_notifies(l); /* a goodbye that came before it first */
                                if (l->store)
                                        listener_liveness(l, res);
                        }
                } else
                        pg_log_error(l->store->name,
                                     l->busy == LQ_ANNOUNCE ? "announcing creations"
                                                            : "checking which daemons are "
                                                              "connected",
                                     PQresultErrorMessage(res));
                PQclear(res);
        }
}

static void listener_read(struct pg_listener *l) {
        if (!PQconsumeInput(l->conn)) {
                listener_lost(l);
                return;
        }
        listener_notifies(l);
        listener_results(l);
        listener_notifies(l);
        if (l->store && l->conn && PQstatus(l->conn) != CONNECTION_OK)
                listener_lost(l);
        else
                listener_pump(l);
}

/* The answers to SET application_name and LISTEN, after a (re)connection. */
static void listener_listen_result(struct pg_listener *l) {
        PGresult *res;

        if (!PQconsumeInput(l->conn)) {
                listener_lost(l);
                return;
        }
        while (!PQisBusy(l->conn)) {
                res = PQgetResult(l->conn);
                if (!res)
                        break;
                if (PQresultStatus(res) != PGRES_COMMAND_OK)
                        l->query_ok = false;
                PQclear(res);
        }
        if (PQisBusy(l->conn))
                return; /* more to come */
        if (!l->query_ok) {
                listener_lost(l);
                return;
        }
        l->state = L_LISTENING;
        l->delay_ms = 0;
        (void) listener_watch(l, UV_READABLE);
        if (l->lost) {
                log_notice("Store %s: listening for other daemons' changes again.", l->store->name);
                l->lost = false;
                l->listened = true;
                listener_report(l, STORE_CHANGE_UPDATED, 0, true); /* what came meanwhile was missed */
        } else if (!l->listened) {
                /* The engine loaded the live sessions before this first
                 * LISTEN took effect: what other daemons committed in
                 * between was never announced to us, so it is read again. */
                l->listened = true;
                listener_report(l, STORE_CHANGE_UPDATED, 0, true);
        }
        if (l->store)
                listener_read(l); /* anything that came with the answer; then what is queued */
}

/* What a listener's connection runs first: its name (for the others'
 * liveness checks), a server-side keepalive so that a vanished host's
 * connection is closed within about PG_DEAD_PEER_S, LISTEN, and a hello
 * ("h") that makes the others watch this daemon before their next check
 * (one that died sooner is still caught up with). The
 * keepalive settings mean nothing on a Unix socket, where a process that
 * died closes its connection at once. */
static void listener_setup_sql(const char *origin, char *sql, size_t n, bool listen) {
        snprintf(sql, n,
                 "SET application_name = '" PG_APP_PREFIX "%s'; SET tcp_keepalives_idle = 10; "
                 "SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3; NOTIFY " PG_CHANNEL ", '%s:h:0'%s",
                 origin, origin, listen ? "; LISTEN " PG_CHANNEL : "");
}

static void listener_connect_step(struct pg_listener *l) {
        char sql[256];

        switch (PQconnectPoll(l->conn)) {
        case PGRES_POLLING_READING:
                if (listener_watch(l, UV_READABLE) < 0)
                        listener_lost(l);
                return;
        case PGRES_POLLING_WRITING:
                if (listener_watch(l, UV_WRITABLE) < 0)
                        listener_lost(l);
                return;
        case PGRES_POLLING_OK:
                listener_setup_sql(l->origin, sql, sizeof sql, true);
                if (PQsetnonblocking(l->conn, 1) < 0 || !PQsendQuery(l->conn, sql) || PQflush(l->conn) < 0 ||
                    listener_watch(l, UV_READABLE) < 0) {
                        listener_lost(l);
                        return;
                }
                l->query_ok = true;
                l->state = L_LISTEN;
                return;
        default:
                listener_lost(l);
                return;
        }
}

static void listener_poll_cb(uv_poll_t *h, int status, int events) {
        struct pg_listener *l = h->data;

        if (!l->store || h != l->poll)
                return;
        if (status < 0) {
                listener_lost(l);
                return;
        }
        switch (l->state) {
        case L_CONNECTING:
                listener_connect_step(l);
                break;
        case L_LISTEN:
                if ((events & UV_WRITABLE) && PQflush(l->conn) == 0)
                        (void) listener_watch(l, UV_READABLE);
                listener_listen_result(l);
                break;
        case L_LISTENING:
                if (events & UV_WRITABLE) {
                        listener_flush(l);
                        if (!l->store || l->state != L_LISTENING)
                                break;
                }
                listener_read(l);
                break;
        case L_WAITING:
                break;
        }
}

static void listener_timer_cb(uv_timer_t *t) {
        struct pg_listener *l = t->data;

        if (!l->store || l->state != L_WAITING)
                return;
        l->conn = PQconnectStartParams(PG_CONNECT_KEYWORDS, PG_CONNECT_VALUES(l->store->url), 1);
        if (!l->conn || PQstatus(l->conn) == CONNECTION_BAD) {
                listener_lost(l);
                return;
        }
        PQsetNoticeProcessor(l->conn, pg_notice_log, NULL);
        l->state = L_CONNECTING;
        if (listener_watch(l, UV_WRITABLE) < 0)
                listener_lost(l);
}

/* A handle of the listener's (unref'd: the listener keeps no loop alive). */
static void *listener_handle(struct pg_listener *l, size_t size) {
        uv_handle_t *h = calloc(1, size);

        if (h)
                h->data = l;
        return h;
}

static void listener_close_handles(struct pg_listener *l) {
        listener_close_poll(l);
        handle_close(l->timer);
        handle_close(l->pace);
        handle_close(l->tick);
        handle_close(l->async);
        l->timer = l->pace = l->tick = NULL;
        l->async = NULL;
}

/* The first connection is made here, blocking (like store_open): when this
 * returns 0, every change committed afterwards is heard. Reconnections
 * after a loss never block the loop. */
int pg_changes_subscribe(struct store *s, uv_loop_t *loop, store_change_fn fn, void *userdata) {
        struct pg_store *p = pg(s);
        struct pg_listener *l;
        char sql[256];
        int r = 0;

        if (p->listener)
                return -EBUSY;
        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        *l = (struct pg_listener){.store = p, .loop = loop, .fn = fn, .userdata = userdata, .state = L_LISTENING};
        memcpy(l->origin, p->origin, sizeof l->origin);
        l->timer = listener_handle(l, sizeof *l->timer);
        l->pace = listener_handle(l, sizeof *l->pace);
        l->tick = listener_handle(l, sizeof *l->tick);
        l->async = listener_handle(l, sizeof *l->async);
        if (!l->timer || !l->pace || !l->tick || !l->async) {
                free(l->timer);
                free(l->pace);
                free(l->tick);
                free(l->async);
                free(l);
                return -ENOMEM;
        }
        uv_timer_init(loop, l->timer);
        uv_timer_init(loop, l->pace);
        uv_timer_init(loop, l->tick);
        uv_async_init(loop, l->async, listener_async_cb);
        l->handles = 4;
        uv_unref((uv_handle_t *) l->timer);
        uv_unref((uv_handle_t *) l->pace);
        uv_unref((uv_handle_t *) l->tick);
        uv_unref((uv_handle_t *) l->async);
        p->listener = l;

        /* The set-up, the first liveness check (the daemons up now are
         * watched from the start), then LISTEN, each waited for. */
        r = pg_conn_open(p->url, p->name, PG_STATEMENT_TIMEOUT_MS, false, &l->conn);
        if (r >= 0) {
                listener_setup_sql(l->origin, sql, sizeof sql, false);
                _cleanup_pqclear_ PGresult *res = PQexec(l->conn, sql);

                r = pg_result_check(p->name, l->conn, res, PGRES_COMMAND_OK, "setting up the listener");
        }
        if (r >= 0) {
                _cleanup_pqclear_ PGresult *res = PQexec(l->conn, PG_LIVENESS_SQL);

                r = pg_result_check(p->name, l->conn, res, PGRES_TUPLES_OK, "checking which daemons are connected");
                if (r >= 0)
                        listener_liveness(l, res);
        }
        if (r >= 0) {
                _cleanup_pqclear_ PGresult *res = PQexec(l->conn, "LISTEN " PG_CHANNEL);

                r = pg_result_check(p->name, l->conn, res, PGRES_COMMAND_OK, "LISTEN");
        }
        if (r >= 0 && PQsetnonblocking(l->conn, 1) < 0)
                r = -EIO;
        if (r >= 0)
                r = listener_watch(l, UV_READABLE);
        if (r < 0) {
                p->listener = NULL;
                l->store = NULL;
                PQfinish(l->conn);
                listener_close_handles(l);
                return r;
        }
        uv_timer_start(l->tick, listener_tick_cb, PG_LIVENESS_MS, PG_LIVENESS_MS);
        pthread_mutex_lock(&p->announce_lock);
        p->announce_async = l->async; /* from now on creations wait for the listener */
        pthread_mutex_unlock(&p->announce_lock);
        return 0;
}

/* At close: the handles are freed by their close callbacks, the listener
 * with the last of them (the store may be gone by then). An announcement
 * in flight goes back to the queue, which pg_close() sends. */
void pg_listener_detach(struct pg_listener *l) {
        struct pg_store *p;

        if (!l)
                return;
        p = l->store;
        pthread_mutex_lock(&p->announce_lock);
        p->announce_async = NULL;
        pthread_mutex_unlock(&p->announce_lock);
        if (l->busy == LQ_ANNOUNCE)
                listener_requeue(l);
        l->busy = LQ_NONE;
        l->store = NULL;
        listener_close_handles(l);
        PQfinish(l->conn);
        l->conn = NULL;
}

/* At close, on the writing connection: what is still queued, and the
 * goodbye that spares the others a catch-up (see "announcing creations"). */
void pg_announce_at_close(struct pg_store *p) {
        _cleanup_free_ char *arr = NULL;
        const char *v[1];

        if (!p->w.c || PQstatus(p->w.c) != CONNECTION_OK || pg_in_tx(p))
                return;
        arr = announcement(p->origin, p->announce, p->n_announce, true);
        if (!arr)
                return;
        v[0] = arr;
        _cleanup_pqclear_ PGresult *res = PQexecParams(p->w.c, PG_ANNOUNCE_SQL, 1, NULL, v, NULL, NULL, 0);
        if (pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "announcing the last creations") >= 0)
                p->n_announce = 0;
}
