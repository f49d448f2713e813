/* Unit tests of sessiond-bench's reply scanner (tools/bench-scan.c) and its
 * statistics (tools/bench-stats.c).
 *
 * The scanner must find the top-level "error" and parameters.token in the
 * shapes a Varlink server sends (any key order, nested values, escapes),
 * never mistake a string value or a nested key for them, and reject text
 * that is cut short. The statistics must give nearest-rank percentiles and
 * count error names.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bench-scan.h"
#include "bench-stats.h"

static const char *const error_path[] = {"error"};
static const char *const token_path[] = {"parameters", "token"};

/* Returns the scan result; copies a found span into out. */
static int scan(const char *json, const char *const *path, size_t n, char *out, size_t size) {
        const char *v = NULL;
        size_t len = 0;
        int r = bench_scan_string(json, strlen(json), path, n, &v, &len);

        out[0] = '\0';
        if (r == 1) {
                ck_assert_uint_lt(len, size);
                memcpy(out, v, len);
                out[len] = '\0';
        }
        return r;
}

START_TEST(test_scan_error) {
        char out[128];

        ck_assert_int_eq(
                scan("{\"error\":\"io.sessiond.Session.NotFound\",\"parameters\":{}}", error_path, 1, out, sizeof out),
                1);
        ck_assert_str_eq(out, "io.sessiond.Session.NotFound");

        /* parameters first, with whitespace */
        ck_assert_int_eq(scan("{ \"parameters\" : {\"reason\": \"idle\"} , \"error\" : \"a.b.Expired\" }", error_path,
                              1, out, sizeof out),
                         1);
        ck_assert_str_eq(out, "a.b.Expired");

        /* a success reply: no error */
        ck_assert_int_eq(scan("{\"parameters\":{\"state\":\"active\",\"expires_in\":300,\"warning\":false}}",
                              error_path, 1, out, sizeof out),
                         0);
}
END_TEST

START_TEST(test_scan_error_not_fooled) {
        char out[128];

        /* "error" as a string value, inside a string, as a nested key, in an array */
        ck_assert_int_eq(scan("{\"parameters\":{\"user_agent\":\"error\"}}", error_path, 1, out, sizeof out), 0);
        ck_assert_int_eq(
                scan("{\"parameters\":{\"user_agent\":\"x\\\"error\\\":\\\"y\"}}", error_path, 1, out, sizeof out), 0);
        ck_assert_int_eq(scan("{\"parameters\":{\"error\":\"nested\"}}", error_path, 1, out, sizeof out), 0);
        ck_assert_int_eq(scan("{\"list\":[\"error\",\"x\"],\"n\":1}", error_path, 1, out, sizeof out), 0);
        ck_assert_int_eq(scan("{\"list\":[{\"error\":\"in array\"}]}", error_path, 1, out, sizeof out), 0);
        /* a key named error whose value is not a string */
        ck_assert_int_eq(scan("{\"error\":null,\"x\":\"y\"}", error_path, 1, out, sizeof out), 0);
        ck_assert_int_eq(scan("{\"error\":{\"x\":\"y\"}}", error_path, 1, out, sizeof out), 0);
        /* a value equal to the key name must not arm the match */
        ck_assert_int_eq(scan("{\"a\":\"error\",\"b\":\"c\"}", error_path, 1, out, sizeof out), 0);
}
END_TEST

START_TEST(test_scan_token) {
        char out[128];

        ck_assert_int_eq(scan("{\"parameters\":{\"session\":{\"id\":\"s1\",\"token\":\"inner\"},"
                              "\"evicted\":[],\"token\":\"abc-_DEF\"}}",
                              token_path, 2, out, sizeof out),
                         1);
        ck_assert_str_eq(out, "abc-_DEF");

        ck_assert_int_eq(scan("{\"parameters\":{\"token\":\"T1\",\"session\":{}}}", token_path, 2, out, sizeof out), 1);
        ck_assert_str_eq(out, "T1");

        /* a top-level token is not parameters.token */
        ck_assert_int_eq(scan("{\"token\":\"top\",\"parameters\":{}}", token_path, 2, out, sizeof out), 0);
        /* an escaped quote inside a value before the key */
        ck_assert_int_eq(scan("{\"parameters\":{\"a\":\"q\\\"\",\"token\":\"T2\"}}", token_path, 2, out, sizeof out),
                         1);
        ck_assert_str_eq(out, "T2");
        /* the key inside an array under parameters is not on the path */
        ck_assert_int_eq(scan("{\"parameters\":{\"l\":[{\"token\":\"no\"}]}}", token_path, 2, out, sizeof out), 0);
}
END_TEST

START_TEST(test_scan_malformed) {
        char out[128];

        ck_assert_int_eq(scan("", error_path, 1, out, sizeof out), -EBADMSG);
        ck_assert_int_eq(scan("[1,2]", error_path, 1, out, sizeof out), -EBADMSG);
        ck_assert_int_eq(scan("\"error\"", error_path, 1, out, sizeof out), -EBADMSG);
        ck_assert_int_eq(scan("{\"parameters\":{\"a\":\"unterminated", error_path, 1, out, sizeof out), -EBADMSG);
        ck_assert_int_eq(scan("{\"parameters\":{}", error_path, 1, out, sizeof out), -EBADMSG);
        ck_assert_int_eq(scan("{\"a\":[}", error_path, 1, out, sizeof out), -EBADMSG);
        ck_assert_int_eq(scan("{\"a\":\"\\", error_path, 1, out, sizeof out), -EBADMSG);
}
END_TEST

START_TEST(test_scan_deep) {
        char json[1024], out[16];
        size_t n = 0;

        /* nesting beyond the scanner's stack is refused, not overflowed */
        n += (size_t) snprintf(json + n, sizeof json - n, "{\"a\":");
        for (int i = 0; i < 100; i++)
                json[n++] = '[';
        for (int i = 0; i < 100; i++)
                json[n++] = ']';
        json[n++] = '}';
        json[n] = '\0';
        ck_assert_int_eq(scan(json, error_path, 1, out, sizeof out), -EBADMSG);
}
END_TEST

START_TEST(test_latency_percentiles) {
        struct bench_latency l;

        ck_assert_int_eq(bench_latency_init(&l, 100), 0);
        /* 100 samples 1..100 in reverse order */
        for (uint64_t i = 100; i >= 1; i--)
                ck_assert_int_eq(bench_latency_add(&l, i * 1000), 0);
        ck_assert_int_eq(bench_latency_add(&l, 1), -ENOBUFS);
        bench_latency_finish(&l);
        ck_assert_uint_eq(bench_latency_percentile(&l, 50), 50000);
        ck_assert_uint_eq(bench_latency_percentile(&l, 90), 90000);
        ck_assert_uint_eq(bench_latency_percentile(&l, 99), 99000);
        ck_assert_uint_eq(bench_latency_percentile(&l, 100), 100000);
        ck_assert_uint_eq(bench_latency_percentile(&l, 0.5), 1000);
        ck_assert_uint_eq(bench_latency_max(&l), 100000);
        ck_assert_uint_eq(bench_latency_mean(&l), 50500);
        bench_latency_free(&l);

        ck_assert_int_eq(bench_latency_init(&l, 0), -EINVAL);
}
END_TEST

START_TEST(test_latency_small) {
        struct bench_latency l;

        ck_assert_int_eq(bench_latency_init(&l, 4), 0);
        bench_latency_finish(&l);
        ck_assert_uint_eq(bench_latency_percentile(&l, 99), 0);
        ck_assert_uint_eq(bench_latency_max(&l), 0);
        ck_assert_int_eq(bench_latency_add(&l, 7), 0);
        ck_assert_int_eq(bench_latency_add(&l, 3), 0);
        bench_latency_finish(&l);
        /* nearest rank: p50 of two samples is the lower one, p51 the upper */
        ck_assert_uint_eq(bench_latency_percentile(&l, 50), 3);
        ck_assert_uint_eq(bench_latency_percentile(&l, 51), 7);
        bench_latency_free(&l);
}
END_TEST

START_TEST(test_errors_tally) {
        struct bench_errors e = {};
        char name[32], longname[BENCH_ERROR_NAME_MAX + 8];

        bench_errors_add(&e, "a.NotFound", 10);
        bench_errors_add(&e, "a.Expired", 9);
        bench_errors_add(&e, "a.NotFound", 10);
        /* a prefix of a known name is another name */
        bench_errors_add(&e, "a.NotFou", 8);
        ck_assert_uint_eq(e.total, 4);
        ck_assert_uint_eq(e.n, 3);
        ck_assert_str_eq(e.entry[0].name, "a.NotFound");
        ck_assert_uint_eq(e.entry[0].count, 2);
        ck_assert_uint_eq(e.entry[1].count, 1);
        ck_assert_str_eq(e.entry[2].name, "a.NotFou");

        memset(longname, 'x', sizeof longname);
        bench_errors_add(&e, longname, sizeof longname);
        ck_assert_uint_eq(e.other, 1);

        for (int i = 0; i < BENCH_ERRORS_MAX + 3; i++) {
                int n = snprintf(name, sizeof name, "e.%d", i);
                bench_errors_add(&e, name, (size_t) n);
        }
        ck_assert_uint_eq(e.n, BENCH_ERRORS_MAX);
        ck_assert_uint_eq(e.other, 1 + 3 + 3);
        ck_assert_uint_eq(e.total, 4 + 1 + BENCH_ERRORS_MAX + 3);
}
END_TEST

static Suite *bench_suite(void) {
        Suite *s = suite_create("bench");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_scan_error);
        tcase_add_test(tc, test_scan_error_not_fooled);
        tcase_add_test(tc, test_scan_token);
        tcase_add_test(tc, test_scan_malformed);
        tcase_add_test(tc, test_scan_deep);
        tcase_add_test(tc, test_latency_percentiles);
        tcase_add_test(tc, test_latency_small);
        tcase_add_test(tc, test_errors_tally);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(bench_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
