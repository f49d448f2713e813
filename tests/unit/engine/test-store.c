/* The SQLite store (daemon/store.c): schema and migrations, reopening,
 * refusing corrupt, foreign and newer databases without touching them,
 * file modes, and every session and audit operation. */
#include <sqlite3.h>
#include <uv.h>

#include "helpers.h"

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

/* Inserts r under a key the store gives (written to *rowid and r->rowid). */
static int insert_row(struct store *s, struct store_session *r, const void *data, size_t size, int64_t *rowid) {
        int res = store_allocate_key(s, rowid);

        if (res < 0)
                return res;
        r->rowid = *rowid;
        return store_session_insert(s, r, data, size);
}

static struct store *open_store(const char *path) {
        struct store_options o = {.path = path, .synchronous = "normal"};
        struct store *s = NULL;

        ck_assert_int_eq(store_open(&o, &s), 0);
        return s;
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
         * one unique index besides the rowid, and ids are time-ordered). */
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
                ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
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
        ck_assert_int_eq(store_session_by_rowid(s, 1, times_cb, &t), 0);
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

START_TEST(test_reopen_keeps_rows) {
        char *path = path_in("sessions.db");
        struct store_session r = row_for("AAAAAAAAAAAAAAAAAAAAAA", 1, "alice", T0);
        struct store *s;
        int64_t rowid = 0, version = 0;
        char *data = NULL;
        size_t size = 0;

        s = open_store(path);
        ck_assert(!store_has_pending(s));
        ck_assert_int_eq(insert_row(s, &r, "state", 5, &rowid), 0);
        ck_assert_int_gt(rowid, 0);
        ck_assert(store_has_pending(s));
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert(!store_has_pending(s));
        store_close(s);

        s = open_store(path);
        ck_assert_int_eq(store_session_get_sync(s, rowid, &version, &data, &size), 0);
        ck_assert_uint_eq(size, 5);
        ck_assert_str_eq(data, "state");
        free(data);
        store_close(s);
        ck_assert_int_eq(query_int(path, "SELECT count(*) FROM sessions WHERE user_id = 'alice'"), 1);
        scratch_remove();
}
END_TEST

/* Opening hands the live sessions to the loader (after telling how many),
 * in row order and light; a failing loader fails the open. */
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
        char *path = path_in("sessions.db");
        struct store *s = open_store(path);
        struct loading l = {.reserved = -1, .fail_at = -1};
        struct store_options o = {.path = path, .reserve = reserve_cb, .load = loading_cb, .load_userdata = &l};
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

        /* A store in memory (and a new file) has nothing to load. */
        l = (struct loading){.reserved = -1, .fail_at = -1};
        o.path = ":memory:";
        ck_assert_int_eq(store_open(&o, &s), 0);
        ck_assert_int_eq(l.reserved, 0);
        ck_assert_int_eq(l.n, 0);
        store_close(s);
        scratch_remove();
}
END_TEST

START_TEST(test_rollback) {
        struct store_session r = row_for("AAAAAAAAAAAAAAAAAAAAAA", 1, "alice", T0);
        struct store *s = open_store(":memory:");
        int64_t rowid, n;

        ck_assert(store_is_memory(s));
        ck_assert_int_eq(insert_row(s, &r, NULL, 0, &rowid), 0);
        store_rollback(s);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 0);
        /* A read runs the open unit first; rolling back drops what it ran. */
        ck_assert_int_eq(insert_row(s, &r, NULL, 0, &rowid), 0);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 1);
        store_rollback(s);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 0);
        /* Rolling back an empty unit is harmless. */
        store_rollback(s);
        store_close(s);
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
                garbage[i] = (char)(i * 7 + 3);
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
        int64_t rowid;

        for (int i = 0; i < 3000; i++) {
                struct store_session r = row_for(id, 0, "user", T0);
                snprintf(id, sizeof id, "%022d", i);
                memcpy(r.token_hash, &i, sizeof i);
                ck_assert_int_eq(insert_row(s, &r, "x", 1, &rowid), 0);
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
                struct store_options o = {.path = path, .reserve = reserve_cb, .load = loading_cb,
                                          .load_userdata = &l};
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

struct capture {
        int n;
        int64_t rowid;
        char id[64], user[64], reason[32], ip[64];
        int64_t ended_at, last_activity, renewed_at;
        uint64_t fp_ua, fp_ip;
};

static int capture_cb(const struct store_session *row, void *userdata) {
        struct capture *c = userdata;

        c->n++;
        c->rowid = row->rowid;
        snprintf(c->id, sizeof c->id, "%s", row->id);
        snprintf(c->user, sizeof c->user, "%s", row->user_id);
        snprintf(c->reason, sizeof c->reason, "%s", row->end_reason ? row->end_reason : "");
        snprintf(c->ip, sizeof c->ip, "%s", row->ip ? row->ip : "");
        c->ended_at = row->ended_at;
        c->last_activity = row->last_activity;
        c->renewed_at = row->renewed_at;
        c->fp_ua = row->fp_user_agent;
        c->fp_ip = row->fp_ip;
        return 0;
}

START_TEST(test_session_operations) {
        struct store *s = open_store(":memory:");
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

        /* By token hash, only ended rows are found (live ones are in the
         * engine's memory). */
        memset(hash, 1, sizeof hash);
        ck_assert_int_eq(store_session_by_hash(s, hash, capture_cb, &c), -ENOENT);
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
         * first read that runs it. */
        ck_assert_int_eq(store_session_set_activity(s, 12345, T0), 0);
        ck_assert_int_eq(store_session_by_rowid(s, ra, capture_cb, &c), -ENOENT);
        ck_assert_int_eq(store_commit(s), -ENOENT);

        ck_assert_int_eq(store_session_get_switches(s, ra, &text), 0);
        ck_assert_str_eq(text, "[]");
        free(text);
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
        ck_assert_int_eq(store_session_end(s, ra, T0 + 50, "destroyed"), 0); /* already ended */
        ck_assert_int_eq(store_commit(s), -ENOENT);
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
        ck_assert_int_eq(c.n, 1); /* the ended one; its live copy is the engine's to list */
        ck_assert_int_eq(c.rowid, ra);
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

START_TEST(test_iteration_stops) {
        struct store *s = open_store(":memory:");
        struct store_filter all = {0};
        char id[TOKEN_ID_STRING_LEN + 1];
        int64_t rowid;
        int n = 0;

        for (int i = 0; i < 3; i++) {
                struct store_session r = row_for(id, (uint8_t)i, "u", T0);
                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(s, &r, NULL, 0, &rowid), 0);
        }
        ck_assert_int_eq(store_sessions_each(s, &all, stop_cb, &n), 7);
        ck_assert_int_eq(n, 1);
        store_close(s);
}
END_TEST

START_TEST(test_purge_and_audit) {
        struct store *s = open_store(":memory:");
        char id[TOKEN_ID_STRING_LEN + 1];
        int64_t rowid, n;

        for (int i = 0; i < 10; i++) {
                struct store_session r = row_for(id, (uint8_t)i, "u", T0);
                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(s, &r, NULL, 0, &rowid), 0);
                if (i < 6) /* six ended, at T0 + i */
                        ck_assert_int_eq(store_session_end(s, rowid, T0 + i, "idle"), 0);
                ck_assert_int_eq(store_audit_insert(s, T0 + i, "created", "u", id, "{}"), 0);
        }
        ck_assert_int_eq(store_count_sessions(s, true, &n), 0);
        ck_assert_int_eq(n, 6);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 4);
        /* Ended before T0 + 4: four of them, in batches of three. */
        ck_assert_int_eq(store_purge_sessions(s, T0 + 4, 3), 3);
        ck_assert_int_eq(store_purge_sessions(s, T0 + 4, 3), 1);
        ck_assert_int_eq(store_purge_sessions(s, T0 + 4, 3), 0);
        ck_assert_int_eq(store_count_sessions(s, true, &n), 0);
        ck_assert_int_eq(n, 2);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 4); /* live ones are never purged */
        ck_assert_int_eq(store_purge_audit(s, T0 + 5, 100), 5);
        ck_assert_int_eq(store_purge_audit(s, T0 + 5, 100), 0);
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

static void audit_expect(const int64_t *times, const char *const *users, int n_rows,
                         const struct store_audit_filter *f, struct audit_got *ret) {
        ret->n = 0;
        for (int id = 1; id <= n_rows && ret->n < (int)f->limit; id++) {
                int64_t tm = times[id - 1];

                if (tm < f->since || tm < f->after_time || (tm == f->after_time && id <= f->after_id))
                        continue;
                if (f->user_id && strcmp(f->user_id, users[id - 1]) != 0)
                        continue;
                ret->id[ret->n++] = id;
        }
}

START_TEST(test_audit_after_cursor) {
        struct store *s = open_store(":memory:");
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
        for (size_t a = 0; a < sizeof sinces / sizeof sinces[0]; a++)
                for (size_t b = 0; b < sizeof cursors / sizeof cursors[0]; b++)
                        for (int u = 0; u < 2; u++) {
                                struct store_audit_filter f = {
                                        .user_id = u ? "b" : NULL, .since = sinces[a], .limit = u ? 64 : 4,
                                        .ascending = true, .after_time = cursors[b][0], .after_id = cursors[b][1]};
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
        char *path = path_in("sessions.db");
        struct store *s = open_store(path);
        struct store_session r = row_for("aaaaaaaaaaaaaaaaaaaaaa", 1, "alice", T0);
        struct store_maintenance m;
        int64_t rowid;

        ck_assert_int_eq(insert_row(s, &r, NULL, 0, &rowid), 0);
        ck_assert_int_eq(store_commit(s), 0); /* maintenance runs between units */
        ck_assert_int_eq(store_maintain(s, &m), 0);
        ck_assert(m.ok);
        ck_assert_str_eq(m.message, "ok");
        ck_assert_int_eq(store_set_synchronous(s, "full"), 0);
        ck_assert_int_eq(store_set_synchronous(s, "bogus"), -EINVAL);
        store_close(s);
        scratch_remove();
}
END_TEST

/* The unit of work on the writer thread: submit hands it over and the loop
 * records the next one; a read waits for the unit in flight and sees every
 * write made before it; the callback runs on the loop with the result; a
 * unit with a failing write is lost whole; store_wait() collects at once. */
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

/* The store's wake-up handle does not keep a loop alive by itself (the
 * daemon's server does): a timer stands in for it. */
static void run_until(uv_loop_t *loop, const struct done *d, int calls) {
        uv_timer_t t;

        uv_timer_init(loop, &t);
        uv_timer_start(&t, never_cb, 60000, 0);
        while (d->calls < calls)
                uv_run(loop, UV_RUN_ONCE);
        uv_close((uv_handle_t *)&t, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
}

START_TEST(test_unit_of_work_async) {
        char *path = path_in("sessions.db");
        uv_loop_t loop;
        struct store_options o = {.path = path, .synchronous = "normal", .loop = &loop};
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
        run_until(&loop, &d, 1);
        ck_assert_int_eq(d.result, 0);
        ck_assert(!store_busy(s));

        /* b's unit also ends a row that is not there: lost whole. */
        ck_assert_int_eq(store_session_end(s, ra + 1000, T0, "destroyed"), 0);
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        run_until(&loop, &d, 2);
        ck_assert_int_eq(d.result, -ENOENT);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 1);

        ck_assert_int_eq(insert_row(s, &c, NULL, 0, &rc), 0);
        ck_assert_int_gt(rc, rb); /* keys are never given twice */
        ck_assert_int_eq(store_submit(s, done_cb, &d), 0);
        store_wait(s);
        ck_assert_int_eq(d.calls, 3);
        ck_assert_int_eq(d.result, 0);
        store_close(s);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);

        ck_assert_int_eq(query_int(path, "SELECT count(*) FROM sessions"), 2);
        ck_assert_int_eq(query_int(path, "SELECT count(*) FROM sessions WHERE user_id = 'bob'"), 0);
        scratch_remove();
}
END_TEST

static int64_t file_bytes(const char *path) {
        struct stat st;

        ck_assert_int_eq(stat(path, &st), 0);
        return (int64_t)st.st_size;
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
        int64_t rowid, n;

        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(store_open(&o, &s), 0);
        for (int i = 0; i < 50; i++) {
                struct store_session r = row_for(id, (uint8_t)i, "alice", T0);
                snprintf(id, sizeof id, "%022d", i);
                ck_assert_int_eq(insert_row(s, &r, NULL, 0, &rowid), 0);
        }
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_gt(file_bytes(wal), 0);

        ck_assert_int_eq(sqlite3_open_v2(path, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM sessions", NULL, NULL, NULL), SQLITE_OK);
        ck_assert_int_eq(store_maintain_start(s, true, done_cb, &d), 0);
        ck_assert_int_eq(d.calls, 0);
        run_until(&loop, &d, 1);
        ck_assert_int_eq(d.result, -EBUSY);
        ck_assert_int_gt(file_bytes(wal), 0);

        ck_assert_int_eq(sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(reader);
        ck_assert_int_eq(store_maintain_start(s, false, done_cb, &d), 0);
        ck_assert_int_eq(d.calls, 1);
        run_until(&loop, &d, 2);
        ck_assert_int_eq(d.result, 0);
        ck_assert_int_eq(file_bytes(wal), 0);
        ck_assert_int_eq(store_count_sessions(s, false, &n), 0);
        ck_assert_int_eq(n, 50);

        /* Closed before done: done runs all the same. */
        ck_assert_int_eq(store_maintain_start(s, true, done_cb, &d), 0);
        store_close(s);
        run_until(&loop, &d, 3);
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
        run_until(&loop, &d, 1);
        ck_assert_int_eq(d.result, 0);
        store_close(s);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

START_TEST(test_checkpoint_thread) {
        char *path = path_in("sessions.db"), *wal = path_in("sessions.db-wal");
        struct store *s = open_store(path);
        char id[TOKEN_ID_STRING_LEN + 1], sync[1000];
        struct stat st;
        int64_t rowid;
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
                        ck_assert_int_eq(insert_row(s, &r, sync, sizeof sync, &rowid), 0);
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
        tcase_add_test(tc, test_new_database);
        tcase_add_test(tc, test_wal_and_synchronous);
        tcase_add_test(tc, test_migration_from_version_0);
        tcase_add_test(tc, test_migration_to_milliseconds);
        tcase_add_test(tc, test_reopen_keeps_rows);
        tcase_add_test(tc, test_open_loads_live_sessions);
        tcase_add_test(tc, test_rollback);
        tcase_add_test(tc, test_garbage_refused);
        tcase_add_test(tc, test_truncated_refused);
        tcase_add_test(tc, test_newer_refused);
        tcase_add_test(tc, test_foreign_refused);
        tcase_add_test(tc, test_not_a_file_refused);
        tcase_add_test(tc, test_session_operations);
        tcase_add_test(tc, test_iteration_stops);
        tcase_add_test(tc, test_purge_and_audit);
        tcase_add_test(tc, test_audit_after_cursor);
        tcase_add_test(tc, test_maintenance);
        tcase_add_test(tc, test_checkpoint_thread);
        tcase_add_test(tc, test_unit_of_work_async);
        tcase_add_test(tc, test_maintain_start);
        tcase_add_test(tc, test_maintain_start_memory);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
