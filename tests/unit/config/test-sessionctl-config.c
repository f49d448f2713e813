/* `sessionctl config` (tools/sessionctl-config.c), called in-process: the
 * edits on an operator's env file with comments and foreign lines, invalid
 * input that must leave the file alone, read-only and missing files, and
 * the exit codes. */
#include "helpers.h"
#include "sessionctl.h"

extern char **environ;

struct run {
        int code;
        char *out, *err;
};

static void run_free(struct run *r) {
        free(r->out);
        free(r->err);
}

/* Runs sessionctl -c <conf> config <args...> with stdout/stderr captured. */
static struct run run_config(const char *conf, ...) {
        struct sessionctl_globals g = {.config_file = conf};
        char *argv[16] = {"config"};
        int argc = 1, saved_out, saved_err, fd_out, fd_err;
        struct run r;
        va_list ap;

        va_start(ap, conf);
        for (char *a; (a = va_arg(ap, char *)) && argc < 15;)
                argv[argc++] = a;
        va_end(ap);
        argv[argc] = NULL;

        fflush(stdout);
        fflush(stderr);
        saved_out = dup(1);
        saved_err = dup(2);
        fd_out = open(path_in("stdout"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        fd_err = open(path_in("stderr"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ck_assert_int_ge(fd_out, 0);
        ck_assert_int_ge(fd_err, 0);
        dup2(fd_out, 1);
        dup2(fd_err, 2);
        r.code = sessionctl_config(argc, argv, &g);
        fflush(stdout);
        fflush(stderr);
        dup2(saved_out, 1);
        dup2(saved_err, 2);
        close(saved_out);
        close(saved_err);
        close(fd_out);
        close(fd_err);
        r.out = read_text(path_in("stdout"));
        r.err = read_text(path_in("stderr"));
        return r;
}

/* A config file whose env file is in the scratch folder. */
static const char *setup(const char *env_text) {
        char conf[700];
        /* Our own environment must not leak in. */
        for (char **e = environ; *e;)
                if (strncmp(*e, "SESSION_", 8) == 0 || strncmp(*e, "SESSIOND_", 9) == 0) {
                        char name[256];
                        snprintf(name, sizeof(name), "%.*s", (int) (strchr(*e, '=') - *e), *e);
                        unsetenv(name);
                } else
                        e++;
        snprintf(conf, sizeof(conf), "daemon: { env_file = \"%s\"; };\n", path_in("session.env"));
        write_text(path_in("sessiond.conf"), conf);
        if (env_text)
                write_text(path_in("session.env"), env_text);
        return path_in("sessiond.conf");
}

static const char operator_file[] = "# Written by hand. Do not lose this comment.\n"
                                    "\n"
                                    "DATABASE_URL=postgres://app@db/app   # the web app's, not ours\n"
                                    "SESSION_CUSTOM_MAX_RETRIES=3\n"
                                    "export SESSION_ENVIRONMENT=development\n"
                                    "# trailing comment\n";

START_TEST(test_set_env_keeps_lines) {
        const char *conf = setup(operator_file);
        struct run r = run_config(conf, "--set-env", "production", NULL);
        char *after;

        ck_assert_msg(r.code == 0, "exit %d: %s", r.code, r.err);
        ck_assert_ptr_nonnull(strstr(r.out, "SESSION_ENVIRONMENT: development -> production"));
        ck_assert_ptr_nonnull(strstr(
                r.out, "timeout.session_lifetime (SESSION_LIFETIME_SECONDS): 86400 -> 172800 (profile production)"));
        after = read_text(path_in("session.env"));
        ck_assert_str_eq(after, "# Written by hand. Do not lose this comment.\n"
                                "\n"
                                "DATABASE_URL=postgres://app@db/app   # the web app's, not ours\n"
                                "SESSION_CUSTOM_MAX_RETRIES=3\n"
                                "export SESSION_ENVIRONMENT=production\n"
                                "# trailing comment\n");
        free(after);
        run_free(&r);

        /* Again: nothing to change, file untouched. */
        r = run_config(conf, "--set-env", "PRODUCTION", NULL);
        ck_assert_int_eq(r.code, 0);
        ck_assert_ptr_nonnull(strstr(r.out, "nothing changed"));
        run_free(&r);
        scratch_remove();
}
END_TEST

START_TEST(test_set_env_invalid_name) {
        const char *conf = setup(operator_file);
        struct stat before, after;
        struct run r;
        char *text;

        ck_assert_int_eq(stat(path_in("session.env"), &before), 0);
        r = run_config(conf, "--set-env", "prod", NULL);
        ck_assert_int_eq(r.code, 1);
        ck_assert_ptr_nonnull(
                strstr(r.err, "unknown environment 'prod'; valid names: development, testing, staging, production"));
        ck_assert_int_eq(stat(path_in("session.env"), &after), 0);
        ck_assert_uint_eq(before.st_ino, after.st_ino);
        text = read_text(path_in("session.env"));
        ck_assert_str_eq(text, operator_file);
        free(text);
        run_free(&r);
        scratch_remove();
}
END_TEST

START_TEST(test_set_env_invalid_result) {
        /* An explicit idle timeout of a day, then testing (lifetime 30
         * minutes): the result would break a rule, so nothing is written. */
        static const char text[] = "# keep\nSESSION_IDLE_TIMEOUT_SECONDS=86400\n";
        const char *conf = setup(text);
        struct run r = run_config(conf, "--set-env", "testing", NULL);
        char *after;

        ck_assert_int_eq(r.code, 1);
        ck_assert_ptr_nonnull(strstr(r.err, "error: Idle timeout should be less than session lifetime"));
        ck_assert_ptr_nonnull(strstr(r.err, "is unchanged"));
        after = read_text(path_in("session.env"));
        ck_assert_str_eq(after, text);
        free(after);
        run_free(&r);
        scratch_remove();
}
END_TEST

START_TEST(test_optimize_for) {
        const char *conf = setup(operator_file);
        struct run r = run_config(conf, "--optimize-for", "production", NULL);
        char *after;

        ck_assert_msg(r.code == 0, "exit %d: %s", r.code, r.err);
        /* Each change, "SESSION_X: old -> new". */
        ck_assert_ptr_nonnull(strstr(r.out, "SESSION_ENVIRONMENT: development -> production"));
        ck_assert_ptr_nonnull(strstr(r.out, "SESSION_LIFETIME_SECONDS: 86400 -> 172800"));
        ck_assert_ptr_nonnull(strstr(r.out, "SESSION_CLEANUP_INTERVAL_SECONDS: 900 -> 3600"));
        ck_assert_ptr_nonnull(strstr(r.out, "SESSION_CLEANUP_BATCH_SIZE: 100 -> 200"));
        ck_assert_ptr_nonnull(strstr(r.out, "SESSION_MAX_CLEANUP_BATCHES: 10 -> 20"));
        ck_assert_ptr_nonnull(strstr(r.out, "SESSION_DEBUG_MODE: true -> false"));
        after = read_text(path_in("session.env"));
        /* Every earlier line is still there, in order, and the profile's
         * values follow as explicit lines. */
        static const char kept[] = "# Written by hand. Do not lose this comment.\n\n"
                                   "DATABASE_URL=postgres://app@db/app   # the web app's, not ours\n"
                                   "SESSION_CUSTOM_MAX_RETRIES=3\n"
                                   "export SESSION_ENVIRONMENT=production\n"
                                   "# trailing comment\n";
        ck_assert_int_eq(strncmp(after, kept, strlen(kept)), 0);
        static const char *lines[] = {
                "SESSION_LIFETIME_SECONDS=172800\n",       "SESSION_IDLE_TIMEOUT_SECONDS=86400\n",
                "SESSION_CLEANUP_INTERVAL_SECONDS=3600\n", "SESSION_CLEANUP_BATCH_SIZE=200\n",
                "SESSION_MAX_CLEANUP_BATCHES=20\n",        "SESSION_ENABLE_PERFORMANCE_MONITORING=true\n",
                "SESSION_FEATURE_ANALYTICS=true\n",        "SESSION_DEBUG_MODE=false\n"};
        for (size_t i = 0; i < 8; i++)
                ck_assert_msg(strstr(after, lines[i]), "missing %s in:\n%s", lines[i], after);
        free(after);
        run_free(&r);

        /* Then testing: the same lines are rewritten in place, none added. */
        r = run_config(conf, "--optimize-for", "testing", NULL);
        ck_assert_msg(r.code == 0, "exit %d: %s", r.code, r.err);
        ck_assert_ptr_nonnull(strstr(r.out, "SESSION_MAX_CLEANUP_BATCHES: 20 -> 10"));
        after = read_text(path_in("session.env"));
        ck_assert_ptr_nonnull(strstr(after, "SESSION_LIFETIME_SECONDS=1800\n"));
        ck_assert_ptr_null(strstr(after, "172800"));
        size_t n = 0;
        for (const char *p = after; (p = strchr(p, '\n')); p++)
                n++;
        ck_assert_uint_eq(n, 6 + 8);
        free(after);
        run_free(&r);

        r = run_config(conf, "--optimize-for", "bogus", NULL);
        ck_assert_int_eq(r.code, 1);
        ck_assert_ptr_nonnull(strstr(r.err, "valid names: development, testing, staging, production"));
        run_free(&r);
        scratch_remove();
}
END_TEST

START_TEST(test_read_only_env_file) {
        const char *conf = setup(operator_file);
        struct run r;
        char *after;

        ck_assert_int_eq(chmod(path_in("session.env"), 0444), 0);
        r = run_config(conf, "--optimize-for", "staging", NULL);
        ck_assert_int_eq(r.code, 1);
        ck_assert_ptr_nonnull(strstr(r.err, "is read-only or not writable by this user; nothing changed"));
        after = read_text(path_in("session.env"));
        ck_assert_str_eq(after, operator_file);
        free(after);
        run_free(&r);
        chmod(path_in("session.env"), 0644);
        scratch_remove();
}
END_TEST

START_TEST(test_missing_env_file) {
        const char *conf = setup(NULL);
        struct run r = run_config(conf, "--set-env", "staging", NULL);

        ck_assert_int_eq(r.code, 1);
        ck_assert_ptr_nonnull(strstr(r.err, "does not exist; create it first"));
        ck_assert_ptr_null(read_text(path_in("session.env")));
        run_free(&r);

        /* No env file configured at all. */
        write_text(path_in("sessiond.conf"), "daemon: { env_file = \"\"; };\n");
        r = run_config(conf, "--set-env", "staging", NULL);
        ck_assert_int_eq(r.code, 1);
        ck_assert_ptr_nonnull(strstr(r.err, "no env file is configured"));
        run_free(&r);
        scratch_remove();
}
END_TEST

START_TEST(test_malformed_env_file) {
        static const char text[] = "GOOD=1\nthis is not a setting\n";
        const char *conf = setup(text);
        struct run r = run_config(conf, "--set-env", "staging", NULL);
        char *after;

        ck_assert_int_eq(r.code, 1);
        ck_assert_ptr_nonnull(strstr(r.err, "session.env:2: malformed line"));
        after = read_text(path_in("session.env"));
        ck_assert_str_eq(after, text);
        free(after);
        run_free(&r);
        scratch_remove();
}
END_TEST

START_TEST(test_validate_show_summary) {
        const char *conf = setup("SESSION_WARNING_THRESHOLD_SECONDS=86400\nSESSION_CUSTOM_A=1\n");
        struct run r = run_config(conf, "--validate", NULL);
        json_t *j;

        /* Valid with a warning: exit 0. */
        ck_assert_int_eq(r.code, 0);
        ck_assert_ptr_nonnull(strstr(r.out, "warning: Warning threshold should be less than idle timeout"));
        ck_assert_ptr_nonnull(strstr(r.out, "configuration is valid (1 warning)"));
        run_free(&r);

        r = run_config(conf, "--show", NULL);
        ck_assert_int_eq(r.code, 0);
        j = json_loads(r.out, 0, NULL);
        ck_assert_ptr_nonnull(j);
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "timeout"), "warning_threshold")),
                         86400);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "custom"), "a")), "1");
        json_decref(j);
        run_free(&r);

        r = run_config(conf, "--show", "--origin", NULL);
        ck_assert_int_eq(r.code, 0);
        j = json_loads(r.out, 0, NULL);
        ck_assert_ptr_nonnull(j);
        char expected[600];
        snprintf(expected, sizeof(expected), "env file %s:1", path_in("session.env"));
        ck_assert_str_eq(json_string_value(json_object_get(
                                 json_object_get(json_object_get(j, "timeout"), "warning_threshold"), "origin")),
                         expected);
        json_decref(j);
        run_free(&r);

        r = run_config(conf, "--summary", NULL);
        ck_assert_int_eq(r.code, 0);
        j = json_loads(r.out, 0, NULL);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "custom_settings_count")), 1);
        json_decref(j);
        run_free(&r);

        /* Invalid: exit 1, every issue listed. */
        write_text(path_in("session.env"), "SESSION_CLEANUP_BATCH_SIZE=0\nSESSION_METRICS_BUFFER_SIZE=0\n");
        r = run_config(conf, "--validate", NULL);
        ck_assert_int_eq(r.code, 1);
        ck_assert_ptr_nonnull(strstr(r.out, "error: Cleanup batch size must be positive"));
        ck_assert_ptr_nonnull(strstr(r.out, "error: Metrics buffer size must be positive"));
        ck_assert_ptr_nonnull(strstr(r.out, "configuration is invalid: 2 errors, 0 warnings"));
        run_free(&r);

        /* Unparsable: --validate says why (exit 1), --show refuses (exit 1). */
        write_text(path_in("session.env"), "SESSION_DEBUG_MODE=maybe\n");
        r = run_config(conf, "--validate", NULL);
        ck_assert_int_eq(r.code, 1);
        ck_assert_ptr_nonnull(strstr(r.out, "SESSION_DEBUG_MODE: value 'maybe' is not a boolean"));
        run_free(&r);
        r = run_config(conf, "--show", NULL);
        ck_assert_int_eq(r.code, 1);
        ck_assert_str_eq(r.out, "");
        run_free(&r);
        scratch_remove();
}
END_TEST

START_TEST(test_template_output) {
        const char *conf = setup(NULL);
        struct run r = run_config(conf, "--generate-template", "--output", path_in("out.env"), NULL);
        char *text = NULL, *file;

        ck_assert_int_eq(r.code, 0);
        ck_assert_int_eq(sessiond_config_template(SESSIOND_TEMPLATE_ENV, &text), 0);
        file = read_text(path_in("out.env"));
        ck_assert_str_eq(file, text);
        free(file);
        free(text);
        run_free(&r);

        r = run_config(conf, "--generate-template", "--format", "conf", NULL);
        ck_assert_int_eq(r.code, 0);
        ck_assert_int_eq(sessiond_config_template(SESSIOND_TEMPLATE_CONF, &text), 0);
        ck_assert_str_eq(r.out, text);
        free(text);
        run_free(&r);

        /* A read-only output is refused and left alone. */
        write_text(path_in("ro.env"), "KEEP=1\n");
        chmod(path_in("ro.env"), 0444);
        r = run_config(conf, "--generate-template", "--output", path_in("ro.env"), NULL);
        ck_assert_int_eq(r.code, 1);
        file = read_text(path_in("ro.env"));
        ck_assert_str_eq(file, "KEEP=1\n");
        free(file);
        run_free(&r);
        chmod(path_in("ro.env"), 0644);
        scratch_remove();
}
END_TEST

START_TEST(test_usage) {
        const char *conf = setup(NULL);
        static const char *const cases[][4] = {
                {NULL},
                {"--show", "--summary"},
                {"--validate", "--set-env", "testing"},
                {"--origin"},
                {"--validate", "--origin"},
                {"--show", "--output", "x"},
                {"--validate", "--format", "env"},
                {"--generate-template", "--format", "yaml"},
                {"--frobnicate"},
                {"--validate", "extra"},
                {"--set-env"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct run r = run_config(conf, cases[i][0], cases[i][1], cases[i][2], cases[i][3], NULL);
                ck_assert_msg(r.code == 2, "case %zu: exit %d", i, r.code);
                run_free(&r);
        }
        struct run r = run_config(conf, "--help", NULL);
        ck_assert_int_eq(r.code, 0);
        ck_assert_ptr_nonnull(strstr(r.out, "--optimize-for ENV"));
        run_free(&r);
        scratch_remove();
}
END_TEST

static Suite *sessionctl_suite(void) {
        Suite *s = suite_create("sessionctl-config");
        TCase *tc = tcase_create("edit");
        tcase_add_test(tc, test_set_env_keeps_lines);
        tcase_add_test(tc, test_set_env_invalid_name);
        tcase_add_test(tc, test_set_env_invalid_result);
        tcase_add_test(tc, test_optimize_for);
        tcase_add_test(tc, test_read_only_env_file);
        tcase_add_test(tc, test_missing_env_file);
        tcase_add_test(tc, test_malformed_env_file);
        suite_add_tcase(s, tc);
        tc = tcase_create("read");
        tcase_add_test(tc, test_validate_show_summary);
        tcase_add_test(tc, test_template_output);
        tcase_add_test(tc, test_usage);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(sessionctl_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
