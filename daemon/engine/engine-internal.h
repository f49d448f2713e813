/* The session engine's insides, shared by the files of daemon/engine/; the
 * rest of the daemon sees only ../engine.h (the interface and the error
 * mapping). One concept a file:
 *
 *   table.c          the in-memory table: sessions, users, platforms, their
 *                    indexes, a session's state and its SessionInfo
 *   txn.c            the transaction of a loop iteration: affected rows,
 *                    commit, rollback and reload, audit rows
 *   bus.c            the observers and the queues of events
 *   security.c       suspicious-activity counting, failed validations
 *   auditagg.c       failed validations audited in aggregate (a row per
 *                    source and interval, with a count)
 *   session.c        the session operations: create, look up, validate,
 *                    heartbeat, extend, rotate; ending one
 *   platform.c       platform switches under the per-hour limit (decided
 *                    by the store on a shared store)
 *   session-admin.c  destroy, DestroyUser, watch support, terminate
 *   listing.c        the listings, GetSession, the audit's pages and a
 *                    Watch's final reply: read on the loop on one host,
 *                    after a commit on a fleet
 *   sync.c           the cross-tab sync state: a compare-and-set answered
 *                    when its unit of work is done
 *   cleanup.c        the concurrency limit, cleanup of expired sessions,
 *                    purge, maintenance, the touch flush, counts
 *   load.c           start-up (key file, store, loading), timers, shutdown
 *   fleet.c          a shared store (DESIGN 8): other daemons' changes, and
 *                    the rows read after a commit (changes, tokens, the
 *                    cleanup's candidates, the re-read of every session)
 *   fleet-probe.c    a shared store's reachability (the cache's grace)
 *
 * Functions shared between the files carry their file's prefix (table_,
 * txn_, bus_, security_, auditagg_, session_, platform_, sync_, cleanup_,
 * fleet_); the smallest accessors are inline here.
 */
#pragma once

#include <assert.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#include "daemon.h"
#include "engine.h"
#include "hindex.h"
#include "sessiond/varlink.h"
#include "store.h"

#define NIL UINT32_MAX
#define HOUR 3600
#define TOUCH_FLUSH_INTERVAL_MS 2000
#define TOUCH_FLUSH_BATCH 512
#define BURST_WINDOW 60   /* seconds */
#define BURST_FAILURES 10 /* failed validations of one user in the window */
#define SWEEP_EVERY_TICKS 30
#define MAX_OBSERVERS 8
#define AUDITAGG_INTERVAL 60 /* seconds of failed validations one audit row counts */
#define AUDITAGG_MAX 1024    /* sources counted at once; more write the rows early */

/* struct session's flags: a byte, so eight at most. */
enum {
        S_USED = 1u << 0,
        S_DIRTY = 1u << 1,         /* last_activity ahead of the store */
        S_STALE = 1u << 2,         /* a fleet's re-read of every session has not seen it yet (fleet.c) */
        S_CLEANUP_ASKED = 1u << 3, /* a fleet's cleanup asked for its row, or holds it read (cleanup.c) */
        S_SWITCHING = 1u << 4,     /* a fleet: a platform switch asked, the store's answer to come (platform.c) */
};

enum { FP_USER_AGENT, FP_IP, FP_LANGUAGE, FP_ENCODING, _FP_MAX };

/* The four times of a session, in Unix milliseconds, each kept as 32-bit
 * seconds and their millisecond part (0-999) in 10 bits, the four of them
 * packed in 5 bytes: 5.25 bytes a time where a 64-bit millisecond count
 * would take 8, and the second itself is at hand for the public id
 * (derived from the creation second) and for SessionInfo (floored
 * seconds). Read and write them with session_ms() and session_ms_set()
 * only, which clamp to what fits (1970 to 2106). */
enum {
        ST_CREATED,
        ST_ACTIVITY,  /* last_activity */
        ST_RENEWED,   /* renewed_at */
        ST_PERSISTED, /* last_activity as written to the store */
        _ST_MAX,
};

/* 72 bytes, none of them padding: with a million sessions each byte is a
 * MiB of resident memory (the array is the daemon's largest), so flags is
 * a byte (S_* above) and the milliseconds share 5 bytes. The public id is
 * not stored: it is derived from the creation second and row_key
 * (token_id_derive). Fingerprints keep a prefix of their keyed hash: 32
 * bits for the user agent (a change refuses the validation), 16 bits for
 * the others (a change is only recorded). */
#define SESSION_MSEC_BITS 10
struct session {
        uint8_t key[16]; /* first half of the keyed token hash */
        int64_t row_key;
        uint32_t user;          /* users[] handle */
        uint32_t user_next;     /* next session of the user (more recently active); free list link when unused */
        uint32_t user_prev;     /* previous session of the user (less recently active); the first's: the last */
        uint32_t platform;      /* platforms[] handle + 1, 0: none */
        uint32_t sec[_ST_MAX];  /* the times' Unix seconds... */
        uint32_t fp_user_agent; /* 0: none */
        uint16_t fp_small[3];   /* ip, accept_language, accept_encoding; 0: none */
        uint8_t flags;          /* S_* */
        uint8_t msec[(_ST_MAX * SESSION_MSEC_BITS + 7) / 8]; /* ...and their milliseconds, 10 bits each */
};
_Static_assert(sizeof(struct session) == 72, "struct session: 72 bytes, no padding (see above)");

struct user_sec {
        int64_t *times; /* suspicious events in the sliding hour, oldest first (ms) */
        uint32_t n, cap;
        bool alerted;
        int64_t fail_start; /* ms */
        uint32_t fail_count;
};

/* 48 bytes, none of them padding (a million users are a million entries).
 * Names shorter than USER_INLINE live in the entry itself (most user ids
 * are short: no allocation, no pointer); longer ones are allocated, marked
 * by the last byte. An unused entry has an empty name. The user's sessions
 * are a list in order of last activity, least recent first (table.c, by
 * the millisecond): head is its first, and the first's user_prev its last,
 * so the entry keeps no tail. min_created and min_renewed are lower bounds
 * of its sessions' creation and renewal seconds (the seconds of
 * session_ms(): floored, so still lower bounds of the milliseconds;
 * cleanup.c: the concurrency limit). */
#define USER_INLINE 24
struct user {
        union {
                char inl[USER_INLINE];
                struct {
                        char *ptr;
                        char pad[USER_INLINE - sizeof(char *) - 1];
                        char is_long;
                } ext;
        } name;
        uint32_t hash;
        uint32_t head; /* least recently active session, NIL: none; next free entry when unused */
        uint32_t n_sessions;
        uint32_t sec; /* secs[] index + 1, 0: none */
        uint32_t min_created, min_renewed;
};
_Static_assert(sizeof(struct user) == 48, "struct user: 48 bytes, no padding (see above)");

struct sec_entry {
        uint32_t user;
        struct user_sec *sec;
};

struct platform {
        char *name; /* NULL: free slot */
        uint64_t hash;
        uint32_t refs;
        uint32_t next_free;
};

struct affected {
        int64_t row_key;
        uint32_t handle;
        int64_t last_activity; /* ms, in memory when the row was first written */
};

/* A fleet's cleanup candidate (cleanup.c): its row to be read after a commit. */
struct cleanup_ask {
        int64_t row_key;
        uint32_t handle;
};

struct pending_event {
        const char *kind;
        int64_t time;
        char session_id[TOKEN_ID_STRING_LEN + 1];
        char *user_id;
        json_t *detail;     /* or NULL and... */
        char *detail_text;  /* ...the detail as JSON text (bus_emit_text) */
        const int *applied; /* told only if *applied when its unit commits (bus_emit_text_applied) */
};

struct event_queue {
        struct pending_event *items;
        size_t n, allocated;
};

struct observer {
        engine_observer_fn fn;
        void (*free_fn)(void *userdata);
        void *userdata;
};

struct engine {
        struct daemon *d;
        struct store *store;
        struct token_key key;
        char *key_path; /* the key file read at start; NULL without persistence */
        uint8_t name_key[crypto_shorthash_KEYBYTES];

        struct session *sessions;
        uint32_t sessions_used, sessions_allocated, sessions_free, n_sessions;
        struct hindex by_key;

        struct user *users;
        uint32_t users_used, users_allocated, users_free, n_users;
        struct hindex by_user;
        struct sec_entry *secs; /* users with suspicious-activity records */
        size_t n_secs, secs_allocated;
        struct auditagg *auditagg; /* failed validations not yet audited; NULL: none yet */

        struct platform *platforms;
        uint32_t platforms_used, platforms_allocated, platforms_free;
        struct hindex by_platform;

        /* the transaction of this iteration */
        bool txn;
        int commit_error;  /* a failed statement already aborted this iteration's writes */
        int storage_error; /* the error of the last failed commit, 0 once one succeeds */
        uint64_t write_seq;
        struct affected *affected;
        size_t n_affected, affected_allocated;
        /* the unit handed to the store and not yet committed */
        bool inflight;
        uint64_t inflight_seq;
        struct affected *inflight_affected;
        size_t n_inflight_affected, inflight_affected_allocated;
        struct event_queue inflight_events;
        /* SetSyncState calls waiting for the open unit / the unit in flight (sync.c) */
        struct engine_sync_wait *sync_open, *sync_inflight;
        /* Sync states read after the open unit / the unit in flight (sync.c) */
        struct engine_sync_read *sync_reads_open, *sync_reads_inflight;
        /* Calls answered when the open unit / the unit in flight is done (txn.c) */
        struct unit_wait *waits_open, *waits_inflight;

        uint32_t *dirty;
        size_t n_dirty, dirty_allocated;

        struct event_queue ready, in_txn; /* in_txn: events of the open unit */
        struct observer observers[MAX_OBSERVERS];
        size_t n_observers;

        uv_timer_t *flush_timer;
        uv_timer_t *dispatch_timer;
        unsigned ticks;

        uint32_t cleanup_cursor;
        uint32_t cleanup_quiet;     /* entries the cursor passed since it last ended one */
        int64_t cleanup_quiet_next; /* ms: when one of them may await cleanup (cleanup.c) */
        uint32_t limit_cursor;
        uint32_t limit_quiet;    /* users the limit cursor passed since it last evicted ... */
        int64_t limit_quiet_max; /* ... under this max_concurrent_per_user */

        struct load_batch *loading; /* while the store loads */
        bool users_unsorted;        /* while the store loads: sessions appended, sorted at the end */

        struct engine_counters counters;
        bool at_max_sessions; /* a Create was refused at daemon.max_sessions (logged once) */

        engine_commit_fn commit_fn;
        void *commit_userdata;

        bool fleet; /* the store is shared: other daemons' changes come in (fleet.c) */
        bool fleet_configured, clustering_configured; /* features.distributed, .clustering at start */
        char *fleet_url;                              /* daemon.postgres_url at start */
        int64_t fleet_down_since;                     /* ms: the first failed probe of the shared store, 0: reachable */
        /* Other daemons' changes whose rows the writer reads after the
         * open unit / the unit in flight (fleet.c); missed: a unit that
         * carried some was lost, the next good probe reads everything. */
        struct store_change *remote_open, *remote_inflight;
        size_t n_remote_open, remote_open_allocated, n_remote_inflight, remote_inflight_allocated;
        bool remote_missed;
        /* Tokens memory did not know, read after the open unit / the unit
         * in flight (engine_fetch_wait); the one answered now. */
        bool fetch_allowed, fetch_miss_set;
        uint8_t fetch_miss[TOKEN_HASH_BYTES];
        struct engine_fetch *fetch_open, *fetch_inflight;
        const struct engine_fetch *fetched;
        struct fleet_probe *probe; /* the store's reachability, probed on a worker thread */
        /* Rows read on the loop (e->counters.loop_row_reads) at the last
         * hand-off: rows read after a commit are not taken when the loop
         * read since (memory may be newer than them; fleet.c). */
        uint64_t loop_row_reads_at_hand_off;
        /* Cleanup candidates whose rows the writer reads after the open
         * unit / the unit in flight, and those ended once read, for the
         * next cleanup step to count (cleanup.c, fleet.c). */
        struct cleanup_ask *cleanup_open, *cleanup_inflight;
        size_t n_cleanup_open, cleanup_open_allocated, n_cleanup_inflight, cleanup_inflight_allocated;
        unsigned cleanup_ended_on_read;
        int cleanup_error; /* asks lost with their unit (or read): the next cleanup step's error */
        /* The re-read of every live session after missed changes
         * (fleet.c): a pass under way (entries it has not seen are
         * S_STALE), the page of live rows the writer reads after the open
         * unit / the unit in flight, where the next page starts, and the
         * entries the pass did not find live, read one by one after a
         * commit to learn how they ended (asked of the open unit / in
         * flight, and those found so far). */
        bool reread_active, reread_open, reread_inflight, reread_restart;
        bool reread_ends; /* the pass is past its pages: the asks are the ends' */
        struct store_page_read reread;
        int64_t reread_after;
        struct cleanup_ask *reread_gone;
        size_t n_reread_gone, reread_gone_allocated, reread_gone_total;
};

static inline const struct sessiond_config *cfg(const struct engine *e) {
        return e->d->config;
}

static inline uint32_t t32(int64_t t) {
        if (t < 0)
                return 0;
        if (t > (int64_t) UINT32_MAX)
                return UINT32_MAX;
        return (uint32_t) t;
}

/* Times. The engine's `now` and the session times are Unix milliseconds;
 * the configured durations are seconds (SEC_MS() converts); SessionInfo,
 * audit rows, events and the platform switch history keep Unix seconds
 * (ms_floor_s(), ms_ceil_s()). */
#define SEC_MS(x) ((int64_t) (x) *1000)

static inline int64_t ms_floor_s(int64_t ms) {
        return ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
}

static inline int64_t ms_ceil_s(int64_t ms) {
        return -ms_floor_s(-ms);
}

/* The millisecond part of time `which`: bits [10 * which, 10 * which + 10)
 * of msec[], little-endian; always within two of its bytes. */
static inline unsigned session_msec(const struct session *s, unsigned which) {
        unsigned bit = which * SESSION_MSEC_BITS;
        unsigned v = s->msec[bit / 8] | (unsigned) s->msec[bit / 8 + 1] << 8;

        return v >> bit % 8 & ((1u << SESSION_MSEC_BITS) - 1);
}

static inline void session_msec_set(struct session *s, unsigned which, unsigned ms) {
        unsigned bit = which * SESSION_MSEC_BITS, mask = ((1u << SESSION_MSEC_BITS) - 1) << bit % 8;
        unsigned v = s->msec[bit / 8] | (unsigned) s->msec[bit / 8 + 1] << 8;

        v = (v & ~mask) | (ms << bit % 8 & mask);
        s->msec[bit / 8] = (uint8_t) v;
        s->msec[bit / 8 + 1] = (uint8_t) (v >> 8);
}

static inline int64_t session_ms(const struct session *s, unsigned which) {
        return SEC_MS(s->sec[which]) + session_msec(s, which);
}

static inline void session_ms_set(struct session *s, unsigned which, int64_t ms) {
        if (ms < 0)
                ms = 0;
        if (ms > SEC_MS(UINT32_MAX) + 999)
                ms = SEC_MS(UINT32_MAX) + 999;
        s->sec[which] = (uint32_t) (ms / 1000);
        session_msec_set(s, which, (unsigned) (ms % 1000));
}

#define SWAP(a, b)                        \
        do {                              \
                __typeof__(a) tmp_ = (a); \
                (a) = (b);                \
                (b) = tmp_;               \
        } while (0)
#define GROW(arr, allocated, need) table_grow_array((void **) &(arr), &(allocated), (need), sizeof *(arr))

static inline uint64_t key_hash(const uint8_t key[16]) {
        uint64_t v;

        /* The key is a keyed hash already: any 8 bytes of it are uniform. */
        memcpy(&v, key, sizeof v);
        return v;
}

static inline const char *user_name(const struct engine *e, uint32_t h) {
        const struct user *u = &e->users[h];
        return u->name.ext.is_long ? u->name.ext.ptr : u->name.inl;
}

static inline bool user_used(const struct engine *e, uint32_t h) {
        const struct user *u = &e->users[h];
        return u->name.ext.is_long || u->name.inl[0];
}

static inline uint32_t fp32(uint64_t v) {
        uint32_t x = (uint32_t) v;
        return v == 0 ? 0 : x ? x : 1;
}

static inline uint16_t fp16(uint64_t v) {
        uint16_t x = (uint16_t) v;
        return v == 0 ? 0 : x ? x : 1;
}

static inline const char *platform_name(const struct engine *e, uint32_t ref) {
        return ref ? e->platforms[ref - 1].name : NULL;
}

static inline struct session *S(struct engine *e, uint32_t h) {
        assert(h < e->sessions_used && (e->sessions[h].flags & S_USED));
        return &e->sessions[h];
}

/* The entry a cleanup ask was made for, still in memory with its row. */
static inline bool cleanup_ask_current(const struct engine *e, const struct cleanup_ask *a) {
        return a->handle < e->sessions_used && (e->sessions[a->handle].flags & S_USED) &&
               e->sessions[a->handle].row_key == a->row_key;
}

static inline uint32_t session_find_key(struct engine *e, const uint8_t key[16]) {
        return hindex_find(&e->by_key, key_hash(key), key);
}

/* table.c */
int table_grow_array(void **p, size_t *allocated, size_t need, size_t size);
int table_grow_array32(void **p, uint32_t *allocated, uint32_t need, size_t size);
uint64_t table_name_hash(const struct engine *e, const char *s);
extern const struct hindex_ops table_session_index_ops;
extern const struct hindex_ops table_user_index_ops;
extern const struct hindex_ops table_platform_index_ops;
uint32_t table_user_find(struct engine *e, const char *name);
int table_user_get(struct engine *e, const char *name, uint32_t *ret);
void table_user_maybe_free(struct engine *e, uint32_t h);
int table_platform_get(struct engine *e, const char *name, uint32_t *ret);
void table_platform_put(struct engine *e, uint32_t ref);
void table_session_id(const struct engine *e, const struct session *s, char out[TOKEN_ID_STRING_LEN + 1]);
int table_session_add_hashed(struct engine *e, const struct store_session *row, uint32_t user_hash, uint32_t *ret);
int table_session_add(struct engine *e, const struct store_session *row, uint32_t *ret);
void table_session_remove(struct engine *e, uint32_t h);
void table_session_activity_moved(struct engine *e, uint32_t h);
void table_users_sort(struct engine *e);
int64_t table_session_end_time(const struct engine *e, const struct session *s, enum engine_end_reason *why);
enum engine_state table_session_state(const struct engine *e, const struct session *s, int64_t now, int64_t *end,
                                      enum engine_end_reason *why);
void table_info_fill(struct engine *e, uint32_t h, int64_t now, struct engine_info *i);
void table_info_from_row(const struct store_session *row, struct engine_info *i);

/* txn.c */
/* A call answered when the unit of work it wrote to is done: committed()
 * once the unit is, lost() when it is lost (r: the storage error; at
 * close, -ECANCELED). Each frees its wait. txn_wait_add() puts w in the
 * open unit. */
struct unit_wait {
        struct unit_wait *next;
        void (*committed)(struct engine *e, struct unit_wait *w);
        void (*lost)(struct engine *e, struct unit_wait *w, int r);
};
void txn_wait_add(struct engine *e, struct unit_wait *w);
void txn_waits_free(struct engine *e);
int txn_storage_errno(int r);
int txn_fail(struct engine *e, int r);
int txn_begin(struct engine *e);
int txn_row_touch(struct engine *e, int64_t row_key, uint32_t h);
int txn_audit_text(struct engine *e, int64_t now, const char *kind, const char *user_id, const char *session_id,
                   const char *text);
/* Audit details without jansson objects, for the hot paths: begin, the
 * members, then txn_audit_written() closes the object and writes the row
 * (check txn_audit_on() first: nothing is built when auditing is off).
 * The text is byte for byte what json_dumps() made of the same object. */
bool txn_audit_on(const struct engine *e);
void txn_detail_begin(struct varlink_writer *w);
void txn_detail_string(struct varlink_writer *w, const char *key, const char *value); /* NULL: null */
void txn_detail_int(struct varlink_writer *w, const char *key, int64_t value);
/* Ends the object: its text (malloc'ed), or NULL (out of memory). */
char *txn_detail_end(struct varlink_writer *w);
int txn_audit_written(struct engine *e, int64_t now, const char *kind, const char *user_id, const char *session_id,
                      struct varlink_writer *w);
int txn_audit(struct engine *e, int64_t now, const char *kind, const char *user_id, const char *session_id,
              json_t *detail);

/* bus.c */
void bus_event_clear(struct pending_event *ev);
void bus_queue_clear(struct event_queue *q);
void bus_dispatch_schedule(struct engine *e);
void bus_emit_take(struct engine *e, int64_t now, const char *kind, const char *session_id, char *user_id,
                   json_t *detail);
void bus_emit_take_committed(struct engine *e, int64_t now, const char *kind, const char *session_id, char *user_id,
                             json_t *detail);
void bus_emit_text(struct engine *e, int64_t now, const char *kind, const char *session_id, const char *user_id,
                   char *detail_text);
void bus_emit_text_applied(struct engine *e, int64_t now, const char *kind, const char *session_id, const char *user_id,
                           char *detail_text, const int *applied);
void bus_emit(struct engine *e, int64_t now, const char *kind, const char *session_id, const char *user_id,
              json_t *detail);
bool bus_observed(const struct engine *e);

/* sync.c */
void sync_waits_hand_off(struct engine *e);
void sync_waits_committed(struct engine *e);
void sync_waits_lost(struct engine *e, int r, bool open_too);
void sync_waits_abort(struct engine *e, int r);
void sync_waits_free(struct engine *e);

/* security.c */
void security_user_sec_free(struct user_sec *sec);
void security_suspicious(struct engine *e, int64_t now, const char *user_id, const char *session_id, const char *what);
void security_failed_validation(struct engine *e, int64_t now, enum engine_failure f, const char *user_id,
                                const char *session_id, enum engine_end_reason end_reason);

/* auditagg.c */
void auditagg_add(struct engine *e, int64_t now, enum engine_failure f, const char *user_id, const char *session_id,
                  enum engine_end_reason why);
void auditagg_flush(struct engine *e);
void auditagg_free(struct engine *e);

/* session.c */
/* fleet.c: on a shared store (e->fleet), memory checked against it */
int engine_fleet_start(struct engine *e);
/* How long cached sessions are honoured once the shared store is unreachable. */
#define FLEET_CACHE_GRACE_MS 5000
/* A probe without an answer this long is a failed one. */
#define FLEET_PROBE_SLOW_MS 2000
void fleet_tick(struct engine *e, int64_t now); /* fleet-probe.c */
/* Waits for a probe running on a worker (fleet-probe.c). */
void fleet_probe_stop(struct engine *e);
/* Every cached session read again (changes may have been missed). */
void fleet_reload_all(struct engine *e);
void fleet_hand_off(struct engine *e);
void fleet_committed(struct engine *e);
void fleet_lost(struct engine *e, bool inflight_too);
void fleet_free(struct engine *e);
/* Before the store closes: waits for a probe running on a worker, and
 * gives up a re-read of every session under way. */
void fleet_stop(struct engine *e);
bool fleet_cache_stale(const struct engine *e, int64_t now);
/* A row another daemon changed (as if its change were heard): read after
 * the open unit's commit, and memory follows. */
void fleet_row_changed(struct engine *e, int64_t row_key, enum store_change_kind kind);

/* Asks for h's row to be read by the writer after the open unit's commit
 * (the cleanup's candidates): once read and in memory, the entry is ended
 * if it still awaits cleanup (cleanup_end_read). */
int fleet_cleanup_ask(struct engine *e, uint32_t h);
/* Reads *h's row again: *h is then its entry, or NIL when it ended (or is gone). */
int fleet_refresh(struct engine *e, uint32_t *h);
/* A token's row, live or ended: a live one is taken into memory (*h), an
 * ended one leaves it and goes to ended_cb (*h NIL); -ENOENT: none. */
int fleet_lookup(struct engine *e, const uint8_t hash[TOKEN_HASH_BYTES], uint32_t *h, store_session_fn ended_cb,
                 void *userdata);

/* A token's fetch (fleet.c): the one being answered now for this hash, if
 * any; its error; what it read when it was read (found or not), NULL when
 * it could not be (then read now). ask: records the miss for
 * engine_fetch_wait(), false when the caller cannot wait. */
struct ended_lookup {
        bool found;
        enum engine_end_reason reason;
        int64_t ended_at;
        char user_id[ENGINE_USER_ID_MAX + 1];
        char id[TOKEN_ID_STRING_LEN + 1];
};
const struct engine_fetch *fleet_fetched(const struct engine *e, const uint8_t hash[TOKEN_HASH_BYTES]);
int fleet_fetch_error(const struct engine_fetch *f);
const struct ended_lookup *fleet_fetch_ended(const struct engine_fetch *f);
bool fleet_fetch_live(const struct engine_fetch *f);
bool fleet_fetch_ask(struct engine *e, const uint8_t hash[TOKEN_HASH_BYTES]);
void fleet_hand_off_failed(struct engine *e, int r);

/* session.c */
int session_ended_cb(const struct store_session *row, void *userdata);
/* Ends the session of a row read by its id, as an operator's Terminate
 * (session-admin.c): -ENOENT when it is not live in the store or not in
 * memory. */
int session_terminate_row(struct engine *e, int64_t now, const struct store_session *row);
int session_end(struct engine *e, int64_t now, uint32_t h, enum engine_end_reason reason, int64_t ended_at,
                const char *audit_kind, char id_out[TOKEN_ID_STRING_LEN + 1]);
int session_invalid(struct engine_error *err, const char *field, const char *reason);
const char *session_check_name(const char *s, size_t max);
int session_lookup(struct engine *e, int64_t now, const char *token, bool count, uint32_t *ret,
                   struct engine_error *err);
int session_lookup_live(struct engine *e, int64_t now, const char *token, bool count, uint32_t *ret,
                        enum engine_state *state, struct engine_error *err);

/* platform.c */
/* Rotation (a fleet): old_h's switch still to be decided makes the new
 * row's platform the store's to tell. */
void platform_rotated(struct engine *e, uint32_t old_h, int64_t new_row_key);

/* cleanup.c */
/* A fleet's candidate h, its row just read after a commit: ended if, as
 * read, it still awaits cleanup (counted by the next cleanup step). */
int cleanup_end_read(struct engine *e, uint32_t h, int64_t now);
unsigned cleanup_user_count_live(struct engine *e, uint32_t user, int64_t now);
int cleanup_user_enforce(struct engine *e, int64_t now, uint32_t user, uint32_t keep, int64_t max, unsigned budget,
                         char (**ids)[TOKEN_ID_STRING_LEN + 1], size_t *n_ids, unsigned *ended);
