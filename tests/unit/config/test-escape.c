/* Escaping for terminals and logs (lib/config/escape.c), and the issues that
 * quote bad values with it: control characters never come out raw. */
#include "helpers.h"

static char *escape(const char *s) {
        char *out = sessiond_text_escape_dup(s);

        ck_assert_ptr_nonnull(out);
        return out;
}

#define assert_escaped(in, expected)                                                    \
        do {                                                                            \
                char *_e = escape(in);                                                  \
                ck_assert_str_eq(_e, expected);                                         \
                ck_assert_uint_eq(sessiond_text_escape(NULL, 0, in), strlen(expected)); \
                free(_e);                                                               \
        } while (0)

START_TEST(test_escape_rules) {
        assert_escaped("", "");
        assert_escaped("plain text, \\ and \"quotes\"", "plain text, \\ and \"quotes\"");
        assert_escaped("a\x1b[31mred", "a\\x1b[31mred");
        assert_escaped("line\nnext\r\ttab", "line\\x0anext\\x0d\\x09tab");
        assert_escaped("\x01\x1f\x7f", "\\x01\\x1f\\x7f");
        assert_escaped("C1 \xc2\x9b"
                       "31m \xc2\x80\xc2\x9f",
                       "C1 \\u009b31m \\u0080\\u009f");
        /* UTF-8 stays, the first character after C1 too */
        assert_escaped("\xc2\xa0\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "\xc2\xa0\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
        /* bytes that are not UTF-8: \xNN each */
        assert_escaped("a\xff"
                       "b\xc3",
                       "a\\xffb\\xc3");
        assert_escaped("\xed\xa0\x80", "\\xed\\xa0\\x80"); /* a surrogate */
        assert_escaped(NULL, "");
}
END_TEST

/* Like snprintf: the whole length back, a NUL always, nothing cut in half. */
START_TEST(test_escape_truncates_cleanly) {
        char buf[8];

        ck_assert_uint_eq(sessiond_text_escape(buf, sizeof buf,
                                               "ab\x1b"
                                               "cd"),
                          8);
        ck_assert_str_eq(buf, "ab\\x1bc"); /* 7 bytes and the NUL */
        ck_assert_uint_eq(sessiond_text_escape(buf, 5,
                                               "ab\x1b"
                                               "cd"),
                          8);
        ck_assert_str_eq(buf, "ab"); /* not "ab\x" */
        ck_assert_uint_eq(sessiond_text_escape(buf, 4, "a\xe2\x82\xac"), 4);
        ck_assert_str_eq(buf, "a"); /* not half a euro sign */
        ck_assert_uint_eq(sessiond_text_escape(buf, 1, "abc"), 3);
        ck_assert_str_eq(buf, "");
        ck_assert_uint_eq(sessiond_text_escape(NULL, 0, "abc"), 3);
}
END_TEST

/* A bad value with control characters: the issue quotes it escaped, from
 * every source. */
START_TEST(test_issues_quote_values_escaped) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_CLEANUP_BATCH_SIZE=1\x1b[2J", "SESSION_DEBUG_MODE=yes\nno", NULL};

        ck_assert_int_eq(load_env(env, &c, &is), -EINVAL);
        assert_issue(&is, SESSIOND_ERROR,
                     "environment: SESSION_CLEANUP_BATCH_SIZE: value '1\\x1b[2J' is not an integer");
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_DEBUG_MODE: value 'yes\\x0ano' is not a boolean");
        for (size_t i = 0; i < is.count; i++)
                for (const char *p = is.items[i].message; *p; p++)
                        ck_assert_msg((unsigned char) *p >= 0x20 && *p != 0x7f, "raw: %s", is.items[i].message);
        sessiond_issues_clear(&is);

        ck_assert_int_eq(load_conf_text("environment = \"prod\x1b]0;x\x07\";\n", &c, &is), -EINVAL);
        for (size_t i = 0; i < is.count; i++)
                ck_assert_ptr_nonnull(strstr(is.items[i].message, "prod\\x1b]0;x\\x07"));
        ck_assert_uint_ge(is.count, 1);
        sessiond_issues_clear(&is);
        scratch_remove();
}
END_TEST

static Suite *escape_suite(void) {
        Suite *s = suite_create("config-escape");
        TCase *tc = tcase_create("escape");

        tcase_add_test(tc, test_escape_rules);
        tcase_add_test(tc, test_escape_truncates_cleanly);
        tcase_add_test(tc, test_issues_quote_values_escaped);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(escape_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
