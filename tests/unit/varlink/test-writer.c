/* Unit tests of the reply writer (lib/varlink/writer.c).
 *
 * Every reply the writer produces is checked three ways against the jansson
 * object the test expects: the framing (one NUL, the last byte), the decoded
 * parameters (json_loadb + json_equal), and the bytes themselves, which must
 * equal what varlink_encode_reply() makes of the expected object (its
 * members are inserted in the order the writer wrote them, and jansson dumps
 * in insertion order). */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sessiond/varlink.h"

/* Finishes the writer's reply and checks it against `expected` (stolen). */
static void check_reply(struct varlink_writer *w, bool continues, json_t *expected) {
        char *data = NULL, *reference = NULL;
        size_t len = 0, reference_len = 0;
        json_error_t error;
        json_t *root, *continues_value;

        ck_assert_ptr_nonnull(expected);
        ck_assert_int_eq(varlink_writer_finish_reply(w, continues, &data, &len), 0);
        ck_assert_ptr_nonnull(data);
        ck_assert_uint_gt(len, 0);

        /* Framing: exactly one NUL, at the end. */
        ck_assert_ptr_eq(memchr(data, '\0', len), data + len - 1);

        root = json_loadb(data, len - 1, JSON_ALLOW_NUL, &error);
        if (!root)
                ck_abort_msg("not JSON (%s): %s", error.text, data);
        ck_assert(json_is_object(root));
        ck_assert_msg(json_equal(json_object_get(root, "parameters"), expected), "parameters differ: %s", data);
        continues_value = json_object_get(root, "continues");
        if (continues)
                ck_assert(json_is_true(continues_value));
        else
                ck_assert_ptr_null(continues_value);
        ck_assert_uint_eq(json_object_size(root), continues ? 2 : 1);

        /* Byte for byte what the jansson path sends. */
        ck_assert_int_eq(varlink_encode_reply(expected, continues, &reference, &reference_len), 0);
        ck_assert_uint_eq(len, reference_len);
        ck_assert_msg(memcmp(data, reference, len) == 0, "writer: %s\njansson: %s", data, reference);

        /* The writer is empty again: it can start another reply. */
        ck_assert_ptr_null(w->data);
        ck_assert_uint_eq(w->len, 0);

        free(reference);
        free(data);
        json_decref(root);
        json_decref(expected);
}

/* {"s": <n bytes of s>} through the writer and through jansson. */
static void check_string(const char *s, size_t n) {
        struct varlink_writer w;
        json_t *expected = json_object();

        ck_assert_int_eq(json_object_set_new(expected, "s", json_stringn(s, n)), 0);
        varlink_writer_init(&w);
        ck_assert_int_eq(varlink_writer_begin_reply(&w), 0);
        ck_assert_int_eq(varlink_writer_object_begin(&w), 0);
        ck_assert_int_eq(varlink_writer_key(&w, "s"), 0);
        ck_assert_int_eq(varlink_writer_stringn(&w, s, n), 0);
        ck_assert_int_eq(varlink_writer_object_end(&w), 0);
        check_reply(&w, false, expected);
}

START_TEST(test_control_characters) {
        /* Each of the 32 alone, and between ordinary text. */
        for (int ch = 0; ch < 0x20; ch++) {
                char one[1] = {(char) ch};
                char mid[5] = {'a', 'b', (char) ch, 'c', 'd'};

                check_string(one, 1);
                check_string(mid, sizeof mid);
        }
        /* All of them in one string. */
        {
                char all[0x20];

                for (int ch = 0; ch < 0x20; ch++)
                        all[ch] = (char) ch;
                check_string(all, sizeof all);
        }
}
END_TEST

START_TEST(test_quote_backslash_del) {
        check_string("\"", 1);
        check_string("\\", 1);
        check_string("a\"b\\c\"\"\\\\", 9);
        check_string("\x7f", 1); /* DEL needs no escape */
        check_string("a/b", 3);  /* nor does the slash */
        check_string("", 0);
        check_string("plain text, nothing to escape", 29);
}
END_TEST

START_TEST(test_utf8_passthrough) {
        static const char *const texts[] = {
                "caf\xc3\xa9",              /* 2 bytes */
                "\xe2\x82\xac 5",           /* 3 bytes */
                "\xf0\x9f\x98\x80",         /* 4 bytes */
                "\xe2\x80\xa8\xe2\x80\xa9", /* U+2028, U+2029 */
                "Mozilla/5.0 (X11; \xd0\x9b\xd0\xb8\xd0\xbd\xd1\x83\xd0\xba\xd1\x81) \"q\"\n",
        };

        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
                check_string(texts[i], strlen(texts[i]));
}
END_TEST

START_TEST(test_long_string_grows) {
        /* Longer than the first allocation, with escapes all along. */
        size_t n = 20000;
        char *s = malloc(n);

        ck_assert_ptr_nonnull(s);
        for (size_t i = 0; i < n; i++)
                s[i] = i % 7 == 0 ? '\n' : i % 11 == 0 ? '\x01' : (char) ('a' + i % 26);
        check_string(s, n);
        free(s);
}
END_TEST

START_TEST(test_integers_and_literals) {
        static const int64_t values[] = {0, 1, -1, 9, 10, -10, 1234567890, INT64_MAX, INT64_MIN, INT64_MIN + 1};
        struct varlink_writer w;
        json_t *expected = json_object();
        char key[32];

        varlink_writer_init(&w);
        ck_assert_int_eq(varlink_writer_begin_reply(&w), 0);
        ck_assert_int_eq(varlink_writer_object_begin(&w), 0);
        for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
                snprintf(key, sizeof key, "i%zu", i);
                ck_assert_int_eq(varlink_writer_key(&w, key), 0);
                ck_assert_int_eq(varlink_writer_int(&w, values[i]), 0);
                json_object_set_new(expected, key, json_integer(values[i]));
        }
        /* Every length of number: 10^k - 1, 10^k and 10^k + 1, both signs. */
        for (uint64_t p = 1, k = 0; k < 19; k++, p *= 10) /* unsigned: the last step may pass INT64_MAX */
                for (int64_t d = -1; d <= 1; d++)
                        for (int sign = -1; sign <= 1; sign += 2) {
                                int64_t v = sign * ((int64_t) p + d);

                                snprintf(key, sizeof key, "p%lld", (long long) v);
                                if (json_object_get(expected, key))
                                        continue;
                                ck_assert_int_eq(varlink_writer_key(&w, key), 0);
                                ck_assert_int_eq(varlink_writer_int(&w, v), 0);
                                json_object_set_new(expected, key, json_integer(v));
                        }
        varlink_writer_key(&w, "yes");
        varlink_writer_bool(&w, true);
        varlink_writer_key(&w, "no");
        varlink_writer_bool(&w, false);
        varlink_writer_key(&w, "nothing");
        varlink_writer_null(&w);
        varlink_writer_object_end(&w);
        json_object_set_new(expected, "yes", json_true());
        json_object_set_new(expected, "no", json_false());
        json_object_set_new(expected, "nothing", json_null());
        check_reply(&w, false, expected);
}
END_TEST

START_TEST(test_empty_and_nested) {
        struct varlink_writer w;

        /* {} */
        varlink_writer_init(&w);
        varlink_writer_begin_reply(&w);
        varlink_writer_object_begin(&w);
        varlink_writer_object_end(&w);
        check_reply(&w, false, json_object());

        /* Nested objects and arrays, empty ones among them; keys that need escaping. */
        varlink_writer_init(&w);
        varlink_writer_begin_reply(&w);
        varlink_writer_object_begin(&w);
        varlink_writer_key(&w, "a");
        varlink_writer_object_begin(&w);
        varlink_writer_key(&w, "b");
        varlink_writer_object_begin(&w);
        varlink_writer_object_end(&w);
        varlink_writer_key(&w, "c");
        varlink_writer_object_begin(&w);
        varlink_writer_key(&w, "d");
        varlink_writer_int(&w, 1);
        varlink_writer_key(&w, "e");
        varlink_writer_string(&w, "f");
        varlink_writer_object_end(&w);
        varlink_writer_object_end(&w);
        varlink_writer_key(&w, "list");
        varlink_writer_array_begin(&w);
        varlink_writer_string(&w, "x");
        varlink_writer_int(&w, 2);
        varlink_writer_array_begin(&w);
        varlink_writer_array_end(&w);
        varlink_writer_object_begin(&w);
        varlink_writer_key(&w, "g");
        varlink_writer_null(&w);
        varlink_writer_object_end(&w);
        varlink_writer_array_end(&w);
        varlink_writer_key(&w, "empty");
        varlink_writer_array_begin(&w);
        varlink_writer_array_end(&w);
        varlink_writer_key(&w, "k\"\n");
        varlink_writer_bool(&w, true);
        varlink_writer_object_end(&w);
        check_reply(&w, false,
                    json_pack("{s:{s:{}, s:{s:i, s:s}}, s:[s, i, [], {s:n}], s:[], s:b}", "a", "b", "c", "d", 1, "e",
                              "f", "list", "x", 2, "g", "empty", "k\"\n", 1));
}
END_TEST

START_TEST(test_deep_nesting) {
        struct varlink_writer w;
        json_t *expected = json_object(), *inner = expected;

        varlink_writer_init(&w);
        varlink_writer_begin_reply(&w);
        varlink_writer_object_begin(&w);
        for (int i = 1; i < VARLINK_WRITER_MAX_DEPTH; i++) {
                json_t *o = json_object();

                varlink_writer_key(&w, "n");
                varlink_writer_object_begin(&w);
                json_object_set_new(inner, "n", o);
                inner = o;
        }
        ck_assert_uint_eq(w.depth, VARLINK_WRITER_MAX_DEPTH);
        for (int i = 0; i < VARLINK_WRITER_MAX_DEPTH; i++)
                ck_assert_int_eq(varlink_writer_object_end(&w), 0);
        check_reply(&w, false, expected);
}
END_TEST

START_TEST(test_embedded_json) {
        struct varlink_writer w;
        json_t *evicted = json_pack("[s, s]", "id1", "id\"2"),
               *config = json_pack("{s:{s:i}, s:[]}", "sync", "max", 5, "x");
        json_t *scalar = json_integer(7);

        varlink_writer_init(&w);
        varlink_writer_begin_reply(&w);
        varlink_writer_object_begin(&w);
        varlink_writer_key(&w, "token");
        varlink_writer_string(&w, "t");
        varlink_writer_key(&w, "evicted");
        ck_assert_int_eq(varlink_writer_json(&w, evicted), 0);
        varlink_writer_key(&w, "config");
        ck_assert_int_eq(varlink_writer_json(&w, config), 0);
        varlink_writer_key(&w, "scalar");
        ck_assert_int_eq(varlink_writer_json(&w, scalar), 0);
        varlink_writer_object_end(&w);
        check_reply(&w, false,
                    json_pack("{s:s, s:O, s:O, s:i}", "token", "t", "evicted", evicted, "config", config, "scalar", 7));

        /* An existing object as the whole parameters. */
        varlink_writer_init(&w);
        varlink_writer_begin_reply(&w);
        ck_assert_int_eq(varlink_writer_json(&w, config), 0);
        check_reply(&w, false, json_incref(config));

        json_decref(evicted);
        json_decref(config);
        json_decref(scalar);
}
END_TEST

START_TEST(test_continues) {
        struct varlink_writer w;

        varlink_writer_init(&w);
        varlink_writer_begin_reply(&w);
        varlink_writer_object_begin(&w);
        varlink_writer_key(&w, "event");
        varlink_writer_string(&w, "sync");
        varlink_writer_object_end(&w);
        check_reply(&w, true, json_pack("{s:s}", "event", "sync"));

        varlink_writer_init(&w);
        varlink_writer_begin_reply(&w);
        varlink_writer_object_begin(&w);
        varlink_writer_object_end(&w);
        check_reply(&w, true, json_object());
}
END_TEST

START_TEST(test_parameters_not_object) {
        struct varlink_writer w;
        char *data = (char *) "untouched";
        size_t len = 42;

        varlink_writer_init(&w);
        varlink_writer_begin_reply(&w);
        varlink_writer_array_begin(&w);
        varlink_writer_array_end(&w);
        ck_assert_int_eq(varlink_writer_finish_reply(&w, false, &data, &len), -EINVAL);
        ck_assert_str_eq(data, "untouched");
        ck_assert_uint_eq(len, 42);
        ck_assert_ptr_null(w.data);

        varlink_writer_init(&w);
        varlink_writer_begin_reply(&w);
        varlink_writer_string(&w, "s");
        ck_assert_int_eq(varlink_writer_finish_reply(&w, false, &data, &len), -EINVAL);
}
END_TEST

START_TEST(test_sticky_error) {
        struct varlink_writer w;
        json_t *loop = json_object(), *inner = json_object();
        char *data = NULL;
        size_t len = 0;

        /* A structure that contains itself cannot be dumped: -EINVAL, and
         * every later call reports it without writing. */
        json_object_set(loop, "inner", inner);
        json_object_set(inner, "outer", loop);
        varlink_writer_init(&w);
        varlink_writer_begin_reply(&w);
        varlink_writer_object_begin(&w);
        varlink_writer_key(&w, "a");
        ck_assert_int_eq(varlink_writer_json(&w, loop), -EINVAL);
        ck_assert_int_eq(varlink_writer_key(&w, "b"), -EINVAL);
        ck_assert_int_eq(varlink_writer_int(&w, 1), -EINVAL);
        ck_assert_int_eq(varlink_writer_object_begin(&w), -EINVAL);
        ck_assert_int_eq(varlink_writer_object_end(&w), -EINVAL);
        ck_assert_int_eq(varlink_writer_object_end(&w), -EINVAL);
        ck_assert_int_eq(varlink_writer_finish_reply(&w, false, &data, &len), -EINVAL);
        ck_assert_ptr_null(data);
        ck_assert_ptr_null(w.data);
        json_object_del(inner, "outer");
        json_decref(inner);
        json_decref(loop);

        /* varlink_writer_free() drops a reply half written. */
        varlink_writer_init(&w);
        varlink_writer_begin_reply(&w);
        varlink_writer_object_begin(&w);
        varlink_writer_free(&w);
        ck_assert_ptr_null(w.data);
        varlink_writer_free(NULL);
}
END_TEST

/* A bare value (audit details): the bytes json_dumps(JSON_COMPACT) makes,
 * with a NUL that the length does not count. */
START_TEST(test_bare_value) {
        struct varlink_writer w;
        json_t *o = json_pack("{s:s?, s:s?, s:I, s:s}", "platform_id", NULL, "ip", "198.51.100.7", "n",
                              (json_int_t) -42, "text", "quote \" and \n\x01");
        char *expect = json_dumps(o, JSON_COMPACT), *text;
        size_t len;

        varlink_writer_init(&w);
        ck_assert_int_eq(varlink_writer_begin_value(&w), 0);
        varlink_writer_object_begin(&w);
        varlink_writer_key(&w, "platform_id");
        varlink_writer_null(&w);
        varlink_writer_key(&w, "ip");
        varlink_writer_string(&w, "198.51.100.7");
        varlink_writer_key(&w, "n");
        varlink_writer_int(&w, -42);
        varlink_writer_key(&w, "text");
        varlink_writer_string(&w, "quote \" and \n\x01");
        varlink_writer_object_end(&w);
        ck_assert_int_eq(varlink_writer_finish_value(&w, &text, &len), 0);
        ck_assert_str_eq(text, expect);
        ck_assert_uint_eq(len, strlen(expect));
        free(text);
        free(expect);
        json_decref(o);
}
END_TEST

static Suite *writer_suite(void) {
        Suite *s = suite_create("varlink-writer");
        TCase *tc = tcase_create("writer");

        tcase_add_test(tc, test_control_characters);
        tcase_add_test(tc, test_quote_backslash_del);
        tcase_add_test(tc, test_utf8_passthrough);
        tcase_add_test(tc, test_long_string_grows);
        tcase_add_test(tc, test_integers_and_literals);
        tcase_add_test(tc, test_empty_and_nested);
        tcase_add_test(tc, test_deep_nesting);
        tcase_add_test(tc, test_embedded_json);
        tcase_add_test(tc, test_continues);
        tcase_add_test(tc, test_parameters_not_object);
        tcase_add_test(tc, test_sticky_error);
        tcase_add_test(tc, test_bare_value);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(writer_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
