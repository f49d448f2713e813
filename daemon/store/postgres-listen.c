/* The PostgreSQL backend's listener (DESIGN 8; postgres-internal.h lists
 * the backend's files): how a daemon hears of the changes that the other
 * daemons sharing its database commit.
 *
 * A connection of its own (features.caching), driven on the loop by a
 * uv_poll_t on PQsocket() and never blocking it after its first connection:
 * pg_changes_subscribe() makes that one blocking, like store_open, so that
 * when it returns every change committed afterwards is heard;
 * reconnections use PQconnectStartParams/PQconnectPoll (listener_state).
 * It LISTENs on PG_CHANNEL: each other daemon's committed changes arrive
 * as "<origin>:<kind>:<row>,..." and are handed to the engine, which has
 * those rows read again after its next commit, by the writer, not on the
 * loop (fleet.c, store_read_after). Ends, rotations, renewals, client changes,
 * sync writes, platform switches and evictions are NOTIFYs of the
 * transaction that made them (postgres-uow.c): delivered if and only if it
 * commits. Creations are not: postgres-announce.c sends them after their
 * commit, on this same connection, with the liveness checks that catch up
 * with a daemon that died before announcing its last ones (one statement
 * in flight at a time: listener_query). Its hellos and goodbyes arrive
 * here with the changes (pg_live_note(), pg_live_forget()).
 *
 * When the connection is lost, changes may have been missed: the engine
 * is told (lost = true), and again once it is back; it is reconnected
 * with a backoff (PG_BACKOFF_MIN_MS, doubling up to PG_BACKOFF_MAX_MS).
 * A connection first names itself (application_name, for the others'
 * liveness checks), sets a server-side keepalive and says hello
 * (listener_setup_sql()).
 *
 * The listener's handles are unref'd (it keeps no loop alive) and each
 * frees itself once closed; the listener is freed with the last of them,
 * which may come after the store is closed (then l->store is NULL, and
 * every callback checks it: an engine callback may close the store).
 */
#include "postgres-internal.h"

#include <errno.h>
#include <string.h>

#include "log.h"

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

/* Watches the connection's socket for events (a new handle when libpq
 * has a new socket). */
int pg_listener_watch(struct pg_listener *l, int events) {
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

void pg_listener_report(struct pg_listener *l, enum store_change_kind kind, int64_t row_key, bool lost) {
        struct store_change c = {.kind = kind, .row_key = lost ? 0 : row_key};

        l->fn(&c, lost, l->userdata);
}

/* The connection is gone: tell once, close, connect again later. */
void pg_listener_lost(struct pg_listener *l) {
        if (l->busy == LQ_ANNOUNCE)
                pg_listener_requeue(l);
        l->busy = LQ_NONE;
        if (l->store && !l->lost) {
                log_warning("Store %s: the connection that listens for other daemons' changes was lost; "
                            "reconnecting.",
                            l->store->name);
                l->lost = true;
                pg_listener_report(l, STORE_CHANGE_UPDATED, 0, true);
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

/* "kind:row" items after the origin. */
static void listener_dispatch(struct pg_listener *l, const char *payload) {
        const char *colon = strchr(payload, ':'), *p;

        if (!colon ||
            ((size_t) (colon - payload) == strlen(l->origin) && strncmp(payload, l->origin, strlen(l->origin)) == 0))
                return; /* ours, or not ours to read */
        pg_live_note(l, payload, (size_t) (colon - payload));
        for (p = colon + 1; *p && l->store;) {
                enum store_change_kind kind;
                char k = p[0];
                char *end;
                int64_t row_key;

                if (p[1] != ':')
                        break;
                row_key = strtoll(p + 2, &end, 10);
                if (change_kind(k, &kind))
                        pg_listener_report(l, kind, row_key, false);
                else if (k == 'x')
                        pg_live_forget(l, payload, (size_t) (colon - payload));
                p = *end == ',' ? end + 1 : end + strlen(end);
        }
}

void pg_listener_notifies(struct pg_listener *l) {
        PGnotify *n;

        while (l->store && l->conn && (n = PQnotifies(l->conn))) {
                listener_dispatch(l, n->extra);
                PQfreemem(n);
        }
}

static void listener_read(struct pg_listener *l) {
        if (!PQconsumeInput(l->conn)) {
                pg_listener_lost(l);
                return;
        }
        pg_listener_notifies(l);
        pg_listener_results(l);
        pg_listener_notifies(l);
        if (l->store && l->conn && PQstatus(l->conn) != CONNECTION_OK)
                pg_listener_lost(l);
        else
                pg_listener_pump(l);
}

/* The answers to SET application_name and LISTEN, after a (re)connection. */
static void listener_listen_result(struct pg_listener *l) {
        PGresult *res;

        if (!PQconsumeInput(l->conn)) {
                pg_listener_lost(l);
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
                pg_listener_lost(l);
                return;
        }
        l->state = L_LISTENING;
        l->delay_ms = 0;
        (void) pg_listener_watch(l, UV_READABLE);
        if (l->lost) {
                log_notice("Store %s: listening for other daemons' changes again.", l->store->name);
                l->lost = false;
                l->listened = true;
                pg_listener_report(l, STORE_CHANGE_UPDATED, 0, true); /* what came meanwhile was missed */
        } else if (!l->listened) {
                /* The engine loaded the live sessions before this first
                 * LISTEN took effect: what other daemons committed in
                 * between was never announced to us, so it is read again. */
                l->listened = true;
                pg_listener_report(l, STORE_CHANGE_UPDATED, 0, true);
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
                if (pg_listener_watch(l, UV_READABLE) < 0)
                        pg_listener_lost(l);
                return;
        case PGRES_POLLING_WRITING:
                if (pg_listener_watch(l, UV_WRITABLE) < 0)
                        pg_listener_lost(l);
                return;
        case PGRES_POLLING_OK:
                listener_setup_sql(l->origin, sql, sizeof sql, true);
                if (PQsetnonblocking(l->conn, 1) < 0 || !PQsendQuery(l->conn, sql) || PQflush(l->conn) < 0 ||
                    pg_listener_watch(l, UV_READABLE) < 0) {
                        pg_listener_lost(l);
                        return;
                }
                l->query_ok = true;
                l->state = L_LISTEN;
                return;
        default:
                pg_listener_lost(l);
                return;
        }
}

static void listener_poll_cb(uv_poll_t *h, int status, int events) {
        struct pg_listener *l = h->data;

        if (!l->store || h != l->poll)
                return;
        if (status < 0) {
                pg_listener_lost(l);
                return;
        }
        switch (l->state) {
        case L_CONNECTING:
                listener_connect_step(l);
                break;
        case L_LISTEN:
                if ((events & UV_WRITABLE) && PQflush(l->conn) == 0)
                        (void) pg_listener_watch(l, UV_READABLE);
                listener_listen_result(l);
                break;
        case L_LISTENING:
                if (events & UV_WRITABLE) {
                        pg_listener_flush(l);
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
                pg_listener_lost(l);
                return;
        }
        PQsetNoticeProcessor(l->conn, pg_notice_log, NULL);
        l->state = L_CONNECTING;
        if (pg_listener_watch(l, UV_WRITABLE) < 0)
                pg_listener_lost(l);
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
        uv_async_init(loop, l->async, pg_listener_async_cb);
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
                        pg_listener_liveness(l, res);
        }
        if (r >= 0) {
                _cleanup_pqclear_ PGresult *res = PQexec(l->conn, "LISTEN " PG_CHANNEL);

                r = pg_result_check(p->name, l->conn, res, PGRES_COMMAND_OK, "LISTEN");
        }
        if (r >= 0 && PQsetnonblocking(l->conn, 1) < 0)
                r = -EIO;
        if (r >= 0)
                r = pg_listener_watch(l, UV_READABLE);
        if (r < 0) {
                p->listener = NULL;
                l->store = NULL;
                PQfinish(l->conn);
                listener_close_handles(l);
                return r;
        }
        uv_timer_start(l->tick, pg_listener_tick_cb, PG_LIVENESS_MS, PG_LIVENESS_MS);
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
                pg_listener_requeue(l);
        l->busy = LQ_NONE;
        l->store = NULL;
        listener_close_handles(l);
        PQfinish(l->conn);
        l->conn = NULL;
}
