/* The PostgreSQL store (daemon/store/postgres.c) against a real server:
 * SESSIOND_TEST_POSTGRES_URL, set by tests/pg/pg-server (exit 77, skipped,
 * without it). The backend-independent cases of store-cases.h (the same
 * suite SQLite runs), then what only a shared store has: keys unique
 * across stores on one database, the key check, a newer schema refused,
 * GREATEST on touches, live rows found by token hash and writes to missing
 * rows that are moot, NOTIFY heard by another store and not by its own,
 * the leader's lock, heartbeats, lost connections, a server restart. Every
 * test starts on an empty database (public schema dropped and made again). */
#include <libpq-fe.h>
#include <pthread.h>
#include <uv.h>

#include "store-cases.h"

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

/* ---- the backend of store-cases.h ------------------------------------------ */

static void backend_options(struct store_options *o) {
        o->postgres_url = url();
        o->key_check = "check-1";
        o->synchronous = "normal";
}

static struct store *backend_open(void) {
        return open_pg();
}

static void backend_reset(void) {
        reset_database();
}

static int64_t backend_count(const char *sql) {
        return sql_int(sql);
}

/* ---- PostgreSQL's own cases ---------------------------------------------- */

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
        ck_assert_int_eq(store_size(s), 0); /* not measured yet: the loop never measures */
        ck_assert_int_eq(store_fleet_refresh(s, 0), 0);
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
         * store_fleet_refresh() used (it is called without the store's lock). */
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

/* Where a shared store differs from SQLite (store.h): live rows are found
 * by token hash (memory is a cache of the fleet's sessions), and a touch or
 * an end of a row that is not there, or an end of a row ended already,
 * is moot (another daemon's end or the leader's purge make it so:
 * postgres.c, op_result): the rest of the unit stands. Other writes to a
 * missing row still fail their unit (store-cases.h). */
START_TEST(test_missing_rows_moot) {
        struct store *s = open_pg();
        struct store_session a = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        struct store_session x = row_for("xxxxxxxxxxxxxxxxxxxxxx", 9, "ended-twice", T0);
        struct capture c = {0};
        uint8_t hash[TOKEN_HASH_BYTES];
        int64_t ra, rx;

        ck_assert_int_eq(insert_row(s, &a, NULL, 0, &ra), 0);
        ck_assert_int_eq(store_commit(s), 0);
        memset(hash, 1, sizeof hash);
        ck_assert_int_eq(store_session_by_hash(s, hash, capture_cb, &c), 0);
        ck_assert_int_eq(c.row_key, ra);
        ck_assert_int_eq(c.ended_at, 0);

        ck_assert_int_eq(store_session_set_activity(s, 12345678, T0), 0);
        ck_assert_int_eq(store_session_end(s, 12345679, T0, "destroyed"), 0);
        ck_assert_int_eq(store_session_set_activity(s, ra, T0 + 30), 0);
        ck_assert_int_eq(store_commit(s), 0);
        c = (struct capture){0};
        ck_assert_int_eq(store_session_by_row_key(s, ra, capture_cb, &c), 0);
        ck_assert_int_eq(c.last_activity, T0 + 30);

        ck_assert_int_eq(insert_row(s, &x, NULL, 0, &rx), 0);
        ck_assert_int_eq(store_session_end(s, rx, T0 + 31, "destroyed"), 0);
        ck_assert_int_eq(store_session_end(s, rx, T0 + 32, "evicted"), 0); /* ended already: the first end stands */
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_session_by_row_key(s, rx, capture_cb, &c), 0);
        ck_assert_int_eq(c.ended_at, T0 + 31);
        ck_assert_int_eq(store_session_end(s, rx, T0 + 50, "destroyed"), 0); /* in a later unit: moot too */
        ck_assert_int_eq(store_commit(s), 0);
        c = (struct capture){0};
        ck_assert_int_eq(store_session_by_row_key(s, rx, capture_cb, &c), 0);
        ck_assert_int_eq(c.ended_at, T0 + 31);
        ck_assert_str_eq(c.reason, "destroyed");
        store_close(s);
}
END_TEST

static int cmp_int64(const void *a, const void *b) {
        int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;

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
        qsort(keys, (size_t) n, sizeof keys[0], cmp_int64);
        for (int i = 1; i < n; i++)
                ck_assert_int_ne(keys[i - 1], keys[i]);
        ck_assert_int_gt(keys[0], 0);

        for (int i = 0; i < 50; i++) {
                struct store_session r = row_for(id, (uint8_t) i, "u", T0);
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

/* The writer fetches the next block of keys after a commit, so the loop
 * moves on to it without a round trip (nor waiting for the unit in flight). */
START_TEST(test_keys_fetched_ahead_by_the_writer) {
        struct store *s = open_pg();
        struct store_session r = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "u", T0);
        int64_t first, k;

        ck_assert_int_eq(insert_row(s, &r, NULL, 0, &first), 0); /* the first block: fetched at once */
        ck_assert_int_eq(sql_int("SELECT last_value FROM sessiond_session_keys"), first);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(sql_int("SELECT last_value FROM sessiond_session_keys"), first + 1000);
        for (int i = 1; i < 1000; i++) {
                ck_assert_int_eq(store_allocate_key(s, &k), 0);
                ck_assert_int_eq(k, first + i);
        }
        ck_assert_int_eq(store_allocate_key(s, &k), 0); /* the block fetched ahead */
        ck_assert_int_eq(k, first + 1000);
        ck_assert_int_eq(sql_int("SELECT last_value FROM sessiond_session_keys"), first + 1000);
        r = row_for("bbbbbbbbbbbbbbbbbbbbbb", 2, "u", T0);
        r.row_key = k;
        ck_assert_int_eq(store_session_insert(s, &r, NULL, 0), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(sql_int("SELECT last_value FROM sessiond_session_keys"), first + 2000);
        store_close(s);
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
        int64_t row_key;

        ck_assert_int_eq(insert_row(s1, &r, NULL, 0, &row_key), 0);
        ck_assert_int_eq(store_commit(s1), 0);
        ck_assert_int_eq(store_session_set_activity(s1, row_key, T0 + 50), 0);
        ck_assert_int_eq(store_commit(s1), 0);
        ck_assert_int_eq(store_session_set_activity(s2, row_key, T0 + 10), 0);
        ck_assert_int_eq(store_commit(s2), 0);
        ck_assert_int_eq(store_session_set_renewed(s2, row_key, T0 + 20, T0 + 20), 0);
        ck_assert_int_eq(store_commit(s2), 0);
        ck_assert_int_eq(store_session_by_row_key(s2, row_key, capture_cb, &c), 0);
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
        int64_t row_keys[MAX_HEARD];
};

static void heard_cb(const struct store_change *c, bool lost, void *userdata) {
        struct heard *h = userdata;

        if (lost) {
                h->lost++;
                return;
        }
        ck_assert_int_lt(h->n, MAX_HEARD);
        h->kinds[h->n] = c->kind;
        h->row_keys[h->n++] = c->row_key;
}

/* Let the loop run a little (what might still come, comes). */
static void settle(uv_loop_t *loop, int ms) {
        uv_timer_t t;

        uv_timer_init(loop, &t);
        uv_timer_start(&t, never_cb, (uint64_t) ms, 0);
        uv_run(loop, UV_RUN_ONCE);
        uv_close((uv_handle_t *) &t, NULL);
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
        ck_assert_int_eq(h2.row_keys[0], ra);
        ck_assert_int_eq(h2.kinds[1], STORE_CHANGE_SYNC);
        ck_assert_int_eq(h2.row_keys[1], ra);

        /* A rotation on the other store: the new row created, the old ended. */
        memset(hash, 7, sizeof hash);
        ck_assert_int_eq(store_allocate_key(s2, &rb), 0);
        ck_assert_int_eq(store_session_copy(s2, ra, rb, "bbbbbbbbbbbbbbbbbbbbbb", hash, T0 + 2), 0);
        ck_assert_int_eq(store_session_end(s2, ra, T0 + 2, "rotated"), 0);
        ck_assert_int_eq(store_commit(s2), 0);
        run_until(&loop, &h1.n, 2);
        ck_assert_int_eq(h1.kinds[0], STORE_CHANGE_CREATED);
        ck_assert_int_eq(h1.row_keys[0], rb);
        ck_assert_int_eq(h1.kinds[1], STORE_CHANGE_ENDED);
        ck_assert_int_eq(h1.row_keys[1], ra);

        /* A failed unit says nothing. */
        ck_assert_int_eq(store_session_set_sync(s1, rb, 2, "y", 1), 0);
        ck_assert_int_eq(store_session_set_platform(s1, 987654321, "x", "[]"), 0);
        ck_assert_int_eq(store_commit(s1), -ENOENT);

        /* Many changes: several payloads, every one heard, in order. */
        for (int i = 0; i < 1500; i++) {
                struct store_session x = row_for(id, (uint8_t) i, "many", T0);

                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(s1, &x, NULL, 0, &k), 0);
        }
        ck_assert_int_eq(store_commit(s1), 0);
        run_until(&loop, &h2.n, 2 + 1500);
        settle(&loop, 300);
        ck_assert_int_eq(h2.n, 2 + 1500);
        ck_assert_int_eq(h2.row_keys[2 + 1499], k);
        for (int i = 3; i < h2.n; i++)
                ck_assert_int_lt(h2.row_keys[i - 1], h2.row_keys[i]);
        /* Neither heard its own. */
        ck_assert_int_eq(h1.n, 2);
        ck_assert_int_eq(h1.lost + h2.lost, 0);
        ck_assert_int_eq(store_changes_subscribe(s1, &loop, heard_cb, &h1), -EBUSY);

        /* Two daemons write one session's sync state from the version
         * both read (2): the first commit wins, the second is not applied
         * and its unit's other writes stand. */
        {
                int won = -1, lost = -1, n2 = h2.n;
                int64_t version;
                char *data;
                size_t size;

                ck_assert_int_eq(store_session_set_sync(s1, rb, 2, "base", 4), 0);
                ck_assert_int_eq(store_commit(s1), 0);
                run_until(&loop, &h2.n, n2 + 1);
                ck_assert_int_eq(store_session_cas_sync(s1, rb, 2, "one", 3, &won), 0);
                ck_assert_int_eq(store_session_cas_sync(s2, rb, 2, "two", 3, &lost), 0);
                ck_assert_int_eq(store_session_set_activity(s2, rb, T0 + 9), 0);
                ck_assert_int_eq(store_commit(s1), 0);
                ck_assert_int_eq(store_commit(s2), 0);
                ck_assert_int_eq(won, 1);
                ck_assert_int_eq(lost, 0);
                ck_assert_int_eq(store_session_get_sync(s2, rb, &version, &data, &size), 0);
                ck_assert_int_eq(version, 3);
                ck_assert_int_eq(memcmp(data, "one", 3), 0);
                free(data);
                run_until(&loop, &h2.n, n2 + 2); /* the winner's write announced */
                ck_assert_int_eq(h2.kinds[n2 + 1], STORE_CHANGE_SYNC);
        }

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
                struct store_session r = row_for(id, (uint8_t) i, "lim", T0 + 10 * i + c->index);
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
                                 "1700000100"),
                         18);
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
        ck_assert_int_eq(h.row_keys[0], ra);
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

/* Allocations that fail on demand: the executable is linked with
 * -Wl,--wrap=realloc (meson.build), so the store's reallocations of at
 * least fail_realloc_from bytes fail. */
static size_t fail_realloc_from = SIZE_MAX;

void *__real_realloc(void *ptr, size_t size);
void *__wrap_realloc(void *ptr, size_t size);

void *__wrap_realloc(void *ptr, size_t size) {
        if (size >= fail_realloc_from) {
                errno = ENOMEM;
                return NULL;
        }
        return __real_realloc(ptr, size);
}

/* A unit that fails on this side while its pipeline is being sent (out of
 * memory for the array literal of its inserts, BEGIN and the users' lock
 * already queued) commits nothing and leaves the writing connection
 * usable: the next unit commits, reads work. */
START_TEST(test_unit_failing_while_sent) {
        struct store *s = open_pg();
        struct store_session a = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        struct store_session b = row_for("bbbbbbbbbbbbbbbbbbbbbb", 2, "bob", T0);
        static uint8_t blob[1 << 20];
        int64_t ra, rb, n;

        ck_assert_int_eq(insert_row(s, &a, blob, sizeof blob, &ra), 0);
        fail_realloc_from = sizeof blob; /* the sync data's literal is twice as long */
        ck_assert_int_eq(store_commit(s), -ENOMEM);
        fail_realloc_from = SIZE_MAX;
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions"), 0);
        ck_assert_int_eq(insert_row(s, &b, NULL, 0, &rb), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 1);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions"), 1);
        store_close(s);
}
END_TEST

/* Large sync data in a unit sent in one pipeline (its array literal is
 * twice as long, and libpq flushes the pipeline while it is queued), and
 * texts an array literal must quote (spaces around, a newline, a tab),
 * come back exactly. */
START_TEST(test_unit_large_sync_exact) {
        struct store *s = open_pg();
        struct store_session a = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, " alice\n", T0);
        struct store_session b = row_for("bbbbbbbbbbbbbbbbbbbbbb", 2, "bob", T0);
        static uint8_t blob[3 << 20];
        struct capture c = {0};
        int64_t ra, rb, version;
        char *data = NULL;
        size_t size = 0;

        for (size_t i = 0; i < sizeof blob; i++)
                blob[i] = (uint8_t) (i * 7 + i / 256);
        a.user_agent = "\tMozilla \"x\" ";
        ck_assert_int_eq(insert_row(s, &a, blob, sizeof blob, &ra), 0);
        ck_assert_int_eq(insert_row(s, &b, blob, 1, &rb), 0);
        ck_assert_int_eq(store_audit_insert(s, T0, "created", " alice\n", NULL, "{}"), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_session_get_sync(s, ra, &version, &data, &size), 0);
        ck_assert_uint_eq(size, sizeof blob);
        ck_assert_int_eq(memcmp(data, blob, sizeof blob), 0);
        free(data);
        ck_assert_int_eq(store_session_get_sync(s, rb, &version, &data, &size), 0);
        ck_assert_uint_eq(size, 1);
        ck_assert_int_eq(data[0], (char) blob[0]);
        free(data);
        ck_assert_int_eq(store_session_by_row_key(s, ra, capture_cb, &c), 0);
        ck_assert_str_eq(c.user, " alice\n");
        ck_assert_int_eq(sql_int("SELECT count(*) FROM sessions WHERE user_agent = E'\\tMozilla \"x\" '"), 1);
        ck_assert_int_eq(sql_int("SELECT count(*) FROM audit WHERE user_id = E' alice\\n'"), 1);
        store_close(s);
}
END_TEST

/* Runs pg_ctl stop or start on the test server (pg-server says how). */
static void pg_ctl(const char *action) {
        const char *data = getenv("SESSIOND_TEST_PG_DATA"), *bindir = getenv("SESSIOND_TEST_PG_BINDIR");
        const char *user = getenv("SESSIOND_TEST_PG_USER");
        char cmd[2048];

        snprintf(cmd, sizeof cmd, "%s%s%s '%s/pg_ctl' -D '%s' -w -m fast -l '%s/../restart.log' %s >/dev/null",
                 geteuid() == 0 ? "runuser -u '" : "", geteuid() == 0 ? user : "", geteuid() == 0 ? "' --" : "", bindir,
                 data, data, action);
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
        ck_assert_int_eq(n, 1);       /* a, not b */
        run_until(&loop, &h.lost, 2); /* listening again: what came meanwhile was missed */
        ck_assert_int_eq(insert_row(s1, &c, NULL, 0, &rc), 0);
        ck_assert_int_eq(store_commit(s1), 0);
        run_until(&loop, &h.n, 2);
        ck_assert_int_eq(h.row_keys[1], rc);
        for (int i = 0; i < 100 && !leader; i++) {
                usleep(100 * 1000);
                (void) store_leader_try(s1, &leader);
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
        /* The daemons seen are read by a refresh (a worker's), not on the loop. */
        ck_assert_int_eq(store_daemons_each(s2, 500, daemon_cb, seen), -EAGAIN);
        ck_assert_int_eq(store_fleet_refresh(s2, 500), 0);
        ck_assert_int_eq(store_daemons_each(s2, 500, daemon_cb, seen), 0);
        ck_assert_str_eq(seen, "host-b:2;host-a:1*;");
        ck_assert_int_eq(store_heartbeat(s1, "host-a:1", true, 3000), 0);
        seen[0] = '\0';
        ck_assert_int_eq(store_fleet_refresh(s1, 500), 0);
        ck_assert_int_eq(store_daemons_each(s1, 500, daemon_cb, seen), 0);
        ck_assert_str_eq(seen, "host-a:1*;host-b:2;");
        seen[0] = '\0';
        ck_assert_int_eq(store_daemons_each(s1, 2500, daemon_cb, seen), 0); /* the window is the caller's */
        ck_assert_str_eq(seen, "host-a:1*;");

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
                (void) store_leader_try(s2, &l2);
        }
        ck_assert(l2);
        store_close(s2);
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
        tcase_add_test(tc, test_missing_rows_moot);
        tcase_add_test(tc, test_keys_unique_across_stores);
        tcase_add_test(tc, test_keys_fetched_ahead_by_the_writer);
        tcase_add_test(tc, test_concurrent_creation);
        tcase_add_test(tc, test_key_check);
        tcase_add_test(tc, test_newer_and_foreign_refused);
        tcase_add_test(tc, test_activity_greatest);
        tcase_add_test(tc, test_notify);
        tcase_add_test(tc, test_user_limit_across_stores);
        tcase_add_test(tc, test_listener_reconnects);
        tcase_add_test(tc, test_writer_reconnects);
        tcase_add_test(tc, test_unit_failing_while_sent);
        tcase_add_test(tc, test_unit_large_sync_exact);
        tcase_add_test(tc, test_leader_and_heartbeats);
        tcase_add_test(tc, test_server_restart);
        store_cases_add(tc);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
