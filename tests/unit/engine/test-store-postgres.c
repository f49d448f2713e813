/* The PostgreSQL store (daemon/store/postgres.c) against a real server:
 * SESSIOND_TEST_POSTGRES_URL, set by tests/pg/pg-server (exit 77, skipped,
 * without it). The backend-independent cases of test-store.c (session
 * operations, iteration and pages, purge and audit with their filters, the
 * unit of work on a loop, rollback, reopening, loading) and what only a
 * shared store has: keys unique across stores on one database, the key
 * check, a newer schema refused, GREATEST on touches, NOTIFY heard by
 * another store and not by its own, the leader's lock, heartbeats, lost
 * connections. Every test starts on an empty database (public schema
 * dropped and made again). */
#include <libpq-fe.h>
#include <pthread.h>
#include <uv.h>

#include "helpers.h"

static const char *url(void) {
        return getenv("SESSIOND_TEST_POSTGRES_URL");
}

static PGconn *admin(void) {
        PGconn *c = PQconnectdb(url());

        ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
        return c;
}

static void sql_exec(const char *sql) {
        PGconn *c = admin();
        PGresult *res = PQexec(c, sql);
        ExecStatusType st = PQresultStatus(res);

        ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
        PQclear(res);
        PQfinish(c);
}

static int64_t sql_int(const char *sql) {
        PGconn *c = admin();
        PGresult *res = PQexec(c, sql);
        int64_t v = -1;

        ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
        if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
                v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        PQfinish(c);
        return v;
}

static void reset_database(void) {
        sql_exec("SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public");
}

static struct store *open_pg_key(const char *key_check) {
        struct store_options o = {.postgres_url = url(), .key_check = key_check, .synchronous = "normal"};
        struct store *s = NULL;

        ck_assert_int_eq(store_open(&o, &s), 0);
        return s;
}

static struct store *open_pg(void) {
        return open_pg_key("check-1");
}

static int insert_row(struct store *s, struct store_session *r, const void *data, size_t size, int64_t *rowid) {
        int res = store_allocate_key(s, rowid);

        if (res < 0)
                return res;
        r->rowid = *rowid;
        return store_session_insert(s, r, data, size);
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
        int64_t rowid, ended_at, last_activity, renewed_at;
        uint64_t fp_ua, fp_ip;
        char id[64], user[64], reason[64], ip[64];
        bool saw_ip;
};

static int capture_cb(const struct store_session *row, void *userdata) {
        struct capture *c = userdata;

        c->n++;
        c->rowid = row->rowid;
        snprintf(c->id, sizeof c->id, "%s", row->id);
        snprintf(c->user, sizeof c->user, "%s", row->user_id);
        snprintf(c->reason, sizeof c->reason, "%s", row->end_reason ? row->end_reason : "");
        snprintf(c->ip, sizeof c->ip, "%s", row->ip ? row->ip : "");
        c->saw_ip |= row->ip != NULL;
        c->ended_at = row->ended_at;
        c->last_activity = row->last_activity;
        c->renewed_at = row->renewed_at;
        c->fp_ua = row->fp_user_agent;
        c->fp_ip = row->fp_ip;
        return 0;
}

START_TEST(test_new_database) {
        struct store *s = open_pg();
        struct store_maintenance m;
        char expected[1024];

        ck_assert_int_eq(sql_int("SELECT value::int FROM sessiond_meta WHERE key = 'schema_version'"), 1);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessiond_meta WHERE key = 'key_check' AND value = 'check-1'"),
                         1);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions"), 0);
        ck_assert(!store_is_memory(s));
        ck_assert_str_eq(store_name(s), url());
        snprintf(expected, sizeof expected, "postgresql:%s", url());
        ck_assert_str_eq(store_locator(s), expected);
        ck_assert_int_eq(store_probe(s), 0);
        ck_assert_int_gt(store_size(s), 0);
        ck_assert_int_eq(store_maintain(s, &m), 0);
        ck_assert(m.ok);
        ck_assert_str_eq(m.message, "ok");
        ck_assert_int_eq(store_check_integrity(s, &m), 0);
        ck_assert(m.ok);
        ck_assert_int_eq(store_maintain_step(s, true), 0);
        ck_assert_int_eq(store_pace(s), 0);
        ck_assert_int_eq(store_set_synchronous(s, "full"), 0);
        ck_assert_int_eq(store_set_synchronous(s, "bogus"), -EINVAL);
        /* Two connections so far, named: the writing one, and the one
         * store_size() used (it is called without the store's lock). */
        ck_assert_int_eq(sql_int("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sessiond'"), 2);
        store_close(s);
}
END_TEST

/* The password never shows in store_name(), whatever the URL's form. */
START_TEST(test_password_redacted) {
        char u[1024], *host;
        struct store_options o = {.postgres_url = u};
        struct store *s = NULL;

        /* Local trust authentication ignores the password. */
        snprintf(u, sizeof u, "%s&password=s3cret", url());
        ck_assert_int_eq(store_open(&o, &s), 0);
        ck_assert_ptr_null(strstr(store_name(s), "s3cret"));
        ck_assert_ptr_nonnull(strstr(store_name(s), "password=***"));
        ck_assert_ptr_nonnull(strstr(store_locator(s), "s3cret")); /* what readers open with */
        store_close(s);

        host = strstr(url(), "host="); /* "host=<folder>&user=<user>": the user given there wins */
        ck_assert_ptr_nonnull(host);
        snprintf(u, sizeof u, "postgresql://someone:s3cret@/sessiond?%s", host);
        s = NULL;
        ck_assert_int_eq(store_open(&o, &s), 0);
        ck_assert_ptr_null(strstr(store_name(s), "s3cret"));
        ck_assert_ptr_nonnull(strstr(store_name(s), ":***@"));
        store_close(s);

        snprintf(u, sizeof u, "dbname=sessiond %s password='s3 cret'", host);
        *strchr(u, '&') = ' ';
        s = NULL;
        ck_assert_int_eq(store_open(&o, &s), 0);
        ck_assert_ptr_null(strstr(store_name(s), "cret"));
        ck_assert_ptr_nonnull(strstr(store_name(s), "password='***'"));
        store_close(s);
}
END_TEST

START_TEST(test_session_operations) {
        struct store *s = open_pg();
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
        ck_assert_int_eq(store_session_by_rowid(s, rb, capture_cb, &c), 0);
        ck_assert_int_eq(c.last_activity, T0);
        ck_assert_str_eq(c.ip, "192.0.2.1");
        ck_assert_uint_eq(c.fp_ua, 77);
        ck_assert_uint_eq(c.fp_ip, 0);

        /* By token hash live rows are found too (unlike SQLite: memory is
         * a cache of the fleet's sessions, store.h). */
        memset(hash, 1, sizeof hash);
        c = (struct capture){0};
        ck_assert_int_eq(store_session_by_hash(s, hash, capture_cb, &c), 0);
        ck_assert_int_eq(c.rowid, ra);
        ck_assert_int_eq(c.ended_at, 0);
        memset(hash, 9, sizeof hash);
        ck_assert_int_eq(store_session_by_hash(s, hash, capture_cb, &c), -ENOENT);
        ck_assert_int_eq(store_session_by_id(s, "bbbbbbbbbbbbbbbbbbbbbb", capture_cb, &c), 0);
        ck_assert_int_eq(c.rowid, rb);
        ck_assert_int_eq(store_session_by_id(s, "nope", capture_cb, &c), -ENOENT);

        ck_assert_int_eq(store_session_set_activity(s, ra, T0 + 10), 0);
        ck_assert_int_eq(store_session_set_renewed(s, ra, T0 + 20, T0 + 20), 0);
        ck_assert_int_eq(store_session_set_client(s, ra, &client), 0);
        c = (struct capture){0};
        ck_assert_int_eq(store_session_by_rowid(s, ra, capture_cb, &c), 0);
        ck_assert_int_eq(c.last_activity, T0 + 20);
        ck_assert_int_eq(c.renewed_at, T0 + 20);
        ck_assert_str_eq(c.ip, "198.51.100.7");
        ck_assert_uint_eq(c.fp_ip, 99);
        ck_assert_uint_eq(c.fp_ua, 77); /* not given: kept */
        ck_assert_int_eq(store_commit(s), 0);
        /* A write to a row that is not there fails its unit, here at the
         * first read that runs it... */
        ck_assert_int_eq(store_session_set_sync(s, 12345678, 1, "x", 1), 0);
        ck_assert_int_eq(store_session_by_rowid(s, ra, capture_cb, &c), -ENOENT);
        ck_assert_int_eq(store_commit(s), -ENOENT);
        /* ...but for a touch or an end, which another daemon's end or the
         * leader's purge make moot (postgres.c, op_result): the rest of the
         * unit stands. */
        ck_assert_int_eq(store_session_set_activity(s, 12345678, T0), 0);
        ck_assert_int_eq(store_session_end(s, 12345679, T0, "destroyed"), 0);
        ck_assert_int_eq(store_session_set_activity(s, ra, T0 + 30), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_session_by_rowid(s, ra, capture_cb, &c), 0);
        ck_assert_int_eq(c.last_activity, T0 + 30);
        {
                struct store_session x = row_for("xxxxxxxxxxxxxxxxxxxxxx", 9, "ended-twice", T0);
                int64_t rx;

                ck_assert_int_eq(insert_row(s, &x, NULL, 0, &rx), 0);
                ck_assert_int_eq(store_session_end(s, rx, T0 + 31, "destroyed"), 0);
                ck_assert_int_eq(store_session_end(s, rx, T0 + 32, "evicted"), 0); /* ended already: the first end stands */
                ck_assert_int_eq(store_commit(s), 0);
                ck_assert_int_eq(store_session_by_rowid(s, rx, capture_cb, &c), 0);
                ck_assert_int_eq(c.ended_at, T0 + 31);
        }

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
        ck_assert_int_eq(store_session_end(s, ra, T0 + 50, "destroyed"), 0); /* already ended: moot */
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_session_copy(s, ra, rc + 1, "dddddddddddddddddddddd", hash, T0), 0);
        ck_assert_int_eq(store_commit(s), -ENOENT);
        c = (struct capture){0};
        ck_assert_int_eq(store_session_by_rowid(s, ra, capture_cb, &c), 0);
        ck_assert_int_eq(c.ended_at, T0 + 40);
        ck_assert_str_eq(c.reason, "rotated");
        memset(hash, 1, sizeof hash);
        c = (struct capture){0};
        ck_assert_int_eq(store_session_by_hash(s, hash, capture_cb, &c), 0);
        ck_assert_int_eq(c.n, 1);
        ck_assert_int_eq(c.rowid, ra);
        ck_assert_str_eq(c.user, "alice");
        ck_assert_str_eq(c.ip, "198.51.100.7");

        c = (struct capture){0};
        ck_assert_int_eq(store_sessions_each(s, &live, capture_cb, &c), 0);
        ck_assert_int_eq(c.n, 2); /* b and the copy */
        c = (struct capture){0};
        ck_assert_int_eq(store_sessions_ended_of_user(s, "alice", capture_cb, &c), 0);
        ck_assert_int_eq(c.n, 1);
        ck_assert_int_eq(c.rowid, ra);
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

static int stop_cb(const struct store_session *row, void *userdata) {
        (*(int *)userdata)++;
        return 7;
}

struct order {
        int n;
        int64_t last;
        bool sorted, saw_ip, saw_ended;
};

static int order_cb(const struct store_session *row, void *userdata) {
        struct order *o = userdata;

        o->sorted &= row->rowid > o->last;
        o->last = row->rowid;
        o->saw_ip |= row->ip != NULL;
        o->saw_ended |= row->ended_at != 0;
        o->n++;
        return 0;
}

/* More rows than one page of the backend: every row once, in order, and
 * the filters (live only, after a row, light). */
START_TEST(test_iteration_and_pages) {
        struct store *s = open_pg();
        struct store_filter all = {0}, live = {.live_only = true}, light = {.live_only = true, .light = true};
        struct order o;
        char id[TOKEN_ID_STRING_LEN + 1];
        int64_t rowid, first = 0, mid = 0;
        int n = 0;

        for (int i = 0; i < 2500; i++) {
                struct store_session r = row_for(id, (uint8_t)i, "u", T0);
                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(s, &r, NULL, 0, &rowid), 0);
                if (i == 0)
                        first = rowid;
                if (i == 1499)
                        mid = rowid;
                if (i % 2)
                        ck_assert_int_eq(store_session_end(s, rowid, T0 + 1, "idle"), 0);
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
        all.after_rowid = mid;
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

        snprintf(out + strlen(out), 128 - strlen(out), "%s=%lld;", key, (long long)count);
        return 0;
}

START_TEST(test_purge_and_audit) {
        struct store *s = open_pg();
        char id[TOKEN_ID_STRING_LEN + 1], reasons[128] = "";
        int64_t rowid, n, durations[2] = {0, 0};
        struct audit_capture a;
        struct store_audit_filter f;
        uint64_t counts[3];

        for (int i = 0; i < 10; i++) {
                struct store_session r = row_for(id, (uint8_t)i, "u", (int64_t)T0 * 1000);
                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(s, &r, NULL, 0, &rowid), 0);
                if (i < 6) /* six ended, at T0 + i seconds */
                        ck_assert_int_eq(store_session_end(s, rowid, ((int64_t)T0 + i) * 1000, i ? "idle" : "rotated"),
                                         0);
                ck_assert_int_eq(store_audit_insert(s, T0 + i, i % 2 ? "created" : "ended", i < 3 ? "u" : "v", id,
                                                    "{\"i\":1}"),
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
        ck_assert_int_eq(store_purge_sessions(s, ((int64_t)T0 + 4) * 1000, 3), 3);
        ck_assert_int_eq(store_purge_sessions(s, ((int64_t)T0 + 4) * 1000, 3), 1);
        ck_assert_int_eq(store_purge_sessions(s, ((int64_t)T0 + 4) * 1000, 3), 0);
        ck_assert(store_has_pending(s));
        ck_assert_int_eq(store_count_sessions(s, true, &n), 0);
        ck_assert_int_eq(n, 2);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 4); /* live ones are never purged */
        ck_assert_int_eq(store_purge_audit(s, T0 + 5, 100), 5);
        ck_assert_int_eq(store_purge_audit(s, T0 + 5, 100), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions"), 6);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM audit"), 5);

        /* A purge rolled back is gone with its unit. */
        ck_assert_int_eq(store_purge_audit(s, T0 + 100, 100), 5);
        store_rollback(s);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM audit"), 5);
        store_close(s);
}
END_TEST

START_TEST(test_rollback) {
        struct store_session r = row_for("AAAAAAAAAAAAAAAAAAAAAA", 1, "alice", T0);
        struct store *s = open_pg();
        int64_t rowid, n;

        ck_assert_int_eq(insert_row(s, &r, NULL, 0, &rowid), 0);
        store_rollback(s);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 0);
        /* A read runs the open unit first; rolling back drops what it ran. */
        ck_assert_int_eq(insert_row(s, &r, NULL, 0, &rowid), 0);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 1);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions"), 0); /* not committed */
        store_rollback(s);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 0);
        store_rollback(s);
        /* Closing drops what nobody committed. */
        ck_assert_int_eq(insert_row(s, &r, NULL, 0, &rowid), 0);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        store_close(s);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions"), 0);
}
END_TEST

START_TEST(test_reopen_keeps_rows) {
        struct store_session r = row_for("AAAAAAAAAAAAAAAAAAAAAA", 1, "alice", T0);
        struct store *s = open_pg();
        int64_t rowid = 0, rowid2 = 0, version = 0;
        char *data = NULL;
        size_t size = 0;

        ck_assert(!store_has_pending(s));
        ck_assert_int_eq(insert_row(s, &r, "state", 5, &rowid), 0);
        ck_assert(store_has_pending(s));
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert(!store_has_pending(s));
        store_close(s);

        s = open_pg();
        ck_assert_int_eq(store_session_get_sync(s, rowid, &version, &data, &size), 0);
        ck_assert_uint_eq(size, 5);
        ck_assert_str_eq(data, "state");
        free(data);
        ck_assert_int_eq(store_allocate_key(s, &rowid2), 0);
        ck_assert_int_gt(rowid2, rowid); /* a new block */
        store_close(s);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions WHERE user_id = 'alice'"), 1);
}
END_TEST

struct loading {
        int64_t reserved;
        int n, fail_at;
        int64_t rowids[8];
        bool saw_ip;
};

static int reserve_cb(uint64_t n, void *userdata) {
        ((struct loading *)userdata)->reserved = (int64_t)n;
        return 0;
}

static int loading_cb(const struct store_session *row, void *userdata) {
        struct loading *l = userdata;

        if (l->n == l->fail_at)
                return -ENOMEM;
        ck_assert_int_lt(l->n, 8);
        ck_assert_int_eq(row->ended_at, 0);
        l->rowids[l->n++] = row->rowid;
        l->saw_ip |= row->ip != NULL;
        return 0;
}

START_TEST(test_open_loads_live_sessions) {
        struct store *s = open_pg();
        struct loading l = {.reserved = -1, .fail_at = -1};
        struct store_options o = {.postgres_url = url(), .reserve = reserve_cb, .load = loading_cb, .load_userdata = &l};
        char id[TOKEN_ID_STRING_LEN + 1];
        int64_t rowid[4];

        for (int i = 0; i < 4; i++) {
                struct store_session r = row_for(id, (uint8_t)i, "user", T0);
                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(s, &r, NULL, 0, &rowid[i]), 0);
        }
        ck_assert_int_eq(store_session_end(s, rowid[1], T0 + 1, "destroyed"), 0);
        ck_assert_int_eq(store_commit(s), 0);
        store_close(s);

        s = NULL;
        ck_assert_int_eq(store_open(&o, &s), 0);
        ck_assert_int_eq(l.reserved, 3);
        ck_assert_int_eq(l.n, 3);
        ck_assert_int_eq(l.rowids[0], rowid[0]);
        ck_assert_int_eq(l.rowids[1], rowid[2]);
        ck_assert_int_eq(l.rowids[2], rowid[3]);
        ck_assert(!l.saw_ip); /* light rows */
        store_close(s);

        /* The loader's failure is the open's. */
        l = (struct loading){.fail_at = 2};
        s = NULL;
        ck_assert_int_eq(store_open(&o, &s), -ENOMEM);
        ck_assert_ptr_null(s);

        /* An empty database has nothing to load. */
        reset_database();
        l = (struct loading){.reserved = -1, .fail_at = -1};
        ck_assert_int_eq(store_open(&o, &s), 0);
        ck_assert_int_eq(l.reserved, 0);
        ck_assert_int_eq(l.n, 0);
        store_close(s);
}
END_TEST

/* The unit of work on the writer thread (as test-store.c). */
struct done {
        int calls, result;
};

static void done_cb(int result, void *userdata) {
        struct done *d = userdata;

        d->calls++;
        d->result = result;
}

static void never_cb(uv_timer_t *t) {
        (void)t;
}

static void run_until(uv_loop_t *loop, const int *counter, int at_least) {
        uv_timer_t t;
        int64_t deadline = (int64_t)time(NULL) + 20;

        uv_timer_init(loop, &t);
        uv_timer_start(&t, never_cb, 50, 50);
        while (*counter < at_least && time(NULL) < deadline)
                uv_run(loop, UV_RUN_ONCE);
        uv_close((uv_handle_t *)&t, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        ck_assert_int_ge(*counter, at_least);
}

START_TEST(test_unit_of_work_async) {
        uv_loop_t loop;
        struct store_options o = {.postgres_url = url(), .synchronous = "normal", .loop = &loop};
        struct store *s = NULL;
        struct done d = {0};
        struct store_session a = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        struct store_session b = row_for("bbbbbbbbbbbbbbbbbbbbbb", 2, "bob", T0);
        struct store_session c = row_for("cccccccccccccccccccccc", 3, "carol", T0);
        int64_t ra, rb, rc, n, version;
        char *data;
        size_t size;

        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(store_open(&o, &s), 0);
        ck_assert_int_eq(insert_row(s, &a, "x", 1, &ra), 0);
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

        /* b's unit also writes the sync state of a row that is not there: lost whole. */
        ck_assert_int_eq(store_session_set_sync(s, ra + 100000, 1, "x", 1), 0);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d.calls, 2);
        ck_assert_int_eq(d.result, -ENOENT);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 1);

        ck_assert_int_eq(insert_row(s, &c, NULL, 0, &rc), 0);
        ck_assert_int_gt(rc, rb);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        store_wait(s);
        ck_assert_int_eq(d.calls, 3);
        ck_assert_int_eq(d.result, 0);

        /* The deep cleanup's asynchronous maintenance: nothing to do here,
         * but done comes on the loop, never before the call returns. */
        ck_assert_int_eq(store_maintain_start(s, true, done_cb, &d), 0);
        ck_assert_int_eq(d.calls, 3);
        run_until(&loop, &d.calls, 4);
        ck_assert_int_eq(d.result, 0);
        store_close(s);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);

        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions"), 2);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions WHERE user_id = 'bob'"), 0);
}
END_TEST

static int cmp_int64(const void *a, const void *b) {
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

        return x < y ? -1 : x > y;
}

/* Two daemons on one database never get the same key, and each gets
 * blocks (one round trip per PG_KEY_BLOCK keys, not per key). */
START_TEST(test_keys_unique_across_stores) {
        struct store *s1 = open_pg(), *s2 = open_pg();
        static int64_t keys[6000];
        char id[TOKEN_ID_STRING_LEN + 1];
        int n = 0;

        for (int i = 0; i < 3000; i++) {
                ck_assert_int_eq(store_allocate_key(s1, &keys[n++]), 0);
                ck_assert_int_eq(store_allocate_key(s2, &keys[n++]), 0);
        }
        ck_assert_int_le(sql_int("SELECT last_value FROM sessiond_session_keys"), 6 * 1000 + 1);
        qsort(keys, (size_t)n, sizeof keys[0], cmp_int64);
        for (int i = 1; i < n; i++)
                ck_assert_int_ne(keys[i - 1], keys[i]);
        ck_assert_int_gt(keys[0], 0);

        for (int i = 0; i < 50; i++) {
                struct store_session r = row_for(id, (uint8_t)i, "u", T0);
                int64_t k;

                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(i % 2 ? s1 : s2, &r, NULL, 0, &k), 0);
        }
        ck_assert_int_eq(store_commit(s1), 0);
        ck_assert_int_eq(store_commit(s2), 0);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions"), 50);
        store_close(s1);
        store_close(s2);
}
END_TEST

struct opener {
        int result;
        struct store *s;
};

static void *open_thread(void *userdata) {
        struct opener *o = userdata;
        struct store_options opt = {.postgres_url = url(), .key_check = "check-1"};

        o->result = store_open(&opt, &o->s);
        return NULL;
}

/* Daemons starting at once on an empty database: one creates, the others
 * wait for it and find the schema made. */
START_TEST(test_concurrent_creation) {
        struct opener o[4] = {{0}};
        pthread_t t[4];

        for (int i = 0; i < 4; i++)
                ck_assert_int_eq(pthread_create(&t[i], NULL, open_thread, &o[i]), 0);
        for (int i = 0; i < 4; i++) {
                pthread_join(t[i], NULL);
                ck_assert_int_eq(o[i].result, 0);
                store_close(o[i].s);
        }
        ck_assert_int_eq(sql_int("SELECT value::int FROM sessiond_meta WHERE key = 'schema_version'"), 1);
}
END_TEST

START_TEST(test_key_check) {
        struct store_options o = {.postgres_url = url(), .key_check = "check-2"};
        struct store *s = open_pg_key("check-1"), *s2 = NULL;

        store_close(s);
        s = open_pg_key("check-1");
        store_close(s);
        ck_assert_int_eq(store_open(&o, &s2), -EKEYREJECTED);
        ck_assert_ptr_null(s2);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessiond_meta WHERE key = 'key_check' AND value = 'check-1'"),
                         1);
        s = open_pg_key(NULL); /* no check asked */
        store_close(s);
}
END_TEST

START_TEST(test_newer_and_foreign_refused) {
        struct store_options o = {.postgres_url = url(), .key_check = "check-1"};
        struct store *s = open_pg();

        store_close(s);
        sql_exec("UPDATE sessiond_meta SET value = '99' WHERE key = 'schema_version'");
        s = NULL;
        ck_assert_int_eq(store_open(&o, &s), -EPROTO);
        ck_assert_ptr_null(s);
        ck_assert_int_eq(sql_int("SELECT value::int FROM sessiond_meta WHERE key = 'schema_version'"), 99);

        reset_database();
        sql_exec("CREATE TABLE sessions (x int)");
        ck_assert_int_eq(store_open(&o, &s), -EBADMSG);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM information_schema.columns WHERE table_name = 'sessions'"), 1);
}
END_TEST

/* Touches from several daemons never move activity backwards. */
START_TEST(test_activity_greatest) {
        struct store *s1 = open_pg(), *s2 = open_pg();
        struct store_session r = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        struct capture c = {0};
        int64_t rowid;

        ck_assert_int_eq(insert_row(s1, &r, NULL, 0, &rowid), 0);
        ck_assert_int_eq(store_commit(s1), 0);
        ck_assert_int_eq(store_session_set_activity(s1, rowid, T0 + 50), 0);
        ck_assert_int_eq(store_commit(s1), 0);
        ck_assert_int_eq(store_session_set_activity(s2, rowid, T0 + 10), 0);
        ck_assert_int_eq(store_commit(s2), 0);
        ck_assert_int_eq(store_session_set_renewed(s2, rowid, T0 + 20, T0 + 20), 0);
        ck_assert_int_eq(store_commit(s2), 0);
        ck_assert_int_eq(store_session_by_rowid(s2, rowid, capture_cb, &c), 0);
        ck_assert_int_eq(c.last_activity, T0 + 50);
        ck_assert_int_eq(c.renewed_at, T0 + 20);
        store_close(s1);
        store_close(s2);
}
END_TEST

#define MAX_HEARD 4096
struct heard {
        int n, lost;
        enum store_change_kind kinds[MAX_HEARD];
        int64_t rowids[MAX_HEARD];
};

static void heard_cb(const struct store_change *c, bool lost, void *userdata) {
        struct heard *h = userdata;

        if (lost) {
                h->lost++;
                return;
        }
        ck_assert_int_lt(h->n, MAX_HEARD);
        h->kinds[h->n] = c->kind;
        h->rowids[h->n++] = c->rowid;
}

/* Let the loop run a little (what might still come, comes). */
static void settle(uv_loop_t *loop, int ms) {
        uv_timer_t t;

        uv_timer_init(loop, &t);
        uv_timer_start(&t, never_cb, (uint64_t)ms, 0);
        uv_run(loop, UV_RUN_ONCE);
        uv_close((uv_handle_t *)&t, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
}

START_TEST(test_notify) {
        uv_loop_t loop;
        struct store *s1 = open_pg(), *s2 = open_pg();
        struct heard h1 = {0}, h2 = {0};
        struct store_session r = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        char id[TOKEN_ID_STRING_LEN + 1];
        uint8_t hash[TOKEN_HASH_BYTES];
        int64_t ra, rb, k;

        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(store_changes_subscribe(s1, &loop, heard_cb, &h1), 0);
        ck_assert_int_eq(store_changes_subscribe(s2, &loop, heard_cb, &h2), 0);

        ck_assert_int_eq(insert_row(s1, &r, NULL, 0, &ra), 0);
        ck_assert_int_eq(store_session_set_activity(s1, ra, T0 + 1), 0); /* not news */
        ck_assert_int_eq(store_audit_insert(s1, T0, "created", "alice", r.id, "{}"), 0);
        ck_assert_int_eq(store_session_set_sync(s1, ra, 1, "x", 1), 0);
        ck_assert_int_eq(store_commit(s1), 0);
        run_until(&loop, &h2.n, 2);
        ck_assert_int_eq(h2.kinds[0], STORE_CHANGE_CREATED);
        ck_assert_int_eq(h2.rowids[0], ra);
        ck_assert_int_eq(h2.kinds[1], STORE_CHANGE_SYNC);
        ck_assert_int_eq(h2.rowids[1], ra);

        /* A rotation on the other store: the new row created, the old ended. */
        memset(hash, 7, sizeof hash);
        ck_assert_int_eq(store_allocate_key(s2, &rb), 0);
        ck_assert_int_eq(store_session_copy(s2, ra, rb, "bbbbbbbbbbbbbbbbbbbbbb", hash, T0 + 2), 0);
        ck_assert_int_eq(store_session_end(s2, ra, T0 + 2, "rotated"), 0);
        ck_assert_int_eq(store_commit(s2), 0);
        run_until(&loop, &h1.n, 2);
        ck_assert_int_eq(h1.kinds[0], STORE_CHANGE_CREATED);
        ck_assert_int_eq(h1.rowids[0], rb);
        ck_assert_int_eq(h1.kinds[1], STORE_CHANGE_ENDED);
        ck_assert_int_eq(h1.rowids[1], ra);

        /* A failed unit says nothing. */
        ck_assert_int_eq(store_session_set_sync(s1, rb, 2, "y", 1), 0);
        ck_assert_int_eq(store_session_set_platform(s1, 987654321, "x", "[]"), 0);
        ck_assert_int_eq(store_commit(s1), -ENOENT);

        /* Many changes: several payloads, every one heard, in order. */
        for (int i = 0; i < 1500; i++) {
                struct store_session x = row_for(id, (uint8_t)i, "many", T0);

                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(s1, &x, NULL, 0, &k), 0);
        }
        ck_assert_int_eq(store_commit(s1), 0);
        run_until(&loop, &h2.n, 2 + 1500);
        settle(&loop, 300);
        ck_assert_int_eq(h2.n, 2 + 1500);
        ck_assert_int_eq(h2.rowids[2 + 1499], k);
        for (int i = 3; i < h2.n; i++)
                ck_assert_int_lt(h2.rowids[i - 1], h2.rowids[i]);
        /* Neither heard its own. */
        ck_assert_int_eq(h1.n, 2);
        ck_assert_int_eq(h1.lost + h2.lost, 0);
        ck_assert_int_eq(store_changes_subscribe(s1, &loop, heard_cb, &h1), -EBUSY);

        store_close(s1);
        store_close(s2);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* The per-user limit across daemons: three stores creating for one user at
 * once, each unit an insert and the limit of 3, leave exactly 3 live
 * sessions; every store hears of the sessions ended for the limit, its
 * own included. */
struct creator {
        struct store *s;
        int index, failed;
};

static void *create_thread(void *userdata) {
        struct creator *c = userdata;
        char id[TOKEN_ID_STRING_LEN + 1];

        for (int i = 0; i < 7; i++) {
                struct store_session r = row_for(id, (uint8_t)i, "lim", T0 + 10 * i + c->index);
                int64_t k;

                snprintf(id, sizeof id, "%020d%d%d", i, c->index, 0);
                if (insert_row(c->s, &r, NULL, 0, &k) < 0 || store_user_limit(c->s, "lim", 3, T0 + 100) < 0 ||
                    store_commit(c->s) < 0)
                        c->failed++;
        }
        return NULL;
}

START_TEST(test_user_limit_across_stores) {
        uv_loop_t loop;
        struct creator c[3];
        pthread_t t[3];
        struct heard h[3] = {{0}};
        int ended[3] = {0};

        ck_assert_int_eq(uv_loop_init(&loop), 0);
        for (int i = 0; i < 3; i++) {
                c[i] = (struct creator){.s = open_pg(), .index = i};
                ck_assert_int_eq(store_changes_subscribe(c[i].s, &loop, heard_cb, &h[i]), 0);
        }
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(pthread_create(&t[i], NULL, create_thread, &c[i]), 0);
        for (int i = 0; i < 3; i++) {
                pthread_join(t[i], NULL);
                ck_assert_int_eq(c[i].failed, 0);
        }
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions WHERE user_id = 'lim' AND ended_at IS NULL"), 3);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions WHERE end_reason = 'evicted' AND ended_at = " 
                                 "1700000100"), 18);
        /* The three kept are the most recently active. */
        ck_assert_int_eq(sql_int("SELECT min(last_activity) FROM sessions WHERE user_id = 'lim' AND ended_at IS NULL"),
                         T0 + 60);
        for (int i = 0; i < 3; i++) {
                struct heard *x = &h[i];

                for (;;) {
                        ended[i] = 0;
                        for (int j = 0; j < x->n; j++)
                                ended[i] += x->kinds[j] == STORE_CHANGE_ENDED;
                        if (ended[i] >= 18)
                                break;
                        run_until(&loop, &x->n, x->n + 1);
                }
                ck_assert_int_eq(ended[i], 18);
        }
        for (int i = 0; i < 3; i++)
                store_close(c[i].s);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* The listener's connection killed: lost is told, the listener comes back
 * by itself (without blocking the loop) and tells again, and hears. */
START_TEST(test_listener_reconnects) {
        uv_loop_t loop;
        struct store *s1 = open_pg(), *s2 = open_pg();
        struct heard h = {0};
        struct store_session r = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        int64_t ra;

        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(store_changes_subscribe(s2, &loop, heard_cb, &h), 0);
        ck_assert_int_eq(sql_int("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 "WHERE query = 'LISTEN sessiond_changes'"),
                         1);
        run_until(&loop, &h.lost, 2); /* lost, then back */
        ck_assert_int_eq(insert_row(s1, &r, NULL, 0, &ra), 0);
        ck_assert_int_eq(store_commit(s1), 0);
        run_until(&loop, &h.n, 1);
        ck_assert_int_eq(h.rowids[0], ra);
        store_close(s1);
        store_close(s2);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* The writing connection killed between units: the next unit reconnects
 * (after the backoff); a unit whose transaction died with it fails. */
START_TEST(test_writer_reconnects) {
        struct store *s = open_pg();
        struct store_session a = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        struct store_session b = row_for("bbbbbbbbbbbbbbbbbbbbbb", 2, "bob", T0);
        int64_t ra, rb, n;
        int r = -EIO;

        ck_assert_int_eq(insert_row(s, &a, NULL, 0, &ra), 0);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0); /* runs the insert in a transaction */
        sql_exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sessiond'");
        ck_assert_int_eq(store_commit(s), -EIO);
        for (int i = 0; i < 50 && r == -EIO; i++) {
                usleep(100 * 1000);
                r = store_count_sessions(s, false, &n);
        }
        ck_assert_int_eq(r, 0);
        ck_assert_int_eq(n, 0);
        ck_assert_int_eq(insert_row(s, &b, NULL, 0, &rb), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions"), 1);
        store_close(s);
}
END_TEST

/* Runs pg_ctl stop or start on the test server (pg-server says how). */
static void pg_ctl(const char *action) {
        const char *data = getenv("SESSIOND_TEST_PG_DATA"), *bindir = getenv("SESSIOND_TEST_PG_BINDIR");
        const char *user = getenv("SESSIOND_TEST_PG_USER");
        char cmd[2048];

        snprintf(cmd, sizeof cmd, "%s%s%s '%s/pg_ctl' -D '%s' -w -m fast -l '%s/../restart.log' %s >/dev/null",
                 geteuid() == 0 ? "runuser -u '" : "", geteuid() == 0 ? user : "", geteuid() == 0 ? "' --" : "",
                 bindir, data, data, action);
        ck_assert_int_eq(system(cmd), 0);
}

/* PostgreSQL stopped and started again: writes and reads fail cleanly
 * meanwhile, the listener says changes were missed, and everything comes
 * back by itself; nothing committed is lost. */
START_TEST(test_server_restart) {
        uv_loop_t loop;
        struct store *s1, *s2;
        struct heard h = {0};
        struct store_session a = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        struct store_session b = row_for("bbbbbbbbbbbbbbbbbbbbbb", 2, "bob", T0);
        struct store_session c = row_for("cccccccccccccccccccccc", 3, "carol", T0);
        int64_t ra, rb, rc, n;
        bool leader = false;
        int r = -EIO;

        if (!getenv("SESSIOND_TEST_PG_DATA") || !getenv("SESSIOND_TEST_PG_BINDIR"))
                return; /* not under pg-server: cannot restart the server */
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        s1 = open_pg();
        s2 = open_pg();
        ck_assert_int_eq(store_changes_subscribe(s2, &loop, heard_cb, &h), 0);
        ck_assert_int_eq(store_leader_try(s1, &leader), 0);
        ck_assert(leader);
        ck_assert_int_eq(insert_row(s1, &a, NULL, 0, &ra), 0);
        ck_assert_int_eq(store_commit(s1), 0);
        run_until(&loop, &h.n, 1);

        pg_ctl("stop");
        ck_assert_int_eq(insert_row(s1, &b, NULL, 0, &rb), 0);
        ck_assert_int_eq(store_commit(s1), -EIO);
        ck_assert_int_eq(store_count_sessions(s1, false, &n), -EIO);
        ck_assert_int_lt(store_heartbeat(s1, "a", true, 1), 0);
        ck_assert_int_eq(store_leader_try(s1, &leader), 0);
        ck_assert(!leader);
        run_until(&loop, &h.lost, 1);

        pg_ctl("start");
        for (int i = 0; i < 100 && r < 0; i++) {
                usleep(100 * 1000);
                r = store_count_sessions(s1, false, &n);
        }
        ck_assert_int_eq(r, 0);
        ck_assert_int_eq(n, 1); /* a, not b */
        run_until(&loop, &h.lost, 2); /* listening again: what came meanwhile was missed */
        ck_assert_int_eq(insert_row(s1, &c, NULL, 0, &rc), 0);
        ck_assert_int_eq(store_commit(s1), 0);
        run_until(&loop, &h.n, 2);
        ck_assert_int_eq(h.rowids[1], rc);
        for (int i = 0; i < 100 && !leader; i++) {
                usleep(100 * 1000);
                (void)store_leader_try(s1, &leader);
        }
        ck_assert(leader);
        ck_assert_int_eq(store_heartbeat(s1, "a", true, 1), 0);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions"), 2);
        store_close(s1);
        store_close(s2);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

static int daemon_cb(const struct store_daemon_row *row, void *userdata) {
        char *out = userdata;

        snprintf(out + strlen(out), 128 - strlen(out), "%s%s;", row->daemon_id, row->leader ? "*" : "");
        return 0;
}

START_TEST(test_leader_and_heartbeats) {
        struct store *s1 = open_pg(), *s2 = open_pg();
        bool l1 = false, l2 = true;
        char seen[128] = "";

        ck_assert_int_eq(store_leader_try(s1, &l1), 0);
        ck_assert(l1);
        ck_assert_int_eq(store_leader_try(s2, &l2), 0);
        ck_assert(!l2);
        ck_assert_int_eq(store_leader_try(s1, &l1), 0); /* still */
        ck_assert(l1);
        ck_assert_int_eq(store_heartbeat(s1, "host-a:1", true, 1000), 0);
        ck_assert_int_eq(store_heartbeat(s2, "host-b:2", false, 2000), 0);
        ck_assert_int_eq(store_heartbeat(s1, "host-c:3", false, 10), 0);
        ck_assert_int_eq(store_daemons_each(s2, 500, daemon_cb, seen), 0);
        ck_assert_str_eq(seen, "host-b:2;host-a:1*;");
        ck_assert_int_eq(store_heartbeat(s1, "host-a:1", true, 3000), 0);
        seen[0] = '\0';
        ck_assert_int_eq(store_daemons_each(s1, 500, daemon_cb, seen), 0);
        ck_assert_str_eq(seen, "host-a:1*;host-b:2;");

        /* Released when its store closes. */
        store_close(s1);
        ck_assert_int_eq(store_leader_try(s2, &l2), 0);
        ck_assert(l2);

        /* The leader's connection lost: leadership lost, taken again later. */
        sql_exec("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted");
        ck_assert_int_eq(store_leader_try(s2, &l2), 0);
        ck_assert(!l2);
        for (int i = 0; i < 50 && !l2; i++) {
                usleep(100 * 1000);
                (void)store_leader_try(s2, &l2);
        }
        ck_assert(l2);
        store_close(s2);
}
END_TEST

static int count_cb(const struct store_audit_row *row, void *userdata) {
        (*(int *)userdata)++;
        return 0;
}

START_TEST(test_reader) {
        struct store *s = open_pg(), *r = NULL;
        struct store_audit_filter f = {.limit = 10};
        int64_t n;
        int rows = 0;

        ck_assert_int_eq(store_audit_insert(s, T0, "created", "u", NULL, NULL), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_reader_open(store_locator(s), &r), 0);
        ck_assert_int_eq(store_audit_each(r, &f, count_cb, &rows), 0);
        ck_assert_int_eq(rows, 1);
        ck_assert_int_eq(store_count_sessions(r, false, &n), 0);
        ck_assert_int_eq(n, 0);
        ck_assert_str_eq(store_name(r), store_name(s));
        store_close(r);
        store_close(s);
}
END_TEST

int main(void) {
        Suite *s;
        TCase *tc;

        if (!url()) {
                fprintf(stderr, "SESSIOND_TEST_POSTGRES_URL is not set (run under tests/pg/pg-server); skipping.\n");
                return 77;
        }
        s = suite_create("store-postgres");
        tc = tcase_create("store-postgres");
        log_setup();
        tcase_set_timeout(tc, 60);
        tcase_add_checked_fixture(tc, reset_database, NULL);
        tcase_add_test(tc, test_new_database);
        tcase_add_test(tc, test_password_redacted);
        tcase_add_test(tc, test_session_operations);
        tcase_add_test(tc, test_iteration_and_pages);
        tcase_add_test(tc, test_purge_and_audit);
        tcase_add_test(tc, test_rollback);
        tcase_add_test(tc, test_reopen_keeps_rows);
        tcase_add_test(tc, test_open_loads_live_sessions);
        tcase_add_test(tc, test_unit_of_work_async);
        tcase_add_test(tc, test_keys_unique_across_stores);
        tcase_add_test(tc, test_concurrent_creation);
        tcase_add_test(tc, test_key_check);
        tcase_add_test(tc, test_newer_and_foreign_refused);
        tcase_add_test(tc, test_activity_greatest);
        tcase_add_test(tc, test_notify);
        tcase_add_test(tc, test_user_limit_across_stores);
        tcase_add_test(tc, test_listener_reconnects);
        tcase_add_test(tc, test_writer_reconnects);
        tcase_add_test(tc, test_leader_and_heartbeats);
        tcase_add_test(tc, test_reader);
        tcase_add_test(tc, test_server_restart);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
