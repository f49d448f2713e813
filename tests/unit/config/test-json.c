/* The JSON forms (DESIGN 2.2), the summary, the client form, copies, the
 * process-wide get/reload pair, the parsers and the small APIs. */
#include "helpers.h"

#include "config/internal.h"

START_TEST(test_json_shape) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_CUSTOM_MAX_RETRIES=3", NULL};
        json_t *j;

        ck_assert_int_eq(load_env(env, &c, &is), 0);
        j = sessiond_config_to_json(c, false);
        ck_assert_ptr_nonnull(j);

        /* The keys, in order, are the groups of the libconfig paths, with
         * custom before daemon. */
        static const char *keys[] = {"environment", "debug_mode", "timeout",  "cleanup", "sync",
                                     "security",    "monitoring", "features", "custom",  "daemon"};
        const char *key;
        json_t *value;
        size_t k = 0;
        json_object_foreach(j, key, value) {
                ck_assert_uint_lt(k, 10);
                ck_assert_str_eq(key, keys[k++]);
        }
        ck_assert_uint_eq(k, 10);

        /* Every setting is at its path with its JSON type. */
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                const struct sessiond_setting *s = &sessiond_settings[i];
                char path[128];
                json_t *node = j;
                snprintf(path, sizeof(path), "%s", s->path);
                for (char *p = strtok(path, "."); p; p = strtok(NULL, "."))
                        node = json_object_get(node, p);
                ck_assert_msg(node != NULL, "%s missing", s->path);
                switch (s->type) {
                case SESSIOND_TYPE_BOOL:
                        ck_assert(json_is_boolean(node));
                        break;
                case SESSIOND_TYPE_INT:
                case SESSIOND_TYPE_DURATION:
                        ck_assert(json_is_integer(node));
                        ck_assert_int_eq(json_integer_value(node), *(const int64_t *) setting_cptr(c, s));
                        break;
                case SESSIOND_TYPE_DOUBLE:
                        ck_assert(json_is_real(node));
                        break;
                case SESSIOND_TYPE_STRING:
                case SESSIOND_TYPE_ENVIRONMENT:
                        ck_assert(json_is_string(node));
                        break;
                }
        }
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "timeout"), "session_lifetime")), 86400);
        ck_assert_str_eq(json_string_value(json_object_get(j, "environment")), "development");
        ck_assert(json_is_true(json_object_get(j, "debug_mode")));
        ck_assert_double_eq(json_real_value(json_object_get(json_object_get(json_object_get(j, "monitoring"), "alerts"),
                                                            "creation_rate")),
                            100.0);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "custom"), "max_retries")), "3");
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "daemon"), "synchronous")), "normal");

        char *text = json_dumps(j, JSON_COMPACT);
        ck_assert_ptr_nonnull(strstr(text, "\"creation_rate\":100.0"));
        ck_assert_ptr_nonnull(strstr(text, "\"session_lifetime\":86400,"));
        free(text);
        json_decref(j);
        sessiond_config_free(c);
}
END_TEST

START_TEST(test_json_origins) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_CUSTOM_X=1", "SESSION_IDLE_TIMEOUT_SECONDS=600", NULL};
        char expected[600];
        json_t *j, *leaf;

        write_text(path_in("j.conf"), "\ncleanup: { batch_size = 5; };\n");
        write_text(path_in("j.env"), "SESSION_MAX_CLEANUP_BATCHES=4\n");
        ck_assert_int_eq(load_from(path_in("j.conf"), path_in("j.env"), env, &c, &is), 0);
        j = sessiond_config_to_json(c, true);

        leaf = json_object_get(json_object_get(j, "cleanup"), "batch_size");
        ck_assert_int_eq(json_integer_value(json_object_get(leaf, "value")), 5);
        snprintf(expected, sizeof(expected), "%s:2", path_in("j.conf"));
        ck_assert_str_eq(json_string_value(json_object_get(leaf, "origin")), expected);

        leaf = json_object_get(json_object_get(j, "cleanup"), "max_batches");
        snprintf(expected, sizeof(expected), "env file %s:1", path_in("j.env"));
        ck_assert_str_eq(json_string_value(json_object_get(leaf, "origin")), expected);

        leaf = json_object_get(json_object_get(j, "timeout"), "idle_timeout");
        ck_assert_str_eq(json_string_value(json_object_get(leaf, "origin")), "environment");
        leaf = json_object_get(json_object_get(j, "timeout"), "session_lifetime");
        ck_assert_str_eq(json_string_value(json_object_get(leaf, "origin")), "profile development");
        leaf = json_object_get(json_object_get(j, "timeout"), "absolute_timeout");
        ck_assert_str_eq(json_string_value(json_object_get(leaf, "origin")), "default");
        leaf = json_object_get(json_object_get(j, "custom"), "x");
        ck_assert_str_eq(json_string_value(json_object_get(leaf, "value")), "1");
        ck_assert_str_eq(json_string_value(json_object_get(leaf, "origin")), "environment");
        json_decref(j);
        sessiond_config_free(c);
        scratch_remove();
}
END_TEST

START_TEST(test_summary) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_ENVIRONMENT=production",
                       "SESSION_CUSTOM_A=1",
                       "SESSION_CUSTOM_B=2",
                       "SESSION_FEATURE_OPTIMISTIC_UI=false",
                       "SESSION_FEATURE_PLATFORM_SWITCHING=false",
                       "SESSION_ENABLE_FINGERPRINTING=false",
                       NULL};
        json_t *j, *features;

        ck_assert_int_eq(load_env(env, &c, &is), 0);
        j = sessiond_config_summary(c);
        ck_assert_str_eq(json_string_value(json_object_get(j, "environment")), "production");
        ck_assert(json_is_false(json_object_get(j, "debug_mode")));
        ck_assert_double_eq(json_number_value(json_object_get(j, "session_lifetime_hours")), 48.0);
        ck_assert_double_eq(json_number_value(json_object_get(j, "cleanup_interval_minutes")), 60.0);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "custom_settings_count")), 2);
        /* the original's mapping, key by key */
        features = json_object_get(j, "features_enabled");
        ck_assert(json_is_object(features));
        ck_assert_uint_eq(json_object_size(features), 4);
        ck_assert(json_is_true(json_object_get(features, "cross_tab_sync")));
        ck_assert(json_is_false(json_object_get(features, "platform_switching")));
        ck_assert(json_is_true(json_object_get(features, "monitoring"))); /* performance monitoring */
        ck_assert(json_is_false(json_object_get(features, "security")));  /* fingerprinting */
        ck_assert_uint_eq(json_object_size(j), 6);
        json_decref(j);
        sessiond_config_free(c);
}
END_TEST

START_TEST(test_client_json) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_SYNC_CHECK_INTERVAL_SECONDS=4", "SESSION_LOCALSTORAGE_PREFIX=app_",
                       "SESSION_FEATURE_CROSS_TAB_SYNC=off", "SESSION_WARNING_THRESHOLD_SECONDS=60", NULL};
        json_t *j, *sync, *features;

        ck_assert_int_eq(load_env(env, &c, &is), 0);
        j = sessiond_config_client_json(c);
        sync = json_object_get(j, "sync");
        ck_assert_int_eq(json_integer_value(json_object_get(sync, "check_interval")), 4);
        ck_assert_int_eq(json_integer_value(json_object_get(sync, "heartbeat_interval")), 30);
        ck_assert_int_eq(json_integer_value(json_object_get(sync, "timeout")), 5);
        ck_assert_int_eq(json_integer_value(json_object_get(sync, "tab_response_timeout")), 3);
        ck_assert_str_eq(json_string_value(json_object_get(sync, "localstorage_prefix")), "app_");
        ck_assert_int_eq(json_integer_value(json_object_get(sync, "max_data_size")), 1024);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "warning_threshold")), 60);
        features = json_object_get(j, "features");
        ck_assert(json_is_false(json_object_get(features, "cross_tab_sync")));
        ck_assert(json_is_true(json_object_get(features, "optimistic_ui")));
        ck_assert(json_is_true(json_object_get(features, "platform_switching")));
        /* Every feature flag of DESIGN 2.3, and nothing else. */
        {
                static const char *const flags[] = {"cross_tab_sync", "platform_switching", "persistence",
                                                    "optimistic_ui",  "background_cleanup", "analytics",
                                                    "clustering",     "distributed",        "caching"};

                ck_assert_int_eq(json_object_size(features), sizeof flags / sizeof flags[0]);
                for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
                        ck_assert_msg(json_is_boolean(json_object_get(features, flags[i])), "%s", flags[i]);
                ck_assert(json_is_false(json_object_get(features, "clustering")));
        }
        /* Nothing server-only or secret: no paths, no admin group. */
        ck_assert_ptr_null(json_object_get(j, "daemon"));
        json_decref(j);
        sessiond_config_free(c);
}
END_TEST

START_TEST(test_copy) {
        struct sessiond_config *c = NULL, *d = NULL;
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_CUSTOM_A=1", "SESSION_LOCALSTORAGE_PREFIX=p_", NULL};
        json_t *a, *b;

        write_text(path_in("k.conf"), "cleanup: { batch_size = 5; };\n");
        ck_assert_int_eq(load_from(path_in("k.conf"), NULL, env, &c, &is), 0);
        ck_assert_int_eq(sessiond_config_copy(c, &d), 0);
        a = sessiond_config_to_json(c, true);
        sessiond_config_free(c); /* the copy owns its own strings */
        b = sessiond_config_to_json(d, true);
        ck_assert(json_equal(a, b));
        ck_assert_str_eq(d->config_file, path_in("k.conf"));
        ck_assert_str_eq(d->sync.localstorage_prefix, "p_");
        json_decref(a);
        json_decref(b);
        sessiond_config_free(d);
        scratch_remove();
}
END_TEST

START_TEST(test_global_get_reload) {
        struct sessiond_issues is = {};
        char *good[] = {"SESSION_CLEANUP_BATCH_SIZE=7", NULL};
        char *bad[] = {"SESSION_CLEANUP_BATCH_SIZE=0", NULL};
        struct sessiond_config_sources s = {.config_file = "", .env_file = "", .environ = good};
        const struct sessiond_config *first, *second;

        ck_assert_int_eq(sessiond_config_reload(&s, &is), 0);
        first = sessiond_config_get();
        ck_assert_int_eq(first->cleanup.batch_size, 7);

        /* An invalid reload keeps the old configuration and says why. */
        s.environ = bad;
        ck_assert_int_eq(sessiond_config_reload(&s, &is), -EINVAL);
        assert_issue(&is, SESSIOND_ERROR, "Cleanup batch size must be positive");
        ck_assert_ptr_eq(sessiond_config_get(), first);
        sessiond_issues_clear(&is);

        /* A good one swaps; the old pointer stays readable. */
        good[0] = "SESSION_CLEANUP_BATCH_SIZE=8";
        s.environ = good;
        ck_assert_int_eq(sessiond_config_reload(&s, &is), 0);
        second = sessiond_config_get();
        ck_assert_int_eq(second->cleanup.batch_size, 8);
        ck_assert_int_eq(first->cleanup.batch_size, 7);
}
END_TEST

START_TEST(test_parsers) {
        int64_t v;
        bool b;
        double d;

        ck_assert_int_eq(sessiond_parse_int("42", &v), 0);
        ck_assert_int_eq(v, 42);
        ck_assert_int_eq(sessiond_parse_int("-7", &v), 0);
        ck_assert_int_eq(v, -7);
        ck_assert_int_eq(sessiond_parse_int("+7", &v), 0);
        ck_assert_int_eq(sessiond_parse_int("9223372036854775807", &v), 0);
        ck_assert_int_eq(sessiond_parse_int("9223372036854775808", &v), -ERANGE);
        ck_assert_int_eq(sessiond_parse_int("-9223372036854775809", &v), -ERANGE);
        static const char *bad_ints[] = {"", " 1", "1 ", "1.0", "0x10", "1e3", "12abc", "-", "+", "--1"};
        for (size_t i = 0; i < sizeof(bad_ints) / sizeof(bad_ints[0]); i++)
                ck_assert_msg(sessiond_parse_int(bad_ints[i], &v) == -EINVAL, "'%s' accepted", bad_ints[i]);

        ck_assert_int_eq(sessiond_parse_duration("90", &v), 0);
        ck_assert_int_eq(v, 90);
        ck_assert_int_eq(sessiond_parse_duration("90s", &v), 0);
        ck_assert_int_eq(v, 90);
        ck_assert_int_eq(sessiond_parse_duration("30m", &v), 0);
        ck_assert_int_eq(v, 1800);
        ck_assert_int_eq(sessiond_parse_duration("48h", &v), 0);
        ck_assert_int_eq(v, 172800);
        ck_assert_int_eq(sessiond_parse_duration("7d", &v), 0);
        ck_assert_int_eq(v, 604800);
        ck_assert_int_eq(sessiond_parse_duration("-5m", &v), 0);
        ck_assert_int_eq(v, -300);
        ck_assert_int_eq(sessiond_parse_duration("106751991167301d", &v), -ERANGE);
        static const char *bad_durations[] = {"", "s", "5x", "5 s", "5S", "1.5h", "5ms", "h5", " 5"};
        for (size_t i = 0; i < sizeof(bad_durations) / sizeof(bad_durations[0]); i++)
                ck_assert_msg(sessiond_parse_duration(bad_durations[i], &v) == -EINVAL, "'%s' accepted",
                              bad_durations[i]);

        static const char *yes[] = {"true", "TRUE", "Yes", "on", "ON", "1"};
        static const char *no[] = {"false", "False", "no", "NO", "off", "0"};
        for (size_t i = 0; i < 6; i++) {
                ck_assert_int_eq(sessiond_parse_bool(yes[i], &b), 0);
                ck_assert(b);
                ck_assert_int_eq(sessiond_parse_bool(no[i], &b), 0);
                ck_assert(!b);
        }
        static const char *bad_bools[] = {"", "y", "n", "2", "enabled", "true ", "t"};
        for (size_t i = 0; i < sizeof(bad_bools) / sizeof(bad_bools[0]); i++)
                ck_assert_msg(sessiond_parse_bool(bad_bools[i], &b) == -EINVAL, "'%s' accepted", bad_bools[i]);

        ck_assert_int_eq(sessiond_parse_double("100.0", &d), 0);
        ck_assert_double_eq(d, 100.0);
        ck_assert_int_eq(sessiond_parse_double("5", &d), 0);
        ck_assert_int_eq(sessiond_parse_double("2.5e1", &d), 0);
        ck_assert_double_eq(d, 25.0);
        ck_assert_int_eq(sessiond_parse_double("1e400", &d), -ERANGE);
        static const char *bad_doubles[] = {"", "abc", "1.0x", "nan", "inf", "-inf", "0x1p3", " 1"};
        for (size_t i = 0; i < sizeof(bad_doubles) / sizeof(bad_doubles[0]); i++)
                ck_assert_msg(sessiond_parse_double(bad_doubles[i], &d) < 0, "'%s' accepted", bad_doubles[i]);
}
END_TEST

START_TEST(test_value_to_string) {
        struct sessiond_config *c = NULL;

        ck_assert_int_eq(sessiond_config_new_defaults(&c), 0);
        /* Every default prints as the table writes it. */
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                char *v = sessiond_config_value_to_string(c, i);
                ck_assert_str_eq(v, sessiond_settings[i].default_text);
                free(v);
        }
        c->monitoring.alerts.creation_rate = 0.1;
        char *v = sessiond_config_value_to_string(c, (size_t) sessiond_setting_find("monitoring.alerts.creation_rate"));
        ck_assert_str_eq(v, "0.1");
        free(v);
        ck_assert_ptr_null(sessiond_config_value_to_string(c, sessiond_settings_count));
        sessiond_config_free(c);
}
END_TEST

START_TEST(test_issues_and_origins) {
        struct sessiond_issues is = {};
        struct sessiond_origin o = {};
        char *s;

        ck_assert(!sessiond_issues_has_errors(&is));
        for (int i = 0; i < 20; i++)
                ck_assert_int_eq(sessiond_issues_add(&is, SESSIOND_WARNING, NULL, "w%d", i), 0);
        ck_assert(!sessiond_issues_has_errors(&is));
        ck_assert_int_eq(sessiond_issues_add(&is, SESSIOND_ERROR, "a.b", "e"), 0);
        ck_assert(sessiond_issues_has_errors(&is));
        ck_assert_uint_eq(is.count, 21);
        ck_assert_str_eq(is.items[19].message, "w19");
        ck_assert_str_eq(is.items[20].setting, "a.b");
        sessiond_issues_clear(&is);
        ck_assert_uint_eq(is.count, 0);
        ck_assert_str_eq(sessiond_severity_to_string(SESSIOND_ERROR), "error");
        ck_assert_str_eq(sessiond_severity_to_string(SESSIOND_WARNING), "warning");

        s = sessiond_origin_to_string(&o);
        ck_assert_str_eq(s, "default");
        free(s);
        ck_assert_int_eq(origin_assign(&o, SESSIOND_ORIGIN_PROFILE, "production", 0), 0);
        s = sessiond_origin_to_string(&o);
        ck_assert_str_eq(s, "profile production");
        free(s);
        ck_assert_int_eq(origin_assign(&o, SESSIOND_ORIGIN_FILE, "/etc/x.conf", 12), 0);
        s = sessiond_origin_to_string(&o);
        ck_assert_str_eq(s, "/etc/x.conf:12");
        free(s);
        ck_assert_int_eq(origin_assign(&o, SESSIOND_ORIGIN_ENV_FILE, "/etc/sessiond/session.env", 3), 0);
        s = sessiond_origin_to_string(&o);
        ck_assert_str_eq(s, "env file /etc/sessiond/session.env:3");
        free(s);
        ck_assert_int_eq(origin_assign(&o, SESSIOND_ORIGIN_ENVIRONMENT, NULL, 0), 0);
        s = sessiond_origin_to_string(&o);
        ck_assert_str_eq(s, "environment");
        free(s);
        origin_clear(&o);
}
END_TEST

START_TEST(test_table_consistency) {
        /* Every group of the table is a known group and the other way round
         * (the groups feed "did you mean"). */
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                const char *path = sessiond_settings[i].path, *dot = strrchr(path, '.');
                if (!dot)
                        continue;
                bool found = false;
                for (size_t g = 0; setting_groups[g]; g++)
                        if (strlen(setting_groups[g]) == (size_t) (dot - path) &&
                            strncmp(setting_groups[g], path, (size_t) (dot - path)) == 0)
                                found = true;
                ck_assert_msg(found, "group of %s missing from setting_groups", path);
                /* Paths and variables are unique. */
                for (size_t j = i + 1; j < sessiond_settings_count; j++) {
                        ck_assert_str_ne(sessiond_settings[i].path, sessiond_settings[j].path);
                        if (sessiond_settings[i].variable && sessiond_settings[j].variable)
                                ck_assert_str_ne(sessiond_settings[i].variable, sessiond_settings[j].variable);
                }
        }
        for (size_t g = 0; setting_groups[g]; g++) {
                bool used = strcmp(setting_groups[g], "custom") == 0;
                for (size_t i = 0; i < sessiond_settings_count; i++)
                        if (strncmp(sessiond_settings[i].path, setting_groups[g], strlen(setting_groups[g])) == 0 &&
                            sessiond_settings[i].path[strlen(setting_groups[g])] == '.')
                                used = true;
                ck_assert_msg(used, "group %s has no setting", setting_groups[g]);
        }
        /* 62 settings: the 51 of the guide and the 11 of the daemon (9,
         * and the fleet's postgres_url and key_file, DESIGN 8). */
        ck_assert_uint_eq(sessiond_settings_count, 62);
        ck_assert_int_eq(sessiond_setting_find("nope"), -ENOENT);
        ck_assert_int_eq(sessiond_setting_find_variable("SESSION_NOPE"), -ENOENT);
        ck_assert_int_eq(sessiond_setting_find_variable(NULL), -ENOENT);
}
END_TEST

START_TEST(test_suggestions) {
        static const char *const names[] = {"alpha", "beta", "gamma"};
        ck_assert_str_eq(suggest_nearest("alpah", names, 3), "alpha");
        ck_assert_str_eq(suggest_nearest("BETA", names, 3), "beta");
        ck_assert_ptr_null(suggest_nearest("zzzzzzzzzz", names, 3));
        ck_assert_str_eq(suggest_setting_path("monitoring.alert"), "monitoring.alerts");
        ck_assert_str_eq(suggest_setting_path("daemon.socket"), "daemon.socket_path");
        ck_assert_str_eq(suggest_setting_variable("SESSION_LIFETIME"), "SESSION_LIFETIME_SECONDS");
        ck_assert_str_eq(suggest_setting_variable("SESSION_IDLE_TIMEOUT"), "SESSION_IDLE_TIMEOUT_SECONDS");
        ck_assert_uint_eq(edit_distance("kitten", "sitting"), 3);
}
END_TEST

static Suite *json_suite(void) {
        Suite *s = suite_create("config-json");
        TCase *tc = tcase_create("json");
        tcase_add_test(tc, test_json_shape);
        tcase_add_test(tc, test_json_origins);
        tcase_add_test(tc, test_summary);
        tcase_add_test(tc, test_client_json);
        tcase_add_test(tc, test_copy);
        tcase_add_test(tc, test_global_get_reload);
        suite_add_tcase(s, tc);
        tc = tcase_create("api");
        tcase_add_test(tc, test_parsers);
        tcase_add_test(tc, test_value_to_string);
        tcase_add_test(tc, test_issues_and_origins);
        tcase_add_test(tc, test_table_consistency);
        tcase_add_test(tc, test_suggestions);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(json_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
