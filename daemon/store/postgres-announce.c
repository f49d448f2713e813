/* The PostgreSQL backend's announcements of creations, and the liveness
 * catch-up they need (DESIGN 8; postgres-internal.h lists the backend's
 * files). Both are statements sent on the listener's connection
 * (postgres-listen.c), one in flight at a time (l->busy); this file holds
 * the queue, those statements, their results, and the last announcement
 * at close.
 *
 * Why creations are announced after their commit. A transaction that
 * sends NOTIFY takes PostgreSQL's database-wide notify lock before its
 * commit record and holds it until that commit is flushed: such commits
 * never share a WAL flush, so creations announced in their own transaction
 * made three daemons' creates slower than one daemon's. A creation needs
 * no such guarantee: a daemon that does not know a session finds it in the
 * store by its token (fleet_lookup), so a late announcement makes nothing
 * valid that should not be. Creations (STORE_OP_INSERT; a rotation's new
 * row goes with its old row's end) are therefore queued at commit
 * (pg_announce_created(), postgres-uow.c) and sent here, on the listener's
 * connection, in one statement of their own, at most one in flight and
 * one every PG_ANNOUNCE_MS per daemon. Ends, rotations, renewals, client
 * changes, sync writes, platform switches and evictions stay NOTIFYs of
 * their own transaction: delivered if and only if it commits, even if the
 * daemon dies right after.
 *
 * What a creation announced late or never costs, and its catch-up. The
 * queue is lost only with the daemon's process (a lost connection keeps
 * it: the announcement is sent again once reconnected; one sent twice is
 * harmless, the others read the row again). Every listener sets its
 * application_name to PG_APP_PREFIX + origin and, every PG_LIVENESS_MS,
 * reads which daemons are connected to the database (pg_stat_activity); a
 * daemon that was connected at the previous check and no longer is may
 * have died with creations unannounced, and the listener reports changes
 * missed (lost = true: the engine reads the live sessions again), unless
 * that daemon said goodbye: at store_close a daemon sends what it still
 * has queued and "x" (the bye) in one statement. Bound: a daemon's
 * creation is known to the others within PG_ANNOUNCE_MS plus a commit
 * while it runs; if its process dies, within PG_LIVENESS_MS of the server
 * seeing its connections close (at once for a process that died; for a
 * host that vanished, the server's TCP keepalive, which the listener sets
 * to about PG_DEAD_PEER_S) plus one pass over the live sessions.
 */
#include "postgres-internal.h"

#include <string.h>

#include "log.h"

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
void pg_listener_requeue(struct pg_listener *l) {
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

#define PG_ANNOUNCE_SQL "SELECT count(pg_notify('" PG_CHANNEL "', x)) FROM unnest($1::text[]) AS x"

static void listener_pace_cb(uv_timer_t *t);

/* Sends what is in flight; the rest goes when the socket can take it. */
void pg_listener_flush(struct pg_listener *l) {
        int r = PQflush(l->conn);

        if (r < 0 || pg_listener_watch(l, r > 0 ? UV_READABLE | UV_WRITABLE : UV_READABLE) < 0)
                pg_listener_lost(l);
}

static void listener_send(struct pg_listener *l, enum listener_query q, const char *sql, const char *param) {
        const char *v[1] = {param};

        if (!PQsendQueryParams(l->conn, sql, param ? 1 : 0, NULL, param ? v : NULL, NULL, NULL, 0)) {
                pg_listener_lost(l);
                return;
        }
        l->busy = q;
        l->query_ok = false;
        pg_listener_flush(l);
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
                pg_listener_requeue(l);
                return;
        }
        l->announced_at = pg_mono_ms();
        listener_send(l, LQ_ANNOUNCE, PG_ANNOUNCE_SQL, arr);
}

/* The next statement, if none is in flight: a due liveness check, or the
 * queued creations (not sooner than PG_ANNOUNCE_MS after the last). */
void pg_listener_pump(struct pg_listener *l) {
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
        pg_listener_pump(t->data);
}

void pg_listener_async_cb(uv_async_t *a) {
        pg_listener_pump(a->data);
}

void pg_listener_tick_cb(uv_timer_t *t) {
        struct pg_listener *l = t->data;

        l->check_due = true;
        pg_listener_pump(l);
}

/* A daemon that said goodbye (announced all it created) needs no catch-up. */
void pg_live_forget(struct pg_listener *l, const char *origin, size_t n) {
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
void pg_live_note(struct pg_listener *l, const char *origin, size_t len) {
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
void pg_listener_liveness(struct pg_listener *l, const PGresult *res) {
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
                pg_listener_report(l, STORE_CHANGE_UPDATED, 0, true); /* the engine reads the live sessions again */
}

/* The results of the statement in flight, as far as they came. */
void pg_listener_results(struct pg_listener *l) {
        while (l->store && l->conn && l->busy != LQ_NONE && !PQisBusy(l->conn)) {
                PGresult *res = PQgetResult(l->conn);

                if (!res) { /* the statement is done */
                        if (l->busy == LQ_ANNOUNCE) {
                                if (l->query_ok)
                                        l->n_sending = 0;
                                else
                                        pg_listener_requeue(l);
                        }
                        l->busy = LQ_NONE;
                        continue;
                }
                if (PQresultStatus(res) == PGRES_TUPLES_OK) {
                        l->query_ok = true;
                        if (l->busy == LQ_LIVENESS) {
                                pg_listener_notifies(l); /* a goodbye that came before it first */
                                if (l->store)
                                        pg_listener_liveness(l, res);
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
