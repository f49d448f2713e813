/* Templates: both formats read back as the defaults, uncommented they give
 * the table defaults, and the files in conf/ are exactly the generator's
 * output. */
#include <ctype.h>

#include "helpers.h"

#ifndef SOURCE_ROOT
#error "SOURCE_ROOT must point at the source tree"
#endif

static json_t *load_json(const char *conf, const char *envfile) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        json_t *j;

        ck_assert_int_eq(load_from(conf, envfile, NULL, &c, &is), 0);
        assert_no_issues(&is);
        ck_assert_int_eq(sessiond_config_validate(c, &is), 0);
        assert_no_issues(&is);
        j = sessiond_config_to_json(c, false);
        sessiond_config_free(c);
        return j;
}

static void assert_json_equal(json_t *a, json_t *b) {
        if (!json_equal(a, b)) {
                char *sa = json_dumps(a, JSON_INDENT(1)), *sb = json_dumps(b, JSON_INDENT(1));
                ck_abort_msg("configurations differ:\n%s\n---\n%s", sa, sb);
        }
}

/* Removes the '#' of every commented-out setting: "#name = v;" and
 * "#SESSION_X=v", keeping the "# comment" lines. */
static char *uncomment(const char *text) {
        char *out = strdup(text), *o = out;
        const char *p = text;

        ck_assert_ptr_nonnull(out);
        while (*p) {
                const char *line = p;
                while (*p == ' ')
                        *o++ = *p++;
                if (*p == '#' && (isalpha((unsigned char) p[1]) || p[1] == '_') && strchr(line, '\n') &&
                    (memchr(p, '=', (size_t) (strchr(p, '\n') - p))))
                        p++; /* drop the '#' */
                while (*p && *p != '\n')
                        *o++ = *p++;
                if (*p)
                        *o++ = *p++;
        }
        *o = '\0';
        return out;
}

static json_t *defaults_json(void) {
        struct sessiond_config *c = NULL;
        json_t *j;
        ck_assert_int_eq(sessiond_config_new_defaults(&c), 0);
        j = sessiond_config_to_json(c, false);
        sessiond_config_free(c);
        return j;
}

START_TEST(test_round_trip) {
        enum sessiond_template_format fmt = _i == 0 ? SESSIOND_TEMPLATE_CONF : SESSIOND_TEMPLATE_ENV;
        const char *p = path_in(_i == 0 ? "template.conf" : "template.env");
        char *text = NULL, *open_text;
        json_t *nothing, *read_back, *raw, *uncommented;

        ck_assert_int_eq(sessiond_config_template(fmt, &text), 0);
        write_text(p, text);

        /* Unchanged: exactly the configuration of no file at all. */
        nothing = load_json(NULL, NULL);
        read_back = fmt == SESSIOND_TEMPLATE_CONF ? load_json(p, NULL) : load_json(NULL, p);
        assert_json_equal(nothing, read_back);

        /* Every setting uncommented: exactly the table defaults (so every
         * value written in the template is the right default). */
        open_text = uncomment(text);
        ck_assert_str_ne(open_text, text);
        write_text(p, open_text);
        raw = defaults_json();
        uncommented = fmt == SESSIOND_TEMPLATE_CONF ? load_json(p, NULL) : load_json(NULL, p);
        assert_json_equal(raw, uncommented);

        json_decref(nothing);
        json_decref(read_back);
        json_decref(raw);
        json_decref(uncommented);
        free(open_text);
        free(text);
        scratch_remove();
}
END_TEST

START_TEST(test_every_setting_present) {
        char *conf = NULL, *env = NULL;

        ck_assert_int_eq(sessiond_config_template(SESSIOND_TEMPLATE_CONF, &conf), 0);
        ck_assert_int_eq(sessiond_config_template(SESSIOND_TEMPLATE_ENV, &env), 0);
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                const struct sessiond_setting *s = &sessiond_settings[i];
                const char *leaf = strrchr(s->path, '.') ? strrchr(s->path, '.') + 1 : s->path;
                char needle[160];
                /* conf: "leaf = default;" with its description above it */
                if (s->type == SESSIOND_TYPE_STRING || s->type == SESSIOND_TYPE_ENVIRONMENT)
                        snprintf(needle, sizeof(needle), "%s = \"%s\";\n", leaf, s->default_text);
                else
                        snprintf(needle, sizeof(needle), "%s = %s;\n", leaf, s->default_text);
                ck_assert_msg(strstr(conf, needle), "conf template lacks '%s'", needle);
                snprintf(needle, sizeof(needle), "# %s", s->description);
                ck_assert_msg(strstr(conf, needle), "conf template lacks the description of %s", s->path);
                /* env: every variable, commented out, at its default */
                if (s->variable && strcmp(s->variable, "SESSIOND_ENV_FILE") != 0) {
                        /* an empty default (off) is written quoted: "" */
                        snprintf(needle, sizeof(needle), "\n#%s=%s\n", s->variable,
                                 *s->default_text ? s->default_text : "\"\"");
                        ck_assert_msg(strstr(env, needle), "env template lacks '%s'", needle);
                } else {
                        ck_assert_msg(strstr(env, s->variable ? s->variable : s->path),
                                      "env template does not mention %s", s->path);
                }
        }
        ck_assert_int_eq(sessiond_config_template((enum sessiond_template_format) 7, &conf), -EINVAL);
        free(conf);
        free(env);
}
END_TEST

static void assert_file_is_template(const char *relative, enum sessiond_template_format fmt) {
        char path[512], *text = NULL, *file;
        snprintf(path, sizeof(path), "%s/%s", SOURCE_ROOT, relative);
        ck_assert_int_eq(sessiond_config_template(fmt, &text), 0);
        file = read_text(path);
        ck_assert_msg(file != NULL, "%s is missing", path);
        ck_assert_msg(strcmp(file, text) == 0,
                      "%s differs from the generator; regenerate it with: sessionctl config --generate-template "
                      "--format %s --output %s",
                      relative, fmt == SESSIOND_TEMPLATE_CONF ? "conf" : "env", relative);
        free(file);
        free(text);
}

START_TEST(test_shipped_files) {
        char path[512];
        json_t *shipped, *nothing;

        assert_file_is_template("conf/sessiond.conf", SESSIOND_TEMPLATE_CONF);
        assert_file_is_template("conf/session.env.example", SESSIOND_TEMPLATE_ENV);

        /* conf/sessiond.conf loads and validates, without a warning. */
        snprintf(path, sizeof(path), "%s/conf/sessiond.conf", SOURCE_ROOT);
        shipped = load_json(path, NULL);
        nothing = load_json(NULL, NULL);
        assert_json_equal(nothing, shipped);
        json_decref(shipped);
        json_decref(nothing);
}
END_TEST

static Suite *template_suite(void) {
        Suite *s = suite_create("config-template");
        TCase *tc = tcase_create("template");
        tcase_add_loop_test(tc, test_round_trip, 0, 2);
        tcase_add_test(tc, test_every_setting_present);
        tcase_add_test(tc, test_shipped_files);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(template_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
