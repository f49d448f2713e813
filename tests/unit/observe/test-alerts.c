/* The alert state machine (daemon/alerts.c): raised once, updated while the
 * condition holds, resolved by itself when it clears, raised anew later;
 * listed firing first, then the resolved history newest first, bounded. */
#include <math.h>
#include <string.h>

#include "alerts.h"
#include "helpers.h"
#include "log.h"

static json_t *find(json_t *list, const char *name, const char *state, size_t nth) {
        size_t i;
        json_t *a;

        json_array_foreach(list, i, a) {
                if (strcmp(json_string_value(json_object_get(a, "name")), name) == 0 &&
                    strcmp(json_string_value(json_object_get(a, "state")), state) == 0 && nth-- == 0)
                        return a;
        }
        return NULL;
}

START_TEST(test_lifecycle) {
        struct alerts *a;
        const struct alert *al = NULL;
        json_t *list, *x;

        ck_assert_int_eq(alerts_new(&a), 0);
        /* Quiet while the condition does not hold. */
        ck_assert_int_eq(alerts_set(a, "creation_rate", false, 5, 100, "calm", 1000, &al), ALERT_UNCHANGED);
        ck_assert_ptr_null(al);
        ck_assert_uint_eq(alerts_firing(a), 0);

        /* Raised once. */
        ck_assert_int_eq(alerts_set(a, "creation_rate", true, 150, 100, "150 created", 1010, &al), ALERT_RAISED);
        ck_assert_ptr_nonnull(al);
        ck_assert(al->firing && al->raised_at == 1010 && al->value == 150);
        ck_assert_int_eq(alerts_set(a, "creation_rate", true, 300, 100, "300 created", 1020, &al), ALERT_UNCHANGED);
        ck_assert(al->value == 300 && al->peak == 300 && al->raised_at == 1010);
        ck_assert_str_eq(al->message, "300 created");
        ck_assert_int_eq(alerts_set(a, "creation_rate", true, 120, 100, "120 created", 1030, NULL), ALERT_UNCHANGED);
        ck_assert(alerts_is_firing(a, "creation_rate"));
        ck_assert(!alerts_is_firing(a, "failure_rate"));
        ck_assert_uint_eq(alerts_firing(a), 1);

        list = alerts_to_json(a);
        x = find(list, "creation_rate", "firing", 0);
        ck_assert_ptr_nonnull(x);
        ck_assert_int_eq(json_integer_value(json_object_get(x, "value")), 120);
        ck_assert_int_eq(json_integer_value(json_object_get(x, "peak")), 300);
        ck_assert_int_eq(json_integer_value(json_object_get(x, "threshold")), 100);
        ck_assert_int_eq(json_integer_value(json_object_get(x, "raised_at")), 1010);
        ck_assert(json_is_null(json_object_get(x, "resolved_at")));
        json_decref(list);

        /* Resolved by itself; the record keeps the last firing numbers. */
        ck_assert_int_eq(alerts_set(a, "creation_rate", false, 10, 100, "calm", 1040, &al), ALERT_RESOLVED);
        ck_assert(!al->firing && al->resolved_at == 1040 && al->value == 120);
        ck_assert_int_eq(alerts_set(a, "creation_rate", false, 10, 100, "calm", 1050, &al), ALERT_UNCHANGED);
        ck_assert_uint_eq(alerts_firing(a), 0);

        /* Raised anew: a second record. */
        ck_assert_int_eq(alerts_set(a, "creation_rate", true, 101.5, 100, "again", 1060, NULL), ALERT_RAISED);
        list = alerts_to_json(a);
        ck_assert_uint_eq(json_array_size(list), 2);
        x = json_array_get(list, 0); /* firing first */
        ck_assert_str_eq(json_string_value(json_object_get(x, "state")), "firing");
        ck_assert(json_real_value(json_object_get(x, "value")) == 101.5);
        x = find(list, "creation_rate", "resolved", 0);
        ck_assert_int_eq(json_integer_value(json_object_get(x, "resolved_at")), 1040);
        ck_assert_str_eq(json_string_value(json_object_get(x, "message")), "120 created");
        json_decref(list);
        alerts_free(a);
}
END_TEST

START_TEST(test_independent_and_ordered) {
        struct alerts *a;
        json_t *list;

        ck_assert_int_eq(alerts_new(&a), 0);
        ck_assert_int_eq(alerts_set(a, "b", true, 1, 0, "b", 1, NULL), ALERT_RAISED);
        ck_assert_int_eq(alerts_set(a, "a", true, 1, 0, "a", 2, NULL), ALERT_RAISED);
        ck_assert_int_eq(alerts_set(a, "c", true, NAN, 0, NULL, 3, NULL), ALERT_RAISED);
        ck_assert_uint_eq(alerts_firing(a), 3);
        ck_assert_int_eq(alerts_set(a, "b", false, 0, 0, NULL, 4, NULL), ALERT_RESOLVED);
        ck_assert_int_eq(alerts_set(a, "c", false, 0, 0, NULL, 5, NULL), ALERT_RESOLVED);
        list = alerts_to_json(a);
        ck_assert_uint_eq(json_array_size(list), 3);
        /* a firing; then c (resolved at 5) before b (resolved at 4) */
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 0), "name")), "a");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 1), "name")), "c");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 2), "name")), "b");
        /* NaN is no number for JSON; the message defaults to the name */
        ck_assert(json_is_null(json_object_get(json_array_get(list, 1), "value")));
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 1), "message")), "c");
        json_decref(list);
        alerts_free(a);
}
END_TEST

START_TEST(test_history_bounded) {
        struct alerts *a;
        json_t *list;

        ck_assert_int_eq(alerts_new(&a), 0);
        for (int i = 0; i < ALERTS_HISTORY + 30; i++) {
                ck_assert_int_eq(alerts_set(a, "flap", true, i, 0, "flap", 2 * i, NULL), ALERT_RAISED);
                ck_assert_int_eq(alerts_set(a, "flap", false, 0, 0, NULL, 2 * i + 1, NULL), ALERT_RESOLVED);
        }
        list = alerts_to_json(a);
        ck_assert_uint_eq(json_array_size(list), ALERTS_HISTORY);
        /* newest first: the last flap, resolved at 2*(N-1)+1 */
        ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(list, 0), "resolved_at")),
                         2 * (ALERTS_HISTORY + 29) + 1);
        ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(list, ALERTS_HISTORY - 1), "raised_at")),
                         2 * 30);
        json_decref(list);
        alerts_free(a);
}
END_TEST

START_TEST(test_long_names_and_messages) {
        char name[200], msg[1000];
        struct alerts *a;
        const struct alert *al;

        memset(name, 'n', sizeof name - 1);
        name[sizeof name - 1] = '\0';
        memset(msg, 'm', sizeof msg - 1);
        msg[sizeof msg - 1] = '\0';
        ck_assert_int_eq(alerts_new(&a), 0);
        ck_assert_int_eq(alerts_set(a, name, true, 1, 0, msg, 1, &al), ALERT_RAISED);
        ck_assert_uint_eq(strlen(al->name), ALERTS_NAME_MAX - 1);
        ck_assert_uint_eq(strlen(al->message), ALERTS_MESSAGE_MAX - 1);
        alerts_free(a);
}
END_TEST

int main(void) {
        Suite *s = suite_create("alerts");
        TCase *tc = tcase_create("alerts");

        log_setup();
        tcase_add_test(tc, test_lifecycle);
        tcase_add_test(tc, test_independent_and_ordered);
        tcase_add_test(tc, test_history_bounded);
        tcase_add_test(tc, test_long_names_and_messages);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
