/* The text of user and platform ids (daemon/names.c): strict UTF-8 without
 * control characters or line separators. */
#include "helpers.h"
#include "names.h"

static const char *problem(const char *s) {
        return name_text_problem(s, strlen(s));
}

START_TEST(test_accepted) {
        static const char *const good[] = {
                "alice",
                "user@example.org",
                "Zoë",
                "名前",
                "😀 emoji",
                "a b~",
                "\xc2\xa0nbsp",     /* U+00A0, the first after C1 */
                "\xe2\x80\xa7",     /* U+2027, next to the separators */
                "\xe2\x80\xaa",     /* U+202A */
                "\xed\x9f\xbf",     /* U+D7FF, below the surrogates */
                "\xee\x80\x80",     /* U+E000, above them */
                "\xf4\x8f\xbf\xbf", /* U+10FFFF */
                "\xef\xbf\xbd",     /* U+FFFD */
        };

        for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
                ck_assert_msg(problem(good[i]) == NULL, "%zu refused: %s", i, problem(good[i]));
        ck_assert_ptr_null(name_text_problem("", 0));
}
END_TEST

START_TEST(test_controls) {
        char s[4] = "a?b";

        for (int c = 1; c < 0x20; c++) {
                s[1] = (char) c;
                ck_assert_str_eq(problem(s), "contains control characters");
        }
        s[1] = 0x7f;
        ck_assert_str_eq(problem(s), "contains control characters");
        /* Every C1 control, U+0080..U+009F (NEL, CSI ...). */
        for (int c = 0x80; c <= 0x9f; c++) {
                char t[4] = {(char) (0xc0 | (c >> 6)), (char) (0x80 | (c & 0x3f)), 'x', 0};

                ck_assert_str_eq(problem(t), "contains control characters");
        }
        ck_assert_str_eq(problem("line\xe2\x80\xa8"
                                 "break"),
                         "contains line or paragraph separators");
        ck_assert_str_eq(problem("para\xe2\x80\xa9"), "contains line or paragraph separators");
        /* A NUL inside the counted bytes is a control too. */
        ck_assert_str_eq(name_text_problem("a\0b", 3), "contains control characters");
}
END_TEST

START_TEST(test_invalid_utf8) {
        static const char *const bad[] = {
                "\x80",             /* a lone continuation byte */
                "a\xbf",            /* another */
                "\xc3",             /* truncated */
                "\xe2\x82",         /* truncated */
                "\xf0\x9f\x98",     /* truncated */
                "\xc3(",            /* a lead without its continuation */
                "\xc0\xaf",         /* overlong '/' */
                "\xc1\xbf",         /* overlong */
                "\xe0\x80\xaf",     /* overlong, 3 bytes */
                "\xf0\x80\x80\xaf", /* overlong, 4 bytes */
                "\xed\xa0\x80",     /* U+D800, a surrogate */
                "\xed\xbf\xbf",     /* U+DFFF */
                "\xf4\x90\x80\x80", /* U+110000 */
                "\xf5\x80\x80\x80", /* no such lead byte */
                "\xfe",
                "\xff",
                "ok\xe2\x80", /* the end of the name cuts a sequence */
        };

        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                const char *r = problem(bad[i]);

                ck_assert_msg(r && strcmp(r, "is not valid UTF-8") == 0, "%zu: %s", i, r ? r : "accepted");
        }
        /* A valid sequence cut by the length given. */
        ck_assert_str_eq(name_text_problem("\xc3\xa9", 1), "is not valid UTF-8");
}
END_TEST

int main(void) {
        Suite *s = suite_create("names");
        TCase *tc = tcase_create("names");

        tcase_add_test(tc, test_accepted);
        tcase_add_test(tc, test_controls);
        tcase_add_test(tc, test_invalid_utf8);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
