/* The session engine's in-memory table: sessions, users, platforms and
 * their indexes (see engine-internal.h for the other files).
 *
 * Memory. Everything a validation needs is in memory, so a Validate that
 * finds its session never touches SQLite: a session is one 72-byte entry in
 * an array (struct session), found through an open-addressing index of
 * 4-byte slots keyed by the first 16 bytes of the token's keyed hash
 * (compared with sodium_memcmp). Times are Unix milliseconds in 42 bits
 * (32-bit seconds and a 10-bit millisecond part: see struct session), the
 * fingerprints short prefixes of their keyed hashes, users and platforms
 * interned handles, the public id derived from the row number when needed;
 * ip and user agent texts stay in the store. Users are interned (one copy
 * of each name, short ones inside the 48-byte entry) and link their
 * sessions in a doubly linked list kept in order of last activity (to the
 * millisecond, as session_touch() writes it), least recent first: a new session goes at the end, a touch that moves
 * last_activity moves the session to the end, an end unlinks it, all in
 * O(1) (only a wall clock set back makes an insertion walk back from the
 * end to its place). The concurrency limit thus finds the least recently
 * active session at the head (cleanup.c), and ListUser walks the list.
 * Loading appends in row order and sorts each user's list once at the end
 * (by last activity, then row). A million sessions of a million users
 * take about 142 MiB of resident memory after a start, 153 MiB once
 * created (the writer's SQLite cache): 72-byte session and 48-byte user
 * entries, two indexes of 8 MiB, the libraries (README, Performance).
 *
 * Expiry is computed, not stored: the end of a session is the earliest of
 * last_activity + idle_timeout, renewed_at + session_lifetime and
 * created_at + absolute_timeout (ties name idle, then lifetime, then
 * absolute). Within expiration_grace after it the session is "grace"
 * (honoured, never touched); after it "expired" until cleanup ends it.
 *
 * Precision. Those times and the engine's `now` are Unix milliseconds, so
 * a session heartbeated at 10.9 s with an idle timeout of 3 s is active
 * until 13.9 s, not until 13 s as whole seconds would have it: no session
 * ends, enters grace or is warned before its configured time has fully
 * passed. SessionInfo keeps whole seconds (the protocol's): created_at,
 * last_activity, renewed_at and ended_at are floored (the second the event
 * happened in), while expires_at and expires_in are rounded up, so that a
 * client is never told less time than it has: a live session shows at
 * least expires_in 1 until its end, 0 from then on. warning is exact
 * (expires_in <= warning_threshold with expires_in rounded up is the same
 * as: at most warning_threshold seconds are left).
 */
#include "engine-internal.h"

#include <assert.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

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

const char *engine_end_reason_to_string(enum engine_end_reason r) {
        return (unsigned) r < _ENGINE_END_MAX ? end_reason_names[r] : "none";
}

enum engine_end_reason engine_end_reason_from_string(const char *s) {
        for (int i = 1; s && i < _ENGINE_END_MAX; i++)
                if (strcmp(s, end_reason_names[i]) == 0)
                        return (enum engine_end_reason) i;
        return ENGINE_END_NONE;
}

const char *engine_state_to_string(enum engine_state s) {
        switch (s) {
        case ENGINE_STATE_ACTIVE:
                return "active";
        case ENGINE_STATE_GRACE:
                return "grace";
        case ENGINE_STATE_EXPIRED:
                return "expired";
        case ENGINE_STATE_ENDED:
                return "ended";
        }
        return "ended";
}

const char *engine_failure_to_string(enum engine_failure f) {
        switch (f) {
        case ENGINE_FAIL_NOT_FOUND:
                return "not_found";
        case ENGINE_FAIL_EXPIRED:
                return "expired";
        case ENGINE_FAIL_FINGERPRINT:
                return "fingerprint";
        case ENGINE_FAIL_INVALID:
                return "invalid";
        case _ENGINE_FAIL_MAX:
                break;
        }
        return "invalid";
}

/* ---- growable arrays ------------------------------------------------------- */

int table_grow_array(void **p, size_t *allocated, size_t need, size_t size) {
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


int table_grow_array32(void **p, uint32_t *allocated, uint32_t need, size_t size) {
        size_t a = *allocated;
        int r;

        if (need == NIL)
                return -ENOMEM;
        r = table_grow_array(p, &a, need, size);
        if (r < 0)
                return r;
        *allocated = a > NIL - 1 ? NIL - 1 : (uint32_t) a;
        return 0;
}

/* ---- hashing of names and keys ---------------------------------------------- */

uint64_t table_name_hash(const struct engine *e, const char *s) {
        uint8_t out[crypto_shorthash_BYTES];
        uint64_t v;

        crypto_shorthash(out, (const unsigned char *) s, strlen(s), e->name_key);
        memcpy(&v, out, sizeof v);
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

const struct hindex_ops table_session_index_ops = {session_index_hash, session_index_equal};


static uint64_t user_index_hash(uint32_t h, void *ctx) {
        struct engine *e = ctx;
        return e->users[h].hash;
}

static bool user_index_equal(uint32_t h, const void *key, void *ctx) {
        struct engine *e = ctx;
        return strcmp(user_name(e, h), key) == 0;
}

const struct hindex_ops table_user_index_ops = {user_index_hash, user_index_equal};

static uint64_t platform_index_hash(uint32_t h, void *ctx) {
        struct engine *e = ctx;
        return e->platforms[h].hash;
}

static bool platform_index_equal(uint32_t h, const void *key, void *ctx) {
        struct engine *e = ctx;
        return strcmp(e->platforms[h].name, key) == 0;
}

const struct hindex_ops table_platform_index_ops = {platform_index_hash, platform_index_equal};

/* ---- users and platforms ----------------------------------------------------- */

uint32_t table_user_find(struct engine *e, const char *name) {
        return hindex_find(&e->by_user, table_name_hash(e, name), name);
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
                r = table_grow_array32((void **) &e->users, &e->users_allocated, e->users_used + 1, sizeof *e->users);
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
        u->min_created = u->min_renewed = UINT32_MAX;
        e->n_users++;
        *ret = h;
        return 0;
}

int table_user_get(struct engine *e, const char *name, uint32_t *ret) {
        return user_get_hashed(e, name, (uint32_t) table_name_hash(e, name), ret);
}

/* Frees a user without sessions and without security records. */
void table_user_maybe_free(struct engine *e, uint32_t h) {
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

int table_platform_get(struct engine *e, const char *name, uint32_t *ret) {
        uint64_t hash;
        uint32_t h;
        char *copy;
        int r;

        if (!name) {
                *ret = 0;
                return 0;
        }
        hash = table_name_hash(e, name);
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
                r = table_grow_array32((void **) &e->platforms, &e->platforms_allocated, e->platforms_used + 1,
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

void table_platform_put(struct engine *e, uint32_t ref) {
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

/* ---- sessions in memory -------------------------------------------------------- */

/* ---- a user's sessions in order of activity ------------------------------------- */

/* The list is linked forward by user_next and ends in NIL; user_prev links
 * back, and the first session's user_prev is the last one (the tail): the
 * user entry keeps only the head, and the tail is still one step away. */
static uint32_t user_list_tail(const struct engine *e, const struct user *u) {
        return u->head != NIL ? e->sessions[u->head].user_prev : NIL;
}

static void user_list_unlink(struct engine *e, uint32_t h) {
        struct session *s = &e->sessions[h];
        struct user *u = &e->users[s->user];
        uint32_t next = s->user_next, prev = s->user_prev;

        if (h == u->head)
                u->head = next;
        else
                e->sessions[prev].user_next = next;
        if (next != NIL)
                e->sessions[next].user_prev = prev; /* prev is the tail when h was the head */
        else if (u->head != NIL)
                e->sessions[u->head].user_prev = prev; /* h was the tail: prev is now */
        s->user_next = s->user_prev = NIL;
}

/* Links h after the last session at most as recently active: the end of
 * the list unless the clock was set back. While loading: the end. */
static void user_list_insert(struct engine *e, uint32_t h) {
        struct session *s = &e->sessions[h];
        struct user *u = &e->users[s->user];
        uint32_t tail = user_list_tail(e, u), after = tail;

        while (!e->users_unsorted && after != NIL &&
               session_ms(&e->sessions[after], ST_ACTIVITY) > session_ms(s, ST_ACTIVITY))
                after = after != u->head ? e->sessions[after].user_prev : NIL;
        if (after == NIL) { /* the new first */
                s->user_next = u->head;
                s->user_prev = tail != NIL ? tail : h;
                if (u->head != NIL)
                        e->sessions[u->head].user_prev = h;
                u->head = h;
                return;
        }
        s->user_prev = after;
        s->user_next = e->sessions[after].user_next;
        e->sessions[after].user_next = h;
        if (s->user_next != NIL)
                e->sessions[s->user_next].user_prev = h;
        else
                e->sessions[u->head].user_prev = h; /* the new last */
}

/* h's last_activity moved forward: it goes to its new place (the end). */
void table_session_activity_moved(struct engine *e, uint32_t h) {
        struct session *s = S(e, h);

        if (s->user_next == NIL || e->users_unsorted)
                return;
        user_list_unlink(e, h);
        user_list_insert(e, h);
}

static bool session_before(const struct engine *e, uint32_t a, uint32_t b) {
        const struct session *x = &e->sessions[a], *y = &e->sessions[b];

        int64_t tx = session_ms(x, ST_ACTIVITY), ty = session_ms(y, ST_ACTIVITY);

        return tx < ty || (tx == ty && x->row_key < y->row_key);
}

static uint32_t list_merge(struct engine *e, uint32_t a, uint32_t b) {
        uint32_t head = NIL, *p = &head;

        while (a != NIL && b != NIL) {
                uint32_t *from = session_before(e, b, a) ? &b : &a;

                *p = *from;
                p = &e->sessions[*from].user_next;
                *from = *p;
        }
        *p = a != NIL ? a : b;
        return head;
}

/* Merge sort of a NIL-terminated list of n sessions linked by user_next. */
static uint32_t list_sort(struct engine *e, uint32_t head, uint32_t n) {
        uint32_t *p = &head, mid;

        if (n <= 1)
                return head;
        for (uint32_t i = 0; i < n / 2; i++)
                p = &e->sessions[*p].user_next;
        mid = *p;
        *p = NIL;
        return list_merge(e, list_sort(e, head, n / 2), list_sort(e, mid, n - n / 2));
}

/* After loading: each user's list in order of activity (then row). */
void table_users_sort(struct engine *e) {
        e->users_unsorted = false;
        for (uint32_t u = 0; u < e->users_used; u++) {
                struct user *x = &e->users[u];
                uint32_t prev = NIL;

                if (!user_used(e, u) || x->n_sessions < 2)
                        continue;
                x->head = list_sort(e, x->head, x->n_sessions);
                for (uint32_t h = x->head; h != NIL; prev = h, h = e->sessions[h].user_next)
                        e->sessions[h].user_prev = prev;
                e->sessions[x->head].user_prev = prev; /* the last */
        }
}


void table_session_id(const struct engine *e, const struct session *s, char out[TOKEN_ID_STRING_LEN + 1]) {
        uint8_t id[TOKEN_ID_BYTES];

        token_id_derive(&e->key, s->sec[ST_CREATED], s->row_key, id);
        token_id_format(id, out);
}

/* Adds a session to memory from a store row. */
/* user_hash: (uint32_t)table_name_hash() of row->user_id. */
int table_session_add_hashed(struct engine *e, const struct store_session *row, uint32_t user_hash, uint32_t *ret) {
        uint32_t h, user, platform, next_free;
        struct session *s;
        uint8_t id[TOKEN_ID_BYTES];
        char text[TOKEN_ID_STRING_LEN + 1];
        int r;

        /* Memory derives ids from the creation second and row_key: a row
         * whose id was made otherwise (or a foreign one) would show the
         * wrong id. */
        token_id_derive(&e->key, t32(ms_floor_s(row->created_at)), row->row_key, id);
        token_id_format(id, text);
        if (strcmp(text, row->id) != 0 || !row->user_id[0]) {
                /* While the store loads, e->store is not set yet. */
                log_warning("Store %s: session row %lld has a malformed id or user; skipped.",
                            e->store ? store_name(e->store) : cfg(e)->daemon.database_path, (long long) row->row_key);
                return -EINVAL;
        }
        if (e->sessions_free != NIL)
                h = e->sessions_free;
        else {
                r = table_grow_array32((void **) &e->sessions, &e->sessions_allocated, e->sessions_used + 1,
                                       sizeof *e->sessions);
                if (r < 0)
                        return r;
                h = e->sessions_used;
        }
        r = user_get_hashed(e, row->user_id, user_hash, &user);
        if (r < 0)
                return r;
        r = table_platform_get(e, row->platform_id, &platform);
        if (r < 0) {
                table_user_maybe_free(e, user);
                return r;
        }
        s = &e->sessions[h];
        next_free = s->user_next; /* when h is the head of the free list */
        *s = (struct session){
                .row_key = row->row_key,
                .user = user,
                .platform = platform,
                .fp_user_agent = fp32(row->fp_user_agent),
                .fp_small = {fp16(row->fp_ip), fp16(row->fp_accept_language), fp16(row->fp_accept_encoding)},
                .flags = S_USED,
        };
        session_ms_set(s, ST_CREATED, row->created_at);
        session_ms_set(s, ST_ACTIVITY, row->last_activity);
        session_ms_set(s, ST_RENEWED, row->renewed_at);
        session_ms_set(s, ST_PERSISTED, row->last_activity);
        memcpy(s->key, row->token_hash, 16);
        r = hindex_insert(&e->by_key, key_hash(s->key), h);
        if (r < 0) {
                s->flags = 0;
                table_platform_put(e, platform);
                table_user_maybe_free(e, user);
                return r;
        }
        if (h == e->sessions_free)
                e->sessions_free = next_free;
        else
                e->sessions_used++;
        user_list_insert(e, h);
        e->users[user].n_sessions++;
        /* Seconds (floored): lower bounds of the milliseconds too. */
        if (s->sec[ST_CREATED] < e->users[user].min_created)
                e->users[user].min_created = s->sec[ST_CREATED];
        if (s->sec[ST_RENEWED] < e->users[user].min_renewed)
                e->users[user].min_renewed = s->sec[ST_RENEWED];
        e->n_sessions++;
        *ret = h;
        return 0;
}

int table_session_add(struct engine *e, const struct store_session *row, uint32_t *ret) {
        return table_session_add_hashed(e, row, (uint32_t) table_name_hash(e, row->user_id), ret);
}

void table_session_remove(struct engine *e, uint32_t h) {
        struct session *s = S(e, h);
        struct user *u = &e->users[s->user];

        hindex_remove(&e->by_key, key_hash(s->key), h);
        user_list_unlink(e, h);
        assert(u->n_sessions > 0);
        if (--u->n_sessions == 0)
                u->min_created = u->min_renewed = UINT32_MAX;
        table_platform_put(e, s->platform);
        table_user_maybe_free(e, s->user);
        sodium_memzero(s->key, sizeof s->key);
        s->flags = 0;
        s->row_key = 0;
        s->user_next = e->sessions_free;
        e->sessions_free = h;
        e->n_sessions--;
}

int64_t table_session_end_time(const struct engine *e, const struct session *s, enum engine_end_reason *why) {
        const struct sessiond_config *c = cfg(e);
        int64_t end = session_ms(s, ST_ACTIVITY) + SEC_MS(c->timeout.idle_timeout);
        int64_t life = session_ms(s, ST_RENEWED) + SEC_MS(c->timeout.session_lifetime);
        int64_t abs_end = session_ms(s, ST_CREATED) + SEC_MS(c->timeout.absolute_timeout);
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

enum engine_state table_session_state(const struct engine *e, const struct session *s, int64_t now, int64_t *end,
                                      enum engine_end_reason *why) {
        int64_t t = table_session_end_time(e, s, why);

        if (end)
                *end = t;
        if (now < t)
                return ENGINE_STATE_ACTIVE;
        if (now < t + SEC_MS(cfg(e)->timeout.expiration_grace))
                return ENGINE_STATE_GRACE;
        return ENGINE_STATE_EXPIRED;
}

void table_info_fill(struct engine *e, uint32_t h, int64_t now, struct engine_info *i) {
        const struct session *s = S(e, h);
        int64_t end;

        memset(i, 0, sizeof *i);
        table_session_id(e, s, i->id);
        i->user_id = user_name(e, s->user);
        i->platform_id = platform_name(e, s->platform);
        i->created_at = s->sec[ST_CREATED];
        i->last_activity = s->sec[ST_ACTIVITY];
        i->renewed_at = s->sec[ST_RENEWED];
        i->state = table_session_state(e, s, now, &end, &i->end_reason);
        /* Rounded as said at the top of this file. */
        i->expires_at_ms = end;
        i->expires_at = ms_ceil_s(end);
        i->expires_in = end > now ? ms_ceil_s(end - now) : 0;
        i->warning = i->expires_in <= cfg(e)->timeout.warning_threshold;
}

/* An ended row (or a live row not in memory) as SessionInfo. */
void table_info_from_row(const struct store_session *row, struct engine_info *i) {
        memset(i, 0, sizeof *i);
        snprintf(i->id, sizeof i->id, "%s", row->id);
        i->user_id = row->user_id;
        i->platform_id = row->platform_id;
        i->created_at = ms_floor_s(row->created_at);
        i->last_activity = ms_floor_s(row->last_activity);
        i->renewed_at = ms_floor_s(row->renewed_at);
        i->ip = row->ip;
        i->user_agent = row->user_agent;
        i->state = ENGINE_STATE_ENDED;
        i->ended_at = ms_floor_s(row->ended_at);
        i->expires_at = i->ended_at;
        i->expires_at_ms = row->ended_at;
        i->end_reason = engine_end_reason_from_string(row->end_reason);
        i->expires_in = 0;
        i->warning = true;
}
