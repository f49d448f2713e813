/* Loading: every setting through every source, precedence, profiles, and
 * every way input can be wrong. */
#include "helpers.h"

/* ---- every setting, table-driven (one loop test per row) ----------------- */

/* A value for setting s that differs from its default, as text. */
static const char *other_value(const struct sessiond_setting *s, int variant) {
        static char buf[64];
        switch (s->type) {
        case SESSIOND_TYPE_BOOL:
                return (strcmp(s->default_text, "true") == 0) == (variant != 1) ? "false" : "true";
        case SESSIOND_TYPE_INT:
        case SESSIOND_TYPE_DURATION:
                snprintf(buf, sizeof(buf), "%d", 4321 + variant);
                return buf;
        case SESSIOND_TYPE_DOUBLE:
                snprintf(buf, sizeof(buf), "%d.5", 42 + variant);
                return buf;
        case SESSIOND_TYPE_STRING:
                /* A connection string is shown redacted: one without a
                 * password reads back as written. */
                if (strcmp(s->path, "daemon.postgres_url") == 0)
                        snprintf(buf, sizeof(buf), "dbname=value-%d", variant);
                else
                        snprintf(buf, sizeof(buf), "value-%d", variant);
                return buf;
        case SESSIOND_TYPE_ENVIRONMENT:
                return variant == 0 ? "staging" : variant == 1 ? "production" : "testing";
        }
        return NULL;
}

/* The value as libconfig syntax. */
static const char *conf_literal(const struct sessiond_setting *s, const char *text) {
        static char buf[128];
        if (s->type == SESSIOND_TYPE_STRING || s->type == SESSIOND_TYPE_ENVIRONMENT)
                snprintf(buf, sizeof(buf), "\"%s\"", text);
        else
                snprintf(buf, sizeof(buf), "%s", text);
        return buf;
}

/* "a.b.c" = v -> "a: { b: { c = v; }; };" on one line. */
static void conf_for(const char *path, const char *literal, char *out, size_t size) {
        char copy[128], *parts[4];
        int n = 0;
        size_t len = 0;

        snprintf(copy, sizeof(copy), "%s", path);
        for (char *p = strtok(copy, "."); p && n < 4; p = strtok(NULL, "."))
                parts[n++] = p;
        for (int i = 0; i < n - 1; i++)
                len += (size_t) snprintf(out + len, size - len, "%s: { ", parts[i]);
        len += (size_t) snprintf(out + len, size - len, "%s = %s;", parts[n - 1], literal);
        for (int i = 0; i < n - 1; i++)
                len += (size_t) snprintf(out + len, size - len, " };");
        snprintf(out + len, size - len, "\n");
}

static void assert_value(const struct sessiond_config *c, size_t idx, const char *expected,
                         enum sessiond_origin_kind kind, const char *where) {
        char *v = sessiond_config_value_to_string(c, idx);
        ck_assert_msg(strcmp(v, expected) == 0, "%s from %s: got %s, expected %s", sessiond_settings[idx].path, where,
                      v, expected);
        ck_assert_msg(c->origins[idx].kind == kind, "%s from %s: origin kind %d, expected %d",
                      sessiond_settings[idx].path, where, c->origins[idx].kind, kind);
        free(v);
}

START_TEST(test_setting_default) {
        const struct sessiond_setting *s = &sessiond_settings[_i];
        struct sessiond_config *raw = NULL, *loaded = NULL;
        struct sessiond_issues is = {};
        const struct sessiond_override *o;
        size_t n;
        const char *profile_value = NULL;

        ck_assert_int_eq(sessiond_config_new_defaults(&raw), 0);
        assert_value(raw, (size_t) _i, s->default_text, SESSIOND_ORIGIN_DEFAULT, "the table");

        /* Loaded from nothing: the development profile applies to its
         * columns, the table default to the rest. */
        ck_assert_int_eq(load_env(NULL, &loaded, &is), 0);
        assert_no_issues(&is);
        ck_assert_int_eq(sessiond_profile_overrides(SESSIOND_ENV_DEVELOPMENT, &o, &n), 0);
        for (size_t i = 0; i < n; i++)
                if (strcmp(o[i].path, s->path) == 0)
                        profile_value = o[i].value;
        if (profile_value) {
                assert_value(loaded, (size_t) _i, profile_value, SESSIOND_ORIGIN_PROFILE, "the profile");
                ck_assert_str_eq(loaded->origins[_i].file, "development");
        } else
                assert_value(loaded, (size_t) _i, s->default_text, SESSIOND_ORIGIN_DEFAULT, "no source");

        ck_assert_int_eq(sessiond_setting_find(s->path), _i);
        if (s->variable)
                ck_assert_int_eq(sessiond_setting_find_variable(s->variable), _i);
        ck_assert_ptr_nonnull(s->description);
        ck_assert_int_gt(strlen(s->description), 0);
        sessiond_config_free(raw);
        sessiond_config_free(loaded);
}
END_TEST

START_TEST(test_setting_each_source) {
        const struct sessiond_setting *s = &sessiond_settings[_i];
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char conf[512], envline[256], envvar[256], a[64], b[64], d[64];
        char *env[] = {envvar, NULL};
        const char *conf_path = path_in("each.conf"), *env_path = path_in("each.env");

        snprintf(a, sizeof(a), "%s", other_value(s, 0));
        snprintf(b, sizeof(b), "%s", other_value(s, 1));
        snprintf(d, sizeof(d), "%s", other_value(s, 2));

        /* The file alone. */
        conf_for(s->path, conf_literal(s, a), conf, sizeof(conf));
        write_text(conf_path, conf);
        ck_assert_int_eq(load_from(conf_path, NULL, NULL, &c, &is), 0);
        assert_value(c, (size_t) _i, a, SESSIOND_ORIGIN_FILE, "the file");
        ck_assert_str_eq(c->origins[_i].file, conf_path);
        ck_assert_int_eq(c->origins[_i].line, 1);
        sessiond_config_free(c);
        sessiond_issues_clear(&is);

        if (!s->variable || strcmp(s->variable, "SESSIOND_ENV_FILE") == 0)
                return; /* file-only settings; the env file cannot move itself */

        /* The env file alone (line 2, after a comment), then over the file. */
        snprintf(envline, sizeof(envline), "# comment\n%s=%s\n", s->variable, b);
        write_text(env_path, envline);
        ck_assert_int_eq(load_from(NULL, env_path, NULL, &c, &is), 0);
        assert_value(c, (size_t) _i, b, SESSIOND_ORIGIN_ENV_FILE, "the env file");
        ck_assert_str_eq(c->origins[_i].file, env_path);
        ck_assert_int_eq(c->origins[_i].line, 2);
        sessiond_config_free(c);

        ck_assert_int_eq(load_from(conf_path, env_path, NULL, &c, &is), 0);
        assert_value(c, (size_t) _i, b, SESSIOND_ORIGIN_ENV_FILE, "env file over file");
        sessiond_config_free(c);

        /* The environment alone, then over both. */
        snprintf(envvar, sizeof(envvar), "%s=%s", s->variable, d);
        ck_assert_int_eq(load_from(NULL, NULL, env, &c, &is), 0);
        assert_value(c, (size_t) _i, d, SESSIOND_ORIGIN_ENVIRONMENT, "the environment");
        sessiond_config_free(c);

        ck_assert_int_eq(load_from(conf_path, env_path, env, &c, &is), 0);
        assert_value(c, (size_t) _i, d, SESSIOND_ORIGIN_ENVIRONMENT, "environment over all");
        sessiond_config_free(c);
        assert_no_issues(&is);
        scratch_remove();
}
END_TEST

/* ---- precedence and profiles ---------------------------------------------- */

START_TEST(test_profile_under_explicit) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_ENVIRONMENT=testing", "SESSION_LIFETIME_SECONDS=7200", NULL};

        ck_assert_int_eq(load_env(env, &c, &is), 0);
        ck_assert_int_eq(c->environment, SESSIOND_ENV_TESTING);
        ck_assert_int_eq(c->timeout.session_lifetime, 7200); /* explicit beats profile */
        ck_assert_int_eq(c->origins[sessiond_setting_find("timeout.session_lifetime")].kind,
                         SESSIOND_ORIGIN_ENVIRONMENT);
        ck_assert_int_eq(c->timeout.idle_timeout, 1800); /* the profile */
        ck_assert_int_eq(c->cleanup.batch_size, 10);
        ck_assert(!c->monitoring.performance_monitoring);
        ck_assert(!c->features.analytics);
        ck_assert(c->debug_mode);
        sessiond_config_free(c);
}
END_TEST

START_TEST(test_profile_chosen_by_final_environment) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        const char *env_path = path_in("p.env");

        /* The file says production, the env file says testing: testing
         * wins and its profile applies; the file's explicit value stays. */
        write_text(path_in("p.conf"), "environment = \"production\";\ncleanup: { max_batches = 3; };\n");
        write_text(env_path, "SESSION_ENVIRONMENT=testing\n");
        ck_assert_int_eq(load_from(path_in("p.conf"), env_path, NULL, &c, &is), 0);
        ck_assert_int_eq(c->environment, SESSIOND_ENV_TESTING);
        ck_assert_int_eq(c->timeout.session_lifetime, 1800);
        ck_assert_int_eq(c->cleanup.max_batches, 3);
        ck_assert_str_eq(c->origins[sessiond_setting_find("timeout.session_lifetime")].file, "testing");
        sessiond_config_free(c);
        scratch_remove();
}
END_TEST

START_TEST(test_profile_table) {
        /* Table 2.4 exactly, through the loader. */
        static const struct {
                const char *env;
                int64_t lifetime, idle, interval, batch_size, max_batches;
                bool perf, analytics, debug;
        } rows[] = {
                {"development", 86400, 86400, 900, 100, 10, true, true, true},
                {"testing", 1800, 1800, 300, 10, 10, false, false, true},
                {"staging", 172800, 86400, 1800, 100, 10, true, true, false},
                {"production", 172800, 86400, 3600, 200, 20, true, true, false},
        };
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                struct sessiond_config *c = NULL;
                struct sessiond_issues is = {};
                char var[64];
                char *env[] = {var, NULL};
                snprintf(var, sizeof(var), "SESSION_ENVIRONMENT=%s", rows[i].env);
                ck_assert_int_eq(load_env(env, &c, &is), 0);
                ck_assert_int_eq(c->timeout.session_lifetime, rows[i].lifetime);
                ck_assert_int_eq(c->timeout.idle_timeout, rows[i].idle);
                ck_assert_int_eq(c->cleanup.interval, rows[i].interval);
                ck_assert_int_eq(c->cleanup.batch_size, rows[i].batch_size);
                ck_assert_int_eq(c->cleanup.max_batches, rows[i].max_batches);
                ck_assert_int_eq(c->monitoring.performance_monitoring, rows[i].perf);
                ck_assert_int_eq(c->features.analytics, rows[i].analytics);
                ck_assert_int_eq(c->debug_mode, rows[i].debug);
                /* Every profile applied to the defaults validates, without
                 * even a warning. */
                ck_assert_int_eq(sessiond_config_validate(c, &is), 0);
                assert_no_issues(&is);
                sessiond_config_free(c);
        }
}
END_TEST

START_TEST(test_profile_values_full_columns) {
        /* --optimize-for's columns: all eight, defaults filled in. */
        for (int e = 0; e < _SESSIOND_ENV_MAX; e++) {
                const struct sessiond_override *full, *over;
                size_t n_full, n_over;
                ck_assert_int_eq(sessiond_profile_values((enum sessiond_environment) e, &full, &n_full), 0);
                ck_assert_int_eq(sessiond_profile_overrides((enum sessiond_environment) e, &over, &n_over), 0);
                ck_assert_uint_eq(n_full, 8);
                for (size_t i = 0; i < n_over; i++) {
                        bool found = false;
                        for (size_t j = 0; j < n_full; j++)
                                if (strcmp(over[i].path, full[j].path) == 0) {
                                        ck_assert_str_eq(over[i].value, full[j].value);
                                        found = true;
                                }
                        ck_assert(found);
                }
                for (size_t j = 0; j < n_full; j++) {
                        int idx = sessiond_setting_find(full[j].path);
                        ck_assert_int_ge(idx, 0);
                        ck_assert_str_eq(sessiond_settings[idx].variable, full[j].variable);
                }
        }
        ck_assert_int_eq(sessiond_profile_values((enum sessiond_environment) 9, NULL, NULL), -EINVAL);
}
END_TEST

START_TEST(test_apply_profile_again) {
        struct sessiond_config *c = NULL;

        ck_assert_int_eq(sessiond_config_new_defaults(&c), 0);
        ck_assert_int_eq(sessiond_config_apply_profile(c, SESSIOND_ENV_PRODUCTION), 0);
        ck_assert_int_eq(c->cleanup.max_batches, 20);
        /* Development after production leaves nothing of production. */
        ck_assert_int_eq(sessiond_config_apply_profile(c, SESSIOND_ENV_DEVELOPMENT), 0);
        ck_assert_int_eq(c->cleanup.max_batches, 10);
        ck_assert_int_eq(c->cleanup.batch_size, 100);
        ck_assert_int_eq(c->timeout.session_lifetime, 86400);
        ck_assert_int_eq(c->origins[sessiond_setting_find("cleanup.max_batches")].kind, SESSIOND_ORIGIN_DEFAULT);
        sessiond_config_free(c);
}
END_TEST

START_TEST(test_unknown_environment) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_ENVIRONMENT=prod", NULL};

        ck_assert_int_eq(load_env(env, &c, &is), -EINVAL);
        ck_assert_ptr_null(c);
        assert_issue(&is, SESSIOND_ERROR,
                     "environment: SESSION_ENVIRONMENT: value 'prod' is not an environment (valid: development, "
                     "testing, staging, production)");
        sessiond_issues_clear(&is);

        ck_assert_int_eq(load_conf_text("environment = \"qa\";\n", &c, &is), -EINVAL);
        assert_issue(&is, SESSIOND_ERROR,
                     "test.conf:1: environment: value \"qa\" is not an environment (valid: development, testing, "
                     "staging, production)");
        sessiond_issues_clear(&is);
        ck_assert_int_eq(sessiond_environment_from_string("PRODUCTION"), SESSIOND_ENV_PRODUCTION);
        ck_assert_str_eq(sessiond_environment_valid_names(), "development, testing, staging, production");
        scratch_remove();
}
END_TEST

/* ---- the libconfig file ------------------------------------------------------ */

START_TEST(test_conf_syntax_error_has_line) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char expected[600];

        ck_assert_int_eq(load_conf_text("environment = \"testing\";\n\ntimeout: { idle_timeout = ; };\n", &c, &is),
                         -EINVAL);
        ck_assert_ptr_null(c);
        snprintf(expected, sizeof(expected), "%s:3: syntax error", path_in("test.conf"));
        assert_issue(&is, SESSIOND_ERROR, expected);
        sessiond_issues_clear(&is);
        scratch_remove();
}
END_TEST

START_TEST(test_conf_string_syntax_errors) {
        /* A string where none may stand is a syntax error at its line (and,
         * under ASan, proves we never hand it to libconfig 1.5, which
         * would leak it). */
        static const struct {
                const char *text;
                int line;
        } cases[] = {
                {"\"x\"\n", 1},
                {"a = 1;\n\ncustom: { \"x\" };\n", 3},
                {"debug_mode = true \"x\";\n", 1},
                {"environment = \"testing\";\nsync: { localstorage_prefix = \"a\" \"b\"; };\nx = 1.5 \"y\";\n", 3},
                {"a = [\"x\"] \"y\";\n", 1},
                {"a = 1; \"b\" = 2;\n", 1},
                {"unit: \"90s\", \"30m\";\n", 1},
                {"g: { a = 1, \"b\" };\n", 1},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct sessiond_config *c = NULL;
                struct sessiond_issues is = {};
                char expected[600];
                ck_assert_int_eq(load_conf_text(cases[i].text, &c, &is), -EINVAL);
                snprintf(expected, sizeof(expected), "%s:%d: syntax error", path_in("test.conf"), cases[i].line);
                assert_issue(&is, SESSIOND_ERROR, expected);
                ck_assert_uint_eq(is.count, 1);
                sessiond_issues_clear(&is);
        }
        /* A NUL byte: not a text file, whatever follows it. */
        {
                struct sessiond_config *c = NULL;
                struct sessiond_issues is = {};
                char expected[600];
                FILE *f = fopen(path_in("test.conf"), "we");
                ck_assert_ptr_nonnull(f);
                fwrite("a = 1;\n# x\0y\nb \"= \"z\";\n", 1, 24, f);
                fclose(f);
                ck_assert_int_eq(load_from(path_in("test.conf"), NULL, NULL, &c, &is), -EINVAL);
                snprintf(expected, sizeof(expected), "%s:2: a NUL byte: not a text file", path_in("test.conf"));
                assert_issue(&is, SESSIOND_ERROR, expected);
                sessiond_issues_clear(&is);
        }
        /* Legal strings stay legal: values, concatenation, lists, @include. */
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        write_text(path_in("s.inc"), "daemon: { admin_group = \"adm\"; };\n");
        ck_assert_int_eq(
                load_conf_text(
                        "sync: { localstorage_prefix = \"a\" \"b\"; };\n"
                        "custom: { a = \"1\"; };\n"
                        "@include \"s.inc\"\n"
                        "x = (\"p\", \"q\", [\"t\", \"u\"], { v = \"w\"; });\ny = [\"r\"];\nz : \"s\", zz = \"t\";\n",
                        &c, &is),
                0);
        ck_assert_str_eq(c->sync.localstorage_prefix, "ab");
        ck_assert_str_eq(c->daemon.admin_group, "adm");
        ck_assert_str_eq(sessiond_config_custom(c, "a", NULL), "1");
        sessiond_config_free(c);
        sessiond_issues_clear(&is);
        scratch_remove();
}
END_TEST

START_TEST(test_conf_wrong_types) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};

        ck_assert_int_eq(load_conf_text("cleanup: { batch_size = \"ten\"; };\n"
                                        "debug_mode = 5;\n"
                                        "timeout = 5;\n"
                                        "sync: { localstorage_prefix = 7; max_data_size = 1.5; };\n"
                                        "monitoring: { alerts: { failure_rate = \"high\"; }; };\n"
                                        "daemon: { socket_path = [1, 2]; };\n"
                                        "custom: { nested: { a = 1; }; };\n"
                                        "features: { caching = \"maybe\"; };\n",
                                        &c, &is),
                         -EINVAL);
        assert_issue(&is, SESSIOND_ERROR, "test.conf:1: cleanup.batch_size: expected an integer, found a string");
        assert_issue(&is, SESSIOND_ERROR,
                     "test.conf:2: debug_mode: expected a boolean (true or false), found an integer");
        assert_issue(&is, SESSIOND_ERROR, "test.conf:3: timeout: expected a group, found an integer");
        assert_issue(&is, SESSIOND_ERROR, "test.conf:4: sync.localstorage_prefix: expected a string, found an integer");
        assert_issue(&is, SESSIOND_ERROR,
                     "test.conf:4: sync.max_data_size: expected an integer, found a number with a fraction");
        assert_issue(&is, SESSIOND_ERROR,
                     "test.conf:5: monitoring.alerts.failure_rate: expected a number, found a string");
        assert_issue(&is, SESSIOND_ERROR, "test.conf:6: daemon.socket_path: expected a string, found an array");
        assert_issue(&is, SESSIOND_ERROR,
                     "test.conf:7: custom.nested: expected a string, number or boolean, found a group");
        assert_issue(&is, SESSIOND_ERROR, "test.conf:8: features.caching: value \"maybe\" is not a boolean");
        sessiond_issues_clear(&is);
        scratch_remove();
}
END_TEST

START_TEST(test_conf_durations_and_booleans) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};

        ck_assert_int_eq(
                load_conf_text(
                        "timeout: { session_lifetime = \"48h\"; idle_timeout = \"30m\"; absolute_timeout = \"7d\";"
                        " expiration_grace = \"90s\"; cleanup_grace = 600; };\n"
                        "security: { fingerprinting = \"off\"; audit_logging = 0; suspicious_detection = TRUE; };\n"
                        "monitoring: { alerts: { failure_rate = 12; creation_rate = 7.25; }; };\n",
                        &c, &is),
                0);
        assert_no_issues(&is);
        ck_assert_int_eq(c->timeout.session_lifetime, 172800);
        ck_assert_int_eq(c->timeout.idle_timeout, 1800);
        ck_assert_int_eq(c->timeout.absolute_timeout, 604800);
        ck_assert_int_eq(c->timeout.expiration_grace, 90);
        ck_assert(!c->security.fingerprinting);
        ck_assert(!c->security.audit_logging);
        ck_assert(c->security.suspicious_detection);
        ck_assert_double_eq(c->monitoring.alerts.failure_rate, 12.0);
        ck_assert_double_eq(c->monitoring.alerts.creation_rate, 7.25);
        sessiond_config_free(c);
        scratch_remove();
}
END_TEST

START_TEST(test_conf_bad_units) {
        static const char *bad[] = {"5x", "5 m", "m", "", "1.5h", "-", "5mm", "0x10"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct sessiond_config *c = NULL;
                struct sessiond_issues is = {};
                char text[128], expected[128];
                snprintf(text, sizeof(text), "timeout: { idle_timeout = \"%s\"; };\n", bad[i]);
                snprintf(expected, sizeof(expected), "timeout.idle_timeout: value \"%s\" %s", bad[i],
                         bad[i][0] ? "is not a duration" : "is empty");
                ck_assert_int_eq(load_conf_text(text, &c, &is), -EINVAL);
                assert_issue(&is, SESSIOND_ERROR, expected);
                sessiond_issues_clear(&is);
        }
        scratch_remove();
}
END_TEST

START_TEST(test_conf_huge_numbers) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};

        /* libconfig 1.5 would wrap these silently; they must be errors. */
        ck_assert_int_eq(load_conf_text("cleanup: { batch_size = 5000000000; };\n"
                                        "timeout: { idle_timeout = 99999999999999999999; };\n",
                                        &c, &is),
                         -EINVAL);
        assert_issue(&is, SESSIOND_ERROR, "test.conf:1: integer 5000000000 does not fit a plain libconfig integer");
        assert_issue(&is, SESSIOND_ERROR, "test.conf:2: integer 99999999999999999999 is out of range");
        sessiond_issues_clear(&is);

        ck_assert_int_eq(load_conf_text("cleanup: { batch_size = -3000000000; };\n", &c, &is), -EINVAL);
        assert_issue(&is, SESSIOND_ERROR, "test.conf:1: integer -3000000000 does not fit");
        sessiond_issues_clear(&is);

        ck_assert_int_eq(load_conf_text("timeout: { absolute_timeout = 9223372036854775808L; };\n", &c, &is), -EINVAL);
        assert_issue(&is, SESSIOND_ERROR, "test.conf:1: integer 9223372036854775808L is out of range");
        sessiond_issues_clear(&is);

        /* In 64 bits but beyond our limits. */
        ck_assert_int_eq(
                load_conf_text("timeout: { absolute_timeout = 3153600001L; };\n"
                               "cleanup: { batch_size = 2147483648L; };\n"
                               "sync: { timeout = \"36500001d\"; heartbeat_interval = \"999999999999999999999s\"; };\n"
                               "monitoring: { alerts: { creation_rate = 1e16; }; };\n",
                               &c, &is),
                -EINVAL);
        assert_issue(&is, SESSIOND_ERROR,
                     "test.conf:1: timeout.absolute_timeout: value 3153600001 is out of range (at most 3153600000 "
                     "seconds, 100 years)");
        assert_issue(&is, SESSIOND_ERROR,
                     "test.conf:2: cleanup.batch_size: value 2147483648 is out of range (at most 2147483647)");
        assert_issue(&is, SESSIOND_ERROR, "test.conf:3: sync.timeout: value \"36500001d\" is out of range");
        assert_issue(&is, SESSIOND_ERROR,
                     "test.conf:3: sync.heartbeat_interval: value \"999999999999999999999s\" is out of range");
        assert_issue(&is, SESSIOND_ERROR, "test.conf:4: monitoring.alerts.creation_rate: value 1e+16 is out of range");
        sessiond_issues_clear(&is);

        /* The largest allowed values load (with L where libconfig needs it);
         * numbers in strings, comments and names are not literals. */
        ck_assert_int_eq(load_conf_text("timeout: { absolute_timeout = 3153600000L; };  # 99999999999999999999\n"
                                        "cleanup: { batch_size = 2147483647; };\n"
                                        "/* 5000000000 */ custom: { note = \"5000000000\"; x9999999999 = 1; };\n",
                                        &c, &is),
                         0);
        assert_no_issues(&is);
        ck_assert_int_eq(c->timeout.absolute_timeout, INT64_C(3153600000));
        ck_assert_int_eq(c->cleanup.batch_size, 2147483647);
        sessiond_config_free(c);
        scratch_remove();
}
END_TEST

START_TEST(test_conf_unknown_keys) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};

        ck_assert_int_eq(
                load_conf_text("timeout: { idle_timout = 5; };\nfrobnicate = 1;\nmonitoring: { alert: { x = 1; }; };\n",
                               &c, &is),
                0);
        assert_issue(&is, SESSIOND_WARNING,
                     "test.conf:1: unknown setting timeout.idle_timout (ignored); did you mean timeout.idle_timeout?");
        assert_issue(&is, SESSIOND_WARNING, "test.conf:2: unknown setting frobnicate (ignored)");
        ck_assert_ptr_null(strstr(find_issue(&is, SESSIOND_WARNING, "frobnicate")->message, "did you mean"));
        assert_issue(&is, SESSIOND_WARNING, "unknown setting monitoring.alert (ignored); did you mean");
        ck_assert(!sessiond_issues_has_errors(&is));
        sessiond_config_free(c);
        sessiond_issues_clear(&is);
        scratch_remove();
}
END_TEST

START_TEST(test_conf_missing_and_include) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char expected[600];

        ck_assert_int_eq(load_from(path_in("nope.conf"), NULL, NULL, &c, &is), -EINVAL);
        snprintf(expected, sizeof(expected), "%s: cannot read the configuration file: No such file or directory",
                 path_in("nope.conf"));
        assert_issue(&is, SESSIOND_ERROR, expected);
        sessiond_issues_clear(&is);

        /* @include is relative to the file's folder; origins name the
         * included file. */
        write_text(path_in("inc.conf"), "\ncleanup: { batch_size = 77; };\n");
        write_text(path_in("main.conf"), "@include \"inc.conf\"\n");
        ck_assert_int_eq(load_from(path_in("main.conf"), NULL, NULL, &c, &is), 0);
        ck_assert_int_eq(c->cleanup.batch_size, 77);
        ck_assert_str_eq(c->origins[sessiond_setting_find("cleanup.batch_size")].file, path_in("inc.conf"));
        ck_assert_int_eq(c->origins[sessiond_setting_find("cleanup.batch_size")].line, 2);
        ck_assert_str_eq(c->config_file, path_in("main.conf"));
        sessiond_config_free(c);

        /* A huge literal inside an included file is caught there. */
        write_text(path_in("inc.conf"), "cleanup: { batch_size = 6000000000; };\n");
        ck_assert_int_eq(load_from(path_in("main.conf"), NULL, NULL, &c, &is), -EINVAL);
        snprintf(expected, sizeof(expected), "%s:1: integer 6000000000 does not fit", path_in("inc.conf"));
        assert_issue(&is, SESSIOND_ERROR, expected);
        sessiond_issues_clear(&is);
        scratch_remove();
}
END_TEST

/* ---- the environment and the env file ---------------------------------------- */

/* Issue messages go into JSON (the Reload error reply): a byte that is not
 * UTF-8 in a quoted value is shown as \xNN, never makes the message vanish. */
START_TEST(test_issue_messages_are_utf8) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_DEBUG_MODE=\xff\xc3\xa9", "SESSION_IDLE_TIMEOUT_SECONDS=\xed\xa0\x80", NULL};

        ck_assert_int_eq(load_env(env, &c, &is), -EINVAL);
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_DEBUG_MODE: value '\\xff\xc3\xa9' is not a boolean");
        assert_issue(&is, SESSIOND_ERROR,
                     "environment: SESSION_IDLE_TIMEOUT_SECONDS: value '\\xed\\xa0\\x80' is not a duration");
        for (size_t i = 0; i < is.count; i++) {
                json_t *m = json_string(is.items[i].message);
                ck_assert_msg(m != NULL, "not UTF-8: %s", is.items[i].message);
                json_decref(m);
        }
        sessiond_issues_clear(&is);
}
END_TEST

/* A string value that is not UTF-8 cannot be shown as JSON (GetConfig,
 * GetClientConfig, --show): refused when loading, from every source. */
START_TEST(test_strings_must_be_utf8) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_LOCALSTORAGE_PREFIX=\xed\xa0\x80", "SESSION_CUSTOM_TEAM=\xf8", NULL};
        char expected[600];

        ck_assert_int_eq(load_conf_text("sync: { localstorage_prefix = \"a\xff\" \"b\"; };\n"
                                        "custom: { team = \"\xc3\"; };\n",
                                        &c, &is),
                         -EINVAL);
        snprintf(expected, sizeof(expected), "%s:1: sync.localstorage_prefix: value \"a\\xffb\" is not valid UTF-8",
                 path_in("test.conf"));
        assert_issue(&is, SESSIOND_ERROR, expected);
        snprintf(expected, sizeof(expected), "%s:2: custom.team: value \"\\xc3\" is not valid UTF-8",
                 path_in("test.conf"));
        assert_issue(&is, SESSIOND_ERROR, expected);
        sessiond_issues_clear(&is);

        ck_assert_int_eq(load_env(env, &c, &is), -EINVAL);
        assert_issue(&is, SESSIOND_ERROR,
                     "environment: SESSION_LOCALSTORAGE_PREFIX: value '\\xed\\xa0\\x80' is not valid UTF-8");
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_CUSTOM_TEAM: value '\\xf8' is not valid UTF-8");
        sessiond_issues_clear(&is);

        /* Valid UTF-8, up to four bytes a character, is a string like any. */
        ck_assert_int_eq(load_conf_text("sync: { localstorage_prefix = \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"; };\n"
                                        "custom: { team = \"\xc3\xa9\"; };\n",
                                        &c, &is),
                         0);
        assert_no_issues(&is);
        json_t *j = sessiond_config_to_json(c, true), *client = sessiond_config_client_json(c);
        ck_assert_ptr_nonnull(j);
        ck_assert_ptr_nonnull(client);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(client, "sync"), "localstorage_prefix")),
                         "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
        json_decref(j);
        json_decref(client);
        sessiond_config_free(c);
        scratch_remove();
}
END_TEST

START_TEST(test_env_errors) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {
                "SESSION_CLEANUP_BATCH_SIZE=",
                "SESSION_DEBUG_MODE=maybe",
                "SESSION_IDLE_TIMEOUT_SECONDS=10w",
                "SESSION_MAX_CLEANUP_BATCHES=12abc",
                "SESSION_EVENTS_BUFFER_SIZE=99999999999999999999",
                "SESSION_METRICS_BUFFER_SIZE=2147483648",
                "SESSION_LIFETIME_SECONDS=3153600001",
                "SESSION_ALERT_FAILURE_RATE=1e400",
                "SESSION_ALERT_CREATION_RATE=nan",
                "SESSION_LOCALSTORAGE_PREFIX=",
                "SESSION_SYNC_TIMEOUT_SECONDS= 5",
                NULL,
        };

        ck_assert_int_eq(load_env(env, &c, &is), -EINVAL);
        ck_assert_ptr_null(c);
        /* All of them at once. */
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_CLEANUP_BATCH_SIZE is empty");
        assert_issue(&is, SESSIOND_ERROR,
                     "environment: SESSION_DEBUG_MODE: value 'maybe' is not a boolean (use true/false, yes/no, on/off "
                     "or 1/0)");
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_IDLE_TIMEOUT_SECONDS: value '10w' is not a duration");
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_MAX_CLEANUP_BATCHES: value '12abc' is not an integer");
        assert_issue(&is, SESSIOND_ERROR,
                     "environment: SESSION_EVENTS_BUFFER_SIZE: value '99999999999999999999' is out of range");
        assert_issue(
                &is, SESSIOND_ERROR,
                "environment: SESSION_METRICS_BUFFER_SIZE: value '2147483648' is out of range (at most 2147483647)");
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_LIFETIME_SECONDS: value '3153600001' is out of range");
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_ALERT_FAILURE_RATE: value '1e400' is out of range");
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_ALERT_CREATION_RATE: value 'nan' is not a number");
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_LOCALSTORAGE_PREFIX is empty");
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_SYNC_TIMEOUT_SECONDS: value ' 5' is not a duration");
        ck_assert_uint_eq(is.count, 11);
        sessiond_issues_clear(&is);
}
END_TEST

START_TEST(test_env_units_and_booleans) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {
                "SESSION_IDLE_TIMEOUT_SECONDS=2h",
                "SESSION_LIFETIME_SECONDS=1d",
                "SESSION_DEBUG_MODE=YES",
                "SESSION_ENABLE_FINGERPRINTING=Off",
                "SESSION_ENABLE_AUDIT_LOGGING=0",
                "SESSION_ENABLE_HEALTH_CHECKS=on",
                "SESSION_FEATURE_OPTIMISTIC_UI=FALSE",
                "SESSION_ALERT_FAILURE_RATE=12.5",
                "SESSION_CLEANUP_BATCH_SIZE=-4",
                NULL,
        };

        ck_assert_int_eq(load_env(env, &c, &is), 0);
        assert_no_issues(&is);
        ck_assert_int_eq(c->timeout.idle_timeout, 7200);
        ck_assert_int_eq(c->timeout.session_lifetime, 86400);
        ck_assert(c->debug_mode);
        ck_assert(!c->security.fingerprinting);
        ck_assert(!c->security.audit_logging);
        ck_assert(c->monitoring.health_checks);
        ck_assert(!c->features.optimistic_ui);
        ck_assert_double_eq(c->monitoring.alerts.failure_rate, 12.5);
        /* Loading takes a negative count; validation refuses it. */
        ck_assert_int_eq(c->cleanup.batch_size, -4);
        sessiond_config_free(c);
}
END_TEST

START_TEST(test_deprecated_alias) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *alias[] = {"SESSION_ENABLE_ANALYTICS=false", NULL};
        char *both[] = {"SESSION_FEATURE_ANALYTICS=true", "SESSION_ENABLE_ANALYTICS=false", NULL};

        ck_assert_int_eq(load_env(alias, &c, &is), 0);
        ck_assert(!c->features.analytics);
        ck_assert_int_eq(c->origins[sessiond_setting_find("features.analytics")].kind, SESSIOND_ORIGIN_ENVIRONMENT);
        assert_issue(&is, SESSIOND_WARNING,
                     "environment: SESSION_ENABLE_ANALYTICS is deprecated, use SESSION_FEATURE_ANALYTICS");
        sessiond_config_free(c);
        sessiond_issues_clear(&is);

        /* Both given: the current name wins, whatever the order. */
        ck_assert_int_eq(load_env(both, &c, &is), 0);
        ck_assert(c->features.analytics);
        assert_issue(&is, SESSIOND_WARNING, "SESSION_FEATURE_ANALYTICS wins");
        sessiond_config_free(c);
        sessiond_issues_clear(&is);

        /* In the env file too. */
        write_text(path_in("a.env"), "SESSION_ENABLE_ANALYTICS=no\n");
        ck_assert_int_eq(load_from(NULL, path_in("a.env"), NULL, &c, &is), 0);
        ck_assert(!c->features.analytics);
        assert_issue(&is, SESSIOND_WARNING, "a.env:1: SESSION_ENABLE_ANALYTICS is deprecated");
        sessiond_config_free(c);
        sessiond_issues_clear(&is);
        scratch_remove();
}
END_TEST

START_TEST(test_unknown_variables) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {
                "SESSION_IDLE_TIMOUT_SECONDS=5",
                "SESSION_CLEANUP_BATCHSIZE=3",
                "SESSION_QQQQQQQQQQQQQQQQQQQQ=1",
                "SESSION_MANAGER=local/host:@/tmp/.ICE-unix/1",
                "SESSIOND_BENCH=/usr/bin/sessiond-bench",
                "SESSIOND_SOCKT=/x",
                "PATH=/bin",
                NULL,
        };

        ck_assert_int_eq(load_env(env, &c, &is), 0);
        assert_issue(&is, SESSIOND_WARNING,
                     "environment: unknown variable SESSION_IDLE_TIMOUT_SECONDS (ignored); did you mean "
                     "SESSION_IDLE_TIMEOUT_SECONDS?");
        assert_issue(&is, SESSIOND_WARNING,
                     "unknown variable SESSION_CLEANUP_BATCHSIZE (ignored); did you mean SESSION_CLEANUP_BATCH_SIZE?");
        assert_issue(&is, SESSIOND_WARNING, "environment: unknown variable SESSION_QQQQQQQQQQQQQQQQQQQQ (ignored)");
        ck_assert_ptr_null(strstr(find_issue(&is, SESSIOND_WARNING, "QQQ")->message, "did you mean"));
        assert_issue(&is, SESSIOND_WARNING, "unknown variable SESSIOND_SOCKT (ignored); did you mean SESSIOND_SOCKET?");
        /* Not ours: the desktop's SESSION_MANAGER, a tool's SESSIOND_BENCH. */
        ck_assert_ptr_null(find_issue(&is, SESSIOND_WARNING, "SESSION_MANAGER"));
        ck_assert_ptr_null(find_issue(&is, SESSIOND_WARNING, "SESSIOND_BENCH"));
        ck_assert_uint_eq(is.count, 4);
        sessiond_config_free(c);
        sessiond_issues_clear(&is);
}
END_TEST

START_TEST(test_custom_settings) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_CUSTOM_MAX_RETRIES=3", "SESSION_CUSTOM_SPECIAL_MODE=enabled", "SESSION_CUSTOM_Note=env",
                       NULL};
        const char *conf = path_in("c.conf");

        write_text(conf, "custom: {\n  note = \"file\";\n  Level = 2;\n  ratio = 0.5;\n  on = true;\n};\n");
        ck_assert_int_eq(load_from(conf, NULL, env, &c, &is), 0);
        assert_no_issues(&is);
        ck_assert_uint_eq(c->n_custom, 6);
        ck_assert_str_eq(sessiond_config_custom(c, "max_retries", "0"), "3");
        ck_assert_str_eq(sessiond_config_custom(c, "special_mode", "disabled"), "enabled");
        ck_assert_str_eq(sessiond_config_custom(c, "level", NULL), "2");
        ck_assert_str_eq(sessiond_config_custom(c, "ratio", NULL), "0.5");
        ck_assert_str_eq(sessiond_config_custom(c, "on", NULL), "true");
        ck_assert_str_eq(sessiond_config_custom(c, "missing", "dflt"), "dflt");
        /* Names are lower case; the environment beats the file. */
        ck_assert_str_eq(sessiond_config_custom(c, "note", NULL), "env");
        for (size_t i = 0; i < c->n_custom; i++) {
                for (const char *p = c->custom[i].name; *p; p++)
                        ck_assert(*p < 'A' || *p > 'Z');
                if (strcmp(c->custom[i].name, "note") == 0)
                        ck_assert_int_eq(c->custom[i].origin.kind, SESSIOND_ORIGIN_ENVIRONMENT);
                if (strcmp(c->custom[i].name, "level") == 0) {
                        ck_assert_int_eq(c->custom[i].origin.kind, SESSIOND_ORIGIN_FILE);
                        ck_assert_int_eq(c->custom[i].origin.line, 3);
                }
        }
        sessiond_config_free(c);

        char *bad[] = {"SESSION_CUSTOM_=x", "SESSION_CUSTOM_EMPTY=", "SESSION_CUSTOM_A-B=1", NULL};
        ck_assert_int_eq(load_env(bad, &c, &is), -EINVAL);
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_CUSTOM_: a custom setting needs a name");
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_CUSTOM_EMPTY is empty");
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_CUSTOM_A-B: a custom setting needs a name");
        sessiond_issues_clear(&is);

        ck_assert_int_eq(load_conf_text("custom = 5;\n", &c, &is), -EINVAL);
        assert_issue(&is, SESSIOND_ERROR, "test.conf:1: custom: expected a group, found an integer");
        sessiond_issues_clear(&is);
        scratch_remove();
}
END_TEST

START_TEST(test_env_file_syntax) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        const char *p = path_in("s.env");

        write_text(p, "# a comment\n"
                      "\n"
                      "   # indented comment\n"
                      "export SESSION_CLEANUP_BATCH_SIZE=42\n"
                      "SESSION_LOCALSTORAGE_PREFIX='my app_'\n"
                      "SESSION_CUSTOM_GREETING=\"say \\\"hi\\\" \\\\ $HOME\"  # trailing comment\n"
                      "SESSION_IDLE_TIMEOUT_SECONDS = 3600   # 1 hour\n"
                      "SESSION_CUSTOM_URL=http://x/#frag\n"
                      "OTHER_APP_SETTING=whatever\n"
                      "SESSION_MAX_CLEANUP_BATCHES=3\r\n"
                      "SESSION_DEBUG_MODE=false");
        ck_assert_int_eq(load_from(NULL, p, NULL, &c, &is), 0);
        assert_no_issues(&is);
        ck_assert_int_eq(c->cleanup.batch_size, 42);
        ck_assert_int_eq(c->origins[sessiond_setting_find("cleanup.batch_size")].line, 4);
        ck_assert_str_eq(c->sync.localstorage_prefix, "my app_");
        ck_assert_str_eq(sessiond_config_custom(c, "greeting", NULL), "say \"hi\" \\ $HOME");
        ck_assert_int_eq(c->timeout.idle_timeout, 3600);
        ck_assert_str_eq(sessiond_config_custom(c, "url", NULL), "http://x/#frag");
        ck_assert_int_eq(c->cleanup.max_batches, 3);
        ck_assert(!c->debug_mode);
        sessiond_config_free(c);

        /* Malformed lines: every one reported with its line, nothing loaded. */
        write_text(p, "SESSION_DEBUG_MODE=true\n"
                      "just some words\n"
                      "SESSION_X='unterminated\n"
                      "1BAD=x\n"
                      "SESSION_Y=\"a\" b\n"
                      "SESSION_Z=it's\n"
                      "SESSION_CLEANUP_BATCH_SIZE=\n");
        ck_assert_int_eq(load_from(NULL, p, NULL, &c, &is), -EINVAL);
        char expected[600];
        snprintf(expected, sizeof(expected), "%s:2: malformed line (expected KEY=VALUE): just some words", p);
        assert_issue(&is, SESSIOND_ERROR, expected);
        assert_issue(&is, SESSIOND_ERROR, "s.env:3: malformed line (unterminated quoted value)");
        assert_issue(&is, SESSIOND_ERROR, "s.env:4: malformed line (the key is not a valid name");
        assert_issue(&is, SESSIOND_ERROR, "s.env:5: malformed line (unexpected text after the closing quote)");
        assert_issue(&is, SESSIOND_ERROR, "s.env:6: malformed line (a quote inside an unquoted value");
        /* ... and the other lines' problems too, at once */
        snprintf(expected, sizeof(expected), "%s:7: SESSION_CLEANUP_BATCH_SIZE is empty", p);
        assert_issue(&is, SESSIOND_ERROR, expected);
        ck_assert_uint_eq(is.count, 6);
        sessiond_issues_clear(&is);

        /* A malformed line next to bad values, an unknown variable and a
         * deprecated one: every line's problem is reported. */
        write_text(p, "SESSION_CLEANUP_BATCH_SIZE=abc\n"
                      "oops\n"
                      "SESSION_DEBUG_MODE=perhaps\n"
                      "SESSION_IDLE_TIMOUT_SECONDS=5\n"
                      "SESSION_ENABLE_ANALYTICS=true\n");
        ck_assert_int_eq(load_from(NULL, p, NULL, &c, &is), -EINVAL);
        snprintf(expected, sizeof(expected), "%s:1: SESSION_CLEANUP_BATCH_SIZE: value 'abc' is not an integer", p);
        assert_issue(&is, SESSIOND_ERROR, expected);
        snprintf(expected, sizeof(expected), "%s:2: malformed line (expected KEY=VALUE): oops", p);
        assert_issue(&is, SESSIOND_ERROR, expected);
        snprintf(expected, sizeof(expected), "%s:3: SESSION_DEBUG_MODE: value 'perhaps' is not a boolean", p);
        assert_issue(&is, SESSIOND_ERROR, expected);
        snprintf(expected, sizeof(expected), "%s:4: unknown variable SESSION_IDLE_TIMOUT_SECONDS", p);
        assert_issue(&is, SESSIOND_WARNING, expected);
        snprintf(expected, sizeof(expected), "%s:5: SESSION_ENABLE_ANALYTICS is deprecated", p);
        assert_issue(&is, SESSIOND_WARNING, expected);
        ck_assert_uint_eq(is.count, 5);
        ck_assert_ptr_null(c);
        sessiond_issues_clear(&is);

        /* Keys that are not names: one message, whatever is wrong with them. */
        write_text(p, "=5\nSESSION_CUSTOM_\xc3\x9c"
                      "BER=1\nX Y=1\n1BAD=x\nSESSION-X=1\n");
        ck_assert_int_eq(load_from(NULL, p, NULL, &c, &is), -EINVAL);
        ck_assert_uint_eq(is.count, 5);
        for (size_t i = 0; i < is.count; i++) {
                snprintf(expected, sizeof(expected),
                         "%s:%zu: malformed line (the key is not a valid name "
                         "([A-Za-z_][A-Za-z0-9_]*)): ",
                         p, i + 1);
                ck_assert_msg(strncmp(is.items[i].message, expected, strlen(expected)) == 0, "%s", is.items[i].message);
        }
        snprintf(expected, sizeof(expected),
                 "%s:2: malformed line (the key is not a valid name "
                 "([A-Za-z_][A-Za-z0-9_]*)): SESSION_CUSTOM_\xc3\x9c"
                 "BER=1",
                 p);
        assert_issue(&is, SESSIOND_ERROR, expected);
        sessiond_issues_clear(&is);

        /* A value error in the env file names file:line. */
        write_text(p, "\nSESSION_CLEANUP_BATCH_SIZE=\nSESSION_DEBUG_MODE=perhaps\n");
        ck_assert_int_eq(load_from(NULL, p, NULL, &c, &is), -EINVAL);
        snprintf(expected, sizeof(expected), "%s:2: SESSION_CLEANUP_BATCH_SIZE is empty", p);
        assert_issue(&is, SESSIOND_ERROR, expected);
        snprintf(expected, sizeof(expected), "%s:3: SESSION_DEBUG_MODE: value 'perhaps' is not a boolean", p);
        assert_issue(&is, SESSIOND_ERROR, expected);
        sessiond_issues_clear(&is);
        scratch_remove();
}
END_TEST

START_TEST(test_env_file_location) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        static char var[600];
        char *env[] = {var, NULL};
        char conf[600];
        struct sessiond_config_sources s = {.config_file = path_in("l.conf"), .environ = env};

        write_text(path_in("a.env"), "SESSION_CLEANUP_BATCH_SIZE=1\n");
        write_text(path_in("b.env"), "SESSION_CLEANUP_BATCH_SIZE=2\n");
        write_text(path_in("c.env"), "SESSION_CLEANUP_BATCH_SIZE=3\nSESSIOND_ENV_FILE=/elsewhere\n");
        snprintf(conf, sizeof(conf), "daemon: { env_file = \"%s\"; };\n", path_in("a.env"));
        write_text(path_in("l.conf"), conf);

        /* daemon.env_file from the file */
        snprintf(var, sizeof(var), "UNRELATED=1");
        ck_assert_int_eq(sessiond_config_load(&s, &c, &is), 0);
        ck_assert_int_eq(c->cleanup.batch_size, 1);
        sessiond_config_free(c);

        /* SESSIOND_ENV_FILE from the environment beats it */
        snprintf(var, sizeof(var), "SESSIOND_ENV_FILE=%s", path_in("b.env"));
        ck_assert_int_eq(sessiond_config_load(&s, &c, &is), 0);
        ck_assert_int_eq(c->cleanup.batch_size, 2);
        ck_assert_str_eq(c->daemon.env_file, path_in("b.env"));
        sessiond_config_free(c);

        /* sources->env_file beats both; SESSIOND_ENV_FILE inside an env
         * file cannot move it */
        s.env_file = path_in("c.env");
        ck_assert_int_eq(sessiond_config_load(&s, &c, &is), 0);
        ck_assert_int_eq(c->cleanup.batch_size, 3);
        assert_issue(&is, SESSIOND_WARNING, "SESSIOND_ENV_FILE has no effect inside the env file (ignored)");
        sessiond_config_free(c);
        sessiond_issues_clear(&is);

        /* A missing env file is fine (it is optional); a folder is not. */
        s.env_file = path_in("missing.env");
        ck_assert_int_eq(sessiond_config_load(&s, &c, &is), 0);
        assert_no_issues(&is);
        sessiond_config_free(c);
        s.env_file = scratch();
        ck_assert_int_eq(sessiond_config_load(&s, &c, &is), -EINVAL);
        assert_issue(&is, SESSIOND_ERROR, "cannot read the env file: Is a directory");
        sessiond_issues_clear(&is);

        /* An env file given in memory (sessionctl validates edits so). */
        struct sessiond_envfile *f = NULL;
        ck_assert_int_eq(sessiond_envfile_parse("mem.env", "SESSION_CLEANUP_BATCH_SIZE=9\n", 29, &f, &is), 0);
        s.env_file = NULL;
        s.env_file_data = f;
        ck_assert_int_eq(sessiond_config_load(&s, &c, &is), 0);
        ck_assert_int_eq(c->cleanup.batch_size, 9);
        ck_assert_str_eq(c->origins[sessiond_setting_find("cleanup.batch_size")].file, "mem.env");
        sessiond_config_free(c);
        sessiond_envfile_free(f);
        scratch_remove();
}
END_TEST

START_TEST(test_all_sources_errors_at_once) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_DEBUG_MODE=maybe", NULL};

        write_text(path_in("x.conf"), "cleanup: { batch_size = \"x\"; };\n");
        write_text(path_in("x.env"), "SESSION_IDLE_TIMEOUT_SECONDS=soon\n");
        ck_assert_int_eq(load_from(path_in("x.conf"), path_in("x.env"), env, &c, &is), -EINVAL);
        assert_issue(&is, SESSIOND_ERROR, "x.conf:1: cleanup.batch_size");
        assert_issue(&is, SESSIOND_ERROR, "x.env:1: SESSION_IDLE_TIMEOUT_SECONDS");
        assert_issue(&is, SESSIOND_ERROR, "environment: SESSION_DEBUG_MODE");
        sessiond_issues_clear(&is);
        scratch_remove();
}
END_TEST

START_TEST(test_process_environment) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        struct sessiond_config_sources s = {.config_file = "", .env_file = ""};

        /* environ == NULL means the process environment... */
        ck_assert_int_eq(setenv("SESSION_CLEANUP_BATCH_SIZE", "33", 1), 0);
        ck_assert_int_eq(sessiond_config_load(&s, &c, &is), 0);
        ck_assert_int_eq(c->cleanup.batch_size, 33);
        sessiond_config_free(c);
        /* ...unless ignored. */
        s.ignore_environment = true;
        ck_assert_int_eq(sessiond_config_load(&s, &c, &is), 0);
        ck_assert_int_eq(c->cleanup.batch_size, 100);
        sessiond_config_free(c);
        unsetenv("SESSION_CLEANUP_BATCH_SIZE");
}
END_TEST

static Suite *load_suite(void) {
        Suite *s = suite_create("config-load");
        TCase *tc = tcase_create("settings");
        tcase_add_loop_test(tc, test_setting_default, 0, (int) sessiond_settings_count);
        tcase_add_loop_test(tc, test_setting_each_source, 0, (int) sessiond_settings_count);
        suite_add_tcase(s, tc);

        tc = tcase_create("profiles");
        tcase_add_test(tc, test_profile_under_explicit);
        tcase_add_test(tc, test_profile_chosen_by_final_environment);
        tcase_add_test(tc, test_profile_table);
        tcase_add_test(tc, test_profile_values_full_columns);
        tcase_add_test(tc, test_apply_profile_again);
        tcase_add_test(tc, test_unknown_environment);
        suite_add_tcase(s, tc);

        tc = tcase_create("file");
        tcase_add_test(tc, test_conf_syntax_error_has_line);
        tcase_add_test(tc, test_conf_string_syntax_errors);
        tcase_add_test(tc, test_conf_wrong_types);
        tcase_add_test(tc, test_conf_durations_and_booleans);
        tcase_add_test(tc, test_conf_bad_units);
        tcase_add_test(tc, test_conf_huge_numbers);
        tcase_add_test(tc, test_conf_unknown_keys);
        tcase_add_test(tc, test_conf_missing_and_include);
        suite_add_tcase(s, tc);

        tc = tcase_create("environment");
        tcase_add_test(tc, test_env_errors);
        tcase_add_test(tc, test_issue_messages_are_utf8);
        tcase_add_test(tc, test_strings_must_be_utf8);
        tcase_add_test(tc, test_env_units_and_booleans);
        tcase_add_test(tc, test_deprecated_alias);
        tcase_add_test(tc, test_unknown_variables);
        tcase_add_test(tc, test_custom_settings);
        tcase_add_test(tc, test_env_file_syntax);
        tcase_add_test(tc, test_env_file_location);
        tcase_add_test(tc, test_all_sources_errors_at_once);
        tcase_add_test(tc, test_process_environment);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(load_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
