/* Unit tests of the Varlink framing (lib/varlink/reader.c).
 *
 * The reader must give the same messages whatever way the stream is cut:
 * every split position of a pipelined stream is tried, byte-at-a-time
 * delivery, reads straight into varlink_reader_space(), and the limits
 * (oversize with and without a NUL, empty messages).
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sessiond/varlink.h"

/* Drains every complete message into out (joined by '|'); returns count or
 * the negative error of varlink_reader_next(). */
static int drain(struct varlink_reader *r, char *out, size_t size) {
        const char *msg;
        size_t len;
        int n = 0, k;

        while ((k = varlink_reader_next(r, &msg, &len)) > 0) {
                ck_assert_uint_eq(strlen(msg), len); /* NUL-terminated in place */
                if (out) {
                        size_t used = strlen(out);
                        ck_assert_uint_lt(used + len + 2, size);
                        memcpy(out + used, msg, len);
                        out[used + len] = '|';
                        out[used + len + 1] = '\0';
                }
                n++;
        }
        return k < 0 ? k : n;
}

static const char stream[] =
        "{\"method\":\"a.b.C\"}\0{\"x\":1}\0\0{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":{}}\0";
#define STREAM_LEN (sizeof(stream) - 1)
static const char expected[] =
        "{\"method\":\"a.b.C\"}|{\"x\":1}||{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":{}}|";

START_TEST(test_split_every_position) {
        for (size_t cut = 0; cut <= STREAM_LEN; cut++) {
                struct varlink_reader r;
                char out[512] = "";
                int n = 0, k;

                ck_assert_int_eq(varlink_reader_init(&r, 1024), 0);
                ck_assert_int_eq(varlink_reader_feed(&r, stream, cut), 0);
                k = drain(&r, out, sizeof(out));
                ck_assert_int_ge(k, 0);
                n += k;
                ck_assert_int_eq(varlink_reader_feed(&r, stream + cut, STREAM_LEN - cut), 0);
                k = drain(&r, out, sizeof(out));
                ck_assert_int_ge(k, 0);
                n += k;
                ck_assert_int_eq(n, 4);
                ck_assert_str_eq(out, expected);
                ck_assert_uint_eq(varlink_reader_pending(&r), 0);
                varlink_reader_free(&r);
        }
}
END_TEST

START_TEST(test_split_two_positions) {
        for (size_t a = 0; a <= STREAM_LEN; a++)
                for (size_t b = a; b <= STREAM_LEN; b++) {
                        struct varlink_reader r;
                        char out[512] = "";

                        ck_assert_int_eq(varlink_reader_init(&r, 1024), 0);
                        ck_assert_int_eq(varlink_reader_feed(&r, stream, a), 0);
                        ck_assert_int_ge(drain(&r, out, sizeof(out)), 0);
                        ck_assert_int_eq(varlink_reader_feed(&r, stream + a, b - a), 0);
                        ck_assert_int_ge(drain(&r, out, sizeof(out)), 0);
                        ck_assert_int_eq(varlink_reader_feed(&r, stream + b, STREAM_LEN - b), 0);
                        ck_assert_int_ge(drain(&r, out, sizeof(out)), 0);
                        ck_assert_str_eq(out, expected);
                        varlink_reader_free(&r);
                }
}
END_TEST

START_TEST(test_byte_at_a_time_and_pending) {
        struct varlink_reader r;
        char out[512] = "";
        int n = 0;

        ck_assert_int_eq(varlink_reader_init(&r, 1024), 0);
        for (size_t i = 0; i < STREAM_LEN; i++) {
                int k;
                ck_assert_int_eq(varlink_reader_feed(&r, stream + i, 1), 0);
                k = drain(&r, out, sizeof(out));
                ck_assert_int_ge(k, 0);
                n += k;
                if (i == 3)
                        ck_assert_uint_eq(varlink_reader_pending(&r), 4);
        }
        ck_assert_int_eq(n, 4);
        ck_assert_str_eq(out, expected);
        varlink_reader_free(&r);
}
END_TEST

START_TEST(test_many_in_one_feed) {
        struct varlink_reader r;
        size_t n = 10000, len = 0;
        char *big = malloc(n * 16);
        int k;

        ck_assert_ptr_nonnull(big);
        for (size_t i = 0; i < n; i++)
                len += (size_t) sprintf(big + len, "{\"i\":%zu}", i) + 1; /* keeps the NUL */
        ck_assert_int_eq(varlink_reader_init(&r, 64), 0);
        ck_assert_int_eq(varlink_reader_feed(&r, big, len), 0);
        for (size_t i = 0; i < n; i++) {
                const char *msg;
                size_t l;
                char want[32];

                ck_assert_int_eq(varlink_reader_next(&r, &msg, &l), 1);
                sprintf(want, "{\"i\":%zu}", i);
                ck_assert_str_eq(msg, want);
        }
        k = drain(&r, NULL, 0);
        ck_assert_int_eq(k, 0);
        varlink_reader_free(&r);
        free(big);
}
END_TEST

START_TEST(test_space_commit) {
        struct varlink_reader r;
        const char *msg;
        size_t len, room;
        char *p;

        ck_assert_int_eq(varlink_reader_init(&r, 100000), 0);
        /* A message read in chunks directly into the buffer, across growth. */
        for (int i = 0; i < 50; i++) {
                ck_assert_int_eq(varlink_reader_space(&r, 1000, &p, &room), 0);
                ck_assert_uint_ge(room, 1000);
                memset(p, i == 0 ? '[' : ' ', 1000);
                varlink_reader_commit(&r, 1000);
                ck_assert_int_eq(varlink_reader_next(&r, &msg, &len), 0);
        }
        ck_assert_int_eq(varlink_reader_space(&r, 1, &p, &room), 0);
        p[0] = '\0';
        varlink_reader_commit(&r, 1);
        ck_assert_int_eq(varlink_reader_next(&r, &msg, &len), 1);
        ck_assert_uint_eq(len, 50000);
        ck_assert_int_eq(msg[0], '[');
        ck_assert_int_eq(varlink_reader_next(&r, &msg, &len), 0);

        /* Consumed bytes are reclaimed: many small messages in a row never
         * make the buffer grow. */
        size_t before = r.allocated;
        for (int i = 0; i < 100000; i++) {
                ck_assert_int_eq(varlink_reader_space(&r, 16, &p, &room), 0);
                memcpy(p, "{}", 3);
                varlink_reader_commit(&r, 3);
                ck_assert_int_eq(varlink_reader_next(&r, &msg, &len), 1);
                ck_assert_str_eq(msg, "{}");
        }
        ck_assert_uint_eq(r.allocated, before);
        varlink_reader_free(&r);
}
END_TEST

START_TEST(test_oversize_without_nul) {
        struct varlink_reader r;
        const char *msg;
        size_t len;
        char buf[101];

        memset(buf, 'x', sizeof(buf));
        ck_assert_int_eq(varlink_reader_init(&r, 100), 0);
        ck_assert_int_eq(varlink_reader_feed(&r, buf, 100), 0);
        ck_assert_int_eq(varlink_reader_next(&r, &msg, &len), 0); /* exactly the limit: fine */
        ck_assert_int_eq(varlink_reader_feed(&r, buf, 1), 0);
        ck_assert_int_eq(varlink_reader_next(&r, &msg, &len), -EMSGSIZE);
        varlink_reader_free(&r);
}
END_TEST

START_TEST(test_oversize_with_nul) {
        struct varlink_reader r;
        const char *msg;
        size_t len;
        char buf[102];

        memset(buf, 'x', sizeof(buf));
        /* Exactly the limit (100 bytes + NUL) passes. */
        buf[100] = '\0';
        ck_assert_int_eq(varlink_reader_init(&r, 100), 0);
        ck_assert_int_eq(varlink_reader_feed(&r, buf, 101), 0);
        ck_assert_int_eq(varlink_reader_next(&r, &msg, &len), 1);
        ck_assert_uint_eq(len, 100);
        varlink_reader_free(&r);

        /* One more byte, arriving with its NUL in the same read, does not. */
        buf[100] = 'x';
        buf[101] = '\0';
        ck_assert_int_eq(varlink_reader_init(&r, 100), 0);
        ck_assert_int_eq(varlink_reader_feed(&r, buf, 102), 0);
        ck_assert_int_eq(varlink_reader_next(&r, &msg, &len), -EMSGSIZE);
        varlink_reader_free(&r);
}
END_TEST

START_TEST(test_good_then_oversize) {
        struct varlink_reader r;
        const char *msg;
        size_t len;
        char buf[300];

        memset(buf, 'y', sizeof(buf));
        memcpy(buf, "{}", 3);
        ck_assert_int_eq(varlink_reader_init(&r, 100), 0);
        ck_assert_int_eq(varlink_reader_feed(&r, buf, sizeof(buf)), 0);
        ck_assert_int_eq(varlink_reader_next(&r, &msg, &len), 1);
        ck_assert_str_eq(msg, "{}");
        ck_assert_int_eq(varlink_reader_next(&r, &msg, &len), -EMSGSIZE);
        varlink_reader_free(&r);
}
END_TEST

START_TEST(test_empty_message) {
        struct varlink_reader r;
        const char *msg;
        size_t len;

        ck_assert_int_eq(varlink_reader_init(&r, 10), 0);
        ck_assert_int_eq(varlink_reader_next(&r, &msg, &len), 0);
        ck_assert_int_eq(varlink_reader_feed(&r, "\0", 1), 0);
        ck_assert_int_eq(varlink_reader_next(&r, &msg, &len), 1);
        ck_assert_uint_eq(len, 0);
        ck_assert_str_eq(msg, "");
        ck_assert_int_eq(varlink_reader_next(&r, &msg, &len), 0);
        varlink_reader_free(&r);
}
END_TEST

START_TEST(test_bad_init) {
        struct varlink_reader r;
        ck_assert_int_eq(varlink_reader_init(&r, 0), -EINVAL);
}
END_TEST

static Suite *reader_suite(void) {
        Suite *s = suite_create("varlink-reader");
        TCase *tc = tcase_create("reader");

        tcase_add_test(tc, test_split_every_position);
        tcase_add_test(tc, test_split_two_positions);
        tcase_add_test(tc, test_byte_at_a_time_and_pending);
        tcase_add_test(tc, test_many_in_one_feed);
        tcase_add_test(tc, test_space_commit);
        tcase_add_test(tc, test_oversize_without_nul);
        tcase_add_test(tc, test_oversize_with_nul);
        tcase_add_test(tc, test_good_then_oversize);
        tcase_add_test(tc, test_empty_message);
        tcase_add_test(tc, test_bad_init);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(reader_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
