/* The PostgreSQL backend's shared parts (DESIGN 8), for its files only:
 *   postgres.c          connections, statements, the schema and its
 *                       migrations, opening and closing, the backend table;
 *   postgres-uow.c      the unit of work: pipelines, per-user limits, the
 *                       NOTIFYs of a transaction, keys, purges;
 *   postgres-pipeline.c a unit in one round trip;
 *   postgres-batch.c    a unit's inserts, audit rows and limits, one
 *                       statement each;
 *   postgres-keys.c     session keys, in blocks from a sequence;
 *   postgres-read.c     reads: sessions, audit, analytics, maintenance, size;
 *   postgres-listen.c   the listener: LISTEN on a connection of its own, on
 *                       the loop, other daemons' changes handed to the engine;
 *   postgres-announce.c creations announced after their commit, on the
 *                       listener's connection, and the liveness checks that
 *                       catch up with a daemon that died before announcing;
 *   postgres-leader.c   the auxiliary connection (heartbeats, the daemons
 *                       seen and the tables' size, refreshed off the loop)
 *                       and the leader's lock.
 * Each file's head says how its part works; postgres.c's, how the whole
 * fits together.
 */
#pragma once

#include "backend.h"

#include <assert.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "macro.h"

#define PG_SCHEMA_VERSION 1
/* Advisory lock keys: "sessiond" as a number (0x73657373696f6e64, in
 * decimal: it is pasted into SQL), and the leader's next to it. */
#define PG_MIGRATION_LOCK 8315179226536832612
#define PG_LEADER_LOCK (PG_MIGRATION_LOCK + 1)
/* The first key of the two-key form for per-user locks ("sd"); the second
 * is hashtext(user_id). The two forms never collide with the one above. */
#define PG_USER_LOCK_CLASS 29540 /* 0x7364 */
#define PG_KEY_BLOCK 1000
#define PG_STATEMENT_TIMEOUT_MS 5000
#define PG_READER_STATEMENT_TIMEOUT_MS 60000
#define PG_MIGRATION_TIMEOUT "60s"
#define PG_CONNECT_TIMEOUT_S "5"
#define PG_PAGE_ROWS 1000
/* Operations sent in one pipeline: their results (a few dozen bytes each)
 * fit in the socket's buffers, so that the server never waits for us to
 * read while we still send (libpq's blocking mode would deadlock). */
#define PG_PIPELINE_OPS 256
#define PG_NOTIFY_MAX 7800 /* PostgreSQL's limit is 8000 bytes */
#define PG_CHANNEL "sessiond_changes"
#define PG_ORIGIN_LEN 16
/* Creations are announced after their commit, at most every
 * PG_ANNOUNCE_MS per daemon (postgres-announce.c says why). */
#define PG_ANNOUNCE_MS 25
/* How often a listener checks which daemons are still connected. */
#define PG_LIVENESS_MS 1000
/* The listener's application_name: the prefix and the store's origin. */
#define PG_APP_PREFIX "sessiond/"
#define PG_APP_PREFIX_LEN 9
/* About how long the server takes to close the connection of a host that
 * vanished (the listener's tcp_keepalives_*: 10 s idle, 3 probes 5 s apart). */
#define PG_DEAD_PEER_S 25
#define PG_BACKOFF_MIN_MS 250
#define PG_BACKOFF_MAX_MS 5000
#define PG_SIZE_CACHE_MS 10000
#define PG_STRINGIFY_(x) #x
#define PG_STRINGIFY(x) PG_STRINGIFY_(x)

/* The prepared statements (postgres.c's q_sql), by number. */
enum {
        Q_INSERT,
        Q_INSERT_MANY,
        Q_LOCK_USERS,
        Q_LIMIT,
        Q_ACTIVITY,
        Q_RENEWED,
        Q_END,
        Q_CLIENT,
        Q_COPY,
        Q_PLATFORM,
        Q_SWITCH,
        Q_SYNC,
        Q_AUDIT,
        Q_AUDIT_MANY,
        Q_NOTIFY,
        Q_GET_SWITCHES,
        Q_GET_SYNC,
        Q_BY_ROWID,
        Q_BY_ROWIDS,
        Q_BY_HASH,
        Q_BY_HASHES,
        Q_BY_ID,
        Q_ALL,
        Q_ALL_LIGHT,
        Q_LIVE,
        Q_LIVE_LIGHT,
        Q_USER_ENDED,
        Q_PURGE_SESSIONS,
        Q_PURGE_AUDIT,
        Q_NEXT_KEYS,
        Q_COUNT_LIVE,
        Q_COUNT_ENDED,
        Q_PROBE,
        _Q_MAX,
};
/* A connection that comes back after a loss, not sooner than retry_at. */
struct pg_conn {
        PGconn *c;
        int64_t retry_at; /* monotonic ms */
        int delay_ms;
        bool fresh; /* (re)connected since its statements were prepared */
};

struct pg_listener;

struct pg_store {
        struct store core; /* first: store.c's part */
        char *url;         /* as configured: may hold a password */
        char *name;        /* the same, password as *** */
        char *locator;     /* "postgresql:" + url */
        bool reader;
        int timeout_ms;
        struct pg_conn w; /* the writing connection (under core.lock) */
        char origin[PG_ORIGIN_LEN + 1];
        /* Keys (pg_allocate_key): the loop's block, taken without core.lock,
         * and a block the writer fetches ahead after a commit (under key_lock). */
        int64_t key_next, key_end;
        pthread_mutex_t key_lock;
        int64_t key_spare; /* the first key of the block fetched ahead, 0: none */
        bool key_wanted;   /* the loop has begun its last block: fetch one ahead */

        pthread_mutex_t aux_lock;
        struct pg_conn aux;
        int64_t size_cached, size_at;
        /* The daemons seen, as the last pg_fleet_refresh() read them. */
        pthread_mutex_t seen_lock;
        struct pg_seen *seen;
        size_t n_seen;
        bool seen_known;

        struct pg_conn leader;
        bool leader_held;

        struct pg_listener *listener;

        /* Creations committed and not yet announced: the writer thread
         * adds, the listener (on the loop) sends; under announce_lock.
         * announce_async is the listener's wake-up, NULL without one (then
         * creations are announced in their transaction, as everything else). */
        pthread_mutex_t announce_lock;
        int64_t *announce;
        size_t n_announce, allocated_announce;
        uv_async_t *announce_async;
};

static inline struct pg_store *pg(struct store *s) {
        return (struct pg_store *) s;
}

static inline const struct pg_store *pg_const(const struct store *s) {
        return (const struct pg_store *) s;
}

static inline int64_t pg_mono_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void pqclearp(PGresult **r) {
        PQclear(*r);
}
#define _cleanup_pqclear_ _cleanup_(pqclearp)

static inline void pqfreememp(void *p) {
        PQfreemem(*(void **) p);
}


/* libpq's parameters: ours first, so that the URL's own win (expand_dbname). */
#define PG_CONNECT_KEYWORDS                                                                                          \
        (const char *const[]) {                                                                                      \
                "connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout", \
                        "fallback_application_name", "dbname", NULL                                                  \
        }
#define PG_CONNECT_VALUES(url)                                                         \
        (const char *const[]) {                                                        \
                PG_CONNECT_TIMEOUT_S, "10", "5", "3", "10000", "sessiond", (url), NULL \
        }

/* Parameters of a statement, as text (numbers) or binary (bytea). */
#define PG_MAX_PARAMS 17
struct params {
        const char *v[PG_MAX_PARAMS];
        int len[PG_MAX_PARAMS], fmt[PG_MAX_PARAMS];
        char num[PG_MAX_PARAMS][24];
        int n;
};

static inline void param_int(struct params *a, int64_t v) {
        assert(a->n < PG_MAX_PARAMS);
        snprintf(a->num[a->n], sizeof a->num[0], "%" PRId64, v);
        a->v[a->n] = a->num[a->n];
        a->n++;
}

static inline void param_text(struct params *a, const char *v) {
        assert(a->n < PG_MAX_PARAMS);
        a->v[a->n++] = v;
}

/* A fingerprint: 0 is none (NULL). */
static inline void param_fp(struct params *a, uint64_t v) {
        if (v)
                param_int(a, (int64_t) v);
        else
                param_text(a, NULL);
}

static inline void param_bytes(struct params *a, const void *v, size_t n) {
        assert(a->n < PG_MAX_PARAMS);
        a->v[a->n] = v; /* NULL: SQL NULL; an empty blob is not NULL */
        a->len[a->n] = (int) n;
        a->fmt[a->n] = 1;
        a->n++;
}

/* Column values of a result (NULL: NULL, or 0). */
static inline const char *pg_value_or_null(const PGresult *res, int i, int col) {
        return PQgetisnull(res, i, col) ? NULL : PQgetvalue(res, i, col);
}

static inline int64_t pg_value_int(const PGresult *res, int i, int col) {
        return PQgetisnull(res, i, col) ? 0 : strtoll(PQgetvalue(res, i, col), NULL, 10);
}

/* ---- postgres.c: connections ---- */
void pg_log_error(const char *name, const char *what, const char *msg);
int pg_result_check(const char *name, PGconn *c, const PGresult *res, ExecStatusType want, const char *what);
void pg_notice_log(void *userdata, const char *message);
int pg_conn_open(const char *url, const char *name, int timeout_ms, bool quiet, PGconn **ret);
void pg_backoff(struct pg_conn *pc);
int pg_conn_ready(struct pg_store *p, struct pg_conn *pc);
void pg_conn_close(struct pg_conn *pc);
int pg_exec_command(struct pg_store *p, PGconn *c, const char *sql, const char *what);
bool pg_in_tx(const struct pg_store *p);
int pg_writer_ready(struct pg_store *p);
int pg_send(struct pg_store *p, int q, const struct params *a, const char *what);
PGresult *pg_run(struct pg_store *p, int q, const struct params *a);
int pg_run_command(struct pg_store *p, int q, const struct params *a, const char *what);

/* ---- postgres-uow.c ---- */
int pg_uow_apply(struct store *s, struct store_uow *u);
int pg_uow_commit(struct store *s, struct store_uow *u);
void pg_rollback(struct store *s);
int pg_allocate_key(struct store *s, int64_t *ret);
int pg_purge_sessions(struct store *s, int64_t before, int limit);
int pg_purge_audit(struct store *s, int64_t before, int limit);
void pg_tx_rollback(struct pg_store *p);

/* ---- postgres-read.c ---- */
int pg_session_get_switches(struct store *s, int64_t row_key, char **ret);
int pg_session_read_sync(struct store *s, struct store_sync_read *out);
int pg_session_by_row_key(struct store *s, int64_t row_key, store_session_fn cb, void *userdata);
/* postgres-uow.c: what the one-pipeline unit shares with the rest. */
typedef int (*pg_notify_fn)(struct pg_store *p, const char *payload, void *ctx);
int pg_users_array(const struct store_uow *u, char **ret);
bool pg_op_sent(const struct store_op *op);
int pg_op_send(struct pg_store *p, const struct store_op *op);
int pg_limit_send(struct pg_store *p, const struct store_op *op);
int pg_op_result(struct pg_store *p, const struct store_op *op, PGresult *res);
int pg_notify_unit(struct pg_store *p, const struct store_uow *u, bool defer_created, pg_notify_fn send, void *ctx);
/* postgres-pipeline.c: a unit in one round trip (pg_unit_pipeline) of at
 * most PG_PIPELINE_OPS - PG_PIPE_EXTRA operations (the rest of its items:
 * BEGIN, the locks, the batches, two NOTIFYs at most, COMMIT). */
#define PG_PIPE_EXTRA 8
bool pg_unit_commits_blind(const struct store_uow *u);
int pg_unit_pipeline(struct pg_store *p, const struct store_uow *u, bool commit, bool defer);
/* postgres-keys.c: after a commit, on the writer, the block of keys the
 * loop will want next. */
void pg_keys_fetch_ahead(struct pg_store *p);
/* postgres-batch.c: a unit's operations of one kind (its inserts or its
 * audit rows) sent as one statement in the open pipeline. */
int pg_batch_send(struct pg_store *p, const struct store_uow *u, enum store_op_kind kind);
int pg_sessions_by_row_keys(struct store *s, const int64_t *keys, size_t n, store_session_fn cb, void *userdata);
int pg_session_by_hash(struct store *s, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb, void *userdata);
int pg_session_by_id(struct store *s, const char *id, store_session_fn cb, void *userdata);
int pg_sessions_each(struct store *s, const struct store_filter *f, store_session_fn cb, void *userdata);
int pg_sessions_ended_of_user_after(struct store *s, const char *user_id, int64_t after_row_key, store_session_fn cb,
                                    void *userdata);
int pg_maintain(struct store *s, struct store_maintenance *ret);
int pg_maintain_step(struct store *s, bool first);
int pg_maintain_start(struct store *s, bool first, store_maintain_fn done, void *userdata);
int pg_pace(struct store *s);
unsigned long long pg_checkpoint_runs(struct store *s);
int pg_set_synchronous(struct store *s, const char *synchronous);
int pg_count_sessions(struct store *s, bool ended, int64_t *ret);
int pg_audit_each(struct store *s, const struct store_audit_filter *f, store_audit_fn cb, void *userdata);
int pg_check_integrity(struct store *s, struct store_maintenance *ret);
int pg_probe(struct store *s);
int pg_count_created(struct store *s, int64_t since, int64_t bucket, uint64_t *counts, size_t n);
int pg_ended_durations(struct store *s, store_value_fn cb, void *userdata);
int pg_end_reasons(struct store *s, store_group_fn cb, void *userdata);
int pg_session_pages(struct store *s, int q, const char *user_id, int64_t after, bool light, store_session_fn cb,
                     void *userdata);
int64_t pg_size(struct store *s);
/* Rows read after a unit's commit (store_read_after): rows_find, rows_free. */
struct pg_rows *pg_rows_read(struct pg_store *p, const struct store_uow *u);
int pg_rows_find(void *rows, int64_t row_key, store_session_fn cb, void *userdata);
int pg_rows_find_hash(void *rows, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb, void *userdata);
void pg_rows_free(void *rows);
const char *pg_synchronous_value(const char *v);

/* ---- postgres-leader.c ---- */
int pg_aux_query(struct pg_store *p, const char *sql, const struct params *a, ExecStatusType want, const char *what,
                 PGresult **ret);
int pg_heartbeat(struct store *s, const char *daemon_id, bool leader, int64_t now);
int pg_probe_aux(struct store *s);
#define PG_AUX_LOOP_WAIT_MS 250
int pg_aux_lock_briefly(struct pg_store *p);
int pg_daemons_each(struct store *s, int64_t since_ms, store_daemon_fn cb, void *userdata);
int pg_fleet_refresh(struct store *s, int64_t since_ms);
void pg_seen_clear(struct pg_store *p);
int pg_leader_try(struct store *s, bool *is_leader);

/* ---- the listener (postgres-listen.c, postgres-announce.c) ---- */
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

/* Which daemons are connected, by their listeners' application_name. */
#define PG_LIVENESS_SQL                                                 \
        "SELECT substr(application_name, " PG_STRINGIFY(                \
                PG_APP_PREFIX_LEN) " + 1) FROM pg_stat_activity WHERE " \
                                   "datname = current_database() AND application_name LIKE '" PG_APP_PREFIX "%'"

/* postgres-listen.c: the connection and the changes heard. */
int pg_changes_subscribe(struct store *s, uv_loop_t *loop, store_change_fn fn, void *userdata);
void pg_listener_detach(struct pg_listener *l);
int pg_listener_watch(struct pg_listener *l, int events);
void pg_listener_lost(struct pg_listener *l);
void pg_listener_report(struct pg_listener *l, enum store_change_kind kind, int64_t row_key, bool lost);
void pg_listener_notifies(struct pg_listener *l);

/* postgres-announce.c: the statements sent on the listener's connection. */
void pg_listener_pump(struct pg_listener *l);
void pg_listener_flush(struct pg_listener *l);
void pg_listener_results(struct pg_listener *l);
void pg_listener_requeue(struct pg_listener *l);
void pg_listener_liveness(struct pg_listener *l, const PGresult *res);
void pg_live_note(struct pg_listener *l, const char *origin, size_t len);
void pg_live_forget(struct pg_listener *l, const char *origin, size_t n);
void pg_listener_async_cb(uv_async_t *a);
void pg_listener_tick_cb(uv_timer_t *t);
void pg_announce_at_close(struct pg_store *p);
