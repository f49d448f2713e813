/* Unit tests of the call scanner (lib/varlink/scan.c): which calls it takes,
 * where it gives up to jansson, and that the values it hands out are the
 * ones jansson reads. (fuzz-varlink checks the same equivalence on every
 * input it makes; these tests pin the cases by name.) */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sessiond/varlink.h"
#include "varlink/scan.h"

#define VALIDATE                                                                               \
        "{\"method\":\"io.sessiond.Session.Validate\",\"parameters\":{\"token\":\"abc-_DEF\"," \
        "\"client\":{\"user_agent\":\"Mozilla/5.0 (X11) \\\"q\\\" \\\\ \\/ \\b\\f\\n\\r\\t\"," \
        "\"ip\":\"10.0.0.1\",\"accept_language\":null},\"touch\":false,\"n\":-42,\"zero\":-0," \
        "\"big\":999999999999999999,\"nothing\":null,\"empty\":{}}}"

static int scan(const char *s, struct varlink_call *c) {
        return varlink_call_scan(s, strlen(s), c);
}

START_TEST(test_scan_takes_a_typical_call) {
        struct varlink_call c = {}, j = {};
        struct varlink_value v;

        ck_assert_int_eq(scan(VALIDATE, &c), 0);
        ck_assert_ptr_nonnull(c.scanned);
        ck_assert_ptr_null(c.root);
        ck_assert_str_eq(c.method, "io.sessiond.Session.Validate");
        ck_assert(!c.oneway && !c.more && !c.upgrade);

        ck_assert_int_eq(varlink_call_param(&c, NULL, "token", &v), 0);
        ck_assert_int_eq(v.type, VARLINK_VALUE_STRING);
        ck_assert_str_eq(v.string, "abc-_DEF");
        ck_assert_uint_eq(v.length, 8);
        ck_assert_int_eq(varlink_call_param(&c, "client", "user_agent", &v), 0);
        ck_assert_str_eq(v.string, "Mozilla/5.0 (X11) \"q\" \\ / \b\f\n\r\t");
        ck_assert_int_eq(varlink_call_param(&c, "client", "ip", &v), 0);
        ck_assert_str_eq(v.string, "10.0.0.1");
        ck_assert_int_eq(varlink_call_param(&c, "client", "accept_language", &v), -ENOENT); /* null */
        ck_assert_int_eq(varlink_call_param(&c, "client", "accept_encoding", &v), -ENOENT); /* absent */
        ck_assert_int_eq(varlink_call_param(&c, NULL, "touch", &v), 0);
        ck_assert_int_eq(v.type, VARLINK_VALUE_BOOLEAN);
        ck_assert(!v.boolean);
        ck_assert_int_eq(varlink_call_param(&c, NULL, "n", &v), 0);
        ck_assert_int_eq(v.type, VARLINK_VALUE_INTEGER);
        ck_assert_int_eq(v.integer, -42);
        ck_assert_int_eq(varlink_call_param(&c, NULL, "zero", &v), 0);
        ck_assert_int_eq(v.integer, 0);
        ck_assert_int_eq(varlink_call_param(&c, NULL, "big", &v), 0);
        ck_assert_int_eq(v.integer, 999999999999999999LL);
        ck_assert_int_eq(varlink_call_param(&c, NULL, "nothing", &v), -ENOENT);
        ck_assert_int_eq(varlink_call_param(&c, NULL, "empty", &v), 0);
        ck_assert_int_eq(v.type, VARLINK_VALUE_OBJECT);
        ck_assert_int_eq(varlink_call_param(&c, "empty", "x", &v), -ENOENT);
        ck_assert_int_eq(varlink_call_param(&c, "token", "x", &v), -EINVAL);   /* not an object */
        ck_assert_int_eq(varlink_call_param(&c, "nothing", "x", &v), -ENOENT); /* null object */
        ck_assert_int_eq(varlink_call_param(&c, "missing", "x", &v), -ENOENT);
        /* a member of an object is not a member of the parameters */
        ck_assert_int_eq(varlink_call_param(&c, NULL, "ip", &v), -ENOENT);

        /* The same call read by jansson gives the same parameters. */
        ck_assert_int_eq(varlink_call_parse_json(VALIDATE, strlen(VALIDATE), &j), 0);
        ck_assert_ptr_nonnull(varlink_call_parameters(&c));
        ck_assert(json_equal(varlink_call_parameters(&c), varlink_call_parameters(&j)));
        /* made once, then kept */
        ck_assert_ptr_eq(varlink_call_parameters(&c), varlink_call_parameters(&c));
        varlink_call_clear(&c);
        varlink_call_clear(&j);
        ck_assert_ptr_null(c.scanned);
        ck_assert_ptr_null(c.parameters);
}
END_TEST

START_TEST(test_scan_flags_and_no_parameters) {
        struct varlink_call c = {};
        struct varlink_value v;
        const char *s = " {\"more\" : true ,\"method\":\"a.b.Watch\",\"upgrade\":false,\"future\":\"x\"}\n";

        ck_assert_int_eq(scan(s, &c), 0);
        ck_assert(c.more && !c.oneway && !c.upgrade);
        ck_assert_str_eq(c.method, "a.b.Watch");
        ck_assert_int_eq(varlink_call_param(&c, NULL, "x", &v), -ENOENT);
        ck_assert_uint_eq(json_object_size(varlink_call_parameters(&c)), 0);
        varlink_call_clear(&c);

        ck_assert_int_eq(scan("{\"method\":\"a.b.C\",\"oneway\":true,\"parameters\":{}}", &c), 0);
        ck_assert(c.oneway);
        varlink_call_clear(&c);
}
END_TEST

/* "parameters": null (what the Go reference implementation sends for a call
 * without parameters) is taken, and means no parameters, as jansson reads it. */
START_TEST(test_scan_null_parameters) {
        static const char *const calls[] = {
                "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":null}",
                "{\"parameters\" : null , \"method\":\"a.b.Watch\",\"more\":true}",
        };
        for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
                struct varlink_call c = {}, j = {};
                struct varlink_value v;

                ck_assert_msg(scan(calls[i], &c) == 0, "not scanned: %s", calls[i]);
                ck_assert_int_eq(varlink_call_param(&c, NULL, "token", &v), -ENOENT);
                ck_assert_uint_eq(json_object_size(varlink_call_parameters(&c)), 0);
                ck_assert_int_eq(varlink_call_parse_json(calls[i], strlen(calls[i]), &j), 0);
                ck_assert(json_equal(varlink_call_parameters(&c), varlink_call_parameters(&j)));
                ck_assert(c.more == j.more);
                varlink_call_clear(&c);
                varlink_call_clear(&j);
        }
        /* null, not a word that starts like it */
        ck_assert_int_eq(scan("{\"method\":\"a.b.C\",\"parameters\":nullx}", &(struct varlink_call){}), -EAGAIN);
        ck_assert_int_eq(scan("{\"method\":\"a.b.C\",\"parameters\":nul}", &(struct varlink_call){}), -EAGAIN);
}
END_TEST

/* Each of these is outside the scanner's shape: it answers -EAGAIN, and
 * varlink_call_parse() gives jansson's verdict (given as expected). */
static const struct {
        const char *msg;
        int expected;
} give_up[] = {
        {"{\"method\":\"a.b.C\",\"parameters\":{\"s\":\"\\u0041\"}}", 0},                 /* \u escape */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"s\":\"\\u0000\"}}", -EBADMSG},          /* NUL */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"s\":\"\xc3\xa9\"}}", 0},                /* UTF-8 */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"s\":\"\xff\"}}", -EBADMSG},             /* not UTF-8 */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"s\":\"a\tb\"}}", -EBADMSG},             /* raw control */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"s\":\"\\x\"}}", -EBADMSG},              /* bad escape */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"n\":1.5}}", 0},                         /* real */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"n\":1e3}}", 0},                         /* exponent */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"n\":9223372036854775807}}", 0},         /* 19 digits */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"n\":99999999999999999999}}", -EBADMSG}, /* overflow */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"n\":01}}", -EBADMSG},                   /* leading zero */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"n\":-}}", -EBADMSG},
        {"{\"method\":\"a.b.C\",\"parameters\":{\"a\":[1,2]}}", 0},            /* array */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"o\":{\"p\":{}}}}", 0},       /* too deep for us */
        {"{\"method\":\"a.b.C\",\"x\":{}}", 0},                                /* object member */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"x\":1,\"x\":2}}", -EBADMSG}, /* duplicates */
        {"{\"method\":\"a.b.C\",\"parameters\":{\"o\":{\"x\":1,\"x\":1}}}", -EBADMSG},
        {"{\"method\":\"a.b.C\",\"method\":\"a.b.C\"}", -EBADMSG},
        {"{\"method\":\"a.b.C\",\"parameters\":{},\"parameters\":{}}", -EBADMSG},
        {"{\"parameters\":{}}", -EBADMSG}, /* no method */
        {"{}", -EBADMSG},
        {"{\"method\":\"abc\"}", -EBADMSG}, /* not iface.Method */
        {"{\"method\":1}", -EBADMSG},
        {"{\"method\":\"a.b.C\",\"parameters\":\"x\"}", -EBADMSG},
        {"{\"method\":\"a.b.C\",\"more\":1}", -EBADMSG},
        {"{\"method\":\"a.b.C\",\"more\":true,\"oneway\":true}", -EBADMSG},
        {"{\"method\":\"a.b.C\"} x", -EBADMSG}, /* trailing bytes */
        {"{\"method\":\"a.b.C\",}", -EBADMSG},
        {"{\"method\":\"a.b.C\" \"more\":true}", -EBADMSG},
        {"{\"method\":\"a.b.C\",\"parameters\":{\"t\":tru}}", -EBADMSG},
        {"{\"method\":\"a.b.C\",\"parameters\":{\"t\":truex}}", -EBADMSG},
        {"{\"method\":\"a.b.C\",\"parameters\":{\"s\":\"open}}", -EBADMSG},
        {"[\"method\"]", -EBADMSG},
        {"{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"method\":\"a.b.C\"}",
         0}, /* many members */
};

START_TEST(test_scan_gives_up) {
        for (size_t i = 0; i < sizeof give_up / sizeof give_up[0]; i++) {
                const char *m = give_up[i].msg;
                struct varlink_call c = {};
                int r;

                ck_assert_msg(scan(m, &c) == -EAGAIN, "scanned: %s", m);
                ck_assert_ptr_null(c.scanned);
                r = varlink_call_parse(m, strlen(m), &c);
                ck_assert_msg(r == give_up[i].expected, "%d instead of %d: %s", r, give_up[i].expected, m);
                if (r == 0)
                        ck_assert_ptr_nonnull(c.root);
                varlink_call_clear(&c);
        }
}
END_TEST

/* More parameters than the table holds: jansson takes the call. */
START_TEST(test_scan_many_parameters) {
        char msg[2048], *p = msg;
        struct varlink_call c = {};
        struct varlink_value v;

        p += sprintf(p, "{\"method\":\"a.b.C\",\"parameters\":{");
        for (int i = 0; i < 40; i++)
                p += sprintf(p, "%s\"k%d\":%d", i ? "," : "", i, i);
        sprintf(p, "}}");
        ck_assert_int_eq(scan(msg, &c), -EAGAIN);
        ck_assert_int_eq(varlink_call_parse(msg, strlen(msg), &c), 0);
        ck_assert_ptr_nonnull(c.root);
        ck_assert_int_eq(varlink_call_param(&c, NULL, "k39", &v), 0);
        ck_assert_int_eq(v.integer, 39);
        varlink_call_clear(&c);
}
END_TEST

/* varlink_call_param() answers the same for a call jansson read. */
START_TEST(test_param_over_jansson) {
        struct varlink_call c = {};
        struct varlink_value v;
        const char *m = "{\"method\":\"a.b.C\",\"parameters\":{\"s\":\"\\u00e9x\",\"r\":2.5,\"a\":[1],"
                        "\"o\":{\"i\":7,\"n\":null},\"z\":null,\"b\":true}}";

        ck_assert_int_eq(varlink_call_parse(m, strlen(m), &c), 0);
        ck_assert_ptr_nonnull(c.root);
        ck_assert_int_eq(varlink_call_param(&c, NULL, "s", &v), 0);
        ck_assert_int_eq(v.type, VARLINK_VALUE_STRING);
        ck_assert_str_eq(v.string, "\xc3\xa9x");
        ck_assert_uint_eq(v.length, 3);
        ck_assert_int_eq(varlink_call_param(&c, NULL, "r", &v), 0);
        ck_assert_int_eq(v.type, VARLINK_VALUE_REAL);
        ck_assert(v.real == 2.5);
        ck_assert_int_eq(varlink_call_param(&c, NULL, "a", &v), 0);
        ck_assert_int_eq(v.type, VARLINK_VALUE_ARRAY);
        ck_assert_int_eq(varlink_call_param(&c, "o", "i", &v), 0);
        ck_assert_int_eq(v.integer, 7);
        ck_assert_int_eq(varlink_call_param(&c, "o", "n", &v), -ENOENT);
        ck_assert_int_eq(varlink_call_param(&c, "z", "n", &v), -ENOENT);
        ck_assert_int_eq(varlink_call_param(&c, "b", "n", &v), -EINVAL);
        ck_assert_int_eq(varlink_call_param(&c, NULL, "b", &v), 0);
        ck_assert(v.boolean);
        ck_assert_int_eq(varlink_call_param(&c, NULL, "z", &v), -ENOENT);
        varlink_call_clear(&c);
}
END_TEST

static Suite *scan_suite(void) {
        Suite *s = suite_create("varlink-scan");
        TCase *tc = tcase_create("scan");

        tcase_add_test(tc, test_scan_takes_a_typical_call);
        tcase_add_test(tc, test_scan_flags_and_no_parameters);
        tcase_add_test(tc, test_scan_null_parameters);
        tcase_add_test(tc, test_scan_gives_up);
        tcase_add_test(tc, test_scan_many_parameters);
        tcase_add_test(tc, test_param_over_jansson);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(scan_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
