/* The session store: the backend interface, in the engine's own verbs.
 *
 * Everything the daemon keeps goes through these functions: session rows
 * (keys the store gives), audit rows, units of work, reads for listings,
 * audit, analytics and ended-session lookups, retention purges, maintenance
 * and health. Nothing above this folder writes SQL or knows of WAL files,
 * checkpoints, pragmas or row numbers: those are the backends' business.
 * store.c runs what they share (the unit of work and its writer thread)
 * and dispatches the rest through a table of the backend's functions
 * (backend.h) chosen at open: sqlite.c for one host, postgres.c for a
 * fleet (DESIGN 8).
 *
 * The store does not decide policy. It does not know what "expired" means;
 * the engine tells it which row to end, when and why.
 *
 * Writes are not run when they are made: they are recorded in the open
 * unit of work, which store_submit() hands as a whole to the store's writer
 * thread and commits in one transaction while the loop goes on; a callback
 * on the loop says how it went. Reads see every write made before them
 * (they wait for the unit in flight, at most one commit). See store.c.
 *
 * Functions return 0 (or a positive count where documented) or a negative
 * errno: -ENOSPC for a full disk, -EIO for other storage failures, -ENOENT
 * for a missing row.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "token.h"

#include "store-schema.h" /* STORE_SCHEMA_VERSION, shared with sessionctl db (lib/common) */

struct store;

/* One session row. Strings are borrowed: valid during the callback (or the
 * call) that hands the row out. Its times are Unix milliseconds, like every
 * session time at this interface (audit times and the platform switch
 * history are Unix seconds). */
struct store_session {
        int64_t row_key;
        const char *id; /* public id, TOKEN_ID_STRING_LEN characters */
        uint8_t token_hash[TOKEN_HASH_BYTES];
        const char *user_id;
        const char *platform_id; /* NULL: none */
        int64_t created_at;
        int64_t last_activity;
        int64_t renewed_at;
        int64_t ended_at;       /* 0: live */
        const char *end_reason; /* NULL while live */
        /* Fingerprint hashes, 0 when none was recorded. */
        uint64_t fp_user_agent;
        uint64_t fp_ip;
        uint64_t fp_accept_language;
        uint64_t fp_accept_encoding;
        const char *ip;         /* for operators; NULL when unknown */
        const char *user_agent; /* for operators; NULL when unknown */
        int64_t sync_version;
};

/* Return 0 to go on, a positive value to stop (returned by the iterator),
 * a negative errno to abort (returned too). */
typedef int (*store_session_fn)(const struct store_session *row, void *userdata);

struct store_options {
        /* PostgreSQL (DESIGN 8): a libpq connection string or URI; NULL
         * for SQLite at `path`. */
        const char *postgres_url;
        /* A keyed check value of the token key (text, no secret): a
         * shared store keeps the first one it is given and refuses to
         * open (-EKEYREJECTED) for a daemon whose value differs. NULL: no
         * check (SQLite keeps its key beside the database). */
        const char *key_check;
        /* Path of the database file; NULL or ":memory:" for a store in memory. */
        const char *path;
        /* PRAGMA synchronous: "normal", "full", "extra" or "off". */
        const char *synchronous;
        /* SQLite VFS name, NULL for the default (tests inject faults with it). */
        const char *vfs;
        /* The loop that hears of commits; NULL: no writer thread, a
         * submitted unit is committed at once by the caller. */
        uv_loop_t *loop;
        /* Loading (optional): store_open() tells `reserve` (may be NULL) how
         * many live sessions there are, then hands each to `load` in row_key
         * order, light (no ip and user agent). A negative return of either
         * makes store_open() fail with it. On a database that exists the
         * loading reads a read-only connection while PRAGMA quick_check runs
         * on another one in a thread, so start-up takes the longer of the
         * two, not their sum; a database that fails the check is refused
         * (whatever was loaded is then the caller's to drop). */
        int (*reserve)(uint64_t live_sessions, void *userdata);
        store_session_fn load;
        void *load_userdata;
};

/* Opens the store. A file that exists is first opened read-only and checked
 * (header, schema version, PRAGMA quick_check) and loaded (see
 * store_options); only a sound database is then opened read-write, switched
 * to WAL and migrated. A missing file is created with mode 0600. Every
 * refusal is logged with the file name, and a refused file is never written. -EPROTO: the database is newer than this
 * binary; -EBADMSG: not a database, corrupt, or not a sessiond database. */
int store_open(const struct store_options *o, struct store **ret);
void store_close(struct store *s);

/* Names the store, for logs: the database file (":memory:" in memory), or
 * the PostgreSQL connection string with its password as ***. */
const char *store_name(const struct store *s);
/* What store_reader_open() opens: "sqlite:<path>" or "postgresql:<url>"
 * (may hold a password: never log it). */
const char *store_locator(const struct store *s);
bool store_is_memory(const struct store *s);

/* Applies a new PRAGMA synchronous (reload). */
int store_set_synchronous(struct store *s, const char *synchronous);

/* ---- the unit of work ----------------------------------------------------- */

/* result: 0 when the unit is durable, or a negative errno (-ENOSPC for a
 * full disk) when it was lost (nothing of it is in the store). */
typedef void (*store_commit_fn)(int result, void *userdata);
/* Hands the open unit of work to the writer thread (one transaction); fn
 * runs on the loop when it is committed or lost. At most one unit is in
 * flight: wait for fn before submitting again. Without a writer (no loop
 * given) the unit is committed here and fn runs before this returns.
 * Returns 0, or -ENOMEM (nothing was handed: the unit stays open). */
int store_submit(struct store *s, store_commit_fn fn, void *userdata);
/* True while a submitted unit has not had its callback. */
bool store_busy(struct store *s);
/* Blocks until the unit in flight is done and runs its callback (now). */
void store_wait(struct store *s);
/* True when the open unit holds writes (or reads after its commit). */
bool store_has_pending(const struct store *s);
/* Reads after a commit, so that the loop need not wait for a read. The
 * row is read by the writer once the open unit has committed (after its
 * writes, so the read sees them and everything committed before), in the
 * same turn of the writer: a unit handed off later is not in it. In the
 * unit's commit callback (and until the next unit is done)
 * store_read_row() hands the row read to cb: 0, cb's value, -ENOENT when
 * the row is not there, -EAGAIN when it was not read (the unit failed, the
 * read failed, or it was not asked for): then read it the usual way.
 * store_read_after: -EOPNOTSUPP when the backend reads only on the loop
 * (SQLite, whose reads never wait for a network). */
int store_read_after(struct store *s, int64_t row_key);
int store_read_row(struct store *s, int64_t row_key, store_session_fn cb, void *userdata);
/* The same by token hash (every row of that hash, in row order, like
 * store_session_by_hash). */
int store_read_after_hash(struct store *s, const uint8_t hash[TOKEN_HASH_BYTES]);
/* A session's sync state read after the open unit's commit, into *out,
 * which the caller keeps until that unit is done (its commit callback):
 * out->result is then 0 (version, data: malloc'ed or NULL, size, and
 * whether the row is live, or else its end reason), -ENOENT (no such row),
 * or -EAGAIN when it was not read (the unit failed). Every backend: the
 * writer reads it after any commit. One read answers all of it, so that a
 * write that waits for it needs no second read (the row's end, on the
 * loop). */
struct store_sync_read {
        int64_t row_key;
        int result;
        int64_t version;
        char *data;
        size_t size;
        bool live;           /* not ended */
        char end_reason[32]; /* when not live ("" when the row has none) */
};
int store_read_sync_after(struct store *s, struct store_sync_read *out);
/* The same read now, on the calling thread (it waits like every read):
 * 0 (out filled as above, out->result untouched), -ENOENT or the error. */
int store_session_read_sync(struct store *s, struct store_sync_read *out);
int store_read_row_hash(struct store *s, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb, void *userdata);
/* Commits the open unit on the calling thread (nothing may be in flight):
 * 0, or the negative errno of the failure (the unit is then lost). */
int store_commit(struct store *s);
/* Drops the open unit (what it ran already is rolled back). */
void store_rollback(struct store *s);

/* Session keys (struct store_session.row_key) are given by the store. */
int store_allocate_key(struct store *s, int64_t *ret);

/* ---- sessions ------------------------------------------------------------ */

/* The writes below go into the open unit of work (they fail only with
 * -ENOMEM; a row that is not there makes the unit fail when it runs).
 * Inserts a live session (ended_at and end_reason are ignored) with its
 * sync state, as row->row_key (from store_allocate_key()). */
int store_session_insert(struct store *s, const struct store_session *row, const void *sync_data, size_t sync_size);
int store_session_set_activity(struct store *s, int64_t row_key, int64_t last_activity);
int store_session_set_renewed(struct store *s, int64_t row_key, int64_t renewed_at, int64_t last_activity);
int store_session_end(struct store *s, int64_t row_key, int64_t ended_at, const char *reason);
/* Records a client whose values changed: the fingerprint hashes and the
 * texts for operators that are given (0 or NULL: keep the stored one). */
int store_session_set_client(struct store *s, int64_t row_key, const struct store_session *client);
/* Rotation: copies a live session into row new_row_key with a new id, token
 * hash and last_activity (everything else, sync state included, is kept). */
int store_session_copy(struct store *s, int64_t from_row_key, int64_t new_row_key, const char *new_id,
                       const uint8_t token_hash[TOKEN_HASH_BYTES], int64_t last_activity);
/* Platform and the switch history (a JSON array of Unix times). */
int store_session_set_platform(struct store *s, int64_t row_key, const char *platform_id, const char *switches_json);
/* *ret is malloc'ed ("[]" when none). */
int store_session_get_switches(struct store *s, int64_t row_key, char **ret);
/* A platform switch under the per-hour limit, decided by the store when
 * the unit runs (store_session_switch_platform): on a shared store the
 * row is locked, so switches made on several daemons at once count each
 * other. Filled by the backend; read once the unit is done. */
enum store_switch_outcome {
        STORE_SWITCH_APPLIED, /* switched; `from` is the platform before */
        STORE_SWITCH_ALREADY, /* on that platform already: nothing written, nothing counted */
        STORE_SWITCH_REFUSED, /* max_per_hour switches in the last hour: retry_at */
        STORE_SWITCH_ENDED,   /* the session ended first: end_reason */
        STORE_SWITCH_GONE,    /* no such row (purged) */
};
#define STORE_PLATFORM_ID_MAX 128 /* as the engine checks (ENGINE_PLATFORM_ID_MAX) */
#define STORE_END_REASON_MAX 32
struct store_switch {
        int64_t now;          /* asked: Unix seconds, the switch's time and its audit row's */
        int64_t max_per_hour; /* asked */
        int applied;          /* 1: APPLIED (what the unit's NOTIFY and events go by) */
        enum store_switch_outcome outcome;
        int64_t retry_at;                      /* REFUSED: when one more switch fits (Unix seconds) */
        char from[STORE_PLATFORM_ID_MAX + 1];  /* APPLIED: "" when none */
        char end_reason[STORE_END_REASON_MAX]; /* ENDED */
};
/* Switches row_key to platform_id if fewer than sw->max_per_hour switches
 * happened in the hour before sw->now, and then (audit_user non-NULL)
 * writes the audit row "platform_switched" {"from", "to"} in the same
 * transaction. sw must stay until the unit is done. */
int store_session_switch_platform(struct store *s, int64_t row_key, const char *platform_id, const char *audit_user,
                                  const char *session_id, struct store_switch *sw);
/* The window of a switch history (store/switch.c): *fits when fewer than
 * max switches happened in the hour before now, then *next (malloc'ed) is
 * the history to store (the hour's times, sorted, and now); otherwise
 * *retry_at tells when one more fits. 0 or -ENOMEM. */
int store_switch_window(const char *history, int64_t now, int64_t max, bool *fits, char **next, int64_t *retry_at);
/* The audit detail of a switch, {"from","to"} ("from" left out when
 * empty or NULL): malloc'ed, NULL when out of memory. */
char *store_switch_audit_detail(const char *from, const char *to);
/* *data is malloc'ed and NUL-terminated (NULL when none); *size excludes the NUL. */
int store_session_get_sync(struct store *s, int64_t row_key, int64_t *version, char **data, size_t *size);
int store_session_set_sync(struct store *s, int64_t row_key, int64_t version, const void *data, size_t size);
/* Compare-and-set: writes version from + 1 and data only if the row's
 * version is still `from` when the unit runs. Other daemons write the same
 * rows (DESIGN 8), so a version read from the store may have moved by the
 * commit: then nothing is written and the unit's other writes stand. Once
 * the unit has run, *applied is 1 (written) or 0 (the version had moved,
 * or the row is gone); it must stay valid until the unit is done. */
int store_session_cas_sync(struct store *s, int64_t row_key, int64_t from, const void *data, size_t size, int *applied);

/* Lookups; the callback runs once when the row exists (else -ENOENT).
 * By token hash only ended rows are found: live sessions are looked up in
 * the engine's memory, and only ended rows have that index (see store.c).
 * (On PostgreSQL live rows are found too: there memory is a cache of the
 * fleet's sessions, and a token created on another daemon is looked up
 * here; postgres.c indexes every token hash.) */
int store_session_by_row_key(struct store *s, int64_t row_key, store_session_fn cb, void *userdata);
int store_session_by_hash(struct store *s, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb, void *userdata);
int store_session_by_id(struct store *s, const char *id, store_session_fn cb, void *userdata);

struct store_filter {
        bool live_only;        /* only rows with ended_at NULL */
        bool light;            /* skip ip and user_agent (loading at start) */
        int64_t after_row_key; /* only rows after this one (pages of a listing); 0: all */
};
/* Iterates over sessions in row_key order. Returns 0, or the callback's
 * positive stop value, or a negative errno. */
int store_sessions_each(struct store *s, const struct store_filter *f, store_session_fn cb, void *userdata);
/* The ended sessions of one user in row_key order (its live ones are in the
 * engine's memory); returns like store_sessions_each(). */
int store_sessions_ended_of_user(struct store *s, const char *user_id, store_session_fn cb, void *userdata);
/* The same, rows after after_row_key only. */
int store_sessions_ended_of_user_after(struct store *s, const char *user_id, int64_t after_row_key, store_session_fn cb,
                                       void *userdata);

/* ---- audit ---------------------------------------------------------------- */

/* detail_json: a JSON object as text. user_id, session_id may be NULL. */
int store_audit_insert(struct store *s, int64_t time, const char *kind, const char *user_id, const char *session_id,
                       const char *detail_json);

/* ---- retention and maintenance -------------------------------------------- */

/* Deletes up to `limit` ended sessions with ended_at < before (ms); returns
 * how many (>= 0). Uses the partial index on ended rows. Purges run at once, in
 * the open unit's transaction, and are durable with it. */
int store_purge_sessions(struct store *s, int64_t before, int limit);
/* Deletes up to `limit` audit rows with time < before; returns how many. */
int store_purge_audit(struct store *s, int64_t before, int limit);

struct store_maintenance {
        bool ok;                 /* the integrity check found nothing wrong */
        char message[256];       /* what it found otherwise */
        int64_t pages_compacted; /* pages the maintenance moved into place */
};
/* Full maintenance between units of work (nothing open, nothing in
 * flight): what the backend needs to stay fast and compact, then an
 * integrity check. Blocking: for tests and tools, not the loop. */
int store_maintain(struct store *s, struct store_maintenance *ret);
/* One step of the same maintenance that never waits for anybody (the deep
 * cleanup runs it on the loop, between units of work; `first` on the first
 * step of a run): 0 when done, -EBUSY when something was in the way and
 * the step should be tried again a little later. */
int store_maintain_step(struct store *s, bool first);
/* The same step without holding the loop for the heavy part: what is cheap
 * (SQLite: PRAGMA optimize, bounded, when `first`) runs here, the rest
 * (SQLite: the checkpoint that truncates the WAL, and its fsync) off the
 * loop, and done(result, userdata) then runs on the loop with what
 * store_maintain_step() would have returned (0, -EBUSY: try again later,
 * or the error). done never runs before this returns, except on a store
 * opened without a loop, where the step runs here in one piece. Call it
 * between units of work, one at a time. Returns 0 (done will run), or a
 * negative errno (it will not). The store may be closed before done
 * runs; done runs all the same (the work has nothing of the store's). */
typedef void (*store_maintain_fn)(int result, void *userdata);
int store_maintain_start(struct store *s, bool first, store_maintain_fn done, void *userdata);
/* For a writer of many rows (the cleanup), before each of its steps and
 * between units of work: 0 to go on, -EAGAIN to wait a little while the
 * backend catches up with what was written (see sqlite.c). */
int store_pace(struct store *s);
/* How many times the backend's background maintenance has run (tests). */
unsigned long long store_checkpoint_runs(struct store *s);
/* The room the store takes on disk, in bytes (0 in memory). */
int64_t store_size(struct store *s);

/* Statistics for health checks. */
int store_count_sessions(struct store *s, bool ended, int64_t *ret);

/* ---- queries for operators (audit listings, analytics, health) ------------
 * Read-only. They run on the loop, or on a reader opened with
 * store_reader_open() in a worker thread, where a query that reads every
 * row does not hold up the loop (the backend lets it read while the writer
 * writes). */

/* A read-only handle on the store at `locator` (store_locator() of an
 * open store, copied: the reader may outlive nothing but its locator), for
 * one thread; only the query functions below may be used on it;
 * store_close() closes it. */
int store_reader_open(const char *locator, struct store **ret);

struct store_audit_row {
        int64_t id;
        int64_t time;
        const char *kind;
        const char *user_id;    /* NULL: none */
        const char *session_id; /* NULL: none */
        const char *detail;     /* JSON object as text */
};
typedef int (*store_audit_fn)(const struct store_audit_row *row, void *userdata);
struct store_audit_filter {
        const char *user_id; /* NULL: all */
        const char *kind;    /* NULL: all */
        int64_t since;       /* rows with time >= since */
        unsigned limit;
        unsigned offset; /* skip the first `offset` rows of the order */
        /* Pages: oldest first, rows after (after_time, after_id) only. */
        bool ascending;
        int64_t after_time, after_id;
        bool keys_only; /* id and time only (the index covers them without filters) */
};
/* The newest `limit` rows matching, newest first. A callback's non-zero
 * return stops and is returned. */
int store_audit_each(struct store *s, const struct store_audit_filter *f, store_audit_fn cb, void *userdata);

/* A page read after a commit (page-read.c): what a listing or a re-read
 * of the cache needs from a shared store without a round trip on the
 * loop. Once the open unit has committed, the writer reads the page and
 * copies it into *out, which the caller keeps until that unit is done
 * (its commit callback): out->result is then 0 (rows or entries, their
 * strings owned by out), or -EAGAIN when it was not read (the unit
 * failed, or the read did). It sees every write committed so far, the
 * unit's own included. Several per unit; every backend (the writer runs
 * the backend's own reads). store_page_read_clear() frees what a read
 * left (and may be called on a zeroed one); not while its unit is open
 * or in flight. What it asks (kind and the fields of that kind) is the
 * caller's and stays as it was: its strings are borrowed until the unit
 * is done. */
enum store_page_kind {
        STORE_PAGE_SESSIONS, /* store_sessions_each(filter): up to max_rows rows */
        /* A user's page, in row order: the rows of row_keys (its live
         * sessions, which only the caller knows; sorted, > after_row_key),
         * and with filter.live_only false its ended rows after
         * filter.after_row_key, up to max_rows of those. A row in both
         * is there once. When the ended rows did not all fit (!complete),
         * the page stops at the last of them (`bound`): rows after it are
         * left out, whatever their kind. */
        STORE_PAGE_OF_USER,
        STORE_PAGE_BY_ID, /* the row of public id `id` (0 or 1 row) */
        STORE_PAGE_AUDIT, /* store_audit_each(audit), entries */
};
struct store_page_block;
struct store_page_read {
        /* asked */
        enum store_page_kind kind;
        struct store_filter filter;
        const char *user_id;
        const int64_t *row_keys; /* OF_USER */
        size_t n_row_keys;
        const char *id;
        size_t max_rows; /* > 0 for the session pages */
        /* AUDIT: with audit_newest > 0, first where the newest
         * audit_newest entries begin (the page then goes on from there,
         * oldest first, as the audit listing's first page does);
         * audit_after is where the page began: the (time, id) to pass as
         * after_time, after_id. */
        struct store_audit_filter audit;
        unsigned audit_newest;
        int64_t audit_after[2];
        /* told */
        int result;
        struct store_session *rows;
        size_t n_rows;
        bool complete; /* SESSIONS and OF_USER: no row follows the last */
        int64_t bound; /* OF_USER and !complete: the last row the page covers */
        struct store_audit_row *entries;
        size_t n_entries;
        /* owned */
        struct store_page_block *blocks; /* the strings */
        size_t allocated;
};
int store_read_page_after(struct store *s, struct store_page_read *out);
/* The same page read now, on the calling thread (it waits like every read):
 * 0 (out->result 0), or the read's error. */
int store_read_page(struct store *s, struct store_page_read *out);
void store_page_read_clear(struct store_page_read *x);

/* The integrity check alone; ret->ok and ret->message (pages_compacted 0). */
int store_check_integrity(struct store *s, struct store_maintenance *ret);
/* A trivial read of the sessions table (the health check times it). */
int store_probe(struct store *s);
/* The same from any thread (a worker's, so that the loop never waits for
 * the network): on a connection of its own, never the writer's; -EOPNOTSUPP
 * when the backend has none (SQLite, whose probe waits for no network). */
int store_probe_any_thread(struct store *s);

/* Sessions created at or after since (Unix seconds, like the analytics
 * below, which need no more), counted in n buckets of `bucket` seconds (counts[i] covers [since + i*bucket, since + (i+1)*bucket));
 * a rotation's new row is not counted (it is the same session). */
int store_count_created(struct store *s, int64_t since, int64_t bucket, uint64_t *counts, size_t n);
typedef int (*store_value_fn)(int64_t value, void *userdata);
/* Durations in whole seconds (the difference of the seconds of ended_at and
 * created_at) of the ended sessions retained, in ascending order; rows ended by rotation are left out (the session went
 * on under a new token). */
int store_ended_durations(struct store *s, store_value_fn cb, void *userdata);
typedef int (*store_group_fn)(const char *key, int64_t count, void *userdata);
/* Ended sessions retained, counted by end_reason. */
int store_end_reasons(struct store *s, store_group_fn cb, void *userdata);

/* ---- several daemons on one store (DESIGN 8) --------------------------------
 * -EOPNOTSUPP on a store only one daemon uses (SQLite). */

/* What another daemon committed: the row to read again (by row_key) to learn
 * the session's new state. */
enum store_change_kind {
        STORE_CHANGE_CREATED,  /* a new live session (Create, or the new row of a rotation) */
        STORE_CHANGE_ENDED,    /* ended (any reason) */
        STORE_CHANGE_UPDATED,  /* client (fingerprints) changed */
        STORE_CHANGE_SYNC,     /* sync state written */
        STORE_CHANGE_RENEWED,  /* renewed (Extend) */
        STORE_CHANGE_PLATFORM, /* platform switched */
};
struct store_change {
        enum store_change_kind kind;
        int64_t row_key;
};
/* fn runs on the loop for each change committed by another daemon (its own
 * commits are not reported), in commit order but for creations, which may
 * come later than changes committed after them (PostgreSQL announces them
 * after their commit: postgres-announce.c); the caller reads the row's state,
 * so order does not matter to it. lost = true (row_key 0) when changes may
 * have been missed (the listening connection was lost and came back, or
 * another daemon died before announcing its last creations): the caller
 * must then read again what it caches. */
typedef void (*store_change_fn)(const struct store_change *c, bool lost, void *userdata);
int store_changes_subscribe(struct store *s, uv_loop_t *loop, store_change_fn fn, void *userdata);

/* The per-user limit across daemons: when the unit commits, after its
 * inserts, user_id keeps at most `keep` live sessions, the most recently
 * active; the others end at `now` (ms) with reason "evicted", decided in
 * the committing transaction under a lock per user, so that daemons
 * creating at once never exceed it. Every daemon, this one included,
 * learns of those ends as changes (store_changes_subscribe). Nothing to do
 * on a store of one daemon, whose engine holds every live session: there
 * the operation is recorded and does nothing. */
int store_user_limit(struct store *s, const char *user_id, int64_t keep, int64_t now);

/* Leadership for the jobs (features.clustering): true when this daemon
 * holds the fleet's leader lock (taken at once when free; kept on a
 * connection of its own until store_close or the connection's loss). */
int store_leader_try(struct store *s, bool *is_leader);
/* Each daemon's heartbeat row: `daemon_id` (unique per daemon: host and
 * pid) seen now, leader or not. */
int store_heartbeat(struct store *s, const char *daemon_id, bool leader, int64_t now_ms);
struct store_daemon_row {
        const char *daemon_id;
        int64_t seen_ms;
        bool leader;
};
typedef int (*store_daemon_fn)(const struct store_daemon_row *row, void *userdata);
/* The daemons seen since since_ms, most recent first, as the last
 * store_fleet_refresh() read them (-EAGAIN before the first). */
int store_daemons_each(struct store *s, int64_t since_ms, store_daemon_fn cb, void *userdata);
/* From a worker thread, never the loop: reads again what Status and
 * Metrics show of a shared store (the daemons seen since since_ms, the
 * tables' room: store_daemons_each, store_size), which the loop then
 * answers without a round trip. -EOPNOTSUPP for a store of one host. */
int store_fleet_refresh(struct store *s, int64_t since_ms);
