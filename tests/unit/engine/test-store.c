/* The SQLite store (daemon/store/sqlite.c): the backend-independent cases
 * of store-cases.h on a database file, then what only SQLite has: schema
 * and migrations, refusing corrupt, foreign and newer databases without
 * touching them, file modes, WAL, checkpoints and the maintenance off the
 * loop, a store in memory, and its own answer where the backends differ
 * (a missing row fails the unit, live rows are not found by token hash). */
#include <sqlite3.h>
#include <uv.h>

#include "store-cases.h"

static void exec_sql(const char *path, const char *sql) {
        sqlite3 *db;
        char *msg = NULL;

        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK, "%s: %s", sql, msg);
        sqlite3_close(db);
}

static int64_t query_int(const char *path, const char *sql) {
        sqlite3 *db;
        sqlite3_stmt *st;
        int64_t v = -1;

        ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return v;
}

static struct store *open_store(const char *path) {
        struct store_options o = {.path = path, .synchronous = "normal"};
        struct store *s = NULL;

        ck_assert_int_eq(store_open(&o, &s), 0);
        return s;
}

/* ---- the backend of store-cases.h: a file in the scratch folder ---------- */

static void backend_options(struct store_options *o) {
        o->path = path_in("sessions.db");
        o->synchronous = "normal";
}

static struct store *backend_open(void) {
        return open_store(path_in("sessions.db"));
}

static void backend_reset(void) {
        static const char *const names[] = {"sessions.db", "sessions.db-wal", "sessions.db-shm"};

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                ck_assert(unlink(path_in(names[i])) == 0 || errno == ENOENT);
}

static int64_t backend_count(const char *sql) {
        return query_int(path_in("sessions.db"), sql);
}

/* ---- SQLite's own cases ------------------------------------------------------ */

START_TEST(test_new_database) {
        char *dir = path_in("a/b"), *path = path_in("a/b/sessions.db");
        struct store *s;
        struct stat st;

        s = open_store(path);
        ck_assert_str_eq(store_name(s), path);
        ck_assert(!store_is_memory(s));
        store_close(s);

        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0600);
        ck_assert_int_eq(stat(dir, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0700);
        ck_assert_int_eq(query_int(path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
        ck_assert_int_eq(query_int(path, "SELECT count(*) FROM sqlite_master WHERE name IN "
                                         "('sessions', 'audit', 'sessions_ended', 'sessions_ended_token', "
                                         "'sessions_ended_user', 'audit_time')"),
                         6);
        /* Token hash, user and end time are indexed for ended rows only, so
         * that an insert writes no random index page (the id index is the
         * one unique index besides the row_key, and ids are time-ordered). */
        ck_assert_int_eq(query_int(path, "SELECT count(*) FROM sqlite_master WHERE name LIKE 'sessions_ended%' "
                                         "AND sql LIKE '%WHERE ended_at IS NOT NULL%'"),
                         3);
        ck_assert_int_eq(query_int(path, "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                         "AND tbl_name = 'sessions' AND sql IS NOT NULL"),
                         3);
        ck_assert_int_eq(query_int(path, "SELECT count(*) FROM pragma_index_list('sessions') WHERE \"unique\""), 1);
        ck_assert_int_eq(query_int(path, "PRAGMA journal_mode = wal") >= 0, 1);
        scratch_remove();
}
END_TEST

START_TEST(test_wal_and_synchronous) {
        char *path = path_in("sessions.db");
        struct store_options o = {.path = path, .synchronous = "full"};
        struct store *s = NULL;

        ck_assert_int_eq(store_open(&o, &s), 0);
        store_close(s);
        {
                sqlite3 *db;
                sqlite3_stmt *st;

                ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
                ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
                ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
                ck_assert_str_eq((const char *) sqlite3_column_text(st, 0), "wal");
                sqlite3_finalize(st);
                sqlite3_close(db);
        }
        o.synchronous = "sometimes";
        ck_assert_int_eq(store_open(&o, &s), -EINVAL);
        scratch_remove();
}
END_TEST

START_TEST(test_migration_from_version_0) {
        char *path = path_in("sessions.db");
        struct store *s;

        /* An empty SQLite database (as `sqlite3 file` leaves it): version 0. */
        exec_sql(path, "PRAGMA user_version = 0; CREATE TABLE t(x); DROP TABLE t;");
        ck_assert_int_eq(query_int(path, "PRAGMA user_version"), 0);
        s = open_store(path);
        store_close(s);
        ck_assert_int_eq(query_int(path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
        ck_assert_int_eq(query_int(path, "SELECT count(*) FROM sessions"), 0);
        /* Migrating again is a no-op. */
        s = open_store(path);
        store_close(s);
        ck_assert_int_eq(query_int(path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
        scratch_remove();
}
END_TEST

/* Schema 1 kept times in whole seconds; schema 2 adds the milliseconds
 * beside them. A version 1 database (schema 1 as it was made) is migrated
 * without rewriting its rows, which read as second.000, then written to the
 * ms. */
static const char schema_v1[] =
        "CREATE TABLE sessions (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, token_hash BLOB NOT NULL,"
        "  user_id TEXT NOT NULL, platform_id TEXT, created_at INTEGER NOT NULL, last_activity INTEGER NOT NULL,"
        "  renewed_at INTEGER NOT NULL, ended_at INTEGER, end_reason TEXT, fp_user_agent INTEGER, fp_ip INTEGER,"
        "  fp_accept_language INTEGER, fp_accept_encoding INTEGER, ip TEXT, user_agent TEXT, sync_data BLOB,"
        "  sync_version INTEGER NOT NULL DEFAULT 0, platform_switches TEXT);"
        "CREATE INDEX sessions_ended ON sessions (ended_at) WHERE ended_at IS NOT NULL;"
        "CREATE INDEX sessions_ended_token ON sessions (token_hash) WHERE ended_at IS NOT NULL;"
        "CREATE INDEX sessions_ended_user ON sessions (user_id) WHERE ended_at IS NOT NULL;"
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, time INTEGER NOT NULL, kind TEXT NOT NULL, user_id TEXT,"
        "  session_id TEXT, detail TEXT NOT NULL DEFAULT '{}');"
        "CREATE INDEX audit_time ON audit (time);"
        "INSERT INTO sessions (row, id, token_hash, user_id, created_at, last_activity, renewed_at) "
        "  VALUES (1, 'live', x'01', 'alice', 1700000000, 1700000010, 1700000005);"
        "INSERT INTO sessions (row, id, token_hash, user_id, created_at, last_activity, renewed_at, ended_at,"
        "  end_reason) VALUES (2, 'ended', x'02', 'bob', 1700000000, 1700000001, 1700000000, 1700000003, 'idle');"
        "PRAGMA user_version = 1;";

struct times_seen {
        int n;
        int64_t created_at, last_activity, renewed_at;
};

static int times_cb(const struct store_session *row, void *userdata) {
        struct times_seen *t = userdata;

        t->n++;
        t->created_at = row->created_at;
        t->last_activity = row->last_activity;
        t->renewed_at = row->renewed_at;
        return 0;
}

START_TEST(test_migration_to_milliseconds) {
        char *path = path_in("sessions.db");
        struct times_seen t = {0};
        struct store_options o = {.path = path, .synchronous = "normal", .load = times_cb, .load_userdata = &t};
        struct store *s = NULL;

        exec_sql(path, schema_v1);
        ck_assert_int_eq(store_open(&o, &s), 0);
        ck_assert_int_eq(query_int(path, "PRAGMA user_version"), 2);
        /* The live row, loaded after the migration, in ms. */
        ck_assert_int_eq(t.n, 1);
        ck_assert_int_eq(t.created_at, MS(1700000000));
        ck_assert_int_eq(t.last_activity, MS(1700000010));
        ck_assert_int_eq(t.renewed_at, MS(1700000005));
        /* The seconds are where they were; the ms columns read 0. */
        ck_assert_int_eq(query_int(path, "SELECT last_activity FROM sessions WHERE row = 1"), 1700000010);
        ck_assert_int_eq(query_int(path, "SELECT count(*) FROM sessions WHERE created_at_ms = 0 AND "
                                         "last_activity_ms = 0 AND renewed_at_ms = 0 AND ended_at_ms = 0"),
                         2);

        /* Writes to the ms: the seconds column keeps the second. */
        ck_assert_int_eq(store_session_set_activity(s, 1, MS(1700000012) + 345), 0);
        ck_assert_int_eq(store_session_set_renewed(s, 1, MS(1700000012) + 300, MS(1700000012) + 200), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(query_int(path, "SELECT last_activity FROM sessions WHERE row = 1"), 1700000012);
        ck_assert_int_eq(query_int(path, "SELECT last_activity_ms FROM sessions WHERE row = 1"), 345);
        ck_assert_int_eq(query_int(path, "SELECT renewed_at * 1000 + renewed_at_ms FROM sessions WHERE row = 1"),
                         MS(1700000012) + 300);
        t = (struct times_seen){0};
        ck_assert_int_eq(store_session_by_row_key(s, 1, times_cb, &t), 0);
        ck_assert_int_eq(t.last_activity, MS(1700000012) + 345); /* max() kept the later touch */
        ck_assert_int_eq(t.renewed_at, MS(1700000012) + 300);

        /* Purges compare the ends to the ms: the migrated end (3.000 s)
         * goes with a limit of 3.499 s, not 3.000 s; an end at 3.500 s
         * only with a limit after it. */
        ck_assert_int_eq(store_session_end(s, 1, MS(1700000003) + 500, "destroyed"), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_purge_sessions(s, MS(1700000003), 10), 0);
        ck_assert_int_eq(store_purge_sessions(s, MS(1700000003) + 499, 10), 1);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(query_int(path, "SELECT id = 'live' FROM sessions"), 1);
        ck_assert_int_eq(store_purge_sessions(s, MS(1700000003) + 501, 10), 1);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(query_int(path, "SELECT count(*) FROM sessions"), 0);
        store_close(s);
        scratch_remove();
}
END_TEST

/* A refused database must be left exactly as it was. */
static void assert_refused_unchanged(const char *path, int expected) {
        struct store_options o = {.path = path, .synchronous = "normal"};
        struct store *s = NULL;
        struct blob before = read_file(path), after;
        char *wal = NULL;

        ck_assert_int_ge(asprintf(&wal, "%s-wal", path), 0);
        ck_assert_int_eq(store_open(&o, &s), expected);
        ck_assert_ptr_null(s);
        after = read_file(path);
        ck_assert_msg(blob_equal(before, after), "the refused database %s was modified", path);
        ck_assert_int_eq(access(wal, F_OK), -1);
        free(before.data);
        free(after.data);
        free(wal);
}

START_TEST(test_garbage_refused) {
        char *path = path_in("sessions.db");
        char garbage[8192];

        for (size_t i = 0; i < sizeof garbage; i++)
                garbage[i] = (char) (i * 7 + 3);
        write_file(path, garbage, sizeof garbage, 0600);
        assert_refused_unchanged(path, -EBADMSG);
        /* A text file that happens to be short. */
        write_file(path, "hello\n", 6, 0600);
        assert_refused_unchanged(path, -EBADMSG);
        scratch_remove();
}
END_TEST

START_TEST(test_truncated_refused) {
        char *path = path_in("sessions.db");
        struct store *s = open_store(path);
        struct blob b;
        char id[TOKEN_ID_STRING_LEN + 1];
        int64_t row_key;

        for (int i = 0; i < 3000; i++) {
                struct store_session r = row_for(id, 0, "user", T0);
                snprintf(id, sizeof id, "%022d", i);
                memcpy(r.token_hash, &i, sizeof i);
                ck_assert_int_eq(insert_row(s, &r, "x", 1, &row_key), 0);
        }
        ck_assert_int_eq(store_commit(s), 0);
        store_close(s); /* checkpoints: everything is in the main file */

        b = read_file(path);
        ck_assert_uint_gt(b.size, 65536);
        write_file(path, b.data, b.size / 2, 0600);
        free(b.data);
        assert_refused_unchanged(path, -EBADMSG);
        /* Also while loading (the check runs at the same time). */
        {
                struct loading l = {.fail_at = -1};
                struct store_options o = {.path = path, .reserve = reserve_cb, .load = loading_cb, .load_userdata = &l};
                struct blob before = read_file(path), after;

                s = NULL;
                ck_assert_int_eq(store_open(&o, &s), -EBADMSG);
                ck_assert_ptr_null(s);
                after = read_file(path);
                ck_assert_uint_eq(after.size, before.size);
                ck_assert_int_eq(memcmp(after.data, before.data, after.size), 0);
                free(before.data);
                free(after.data);
        }
        scratch_remove();
}
END_TEST

START_TEST(test_newer_refused) {
        char *path = path_in("sessions.db");
        struct store *s = open_store(path);

        store_close(s);
        exec_sql(path, "PRAGMA journal_mode = DELETE; PRAGMA user_version = 99;");
        assert_refused_unchanged(path, -EPROTO);
        scratch_remove();
}
END_TEST

START_TEST(test_foreign_refused) {
        char *path = path_in("sessions.db");

        exec_sql(path, "CREATE TABLE customers (name TEXT); INSERT INTO customers VALUES ('x');");
        assert_refused_unchanged(path, -EBADMSG);
        scratch_remove();
}
END_TEST

START_TEST(test_not_a_file_refused) {
        char *path = path_in("dir.db");
        struct store_options o = {.path = path};
        struct store *s = NULL;

        ck_assert_int_eq(mkdir(path, 0700), 0);
        ck_assert_int_eq(store_open(&o, &s), -EBADMSG);
        scratch_remove();
}
END_TEST

static int64_t file_bytes(const char *path) {
        struct stat st;

        ck_assert_int_eq(stat(path, &st), 0);
        return (int64_t) st.st_size;
}

/* Deep cleanup's maintenance with the heavy part off the loop: done runs
 * on the loop, never before store_maintain_start() returns; a reader in
 * the way makes it -EBUSY (WAL kept) rather than a wait; once the reader
 * is gone the WAL is truncated and every row is still there. */
START_TEST(test_maintain_start) {
        char *path = path_in("sessions.db"), *wal = path_in("sessions.db-wal");
        uv_loop_t loop;
        struct store_options o = {.path = path, .synchronous = "normal", .loop = &loop};
        struct store *s = NULL;
        struct done d = {0};
        char id[TOKEN_ID_STRING_LEN + 1];
        sqlite3 *reader;
        int64_t row_key, n;

        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(store_open(&o, &s), 0);
        for (int i = 0; i < 50; i++) {
                struct store_session r = row_for(id, (uint8_t) i, "alice", T0);
                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(s, &r, NULL, 0, &row_key), 0);
        }
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_gt(file_bytes(wal), 0);

        ck_assert_int_eq(sqlite3_open_v2(path, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM sessions", NULL, NULL, NULL), SQLITE_OK);
        ck_assert_int_eq(store_maintain_start(s, true, done_cb, &d), 0);
        ck_assert_int_eq(d.calls, 0);
        run_until(&loop, &d.calls, 1);
        ck_assert_int_eq(d.result, -EBUSY);
        ck_assert_int_gt(file_bytes(wal), 0);

        ck_assert_int_eq(sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(reader);
        ck_assert_int_eq(store_maintain_start(s, false, done_cb, &d), 0);
        ck_assert_int_eq(d.calls, 1);
        run_until(&loop, &d.calls, 2);
        ck_assert_int_eq(d.result, 0);
        ck_assert_int_eq(file_bytes(wal), 0);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 50);

        /* Closed before done: done runs all the same. */
        ck_assert_int_eq(store_maintain_start(s, true, done_cb, &d), 0);
        store_close(s);
        run_until(&loop, &d.calls, 3);
        ck_assert_int_eq(d.result, 0);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
        ck_assert_int_eq(query_int(path, "SELECT count(*) FROM sessions"), 50);
        scratch_remove();
}
END_TEST

/* In memory there is no WAL: done still comes on the loop, with 0. */
START_TEST(test_maintain_start_memory) {
        uv_loop_t loop;
        struct store_options o = {.path = ":memory:", .synchronous = "normal", .loop = &loop};
        struct store *s = NULL;
        struct done d = {0};

        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(store_open(&o, &s), 0);
        ck_assert_int_eq(store_maintain_start(s, true, done_cb, &d), 0);
        ck_assert_int_eq(d.calls, 0);
        run_until(&loop, &d.calls, 1);
        ck_assert_int_eq(d.result, 0);
        store_close(s);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* A store in memory: nothing to load, and a unit rolled back is gone. */
START_TEST(test_memory_store) {
        struct store_session r = row_for("AAAAAAAAAAAAAAAAAAAAAA", 1, "alice", T0);
        struct loading l = {.reserved = -1, .fail_at = -1};
        struct store_options o = {.path = ":memory:", .reserve = reserve_cb, .load = loading_cb, .load_userdata = &l};
        struct store *s = NULL;
        int64_t row_key, n;

        ck_assert_int_eq(store_open(&o, &s), 0);
        ck_assert(store_is_memory(s));
        ck_assert_str_eq(store_name(s), ":memory:");
        ck_assert_int_eq(store_size(s), 0);
        ck_assert_int_eq(l.reserved, 0);
        ck_assert_int_eq(l.n, 0);
        ck_assert_int_eq(insert_row(s, &r, NULL, 0, &row_key), 0);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 1);
        store_rollback(s);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 0);
        store_close(s);
}
END_TEST

/* Where SQLite differs from a shared store (store.h): a live session is
 * not found by its token hash (the engine's memory holds every live one),
 * and a write to a row that is not there (or an end of a row ended
 * already) fails its unit, whatever the write. */
START_TEST(test_missing_rows_fail_unit) {
        struct store *s = open_store(":memory:");
        struct store_session a = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        struct capture c = {0};
        uint8_t hash[TOKEN_HASH_BYTES];
        int64_t ra;

        ck_assert_int_eq(insert_row(s, &a, NULL, 0, &ra), 0);
        ck_assert_int_eq(store_commit(s), 0);
        memset(hash, 1, sizeof hash);
        ck_assert_int_eq(store_session_by_hash(s, hash, capture_cb, &c), -ENOENT);

        ck_assert_int_eq(store_session_set_activity(s, 12345, T0), 0);
        ck_assert_int_eq(store_session_by_row_key(s, ra, capture_cb, &c), -ENOENT);
        ck_assert_int_eq(store_commit(s), -ENOENT);
        ck_assert_int_eq(store_session_end(s, ra + 1000, T0, "destroyed"), 0);
        ck_assert_int_eq(store_session_set_activity(s, ra, T0 + 30), 0);
        ck_assert_int_eq(store_commit(s), -ENOENT);
        c = (struct capture){0};
        ck_assert_int_eq(store_session_by_row_key(s, ra, capture_cb, &c), 0);
        ck_assert_int_eq(c.last_activity, T0); /* the touch was lost with its unit */

        ck_assert_int_eq(store_session_end(s, ra, T0 + 40, "rotated"), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_session_end(s, ra, T0 + 50, "destroyed"), 0); /* already ended */
        ck_assert_int_eq(store_commit(s), -ENOENT);
        c = (struct capture){0};
        ck_assert_int_eq(store_session_by_hash(s, hash, capture_cb, &c), 0);
        ck_assert_int_eq(c.ended_at, T0 + 40);
        ck_assert_str_eq(c.reason, "rotated");
        store_close(s);
}
END_TEST

START_TEST(test_checkpoint_thread) {
        char *path = path_in("sessions.db"), *wal = path_in("sessions.db-wal");
        struct store *s = open_store(path);
        char id[TOKEN_ID_STRING_LEN + 1], sync[1000];
        struct stat st;
        int64_t row_key;
        int n = 0;

        memset(sync, 's', sizeof sync);
        ck_assert_uint_eq(store_checkpoint_runs(s), 0);
        /* Commits until the WAL passes the thread's threshold, then more
         * until the thread has run (it takes a moment to start). */
        for (int round = 0; store_checkpoint_runs(s) == 0; round++) {
                ck_assert_int_lt(round, 100000);
                for (int i = 0; i < 20; i++, n++) {
                        struct store_session r = row_for(id, 0, "user", T0);
                        snprintf(id, sizeof id, "%022d", n);
                        memcpy(r.token_hash, &n, sizeof n);
                        ck_assert_int_eq(insert_row(s, &r, sync, sizeof sync, &row_key), 0);
                }
                ck_assert_int_eq(store_commit(s), 0);
                if (round % 100 == 99)
                        usleep(1000);
        }
        /* The database file got the pages; the WAL was not truncated by
         * the loop's connection. */
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_int_gt(st.st_size, 1024 * 1024);
        ck_assert_int_eq(stat(wal, &st), 0);
        store_close(s);
        ck_assert_int_eq(query_int(path, "SELECT count(*) FROM sessions"), n);
        scratch_remove();
}
END_TEST

int main(void) {
        Suite *s = suite_create("store");
        TCase *tc = tcase_create("store");

        log_setup();
        tcase_set_timeout(tc, 60);
        tcase_add_checked_fixture(tc, NULL, scratch_remove);
        tcase_add_test(tc, test_new_database);
        tcase_add_test(tc, test_wal_and_synchronous);
        tcase_add_test(tc, test_migration_from_version_0);
        tcase_add_test(tc, test_migration_to_milliseconds);
        tcase_add_test(tc, test_garbage_refused);
        tcase_add_test(tc, test_truncated_refused);
        tcase_add_test(tc, test_newer_refused);
        tcase_add_test(tc, test_foreign_refused);
        tcase_add_test(tc, test_not_a_file_refused);
        tcase_add_test(tc, test_memory_store);
        tcase_add_test(tc, test_missing_rows_fail_unit);
        tcase_add_test(tc, test_checkpoint_thread);
        tcase_add_test(tc, test_maintain_start);
        tcase_add_test(tc, test_maintain_start_memory);
        store_cases_add(tc);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
