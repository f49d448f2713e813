/* The session engine: the store, the in-memory index and every session policy.
 *
 * This header starts with what main and the server need; then come the
 * operations the Varlink methods and the background jobs call.
 *
 * Every operation takes `now` from its caller, so that the unit tests drive
 * the clock. `now` is Unix milliseconds (clock_now_ms(), methods_now_ms()),
 * the precision at which sessions are kept: a session ends, enters grace
 * and is warned only once its configured time has fully passed, to the
 * millisecond. (It was Unix seconds, which let a session end up to a
 * second early; one unit for every operation, rather than millisecond
 * variants of some, so that no caller can mix them.) What the engine
 * hands out keeps the protocol's whole seconds: see struct engine_info.
 *
 * Every function returns 0 or a negative errno and fills out-parameters;
 * operations that can fail for a reason a client must see also fill a
 * struct engine_error. The errno says which error:
 *
 *   -EINVAL      InvalidArgument(field, reason)
 *   -ENOENT      NotFound
 *   -ESTALE      Expired(end_reason)
 *   -EACCES      FingerprintMismatch
 *   -EBUSY       RateLimited(retry_after)
 *   -E2BIG       TooLarge(max)
 *   -EAGAIN      Conflict(version)
 *   -EOPNOTSUPP  FeatureDisabled(feature)
 *   -ENOSPC      StorageFull
 *   -EUSERS      StorageFull(reason: "max_sessions"): Create while the
 *                daemon holds daemon.max_sessions sessions
 *   anything else StorageError
 *
 * Writes go into the unit of work of the current loop iteration and are
 * durable only once it is committed (see engine_commit_submit()); a handler
 * compares engine_write_seq() before and after an operation and calls
 * call_mark_write() when it moved.
 *
 * The engine itself is in daemon/engine/, one concept a file (the list is
 * at the top of engine/engine-internal.h).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "token.h"

struct daemon;
struct engine;
struct store_maintenance;

/* Opens (or creates) the store named by d->config->daemon.database_path
 * (in memory when features.persistence is false), loads live sessions.
 * A corrupt or unreadable database is refused with a message naming the
 * file, and never modified. */
int engine_new(struct daemon *d, struct engine **ret);
/* Writes pending touches, commits, checkpoints and closes. Call it after
 * the server has closed every connection (streams cancelled). */
void engine_free(struct engine *e);

/* Durability. The writes of the operations accumulate in a unit of work
 * that main hands to the store once per loop iteration (group commit):
 *
 * engine_commit_submit() hands the writes made since the last hand-off to
 * the store, tagged `seq` (main's batch number for the held replies), and
 * returns 0; it returns 0 at once when nothing is pending, and -EBUSY while
 * the previous unit is still being committed (its callback comes first;
 * hand off again then). The commit callback runs on the loop once the unit
 * is durable (result 0) or lost (result < 0: the engine has rolled memory
 * back to match the store, together with every write made after that unit,
 * which is lost too, so that no write is ever committed behind one that
 * failed). It may run before engine_commit_submit() returns. */
typedef void (*engine_commit_fn)(struct engine *e, uint64_t seq, int result, void *userdata);
void engine_set_commit_callback(struct engine *e, engine_commit_fn fn, void *userdata);
int engine_commit_submit(struct engine *e, uint64_t seq);
/* True while a unit of work is being committed. */
bool engine_commit_busy(const struct engine *e);
/* Hands off and waits: returns once every write made so far is durable (0)
 * or lost (negative errno, memory rolled back as above). The commit
 * callback runs too. For shutdown and the unit tests. */
int engine_commit(struct engine *e);
/* True when writes are waiting to be handed off or committed. */
bool engine_has_pending(const struct engine *e);
/* Drops the writes not yet handed off and restores memory from the store. */
void engine_abort(struct engine *e);

/* The configuration was swapped (d->config is the new one). */
void engine_config_changed(struct engine *e);

/* Counts writes; see the top of this file. */
uint64_t engine_write_seq(const struct engine *e);

/* ---- values ------------------------------------------------------------- */

enum engine_end_reason {
        ENGINE_END_NONE = 0,
        ENGINE_END_IDLE,
        ENGINE_END_LIFETIME,
        ENGINE_END_ABSOLUTE,
        ENGINE_END_TERMINATED,
        ENGINE_END_EVICTED,
        ENGINE_END_ROTATED,
        ENGINE_END_DESTROYED,
        _ENGINE_END_MAX,
};
const char *engine_end_reason_to_string(enum engine_end_reason r);
/* ENGINE_END_NONE when unknown. */
enum engine_end_reason engine_end_reason_from_string(const char *s);

enum engine_state {
        ENGINE_STATE_ACTIVE,
        ENGINE_STATE_GRACE,   /* past its end, within expiration_grace */
        ENGINE_STATE_EXPIRED, /* past end + grace, not yet ended by cleanup */
        ENGINE_STATE_ENDED,
};
const char *engine_state_to_string(enum engine_state s);

/* What the application tells about the browser; NULL fields are unknown. */
struct engine_client {
        const char *user_agent;
        const char *ip;
        const char *accept_language;
        const char *accept_encoding;
};

/* A session as the methods show it (SessionInfo), in the protocol's whole
 * Unix seconds: created_at, last_activity, renewed_at and ended_at floored,
 * expires_at and expires_in rounded up (a client is never told less time
 * than it has; see engine/table.c). Strings are borrowed from the engine
 * (or the caller's input) and valid until the next engine call. */
struct engine_info {
        char id[TOKEN_ID_STRING_LEN + 1];
        const char *user_id;
        const char *platform_id; /* NULL: none */
        int64_t created_at;
        int64_t last_activity;
        int64_t renewed_at;
        int64_t expires_at; /* the end: earliest of the three limits, or ended_at */
        enum engine_state state;
        enum engine_end_reason end_reason; /* ENDED: why; otherwise the limit that ends it */
        int64_t ended_at;                  /* ENDED only */
        /* The client texts are kept in the store only (memory holds their
         * hashes): listings and Create fill them, the per-request answers
         * leave them NULL. */
        const char *ip;
        const char *user_agent;
        int64_t expires_at_ms; /* the same end in Unix milliseconds (watch timers) */
        int64_t expires_in;    /* seconds until the end, rounded up; 0 once past it */
        bool warning;          /* expires_in <= timeout.warning_threshold */
};

struct engine_error {
        const char *field;                 /* InvalidArgument */
        const char *reason;                /* InvalidArgument */
        enum engine_end_reason end_reason; /* Expired */
        int64_t retry_after;               /* RateLimited */
        int64_t max;                       /* TooLarge */
        int64_t version;                   /* Conflict */
        const char *feature;               /* FeatureDisabled */
};

/* Input limits (InvalidArgument beyond them). */
#define ENGINE_USER_ID_MAX 255
#define ENGINE_PLATFORM_ID_MAX 128
#define ENGINE_CLIENT_FIELD_MAX 2048

/* ---- session operations (io.sessiond.Session) ---------------------------- */

struct engine_create {
        const char *user_id;
        const char *platform_id; /* NULL: none */
        struct engine_client client;
        const char *sync_data; /* NULL: none */
        size_t sync_size;
};

struct engine_created {
        char token[TOKEN_STRING_LEN + 1];
        struct engine_info info;
        char (*evicted)[TOKEN_ID_STRING_LEN + 1]; /* ids of the sessions ended to make room */
        size_t n_evicted;
};
void engine_created_clear(struct engine_created *c);

/* -EUSERS, and nothing changes, when the daemon holds daemon.max_sessions
 * sessions (in memory: live and expired not yet ended) and the Create would
 * not end one of the user's own (the user is below
 * security.max_concurrent_per_user). */
int engine_create(struct engine *e, int64_t now, const struct engine_create *a, struct engine_created *ret,
                  struct engine_error *err);
/* info->state is active or grace; touch sets last_activity = now (never in
 * grace). client may be NULL. */
int engine_validate(struct engine *e, int64_t now, const char *token, const struct engine_client *client, bool touch,
                    struct engine_info *ret, struct engine_error *err);
/* Touches (not in grace); ret carries expires_in and warning. */
int engine_heartbeat(struct engine *e, int64_t now, const char *token, struct engine_info *ret,
                     struct engine_error *err);
/* renewed_at = last_activity = now; the absolute cap still applies. */
int engine_extend(struct engine *e, int64_t now, const char *token, struct engine_info *ret, struct engine_error *err);
/* A new session with a new token and id replaces the old one, which ends
 * with reason rotated. The new one keeps created_at (the absolute cap),
 * renewed_at, platform, client, sync state and switch history. */
int engine_rotate(struct engine *e, int64_t now, const char *token, char new_token[TOKEN_STRING_LEN + 1],
                  struct engine_info *ret, struct engine_error *err);
int engine_switch_platform(struct engine *e, int64_t now, const char *token, const char *platform_id,
                           struct engine_info *ret, struct engine_error *err);
/* On a shared store (engine_switch_decided_by_store()) the store decides
 * a switch under the per-hour limit when its unit runs, so that switches
 * made at once on several daemons count each other (engine/platform.c):
 * returns an error at once (the mapping of the other methods), or 0 with
 * *ret naming the wait and later calls done(): done(0, info) (switched, or
 * on that platform already),
 * done(-EBUSY) with err->retry_after, done(-ESTALE) with err->end_reason
 * when the session ended first, done(-ENOENT), or done(storage error) when
 * its unit was lost (info valid during the call only). Until done runs,
 * engine_switch_detach() lets the caller go. */
struct engine_switch_wait;
typedef void (*engine_switch_done_fn)(int r, const struct engine_info *info, const struct engine_error *err,
                                      void *userdata);
bool engine_switch_decided_by_store(const struct engine *e);
int engine_switch_platform_later(struct engine *e, int64_t now, const char *token, const char *platform_id,
                                 engine_switch_done_fn done, void *userdata, struct engine_switch_wait **ret,
                                 struct engine_info *info, struct engine_error *err);
void engine_switch_detach(struct engine_switch_wait *w);
/* *data is malloc'ed (NULL: none), *size excludes its terminating NUL. */
int engine_sync_get(struct engine *e, int64_t now, const char *token, int64_t *version, char **data, size_t *size,
                    struct engine_error *err);
/* A compare-and-set of the sync state (expected_version < 0: whatever the
 * version). Answered once the write's unit of work is done, since another
 * daemon on a shared store may write first (engine/sync.c): returns 0 and
 * later calls done() with err->version: done(0) with the new version,
 * done(-EAGAIN) with the version stored when it lost to another write,
 * done(-ESTALE) with err->end_reason when another daemon ended the session
 * first, or done(storage error) when its unit was lost; or returns an error
 * at once (the same mapping as the other methods) and never calls done. Until done runs, *ret names the wait, for
 * engine_sync_detach() when the caller goes away. */
struct engine_sync_wait;
typedef void (*engine_sync_done_fn)(int r, const struct engine_error *err, void *userdata);
int engine_sync_set(struct engine *e, int64_t now, const char *token, const char *data, size_t size,
                    int64_t expected_version, engine_sync_done_fn done, void *userdata, struct engine_sync_wait **ret,
                    struct engine_error *err);
void engine_sync_detach(struct engine_sync_wait *w);
/* On a fleet's store (engine_sync_reads_later) the sync state is read by
 * the store's writer after the next commit, not on the loop: GetSyncState
 * and Watch use these, which call done once it is read (data valid during
 * the call; r: 0, -ENOENT, or a storage error); *ret names the read for
 * engine_sync_read_detach() until then. SetSyncState reads the version it
 * compares the same way, and so the version and the session's end after a
 * write that did not apply (engine_sync_set: nothing changes for its
 * caller). */
struct engine_ref;
bool engine_sync_reads_later(const struct engine *e);
typedef void (*engine_sync_got_fn)(int r, int64_t version, const char *data, size_t size, void *userdata);
struct engine_sync_read;
int engine_sync_get_later(struct engine *e, int64_t now, const char *token, engine_sync_got_fn done, void *userdata,
                          struct engine_sync_read **ret, struct engine_error *err);
int engine_sync_get_ref_later(struct engine *e, const struct engine_ref *ref, engine_sync_got_fn done, void *userdata,
                              struct engine_sync_read **ret);
void engine_sync_read_detach(struct engine_sync_read *x);
/* On a fleet's store (DESIGN 8) a session method whose token memory does
 * not know (or every one, without features.caching) returns -EINPROGRESS
 * while the caller allows it (engine_fetch_allow): the token's row is read
 * by the store's writer after the next commit, not on the loop. The caller
 * then calls engine_fetch_wait(), whose done runs once the row is read
 * (or its unit was lost), and runs the method again: it answers from what
 * was read. Not allowed: the row is read at once, on the loop. */
void engine_fetch_allow(struct engine *e, bool allow);
typedef void (*engine_fetch_fn)(void *userdata);
struct engine_fetch;
int engine_fetch_wait(struct engine *e, engine_fetch_fn done, void *userdata, struct engine_fetch **ret);
void engine_fetch_detach(struct engine_fetch *f);
int engine_destroy(struct engine *e, int64_t now, const char *token, struct engine_error *err);
/* Ends every live session of user_id (reason destroyed) except the one of
 * except_token (NULL: none), which must be a live session of that user. */
int engine_destroy_user(struct engine *e, int64_t now, const char *user_id, const char *except_token, unsigned *count,
                        struct engine_error *err);
/* The checks of DestroyUser, for a caller that ends the sessions in steps:
 * *except_row_key names the excepted session (0: none). */
int engine_destroy_user_check(struct engine *e, int64_t now, const char *user_id, const char *except_token,
                              int64_t *except_row_key, struct engine_error *err);
/* One step of a bulk end (DestroyUser, TerminateUser): ends the live
 * sessions of user_id created at or before created_by (Unix ms: the
 * time the call began), except the one of row except_row_key (0: none), with
 * `reason`, until uv_hrtime() reaches deadline_ns (0: no deadline; read
 * every few sessions). *more: some remain for the next step. The ends go
 * into the open unit of work. */
int engine_end_user_step(struct engine *e, int64_t now, const char *user_id, int64_t created_by, int64_t except_row_key,
                         enum engine_end_reason reason, uint64_t deadline_ns, unsigned *ended, bool *more);

/* Listings call back once per session; info is valid during the callback.
 * Return non-zero from the callback to stop. */
typedef int (*engine_info_fn)(const struct engine_info *info, void *userdata);
/* The user's live sessions (active, grace). */
int engine_list_user(struct engine *e, int64_t now, const char *user_id, engine_info_fn cb, void *userdata,
                     struct engine_error *err);

/* A page of a listing: rows after `after` (0: from the start), in row
 * order, at most `limit` listed and scan_max examined (0: no bound); a
 * callback that returns non-zero ends the page after its row. On
 * return, more tells whether the listing goes on, from row `next`. A
 * session is listed at most once however the table changes between pages;
 * one that lives throughout is listed exactly once. */
struct engine_page {
        int64_t after;
        unsigned scan_max;
        int64_t next;
        bool more;
};
int engine_list_user_page(struct engine *e, int64_t now, const char *user_id, unsigned limit, struct engine_page *page,
                          engine_info_fn cb, void *userdata, struct engine_error *err);

/* A handle for a watched session: the session a token named, without
 * keeping the token. */
struct engine_ref {
        uint8_t key[16];
        int64_t row_key; /* its row (a fleet reads the ended row by it: engine_session_by_id_later) */
};
/* Resolves a token like Validate, without touching or counting. */
int engine_resolve(struct engine *e, int64_t now, const char *token, struct engine_ref *ref, struct engine_info *ret,
                   struct engine_error *err);
/* The current state of a resolved session; -ENOENT once it left memory
 * (ended). */
int engine_peek(struct engine *e, int64_t now, const struct engine_ref *ref, struct engine_info *ret);
/* One session by public id, live or ended (watch streams, operators);
 * -ENOENT when the store has no such id. */
int engine_session_by_id(struct engine *e, int64_t now, const char *id, engine_info_fn cb, void *userdata);
/* engine_session_by_id() for a Watch's final reply, answered by
 * done(r, info, userdata): info is the session, or NULL (r -ENOENT: no
 * such row; r 0: a live row memory no longer has; else the error). Not a
 * fleet (SQLite), the row is read on the loop and done runs before this
 * returns. On a fleet the loop never waits for PostgreSQL: the store's
 * writer reads the row (ref->row_key: the session of id) after the next
 * commit, and done runs when that unit is done (r: its error if the unit
 * was lost; -ECANCELED when the engine is freed first). done runs inside
 * the read and may not use the store. Returns 0 (done will run, or has:
 * then *ret, if given, is NULL; otherwise the read, which
 * engine_session_read_detach() keeps done from running), or a negative
 * errno (done will not run). */
typedef void (*engine_session_got_fn)(int r, const struct engine_info *info, void *userdata);
struct engine_session_read;
int engine_session_by_id_later(struct engine *e, int64_t now, const char *id, const struct engine_ref *ref,
                               engine_session_got_fn done, void *userdata, struct engine_session_read **ret);
void engine_session_read_detach(struct engine_session_read *x);
/* Pages answered later (listing.c). A page of ListSessions or ListUser,
 * one session by public id (GetSession), or a page of the audit, answered
 * by done: on one host at once, read on the loop (as the functions above
 * and below do); on a fleet once the store's writer has read it right
 * after the next commit, so that the loop never waits for PostgreSQL.
 * cb gets each entry first (a non-zero return ends the page there, as
 * with the functions above), then done gets the result: 0 (and the page:
 * next, more), -ENOENT (GetSession: no such session), or the storage
 * error (StorageError; also when the unit was lost, -ECANCELED when the
 * engine is freed first). Returns 0: done will run, or has (then *ret,
 * if given, is NULL; otherwise the read, which engine_page_read_detach()
 * keeps cb and done from running when the caller goes), or a negative
 * errno: done will not run (-EINVAL: err says which argument). */
struct engine_page_read;
typedef void (*engine_page_done_fn)(int r, const struct engine_page *page, void *userdata);
struct engine_list_ask {
        const char *id;      /* GetSession: the session of this public id, live or ended */
        const char *user_id; /* NULL: every user */
        bool include_ended;
        bool user_listing; /* ListUser: user_id is checked, live sessions only */
        unsigned limit;
        struct engine_page page; /* after, scan_max (> 0 but for id) */
};
int engine_list_page_later(struct engine *e, int64_t now, const struct engine_list_ask *ask, engine_info_fn cb,
                           engine_page_done_fn done, void *userdata, struct engine_error *err,
                           struct engine_page_read **ret);
/* The audit's page: f as store_audit_each() takes it (strings copied);
 * with newest > 0, where the newest `newest` entries begin first, the
 * page (f->limit entries) going on from there oldest first. done's after:
 * the (time, id) the page began after. */
struct store_audit_row;
struct store_audit_filter;
typedef int (*engine_audit_fn)(const struct store_audit_row *row, void *userdata);
typedef void (*engine_audit_done_fn)(int r, const int64_t after[2], void *userdata);
int engine_audit_page_later(struct engine *e, const struct store_audit_filter *f, unsigned newest, engine_audit_fn cb,
                            engine_audit_done_fn done, void *userdata, struct engine_page_read **ret);
void engine_page_read_detach(struct engine_page_read *x);
/* Sync state by public id (watch streams). */
int engine_sync_get_by_id(struct engine *e, const char *id, int64_t *version, char **data, size_t *size);

/* ---- administration (io.sessiond.Admin) ---------------------------------- */

/* Live sessions (active, grace); with include_ended also expired and ended
 * ones still retained. user_id NULL: all users. At most limit. */
int engine_list_sessions(struct engine *e, int64_t now, const char *user_id, bool include_ended, unsigned limit,
                         engine_info_fn cb, void *userdata);
/* The same, a page (see struct engine_page; NULL: the whole listing). */
int engine_list_sessions_page(struct engine *e, int64_t now, const char *user_id, bool include_ended, unsigned limit,
                              struct engine_page *page, engine_info_fn cb, void *userdata);
/* Ends the session with that public id (reason terminated); -ENOENT if there
 * is no such session in memory (unknown or already ended). */
int engine_terminate(struct engine *e, int64_t now, const char *id);
/* The same, answered by done (0 or the error above) once it is done: at
 * once on one host; on a fleet the row is read after the store's next
 * commit (engine_list_page_later's rules), then the session is ended (a
 * write in the open unit: its reply waits for that unit's commit). */
int engine_terminate_later(struct engine *e, int64_t now, const char *id, engine_page_done_fn done, void *userdata,
                           struct engine_page_read **ret);
/* Ends every live session of the user (reason terminated). */
int engine_terminate_user(struct engine *e, int64_t now, const char *user_id, unsigned *count);

/* Writes an audit row when security.audit_logging is on (else nothing).
 * detail: a JSON object (borrowed) or NULL. Used by main for
 * config_reloaded. */
int engine_audit(struct engine *e, int64_t now, const char *kind, const char *user_id, const char *session_id,
                 json_t *detail);
/* Failed validations are audited in aggregate: one "validation_failed" row
 * per (user, reason, end reason) and minute, detail {reason, [end_reason],
 * count, since}, written by the engine's timer and at engine_free().
 * engine_audit_flush() writes the counts held now (before an audit
 * listing); engine_audit_tick() writes them once the interval that began
 * with the first one counted is over (the engine's timer calls it every
 * two seconds); engine_audit_pending() is how many sources are held. */
void engine_audit_flush(struct engine *e);
void engine_audit_tick(struct engine *e, int64_t now);
unsigned engine_audit_pending(const struct engine *e);

/* ---- background work (cleanup, security, maintenance) -------------------- */

/* Ends up to `limit` sessions past their end + cleanup_grace (reason: the
 * limit that ended them; ended_at: that end). *more tells whether others
 * remain. One transaction (the caller's iteration commits it). */
int engine_cleanup_expired(struct engine *e, int64_t now, unsigned limit, unsigned *ended, bool *more);
/* The same, but returns early once uv_hrtime() reaches deadline_ns (0: no
 * deadline; the clock is read every few sessions, so a call overruns by
 * about one ended session). Stopped by the deadline before `limit`, it
 * reports *more true: the caller goes on in its next step. */
int engine_cleanup_expired_until(struct engine *e, int64_t now, unsigned limit, uint64_t deadline_ns, unsigned *ended,
                                 bool *more);
/* Sessions past end + cleanup_grace not yet ended (a scan of memory, no I/O). */
uint64_t engine_count_awaiting_cleanup(struct engine *e, int64_t now);
/* The same count in steps: from *cursor (0 to begin) on, adding to *count,
 * until uv_hrtime() reaches deadline_ns (0: none; the clock is read every
 * few thousand entries). Returns true when the pass is complete (*cursor
 * is 0 again), false when the next step goes on from *cursor. Sessions
 * that change between two steps are counted as the step found them. */
bool engine_count_awaiting_cleanup_step(struct engine *e, int64_t now, uint64_t deadline_ns, uint32_t *cursor,
                                        uint64_t *count);
/* Ends the least recently active sessions of users above
 * max_concurrent_per_user (a lowered limit), up to `limit` sessions. */
int engine_enforce_user_limit(struct engine *e, int64_t now, unsigned limit, unsigned *ended, bool *more);
/* The same as a bounded step: returns early once uv_hrtime() reaches
 * deadline_ns (0: none; the clock is read every few sessions ended), then
 * with *more true; the next call goes on where this one stopped. */
int engine_enforce_user_limit_until(struct engine *e, int64_t now, unsigned limit, uint64_t deadline_ns,
                                    unsigned *ended, bool *more);
/* Deletes up to `limit` ended sessions older than expired_retention_days and
 * up to `limit` audit rows older than audit_retention_days. */
int engine_purge(struct engine *e, int64_t now, unsigned limit, unsigned *sessions, unsigned *audit, bool *more);
/* The same as a bounded step: each statement deletes at most `limit` rows,
 * sessions first; with a deadline (uv_hrtime(), 0: none) the audit rows wait
 * for the next call when the sessions filled `limit` or the deadline passed.
 * *more: call again. */
int engine_purge_until(struct engine *e, int64_t now, unsigned limit, uint64_t deadline_ns, unsigned *sessions,
                       unsigned *audit, bool *more);
/* Commits, then PRAGMA optimize, wal_checkpoint(TRUNCATE), quick_check. */
int engine_maintain(struct engine *e, struct store_maintenance *ret);
/* Writes up to `limit` coalesced touches (the engine's own timer does this
 * every few seconds; exported for tests and shutdown). */
int engine_flush_touches(struct engine *e, unsigned limit, unsigned *written, bool *more);
/* Forgets suspicious-activity records older than the sliding hour. */
void engine_security_sweep(struct engine *e, int64_t now);

struct engine_counts {
        uint64_t sessions; /* in memory: live and expired-not-ended */
        uint64_t active;
        uint64_t grace;
        uint64_t expired; /* past end + grace, not yet ended */
        uint64_t awaiting_cleanup;
        uint64_t users;
        uint64_t dirty_touches;
};
/* A scan of memory. */
void engine_count(struct engine *e, int64_t now, struct engine_counts *ret);

/* ---- for the observability modules (jobs, metrics, analytics) ------------- */

/* The store, for read-only queries (audit listings, analytics, health
 * probes); every write goes through the engine. */
struct store *engine_store(struct engine *e);
typedef int (*engine_count_fn)(const char *name, uint64_t count, void *userdata);
/* Live sessions (active, grace) per platform; name NULL for the sessions
 * without one. A scan of memory. Stops at the first non-zero return. */
int engine_count_by_platform(struct engine *e, int64_t now, engine_count_fn cb, void *userdata);
/* Users with suspicious events in the sliding hour, with their count
 * (which stops growing at security.suspicious_activity_threshold). */
int engine_suspicious_users(struct engine *e, int64_t now, engine_count_fn cb, void *userdata);

/* ---- counters and the observer hook (metrics, events, alerts) ------------ */

enum engine_failure {
        ENGINE_FAIL_NOT_FOUND,
        ENGINE_FAIL_EXPIRED,
        ENGINE_FAIL_FINGERPRINT,
        ENGINE_FAIL_INVALID,
        _ENGINE_FAIL_MAX,
};
const char *engine_failure_to_string(enum engine_failure f);

struct engine_counters {
        uint64_t created;
        uint64_t create_refused_max_sessions; /* Create refused at daemon.max_sessions */
        uint64_t validated;                   /* successful validations (active + grace) */
        uint64_t validated_grace;             /* of which in grace */
        uint64_t validate_failed[_ENGINE_FAIL_MAX];
        uint64_t heartbeats;
        uint64_t extended;
        uint64_t rotated;
        uint64_t ended[_ENGINE_END_MAX]; /* by reason (evicted = ended[ENGINE_END_EVICTED]) */
        uint64_t platform_switches;
        uint64_t platform_switches_refused;
        uint64_t sync_reads;
        uint64_t sync_writes;
        uint64_t sync_conflicts;
        /* The sync state's reads of the store (sync.c): by the writer
         * after a commit (a fleet: GetSyncState, a Watch's state,
         * SetSyncState's version and a write's session after it did not
         * apply), and on the loop (SQLite: all of them; a fleet: none). */
        uint64_t sync_reads_after_commit;
        uint64_t sync_reads_on_loop;
        uint64_t fingerprint_changes;    /* IP or language changes recorded */
        uint64_t fingerprint_mismatches; /* user agent changes refused */
        uint64_t suspicious;             /* suspicious events counted */
        uint64_t suspicious_alerts;      /* users reaching the threshold */
        uint64_t audit_rows;
        uint64_t touches_written;
        uint64_t commits;
        uint64_t commit_failures;
        uint64_t purged_sessions;
        uint64_t purged_audit;
        /* A fleet (DESIGN 8): sessions other daemons ended, and created or changed, learnt from the store. */
        uint64_t remote_ended;
        uint64_t remote_changed;
        /* Their rows read by the writer after a commit, and on the loop
         * (rows this daemon's open unit writes too, or a unit lost). */
        uint64_t remote_reads_after_commit;
        uint64_t remote_reads_on_loop;
        /* The re-reads of every live session after missed changes: those
         * done, and the live rows they read (by the writer after a
         * commit, in pages). */
        uint64_t rereads;
        uint64_t reread_rows_after_commit;
        /* Session rows read on the loop, through the writing connection
         * (a fleet's reads that could not wait for a commit, and the rows
         * of a unit lost read back). */
        uint64_t loop_row_reads;
        /* Tokens memory did not know, read by the writer after a commit
         * (engine_fetch_wait). */
        uint64_t token_reads_after_commit;
        /* The cleanup's candidates read again before they are ended, by
         * the writer after a commit, and on the loop (rows this daemon's
         * open unit writes too, or rows read on the loop since the
         * hand-off). */
        uint64_t cleanup_reads_after_commit;
        uint64_t cleanup_reads_on_loop;
        /* The ended rows of Watch's final replies (engine_session_by_id_later):
         * by the writer after a commit (a fleet), on the loop (SQLite). */
        uint64_t final_reads_after_commit;
        uint64_t final_reads_on_loop;
        /* Pages of listings, GetSession and the audit (listing.c): by the
         * writer after a commit (a fleet), on the loop (SQLite). */
        uint64_t page_reads_after_commit;
        uint64_t page_reads_on_loop;
};
const struct engine_counters *engine_get_counters(const struct engine *e);
/* The negative errno of the last failed commit (-ENOSPC: the file system is
 * full), 0 when the last commit succeeded: writes fail until it is 0 again. */
int engine_storage_error(const struct engine *e);

/* Something happened. Events are delivered after the transaction that made
 * them has committed (never for a write that was rolled back), from the
 * loop (a zero timer), not from inside a handler. Kinds:
 *   created            detail {platform_id}
 *   ended              detail {reason, duration}  (every end, any reason)
 *   rotated            detail {new_session_id}    (the old session)
 *   extended           detail {expires_at}
 *   platform_switched  detail {from, to}
 *   sync               detail {version}
 *   validation_failed  detail {reason}  (reason: not_found, expired, fingerprint, invalid;
 *                      one event per failure, while the audit rows are aggregated)
 *   fingerprint_changed detail {fields: [...]}
 *   suspicious         detail {what, count, threshold}  (one per suspicious event)
 *   suspicious_threshold detail {count, threshold}      (a user reached the threshold)
 * session_id and user_id may be NULL. The detail is a jansson object, or
 * for "created" JSON text (detail_text): an observer that reads the detail
 * of such an event parses the text. */
struct engine_event {
        const char *kind;
        int64_t time;
        const char *session_id;
        const char *user_id;
        json_t *detail;          /* borrowed object, NULL when detail_text is set */
        const char *detail_text; /* the detail as compact JSON text (events built on the hot
                                  * path, without jansson: created), NULL: see detail */
};
typedef void (*engine_observer_fn)(const struct engine_event *ev, void *userdata);
/* Adds an observer; free_fn (may be NULL) runs on userdata at engine_free().
 * Returns 0 or -ENOSPC (at most 8 observers). */
int engine_add_observer(struct engine *e, engine_observer_fn fn, void (*free_fn)(void *userdata), void *userdata);
void engine_remove_observer(struct engine *e, engine_observer_fn fn, void *userdata);
/* The userdata of the first observer registered with fn, or NULL. */
void *engine_find_observer(struct engine *e, engine_observer_fn fn);
/* Delivers queued events now (the zero timer does this in the daemon). */
void engine_dispatch_events(struct engine *e);
