/* The PostgreSQL backend's leader and heartbeats (DESIGN 8;
 * postgres-internal.h lists the backend's files): what daemons sharing one
 * database know of each other besides their changes (those are
 * postgres-listen.c's).
 *
 *   - The auxiliary connection (its own mutex, aux_lock: these are called
 *     without s->lock): each daemon's heartbeat row in sessiond_daemons,
 *     written by pg_heartbeat(), and what Status and Metrics show of the
 *     fleet: the daemons seen lately and the tables' room, read by
 *     pg_fleet_refresh() on a worker thread and kept for the loop
 *     (pg_daemons_each(), pg_size()), which never waits for the network
 *     there.
 *   - The leader (features.clustering): a session-level advisory lock,
 *     PG_LEADER_LOCK, held on a connection of its own; losing the
 *     connection loses the lock (the server frees it at once, even after
 *     kill -9), and another daemon's next try takes it.
 */
#include "postgres-internal.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

/* ---- the auxiliary connection: without s->lock ----------------------------------------- */

/* aux_lock for the loop: workers hold it for a statement (the probe, the
 * heartbeat), which a server that stopped answering makes last; the loop
 * waits PG_AUX_LOOP_WAIT_MS at most. 0, or -EBUSY. */
int pg_aux_lock_briefly(struct pg_store *p) {
        struct timespec until;

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += PG_AUX_LOOP_WAIT_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
        }
        return pthread_mutex_timedlock(&p->aux_lock, &until) == 0 ? 0 : -EBUSY;
}

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

/* The probe of a fleet's engine (fleet_tick), on a worker thread. */
int pg_probe_aux(struct store *s) {
        struct pg_store *p = pg(s);
        int r;

        pthread_mutex_lock(&p->aux_lock);
        r = pg_aux_query(p, "SELECT max(row) FROM sessions", NULL, PGRES_TUPLES_OK, "probing the database", NULL);
        pthread_mutex_unlock(&p->aux_lock);
        return r < 0 ? r : 0;
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

/* ---- what Status and Metrics show, refreshed off the loop ----------------------------------- */

struct pg_seen {
        char *daemon_id;
        int64_t seen_ms;
        bool leader;
};

static void seen_free(struct pg_seen *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(v[i].daemon_id);
        free(v);
}

void pg_seen_clear(struct pg_store *p) {
        seen_free(p->seen, p->n_seen);
        p->seen = NULL;
        p->n_seen = 0;
}

/* The daemons seen since since_ms, read into a new list. */
static int seen_read(struct pg_store *p, int64_t since_ms, struct pg_seen **ret, size_t *n_ret) {
        _cleanup_pqclear_ PGresult *res = NULL;
        struct params a = {0};
        struct pg_seen *v;
        int r, n;

        param_int(&a, since_ms);
        r = pg_aux_query(p,
                         "SELECT daemon_id, seen_ms, leader FROM sessiond_daemons WHERE seen_ms >= $1 "
                         "ORDER BY seen_ms DESC, daemon_id COLLATE \"C\"",
                         &a, PGRES_TUPLES_OK, "reading the daemons", &res);
        if (r < 0)
                return r;
        n = PQntuples(res);
        v = calloc(n > 0 ? (size_t) n : 1, sizeof *v);
        if (!v)
                return -ENOMEM;
        for (int i = 0; i < n; i++) {
                v[i] = (struct pg_seen){
                        .daemon_id = strdup(PQgetvalue(res, i, 0)),
                        .seen_ms = pg_value_int(res, i, 1),
                        .leader = strcmp(PQgetvalue(res, i, 2), "t") == 0,
                };
                if (!v[i].daemon_id) {
                        seen_free(v, (size_t) i);
                        return -ENOMEM;
                }
        }
        *ret = v;
        *n_ret = (size_t) n;
        return 0;
}

/* On a worker thread (the leader's tick): the daemons seen and the tables'
 * room, read on the auxiliary connection and kept for the loop, which then
 * answers Status and Metrics without a round trip (a server that stopped
 * answering holds a worker, never the loop). */
int pg_fleet_refresh(struct store *s, int64_t since_ms) {
        struct pg_store *p = pg(s);
        struct pg_seen *v = NULL;
        size_t n = 0;
        int r;

        pthread_mutex_lock(&p->aux_lock);
        r = seen_read(p, since_ms, &v, &n);
        if (p->size_at == 0 || pg_mono_ms() - p->size_at >= PG_SIZE_CACHE_MS) {
                _cleanup_pqclear_ PGresult *res = NULL;

                if (pg_aux_query(p,
                                 "SELECT pg_total_relation_size('sessions') + pg_total_relation_size('audit') + "
                                 "pg_total_relation_size('sessiond_daemons') + pg_total_relation_size('sessiond_meta')",
                                 NULL, PGRES_TUPLES_OK, "measuring the tables", &res) >= 0) {
                        __atomic_store_n(&p->size_cached, pg_value_int(res, 0, 0), __ATOMIC_RELAXED);
                        p->size_at = pg_mono_ms();
                }
        }
        pthread_mutex_unlock(&p->aux_lock);
        if (r < 0)
                return r;
        pthread_mutex_lock(&p->seen_lock);
        seen_free(p->seen, p->n_seen);
        p->seen = v;
        p->n_seen = n;
        p->seen_known = true;
        pthread_mutex_unlock(&p->seen_lock);
        return 0;
}

/* On the loop: the last list read (pg_fleet_refresh); -EAGAIN before the
 * first. */
int pg_daemons_each(struct store *s, int64_t since_ms, store_daemon_fn cb, void *userdata) {
        struct pg_store *p = pg(s);
        struct pg_seen *v = NULL;
        size_t n = 0;
        int r = 0;

        pthread_mutex_lock(&p->seen_lock);
        if (!p->seen_known)
                r = -EAGAIN;
        else if ((v = calloc(p->n_seen > 0 ? p->n_seen : 1, sizeof *v)))
                for (; n < p->n_seen; n++) {
                        v[n] = p->seen[n];
                        if (!(v[n].daemon_id = strdup(p->seen[n].daemon_id)))
                                break;
                }
        else
                r = -ENOMEM;
        if (r == 0 && n < p->n_seen)
                r = -ENOMEM;
        pthread_mutex_unlock(&p->seen_lock);
        /* The callback runs without the lock: it may ask again. */
        for (size_t i = 0; r == 0 && i < n; i++) {
                struct store_daemon_row row = {v[i].daemon_id, v[i].seen_ms, v[i].leader};

                if (row.seen_ms >= since_ms)
                        r = cb(&row, userdata);
        }
        seen_free(v, n);
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
