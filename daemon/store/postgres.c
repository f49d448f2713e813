/* The PostgreSQL backend of the store (DESIGN 8): several daemons, one
 * database. See store.h for the interface and backend.h for the table this
 * file fills; store.c runs the unit of work's writer thread and the lock.
 *
 * Connections. Each store has up to four libpq connections, each used by
 * one party only, so no connection is ever shared between threads:
 *   - the writing connection: units of work (on store.c's writer thread)
 *     and the reads of the interface (on the loop), one at a time under
 *     s->lock, exactly like sqlite.c's one connection;
 *   - an auxiliary one (heartbeat, daemons_each, size) under a mutex of its
 *     own, since those are called without s->lock;
 *   - the leader's (features.clustering): it holds the session-level
 *     advisory lock PG_LEADER_LOCK; losing the connection loses the lock,
 *     and leader_try then reports false and reconnects later;
 *   - the listener's (features.caching): LISTEN sessiond_changes, driven
 *     by a uv_poll_t on PQsocket() on the loop, never blocking it after the
 *     first connection (reconnections use PQconnectStartParams/PQconnectPoll).
 * Synchronous libpq calls are used on the writing connection: its units
 * are committed on the writer thread, and the loop's reads are bounded by
 * statement_timeout (PG_STATEMENT_TIMEOUT_MS, set on every connection;
 * readers opened for worker threads get PG_READER_STATEMENT_TIMEOUT_MS,
 * they scan whole tables) and by connect_timeout and tcp_user_timeout for
 * a server that went away. A lost writing connection is reconnected at the
 * next use, with a backoff; a unit whose transaction was lost with it
 * fails (-EIO), nothing of it acknowledged.
 *
 * Schema. Same tables and columns as sqlite.c's (sessions, audit) but times
 * are BIGINT Unix milliseconds (a new schema: no second/millisecond split),
 * hashes and blobs bytea, fingerprints BIGINT. sessiond_meta holds
 * schema_version and key_check; sessiond_daemons the heartbeats. The schema
 * has its own version (PG_SCHEMA_VERSION, not SQLite's) reached by forward
 * migrations, each in a transaction that first takes the transaction-level
 * advisory lock PG_MIGRATION_LOCK, so two daemons starting at once on an
 * empty database do not both create; a newer schema is refused (-EPROTO).
 * key_check (store_options) is stored by the first daemon; a daemon with
 * another one is refused (-EKEYREJECTED): tokens are looked up by keyed
 * hash, a daemon with another key would find nothing and write rows nobody
 * else can find.
 *
 * Keys come from the sequence sessiond_session_keys, which advances by
 * PG_KEY_BLOCK: one nextval() gives this store a block of PG_KEY_BLOCK
 * keys that no other daemon gets, handed out locally, so Create does not
 * pay a round trip per key. Keys are unique, not ordered across daemons.
 *
 * The unit of work runs its operations with prepared statements (prepared
 * once per connection) in one transaction, sent in libpq's pipeline mode
 * (PG_PIPELINE_OPS at a time): a unit of a hundred writes costs one round
 * trip, not a hundred; the first failure fails the unit (the server skips
 * the rest of the pipeline, the transaction is rolled back). Per-user limits across daemons
 * (store_user_limit(), STORE_OP_LIMIT): at commit, on the writer thread,
 * the transaction first takes pg_advisory_xact_lock(PG_USER_LOCK_CLASS,
 * hashtext(user_id)) for every user of its inserts and limits, all in one
 * statement in hash order (so two daemons never wait for each other in
 * opposite orders), then runs what is left of the unit, then each limit:
 * the user's live sessions beyond `keep`, least recently active first, end
 * as "evicted". Under the lock the count sees every other daemon's
 * committed rows, so of two daemons creating for one user at once the
 * second to commit sees the first's sessions: the limit holds. (An insert
 * that a read on the loop ran earlier took no lock: the loop never waits
 * for another daemon's commit. It needs none: what holds the limit is the
 * count under the lock.) Touches are written with
 * GREATEST(last_activity, $2): several daemons touch one session. Before
 * COMMIT the unit sends NOTIFY sessiond_changes for every change another
 * daemon must learn: payload "<origin>:<kind>:<row>[,<kind>:<row>...]"
 * (c created, e ended, r renewed, p platform, s sync state, u client; at
 * most PG_NOTIFY_MAX bytes each), origin
 * being a random id per store so that a store skips its own; sessions
 * ended for a limit go with origin "*", which every store hears, its own
 * included (its engine did not end them). PostgreSQL delivers
 * notifications at commit, in commit order, and drops them with a
 * rolled-back transaction.
 *
 * Durability: store_options.synchronous / store_set_synchronous() are
 * SQLite's PRAGMA names and mean nothing to PostgreSQL. The values are
 * checked (an unknown one is -EINVAL) and otherwise left alone: the
 * server's synchronous_commit (default on: durable locally, and waiting for
 * synchronous standbys if the operator has any) is the operator's choice,
 * stronger settings (remote_apply) included. The one thing this backend
 * does is refuse to run with synchronous_commit = off on its connections
 * (it sets it back to on, with a notice): replies to writes are held until
 * the commit, and with off a crash could lose what was acknowledged.
 *
 * Reads that may return many rows (listings, loading at open) are fetched
 * in pages of PG_PAGE_ROWS by row number, never as one result, so memory
 * stays bounded and a read's callback may read again on the connection.
 */
#include "backend.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "sessiond/config.h"

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
 * PG_ANNOUNCE_MS per daemon (see "Announcing creations" in postgres-fleet.c). */
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

/* ---- statements --------------------------------------------------------------- */

#define SESSION_COLUMNS                                                                                \
        "row, id, token_hash, user_id, platform_id, created_at, last_activity, renewed_at, ended_at, " \
        "end_reason, fp_user_agent, fp_ip, fp_accept_language, fp_accept_encoding, ip, user_agent, sync_version"
#define SESSION_COLUMNS_LIGHT                                                                          \
        "row, id, token_hash, user_id, platform_id, created_at, last_activity, renewed_at, ended_at, " \
        "end_reason, fp_user_agent, fp_ip, fp_accept_language, fp_accept_encoding, NULL, NULL, sync_version"

enum {
        Q_INSERT,
        Q_LOCK_USERS,
        Q_LIMIT,
        Q_ACTIVITY,
        Q_RENEWED,
        Q_END,
        Q_CLIENT,
        Q_COPY,
        Q_PLATFORM,
        Q_SYNC,
        Q_AUDIT,
        Q_NOTIFY,
        Q_GET_SWITCHES,
        Q_GET_SYNC,
        Q_BY_ROWID,
        Q_BY_HASH,
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

static const char *const q_sql[_Q_MAX] = {
        [Q_INSERT] = "INSERT INTO sessions (row, id, token_hash, user_id, platform_id, created_at, last_activity, "
                     "renewed_at, fp_user_agent, fp_ip, fp_accept_language, fp_accept_encoding, ip, user_agent, "
                     "sync_data, sync_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, "
                     "$15, $16)",
        [Q_LOCK_USERS] = "SELECT count(pg_advisory_xact_lock(" PG_STRINGIFY(PG_USER_LOCK_CLASS) ", h)) FROM "
                         "(SELECT DISTINCT hashtext(u) AS h FROM unnest($1::text[]) AS u ORDER BY h) AS x",
        [Q_LIMIT] = "WITH e AS (UPDATE sessions SET ended_at = $3, end_reason = 'evicted' WHERE row IN "
                    "(SELECT row FROM sessions WHERE user_id = $1 AND ended_at IS NULL "
                    "ORDER BY last_activity DESC, row DESC OFFSET $2) RETURNING row) SELECT row FROM e ORDER BY row",
        [Q_ACTIVITY] = "UPDATE sessions SET last_activity = GREATEST(last_activity, $2) WHERE row = $1",
        [Q_RENEWED] = "UPDATE sessions SET renewed_at = $2, last_activity = GREATEST(last_activity, $3) "
                      "WHERE row = $1",
        [Q_END] = "UPDATE sessions SET ended_at = $2, end_reason = $3 WHERE row = $1 AND ended_at IS NULL",
        [Q_CLIENT] = "UPDATE sessions SET fp_user_agent = coalesce($2, fp_user_agent), fp_ip = coalesce($3, fp_ip), "
                     "fp_accept_language = coalesce($4, fp_accept_language), "
                     "fp_accept_encoding = coalesce($5, fp_accept_encoding), ip = coalesce($6, ip), "
                     "user_agent = coalesce($7, user_agent) WHERE row = $1",
        [Q_COPY] = "INSERT INTO sessions (row, id, token_hash, user_id, platform_id, created_at, last_activity, "
                   "renewed_at, fp_user_agent, fp_ip, fp_accept_language, fp_accept_encoding, ip, user_agent, "
                   "sync_data, sync_version, platform_switches) "
                   "SELECT $5, $2, $3, user_id, platform_id, created_at, $4, renewed_at, fp_user_agent, fp_ip, "
                   "fp_accept_language, fp_accept_encoding, ip, user_agent, sync_data, sync_version, "
                   "platform_switches FROM sessions WHERE row = $1 AND ended_at IS NULL",
        [Q_PLATFORM] = "UPDATE sessions SET platform_id = $2, platform_switches = $3 WHERE row = $1",
        [Q_SYNC] = "UPDATE sessions SET sync_version = $2, sync_data = $3 WHERE row = $1",
        [Q_AUDIT] = "INSERT INTO audit (time, kind, user_id, session_id, detail) VALUES ($1, $2, $3, $4, $5)",
        [Q_NOTIFY] = "SELECT pg_notify('" PG_CHANNEL "', $1)",
        [Q_GET_SWITCHES] = "SELECT platform_switches FROM sessions WHERE row = $1",
        [Q_GET_SYNC] = "SELECT sync_version, sync_data FROM sessions WHERE row = $1",
        [Q_BY_ROWID] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE row = $1",
        [Q_BY_HASH] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE token_hash = $1 ORDER BY row",
        [Q_BY_ID] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE id = $1",
        [Q_ALL] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE row > $1 ORDER BY row LIMIT $2",
        [Q_ALL_LIGHT] = "SELECT " SESSION_COLUMNS_LIGHT " FROM sessions WHERE row > $1 ORDER BY row LIMIT $2",
        [Q_LIVE] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE ended_at IS NULL AND row > $1 ORDER BY row LIMIT $2",
        [Q_LIVE_LIGHT] = "SELECT " SESSION_COLUMNS_LIGHT
                         " FROM sessions WHERE ended_at IS NULL AND row > $1 ORDER BY row LIMIT $2",
        [Q_USER_ENDED] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE user_id = $1 AND ended_at IS NOT NULL "
                         "AND row > $2 ORDER BY row LIMIT $3",
        [Q_PURGE_SESSIONS] = "DELETE FROM sessions WHERE row IN (SELECT row FROM sessions WHERE ended_at IS NOT NULL "
                             "AND ended_at < $1 ORDER BY ended_at LIMIT $2)",
        [Q_PURGE_AUDIT] = "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE time < $1 ORDER BY time LIMIT $2)",
        [Q_NEXT_KEYS] = "SELECT nextval('sessiond_session_keys')",
        [Q_COUNT_LIVE] = "SELECT count(*) FROM sessions WHERE ended_at IS NULL",
        [Q_COUNT_ENDED] = "SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL",
        [Q_PROBE] = "SELECT max(row) FROM sessions",
};

/* Forward migrations: step i brings the schema from version i to i + 1
 * (in one transaction, under PG_MIGRATION_LOCK). Indexes as sqlite.c's
 * (user and end time indexed for ended rows) but two: the token hash is
 * indexed for every row, since a daemon's memory is only a cache of the
 * fleet's live sessions (a token created on another daemon is looked up
 * here: store_session_by_hash finds live rows too), and the live sessions
 * of a user are, for the per-user limit counted in the database. */
static const char *const migrations[PG_SCHEMA_VERSION] = {
        /* 0 -> 1: the first schema. */
        "CREATE SEQUENCE sessiond_session_keys INCREMENT BY " PG_STRINGIFY(PG_KEY_BLOCK) " MINVALUE 1 START WITH 1;"
        "CREATE TABLE sessions ("
        "  row BIGINT PRIMARY KEY,"
        "  id TEXT NOT NULL UNIQUE,"
        "  token_hash BYTEA NOT NULL,"
        "  user_id TEXT NOT NULL,"
        "  platform_id TEXT,"
        "  created_at BIGINT NOT NULL,"
        "  last_activity BIGINT NOT NULL,"
        "  renewed_at BIGINT NOT NULL,"
        "  ended_at BIGINT,"
        "  end_reason TEXT,"
        "  fp_user_agent BIGINT,"
        "  fp_ip BIGINT,"
        "  fp_accept_language BIGINT,"
        "  fp_accept_encoding BIGINT,"
        "  ip TEXT,"
        "  user_agent TEXT,"
        "  sync_data BYTEA,"
        "  sync_version BIGINT NOT NULL DEFAULT 0,"
        "  platform_switches TEXT"
        ");"
        "CREATE INDEX sessions_ended ON sessions (ended_at) WHERE ended_at IS NOT NULL;"
        "CREATE INDEX sessions_token ON sessions (token_hash);"
        "CREATE INDEX sessions_ended_user ON sessions (user_id, row) WHERE ended_at IS NOT NULL;"
        "CREATE INDEX sessions_live_user ON sessions (user_id) WHERE ended_at IS NULL;"
        "CREATE TABLE audit ("
        "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
        "  time BIGINT NOT NULL,"
        "  kind TEXT NOT NULL,"
        "  user_id TEXT,"
        "  session_id TEXT,"
        "  detail TEXT NOT NULL DEFAULT '{}'"
        ");"
        "CREATE INDEX audit_time ON audit (time, id);"
        "CREATE TABLE sessiond_daemons ("
        "  daemon_id TEXT PRIMARY KEY,"
        "  seen_ms BIGINT NOT NULL,"
        "  leader BOOLEAN NOT NULL DEFAULT false"
        ");",
};

/* ---- the store ------------------------------------------------------------------ */

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
        int64_t key_next, key_end;
        /* Rows the open transaction ended for a user's limit (STORE_OP_LIMIT):
         * every daemon, this one included, hears of them at commit. */
        int64_t *evicted;
        size_t n_evicted, allocated_evicted;

        pthread_mutex_t aux_lock;
        struct pg_conn aux;
        int64_t size_cached, size_at;

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

static struct pg_store *pg(struct store *s) {
        return (struct pg_store *)s;
}

static const struct pg_store *pg_const(const struct store *s) {
        return (const struct pg_store *)s;
}

static int64_t mono_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pqclearp(PGresult **r) {
        PQclear(*r);
}
#define _cleanup_pqclear_ _cleanup_(pqclearp)

/* ---- errors ----------------------------------------------------------------------- */

static int errno_from_sqlstate(const char *state) {
        if (!state || strlen(state) != 5)
                return -EIO;
        if (strncmp(state, "23", 2) == 0) /* integrity constraint violation: unique id, ... */
                return -EEXIST;
        if (strcmp(state, "53100") == 0) /* disk_full */
                return -ENOSPC;
        if (strcmp(state, "53200") == 0) /* out_of_memory */
                return -ENOMEM;
        if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0)
                return -EBUSY; /* serialization failure, deadlock, lock not available */
        if (strcmp(state, "42501") == 0 || strncmp(state, "28", 2) == 0)
                return -EACCES;
        if (strcmp(state, "54000") == 0)
                return -E2BIG;
        if (strncmp(state, "22", 2) == 0) /* data exception */
                return -EINVAL;
        return -EIO; /* connection exceptions (08), timeouts (57014), shutdowns (57P0x), ... */
}

/* A libpq message without its final newline, for a log line. */
static void log_pq_error(const char *name, const char *what, const char *msg) {
        size_t n = msg ? strlen(msg) : 0;

        while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
                n--;
        log_error("Store %s: %s failed: %.*s", name, what, (int)n, msg ? msg : "");
}

/* The errno of a result that is not `want` (logged), or 0. */
static int result_check(const char *name, PGconn *c, const PGresult *res, ExecStatusType want, const char *what) {
        if (res && PQresultStatus(res) == want)
                return 0;
        log_pq_error(name, what, res ? PQresultErrorMessage(res) : PQerrorMessage(c));
        return res ? errno_from_sqlstate(PQresultErrorField(res, PG_DIAG_SQLSTATE)) : -EIO;
}

/* ---- the password out of names ------------------------------------------------------ */

/* For logs: the project's one rule (sessiond_conninfo_redact(), libsessiond,
 * the one `sessionctl config --show` and validation use). NULL when out of
 * memory. */
static char *redact_url(const char *url) {
        char *r = NULL;

        return sessiond_conninfo_redact(url, &r) < 0 ? NULL : r;
}

/* ---- connections ---------------------------------------------------------------------- */

/* libpq's parameters: ours first, so that the URL's own win (expand_dbname). */
#define PG_CONNECT_KEYWORDS                                                                              \
        (const char *const[]) {                                                                          \
                "connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count",          \
                        "tcp_user_timeout", "fallback_application_name", "dbname", NULL                  \
        }
#define PG_CONNECT_VALUES(url)                                                                  \
        (const char *const[]) {                                                                 \
                PG_CONNECT_TIMEOUT_S, "10", "5", "3", "10000", "sessiond", (url), NULL          \
        }

/* The server's notices and warnings go to the daemon's log, not stderr. */
static void notice_log(void *userdata, const char *message) {
        size_t n = strlen(message);

        while (n > 0 && message[n - 1] == '\n')
                n--;
        log_notice("PostgreSQL: %.*s", (int)n, message);
}

/* What every connection runs first: its statement timeout, and never
 * synchronous_commit = off (see the top of this file). */
static int conn_setup(PGconn *c, const char *name, int timeout_ms) {
        char sql[160];
        int r;

        PQsetNoticeProcessor(c, notice_log, NULL);
        snprintf(sql, sizeof sql,
                 "SET client_min_messages = warning; SET statement_timeout = %d; SELECT current_setting('synchronous_commit') = 'off'", timeout_ms);
        {
                _cleanup_pqclear_ PGresult *res = PQexec(c, sql);

                r = result_check(name, c, res, PGRES_TUPLES_OK, "setting up the connection");
                if (r < 0 || strcmp(PQgetvalue(res, 0, 0), "t") != 0)
                        return r;
        }
        log_notice("Store %s: synchronous_commit is off for this role or database; sessiond sets it to on "
                   "(acknowledged writes must survive a crash).",
                   name);
        _cleanup_pqclear_ PGresult *res = PQexec(c, "SET synchronous_commit = on");
        return result_check(name, c, res, PGRES_COMMAND_OK, "setting synchronous_commit");
}

/* quiet: a failure to connect is not logged (a reconnection that failed
 * before, and was logged then). */
static int conn_open(const char *url, const char *name, int timeout_ms, bool quiet, PGconn **ret) {
        PGconn *c = PQconnectdbParams(PG_CONNECT_KEYWORDS, PG_CONNECT_VALUES(url), 1);
        int r;

        if (!c)
                return -ENOMEM;
        if (PQstatus(c) != CONNECTION_OK) {
                if (!quiet)
                        log_pq_error(name, "connecting", PQerrorMessage(c));
                PQfinish(c);
                return -EIO;
        }
        r = conn_setup(c, name, timeout_ms);
        if (r < 0) {
                PQfinish(c);
                return r;
        }
        *ret = c;
        return 0;
}

static void backoff(struct pg_conn *pc) {
        pc->delay_ms = pc->delay_ms ? pc->delay_ms * 2 : PG_BACKOFF_MIN_MS;
        if (pc->delay_ms > PG_BACKOFF_MAX_MS)
                pc->delay_ms = PG_BACKOFF_MAX_MS;
        pc->retry_at = mono_ms() + pc->delay_ms;
}

/* Makes pc usable: reconnects a lost connection (not before its backoff
 * has passed: -EIO meanwhile). */
static int conn_ready(struct pg_store *p, struct pg_conn *pc) {
        int r;

        if (pc->c && PQstatus(pc->c) == CONNECTION_OK)
                return 0;
        if (pc->c) {
                log_warning("Store %s: the connection to PostgreSQL was lost; reconnecting.", p->name);
                PQfinish(pc->c);
                pc->c = NULL;
        }
        if (mono_ms() < pc->retry_at)
                return -EIO;
        r = conn_open(p->url, p->name, p->timeout_ms, pc->delay_ms > 0, &pc->c);
        if (r < 0) {
                backoff(pc);
                return r;
        }
        if (pc->delay_ms)
                log_notice("Store %s: connected to PostgreSQL again.", p->name);
        pc->delay_ms = 0;
        pc->fresh = true;
        return 0;
}

static void conn_close(struct pg_conn *pc) {
        PQfinish(pc->c);
        pc->c = NULL;
}

static int exec_command(struct pg_store *p, PGconn *c, const char *sql, const char *what) {
        _cleanup_pqclear_ PGresult *res = PQexec(c, sql);

        return result_check(p->name, c, res, PGRES_COMMAND_OK, what);
}

/* A query of one int64 value (NULL: 0) on c. */
static int query_int64(struct pg_store *p, PGconn *c, const char *sql, const char *what, int64_t *ret) {
        _cleanup_pqclear_ PGresult *res = PQexec(c, sql);
        int r = result_check(p->name, c, res, PGRES_TUPLES_OK, what);

        if (r < 0)
                return r;
        *ret = PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
        return 0;
}

/* ---- the writing connection -------------------------------------------------------- */

static int prepare_all(struct pg_store *p) {
        char name[16];

        for (int i = 0; i < _Q_MAX; i++) {
                snprintf(name, sizeof name, "q%d", i);
                _cleanup_pqclear_ PGresult *res = PQprepare(p->w.c, name, q_sql[i], 0, NULL);
                int r = result_check(p->name, p->w.c, res, PGRES_COMMAND_OK, "preparing a statement");

                if (r < 0)
                        return r;
        }
        p->w.fresh = false;
        return 0;
}

static bool in_tx(const struct pg_store *p) {
        PGTransactionStatusType t = p->w.c ? PQtransactionStatus(p->w.c) : PQTRANS_UNKNOWN;

        return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

/* The writing connection, ready for statements (prepared). */
static int writer_ready(struct pg_store *p) {
        int r = conn_ready(p, &p->w);

        if (r >= 0 && p->w.fresh)
                r = prepare_all(p);
        return r;
}

/* Parameters of a statement, as text (numbers) or binary (bytea). */
#define PG_MAX_PARAMS 17
struct params {
        const char *v[PG_MAX_PARAMS];
        int len[PG_MAX_PARAMS], fmt[PG_MAX_PARAMS];
        char num[PG_MAX_PARAMS][24];
        int n;
};

static void param_int(struct params *a, int64_t v) {
        assert(a->n < PG_MAX_PARAMS);
        snprintf(a->num[a->n], sizeof a->num[0], "%" PRId64, v);
        a->v[a->n] = a->num[a->n];
        a->n++;
}

static void param_text(struct params *a, const char *v) {
        assert(a->n < PG_MAX_PARAMS);
        a->v[a->n++] = v;
}

/* A fingerprint: 0 is none (NULL). */
static void param_fp(struct params *a, uint64_t v) {
        if (v)
                param_int(a, (int64_t)v);
        else
                param_text(a, NULL);
}

static void param_bytes(struct params *a, const void *v, size_t n) {
        assert(a->n < PG_MAX_PARAMS);
        a->v[a->n] = v; /* NULL: SQL NULL; an empty blob is not NULL */
        a->len[a->n] = (int)n;
        a->fmt[a->n] = 1;
        a->n++;
}

/* Runs prepared statement q on the writing connection (or a reader's). */
static PGresult *run(struct pg_store *p, int q, const struct params *a) {
        char name[16];

        snprintf(name, sizeof name, "q%d", q);
        return PQexecPrepared(p->w.c, name, a ? a->n : 0, a ? a->v : NULL, a ? a->len : NULL, a ? a->fmt : NULL, 0);
}

/* Runs a statement that returns no rows: its row count, or the errno. */
static int run_command(struct pg_store *p, int q, const struct params *a, const char *what) {
        _cleanup_pqclear_ PGresult *res = run(p, q, a);
        int r = result_check(p->name, p->w.c, res, PGRES_COMMAND_OK, what);

        return r < 0 ? r : atoi(PQcmdTuples(res));
}

/* ---- the unit of work -------------------------------------------------------------------- */

static int64_t value_int(const PGresult *res, int i, int col);

static void tx_rollback(struct pg_store *p) {
        p->n_evicted = 0;
        if (in_tx(p))
                (void)exec_command(p, p->w.c, "ROLLBACK", "ROLLBACK");
}

/* The unit's transaction: open already, or begun now. A unit that ran
 * operations (or a purge) in a transaction that is gone (the connection
 * was lost) cannot go on: -EIO. */
static int tx_begin(struct pg_store *p, const struct store_uow *u) {
        int r;

        if (in_tx(p))
                return 0;
        if (u->applied > 0 || u->wrote) {
                log_error("Store %s: the connection was lost in the middle of a unit of work; its writes are "
                          "lost.", p->name);
                return -EIO;
        }
        r = writer_ready(p);
        return r < 0 ? r : exec_command(p, p->w.c, "BEGIN", "BEGIN");
}

/* Appends a text as an element of a PostgreSQL array literal. */
static char *array_append(char *o, const char *v) {
        *o++ = '"';
        for (; *v; v++) {
                if (*v == '"' || *v == '\\')
                        *o++ = '\\';
                *o++ = *v;
        }
        *o++ = '"';
        return o;
}

/* The user an operation counts for in a per-user limit, or NULL. */
static const char *op_user(const struct store_op *op) {
        return op->kind == STORE_OP_INSERT ? op->row.user_id : op->kind == STORE_OP_LIMIT ? op->s1 : NULL;
}

/* Takes the per-user locks of the unit's inserts and limits, at commit:
 * one statement, in hash order, so that two daemons never wait for each
 * other in opposite orders (see the top of this file). */
static int lock_users(struct pg_store *p, const struct store_uow *u) {
        _cleanup_free_ char *arr = NULL;
        struct params a = {0};
        size_t n = 3;
        char *o;

        for (size_t i = 0; i < u->n_ops; i++)
                if (op_user(&u->ops[i]))
                        n += 2 * strlen(op_user(&u->ops[i])) + 3;
        if (n == 3)
                return 0;
        arr = o = malloc(n);
        if (!arr)
                return -ENOMEM;
        *o++ = '{';
        for (size_t i = 0; i < u->n_ops; i++)
                if (op_user(&u->ops[i])) {
                        if (o[-1] != '{')
                                *o++ = ',';
                        o = array_append(o, op_user(&u->ops[i]));
                }
        *o++ = '}';
        *o = '\0';
        param_text(&a, arr);
        _cleanup_pqclear_ PGresult *res = run(p, Q_LOCK_USERS, &a);
        return result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "locking the users of new sessions");
}

/* Rows a limit ended, to be announced at commit. */
static int evicted_add(struct pg_store *p, const PGresult *res) {
        for (int i = 0; i < PQntuples(res); i++) {
                if (p->n_evicted == p->allocated_evicted) {
                        size_t m = p->allocated_evicted ? 2 * p->allocated_evicted : 16;
                        int64_t *e = reallocarray(p->evicted, m, sizeof *e);

                        if (!e)
                                return -ENOMEM;
                        p->evicted = e;
                        p->allocated_evicted = m;
                }
                p->evicted[p->n_evicted++] = value_int(res, i, 0);
        }
        return 0;
}

static int limit_send(struct pg_store *p, const struct store_op *op) {
        struct params a = {0};
        char name[16];

        param_text(&a, op->s1);
        param_int(&a, op->t1);
        param_int(&a, op->t2);
        snprintf(name, sizeof name, "q%d", Q_LIMIT);
        if (PQsendQueryPrepared(p->w.c, name, a.n, a.v, a.len, a.fmt, 0))
                return 0;
        log_pq_error(p->name, "holding a user's limit", PQerrorMessage(p->w.c));
        return -EIO;
}

/* The unit's limits (after all its inserts, under the users' locks), in
 * one pipeline: for each, the user's most recently active `keep` live
 * sessions stay, the others end. */
static int run_limits(struct pg_store *p, const struct store_uow *u) {
        PGconn *c = p->w.c;
        int r = 0, first = 0;
        size_t n = 0;

        for (size_t i = 0; i < u->n_ops; i++)
                n += u->ops[i].kind == STORE_OP_LIMIT;
        if (n == 0)
                return 0;
        if (!PQenterPipelineMode(c)) {
                log_pq_error(p->name, "entering pipeline mode", PQerrorMessage(c));
                return -EIO;
        }
        for (size_t i = 0; i < u->n_ops && r >= 0; i++)
                if (u->ops[i].kind == STORE_OP_LIMIT)
                        r = limit_send(p, &u->ops[i]);
        if (r >= 0 && !PQpipelineSync(c)) {
                log_pq_error(p->name, "sending the users' limits", PQerrorMessage(c));
                r = -EIO;
        }
        while (r >= 0) {
                PGresult *res = PQgetResult(c);

                if (!res) {
                        if (PQstatus(c) != CONNECTION_OK)
                                r = -EIO;
                        continue;
                }
                if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
                        PQclear(res);
                        break;
                }
                if (first == 0 && PQresultStatus(res) != PGRES_PIPELINE_ABORTED) {
                        first = result_check(p->name, c, res, PGRES_TUPLES_OK, "holding a user's limit");
                        if (first == 0)
                                first = evicted_add(p, res);
                }
                PQclear(res);
        }
        if (!PQexitPipelineMode(c) && r >= 0)
                r = -EIO;
        return r < 0 ? r : first;
}

static void insert_params(const struct store_op *op, struct params *a) {
        const struct store_session *row = &op->row;

        param_int(a, op->rowid);
        param_text(a, row->id);
        param_bytes(a, row->token_hash, TOKEN_HASH_BYTES);
        param_text(a, row->user_id);
        param_text(a, row->platform_id);
        param_int(a, row->created_at);
        param_int(a, row->last_activity);
        param_int(a, row->renewed_at);
        param_fp(a, row->fp_user_agent);
        param_fp(a, row->fp_ip);
        param_fp(a, row->fp_accept_language);
        param_fp(a, row->fp_accept_encoding);
        param_text(a, row->ip);
        param_text(a, row->user_agent);
        param_bytes(a, op->blob, op->blob_size);
        param_int(a, row->sync_version);
}

static void audit_params(const struct store_op *op, struct params *a) {
        param_int(a, op->t1);
        param_text(a, op->s1);
        param_text(a, op->s2);
        param_text(a, op->s3);
        param_text(a, op->blob ? op->blob : "{}");
}

static int op_update_params(const struct store_op *op, struct params *a, const char **what) {
        switch (op->kind) {
        case STORE_OP_ACTIVITY:
                param_int(a, op->t1);
                *what = "updating last_activity";
                return Q_ACTIVITY;
        case STORE_OP_RENEWED:
                param_int(a, op->t1);
                param_int(a, op->t2);
                *what = "renewing a session";
                return Q_RENEWED;
        case STORE_OP_END:
                param_int(a, op->t1);
                param_text(a, op->s1);
                *what = "ending a session";
                return Q_END;
        case STORE_OP_CLIENT:
                param_fp(a, op->row.fp_user_agent);
                param_fp(a, op->row.fp_ip);
                param_fp(a, op->row.fp_accept_language);
                param_fp(a, op->row.fp_accept_encoding);
                param_text(a, op->row.ip);
                param_text(a, op->row.user_agent);
                *what = "recording a client change";
                return Q_CLIENT;
        case STORE_OP_COPY:
                param_text(a, op->s1);
                param_bytes(a, op->row.token_hash, TOKEN_HASH_BYTES);
                param_int(a, op->t1);
                param_int(a, op->t2);
                *what = "copying a session";
                return Q_COPY;
        case STORE_OP_PLATFORM:
                param_text(a, op->s1);
                param_text(a, op->s2);
                *what = "switching the platform";
                return Q_PLATFORM;
        case STORE_OP_SYNC:
                param_int(a, op->t1);
                param_bytes(a, op->blob, op->blob_size);
                *what = "writing sync state";
                return Q_SYNC;
        default:
                return -EINVAL;
        }
}

/* The statement of an operation and its parameters (not for
 * STORE_OP_LIMIT, run at commit: run_limits()). */
static int op_statement(const struct store_op *op, struct params *a, const char **what) {
        switch (op->kind) {
        case STORE_OP_INSERT:
                insert_params(op, a);
                *what = "inserting a session";
                return Q_INSERT;
        case STORE_OP_AUDIT:
                audit_params(op, a);
                *what = "writing an audit row";
                return Q_AUDIT;
        default:
                param_int(a, op->rowid);
                return op_update_params(op, a, what);
        }
}

static bool op_sent(const struct store_op *op) {
        return op->kind != STORE_OP_LIMIT;
}

static int op_send(struct pg_store *p, const struct store_op *op) {
        struct params a = {0};
        const char *what = NULL;
        char name[16];
        int q = op_statement(op, &a, &what);

        assert(q >= 0);
        if (q < 0)
                return q;
        snprintf(name, sizeof name, "q%d", q);
        if (PQsendQueryPrepared(p->w.c, name, a.n, a.v, a.len, a.fmt, 0))
                return 0;
        log_pq_error(p->name, what, PQerrorMessage(p->w.c));
        return -EIO;
}

/* An operation's result: an update (or the copy) that changed no row is
 * -ENOENT, as in sqlite.c (a row that is not there, or already ended for
 * COPY), but for END and ACTIVITY. Several daemons write one table, and a
 * daemon's memory follows the others' changes only within the
 * notification's delay: another daemon may have ended the session first
 * (its end stands, with its reason, and this daemon learns of it), or the
 * leader may have purged a row long ended whose last touch is written
 * late. Such a write is moot, not a failure that would lose the unit's
 * other writes. */
static int op_result(struct pg_store *p, const struct store_op *op, PGresult *res) {
        struct params a = {0};
        const char *what = NULL;
        int r;

        (void)op_statement(op, &a, &what);
        r = result_check(p->name, p->w.c, res, PGRES_COMMAND_OK, what);
        if (r < 0)
                return r;
        if (op->kind != STORE_OP_INSERT && op->kind != STORE_OP_AUDIT && op->kind != STORE_OP_END &&
            op->kind != STORE_OP_ACTIVITY && atoi(PQcmdTuples(res)) == 0)
                return -ENOENT;
        return 0;
}

static size_t next_sent(const struct store_uow *u, size_t i, size_t to) {
        while (i < to && !op_sent(&u->ops[i]))
                i++;
        return i;
}

/* Reads a pipeline's results up to its sync: 0 or the first failure; i is
 * the first operation sent. */
static int pipeline_results(struct pg_store *p, const struct store_uow *u, size_t i, size_t to) {
        PGconn *c = p->w.c;
        int first = 0;

        for (;;) {
                PGresult *res = PQgetResult(c);
                ExecStatusType st;

                if (!res) { /* the end of one operation's results */
                        if (PQstatus(c) != CONNECTION_OK || i >= to)
                                return first < 0 ? first : -EIO;
                        i = next_sent(u, i + 1, to);
                        continue;
                }
                st = PQresultStatus(res);
                if (st == PGRES_PIPELINE_SYNC) {
                        PQclear(res);
                        return first;
                }
                if (first == 0 && i < to && st != PGRES_PIPELINE_ABORTED)
                        first = op_result(p, &u->ops[i], res);
                PQclear(res);
        }
}

/* Runs u->ops[from..to) in one pipeline, one round trip for all of them:
 * 0, or the first failure (the server skips what follows a failure in a
 * pipeline; the caller rolls back). */
static int ops_pipeline(struct pg_store *p, const struct store_uow *u, size_t from, size_t to) {
        PGconn *c = p->w.c;
        size_t i = next_sent(u, from, to);
        int r = 0;

        if (i == to)
                return 0;
        if (!PQenterPipelineMode(c)) {
                log_pq_error(p->name, "entering pipeline mode", PQerrorMessage(c));
                return -EIO;
        }
        for (size_t k = i; k < to && r >= 0; k = next_sent(u, k + 1, to))
                r = op_send(p, &u->ops[k]);
        if (r >= 0 && !PQpipelineSync(c)) {
                log_pq_error(p->name, "sending a unit of work", PQerrorMessage(c));
                r = -EIO;
        }
        if (r >= 0)
                r = pipeline_results(p, u, i, to);
        /* Fails only with results pending, on a broken connection (which
         * is then made again: conn_ready()). */
        if (!PQexitPipelineMode(c) && r >= 0)
                r = -EIO;
        return r;
}

static int pg_uow_apply(struct store *s, struct store_uow *u) {
        struct pg_store *p = pg(s);
        int r;

        if (u->error)
                return u->error;
        if (u->applied == u->n_ops)
                return 0;
        r = tx_begin(p, u);
        while (r >= 0 && u->applied < u->n_ops) {
                size_t to = u->applied + PG_PIPELINE_OPS < u->n_ops ? u->applied + PG_PIPELINE_OPS : u->n_ops;

                r = ops_pipeline(p, u, u->applied, to);
                if (r >= 0)
                        u->applied = to;
        }
        if (r < 0) {
                tx_rollback(p);
                u->error = r;
                u->applied = u->n_ops;
        }
        return r;
}

/* What other daemons learn of an operation: 0 nothing, else its letter
 * and the row it names. */
static char change_letter(const struct store_op *op, int64_t *rowid) {
        *rowid = op->rowid;
        switch (op->kind) {
        case STORE_OP_INSERT:
                return 'c';
        case STORE_OP_COPY:
                *rowid = op->t2; /* the new row; the old one's END is an operation of its own */
                return 'c';
        case STORE_OP_END:
                return 'e';
        case STORE_OP_RENEWED:
                return 'r';
        case STORE_OP_PLATFORM:
                return 'p';
        case STORE_OP_SYNC:
                return 's';
        case STORE_OP_CLIENT:
                return 'u';
        default:
                return 0;
        }
}

static int notify_send(struct pg_store *p, const char *payload) {
        struct params a = {0};

        param_text(&a, payload);
        _cleanup_pqclear_ PGresult *res = run(p, Q_NOTIFY, &a);
        return result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "NOTIFY");
}

/* NOTIFY sessiond_changes for the unit's changes, batched in payloads of
 * at most PG_NOTIFY_MAX bytes; with defer_created, not its creations
 * (STORE_OP_INSERT: announced after the commit, announce_created()). */
static int notify_unit(struct pg_store *p, const struct store_uow *u, bool defer_created) {
        char payload[PG_NOTIFY_MAX + 32];
        size_t head = (size_t)snprintf(payload, sizeof payload, "%s:", p->origin), len = head;
        int r;

        for (size_t i = 0; i < u->n_ops; i++) {
                char item[32];
                int64_t rowid;
                char k = change_letter(&u->ops[i], &rowid);
                int n;

                if (!k || (defer_created && u->ops[i].kind == STORE_OP_INSERT))
                        continue;
                n = snprintf(item, sizeof item, "%s%c:%" PRId64, len > head ? "," : "", k, rowid);
                if (len + (size_t)n > PG_NOTIFY_MAX) {
                        r = notify_send(p, payload);
                        if (r < 0)
                                return r;
                        len = head;
                        n = snprintf(item, sizeof item, "%c:%" PRId64, k, rowid);
                }
                memcpy(payload + len, item, (size_t)n + 1);
                len += (size_t)n;
        }
        return len > head ? notify_send(p, payload) : 0;
}

/* The rows ended for a limit, with the origin "*": every daemon, this one
 * included, hears of them (its engine did not end them itself). */
static int notify_evicted(struct pg_store *p) {
        char payload[PG_NOTIFY_MAX + 32];
        size_t len = 2;
        int r;

        memcpy(payload, "*:", 3);
        for (size_t i = 0; i < p->n_evicted; i++) {
                char item[32];
                int n = snprintf(item, sizeof item, "%se:%" PRId64, len > 2 ? "," : "", p->evicted[i]);

                if (len + (size_t)n > PG_NOTIFY_MAX) {
                        r = notify_send(p, payload);
                        if (r < 0)
                                return r;
                        len = 2;
                        n = snprintf(item, sizeof item, "e:%" PRId64, p->evicted[i]);
                }
                memcpy(payload + len, item, (size_t)n + 1);
                len += (size_t)n;
        }
        return len > 2 ? notify_send(p, payload) : 0;
}

/* ---- creations announced after their commit: the writer's side ---------------- */

/* Whether creations can wait for the listener (the store has one). */
static bool announcer_present(struct pg_store *p) {
        bool r;

        pthread_mutex_lock(&p->announce_lock);
        r = p->announce_async != NULL;
        pthread_mutex_unlock(&p->announce_lock);
        return r;
}

/* The unit's creations, committed: queued for the listener, woken when
 * the queue was empty (it sends at most every PG_ANNOUNCE_MS anyway). Out
 * of memory, a creation goes unannounced: the others still find the
 * session by its token in the store (fleet_lookup). */
static void announce_created(struct pg_store *p, const struct store_uow *u) {
        size_t before;

        pthread_mutex_lock(&p->announce_lock);
        before = p->n_announce;
        for (size_t i = 0; i < u->n_ops; i++) {
                if (u->ops[i].kind != STORE_OP_INSERT)
                        continue;
                if (p->n_announce == p->allocated_announce) {
                        size_t m = p->allocated_announce ? 2 * p->allocated_announce : 256;
                        int64_t *a = reallocarray(p->announce, m, sizeof *a);

                        if (!a) {
                                log_error("Store %s: out of memory; a creation is not announced to the other "
                                          "daemons.", p->name);
                                break;
                        }
                        p->announce = a;
                        p->allocated_announce = m;
                }
                p->announce[p->n_announce++] = u->ops[i].rowid;
        }
        if (before == 0 && p->n_announce > 0 && p->announce_async)
                uv_async_send(p->announce_async);
        pthread_mutex_unlock(&p->announce_lock);
}

/* Whether the only news of the unit for the others are creations: then
 * they wait for the listener. A unit that sends a NOTIFY in its
 * transaction anyway (an end, a sync write...) has taken the lock
 * already; its creations go with it, in order. */
static bool unit_only_creates(const struct store_uow *u) {
        bool creates = false;

        for (size_t i = 0; i < u->n_ops; i++) {
                int64_t rowid;
                char k = change_letter(&u->ops[i], &rowid);

                if (k && u->ops[i].kind != STORE_OP_INSERT)
                        return false;
                creates = creates || k;
        }
        return creates;
}

/* Whether the unit needs the per-user locks. */
static bool unit_has_users(const struct store_uow *u) {
        for (size_t i = 0; i < u->n_ops; i++)
                if (op_user(&u->ops[i]))
                        return true;
        return false;
}

/* The per-user locks first (inserts run earlier by a read took none: the
 * limit, counted here under the lock, sees every other daemon's committed
 * rows, which is what holds it), then what is left, the limits, the
 * notifications, COMMIT. */
static int uow_commit_once(struct store *s, struct store_uow *u) {
        struct pg_store *p = pg(s);
        bool defer = unit_only_creates(u) && announcer_present(p);
        int r = u->error;

        if (r >= 0 && unit_has_users(u)) {
                r = tx_begin(p, u);
                if (r >= 0)
                        r = lock_users(p, u);
                if (r < 0) {
                        tx_rollback(p);
                        u->error = r;
                        u->applied = u->n_ops;
                }
        }
        if (r >= 0)
                r = pg_uow_apply(s, u);
        if (r < 0)
                return r;
        if (!in_tx(p)) {
                if (u->n_ops == 0 && !u->wrote)
                        return 0;
                log_error("Store %s: the connection was lost before a unit of work was committed; its writes "
                          "are lost.", p->name);
                return -EIO;
        }
        r = run_limits(p, u);
        if (r >= 0)
                r = notify_unit(p, u, defer);
        if (r >= 0)
                r = notify_evicted(p);
        if (r >= 0) {
                _cleanup_pqclear_ PGresult *res = PQexec(p->w.c, "COMMIT");

                r = result_check(p->name, p->w.c, res, PGRES_COMMAND_OK, "COMMIT");
                if (r >= 0 && strcmp(PQcmdStatus(res), "COMMIT") != 0) {
                        log_error("Store %s: the transaction was rolled back at COMMIT.", p->name);
                        r = -EIO;
                }
                /* Also when COMMIT failed: a lost connection leaves it
                 * unknown whether it committed, and announcing a row that
                 * is not there costs the others a read that finds nothing. */
                if (defer)
                        announce_created(p, u);
        }
        if (r < 0)
                tx_rollback(p);
        p->n_evicted = 0;
        return r;
}

/* A unit whose operations a read on the loop ran early (reads see the
 * open unit's writes) took its row locks before the users' locks, so it
 * can deadlock with another daemon's unit that holds a user's lock and
 * waits for one of those rows; PostgreSQL then aborts one of the two
 * (-EBUSY: deadlock or serialization failure). The writer runs such a
 * unit again from its first operation, the users' locks first this time,
 * so it waits its turn instead. A unit that purged cannot be run again
 * (its purge is not an operation) and fails. */
#define PG_UNIT_TRIES 3

static int pg_uow_commit(struct store *s, struct store_uow *u) {
        int r = uow_commit_once(s, u);

        for (int i = 1; r == -EBUSY && !u->wrote && i < PG_UNIT_TRIES; i++) {
                log_notice("Store %s: a unit of work met another daemon's (deadlock); running it again.",
                           pg(s)->name);
                u->error = 0;
                u->applied = 0;
                r = uow_commit_once(s, u);
        }
        return r;
}

static void pg_rollback(struct store *s) {
        tx_rollback(pg(s));
}

static int pg_allocate_key(struct store *s, int64_t *ret) {
        struct pg_store *p = pg(s);

        if (p->key_next >= p->key_end) {
                int r = in_tx(p) ? 0 : writer_ready(p);
                _cleanup_pqclear_ PGresult *res = r < 0 ? NULL : run(p, Q_NEXT_KEYS, NULL);

                if (r < 0)
                        return r;
                r = result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "allocating session keys");
                if (r < 0)
                        return r;
                p->key_next = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
                p->key_end = p->key_next + PG_KEY_BLOCK;
        }
        *ret = p->key_next++;
        return 0;
}

/* Purges run in the open unit's transaction (store.c marks the unit). */
static int purge(struct store *s, int q, int64_t before, int limit, const char *what) {
        struct pg_store *p = pg(s);
        struct params a = {0};
        int r = tx_begin(p, &s->open);

        if (r < 0)
                return r;
        param_int(&a, before);
        param_int(&a, limit);
        return run_command(p, q, &a, what);
}

static int pg_purge_sessions(struct store *s, int64_t before, int limit) {
        return purge(s, Q_PURGE_SESSIONS, before, limit, "purging ended sessions");
}

static int pg_purge_audit(struct store *s, int64_t before, int limit) {
        return purge(s, Q_PURGE_AUDIT, before, limit, "purging audit rows");
}

/* ---- reads --------------------------------------------------------------------------------- */

/* The connection, ready for a read: in the open unit's transaction, or
 * (re)connected. */
static int read_ready(struct pg_store *p) {
        return in_tx(p) ? 0 : writer_ready(p);
}

static int hexval(char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A bytea in hex output ("\x0102...") into exactly n bytes; false if it is not that. */
static bool bytea_exact(const char *v, uint8_t *out, size_t n) {
        if (strncmp(v, "\\x", 2) != 0 || strlen(v + 2) != 2 * n)
                return false;
        v += 2;
        for (size_t i = 0; i < n; i++) {
                int hi = hexval(v[2 * i]), lo = hexval(v[2 * i + 1]);

                if (hi < 0 || lo < 0)
                        return false;
                out[i] = (uint8_t)(hi << 4 | lo);
        }
        return true;
}

static const char *value_or_null(const PGresult *res, int i, int col) {
        return PQgetisnull(res, i, col) ? NULL : PQgetvalue(res, i, col);
}

static int64_t value_int(const PGresult *res, int i, int col) {
        return PQgetisnull(res, i, col) ? 0 : strtoll(PQgetvalue(res, i, col), NULL, 10);
}

/* Row i of a SESSION_COLUMNS result (strings borrowed from res). */
static void row_from_result(const PGresult *res, int i, struct store_session *row, bool light) {
        memset(row, 0, sizeof *row);
        row->rowid = value_int(res, i, 0);
        row->id = PQgetvalue(res, i, 1);
        (void)bytea_exact(PQgetvalue(res, i, 2), row->token_hash, TOKEN_HASH_BYTES);
        row->user_id = PQgetvalue(res, i, 3);
        row->platform_id = value_or_null(res, i, 4);
        row->created_at = value_int(res, i, 5);
        row->last_activity = value_int(res, i, 6);
        row->renewed_at = value_int(res, i, 7);
        row->ended_at = value_int(res, i, 8);
        row->end_reason = value_or_null(res, i, 9);
        row->fp_user_agent = (uint64_t)value_int(res, i, 10);
        row->fp_ip = (uint64_t)value_int(res, i, 11);
        row->fp_accept_language = (uint64_t)value_int(res, i, 12);
        row->fp_accept_encoding = (uint64_t)value_int(res, i, 13);
        if (!light) {
                row->ip = value_or_null(res, i, 14);
                row->user_agent = value_or_null(res, i, 15);
        }
        row->sync_version = value_int(res, i, 16);
}

/* Hands the rows of res to cb: 0, cb's non-zero value, or -ENOENT for
 * none when want_one. *last: the last row handed. */
static int result_each(const PGresult *res, bool light, store_session_fn cb, void *userdata, bool want_one,
                       int64_t *last) {
        struct store_session row;
        int n = PQntuples(res), r = 0;

        for (int i = 0; i < n && r == 0; i++) {
                row_from_result(res, i, &row, light);
                if (last)
                        *last = row.rowid;
                r = cb(&row, userdata);
        }
        return r == 0 && want_one && n == 0 ? -ENOENT : r;
}

/* A query for one row by a parameter. */
static int session_one(struct store *s, int q, struct params *a, store_session_fn cb, void *userdata) {
        struct pg_store *p = pg(s);
        int r = read_ready(p);

        if (r < 0)
                return r;
        _cleanup_pqclear_ PGresult *res = run(p, q, a);
        r = result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "reading a session");
        return r < 0 ? r : result_each(res, false, cb, userdata, true, NULL);
}

static int pg_session_by_rowid(struct store *s, int64_t rowid, store_session_fn cb, void *userdata) {
        struct params a = {0};

        param_int(&a, rowid);
        return session_one(s, Q_BY_ROWID, &a, cb, userdata);
}

static int pg_session_by_hash(struct store *s, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb,
                              void *userdata) {
        struct params a = {0};

        param_bytes(&a, hash, TOKEN_HASH_BYTES);
        return session_one(s, Q_BY_HASH, &a, cb, userdata);
}

static int pg_session_by_id(struct store *s, const char *id, store_session_fn cb, void *userdata) {
        struct params a = {0};

        param_text(&a, id);
        return session_one(s, Q_BY_ID, &a, cb, userdata);
}

/* Pages of PG_PAGE_ROWS rows after a row number: q's last two parameters
 * are the row to start after and the page's size. */
static int session_pages(struct store *s, int q, const char *user_id, int64_t after, bool light,
                         store_session_fn cb, void *userdata) {
        struct pg_store *p = pg(s);
        int r = 0, n;

        do {
                struct params a = {0};
                int64_t last = after;

                r = read_ready(p);
                if (r < 0)
                        return r;
                if (user_id)
                        param_text(&a, user_id);
                param_int(&a, after);
                param_int(&a, PG_PAGE_ROWS);
                _cleanup_pqclear_ PGresult *res = run(p, q, &a);
                r = result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "reading sessions");
                if (r < 0)
                        return r;
                n = PQntuples(res);
                r = result_each(res, light, cb, userdata, false, &last);
                after = last;
        } while (r == 0 && n == PG_PAGE_ROWS);
        return r;
}

static int pg_sessions_each(struct store *s, const struct store_filter *f, store_session_fn cb, void *userdata) {
        int q = f->live_only ? (f->light ? Q_LIVE_LIGHT : Q_LIVE) : (f->light ? Q_ALL_LIGHT : Q_ALL);

        return session_pages(s, q, NULL, f->after_rowid, f->light, cb, userdata);
}

static int pg_sessions_ended_of_user_after(struct store *s, const char *user_id, int64_t after_rowid,
                                           store_session_fn cb, void *userdata) {
        return session_pages(s, Q_USER_ENDED, user_id, after_rowid, false, cb, userdata);
}

/* A read of one row by its key; res is the caller's to clear. -ENOENT: none. */
static int read_by_rowid(struct store *s, int q, int64_t rowid, const char *what, PGresult **ret) {
        struct pg_store *p = pg(s);
        struct params a = {0};
        PGresult *res;
        int r = read_ready(p);

        if (r < 0)
                return r;
        param_int(&a, rowid);
        res = run(p, q, &a);
        r = result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, what);
        if (r >= 0 && PQntuples(res) == 0)
                r = -ENOENT;
        if (r < 0) {
                PQclear(res);
                return r;
        }
        *ret = res;
        return 0;
}

static int pg_session_get_switches(struct store *s, int64_t rowid, char **ret) {
        _cleanup_pqclear_ PGresult *res = NULL;
        int r = read_by_rowid(s, Q_GET_SWITCHES, rowid, "reading platform switches", &res);

        if (r < 0)
                return r;
        *ret = strdup(PQgetisnull(res, 0, 0) ? "[]" : PQgetvalue(res, 0, 0));
        return *ret ? 0 : -ENOMEM;
}

static int pg_session_get_sync(struct store *s, int64_t rowid, int64_t *version, char **data, size_t *size) {
        _cleanup_pqclear_ PGresult *res = NULL;
        unsigned char *b;
        size_t n = 0;
        int r = read_by_rowid(s, Q_GET_SYNC, rowid, "reading sync state", &res);

        if (r < 0)
                return r;
        *version = value_int(res, 0, 0);
        *data = NULL;
        *size = 0;
        if (PQgetisnull(res, 0, 1))
                return 0;
        b = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 1), &n);
        if (!b)
                return -ENOMEM;
        *data = malloc(n + 1);
        if (*data) {
                memcpy(*data, b, n);
                (*data)[n] = '\0';
                *size = n;
        }
        PQfreemem(b);
        return *data ? 0 : -ENOMEM;
}

/* A read of one number with a prepared statement. */
static int read_int(struct store *s, int q, const char *what, int64_t *ret) {
        struct pg_store *p = pg(s);
        int r = read_ready(p);

        if (r < 0)
                return r;
        _cleanup_pqclear_ PGresult *res = run(p, q, NULL);
        r = result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, what);
        if (r < 0)
                return r;
        *ret = PQntuples(res) > 0 ? value_int(res, 0, 0) : 0;
        return 0;
}

static int pg_count_sessions(struct store *s, bool ended, int64_t *ret) {
        return read_int(s, ended ? Q_COUNT_ENDED : Q_COUNT_LIVE, "counting sessions", ret);
}

static int pg_probe(struct store *s) {
        int64_t v;

        return read_int(s, Q_PROBE, "probing the database", &v);
}

/* An ad-hoc query with text parameters (operators' queries are rare: not
 * prepared). */
static int query(struct store *s, const char *sql, const struct params *a, const char *what, PGresult **ret) {
        struct pg_store *p = pg(s);
        PGresult *res;
        int r = read_ready(p);

        if (r < 0)
                return r;
        res = PQexecParams(p->w.c, sql, a ? a->n : 0, NULL, a ? a->v : NULL, NULL, NULL, 0);
        r = result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, what);
        if (r < 0) {
                PQclear(res);
                return r;
        }
        *ret = res;
        return 0;
}

/* As sqlite.c's audit_query(): one query of the audit, the whole filter
 * (AUDIT_ALL), or for a page after (a, b) oldest first the rows at time a
 * after id b (AUDIT_SAME_TIME) then those after time a (AUDIT_LATER). */
enum { AUDIT_ALL, AUDIT_SAME_TIME, AUDIT_LATER };

static int audit_query(struct store *s, const struct store_audit_filter *f, int part, unsigned limit,
                       store_audit_fn cb, void *userdata, unsigned *n) {
        _cleanup_pqclear_ PGresult *res = NULL;
        struct params a = {0};
        char sql[512], cond[160] = "";
        int r;

        param_int(&a, f->since);
        if (f->user_id) {
                param_text(&a, f->user_id);
                snprintf(cond + strlen(cond), sizeof cond - strlen(cond), " AND user_id = $%d", a.n);
        }
        if (f->kind) {
                param_text(&a, f->kind);
                snprintf(cond + strlen(cond), sizeof cond - strlen(cond), " AND kind = $%d", a.n);
        }
        if (part == AUDIT_SAME_TIME) {
                param_int(&a, f->after_time);
                param_int(&a, f->after_id);
                snprintf(cond + strlen(cond), sizeof cond - strlen(cond), " AND time = $%d AND id > $%d", a.n - 1,
                         a.n);
        } else if (part == AUDIT_LATER) {
                param_int(&a, f->after_time);
                snprintf(cond + strlen(cond), sizeof cond - strlen(cond), " AND time > $%d", a.n);
        }
        param_int(&a, limit);
        param_int(&a, f->offset);
        snprintf(sql, sizeof sql, "SELECT %s FROM audit WHERE time >= $1%s ORDER BY %s LIMIT $%d OFFSET $%d",
                 f->keys_only ? "id, time, NULL, NULL, NULL, NULL" : "id, time, kind, user_id, session_id, detail",
                 cond, f->ascending ? "time, id" : "time DESC, id DESC", a.n - 1, a.n);
        r = query(s, sql, &a, "reading audit rows", &res);
        if (r < 0)
                return r;
        for (int i = 0; i < PQntuples(res) && r == 0; i++) {
                struct store_audit_row row = {
                        .id = value_int(res, i, 0),
                        .time = value_int(res, i, 1),
                        .kind = PQgetisnull(res, i, 2) ? "" : PQgetvalue(res, i, 2),
                        .user_id = value_or_null(res, i, 3),
                        .session_id = value_or_null(res, i, 4),
                        .detail = value_or_null(res, i, 5),
                };
                (*n)++;
                r = cb(&row, userdata);
        }
        return r;
}

static int pg_audit_each(struct store *s, const struct store_audit_filter *f, store_audit_fn cb, void *userdata) {
        unsigned n = 0;
        int r;

        if (!f->ascending)
                return audit_query(s, f, AUDIT_ALL, f->limit, cb, userdata, &n);
        r = audit_query(s, f, AUDIT_SAME_TIME, f->limit, cb, userdata, &n);
        if (r == 0 && n < f->limit)
                r = audit_query(s, f, AUDIT_LATER, f->limit - n, cb, userdata, &n);
        return r;
}

/* Session times are milliseconds here, and the analytics count seconds
 * (store.h): since and bucket are seconds, durations the difference of the
 * seconds, as sqlite.c. */
static int pg_count_created(struct store *s, int64_t since, int64_t bucket, uint64_t *counts, size_t n) {
        _cleanup_pqclear_ PGresult *res = NULL;
        struct params a = {0};
        int r;

        assert(bucket > 0);
        memset(counts, 0, n * sizeof *counts);
        param_int(&a, since);
        param_int(&a, bucket);
        r = query(s,
                  "SELECT (created_at / 1000 - $1::bigint) / $2::bigint, "
                  "count(*) - count(*) FILTER (WHERE end_reason = 'rotated') FROM sessions "
                  "WHERE created_at >= $1::bigint * 1000 GROUP BY 1",
                  &a, "counting created sessions", &res);
        if (r < 0)
                return r;
        for (int i = 0; i < PQntuples(res); i++) {
                int64_t b = value_int(res, i, 0), c = value_int(res, i, 1);

                if (b >= 0 && (uint64_t)b < n && c > 0)
                        counts[b] = (uint64_t)c;
        }
        return 0;
}

/* Grouped by duration: a million ended sessions are a few thousand
 * distinct durations, so the result stays small; each is handed as many
 * times as it occurs. */
static int pg_ended_durations(struct store *s, store_value_fn cb, void *userdata) {
        _cleanup_pqclear_ PGresult *res = NULL;
        int r = query(s,
                      "SELECT GREATEST(ended_at / 1000 - created_at / 1000, 0) AS d, count(*) FROM sessions "
                      "WHERE ended_at IS NOT NULL AND end_reason IS DISTINCT FROM 'rotated' GROUP BY d ORDER BY d",
                      NULL, "reading session durations", &res);

        for (int i = 0; r == 0 && i < PQntuples(res); i++)
                for (int64_t k = value_int(res, i, 1); r == 0 && k > 0; k--)
                        r = cb(value_int(res, i, 0), userdata);
        return r;
}

static int pg_end_reasons(struct store *s, store_group_fn cb, void *userdata) {
        _cleanup_pqclear_ PGresult *res = NULL;
        int r = query(s,
                      "SELECT end_reason, count(*) FROM sessions WHERE ended_at IS NOT NULL "
                      "GROUP BY end_reason ORDER BY end_reason COLLATE \"C\" NULLS FIRST",
                      NULL, "counting end reasons", &res);

        for (int i = 0; r == 0 && i < PQntuples(res); i++)
                r = cb(value_or_null(res, i, 0), value_int(res, i, 1), userdata);
        return r;
}

/* PostgreSQL checks its own pages (checksums, if the cluster has them);
 * what is checked here is that the tables answer. */
static int pg_check_integrity(struct store *s, struct store_maintenance *ret) {
        _cleanup_pqclear_ PGresult *res = NULL;
        int r;

        memset(ret, 0, sizeof *ret);
        r = query(s, "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM audit)", NULL,
                  "checking the tables", &res);
        if (r < 0)
                return r;
        ret->ok = true;
        snprintf(ret->message, sizeof ret->message, "ok");
        return 0;
}

/* ANALYZE for the planner (autovacuum does the rest), then the check. */
static int pg_maintain(struct store *s, struct store_maintenance *ret) {
        struct pg_store *p = pg(s);
        int r = read_ready(p);

        if (r >= 0 && !in_tx(p))
                r = exec_command(p, p->w.c, "ANALYZE sessions, audit", "ANALYZE");
        return r < 0 ? r : pg_check_integrity(s, ret);
}

/* Nothing to do a step at a time: autovacuum runs on the server. */
static int pg_maintain_step(struct store *s, bool first) {
        return 0;
}

/* The asynchronous form: nothing runs off the loop, done runs from a timer
 * of its own on the next turn (freed in its close callback). */
struct pg_maintain_later {
        uv_timer_t timer;
        store_maintain_fn done;
        void *userdata;
};

static void pg_maintain_later_closed(uv_handle_t *h) {
        free(h->data);
}

static void pg_maintain_later_cb(uv_timer_t *t) {
        struct pg_maintain_later *m = t->data;

        m->done(0, m->userdata);
        uv_close((uv_handle_t *)&m->timer, pg_maintain_later_closed);
}

static int pg_maintain_start(struct store *s, bool first, store_maintain_fn done, void *userdata) {
        struct pg_maintain_later *m;
        int r = pg_maintain_step(s, first);

        if (r < 0)
                return r;
        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        *m = (struct pg_maintain_later){.done = done, .userdata = userdata};
        if (uv_timer_init(s->loop, &m->timer) < 0) {
                free(m);
                return -ENOMEM;
        }
        m->timer.data = m;
        uv_timer_start(&m->timer, pg_maintain_later_cb, 0, 0);
        return 0;
}

static int pg_pace(struct store *s) {
        return 0;
}

static unsigned long long pg_checkpoint_runs(struct store *s) {
        return 0;
}

static const char *synchronous_value(const char *v) {
        static const char *const ok[] = {"off", "normal", "full", "extra"};

        for (size_t i = 0; i < ELEMENTSOF(ok); i++)
                if (v && strcasecmp(v, ok[i]) == 0)
                        return ok[i];
        return NULL;
}

/* See the top of this file: checked, and otherwise PostgreSQL's own. */
static int pg_set_synchronous(struct store *s, const char *synchronous) {
        return synchronous_value(synchronous) ? 0 : -EINVAL;
}

/* ---- the auxiliary connection: without s->lock ----------------------------------------- */

/* Runs sql with text parameters on the auxiliary connection (aux_lock
 * held); *ret (if given) gets the result. */
static int aux_query(struct pg_store *p, const char *sql, const struct params *a, ExecStatusType want,
                     const char *what, PGresult **ret) {
        PGresult *res;
        int r = conn_ready(p, &p->aux);

        if (r < 0)
                return r;
        res = PQexecParams(p->aux.c, sql, a ? a->n : 0, NULL, a ? a->v : NULL, NULL, NULL, 0);
        r = result_check(p->name, p->aux.c, res, want, what);
        if (r < 0 || !ret)
                PQclear(res);
        else
                *ret = res;
        return r;
}

/* The tables' room on the server (cached for PG_SIZE_CACHE_MS: the
 * metrics ask often); 0 until known. */
static int64_t pg_size(struct store *s) {
        struct pg_store *p = pg(s);
        PGresult *res = NULL;
        int64_t now = mono_ms(), v;

        pthread_mutex_lock(&p->aux_lock);
        if (p->size_at == 0 || now - p->size_at >= PG_SIZE_CACHE_MS) {
                p->size_at = now;
                if (aux_query(p,
                              "SELECT pg_total_relation_size('sessions') + pg_total_relation_size('audit') + "
                              "pg_total_relation_size('sessiond_daemons') + pg_total_relation_size('sessiond_meta')",
                              NULL, PGRES_TUPLES_OK, "measuring the tables", &res) >= 0)
                        p->size_cached = value_int(res, 0, 0);
                PQclear(res);
        }
        v = p->size_cached;
        pthread_mutex_unlock(&p->aux_lock);
        return v;
}

static int pg_heartbeat(struct store *s, const char *daemon_id, bool leader, int64_t now) {
        struct pg_store *p = pg(s);
        struct params a = {0};
        int r;

        param_text(&a, daemon_id);
        param_int(&a, now);
        param_text(&a, leader ? "true" : "false");
        pthread_mutex_lock(&p->aux_lock);
        r = aux_query(p,
                      "INSERT INTO sessiond_daemons (daemon_id, seen_ms, leader) VALUES ($1, $2, $3) "
                      "ON CONFLICT (daemon_id) DO UPDATE SET seen_ms = EXCLUDED.seen_ms, leader = EXCLUDED.leader",
                      &a, PGRES_COMMAND_OK, "writing the heartbeat", NULL);
        pthread_mutex_unlock(&p->aux_lock);
        return r < 0 ? r : 0;
}

static int pg_daemons_each(struct store *s, int64_t since_ms, store_daemon_fn cb, void *userdata) {
        struct pg_store *p = pg(s);
        struct params a = {0};
        PGresult *res = NULL;
        int r;

        param_int(&a, since_ms);
        pthread_mutex_lock(&p->aux_lock);
        r = aux_query(p,
                      "SELECT daemon_id, seen_ms, leader FROM sessiond_daemons WHERE seen_ms >= $1 "
                      "ORDER BY seen_ms DESC, daemon_id COLLATE \"C\"",
                      &a, PGRES_TUPLES_OK, "reading the daemons", &res);
        pthread_mutex_unlock(&p->aux_lock);
        /* The callback runs without the lock: it may ask again. */
        for (int i = 0; r == 0 && i < PQntuples(res); i++) {
                struct store_daemon_row row = {
                        .daemon_id = PQgetvalue(res, i, 0),
                        .seen_ms = value_int(res, i, 1),
                        .leader = strcmp(PQgetvalue(res, i, 2), "t") == 0,
                };
                r = cb(&row, userdata);
        }
        PQclear(res);
        return r;
}

/* ---- the leader ----------------------------------------------------------------------------- */

/* Holding: a round trip proves the connection (and so the lock) is still
 * there. Not holding: take it if free. A lost connection is leadership
 * lost: false now, a new connection and a new try later (backoff). */
static int pg_leader_try(struct store *s, bool *is_leader) {
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
                conn_close(&p->leader);
                backoff(&p->leader);
                return 0;
        }
        r = conn_ready(p, &p->leader);
        if (r < 0)
                return r;
        param_int(&a, PG_LEADER_LOCK);
        _cleanup_pqclear_ PGresult *res = PQexecParams(p->leader.c, "SELECT pg_try_advisory_lock($1::bigint)", 1,
                                                       NULL, a.v, NULL, NULL, 0);
        r = result_check(p->name, p->leader.c, res, PGRES_TUPLES_OK, "trying the leader's lock");
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
        unsigned handles; /* uv handles not yet closed (each frees itself) */

        enum listener_query busy;
        bool query_ok;     /* the statement in flight succeeded */
        bool check_due;    /* a liveness check is to be sent */
        int64_t announced_at; /* monotonic ms */
        int64_t *sending;  /* the creations of the announcement in flight */
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
                uv_close((uv_handle_t *)h, handle_closed);
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
                uv_unref((uv_handle_t *)l->poll);
        }
        return uv_poll_start(l->poll, events, listener_poll_cb);
}

static void listener_report(struct pg_listener *l, enum store_change_kind kind, int64_t rowid, bool lost) {
        struct store_change c = {.kind = kind, .rowid = lost ? 0 : rowid};

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
 * therefore queued at commit (announce_created()) and sent here, on the
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

                if (len > 0 && len + 1 + (size_t)k > PG_NOTIFY_MAX) {
                        fputs("\",", f);
                        len = 0;
                }
                if (len == 0)
                        len = (size_t)fprintf(f, "\"%s:%s", origin, item) - 1;
                else
                        len += (size_t)fprintf(f, ",%s", item);
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

#define PG_LIVENESS_SQL                                                                                     \
        "SELECT substr(application_name, " PG_STRINGIFY(PG_APP_PREFIX_LEN) " + 1) FROM pg_stat_activity WHERE " \
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
        l->announced_at = mono_ms();
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
        now = mono_ms();
        wait = l->announced_at + PG_ANNOUNCE_MS - now;
        if (wait > 0) {
                if (!uv_is_active((uv_handle_t *)l->pace))
                        uv_timer_start(l->pace, listener_pace_cb, (uint64_t)wait, 0);
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
        char(*now)[PG_ORIGIN_LEN + 1] = calloc((size_t)PQntuples(res) + 1, sizeof *now);
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
        l->allocated_live = (size_t)PQntuples(res) + 1;
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
        uv_timer_start(l->timer, listener_timer_cb, (uint64_t)l->delay_ms, 0);
}

/* "kind:row" items after the origin. */
static void listener_dispatch(struct pg_listener *l, const char *payload) {
        const char *colon = strchr(payload, ':'), *p;

        if (!colon || ((size_t)(colon - payload) == strlen(l->origin) && strncmp(payload, l->origin, strlen(l->origin)) == 0))
                return; /* ours, or not ours to read */
        live_note(l, payload, (size_t)(colon - payload));
        for (p = colon + 1; *p && l->store;) {
                char k = p[0];
                char *end;
                int64_t rowid;

                if (p[1] != ':')
                        return;
                rowid = strtoll(p + 2, &end, 10);
                if (k == 'c')
                        listener_report(l, STORE_CHANGE_CREATED, rowid, false);
                else if (k == 'e')
                        listener_report(l, STORE_CHANGE_ENDED, rowid, false);
                else if (k == 'u')
                        listener_report(l, STORE_CHANGE_UPDATED, rowid, false);
                else if (k == 's')
                        listener_report(l, STORE_CHANGE_SYNC, rowid, false);
                else if (k == 'r')
                        listener_report(l, STORE_CHANGE_RENEWED, rowid, false);
                else if (k == 'p')
                        listener_report(l, STORE_CHANGE_PLATFORM, rowid, false);
                else if (k == 'x')
                        live_forget(l, payload, (size_t)(colon - payload));
                p = *end == ',' ? end + 1 : end + strlen(end);
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
                        log_pq_error(l->store->name,
                                     l->busy == LQ_ANNOUNCE ? "announcing creations" : "checking which daemons are "
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
        (void)listener_watch(l, UV_READABLE);
        if (l->lost) {
                log_notice("Store %s: listening for other daemons' changes again.", l->store->name);
                l->lost = false;
                listener_report(l, STORE_CHANGE_UPDATED, 0, true); /* what came meanwhile was missed */
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
                        (void)listener_watch(l, UV_READABLE);
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
        PQsetNoticeProcessor(l->conn, notice_log, NULL);
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
static int pg_changes_subscribe(struct store *s, uv_loop_t *loop, store_change_fn fn, void *userdata) {
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
        uv_unref((uv_handle_t *)l->timer);
        uv_unref((uv_handle_t *)l->pace);
        uv_unref((uv_handle_t *)l->tick);
        uv_unref((uv_handle_t *)l->async);
        p->listener = l;

        /* The set-up, the first liveness check (the daemons up now are
         * watched from the start), then LISTEN, each waited for. */
        r = conn_open(p->url, p->name, PG_STATEMENT_TIMEOUT_MS, false, &l->conn);
        if (r >= 0) {
                listener_setup_sql(l->origin, sql, sizeof sql, false);
                _cleanup_pqclear_ PGresult *res = PQexec(l->conn, sql);

                r = result_check(p->name, l->conn, res, PGRES_COMMAND_OK, "setting up the listener");
        }
        if (r >= 0) {
                _cleanup_pqclear_ PGresult *res = PQexec(l->conn, PG_LIVENESS_SQL);

                r = result_check(p->name, l->conn, res, PGRES_TUPLES_OK, "checking which daemons are connected");
                if (r >= 0)
                        listener_liveness(l, res);
        }
        if (r >= 0) {
                _cleanup_pqclear_ PGresult *res = PQexec(l->conn, "LISTEN " PG_CHANNEL);

                r = result_check(p->name, l->conn, res, PGRES_COMMAND_OK, "LISTEN");
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
static void listener_detach(struct pg_listener *l) {
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
static void announce_at_close(struct pg_store *p) {
        _cleanup_free_ char *arr = NULL;
        const char *v[1];

        if (!p->w.c || PQstatus(p->w.c) != CONNECTION_OK || in_tx(p))
                return;
        arr = announcement(p->origin, p->announce, p->n_announce, true);
        if (!arr)
                return;
        v[0] = arr;
        _cleanup_pqclear_ PGresult *res = PQexecParams(p->w.c, PG_ANNOUNCE_SQL, 1, NULL, v, NULL, NULL, 0);
        if (result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "announcing the last creations") >= 0)
                p->n_announce = 0;
}

/* ---- opening ---------------------------------------------------------------------------------- */

static void make_origin(char out[PG_ORIGIN_LEN + 1]) {
        uint8_t b[PG_ORIGIN_LEN / 2];

        if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
                uint64_t v = (uint64_t)mono_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)out;

                memcpy(b, &v, sizeof b);
        }
        for (size_t i = 0; i < sizeof b; i++)
                sprintf(out + 2 * i, "%02x", b[i]);
}

/* One step of the schema's set-up, in one transaction under the migration
 * lock: the next migration, or (when the schema is ours and current) the
 * key check. *done when there is nothing left to do. */
static int schema_step(struct pg_store *p, const char *key_check, bool *done) {
        PGconn *c = p->w.c;
        int64_t version = 0, foreign = 0;
        int r;

        *done = false;
        r = exec_command(p, c,
                         "BEGIN; SET LOCAL statement_timeout = '" PG_MIGRATION_TIMEOUT "'; "
                         "SELECT pg_advisory_xact_lock(" PG_STRINGIFY(PG_MIGRATION_LOCK) "); "
                         "CREATE TABLE IF NOT EXISTS sessiond_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                         "taking the migration lock");
        if (r >= 0)
                r = query_int64(p, c, "SELECT value::bigint FROM sessiond_meta WHERE key = 'schema_version'",
                                "reading the schema version", &version);
        if (r >= 0 && version == 0)
                r = query_int64(p, c, "SELECT (to_regclass('sessions') IS NOT NULL)::int", "looking for tables",
                                &foreign);
        if (r < 0)
                goto fail;
        if (version > PG_SCHEMA_VERSION) {
                log_error("Database %s has schema version %lld, newer than this sessiond supports (%d); refusing "
                          "to start. Run the newer sessiond on every daemon of the fleet.",
                          p->name, (long long)version, PG_SCHEMA_VERSION);
                r = -EPROTO;
                goto fail;
        }
        if (version == 0 && foreign) {
                log_error("Database %s holds a table named sessions but no sessiond schema version; it is not a "
                          "sessiond database. Refusing to start.",
                          p->name);
                r = -EBADMSG;
                goto fail;
        }
        if (version < PG_SCHEMA_VERSION) {
                char sql[160];

                r = exec_command(p, c, migrations[version], "schema migration");
                snprintf(sql, sizeof sql,
                         "INSERT INTO sessiond_meta VALUES ('schema_version', '%lld') "
                         "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                         (long long)version + 1);
                if (r >= 0)
                        r = exec_command(p, c, sql, "schema migration");
                if (r >= 0)
                        r = exec_command(p, c, "COMMIT", "schema migration");
                if (r < 0)
                        goto fail;
                log_info("Database %s: schema migrated to version %lld.", p->name, (long long)version + 1);
                return 0;
        }
        if (key_check) {
                struct params a = {0};

                param_text(&a, key_check);
                _cleanup_pqclear_ PGresult *res = PQexecParams(
                        c,
                        "WITH n AS (INSERT INTO sessiond_meta VALUES ('key_check', $1) ON CONFLICT (key) DO NOTHING "
                        "RETURNING value) SELECT value = $1 FROM sessiond_meta WHERE key = 'key_check' "
                        "UNION ALL SELECT true FROM n",
                        1, NULL, a.v, NULL, NULL, 0);
                r = result_check(p->name, c, res, PGRES_TUPLES_OK, "checking the key");
                if (r < 0)
                        goto fail;
                if (PQntuples(res) < 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
                        log_error("Database %s: this daemon's key (daemon.key_file) does not match the fleet's: "
                                  "the database was set up with another key. Refusing to start; give every daemon "
                                  "of the fleet the same key file.",
                                  p->name);
                        r = -EKEYREJECTED;
                        goto fail;
                }
        }
        r = exec_command(p, c, "COMMIT", "checking the key");
        if (r < 0)
                goto fail;
        *done = true;
        return 0;
fail:
        tx_rollback(p);
        return r;
}

static int schema_setup(struct pg_store *p, const char *key_check) {
        bool done = false;
        int r = 0;

        for (int i = 0; r >= 0 && !done && i <= PG_SCHEMA_VERSION; i++)
                r = schema_step(p, key_check, &done);
        return r < 0 ? r : done ? 0 : -EIO;
}

struct load_state {
        const struct store_options *o;
        uint64_t n;
};

static int load_one(const struct store_session *row, void *userdata) {
        struct load_state *l = userdata;
        int r = l->o->load(row, l->o->load_userdata);

        if (r >= 0)
                l->n++;
        return r < 0 ? r : 0;
}

/* As sqlite.c: the count of live sessions to reserve, then each, light,
 * in row order. */
static int load_live(struct pg_store *p, const struct store_options *o) {
        struct load_state l = {.o = o};
        int64_t live = 0, started = mono_ms();
        int r;

        if (o->reserve) {
                r = pg_count_sessions(&p->core, false, &live);
                if (r < 0)
                        return r;
                r = o->reserve(live > 0 ? (uint64_t)live : 0, o->load_userdata);
                if (r < 0)
                        return log_error_errno(r, "Database %s: no room for %lld sessions: %m", p->name,
                                               (long long)live);
        }
        if (!o->load)
                return 0;
        r = session_pages(&p->core, Q_LIVE_LIGHT, NULL, 0, true, load_one, &l);
        if (r < 0)
                return log_error_errno(r, "Database %s: loading the sessions failed: %m", p->name);
        log_info("Database %s: %llu live sessions loaded in %lld ms.", p->name, (unsigned long long)l.n,
                 (long long)(mono_ms() - started));
        return 0;
}

static void pg_close(struct store *s);

/* A store on url, connected and prepared, nothing checked. */
static int pg_connect_store(const char *url, bool reader, struct pg_store **ret) {
        struct pg_store *p = calloc(1, sizeof *p);
        int r;

        if (!p)
                return -ENOMEM;
        store_core_init(&p->core, &store_backend_postgres);
        pthread_mutex_init(&p->aux_lock, NULL);
        pthread_mutex_init(&p->announce_lock, NULL);
        p->reader = reader;
        p->timeout_ms = reader ? PG_READER_STATEMENT_TIMEOUT_MS : PG_STATEMENT_TIMEOUT_MS;
        make_origin(p->origin);
        p->url = strdup(url);
        p->name = redact_url(url);
        if (p->url && asprintf(&p->locator, "postgresql:%s", url) < 0)
                p->locator = NULL;
        if (!p->url || !p->name || !p->locator) {
                pg_close(&p->core);
                return -ENOMEM;
        }
        r = conn_open(p->url, p->name, p->timeout_ms, false, &p->w.c);
        if (r < 0) {
                pg_close(&p->core);
                return r;
        }
        *ret = p;
        return 0;
}

static int pg_open(const struct store_options *o, struct store **ret) {
        struct pg_store *p = NULL;
        int r;

        assert(o->postgres_url);
        if (!synchronous_value(o->synchronous ? o->synchronous : "normal")) {
                log_error("Invalid daemon.synchronous value '%s'.", o->synchronous);
                return -EINVAL;
        }
        r = pg_connect_store(o->postgres_url, false, &p);
        if (r < 0)
                return r;
        r = schema_setup(p, o->key_check);
        if (r >= 0)
                r = prepare_all(p);
        if (r >= 0 && (o->reserve || o->load))
                r = load_live(p, o);
        if (r < 0) {
                pg_close(&p->core);
                return r;
        }
        *ret = &p->core;
        return 0;
}

static int pg_reader_open(const char *locator, struct store **ret) {
        struct pg_store *p = NULL;
        int r = pg_connect_store(locator, true, &p);

        if (r >= 0)
                r = prepare_all(p);
        if (r < 0) {
                if (p)
                        pg_close(&p->core);
                return r;
        }
        *ret = &p->core;
        return 0;
}

static void pg_close(struct store *s) {
        struct pg_store *p = pg(s);

        if (!p)
                return;
        if (p->listener) {
                listener_detach(p->listener);
                tx_rollback(p);
                announce_at_close(p);
        }
        if (p->leader_held) { /* released now, not when the server notices the connection gone */
                PGresult *res = PQexec(p->leader.c, "SELECT pg_advisory_unlock_all()");

                PQclear(res);
        }
        conn_close(&p->leader);
        conn_close(&p->aux);
        tx_rollback(p); /* the open unit's writes, committed by nobody */
        conn_close(&p->w);
        free(p->url);
        free(p->name);
        free(p->locator);
        free(p->evicted);
        free(p->announce);
        pthread_mutex_destroy(&p->aux_lock);
        pthread_mutex_destroy(&p->announce_lock);
        store_core_destroy(&p->core);
        free(p);
}

static const char *pg_name(const struct store *s) {
        return pg_const(s)->name;
}

static const char *pg_locator(const struct store *s) {
        return pg_const(s)->locator;
}

static bool pg_is_memory(const struct store *s) {
        return false;
}

const struct store_backend store_backend_postgres = {
        .name = "postgresql",
        .open = pg_open,
        .close = pg_close,
        .reader_open = pg_reader_open,
        .name_of = pg_name,
        .locator = pg_locator,
        .is_memory = pg_is_memory,
        .set_synchronous = pg_set_synchronous,
        .uow_apply = pg_uow_apply,
        .uow_commit = pg_uow_commit,
        .rollback = pg_rollback,
        .allocate_key = pg_allocate_key,
        .session_get_switches = pg_session_get_switches,
        .session_get_sync = pg_session_get_sync,
        .session_by_rowid = pg_session_by_rowid,
        .session_by_hash = pg_session_by_hash,
        .session_by_id = pg_session_by_id,
        .sessions_each = pg_sessions_each,
        .sessions_ended_of_user_after = pg_sessions_ended_of_user_after,
        .purge_sessions = pg_purge_sessions,
        .purge_audit = pg_purge_audit,
        .maintain = pg_maintain,
        .maintain_step = pg_maintain_step,
        .maintain_start = pg_maintain_start,
        .pace = pg_pace,
        .checkpoint_runs = pg_checkpoint_runs,
        .size = pg_size,
        .count_sessions = pg_count_sessions,
        .audit_each = pg_audit_each,
        .check_integrity = pg_check_integrity,
        .probe = pg_probe,
        .count_created = pg_count_created,
        .ended_durations = pg_ended_durations,
        .end_reasons = pg_end_reasons,
        .changes_subscribe = pg_changes_subscribe,
        .leader_try = pg_leader_try,
        .heartbeat = pg_heartbeat,
        .daemons_each = pg_daemons_each,
};
