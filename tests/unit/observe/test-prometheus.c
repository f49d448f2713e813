/* The Prometheus text of daemon/prometheus.c: grouping by name, names and
 * labels made legal, escaping, values. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "prometheus.h"

static char *render(const char *json) {
        json_error_t e;
        json_t *list = json_loads(json, JSON_DECODE_ANY, &e);
        char *text = NULL;
        size_t len = 0;

        ck_assert_msg(list, "%s", e.text);
        ck_assert_int_eq(prometheus_render(list, &text, &len), 0);
        ck_assert_uint_eq(strlen(text), len);
        json_decref(list);
        return text;
}

START_TEST(test_grouped_by_name) {
        char *t = render(
                "[{\"name\":\"a_total\",\"help\":\"A.\",\"type\":\"counter\",\"value\":1,\"labels\":{\"k\":\"x\"}},"
                " {\"name\":\"b\",\"help\":\"B.\",\"type\":\"gauge\",\"value\":2.5},"
                " {\"name\":\"a_total\",\"help\":\"A.\",\"type\":\"counter\",\"value\":3,\"labels\":{\"k\":\"y\"}}]");

        ck_assert_str_eq(t, "# HELP sessiond_a_total A.\n# TYPE sessiond_a_total counter\n"
                            "sessiond_a_total{k=\"x\"} 1\nsessiond_a_total{k=\"y\"} 3\n"
                            "# HELP sessiond_b B.\n# TYPE sessiond_b gauge\nsessiond_b 2.5\n");
        free(t);
}
END_TEST

START_TEST(test_escaping_and_names) {
        char *t = render("[{\"name\":\"9a-b:c\",\"help\":\"back\\\\slash\\nnew \\\"q\\\"\",\"type\":\"summary\","
                         "\"value\":true,\"labels\":{\"l-1\":\"v\\\"\\\\\\n\",\"n\":7}}]");

        /* a leading digit becomes '_' even after the prefix, as sessionctl writes it */
        ck_assert_str_eq(t, "# HELP sessiond__a_b:c back\\\\slash\\nnew \"q\"\n# TYPE sessiond__a_b:c untyped\n"
                            "sessiond__a_b:c{l_1=\"v\\\"\\\\\\n\",n=\"7\"} 1\n");
        free(t);
}
END_TEST

START_TEST(test_values) {
        json_t *list = json_array();
        char *t = NULL;
        size_t len;

        /* (jansson holds no NaN or infinity: metrics.c writes 0 for them) */
        json_array_append_new(
                list, json_pack("{s:s, s:s, s:s, s:f}", "name", "third", "help", "h", "type", "gauge", "value", 0.1));
        json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:I}", "name", "big", "help", "h", "type", "counter",
                                              "value", (json_int_t) INT64_MAX));
        json_array_append_new(
                list, json_pack("{s:s, s:s, s:s, s:s}", "name", "str", "help", "h", "type", "gauge", "value", "x"));
        json_array_append_new(list, json_pack("{s:s}", "help", "no name: skipped"));
        ck_assert_int_eq(prometheus_render(list, &t, &len), 0);
        ck_assert_ptr_nonnull(strstr(t, "\nsessiond_third 0.10000000000000001\n"));
        ck_assert_ptr_eq(strstr(t, "# HELP sessiond_third"), t);
        ck_assert_ptr_nonnull(strstr(t, "\nsessiond_big 9223372036854775807\n"));
        ck_assert_ptr_nonnull(strstr(t, "\nsessiond_str NaN\n"));
        ck_assert_ptr_null(strstr(t, "skipped"));
        free(t);
        json_decref(list);

        /* not a list */
        list = json_object();
        ck_assert_int_eq(prometheus_render(list, &t, &len), -EINVAL);
        json_decref(list);
        t = render("[]");
        ck_assert_str_eq(t, "");
        free(t);
}
END_TEST

int main(void) {
        Suite *s = suite_create("prometheus");
        TCase *tc = tcase_create("prometheus");

        tcase_add_test(tc, test_grouped_by_name);
        tcase_add_test(tc, test_escaping_and_names);
        tcase_add_test(tc, test_values);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
