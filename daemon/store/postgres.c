/* The PostgreSQL backend of the store (DESIGN 8): several daemons, one
 * database. See store.h for the interface and backend.h for the table this
 * backend fills (at the end of this file); store.c runs the unit of work's
 * writer thread and the lock. postgres-internal.h lists the backend's files
 * and what they share; this one holds the connections, the statements, the
 * schema with its migrations, and opening and closing.
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
 * pay a round trip per key. Keys are unique, not ordered across daemons;
 * the writer fetches the next block ahead (postgres-uow.c), so the loop
 * hands keys out without the store's lock.
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
 * The unit of work: postgres-uow.c; reads: postgres-read.c; what several
 * daemons need of each other: the listener (LISTEN, other daemons' changes)
 * in postgres-listen.c, creations announced after their commit and the
 * liveness catch-up in postgres-announce.c, the heartbeats and the leader's
 * lock in postgres-leader.c.
 */
#include "postgres-internal.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "log.h"
#include "sessiond/config.h"

/* ---- statements --------------------------------------------------------------- */

#define SESSION_COLUMNS                                                                                \
        "row, id, token_hash, user_id, platform_id, created_at, last_activity, renewed_at, ended_at, " \
        "end_reason, fp_user_agent, fp_ip, fp_accept_language, fp_accept_encoding, ip, user_agent, sync_version"
#define SESSION_COLUMNS_LIGHT                                                                          \
        "row, id, token_hash, user_id, platform_id, created_at, last_activity, renewed_at, ended_at, " \
        "end_reason, fp_user_agent, fp_ip, fp_accept_language, fp_accept_encoding, NULL, NULL, sync_version"


static const char *const q_sql[_Q_MAX] = {
        [Q_INSERT] = "INSERT INTO sessions (row, id, token_hash, user_id, platform_id, created_at, last_activity, "
                     "renewed_at, fp_user_agent, fp_ip, fp_accept_language, fp_accept_encoding, ip, user_agent, "
                     "sync_data, sync_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, "
                     "$15, $16)",
        [Q_INSERT_MANY] = "INSERT INTO sessions (row, id, token_hash, user_id, platform_id, created_at, last_activity, "
                          "renewed_at, fp_user_agent, fp_ip, fp_accept_language, fp_accept_encoding, ip, user_agent, "
                          "sync_data, sync_version) SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], "
                          "$4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], "
                          "$10::bigint[], $11::bigint[], $12::bigint[], $13::text[], $14::text[], $15::bytea[], "
                          "$16::bigint[])",
        [Q_LOCK_USERS] = "SELECT count(pg_advisory_xact_lock(" PG_STRINGIFY(
                PG_USER_LOCK_CLASS) ", h)) FROM "
                                    "(SELECT DISTINCT hashtext(u) AS h FROM unnest($1::text[]) AS u ORDER BY h) AS x",
        /* Each row ended is announced by the statement itself, origin "*"
         * (every daemon hears it, this one included), so that a unit can
         * send its COMMIT without waiting for the rows. Evictions are
         * rare: a notification each costs nothing when there are none (an
         * aggregate in one payload cost every Create 10%). */
        [Q_LIMIT] = "WITH e AS (UPDATE sessions SET ended_at = $3, end_reason = 'evicted' WHERE row IN "
                    "(SELECT row FROM sessions WHERE user_id = $1 AND ended_at IS NULL "
                    "ORDER BY last_activity DESC, row DESC OFFSET $2) RETURNING row) "
                    "SELECT row, pg_notify('" PG_CHANNEL "', '*:e:' || row) FROM e ORDER BY row",
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
                   "platform_switches FROM sessions WHERE row = $1 AND ended_at IS NULL FOR UPDATE",
        [Q_PLATFORM] = "UPDATE sessions SET platform_id = $2, platform_switches = $3 WHERE row = $1",
        /* A switch under the per-hour limit (store_session_switch_platform),
         * decided here: the row is locked first (FOR UPDATE returns its
         * latest version once another daemon's switch commits), so
         * switches made at once on several daemons count each other. The
         * history keeps the switches of the last hour, sorted (as
         * store/switch.c: a text that is not an array of integers counts
         * as none, rather than failing the unit), then this one; a switch
         * to the platform the row has is none (nothing written or
         * counted); the audit row is written with the switch, or not at
         * all. */
        [Q_SWITCH] = "WITH old AS (SELECT row, platform_id, platform_switches, ended_at IS NULL AS live, end_reason "
                     "FROM sessions WHERE row = $1 FOR UPDATE), "
                     "d AS (SELECT row, live, end_reason, platform_id AS from_platform, "
                     "platform_id IS NOT DISTINCT FROM $2::text AS already, "
                     "COALESCE((SELECT jsonb_agg(t.v::bigint ORDER BY t.v::bigint) FROM jsonb_array_elements_text("
                     "CASE WHEN platform_switches ~ '^\\[\\s*(-?[0-9]{1,18}(\\s*,\\s*-?[0-9]{1,18})*)?\\s*\\]$' "
                     "THEN platform_switches::jsonb ELSE '[]'::jsonb END) AS t(v) "
                     "WHERE t.v::bigint > $3::bigint - 3600), '[]'::jsonb) AS kept FROM old), "
                     "k AS (SELECT *, live AND NOT already AND jsonb_array_length(kept) < $4::bigint AS ok FROM d), "
                     "u AS (UPDATE sessions s SET platform_id = $2::text, "
                     "platform_switches = (k.kept || to_jsonb($3::bigint))::text FROM k WHERE s.row = k.row AND k.ok "
                     "RETURNING s.row), "
                     "a AS (INSERT INTO audit (time, kind, user_id, session_id, detail) "
                     "SELECT $3::bigint, 'platform_switched', $5::text, $6::text, "
                     "json_strip_nulls(json_build_object('from', NULLIF(k.from_platform, ''), 'to', $2::text))::text "
                     "FROM k WHERE k.ok AND $5::text IS NOT NULL) "
                     "SELECT ok, live, end_reason, from_platform, kept::text, already FROM k",
        [Q_SYNC] = "UPDATE sessions SET sync_version = $2, sync_data = $3 WHERE row = $1 AND ended_at IS NULL "
                   "AND ($4::bigint < 0 OR sync_version = $4)",
        [Q_AUDIT] = "INSERT INTO audit (time, kind, user_id, session_id, detail) VALUES ($1, $2, $3, $4, $5)",
        [Q_AUDIT_MANY] = "INSERT INTO audit (time, kind, user_id, session_id, detail) SELECT * FROM "
                         "unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])",
        [Q_NOTIFY] = "SELECT pg_notify('" PG_CHANNEL "', $1)",
        [Q_GET_SWITCHES] = "SELECT platform_switches FROM sessions WHERE row = $1",
        [Q_GET_SYNC] = "SELECT sync_version, sync_data, ended_at IS NULL, end_reason FROM sessions WHERE row = $1",
        [Q_BY_ROWID] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE row = $1",
        [Q_BY_ROWIDS] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE row = ANY($1::bigint[])",
        [Q_BY_HASH] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE token_hash = $1 ORDER BY row",
        [Q_BY_HASHES] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE token_hash = ANY($1::bytea[]) ORDER BY row",
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
        "CREATE SEQUENCE sessiond_session_keys INCREMENT BY " PG_STRINGIFY(
                PG_KEY_BLOCK) " MINVALUE 1 START WITH 1;"
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
void pg_log_error(const char *name, const char *what, const char *msg) {
        size_t n = msg ? strlen(msg) : 0;

        while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
                n--;
        log_error("Store %s: %s failed: %.*s", name, what, (int) n, msg ? msg : "");
}

/* The errno of a result that is not `want` (logged), or 0. */
int pg_result_check(const char *name, PGconn *c, const PGresult *res, ExecStatusType want, const char *what) {
        if (res && PQresultStatus(res) == want)
                return 0;
        pg_log_error(name, what, res ? PQresultErrorMessage(res) : PQerrorMessage(c));
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

/* The server's notices and warnings go to the daemon's log, not stderr. */
void pg_notice_log(void *userdata, const char *message) {
        size_t n = strlen(message);

        while (n > 0 && message[n - 1] == '\n')
                n--;
        log_notice("PostgreSQL: %.*s", (int) n, message);
}

/* What every connection runs first: its statement timeout, and never
 * synchronous_commit = off (see the top of this file). */
static int conn_setup(PGconn *c, const char *name, int timeout_ms) {
        char sql[160];
        int r;

        PQsetNoticeProcessor(c, pg_notice_log, NULL);
        snprintf(sql, sizeof sql,
                 "SET client_min_messages = warning; SET statement_timeout = %d; SELECT "
                 "current_setting('synchronous_commit') = 'off'",
                 timeout_ms);
        {
                _cleanup_pqclear_ PGresult *res = PQexec(c, sql);

                r = pg_result_check(name, c, res, PGRES_TUPLES_OK, "setting up the connection");
                if (r < 0 || strcmp(PQgetvalue(res, 0, 0), "t") != 0)
                        return r;
        }
        log_notice("Store %s: synchronous_commit is off for this role or database; sessiond sets it to on "
                   "(acknowledged writes must survive a crash).",
                   name);
        _cleanup_pqclear_ PGresult *res = PQexec(c, "SET synchronous_commit = on");
        return pg_result_check(name, c, res, PGRES_COMMAND_OK, "setting synchronous_commit");
}

/* quiet: a failure to connect is not logged (a reconnection that failed
 * before, and was logged then). */
int pg_conn_open(const char *url, const char *name, int timeout_ms, bool quiet, PGconn **ret) {
        PGconn *c = PQconnectdbParams(PG_CONNECT_KEYWORDS, PG_CONNECT_VALUES(url), 1);
        int r;

        if (!c)
                return -ENOMEM;
        if (PQstatus(c) != CONNECTION_OK) {
                if (!quiet)
                        pg_log_error(name, "connecting", PQerrorMessage(c));
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

void pg_backoff(struct pg_conn *pc) {
        pc->delay_ms = pc->delay_ms ? pc->delay_ms * 2 : PG_BACKOFF_MIN_MS;
        if (pc->delay_ms > PG_BACKOFF_MAX_MS)
                pc->delay_ms = PG_BACKOFF_MAX_MS;
        pc->retry_at = pg_mono_ms() + pc->delay_ms;
}

/* Makes pc usable: reconnects a lost connection (not before its backoff
 * has passed: -EIO meanwhile). */
int pg_conn_ready(struct pg_store *p, struct pg_conn *pc) {
        int r;

        if (pc->c && PQstatus(pc->c) == CONNECTION_OK)
                return 0;
        if (pc->c) {
                log_warning("Store %s: the connection to PostgreSQL was lost; reconnecting.", p->name);
                PQfinish(pc->c);
                pc->c = NULL;
        }
        if (pg_mono_ms() < pc->retry_at)
                return -EIO;
        r = pg_conn_open(p->url, p->name, p->timeout_ms, pc->delay_ms > 0, &pc->c);
        if (r < 0) {
                pg_backoff(pc);
                return r;
        }
        if (pc->delay_ms)
                log_notice("Store %s: connected to PostgreSQL again.", p->name);
        pc->delay_ms = 0;
        pc->fresh = true;
        return 0;
}

void pg_conn_close(struct pg_conn *pc) {
        PQfinish(pc->c);
        pc->c = NULL;
}

int pg_exec_command(struct pg_store *p, PGconn *c, const char *sql, const char *what) {
        _cleanup_pqclear_ PGresult *res = PQexec(c, sql);

        return pg_result_check(p->name, c, res, PGRES_COMMAND_OK, what);
}

/* A query of one int64 value (NULL: 0) on c. */
static int pg_query_int64(struct pg_store *p, PGconn *c, const char *sql, const char *what, int64_t *ret) {
        _cleanup_pqclear_ PGresult *res = PQexec(c, sql);
        int r = pg_result_check(p->name, c, res, PGRES_TUPLES_OK, what);

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
                int r = pg_result_check(p->name, p->w.c, res, PGRES_COMMAND_OK, "preparing a statement");

                if (r < 0)
                        return r;
        }
        p->w.fresh = false;
        return 0;
}

bool pg_in_tx(const struct pg_store *p) {
        PGTransactionStatusType t = p->w.c ? PQtransactionStatus(p->w.c) : PQTRANS_UNKNOWN;

        return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

/* The writing connection, ready for statements (prepared). */
int pg_writer_ready(struct pg_store *p) {
        int r = pg_conn_ready(p, &p->w);

        if (r >= 0 && p->w.fresh)
                r = prepare_all(p);
        return r;
}

/* Runs prepared statement q on the writing connection (or a reader's). */
PGresult *pg_run(struct pg_store *p, int q, const struct params *a) {
        char name[16];

        snprintf(name, sizeof name, "q%d", q);
        return PQexecPrepared(p->w.c, name, a ? a->n : 0, a ? a->v : NULL, a ? a->len : NULL, a ? a->fmt : NULL, 0);
}

/* Queues prepared statement q on the writing connection (pipeline mode):
 * 0, or -EIO (logged with what). */
int pg_send(struct pg_store *p, int q, const struct params *a, const char *what) {
        char name[16];

        snprintf(name, sizeof name, "q%d", q);
        if (PQsendQueryPrepared(p->w.c, name, a ? a->n : 0, a ? a->v : NULL, a ? a->len : NULL, a ? a->fmt : NULL, 0))
                return 0;
        pg_log_error(p->name, what, PQerrorMessage(p->w.c));
        return -EIO;
}

/* Runs a statement that returns no rows: its row count, or the errno. */
int pg_run_command(struct pg_store *p, int q, const struct params *a, const char *what) {
        _cleanup_pqclear_ PGresult *res = pg_run(p, q, a);
        int r = pg_result_check(p->name, p->w.c, res, PGRES_COMMAND_OK, what);

        return r < 0 ? r : atoi(PQcmdTuples(res));
}

/* ---- opening ---------------------------------------------------------------------------------- */

static void make_origin(char out[PG_ORIGIN_LEN + 1]) {
        uint8_t b[PG_ORIGIN_LEN / 2];

        if (getrandom(b, sizeof b, 0) != (ssize_t) sizeof b) {
                uint64_t v = (uint64_t) pg_mono_ms() ^ ((uint64_t) getpid() << 32) ^ (uint64_t) (uintptr_t) out;

                memcpy(b, &v, sizeof b);
        }
        for (size_t i = 0; i < sizeof b; i++)
                sprintf(out + 2 * i, "%02x", b[i]);
}

/* For _cleanup_: the step's transaction rolled back, unless it was
 * committed (the variable set to NULL). */
static void rollback_unless_done(struct pg_store **p) {
        if (*p)
                pg_tx_rollback(*p);
}

/* One step of the schema's set-up, in one transaction under the migration
 * lock: the next migration, or (when the schema is ours and current) the
 * key check. *done when there is nothing left to do. */
static int schema_step(struct pg_store *p, const char *key_check, bool *done) {
        _cleanup_(rollback_unless_done) struct pg_store *tx = p;
        PGconn *c = p->w.c;
        int64_t version = 0, foreign = 0;
        int r;

        *done = false;
        r = pg_exec_command(p, c,
                            "BEGIN; SET LOCAL statement_timeout = '" PG_MIGRATION_TIMEOUT "'; "
                            "SELECT pg_advisory_xact_lock(" PG_STRINGIFY(
                                    PG_MIGRATION_LOCK) "); "
                                                       "CREATE TABLE IF NOT EXISTS sessiond_meta (key TEXT PRIMARY "
                                                       "KEY, value TEXT NOT NULL)",
                            "taking the migration lock");
        if (r >= 0)
                r = pg_query_int64(p, c, "SELECT value::bigint FROM sessiond_meta WHERE key = 'schema_version'",
                                   "reading the schema version", &version);
        if (r >= 0 && version == 0)
                r = pg_query_int64(p, c, "SELECT (to_regclass('sessions') IS NOT NULL)::int", "looking for tables",
                                   &foreign);
        if (r < 0)
                return r;
        if (version > PG_SCHEMA_VERSION) {
                log_error("Database %s has schema version %lld, newer than this sessiond supports (%d); refusing "
                          "to start. Run the newer sessiond on every daemon of the fleet.",
                          p->name, (long long) version, PG_SCHEMA_VERSION);
                return -EPROTO;
        }
        if (version == 0 && foreign) {
                log_error("Database %s holds a table named sessions but no sessiond schema version; it is not a "
                          "sessiond database. Refusing to start.",
                          p->name);
                return -EBADMSG;
        }
        if (version < PG_SCHEMA_VERSION) {
                char sql[160];

                r = pg_exec_command(p, c, migrations[version], "schema migration");
                snprintf(sql, sizeof sql,
                         "INSERT INTO sessiond_meta VALUES ('schema_version', '%lld') "
                         "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                         (long long) version + 1);
                if (r >= 0)
                        r = pg_exec_command(p, c, sql, "schema migration");
                if (r >= 0)
                        r = pg_exec_command(p, c, "COMMIT", "schema migration");
                if (r < 0)
                        return r;
                tx = NULL; /* committed */
                log_info("Database %s: schema migrated to version %lld.", p->name, (long long) version + 1);
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
                r = pg_result_check(p->name, c, res, PGRES_TUPLES_OK, "checking the key");
                if (r < 0)
                        return r;
                if (PQntuples(res) < 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
                        log_error("Database %s: this daemon's key (daemon.key_file) does not match the fleet's: "
                                  "the database was set up with another key. Refusing to start; give every daemon "
                                  "of the fleet the same key file.",
                                  p->name);
                        return -EKEYREJECTED;
                }
        }
        r = pg_exec_command(p, c, "COMMIT", "checking the key");
        if (r < 0)
                return r;
        tx = NULL; /* committed */
        *done = true;
        return 0;
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
        int64_t live = 0, started = pg_mono_ms();
        int r;

        if (o->reserve) {
                r = pg_count_sessions(&p->core, false, &live);
                if (r < 0)
                        return r;
                r = o->reserve(live > 0 ? (uint64_t) live : 0, o->load_userdata);
                if (r < 0)
                        return log_error_errno(r, "Database %s: no room for %lld sessions: %m", p->name,
                                               (long long) live);
        }
        if (!o->load)
                return 0;
        r = pg_session_pages(&p->core, Q_LIVE_LIGHT, NULL, 0, true, load_one, &l);
        if (r < 0)
                return log_error_errno(r, "Database %s: loading the sessions failed: %m", p->name);
        log_info("Database %s: %llu live sessions loaded in %lld ms.", p->name, (unsigned long long) l.n,
                 (long long) (pg_mono_ms() - started));
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
        pthread_mutex_init(&p->seen_lock, NULL);
        pthread_mutex_init(&p->key_lock, NULL);
        p->key_wanted = true;
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
        r = pg_conn_open(p->url, p->name, p->timeout_ms, false, &p->w.c);
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
        if (!pg_synchronous_value(o->synchronous ? o->synchronous : "normal")) {
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
                pg_listener_detach(p->listener);
                pg_tx_rollback(p);
                pg_announce_at_close(p);
        }
        if (p->leader_held) { /* released now, not when the server notices the connection gone */
                _cleanup_pqclear_ PGresult *res = PQexec(p->leader.c, "SELECT pg_advisory_unlock_all()");
        }
        pg_conn_close(&p->leader);
        pg_conn_close(&p->aux);
        pg_tx_rollback(p); /* the open unit's writes, committed by nobody */
        pg_conn_close(&p->w);
        free(p->url);
        free(p->name);
        free(p->locator);
        free(p->announce);
        pthread_mutex_destroy(&p->aux_lock);
        pg_seen_clear(p);
        pthread_mutex_destroy(&p->seen_lock);
        pthread_mutex_destroy(&p->key_lock);
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
        .rows_find = pg_rows_find,
        .rows_find_hash = pg_rows_find_hash,
        .rows_free = pg_rows_free,
        .rollback = pg_rollback,
        .allocate_key = pg_allocate_key,
        .allocate_key_unlocked = true,
        .session_get_switches = pg_session_get_switches,
        .session_read_sync = pg_session_read_sync,
        .session_by_row_key = pg_session_by_row_key,
        .sessions_by_row_keys = pg_sessions_by_row_keys,
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
        .probe_any_thread = pg_probe_aux,
        .count_created = pg_count_created,
        .ended_durations = pg_ended_durations,
        .end_reasons = pg_end_reasons,
        .changes_subscribe = pg_changes_subscribe,
        .leader_try = pg_leader_try,
        .heartbeat = pg_heartbeat,
        .daemons_each = pg_daemons_each,
        .fleet_refresh = pg_fleet_refresh,
};
