/* The session engine (daemon/engine/) with an injected clock: expiry by
 * each limit, grace, warnings, extend, eviction, fingerprints, platform
 * switch limits, sync state, rotation, destroy, cleanup, purge, limits,
 * durability across restarts, and memory matching the store after a failed
 * commit. */
#include <sqlite3.h>

#include "helpers.h"
#include "engine/engine-internal.h" /* struct session: its packed times */

static const struct engine_counters *counters(struct fixture *f) {
        return engine_get_counters(f->e);
}

/* SetSyncState as a caller sees it: engine_sync_set() is answered when its
 * unit of work is done, so the helper commits (twice at most: a write
 * outrun without expected_version is recorded again in the next unit). */
struct sync_answer {
        int calls, r;
        int64_t version;
        enum engine_end_reason end_reason;
};

static void sync_answer_cb(int r, const struct engine_error *err, void *userdata) {
        struct sync_answer *x = userdata;

        x->calls++;
        x->r = r;
        x->version = err->version;
        x->end_reason = err->end_reason;
}

static int sync_set(struct engine *e, int64_t now, const char *token, const char *data, size_t size, int64_t expected,
                    int64_t *version, struct engine_error *err) {
        struct sync_answer x = {0};
        struct engine_sync_wait *w = NULL;
        int r = engine_sync_set(e, now, token, data, size, expected, sync_answer_cb, &x, &w, err);

        if (r < 0) {
                ck_assert_int_eq(x.calls, 0);
                return r;
        }
        ck_assert_ptr_nonnull(w);
        ck_assert_int_eq(x.calls, 0); /* not before its commit */
        for (int i = 0; i < 2 && x.calls == 0; i++)
                (void) engine_commit(e);
        ck_assert_int_eq(x.calls, 1);
        if (x.r == -EAGAIN)
                err->version = x.version;
        else if (x.r == 0)
                *version = x.version;
        return x.r;
}

/* Short limits for the tests: idle 100, lifetime 1000, absolute 5000,
 * grace 10, cleanup grace 20, warning 30. */
static void short_timeouts(struct fixture *f) {
        f->c->timeout.idle_timeout = 100;
        f->c->timeout.session_lifetime = 1000;
        f->c->timeout.absolute_timeout = 5000;
        f->c->timeout.expiration_grace = 10;
        f->c->timeout.cleanup_grace = 20;
        f->c->timeout.warning_threshold = 30;
}

static void setup_memory(struct fixture *f) {
        fixture_init(f, NULL);
        short_timeouts(f);
        fixture_open(f);
}

static int peek_validate(struct fixture *f, int64_t now, const char *token, struct engine_info *info,
                         struct engine_error *err) {
        int r = engine_validate(f->e, now, token, NULL, false, info, err);
        ck_assert_int_eq(engine_commit(f->e), 0);
        return r;
}

static int64_t db_count(const char *path, const char *sql) {
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

/* ---- create and validate ------------------------------------------------------- */

START_TEST(test_create_validate) {
        struct fixture f;
        struct engine_create a = {.user_id = "alice", .platform_id = "web"};
        struct engine_created out;
        struct engine_error err = {0};
        struct engine_info info;
        char token[TOKEN_STRING_LEN + 1];

        setup_memory(&f);
        ck_assert_int_eq(engine_create(f.e, MS(T0), &a, &out, &err), 0);
        ck_assert(engine_has_pending(f.e));
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert(!engine_has_pending(f.e));
        ck_assert(token_is_wellformed(out.token));
        ck_assert_uint_eq(strlen(out.info.id), TOKEN_ID_STRING_LEN);
        ck_assert_str_eq(out.info.user_id, "alice");
        ck_assert_str_eq(out.info.platform_id, "web");
        ck_assert_int_eq(out.info.created_at, T0);
        ck_assert_int_eq(out.info.expires_at, T0 + 100);
        ck_assert_int_eq(out.info.state, ENGINE_STATE_ACTIVE);
        ck_assert_uint_eq(out.n_evicted, 0);
        memcpy(token, out.token, sizeof token);
        engine_created_clear(&out);

        ck_assert_int_eq(validate(&f, MS(T0 + 50), token, &info, NULL), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_ACTIVE);
        ck_assert_int_eq(info.last_activity, T0 + 50);
        ck_assert_int_eq(info.expires_at, T0 + 150);
        ck_assert_int_eq(info.expires_in, 100);
        ck_assert(!info.warning);
        /* touch = false leaves last_activity alone. */
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 60), token, &info, &err), 0);
        ck_assert_int_eq(info.last_activity, T0 + 50);
        ck_assert_uint_eq(counters(&f)->created, 1);
        ck_assert_uint_eq(counters(&f)->validated, 2);
        /* A validation that hits memory writes nothing. */
        ck_assert(!engine_has_pending(f.e));
        fixture_done(&f);
}
END_TEST

START_TEST(test_bad_arguments) {
        struct fixture f;
        struct engine_created out;
        struct engine_error err = {0};
        struct engine_info info;
        char longer[300];
        struct engine_create a = {0};

        setup_memory(&f);
        a.user_id = "";
        ck_assert_int_eq(engine_create(f.e, MS(T0), &a, &out, &err), -EINVAL);
        ck_assert_str_eq(err.field, "user_id");
        memset(longer, 'x', sizeof longer - 1);
        longer[sizeof longer - 1] = '\0';
        a.user_id = longer;
        ck_assert_int_eq(engine_create(f.e, MS(T0), &a, &out, &err), -EINVAL);
        ck_assert_str_eq(err.reason, "longer than 255 bytes");
        a.user_id = "bad\nname";
        ck_assert_int_eq(engine_create(f.e, MS(T0), &a, &out, &err), -EINVAL);
        a.user_id = "ok";
        a.platform_id = "";
        ck_assert_int_eq(engine_create(f.e, MS(T0), &a, &out, &err), -EINVAL);
        ck_assert_str_eq(err.field, "platform_id");
        a.platform_id = NULL;
        {
                char ua[ENGINE_CLIENT_FIELD_MAX + 2];
                memset(ua, 'u', sizeof ua - 1);
                ua[sizeof ua - 1] = '\0';
                a.client.user_agent = ua;
                ck_assert_int_eq(engine_create(f.e, MS(T0), &a, &out, &err), -EINVAL);
                ck_assert_str_eq(err.field, "client.user_agent");
        }
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(counters(&f)->created, 0);

        ck_assert_int_eq(validate(&f, MS(T0), "not-a-token", &info, &err), -EINVAL);
        ck_assert_str_eq(err.field, "token");
        ck_assert_int_eq(validate(&f, MS(T0), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &info, &err), -ENOENT);
        ck_assert_uint_eq(counters(&f)->validate_failed[ENGINE_FAIL_INVALID], 1);
        ck_assert_uint_eq(counters(&f)->validate_failed[ENGINE_FAIL_NOT_FOUND], 1);
        fixture_done(&f);
}
END_TEST

/* ---- expiry --------------------------------------------------------------------- */

START_TEST(test_expiry_idle_and_grace) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char token[TOKEN_STRING_LEN + 1];

        setup_memory(&f);
        create_session(&f, MS(T0), "alice", NULL, token, NULL);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 99), token, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_ACTIVE);
        ck_assert_int_eq(info.expires_in, 1);
        ck_assert(info.warning);
        /* At the end: grace, honoured, never touched. */
        ck_assert_int_eq(validate(&f, MS(T0 + 100), token, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_GRACE);
        ck_assert_int_eq(info.end_reason, ENGINE_END_IDLE);
        ck_assert_int_eq(info.expires_in, 0);
        ck_assert(info.warning);
        ck_assert_int_eq(info.last_activity, T0);
        {
                struct engine_info hb;
                ck_assert_int_eq(engine_heartbeat(f.e, MS(T0 + 105), token, &hb, &err), 0);
                ck_assert_int_eq(hb.state, ENGINE_STATE_GRACE);
                ck_assert_int_eq(hb.last_activity, T0);
        }
        ck_assert_int_eq(validate(&f, MS(T0 + 109), token, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_GRACE);
        ck_assert_uint_eq(counters(&f)->validated_grace, 2);
        /* After the grace period: Expired(idle). */
        ck_assert_int_eq(validate(&f, MS(T0 + 110), token, &info, &err), -ESTALE);
        ck_assert_int_eq(err.end_reason, ENGINE_END_IDLE);
        ck_assert_uint_eq(counters(&f)->validate_failed[ENGINE_FAIL_EXPIRED], 1);
        fixture_done(&f);
}
END_TEST

START_TEST(test_expiry_lifetime) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char token[TOKEN_STRING_LEN + 1];

        setup_memory(&f);
        create_session(&f, MS(T0), "alice", NULL, token, NULL);
        for (int64_t t = T0 + 50; t < T0 + 1000; t += 50)
                ck_assert_int_eq(validate(&f, MS(t), token, &info, &err), 0);
        ck_assert_int_eq(info.expires_at, T0 + 1000); /* lifetime now comes first */
        ck_assert_int_eq(info.end_reason, ENGINE_END_LIFETIME);
        ck_assert_int_eq(validate(&f, MS(T0 + 1005), token, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_GRACE);
        ck_assert_int_eq(validate(&f, MS(T0 + 1010), token, &info, &err), -ESTALE);
        ck_assert_int_eq(err.end_reason, ENGINE_END_LIFETIME);
        fixture_done(&f);
}
END_TEST

START_TEST(test_expiry_absolute_and_extend_cap) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char token[TOKEN_STRING_LEN + 1];

        fixture_init(&f, NULL);
        short_timeouts(&f);
        f.c->timeout.absolute_timeout = 1500;
        fixture_open(&f);
        create_session(&f, MS(T0), "alice", NULL, token, NULL);
        for (int64_t t = T0 + 50; t <= T0 + 900; t += 50)
                ck_assert_int_eq(validate(&f, MS(t), token, &info, &err), 0);
        /* Extend renews the lifetime but never past the absolute cap. */
        ck_assert_int_eq(engine_extend(f.e, MS(T0 + 900), token, &info, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(info.renewed_at, T0 + 900);
        ck_assert_int_eq(info.expires_at, T0 + 1000); /* idle: last activity + 100 */
        for (int64_t t = T0 + 950; t < T0 + 1500; t += 50)
                ck_assert_int_eq(validate(&f, MS(t), token, &info, &err), 0);
        ck_assert_int_eq(info.expires_at, T0 + 1500);
        ck_assert_int_eq(info.end_reason, ENGINE_END_ABSOLUTE);
        ck_assert_int_eq(engine_extend(f.e, MS(T0 + 1499), token, &info, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(info.expires_at, T0 + 1500);
        ck_assert_int_eq(info.expires_in, 1);
        ck_assert_int_eq(validate(&f, MS(T0 + 1510), token, &info, &err), -ESTALE);
        ck_assert_int_eq(err.end_reason, ENGINE_END_ABSOLUTE);
        ck_assert_uint_eq(counters(&f)->extended, 2);
        fixture_done(&f);
}
END_TEST

START_TEST(test_warning_threshold) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char token[TOKEN_STRING_LEN + 1];

        setup_memory(&f);
        create_session(&f, MS(T0), "alice", NULL, token, NULL);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 69), token, &info, &err), 0);
        ck_assert_int_eq(info.expires_in, 31);
        ck_assert(!info.warning);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 70), token, &info, &err), 0);
        ck_assert_int_eq(info.expires_in, 30);
        ck_assert(info.warning);
        /* A heartbeat touches: the warning goes away. */
        ck_assert_int_eq(engine_heartbeat(f.e, MS(T0 + 70), token, &info, &err), 0);
        ck_assert_int_eq(info.expires_in, 100);
        ck_assert(!info.warning);
        ck_assert_uint_eq(counters(&f)->heartbeats, 1);
        fixture_done(&f);
}
END_TEST

/* ---- concurrency limit ------------------------------------------------------------- */

START_TEST(test_eviction_order) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        struct engine_create a = {.user_id = "alice"};
        struct engine_created out;
        char t[4][TOKEN_STRING_LEN + 1], id[4][TOKEN_ID_STRING_LEN + 1], bob[TOKEN_STRING_LEN + 1];
        unsigned n = 0;

        fixture_init(&f, NULL);
        short_timeouts(&f);
        f.c->security.max_concurrent_per_user = 3;
        fixture_open(&f);
        for (int i = 0; i < 3; i++)
                create_session(&f, MS(T0 + i), "alice", NULL, t[i], id[i]);
        create_session(&f, MS(T0), "bob", NULL, bob, NULL);
        /* The first is used again: the second is now the least recently active. */
        ck_assert_int_eq(validate(&f, MS(T0 + 10), t[0], &info, &err), 0);
        ck_assert_int_eq(engine_create(f.e, MS(T0 + 11), &a, &out, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(out.n_evicted, 1);
        ck_assert_str_eq(out.evicted[0], id[1]);
        memcpy(t[3], out.token, sizeof t[3]);
        engine_created_clear(&out);

        ck_assert_int_eq(validate(&f, MS(T0 + 12), t[1], &info, &err), -ESTALE);
        ck_assert_int_eq(err.end_reason, ENGINE_END_EVICTED);
        ck_assert_int_eq(validate(&f, MS(T0 + 12), t[0], &info, &err), 0);
        ck_assert_int_eq(validate(&f, MS(T0 + 12), t[2], &info, &err), 0);
        ck_assert_int_eq(validate(&f, MS(T0 + 12), t[3], &info, &err), 0);
        ck_assert_int_eq(validate(&f, MS(T0 + 12), bob, &info, &err), 0);
        ck_assert_uint_eq(counters(&f)->ended[ENGINE_END_EVICTED], 1);
        ck_assert_int_eq(engine_terminate_user(f.e, MS(T0 + 13), "nobody", &n), 0);
        ck_assert_uint_eq(n, 0);
        fixture_done(&f);
}
END_TEST

static int count_cb(const struct engine_info *info, void *userdata) {
        (*(unsigned *) userdata)++;
        return 0;
}

START_TEST(test_lowered_limit) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char t[5][TOKEN_STRING_LEN + 1];
        unsigned ended, n = 0;
        bool more;

        setup_memory(&f);
        for (int i = 0; i < 5; i++)
                create_session(&f, MS(T0 + i), "alice", NULL, t[i], NULL);
        ck_assert_int_eq(validate(&f, MS(T0 + 10), t[0], &info, &err), 0);
        f.c->security.max_concurrent_per_user = 2;
        engine_config_changed(f.e);
        ck_assert_int_eq(engine_enforce_user_limit(f.e, MS(T0 + 11), 2, &ended, &more), 0);
        ck_assert_uint_eq(ended, 2);
        ck_assert(more);
        ck_assert_int_eq(engine_enforce_user_limit(f.e, MS(T0 + 11), 2, &ended, &more), 0);
        ck_assert_uint_eq(ended, 1);
        ck_assert(!more);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(engine_list_user(f.e, MS(T0 + 11), "alice", count_cb, &n, &err), 0);
        ck_assert_uint_eq(n, 2);
        /* The survivors are the most recently active: t[0] (used at +10) and t[4]. */
        ck_assert_int_eq(validate(&f, MS(T0 + 12), t[0], &info, &err), 0);
        ck_assert_int_eq(validate(&f, MS(T0 + 12), t[4], &info, &err), 0);
        for (int i = 1; i < 4; i++) {
                ck_assert_int_eq(validate(&f, MS(T0 + 12), t[i], &info, &err), -ESTALE);
                ck_assert_int_eq(err.end_reason, ENGINE_END_EVICTED);
        }
        ck_assert_int_eq(engine_enforce_user_limit(f.e, MS(T0 + 13), 2, &ended, &more), 0);
        ck_assert_uint_eq(ended, 0);
        ck_assert(!more);
        fixture_done(&f);
}
END_TEST

/* ---- fingerprints ------------------------------------------------------------------ */

struct listed {
        char ip[64];
        unsigned n;
};

static int ip_cb(const struct engine_info *info, void *userdata) {
        struct listed *l = userdata;

        snprintf(l->ip, sizeof l->ip, "%s", info->ip ? info->ip : "");
        l->n++;
        return 0;
}

START_TEST(test_fingerprint_policy) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        struct engine_client created = {"Firefox", "192.0.2.1", "en", "gzip"};
        struct engine_client other_ua = {"Chrome", "192.0.2.1", "en", "gzip"};
        struct engine_client other_ip = {"Firefox", "198.51.100.9", "en", "gzip"};
        struct engine_client other_lang = {"Firefox", "198.51.100.9", "de", NULL};
        struct listed l = {0};
        char token[TOKEN_STRING_LEN + 1];
        uint64_t seq;

        setup_memory(&f);
        create_session(&f, MS(T0), "alice", &created, token, NULL);
        ck_assert_int_eq(engine_validate(f.e, MS(T0 + 1), token, &created, true, &info, &err), 0);
        ck_assert(!engine_has_pending(f.e)); /* the same client: nothing to record */

        ck_assert_int_eq(engine_validate(f.e, MS(T0 + 2), token, &other_ua, true, &info, &err), -EACCES);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(counters(&f)->fingerprint_mismatches, 1);
        ck_assert_uint_eq(counters(&f)->validate_failed[ENGINE_FAIL_FINGERPRINT], 1);
        ck_assert_uint_eq(counters(&f)->suspicious, 1);

        seq = engine_write_seq(f.e);
        ck_assert_int_eq(engine_validate(f.e, MS(T0 + 3), token, &other_ip, true, &info, &err), 0);
        ck_assert_uint_ne(engine_write_seq(f.e), seq); /* recorded: a write */
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(counters(&f)->fingerprint_changes, 1);
        ck_assert_uint_eq(counters(&f)->suspicious, 2);
        ck_assert_int_eq(engine_list_user(f.e, MS(T0 + 3), "alice", ip_cb, &l, &err), 0);
        ck_assert_str_eq(l.ip, "198.51.100.9");
        /* The new IP is now the recorded one. */
        ck_assert_int_eq(engine_validate(f.e, MS(T0 + 4), token, &other_ip, true, &info, &err), 0);
        ck_assert_uint_eq(counters(&f)->suspicious, 2);
        ck_assert_int_eq(engine_validate(f.e, MS(T0 + 5), token, &other_lang, true, &info, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(counters(&f)->fingerprint_changes, 2);
        ck_assert_uint_eq(counters(&f)->suspicious, 3);
        /* No client given: nothing compared. */
        ck_assert_int_eq(validate(&f, MS(T0 + 6), token, &info, &err), 0);

        /* Fingerprinting off: nothing compared, nothing counted. */
        f.c->security.fingerprinting = false;
        ck_assert_int_eq(engine_validate(f.e, MS(T0 + 7), token, &other_ua, true, &info, &err), 0);
        ck_assert_uint_eq(counters(&f)->suspicious, 3);
        ck_assert_uint_eq(counters(&f)->fingerprint_mismatches, 1);
        fixture_done(&f);
}
END_TEST

START_TEST(test_fingerprint_adopted) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        struct engine_client x = {.user_agent = "X"}, y = {.user_agent = "Y"};
        char token[TOKEN_STRING_LEN + 1];

        setup_memory(&f);
        create_session(&f, MS(T0), "alice", NULL, token, NULL); /* no client at creation */
        ck_assert_int_eq(engine_validate(f.e, MS(T0 + 1), token, &x, true, &info, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(counters(&f)->suspicious, 0);
        ck_assert_int_eq(engine_validate(f.e, MS(T0 + 2), token, &y, true, &info, &err), -EACCES);
        fixture_done(&f);
}
END_TEST

/* ---- platform switching -------------------------------------------------------------- */

START_TEST(test_switch_rate_limit) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char token[TOKEN_STRING_LEN + 1];
        const char *platforms[] = {"ios", "web", "android"};

        fixture_init(&f, NULL);
        short_timeouts(&f);
        f.c->timeout.idle_timeout = 10000;
        f.c->timeout.session_lifetime = 20000;
        f.c->timeout.absolute_timeout = 30000;
        f.c->security.max_platform_switches_per_hour = 3;
        fixture_open(&f);
        create_session(&f, MS(T0), "alice", NULL, token, NULL);
        for (int i = 0; i < 3; i++) {
                ck_assert_int_eq(engine_switch_platform(f.e, MS(T0 + 1 + i), token, platforms[i], &info, &err), 0);
                ck_assert_str_eq(info.platform_id, platforms[i]);
                ck_assert_int_eq(engine_commit(f.e), 0);
        }
        /* The same platform again is not a switch. */
        ck_assert_int_eq(engine_switch_platform(f.e, MS(T0 + 4), token, "android", &info, &err), 0);
        /* A fourth switch within the hour is refused until the first leaves it. */
        ck_assert_int_eq(engine_switch_platform(f.e, MS(T0 + 4), token, "web", &info, &err), -EBUSY);
        ck_assert_int_eq(err.retry_after, 3600 - 3);
        ck_assert_uint_eq(counters(&f)->platform_switches_refused, 1);
        ck_assert_uint_eq(counters(&f)->suspicious, 1);
        ck_assert_int_eq(engine_switch_platform(f.e, MS(T0 + 3600), token, "web", &info, &err), -EBUSY);
        ck_assert_int_eq(err.retry_after, 1);
        ck_assert_int_eq(engine_switch_platform(f.e, MS(T0 + 3601), token, "web", &info, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(counters(&f)->platform_switches, 4);
        ck_assert_int_eq(validate(&f, MS(T0 + 3602), token, &info, &err), 0);
        ck_assert_str_eq(info.platform_id, "web");

        ck_assert_int_eq(engine_switch_platform(f.e, MS(T0 + 3602), token, "", &info, &err), -EINVAL);
        ck_assert_str_eq(err.field, "platform_id");
        f.c->features.platform_switching = false;
        ck_assert_int_eq(engine_switch_platform(f.e, MS(T0 + 3602), token, "ios", &info, &err), -EOPNOTSUPP);
        ck_assert_str_eq(err.feature, "platform_switching");
        fixture_done(&f);
}
END_TEST

/* ---- sync state ------------------------------------------------------------------------- */

START_TEST(test_sync_state) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_create a = {.user_id = "alice", .sync_data = "{\"tab\":1}", .sync_size = 9};
        struct engine_created out;
        int64_t version;
        char *data;
        size_t size;
        char token[TOKEN_STRING_LEN + 1];

        fixture_init(&f, NULL);
        short_timeouts(&f);
        f.c->sync.max_data_size = 16;
        fixture_open(&f);
        ck_assert_int_eq(engine_create(f.e, MS(T0), &a, &out, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        memcpy(token, out.token, sizeof token);
        engine_created_clear(&out);

        ck_assert_int_eq(engine_sync_get(f.e, MS(T0), token, &version, &data, &size, &err), 0);
        ck_assert_int_eq(version, 1);
        ck_assert_str_eq(data, "{\"tab\":1}");
        free(data);
        ck_assert_int_eq(sync_set(f.e, MS(T0 + 1), token, "two", 3, 1, &version, &err), 0);
        ck_assert_int_eq(version, 2);
        /* A stale expected version: Conflict with the current one. */
        ck_assert_int_eq(sync_set(f.e, MS(T0 + 2), token, "three", 5, 1, &version, &err), -EAGAIN);
        ck_assert_int_eq(err.version, 2);
        /* Unconditional. */
        ck_assert_int_eq(sync_set(f.e, MS(T0 + 2), token, "three", 5, -1, &version, &err), 0);
        ck_assert_int_eq(version, 3);
        /* Size limit, exactly at and above. */
        ck_assert_int_eq(sync_set(f.e, MS(T0 + 3), token, "0123456789abcdef", 16, -1, &version, &err), 0);
        ck_assert_int_eq(sync_set(f.e, MS(T0 + 3), token, "0123456789abcdefg", 17, -1, &version, &err), -E2BIG);
        ck_assert_int_eq(err.max, 16);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(engine_sync_get(f.e, MS(T0 + 4), token, &version, &data, &size, &err), 0);
        ck_assert_int_eq(version, 4);
        ck_assert_uint_eq(size, 16);
        free(data);
        ck_assert_uint_eq(counters(&f)->sync_conflicts, 1);

        a.sync_size = 17;
        a.sync_data = "0123456789abcdefg";
        ck_assert_int_eq(engine_create(f.e, MS(T0), &a, &out, &err), -E2BIG);

        f.c->features.cross_tab_sync = false;
        ck_assert_int_eq(engine_sync_get(f.e, MS(T0 + 5), token, &version, &data, &size, &err), -EOPNOTSUPP);
        ck_assert_str_eq(err.feature, "cross_tab_sync");
        ck_assert_int_eq(sync_set(f.e, MS(T0 + 5), token, "x", 1, -1, &version, &err), -EOPNOTSUPP);
        a.sync_size = 1;
        ck_assert_int_eq(engine_create(f.e, MS(T0), &a, &out, &err), -EOPNOTSUPP);
        fixture_done(&f);
}
END_TEST

/* Another daemon's write (a second connection to the database plays it)
 * between the engine's read of the version and its commit: the
 * compare-and-set is not applied. With expected_version the caller gets
 * Conflict with the version stored; without, the write goes again on top
 * of it. Two writes of one unit both land, one after the other. */
static void other_daemon_writes(const char *path, const char *id, const char *data) {
        sqlite3 *db;
        sqlite3_stmt *st;

        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        ck_assert_int_eq(sqlite3_prepare_v2(db,
                                            "UPDATE sessions SET sync_version = sync_version + 1, sync_data = ?2 "
                                            "WHERE id = ?1",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, data, (int) strlen(data), SQLITE_STATIC);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
        ck_assert_int_eq(sqlite3_changes(db), 1);
        sqlite3_finalize(st);
        sqlite3_close(db);
}

static void check_sync(struct fixture *f, int64_t now, const char *token, int64_t version, const char *data) {
        struct engine_error err = {0};
        int64_t v;
        char *d;
        size_t size;

        ck_assert_int_eq(engine_sync_get(f->e, now, token, &v, &d, &size, &err), 0);
        ck_assert_int_eq(v, version);
        ck_assert_uint_eq(size, strlen(data));
        ck_assert_mem_eq(d, data, size);
        free(d);
}

START_TEST(test_sync_outrun) {
        struct fixture f;
        struct engine_error err = {0};
        char *path = path_in("sessions.db");
        char token[TOKEN_STRING_LEN + 1], id[TOKEN_ID_STRING_LEN + 1];
        struct sync_answer x = {0}, y = {0}, z = {0};
        struct engine_sync_wait *w = NULL;

        fixture_init(&f, path);
        fixture_open(&f);
        create_session(&f, MS(T0), "alice", NULL, token, id);

        ck_assert_int_eq(engine_sync_set(f.e, MS(T0 + 1), token, "mine", 4, 0, sync_answer_cb, &x, &w, &err), 0);
        other_daemon_writes(path, id, "theirs");
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(x.calls, 1);
        ck_assert_int_eq(x.r, -EAGAIN);
        ck_assert_int_eq(x.version, 1);
        check_sync(&f, MS(T0 + 1), token, 1, "theirs");

        ck_assert_int_eq(engine_sync_set(f.e, MS(T0 + 2), token, "mine", 4, -1, sync_answer_cb, &y, &w, &err), 0);
        other_daemon_writes(path, id, "theirs again");
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(y.calls, 0); /* recorded again, on top of version 2 */
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(y.calls, 1);
        ck_assert_int_eq(y.r, 0);
        ck_assert_int_eq(y.version, 3);
        check_sync(&f, MS(T0 + 2), token, 3, "mine");

        /* One daemon, two writes in one unit: the second reads the first's. */
        memset(&x, 0, sizeof x);
        ck_assert_int_eq(engine_sync_set(f.e, MS(T0 + 3), token, "a", 1, 3, sync_answer_cb, &x, &w, &err), 0);
        ck_assert_int_eq(engine_sync_set(f.e, MS(T0 + 3), token, "b", 1, 4, sync_answer_cb, &z, &w, &err), 0);
        ck_assert_int_eq(engine_sync_set(f.e, MS(T0 + 3), token, "c", 1, 4, sync_answer_cb, &y, &w, &err), -EAGAIN);
        ck_assert_int_eq(err.version, 5);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(x.r, 0);
        ck_assert_int_eq(x.version, 4);
        ck_assert_int_eq(z.r, 0);
        ck_assert_int_eq(z.version, 5);
        check_sync(&f, MS(T0 + 3), token, 5, "b");

        /* A caller gone before its commit: the write stands, nobody is called. */
        memset(&x, 0, sizeof x);
        ck_assert_int_eq(engine_sync_set(f.e, MS(T0 + 4), token, "d", 1, -1, sync_answer_cb, &x, &w, &err), 0);
        engine_sync_detach(w);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(x.calls, 0);
        check_sync(&f, MS(T0 + 4), token, 6, "d");
        ck_assert_uint_eq(counters(&f)->sync_conflicts, 2);
        ck_assert_uint_eq(counters(&f)->sync_writes, 4);
        fixture_done(&f);
        scratch_remove();
}
END_TEST

/* ---- rotate, destroy ------------------------------------------------------------------------ */

START_TEST(test_rotate) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char old[TOKEN_STRING_LEN + 1], fresh[TOKEN_STRING_LEN + 1], id[TOKEN_ID_STRING_LEN + 1];
        int64_t version;
        char *data;
        size_t size;

        setup_memory(&f);
        create_session(&f, MS(T0), "alice", NULL, old, id);
        ck_assert_int_eq(sync_set(f.e, MS(T0 + 1), old, "s", 1, -1, &version, &err), 0);
        ck_assert_int_eq(engine_switch_platform(f.e, MS(T0 + 1), old, "ios", &info, &err), 0);
        ck_assert_int_eq(engine_rotate(f.e, MS(T0 + 5), old, fresh, &info, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert(token_is_wellformed(fresh));
        ck_assert_str_ne(fresh, old);
        ck_assert_str_ne(info.id, id);
        ck_assert_int_eq(info.created_at, T0); /* the absolute cap is kept */
        ck_assert_int_eq(info.last_activity, T0 + 5);
        ck_assert_str_eq(info.platform_id, "ios");
        ck_assert_uint_eq(counters(&f)->rotated, 1);

        ck_assert_int_eq(validate(&f, MS(T0 + 6), fresh, &info, &err), 0);
        ck_assert_int_eq(engine_sync_get(f.e, MS(T0 + 6), fresh, &version, &data, &size, &err), 0);
        ck_assert_int_eq(version, 1);
        ck_assert_str_eq(data, "s");
        free(data);

        /* The old token: Expired(rotated) at once; within grace not suspicious. */
        ck_assert_int_eq(validate(&f, MS(T0 + 6), old, &info, &err), -ESTALE);
        ck_assert_int_eq(err.end_reason, ENGINE_END_ROTATED);
        ck_assert_uint_eq(counters(&f)->suspicious, 0);
        ck_assert_int_eq(validate(&f, MS(T0 + 5 + 11), old, &info, &err), -ESTALE);
        ck_assert_uint_eq(counters(&f)->suspicious, 1);
        ck_assert_int_eq(engine_rotate(f.e, MS(T0 + 20), old, fresh, &info, &err), -ESTALE);
        fixture_done(&f);
}
END_TEST

/* daemon.max_sessions: Create is refused at the cap and changes nothing;
 * Rotate and a Create that evicts one of the user's own are not; a destroy
 * makes room; a cap lowered below the count only refuses. */
START_TEST(test_max_sessions) {
        struct fixture f;
        struct engine_create a = {.user_id = "u5"};
        struct engine_created out;
        struct engine_error err = {0};
        struct engine_info info;
        struct engine_counts counts;
        char tokens[5][TOKEN_STRING_LEN + 1], fresh[TOKEN_STRING_LEN + 1], user[8];

        fixture_init(&f, NULL);
        short_timeouts(&f);
        f.c->daemon.max_sessions = 5;
        f.c->security.max_concurrent_per_user = 2;
        fixture_open(&f);
        for (int i = 0; i < 5; i++) {
                snprintf(user, sizeof user, "u%d", i);
                create_session(&f, MS(T0), user, NULL, tokens[i], NULL);
        }
        ck_assert_int_eq(engine_create(f.e, MS(T0 + 1), &a, &out, &err), -EUSERS);
        ck_assert(!engine_has_pending(f.e)); /* nothing written */
        engine_count(f.e, MS(T0 + 1), &counts);
        ck_assert_uint_eq(counts.sessions, 5);
        ck_assert_uint_eq(counts.users, 5);
        ck_assert_uint_eq(counters(&f)->created, 5);
        ck_assert_uint_eq(counters(&f)->create_refused_max_sessions, 1);

        /* Rotate ends one and makes one: not refused. */
        ck_assert_int_eq(engine_rotate(f.e, MS(T0 + 2), tokens[0], fresh, &info, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        memcpy(tokens[0], fresh, sizeof fresh);

        /* A user below max_concurrent_per_user would hold one more: refused.
         * At it, the Create evicts one of the user's own: the count stays 5. */
        ck_assert_int_eq(engine_create(f.e, MS(T0 + 3), &(struct engine_create){.user_id = "u1"}, &out, &err), -EUSERS);
        f.c->security.max_concurrent_per_user = 1;
        create_session(&f, MS(T0 + 4), "u1", NULL, NULL, NULL);
        engine_count(f.e, MS(T0 + 4), &counts);
        ck_assert_uint_eq(counts.sessions, 5);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 5), tokens[2], &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);

        /* A destroy made room for one. */
        ck_assert_int_eq(engine_create(f.e, MS(T0 + 6), &a, &out, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        engine_created_clear(&out);
        ck_assert_int_eq(engine_create(f.e, MS(T0 + 6), &(struct engine_create){.user_id = "u6"}, &out, &err), -EUSERS);

        /* Lowered below the count: refuses, ends nothing. */
        f.c->daemon.max_sessions = 2;
        ck_assert_int_eq(engine_create(f.e, MS(T0 + 7), &(struct engine_create){.user_id = "u7"}, &out, &err), -EUSERS);
        engine_count(f.e, MS(T0 + 7), &counts);
        ck_assert_uint_eq(counts.sessions, 5);
        for (int i = 0; i < 5; i++)
                if (i != 2)
                        ck_assert_int_eq(validate(&f, MS(T0 + 8), tokens[i], &info, &err), i == 1 ? -ESTALE : 0);
        fixture_done(&f);
}
END_TEST

START_TEST(test_destroy) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char token[TOKEN_STRING_LEN + 1];

        setup_memory(&f);
        create_session(&f, MS(T0), "alice", NULL, token, NULL);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 1), token, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(validate(&f, MS(T0 + 1), token, &info, &err), -ESTALE);
        ck_assert_int_eq(err.end_reason, ENGINE_END_DESTROYED);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 2), token, &err), -ESTALE);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 2), "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", &err), -ENOENT);
        ck_assert_uint_eq(counters(&f)->ended[ENGINE_END_DESTROYED], 1);
        fixture_done(&f);
}
END_TEST

START_TEST(test_destroy_user_except) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char t[3][TOKEN_STRING_LEN + 1], bob[TOKEN_STRING_LEN + 1];
        unsigned count;

        setup_memory(&f);
        for (int i = 0; i < 3; i++)
                create_session(&f, MS(T0 + i), "alice", NULL, t[i], NULL);
        create_session(&f, MS(T0), "bob", NULL, bob, NULL);
        ck_assert_int_eq(engine_destroy_user(f.e, MS(T0 + 5), "alice", bob, &count, &err), -EINVAL);
        ck_assert_str_eq(err.field, "except_token");
        ck_assert_int_eq(engine_destroy_user(f.e, MS(T0 + 5), "alice", "bad", &count, &err), -EINVAL);
        ck_assert_str_eq(err.field, "except_token");
        ck_assert_int_eq(engine_destroy_user(f.e, MS(T0 + 5), "alice", t[1], &count, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(count, 2);
        ck_assert_int_eq(validate(&f, MS(T0 + 6), t[1], &info, &err), 0);
        ck_assert_int_eq(validate(&f, MS(T0 + 6), t[0], &info, &err), -ESTALE);
        ck_assert_int_eq(err.end_reason, ENGINE_END_DESTROYED);
        ck_assert_int_eq(validate(&f, MS(T0 + 6), t[2], &info, &err), -ESTALE);
        ck_assert_int_eq(validate(&f, MS(T0 + 6), bob, &info, &err), 0);
        /* Without exception: everything, and nothing left to count after. */
        ck_assert_int_eq(engine_destroy_user(f.e, MS(T0 + 7), "alice", NULL, &count, &err), 0);
        ck_assert_uint_eq(count, 1);
        ck_assert_int_eq(engine_destroy_user(f.e, MS(T0 + 7), "alice", NULL, &count, &err), 0);
        ck_assert_uint_eq(count, 0);
        ck_assert_int_eq(engine_destroy_user(f.e, MS(T0 + 7), "", NULL, &count, &err), -EINVAL);
        fixture_done(&f);
}
END_TEST

/* ---- administration -------------------------------------------------------------------------- */

struct states {
        unsigned active, grace, expired, ended;
        char reason[32];
};

static int state_cb(const struct engine_info *info, void *userdata) {
        struct states *s = userdata;

        switch (info->state) {
        case ENGINE_STATE_ACTIVE:
                s->active++;
                break;
        case ENGINE_STATE_GRACE:
                s->grace++;
                break;
        case ENGINE_STATE_EXPIRED:
                s->expired++;
                break;
        case ENGINE_STATE_ENDED:
                s->ended++;
                snprintf(s->reason, sizeof s->reason, "%s", engine_end_reason_to_string(info->end_reason));
                ck_assert_int_eq(info->expires_at, info->ended_at);
                break;
        }
        return 0;
}

START_TEST(test_terminate_and_listings) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        struct states st = {0};
        char t[3][TOKEN_STRING_LEN + 1], id[3][TOKEN_ID_STRING_LEN + 1];
        unsigned count;

        setup_memory(&f);
        create_session(&f, MS(T0), "alice", NULL, t[0], id[0]);
        create_session(&f, MS(T0 + 95), "alice", NULL, t[1], id[1]);
        create_session(&f, MS(T0 + 200), "bob", NULL, t[2], id[2]);
        ck_assert_int_eq(engine_terminate(f.e, MS(T0 + 200), id[2]), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(engine_terminate(f.e, MS(T0 + 200), id[2]), -ENOENT);
        ck_assert_int_eq(engine_terminate(f.e, MS(T0 + 200), "zzzzzzzzzzzzzzzzzzzzzz"), -ENOENT);
        ck_assert_int_eq(validate(&f, MS(T0 + 201), t[2], &info, &err), -ESTALE);
        ck_assert_int_eq(err.end_reason, ENGINE_END_TERMINATED);

        /* At T0 + 200: alice's first is expired (not ended), the second in
         * grace... no: active until T0 + 195 + 10. */
        ck_assert_int_eq(engine_list_sessions(f.e, MS(T0 + 200), NULL, false, 100, state_cb, &st), 0);
        ck_assert_uint_eq(st.active + st.grace + st.expired + st.ended, 1);
        ck_assert_uint_eq(st.grace, 1);
        st = (struct states){0};
        ck_assert_int_eq(engine_list_sessions(f.e, MS(T0 + 200), NULL, true, 100, state_cb, &st), 0);
        ck_assert_uint_eq(st.expired, 1);
        ck_assert_uint_eq(st.grace, 1);
        ck_assert_uint_eq(st.ended, 1);
        ck_assert_str_eq(st.reason, "terminated");
        st = (struct states){0};
        ck_assert_int_eq(engine_list_sessions(f.e, MS(T0 + 200), NULL, true, 2, state_cb, &st), 0);
        ck_assert_uint_eq(st.active + st.grace + st.expired + st.ended, 2);
        st = (struct states){0};
        ck_assert_int_eq(engine_list_sessions(f.e, MS(T0 + 200), "bob", true, 100, state_cb, &st), 0);
        ck_assert_uint_eq(st.ended, 1);
        ck_assert_uint_eq(st.active + st.grace + st.expired, 0);

        ck_assert_int_eq(engine_terminate_user(f.e, MS(T0 + 201), "alice", &count), 0);
        ck_assert_uint_eq(count, 1); /* the expired one is left to cleanup */
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(counters(&f)->ended[ENGINE_END_TERMINATED], 2);
        fixture_done(&f);
}
END_TEST

/* A user's listing merges live sessions (memory) and ended ones (the
 * store's index of ended rows) in creation order, and stops at the limit. */
struct ids {
        unsigned n;
        char id[8][TOKEN_ID_STRING_LEN + 1];
        enum engine_state state[8];
        const char *ip[8];
};

static int ids_cb(const struct engine_info *info, void *userdata) {
        struct ids *x = userdata;

        ck_assert_uint_lt(x->n, 8);
        memcpy(x->id[x->n], info->id, sizeof x->id[0]);
        x->state[x->n] = info->state;
        x->ip[x->n] = info->ip && strcmp(info->ip, "192.0.2.9") == 0 ? "192.0.2.9" : NULL;
        x->n++;
        return 0;
}

START_TEST(test_user_listing_merges_in_order) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_client client = {.ip = "192.0.2.9"};
        struct ids x = {0};
        char t[6][TOKEN_STRING_LEN + 1], id[6][TOKEN_ID_STRING_LEN + 1];

        fixture_init(&f, NULL);
        f.c->security.max_concurrent_per_user = 100;
        fixture_open(&f);
        for (int i = 0; i < 6; i++)
                create_session(&f, MS(T0 + i), i == 2 ? "bob" : "alice", &client, t[i], id[i]);
        /* alice: 0 ended, 1 live, 3 ended, 4 live, 5 ended; bob: 2 live. */
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 10), t[0], &err), 0);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 10), t[5], &err), 0);
        ck_assert_int_eq(engine_terminate(f.e, MS(T0 + 10), id[3]), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);

        ck_assert_int_eq(engine_list_sessions(f.e, MS(T0 + 11), "alice", true, 100, ids_cb, &x), 0);
        ck_assert_uint_eq(x.n, 5);
        for (unsigned i = 0, k = 0; i < 6; i++) {
                if (i == 2)
                        continue;
                ck_assert_str_eq(x.id[k], id[i]);
                ck_assert_int_eq(x.state[k], i == 1 || i == 4 ? ENGINE_STATE_ACTIVE : ENGINE_STATE_ENDED);
                ck_assert_ptr_nonnull(x.ip[k]); /* from the store, live ones too */
                k++;
        }
        x = (struct ids){0};
        ck_assert_int_eq(engine_list_sessions(f.e, MS(T0 + 11), "alice", true, 2, ids_cb, &x), 0);
        ck_assert_uint_eq(x.n, 2);
        ck_assert_str_eq(x.id[0], id[0]);
        ck_assert_str_eq(x.id[1], id[1]);
        x = (struct ids){0};
        ck_assert_int_eq(engine_list_user(f.e, MS(T0 + 11), "alice", ids_cb, &x, &err), 0);
        ck_assert_uint_eq(x.n, 2);
        ck_assert_str_eq(x.id[0], id[1]);
        ck_assert_str_eq(x.id[1], id[4]);
        x = (struct ids){0};
        ck_assert_int_eq(engine_list_sessions(f.e, MS(T0 + 11), "bob", false, 100, ids_cb, &x), 0);
        ck_assert_uint_eq(x.n, 1);
        ck_assert_str_eq(x.id[0], id[2]);
        /* A user with ended sessions only. */
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 12), t[2], &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        x = (struct ids){0};
        ck_assert_int_eq(engine_list_sessions(f.e, MS(T0 + 13), "bob", false, 100, ids_cb, &x), 0);
        ck_assert_uint_eq(x.n, 0);
        ck_assert_int_eq(engine_list_sessions(f.e, MS(T0 + 13), "bob", true, 100, ids_cb, &x), 0);
        ck_assert_uint_eq(x.n, 1);
        ck_assert_int_eq(x.state[0], ENGINE_STATE_ENDED);
        fixture_done(&f);
}
END_TEST

/* ---- background work --------------------------------------------------------------------------- */

START_TEST(test_cleanup_batches) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        struct engine_counts counts;
        struct states st = {0};
        char t[25][TOKEN_STRING_LEN + 1];
        unsigned ended, total = 0;
        bool more;

        fixture_init(&f, NULL);
        short_timeouts(&f);
        f.c->security.max_concurrent_per_user = 100;
        fixture_open(&f);
        for (int i = 0; i < 25; i++)
                create_session(&f, MS(T0), "user", NULL, t[i], NULL);
        for (int i = 0; i < 5; i++) /* five stay alive longer */
                ck_assert_int_eq(validate(&f, MS(T0 + 50), t[i], &info, &err), 0);
        /* End T0 + 100, cleanup grace 20. */
        ck_assert_uint_eq(engine_count_awaiting_cleanup(f.e, MS(T0 + 119)), 0);
        ck_assert_uint_eq(engine_count_awaiting_cleanup(f.e, MS(T0 + 120)), 20);
        engine_count(f.e, MS(T0 + 120), &counts);
        ck_assert_uint_eq(counts.sessions, 25);
        ck_assert_uint_eq(counts.active, 5);
        ck_assert_uint_eq(counts.expired, 20);
        ck_assert_uint_eq(counts.awaiting_cleanup, 20);
        ck_assert_uint_eq(counts.users, 1);

        do {
                ck_assert_int_eq(engine_cleanup_expired(f.e, MS(T0 + 120), 8, &ended, &more), 0);
                ck_assert_int_eq(engine_commit(f.e), 0);
                ck_assert_uint_le(ended, 8);
                total += ended;
        } while (more);
        ck_assert_uint_eq(total, 20);
        ck_assert_uint_eq(engine_count_awaiting_cleanup(f.e, MS(T0 + 120)), 0);
        ck_assert_uint_eq(counters(&f)->ended[ENGINE_END_IDLE], 20);

        /* Ended with their reason and their real end time. */
        ck_assert_int_eq(engine_list_sessions(f.e, MS(T0 + 120), "user", true, 100, state_cb, &st), 0);
        ck_assert_uint_eq(st.ended, 20);
        ck_assert_uint_eq(st.active, 5);
        ck_assert_str_eq(st.reason, "idle");
        ck_assert_int_eq(validate(&f, MS(T0 + 121), t[24], &info, &err), -ESTALE);
        ck_assert_int_eq(err.end_reason, ENGINE_END_IDLE);
        ck_assert_int_eq(engine_cleanup_expired(f.e, MS(T0 + 120), 8, &ended, &more), 0);
        ck_assert_uint_eq(ended, 0);
        ck_assert(!more);
        fixture_done(&f);
}
END_TEST

START_TEST(test_purge) {
        struct fixture f;
        struct engine_error err = {0};
        char t[4][TOKEN_STRING_LEN + 1];
        char *path = path_in("sessions.db");
        unsigned sessions, audit_rows;
        bool more;

        fixture_init(&f, path);
        short_timeouts(&f);
        f.c->cleanup.expired_retention_days = 1;
        f.c->cleanup.audit_retention_days = 2;
        fixture_open(&f);
        for (int i = 0; i < 4; i++)
                create_session(&f, MS(T0), "alice", NULL, t[i], NULL);
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(engine_destroy(f.e, MS(T0 + i), t[i], &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM audit"), 7); /* 4 created, 3 ended */

        /* Not old enough yet. */
        ck_assert_int_eq(engine_purge(f.e, MS(T0 + 86400), 2, &sessions, &audit_rows, &more), 0);
        ck_assert_uint_eq(sessions, 0);
        /* One day after the first two ended: those two, in batches of two. */
        ck_assert_int_eq(engine_purge(f.e, MS(T0 + 86402), 2, &sessions, &audit_rows, &more), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(sessions, 2);
        ck_assert_uint_eq(audit_rows, 0);
        ck_assert(more);
        ck_assert_int_eq(engine_purge(f.e, MS(T0 + 86402), 2, &sessions, &audit_rows, &more), 0);
        ck_assert_uint_eq(sessions, 0);
        ck_assert(!more);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM sessions"), 2);
        /* Two days: the audit rows go too, and the third ended session. */
        ck_assert_int_eq(engine_purge(f.e, MS(T0 + 2 * 86400 + 10), 100, &sessions, &audit_rows, &more), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(sessions, 1);
        ck_assert_uint_eq(audit_rows, 7);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM sessions"), 1); /* the live one stays */
        ck_assert_uint_eq(counters(&f)->purged_sessions, 3);
        {
                struct store_maintenance m;
                ck_assert_int_eq(engine_maintain(f.e, &m), 0);
                ck_assert(m.ok);
        }
        fixture_done(&f);
        scratch_remove();
}
END_TEST

/* The purge as bounded steps (the deep cleanup's): a deadline lets the
 * audit rows wait while the sessions fill the step's limit, and steps go
 * on until everything past retention is gone. */
START_TEST(test_purge_until) {
        struct fixture f;
        struct engine_error err = {0};
        char t[5][TOKEN_STRING_LEN + 1];
        char *path = path_in("sessions.db");
        unsigned sessions, audit_rows, total_s = 0, total_a = 0, steps = 0;
        uint64_t far = UINT64_MAX; /* a deadline never reached */
        bool more;

        fixture_init(&f, path);
        short_timeouts(&f);
        f.c->cleanup.expired_retention_days = 1;
        f.c->cleanup.audit_retention_days = 1;
        fixture_open(&f);
        for (int i = 0; i < 5; i++)
                create_session(&f, MS(T0), "alice", NULL, t[i], NULL);
        for (int i = 0; i < 4; i++)
                ck_assert_int_eq(engine_destroy(f.e, MS(T0), t[i], &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM audit"), 9); /* 5 created, 4 ended */

        /* The sessions fill the limit: the audit rows wait. */
        ck_assert_int_eq(engine_purge_until(f.e, MS(T0 + 86401), 2, far, &sessions, &audit_rows, &more), 0);
        ck_assert_uint_eq(sessions, 2);
        ck_assert_uint_eq(audit_rows, 0);
        ck_assert(more);
        ck_assert_int_eq(engine_commit(f.e), 0);
        /* A deadline already past: the sessions' statement only. */
        ck_assert_int_eq(engine_purge_until(f.e, MS(T0 + 86401), 2, 1, &sessions, &audit_rows, &more), 0);
        ck_assert_uint_eq(sessions, 2);
        ck_assert_uint_eq(audit_rows, 0);
        ck_assert(more);
        ck_assert_int_eq(engine_commit(f.e), 0);
        /* Then the audit rows, two at a time, until none is left. */
        do {
                ck_assert_int_eq(engine_purge_until(f.e, MS(T0 + 86401), 2, far, &sessions, &audit_rows, &more), 0);
                ck_assert_int_eq(engine_commit(f.e), 0);
                total_s += sessions;
                total_a += audit_rows;
                ck_assert_uint_le(++steps, 10);
        } while (more);
        ck_assert_uint_eq(total_s, 0);
        ck_assert_uint_eq(total_a, 9);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM sessions"), 1); /* the live one stays */
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM audit"), 0);
        ck_assert_uint_eq(counters(&f)->purged_sessions, 4);
        ck_assert_uint_eq(counters(&f)->purged_audit, 9);
        fixture_done(&f);
        scratch_remove();
}
END_TEST

/* ---- durability ---------------------------------------------------------------------------------- */

START_TEST(test_restart_keeps_everything) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char *path = path_in("state/sessions.db");
        char kept[TOKEN_STRING_LEN + 1], gone[TOKEN_STRING_LEN + 1], rot[TOKEN_STRING_LEN + 1],
                rotated[TOKEN_STRING_LEN + 1];
        int64_t version;
        char *data;
        size_t size;
        struct stat st;

        fixture_init(&f, path);
        short_timeouts(&f);
        fixture_open(&f);
        create_session(&f, MS(T0), "alice", NULL, kept, NULL);
        create_session(&f, MS(T0), "alice", NULL, gone, NULL);
        create_session(&f, MS(T0), "bob", NULL, rot, NULL);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 1), gone, &err), 0);
        ck_assert_int_eq(engine_rotate(f.e, MS(T0 + 2), rot, rotated, &info, &err), 0);
        ck_assert_int_eq(engine_switch_platform(f.e, MS(T0 + 3), kept, "ios", &info, &err), 0);
        ck_assert_int_eq(sync_set(f.e, MS(T0 + 4), kept, "data", 4, -1, &version, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        /* A touch, kept in memory, is written at shutdown. */
        ck_assert_int_eq(validate(&f, MS(T0 + 50), kept, &info, &err), 0);
        fixture_close(&f);

        {
                char *key = path_in("state/sessiond.key");
                ck_assert_int_eq(stat(key, &st), 0);
                ck_assert_uint_eq(st.st_mode & 07777, 0600);
        }
        fixture_open(&f);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 51), kept, &info, &err), 0);
        ck_assert_int_eq(info.last_activity, T0 + 50);
        ck_assert_str_eq(info.platform_id, "ios");
        ck_assert_int_eq(engine_sync_get(f.e, MS(T0 + 51), kept, &version, &data, &size, &err), 0);
        ck_assert_int_eq(version, 1);
        ck_assert_str_eq(data, "data");
        free(data);
        ck_assert_int_eq(validate(&f, MS(T0 + 51), gone, &info, &err), -ESTALE);
        ck_assert_int_eq(err.end_reason, ENGINE_END_DESTROYED);
        ck_assert_int_eq(validate(&f, MS(T0 + 51), rot, &info, &err), -ESTALE);
        ck_assert_int_eq(err.end_reason, ENGINE_END_ROTATED);
        ck_assert_int_eq(validate(&f, MS(T0 + 51), rotated, &info, &err), 0);
        fixture_done(&f);
        scratch_remove();
}
END_TEST

START_TEST(test_touch_flush) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        struct engine_counts counts;
        char *path = path_in("sessions.db");
        char t[3][TOKEN_STRING_LEN + 1];
        unsigned written;
        bool more;

        fixture_init(&f, path);
        short_timeouts(&f); /* idle 100: a touch of a second or more is written */
        fixture_open(&f);
        for (int i = 0; i < 3; i++)
                create_session(&f, MS(T0), "alice", NULL, t[i], NULL);
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(validate(&f, MS(T0 + 30), t[i], &info, &err), 0);
        engine_count(f.e, MS(T0 + 30), &counts);
        ck_assert_uint_eq(counts.dirty_touches, 3);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM sessions WHERE last_activity = 1700000030"), 0);
        ck_assert_int_eq(engine_flush_touches(f.e, 2, &written, &more), 0);
        ck_assert_uint_eq(written, 2);
        ck_assert(more);
        ck_assert_int_eq(engine_flush_touches(f.e, 2, &written, &more), 0);
        ck_assert_uint_eq(written, 1);
        ck_assert(!more);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM sessions WHERE last_activity = 1700000030"), 3);
        ck_assert_uint_eq(counters(&f)->touches_written, 3);
        fixture_done(&f);
        scratch_remove();
}
END_TEST

START_TEST(test_abort_restores_memory) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        struct engine_create a = {.user_id = "alice"};
        struct engine_created out;
        char kept[TOKEN_STRING_LEN + 1], fresh[TOKEN_STRING_LEN + 1], rot[TOKEN_STRING_LEN + 1];
        char rotated[TOKEN_STRING_LEN + 1];
        struct sync_answer answer = {0};
        struct engine_sync_wait *w;
        int64_t version;
        char *data;
        size_t size;

        setup_memory(&f);
        create_session(&f, MS(T0), "alice", NULL, kept, NULL);
        create_session(&f, MS(T0), "bob", NULL, rot, NULL);
        ck_assert_int_eq(validate(&f, MS(T0 + 10), kept, &info, &err), 0);

        /* One iteration's writes, then the transaction is abandoned. */
        ck_assert_int_eq(engine_create(f.e, MS(T0 + 20), &a, &out, &err), 0);
        memcpy(fresh, out.token, sizeof fresh);
        engine_created_clear(&out);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 20), kept, &err), 0);
        ck_assert_int_eq(engine_rotate(f.e, MS(T0 + 20), rot, rotated, &info, &err), 0);
        ck_assert_int_eq(engine_sync_set(f.e, MS(T0 + 20), rotated, "x", 1, -1, sync_answer_cb, &answer, &w, &err), 0);
        engine_abort(f.e);
        ck_assert(!engine_has_pending(f.e));
        ck_assert_int_eq(answer.calls, 1); /* answered with its unit's loss */
        ck_assert_int_eq(answer.r, -EIO);

        ck_assert_int_eq(peek_validate(&f, MS(T0 + 21), fresh, &info, &err), -ENOENT);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 21), rotated, &info, &err), -ENOENT);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 21), kept, &info, &err), 0);
        ck_assert_int_eq(info.last_activity, T0 + 10); /* the touch survived too */
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 21), rot, &info, &err), 0);
        ck_assert_int_eq(engine_sync_get(f.e, MS(T0 + 21), rot, &version, &data, &size, &err), 0);
        ck_assert_int_eq(version, 0);
        fixture_done(&f);
}
END_TEST

/* A VFS that passes everything to the default one, except writes while
 * `fail_writes` is set: a disk that fails under a commit. */
static bool fail_writes;
static sqlite3_vfs faulty_vfs, *real_vfs;

struct faulty_file {
        sqlite3_file base;
        sqlite3_file *real;
};

#define REAL(f) (((struct faulty_file *) (f))->real)
static int f_close(sqlite3_file *f) {
        int rc = REAL(f)->pMethods ? REAL(f)->pMethods->xClose(REAL(f)) : SQLITE_OK;
        sqlite3_free(REAL(f));
        return rc;
}
static int f_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o) {
        return REAL(f)->pMethods->xRead(REAL(f), b, n, o);
}
static int f_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o) {
        return fail_writes ? SQLITE_IOERR_WRITE : REAL(f)->pMethods->xWrite(REAL(f), b, n, o);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 s) {
        return REAL(f)->pMethods->xTruncate(REAL(f), s);
}
static int f_sync(sqlite3_file *f, int fl) {
        return fail_writes ? SQLITE_IOERR_FSYNC : REAL(f)->pMethods->xSync(REAL(f), fl);
}
static int f_size(sqlite3_file *f, sqlite3_int64 *s) {
        return REAL(f)->pMethods->xFileSize(REAL(f), s);
}
static int f_lock(sqlite3_file *f, int l) {
        return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int f_unlock(sqlite3_file *f, int l) {
        return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int f_check(sqlite3_file *f, int *o) {
        return REAL(f)->pMethods->xCheckReservedLock(REAL(f), o);
}
static int f_fcntl(sqlite3_file *f, int op, void *a) {
        return REAL(f)->pMethods->xFileControl(REAL(f), op, a);
}
static int f_sector(sqlite3_file *f) {
        return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int f_dev(sqlite3_file *f) {
        return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shm_map(sqlite3_file *f, int i, int sz, int w, void volatile **p) {
        return REAL(f)->pMethods->xShmMap(REAL(f), i, sz, w, p);
}
static int f_shm_lock(sqlite3_file *f, int o, int n, int fl) {
        return REAL(f)->pMethods->xShmLock(REAL(f), o, n, fl);
}
static void f_shm_barrier(sqlite3_file *f) {
        REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int f_shm_unmap(sqlite3_file *f, int d) {
        return REAL(f)->pMethods->xShmUnmap(REAL(f), d);
}
static int f_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **p) {
        *p = NULL; /* no memory mapping: every read goes through xRead */
        (void) f, (void) o, (void) n;
        return SQLITE_OK;
}
static int f_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p) {
        (void) f, (void) o, (void) p;
        return SQLITE_OK;
}

static const sqlite3_io_methods faulty_methods = {
        3,       f_close,  f_read, f_write,   f_truncate, f_sync,        f_size,      f_lock,  f_unlock,  f_check,
        f_fcntl, f_sector, f_dev,  f_shm_map, f_shm_lock, f_shm_barrier, f_shm_unmap, f_fetch, f_unfetch,
};

static int faulty_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out) {
        struct faulty_file *ff = (struct faulty_file *) file;
        int rc;

        (void) vfs;
        ff->real = sqlite3_malloc(real_vfs->szOsFile);
        if (!ff->real)
                return SQLITE_NOMEM;
        memset(ff->real, 0, real_vfs->szOsFile);
        rc = real_vfs->xOpen(real_vfs, name, ff->real, flags, out);
        file->pMethods = rc == SQLITE_OK ? &faulty_methods : NULL;
        if (rc != SQLITE_OK)
                sqlite3_free(ff->real);
        return rc;
}

#define FWD(name, ...) real_vfs->name(real_vfs, __VA_ARGS__)
static int v_delete(sqlite3_vfs *v, const char *n, int s) {
        (void) v;
        return FWD(xDelete, n, s);
}
static int v_access(sqlite3_vfs *v, const char *n, int f, int *o) {
        (void) v;
        return FWD(xAccess, n, f, o);
}
static int v_full(sqlite3_vfs *v, const char *n, int k, char *o) {
        (void) v;
        return FWD(xFullPathname, n, k, o);
}
static int v_random(sqlite3_vfs *v, int n, char *o) {
        (void) v;
        return FWD(xRandomness, n, o);
}
static int v_sleep(sqlite3_vfs *v, int u) {
        (void) v;
        return FWD(xSleep, u);
}
static int v_time(sqlite3_vfs *v, double *t) {
        (void) v;
        return FWD(xCurrentTime, t);
}
static int v_error(sqlite3_vfs *v, int n, char *o) {
        (void) v;
        return FWD(xGetLastError, n, o);
}
static int v_time64(sqlite3_vfs *v, sqlite3_int64 *t) {
        (void) v;
        return FWD(xCurrentTimeInt64, t);
}

static void faulty_register(void) {
        real_vfs = sqlite3_vfs_find(NULL);
        ck_assert_ptr_nonnull(real_vfs);
        faulty_vfs = (sqlite3_vfs){
                .iVersion = 2,
                .szOsFile = sizeof(struct faulty_file),
                .mxPathname = real_vfs->mxPathname,
                .zName = "faulty",
                .xOpen = faulty_open,
                .xDelete = v_delete,
                .xAccess = v_access,
                .xFullPathname = v_full,
                .xRandomness = v_random,
                .xSleep = v_sleep,
                .xCurrentTime = v_time,
                .xGetLastError = v_error,
                .xCurrentTimeInt64 = v_time64,
        };
        /* The default: the engine opens its store through it unawares. */
        ck_assert_int_eq(sqlite3_vfs_register(&faulty_vfs, 1), SQLITE_OK);
}

START_TEST(test_commit_failure_restores_memory) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        struct engine_create a = {.user_id = "alice"};
        struct engine_created out;
        char *path = path_in("sessions.db");
        char kept[TOKEN_STRING_LEN + 1], fresh[TOKEN_STRING_LEN + 1], after[TOKEN_STRING_LEN + 1];

        faulty_register();
        fixture_init(&f, path);
        short_timeouts(&f);
        fixture_open(&f);
        create_session(&f, MS(T0), "alice", NULL, kept, NULL);

        ck_assert_int_eq(engine_create(f.e, MS(T0 + 1), &a, &out, &err), 0);
        memcpy(fresh, out.token, sizeof fresh);
        engine_created_clear(&out);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 1), kept, &err), 0);
        fail_writes = true;
        ck_assert_int_lt(engine_commit(f.e), 0);
        fail_writes = false;
        ck_assert_uint_eq(counters(&f)->commit_failures, 1);

        /* Memory matches the database: nothing of the failed iteration. */
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 2), fresh, &info, &err), -ENOENT);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 2), kept, &info, &err), 0);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM sessions"), 1);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM sessions WHERE ended_at IS NULL"), 1);

        /* And the store works on. */
        create_session(&f, MS(T0 + 3), "alice", NULL, after, NULL);
        fixture_close(&f);
        fixture_open(&f);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 4), after, &info, &err), 0);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 4), kept, &info, &err), 0);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 4), fresh, &info, &err), -ENOENT);
        fixture_done(&f);
        scratch_remove();
}
END_TEST

START_TEST(test_refuses_database_without_key) {
        struct fixture f;
        char *path = path_in("sessions.db"), *key = path_in("sessiond.key");
        struct engine *e = NULL;

        fixture_init(&f, path);
        fixture_open(&f);
        create_session(&f, MS(T0), "alice", NULL, NULL, NULL);
        fixture_close(&f);
        ck_assert_int_eq(unlink(key), 0);
        ck_assert_int_eq(engine_new(&f.d, &e), -ENOENT);
        ck_assert_ptr_null(e);
        ck_assert_int_eq(access(key, F_OK), -1); /* no new key hides the problem */
        fixture_done(&f);
        scratch_remove();
}
END_TEST

/* daemon.key_file: the key lives there, not beside the database; a restart
 * with it validates the tokens made before, and it is required like
 * sessiond.key once the database exists. */
START_TEST(test_key_file_setting) {
        struct fixture f;
        char *path = path_in("db/sessions.db"), *folder = path_in("keys"), *key = path_in("keys/fleet.key");
        char token[TOKEN_STRING_LEN + 1];
        struct engine_info info;
        struct engine_error err;
        struct engine *e = NULL;

        ck_assert_int_eq(mkdir(folder, 0700), 0);
        fixture_init(&f, path);
        free(f.c->daemon.key_file);
        f.c->daemon.key_file = strdup(key);
        fixture_open(&f);
        create_session(&f, MS(T0), "alice", NULL, token, NULL);
        fixture_close(&f);
        ck_assert_int_eq(access(key, F_OK), 0);
        ck_assert_int_eq(access(path_in("db/sessiond.key"), F_OK), -1);

        fixture_open(&f);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 4), token, &info, &err), 0);
        fixture_close(&f);

        ck_assert_int_eq(unlink(key), 0);
        ck_assert_int_eq(engine_new(&f.d, &e), -ENOENT);
        ck_assert_int_eq(access(key, F_OK), -1);
        fixture_done(&f);
        scratch_remove();
}
END_TEST

START_TEST(test_refuses_corrupt_database) {
        struct fixture f;
        char *path = path_in("sessions.db");
        struct engine *e = NULL;
        struct blob before, after;

        fixture_init(&f, path);
        fixture_open(&f);
        create_session(&f, MS(T0), "alice", NULL, NULL, NULL);
        fixture_close(&f);
        write_file(path, "this is not a database, not at all......", 40, 0600);
        before = read_file(path);
        ck_assert_int_eq(engine_new(&f.d, &e), -EBADMSG);
        after = read_file(path);
        ck_assert(blob_equal(before, after));
        free(before.data);
        free(after.data);
        fixture_done(&f);
        scratch_remove();
}
END_TEST

START_TEST(test_persistence_off) {
        struct fixture f;
        char *path = path_in("sessions.db");

        fixture_init(&f, path);
        f.c->features.persistence = false;
        fixture_open(&f);
        create_session(&f, MS(T0), "alice", NULL, NULL, NULL);
        fixture_done(&f);
        ck_assert_int_eq(access(path, F_OK), -1);
        {
                char *key = path_in("sessiond.key");
                ck_assert_int_eq(access(key, F_OK), -1);
        }
        scratch_remove();
}
END_TEST

/* ---- events, audit, suspicious activity ----------------------------------------------------------- */

static char seen[64][32];
static unsigned n_seen;

static void record_cb(const struct engine_event *ev, void *userdata) {
        (void) userdata;
        if (n_seen < 64)
                snprintf(seen[n_seen++], sizeof seen[0], "%s", ev->kind);
}

static bool was_seen(const char *kind) {
        for (unsigned i = 0; i < n_seen; i++)
                if (strcmp(seen[i], kind) == 0)
                        return true;
        return false;
}

START_TEST(test_events_after_commit) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_create a = {.user_id = "alice"};
        struct engine_created out;
        char token[TOKEN_STRING_LEN + 1];
        int marker;

        setup_memory(&f);
        ck_assert_int_eq(engine_add_observer(f.e, record_cb, NULL, &marker), 0);
        ck_assert_ptr_eq(engine_find_observer(f.e, record_cb), &marker);
        n_seen = 0;
        ck_assert_int_eq(engine_create(f.e, MS(T0), &a, &out, &err), 0);
        memcpy(token, out.token, sizeof token);
        engine_created_clear(&out);
        ck_assert_uint_eq(n_seen, 0); /* not before the commit */
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert(was_seen("created"));

        /* A rolled-back write is never told. */
        n_seen = 0;
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 1), token, &err), 0);
        engine_abort(f.e);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(n_seen, 0);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 1), token, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert(was_seen("ended"));
        engine_remove_observer(f.e, record_cb, &marker);
        ck_assert_ptr_null(engine_find_observer(f.e, record_cb));
        fixture_done(&f);
}
END_TEST

/* The sync event of a compare-and-set: told only when the write applied,
 * and in its place among its unit's events (before an `ended` of the same
 * unit, which ends a Watch). Another daemon that ends the session while an
 * unconditional write is outrun: the write is not made again. */
static void other_daemon_ends(const char *path, const char *id) {
        sqlite3 *db;
        sqlite3_stmt *st;

        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        ck_assert_int_eq(sqlite3_prepare_v2(db,
                                            "UPDATE sessions SET sync_version = sync_version + 1, ended_at = "
                                            "created_at + 1, end_reason = 'destroyed' WHERE id = ?1",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
        ck_assert_int_eq(sqlite3_changes(db), 1);
        sqlite3_finalize(st);
        sqlite3_close(db);
}

START_TEST(test_sync_events) {
        struct fixture f;
        struct engine_error err = {0};
        char *path = path_in("sessions.db");
        char token[TOKEN_STRING_LEN + 1], id[TOKEN_ID_STRING_LEN + 1];
        struct sync_answer x = {0};
        struct engine_sync_wait *w = NULL;
        int marker;

        fixture_init(&f, path);
        fixture_open(&f);
        ck_assert_int_eq(engine_add_observer(f.e, record_cb, NULL, &marker), 0);
        create_session(&f, MS(T0), "alice", NULL, token, id);
        ck_assert_int_eq(engine_commit(f.e), 0);

        /* Outrun: Conflict, and no event. */
        n_seen = 0;
        ck_assert_int_eq(engine_sync_set(f.e, MS(T0 + 1), token, "mine", 4, 0, sync_answer_cb, &x, &w, &err), 0);
        other_daemon_writes(path, id, "theirs");
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(x.r, -EAGAIN);
        ck_assert(!was_seen("sync"));

        /* Written, then destroyed in the same unit: sync, then ended. */
        n_seen = 0;
        memset(&x, 0, sizeof x);
        ck_assert_int_eq(engine_sync_set(f.e, MS(T0 + 2), token, "a", 1, 1, sync_answer_cb, &x, &w, &err), 0);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 2), token, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(x.r, 0);
        ck_assert_int_eq(x.version, 2);
        ck_assert_uint_eq(n_seen, 2);
        ck_assert_str_eq(seen[0], "sync");
        ck_assert_str_eq(seen[1], "ended");

        /* Unconditional, outrun by a daemon that ended the session. */
        create_session(&f, MS(T0 + 3), "alice", NULL, token, id);
        ck_assert_int_eq(engine_commit(f.e), 0);
        n_seen = 0;
        memset(&x, 0, sizeof x);
        ck_assert_int_eq(engine_sync_set(f.e, MS(T0 + 4), token, "b", 1, -1, sync_answer_cb, &x, &w, &err), 0);
        other_daemon_ends(path, id);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(x.calls, 1);
        ck_assert_int_eq(x.r, -ESTALE);
        ck_assert_int_eq(x.end_reason, ENGINE_END_DESTROYED);
        ck_assert(!was_seen("sync"));
        ck_assert_int_eq(engine_commit(f.e), 0); /* nothing recorded again */
        ck_assert_int_eq(x.calls, 1);
        engine_remove_observer(f.e, record_cb, &marker);
        fixture_done(&f);
        scratch_remove();
}
END_TEST

/* Ended-session events of the cleanup: each one with its user and reason. */
static unsigned ended_events;
static void ended_cb(const struct engine_event *ev, void *userdata) {
        (void) userdata;
        if (strcmp(ev->kind, "ended") != 0)
                return;
        ck_assert_ptr_nonnull(ev->session_id);
        ck_assert_str_eq(ev->user_id, "user");
        ck_assert_str_eq(json_string_value(json_object_get(ev->detail, "reason")), "idle");
        ck_assert(json_is_integer(json_object_get(ev->detail, "duration")));
        ended_events++;
}

/* A deadline already past: every call still ends a few sessions (the clock
 * is read every few), says there may be more, and the calls together end
 * them all, with the same audit rows and events as without a deadline. */
START_TEST(test_cleanup_deadline) {
        struct fixture f;
        char *path = path_in("sessions.db");
        char t[20][TOKEN_STRING_LEN + 1];
        unsigned ended, total = 0, calls = 0;
        bool more;
        int marker;

        fixture_init(&f, path);
        short_timeouts(&f);
        f.c->security.max_concurrent_per_user = 100;
        fixture_open(&f);
        for (int i = 0; i < 20; i++)
                create_session(&f, MS(T0), "user", NULL, t[i], NULL);
        ck_assert_int_eq(engine_add_observer(f.e, ended_cb, NULL, &marker), 0);
        ended_events = 0;
        do {
                ck_assert_int_eq(engine_cleanup_expired_until(f.e, MS(T0 + 120), 100, 1, &ended, &more), 0);
                ck_assert_int_eq(engine_commit(f.e), 0);
                engine_dispatch_events(f.e);
                ck_assert_uint_ge(ended, more ? 1 : 0);
                ck_assert_uint_lt(ended, 20); /* stopped by the clock, not by the limit */
                total += ended;
                calls++;
        } while (more);
        ck_assert_uint_eq(total, 20);
        ck_assert_uint_gt(calls, 1);
        ck_assert_uint_eq(ended_events, 20);
        ck_assert_uint_eq(engine_count_awaiting_cleanup(f.e, MS(T0 + 120)), 0);
        ck_assert_uint_eq(counters(&f)->ended[ENGINE_END_IDLE], 20);
        /* The audit detail as json_dumps wrote it before. */
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM audit WHERE kind = 'ended' "
                                        "AND detail = '{\"reason\":\"idle\"}'"),
                         20);
        /* No deadline: the limit alone. */
        ck_assert_int_eq(engine_cleanup_expired_until(f.e, MS(T0 + 120), 100, 0, &ended, &more), 0);
        ck_assert_uint_eq(ended, 0);
        ck_assert(!more);
        engine_remove_observer(f.e, ended_cb, &marker);
        fixture_done(&f);
        scratch_remove();
}
END_TEST

/* A table larger than one step can pass (the clock is read every 4096
 * entries; a deadline of 1 ns is always past): steps go on where the last
 * stopped, and once the cursor has gone round without finding anything the
 * answer is "no more", not "maybe" for ever. */
START_TEST(test_cleanup_deadline_large_table) {
        struct fixture f;
        enum { N = 10000 };
        char token[TOKEN_STRING_LEN + 1];
        unsigned ended, total = 0, calls = 0;
        bool more;

        setup_memory(&f);
        for (int i = 0; i < N; i++) {
                char user[32];

                snprintf(user, sizeof user, "user%d", i);
                create_session(&f, MS(T0), user, NULL, token, NULL);
        }
        /* Nothing awaits cleanup yet. */
        do {
                ck_assert_int_eq(engine_cleanup_expired_until(f.e, MS(T0 + 1), 100, 1, &ended, &more), 0);
                ck_assert_uint_eq(ended, 0);
                ck_assert_uint_lt(++calls, 100);
        } while (more);
        ck_assert_uint_le(calls, N / 4095 + 2);
        /* Counted in steps (the trigger's poll): every one, once. */
        {
                uint32_t cursor = 0;
                uint64_t count = 0;

                calls = 0;
                while (!engine_count_awaiting_cleanup_step(f.e, MS(T0 + 120), 1, &cursor, &count))
                        ck_assert_uint_lt(++calls, 100);
                ck_assert_uint_eq(count, N);
                ck_assert_uint_eq(calls, N / 4096);
                ck_assert_uint_eq(cursor, 0);
                ck_assert_uint_eq(engine_count_awaiting_cleanup(f.e, MS(T0 + 120)), N);
        }
        /* Everything does now: each step ends a few, the last says so. */
        calls = 0;
        do {
                ck_assert_int_eq(engine_cleanup_expired_until(f.e, MS(T0 + 120), 1000, 1, &ended, &more), 0);
                ck_assert_int_eq(engine_commit(f.e), 0);
                total += ended;
                ck_assert_uint_lt(++calls, 2 * N);
        } while (more);
        ck_assert_uint_eq(total, N);
        ck_assert_uint_eq(engine_count_awaiting_cleanup(f.e, MS(T0 + 120)), 0);
        fixture_done(&f);
}
END_TEST

/* A pass that found nothing says nothing of later: the next run's first
 * step, out of time before it reaches the sessions that await cleanup by
 * then, still says there may be more, and the steps end them all. */
START_TEST(test_cleanup_quiet_goes_stale) {
        struct fixture f;
        enum { N = 10000, LATE = 9000 };
        char token[TOKEN_STRING_LEN + 1];
        unsigned ended, total = 0, calls = 0;
        bool more;

        setup_memory(&f);
        for (int i = 0; i < N; i++) {
                char user[32];

                snprintf(user, sizeof user, "user%d", i);
                /* The first LATE entries are created later: they await cleanup later. */
                create_session(&f, MS(T0 + (i < LATE ? 100 : 0)), user, NULL, token, NULL);
        }
        do {
                ck_assert_int_eq(engine_cleanup_expired_until(f.e, MS(T0 + 101), 100, 1, &ended, &more), 0);
                ck_assert_uint_eq(ended, 0);
                ck_assert_uint_lt(++calls, 100);
        } while (more);
        /* The early ones await now, the late ones do not. */
        ck_assert_uint_eq(engine_count_awaiting_cleanup(f.e, MS(T0 + 120)), N - LATE);
        calls = 0;
        do {
                ck_assert_int_eq(engine_cleanup_expired_until(f.e, MS(T0 + 120), 1000, 1, &ended, &more), 0);
                ck_assert_int_eq(engine_commit(f.e), 0);
                total += ended;
                ck_assert_uint_lt(++calls, 2 * N);
        } while (more);
        ck_assert_uint_eq(total, N - LATE);
        ck_assert_uint_eq(engine_count_awaiting_cleanup(f.e, MS(T0 + 120)), 0);
        fixture_done(&f);
}
END_TEST

START_TEST(test_suspicious_threshold) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        struct engine_client a = {.user_agent = "A"}, b = {.user_agent = "B"};
        char *path = path_in("sessions.db");
        char token[TOKEN_STRING_LEN + 1];
        int marker;

        fixture_init(&f, path);
        f.c->security.suspicious_activity_threshold = 3;
        fixture_open(&f);
        ck_assert_int_eq(engine_add_observer(f.e, record_cb, NULL, &marker), 0);
        n_seen = 0;
        create_session(&f, MS(T0), "mallory", &a, token, NULL);
        for (int i = 0; i < 5; i++)
                ck_assert_int_eq(engine_validate(f.e, MS(T0 + 1 + i), token, &b, true, &info, &err), -EACCES);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(counters(&f)->suspicious, 5);
        ck_assert_uint_eq(counters(&f)->suspicious_alerts, 1); /* once per crossing */
        ck_assert(was_seen("suspicious_threshold"));
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM audit WHERE kind = 'suspicious' AND user_id = 'mallory'"),
                         1);
        /* The five failures: counted, in one aggregated row once written. */
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM audit WHERE kind = 'validation_failed'"), 0);
        engine_audit_flush(f.e);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM audit WHERE kind = 'validation_failed'"), 1);
        ck_assert_int_eq(db_count(path, "SELECT json_extract(detail, '$.count') FROM audit "
                                        "WHERE kind = 'validation_failed' AND user_id = 'mallory' "
                                        "AND json_extract(detail, '$.reason') = 'fingerprint'"),
                         5);

        /* An hour later the window is empty: crossing again alerts again. */
        engine_security_sweep(f.e, MS(T0 + 3700));
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(engine_validate(f.e, MS(T0 + 3700 + i), token, &b, true, &info, &err), -EACCES);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(counters(&f)->suspicious_alerts, 2);

        /* Detection off: nothing counted. */
        f.c->security.suspicious_detection = false;
        ck_assert_int_eq(engine_validate(f.e, MS(T0 + 3800), token, &b, true, &info, &err), -EACCES);
        ck_assert_uint_eq(counters(&f)->suspicious, 8);
        fixture_done(&f);
        scratch_remove();
}
END_TEST

START_TEST(test_failed_validation_burst) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char token[TOKEN_STRING_LEN + 1];

        setup_memory(&f);
        create_session(&f, MS(T0), "alice", NULL, token, NULL);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0), token, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        for (int i = 0; i < 9; i++)
                ck_assert_int_eq(validate(&f, MS(T0 + 1), token, &info, &err), -ESTALE);
        ck_assert_uint_eq(counters(&f)->suspicious, 0);
        ck_assert_int_eq(validate(&f, MS(T0 + 2), token, &info, &err), -ESTALE);
        ck_assert_uint_eq(counters(&f)->suspicious, 1);
        fixture_done(&f);
}
END_TEST

static void count_failed_cb(const struct engine_event *ev, void *userdata) {
        if (strcmp(ev->kind, "validation_failed") == 0)
                (*(unsigned *) userdata)++;
}

/* Failed validations write one audit row per (user, reason, end reason)
 * and interval, with a count; the suspicious counting and the events stay
 * per failure. */
START_TEST(test_failed_validations_aggregated) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char *path = path_in("sessions.db");
        char token[TOKEN_STRING_LEN + 1], other[TOKEN_STRING_LEN + 1], id[TOKEN_ID_STRING_LEN + 1], bogus[44];
        unsigned events = 0;

        fixture_init(&f, path);
        short_timeouts(&f);
        fixture_open(&f);
        ck_assert_int_eq(engine_add_observer(f.e, count_failed_cb, NULL, &events), 0);
        create_session(&f, MS(T0), "alice", NULL, token, id);
        create_session(&f, MS(T0), "alice", NULL, other, NULL);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0), token, &err), 0);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0), other, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        memset(bogus, 'A', 43);
        bogus[43] = '\0';
        for (int i = 0; i < 1000; i++) {
                bogus[i % 42] = "BCDEFGHIJKLMNOPQRSTUVWXYZ"[i % 25];
                ck_assert_int_eq(validate(&f, MS(T0 + 1 + i / 100), bogus, &info, &err), -ENOENT);
        }
        for (int i = 0; i < 30; i++)
                ck_assert_int_eq(validate(&f, MS(T0 + 2), token, &info, &err), -ESTALE);
        ck_assert_int_eq(validate(&f, MS(T0 + 3), "bogus", &info, &err), -EINVAL);
        ck_assert_uint_eq(counters(&f)->validate_failed[ENGINE_FAIL_NOT_FOUND], 1000);
        ck_assert_uint_eq(counters(&f)->suspicious, 3); /* a burst of 10 failures: exact */
        engine_dispatch_events(f.e);
        ck_assert_uint_eq(events, 1031); /* one event per failure */
        ck_assert_uint_eq(engine_audit_pending(f.e), 3);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM audit WHERE kind = 'validation_failed'"), 0);

        /* The timer's tick writes them once the interval that began with
         * the first one is over. */
        engine_audit_tick(f.e, MS(T0 + 60));
        ck_assert(!engine_has_pending(f.e));
        ck_assert_uint_eq(engine_audit_pending(f.e), 3);
        engine_audit_tick(f.e, MS(T0 + 61));
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(engine_audit_pending(f.e), 0);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM audit WHERE kind = 'validation_failed'"), 3);
        ck_assert_int_eq(db_count(path, "SELECT sum(json_extract(detail, '$.count')) FROM audit "
                                        "WHERE kind = 'validation_failed'"),
                         1031);
        ck_assert_int_eq(db_count(path,
                                  "SELECT count(*) FROM audit WHERE kind = 'validation_failed' "
                                  "AND user_id IS NULL AND session_id IS NULL AND time = "
                                  "1700000010 "
                                  "AND detail = '{\"reason\":\"not_found\",\"count\":1000,\"since\":1700000001}'"),
                         1);
        /* One session's failures keep its id. */
        ck_assert_int_eq(
                db_count(path,
                         "SELECT count(*) FROM audit WHERE kind = 'validation_failed' "
                         "AND user_id = 'alice' AND session_id IS NOT NULL AND detail = "
                         "'{\"reason\":\"expired\",\"end_reason\":\"destroyed\",\"count\":30,\"since\":1700000002}'"),
                1);
        ck_assert_uint_eq(counters(&f)->audit_rows, 4 + 3); /* created twice, ended twice */
        /* Two sessions of one user: one row, no session id. */
        ck_assert_int_eq(validate(&f, MS(T0 + 100), token, &info, &err), -ESTALE);
        ck_assert_int_eq(validate(&f, MS(T0 + 101), other, &info, &err), -ESTALE);
        fixture_close(&f); /* shutdown writes what is held */
        ck_assert_int_eq(
                db_count(path,
                         "SELECT count(*) FROM audit WHERE kind = 'validation_failed' "
                         "AND user_id = 'alice' AND session_id IS NULL AND time = 1700000101 AND detail = "
                         "'{\"reason\":\"expired\",\"end_reason\":\"destroyed\",\"count\":2,\"since\":1700000100}'"),
                1);
        sessiond_config_free(f.c);
        scratch_remove();
}
END_TEST

START_TEST(test_audit_switch) {
        struct fixture f;
        struct engine_error err = {0};
        char *path = path_in("sessions.db");
        char token[TOKEN_STRING_LEN + 1];
        json_t *detail = json_pack("{s:i}", "changed", 3);

        fixture_init(&f, path);
        short_timeouts(&f);
        fixture_open(&f);
        create_session(&f, MS(T0), "alice", NULL, token, NULL);
        ck_assert_int_eq(engine_audit(f.e, MS(T0), "config_reloaded", NULL, NULL, detail), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM audit WHERE kind = 'created'"), 1);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM audit WHERE kind = 'config_reloaded' "
                                        "AND detail = '{\"changed\":3}'"),
                         1);
        f.c->security.audit_logging = false;
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 1), token, &err), 0);
        ck_assert_int_eq(engine_audit(f.e, MS(T0), "config_reloaded", NULL, NULL, detail), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(db_count(path, "SELECT count(*) FROM audit"), 2);
        json_decref(detail);
        fixture_done(&f);
        scratch_remove();
}
END_TEST

struct final_got {
        unsigned calls;
        int r;
        bool info;
        char reason[32];
};

static void final_got_cb(int r, const struct engine_info *info, void *userdata) {
        struct final_got *g = userdata;

        g->calls++;
        g->r = r;
        g->info = info != NULL;
        if (info)
                snprintf(g->reason, sizeof g->reason, "%s", engine_end_reason_to_string(info->end_reason));
}

START_TEST(test_watch_support) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        struct engine_ref ref;
        char token[TOKEN_STRING_LEN + 1], id[TOKEN_ID_STRING_LEN + 1];
        struct states st = {0};
        int64_t version;
        char *data;
        size_t size;

        setup_memory(&f);
        create_session(&f, MS(T0), "alice", NULL, token, id);
        ck_assert_int_eq(engine_resolve(f.e, MS(T0 + 1), token, &ref, &info, &err), 0);
        ck_assert_str_eq(info.id, id);
        ck_assert_int_eq(info.last_activity, T0); /* resolving does not touch */
        ck_assert_int_eq(engine_peek(f.e, MS(T0 + 105), &ref, &info), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_GRACE);
        ck_assert_int_eq(sync_set(f.e, MS(T0 + 2), token, "abc", 3, -1, &version, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(engine_sync_get_by_id(f.e, id, &version, &data, &size), 0);
        ck_assert_str_eq(data, "abc");
        free(data);
        ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 3), token, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(engine_peek(f.e, MS(T0 + 3), &ref, &info), -ENOENT);
        ck_assert_int_eq(engine_session_by_id(f.e, MS(T0 + 3), id, state_cb, &st), 0);
        ck_assert_uint_eq(st.ended, 1);
        ck_assert_str_eq(st.reason, "destroyed");
        ck_assert_int_eq(engine_session_by_id(f.e, MS(T0 + 3), "nnnnnnnnnnnnnnnnnnnnnn", state_cb, &st), -ENOENT);
        /* Not a fleet: the final reply's row is read at once, on the loop. */
        {
                struct final_got g = {0};
                struct engine_session_read *x = (void *) 1;

                ck_assert_int_eq(engine_session_by_id_later(f.e, MS(T0 + 3), id, &ref, final_got_cb, &g, &x), 0);
                ck_assert_ptr_null(x);
                ck_assert_uint_eq(g.calls, 1);
                ck_assert_int_eq(g.r, 0);
                ck_assert(g.info);
                ck_assert_str_eq(g.reason, "destroyed");
                g = (struct final_got){0};
                ck_assert_int_eq(engine_session_by_id_later(f.e, MS(T0 + 3), "nnnnnnnnnnnnnnnnnnnnnn", &ref,
                                                            final_got_cb, &g, NULL),
                                 0);
                ck_assert_uint_eq(g.calls, 1);
                ck_assert_int_eq(g.r, -ENOENT);
                ck_assert(!g.info);
                ck_assert_uint_eq(engine_get_counters(f.e)->final_reads_on_loop, 2);
                ck_assert_uint_eq(engine_get_counters(f.e)->final_reads_after_commit, 0);
        }
        fixture_done(&f);
}
END_TEST

/* The start-up loads rows in batches (engine/load.c): more rows than a batch,
 * a user id and a platform too long for a batch's copy, and the order of
 * each user's sessions, all come back as they were. */
START_TEST(test_restart_loads_in_batches) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char *path = path_in("sessions.db");
        enum { N = 100 };
        char t[N][TOKEN_STRING_LEN + 1], user[N][128];
        struct engine_counts counts;

        fixture_init(&f, path);
        short_timeouts(&f);
        f.c->security.max_concurrent_per_user = 100;
        fixture_open(&f);
        for (int i = 0; i < N; i++) {
                if (i % 37 == 5) /* longer than the copy's room */
                        snprintf(user[i], sizeof user[i], "%0100d", i);
                else
                        snprintf(user[i], sizeof user[i], "user%d", i % 7);
                create_session(&f, MS(T0), user[i], NULL, t[i], NULL);
        }
        ck_assert_int_eq(engine_switch_platform(f.e, MS(T0 + 1), t[40],
                                                "a-platform-name-longer-than-sixty-four-characters-0123456789abcdef",
                                                &info, &err),
                         0);
        ck_assert_int_eq(engine_switch_platform(f.e, MS(T0 + 1), t[41], "ios", &info, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        engine_count(f.e, MS(T0 + 1), &counts);
        fixture_close(&f);

        fixture_open(&f);
        {
                struct engine_counts again;

                engine_count(f.e, MS(T0 + 1), &again);
                ck_assert_uint_eq(again.sessions, N);
                ck_assert_uint_eq(again.users, counts.users);
        }
        for (int i = 0; i < N; i++) {
                ck_assert_int_eq(peek_validate(&f, MS(T0 + 2), t[i], &info, &err), 0);
                ck_assert_str_eq(info.user_id, user[i]);
        }
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 2), t[40], &info, &err), 0);
        ck_assert_str_eq(info.platform_id, "a-platform-name-longer-than-sixty-four-characters-0123456789abcdef");
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 2), t[41], &info, &err), 0);
        ck_assert_str_eq(info.platform_id, "ios");
        fixture_done(&f);
        scratch_remove();
}
END_TEST

START_TEST(test_many_sessions) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        enum { N = 20000 };
        char(*t)[TOKEN_STRING_LEN + 1] = calloc(N, sizeof *t);
        struct engine_counts counts;
        unsigned ended;
        bool more;

        ck_assert_ptr_nonnull(t);
        setup_memory(&f);
        for (int i = 0; i < N; i++) {
                char user[32];
                snprintf(user, sizeof user, "user%d", i % 5000);
                create_session(&f, MS(T0), user, NULL, t[i], NULL);
        }
        engine_count(f.e, MS(T0), &counts);
        ck_assert_uint_eq(counts.sessions, N);
        ck_assert_uint_eq(counts.users, 5000);
        for (int i = 0; i < N; i += 7)
                ck_assert_int_eq(validate(&f, MS(T0 + 1), t[i], &info, &err), 0);
        /* End half of them, then check every token still finds its answer. */
        for (int i = 0; i < N; i += 2)
                ck_assert_int_eq(engine_destroy(f.e, MS(T0 + 2), t[i], &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        for (int i = 0; i < N; i++)
                ck_assert_int_eq(peek_validate(&f, MS(T0 + 3), t[i], &info, &err), i % 2 ? 0 : -ESTALE);
        /* New sessions reuse the freed entries; nobody loses theirs. */
        for (int i = 0; i < N; i += 2)
                create_session(&f, MS(T0 + 4), "newcomer", NULL, t[i], NULL);
        for (int i = 0; i < N; i++)
                ck_assert_int_eq(peek_validate(&f, MS(T0 + 5), t[i], &info, &err), i % 2 || i >= N - 10 ? 0 : -ESTALE);
        ck_assert_int_eq(engine_cleanup_expired(f.e, MS(T0 + 1000), N, &ended, &more), 0);
        ck_assert_uint_eq(ended, N / 2 + 5);
        ck_assert_int_eq(engine_commit(f.e), 0);
        engine_count(f.e, MS(T0), &counts);
        ck_assert_uint_eq(counts.sessions, 0);
        /* Failed validations are remembered per user for a minute (bursts)
         * and the suspicious events they make for an hour; then the users
         * are forgotten. */
        ck_assert_uint_eq(counts.users, N / 2 / 4 + 1);
        engine_security_sweep(f.e, MS(T0 + 3700));
        engine_count(f.e, MS(T0), &counts);
        ck_assert_uint_eq(counts.users, 0);
        free(t);
        fixture_done(&f);
}
END_TEST

/* ---- times to the millisecond (issue 13) ---------------------------------------------------------- */

/* A session's four times share 5 bytes of milliseconds (10 bits each,
 * engine-internal.h): each reads back what was set, to the millisecond,
 * whatever the others hold, and out-of-range times clamp as before. */
START_TEST(test_session_times_packed) {
        struct session s;
        int64_t want[_ST_MAX] = {1700000000000, 1700000123456, 1234567, 0};

        memset(&s, 0xff, sizeof s);
        for (unsigned w = 0; w < _ST_MAX; w++)
                session_ms_set(&s, w, want[w] += 999);
        for (unsigned w = 0; w < _ST_MAX; w++)
                for (unsigned ms = 0; ms < 1000; ms++) {
                        want[w] = want[w] / 1000 * 1000 + ms;
                        session_ms_set(&s, w, want[w]);
                        for (unsigned o = 0; o < _ST_MAX; o++)
                                ck_assert_int_eq(session_ms(&s, o), want[o]);
                        ck_assert_int_eq(s.flags, 0xff);
                        ck_assert_int_eq(s.fp_small[2], 0xffff);
                }
        session_ms_set(&s, ST_RENEWED, -5);
        ck_assert_int_eq(session_ms(&s, ST_RENEWED), 0);
        session_ms_set(&s, ST_PERSISTED, INT64_MAX);
        ck_assert_int_eq(session_ms(&s, ST_PERSISTED), SEC_MS(UINT32_MAX) + 999);
        ck_assert_int_eq(session_ms(&s, ST_CREATED), want[ST_CREATED]);
        ck_assert_int_eq(session_ms(&s, ST_ACTIVITY), want[ST_ACTIVITY]);
}
END_TEST

struct ended_info {
        enum engine_state state;
        enum engine_end_reason reason;
        int64_t ended_at, ended_at_ms, last_activity;
};

static int ended_info_cb(const struct engine_info *i, void *userdata) {
        struct ended_info *x = userdata;

        x->state = i->state;
        x->reason = i->end_reason;
        x->ended_at = i->ended_at;
        x->ended_at_ms = i->expires_at_ms;
        x->last_activity = i->last_activity;
        return 1;
}

/* idle_timeout 3 s, grace 2 s, cleanup grace 2 s, warning 1 s: a session
 * heartbeated at 10.9 s must stay active until 13.9 s. With whole seconds
 * the heartbeat counted as 10 s and the session was in grace from 13 s,
 * warned from 12 s and ended by the cleanup from 15 s. */
START_TEST(test_fractional_idle) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        struct ended_info ended = {0};
        char token[TOKEN_STRING_LEN + 1], id[TOKEN_ID_STRING_LEN + 1];
        unsigned n;
        bool more;

        fixture_init(&f, path_in("sessions.db"));
        short_timeouts(&f);
        f.c->timeout.idle_timeout = 3;
        f.c->timeout.expiration_grace = 2;
        f.c->timeout.cleanup_grace = 2;
        f.c->timeout.warning_threshold = 1;
        fixture_open(&f);
        create_session(&f, MS(T0 + 10) + 100, "alice", NULL, token, id);
        ck_assert_int_eq(engine_heartbeat(f.e, MS(T0 + 10) + 900, token, &info, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        /* The protocol's seconds: times floored, the end rounded up. */
        ck_assert_int_eq(info.created_at, T0 + 10);
        ck_assert_int_eq(info.last_activity, T0 + 10);
        ck_assert_int_eq(info.expires_at, T0 + 14);
        ck_assert_int_eq(info.expires_at_ms, MS(T0 + 13) + 900);
        ck_assert_int_eq(info.expires_in, 3);

        /* The warning: exactly when at most 1 s is left, at 12.9 s. */
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 12) + 899, token, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_ACTIVE);
        ck_assert_int_eq(info.expires_in, 2); /* 1.001 s, never told less */
        ck_assert(!info.warning);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 12) + 900, token, &info, &err), 0);
        ck_assert_int_eq(info.expires_in, 1);
        ck_assert(info.warning);

        /* Active at 13.8 s and 13.899 s; grace from 13.9 s on. */
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 13) + 800, token, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_ACTIVE);
        ck_assert_int_eq(info.expires_in, 1);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 13) + 899, token, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_ACTIVE);
        ck_assert_int_eq(info.expires_in, 1); /* 1 ms left: a live session never shows 0 */
        ck_assert(info.warning);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 13) + 900, token, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_GRACE);
        ck_assert_int_eq(info.expires_in, 0);
        ck_assert_int_eq(info.end_reason, ENGINE_END_IDLE);

        /* Cleanup (end + cleanup grace: 15.9 s) never ends it early, and
         * the count of sessions awaiting it agrees. */
        ck_assert_uint_eq(engine_count_awaiting_cleanup(f.e, MS(T0 + 15) + 899), 0);
        ck_assert_int_eq(engine_cleanup_expired(f.e, MS(T0 + 15) + 899, 100, &n, &more), 0);
        ck_assert_uint_eq(n, 0);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 15) + 899, token, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_GRACE);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 15) + 900, token, &info, &err), -ESTALE);
        ck_assert_int_eq(err.end_reason, ENGINE_END_IDLE);
        ck_assert_uint_eq(engine_count_awaiting_cleanup(f.e, MS(T0 + 15) + 900), 1);
        ck_assert_int_eq(engine_cleanup_expired(f.e, MS(T0 + 15) + 900, 100, &n, &more), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(engine_commit(f.e), 0);

        /* The store has the end to the millisecond; SessionInfo floors it. */
        ck_assert_int_eq(engine_session_by_id(f.e, MS(T0 + 16), id, ended_info_cb, &ended), 0);
        ck_assert_int_eq(ended.state, ENGINE_STATE_ENDED);
        ck_assert_int_eq(ended.reason, ENGINE_END_IDLE);
        ck_assert_int_eq(ended.ended_at_ms, MS(T0 + 13) + 900);
        ck_assert_int_eq(ended.ended_at, T0 + 13);
        ck_assert_int_eq(ended.last_activity, T0 + 10);
        ck_assert_int_eq(db_count(path_in("sessions.db"), "SELECT ended_at * 1000 + ended_at_ms FROM sessions"),
                         MS(T0 + 13) + 900);
        fixture_done(&f);
        scratch_remove();
}
END_TEST

/* The lifetime and the absolute cap count from the millisecond of the
 * renewal and of the creation. */
START_TEST(test_fractional_lifetime_absolute) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char a[TOKEN_STRING_LEN + 1], b[TOKEN_STRING_LEN + 1];

        setup_memory(&f);
        f.c->timeout.idle_timeout = 100;
        f.c->timeout.session_lifetime = 3;
        f.c->timeout.absolute_timeout = 5;
        create_session(&f, MS(T0) + 700, "alice", NULL, a, NULL);
        /* lifetime: created (renewed) at 0.7 s, active until 3.7 s */
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 3) + 699, a, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_ACTIVE);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 3) + 700, a, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_GRACE);
        ck_assert_int_eq(info.end_reason, ENGINE_END_LIFETIME);

        /* absolute: extended at 2.2 s (lifetime to 5.2 s), capped at 5.7 s */
        create_session(&f, MS(T0) + 700, "bob", NULL, b, NULL);
        ck_assert_int_eq(engine_extend(f.e, MS(T0 + 2) + 200, b, &info, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(info.expires_at_ms, MS(T0 + 5) + 200);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 5) + 199, b, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_ACTIVE);
        ck_assert_int_eq(engine_extend(f.e, MS(T0 + 5) + 100, b, &info, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_int_eq(info.end_reason, ENGINE_END_ABSOLUTE);
        ck_assert_int_eq(info.expires_at_ms, MS(T0 + 5) + 700);
        ck_assert_int_eq(info.expires_at, T0 + 6);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 5) + 699, b, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_ACTIVE);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 5) + 700, b, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_GRACE);
        ck_assert_int_eq(info.end_reason, ENGINE_END_ABSOLUTE);
        fixture_done(&f);
}
END_TEST

/* The milliseconds survive a restart: the touch is written at a clean stop
 * and loaded again, and the session created at a fraction keeps its id. */
START_TEST(test_fractional_restart) {
        struct fixture f;
        struct engine_error err = {0};
        struct engine_info info;
        char token[TOKEN_STRING_LEN + 1], id[TOKEN_ID_STRING_LEN + 1];

        fixture_init(&f, path_in("sessions.db"));
        short_timeouts(&f);
        f.c->timeout.idle_timeout = 3;
        fixture_open(&f);
        create_session(&f, MS(T0) + 999, "alice", NULL, token, id);
        ck_assert_int_eq(validate(&f, MS(T0 + 1) + 500, token, &info, &err), 0);
        fixture_close(&f);
        fixture_open(&f);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 4) + 499, token, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_ACTIVE);
        ck_assert_str_eq(info.id, id);
        ck_assert_int_eq(info.created_at, T0);
        ck_assert_int_eq(peek_validate(&f, MS(T0 + 4) + 500, token, &info, &err), 0);
        ck_assert_int_eq(info.state, ENGINE_STATE_GRACE);
        fixture_done(&f);
        scratch_remove();
}
END_TEST

int main(void) {
        Suite *s = suite_create("engine");
        TCase *tc = tcase_create("engine");

        log_setup();
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_create_validate);
        tcase_add_test(tc, test_bad_arguments);
        tcase_add_test(tc, test_expiry_idle_and_grace);
        tcase_add_test(tc, test_expiry_lifetime);
        tcase_add_test(tc, test_expiry_absolute_and_extend_cap);
        tcase_add_test(tc, test_warning_threshold);
        tcase_add_test(tc, test_eviction_order);
        tcase_add_test(tc, test_lowered_limit);
        tcase_add_test(tc, test_fingerprint_policy);
        tcase_add_test(tc, test_fingerprint_adopted);
        tcase_add_test(tc, test_switch_rate_limit);
        tcase_add_test(tc, test_sync_state);
        tcase_add_test(tc, test_sync_outrun);
        tcase_add_test(tc, test_rotate);
        tcase_add_test(tc, test_max_sessions);
        tcase_add_test(tc, test_destroy);
        tcase_add_test(tc, test_destroy_user_except);
        tcase_add_test(tc, test_terminate_and_listings);
        tcase_add_test(tc, test_user_listing_merges_in_order);
        tcase_add_test(tc, test_cleanup_batches);
        tcase_add_test(tc, test_purge);
        tcase_add_test(tc, test_purge_until);
        tcase_add_test(tc, test_restart_keeps_everything);
        tcase_add_test(tc, test_restart_loads_in_batches);
        tcase_add_test(tc, test_touch_flush);
        tcase_add_test(tc, test_abort_restores_memory);
        tcase_add_test(tc, test_commit_failure_restores_memory);
        tcase_add_test(tc, test_refuses_database_without_key);
        tcase_add_test(tc, test_key_file_setting);
        tcase_add_test(tc, test_refuses_corrupt_database);
        tcase_add_test(tc, test_persistence_off);
        tcase_add_test(tc, test_events_after_commit);
        tcase_add_test(tc, test_sync_events);
        tcase_add_test(tc, test_cleanup_deadline);
        tcase_add_test(tc, test_cleanup_deadline_large_table);
        tcase_add_test(tc, test_cleanup_quiet_goes_stale);
        tcase_add_test(tc, test_suspicious_threshold);
        tcase_add_test(tc, test_failed_validation_burst);
        tcase_add_test(tc, test_failed_validations_aggregated);
        tcase_add_test(tc, test_audit_switch);
        tcase_add_test(tc, test_watch_support);
        tcase_add_test(tc, test_many_sessions);
        tcase_add_test(tc, test_session_times_packed);
        tcase_add_test(tc, test_fractional_idle);
        tcase_add_test(tc, test_fractional_lifetime_absolute);
        tcase_add_test(tc, test_fractional_restart);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
