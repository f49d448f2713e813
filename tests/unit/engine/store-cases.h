/* The store's backend-independent cases: one suite, written against
 * store.h only, that every backend runs (test-store.c on SQLite, always;
 * test-store-postgres.c on PostgreSQL, in the meson suite `postgres`).
 *
 * What every backend promises is tested here once: the unit of work
 * (commit, rollback, lost whole, asynchronous on a loop), the session
 * operations, iteration and its pages, purges, the audit with its filters
 * and cursors, analytics, loading at open, reopening, maintenance, readers.
 * Where the backends differ on purpose (store.h: PostgreSQL finds live rows
 * by token hash and lets a touch or an end of a missing row pass, SQLite
 * fails the unit), each backend's own file tests its side, with what only
 * that backend has (SQLite: files, WAL, checkpoints, migrations, refused
 * databases; PostgreSQL: key blocks, the key check, NOTIFY, the leader's
 * lock, reconnections, a server restart).
 *
 * A header of static functions rather than a library: the includer
 * defines the four backend_*() functions declared below (where its store
 * lives), then calls store_cases_add(). Each case starts on an empty
 * database (the includer's checked fixture sees to it).
 */
#pragma once

#include <uv.h>

#include "helpers.h"
#include "macro.h"

/* ---- what the including backend file defines ------------------------------ */

/* Opens the test's store (the same database each call: a reopened store
 * sees what was committed). */
static struct store *backend_open(void);
/* Fills where the store lives (path or URL, key check, synchronous): the
 * caller adds loading callbacks or a loop. */
static void backend_options(struct store_options *o);
/* Makes the database empty again (no store is open). */
static void backend_reset(void);
/* One number read from the database by another connection, outside the
 * store (what is committed): plain SQL that both backends understand. */
static int64_t backend_count(const char *sql);

/* ---- helpers the backend files share -------------------------------------- */

/* Inserts r under a key the store gives (written to *row_key and r->row_key). */
static int insert_row(struct store *s, struct store_session *r, const void *data, size_t size, int64_t *row_key) {
        int res = store_allocate_key(s, row_key);

        if (res < 0)
                return res;
        r->row_key = *row_key;
        return store_session_insert(s, r, data, size);
}

static int int64_cmp(const void *a, const void *b) {
        int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;

        return (x > y) - (x < y);
}

static struct store_session row_for(const char *id, uint8_t fill, const char *user, int64_t now) {
        struct store_session r = {
                .id = id,
                .user_id = user,
                .created_at = now,
                .last_activity = now,
                .renewed_at = now,
                .fp_user_agent = 77,
                .ip = "192.0.2.1",
                .user_agent = "Mozilla",
        };
        memset(r.token_hash, fill, sizeof r.token_hash);
        return r;
}

struct capture {
        int n;
        int64_t row_key, ended_at, last_activity, renewed_at;
        uint64_t fp_ua, fp_ip;
        char id[64], user[64], reason[64], ip[64], platform[64];
        bool saw_ip;
};

static int capture_cb(const struct store_session *row, void *userdata) {
        struct capture *c = userdata;

        c->n++;
        c->row_key = row->row_key;
        snprintf(c->id, sizeof c->id, "%s", row->id);
        snprintf(c->user, sizeof c->user, "%s", row->user_id);
        snprintf(c->reason, sizeof c->reason, "%s", row->end_reason ? row->end_reason : "");
        snprintf(c->ip, sizeof c->ip, "%s", row->ip ? row->ip : "");
        snprintf(c->platform, sizeof c->platform, "%s", row->platform_id ? row->platform_id : "");
        c->saw_ip |= row->ip != NULL;
        c->ended_at = row->ended_at;
        c->last_activity = row->last_activity;
        c->renewed_at = row->renewed_at;
        c->fp_ua = row->fp_user_agent;
        c->fp_ip = row->fp_ip;
        return 0;
}

/* Opening hands the live sessions to the loader (after telling how many),
 * in row order and light; a failing loader fails the open. */
struct loading {
        int64_t reserved;
        int n, fail_at;
        int64_t row_keys[8];
        bool saw_ip;
};

static int reserve_cb(uint64_t n, void *userdata) {
        ((struct loading *) userdata)->reserved = (int64_t) n;
        return 0;
}

static int loading_cb(const struct store_session *row, void *userdata) {
        struct loading *l = userdata;

        if (l->n == l->fail_at)
                return -ENOMEM;
        ck_assert_int_lt(l->n, 8);
        ck_assert_int_eq(row->ended_at, 0);
        l->row_keys[l->n++] = row->row_key;
        l->saw_ip |= row->ip != NULL;
        return 0;
}

/* A commit's or a maintenance step's callback on the loop. */
struct done {
        int calls, result;
};

static void done_cb(int result, void *userdata) {
        struct done *d = userdata;

        d->calls++;
        d->result = result;
}

static void never_cb(uv_timer_t *t) {
        (void) t;
}

/* Runs the loop until *counter reaches at_least. The store's wake-up
 * handle does not keep a loop alive by itself (the daemon's server does):
 * a repeating timer stands in for it (and lets a test wait for what a
 * backend's other connection hears). The tcase's timeout bounds the wait. */
static void run_until(uv_loop_t *loop, const int *counter, int at_least) {
        uv_timer_t t;

        uv_timer_init(loop, &t);
        uv_timer_start(&t, never_cb, 50, 50);
        while (*counter < at_least)
                uv_run(loop, UV_RUN_ONCE);
        uv_close((uv_handle_t *) &t, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
}

/* The test's store with its writer thread, answering on loop (initialised here). */
static struct store *open_on_loop(uv_loop_t *loop) {
        struct store_options o = {0};
        struct store *s = NULL;

        backend_options(&o);
        o.loop = loop;
        ck_assert_int_eq(uv_loop_init(loop), 0);
        ck_assert_int_eq(store_open(&o, &s), 0);
        return s;
}

static int stop_cb(const struct store_session *row, void *userdata) {
        (void) row;
        (*(int *) userdata)++;
        return 7;
}

/* ---- the cases ------------------------------------------------------------- */

START_TEST(test_reopen_keeps_rows) {
        struct store_session r = row_for("AAAAAAAAAAAAAAAAAAAAAA", 1, "alice", T0);
        struct store *s = backend_open();
        int64_t row_key = 0, row_key2 = 0, version = 0;
        char *data = NULL;
        size_t size = 0;

        ck_assert(!store_has_pending(s));
        ck_assert_int_eq(insert_row(s, &r, "state", 5, &row_key), 0);
        ck_assert_int_gt(row_key, 0);
        ck_assert(store_has_pending(s));
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert(!store_has_pending(s));
        store_close(s);

        s = backend_open();
        ck_assert_int_eq(store_session_get_sync(s, row_key, &version, &data, &size), 0);
        ck_assert_uint_eq(size, 5);
        ck_assert_str_eq(data, "state");
        free(data);
        ck_assert_int_eq(store_allocate_key(s, &row_key2), 0);
        ck_assert_int_gt(row_key2, row_key); /* keys are never given twice */
        store_close(s);
        ck_assert_int_eq(backend_count("SELECT count(*) FROM sessions WHERE user_id = 'alice'"), 1);
}
END_TEST

START_TEST(test_open_loads_live_sessions) {
        struct store *s = backend_open();
        struct loading l = {.reserved = -1, .fail_at = -1};
        struct store_options o = {0};
        char id[TOKEN_ID_STRING_LEN + 1];
        int64_t row_key[4];

        backend_options(&o);
        o.reserve = reserve_cb;
        o.load = loading_cb;
        o.load_userdata = &l;
        for (int i = 0; i < 4; i++) {
                struct store_session r = row_for(id, (uint8_t) i, "user", T0);

                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(s, &r, NULL, 0, &row_key[i]), 0);
        }
        ck_assert_int_eq(store_session_end(s, row_key[1], T0 + 1, "destroyed"), 0);
        ck_assert_int_eq(store_commit(s), 0);
        store_close(s);

        s = NULL;
        ck_assert_int_eq(store_open(&o, &s), 0);
        ck_assert_int_eq(l.reserved, 3);
        ck_assert_int_eq(l.n, 3);
        ck_assert_int_eq(l.row_keys[0], row_key[0]);
        ck_assert_int_eq(l.row_keys[1], row_key[2]);
        ck_assert_int_eq(l.row_keys[2], row_key[3]);
        ck_assert(!l.saw_ip); /* light rows */
        store_close(s);

        /* The loader's failure is the open's. */
        l = (struct loading){.fail_at = 2};
        s = NULL;
        ck_assert_int_eq(store_open(&o, &s), -ENOMEM);
        ck_assert_ptr_null(s);

        /* An empty (new) database has nothing to load. */
        backend_reset();
        l = (struct loading){.reserved = -1, .fail_at = -1};
        ck_assert_int_eq(store_open(&o, &s), 0);
        ck_assert_int_eq(l.reserved, 0);
        ck_assert_int_eq(l.n, 0);
        store_close(s);
}
END_TEST

START_TEST(test_rollback) {
        struct store_session r = row_for("AAAAAAAAAAAAAAAAAAAAAA", 1, "alice", T0);
        struct store *s = backend_open();
        int64_t row_key, n;

        ck_assert_int_eq(insert_row(s, &r, NULL, 0, &row_key), 0);
        store_rollback(s);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 0);
        /* A read runs the open unit first; rolling back drops what it ran. */
        ck_assert_int_eq(insert_row(s, &r, NULL, 0, &row_key), 0);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 1);
        ck_assert_int_eq(backend_count("SELECT count(*) FROM sessions"), 0); /* not committed */
        store_rollback(s);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 0);
        /* Rolling back an empty unit is harmless. */
        store_rollback(s);
        /* Closing drops what nobody committed. */
        ck_assert_int_eq(insert_row(s, &r, NULL, 0, &row_key), 0);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        store_close(s);
        ck_assert_int_eq(backend_count("SELECT count(*) FROM sessions"), 0);
}
END_TEST

/* Every session operation, and the lookups, on the rows the backends agree
 * on (what they do not agree on is in their own files). */
START_TEST(test_session_operations) {
        struct store *s = backend_open();
        struct store_session a = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        struct store_session b = row_for("bbbbbbbbbbbbbbbbbbbbbb", 2, "bob", T0);
        struct store_session client = {.fp_ip = 99, .ip = "198.51.100.7"};
        struct store_filter live = {.live_only = true};
        struct capture c = {0};
        int64_t ra, rb, rc, version;
        uint8_t hash[TOKEN_HASH_BYTES];
        char *text, *data;
        size_t size;

        ck_assert_int_eq(insert_row(s, &a, NULL, 0, &ra), 0);
        ck_assert_int_eq(insert_row(s, &b, NULL, 0, &rb), 0);
        ck_assert_int_eq(store_commit(s), 0);
        /* The id is unique: the unit holding a second one is lost whole. */
        ck_assert_int_eq(store_session_set_activity(s, rb, T0 + 5), 0);
        ck_assert_int_eq(insert_row(s, &a, NULL, 0, &rc), 0);
        ck_assert_int_eq(store_commit(s), -EEXIST);
        c = (struct capture){0};
        ck_assert_int_eq(store_session_by_row_key(s, rb, capture_cb, &c), 0);
        ck_assert_int_eq(c.last_activity, T0);
        ck_assert_str_eq(c.ip, "192.0.2.1");
        ck_assert_uint_eq(c.fp_ua, 77);
        ck_assert_uint_eq(c.fp_ip, 0);

        memset(hash, 9, sizeof hash);
        ck_assert_int_eq(store_session_by_hash(s, hash, capture_cb, &c), -ENOENT);
        ck_assert_int_eq(store_session_by_id(s, "bbbbbbbbbbbbbbbbbbbbbb", capture_cb, &c), 0);
        ck_assert_int_eq(c.row_key, rb);
        ck_assert_int_eq(store_session_by_id(s, "nope", capture_cb, &c), -ENOENT);

        ck_assert_int_eq(store_session_set_activity(s, ra, T0 + 10), 0);
        ck_assert_int_eq(store_session_set_renewed(s, ra, T0 + 20, T0 + 20), 0);
        ck_assert_int_eq(store_session_set_client(s, ra, &client), 0);
        c = (struct capture){0};
        ck_assert_int_eq(store_session_by_row_key(s, ra, capture_cb, &c), 0);
        ck_assert_int_eq(c.last_activity, T0 + 20);
        ck_assert_int_eq(c.renewed_at, T0 + 20);
        ck_assert_str_eq(c.ip, "198.51.100.7");
        ck_assert_uint_eq(c.fp_ip, 99);
        ck_assert_uint_eq(c.fp_ua, 77); /* not given: kept */
        ck_assert_int_eq(store_commit(s), 0);
        /* A write of the sync state of a row that is not there fails its
         * unit, here at the first read that runs it. */
        ck_assert_int_eq(store_session_set_sync(s, 12345678, 1, "x", 1), 0);
        ck_assert_int_eq(store_session_by_row_key(s, ra, capture_cb, &c), -ENOENT);
        ck_assert_int_eq(store_commit(s), -ENOENT);

        ck_assert_int_eq(store_session_get_switches(s, ra, &text), 0);
        ck_assert_str_eq(text, "[]");
        free(text);
        ck_assert_int_eq(store_session_get_switches(s, 12345678, &text), -ENOENT);
        ck_assert_int_eq(store_session_set_platform(s, ra, "mobile", "[1,2]"), 0);
        ck_assert_int_eq(store_session_get_switches(s, ra, &text), 0);
        ck_assert_str_eq(text, "[1,2]");
        free(text);

        ck_assert_int_eq(store_session_get_sync(s, ra, &version, &data, &size), 0);
        ck_assert_int_eq(version, 0);
        ck_assert_ptr_null(data);
        ck_assert_int_eq(store_session_set_sync(s, ra, 4, "a\0b", 3), 0);
        ck_assert_int_eq(store_session_get_sync(s, ra, &version, &data, &size), 0);
        ck_assert_int_eq(version, 4);
        ck_assert_uint_eq(size, 3);
        ck_assert_int_eq(memcmp(data, "a\0b", 3), 0);
        free(data);
        ck_assert_int_eq(store_session_set_sync(s, ra, 5, "", 0), 0); /* empty, not none */
        ck_assert_int_eq(store_session_get_sync(s, ra, &version, &data, &size), 0);
        ck_assert_ptr_nonnull(data);
        ck_assert_uint_eq(size, 0);
        free(data);
        ck_assert_int_eq(store_session_set_sync(s, ra, 4, "a\0b", 3), 0);
        ck_assert_int_eq(store_commit(s), 0);
        /* Compare-and-set: applied on the version it replaces, not on
         * another one nor on a missing row, and the unit's other writes
         * stand either way. */
        {
                int applied = -1, stale = -1, gone = -1;

                ck_assert_int_eq(store_session_cas_sync(s, ra, 4, "cas", 3, &applied), 0);
                ck_assert_int_eq(store_session_cas_sync(s, ra, 4, "old", 3, &stale), 0);
                ck_assert_int_eq(store_session_cas_sync(s, 12345678, 0, "x", 1, &gone), 0);
                ck_assert_int_eq(store_session_set_activity(s, ra, T0 + 25), 0);
                ck_assert_int_eq(store_commit(s), 0);
                ck_assert_int_eq(applied, 1);
                ck_assert_int_eq(stale, 0);
                ck_assert_int_eq(gone, 0);
                ck_assert_int_eq(store_session_get_sync(s, ra, &version, &data, &size), 0);
                ck_assert_int_eq(version, 5);
                ck_assert_uint_eq(size, 3);
                ck_assert_int_eq(memcmp(data, "cas", 3), 0);
                free(data);
                c = (struct capture){0};
                ck_assert_int_eq(store_session_by_row_key(s, ra, capture_cb, &c), 0);
                ck_assert_int_eq(c.last_activity, T0 + 25);
        }
        ck_assert_int_eq(store_session_set_sync(s, ra, 4, "a\0b", 3), 0);

        /* Rotation copies everything but id, hash and activity. */
        memset(hash, 3, sizeof hash);
        ck_assert_int_eq(store_allocate_key(s, &rc), 0);
        ck_assert_int_gt(rc, rb);
        ck_assert_int_eq(store_session_copy(s, ra, rc, "cccccccccccccccccccccc", hash, T0 + 30), 0);
        ck_assert_int_eq(store_session_get_sync(s, rc, &version, &data, &size), 0);
        ck_assert_int_eq(version, 4);
        free(data);
        ck_assert_int_eq(store_session_get_switches(s, rc, &text), 0);
        ck_assert_str_eq(text, "[1,2]");
        free(text);

        ck_assert_int_eq(store_session_end(s, ra, T0 + 40, "rotated"), 0);
        ck_assert_int_eq(store_commit(s), 0);
        /* An ended row is not copied: the unit is lost. */
        ck_assert_int_eq(store_session_copy(s, ra, rc + 1, "dddddddddddddddddddddd", hash, T0), 0);
        ck_assert_int_eq(store_commit(s), -ENOENT);
        c = (struct capture){0};
        ck_assert_int_eq(store_session_by_row_key(s, ra, capture_cb, &c), 0);
        ck_assert_int_eq(c.ended_at, T0 + 40);
        ck_assert_str_eq(c.reason, "rotated");
        /* An ended row is found by its token hash. */
        memset(hash, 1, sizeof hash);
        c = (struct capture){0};
        ck_assert_int_eq(store_session_by_hash(s, hash, capture_cb, &c), 0);
        ck_assert_int_eq(c.n, 1);
        ck_assert_int_eq(c.row_key, ra);
        ck_assert_str_eq(c.user, "alice");
        ck_assert_str_eq(c.ip, "198.51.100.7");

        c = (struct capture){0};
        ck_assert_int_eq(store_sessions_each(s, &live, capture_cb, &c), 0);
        ck_assert_int_eq(c.n, 2); /* b and the copy */
        c = (struct capture){0};
        ck_assert_int_eq(store_sessions_ended_of_user(s, "alice", capture_cb, &c), 0);
        ck_assert_int_eq(c.n, 1); /* the ended one; its live copy is the engine's to list */
        ck_assert_int_eq(c.row_key, ra);
        c = (struct capture){0};
        ck_assert_int_eq(store_sessions_ended_of_user_after(s, "alice", ra, capture_cb, &c), 0);
        ck_assert_int_eq(c.n, 0);
        c = (struct capture){0};
        ck_assert_int_eq(store_sessions_ended_of_user(s, "bob", capture_cb, &c), 0);
        ck_assert_int_eq(c.n, 0);
        ck_assert_int_eq(store_commit(s), 0);
        store_close(s);
}
END_TEST

START_TEST(test_iteration_stops) {
        struct store *s = backend_open();
        struct store_filter all = {0};
        char id[TOKEN_ID_STRING_LEN + 1];
        int64_t row_key;
        int n = 0;

        for (int i = 0; i < 3; i++) {
                struct store_session r = row_for(id, (uint8_t) i, "u", T0);

                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(s, &r, NULL, 0, &row_key), 0);
        }
        ck_assert_int_eq(store_sessions_each(s, &all, stop_cb, &n), 7);
        ck_assert_int_eq(n, 1);
        store_close(s);
}
END_TEST

struct order {
        int n;
        int64_t last;
        bool sorted, saw_ip, saw_ended;
};

static int order_cb(const struct store_session *row, void *userdata) {
        struct order *o = userdata;

        o->sorted &= row->row_key > o->last;
        o->last = row->row_key;
        o->saw_ip |= row->ip != NULL;
        o->saw_ended |= row->ended_at != 0;
        o->n++;
        return 0;
}

/* More rows than one page of a backend: every row once, in order, and
 * the filters (live only, after a row, light). */
START_TEST(test_iteration_and_pages) {
        struct store *s = backend_open();
        struct store_filter all = {0}, live = {.live_only = true}, light = {.live_only = true, .light = true};
        struct order o;
        char id[TOKEN_ID_STRING_LEN + 1];
        int64_t row_key, first = 0, mid = 0;
        int n = 0;

        for (int i = 0; i < 2500; i++) {
                struct store_session r = row_for(id, (uint8_t) i, "u", T0);

                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(s, &r, NULL, 0, &row_key), 0);
                if (i == 0)
                        first = row_key;
                if (i == 1499)
                        mid = row_key;
                if (i % 2)
                        ck_assert_int_eq(store_session_end(s, row_key, T0 + 1, "idle"), 0);
        }
        ck_assert_int_eq(store_sessions_each(s, &all, stop_cb, &n), 7);
        ck_assert_int_eq(n, 1);
        ck_assert_int_eq(store_commit(s), 0);

        o = (struct order){.sorted = true};
        ck_assert_int_eq(store_sessions_each(s, &all, order_cb, &o), 0);
        ck_assert_int_eq(o.n, 2500);
        ck_assert(o.sorted && o.saw_ip && o.saw_ended);
        o = (struct order){.sorted = true};
        ck_assert_int_eq(store_sessions_each(s, &live, order_cb, &o), 0);
        ck_assert_int_eq(o.n, 1250);
        ck_assert(o.sorted && o.saw_ip && !o.saw_ended);
        o = (struct order){.sorted = true};
        ck_assert_int_eq(store_sessions_each(s, &light, order_cb, &o), 0);
        ck_assert_int_eq(o.n, 1250);
        ck_assert(!o.saw_ip);
        all.after_row_key = mid;
        o = (struct order){.sorted = true, .last = mid};
        ck_assert_int_eq(store_sessions_each(s, &all, order_cb, &o), 0);
        ck_assert_int_eq(o.n, 1000);
        ck_assert(o.sorted);
        o = (struct order){.sorted = true};
        ck_assert_int_eq(store_sessions_ended_of_user(s, "u", order_cb, &o), 0);
        ck_assert_int_eq(o.n, 1250);
        ck_assert(o.sorted && o.saw_ended);
        o = (struct order){.sorted = true, .last = first};
        ck_assert_int_eq(store_sessions_ended_of_user_after(s, "u", mid, order_cb, &o), 0);
        ck_assert_int_eq(o.n, 500);
        store_close(s);
}
END_TEST

struct audit_capture {
        int n;
        int64_t ids[16], times[16];
        char kinds[16][16];
        bool detail_null;
};

static int audit_cb(const struct store_audit_row *row, void *userdata) {
        struct audit_capture *a = userdata;

        ck_assert_int_lt(a->n, 16);
        a->ids[a->n] = row->id;
        a->times[a->n] = row->time;
        snprintf(a->kinds[a->n], sizeof a->kinds[0], "%s", row->kind);
        a->detail_null |= row->detail == NULL;
        a->n++;
        return 0;
}

static int value_cb(int64_t v, void *userdata) {
        int64_t *sum = userdata;

        sum[0]++;
        sum[1] += v;
        return 0;
}

static int group_cb(const char *key, int64_t count, void *userdata) {
        char *out = userdata;

        snprintf(out + strlen(out), 128 - strlen(out), "%s=%lld;", key, (long long) count);
        return 0;
}

/* Purges, counts, analytics and the audit with its filters. */
START_TEST(test_purge_and_audit) {
        struct store *s = backend_open();
        char id[TOKEN_ID_STRING_LEN + 1], reasons[128] = "";
        int64_t row_key, n, durations[2] = {0, 0};
        struct audit_capture a;
        struct store_audit_filter f;
        uint64_t counts[3];

        for (int i = 0; i < 10; i++) {
                struct store_session r = row_for(id, (uint8_t) i, "u", MS(T0));

                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(s, &r, NULL, 0, &row_key), 0);
                if (i < 6) /* six ended, at T0 + i seconds */
                        ck_assert_int_eq(store_session_end(s, row_key, MS(T0 + i), i ? "idle" : "rotated"), 0);
                ck_assert_int_eq(
                        store_audit_insert(s, T0 + i, i % 2 ? "created" : "ended", i < 3 ? "u" : "v", id, "{\"i\":1}"),
                        0);
        }
        ck_assert_int_eq(store_count_sessions(s, true, &n), 0);
        ck_assert_int_eq(n, 6);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 4);

        /* Analytics, in seconds. */
        ck_assert_int_eq(store_count_created(s, T0, 60, counts, 3), 0);
        ck_assert_uint_eq(counts[0], 9); /* the rotated row is the same session */
        ck_assert_uint_eq(counts[1], 0);
        ck_assert_int_eq(store_ended_durations(s, value_cb, durations), 0);
        ck_assert_int_eq(durations[0], 5);
        ck_assert_int_eq(durations[1], 1 + 2 + 3 + 4 + 5);
        ck_assert_int_eq(store_end_reasons(s, group_cb, reasons), 0);
        ck_assert_str_eq(reasons, "idle=5;rotated=1;");

        /* The audit: newest first, filters, offset, pages oldest first. */
        a = (struct audit_capture){0};
        f = (struct store_audit_filter){.limit = 3};
        ck_assert_int_eq(store_audit_each(s, &f, audit_cb, &a), 0);
        ck_assert_int_eq(a.n, 3);
        ck_assert_int_eq(a.times[0], T0 + 9);
        ck_assert_int_eq(a.times[2], T0 + 7);
        a = (struct audit_capture){0};
        f = (struct store_audit_filter){.limit = 100, .user_id = "u"};
        ck_assert_int_eq(store_audit_each(s, &f, audit_cb, &a), 0);
        ck_assert_int_eq(a.n, 3);
        a = (struct audit_capture){0};
        f = (struct store_audit_filter){.limit = 100, .kind = "created", .since = T0 + 4};
        ck_assert_int_eq(store_audit_each(s, &f, audit_cb, &a), 0);
        ck_assert_int_eq(a.n, 3); /* 5, 7, 9 */
        ck_assert_str_eq(a.kinds[0], "created");
        a = (struct audit_capture){0};
        f = (struct store_audit_filter){.limit = 2, .offset = 1, .user_id = "v", .kind = "ended"};
        ck_assert_int_eq(store_audit_each(s, &f, audit_cb, &a), 0);
        ck_assert_int_eq(a.n, 2); /* 8, 6, 4: skip 8 */
        ck_assert_int_eq(a.times[0], T0 + 6);
        ck_assert_int_eq(a.times[1], T0 + 4);
        a = (struct audit_capture){0};
        f = (struct store_audit_filter){.limit = 4, .ascending = true, .keys_only = true};
        ck_assert_int_eq(store_audit_each(s, &f, audit_cb, &a), 0);
        ck_assert_int_eq(a.n, 4);
        ck_assert_int_eq(a.times[0], T0);
        ck_assert(a.detail_null);
        f.after_time = a.times[3];
        f.after_id = a.ids[3];
        a = (struct audit_capture){0};
        ck_assert_int_eq(store_audit_each(s, &f, audit_cb, &a), 0);
        ck_assert_int_eq(a.n, 4);
        ck_assert_int_eq(a.times[0], T0 + 4);
        ck_assert_int_eq(a.times[3], T0 + 7);

        /* Ended before T0 + 4: four of them, in batches of three. */
        ck_assert_int_eq(store_purge_sessions(s, MS(T0 + 4), 3), 3);
        ck_assert_int_eq(store_purge_sessions(s, MS(T0 + 4), 3), 1);
        ck_assert_int_eq(store_purge_sessions(s, MS(T0 + 4), 3), 0);
        ck_assert(store_has_pending(s));
        ck_assert_int_eq(store_count_sessions(s, true, &n), 0);
        ck_assert_int_eq(n, 2);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 4); /* live ones are never purged */
        ck_assert_int_eq(store_purge_audit(s, T0 + 5, 100), 5);
        ck_assert_int_eq(store_purge_audit(s, T0 + 5, 100), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(backend_count("SELECT count(*) FROM sessions"), 6);
        ck_assert_int_eq(backend_count("SELECT count(*) FROM audit"), 5);

        /* A purge rolled back is gone with its unit. */
        ck_assert_int_eq(store_purge_audit(s, T0 + 100, 100), 5);
        store_rollback(s);
        ck_assert_int_eq(backend_count("SELECT count(*) FROM audit"), 5);
        store_close(s);
}
END_TEST

/* Audit pages after a cursor (a, b), oldest first: the rows of the filter
 * after (a, b) in (time, id) order, whichever of `since` and a is later. */
struct audit_got {
        int64_t id[64];
        int n;
};

static int audit_got_cb(const struct store_audit_row *row, void *userdata) {
        struct audit_got *g = userdata;

        ck_assert_int_lt(g->n, 64);
        g->id[g->n++] = row->id;
        return 0;
}

static void audit_expect(const int64_t *times, const char *const *users, int n_rows, const struct store_audit_filter *f,
                         struct audit_got *ret) {
        ret->n = 0;
        for (int id = 1; id <= n_rows && ret->n < (int) f->limit; id++) {
                int64_t tm = times[id - 1];

                if (tm < f->since || tm < f->after_time || (tm == f->after_time && id <= f->after_id))
                        continue;
                if (f->user_id && strcmp(f->user_id, users[id - 1]) != 0)
                        continue;
                ret->id[ret->n++] = id;
        }
}

START_TEST(test_audit_after_cursor) {
        struct store *s = backend_open();
        static const char *const users[] = {"a", "b"};
        const int64_t sinces[] = {0, T0 + 2, T0 + 3, T0 + 5, T0 + 9};
        const int64_t cursors[][2] = {{-1, 0}, {T0, 1}, {T0 + 3, 8}, {T0 + 3, 10}, {T0 + 5, 0}, {T0 + 7, 30}};
        int64_t times[30];
        const char *row_users[30];

        /* Three rows a second over ten seconds, ids 1 to 30 in time order. */
        for (int i = 0; i < 30; i++) {
                times[i] = T0 + i / 3;
                row_users[i] = users[i % 2];
                ck_assert_int_eq(store_audit_insert(s, times[i], "created", row_users[i], NULL, "{}"), 0);
        }
        for (size_t a = 0; a < ELEMENTSOF(sinces); a++)
                for (size_t b = 0; b < ELEMENTSOF(cursors); b++)
                        for (int u = 0; u < 2; u++) {
                                struct store_audit_filter f = {.user_id = u ? "b" : NULL,
                                                               .since = sinces[a],
                                                               .limit = u ? 64 : 4,
                                                               .ascending = true,
                                                               .after_time = cursors[b][0],
                                                               .after_id = cursors[b][1]};
                                struct audit_got got = {0}, want;

                                audit_expect(times, row_users, 30, &f, &want);
                                ck_assert_int_eq(store_audit_each(s, &f, audit_got_cb, &got), 0);
                                ck_assert_int_eq(got.n, want.n);
                                for (int k = 0; k < got.n; k++)
                                        ck_assert_int_eq(got.id[k], want.id[k]);
                        }
        store_close(s);
}
END_TEST

START_TEST(test_maintenance) {
        struct store *s = backend_open();
        struct store_session r = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        struct store_maintenance m;
        int64_t row_key;

        ck_assert_int_eq(insert_row(s, &r, NULL, 0, &row_key), 0);
        ck_assert_int_eq(store_commit(s), 0); /* maintenance runs between units */
        ck_assert_int_eq(store_maintain(s, &m), 0);
        ck_assert(m.ok);
        ck_assert_str_eq(m.message, "ok");
        ck_assert_int_eq(store_check_integrity(s, &m), 0);
        ck_assert(m.ok);
        ck_assert_int_eq(store_probe(s), 0);
        ck_assert_int_eq(store_pace(s), 0);
        ck_assert_int_eq(store_set_synchronous(s, "full"), 0);
        ck_assert_int_eq(store_set_synchronous(s, "bogus"), -EINVAL);
        store_close(s);
        ck_assert_int_eq(backend_count("SELECT count(*) FROM sessions"), 1);
}
END_TEST

/* The unit of work on the writer thread: submit hands it over and the loop
 * records the next one; a read waits for the unit in flight and sees every
 * write made before it; the callback runs on the loop with the result; a
 * unit with a failing write is lost whole; store_wait() collects at once;
 * the deep cleanup's asynchronous maintenance calls back on the loop, never
 * before the call returns. */
START_TEST(test_unit_of_work_async) {
        uv_loop_t loop;
        struct store *s = NULL;
        struct done d = {0};
        struct store_session a = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        struct store_session b = row_for("bbbbbbbbbbbbbbbbbbbbbb", 2, "bob", T0);
        struct store_session c = row_for("cccccccccccccccccccccc", 3, "carol", T0);
        int64_t ra, rb, rc, n, version;
        char *data;
        size_t size;

        s = open_on_loop(&loop);
        ck_assert_int_eq(insert_row(s, &a, "x", 1, &ra), 0);
        ck_assert(store_has_pending(s));
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        ck_assert(!store_has_pending(s));
        ck_assert(store_busy(s));
        ck_assert_int_eq(insert_row(s, &b, NULL, 0, &rb), 0);
        ck_assert_int_eq(store_session_set_sync(s, rb, 2, "yz", 2), 0);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 2);
        ck_assert_int_eq(store_session_get_sync(s, rb, &version, &data, &size), 0);
        ck_assert_int_eq(version, 2);
        ck_assert_str_eq(data, "yz");
        free(data);
        run_until(&loop, &d.calls, 1);
        ck_assert_int_eq(d.result, 0);
        ck_assert(!store_busy(s));

        /* b's unit also writes the sync state of a row that is not there:
         * lost whole. */
        ck_assert_int_eq(store_session_set_sync(s, ra + 100000, 1, "x", 1), 0);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 2);
        ck_assert_int_eq(d.result, -ENOENT);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 1);

        ck_assert_int_eq(insert_row(s, &c, NULL, 0, &rc), 0);
        ck_assert_int_gt(rc, rb); /* keys are never given twice */
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        store_wait(s);
        ck_assert_int_eq(d.calls, 3);
        ck_assert_int_eq(d.result, 0);

        ck_assert_int_eq(store_maintain_start(s, true, done_cb, &d), 0);
        ck_assert_int_eq(d.calls, 3);
        run_until(&loop, &d.calls, 4);
        ck_assert_int_eq(d.result, 0);
        store_close(s);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);

        ck_assert_int_eq(backend_count("SELECT count(*) FROM sessions"), 2);
        ck_assert_int_eq(backend_count("SELECT count(*) FROM sessions WHERE user_id = 'bob'"), 0);
}
END_TEST

/* Reads after a commit (store_read_after): the writer reads the rows
 * once the unit has committed, so the read sees the unit's own writes;
 * what was not asked for, or was asked of a unit that failed, is -EAGAIN.
 * A backend whose reads never wait for a network says -EOPNOTSUPP. */
struct read_row {
        int calls;
        int64_t ended_at;
        char user[16];
};

static int read_row_cb(const struct store_session *row, void *userdata) {
        struct read_row *x = userdata;

        x->calls++;
        x->ended_at = row->ended_at;
        snprintf(x->user, sizeof x->user, "%s", row->user_id);
        return 0;
}

START_TEST(test_read_after_commit) {
        uv_loop_t loop;
        struct store *s = NULL;
        struct done d = {0};
        struct store_session a = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        struct store_session b = row_for("bbbbbbbbbbbbbbbbbbbbbb", 2, "bob", T0);
        struct read_row x = {0}, y = {0};
        uint8_t unknown[TOKEN_HASH_BYTES];
        int64_t ra, rb;
        int r;

        memset(unknown, 0xee, sizeof unknown);
        s = open_on_loop(&loop);
        ck_assert_int_eq(insert_row(s, &a, NULL, 0, &ra), 0);
        ck_assert_int_eq(insert_row(s, &b, NULL, 0, &rb), 0);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 1);
        ck_assert_int_eq(d.result, 0);
        ck_assert_int_eq(store_read_row(s, ra, read_row_cb, &x), -EAGAIN);

        r = store_read_after(s, ra);
        if (r == -EOPNOTSUPP) {
                ck_assert(!store_has_pending(s));
                goto done;
        }
        ck_assert_int_eq(r, 0);
        ck_assert(store_has_pending(s)); /* a unit of reads alone is committed too */
        ck_assert_int_eq(store_session_end(s, rb, T0 + 5, "destroyed"), 0);
        ck_assert_int_eq(store_read_after(s, rb), 0);
        ck_assert_int_eq(store_read_after(s, rb + 100000), 0);
        ck_assert_int_eq(store_read_after_hash(s, a.token_hash), 0);
        ck_assert_int_eq(store_read_after_hash(s, unknown), 0);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 2);
        ck_assert_int_eq(d.result, 0);
        ck_assert_int_eq(store_read_row(s, ra, read_row_cb, &x), 0);
        ck_assert_int_eq(x.calls, 1);
        ck_assert_int_eq(x.ended_at, 0);
        ck_assert_str_eq(x.user, "alice");
        ck_assert_int_eq(store_read_row(s, rb, read_row_cb, &y), 0);
        ck_assert_int_eq(y.ended_at, T0 + 5); /* the unit's own end */
        ck_assert_int_eq(store_read_row(s, rb + 100000, read_row_cb, &y), -ENOENT);
        ck_assert_int_eq(store_read_row(s, ra + 100000, read_row_cb, &y), -EAGAIN); /* not asked */
        ck_assert_int_eq(store_read_row_hash(s, a.token_hash, read_row_cb, &x), 0);
        ck_assert_int_eq(x.calls, 2);
        ck_assert_str_eq(x.user, "alice");
        ck_assert_int_eq(store_read_row_hash(s, unknown, read_row_cb, &x), -ENOENT);
        ck_assert_int_eq(store_read_row_hash(s, b.token_hash, read_row_cb, &x), -EAGAIN); /* not asked */

        /* A unit that fails reads nothing. */
        ck_assert_int_eq(store_session_set_sync(s, rb + 100000, 1, "x", 1), 0);
        ck_assert_int_eq(store_read_after(s, ra), 0);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 3);
        ck_assert_int_lt(d.result, 0);
        ck_assert_int_eq(store_read_row(s, ra, read_row_cb, &x), -EAGAIN);

        /* Committed on the calling thread: the same. */
        ck_assert_int_eq(store_read_after(s, rb), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_read_row(s, rb, read_row_cb, &y), 0);
        ck_assert_int_eq(y.calls, 2);
done:
        store_close(s);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* One switch in a unit of its own: its outcome. */
static enum store_switch_outcome switch_now(struct store *s, int64_t row_key, const char *to, int64_t now,
                                            const char *audit_user, struct store_switch *sw) {
        *sw = (struct store_switch){.now = now, .max_per_hour = 2};
        ck_assert_int_eq(store_session_switch_platform(s, row_key, to, audit_user, "sid", sw), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(sw->applied, sw->outcome == STORE_SWITCH_APPLIED);
        return sw->outcome;
}

static const char *platform_of(struct store *s, int64_t row_key, struct capture *c) {
        *c = (struct capture){0};
        ck_assert_int_eq(store_session_by_row_key(s, row_key, capture_cb, c), 0);
        return c->platform;
}

/* The store decides a switch under the per-hour limit (both backends:
 * SQLite in C, PostgreSQL in SQL), with its audit row or none. */
START_TEST(test_switch_platform_decided_by_store) {
        struct store *s = backend_open();
        struct store_session a = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "u", MS(T0));
        struct store_session b = row_for("bbbbbbbbbbbbbbbbbbbbbb", 2, "u", MS(T0));
        struct store_switch sw, sw2;
        struct capture c;
        int64_t ra, rb;

        a.platform_id = "web";
        ck_assert_int_eq(insert_row(s, &a, NULL, 0, &ra), 0);
        ck_assert_int_eq(insert_row(s, &b, NULL, 0, &rb), 0);
        ck_assert_int_eq(store_session_end(s, rb, MS(T0 + 1), "idle"), 0);
        ck_assert_int_eq(store_commit(s), 0);

        ck_assert_int_eq(switch_now(s, ra, "ios", T0 + 10, "u", &sw), STORE_SWITCH_APPLIED);
        ck_assert_str_eq(sw.from, "web");
        ck_assert_str_eq(platform_of(s, ra, &c), "ios");
        ck_assert_int_eq(switch_now(s, ra, "android", T0 + 20, NULL, &sw), STORE_SWITCH_APPLIED);
        ck_assert_str_eq(sw.from, "ios");
        /* Two in the hour: the third waits for the first to leave it. */
        ck_assert_int_eq(switch_now(s, ra, "web", T0 + 30, "u", &sw), STORE_SWITCH_REFUSED);
        ck_assert_int_eq(sw.retry_at, T0 + 10 + 3600);
        ck_assert_str_eq(platform_of(s, ra, &c), "android");
        ck_assert_int_eq(switch_now(s, ra, "web", T0 + 3611, "u", &sw), STORE_SWITCH_APPLIED);
        ck_assert_str_eq(sw.from, "android");
        /* Audit rows with the switches that were made and asked one. */
        ck_assert_int_eq(backend_count("SELECT count(*) FROM audit WHERE kind = 'platform_switched'"), 2);
        ck_assert_int_eq(backend_count("SELECT count(*) FROM audit WHERE kind = 'platform_switched' AND "
                                       "detail = '{\"from\":\"web\",\"to\":\"ios\"}'"),
                         1);

        /* Two in one unit: the second counts the first. */
        sw = (struct store_switch){.now = T0 + 3700, .max_per_hour = 2}; /* T0 + 3611 in the hour */
        sw2 = sw;
        ck_assert_int_eq(store_session_switch_platform(s, ra, "ios", NULL, "sid", &sw), 0);
        ck_assert_int_eq(store_session_switch_platform(s, ra, "tv", NULL, "sid", &sw2), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(sw.outcome, STORE_SWITCH_APPLIED);
        ck_assert_int_eq(sw2.outcome, STORE_SWITCH_REFUSED);
        ck_assert_int_eq(sw2.retry_at, T0 + 3611 + 3600);
        ck_assert_str_eq(platform_of(s, ra, &c), "ios");

        /* To the platform it is on: nothing written, nothing counted. */
        ck_assert_int_eq(switch_now(s, ra, "ios", T0 + 3701, "u", &sw), STORE_SWITCH_ALREADY);
        ck_assert_int_eq(backend_count("SELECT count(*) FROM audit WHERE kind = 'platform_switched'"), 2);
        /* A history out of order (daemons' clocks differ): its oldest leaves first. */
        ck_assert_int_eq(store_session_set_platform(s, ra, "web", "[5000, 4000]"), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(switch_now(s, ra, "ios", 5100, NULL, &sw), STORE_SWITCH_REFUSED);
        ck_assert_int_eq(sw.retry_at, 4000 + 3600);
        /* A history that is not one counts as none, and fails nothing. */
        ck_assert_int_eq(store_session_set_platform(s, ra, "web", "not json"), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(switch_now(s, ra, "ios", 5200, NULL, &sw), STORE_SWITCH_APPLIED);
        ck_assert_str_eq(platform_of(s, ra, &c), "ios");

        /* Ended, or not there: no switch, no audit row. */
        ck_assert_int_eq(switch_now(s, rb, "ios", T0 + 40, "u", &sw), STORE_SWITCH_ENDED);
        ck_assert_str_eq(sw.end_reason, "idle");
        ck_assert_int_eq(switch_now(s, 12345678, "ios", T0 + 40, "u", &sw), STORE_SWITCH_GONE);
        ck_assert_int_eq(backend_count("SELECT count(*) FROM audit"), 2);
        store_close(s);
}
END_TEST

/* A sync state read after a commit (store_read_sync_after) carries the
 * version and data the unit left, and whether the row is live or else its
 * end reason, so that a write waiting for it needs no other read; the
 * same read now (store_session_read_sync) says the same. */
START_TEST(test_read_sync_after_commit) {
        uv_loop_t loop;
        struct store *s = NULL;
        struct done d = {0};
        struct store_session a = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        struct store_session b = row_for("bbbbbbbbbbbbbbbbbbbbbb", 2, "bob", T0);
        struct store_sync_read xa = {0}, xb = {0}, xn = {0}, xf = {0}, now = {0};
        int64_t ra, rb;
        int applied;

        s = open_on_loop(&loop);
        ck_assert_int_eq(insert_row(s, &a, "one", 3, &ra), 0);
        ck_assert_int_eq(insert_row(s, &b, NULL, 0, &rb), 0);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 1);
        ck_assert_int_eq(d.result, 0);

        ck_assert_int_eq(store_session_cas_sync(s, ra, 0, "two", 3, &applied), 0);
        ck_assert_int_eq(store_session_end(s, rb, T0 + 5, "rotated"), 0);
        xa.row_key = ra;
        xb.row_key = rb;
        xn.row_key = rb + 100000;
        ck_assert_int_eq(store_read_sync_after(s, &xa), 0);
        ck_assert_int_eq(store_read_sync_after(s, &xb), 0);
        ck_assert_int_eq(store_read_sync_after(s, &xn), 0);
        ck_assert_int_eq(xa.result, -EAGAIN);
        ck_assert(store_has_pending(s));
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 2);
        ck_assert_int_eq(d.result, 0);
        ck_assert_int_eq(applied, 1);
        ck_assert_int_eq(xa.result, 0); /* the unit's own write */
        ck_assert_int_eq(xa.version, 1);
        ck_assert_uint_eq(xa.size, 3);
        ck_assert_str_eq(xa.data, "two");
        ck_assert(xa.live);
        ck_assert_str_eq(xa.end_reason, "");
        ck_assert_int_eq(xb.result, 0); /* the unit's own end */
        ck_assert(!xb.live);
        ck_assert_str_eq(xb.end_reason, "rotated");
        ck_assert_ptr_null(xb.data);
        ck_assert_int_eq(xn.result, -ENOENT);

        now.row_key = rb;
        ck_assert_int_eq(store_session_read_sync(s, &now), 0);
        ck_assert(!now.live);
        ck_assert_str_eq(now.end_reason, "rotated");
        now.row_key = ra;
        ck_assert_int_eq(store_session_read_sync(s, &now), 0);
        ck_assert(now.live);
        ck_assert_int_eq(now.version, 1);
        ck_assert_str_eq(now.data, "two");
        free(now.data);
        now = (struct store_sync_read){.row_key = rb + 100000};
        ck_assert_int_eq(store_session_read_sync(s, &now), -ENOENT);
        ck_assert_ptr_null(now.data);

        /* A unit that fails reads nothing. */
        ck_assert_int_eq(store_session_set_sync(s, rb + 100000, 1, "x", 1), 0);
        xf.row_key = ra;
        ck_assert_int_eq(store_read_sync_after(s, &xf), 0);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 3);
        ck_assert_int_lt(d.result, 0);
        ck_assert_int_eq(xf.result, -EAGAIN);
        ck_assert_ptr_null(xf.data);

        free(xa.data);
        store_close(s);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* What a unit writes comes back as it was written, whatever the text
 * holds (quotes, backslashes, commas, braces, the word NULL, non-ASCII)
 * and whatever the sync data (none, empty, bytes with zeros): a backend
 * may send a unit's rows in batches (PostgreSQL: array literals). Every
 * backend. */
struct exact_row {
        int n;
        char ip[64], ua[128], platform[32], user[64];
        bool ip_null, platform_null;
        uint64_t fp_lang, fp_enc;
        uint8_t hash[TOKEN_HASH_BYTES];
};

static int exact_cb(const struct store_session *row, void *userdata) {
        struct exact_row *x = userdata;

        x->n++;
        x->ip_null = row->ip == NULL;
        x->platform_null = row->platform_id == NULL;
        snprintf(x->ip, sizeof x->ip, "%s", row->ip ? row->ip : "");
        snprintf(x->ua, sizeof x->ua, "%s", row->user_agent ? row->user_agent : "");
        snprintf(x->platform, sizeof x->platform, "%s", row->platform_id ? row->platform_id : "");
        snprintf(x->user, sizeof x->user, "%s", row->user_id);
        x->fp_lang = row->fp_accept_language;
        x->fp_enc = row->fp_accept_encoding;
        memcpy(x->hash, row->token_hash, TOKEN_HASH_BYTES);
        return 0;
}

static int detail_cb(const struct store_audit_row *row, void *userdata) {
        char *out = userdata;

        snprintf(out, 256, "%s|%s|%s|%s", row->kind, row->user_id ? row->user_id : "(null)",
                 row->session_id ? row->session_id : "(null)", row->detail);
        return 0;
}

START_TEST(test_unit_rows_exact) {
        uv_loop_t loop;
        struct store *s = open_on_loop(&loop);
        struct done d = {0};
        const char *odd = "a\"b\\c,{d}NULL \u00e9";
        const uint8_t bytes[5] = {0, 1, 0, 255, 0};
        struct store_session rows[3];
        int64_t keys[3], version;
        char *data;
        size_t size;
        char detail[256];
        struct store_audit_filter f = {.limit = 1};
        struct exact_row x;

        rows[0] = row_for("exact000000000000000a0", 0xa1, odd, T0);
        rows[0].ip = "NULL";
        rows[0].user_agent = odd;
        rows[0].platform_id = "{web}";
        rows[0].fp_accept_language = UINT64_MAX;
        rows[0].fp_accept_encoding = 0;
        rows[1] = row_for("exact000000000000000b0", 0x5c, "plain", T0);
        rows[1].ip = NULL;
        rows[1].user_agent = "";
        rows[2] = row_for("exact000000000000000c0", 0x22, "plain", T0);
        ck_assert_int_eq(insert_row(s, &rows[0], bytes, sizeof bytes, &keys[0]), 0);
        ck_assert_int_eq(insert_row(s, &rows[1], "", 0, &keys[1]), 0);
        ck_assert_int_eq(insert_row(s, &rows[2], NULL, 0, &keys[2]), 0);
        ck_assert_int_eq(store_audit_insert(s, T0, "created", odd, NULL, "{\"text\": \"a\\\"b,{c}\"}"), 0);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 1);
        ck_assert_int_eq(d.result, 0);

        x = (struct exact_row){0};
        ck_assert_int_eq(store_session_by_row_key(s, keys[0], exact_cb, &x), 0);
        ck_assert_int_eq(x.n, 1);
        ck_assert_str_eq(x.user, odd);
        ck_assert_str_eq(x.ua, odd);
        ck_assert(!x.ip_null);
        ck_assert_str_eq(x.ip, "NULL"); /* the text, not SQL NULL */
        ck_assert_str_eq(x.platform, "{web}");
        ck_assert(x.fp_lang == UINT64_MAX);
        ck_assert(x.fp_enc == 0);
        ck_assert_int_eq(memcmp(x.hash, rows[0].token_hash, TOKEN_HASH_BYTES), 0);
        ck_assert_int_eq(store_session_get_sync(s, keys[0], &version, &data, &size), 0);
        ck_assert_uint_eq(size, sizeof bytes);
        ck_assert_int_eq(memcmp(data, bytes, sizeof bytes), 0);
        free(data);

        x = (struct exact_row){0};
        ck_assert_int_eq(store_session_by_row_key(s, keys[1], exact_cb, &x), 0);
        ck_assert(x.ip_null);
        ck_assert(x.platform_null);
        ck_assert_str_eq(x.ua, "");
        ck_assert_int_eq(memcmp(x.hash, rows[1].token_hash, TOKEN_HASH_BYTES), 0);
        ck_assert_int_eq(store_session_get_sync(s, keys[1], &version, &data, &size), 0);
        ck_assert_uint_eq(size, 0);
        free(data);
        ck_assert_int_eq(store_session_get_sync(s, keys[2], &version, &data, &size), 0);
        ck_assert_ptr_null(data);
        ck_assert_uint_eq(size, 0);

        ck_assert_int_eq(store_audit_each(s, &f, detail_cb, detail), 0);
        ck_assert_str_eq(detail, "created|a\"b\\c,{d}NULL \u00e9|(null)|{\"text\": \"a\\\"b,{c}\"}");

        store_close(s);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* The live rows read after a commit (store_read_page_after, a fleet's
 * re-read), in pages: light, in row order, with the unit's own writes,
 * after the row asked; a unit that fails reads nothing. Every backend. */
START_TEST(test_read_live_after_commit) {
        uv_loop_t loop;
        struct store *s = NULL;
        struct done d = {0};
        struct store_session rows[5];
        struct store_page_read x = {.kind = STORE_PAGE_SESSIONS, .filter = {.live_only = true, .light = true}};
        char ids[5][23];
        int64_t keys[5];

        s = open_on_loop(&loop);
        for (int i = 0; i < 5; i++) {
                memset(ids[i], 'a' + i, 22);
                ids[i][22] = '\0';
                rows[i] = row_for(ids[i], (uint8_t) (i + 1), i % 2 ? "bob" : "alice", T0 + i);
                if (i == 3)
                        rows[i].platform_id = "web";
                ck_assert_int_eq(insert_row(s, &rows[i], NULL, 0, &keys[i]), 0);
        }
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 1);
        ck_assert_int_eq(d.result, 0);

        /* The first page, with the unit's own end (row 1) left out. */
        ck_assert_int_eq(store_session_end(s, keys[1], T0 + 9, "destroyed"), 0);
        x.max_rows = 2;
        ck_assert_int_eq(store_read_page_after(s, &x), 0);
        ck_assert_int_eq(x.result, -EAGAIN);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 2);
        ck_assert_int_eq(d.result, 0);
        ck_assert_int_eq(x.result, 0);
        ck_assert_uint_eq(x.n_rows, 2);
        ck_assert(!x.complete);
        ck_assert_int_eq(x.rows[0].row_key, keys[0]);
        ck_assert_str_eq(x.rows[0].id, ids[0]);
        ck_assert_str_eq(x.rows[0].user_id, "alice");
        ck_assert_ptr_null(x.rows[0].ip); /* light */
        ck_assert_ptr_null(x.rows[0].user_agent);
        ck_assert_int_eq(x.rows[0].ended_at, 0);
        ck_assert_int_eq(x.rows[0].fp_user_agent, 77);
        ck_assert_int_eq(memcmp(x.rows[0].token_hash, rows[0].token_hash, TOKEN_HASH_BYTES), 0);
        ck_assert_int_eq(x.rows[1].row_key, keys[2]);

        /* The next page, asked of a unit of reads alone (committed too). */
        x.filter.after_row_key = x.rows[1].row_key;
        x.max_rows = 10;
        ck_assert_int_eq(store_read_page_after(s, &x), 0);
        ck_assert_ptr_null(x.rows); /* what the last read left is freed */
        ck_assert(store_has_pending(s));
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 3);
        ck_assert_int_eq(x.result, 0);
        ck_assert_uint_eq(x.n_rows, 2);
        ck_assert(x.complete);
        ck_assert_int_eq(x.rows[0].row_key, keys[3]);
        ck_assert_str_eq(x.rows[0].platform_id, "web");
        ck_assert_str_eq(x.rows[0].user_id, "bob");
        ck_assert_int_eq(x.rows[1].row_key, keys[4]);
        ck_assert_ptr_null(x.rows[1].platform_id);

        /* A unit that fails reads nothing. */
        ck_assert_int_eq(store_session_set_sync(s, keys[4] + 100000, 1, "x", 1), 0);
        x.filter.after_row_key = 0;
        ck_assert_int_eq(store_read_page_after(s, &x), 0);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 4);
        ck_assert_int_lt(d.result, 0);
        ck_assert_int_eq(x.result, -EAGAIN);
        ck_assert_uint_eq(x.n_rows, 0);

        /* Committed on the calling thread: the same. */
        ck_assert_int_eq(store_read_page_after(s, &x), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(x.result, 0);
        ck_assert_uint_eq(x.n_rows, 4);
        ck_assert(x.complete);
        store_page_read_clear(&x);

        store_close(s);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

static int count_audit_cb(const struct store_audit_row *row, void *userdata) {
        (void) row;
        (*(int *) userdata)++;
        return 0;
}

/* A reader opened on the store's locator (for a worker thread) sees what
 * the store committed. */
/* Pages of listings read after a commit (store_read_page_after): a
 * user's page (its live rows by key and its ended rows, merged, each row
 * once, cut at the last ended row read), a row by public id, the audit
 * (from where the newest begin), several in one unit, and the same read
 * now (store_read_page). Every backend. */
START_TEST(test_read_pages_after_commit) {
        uv_loop_t loop;
        struct store *s = NULL;
        struct done d = {0};
        struct store_session rows[6];
        char ids[6][23];
        int64_t keys[6], live[3];
        struct store_page_read u = {.kind = STORE_PAGE_OF_USER, .user_id = "alice"}, v, one, none, audit;

        s = open_on_loop(&loop);
        for (int i = 0; i < 6; i++) {
                memset(ids[i], 'k' + i, 22);
                ids[i][22] = '\0';
                rows[i] = row_for(ids[i], (uint8_t) (0x40 + i), i == 5 ? "bob" : "alice", T0 + i);
                ck_assert_int_eq(insert_row(s, &rows[i], NULL, 0, &keys[i]), 0);
                ck_assert_int_eq(store_audit_insert(s, T0 + i, "created", rows[i].user_id, ids[i], "{}"), 0);
        }
        ck_assert_int_eq(store_session_end(s, keys[1], MS(T0 + 7), "destroyed"), 0);
        ck_assert_int_eq(store_session_end(s, keys[3], MS(T0 + 7), "idle"), 0);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 1);
        ck_assert_int_eq(d.result, 0);

        /* alice: live 0, 2, 4 (memory says so), ended 1, 3; row 2 is asked
         * as live but ends in this very unit: listed once, as ended. */
        ck_assert_int_eq(store_session_end(s, keys[2], MS(T0 + 8), "destroyed"), 0);
        live[0] = keys[0];
        live[1] = keys[2];
        live[2] = keys[4];
        qsort(live, 3, sizeof live[0], int64_cmp);
        u.row_keys = live;
        u.n_row_keys = 3;
        u.max_rows = 10;
        v = u;
        v.max_rows = 1; /* one ended row: the page stops at it */
        one = (struct store_page_read){.kind = STORE_PAGE_BY_ID, .id = ids[3]};
        none = (struct store_page_read){.kind = STORE_PAGE_BY_ID, .id = "zzzzzzzzzzzzzzzzzzzzzz"};
        audit = (struct store_page_read){
                .kind = STORE_PAGE_AUDIT, .audit = {.user_id = "alice", .limit = 2}, .audit_newest = 3};
        ck_assert_int_eq(store_read_page_after(s, &u), 0);
        ck_assert_int_eq(store_read_page_after(s, &v), 0);
        ck_assert_int_eq(store_read_page_after(s, &one), 0);
        ck_assert_int_eq(store_read_page_after(s, &none), 0);
        ck_assert_int_eq(store_read_page_after(s, &audit), 0);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 2);
        ck_assert_int_eq(d.result, 0);

        ck_assert_int_eq(u.result, 0);
        ck_assert(u.complete);
        ck_assert_uint_eq(u.n_rows, 5);
        for (int i = 0; i < 5; i++)
                ck_assert_int_eq(u.rows[i].row_key, keys[i]);
        ck_assert_int_eq(u.rows[2].ended_at, MS(T0 + 8));
        ck_assert_str_eq(u.rows[2].end_reason, "destroyed");
        ck_assert_str_eq(u.rows[0].ip, "192.0.2.1"); /* not light */
        ck_assert_str_eq(u.rows[0].user_agent, "Mozilla");
        ck_assert_int_eq(u.rows[4].ended_at, 0);

        ck_assert_int_eq(v.result, 0);
        ck_assert(!v.complete);
        ck_assert_int_eq(v.bound, keys[1]);
        ck_assert_uint_eq(v.n_rows, 2);
        ck_assert_int_eq(v.rows[0].row_key, keys[0]);
        ck_assert_int_eq(v.rows[1].row_key, keys[1]);

        ck_assert_int_eq(one.result, 0);
        ck_assert_uint_eq(one.n_rows, 1);
        ck_assert_str_eq(one.rows[0].id, ids[3]);
        ck_assert_str_eq(one.rows[0].end_reason, "idle");
        ck_assert_int_eq(none.result, 0);
        ck_assert_uint_eq(none.n_rows, 0);

        /* alice's audit: 5 entries, the newest 3 begin at row 2's; the page
         * holds 2 of them, oldest first. */
        ck_assert_int_eq(audit.result, 0);
        ck_assert_uint_eq(audit.n_entries, 2);
        ck_assert_str_eq(audit.entries[0].session_id, ids[2]);
        ck_assert_str_eq(audit.entries[1].session_id, ids[3]);
        ck_assert_str_eq(audit.entries[0].kind, "created");
        ck_assert_int_eq(audit.entries[0].time, T0 + 2);
        ck_assert_int_eq(audit.audit_after[0], T0 + 2);

        /* The next audit page, read now on the calling thread. */
        audit.audit_newest = 0;
        audit.audit.ascending = true;
        audit.audit.after_time = audit.entries[1].time;
        audit.audit.after_id = audit.entries[1].id;
        ck_assert_int_eq(store_read_page(s, &audit), 0);
        ck_assert_int_eq(audit.result, 0);
        ck_assert_uint_eq(audit.n_entries, 1);
        ck_assert_str_eq(audit.entries[0].session_id, ids[4]);

        /* A unit that fails reads nothing. */
        ck_assert_int_eq(store_session_set_sync(s, keys[5] + 100000, 1, "x", 1), 0);
        ck_assert_int_eq(store_read_page_after(s, &u), 0);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 3);
        ck_assert_int_lt(d.result, 0);
        ck_assert_int_eq(u.result, -EAGAIN);
        ck_assert_uint_eq(u.n_rows, 0);

        store_page_read_clear(&u);
        store_page_read_clear(&v);
        store_page_read_clear(&one);
        store_page_read_clear(&none);
        store_page_read_clear(&audit);
        store_close(s);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

START_TEST(test_reader) {
        struct store *s = backend_open(), *r = NULL;
        struct store_audit_filter f = {.limit = 10};
        int64_t n;
        int rows = 0;

        ck_assert_int_eq(store_audit_insert(s, T0, "created", "u", NULL, NULL), 0); /* no detail: "{}" */
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_reader_open(store_locator(s), &r), 0);
        ck_assert_int_eq(store_audit_each(r, &f, count_audit_cb, &rows), 0);
        ck_assert_int_eq(rows, 1);
        ck_assert_int_eq(store_count_sessions(r, false, &n), 0);
        ck_assert_int_eq(n, 0);
        ck_assert_str_eq(store_name(r), store_name(s));
        store_close(r);
        store_close(s);
}
END_TEST

/* Adds the backend-independent cases to tc (after the backend's own). */
static void store_cases_add(TCase *tc) {
        tcase_add_test(tc, test_reopen_keeps_rows);
        tcase_add_test(tc, test_open_loads_live_sessions);
        tcase_add_test(tc, test_rollback);
        tcase_add_test(tc, test_session_operations);
        tcase_add_test(tc, test_iteration_stops);
        tcase_add_test(tc, test_iteration_and_pages);
        tcase_add_test(tc, test_purge_and_audit);
        tcase_add_test(tc, test_audit_after_cursor);
        tcase_add_test(tc, test_maintenance);
        tcase_add_test(tc, test_unit_of_work_async);
        tcase_add_test(tc, test_reader);
        tcase_add_test(tc, test_read_after_commit);
        tcase_add_test(tc, test_switch_platform_decided_by_store);
        tcase_add_test(tc, test_read_sync_after_commit);
        tcase_add_test(tc, test_read_live_after_commit);
        tcase_add_test(tc, test_read_pages_after_commit);
        tcase_add_test(tc, test_unit_rows_exact);
}
