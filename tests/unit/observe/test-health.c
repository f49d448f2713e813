/* The health rules (daemon/health.c): each finding makes its component
 * worse, the overall status is the worst component, and the messages say
 * why. */
#include <errno.h>
#include <string.h>

#include "health.h"
#include "helpers.h"

static struct sessiond_config *config;

static void setup(void) {
        ck_assert_int_eq(sessiond_config_new_defaults(&config), 0);
}

static void teardown(void) {
        sessiond_config_free(config);
}

static struct health_inputs fine(void) {
        return (struct health_inputs){
                .config = config,
                .probe_ms = 0.2,
                .db_size_bytes = 4096,
                .check_known = true,
                .check_ok = true,
                .check_message = "ok",
                .check_at = 1000,
                .background_cleanup = true,
                .lag_measured = true,
                .lag_max_ms = 3,
        };
}

static const char *component(json_t *components, const char *name, const char **message) {
        json_t *c = json_object_get(components, name);

        ck_assert_ptr_nonnull(c);
        if (message)
                *message = json_string_value(json_object_get(c, "message"));
        return json_string_value(json_object_get(c, "status"));
}

static enum health_status evaluate(const struct health_inputs *in, json_t **components) {
        enum health_status st = (enum health_status) 99;

        *components = health_evaluate(in, &st);
        ck_assert_ptr_nonnull(*components);
        ck_assert_uint_eq(json_object_size(*components), 4);
        return st;
}

START_TEST(test_all_healthy) {
        struct health_inputs in = fine();
        json_t *c;
        const char *msg;

        ck_assert_int_eq(evaluate(&in, &c), HEALTH_HEALTHY);
        ck_assert_str_eq(component(c, "database", &msg), "healthy");
        ck_assert_str_eq(msg, "");
        ck_assert_str_eq(component(c, "cleanup", NULL), "healthy");
        ck_assert_str_eq(component(c, "security", NULL), "healthy");
        ck_assert_str_eq(component(c, "loop", NULL), "healthy");
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(c, "database"), "size_bytes")), 4096);
        json_decref(c);
}
END_TEST

START_TEST(test_database) {
        struct health_inputs in = fine();
        json_t *c;
        const char *msg;

        in.probe_ms = HEALTH_DB_SLOW_MS + 1;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_DEGRADED);
        ck_assert_str_eq(component(c, "database", &msg), "degraded");
        ck_assert_ptr_nonnull(strstr(msg, "slow"));
        json_decref(c);

        in = fine();
        in.commit_failures = 2;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_DEGRADED);
        ck_assert_ptr_nonnull(strstr(component(c, "database", &msg), "degraded"));
        ck_assert_ptr_nonnull(strstr(msg, "2 commits failed"));
        json_decref(c);

        /* A failed integrity check beats a slow probe. */
        in.check_ok = false;
        in.check_message = "*** in database main ***";
        in.probe_ms = HEALTH_DB_SLOW_MS + 1;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_UNHEALTHY);
        ck_assert_str_eq(component(c, "database", &msg), "unhealthy");
        ck_assert_ptr_nonnull(strstr(msg, "integrity check failed: *** in database main ***"));
        ck_assert_ptr_nonnull(strstr(msg, "slow"));
        json_decref(c);

        in = fine();
        in.probe_error = -EIO;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_UNHEALTHY);
        ck_assert_ptr_nonnull(strstr(component(c, "database", &msg), "unhealthy"));
        ck_assert_ptr_nonnull(strstr(msg, "does not answer"));
        json_decref(c);

        /* Not known yet: no verdict on it, nothing listed. */
        in = fine();
        in.check_known = false;
        in.check_ok = false;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_HEALTHY);
        ck_assert_ptr_null(json_object_get(json_object_get(c, "database"), "integrity_check"));
        json_decref(c);
}
END_TEST

START_TEST(test_cleanup_backlog) {
        struct health_inputs in = fine();
        json_t *c;
        const char *msg;

        in.awaiting_cleanup = (uint64_t) config->cleanup.max_expired_threshold; /* at: fine */
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_HEALTHY);
        json_decref(c);
        in.awaiting_cleanup++;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_DEGRADED);
        ck_assert_str_eq(component(c, "cleanup", &msg), "degraded");
        ck_assert_ptr_nonnull(strstr(msg, "cleanup.max_expired_threshold"));
        ck_assert_ptr_null(strstr(msg, "background cleanup is off"));
        json_decref(c);
        in.background_cleanup = false;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_DEGRADED);
        component(c, "cleanup", &msg);
        ck_assert_ptr_nonnull(strstr(msg, "background cleanup is off"));
        json_decref(c);

        in = fine();
        in.cleanup_failed = true;
        in.cleanup_error = "regular cleanup: No space left on device";
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_DEGRADED);
        component(c, "cleanup", &msg);
        ck_assert_ptr_nonnull(strstr(msg, "No space left"));
        json_decref(c);
}
END_TEST

START_TEST(test_security) {
        struct health_inputs in = fine();
        json_t *c;
        const char *msg;

        /* Off outside production: noted, healthy. */
        config->security.fingerprinting = false;
        config->security.audit_logging = false;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_HEALTHY);
        ck_assert_str_eq(component(c, "security", &msg), "healthy");
        ck_assert_ptr_nonnull(strstr(msg, "fingerprinting is off"));
        ck_assert_ptr_nonnull(strstr(msg, "audit logging is off"));
        json_decref(c);

        /* Off in production: degraded. */
        config->environment = SESSIOND_ENV_PRODUCTION;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_DEGRADED);
        ck_assert_str_eq(component(c, "security", &msg), "degraded");
        ck_assert_ptr_nonnull(strstr(msg, "fingerprinting is off in production"));
        json_decref(c);
        config->security.fingerprinting = true;
        config->security.audit_logging = true;
        config->security.suspicious_detection = false;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_DEGRADED);
        json_decref(c);
        config->security.suspicious_detection = true;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_HEALTHY);
        json_decref(c);

        /* Debug mode in production: degraded, with a note; elsewhere nothing. */
        config->debug_mode = true;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_DEGRADED);
        ck_assert_str_eq(component(c, "security", &msg), "degraded");
        ck_assert_str_eq(msg, "debug mode is on in production (debug_mode = true)");
        ck_assert(json_is_true(json_object_get(json_object_get(c, "security"), "debug_mode")));
        json_decref(c);
        config->environment = SESSIOND_ENV_STAGING;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_HEALTHY);
        component(c, "security", &msg);
        ck_assert_str_eq(msg, "");
        json_decref(c);
        config->environment = SESSIOND_ENV_PRODUCTION;
        config->debug_mode = false;

        in.suspicious_users = 2;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_DEGRADED);
        component(c, "security", &msg);
        ck_assert_ptr_nonnull(strstr(msg, "2 users at or above"));
        json_decref(c);
}
END_TEST

START_TEST(test_loop_and_worst) {
        struct health_inputs in = fine();
        json_t *c;
        const char *msg;

        in.lag_max_ms = HEALTH_LAG_DEGRADED_MS + 1;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_DEGRADED);
        ck_assert_str_eq(component(c, "loop", NULL), "degraded");
        json_decref(c);
        in.lag_max_ms = HEALTH_LAG_UNHEALTHY_MS + 1;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_UNHEALTHY);
        json_decref(c);
        /* performance_monitoring on, no sample yet (just started): not judged, and not
         * blamed on the setting */
        in.lag_measured = false;
        config->monitoring.performance_monitoring = true;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_HEALTHY);
        ck_assert_str_eq(component(c, "loop", &msg), "healthy");
        ck_assert_str_eq(msg, "not measured yet");
        json_decref(c);
        config->monitoring.performance_monitoring = false; /* off: not judged, and says why */
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_HEALTHY);
        ck_assert_str_eq(component(c, "loop", &msg), "healthy");
        ck_assert_str_eq(msg, "not measured (monitoring.performance_monitoring = false)");
        json_decref(c);
        config->monitoring.performance_monitoring = true;

        /* Overall is the worst of all: one degraded, one unhealthy. */
        in = fine();
        in.awaiting_cleanup = (uint64_t) config->cleanup.max_expired_threshold + 1;
        in.probe_error = -EIO;
        ck_assert_int_eq(evaluate(&in, &c), HEALTH_UNHEALTHY);
        ck_assert_str_eq(component(c, "cleanup", NULL), "degraded");
        ck_assert_str_eq(component(c, "database", NULL), "unhealthy");
        json_decref(c);

        ck_assert_int_eq(health_worst(HEALTH_HEALTHY, HEALTH_DEGRADED), HEALTH_DEGRADED);
        ck_assert_int_eq(health_worst(HEALTH_UNHEALTHY, HEALTH_DEGRADED), HEALTH_UNHEALTHY);
        ck_assert_str_eq(health_status_to_string(HEALTH_DEGRADED), "degraded");
}
END_TEST

int main(void) {
        Suite *s = suite_create("health");
        TCase *tc = tcase_create("health");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_all_healthy);
        tcase_add_test(tc, test_database);
        tcase_add_test(tc, test_cleanup_backlog);
        tcase_add_test(tc, test_security);
        tcase_add_test(tc, test_loop_and_worst);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
