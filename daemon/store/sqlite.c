/* The SQLite backend of the store: see store.h for the interface.
 *
 * Opening is the delicate part. A database that exists is first opened
 * read-only (a `file:...?mode=ro` URI with SQLITE_OPEN_READONLY): its header
 * is read, its schema version compared with ours, and PRAGMA quick_check run.
 * Only a database that passes is opened read-write, because switching to WAL
 * and migrating write the file, and a corrupt or foreign file must be left
 * exactly as it was for the operator to inspect or restore. With a million
 * sessions the check and the loading of the live sessions take about a
 * second each, and both only read: so the check runs on a read-only
 * connection in a thread while the caller's loader is fed from another
 * read-only connection, and start-up takes the longer of the two. A missing file
 * is created by us with O_EXCL and mode 0600 first (SQLite would use 0644),
 * in a folder created 0700 if needed; SQLite gives the -wal and -shm files
 * the same mode.
 *
 * The schema has a version in PRAGMA user_version and is reached by forward
 * migration steps, each applied in its own transaction together with the new
 * version number. A database newer than this binary is refused: running old
 * code on a new schema could lose data silently.
 *
 * Every statement is prepared once (SQLITE_PREPARE_PERSISTENT) and reused;
 * store_stmt() hands it out reset with its bindings cleared. The connection
 * is used by the loop (reads) and by the writer thread (units of work), one
 * at a time under s->lock (SQLITE_OPEN_NOMUTEX: the lock is ours).
 *
 * Checkpoints. With synchronous=normal a commit writes the WAL and does not
 * sync; the checkpoint copies the WAL into the database and syncs both. On
 * the loop it would stall every request behind it for tens of milliseconds,
 * so SQLite's automatic checkpoint is off and a thread with its own
 * connection runs PASSIVE checkpoints whenever a commit leaves more than
 * STORE_CHECKPOINT_PAGES pages in the WAL (a WAL hook tells it). A passive
 * checkpoint never blocks the writer, but under a steady load the writer
 * has always committed a little more by the time it ends, and SQLite starts
 * the WAL over only when a checkpoint has copied all of it. So once the
 * thread has copied the bulk and gone idle, the committer (the writer
 * thread, whose WAL hook runs right after its commit, when nothing else can
 * write) copies the short tail itself with a PASSIVE checkpoint on the
 * store's connection: the next transaction then starts the WAL from its
 * beginning, and the WAL stays at most STORE_CHECKPOINT_TAIL_PAGES pages
 * long, give or take. (Before the writer thread this was the loop's stall;
 * now it delays only the next unit's commit.) Each start-over costs three
 * fdatasyncs (the WAL and the database in the tail's checkpoint, the new
 * WAL header at the next commit), which take a fraction of a millisecond
 * on a quiet disk and tens of milliseconds on one busy with the thread's
 * writes: so the WAL starts over only every STORE_CHECKPOINT_TAIL_PAGES
 * pages (64 MiB), and the tail copied there is short
 * (STORE_CHECKPOINT_TAIL_MAX pages); when it is longer the thread goes
 * again, and as it copies faster than the loop writes each pass leaves a
 * shorter tail. A bulk writer (the cleanup) paces itself with
 * store_pace(): it waits while the thread is behind, and when the WAL
 * is due to start over it waits for the thread to be done and copies the
 * tail then, so that the start-over costs one short stall rather than a
 * race between its writes and the thread. If the thread cannot keep up at
 * all, the committer checkpoints everything itself at
 * STORE_CHECKPOINT_HARD_PAGES, a stall that keeps the WAL bounded.
 *
 * Sessions keep their rows after they end (ended_at, end_reason) until the
 * retention purge, which walks the partial index on ended rows. That index
 * changes only when a session ends, never on the per-request path; touches
 * update last_activity, which is in no index at all.
 *
 * Indexes and Create. Every index an insert touches at a random place costs
 * a page written to the WAL per create (and later to the database), which
 * is what bounds Create: a group commit of 50 creates with a random
 * token-hash index and a random user index wrote about 100 pages. So an
 * insert touches only the ends of B-trees: rows and audit rows are numbered
 * in time order, and ids start with their creation time. The token hash and
 * the user have partial indexes over ended rows only: live sessions are all
 * in the engine's memory (found there by token hash and by user), so the
 * store is asked for a token or a user's sessions only about ended ones
 * (Expired with its reason, listings with ended sessions). Those two index
 * entries are written when a session ends, where the end-time index is
 * written anyway. The token hash is not declared UNIQUE: 256 random bits
 * do not collide, and the engine's memory index is the authority on live
 * tokens.
 */
#include "backend.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "sidefiles.h"

#define STORE_BUSY_TIMEOUT_MS 1000
/* Page cache: validations never read SQLite (the engine keeps what they need
 * in memory), so the cache serves writes and the rare lookups of ended
 * sessions; a small one keeps the daemon's memory predictable. */
#define STORE_CACHE_KIB 8192
/* Checkpoints run on a thread of their own (see the top of this file): it
 * starts when a commit leaves this many pages in the WAL... */
#define STORE_CHECKPOINT_PAGES 2000
/* ...and the committer copies the tail (see above) once the WAL is this long,
 * the thread is idle and at most STORE_CHECKPOINT_TAIL_MAX pages are left to
 * copy; otherwise the thread goes again. */
#define STORE_CHECKPOINT_TAIL_PAGES (8 * STORE_CHECKPOINT_PAGES)
#define STORE_CHECKPOINT_TAIL_MAX 128
/* A bulk writer waits while the thread has more than twice the starting
 * threshold left to copy. On a small disk the thresholds come down to a
 * quarter of the free space (in pages), measured every so many commits
 * and after a full file system: a WAL that waits 64 MiB to start over
 * would otherwise take the room the data needs. */
#define STORE_SPACE_EVERY_COMMITS 64
#define STORE_SPACE_MIN_TAIL 16
/* A WAL this long means the thread cannot keep up with the writes: the loop
 * then checkpoints everything itself, stalling once rather than letting the
 * WAL (and every lookup in it) grow without bound. */
#define STORE_CHECKPOINT_HARD_PAGES 50000
/* Passes of one checkpoint run, each taking what was committed meanwhile. */
#define STORE_CHECKPOINT_PASSES 32
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

enum {
        STMT_BEGIN,
        STMT_COMMIT,
        STMT_ROLLBACK,
        STMT_SESSION_INSERT,
        STMT_SESSION_SET_ACTIVITY,
        STMT_SESSION_SET_RENEWED,
        STMT_SESSION_END,
        STMT_SESSION_SET_CLIENT,
        STMT_SESSION_COPY,
        STMT_SESSION_SET_PLATFORM,
        STMT_SESSION_GET_SWITCHES,
        STMT_SESSION_GET_SYNC,
        STMT_SESSION_SET_SYNC,
        STMT_SESSION_BY_ROWID,
        STMT_SESSION_BY_HASH,
        STMT_SESSION_BY_ID,
        STMT_SESSIONS_ALL,
        STMT_SESSIONS_LIVE,
        STMT_SESSIONS_USER_ENDED,
        STMT_AUDIT_INSERT,
        STMT_PURGE_SESSIONS,
        STMT_PURGE_AUDIT,
        _STMT_MAX,
};

/* Session times are Unix milliseconds at this interface and two columns in
 * the table (schema version 2): the second (created_at...) and the
 * millisecond within it (created_at_ms...). Reads join them, writes split
 * them in SQL (?N / 1000, ?N % 1000: SQLite's integer division truncates
 * and its remainder keeps the sign, so the two always add up to ?N). */
#define SESSION_COLUMNS                                                                                  \
        "row, id, token_hash, user_id, platform_id, created_at * 1000 + created_at_ms, "                 \
        "last_activity * 1000 + last_activity_ms, renewed_at * 1000 + renewed_at_ms, "                   \
        "ended_at * 1000 + ended_at_ms, end_reason, fp_user_agent, fp_ip, fp_accept_language, "          \
        "fp_accept_encoding, ip, user_agent, sync_version"

static const char *const stmt_sql[_STMT_MAX] = {
        [STMT_BEGIN] = "BEGIN IMMEDIATE",
        [STMT_COMMIT] = "COMMIT",
        [STMT_ROLLBACK] = "ROLLBACK",
        [STMT_SESSION_INSERT] =
                "INSERT INTO sessions (id, token_hash, user_id, platform_id, created_at, last_activity, "
                "renewed_at, fp_user_agent, fp_ip, fp_accept_language, fp_accept_encoding, ip, user_agent, "
                "sync_data, sync_version, row, created_at_ms, last_activity_ms, renewed_at_ms) "
                "VALUES (?1, ?2, ?3, ?4, ?5 / 1000, ?6 / 1000, ?7 / 1000, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, "
                "?5 % 1000, ?6 % 1000, ?7 % 1000)",
        [STMT_SESSION_SET_ACTIVITY] =
                "UPDATE sessions SET last_activity = ?2 / 1000, last_activity_ms = ?2 % 1000 WHERE row = ?1",
        [STMT_SESSION_SET_RENEWED] =
                "UPDATE sessions SET renewed_at = ?2 / 1000, renewed_at_ms = ?2 % 1000, "
                "last_activity = max(last_activity * 1000 + last_activity_ms, ?3) / 1000, "
                "last_activity_ms = max(last_activity * 1000 + last_activity_ms, ?3) % 1000 WHERE row = ?1",
        [STMT_SESSION_END] =
                "UPDATE sessions SET ended_at = ?2 / 1000, ended_at_ms = ?2 % 1000, end_reason = ?3 "
                "WHERE row = ?1 AND ended_at IS NULL",
        [STMT_SESSION_SET_CLIENT] =
                "UPDATE sessions SET fp_user_agent = coalesce(?2, fp_user_agent), fp_ip = coalesce(?3, fp_ip), "
                "fp_accept_language = coalesce(?4, fp_accept_language), "
                "fp_accept_encoding = coalesce(?5, fp_accept_encoding), ip = coalesce(?6, ip), "
                "user_agent = coalesce(?7, user_agent) WHERE row = ?1",
        [STMT_SESSION_COPY] =
                "INSERT INTO sessions (row, id, token_hash, user_id, platform_id, created_at, last_activity, "
                "renewed_at, fp_user_agent, fp_ip, fp_accept_language, fp_accept_encoding, ip, user_agent, "
                "sync_data, sync_version, platform_switches, created_at_ms, last_activity_ms, renewed_at_ms) "
                "SELECT ?5, ?2, ?3, user_id, platform_id, created_at, ?4 / 1000, renewed_at, fp_user_agent, fp_ip, "
                "fp_accept_language, fp_accept_encoding, ip, user_agent, sync_data, sync_version, "
                "platform_switches, created_at_ms, ?4 % 1000, renewed_at_ms "
                "FROM sessions WHERE row = ?1 AND ended_at IS NULL",
        [STMT_SESSION_SET_PLATFORM] =
                "UPDATE sessions SET platform_id = ?2, platform_switches = ?3 WHERE row = ?1",
        [STMT_SESSION_GET_SWITCHES] = "SELECT platform_switches FROM sessions WHERE row = ?1",
        [STMT_SESSION_GET_SYNC] = "SELECT sync_version, sync_data FROM sessions WHERE row = ?1",
        [STMT_SESSION_SET_SYNC] = "UPDATE sessions SET sync_version = ?2, sync_data = ?3 WHERE row = ?1",
        [STMT_SESSION_BY_ROWID] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE row = ?1",
        [STMT_SESSION_BY_HASH] =
                "SELECT " SESSION_COLUMNS " FROM sessions WHERE token_hash = ?1 AND ended_at IS NOT NULL",
        [STMT_SESSION_BY_ID] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE id = ?1",
        [STMT_SESSIONS_ALL] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE row > ?1 ORDER BY row",
        [STMT_SESSIONS_LIVE] =
                "SELECT " SESSION_COLUMNS " FROM sessions WHERE ended_at IS NULL AND row > ?1 ORDER BY row",
        [STMT_SESSIONS_USER_ENDED] = "SELECT " SESSION_COLUMNS
                                     " FROM sessions WHERE user_id = ?1 AND ended_at IS NOT NULL AND row > ?2 ORDER BY row",
        [STMT_AUDIT_INSERT] =
                "INSERT INTO audit (time, kind, user_id, session_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        [STMT_PURGE_SESSIONS] =
                "DELETE FROM sessions WHERE row IN (SELECT row FROM sessions WHERE ended_at IS NOT NULL "
                "AND ended_at <= ?1 / 1000 AND ended_at * 1000 + ended_at_ms < ?1 ORDER BY ended_at LIMIT ?2)",
        [STMT_PURGE_AUDIT] =
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE time < ?1 ORDER BY time LIMIT ?2)",
};

/* Forward migrations: step i brings the schema from version i to i + 1.
 *
 * Indexes cost a random page write per insert each, and Create is the
 * write on the hot path (see the top of this file): an insert touches only
 * the ends of the row, id and audit B-trees; token hash, user and end time
 * are indexed for ended rows only. */
static const char *const migrations[STORE_SCHEMA_VERSION] = {
        /* 0 -> 1: the first schema. */
        "CREATE TABLE sessions ("
        "  row INTEGER PRIMARY KEY,"        /* stable rowid (VACUUM keeps it) */
        "  id TEXT NOT NULL UNIQUE,"        /* public id */
        "  token_hash BLOB NOT NULL,"        /* keyed BLAKE2b of the token */
        "  user_id TEXT NOT NULL,"
        "  platform_id TEXT,"
        "  created_at INTEGER NOT NULL,"
        "  last_activity INTEGER NOT NULL,"
        "  renewed_at INTEGER NOT NULL,"
        "  ended_at INTEGER,"
        "  end_reason TEXT,"
        "  fp_user_agent INTEGER,"
        "  fp_ip INTEGER,"
        "  fp_accept_language INTEGER,"
        "  fp_accept_encoding INTEGER,"
        "  ip TEXT,"
        "  user_agent TEXT,"
        "  sync_data BLOB,"
        "  sync_version INTEGER NOT NULL DEFAULT 0,"
        "  platform_switches TEXT"           /* JSON array of recent switch times */
        ");"
        "CREATE INDEX sessions_ended ON sessions (ended_at) WHERE ended_at IS NOT NULL;"
        "CREATE INDEX sessions_ended_token ON sessions (token_hash) WHERE ended_at IS NOT NULL;"
        "CREATE INDEX sessions_ended_user ON sessions (user_id) WHERE ended_at IS NOT NULL;"
        "CREATE TABLE audit ("
        "  id INTEGER PRIMARY KEY,"
        "  time INTEGER NOT NULL,"
        "  kind TEXT NOT NULL,"
        "  user_id TEXT,"
        "  session_id TEXT,"
        "  detail TEXT NOT NULL DEFAULT '{}'"
        ");"
        "CREATE INDEX audit_time ON audit (time);",
        /* 1 -> 2: session times to the millisecond. Each time keeps its
         * Unix second in its column, and the millisecond within that
         * second (0-999) goes in a column of its own, so that readers of
         * the seconds (analytics, indexes, an operator's SQL) are
         * unchanged, and the migration rewrites no row: a column added
         * with a constant default is only a change of the schema, and the
         * rows written before it read as second.000. */
        "ALTER TABLE sessions ADD COLUMN created_at_ms INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE sessions ADD COLUMN last_activity_ms INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE sessions ADD COLUMN renewed_at_ms INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE sessions ADD COLUMN ended_at_ms INTEGER NOT NULL DEFAULT 0;",
};

struct checkpointer {
        sqlite3 *db; /* the thread's own connection */
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool started, wanted, running, stop;
        int backfilled; /* WAL pages copied by the thread's last pass */
        unsigned long long runs;
        unsigned maintaining;    /* store_maintain_start() works in the thread pool (close waits) */
        pthread_cond_t maintained; /* one of them is done */
};


struct sqlite_store {
        struct store base; /* first: the shared half (store.c) */
        char *locator;     /* "sqlite:" and the path */
        sqlite3 *db;
        char *path;
        bool memory;
        sqlite3_stmt *stmt[_STMT_MAX];
        struct checkpointer ckpt;
        int wal_pages; /* in the WAL after the last commit (the WAL hook, under lock) */
        /* The checkpoint thresholds (pages), taken down on a small disk:
         * see store_space_update(). Under lock. */
        int ckpt_pages, tail_pages, hard_pages;
        int page_size;
        unsigned commits_since_space;
        int64_t next_key; /* the next session row: keys are ours to give */

};

static struct sqlite_store *store_alloc(void);
static void maintain_wait(struct sqlite_store *s);
static void sqlite_close(struct store *b);
static void store_space_update(struct sqlite_store *s);
static int checkpoint_locked(struct sqlite_store *s);
static int max_rowid_locked(struct sqlite_store *s, int64_t *ret);

static bool in_sql_transaction(const struct sqlite_store *s);
static void sql_rollback(struct sqlite_store *s);

static int errno_from_sqlite(int rc) {
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_CANTOPEN:
                return -ENOENT;
        case SQLITE_TOOBIG:
                return -E2BIG;
        default:
                return -EIO;
        }
}

static int store_fail(struct sqlite_store *s, int rc, const char *what) {
        log_error("Store %s: %s failed: %s", s->path, what, sqlite3_errmsg(s->db));
        return errno_from_sqlite(rc);
}


static sqlite3_stmt *store_stmt(struct sqlite_store *s, int which) {
        sqlite3_stmt *st = s->stmt[which];

        assert(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return st;
}

/* Runs a statement that returns no rows; leaves it reset. */
static int stmt_done(struct sqlite_store *s, sqlite3_stmt *st, const char *what) {
        int rc = sqlite3_step(st);

        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
                return store_fail(s, rc, what);
        return 0;
}

static void row_from_stmt(sqlite3_stmt *st, struct store_session *row, bool light);

static int exec_simple(sqlite3 *db, const char *sql) {
        return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static int query_int(sqlite3 *db, const char *sql, int64_t *ret) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return rc;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret = sqlite3_column_int64(st, 0);
                rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
                *ret = 0;
                rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
        return rc;
}

/* ---- opening -------------------------------------------------------------- */

/* "file:" URI of a path, with the characters URIs give a meaning escaped. */
static char *path_to_uri(const char *path, const char *query) {
        size_t n = strlen(path);
        char *uri = malloc(5 + 3 * n + strlen(query) + 2), *p;

        if (!uri)
                return NULL;
        p = stpcpy(uri, "file:");
        for (const char *c = path; *c; c++) {
                if (*c == '?' || *c == '#' || *c == '%') {
                        sprintf(p, "%%%02X", (unsigned char)*c);
                        p += 3;
                } else
                        *p++ = *c;
        }
        *p++ = '?';
        strcpy(p, query);
        return uri;
}

static int64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int open_readonly(const char *path, sqlite3 **ret) {
        char *uri = path_to_uri(path, "mode=ro");
        int rc;

        if (!uri)
                return -ENOMEM;
        rc = sqlite3_open_v2(uri, ret, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL);
        free(uri);
        if (rc != SQLITE_OK) {
                log_error("Cannot open database %s: %s", path, *ret ? sqlite3_errmsg(*ret) : sqlite3_errstr(rc));
                return errno_from_sqlite(rc);
        }
        sqlite3_busy_timeout(*ret, STORE_BUSY_TIMEOUT_MS);
        return 0;
}

/* PRAGMA quick_check reads every page of the file, which with a million
 * sessions takes about as long as loading them: it runs on a connection of
 * its own in a thread of its own while the loop thread loads. */
struct quick_check {
        sqlite3 *db;
        pthread_t thread;
        bool threaded;
        int rc;       /* of the step: SQLITE_ROW when it answered */
        char *answer; /* its first line ("ok" when sound), or the error */
        int64_t ms;
};

static void *quick_check_main(void *userdata) {
        struct quick_check *q = userdata;
        int64_t started = now_ms();
        sqlite3_stmt *st = NULL;
        const char *text;

        q->rc = sqlite3_prepare_v2(q->db, "PRAGMA quick_check", -1, &st, NULL);
        if (q->rc == SQLITE_OK)
                q->rc = sqlite3_step(st);
        text = q->rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : sqlite3_errmsg(q->db);
        q->answer = strdup(text ? text : "");
        sqlite3_finalize(st);
        q->ms = now_ms() - started;
        return NULL;
}

static int quick_check_start(struct quick_check *q, const char *path) {
        int r = open_readonly(path, &q->db);

        if (r < 0)
                return r;
        q->threaded = pthread_create(&q->thread, NULL, quick_check_main, q) == 0;
        return 0;
}

/* Waits for the check (runs it here if no thread could be made); logs a
 * refusal. `cancel`: the caller gives up anyway, the verdict is not needed. */
static int quick_check_finish(struct quick_check *q, const char *path, bool cancel) {
        int r = 0;

        if (cancel)
                sqlite3_interrupt(q->db);
        if (q->threaded)
                pthread_join(q->thread, NULL);
        else if (!cancel)
                quick_check_main(q);
        if (!cancel) {
                if (!q->answer)
                        r = -ENOMEM;
                else if (q->rc != SQLITE_ROW) {
                        log_error("Database %s failed its integrity check (%s); refusing to start and "
                                  "leaving the file untouched.", path, q->answer);
                        r = -EBADMSG;
                } else if (strcmp(q->answer, "ok") != 0) {
                        log_error("Database %s is corrupt (quick_check: %s); refusing to start and leaving "
                                  "the file untouched.", path, q->answer);
                        r = -EBADMSG;
                }
        }
        free(q->answer);
        sqlite3_close(q->db);
        return r;
}

/* Hands the live sessions to the loader of o, in rowid order. */
static int load_live(sqlite3 *db, const char *path, const struct store_options *o, uint64_t *loaded) {
        struct store_session row;
        sqlite3_stmt *st = NULL;
        int64_t live = 0;
        int rc, r = 0;

        *loaded = 0;
        if (o->reserve) {
                rc = query_int(db,
                               "SELECT (SELECT count(*) FROM sessions) - "
                               "(SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL)",
                               &live);
                if (rc != SQLITE_OK)
                        goto fail;
                r = o->reserve(live > 0 ? (uint64_t)live : 0, o->load_userdata);
                if (r < 0)
                        return log_error_errno(r, "Database %s: no room for %lld sessions: %m", path,
                                               (long long)live);
        }
        rc = sqlite3_prepare_v2(db, "SELECT " SESSION_COLUMNS " FROM sessions WHERE ended_at IS NULL ORDER BY row",
                                -1, &st, NULL);
        if (rc != SQLITE_OK)
                goto fail;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                row_from_stmt(st, &row, true);
                r = o->load(&row, o->load_userdata);
                if (r < 0)
                        break;
                (*loaded)++;
        }
        sqlite3_finalize(st);
        if (r < 0)
                return log_error_errno(r, "Database %s: loading the sessions failed: %m", path);
        if (rc == SQLITE_DONE)
                return 0;
fail:
        log_error("Database %s: loading the sessions failed: %s", path, sqlite3_errmsg(db));
        return errno_from_sqlite(rc) == -EIO ? -EBADMSG : errno_from_sqlite(rc);
}

/* The read-only inspection of an existing database, and its loading when
 * its schema is ours (an older one is loaded after migrating). Logs every
 * refusal. *loaded tells whether the sessions were handed to the loader. */
static int store_check_readonly(const struct store_options *o, bool *loaded) {
        const char *path = o->path;
        struct quick_check q = {0};
        struct side_files side;
        sqlite3 *db = NULL;
        int64_t version = 0, tables = 0, started;
        uint64_t n = 0;
        int rc, r = 0;

        *loaded = false;
        side_files_note(&side, path);
        r = open_readonly(path, &db);
        if (r < 0)
                goto out;

        rc = query_int(db, "PRAGMA user_version", &version);
        if (rc == SQLITE_OK)
                rc = query_int(db, "SELECT count(*) FROM sqlite_master", &tables);
        if (rc != SQLITE_OK) {
                log_error("Database %s is not a readable SQLite database (%s); refusing to start "
                          "and leaving the file untouched.",
                          path, sqlite3_errmsg(db));
                r = rc == SQLITE_BUSY ? -EBUSY : rc == SQLITE_CANTOPEN || rc == SQLITE_PERM ? -EACCES : -EBADMSG;
                goto out;
        }
        if (version > STORE_SCHEMA_VERSION) {
                log_error("Database %s has schema version %lld, newer than this sessiond supports (%d); "
                          "refusing to start. Run the newer sessiond or restore a backup.",
                          path, (long long)version, STORE_SCHEMA_VERSION);
                r = -EPROTO;
                goto out;
        }
        if (version == 0 && tables > 0) {
                log_error("Database %s holds tables but no sessiond schema version; it is not a "
                          "sessiond database. Refusing to start.", path);
                r = -EBADMSG;
                goto out;
        }

        r = quick_check_start(&q, path);
        if (r < 0)
                goto out;
        started = now_ms();
        if (o->load && version == STORE_SCHEMA_VERSION) {
                r = load_live(db, path, o, &n);
                *loaded = r >= 0;
        }
        started = now_ms() - started;
        /* A damaged file may fail the loading first: the check then says
         * what is wrong. Any other failure of the loader needs no verdict. */
        rc = quick_check_finish(&q, path, r < 0 && r != -EBADMSG);
        if (r >= 0 || r == -EBADMSG)
                r = rc < 0 ? rc : r;
        if (r >= 0 && *loaded)
                log_info("Database %s: %llu live sessions loaded in %lld ms, quick_check in %lld ms "
                         "(at the same time).",
                         path, (unsigned long long)n, (long long)started, (long long)q.ms);
out:
        sqlite3_close(db);
        if (r < 0)
                side_files_restore(&side);
        return r;
}

static int mkdir_parents(const char *dir, mode_t mode) {
        char buf[PATH_MAX];
        size_t n = strlen(dir);

        if (n == 0 || n >= sizeof buf)
                return n ? -ENAMETOOLONG : 0;
        memcpy(buf, dir, n + 1);
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static const char *synchronous_value(const char *s) {
        static const char *const ok[] = {"off", "normal", "full", "extra"};

        for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
                if (s && strcasecmp(s, ok[i]) == 0)
                        return ok[i];
        return NULL;
}

static int set_synchronous_locked(struct sqlite_store *s, const char *synchronous) {
        const char *v = synchronous_value(synchronous);
        char sql[64];
        int rc;

        if (!v)
                return -EINVAL;
        if (s->memory)
                return 0;
        snprintf(sql, sizeof sql, "PRAGMA synchronous = %s", v);
        rc = exec_simple(s->db, sql);
        return rc == SQLITE_OK ? 0 : store_fail(s, rc, "PRAGMA synchronous");
}


static int store_migrate(struct sqlite_store *s) {
        int64_t version = 0;
        char sql[64];
        int rc;

        rc = query_int(s->db, "PRAGMA user_version", &version);
        if (rc != SQLITE_OK)
                return store_fail(s, rc, "reading the schema version");
        if (version > STORE_SCHEMA_VERSION) { /* raced with a newer binary */
                log_error("Database %s has schema version %lld, newer than this sessiond supports (%d).",
                          s->path, (long long)version, STORE_SCHEMA_VERSION);
                return -EPROTO;
        }
        for (int64_t v = version; v < STORE_SCHEMA_VERSION; v++) {
                rc = exec_simple(s->db, "BEGIN IMMEDIATE");
                if (rc == SQLITE_OK)
                        rc = exec_simple(s->db, migrations[v]);
                if (rc == SQLITE_OK) {
                        snprintf(sql, sizeof sql, "PRAGMA user_version = %lld", (long long)v + 1);
                        rc = exec_simple(s->db, sql);
                }
                if (rc == SQLITE_OK)
                        rc = exec_simple(s->db, "COMMIT");
                if (rc != SQLITE_OK) {
                        int r = store_fail(s, rc, "schema migration");
                        exec_simple(s->db, "ROLLBACK");
                        return r;
                }
                if (!s->memory)
                        log_info("Database %s: schema migrated to version %lld.", s->path, (long long)v + 1);
        }
        return 0;
}

/* ---- room on disk ------------------------------------------------------------- */

static void store_space_update(struct sqlite_store *s) {
        struct statvfs v;
        int64_t free_pages, tail;

        s->commits_since_space = 0;
        s->ckpt_pages = STORE_CHECKPOINT_PAGES;
        s->tail_pages = STORE_CHECKPOINT_TAIL_PAGES;
        s->hard_pages = STORE_CHECKPOINT_HARD_PAGES;
        if (s->memory || s->page_size <= 0 || statvfs(s->path, &v) < 0)
                return;
        free_pages = (int64_t)v.f_bavail * (int64_t)v.f_frsize / s->page_size + s->wal_pages;
        tail = free_pages / 4;
        if (tail >= STORE_CHECKPOINT_TAIL_PAGES)
                return;
        if (tail < STORE_SPACE_MIN_TAIL)
                tail = STORE_SPACE_MIN_TAIL;
        s->tail_pages = (int)tail;
        s->ckpt_pages = (int)(tail / 4 > 4 ? tail / 4 : 4);
        s->hard_pages = (int)(2 * tail);
}

/* ---- the checkpoint thread ------------------------------------------------ */

static void *checkpointer_main(void *userdata) {
        struct sqlite_store *s = userdata;
        struct checkpointer *c = &s->ckpt;

        pthread_mutex_lock(&c->lock);
        for (;;) {
                while (!c->wanted && !c->stop)
                        pthread_cond_wait(&c->cond, &c->lock);
                if (c->stop)
                        break;
                c->wanted = false;
                c->running = true;
                pthread_mutex_unlock(&c->lock);

                for (int pass = 0; pass < STORE_CHECKPOINT_PASSES; pass++) {
                        int log = 0, done = 0;
                        int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);

                        if (rc != SQLITE_OK) {
                                if (rc != SQLITE_BUSY)
                                        log_warning("Store %s: checkpoint failed: %s", s->path, sqlite3_errmsg(c->db));
                                break;
                        }
                        pthread_mutex_lock(&c->lock);
                        c->backfilled = done;
                        pthread_mutex_unlock(&c->lock);
                        if (done >= log) /* everything copied: the WAL can start over */
                                break;
                }

                pthread_mutex_lock(&c->lock);
                c->running = false;
                c->runs++;
        }
        pthread_mutex_unlock(&c->lock);
        return NULL;
}

/* Runs after every commit on the store's connection (SQLite's WAL hook), on
 * the committing thread, with s->lock held. */
static int wal_hook(void *userdata, sqlite3 *db, const char *name, int pages) {
        struct sqlite_store *s = userdata;
        struct checkpointer *c = &s->ckpt;
        bool idle, ours = false;

        (void)name;
        s->wal_pages = pages;
        if (++s->commits_since_space >= STORE_SPACE_EVERY_COMMITS)
                store_space_update(s);
        if (pages < s->ckpt_pages || !c->started)
                return SQLITE_OK;
        pthread_mutex_lock(&c->lock);
        if (pages < c->backfilled)
                c->backfilled = 0; /* the WAL started over since */
        idle = !c->running && !c->wanted;
        if (idle) {
                /* Long, the thread is done with what it took, and what is
                 * left is short: the tail is ours. Otherwise the thread
                 * goes again. */
                ours = pages >= s->hard_pages ||
                       (pages >= s->tail_pages && pages - c->backfilled <= STORE_CHECKPOINT_TAIL_MAX);
                if (!ours) {
                        c->wanted = true;
                        pthread_cond_signal(&c->cond);
                }
        }
        pthread_mutex_unlock(&c->lock);
        if (ours) {
                int log = 0, done = 0;

                if (pages >= s->hard_pages && s->hard_pages == STORE_CHECKPOINT_HARD_PAGES)
                        log_warning("Store %s: the WAL holds %d pages, more than the checkpoint thread keeps up "
                                    "with; checkpointing after this commit.", s->path, pages);
                if (sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done) == SQLITE_OK &&
                    done >= log) {
                        pthread_mutex_lock(&c->lock);
                        c->backfilled = done;
                        pthread_mutex_unlock(&c->lock);
                }
        }
        return SQLITE_OK;
}

static int checkpointer_start(struct sqlite_store *s) {
        struct checkpointer *c = &s->ckpt;
        int rc, r;

        rc = sqlite3_open_v2(s->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK)
                return store_fail(s, rc, "opening the checkpoint connection");
        sqlite3_busy_timeout(c->db, STORE_BUSY_TIMEOUT_MS);
        /* A connection learns that the database is in WAL mode when it
         * first reads it; until then a checkpoint does nothing. Copying
         * pages needs no page cache of its own to speak of. */
        rc = exec_simple(c->db, "PRAGMA cache_size = -256; SELECT count(*) FROM sqlite_master");
        if (rc != SQLITE_OK) {
                r = store_fail(s, rc, "reading with the checkpoint connection");
                sqlite3_close(c->db);
                c->db = NULL;
                return r;
        }
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->cond, NULL);
        pthread_cond_init(&c->maintained, NULL);
        r = -pthread_create(&c->thread, NULL, checkpointer_main, s);
        if (r < 0) {
                pthread_mutex_destroy(&c->lock);
                pthread_cond_destroy(&c->cond);
                pthread_cond_destroy(&c->maintained);
                sqlite3_close(c->db);
                c->db = NULL;
                return log_error_errno(r, "Store %s: cannot start the checkpoint thread: %m", s->path);
        }
        c->started = true;
        sqlite3_wal_autocheckpoint(s->db, 0);
        sqlite3_wal_hook(s->db, wal_hook, s);
        return 0;
}

static void checkpointer_stop(struct sqlite_store *s) {
        struct checkpointer *c = &s->ckpt;

        if (!c->started)
                return;
        sqlite3_wal_hook(s->db, NULL, NULL);
        pthread_mutex_lock(&c->lock);
        c->stop = true;
        pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->lock);
        pthread_join(c->thread, NULL);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->cond);
        pthread_cond_destroy(&c->maintained);
        sqlite3_close(c->db);
        c->db = NULL;
        c->started = false;
}

static int bulk_pace_locked(struct sqlite_store *s);

static int pace_locked(struct sqlite_store *s) {
        if (!s->ckpt.started || in_sql_transaction(s))
                return 0; /* a unit is being recorded or committed: its commit wakes the thread */
        return bulk_pace_locked(s);
}

static int bulk_pace_locked(struct sqlite_store *s) {
        struct checkpointer *c = &s->ckpt;
        int backlog, log = 0, done = 0;
        bool idle, due = s->wal_pages >= s->tail_pages;

        pthread_mutex_lock(&c->lock);
        if (c->backfilled > s->wal_pages)
                c->backfilled = 0; /* the WAL started over since the thread's last pass */
        backlog = s->wal_pages - c->backfilled;
        idle = !c->running && !c->wanted;
        if (idle && (backlog > 2 * s->ckpt_pages || (due && backlog > STORE_CHECKPOINT_TAIL_MAX))) {
                /* No commit may come to wake the thread: wake it here. */
                c->wanted = true;
                pthread_cond_signal(&c->cond);
                idle = false;
        }
        pthread_mutex_unlock(&c->lock);
        if (backlog > 2 * s->ckpt_pages || (due && !idle))
                return -EAGAIN;
        if (!due)
                return 0;
        /* Due, the thread done, a short tail left: copy it, and the next
         * commit starts the WAL over. */
        if (sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done) == SQLITE_OK &&
            done >= log) {
                pthread_mutex_lock(&c->lock);
                c->backfilled = done;
                pthread_mutex_unlock(&c->lock);
        }
        return 0;
}

static unsigned long long checkpoint_runs(struct sqlite_store *s) {
        unsigned long long n;

        if (!s->ckpt.started)
                return 0;
        pthread_mutex_lock(&s->ckpt.lock);
        n = s->ckpt.runs;
        pthread_mutex_unlock(&s->ckpt.lock);
        return n;
}

static int store_prepare_all(struct sqlite_store *s) {
        for (int i = 0; i < _STMT_MAX; i++) {
                int rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i], NULL);
                if (rc != SQLITE_OK)
                        return store_fail(s, rc, "preparing a statement");
        }
        return 0;
}

/* Creates a new, empty database file with mode 0600 (and its folder 0700). */
static int store_create_file(const char *path) {
        char dir[PATH_MAX];
        const char *slash = strrchr(path, '/');
        int fd, r;

        if (slash && slash != path) {
                if ((size_t)(slash - path) >= sizeof dir)
                        return -ENAMETOOLONG;
                memcpy(dir, path, slash - path);
                dir[slash - path] = '\0';
                r = mkdir_parents(dir, 0700);
                if (r < 0)
                        return log_error_errno(r, "Failed to create the database folder %s: %m", dir);
        }
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return log_error_errno(-errno, "Failed to create database %s: %m", path);
        close(fd);
        return 0;
}

static int sqlite_open(const struct store_options *o, struct store **ret) {
        struct sqlite_store *s;
        struct stat st;
        const char *sync_mode;
        bool memory = !o->path || strcmp(o->path, ":memory:") == 0;
        char *journal = NULL;
        int rc, r, flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
        bool created = false, loaded = false;

        assert(ret);
        sync_mode = synchronous_value(o->synchronous ? o->synchronous : "normal");
        if (!sync_mode) {
                log_error("Invalid daemon.synchronous value '%s'.", o->synchronous);
                return -EINVAL;
        }

        if (!memory) {
                if (stat(o->path, &st) == 0) {
                        if (!S_ISREG(st.st_mode)) {
                                log_error("Database %s is not a regular file; refusing to start.", o->path);
                                return -EBADMSG;
                        }
                        if (st.st_size > 0) {
                                r = store_check_readonly(o, &loaded);
                                if (r < 0)
                                        return r;
                        }
                } else if (errno == ENOENT) {
                        r = store_create_file(o->path);
                        if (r < 0)
                                return r;
                        created = true;
                } else
                        return log_error_errno(-errno, "Cannot access database %s: %m", o->path);
        } else
                flags |= SQLITE_OPEN_CREATE | SQLITE_OPEN_MEMORY;

        s = store_alloc();
        if (!s)
                return -ENOMEM;
        s->memory = memory;
        s->path = strdup(memory ? ":memory:" : o->path);
        if (!s->path || asprintf(&s->locator, "sqlite:%s", s->path) < 0) {
                s->locator = NULL;
                sqlite_close(&s->base);
                return -ENOMEM;
        }

        rc = sqlite3_open_v2(s->path, &s->db, flags, o->vfs);
        if (rc != SQLITE_OK) {
                log_error("Cannot open database %s read-write: %s", s->path,
                          s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
                r = errno_from_sqlite(rc);
                goto fail;
        }
        sqlite3_extended_result_codes(s->db, 0);
        sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);

        if (!memory) {
                sqlite3_stmt *jm = NULL;

                rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &jm, NULL);
                if (rc == SQLITE_OK && sqlite3_step(jm) == SQLITE_ROW)
                        journal = strdup((const char *)sqlite3_column_text(jm, 0));
                else
                        rc = sqlite3_errcode(s->db);
                sqlite3_finalize(jm);
                if (rc != SQLITE_OK || !journal || strcmp(journal, "wal") != 0) {
                        log_error("Database %s: cannot switch to WAL mode (%s).", s->path,
                                  journal ? journal : sqlite3_errmsg(s->db));
                        r = -EIO;
                        goto fail;
                }
                r = set_synchronous_locked(s, sync_mode);
                if (r < 0)
                        goto fail;
        }
        rc = exec_simple(s->db, "PRAGMA temp_store = MEMORY; PRAGMA foreign_keys = OFF;"
                                "PRAGMA cache_size = -" STRINGIFY(STORE_CACHE_KIB));
        if (rc != SQLITE_OK) {
                r = store_fail(s, rc, "setting pragmas");
                goto fail;
        }

        r = store_migrate(s);
        if (r < 0)
                goto fail;
        r = store_prepare_all(s);
        if (r < 0)
                goto fail;
        r = max_rowid_locked(s, &s->next_key);
        if (r < 0)
                goto fail;
        s->next_key++;
        if (o->load && !loaded) { /* new, empty or just migrated */
                uint64_t n;
                r = load_live(s->db, s->path, o, &n);
                if (r < 0)
                        goto fail;
        }
        {
                int64_t ps = 0;

                if (query_int(s->db, "PRAGMA page_size", &ps) == SQLITE_OK)
                        s->page_size = (int)ps;
                store_space_update(s);
        }
        if (!memory) {
                r = checkpointer_start(s);
                if (r < 0)
                        goto fail;
        }
        if (created)
                log_info("Created database %s.", s->path);
        free(journal);
        *ret = &s->base;
        return 0;
fail:
        free(journal);
        sqlite_close(&s->base);
        return r;
}

/* A zeroed store, its shared half set up. */
static struct sqlite_store *store_alloc(void) {
        struct sqlite_store *s = calloc(1, sizeof *s);

        if (s)
                store_core_init(&s->base, &store_backend_sqlite);
        return s;
}

static void sqlite_close(struct store *b) {
        struct sqlite_store *s = container_of(b, struct sqlite_store, base);

        maintain_wait(s);
        if (s->ckpt.started && !in_sql_transaction(s))
                /* A clean stop leaves no WAL behind: everything in place. */
                (void)checkpoint_locked(s);
        checkpointer_stop(s);
        for (int i = 0; i < _STMT_MAX; i++)
                sqlite3_finalize(s->stmt[i]);
        if (s->db && !sqlite3_get_autocommit(s->db))
                exec_simple(s->db, "ROLLBACK");
        if (sqlite3_close(s->db) != SQLITE_OK)
                log_error("Store %s: closing failed: %s", s->path, sqlite3_errmsg(s->db));
        free(s->path);
        free(s->locator);
        store_core_destroy(&s->base);
        free(s);
}

/* ---- running operations (s->lock held) ---------------------------------------- */

static bool in_sql_transaction(const struct sqlite_store *s) {
        return !sqlite3_get_autocommit(s->db);
}

static int changed_or_enoent(struct sqlite_store *s) {
        return sqlite3_changes(s->db) > 0 ? 0 : -ENOENT;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v) {
        if (v)
                sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, i);
}

static void bind_fp(sqlite3_stmt *st, int i, uint64_t v) {
        if (v)
                sqlite3_bind_int64(st, i, (int64_t)v);
        else
                sqlite3_bind_null(st, i);
}

static void bind_blob_or_null(sqlite3_stmt *st, int i, const void *data, size_t size) {
        if (data)
                sqlite3_bind_blob(st, i, data, (int)size, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, i);
}

static int apply_insert(struct sqlite_store *s, const struct store_op *op) {
        sqlite3_stmt *st = store_stmt(s, STMT_SESSION_INSERT);
        const struct store_session *row = &op->row;

        sqlite3_bind_text(st, 1, row->id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, row->token_hash, TOKEN_HASH_BYTES, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, row->user_id, -1, SQLITE_STATIC);
        bind_text_or_null(st, 4, row->platform_id);
        sqlite3_bind_int64(st, 5, row->created_at);
        sqlite3_bind_int64(st, 6, row->last_activity);
        sqlite3_bind_int64(st, 7, row->renewed_at);
        bind_fp(st, 8, row->fp_user_agent);
        bind_fp(st, 9, row->fp_ip);
        bind_fp(st, 10, row->fp_accept_language);
        bind_fp(st, 11, row->fp_accept_encoding);
        bind_text_or_null(st, 12, row->ip);
        bind_text_or_null(st, 13, row->user_agent);
        bind_blob_or_null(st, 14, op->blob, op->blob_size);
        sqlite3_bind_int64(st, 15, row->sync_version);
        sqlite3_bind_int64(st, 16, op->rowid);
        return stmt_done(s, st, "inserting a session");
}

static int apply_update(struct sqlite_store *s, const struct store_op *op) {
        sqlite3_stmt *st;
        const char *what;
        int r;

        switch (op->kind) {
        case STORE_OP_ACTIVITY:
                st = store_stmt(s, STMT_SESSION_SET_ACTIVITY);
                sqlite3_bind_int64(st, 2, op->t1);
                what = "updating last_activity";
                break;
        case STORE_OP_RENEWED:
                st = store_stmt(s, STMT_SESSION_SET_RENEWED);
                sqlite3_bind_int64(st, 2, op->t1);
                sqlite3_bind_int64(st, 3, op->t2);
                what = "renewing a session";
                break;
        case STORE_OP_END:
                st = store_stmt(s, STMT_SESSION_END);
                sqlite3_bind_int64(st, 2, op->t1);
                sqlite3_bind_text(st, 3, op->s1, -1, SQLITE_STATIC);
                what = "ending a session";
                break;
        case STORE_OP_CLIENT:
                st = store_stmt(s, STMT_SESSION_SET_CLIENT);
                bind_fp(st, 2, op->row.fp_user_agent);
                bind_fp(st, 3, op->row.fp_ip);
                bind_fp(st, 4, op->row.fp_accept_language);
                bind_fp(st, 5, op->row.fp_accept_encoding);
                bind_text_or_null(st, 6, op->row.ip);
                bind_text_or_null(st, 7, op->row.user_agent);
                what = "recording a client change";
                break;
        case STORE_OP_COPY:
                st = store_stmt(s, STMT_SESSION_COPY);
                sqlite3_bind_text(st, 2, op->s1, -1, SQLITE_STATIC);
                sqlite3_bind_blob(st, 3, op->row.token_hash, TOKEN_HASH_BYTES, SQLITE_STATIC);
                sqlite3_bind_int64(st, 4, op->t1);
                sqlite3_bind_int64(st, 5, op->t2);
                what = "copying a session";
                break;
        case STORE_OP_PLATFORM:
                st = store_stmt(s, STMT_SESSION_SET_PLATFORM);
                bind_text_or_null(st, 2, op->s1);
                bind_text_or_null(st, 3, op->s2);
                what = "switching the platform";
                break;
        case STORE_OP_SYNC:
                st = store_stmt(s, STMT_SESSION_SET_SYNC);
                sqlite3_bind_int64(st, 2, op->t1);
                bind_blob_or_null(st, 3, op->blob, op->blob_size);
                what = "writing sync state";
                break;
        default:
                assert(false);
                return -EINVAL;
        }
        sqlite3_bind_int64(st, 1, op->rowid);
        r = stmt_done(s, st, what);
        return r < 0 ? r : changed_or_enoent(s);
}

static int apply_audit(struct sqlite_store *s, const struct store_op *op) {
        sqlite3_stmt *st = store_stmt(s, STMT_AUDIT_INSERT);

        sqlite3_bind_int64(st, 1, op->t1);
        sqlite3_bind_text(st, 2, op->s1, -1, SQLITE_STATIC);
        bind_text_or_null(st, 3, op->s2);
        bind_text_or_null(st, 4, op->s3);
        sqlite3_bind_text(st, 5, op->blob ? op->blob : "{}", -1, SQLITE_STATIC);
        return stmt_done(s, st, "writing an audit row");
}

static int op_apply(struct sqlite_store *s, const struct store_op *op) {
        switch (op->kind) {
        case STORE_OP_LIMIT:
                return 0; /* one daemon: its engine enforced the limit (store.h) */
        case STORE_OP_INSERT:
                return apply_insert(s, op);
        case STORE_OP_AUDIT:
                return apply_audit(s, op);
        default:
                return apply_update(s, op);
        }
}

/* Ends the open transaction without keeping anything. */
static void sql_rollback(struct sqlite_store *s) {
        if (in_sql_transaction(s))
                (void)stmt_done(s, store_stmt(s, STMT_ROLLBACK), "ROLLBACK");
}

/* Runs the operations of u that have not run yet, in the open transaction
 * (begun here if needed). On failure everything is rolled back and the
 * unit is lost: u->error. */
static int uow_apply(struct sqlite_store *s, struct store_uow *u) {
        int r = 0;

        if (u->error)
                return u->error;
        for (; u->applied < u->n_ops; u->applied++) {
                if (!in_sql_transaction(s)) {
                        r = stmt_done(s, store_stmt(s, STMT_BEGIN), "BEGIN");
                        if (r < 0)
                                break;
                }
                r = op_apply(s, &u->ops[u->applied]);
                if (r < 0)
                        break;
        }
        if (r < 0) {
                sql_rollback(s);
                u->error = r;
                u->applied = u->n_ops;
        }
        return r;
}

/* Runs what is left of u and commits it. */
static int uow_commit_once(struct sqlite_store *s, struct store_uow *u) {
        int r = uow_apply(s, u);

        if (r >= 0 && in_sql_transaction(s)) {
                r = stmt_done(s, store_stmt(s, STMT_COMMIT), "COMMIT");
                if (r < 0)
                        sql_rollback(s);
        }
        return r;
}

/* A full file system is often a long WAL on a small disk: the pages it
 * holds are mostly copies of pages the database file already has room
 * for. So on -ENOSPC the WAL is copied into the database and truncated, the
 * threshold of the next start-over is taken down to the free space, and
 * the unit runs once more from its first operation (a unit that purged
 * cannot: its purge ran outside the operation list). */
static int uow_commit(struct sqlite_store *s, struct store_uow *u) {
        int r = uow_commit_once(s, u);

        if (r != -ENOSPC || u->wrote || s->memory)
                return r;
        if (checkpoint_locked(s) < 0)
                return r;
        store_space_update(s);
        log_notice("Store %s: the file system was full; the WAL was copied into the database and the "
                   "writes tried again.", s->path);
        u->error = 0;
        u->applied = 0;
        r = uow_commit_once(s, u);
        if (r == -ENOSPC)
                /* The blocks the failed try took stay with the WAL file,
                 * where a smaller write would then fit while a larger one
                 * does not: give them back, so that a full disk refuses
                 * every write that needs room. */
                (void)checkpoint_locked(s);
        return r;
}

/* ---- sessions ------------------------------------------------------------- */

static int max_rowid_locked(struct sqlite_store *s, int64_t *ret) {
        int rc = query_int(s->db, "SELECT coalesce(max(row), 0) FROM sessions", ret);

        return rc == SQLITE_OK ? 0 : store_fail(s, rc, "reading the largest row number");
}

static int session_get_switches_locked(struct sqlite_store *s, int64_t rowid, char **ret) {
        sqlite3_stmt *st = store_stmt(s, STMT_SESSION_GET_SWITCHES);
        const char *v;
        int rc;

        sqlite3_bind_int64(st, 1, rowid);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
                sqlite3_reset(st);
                return -ENOENT;
        }
        if (rc != SQLITE_ROW) {
                sqlite3_reset(st);
                return store_fail(s, rc, "reading platform switches");
        }
        v = (const char *)sqlite3_column_text(st, 0);
        *ret = strdup(v ? v : "[]");
        sqlite3_reset(st);
        return *ret ? 0 : -ENOMEM;
}


static int session_get_sync_locked(struct sqlite_store *s, int64_t rowid, int64_t *version, char **data, size_t *size) {
        sqlite3_stmt *st = store_stmt(s, STMT_SESSION_GET_SYNC);
        int rc, n;

        sqlite3_bind_int64(st, 1, rowid);
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                sqlite3_reset(st);
                return rc == SQLITE_DONE ? -ENOENT : store_fail(s, rc, "reading sync state");
        }
        *version = sqlite3_column_int64(st, 0);
        *data = NULL;
        *size = 0;
        if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
                const void *b = sqlite3_column_blob(st, 1);
                n = sqlite3_column_bytes(st, 1);
                *data = malloc((size_t)n + 1);
                if (!*data) {
                        sqlite3_reset(st);
                        return -ENOMEM;
                }
                if (n > 0)
                        memcpy(*data, b, (size_t)n);
                (*data)[n] = '\0';
                *size = (size_t)n;
        }
        sqlite3_reset(st);
        return 0;
}


static const char *column_text(sqlite3_stmt *st, int i) {
        return (const char *)sqlite3_column_text(st, i);
}

static void row_from_stmt(sqlite3_stmt *st, struct store_session *row, bool light) {
        const void *h;

        memset(row, 0, sizeof *row);
        row->rowid = sqlite3_column_int64(st, 0);
        row->id = column_text(st, 1);
        h = sqlite3_column_blob(st, 2);
        if (h && sqlite3_column_bytes(st, 2) == TOKEN_HASH_BYTES)
                memcpy(row->token_hash, h, TOKEN_HASH_BYTES);
        row->user_id = column_text(st, 3);
        row->platform_id = column_text(st, 4);
        row->created_at = sqlite3_column_int64(st, 5);
        row->last_activity = sqlite3_column_int64(st, 6);
        row->renewed_at = sqlite3_column_int64(st, 7);
        row->ended_at = sqlite3_column_int64(st, 8);
        row->end_reason = column_text(st, 9);
        row->fp_user_agent = (uint64_t)sqlite3_column_int64(st, 10);
        row->fp_ip = (uint64_t)sqlite3_column_int64(st, 11);
        row->fp_accept_language = (uint64_t)sqlite3_column_int64(st, 12);
        row->fp_accept_encoding = (uint64_t)sqlite3_column_int64(st, 13);
        if (!light) {
                row->ip = column_text(st, 14);
                row->user_agent = column_text(st, 15);
        }
        row->sync_version = sqlite3_column_int64(st, 16);
        if (!row->id)
                row->id = "";
        if (!row->user_id)
                row->user_id = "";
}

/* Steps through a select, handing rows to cb. */
static int stmt_each(struct sqlite_store *s, sqlite3_stmt *st, bool light, store_session_fn cb, void *userdata,
                     bool want_one) {
        struct store_session row;
        bool found = false;
        int rc, r = 0;

        for (;;) {
                rc = sqlite3_step(st);
                if (rc == SQLITE_DONE)
                        break;
                if (rc != SQLITE_ROW) {
                        r = store_fail(s, rc, "reading sessions");
                        break;
                }
                found = true;
                row_from_stmt(st, &row, light);
                r = cb(&row, userdata);
                if (r != 0)
                        break;
        }
        sqlite3_reset(st);
        if (r == 0 && want_one && !found)
                return -ENOENT;
        return r;
}

static int session_by_rowid_locked(struct sqlite_store *s, int64_t rowid, store_session_fn cb, void *userdata) {
        sqlite3_stmt *st = store_stmt(s, STMT_SESSION_BY_ROWID);

        sqlite3_bind_int64(st, 1, rowid);
        return stmt_each(s, st, false, cb, userdata, true);
}


static int session_by_hash_locked(struct sqlite_store *s, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb,
                          void *userdata) {
        sqlite3_stmt *st = store_stmt(s, STMT_SESSION_BY_HASH);

        sqlite3_bind_blob(st, 1, hash, TOKEN_HASH_BYTES, SQLITE_STATIC);
        return stmt_each(s, st, false, cb, userdata, true);
}


static int session_by_id_locked(struct sqlite_store *s, const char *id, store_session_fn cb, void *userdata) {
        sqlite3_stmt *st = store_stmt(s, STMT_SESSION_BY_ID);

        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        return stmt_each(s, st, false, cb, userdata, true);
}


static int sessions_each_locked(struct sqlite_store *s, const struct store_filter *f, store_session_fn cb, void *userdata) {
        sqlite3_stmt *st = store_stmt(s, f->live_only ? STMT_SESSIONS_LIVE : STMT_SESSIONS_ALL);

        sqlite3_bind_int64(st, 1, f->after_rowid);
        return stmt_each(s, st, f->light, cb, userdata, false);
}


static int sessions_ended_of_user_locked(struct sqlite_store *s, const char *user_id, int64_t after_rowid,
                                         store_session_fn cb, void *userdata) {
        sqlite3_stmt *st = store_stmt(s, STMT_SESSIONS_USER_ENDED);

        sqlite3_bind_text(st, 1, user_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, after_rowid);
        return stmt_each(s, st, false, cb, userdata, false);
}



/* ---- audit ---------------------------------------------------------------- */

/* ---- retention and maintenance -------------------------------------------- */

/* A purge runs at once, inside the open unit's transaction: it returns how
 * many rows went, and it becomes durable (or is lost) with that unit. */
static int purge(struct sqlite_store *s, int which, int64_t before, int limit, const char *what) {
        sqlite3_stmt *st;
        int r = 0;

        if (!in_sql_transaction(s))
                r = stmt_done(s, store_stmt(s, STMT_BEGIN), "BEGIN");
        if (r >= 0) {
                st = store_stmt(s, which);
                sqlite3_bind_int64(st, 1, before);
                sqlite3_bind_int(st, 2, limit);
                r = stmt_done(s, st, what);
                if (r >= 0)
                        r = sqlite3_changes(s->db);
        }
        return r;
}

static int purge_sessions_locked(struct sqlite_store *s, int64_t before, int limit) {
        return purge(s, STMT_PURGE_SESSIONS, before, limit, "purging ended sessions");
}

static int purge_audit_locked(struct sqlite_store *s, int64_t before, int limit) {
        return purge(s, STMT_PURGE_AUDIT, before, limit, "purging audit rows");
}

static int checkpoint_locked(struct sqlite_store *s) {
        int rc;

        if (s->memory)
                return 0;
        rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        return rc == SQLITE_OK ? 0 : store_fail(s, rc, "checkpoint");
}


static int quick_check_locked(struct sqlite_store *s, struct store_maintenance *ret);

static int maintain_locked(struct sqlite_store *s, struct store_maintenance *ret) {
        int rc, log_pages = 0, ckpt = 0, r;

        assert(sqlite3_get_autocommit(s->db));
        rc = exec_simple(s->db, "PRAGMA optimize");
        if (rc != SQLITE_OK)
                return store_fail(s, rc, "PRAGMA optimize");
        if (!s->memory) {
                rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log_pages, &ckpt);
                if (rc != SQLITE_OK && rc != SQLITE_BUSY)
                        return store_fail(s, rc, "checkpoint");
        }
        r = quick_check_locked(s, ret); /* clears *ret first */
        ret->pages_compacted = ckpt;
        return r;
}


static int count_sessions_locked(struct sqlite_store *s, bool ended, int64_t *ret) {
        int rc = query_int(s->db,
                           ended ? "SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL"
                                 : "SELECT count(*) FROM sessions WHERE ended_at IS NULL",
                           ret);
        return rc == SQLITE_OK ? 0 : store_fail(s, rc, "counting sessions");
}


/* ---- queries for operators ------------------------------------------------- */

static int sqlite_reader_open(const char *path, struct store **ret) {
        struct sqlite_store *s;
        char *uri;
        int rc, r;

        assert(path && ret);
        s = store_alloc();
        if (!s)
                return -ENOMEM;
        s->path = strdup(path);
        uri = path_to_uri(path, "mode=ro");
        if (!s->path || !uri || asprintf(&s->locator, "sqlite:%s", path) < 0) {
                s->locator = NULL;
                free(uri);
                sqlite_close(&s->base);
                return -ENOMEM;
        }
        rc = sqlite3_open_v2(uri, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL);
        free(uri);
        if (rc != SQLITE_OK) {
                r = store_fail(s, rc, "opening a reader");
                sqlite_close(&s->base);
                return r;
        }
        sqlite3_extended_result_codes(s->db, 0);
        sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
        *ret = &s->base;
        return 0;
}

/* Prepares an ad-hoc statement (operators' queries are rare: not kept). */
static int query_prepare(struct sqlite_store *s, const char *sql, sqlite3_stmt **ret) {
        int rc = sqlite3_prepare_v2(s->db, sql, -1, ret, NULL);

        return rc == SQLITE_OK ? 0 : store_fail(s, rc, "preparing a query");
}

/* One query of the audit. part: AUDIT_ALL the filter as it is (newest
 * first, or oldest first from the start); for a page after (a, b), oldest
 * first, AUDIT_SAME_TIME the rows at time a after id b, then AUDIT_LATER
 * those after time a: two index seeks, where one condition on (time, id)
 * would step over every row of second a (a burst writes thousands).
 *
 * Each part has one lower bound on time, the tighter of `since` and the
 * cursor's: given both (time >= since AND time > a), SQLite seeks on one of
 * them and checks the other on every row, and it sought on since (0 by
 * default) and stepped over every row older than the cursor: 16 to 28 ms
 * a page on 500,000 rows. */
enum { AUDIT_ALL, AUDIT_SAME_TIME, AUDIT_LATER };

/* The condition on time of a part and its value: one lower bound. */
static const char *audit_time_condition(const struct store_audit_filter *f, int part, int64_t *value) {
        if (part == AUDIT_SAME_TIME) {
                *value = f->after_time;
                return "time = ? AND id > ?";
        }
        if (part == AUDIT_LATER && f->after_time >= f->since) {
                *value = f->after_time;
                return "time > ?";
        }
        *value = f->since;
        return "time >= ?";
}

static int audit_query(struct sqlite_store *s, const struct store_audit_filter *f, int part, unsigned limit,
                       store_audit_fn cb, void *userdata, unsigned *n) {
        char sql[320];
        sqlite3_stmt *st = NULL;
        const char *cond;
        int64_t bound;
        int rc, r, i = 1;

        if (part == AUDIT_SAME_TIME && f->after_time < f->since)
                return 0; /* second a is before `since` */
        cond = audit_time_condition(f, part, &bound);
        snprintf(sql, sizeof sql, "SELECT %s FROM audit WHERE %s%s%s ORDER BY %s LIMIT ? OFFSET ?",
                 f->keys_only ? "id, time, NULL, NULL, NULL, NULL" : "id, time, kind, user_id, session_id, detail",
                 cond, f->user_id ? " AND user_id = ?" : "", f->kind ? " AND kind = ?" : "",
                 f->ascending ? "time, id" : "time DESC, id DESC");
        r = query_prepare(s, sql, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, i++, bound);
        if (part == AUDIT_SAME_TIME)
                sqlite3_bind_int64(st, i++, f->after_id);
        if (f->user_id)
                sqlite3_bind_text(st, i++, f->user_id, -1, SQLITE_STATIC);
        if (f->kind)
                sqlite3_bind_text(st, i++, f->kind, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, i++, limit);
        sqlite3_bind_int64(st, i, f->offset);
        r = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct store_audit_row row = {
                        .id = sqlite3_column_int64(st, 0),
                        .time = sqlite3_column_int64(st, 1),
                        .kind = column_text(st, 2),
                        .user_id = column_text(st, 3),
                        .session_id = column_text(st, 4),
                        .detail = column_text(st, 5),
                };
                if (!row.kind)
                        row.kind = "";
                (*n)++;
                r = cb(&row, userdata);
                if (r != 0)
                        break;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = store_fail(s, rc, "reading audit rows");
        sqlite3_finalize(st);
        return r;
}

static int audit_each_locked(struct sqlite_store *s, const struct store_audit_filter *f, store_audit_fn cb, void *userdata) {
        unsigned n = 0;
        int r;

        if (!f->ascending)
                return audit_query(s, f, AUDIT_ALL, f->limit, cb, userdata, &n);
        r = audit_query(s, f, AUDIT_SAME_TIME, f->limit, cb, userdata, &n);
        if (r == 0 && n < f->limit)
                r = audit_query(s, f, AUDIT_LATER, f->limit - n, cb, userdata, &n);
        return r;
}


static int quick_check_locked(struct sqlite_store *s, struct store_maintenance *ret) {
        sqlite3_stmt *st = NULL;
        int rc, r;

        memset(ret, 0, sizeof *ret);
        r = query_prepare(s, "PRAGMA quick_check", &st);
        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                r = store_fail(s, rc, "quick_check");
                sqlite3_finalize(st);
                return r;
        }
        snprintf(ret->message, sizeof ret->message, "%s", (const char *)sqlite3_column_text(st, 0));
        ret->ok = strcmp(ret->message, "ok") == 0;
        sqlite3_finalize(st);
        return 0;
}


static int probe_locked(struct sqlite_store *s) {
        int64_t v;
        int rc = query_int(s->db, "SELECT max(row) FROM sessions", &v);

        return rc == SQLITE_OK ? 0 : store_fail(s, rc, "probing the database");
}


static int count_created_locked(struct sqlite_store *s, int64_t since, int64_t bucket, uint64_t *counts, size_t n) {
        sqlite3_stmt *st = NULL;
        int rc, r;

        assert(bucket > 0);
        memset(counts, 0, n * sizeof *counts);
        r = query_prepare(s,
                          "SELECT (created_at - ?1) / ?2, count(*) - sum(end_reason IS 'rotated') FROM sessions "
                          "WHERE created_at >= ?1 GROUP BY 1",
                          &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, since);
        sqlite3_bind_int64(st, 2, bucket);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                int64_t b = sqlite3_column_int64(st, 0), c = sqlite3_column_int64(st, 1);

                if (b >= 0 && (uint64_t)b < n && c > 0)
                        counts[b] = (uint64_t)c;
        }
        r = rc == SQLITE_DONE ? 0 : store_fail(s, rc, "counting created sessions");
        sqlite3_finalize(st);
        return r;
}


static int ended_durations_locked(struct sqlite_store *s, store_value_fn cb, void *userdata) {
        sqlite3_stmt *st = NULL;
        int rc, r;

        r = query_prepare(s,
                          "SELECT max(ended_at - created_at, 0) AS d FROM sessions "
                          "WHERE ended_at IS NOT NULL AND end_reason IS NOT 'rotated' ORDER BY d",
                          &st);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                if ((r = cb(sqlite3_column_int64(st, 0), userdata)) != 0)
                        break;
        if (r == 0 && rc != SQLITE_DONE)
                r = store_fail(s, rc, "reading session durations");
        sqlite3_finalize(st);
        return r;
}


static int end_reasons_locked(struct sqlite_store *s, store_group_fn cb, void *userdata) {
        sqlite3_stmt *st = NULL;
        int rc, r;

        r = query_prepare(s,
                          "SELECT end_reason, count(*) FROM sessions WHERE ended_at IS NOT NULL "
                          "GROUP BY end_reason ORDER BY end_reason",
                          &st);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                if ((r = cb(column_text(st, 0), sqlite3_column_int64(st, 1), userdata)) != 0)
                        break;
        if (r == 0 && rc != SQLITE_DONE)
                r = store_fail(s, rc, "counting end reasons");
        sqlite3_finalize(st);
        return r;
}


static int optimize_locked(struct sqlite_store *s) {
        int rc;

        assert(sqlite3_get_autocommit(s->db));
        rc = exec_simple(s->db, "PRAGMA analysis_limit = 1000; PRAGMA optimize");
        return rc == SQLITE_OK ? 0 : store_fail(s, rc, "PRAGMA optimize");
}


static int checkpoint_nowait_locked(struct sqlite_store *s) {
        int rc;

        if (s->memory)
                return 0;
        assert(sqlite3_get_autocommit(s->db));
        sqlite3_busy_timeout(s->db, 0);
        rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
                return -EBUSY;
        return rc == SQLITE_OK ? 0 : store_fail(s, rc, "checkpoint");
}

/* Deep cleanup's maintenance, a step at a time on the loop: PRAGMA optimize
 * (bounded) on the first step, then a checkpoint that truncates the WAL
 * without waiting for a reader in its way (-EBUSY: try again later). */
static int maintain_step_locked(struct sqlite_store *s, bool first) {
        int r = 0;

        if (first)
                r = optimize_locked(s);
        if (r >= 0)
                r = checkpoint_nowait_locked(s);
        return r;
}

/* ---- the maintenance step off the loop ------------------------------------------ */

/* store_maintain_start(): PRAGMA optimize (bounded) on the loop, then the
 * truncating checkpoint in the thread pool on a connection of its own.
 * There it first copies what is left with a PASSIVE checkpoint, which
 * takes no lock a commit needs, so that the TRUNCATE after it has little
 * or nothing left to copy and sync while it holds the writer lock (the
 * writer thread's commits wait for that lock meanwhile). It never waits
 * for a reader: a busy timeout of 0 and a few quick tries, then -EBUSY for
 * the caller to try again later, as store_maintain_step() does. The work
 * holds a copy of the path and, to say it is done, the checkpointer's
 * count, which store_close() waits for (its own truncating checkpoint
 * would otherwise find the work's in its way). */
#define MAINTAIN_TRUNCATE_TRIES 10
#define MAINTAIN_TRUNCATE_RETRY_US 2000

struct maintain_work {
        uv_work_t work;
        char *path; /* NULL: in memory, nothing to truncate */
        struct checkpointer *ckpt; /* counts it (with path) */
        int result;
        store_maintain_fn done;
        void *userdata;
};

static int truncate_checkpoint(sqlite3 *db) {
        int rc, log = 0, done = 0;

        /* A connection learns that the database is in WAL mode when it
         * first reads it. A PASSIVE checkpoint that finds another one
         * running (SQLITE_BUSY) leaves its copying to the TRUNCATE. */
        rc = exec_simple(db, "SELECT count(*) FROM sqlite_master");
        if (rc != SQLITE_OK)
                return rc;
        rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
                return rc;
        for (int i = 0; i < MAINTAIN_TRUNCATE_TRIES; i++) {
                if (i > 0)
                        usleep(MAINTAIN_TRUNCATE_RETRY_US);
                rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
                if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
                        break;
        }
        return rc;
}

static void maintain_count(struct checkpointer *c, int delta) {
        pthread_mutex_lock(&c->lock);
        c->maintaining += delta;
        pthread_cond_broadcast(&c->maintained);
        pthread_mutex_unlock(&c->lock);
}

static void maintain_wait(struct sqlite_store *s) {
        struct checkpointer *c = &s->ckpt;

        if (!c->started)
                return;
        pthread_mutex_lock(&c->lock);
        while (c->maintaining > 0)
                pthread_cond_wait(&c->maintained, &c->lock);
        pthread_mutex_unlock(&c->lock);
}

static void maintain_work(uv_work_t *w) {
        struct maintain_work *m = w->data;
        sqlite3 *db = NULL;
        int rc;

        if (!m->path)
                return;
        rc = sqlite3_open_v2(m->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc == SQLITE_OK) {
                sqlite3_busy_timeout(db, 0);
                rc = truncate_checkpoint(db);
        }
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
                m->result = -EBUSY;
        else if (rc != SQLITE_OK) {
                log_error("Store %s: checkpoint failed: %s", m->path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
                m->result = errno_from_sqlite(rc);
        }
        sqlite3_close(db);
        maintain_count(m->ckpt, -1);
}

static void maintain_after(uv_work_t *w, int status) {
        struct maintain_work *m = w->data;

        m->done(status < 0 && m->result == 0 ? -ECANCELED : m->result, m->userdata);
        free(m->path);
        free(m);
}

static int maintain_start_locked(struct sqlite_store *s, bool first, store_maintain_fn done, void *userdata) {
        struct maintain_work *m;
        int r = first ? optimize_locked(s) : 0;

        if (r < 0)
                return r;
        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        *m = (struct maintain_work){.done = done, .userdata = userdata};
        m->work.data = m;
        if (s->ckpt.started) {
                m->path = strdup(s->path);
                if (!m->path) {
                        free(m);
                        return -ENOMEM;
                }
                m->ckpt = &s->ckpt;
                maintain_count(m->ckpt, +1);
        }
        r = uv_queue_work(s->base.loop, &m->work, maintain_work, maintain_after);
        if (r < 0) {
                if (m->ckpt)
                        maintain_count(m->ckpt, -1);
                free(m->path);
                free(m);
        }
        return r;
}

static int64_t file_size(const char *path, const char *suffix) {
        char p[PATH_MAX + 8];
        struct stat st;

        snprintf(p, sizeof p, "%s%s", path, suffix);
        return stat(p, &st) == 0 ? (int64_t)st.st_size : 0;
}

static int64_t size_of(struct sqlite_store *s) {
        if (s->memory)
                return 0;
        return file_size(s->path, "") + file_size(s->path, "-wal");
}

/* ---- the table ------------------------------------------------------------------ */

static struct sqlite_store *sq(struct store *b) {
        assert(b->backend == &store_backend_sqlite);
        return container_of(b, struct sqlite_store, base);
}

static const struct sqlite_store *sq_const(const struct store *b) {
        assert(b->backend == &store_backend_sqlite);
        return container_of(b, const struct sqlite_store, base);
}

static const char *sqlite_name(const struct store *b) { return sq_const(b)->path; }
static const char *sqlite_locator(const struct store *b) { return sq_const(b)->locator; }
static bool sqlite_is_memory(const struct store *b) { return sq_const(b)->memory; }

static int sqlite_set_synchronous(struct store *b, const char *synchronous) {
        const char *mode = synchronous_value(synchronous);

        return mode ? set_synchronous_locked(sq(b), mode) : -EINVAL;
}

static int sqlite_uow_apply(struct store *b, struct store_uow *u) { return uow_apply(sq(b), u); }
static int sqlite_uow_commit(struct store *b, struct store_uow *u) { return uow_commit(sq(b), u); }
static void sqlite_rollback(struct store *b) { sql_rollback(sq(b)); }

static int sqlite_allocate_key(struct store *b, int64_t *ret) {
        struct sqlite_store *s = sq(b);

        assert(s->next_key > 0);
        *ret = s->next_key++;
        return 0;
}

static int sqlite_session_get_switches(struct store *b, int64_t rowid, char **ret) {
        return session_get_switches_locked(sq(b), rowid, ret);
}

static int sqlite_session_get_sync(struct store *b, int64_t rowid, int64_t *version, char **data, size_t *size) {
        return session_get_sync_locked(sq(b), rowid, version, data, size);
}

static int sqlite_session_by_rowid(struct store *b, int64_t rowid, store_session_fn cb, void *userdata) {
        return session_by_rowid_locked(sq(b), rowid, cb, userdata);
}

static int sqlite_session_by_hash(struct store *b, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb,
                                  void *userdata) {
        return session_by_hash_locked(sq(b), hash, cb, userdata);
}

static int sqlite_session_by_id(struct store *b, const char *id, store_session_fn cb, void *userdata) {
        return session_by_id_locked(sq(b), id, cb, userdata);
}

static int sqlite_sessions_each(struct store *b, const struct store_filter *f, store_session_fn cb,
                                void *userdata) {
        return sessions_each_locked(sq(b), f, cb, userdata);
}

static int sqlite_sessions_ended_of_user_after(struct store *b, const char *user_id, int64_t after_rowid,
                                              store_session_fn cb, void *userdata) {
        return sessions_ended_of_user_locked(sq(b), user_id, after_rowid, cb, userdata);
}

static int sqlite_purge_sessions(struct store *b, int64_t before, int limit) {
        return purge_sessions_locked(sq(b), before, limit);
}

static int sqlite_purge_audit(struct store *b, int64_t before, int limit) {
        return purge_audit_locked(sq(b), before, limit);
}

static int sqlite_maintain(struct store *b, struct store_maintenance *ret) { return maintain_locked(sq(b), ret); }
static int sqlite_maintain_step(struct store *b, bool first) { return maintain_step_locked(sq(b), first); }
static int sqlite_maintain_start(struct store *b, bool first, store_maintain_fn done, void *userdata) {
        return maintain_start_locked(sq(b), first, done, userdata);
}
static int sqlite_pace(struct store *b) { return pace_locked(sq(b)); }
static unsigned long long sqlite_checkpoint_runs(struct store *b) { return checkpoint_runs(sq(b)); }
static int64_t sqlite_size(struct store *b) { return size_of(sq(b)); }

static int sqlite_count_sessions(struct store *b, bool ended, int64_t *ret) {
        return count_sessions_locked(sq(b), ended, ret);
}

static int sqlite_audit_each(struct store *b, const struct store_audit_filter *f, store_audit_fn cb,
                             void *userdata) {
        return audit_each_locked(sq(b), f, cb, userdata);
}

static int sqlite_check_integrity(struct store *b, struct store_maintenance *ret) {
        return quick_check_locked(sq(b), ret);
}

static int sqlite_probe(struct store *b) { return probe_locked(sq(b)); }

static int sqlite_count_created(struct store *b, int64_t since, int64_t bucket, uint64_t *counts, size_t n) {
        return count_created_locked(sq(b), since, bucket, counts, n);
}

static int sqlite_ended_durations(struct store *b, store_value_fn cb, void *userdata) {
        return ended_durations_locked(sq(b), cb, userdata);
}

static int sqlite_end_reasons(struct store *b, store_group_fn cb, void *userdata) {
        return end_reasons_locked(sq(b), cb, userdata);
}

const struct store_backend store_backend_sqlite = {
        .name = "sqlite",
        .open = sqlite_open,
        .close = sqlite_close,
        .reader_open = sqlite_reader_open,
        .name_of = sqlite_name,
        .locator = sqlite_locator,
        .is_memory = sqlite_is_memory,
        .set_synchronous = sqlite_set_synchronous,
        .uow_apply = sqlite_uow_apply,
        .uow_commit = sqlite_uow_commit,
        .rollback = sqlite_rollback,
        .allocate_key = sqlite_allocate_key,
        .session_get_switches = sqlite_session_get_switches,
        .session_get_sync = sqlite_session_get_sync,
        .session_by_rowid = sqlite_session_by_rowid,
        .session_by_hash = sqlite_session_by_hash,
        .session_by_id = sqlite_session_by_id,
        .sessions_each = sqlite_sessions_each,
        .sessions_ended_of_user_after = sqlite_sessions_ended_of_user_after,
        .purge_sessions = sqlite_purge_sessions,
        .purge_audit = sqlite_purge_audit,
        .maintain = sqlite_maintain,
        .maintain_step = sqlite_maintain_step,
        .maintain_start = sqlite_maintain_start,
        .pace = sqlite_pace,
        .checkpoint_runs = sqlite_checkpoint_runs,
        .size = sqlite_size,
        .count_sessions = sqlite_count_sessions,
        .audit_each = sqlite_audit_each,
        .check_integrity = sqlite_check_integrity,
        .probe = sqlite_probe,
        .count_created = sqlite_count_created,
        .ended_durations = sqlite_ended_durations,
        .end_reasons = sqlite_end_reasons,
};
