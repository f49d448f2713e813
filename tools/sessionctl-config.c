/* `sessionctl config`: the guide's configuration manager (DESIGN 2.6).
 *
 * Works without a daemon: it reads the same sources as sessiond (the file
 * of -c or /etc/sessiond/sessiond.conf, the env file, the environment)
 * through libsessiond, so what it shows or validates is what the daemon
 * would load. The edits (--set-env, --optimize-for) go to the env file the
 * configuration names (daemon.env_file), keep every other line, are
 * validated before anything is written, and are written atomically: an
 * invalid result or a failing write leaves the file exactly as it was.
 *
 * Exit codes: 0 success (valid, warnings allowed), 1 invalid or failed,
 * 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h" /* lib/common: _cleanup_, ELEMENTSOF */
#include "sessiond/config.h"
#include "sessiond/envfile.h"
#include "sessionctl.h"

enum action {
        ACTION_NONE,
        ACTION_VALIDATE,
        ACTION_SHOW,
        ACTION_SUMMARY,
        ACTION_SET_ENV,
        ACTION_OPTIMIZE_FOR,
        ACTION_TEMPLATE,
};

static void config_usage(FILE *f) {
        fputs("Usage: sessionctl [-c FILE] [--json] config ACTION\n"
              "\n"
              "Actions:\n"
              "  --validate                  list every issue; exit 0 if valid (warnings allowed), 1 if not\n"
              "  --show [--origin]           the effective configuration as JSON (with where each value came from)\n"
              "  --summary                   environment, debug mode, lifetime, cleanup interval, features, custom "
              "count\n"
              "  --set-env ENV               write SESSION_ENVIRONMENT=ENV into the env file\n"
              "  --optimize-for ENV          write the profile values of ENV into the env file as explicit lines\n"
              "  --generate-template [--output FILE] [--format env|conf]\n"
              "                              every setting at its default, with a comment (default format: env)\n"
              "\n"
              "Environments: development, testing, staging, production.\n",
              f);
}

/* "sessionctl config: <message>" and a newline on stderr. Messages quote
 * what was typed or read (names, paths): control characters are escaped. */
static void config_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void config_error(const char *fmt, ...) {
        char *text = NULL, *escaped = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&text, fmt, ap);
        va_end(ap);
        if (r >= 0)
                escaped = sessiond_text_escape_dup(text);
        fprintf(stderr, "sessionctl config: %s\n", escaped ? escaped : "out of memory");
        free(escaped);
        free(text);
}

static void print_issues(FILE *f, const struct sessiond_issues *issues) {
        for (size_t i = 0; i < issues->count; i++)
                fprintf(f, "%s: %s\n", sessiond_severity_to_string(issues->items[i].severity),
                        issues->items[i].message);
}

static size_t count_severity(const struct sessiond_issues *issues, enum sessiond_severity s) {
        size_t n = 0;

        for (size_t i = 0; i < issues->count; i++)
                n += issues->items[i].severity == s;
        return n;
}

static int load(const struct sessionctl_globals *g, const struct sessiond_envfile *envfile,
                struct sessiond_config **ret, struct sessiond_issues *issues) {
        struct sessiond_config_sources sources = {
                .config_file = g->config_file,
                .env_file_data = envfile,
        };
        return sessiond_config_load(&sources, ret, issues);
}

static int print_json(json_t *j, const struct sessionctl_globals *g) {
        char *s;

        if (!j) {
                fputs("sessionctl config: out of memory\n", stderr);
                return SESSIONCTL_EXIT_FAILURE;
        }
        s = json_dumps(j, g->json ? JSON_COMPACT : JSON_INDENT(2));
        json_decref(j);
        if (!s) {
                fputs("sessionctl config: out of memory\n", stderr);
                return SESSIONCTL_EXIT_FAILURE;
        }
        puts(s);
        free(s);
        return SESSIONCTL_EXIT_OK;
}

static int do_validate(const struct sessionctl_globals *g) {
        struct sessiond_issues issues = {};
        struct sessiond_config *c = NULL;
        size_t errors, warnings;
        bool valid;

        if (load(g, NULL, &c, &issues) == 0)
                (void) sessiond_config_validate(c, &issues);
        valid = c && !sessiond_issues_has_errors(&issues);
        errors = count_severity(&issues, SESSIOND_ERROR);
        warnings = count_severity(&issues, SESSIOND_WARNING);

        if (g->json) {
                json_t *list = json_array();
                for (size_t i = 0; list && i < issues.count; i++)
                        json_array_append_new(list, json_pack("{s:s,s:s?,s:s}", "severity",
                                                              sessiond_severity_to_string(issues.items[i].severity),
                                                              "setting", issues.items[i].setting, "message",
                                                              issues.items[i].message));
                (void) print_json(json_pack("{s:b,s:o}", "valid", valid, "issues", list), g);
        } else {
                print_issues(stdout, &issues);
                if (valid && warnings == 0)
                        puts("configuration is valid");
                else if (valid)
                        printf("configuration is valid (%zu warning%s)\n", warnings, warnings == 1 ? "" : "s");
                else
                        printf("configuration is invalid: %zu error%s, %zu warning%s\n", errors, errors == 1 ? "" : "s",
                               warnings, warnings == 1 ? "" : "s");
        }
        sessiond_issues_clear(&issues);
        sessiond_config_free(c);
        return valid ? SESSIONCTL_EXIT_OK : SESSIONCTL_EXIT_FAILURE;
}

/* Loads for display: problems go to stderr, the JSON to stdout. A
 * configuration that loads but breaks a rule is still shown (that is how
 * one finds out why), with its issues on stderr. */
/* sessiond_file_write_atomic() refused a folder others may write in, or
 * found its temporary file swapped (envfile.h). */
static void write_refused(const char *path, int r) {
        if (r == -ESTALE)
                fprintf(stderr,
                        "sessionctl config: cannot write %s: the temporary file was replaced by somebody "
                        "else; nothing changed\n",
                        path);
        else
                fprintf(stderr,
                        "sessionctl config: refusing to write %s: its folder belongs to another user or is "
                        "writable by group or others without the sticky bit, so the file could be swapped; "
                        "nothing changed\n",
                        path);
}

static int do_show(const struct sessionctl_globals *g, enum action action, bool origin) {
        struct sessiond_issues issues = {};
        struct sessiond_config *c = NULL;
        int r;

        r = load(g, NULL, &c, &issues);
        if (r < 0) {
                print_issues(stderr, &issues);
                config_error("the configuration cannot be loaded");
                sessiond_issues_clear(&issues);
                return SESSIONCTL_EXIT_FAILURE;
        }
        (void) sessiond_config_validate(c, &issues);
        print_issues(stderr, &issues);
        r = print_json(action == ACTION_SHOW ? sessiond_config_to_json(c, origin) : sessiond_config_summary(c), g);
        sessiond_issues_clear(&issues);
        sessiond_config_free(c);
        return r;
}

/* The variable that carries setting path, for messages. */
static const char *variable_of(const char *path) {
        int idx = sessiond_setting_find(path);
        return idx >= 0 && sessiond_setting_variable((size_t) idx) ? sessiond_setting_variable((size_t) idx) : path;
}

static int do_edit(const struct sessionctl_globals *g, enum action action, const char *name) {
        _cleanup_(sessiond_issues_clear) struct sessiond_issues issues = {};
        _cleanup_(sessiond_config_freep) struct sessiond_config *old = NULL, *new = NULL;
        _cleanup_(sessiond_envfile_freep) struct sessiond_envfile *f = NULL;
        const struct sessiond_override *values = NULL;
        size_t n_values = 0;
        const char *path;
        bool changed[64] = {};
        int e, r;

        e = sessiond_environment_from_string(name);
        if (e < 0) {
                config_error("unknown environment '%s'; valid names: %s", name, sessiond_environment_valid_names());
                return SESSIONCTL_EXIT_FAILURE;
        }

        r = load(g, NULL, &old, &issues);
        if (r < 0) {
                print_issues(stderr, &issues);
                fputs("sessionctl config: the configuration cannot be loaded; fix it before editing the env file\n",
                      stderr);
                return SESSIONCTL_EXIT_FAILURE;
        }
        path = old->daemon.env_file;
        if (!path || !*path) {
                fputs("sessionctl config: no env file is configured (daemon.env_file is empty)\n", stderr);
                return SESSIONCTL_EXIT_FAILURE;
        }

        sessiond_issues_clear(&issues);
        r = sessiond_envfile_read(path, &f, &issues);
        if (r == -ENOENT) {
                char *shown = sessiond_text_escape_dup(path);

                fprintf(stderr,
                        "sessionctl config: the env file %s does not exist; create it first, e.g. with\n"
                        "  sessionctl config --generate-template --format env --output %s\n",
                        shown ? shown : "?", shown ? shown : "?");
                free(shown);
                return SESSIONCTL_EXIT_FAILURE;
        }
        if (r == -EINVAL) {
                print_issues(stderr, &issues);
                config_error("%s is malformed; nothing changed", path);
                return SESSIONCTL_EXIT_FAILURE;
        }
        if (r < 0) {
                config_error("cannot read the env file %s: %s", path, strerror(-r));
                return SESSIONCTL_EXIT_FAILURE;
        }

        /* What to write: the environment, and for --optimize-for every
         * column of its profile. */
        static struct sessiond_override environment_line = {"environment", "SESSION_ENVIRONMENT", NULL};
        environment_line.value = sessiond_environment_to_string((enum sessiond_environment) e);
        if (action == ACTION_OPTIMIZE_FOR)
                (void) sessiond_profile_values((enum sessiond_environment) e, &values, &n_values);
        if (n_values + 1 > ELEMENTSOF(changed))
                return SESSIONCTL_EXIT_FAILURE;
        for (size_t i = 0; i <= n_values; i++) {
                const struct sessiond_override *o = i == 0 ? &environment_line : &values[i - 1];
                r = sessiond_envfile_set(f, o->variable, o->value);
                if (r < 0) {
                        config_error("cannot set %s: %s", o->variable, strerror(-r));
                        return SESSIONCTL_EXIT_FAILURE;
                }
                changed[i] = r > 0;
        }

        /* Validate the result before writing it. */
        sessiond_issues_clear(&issues);
        r = load(g, f, &new, &issues);
        if (r == 0)
                (void) sessiond_config_validate(new, &issues);
        if (r < 0 || sessiond_issues_has_errors(&issues)) {
                print_issues(stderr, &issues);
                config_error("the result would be invalid; %s is unchanged", path);
                return SESSIONCTL_EXIT_FAILURE;
        }

        bool any = false;
        for (size_t i = 0; i <= n_values; i++)
                any = any || changed[i];
        if (!any) {
                print_issues(stderr, &issues);
                printf("%s already says so; nothing changed\n", path);
                return SESSIONCTL_EXIT_OK;
        }

        r = sessiond_envfile_write(f, path);
        if (r == -EPERM || r == -ESTALE) {
                write_refused(path, r);
                return SESSIONCTL_EXIT_FAILURE;
        }
        if (r == -EACCES) {
                config_error("cannot write %s: it is read-only or not writable by this user; nothing changed", path);
                return SESSIONCTL_EXIT_FAILURE;
        }
        if (r < 0) {
                config_error("cannot write %s: %s; nothing changed", path, strerror(-r));
                return SESSIONCTL_EXIT_FAILURE;
        }

        /* What changed: the lines written whose value differs from the one
         * in effect before (a line that only makes a value explicit, such
         * as the profile's own, is counted, not listed as a change), then
         * what else moved with them (the settings the new profile sets). */
        printf("%s:\n", path);
        size_t same = 0;
        for (size_t i = 0; i <= n_values; i++) {
                const struct sessiond_override *o = i == 0 ? &environment_line : &values[i - 1];
                int idx = sessiond_setting_find(o->path);
                char *before, *after;

                if (!changed[i] || idx < 0)
                        continue;
                before = sessiond_config_value_to_string(old, (size_t) idx);
                after = sessiond_config_value_to_string(new, (size_t) idx);
                if (before && after && strcmp(before, after) == 0)
                        same++;
                else
                        printf("  %s: %s -> %s\n", o->variable, before ? before : "?", o->value);
                free(before);
                free(after);
                if (getenv(o->variable))
                        fprintf(stderr,
                                "note: %s is also set in this shell's environment, which overrides the env file\n",
                                o->variable);
        }
        if (same > 0)
                printf("  (%zu line%s written with the value already in effect)\n", same, same == 1 ? "" : "s");
        bool header = false;
        for (size_t idx = 0; idx < sessiond_setting_count(); idx++) {
                char *a = sessiond_config_value_to_string(old, idx), *b = sessiond_config_value_to_string(new, idx);
                bool written = false;
                for (size_t i = 0; i <= n_values; i++) {
                        const struct sessiond_override *o = i == 0 ? &environment_line : &values[i - 1];
                        written = written || strcmp(o->path, sessiond_setting_path(idx)) == 0;
                }
                if (a && b && strcmp(a, b) != 0 && !written) {
                        char *origin = sessiond_origin_to_string(&new->origins[idx]);
                        if (!header)
                                puts("effective changes:");
                        header = true;
                        printf("  %s (%s): %s -> %s (%s)\n", sessiond_setting_path(idx),
                               variable_of(sessiond_setting_path(idx)), a, b, origin ? origin : "?");
                        free(origin);
                }
                free(a);
                free(b);
        }
        print_issues(stderr, &issues);
        return SESSIONCTL_EXIT_OK;
}

static int do_template(const char *output, const char *format) {
        enum sessiond_template_format fmt;
        char *text = NULL;
        int r;

        if (!format || strcmp(format, "env") == 0)
                fmt = SESSIOND_TEMPLATE_ENV;
        else if (strcmp(format, "conf") == 0)
                fmt = SESSIOND_TEMPLATE_CONF;
        else {
                config_error("unknown template format '%s' (env or conf)", format);
                return SESSIONCTL_EXIT_USAGE;
        }
        r = sessiond_config_template(fmt, &text);
        if (r < 0) {
                config_error("cannot make the template: %s", strerror(-r));
                return SESSIONCTL_EXIT_FAILURE;
        }
        if (!output) {
                fputs(text, stdout);
                free(text);
                return SESSIONCTL_EXIT_OK;
        }
        r = sessiond_file_write_atomic(output, text, strlen(text), 0644);
        free(text);
        if (r == -EPERM || r == -ESTALE) {
                write_refused(output, r);
                return SESSIONCTL_EXIT_FAILURE;
        }
        if (r == -EACCES) {
                config_error("cannot write %s: it is read-only or not writable by this user; nothing changed", output);
                return SESSIONCTL_EXIT_FAILURE;
        }
        if (r < 0) {
                config_error("cannot write %s: %s", output, strerror(-r));
                return SESSIONCTL_EXIT_FAILURE;
        }
        printf("wrote %s\n", output);
        return SESSIONCTL_EXIT_OK;
}

int sessionctl_config(int argc, char **argv, const struct sessionctl_globals *g) {
        enum {
                OPT_VALIDATE = 0x100,
                OPT_SHOW,
                OPT_ORIGIN,
                OPT_SUMMARY,
                OPT_SET_ENV,
                OPT_OPTIMIZE_FOR,
                OPT_TEMPLATE,
                OPT_FORMAT,
        };
        static const struct option options[] = {{"validate", no_argument, NULL, OPT_VALIDATE},
                                                {"show", no_argument, NULL, OPT_SHOW},
                                                {"origin", no_argument, NULL, OPT_ORIGIN},
                                                {"summary", no_argument, NULL, OPT_SUMMARY},
                                                {"set-env", required_argument, NULL, OPT_SET_ENV},
                                                {"optimize-for", required_argument, NULL, OPT_OPTIMIZE_FOR},
                                                {"generate-template", no_argument, NULL, OPT_TEMPLATE},
                                                {"output", required_argument, NULL, 'o'},
                                                {"format", required_argument, NULL, OPT_FORMAT},
                                                {"help", no_argument, NULL, 'h'},
                                                {}};
        enum action action = ACTION_NONE;
        const char *env = NULL, *output = NULL, *format = NULL;
        bool origin = false;
        int c;

        optind = 0; /* argv[0] is "config"; start afresh */
        while ((c = getopt_long(argc, argv, "ho:", options, NULL)) >= 0) {
                enum action a = ACTION_NONE;
                switch (c) {
                case OPT_VALIDATE:
                        a = ACTION_VALIDATE;
                        break;
                case OPT_SHOW:
                        a = ACTION_SHOW;
                        break;
                case OPT_SUMMARY:
                        a = ACTION_SUMMARY;
                        break;
                case OPT_SET_ENV:
                        a = ACTION_SET_ENV;
                        env = optarg;
                        break;
                case OPT_OPTIMIZE_FOR:
                        a = ACTION_OPTIMIZE_FOR;
                        env = optarg;
                        break;
                case OPT_TEMPLATE:
                        a = ACTION_TEMPLATE;
                        break;
                case OPT_ORIGIN:
                        origin = true;
                        break;
                case 'o':
                        output = optarg;
                        break;
                case OPT_FORMAT:
                        format = optarg;
                        break;
                case 'h':
                        config_usage(stdout);
                        return SESSIONCTL_EXIT_OK;
                default:
                        config_usage(stderr);
                        return SESSIONCTL_EXIT_USAGE;
                }
                if (a != ACTION_NONE) {
                        if (action != ACTION_NONE && action != a) {
                                fputs("sessionctl config: give one action\n", stderr);
                                config_usage(stderr);
                                return SESSIONCTL_EXIT_USAGE;
                        }
                        action = a;
                }
        }
        if (optind < argc) {
                config_error("unexpected argument '%s'", argv[optind]);
                config_usage(stderr);
                return SESSIONCTL_EXIT_USAGE;
        }
        if (action == ACTION_NONE) {
                config_usage(stderr);
                return SESSIONCTL_EXIT_USAGE;
        }
        if (origin && action != ACTION_SHOW) {
                fputs("sessionctl config: --origin goes with --show\n", stderr);
                return SESSIONCTL_EXIT_USAGE;
        }
        if ((output || format) && action != ACTION_TEMPLATE) {
                fputs("sessionctl config: --output and --format go with --generate-template\n", stderr);
                return SESSIONCTL_EXIT_USAGE;
        }

        switch (action) {
        case ACTION_VALIDATE:
                return do_validate(g);
        case ACTION_SHOW:
        case ACTION_SUMMARY:
                return do_show(g, action, origin);
        case ACTION_SET_ENV:
        case ACTION_OPTIMIZE_FOR:
                return do_edit(g, action, env);
        case ACTION_TEMPLATE:
                return do_template(output, format);
        case ACTION_NONE:
                break;
        }
        return SESSIONCTL_EXIT_USAGE;
}
