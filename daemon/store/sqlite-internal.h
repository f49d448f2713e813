/* The SQLite backend's own header: what its files share (sqlite.c,
 * sqlite-uow.c, sqlite-read.c, sqlite-maint.c), never included outside
 * daemon/store/. See sqlite.c for the design of the backend as a whole.
 *
 * The backend is one concept per file: opening, the schema, its
 * migrations and the backend table (sqlite.c); the prepared statements and
 * the unit of work, applied and committed (sqlite-uow.c); reads, listings,
 * audit and analytics (sqlite-read.c); room on disk, WAL checkpoints,
 * pacing, purges and maintenance (sqlite-maint.c). Functions named
 * *_locked run with s->lock held (backend.h says who holds it when).
 */
#pragma once

#include "backend.h"
#include "store.h"

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
/* Checkpoints run on a thread of their own (see sqlite-maint.c): it
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
        STMT_SESSION_SWITCH_READ,
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
#define SESSION_COLUMNS                                                                         \
        "row, id, token_hash, user_id, platform_id, created_at * 1000 + created_at_ms, "        \
        "last_activity * 1000 + last_activity_ms, renewed_at * 1000 + renewed_at_ms, "          \
        "ended_at * 1000 + ended_at_ms, end_reason, fp_user_agent, fp_ip, fp_accept_language, " \
        "fp_accept_encoding, ip, user_agent, sync_version"

struct checkpointer {
        sqlite3 *db; /* the thread's own connection */
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool started, wanted, running, stop;
        int backfilled; /* WAL pages copied by the thread's last pass */
        unsigned long long runs;
        unsigned maintaining;      /* store_maintain_start() works in the thread pool (close waits) */
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
         * see sqlite_space_update(). Under lock. */
        int ckpt_pages, tail_pages, hard_pages;
        int page_size;
        unsigned commits_since_space;
        int64_t next_key; /* the next session row: keys are ours to give */
};

/* For _cleanup_(): both take NULL. */
static inline void sqlite_finalizep(sqlite3_stmt **st) {
        sqlite3_finalize(*st);
}
static inline void sqlite_closep(sqlite3 **db) {
        sqlite3_close(*db);
}

/* Statements and the unit of work (sqlite-uow.c). */
int sqlite_errno(int rc);
int sqlite_fail(struct sqlite_store *s, int rc, const char *what);
sqlite3_stmt *sqlite_stmt(struct sqlite_store *s, int which);
int sqlite_stmt_done(struct sqlite_store *s, sqlite3_stmt *st, const char *what);
int sqlite_exec_simple(sqlite3 *db, const char *sql);
int sqlite_query_int(sqlite3 *db, const char *sql, int64_t *ret);
int sqlite_prepare_all(struct sqlite_store *s);
bool sqlite_in_transaction(const struct sqlite_store *s);
void sqlite_rollback_locked(struct sqlite_store *s);
int sqlite_unit_apply(struct sqlite_store *s, struct store_uow *u);
int sqlite_unit_commit(struct sqlite_store *s, struct store_uow *u);

/* Reads (sqlite-read.c). */
int sqlite_max_row_key_locked(struct sqlite_store *s, int64_t *ret);
int sqlite_session_get_switches_locked(struct sqlite_store *s, int64_t row_key, char **ret);
int sqlite_session_read_sync_locked(struct sqlite_store *s, struct store_sync_read *out);
int sqlite_session_by_row_key_locked(struct sqlite_store *s, int64_t row_key, store_session_fn cb, void *userdata);
int sqlite_session_by_hash_locked(struct sqlite_store *s, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb,
                                  void *userdata);
int sqlite_session_by_id_locked(struct sqlite_store *s, const char *id, store_session_fn cb, void *userdata);
int sqlite_sessions_each_locked(struct sqlite_store *s, const struct store_filter *f, store_session_fn cb,
                                void *userdata);
int sqlite_sessions_ended_of_user_locked(struct sqlite_store *s, const char *user_id, int64_t after_row_key,
                                         store_session_fn cb, void *userdata);
int sqlite_count_sessions_locked(struct sqlite_store *s, bool ended, int64_t *ret);
int sqlite_audit_each_locked(struct sqlite_store *s, const struct store_audit_filter *f, store_audit_fn cb,
                             void *userdata);
int sqlite_quick_check_locked(struct sqlite_store *s, struct store_maintenance *ret);
int sqlite_probe_locked(struct sqlite_store *s);
int sqlite_count_created_locked(struct sqlite_store *s, int64_t since, int64_t bucket, uint64_t *counts, size_t n);
int sqlite_ended_durations_locked(struct sqlite_store *s, store_value_fn cb, void *userdata);
int sqlite_end_reasons_locked(struct sqlite_store *s, store_group_fn cb, void *userdata);
void sqlite_row_from_stmt(sqlite3_stmt *st, struct store_session *row, bool light);

/* Room on disk, checkpoints, purges, maintenance (sqlite-maint.c). */
void sqlite_space_update(struct sqlite_store *s);
int sqlite_checkpointer_start(struct sqlite_store *s);
void sqlite_checkpointer_stop(struct sqlite_store *s);
int sqlite_pace_locked(struct sqlite_store *s);
unsigned long long sqlite_checkpoint_count(struct sqlite_store *s);
int sqlite_purge_sessions_locked(struct sqlite_store *s, int64_t before, int limit);
int sqlite_purge_audit_locked(struct sqlite_store *s, int64_t before, int limit);
int sqlite_checkpoint_locked(struct sqlite_store *s);
int sqlite_maintain_locked(struct sqlite_store *s, struct store_maintenance *ret);
int sqlite_maintain_step_locked(struct sqlite_store *s, bool first);
void sqlite_maintain_wait(struct sqlite_store *s);
int sqlite_maintain_start_locked(struct sqlite_store *s, bool first, store_maintain_fn done, void *userdata);
int64_t sqlite_size_of(struct sqlite_store *s);
