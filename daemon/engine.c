/* The session engine: see engine.h for the interface and the error mapping.
 *
 * Memory. Everything a validation needs is in memory, so a Validate that
 * finds its session never touches SQLite: a session is one 64-byte entry in
 * an array (struct session), found through an open-addressing index of
 * 4-byte slots keyed by the first 16 bytes of the token's keyed hash
 * (compared with sodium_memcmp). Times are 32-bit Unix seconds, the
 * fingerprints short prefixes of their keyed hashes, users and platforms
 * interned handles, the public id derived from the row number when needed;
 * ip and user agent texts stay in the store. Users are interned (one copy
 * of each name, short ones inside the 40-byte entry) and link their
 * sessions in a list, which is what the concurrency limit and ListUser
 * walk. A million sessions of a million users take about 140 MiB of
 * resident memory with SQLite's caches.
 *
 * Writes. The first write of a loop iteration opens a transaction
 * (BEGIN IMMEDIATE); engine_commit(), called by the server before it sends
 * replies, commits it: every request of the iteration shares one commit.
 * Each write records the row it touched ("affected"). If the commit fails,
 * or a statement fails so that the transaction cannot be trusted, the
 * engine rolls back and reloads the affected rows from the store: entries
 * created in the transaction disappear, ended ones come back, rotated ones
 * get their old token back. Memory then matches the database again, and the
 * server turns the held replies into StorageError/StorageFull. After such a
 * failure no further write is accepted until the next engine_commit(), so
 * a write is never committed behind a reply that said it failed.
 *
 * Touches. Validate and Heartbeat move last_activity in memory only. An
 * entry becomes dirty once it is ahead of the store by the touch
 * granularity (1% of the idle timeout, between 1 and 60 seconds), and a
 * timer writes dirty entries every two seconds in batches of 512, yielding
 * to the loop between batches; shutdown writes them all. A crash thus loses
 * at most granularity + 2 seconds of idle-time precision, never a session,
 * and a million busy sessions do not turn every validation into a write.
 *
 * Expiry is computed, not stored: the end of a session is the earliest of
 * last_activity + idle_timeout, renewed_at + session_lifetime and
 * created_at + absolute_timeout (ties name idle, then lifetime, then
 * absolute). Within expiration_grace after it the session is "grace"
 * (honoured, never touched); after it "expired" until cleanup ends it.
 * Explicit ends (destroyed, terminated, evicted, rotated) take effect at
 * once, without grace: a logged-out token must stop working.
 *
 * Rotation makes a new session (new token, new id) that keeps created_at,
 * renewed_at, platform, client, sync state and switch history, and ends the
 * old one with reason rotated; its token then answers Expired(rotated), and
 * its use after expiration_grace counts as suspicious.
 *
 * Cleanup ends expired sessions in calls bounded by a count and, for the
 * background jobs, by a deadline on the loop's clock
 * (engine_cleanup_expired_until): an ended session costs 10 to 30 us,
 * nearly all of it SQLite's update of the three ended-row indexes (two of
 * them at random places: two WAL pages a session), so its audit detail is
 * a constant text and its event keeps the one copy of the user's name.
 *
 * Suspicious events (user agent changes, IP or language changes, refused
 * platform switches, rotated tokens used after grace, bursts of 10 failed
 * validations of one user within a minute) are counted per user in a
 * sliding hour; reaching security.suspicious_activity_threshold writes one
 * "suspicious" audit row until the count falls below it again.
 */
#include "engine.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "clock.h"
#include "daemon.h"
#include "hindex.h"
#include "log.h"
#include "store.h"

#define NIL UINT32_MAX
#define HOUR 3600
#define TOUCH_FLUSH_INTERVAL_MS 2000
#define TOUCH_FLUSH_BATCH 512
#define BURST_WINDOW 60   /* seconds */
#define BURST_FAILURES 10 /* failed validations of one user in the window */
#define SWEEP_EVERY_TICKS 30
#define MAX_OBSERVERS 8

enum {
        S_USED = 1u << 0,
        S_DIRTY = 1u << 1, /* last_activity ahead of the store */
};

enum { FP_USER_AGENT, FP_IP, FP_LANGUAGE, FP_ENCODING, _FP_MAX };

/* 64 bytes. The public id is not stored: it is derived from created_at and
 * rowid (token_id_derive). Fingerprints keep a prefix of their keyed hash:
 * 32 bits for the user agent (a change refuses the validation), 16 bits for
 * the others (a change is only recorded). */
struct session {
        uint8_t key[16]; /* first half of the keyed token hash */
        int64_t rowid;
        uint32_t user;      /* users[] handle */
        uint32_t user_next; /* next session of the user; free list link when unused */
        uint32_t platform;  /* platforms[] handle + 1, 0: none */
        uint32_t created_at;
        uint32_t last_activity;
        uint32_t renewed_at;
        uint32_t persisted_activity; /* last_activity as written to the store */
        uint32_t fp_user_agent;      /* 0: none */
        uint16_t fp_small[3];        /* ip, accept_language, accept_encoding; 0: none */
        uint16_t flags;
};

struct user_sec {
        int64_t *times; /* suspicious events in the sliding hour, oldest first */
        uint32_t n, cap;
        bool alerted;
        int64_t fail_start;
        uint32_t fail_count;
};

/* 40 bytes. Names shorter than USER_INLINE live in the entry itself (most
 * user ids are short: no allocation, no pointer); longer ones are
 * allocated, marked by the last byte. An unused entry has an empty name. */
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
        uint32_t head; /* first session, NIL: none; next free entry when unused */
        uint32_t n_sessions;
        uint32_t sec; /* secs[] index + 1, 0: none */
};

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
        int64_t rowid;
        uint32_t handle;
        uint32_t last_activity; /* in memory when the row was first written */
};

struct pending_event {
        const char *kind;
        int64_t time;
        char session_id[TOKEN_ID_STRING_LEN + 1];
        char *user_id;
        json_t *detail;
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
        uint8_t name_key[crypto_shorthash_KEYBYTES];

        struct session *sessions;
        uint32_t sessions_used, sessions_allocated, sessions_free, n_sessions;
        struct hindex by_key;

        struct user *users;
        uint32_t users_used, users_allocated, users_free, n_users;
        struct hindex by_user;
        struct sec_entry *secs; /* users with suspicious-activity records */
        size_t n_secs, secs_allocated;
        int64_t next_rowid; /* rowids are chosen here: the id derives from them */

        struct platform *platforms;
        uint32_t platforms_used, platforms_allocated, platforms_free;
        struct hindex by_platform;

        /* the transaction of this iteration */
        bool txn;
        int commit_error; /* a failed statement already aborted this iteration's writes */
        int storage_error; /* the error of the last failed commit, 0 once one succeeds */
        uint64_t write_seq;
        struct affected *affected;
        size_t n_affected, affected_allocated;

        uint32_t *dirty;
        size_t n_dirty, dirty_allocated;

        struct event_queue ready, in_txn;
        struct observer observers[MAX_OBSERVERS];
        size_t n_observers;

        uv_timer_t *flush_timer;
        uv_timer_t *dispatch_timer;
        unsigned ticks;

        uint32_t cleanup_cursor;
        uint32_t cleanup_quiet; /* entries the cursor passed since it last ended one */
        uint32_t limit_cursor;

        struct load_batch *loading; /* while the store loads */

        struct engine_counters counters;
};

static const char *const end_reason_names[_ENGINE_END_MAX] = {
        [ENGINE_END_NONE] = "none",
        [ENGINE_END_IDLE] = "idle",
        [ENGINE_END_LIFETIME] = "lifetime",
        [ENGINE_END_ABSOLUTE] = "absolute",
        [ENGINE_END_TERMINATED] = "terminated",
        [ENGINE_END_EVICTED] = "evicted",
        [ENGINE_END_ROTATED] = "rotated",
        [ENGINE_END_DESTROYED] = "destroyed",
};

/* The detail of an "ended" audit row, as json_dumps(JSON_COMPACT) writes
 * {"reason": name}: written as is, per ended session, by the cleanup. */
static const char *const end_reason_audit_texts[_ENGINE_END_MAX] = {
        [ENGINE_END_NONE] = "{\"reason\":\"none\"}",
        [ENGINE_END_IDLE] = "{\"reason\":\"idle\"}",
        [ENGINE_END_LIFETIME] = "{\"reason\":\"lifetime\"}",
        [ENGINE_END_ABSOLUTE] = "{\"reason\":\"absolute\"}",
        [ENGINE_END_TERMINATED] = "{\"reason\":\"terminated\"}",
        [ENGINE_END_EVICTED] = "{\"reason\":\"evicted\"}",
        [ENGINE_END_ROTATED] = "{\"reason\":\"rotated\"}",
        [ENGINE_END_DESTROYED] = "{\"reason\":\"destroyed\"}",
};

const char *engine_end_reason_to_string(enum engine_end_reason r) {
        return (unsigned)r < _ENGINE_END_MAX ? end_reason_names[r] : "none";
}

enum engine_end_reason engine_end_reason_from_string(const char *s) {
        for (int i = 1; s && i < _ENGINE_END_MAX; i++)
                if (strcmp(s, end_reason_names[i]) == 0)
                        return (enum engine_end_reason)i;
        return ENGINE_END_NONE;
}

const char *engine_state_to_string(enum engine_state s) {
        switch (s) {
        case ENGINE_STATE_ACTIVE: return "active";
        case ENGINE_STATE_GRACE: return "grace";
        case ENGINE_STATE_EXPIRED: return "expired";
        case ENGINE_STATE_ENDED: return "ended";
        }
        return "ended";
}

const char *engine_failure_to_string(enum engine_failure f) {
        switch (f) {
        case ENGINE_FAIL_NOT_FOUND: return "not_found";
        case ENGINE_FAIL_EXPIRED: return "expired";
        case ENGINE_FAIL_FINGERPRINT: return "fingerprint";
        case ENGINE_FAIL_INVALID: return "invalid";
        case _ENGINE_FAIL_MAX: break;
        }
        return "invalid";
}

static const struct sessiond_config *cfg(const struct engine *e) {
        return e->d->config;
}

static uint32_t t32(int64_t t) {
        if (t < 0)
                return 0;
        if (t > (int64_t)UINT32_MAX)
                return UINT32_MAX;
        return (uint32_t)t;
}

uint64_t engine_write_seq(const struct engine *e) { return e->write_seq; }
const struct engine_counters *engine_get_counters(const struct engine *e) { return &e->counters; }

int engine_storage_error(const struct engine *e) { return e->storage_error; }
/* A failed statement leaves no transaction but an error to report: that is
 * pending too, so that the server asks and fails the held replies. */
bool engine_has_pending(const struct engine *e) { return e->txn || e->commit_error; }

/* ---- growable arrays ------------------------------------------------------- */

static int grow_array(void **p, size_t *allocated, size_t need, size_t size) {
        size_t n;
        void *q;

        if (need <= *allocated)
                return 0;
        n = *allocated ? *allocated * 2 : 64;
        while (n < need)
                n *= 2;
        q = realloc(*p, n * size);
        if (!q)
                return -ENOMEM;
        *p = q;
        *allocated = n;
        return 0;
}

#define GROW(arr, allocated, need) grow_array((void **)&(arr), &(allocated), (need), sizeof *(arr))

static int grow_array32(void **p, uint32_t *allocated, uint32_t need, size_t size) {
        size_t a = *allocated;
        int r;

        if (need == NIL)
                return -ENOMEM;
        r = grow_array(p, &a, need, size);
        if (r < 0)
                return r;
        *allocated = a > NIL - 1 ? NIL - 1 : (uint32_t)a;
        return 0;
}

/* ---- hashing of names and keys ---------------------------------------------- */

static uint64_t name_hash(const struct engine *e, const char *s) {
        uint8_t out[crypto_shorthash_BYTES];
        uint64_t v;

        crypto_shorthash(out, (const unsigned char *)s, strlen(s), e->name_key);
        memcpy(&v, out, sizeof v);
        return v;
}

static uint64_t key_hash(const uint8_t key[16]) {
        uint64_t v;

        /* The key is a keyed hash already: any 8 bytes of it are uniform. */
        memcpy(&v, key, sizeof v);
        return v;
}

static uint64_t session_index_hash(uint32_t h, void *ctx) {
        struct engine *e = ctx;
        return key_hash(e->sessions[h].key);
}

static bool session_index_equal(uint32_t h, const void *key, void *ctx) {
        struct engine *e = ctx;
        return sodium_memcmp(e->sessions[h].key, key, 16) == 0;
}

static const struct hindex_ops session_index_ops = {session_index_hash, session_index_equal};

static const char *user_name(const struct engine *e, uint32_t h) {
        const struct user *u = &e->users[h];
        return u->name.ext.is_long ? u->name.ext.ptr : u->name.inl;
}

static bool user_used(const struct engine *e, uint32_t h) {
        const struct user *u = &e->users[h];
        return u->name.ext.is_long || u->name.inl[0];
}

static uint64_t user_index_hash(uint32_t h, void *ctx) {
        struct engine *e = ctx;
        return e->users[h].hash;
}

static bool user_index_equal(uint32_t h, const void *key, void *ctx) {
        struct engine *e = ctx;
        return strcmp(user_name(e, h), key) == 0;
}

static const struct hindex_ops user_index_ops = {user_index_hash, user_index_equal};

static uint64_t platform_index_hash(uint32_t h, void *ctx) {
        struct engine *e = ctx;
        return e->platforms[h].hash;
}

static bool platform_index_equal(uint32_t h, const void *key, void *ctx) {
        struct engine *e = ctx;
        return strcmp(e->platforms[h].name, key) == 0;
}

static const struct hindex_ops platform_index_ops = {platform_index_hash, platform_index_equal};

static uint32_t fp32(uint64_t v) {
        uint32_t x = (uint32_t)v;
        return v == 0 ? 0 : x ? x : 1;
}

static uint16_t fp16(uint64_t v) {
        uint16_t x = (uint16_t)v;
        return v == 0 ? 0 : x ? x : 1;
}

/* The fingerprint prefix memory keeps for field i, and the one it has. */
static uint32_t fp_prefix(int i, uint64_t full) {
        return i == FP_USER_AGENT ? fp32(full) : fp16(full);
}

static uint32_t fp_stored(const struct session *s, int i) {
        return i == FP_USER_AGENT ? s->fp_user_agent : s->fp_small[i - 1];
}

static void fp_store(struct session *s, int i, uint64_t full) {
        if (i == FP_USER_AGENT)
                s->fp_user_agent = fp32(full);
        else
                s->fp_small[i - 1] = fp16(full);
}

/* ---- users and platforms ----------------------------------------------------- */

static uint32_t user_find(struct engine *e, const char *name) {
        return hindex_find(&e->by_user, name_hash(e, name), name);
}

/* The user of that name, added if new. `name` must not point into the
 * users array (adding may move it): pass a name from elsewhere. */
static int user_get_hashed(struct engine *e, const char *name, uint32_t hash, uint32_t *ret) {
        uint32_t h = hindex_find(&e->by_user, hash, name);
        size_t len = strlen(name);
        struct user *u;
        char *copy = NULL;
        int r;

        if (h != NIL) {
                *ret = h;
                return 0;
        }
        assert(len > 0);
        if (len >= USER_INLINE) {
                copy = strdup(name);
                if (!copy)
                        return -ENOMEM;
        }
        if (e->users_free == NIL) {
                r = grow_array32((void **)&e->users, &e->users_allocated, e->users_used + 1, sizeof *e->users);
                if (r < 0) {
                        free(copy);
                        return r;
                }
        }
        h = e->users_free != NIL ? e->users_free : e->users_used;
        r = hindex_insert(&e->by_user, hash, h);
        if (r < 0) {
                free(copy);
                return r;
        }
        u = &e->users[h];
        if (h == e->users_free)
                e->users_free = u->head;
        else
                e->users_used++;
        memset(u, 0, sizeof *u);
        if (copy) {
                u->name.ext.ptr = copy;
                u->name.ext.is_long = 1;
        } else
                memcpy(u->name.inl, name, len + 1);
        u->hash = hash;
        u->head = NIL;
        e->n_users++;
        *ret = h;
        return 0;
}

static int user_get(struct engine *e, const char *name, uint32_t *ret) {
        return user_get_hashed(e, name, (uint32_t)name_hash(e, name), ret);
}

static void user_sec_free(struct user_sec *sec) {
        if (sec) {
                free(sec->times);
                free(sec);
        }
}

/* Frees a user without sessions and without security records. */
static void user_maybe_free(struct engine *e, uint32_t h) {
        struct user *u = &e->users[h];

        if (u->n_sessions > 0 || u->sec)
                return;
        hindex_remove(&e->by_user, u->hash, h);
        if (u->name.ext.is_long)
                free(u->name.ext.ptr);
        memset(&u->name, 0, sizeof u->name);
        u->head = e->users_free;
        e->users_free = h;
        e->n_users--;
}

static int platform_get(struct engine *e, const char *name, uint32_t *ret) {
        uint64_t hash;
        uint32_t h;
        char *copy;
        int r;

        if (!name) {
                *ret = 0;
                return 0;
        }
        hash = name_hash(e, name);
        h = hindex_find(&e->by_platform, hash, name);
        if (h != NIL) {
                e->platforms[h].refs++;
                *ret = h + 1;
                return 0;
        }
        copy = strdup(name);
        if (!copy)
                return -ENOMEM;
        if (e->platforms_free != NIL)
                h = e->platforms_free;
        else {
                r = grow_array32((void **)&e->platforms, &e->platforms_allocated, e->platforms_used + 1,
                                 sizeof *e->platforms);
                if (r < 0) {
                        free(copy);
                        return r;
                }
                h = e->platforms_used;
        }
        r = hindex_insert(&e->by_platform, hash, h);
        if (r < 0) {
                free(copy);
                return r;
        }
        if (h == e->platforms_free)
                e->platforms_free = e->platforms[h].next_free;
        else
                e->platforms_used++;
        e->platforms[h] = (struct platform){.name = copy, .hash = hash, .refs = 1, .next_free = NIL};
        *ret = h + 1;
        return 0;
}

static void platform_put(struct engine *e, uint32_t ref) {
        struct platform *p;

        if (ref == 0)
                return;
        p = &e->platforms[ref - 1];
        assert(p->refs > 0);
        if (--p->refs > 0)
                return;
        hindex_remove(&e->by_platform, p->hash, ref - 1);
        free(p->name);
        p->name = NULL;
        p->next_free = e->platforms_free;
        e->platforms_free = ref - 1;
}

static const char *platform_name(const struct engine *e, uint32_t ref) {
        return ref ? e->platforms[ref - 1].name : NULL;
}

/* ---- sessions in memory -------------------------------------------------------- */

static struct session *S(struct engine *e, uint32_t h) {
        assert(h < e->sessions_used && (e->sessions[h].flags & S_USED));
        return &e->sessions[h];
}

static uint32_t session_find_key(struct engine *e, const uint8_t key[16]) {
        return hindex_find(&e->by_key, key_hash(key), key);
}

static void session_id(const struct engine *e, const struct session *s, char out[TOKEN_ID_STRING_LEN + 1]) {
        uint8_t id[TOKEN_ID_BYTES];

        token_id_derive(&e->key, s->created_at, s->rowid, id);
        token_id_format(id, out);
}

/* Adds a session to memory from a store row. */
/* user_hash: (uint32_t)name_hash() of row->user_id. */
static int session_add_hashed(struct engine *e, const struct store_session *row, uint32_t user_hash,
                              uint32_t *ret) {
        uint32_t h, user, platform, next_free;
        struct session *s;
        uint8_t id[TOKEN_ID_BYTES];
        char text[TOKEN_ID_STRING_LEN + 1];
        int r;

        /* Memory derives ids from created_at and rowid: a row whose id was
         * made otherwise (or a foreign one) would show the wrong id. */
        token_id_derive(&e->key, row->created_at, row->rowid, id);
        token_id_format(id, text);
        if (strcmp(text, row->id) != 0 || !row->user_id[0]) {
                log_warning("Store %s: session row %lld has a malformed id or user; skipped.", store_path(e->store),
                            (long long)row->rowid);
                return -EINVAL;
        }
        if (e->sessions_free != NIL)
                h = e->sessions_free;
        else {
                r = grow_array32((void **)&e->sessions, &e->sessions_allocated, e->sessions_used + 1,
                                 sizeof *e->sessions);
                if (r < 0)
                        return r;
                h = e->sessions_used;
        }
        r = user_get_hashed(e, row->user_id, user_hash, &user);
        if (r < 0)
                return r;
        r = platform_get(e, row->platform_id, &platform);
        if (r < 0) {
                user_maybe_free(e, user);
                return r;
        }
        s = &e->sessions[h];
        next_free = s->user_next; /* when h is the head of the free list */
        *s = (struct session){
                .rowid = row->rowid,
                .user = user,
                .platform = platform,
                .created_at = t32(row->created_at),
                .last_activity = t32(row->last_activity),
                .renewed_at = t32(row->renewed_at),
                .persisted_activity = t32(row->last_activity),
                .fp_user_agent = fp32(row->fp_user_agent),
                .fp_small = {fp16(row->fp_ip), fp16(row->fp_accept_language), fp16(row->fp_accept_encoding)},
                .flags = S_USED,
        };
        memcpy(s->key, row->token_hash, 16);
        r = hindex_insert(&e->by_key, key_hash(s->key), h);
        if (r < 0) {
                s->flags = 0;
                platform_put(e, platform);
                user_maybe_free(e, user);
                return r;
        }
        if (h == e->sessions_free)
                e->sessions_free = next_free;
        else
                e->sessions_used++;
        s->user_next = e->users[user].head;
        e->users[user].head = h;
        e->users[user].n_sessions++;
        e->n_sessions++;
        *ret = h;
        return 0;
}

static int session_add(struct engine *e, const struct store_session *row, uint32_t *ret) {
        return session_add_hashed(e, row, (uint32_t)name_hash(e, row->user_id), ret);
}

static void session_remove(struct engine *e, uint32_t h) {
        struct session *s = S(e, h);
        struct user *u = &e->users[s->user];
        uint32_t *p;

        hindex_remove(&e->by_key, key_hash(s->key), h);
        for (p = &u->head; *p != NIL; p = &e->sessions[*p].user_next)
                if (*p == h) {
                        *p = s->user_next;
                        break;
                }
        u->n_sessions--;
        platform_put(e, s->platform);
        user_maybe_free(e, s->user);
        sodium_memzero(s->key, sizeof s->key);
        s->flags = 0;
        s->rowid = 0;
        s->user_next = e->sessions_free;
        e->sessions_free = h;
        e->n_sessions--;
}

static int64_t session_end_time(const struct engine *e, const struct session *s, enum engine_end_reason *why) {
        const struct sessiond_config *c = cfg(e);
        int64_t end = (int64_t)s->last_activity + c->timeout.idle_timeout;
        int64_t life = (int64_t)s->renewed_at + c->timeout.session_lifetime;
        int64_t abs_end = (int64_t)s->created_at + c->timeout.absolute_timeout;
        enum engine_end_reason r = ENGINE_END_IDLE;

        if (life < end) {
                end = life;
                r = ENGINE_END_LIFETIME;
        }
        if (abs_end < end) {
                end = abs_end;
                r = ENGINE_END_ABSOLUTE;
        }
        if (why)
                *why = r;
        return end;
}

static enum engine_state session_state(const struct engine *e, const struct session *s, int64_t now,
                                       int64_t *end, enum engine_end_reason *why) {
        int64_t t = session_end_time(e, s, why);

        if (end)
                *end = t;
        if (now < t)
                return ENGINE_STATE_ACTIVE;
        if (now < t + cfg(e)->timeout.expiration_grace)
                return ENGINE_STATE_GRACE;
        return ENGINE_STATE_EXPIRED;
}

static void info_fill(struct engine *e, uint32_t h, int64_t now, struct engine_info *i) {
        const struct session *s = S(e, h);

        memset(i, 0, sizeof *i);
        session_id(e, s, i->id);
        i->user_id = user_name(e, s->user);
        i->platform_id = platform_name(e, s->platform);
        i->created_at = s->created_at;
        i->last_activity = s->last_activity;
        i->renewed_at = s->renewed_at;
        i->state = session_state(e, s, now, &i->expires_at, &i->end_reason);
        i->expires_in = i->expires_at > now ? i->expires_at - now : 0;
        i->warning = i->expires_in <= cfg(e)->timeout.warning_threshold;
}

/* An ended row (or a live row not in memory) as SessionInfo. */
static void info_from_row(const struct store_session *row, struct engine_info *i) {
        memset(i, 0, sizeof *i);
        snprintf(i->id, sizeof i->id, "%s", row->id);
        i->user_id = row->user_id;
        i->platform_id = row->platform_id;
        i->created_at = row->created_at;
        i->last_activity = row->last_activity;
        i->renewed_at = row->renewed_at;
        i->ip = row->ip;
        i->user_agent = row->user_agent;
        i->state = ENGINE_STATE_ENDED;
        i->ended_at = row->ended_at;
        i->expires_at = row->ended_at;
        i->end_reason = engine_end_reason_from_string(row->end_reason);
        i->expires_in = 0;
        i->warning = true;
}

/* ---- events --------------------------------------------------------------------- */

static void event_clear(struct pending_event *ev) {
        free(ev->user_id);
        json_decref(ev->detail);
}

static void queue_clear(struct event_queue *q) {
        for (size_t i = 0; i < q->n; i++)
                event_clear(&q->items[i]);
        q->n = 0;
}

static void dispatch_cb(uv_timer_t *t) {
        engine_dispatch_events(t->data);
}

static void schedule_dispatch(struct engine *e) {
        if (e->ready.n == 0)
                return;
        if (e->dispatch_timer)
                uv_timer_start(e->dispatch_timer, dispatch_cb, 0, 0);
        else
                engine_dispatch_events(e);
}

void engine_dispatch_events(struct engine *e) {
        struct event_queue q = e->ready;

        e->ready = (struct event_queue){0};
        for (size_t i = 0; i < q.n; i++) {
                struct pending_event *p = &q.items[i];
                struct engine_event ev = {
                        .kind = p->kind,
                        .time = p->time,
                        .session_id = p->session_id[0] ? p->session_id : NULL,
                        .user_id = p->user_id,
                        .detail = p->detail,
                };
                for (size_t k = 0; k < e->n_observers; k++)
                        e->observers[k].fn(&ev, e->observers[k].userdata);
        }
        queue_clear(&q);
        free(q.items);
}

/* Queues an event; steals detail and user_id (malloc'ed or NULL). Built
 * only when somebody listens. */
static void emit_take(struct engine *e, int64_t now, const char *kind, const char *session_id, char *user_id,
                      json_t *detail) {
        struct event_queue *q = e->txn ? &e->in_txn : &e->ready;
        struct pending_event *p;

        if (e->n_observers == 0 || GROW(q->items, q->allocated, q->n + 1) < 0) {
                json_decref(detail);
                free(user_id);
                return;
        }
        p = &q->items[q->n];
        *p = (struct pending_event){.kind = kind, .time = now, .detail = detail ? detail : json_object(),
                                    .user_id = user_id};
        if (session_id)
                memcpy(p->session_id, session_id, strnlen(session_id, TOKEN_ID_STRING_LEN));
        q->n++;
        if (q == &e->ready)
                schedule_dispatch(e);
}

/* Queues an event; steals detail, copies user_id. */
static void emit(struct engine *e, int64_t now, const char *kind, const char *session_id, const char *user_id,
                 json_t *detail) {
        emit_take(e, now, kind, session_id, user_id && e->n_observers > 0 ? strdup(user_id) : NULL, detail);
}

static bool observed(const struct engine *e) {
        return e->n_observers > 0;
}

int engine_add_observer(struct engine *e, engine_observer_fn fn, void (*free_fn)(void *userdata), void *userdata) {
        assert(fn);
        if (e->n_observers >= MAX_OBSERVERS)
                return -ENOSPC;
        e->observers[e->n_observers++] = (struct observer){fn, free_fn, userdata};
        return 0;
}

void engine_remove_observer(struct engine *e, engine_observer_fn fn, void *userdata) {
        for (size_t i = 0; i < e->n_observers; i++)
                if (e->observers[i].fn == fn && e->observers[i].userdata == userdata) {
                        memmove(&e->observers[i], &e->observers[i + 1],
                                (e->n_observers - i - 1) * sizeof e->observers[0]);
                        e->n_observers--;
                        return;
                }
}

void *engine_find_observer(struct engine *e, engine_observer_fn fn) {
        for (size_t i = 0; i < e->n_observers; i++)
                if (e->observers[i].fn == fn)
                        return e->observers[i].userdata;
        return NULL;
}

/* ---- transactions ----------------------------------------------------------------- */

static int storage_errno(int r) {
        return r == -ENOSPC || r == -ENOMEM ? r : -EIO;
}

struct reload_ctx {
        struct engine *e;
        uint32_t last_activity; /* of the entry memory had, 0: none */
};

static int reload_cb(const struct store_session *row, void *userdata) {
        struct reload_ctx *x = userdata;
        struct engine *e = x->e;
        uint32_t last = x->last_activity, h, existing;

        if (row->ended_at != 0)
                return 0;
        existing = session_find_key(e, row->token_hash);
        if (existing != NIL)
                session_remove(e, existing);
        if (session_add(e, row, &h) < 0) {
                log_error("Store %s: could not restore session %s in memory after a rollback.",
                          store_path(e->store), row->id);
                return 0;
        }
        if (last > e->sessions[h].last_activity) {
                /* Keep the newer touch; it goes to the store with the next flush. */
                e->sessions[h].last_activity = last;
                if (GROW(e->dirty, e->dirty_allocated, e->n_dirty + 1) == 0) {
                        e->sessions[h].flags |= S_DIRTY;
                        e->dirty[e->n_dirty++] = h;
                }
        }
        return 0;
}

static int affected_cmp(const void *a, const void *b) {
        const struct affected *x = a, *y = b;
        return x->rowid < y->rowid ? -1 : x->rowid > y->rowid;
}

/* After a rollback: make memory match the store for every row the
 * transaction touched. */
static void reload_affected(struct engine *e) {
        qsort(e->affected, e->n_affected, sizeof *e->affected, affected_cmp);
        for (size_t i = 0; i < e->n_affected; i++) {
                struct affected *a = &e->affected[i];
                struct reload_ctx x = {e, 0};

                if (i > 0 && a->rowid == e->affected[i - 1].rowid)
                        continue;
                /* The entry recorded with this rowid, if it is still the
                 * same session (handles are reused). */
                for (size_t k = i; k < e->n_affected && e->affected[k].rowid == a->rowid; k++) {
                        uint32_t h = e->affected[k].handle;

                        /* Touches are not part of the transaction: keep the
                         * newest one memory had, even for an entry that the
                         * transaction removed. */
                        if (e->affected[k].last_activity > x.last_activity)
                                x.last_activity = e->affected[k].last_activity;
                        if (h < e->sessions_used && (e->sessions[h].flags & S_USED) &&
                            e->sessions[h].rowid == a->rowid) {
                                if (e->sessions[h].last_activity > x.last_activity)
                                        x.last_activity = e->sessions[h].last_activity;
                                session_remove(e, h);
                        }
                }
                (void)store_session_by_rowid(e->store, a->rowid, reload_cb, &x);
        }
        e->n_affected = 0;
}

void engine_abort(struct engine *e) {
        if (!e->txn)
                return;
        (void)store_rollback(e->store);
        e->txn = false;
        reload_affected(e);
        queue_clear(&e->in_txn);
}

/* A statement failed inside the iteration's transaction: nothing of it may
 * be committed any more. Returns the error for the caller to pass on. */
static int fail_txn(struct engine *e, int r) {
        r = storage_errno(r);
        if (e->commit_error == 0)
                e->commit_error = r;
        engine_abort(e);
        return r;
}

static int begin(struct engine *e) {
        int r;

        if (e->commit_error)
                return e->commit_error;
        if (e->txn)
                return 0;
        r = store_begin(e->store);
        if (r < 0)
                return storage_errno(r);
        e->txn = true;
        e->n_affected = 0;
        return 0;
}

/* Records that the row behind handle h is written in this transaction. */
static int touch_row(struct engine *e, int64_t rowid, uint32_t h) {
        if (GROW(e->affected, e->affected_allocated, e->n_affected + 1) < 0)
                return -ENOMEM;
        e->affected[e->n_affected++] = (struct affected){rowid, h, e->sessions[h].last_activity};
        e->write_seq++;
        return 0;
}

int engine_commit(struct engine *e) {
        int r;

        if (e->commit_error) {
                r = e->commit_error;
                e->commit_error = 0;
                e->counters.commit_failures++;
                e->storage_error = r;
                return r;
        }
        if (!e->txn)
                return 0;
        r = store_commit(e->store);
        if (r < 0) {
                log_error("Store %s: commit failed (%s); the writes of this iteration are rolled back.",
                          store_path(e->store), strerror(-r));
                engine_abort(e);
                e->counters.commit_failures++;
                e->storage_error = storage_errno(r);
                return e->storage_error;
        }
        e->storage_error = 0;
        e->txn = false;
        e->n_affected = 0;
        e->counters.commits++;
        /* Committed: the events of the transaction can be told. */
        for (size_t i = 0; i < e->in_txn.n; i++) {
                if (GROW(e->ready.items, e->ready.allocated, e->ready.n + 1) < 0) {
                        event_clear(&e->in_txn.items[i]);
                        continue;
                }
                e->ready.items[e->ready.n++] = e->in_txn.items[i];
        }
        e->in_txn.n = 0;
        schedule_dispatch(e);
        return 0;
}

/* ---- audit -------------------------------------------------------------------------- */

/* Writes an audit row whose detail is already JSON text. */
static int audit_text(struct engine *e, int64_t now, const char *kind, const char *user_id, const char *session_id,
                      const char *text) {
        int r;

        assert(text);
        if (!cfg(e)->security.audit_logging)
                return 0;
        r = begin(e);
        if (r < 0)
                return r;
        r = store_audit_insert(e->store, now, kind, user_id, session_id, text);
        if (r < 0)
                return fail_txn(e, r);
        e->write_seq++;
        e->counters.audit_rows++;
        return 0;
}

/* Writes an audit row (steals detail). Audit rows share the transaction of
 * what they describe. */
static int audit(struct engine *e, int64_t now, const char *kind, const char *user_id, const char *session_id,
                 json_t *detail) {
        char *text;
        int r;

        if (!cfg(e)->security.audit_logging) {
                json_decref(detail);
                return 0;
        }
        text = json_dumps(detail ? detail : json_object(), JSON_COMPACT);
        json_decref(detail);
        if (!text)
                return fail_txn(e, -ENOMEM);
        r = audit_text(e, now, kind, user_id, session_id, text);
        free(text);
        return r;
}

int engine_audit(struct engine *e, int64_t now, const char *kind, const char *user_id, const char *session_id,
                 json_t *detail) {
        assert(kind);
        return audit(e, now, kind, user_id, session_id, detail ? json_incref(detail) : NULL);
}

/* ---- suspicious activity --------------------------------------------------------------- */

static void sec_prune(struct user_sec *sec, int64_t now, int64_t threshold) {
        uint32_t k = 0;

        while (k < sec->n && sec->times[k] <= now - HOUR)
                k++;
        if (k > 0) {
                memmove(sec->times, sec->times + k, (sec->n - k) * sizeof *sec->times);
                sec->n -= k;
        }
        if (sec->n < threshold)
                sec->alerted = false;
}

static struct user_sec *user_sec(struct engine *e, uint32_t user) {
        struct user *u = &e->users[user];
        struct user_sec *sec;

        if (u->sec)
                return e->secs[u->sec - 1].sec;
        if (GROW(e->secs, e->secs_allocated, e->n_secs + 1) < 0)
                return NULL;
        sec = calloc(1, sizeof *sec);
        if (!sec)
                return NULL;
        e->secs[e->n_secs++] = (struct sec_entry){user, sec};
        u->sec = (uint32_t)e->n_secs;
        return sec;
}

/* One suspicious event of a user (by name). */
static void suspicious(struct engine *e, int64_t now, const char *user_id, const char *session_id, const char *what) {
        const struct sessiond_config *c = cfg(e);
        int64_t threshold = c->security.suspicious_activity_threshold;
        struct user_sec *sec;
        uint32_t user;

        if (!c->security.suspicious_detection || !user_id || !*user_id)
                return;
        e->counters.suspicious++;
        if (user_get(e, user_id, &user) < 0)
                return;
        sec = user_sec(e, user);
        if (!sec) {
                user_maybe_free(e, user);
                return;
        }
        sec_prune(sec, now, threshold);
        /* Only whether the count reaches the threshold matters: keep the
         * newest `threshold` times, so a flood cannot grow this without bound. */
        if (threshold > UINT32_MAX / 2)
                threshold = UINT32_MAX / 2;
        if (sec->cap < (uint32_t)threshold) {
                int64_t *t = realloc(sec->times, (size_t)threshold * sizeof *t);
                if (!t)
                        return;
                sec->times = t;
                sec->cap = (uint32_t)threshold;
        }
        if (sec->n >= (uint32_t)threshold) {
                uint32_t drop = sec->n - (uint32_t)threshold + 1;
                memmove(sec->times, sec->times + drop, (sec->n - drop) * sizeof *sec->times);
                sec->n -= drop;
        }
        sec->times[sec->n++] = now;

        log_info("Suspicious activity of user %s (%s), %u in the last hour.", user_id, what, sec->n);
        if (observed(e))
                emit(e, now, "suspicious", session_id, user_id,
                     json_pack("{s:s, s:I, s:I}", "what", what, "count", (json_int_t)sec->n, "threshold",
                               (json_int_t)threshold));
        if ((int64_t)sec->n >= threshold && !sec->alerted) {
                sec->alerted = true;
                e->counters.suspicious_alerts++;
                log_warning("User %s reached the suspicious activity threshold (%u events in an hour, "
                            "threshold %lld).", user_id, sec->n, (long long)threshold);
                (void)audit(e, now, "suspicious", user_id, session_id,
                            json_pack("{s:s, s:I, s:I}", "what", what, "count", (json_int_t)sec->n, "threshold",
                                      (json_int_t)threshold));
                if (observed(e))
                        emit(e, now, "suspicious_threshold", session_id, user_id,
                             json_pack("{s:I, s:I}", "count", (json_int_t)sec->n, "threshold", (json_int_t)threshold));
        }
}

void engine_security_sweep(struct engine *e, int64_t now) {
        int64_t threshold = cfg(e)->security.suspicious_activity_threshold;
        size_t k = 0;

        for (size_t i = 0; i < e->n_secs; i++) {
                uint32_t h = e->secs[i].user;
                struct user_sec *sec = e->secs[i].sec;

                sec_prune(sec, now, threshold);
                if (sec->n == 0 && (sec->fail_count == 0 || now - sec->fail_start >= BURST_WINDOW)) {
                        user_sec_free(sec);
                        e->users[h].sec = 0;
                        user_maybe_free(e, h);
                        continue;
                }
                e->secs[k] = e->secs[i];
                e->users[h].sec = (uint32_t)++k;
        }
        e->n_secs = k;
}

/* ---- failures ----------------------------------------------------------------------------- */

static void failed_validation(struct engine *e, int64_t now, enum engine_failure f, const char *user_id,
                              const char *session_id, enum engine_end_reason end_reason) {
        json_t *detail = NULL;

        e->counters.validate_failed[f]++;
        if (cfg(e)->security.audit_logging || observed(e)) {
                detail = json_pack("{s:s}", "reason", engine_failure_to_string(f));
                if (detail && end_reason != ENGINE_END_NONE)
                        json_object_set_new(detail, "end_reason", json_string(engine_end_reason_to_string(end_reason)));
                if (observed(e))
                        emit(e, now, "validation_failed", session_id, user_id, json_incref(detail));
                (void)audit(e, now, "validation_failed", user_id, session_id, detail);
        }
        if (user_id && *user_id && cfg(e)->security.suspicious_detection) {
                uint32_t user;
                struct user_sec *sec;

                if (user_get(e, user_id, &user) < 0)
                        return;
                sec = user_sec(e, user);
                if (!sec) {
                        user_maybe_free(e, user);
                        return;
                }
                if (now - sec->fail_start >= BURST_WINDOW) {
                        sec->fail_start = now;
                        sec->fail_count = 0;
                }
                if (++sec->fail_count >= BURST_FAILURES) {
                        sec->fail_count = 0;
                        suspicious(e, now, user_id, session_id, "failed_validations");
                }
        }
}

static int invalid(struct engine_error *err, const char *field, const char *reason) {
        err->field = field;
        err->reason = reason;
        return -EINVAL;
}

/* ---- ending sessions -------------------------------------------------------------------- */

/* Ends a session in memory and store. audit_kind NULL: the caller writes
 * its own audit row. */
static int session_end(struct engine *e, int64_t now, uint32_t h, enum engine_end_reason reason, int64_t ended_at,
                       const char *audit_kind, char id_out[TOKEN_ID_STRING_LEN + 1]) {
        struct session *s = S(e, h);
        char id[TOKEN_ID_STRING_LEN + 1];
        const char *user = user_name(e, s->user);
        int64_t duration = ended_at - (int64_t)s->created_at;
        int r;

        assert((unsigned)reason < _ENGINE_END_MAX);
        r = begin(e);
        if (r < 0)
                return r;
        r = touch_row(e, s->rowid, h);
        if (r < 0)
                return fail_txn(e, r);
        r = store_session_end(e->store, s->rowid, ended_at, engine_end_reason_to_string(reason));
        if (r < 0 && r != -ENOENT)
                return fail_txn(e, r);
        session_id(e, s, id);
        if (id_out)
                memcpy(id_out, id, sizeof id);
        if (audit_kind) {
                r = audit_text(e, now, audit_kind, user, id, end_reason_audit_texts[reason]);
                if (r < 0)
                        return r;
        }
        e->counters.ended[reason]++;
        log_debug("Session %s of user %s ended (%s).", id, user, engine_end_reason_to_string(reason));
        if (observed(e)) {
                /* The user's name goes with the session when it was the
                 * last one: the event keeps a copy (its only one). */
                char *user_copy = strdup(user);

                session_remove(e, h);
                emit_take(e, now, "ended", id, user_copy,
                          json_pack("{s:s, s:I}", "reason", engine_end_reason_to_string(reason), "duration",
                                    (json_int_t)(duration > 0 ? duration : 0)));
        } else
                session_remove(e, h);
        return 0;
}

static unsigned user_count_live(struct engine *e, uint32_t user, int64_t now) {
        unsigned n = 0;

        for (uint32_t h = e->users[user].head; h != NIL; h = e->sessions[h].user_next)
                if (session_state(e, &e->sessions[h], now, NULL, NULL) != ENGINE_STATE_EXPIRED)
                        n++;
        return n;
}

/* The least recently active live session of a user other than `keep`. */
static uint32_t user_lru(struct engine *e, uint32_t user, uint32_t keep, int64_t now) {
        uint32_t best = NIL;

        for (uint32_t h = e->users[user].head; h != NIL; h = e->sessions[h].user_next) {
                const struct session *s = &e->sessions[h];
                if (h == keep || session_state(e, s, now, NULL, NULL) == ENGINE_STATE_EXPIRED)
                        continue;
                if (best == NIL || s->last_activity < e->sessions[best].last_activity ||
                    (s->last_activity == e->sessions[best].last_activity && s->rowid < e->sessions[best].rowid))
                        best = h;
        }
        return best;
}

/* Ends least recently active sessions of a user until at most max are live. */
static int user_enforce(struct engine *e, int64_t now, uint32_t user, uint32_t keep, int64_t max, unsigned budget,
                        char (**ids)[TOKEN_ID_STRING_LEN + 1], size_t *n_ids, unsigned *ended) {
        size_t allocated = 0;
        int r;

        while (budget > 0 && user_used(e, user) && (int64_t)user_count_live(e, user, now) > max) {
                uint32_t victim = user_lru(e, user, keep, now);
                char id[TOKEN_ID_STRING_LEN + 1];

                if (victim == NIL)
                        break;
                r = session_end(e, now, victim, ENGINE_END_EVICTED, now, "evicted", id);
                if (r < 0)
                        return r;
                budget--;
                (*ended)++;
                if (ids) {
                        allocated = *n_ids;
                        if (GROW(*ids, allocated, *n_ids + 1) == 0)
                                memcpy((*ids)[(*n_ids)++], id, sizeof id);
                }
        }
        return 0;
}

/* ---- argument checks ---------------------------------------------------------------------- */

static const char *check_name(const char *s, size_t max) {
        size_t n;

        if (!s || !*s)
                return "must not be empty";
        n = strlen(s);
        if (n > max)
                return max == ENGINE_USER_ID_MAX ? "longer than 255 bytes" : "longer than 128 bytes";
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                        return "contains control characters";
        return NULL;
}

static int check_client(const struct engine_client *c, struct engine_error *err) {
        static const char *const names[] = {"client.user_agent", "client.ip", "client.accept_language",
                                            "client.accept_encoding"};
        const char *v[] = {c->user_agent, c->ip, c->accept_language, c->accept_encoding};

        for (size_t i = 0; i < 4; i++)
                if (v[i] && strlen(v[i]) > ENGINE_CLIENT_FIELD_MAX)
                        return invalid(err, names[i], "longer than 2048 bytes");
        return 0;
}

/* ---- create -------------------------------------------------------------------------------- */

void engine_created_clear(struct engine_created *c) {
        free(c->evicted);
        c->evicted = NULL;
        c->n_evicted = 0;
        sodium_memzero(c->token, sizeof c->token);
}

int engine_create(struct engine *e, int64_t now, const struct engine_create *a, struct engine_created *ret,
                  struct engine_error *err) {
        const struct sessiond_config *c = cfg(e);
        uint8_t hash[TOKEN_HASH_BYTES], id[TOKEN_ID_BYTES];
        char id_text[TOKEN_ID_STRING_LEN + 1];
        struct store_session row = {0};
        const char *why;
        unsigned ended = 0;
        int64_t rowid = e->next_rowid;
        uint32_t h;
        int r;

        memset(ret, 0, sizeof *ret);
        if ((why = check_name(a->user_id, ENGINE_USER_ID_MAX)))
                return invalid(err, "user_id", why);
        if (a->platform_id && (why = check_name(a->platform_id, ENGINE_PLATFORM_ID_MAX)))
                return invalid(err, "platform_id", why);
        r = check_client(&a->client, err);
        if (r < 0)
                return r;
        if (a->sync_data) {
                if (!c->features.cross_tab_sync) {
                        err->feature = "cross_tab_sync";
                        return -EOPNOTSUPP;
                }
                if ((int64_t)a->sync_size > c->sync.max_data_size) {
                        err->max = c->sync.max_data_size;
                        return -E2BIG;
                }
        }
        r = begin(e);
        if (r < 0)
                return r;

        token_new(ret->token);
        token_hash(&e->key, ret->token, hash);
        token_id_derive(&e->key, t32(now), rowid, id);
        token_id_format(id, id_text);

        row.rowid = rowid;
        row.id = id_text;
        memcpy(row.token_hash, hash, sizeof hash);
        row.user_id = a->user_id;
        row.platform_id = a->platform_id;
        row.created_at = row.last_activity = row.renewed_at = now;
        if (c->security.fingerprinting) {
                row.fp_user_agent = a->client.user_agent ? token_fingerprint(&e->key, a->client.user_agent) : 0;
                row.fp_ip = a->client.ip ? token_fingerprint(&e->key, a->client.ip) : 0;
                row.fp_accept_language =
                        a->client.accept_language ? token_fingerprint(&e->key, a->client.accept_language) : 0;
                row.fp_accept_encoding =
                        a->client.accept_encoding ? token_fingerprint(&e->key, a->client.accept_encoding) : 0;
        }
        row.ip = a->client.ip;
        row.user_agent = a->client.user_agent;
        row.sync_version = a->sync_data ? 1 : 0;

        r = store_session_insert(e->store, &row, a->sync_data, a->sync_size, NULL);
        if (r < 0) {
                sodium_memzero(ret->token, sizeof ret->token);
                return fail_txn(e, r);
        }
        e->next_rowid++;
        r = session_add(e, &row, &h);
        if (r < 0) {
                sodium_memzero(ret->token, sizeof ret->token);
                return fail_txn(e, r);
        }
        r = touch_row(e, rowid, h);
        if (r < 0) {
                sodium_memzero(ret->token, sizeof ret->token);
                return fail_txn(e, r);
        }
        r = audit(e, now, "created", a->user_id, id_text,
                  json_pack("{s:s?, s:s?}", "platform_id", a->platform_id, "ip", a->client.ip));
        if (r < 0)
                goto fail;
        e->counters.created++;
        log_debug("Session %s created for user %s.", id_text, a->user_id);
        if (observed(e))
                emit(e, now, "created", id_text, a->user_id, json_pack("{s:s?}", "platform_id", a->platform_id));

        r = user_enforce(e, now, e->sessions[h].user, h, c->security.max_concurrent_per_user, UINT_MAX,
                         &ret->evicted, &ret->n_evicted, &ended);
        if (r < 0)
                goto fail;

        info_fill(e, h, now, &ret->info);
        ret->info.ip = a->client.ip;
        ret->info.user_agent = a->client.user_agent;
        return 0;
fail:
        engine_created_clear(ret);
        return r;
}

/* ---- looking tokens up ------------------------------------------------------------------------ */

struct ended_lookup {
        bool found;
        enum engine_end_reason reason;
        int64_t ended_at;
        char user_id[ENGINE_USER_ID_MAX + 1];
        char id[TOKEN_ID_STRING_LEN + 1];
};

static int ended_cb(const struct store_session *row, void *userdata) {
        struct ended_lookup *l = userdata;

        l->found = true;
        l->reason = engine_end_reason_from_string(row->end_reason);
        l->ended_at = row->ended_at;
        snprintf(l->user_id, sizeof l->user_id, "%s", row->user_id);
        snprintf(l->id, sizeof l->id, "%s", row->id);
        return 1;
}

/* Finds the in-memory session of a token. On a miss, looks for an ended
 * session in the store (the rare path) and answers Expired or NotFound.
 * `count`: this is a validation, failures are counted and audited. */
static int lookup(struct engine *e, int64_t now, const char *token, bool count, uint32_t *ret,
                  struct engine_error *err) {
        uint8_t hash[TOKEN_HASH_BYTES];
        struct ended_lookup l = {0};
        uint32_t h;
        int r;

        if (!token_is_wellformed(token)) {
                if (count)
                        failed_validation(e, now, ENGINE_FAIL_INVALID, NULL, NULL, ENGINE_END_NONE);
                return invalid(err, "token", "not a sessiond token (43 base64url characters)");
        }
        token_hash(&e->key, token, hash);
        h = session_find_key(e, hash);
        if (h != NIL) {
                *ret = h;
                return 0;
        }
        /* Memory has every live session: the store is asked about ended ones only. */
        r = store_session_by_hash(e->store, hash, ended_cb, &l);
        if (r < 0 && r != -ENOENT)
                return storage_errno(r);
        if (!l.found) {
                if (count)
                        failed_validation(e, now, ENGINE_FAIL_NOT_FOUND, NULL, NULL, ENGINE_END_NONE);
                return -ENOENT;
        }
        if (l.reason == ENGINE_END_ROTATED && now > l.ended_at + cfg(e)->timeout.expiration_grace)
                suspicious(e, now, l.user_id, l.id, "rotated_token_reused");
        if (count)
                failed_validation(e, now, ENGINE_FAIL_EXPIRED, l.user_id, l.id, l.reason);
        err->end_reason = l.reason != ENGINE_END_NONE ? l.reason : ENGINE_END_DESTROYED;
        return -ESTALE;
}

/* A session that must still be honoured (active or grace). */
static int lookup_live(struct engine *e, int64_t now, const char *token, bool count, uint32_t *ret,
                       enum engine_state *state, struct engine_error *err) {
        enum engine_end_reason why;
        enum engine_state st;
        uint32_t h;
        int r;

        r = lookup(e, now, token, count, &h, err);
        if (r < 0)
                return r;
        st = session_state(e, S(e, h), now, NULL, &why);
        if (st == ENGINE_STATE_EXPIRED) {
                if (count) {
                        char id[TOKEN_ID_STRING_LEN + 1];
                        session_id(e, &e->sessions[h], id);
                        failed_validation(e, now, ENGINE_FAIL_EXPIRED, user_name(e, e->sessions[h].user), id, why);
                }
                err->end_reason = why;
                return -ESTALE;
        }
        *ret = h;
        if (state)
                *state = st;
        return 0;
}

static void session_touch(struct engine *e, uint32_t h, int64_t now) {
        struct session *s = S(e, h);
        int64_t granularity = cfg(e)->timeout.idle_timeout / 100;

        if (granularity < 1)
                granularity = 1;
        if (granularity > 60)
                granularity = 60;
        if (t32(now) > s->last_activity)
                s->last_activity = t32(now);
        if (!(s->flags & S_DIRTY) && (int64_t)s->last_activity >= (int64_t)s->persisted_activity + granularity &&
            GROW(e->dirty, e->dirty_allocated, e->n_dirty + 1) == 0) {
                s->flags |= S_DIRTY;
                e->dirty[e->n_dirty++] = h;
        }
}

/* ---- validate, heartbeat, extend ------------------------------------------------------------- */

/* The fingerprint policy. Returns -EACCES on a changed user agent; records
 * other changes (a write) and counts them as suspicious. */
static int fingerprint_check(struct engine *e, int64_t now, uint32_t h, const struct engine_client *client) {
        static const char *const field_names[_FP_MAX] = {"user_agent", "ip", "accept_language", "accept_encoding"};
        const char *values[_FP_MAX] = {client->user_agent, client->ip, client->accept_language,
                                       client->accept_encoding};
        uint64_t full[_FP_MAX] = {0};
        struct session *s = S(e, h);
        bool record = false, changed[_FP_MAX] = {false};
        struct store_session row = {0};
        char id[TOKEN_ID_STRING_LEN + 1];
        const char *user = user_name(e, s->user);
        json_t *fields;
        int r;

        for (int i = 0; i < _FP_MAX; i++) {
                if (!values[i])
                        continue;
                full[i] = token_fingerprint(&e->key, values[i]);
                if (fp_stored(s, i) == 0)
                        record = true; /* first value seen: adopt it */
                else if (fp_stored(s, i) != fp_prefix(i, full[i])) {
                        changed[i] = true;
                        record = true;
                }
        }
        if (!record)
                return 0;
        session_id(e, s, id);
        if (changed[FP_USER_AGENT]) {
                e->counters.fingerprint_mismatches++;
                log_info("Session %s of user %s: user agent changed; validation refused.", id, user);
                failed_validation(e, now, ENGINE_FAIL_FINGERPRINT, user, id, ENGINE_END_NONE);
                suspicious(e, now, user, id, "user_agent_changed");
                return -EACCES;
        }

        r = begin(e);
        if (r < 0)
                return r;
        r = touch_row(e, s->rowid, h);
        if (r < 0)
                return fail_txn(e, r);
        for (int i = 0; i < _FP_MAX; i++)
                if (!values[i])
                        full[i] = 0;
        /* The full hashes of the values given; absent ones (0) keep what
         * the store has. */
        row.fp_user_agent = full[FP_USER_AGENT];
        row.fp_ip = full[FP_IP];
        row.fp_accept_language = full[FP_LANGUAGE];
        row.fp_accept_encoding = full[FP_ENCODING];
        row.ip = client->ip;
        row.user_agent = client->user_agent;
        r = store_session_set_client(e->store, s->rowid, &row);
        if (r < 0)
                return fail_txn(e, r);
        for (int i = 0; i < _FP_MAX; i++)
                if (values[i])
                        fp_store(s, i, full[i]);

        fields = json_array();
        for (int i = 0; i < _FP_MAX; i++)
                if (changed[i])
                        json_array_append_new(fields, json_string(field_names[i]));
        if (json_array_size(fields) == 0) {
                json_decref(fields);
                return 0;
        }
        e->counters.fingerprint_changes++;
        log_info("Session %s of user %s: client changed (%s%s%s%s%s); recorded.", id, user,
                 changed[FP_IP] ? "ip" : "", changed[FP_IP] && changed[FP_LANGUAGE] ? ", " : "",
                 changed[FP_LANGUAGE] ? "accept_language" : "",
                 (changed[FP_IP] || changed[FP_LANGUAGE]) && changed[FP_ENCODING] ? ", " : "",
                 changed[FP_ENCODING] ? "accept_encoding" : "");
        if (observed(e))
                emit(e, now, "fingerprint_changed", id, user, json_pack("{s:O}", "fields", fields));
        r = audit(e, now, "fingerprint_changed", user, id, json_pack("{s:O, s:s?}", "fields", fields, "ip", client->ip));
        json_decref(fields);
        if (r < 0)
                return r;
        /* The user's name may move if the user table grows: look it up again. */
        suspicious(e, now, user_name(e, S(e, h)->user), id, "client_changed");
        return 0;
}

int engine_validate(struct engine *e, int64_t now, const char *token, const struct engine_client *client,
                    bool touch, struct engine_info *ret, struct engine_error *err) {
        enum engine_state st;
        uint32_t h;
        int r;

        r = lookup_live(e, now, token, true, &h, &st, err);
        if (r < 0)
                return r;
        if (client && cfg(e)->security.fingerprinting) {
                r = check_client(client, err);
                if (r < 0)
                        return r;
                r = fingerprint_check(e, now, h, client);
                if (r < 0)
                        return r;
        }
        if (touch && st == ENGINE_STATE_ACTIVE)
                session_touch(e, h, now);
        e->counters.validated++;
        if (st == ENGINE_STATE_GRACE)
                e->counters.validated_grace++;
        info_fill(e, h, now, ret);
        return 0;
}

int engine_heartbeat(struct engine *e, int64_t now, const char *token, struct engine_info *ret,
                     struct engine_error *err) {
        enum engine_state st;
        uint32_t h;
        int r;

        r = lookup_live(e, now, token, false, &h, &st, err);
        if (r < 0)
                return r;
        if (st == ENGINE_STATE_ACTIVE)
                session_touch(e, h, now);
        e->counters.heartbeats++;
        info_fill(e, h, now, ret);
        return 0;
}

int engine_extend(struct engine *e, int64_t now, const char *token, struct engine_info *ret,
                  struct engine_error *err) {
        struct session *s;
        char id[TOKEN_ID_STRING_LEN + 1];
        uint32_t h;
        int r;

        r = lookup_live(e, now, token, false, &h, NULL, err);
        if (r < 0)
                return r;
        r = begin(e);
        if (r < 0)
                return r;
        s = S(e, h);
        r = touch_row(e, s->rowid, h);
        if (r < 0)
                return fail_txn(e, r);
        r = store_session_set_renewed(e->store, s->rowid, now, now);
        if (r < 0)
                return fail_txn(e, r);
        s->renewed_at = t32(now);
        if (t32(now) > s->last_activity)
                s->last_activity = t32(now);
        s->persisted_activity = s->last_activity;
        info_fill(e, h, now, ret);
        session_id(e, s, id);
        r = audit(e, now, "extended", ret->user_id, id, json_pack("{s:I}", "expires_at", (json_int_t)ret->expires_at));
        if (r < 0)
                return r;
        e->counters.extended++;
        if (observed(e))
                emit(e, now, "extended", id, ret->user_id, json_pack("{s:I}", "expires_at", (json_int_t)ret->expires_at));
        return 0;
}

/* ---- rotate ------------------------------------------------------------------------------------ */

int engine_rotate(struct engine *e, int64_t now, const char *token, char new_token[TOKEN_STRING_LEN + 1],
                  struct engine_info *ret, struct engine_error *err) {
        uint8_t hash[TOKEN_HASH_BYTES], id[TOKEN_ID_BYTES];
        char new_id[TOKEN_ID_STRING_LEN + 1], old_id[TOKEN_ID_STRING_LEN + 1];
        struct store_session row = {0};
        enum engine_state st;
        struct session *old;
        int64_t rowid = e->next_rowid, last;
        uint32_t h, nh;
        char *user = NULL, *platform = NULL;
        int r;

        r = lookup_live(e, now, token, false, &h, &st, err);
        if (r < 0)
                return r;
        r = begin(e);
        if (r < 0)
                return r;
        old = S(e, h);
        /* Rotation is activity only for an active session: it must not
         * revive one in grace. */
        last = st == ENGINE_STATE_ACTIVE ? now : old->last_activity;

        token_new(new_token);
        token_hash(&e->key, new_token, hash);
        token_id_derive(&e->key, old->created_at, rowid, id);
        token_id_format(id, new_id);
        session_id(e, old, old_id);

        r = store_session_copy(e->store, old->rowid, rowid, new_id, hash, last);
        if (r < 0)
                goto fail;
        e->next_rowid++;
        user = strdup(user_name(e, old->user));
        platform = old->platform ? strdup(platform_name(e, old->platform)) : NULL;
        if (!user || (old->platform && !platform)) {
                r = -ENOMEM;
                goto fail;
        }
        row.rowid = rowid;
        row.id = new_id;
        memcpy(row.token_hash, hash, sizeof hash);
        row.user_id = user;
        row.platform_id = platform;
        row.created_at = old->created_at;
        row.last_activity = last;
        row.renewed_at = old->renewed_at;
        r = session_add(e, &row, &nh);
        if (r < 0)
                goto fail;
        old = S(e, h); /* the array may have moved */
        e->sessions[nh].fp_user_agent = old->fp_user_agent;
        memcpy(e->sessions[nh].fp_small, old->fp_small, sizeof old->fp_small);
        r = touch_row(e, rowid, nh);
        if (r < 0)
                goto fail;
        r = audit(e, now, "rotated", user, old_id, json_pack("{s:s}", "new_session_id", new_id));
        if (r < 0)
                goto out;
        if (observed(e))
                emit(e, now, "rotated", old_id, user, json_pack("{s:s}", "new_session_id", new_id));
        r = session_end(e, now, h, ENGINE_END_ROTATED, now, NULL, NULL);
        if (r < 0)
                goto out;
        e->counters.rotated++;
        log_debug("Session %s of user %s rotated into %s.", old_id, user, new_id);
        free(user);
        free(platform);
        info_fill(e, nh, now, ret);
        return 0;
fail:
        r = fail_txn(e, r);
out:
        sodium_memzero(new_token, TOKEN_STRING_LEN + 1);
        free(user);
        free(platform);
        return r;
}

/* ---- platform switching -------------------------------------------------------------------------- */

int engine_switch_platform(struct engine *e, int64_t now, const char *token, const char *platform_id,
                           struct engine_info *ret, struct engine_error *err) {
        const struct sessiond_config *c = cfg(e);
        int64_t max = c->security.max_platform_switches_per_hour, oldest = 0;
        char id[TOKEN_ID_STRING_LEN + 1], *history = NULL, *text = NULL, *from = NULL;
        json_t *times = NULL, *kept = NULL;
        struct session *s;
        const char *why;
        uint32_t h, platform;
        size_t i;
        json_t *t;
        int r;

        if (!c->features.platform_switching) {
                err->feature = "platform_switching";
                return -EOPNOTSUPP;
        }
        if ((why = check_name(platform_id, ENGINE_PLATFORM_ID_MAX)))
                return invalid(err, "platform_id", why);
        r = lookup_live(e, now, token, false, &h, NULL, err);
        if (r < 0)
                return r;
        s = S(e, h);
        session_id(e, s, id);
        if (s->platform && strcmp(platform_name(e, s->platform), platform_id) == 0) {
                info_fill(e, h, now, ret); /* already there: not a switch */
                return 0;
        }

        r = store_session_get_switches(e->store, s->rowid, &history);
        if (r < 0)
                return storage_errno(r);
        times = json_loads(history, 0, NULL);
        free(history);
        kept = json_array();
        if (!kept) {
                json_decref(times);
                return -ENOMEM;
        }
        json_array_foreach(times, i, t) {
                if (json_is_integer(t) && json_integer_value(t) > now - HOUR) {
                        if (json_array_size(kept) == 0)
                                oldest = json_integer_value(t);
                        json_array_append(kept, t);
                }
        }
        json_decref(times);
        if ((int64_t)json_array_size(kept) >= max) {
                /* The oldest switches leave the window first; with a lowered
                 * limit more than one may have to. */
                size_t k = json_array_size(kept) - (size_t)max;
                oldest = json_integer_value(json_array_get(kept, k));
                json_decref(kept);
                e->counters.platform_switches_refused++;
                err->retry_after = oldest + HOUR - now;
                if (err->retry_after < 1)
                        err->retry_after = 1;
                suspicious(e, now, user_name(e, s->user), id, "platform_switch_rate");
                return -EBUSY;
        }
        json_array_append_new(kept, json_integer(now));
        text = json_dumps(kept, JSON_COMPACT);
        json_decref(kept);
        if (!text)
                return -ENOMEM;

        r = begin(e);
        if (r < 0)
                goto out;
        s = S(e, h);
        r = touch_row(e, s->rowid, h);
        if (r >= 0)
                r = store_session_set_platform(e->store, s->rowid, platform_id, text);
        if (r < 0) {
                r = fail_txn(e, r);
                goto out;
        }
        r = platform_get(e, platform_id, &platform);
        if (r < 0) {
                r = fail_txn(e, r);
                goto out;
        }
        s = S(e, h);
        from = s->platform ? strdup(platform_name(e, s->platform)) : NULL;
        platform_put(e, s->platform);
        s->platform = platform;
        e->counters.platform_switches++;
        r = audit(e, now, "platform_switched", user_name(e, s->user), id,
                  json_pack("{s:s?, s:s}", "from", from, "to", platform_id));
        if (r < 0)
                goto out;
        if (observed(e))
                emit(e, now, "platform_switched", id, user_name(e, S(e, h)->user),
                     json_pack("{s:s?, s:s}", "from", from, "to", platform_id));
        info_fill(e, h, now, ret);
out:
        free(from);
        free(text);
        return r;
}

/* ---- sync state ------------------------------------------------------------------------------------ */

int engine_sync_get(struct engine *e, int64_t now, const char *token, int64_t *version, char **data,
                    size_t *size, struct engine_error *err) {
        uint32_t h;
        int r;

        if (!cfg(e)->features.cross_tab_sync) {
                err->feature = "cross_tab_sync";
                return -EOPNOTSUPP;
        }
        r = lookup_live(e, now, token, false, &h, NULL, err);
        if (r < 0)
                return r;
        r = store_session_get_sync(e->store, S(e, h)->rowid, version, data, size);
        if (r < 0)
                return storage_errno(r);
        e->counters.sync_reads++;
        return 0;
}

int engine_sync_set(struct engine *e, int64_t now, const char *token, const char *data, size_t size,
                    int64_t expected_version, int64_t *version, struct engine_error *err) {
        const struct sessiond_config *c = cfg(e);
        char id[TOKEN_ID_STRING_LEN + 1], *old = NULL;
        int64_t current;
        size_t old_size;
        uint32_t h;
        int r;

        if (!c->features.cross_tab_sync) {
                err->feature = "cross_tab_sync";
                return -EOPNOTSUPP;
        }
        if ((int64_t)size > c->sync.max_data_size) {
                err->max = c->sync.max_data_size;
                return -E2BIG;
        }
        r = lookup_live(e, now, token, false, &h, NULL, err);
        if (r < 0)
                return r;
        r = store_session_get_sync(e->store, S(e, h)->rowid, &current, &old, &old_size);
        if (r < 0)
                return storage_errno(r);
        free(old);
        if (expected_version >= 0 && expected_version != current) {
                e->counters.sync_conflicts++;
                err->version = current;
                return -EAGAIN;
        }
        r = begin(e);
        if (r < 0)
                return r;
        r = touch_row(e, S(e, h)->rowid, h);
        if (r >= 0)
                r = store_session_set_sync(e->store, S(e, h)->rowid, current + 1, data, size);
        if (r < 0)
                return fail_txn(e, r);
        *version = current + 1;
        e->counters.sync_writes++;
        if (observed(e)) {
                session_id(e, S(e, h), id);
                emit(e, now, "sync", id, user_name(e, S(e, h)->user),
                     json_pack("{s:I}", "version", (json_int_t)*version));
        }
        return 0;
}

struct id_row {
        int64_t rowid;
        bool live;
};

static int id_row_cb(const struct store_session *row, void *userdata) {
        struct id_row *x = userdata;

        x->rowid = row->rowid;
        x->live = row->ended_at == 0;
        return 1;
}

int engine_sync_get_by_id(struct engine *e, const char *id, int64_t *version, char **data, size_t *size) {
        struct id_row x = {0};
        int r;

        r = store_session_by_id(e->store, id, id_row_cb, &x);
        if (r < 0)
                return r == -ENOENT ? r : storage_errno(r);
        r = store_session_get_sync(e->store, x.rowid, version, data, size);
        return r < 0 ? storage_errno(r) : 0;
}

/* ---- destroy ------------------------------------------------------------------------------------------ */

int engine_destroy(struct engine *e, int64_t now, const char *token, struct engine_error *err) {
        uint32_t h;
        int r;

        /* Any session still in memory can be logged out, even one past its
         * end that cleanup has not reached yet. */
        r = lookup(e, now, token, false, &h, err);
        if (r < 0)
                return r;
        return session_end(e, now, h, ENGINE_END_DESTROYED, now, "ended", NULL);
}

static int end_user_sessions(struct engine *e, int64_t now, const char *user_id, uint32_t except,
                             enum engine_end_reason reason, unsigned *count) {
        uint32_t user = user_find(e, user_id), h, next;
        int r;

        *count = 0;
        if (user == NIL)
                return 0;
        /* Hold the user: ending its last session would free it mid-walk. */
        e->users[user].n_sessions++;
        for (h = e->users[user].head; h != NIL; h = next) {
                next = e->sessions[h].user_next;
                if (h == except || session_state(e, &e->sessions[h], now, NULL, NULL) == ENGINE_STATE_EXPIRED)
                        continue;
                r = session_end(e, now, h, reason, now, "ended", NULL);
                if (r < 0) {
                        e->users[user].n_sessions--;
                        user_maybe_free(e, user);
                        return r;
                }
                (*count)++;
        }
        e->users[user].n_sessions--;
        user_maybe_free(e, user);
        return 0;
}

int engine_destroy_user(struct engine *e, int64_t now, const char *user_id, const char *except_token,
                        unsigned *count, struct engine_error *err) {
        uint32_t except = NIL;
        const char *why;
        int r;

        *count = 0;
        if ((why = check_name(user_id, ENGINE_USER_ID_MAX)))
                return invalid(err, "user_id", why);
        if (except_token) {
                r = lookup_live(e, now, except_token, false, &except, NULL, err);
                if (r < 0) {
                        if (r == -EINVAL)
                                err->field = "except_token";
                        return r;
                }
                if (strcmp(user_name(e, S(e, except)->user), user_id) != 0)
                        return invalid(err, "except_token", "belongs to another user");
        }
        return end_user_sessions(e, now, user_id, except, ENGINE_END_DESTROYED, count);
}

/* ---- listings -------------------------------------------------------------------------------------------- */

struct list_ctx {
        struct engine *e;
        int64_t now;
        bool include_ended;
        unsigned limit, n;
        engine_info_fn cb;
        void *userdata;
};

static int list_row_cb(const struct store_session *row, void *userdata) {
        struct list_ctx *x = userdata;
        struct engine_info info;
        uint32_t h;
        int r;

        if (x->n >= x->limit)
                return 1;
        if (row->ended_at == 0) {
                h = session_find_key(x->e, row->token_hash);
                if (h == NIL)
                        return 0;
                info_fill(x->e, h, x->now, &info);
                if (info.state == ENGINE_STATE_EXPIRED && !x->include_ended)
                        return 0;
                info.ip = row->ip;
                info.user_agent = row->user_agent;
        } else {
                if (!x->include_ended)
                        return 0;
                info_from_row(row, &info);
        }
        x->n++;
        r = x->cb(&info, x->userdata);
        return r != 0 ? 1 : 0;
}

/* One user's sessions in row order: the live ones are in memory (their rows
 * are read by rowid, for ip and user agent), the ended ones come from the
 * store's index of ended rows; the two are merged. The store has no index
 * of live rows by user, so that Create writes no random index page. */
struct user_list {
        struct list_ctx *x;
        int64_t *live; /* rowids, ascending */
        size_t n_live, next;
};

static int rowid_cmp(const void *a, const void *b) {
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

        return (x > y) - (x < y);
}

/* Lists the live rows below `below`; a positive return stops. */
static int user_list_live(struct user_list *u, int64_t below) {
        int r;

        while (u->next < u->n_live && u->live[u->next] < below) {
                r = store_session_by_rowid(u->x->e->store, u->live[u->next++], list_row_cb, u->x);
                if (r != 0 && r != -ENOENT)
                        return r;
        }
        return 0;
}

static int user_list_ended_cb(const struct store_session *row, void *userdata) {
        struct user_list *u = userdata;
        int r = user_list_live(u, row->rowid);

        return r != 0 ? r : list_row_cb(row, u->x);
}

static int list_user(struct engine *e, struct list_ctx *x, const char *user_id) {
        struct user_list u = {x, NULL, 0, 0};
        uint32_t user = user_find(e, user_id);
        int r = 0;

        if (user != NIL && e->users[user].n_sessions > 0) {
                u.live = malloc(e->users[user].n_sessions * sizeof *u.live);
                if (!u.live)
                        return -ENOMEM;
                for (uint32_t h = e->users[user].head; h != NIL; h = e->sessions[h].user_next)
                        u.live[u.n_live++] = e->sessions[h].rowid;
                assert(u.n_live == e->users[user].n_sessions);
                qsort(u.live, u.n_live, sizeof *u.live, rowid_cmp);
        }
        if (x->include_ended)
                r = store_sessions_ended_of_user(e->store, user_id, user_list_ended_cb, &u);
        if (r == 0)
                r = user_list_live(&u, INT64_MAX);
        free(u.live);
        return r;
}

int engine_list_sessions(struct engine *e, int64_t now, const char *user_id, bool include_ended, unsigned limit,
                         engine_info_fn cb, void *userdata) {
        struct list_ctx x = {e, now, include_ended, limit, 0, cb, userdata};
        struct store_filter f = {.live_only = !include_ended};
        int r;

        if (limit == 0)
                return 0;
        if (user_id)
                r = list_user(e, &x, user_id);
        else
                r = store_sessions_each(e->store, &f, list_row_cb, &x);
        return r < 0 ? storage_errno(r) : 0;
}

int engine_session_by_id(struct engine *e, int64_t now, const char *id, engine_info_fn cb, void *userdata) {
        struct list_ctx x = {e, now, true, 1, 0, cb, userdata};
        int r;

        r = store_session_by_id(e->store, id, list_row_cb, &x);
        if (r == -ENOENT)
                return r;
        return r < 0 ? storage_errno(r) : 0;
}

int engine_list_user(struct engine *e, int64_t now, const char *user_id, engine_info_fn cb, void *userdata,
                     struct engine_error *err) {
        const char *why;

        if ((why = check_name(user_id, ENGINE_USER_ID_MAX)))
                return invalid(err, "user_id", why);
        if (user_find(e, user_id) == NIL)
                return 0;
        return engine_list_sessions(e, now, user_id, false, UINT_MAX, cb, userdata);
}

/* ---- watch support ------------------------------------------------------------------------------------------ */

int engine_resolve(struct engine *e, int64_t now, const char *token, struct engine_ref *ref, struct engine_info *ret,
                   struct engine_error *err) {
        uint32_t h;
        int r;

        r = lookup_live(e, now, token, false, &h, NULL, err);
        if (r < 0)
                return r;
        memcpy(ref->key, S(e, h)->key, sizeof ref->key);
        info_fill(e, h, now, ret);
        return 0;
}

int engine_peek(struct engine *e, int64_t now, const struct engine_ref *ref, struct engine_info *ret) {
        uint32_t h = session_find_key(e, ref->key);

        if (h == NIL)
                return -ENOENT;
        info_fill(e, h, now, ret);
        return 0;
}

/* ---- administration ------------------------------------------------------------------------------------------- */

struct key_row {
        bool found, live;
        uint8_t key[16];
};

static int key_row_cb(const struct store_session *row, void *userdata) {
        struct key_row *k = userdata;

        k->found = true;
        k->live = row->ended_at == 0;
        memcpy(k->key, row->token_hash, sizeof k->key);
        return 1;
}

int engine_terminate(struct engine *e, int64_t now, const char *id) {
        struct key_row k = {0};
        uint32_t h;
        int r;

        r = store_session_by_id(e->store, id, key_row_cb, &k);
        if (r == -ENOENT || (r >= 0 && (!k.found || !k.live)))
                return -ENOENT;
        if (r < 0)
                return storage_errno(r);
        h = session_find_key(e, k.key);
        if (h == NIL)
                return -ENOENT;
        log_info("Session %s terminated by an operator.", id);
        return session_end(e, now, h, ENGINE_END_TERMINATED, now, "ended", NULL);
}

int engine_terminate_user(struct engine *e, int64_t now, const char *user_id, unsigned *count) {
        int r = end_user_sessions(e, now, user_id, NIL, ENGINE_END_TERMINATED, count);

        if (r >= 0 && *count > 0)
                log_info("%u sessions of user %s terminated by an operator.", *count, user_id);
        return r;
}

/* ---- background work ------------------------------------------------------------------------------------------- */

static bool session_awaits_cleanup(const struct engine *e, const struct session *s, int64_t now, int64_t *end,
                                   enum engine_end_reason *why) {
        int64_t t = session_end_time(e, s, why);

        if (end)
                *end = t;
        return now >= t + cfg(e)->timeout.cleanup_grace;
}

/* The clock is read after every CLEANUP_CLOCK_ENDED sessions ended (each
 * costs 10 to 30 us, mostly SQLite) and every CLEANUP_CLOCK_SCANNED entries
 * looked at (a few ns each): a step overruns its deadline by about one
 * ended session. */
#define CLEANUP_CLOCK_ENDED 4
#define CLEANUP_CLOCK_SCANNED 4096

static bool past(uint64_t deadline_ns) {
        return deadline_ns != 0 && uv_hrtime() >= deadline_ns;
}

int engine_cleanup_expired_until(struct engine *e, int64_t now, unsigned limit, uint64_t deadline_ns,
                                 unsigned *ended, bool *more) {
        uint32_t scanned = 0;
        int r;

        *ended = 0;
        *more = false;
        while (scanned < e->sessions_used && *ended < limit) {
                uint32_t h;
                enum engine_end_reason why;
                int64_t end;

                if (scanned % CLEANUP_CLOCK_SCANNED == CLEANUP_CLOCK_SCANNED - 1 && past(deadline_ns)) {
                        /* Out of time before a whole pass. Steps go on where
                         * this one stopped, so once the cursor has gone all
                         * the way round since its last end there is nothing
                         * left (a table too large to pass in one step would
                         * otherwise answer "maybe" for ever). */
                        *more = e->cleanup_quiet < e->sessions_used;
                        return 0;
                }
                if (e->cleanup_cursor >= e->sessions_used)
                        e->cleanup_cursor = 0;
                h = e->cleanup_cursor++;
                scanned++;
                if (!(e->sessions[h].flags & S_USED) ||
                    !session_awaits_cleanup(e, &e->sessions[h], now, &end, &why)) {
                        if (e->cleanup_quiet < UINT32_MAX)
                                e->cleanup_quiet++;
                        continue;
                }
                e->cleanup_quiet = 0;
                r = session_end(e, now, h, why, end, "ended", NULL);
                if (r < 0)
                        return r;
                (*ended)++;
                if (*ended < limit && *ended % CLEANUP_CLOCK_ENDED == 0 && past(deadline_ns)) {
                        *more = true;
                        return 0;
                }
        }
        /* Budget used up: is there at least one more? (Stops at the first;
         * out of time before it is found: maybe.) */
        for (uint32_t i = 0, h = e->cleanup_cursor; *ended >= limit && !*more && i < e->sessions_used; i++, h++) {
                if (h >= e->sessions_used)
                        h = 0;
                if (i % CLEANUP_CLOCK_SCANNED == CLEANUP_CLOCK_SCANNED - 1 && past(deadline_ns)) {
                        *more = true;
                        break;
                }
                *more = (e->sessions[h].flags & S_USED) &&
                        session_awaits_cleanup(e, &e->sessions[h], now, NULL, NULL);
        }
        return 0;
}

int engine_cleanup_expired(struct engine *e, int64_t now, unsigned limit, unsigned *ended, bool *more) {
        return engine_cleanup_expired_until(e, now, limit, 0, ended, more);
}

uint64_t engine_count_awaiting_cleanup(struct engine *e, int64_t now) {
        uint64_t n = 0;

        for (uint32_t h = 0; h < e->sessions_used; h++)
                if ((e->sessions[h].flags & S_USED) && session_awaits_cleanup(e, &e->sessions[h], now, NULL, NULL))
                        n++;
        return n;
}

static bool user_over_limit(struct engine *e, uint32_t u, int64_t now, int64_t max) {
        return user_used(e, u) && (int64_t)e->users[u].n_sessions > max &&
               (int64_t)user_count_live(e, u, now) > max;
}

int engine_enforce_user_limit(struct engine *e, int64_t now, unsigned limit, unsigned *ended, bool *more) {
        int64_t max = cfg(e)->security.max_concurrent_per_user;
        int r;

        *ended = 0;
        *more = false;
        for (uint32_t scanned = 0; scanned < e->users_used && *ended < limit; scanned++) {
                uint32_t u;

                if (e->limit_cursor >= e->users_used)
                        e->limit_cursor = 0;
                u = e->limit_cursor;
                if (user_over_limit(e, u, now, max)) {
                        r = user_enforce(e, now, u, NIL, max, limit - *ended, NULL, NULL, ended);
                        if (r < 0)
                                return r;
                        if (user_over_limit(e, u, now, max)) {
                                *more = true; /* this user needs another batch */
                                return 0;
                        }
                }
                e->limit_cursor++;
        }
        for (uint32_t u = 0; *ended >= limit && !*more && u < e->users_used; u++)
                *more = user_over_limit(e, u, now, max);
        return 0;
}

int engine_purge(struct engine *e, int64_t now, unsigned limit, unsigned *sessions, unsigned *audit_rows, bool *more) {
        const struct sessiond_config *c = cfg(e);
        int r;

        *sessions = *audit_rows = 0;
        *more = false;
        if (limit == 0)
                return 0;
        r = begin(e);
        if (r < 0)
                return r;
        r = store_purge_sessions(e->store, now - c->cleanup.expired_retention_days * 86400, (int)limit);
        if (r < 0)
                return fail_txn(e, r);
        *sessions = (unsigned)r;
        r = store_purge_audit(e->store, now - c->cleanup.audit_retention_days * 86400, (int)limit);
        if (r < 0)
                return fail_txn(e, r);
        *audit_rows = (unsigned)r;
        e->write_seq++;
        e->counters.purged_sessions += *sessions;
        e->counters.purged_audit += *audit_rows;
        *more = *sessions >= limit || *audit_rows >= limit;
        return 0;
}

int engine_maintain(struct engine *e, struct store_maintenance *ret) {
        int r = engine_commit(e);

        if (r < 0)
                return r;
        r = store_maintain(e->store, ret);
        if (r < 0)
                return storage_errno(r);
        if (!ret->ok)
                log_error("Database %s failed its quick check: %s", store_path(e->store), ret->message);
        return 0;
}

int engine_flush_touches(struct engine *e, unsigned limit, unsigned *written, bool *more) {
        unsigned n = 0;
        int r;

        while (e->n_dirty > 0 && n < limit) {
                uint32_t h = e->dirty[e->n_dirty - 1];
                struct session *s;

                if (h >= e->sessions_used || (e->sessions[h].flags & (S_USED | S_DIRTY)) != (S_USED | S_DIRTY)) {
                        e->n_dirty--; /* ended since, or written already */
                        continue;
                }
                r = begin(e);
                if (r < 0)
                        break;
                s = &e->sessions[h];
                r = touch_row(e, s->rowid, h);
                if (r < 0) {
                        fail_txn(e, r);
                        break;
                }
                r = store_session_set_activity(e->store, s->rowid, s->last_activity);
                if (r < 0 && r != -ENOENT) {
                        fail_txn(e, r);
                        break;
                }
                e->n_dirty--;
                s->persisted_activity = s->last_activity;
                s->flags &= ~S_DIRTY;
                n++;
        }
        e->counters.touches_written += n;
        if (written)
                *written = n;
        if (more)
                *more = e->n_dirty > 0;
        return e->commit_error ? e->commit_error : 0;
}

void engine_count(struct engine *e, int64_t now, struct engine_counts *ret) {
        memset(ret, 0, sizeof *ret);
        for (uint32_t h = 0; h < e->sessions_used; h++) {
                const struct session *s = &e->sessions[h];
                int64_t end;

                if (!(s->flags & S_USED))
                        continue;
                ret->sessions++;
                switch (session_state(e, s, now, &end, NULL)) {
                case ENGINE_STATE_ACTIVE: ret->active++; break;
                case ENGINE_STATE_GRACE: ret->grace++; break;
                default: ret->expired++; break;
                }
                if (now >= end + cfg(e)->timeout.cleanup_grace)
                        ret->awaiting_cleanup++;
                if (s->flags & S_DIRTY)
                        ret->dirty_touches++;
        }
        ret->users = e->n_users;
}

/* ---- for the observability modules -------------------------------------------------------------------------- */

struct store *engine_store(struct engine *e) {
        return e->store;
}

int engine_count_by_platform(struct engine *e, int64_t now, engine_count_fn cb, void *userdata) {
        uint64_t *counts = calloc((size_t)e->platforms_used + 1, sizeof *counts);
        int r = 0;

        if (!counts)
                return -ENOMEM;
        for (uint32_t h = 0; h < e->sessions_used; h++) {
                const struct session *s = &e->sessions[h];

                if ((s->flags & S_USED) && session_state(e, s, now, NULL, NULL) != ENGINE_STATE_EXPIRED)
                        counts[s->platform]++;
        }
        for (uint32_t p = 0; r == 0 && p <= e->platforms_used; p++)
                if (counts[p] > 0)
                        r = cb(platform_name(e, p), counts[p], userdata);
        free(counts);
        return r;
}

int engine_suspicious_users(struct engine *e, int64_t now, engine_count_fn cb, void *userdata) {
        int64_t threshold = cfg(e)->security.suspicious_activity_threshold;
        int r = 0;

        for (size_t i = 0; r == 0 && i < e->n_secs; i++) {
                struct user_sec *sec = e->secs[i].sec;

                sec_prune(sec, now, threshold);
                if (sec->n > 0)
                        r = cb(user_name(e, e->secs[i].user), sec->n, userdata);
        }
        return r;
}

/* ---- timers --------------------------------------------------------------------------------------------------- */

static void flush_timer_cb(uv_timer_t *t) {
        struct engine *e = t->data;
        bool more = false;
        unsigned n = 0;

        (void)engine_flush_touches(e, TOUCH_FLUSH_BATCH, &n, &more);
        if (++e->ticks % SWEEP_EVERY_TICKS == 0)
                engine_security_sweep(e, clock_now());
        /* More to write: go on in a later loop iteration, after this
         * batch is committed and other requests had their turn. Not 0: a
         * timer re-armed with 0 from its own callback runs again in the
         * same iteration under libuv 1.44, which would write every batch in
         * one transaction without ever yielding. */
        uv_timer_start(t, flush_timer_cb, more ? 1 : TOUCH_FLUSH_INTERVAL_MS, 0);
}

static void timer_close_cb(uv_handle_t *h) {
        free(h);
}

static uv_timer_t *timer_new(struct engine *e) {
        uv_timer_t *t = malloc(sizeof *t);

        if (!t)
                return NULL;
        if (uv_timer_init(e->d->loop, t) < 0) {
                free(t);
                return NULL;
        }
        t->data = e;
        uv_unref((uv_handle_t *)t);
        return t;
}

static void timer_free(uv_timer_t *t) {
        if (t) {
                uv_timer_stop(t);
                uv_close((uv_handle_t *)t, timer_close_cb);
        }
}

/* ---- lifecycle ------------------------------------------------------------------------------------------------ */

/* Loading. With a million sessions the index slots, the user entries and
 * the session entries are tens of MiB, and each row's lookups are cache
 * misses that depend on one another (slot, then entry). So rows are taken
 * in batches: their slots are prefetched when a row is copied, the user
 * entry a slot points to before the batch is added, and the misses of a
 * batch overlap instead of queueing up. Rows with texts longer than the
 * copy's room (rare: long user ids) flush the batch and go alone. */
#define LOAD_BATCH 32
#define LOAD_TEXT 64

struct load_row {
        struct store_session row;
        uint32_t user_hash;
        char id[TOKEN_ID_STRING_LEN + 1];
        char user_id[LOAD_TEXT];
        char platform_id[LOAD_TEXT];
};

struct load_batch {
        struct load_row rows[LOAD_BATCH];
        unsigned n;
};

static void prefetch_slot(const struct hindex *x, uint64_t hash) {
        if (x->slots)
                __builtin_prefetch(&x->slots[(uint32_t)hash & x->mask]);
}

static int load_add(struct engine *e, const struct store_session *row, uint32_t user_hash) {
        uint32_t h;
        int r = session_add_hashed(e, row, user_hash, &h);

        return r == -EINVAL ? 0 : r; /* a malformed row is skipped and logged */
}

static int load_flush(struct engine *e) {
        struct load_batch *b = e->loading;
        int r = 0;

        if (!b)
                return 0;
        /* The slots are in cache by now: bring in the user entries they name. */
        for (unsigned i = 0; i < b->n; i++) {
                const struct hindex *x = &e->by_user;
                uint32_t v = x->slots ? x->slots[b->rows[i].user_hash & x->mask] : 0;

                if (v != 0 && ((v & HINDEX_MAX_HANDLE) - 1) < e->users_used)
                        __builtin_prefetch(&e->users[(v & HINDEX_MAX_HANDLE) - 1]);
        }
        for (unsigned i = 0; i < b->n && r >= 0; i++)
                r = load_add(e, &b->rows[i].row, b->rows[i].user_hash);
        b->n = 0;
        return r;
}

static bool copy_text(char *dst, size_t size, const char *src, const char **ret) {
        size_t n;

        if (!src) {
                *ret = NULL;
                return true;
        }
        n = strlen(src);
        if (n >= size)
                return false;
        memcpy(dst, src, n + 1);
        *ret = dst;
        return true;
}

static int load_cb(const struct store_session *row, void *userdata) {
        struct engine *e = userdata;
        struct load_batch *b = e->loading;
        uint32_t user_hash = (uint32_t)name_hash(e, row->user_id);
        struct load_row *l;
        int r;

        prefetch_slot(&e->by_user, user_hash);
        prefetch_slot(&e->by_key, key_hash(row->token_hash));
        if (!b)
                return load_add(e, row, user_hash);
        l = &b->rows[b->n];
        l->row = *row;
        l->user_hash = user_hash;
        if (!copy_text(l->id, sizeof l->id, row->id, &l->row.id) ||
            !copy_text(l->user_id, sizeof l->user_id, row->user_id, &l->row.user_id) ||
            !copy_text(l->platform_id, sizeof l->platform_id, row->platform_id, &l->row.platform_id)) {
                r = load_flush(e); /* keep the order */
                return r < 0 ? r : load_add(e, row, user_hash);
        }
        l->row.end_reason = l->row.ip = l->row.user_agent = NULL; /* not kept */
        if (++b->n == LOAD_BATCH)
                return load_flush(e);
        return 0;
}

/* Sizes the session array and the indexes for the sessions about to be
 * loaded, so that loading a million never rehashes (a rehash reads every
 * entry's key: a cache miss each). Users are sized as if each session had
 * its own: at worst a few MiB more for a million sessions of few users. */
static int load_reserve_cb(uint64_t n, void *userdata) {
        struct engine *e = userdata;
        int r;

        if (n == 0)
                return 0;
        if (n > HINDEX_MAX_HANDLE)
                return -ENOMEM;
        r = grow_array32((void **)&e->sessions, &e->sessions_allocated, (uint32_t)n, sizeof *e->sessions);
        if (r >= 0)
                r = hindex_reserve(&e->by_key, (uint32_t)n);
        if (r >= 0)
                r = hindex_reserve(&e->by_user, (uint32_t)n);
        return r;
}

static int dirname_of(const char *path, char *buf, size_t size) {
        const char *slash = strrchr(path, '/');

        if (!slash) {
                snprintf(buf, size, ".");
                return 0;
        }
        if (slash == path) {
                snprintf(buf, size, "/");
                return 0;
        }
        if ((size_t)(slash - path) >= size)
                return -ENAMETOOLONG;
        memcpy(buf, path, slash - path);
        buf[slash - path] = '\0';
        return 0;
}

static int mkdir_p(const char *dir) {
        char buf[PATH_MAX];

        if (strlen(dir) >= sizeof buf)
                return -ENAMETOOLONG;
        strcpy(buf, dir);
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(buf, 0700) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, 0700) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static int open_store(struct engine *e) {
        const struct sessiond_config *c = cfg(e);
        struct store_options o = {
                .synchronous = c->daemon.synchronous,
                .reserve = load_reserve_cb,
                .load = load_cb,
                .load_userdata = e,
        };
        char dir[PATH_MAX];
        struct stat st;
        bool db_exists, created;
        int r;

        if (!c->features.persistence) {
                token_key_random(&e->key);
                o.path = ":memory:";
                return store_open(&o, &e->store);
        }
        o.path = c->daemon.database_path;
        r = dirname_of(o.path, dir, sizeof dir);
        if (r < 0)
                return log_error_errno(r, "Database path %s is too long.", o.path);
        r = mkdir_p(dir);
        if (r < 0)
                return log_error_errno(r, "Failed to create the database folder %s: %m", dir);
        db_exists = stat(o.path, &st) == 0 && st.st_size > 0;
        /* The key first: a database whose key is gone cannot resolve a single
         * token, and making a new key would hide that. */
        r = token_key_load(dir, !db_exists, &e->key, &created);
        if (r == -ENOENT && db_exists) {
                log_error("Database %s exists but its key file %s/%s is missing: no token could be "
                          "resolved. Restore the key file, or move the database away to start afresh.",
                          o.path, dir, TOKEN_KEY_FILE);
                return r;
        }
        if (r < 0)
                return r;
        if (created)
                log_info("Created key file %s/%s.", dir, TOKEN_KEY_FILE);
        e->loading = calloc(1, sizeof *e->loading); /* NULL: rows one by one */
        r = store_open(&o, &e->store);
        if (r >= 0) {
                r = load_flush(e); /* the last rows */
                if (r < 0)
                        log_error_errno(r, "Database %s: loading the sessions failed: %m", o.path);
        }
        free(e->loading);
        e->loading = NULL;
        return r;
}

int engine_new(struct daemon *d, struct engine **ret) {
        uint64_t started;
        struct engine *e;
        int r;

        assert(d && d->config && ret);
        r = token_init();
        if (r < 0)
                return log_error_errno(r, "Failed to initialise libsodium.");
        e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        e->d = d;
        e->sessions_free = e->users_free = e->platforms_free = NIL;
        randombytes_buf(e->name_key, sizeof e->name_key);
        r = hindex_init(&e->by_key, 1024, &session_index_ops, e);
        if (r >= 0)
                r = hindex_init(&e->by_user, 1024, &user_index_ops, e);
        if (r >= 0)
                r = hindex_init(&e->by_platform, 16, &platform_index_ops, e);
        if (r < 0)
                goto fail;

        /* Opening loads the live sessions (see store_options). */
        started = uv_hrtime();
        r = open_store(e);
        if (r < 0)
                goto fail;
        r = store_max_rowid(e->store, &e->next_rowid);
        if (r < 0)
                goto fail;
        e->next_rowid++;
        if (d->loop) {
                e->flush_timer = timer_new(e);
                e->dispatch_timer = timer_new(e);
                if (!e->flush_timer || !e->dispatch_timer) {
                        r = -ENOMEM;
                        goto fail;
                }
                uv_timer_start(e->flush_timer, flush_timer_cb, TOUCH_FLUSH_INTERVAL_MS, 0);
        }
        log_info("Store %s: opened with %u live sessions of %u users in %llu ms.", store_path(e->store),
                 e->n_sessions, e->n_users, (unsigned long long)((uv_hrtime() - started) / 1000000));
        *ret = e;
        return 0;
fail:
        engine_free(e);
        return r;
}

void engine_config_changed(struct engine *e) {
        const struct sessiond_config *c = cfg(e);

        if (!store_is_memory(e->store)) {
                if (!c->features.persistence)
                        log_warning("features.persistence changed; the store changes at the next start.");
                else if (strcmp(c->daemon.database_path, store_path(e->store)) != 0)
                        log_warning("daemon.database_path changed to %s; %s stays in use until the next start.",
                                    c->daemon.database_path, store_path(e->store));
                (void)store_set_synchronous(e->store, c->daemon.synchronous);
        } else if (c->features.persistence)
                log_warning("features.persistence changed; the store changes at the next start.");
}

void engine_free(struct engine *e) {
        if (!e)
                return;
        if (e->store) {
                unsigned n;
                bool more = true;

                /* Whatever the iteration did, then every touch, even those
                 * below the granularity: a clean stop loses nothing. */
                (void)engine_commit(e);
                for (uint32_t h = 0; h < e->sessions_used; h++) {
                        struct session *s = &e->sessions[h];

                        if ((s->flags & (S_USED | S_DIRTY)) == S_USED && s->last_activity > s->persisted_activity &&
                            GROW(e->dirty, e->dirty_allocated, e->n_dirty + 1) == 0) {
                                s->flags |= S_DIRTY;
                                e->dirty[e->n_dirty++] = h;
                        }
                }
                while (more && engine_flush_touches(e, UINT_MAX, &n, &more) >= 0 && n > 0)
                        ;
                if (engine_commit(e) < 0)
                        log_error("Store %s: the last touches could not be written.", store_path(e->store));
                (void)store_checkpoint(e->store);
                store_close(e->store);
        }
        timer_free(e->flush_timer);
        timer_free(e->dispatch_timer);
        for (size_t i = 0; i < e->n_observers; i++)
                if (e->observers[i].free_fn)
                        e->observers[i].free_fn(e->observers[i].userdata);
        queue_clear(&e->ready);
        queue_clear(&e->in_txn);
        free(e->ready.items);
        free(e->in_txn.items);
        for (uint32_t i = 0; i < e->users_used; i++)
                if (e->users[i].name.ext.is_long)
                        free(e->users[i].name.ext.ptr);
        for (size_t i = 0; i < e->n_secs; i++)
                user_sec_free(e->secs[i].sec);
        for (uint32_t i = 0; i < e->platforms_used; i++)
                free(e->platforms[i].name);
        sodium_memzero(e->sessions, (size_t)e->sessions_allocated * sizeof *e->sessions);
        free(e->sessions);
        free(e->users);
        free(e->platforms);
        free(e->secs);
        free(e->affected);
        free(e->dirty);
        hindex_free(&e->by_key);
        hindex_free(&e->by_user);
        hindex_free(&e->by_platform);
        sodium_memzero(&e->key, sizeof e->key);
        free(e);
}
