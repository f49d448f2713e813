/* Unit tests of Varlink call and reply parsing, the encoders and the
 * parameter helpers (lib/varlink/message.c, encode.c, param.c). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sessiond/varlink.h"

static int parse_call(const char *s, struct varlink_call *c) {
        return varlink_call_parse(s, strlen(s), c);
}

static int parse_reply(const char *s, struct varlink_reply *rp) {
        return varlink_reply_parse(s, strlen(s), rp);
}

START_TEST(test_call_ok) {
        struct varlink_call c;

        ck_assert_int_eq(
                parse_call(
                        "{\"method\":\"io.sessiond.Session.Create\",\"parameters\":{\"user_id\":\"u\"},\"more\":true}",
                        &c),
                0);
        ck_assert_str_eq(c.method, "io.sessiond.Session.Create");
        ck_assert(json_is_object(varlink_call_parameters(&c)));
        ck_assert_str_eq(json_string_value(json_object_get(varlink_call_parameters(&c), "user_id")), "u");
        ck_assert(c.more);
        ck_assert(!c.oneway);
        ck_assert(!c.upgrade);
        varlink_call_clear(&c);
        ck_assert_ptr_null(c.root);

        /* parameters absent: an empty object; flags false is fine; unknown keys ignored */
        ck_assert_int_eq(
                parse_call("{\"method\":\"a.b.C\",\"oneway\":true,\"more\":false,\"upgrade\":false,\"future\":1}", &c),
                0);
        ck_assert(json_is_object(varlink_call_parameters(&c)));
        ck_assert_uint_eq(json_object_size(varlink_call_parameters(&c)), 0);
        ck_assert(c.oneway);
        varlink_call_clear(&c);

        /* parameters null (the Go reference implementation's calls without
         * parameters): an empty object, through jansson too (the array
         * member is outside the scanner's shape) */
        ck_assert_int_eq(parse_call("{\"method\":\"a.b.C\",\"parameters\":null,\"x\":[]}", &c), 0);
        ck_assert_ptr_nonnull(c.root);
        ck_assert(json_is_object(varlink_call_parameters(&c)));
        ck_assert_uint_eq(json_object_size(varlink_call_parameters(&c)), 0);
        varlink_call_clear(&c);

        /* whitespace around is JSON */
        ck_assert_int_eq(parse_call(" \n{ \"method\" : \"org.varlink.service.GetInfo\" } \n", &c), 0);
        varlink_call_clear(&c);
}
END_TEST

START_TEST(test_call_bad) {
        static const char *const bad[] = {
                "",
                "garbage",
                "{",
                "{\"method\":\"a.b.C\"} trailing",
                "[]",
                "\"a.b.C\"",
                "null",
                "{}",
                "{\"method\":1}",
                "{\"method\":null}",
                "{\"method\":\"\"}",
                "{\"method\":\"Create\"}",     /* no interface */
                "{\"method\":\"a.Create\"}",   /* interface of one component */
                "{\"method\":\"a.b.create\"}", /* lower-case method */
                "{\"method\":\"a.b.\"}",
                "{\"method\":\".a.b.C\"}",
                "{\"method\":\"a..b.C\"}",
                "{\"method\":\"a.-b.C\"}",
                "{\"method\":\"a.b-.C\"}",
                "{\"method\":\"1a.b.C\"}",
                "{\"method\":\"a.b.C-D\"}",
                "{\"method\":\"a b.c.D\"}",
                "{\"method\":\"a.b.C\",\"parameters\":[]}",
                "{\"method\":\"a.b.C\",\"parameters\":\"x\"}",
                "{\"method\":\"a.b.C\",\"parameters\":5}",
                "{\"method\":\"a.b.C\",\"parameters\":false}",
                "{\"method\":\"a.b.C\",\"oneway\":1}",
                "{\"method\":\"a.b.C\",\"oneway\":\"true\"}",
                "{\"method\":\"a.b.C\",\"more\":null}",
                "{\"method\":\"a.b.C\",\"more\":0}",
                "{\"method\":\"a.b.C\",\"upgrade\":\"yes\"}",
                "{\"method\":\"a.b.C\",\"oneway\":true,\"more\":true}",
                "{\"method\":\"a.b.C\",\"method\":\"a.b.D\"}",               /* duplicate */
                "{\"method\":\"a.b.C\",\"parameters\":{\"x\":1,\"x\":2}}",   /* nested duplicate */
                "{\"method\":\"a.b.C\",\"parameters\":{\"s\":\"\\u0000\"}}", /* NUL in a string */
                "{\"method\":\"a.b.C\",\"parameters\":{\"s\":\"\xff\"}}",    /* not UTF-8 */
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct varlink_call c = {};
                int r = parse_call(bad[i], &c);
                ck_assert_msg(r == -EBADMSG, "accepted or wrong error %d: %s", r, bad[i]);
                ck_assert_ptr_null(c.root);
        }
}
END_TEST

START_TEST(test_call_dashes) {
        struct varlink_call c;

        ck_assert_int_eq(parse_call("{\"method\":\"org.exa--mple.foo-bar2.Method9\"}", &c), 0);
        varlink_call_clear(&c);
}
END_TEST

/* n nested arrays inside the parameters, with brackets in strings too. */
static char *nested(size_t n, const char *tail) {
        size_t len = n * 2 + 200;
        char *s = malloc(len), *p = s;

        ck_assert_ptr_nonnull(s);
        p += sprintf(p, "{\"method\":\"a.b.C\",\"parameters\":{\"s\":\"[[[{{{\\\"[[\",\"x\":");
        for (size_t i = 0; i < n; i++)
                *p++ = '[';
        for (size_t i = 0; i < n; i++)
                *p++ = ']';
        p += sprintf(p, "}%s}", tail);
        return s;
}

START_TEST(test_depth) {
        struct varlink_call c;
        char *s;

        /* root object + parameters object + arrays: exactly the limit passes */
        s = nested(VARLINK_MAX_DEPTH - 2, "");
        ck_assert_int_eq(parse_call(s, &c), 0);
        varlink_call_clear(&c);
        free(s);

        s = nested(VARLINK_MAX_DEPTH - 1, "");
        ck_assert_int_eq(parse_call(s, &c), -EBADMSG);
        free(s);

        /* far beyond jansson's own limit: rejected without recursing */
        s = nested(1000000, "");
        ck_assert_int_eq(parse_call(s, &c), -EBADMSG);
        free(s);

        /* unbalanced closers do not let the count go negative */
        s = nested(VARLINK_MAX_DEPTH - 1, "]]]]]]]]");
        ck_assert_int_eq(parse_call(s, &c), -EBADMSG);
        free(s);
}
END_TEST

START_TEST(test_reply) {
        struct varlink_reply rp;

        ck_assert_int_eq(parse_reply("{\"parameters\":{\"a\":1}}", &rp), 0);
        ck_assert_ptr_null(rp.error);
        ck_assert(!rp.continues);
        ck_assert_int_eq(json_integer_value(json_object_get(rp.parameters, "a")), 1);
        varlink_reply_clear(&rp);

        ck_assert_int_eq(parse_reply("{\"parameters\":{},\"continues\":true}", &rp), 0);
        ck_assert(rp.continues);
        varlink_reply_clear(&rp);

        ck_assert_int_eq(parse_reply("{}", &rp), 0);
        ck_assert(json_is_object(rp.parameters));
        varlink_reply_clear(&rp);

        ck_assert_int_eq(parse_reply("{\"parameters\":null,\"continues\":true}", &rp), 0);
        ck_assert(json_is_object(rp.parameters));
        ck_assert_uint_eq(json_object_size(rp.parameters), 0);
        varlink_reply_clear(&rp);

        ck_assert_int_eq(
                parse_reply("{\"error\":\"io.sessiond.Session.Expired\",\"parameters\":{\"reason\":\"idle\"}}", &rp),
                0);
        ck_assert_str_eq(rp.error, "io.sessiond.Session.Expired");
        ck_assert_str_eq(json_string_value(json_object_get(rp.parameters, "reason")), "idle");
        varlink_reply_clear(&rp);

        static const char *const bad[] = {
                "",
                "x",
                "[]",
                "{\"error\":1}",
                "{\"error\":\"NoDot\"}",
                "{\"parameters\":[]}",
                "{\"continues\":1}",
                "{\"error\":\"a.b.E\",\"continues\":true}",
                "{\"parameters\":{},\"parameters\":{}}",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                ck_assert_msg(parse_reply(bad[i], &rp) == -EBADMSG, "accepted: %s", bad[i]);
}
END_TEST

START_TEST(test_method_split) {
        char iface[64];
        const char *m;

        m = varlink_method_split("org.varlink.service.GetInfo", iface, sizeof(iface));
        ck_assert_str_eq(m, "GetInfo");
        ck_assert_str_eq(iface, "org.varlink.service");
        ck_assert_ptr_null(varlink_method_split("org.varlink.service.GetInfo", iface, 19));
        ck_assert_ptr_nonnull(varlink_method_split("org.varlink.service.GetInfo", iface, 20));
        ck_assert_ptr_null(varlink_method_split("GetInfo", iface, sizeof(iface)));
        ck_assert_ptr_null(varlink_method_split(NULL, iface, sizeof(iface)));
        ck_assert_ptr_null(varlink_method_split("a.b.", iface, sizeof(iface)));
}
END_TEST

/* Encodes and checks the buffer is text + exactly one NUL, then parses it. */
static json_t *encoded(char *buf, size_t len) {
        json_t *j;

        ck_assert_uint_gt(len, 1);
        ck_assert_int_eq(buf[len - 1], '\0');
        ck_assert_uint_eq(strlen(buf), len - 1);
        ck_assert_ptr_null(strchr(buf, '\n')); /* compact */
        j = json_loadb(buf, len - 1, JSON_REJECT_DUPLICATES, NULL);
        ck_assert_ptr_nonnull(j);
        free(buf);
        return j;
}

START_TEST(test_encode_round_trip) {
        json_t *params = json_pack("{s:s, s:i, s:[i,i], s:{s:b}, s:s}", "user_id", "ü \"quoted\"\n", "n", 42, "list", 1,
                                   2, "obj", "t", 1, "ctl", "\x01");
        struct varlink_call c;
        struct varlink_reply rp;
        char *buf;
        size_t len;
        json_t *j;

        ck_assert_ptr_nonnull(params);

        ck_assert_int_eq(varlink_encode_call("io.sessiond.Session.Create", params, false, true, &buf, &len), 0);
        ck_assert_int_eq(varlink_call_parse(buf, len - 1, &c), 0);
        ck_assert_str_eq(c.method, "io.sessiond.Session.Create");
        ck_assert(json_equal(varlink_call_parameters(&c), params));
        ck_assert(c.more && !c.oneway);
        varlink_call_clear(&c);
        j = encoded(buf, len);
        json_decref(j);

        ck_assert_int_eq(varlink_encode_call("a.b.C", NULL, true, false, &buf, &len), 0);
        ck_assert_int_eq(varlink_call_parse(buf, len - 1, &c), 0);
        ck_assert(c.oneway && !c.more);
        ck_assert_uint_eq(json_object_size(varlink_call_parameters(&c)), 0);
        varlink_call_clear(&c);
        free(buf);

        ck_assert_int_eq(varlink_encode_reply(params, false, &buf, &len), 0);
        ck_assert_int_eq(varlink_reply_parse(buf, len - 1, &rp), 0);
        ck_assert_ptr_null(rp.error);
        ck_assert(!rp.continues);
        ck_assert(json_equal(rp.parameters, params));
        varlink_reply_clear(&rp);
        j = encoded(buf, len);
        ck_assert_ptr_null(json_object_get(j, "continues"));
        json_decref(j);

        ck_assert_int_eq(varlink_encode_reply(NULL, true, &buf, &len), 0);
        ck_assert_str_eq(buf, "{\"parameters\":{},\"continues\":true}");
        ck_assert_uint_eq(len, strlen(buf) + 1);
        free(buf);

        ck_assert_int_eq(varlink_encode_error("io.sessiond.Session.NotFound", NULL, &buf, &len), 0);
        ck_assert_str_eq(buf, "{\"error\":\"io.sessiond.Session.NotFound\",\"parameters\":{}}");
        free(buf);

        ck_assert_int_eq(varlink_encode_error(VARLINK_ERROR_INVALID_PARAMETER, params, &buf, &len), 0);
        ck_assert_int_eq(varlink_reply_parse(buf, len - 1, &rp), 0);
        ck_assert_str_eq(rp.error, VARLINK_ERROR_INVALID_PARAMETER);
        ck_assert(json_equal(rp.parameters, params));
        varlink_reply_clear(&rp);
        free(buf);

        /* borrowed, not stolen */
        ck_assert_int_eq(params->refcount, 1);
        json_decref(params);
}
END_TEST

START_TEST(test_encode_large) {
        json_t *params = json_object();
        struct varlink_reply rp;
        char *buf, key[32];
        size_t len;

        for (int i = 0; i < 5000; i++) {
                sprintf(key, "k%d", i);
                json_object_set_new(params, key, json_string("some value that takes room"));
        }
        ck_assert_int_eq(varlink_encode_reply(params, false, &buf, &len), 0);
        ck_assert_uint_gt(len, 5000 * 20);
        ck_assert_int_eq(varlink_reply_parse(buf, len - 1, &rp), 0);
        ck_assert(json_equal(rp.parameters, params));
        varlink_reply_clear(&rp);
        free(buf);
        json_decref(params);
}
END_TEST

START_TEST(test_encode_bad) {
        json_t *arr = json_array();
        char *buf = NULL;
        size_t len;

        ck_assert_int_eq(varlink_encode_call("bad", NULL, false, false, &buf, &len), -EINVAL);
        ck_assert_int_eq(varlink_encode_call("a.b.C\"", NULL, false, false, &buf, &len), -EINVAL);
        ck_assert_int_eq(varlink_encode_call("a.b.C", NULL, true, true, &buf, &len), -EINVAL);
        ck_assert_int_eq(varlink_encode_call("a.b.C", arr, false, false, &buf, &len), -EINVAL);
        ck_assert_int_eq(varlink_encode_reply(arr, false, &buf, &len), -EINVAL);
        ck_assert_int_eq(varlink_encode_error("NotFound", NULL, &buf, &len), -EINVAL);
        ck_assert_int_eq(varlink_encode_error(NULL, NULL, &buf, &len), -EINVAL);
        ck_assert_ptr_null(buf);
        json_decref(arr);
}
END_TEST

START_TEST(test_params) {
        json_t *p = json_pack("{s:s, s:I, s:b, s:{}, s:n, s:f, s:s}", "s", "str", "i", (json_int_t) 9007199254740993LL,
                              "b", 1, "o", "null", "real", 3.0, "num", "3");
        const char *s = "default";
        int64_t i = -1;
        bool b = false;
        json_t *o = NULL;

        ck_assert_ptr_nonnull(p);
        ck_assert_int_eq(varlink_param_string(p, "s", &s), 0);
        ck_assert_str_eq(s, "str");
        ck_assert_int_eq(varlink_param_int(p, "i", &i), 0);
        ck_assert(i == 9007199254740993LL);
        ck_assert_int_eq(varlink_param_bool(p, "b", &b), 0);
        ck_assert(b);
        ck_assert_int_eq(varlink_param_object(p, "o", &o), 0);
        ck_assert(json_is_object(o));

        /* absent and null: -ENOENT, value untouched */
        s = "default";
        ck_assert_int_eq(varlink_param_string(p, "missing", &s), -ENOENT);
        ck_assert_int_eq(varlink_param_string(p, "null", &s), -ENOENT);
        ck_assert_str_eq(s, "default");
        i = 7;
        ck_assert_int_eq(varlink_param_int(p, "null", &i), -ENOENT);
        ck_assert_int_eq(i, 7);
        ck_assert_int_eq(varlink_param_bool(p, "missing", &b), -ENOENT);
        ck_assert_int_eq(varlink_param_object(p, "missing", &o), -ENOENT);

        /* wrong types: -EINVAL, value untouched */
        ck_assert_int_eq(varlink_param_string(p, "i", &s), -EINVAL);
        ck_assert_str_eq(s, "default");
        ck_assert_int_eq(varlink_param_int(p, "real", &i), -EINVAL);
        ck_assert_int_eq(varlink_param_int(p, "num", &i), -EINVAL);
        ck_assert_int_eq(varlink_param_int(p, "b", &i), -EINVAL);
        ck_assert_int_eq(i, 7);
        ck_assert_int_eq(varlink_param_bool(p, "s", &b), -EINVAL);
        ck_assert_int_eq(varlink_param_bool(p, "i", &b), -EINVAL);
        ck_assert_int_eq(varlink_param_object(p, "s", &o), -EINVAL);
        ck_assert_int_eq(varlink_param_object(p, "b", &o), -EINVAL);
        json_decref(p);
}
END_TEST

static Suite *message_suite(void) {
        Suite *s = suite_create("varlink-message");
        TCase *tc = tcase_create("message");

        tcase_add_test(tc, test_call_ok);
        tcase_add_test(tc, test_call_bad);
        tcase_add_test(tc, test_call_dashes);
        tcase_add_test(tc, test_depth);
        tcase_add_test(tc, test_reply);
        tcase_add_test(tc, test_method_split);
        tcase_add_test(tc, test_encode_round_trip);
        tcase_add_test(tc, test_encode_large);
        tcase_add_test(tc, test_encode_bad);
        tcase_add_test(tc, test_params);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(message_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
