/* Analytics (daemon/analytics.c): the percentile math against values worked
 * out by hand, and the store queries behind Admin.Analytics and Admin.Audit
 * on a scratch database, through the loop's connection and a reader. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "analytics.h"
#include "helpers.h"
#include "log.h"
#include "store.h"

static char dir[] = "/tmp/sessiond-observe-test-XXXXXX";
static char db[256];

static bool near(double a, double b) {
        return fabs(a - b) < 1e-9;
}

START_TEST(test_percentile) {
        const double one[] = {7};
        const double four[] = {1, 2, 3, 4};
        const double ten[] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100};

        ck_assert(isnan(analytics_percentile(NULL, 0, 50)));
        ck_assert(near(analytics_percentile(one, 1, 0), 7));
        ck_assert(near(analytics_percentile(one, 1, 99), 7));
        /* rank = p/100 * (n-1): numpy.percentile([1,2,3,4], [50, 90, 99]) */
        ck_assert(near(analytics_percentile(four, 4, 50), 2.5));
        ck_assert(near(analytics_percentile(four, 4, 90), 3.7));
        ck_assert(near(analytics_percentile(four, 4, 99), 3.97));
        ck_assert(near(analytics_percentile(four, 4, 0), 1));
        ck_assert(near(analytics_percentile(four, 4, 100), 4));
        ck_assert(near(analytics_percentile(four, 4, -5), 1));
        ck_assert(near(analytics_percentile(four, 4, 250), 4));
        ck_assert(near(analytics_percentile(ten, 10, 50), 55));
        ck_assert(near(analytics_percentile(ten, 10, 90), 91));
        ck_assert(near(analytics_percentile(ten, 10, 99), 99.1));
        ck_assert(near(analytics_percentile(ten, 10, 25), 32.5));
}
END_TEST

START_TEST(test_summarize) {
        const double v[] = {60, 60, 120, 600, 3600};
        struct analytics_durations d;

        analytics_durations_summarize(v, 5, &d);
        ck_assert_uint_eq(d.count, 5);
        ck_assert(near(d.mean, 888));
        ck_assert(near(d.min, 60) && near(d.max, 3600));
        ck_assert(near(d.p50, 120));
        ck_assert(near(d.p90, 600 + (3600 - 600) * 0.6));
        ck_assert(near(d.p99, 600 + (3600 - 600) * 0.96));
        analytics_durations_summarize(NULL, 0, &d);
        ck_assert_uint_eq(d.count, 0);
        ck_assert(isnan(d.mean) && isnan(d.p50) && isnan(d.min));
}
END_TEST

/* ---- on a store ------------------------------------------------------------------ */

static int64_t insert(struct store *s, int n, const char *user, int64_t created) {
        struct store_session row = {0};
        char id[TOKEN_ID_STRING_LEN + 1];
        int64_t row_key;

        snprintf(id, sizeof id, "id%020d", n);
        row.id = id;
        memset(row.token_hash, 0, sizeof row.token_hash);
        memcpy(row.token_hash, &n, sizeof n);
        row.user_id = user;
        row.created_at = row.last_activity = row.renewed_at = created * 1000; /* the store's session times are ms */
        ck_assert_int_eq(store_allocate_key(s, &row_key), 0);
        row.row_key = row_key;
        ck_assert_int_eq(store_session_insert(s, &row, NULL, 0), 0);
        return row_key;
}

/* now is at 10:30 of some day; hour h of the window starts at first + h*3600. */
static const int64_t now = 1800000000 / 3600 * 3600 + 1800;

static void fill(struct store *s) {
        int64_t first = (now / 3600 - 23) * 3600;
        int64_t r;
        int n = 0;

        /* 3 sessions in the first hour of the window, 2 in the current one,
         * 1 just before the window (not counted). */
        for (int i = 0; i < 3; i++)
                insert(s, n++, "alice", first + 10 * i);
        insert(s, n++, "bob", now - 60);
        insert(s, n++, "bob", now - 1);
        insert(s, n++, "carol", first - 1);
        /* Ended: durations 60 (idle), 600 (destroyed), 3600 (idle);
         * a rotation's old row (not a duration, not a new session). The
         * ends' milliseconds do not count: durations are whole seconds. */
        r = insert(s, n++, "dave", now - 7200);
        ck_assert_int_eq(store_session_end(s, r, (now - 7200 + 60) * 1000 + 999, "idle"), 0);
        r = insert(s, n++, "dave", now - 7200);
        ck_assert_int_eq(store_session_end(s, r, (now - 7200 + 600) * 1000 + 999, "destroyed"), 0);
        r = insert(s, n++, "erin", now - 7200);
        ck_assert_int_eq(store_session_end(s, r, (now - 7200 + 3600) * 1000 + 999, "idle"), 0);
        r = insert(s, n++, "erin", now - 7200);
        ck_assert_int_eq(store_session_end(s, r, (now - 7200 + 5) * 1000 + 999, "rotated"), 0);
        /* audit rows */
        ck_assert_int_eq(store_audit_insert(s, now - 100, "created", "alice", "s1", "{\"a\":1}"), 0);
        ck_assert_int_eq(store_audit_insert(s, now - 50, "ended", "alice", "s1", "{}"), 0);
        ck_assert_int_eq(store_audit_insert(s, now - 40, "created", "bob", "s2", "{}"), 0);
        ck_assert_int_eq(store_audit_insert(s, now - 30, "config_reloaded", NULL, NULL, "{\"ok\":true}"), 0);
        ck_assert_int_eq(store_commit(s), 0);
}

static void check_result(const struct analytics_result *r) {
        json_t *j;

        ck_assert_int_eq(r->error, 0);
        ck_assert_int_eq(r->first_hour % 3600, 0);
        ck_assert_int_eq(r->first_hour, (now / 3600 - 23) * 3600);
        ck_assert_uint_eq(r->created_per_hour[0], 3);
        ck_assert_uint_eq(r->created_per_hour[ANALYTICS_HOURS - 1], 2);
        /* the four of dave and erin, at now - 7200: hour 21; the rotation is not counted */
        ck_assert_uint_eq(r->created_per_hour[ANALYTICS_HOURS - 3], 3);
        ck_assert_uint_eq(r->durations.count, 3);
        ck_assert(near(r->durations.mean, (60 + 600 + 3600) / 3.0));
        ck_assert(near(r->durations.p50, 600));
        ck_assert(near(r->durations.min, 60));
        ck_assert_int_eq(json_integer_value(json_object_get(r->end_reasons, "idle")), 2);
        ck_assert_int_eq(json_integer_value(json_object_get(r->end_reasons, "destroyed")), 1);
        ck_assert_int_eq(json_integer_value(json_object_get(r->end_reasons, "rotated")), 1);

        j = analytics_to_json(r, json_pack("{s:i}", "web", 2));
        ck_assert_ptr_nonnull(j);
        ck_assert_uint_eq(json_array_size(json_object_get(j, "created_per_hour")), ANALYTICS_HOURS);
        ck_assert_int_eq(json_integer_value(
                                 json_object_get(json_array_get(json_object_get(j, "created_per_hour"), 0), "created")),
                         3);
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "durations"), "count")), 3);
        ck_assert(near(json_real_value(json_object_get(json_object_get(j, "durations"), "p50")), 600));
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "active_by_platform"), "web")), 2);
        json_decref(j);
}

START_TEST(test_compute) {
        struct store_options o = {.path = db, .synchronous = "normal"};
        struct analytics_result r;
        struct store *s, *reader;

        ck_assert_int_eq(store_open(&o, &s), 0);
        fill(s);
        ck_assert_int_eq(analytics_compute(s, now, &r), 0);
        check_result(&r);
        analytics_result_clear(&r);

        /* the same through a read-only connection, as the thread pool does */
        ck_assert_int_eq(store_reader_open(store_locator(s), &reader), 0);
        ck_assert_int_eq(analytics_compute(reader, now, &r), 0);
        check_result(&r);
        analytics_result_clear(&r);
        ck_assert_int_eq(store_probe(reader), 0);
        store_close(reader);

        store_close(s);
}
END_TEST

START_TEST(test_compute_empty) {
        struct store_options o = {.path = ":memory:"};
        struct analytics_result r;
        struct store *s;
        json_t *j;

        ck_assert_int_eq(store_open(&o, &s), 0);
        ck_assert_int_eq(analytics_compute(s, now, &r), 0);
        ck_assert_uint_eq(r.durations.count, 0);
        ck_assert(isnan(r.durations.mean));
        j = analytics_to_json(&r, NULL);
        ck_assert(json_is_null(json_object_get(json_object_get(j, "durations"), "mean")));
        ck_assert_uint_eq(json_object_size(json_object_get(j, "end_reasons")), 0);
        json_decref(j);
        analytics_result_clear(&r);
        store_close(s);
}
END_TEST

static int audit_collect(const struct store_audit_row *row, void *userdata) {
        json_t *a = userdata;
        return json_array_append_new(a, json_pack("{s:I, s:s, s:s?}", "time", (json_int_t) row->time, "kind", row->kind,
                                                  "user_id", row->user_id));
}

static json_t *audit(struct store *s, const char *user, const char *kind, int64_t since, unsigned limit) {
        struct store_audit_filter f = {.user_id = user, .kind = kind, .since = since, .limit = limit};
        json_t *a = json_array();

        ck_assert_int_eq(store_audit_each(s, &f, audit_collect, a), 0);
        return a;
}

static int64_t time_of(json_t *a, size_t i) {
        return json_integer_value(json_object_get(json_array_get(a, i), "time"));
}

START_TEST(test_audit_query) {
        struct store_options o = {.path = db, .synchronous = "normal"};
        struct store_maintenance m;
        struct store *s;
        json_t *a;

        ck_assert_int_eq(store_open(&o, &s), 0);
        fill(s);
        a = audit(s, NULL, NULL, 0, 100); /* newest first */
        ck_assert_uint_eq(json_array_size(a), 4);
        ck_assert_int_eq(time_of(a, 0), now - 30);
        ck_assert_int_eq(time_of(a, 3), now - 100);
        json_decref(a);
        a = audit(s, "alice", NULL, 0, 100);
        ck_assert_uint_eq(json_array_size(a), 2);
        json_decref(a);
        a = audit(s, NULL, "created", 0, 100);
        ck_assert_uint_eq(json_array_size(a), 2);
        json_decref(a);
        a = audit(s, "alice", "created", 0, 100);
        ck_assert_uint_eq(json_array_size(a), 1);
        json_decref(a);
        a = audit(s, NULL, NULL, now - 40, 100); /* since is inclusive */
        ck_assert_uint_eq(json_array_size(a), 2);
        json_decref(a);
        a = audit(s, NULL, NULL, 0, 1); /* the newest one */
        ck_assert_uint_eq(json_array_size(a), 1);
        ck_assert_int_eq(time_of(a, 0), now - 30);
        ck_assert(json_is_null(json_object_get(json_array_get(a, 0), "user_id")));
        json_decref(a);
        a = audit(s, "nobody", NULL, 0, 100);
        ck_assert_uint_eq(json_array_size(a), 0);
        json_decref(a);

        ck_assert_int_eq(store_check_integrity(s, &m), 0);
        ck_assert(m.ok);
        ck_assert_str_eq(m.message, "ok");
        store_close(s);
}
END_TEST

START_TEST(test_reader_errors) {
        struct store *reader = NULL;
        char path[300];

        snprintf(path, sizeof path, "sqlite:%s/missing.db", dir);
        ck_assert_int_lt(store_reader_open(path, &reader), 0);
        ck_assert_ptr_null(reader);
        /* a locator names its backend */
        ck_assert_int_eq(store_reader_open(path + strlen("sqlite:"), &reader), -EINVAL);
        ck_assert_int_eq(store_reader_open("nosuch:/x", &reader), -EINVAL);
        ck_assert_ptr_null(reader);
}
END_TEST

static void setup(void) {
        snprintf(db, sizeof db, "%s/t.db", dir);
        unlink(db);
        strcat(db, "-wal");
        unlink(db);
        db[strlen(db) - 4] = '\0';
}

int main(void) {
        Suite *s = suite_create("analytics");
        TCase *tc = tcase_create("analytics");
        char cmd[300];
        int r;

        log_setup();
        if (!mkdtemp(dir))
                return 1;
        tcase_add_checked_fixture(tc, setup, NULL);
        tcase_add_test(tc, test_percentile);
        tcase_add_test(tc, test_summarize);
        tcase_add_test(tc, test_compute);
        tcase_add_test(tc, test_compute_empty);
        tcase_add_test(tc, test_audit_query);
        tcase_add_test(tc, test_reader_errors);
        suite_add_tcase(s, tc);
        r = run_suite(s);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                return 1;
        return r;
}
