/* Loading: defaults < profile < file < env file < environment.
 *
 * The sources are applied from lowest to highest precedence, each value
 * overwriting the one below it and recording its origin. The profile is
 * applied last, but only to settings whose origin is still "default": that
 * is what "a profile only changes defaults; an explicit value always beats
 * a profile" means, and it lets the profile be chosen by the final
 * `environment`, from whichever source set it.
 *
 * Which env file is read is itself configuration: sources->env_file, else
 * SESSIOND_ENV_FILE from the environment, else daemon.env_file as the
 * libconfig file left it. The env file cannot move itself.
 *
 * Every problem is collected, not just the first, so that one run of
 * `sessionctl config --validate` shows everything to fix.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

#define CUSTOM_PREFIX "SESSION_CUSTOM_"
#define DEPRECATED_ANALYTICS "SESSION_ENABLE_ANALYTICS"
#define CANONICAL_ANALYTICS "SESSION_FEATURE_ANALYTICS"

/* SESSION_* variables that other software sets and that are not ours. */
static const char *const foreign_variables[] = {"SESSION_MANAGER"};

struct source {
        struct sessiond_config *config;
        struct sessiond_issues *issues;
        enum sessiond_origin_kind kind; /* ENV_FILE or ENVIRONMENT */
        const char *file;               /* the env file */
        bool failed;
};

/* "environment: " or "/etc/sessiond/session.env:3: " */
static char *where(const struct source *src, int line) {
        char *w = NULL;

        if (src->kind == SESSIOND_ORIGIN_ENVIRONMENT)
                return strdup("environment");
        if (asprintf(&w, "%s:%d", src->file, line) < 0)
                return NULL;
        return w;
}

static void source_issue(struct source *src, enum sessiond_severity sev, const char *setting, int line, const char *fmt,
                         ...) __attribute__((format(printf, 5, 6)));

static void source_issue(struct source *src, enum sessiond_severity sev, const char *setting, int line, const char *fmt,
                         ...) {
        _cleanup_free_ char *w = where(src, line), *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        sessiond_issues_add(src->issues, sev, setting, "%s: %s", w ? w : "?", msg ? msg : "out of memory");
        if (sev == SESSIOND_ERROR)
                src->failed = true;
}

static bool custom_name_valid(const char *name) {
        if (!*name)
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
                        return false;
        return true;
}

static void apply_known(struct source *src, size_t idx, const char *key, const char *value, int line) {
        const struct sessiond_setting *s = &sessiond_settings[idx];
        union setting_value v;
        const char *problem;

        if (setting_parse_text(s, value, &v, &problem) < 0) {
                _cleanup_free_ char *redacted = NULL;

                if (setting_is_conninfo(s) && sessiond_conninfo_redact(value, &redacted) < 0)
                        redacted = NULL;
                if (!*value)
                        source_issue(src, SESSIOND_ERROR, s->path, line, "%s is empty (give it a value or remove it)",
                                     key);
                else
                        source_issue(src, SESSIOND_ERROR, s->path, line, "%s: value '%s' %s", key,
                                     !setting_is_conninfo(s) ? value
                                     : redacted              ? redacted
                                                             : "***",
                                     problem);
                return;
        }
        if (config_store(src->config, idx, &v, src->kind, src->file, line) < 0)
                src->failed = true;
}

/* One KEY=VALUE from the env file or the environment. aliases: this pass
 * handles only deprecated names (they go first, so that the current name
 * wins when both are given). */
static void apply_pair(struct source *src, const char *key, const char *value, int line, bool aliases,
                       const char *const *all_keys, size_t n_keys) {
        int idx;

        if (strcmp(key, DEPRECATED_ANALYTICS) == 0) {
                bool canonical_too = false;
                if (!aliases)
                        return;
                for (size_t i = 0; i < n_keys; i++)
                        if (strcmp(all_keys[i], CANONICAL_ANALYTICS) == 0)
                                canonical_too = true;
                source_issue(src, SESSIOND_WARNING, "features.analytics", line, "%s is deprecated, use %s%s",
                             DEPRECATED_ANALYTICS, CANONICAL_ANALYTICS,
                             canonical_too ? " (both are set here; " CANONICAL_ANALYTICS " wins)" : "");
                if (!canonical_too)
                        apply_known(src, (size_t) sessiond_setting_find_variable(CANONICAL_ANALYTICS), key, value,
                                    line);
                return;
        }
        if (aliases)
                return;

        if (strncmp(key, CUSTOM_PREFIX, strlen(CUSTOM_PREFIX)) == 0) {
                const char *name = key + strlen(CUSTOM_PREFIX);
                if (!custom_name_valid(name))
                        source_issue(src, SESSIOND_ERROR, "custom", line,
                                     "%s: a custom setting needs a name (SESSION_CUSTOM_<NAME>)", key);
                else if (!*value)
                        source_issue(src, SESSIOND_ERROR, "custom", line, "%s is empty (give it a value or remove it)",
                                     key);
                else if (!utf8_is_valid(value))
                        source_issue(src, SESSIOND_ERROR, "custom", line, "%s: value '%s' is not valid UTF-8", key,
                                     value);
                else if (config_store_custom(src->config, name, value, src->kind, src->file, line) < 0)
                        src->failed = true;
                return;
        }

        idx = sessiond_setting_find_variable(key);
        if (idx >= 0) {
                if (src->kind == SESSIOND_ORIGIN_ENV_FILE && strcmp(key, "SESSIOND_ENV_FILE") == 0) {
                        source_issue(src, SESSIOND_WARNING, "daemon.env_file", line,
                                     "SESSIOND_ENV_FILE has no effect inside the env file (ignored); set "
                                     "daemon.env_file in the configuration file");
                        return;
                }
                apply_known(src, (size_t) idx, key, value, line);
                return;
        }

        if (strncmp(key, "SESSION_", 8) == 0) {
                for (size_t i = 0; i < sizeof(foreign_variables) / sizeof(foreign_variables[0]); i++)
                        if (strcmp(key, foreign_variables[i]) == 0)
                                return;
                const char *near = suggest_setting_variable(key);
                if (near)
                        source_issue(src, SESSIOND_WARNING, NULL, line,
                                     "unknown variable %s (ignored); did you mean %s?", key, near);
                else
                        source_issue(src, SESSIOND_WARNING, NULL, line, "unknown variable %s (ignored)", key);
        } else if (strncmp(key, "SESSIOND_", 9) == 0) {
                /* SESSIOND_* is shared with tools (SESSIOND_BENCH, ...):
                 * warn only about what looks like a typo of ours. */
                const char *near = suggest_setting_variable(key);
                if (near && edit_distance(key, near) <= 2)
                        source_issue(src, SESSIOND_WARNING, NULL, line,
                                     "unknown variable %s (ignored); did you mean %s?", key, near);
        }
}

static int apply_env_file(struct source *src, const struct sessiond_envfile *f) {
        const char **keys = calloc(f->n_lines + 1, sizeof(char *));
        size_t n = 0;

        if (!keys)
                return -ENOMEM;
        for (size_t i = 0; i < f->n_lines; i++)
                if (f->lines[i].key)
                        keys[n++] = f->lines[i].key;
        for (int pass = 0; pass < 2; pass++)
                for (size_t i = 0; i < f->n_lines; i++)
                        if (f->lines[i].key)
                                apply_pair(src, f->lines[i].key, f->lines[i].value, f->lines[i].lineno, pass == 0, keys,
                                           n);
        free(keys);
        return 0;
}

static bool ours(const char *entry) {
        return strncmp(entry, "SESSION_", 8) == 0 || strncmp(entry, "SESSIOND_", 9) == 0;
}

static int apply_environ(struct source *src, char **env) {
        _cleanup_free_ const char **values = NULL;
        _cleanup_(strv_freep) char **keys = NULL; /* NULL-terminated: calloc'ed one longer */
        size_t n = 0, k = 0;

        for (char **e = env; *e; e++)
                n++;
        keys = calloc(n + 1, sizeof(char *));
        values = calloc(n + 1, sizeof(char *));
        if (!keys || !values)
                return -ENOMEM;
        for (char **e = env; *e; e++) {
                const char *eq = strchr(*e, '=');
                if (!eq || !ours(*e))
                        continue;
                keys[k] = strndup(*e, (size_t) (eq - *e));
                if (!keys[k])
                        return -ENOMEM;
                values[k++] = eq + 1;
        }
        for (int pass = 0; pass < 2; pass++)
                for (size_t i = 0; i < k; i++)
                        apply_pair(src, keys[i], values[i], 0, pass == 0, (const char *const *) keys, k);
        return 0;
}

static const char *environ_get(char **env, const char *key) {
        size_t len = strlen(key);
        const char *v = NULL;

        for (char **e = env; e && *e; e++)
                if (strncmp(*e, key, len) == 0 && (*e)[len] == '=')
                        v = *e + len + 1;
        return v;
}

SESSIOND_EXPORT int sessiond_config_load(const struct sessiond_config_sources *sources, struct sessiond_config **ret,
                                         struct sessiond_issues *issues) {
        static const struct sessiond_config_sources none = {};
        _cleanup_(sessiond_config_freep) struct sessiond_config *c = NULL;
        _cleanup_(sessiond_envfile_freep) struct sessiond_envfile *owned = NULL;
        const struct sessiond_envfile *envfile = NULL;
        const char *config_path, *env_path;
        char **env;
        bool failed = false;
        int r;

        if (!sources)
                sources = &none;
        env = sources->ignore_environment ? NULL : (sources->environ ? sources->environ : environ);

        r = config_new(&c);
        if (r < 0)
                return r;
        *ret = NULL; /* until it all went well */

        /* 3. the libconfig file */
        config_path = sources->config_file;
        if (!config_path && access(SESSIOND_DEFAULT_CONFIG_FILE, F_OK) == 0)
                config_path = SESSIOND_DEFAULT_CONFIG_FILE;
        if (config_path && *config_path) {
                r = conffile_read(c, config_path, issues);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        failed = true;
        }

        /* 4. the env file */
        if (sources->env_file_data) {
                envfile = sources->env_file_data;
                env_path = envfile->path;
        } else {
                env_path = sources->env_file;
                if (!env_path) {
                        const char *v = environ_get(env, "SESSIOND_ENV_FILE");
                        env_path = v && *v ? v : c->daemon.env_file;
                }
                if (env_path && *env_path) {
                        bool malformed = false;

                        /* Malformed lines fail the load, but the other
                         * lines are still read, so that every line's
                         * problem is reported at once. */
                        r = envfile_read_all(env_path, &owned, issues, &malformed);
                        if (r == -ENOMEM)
                                return r;
                        if (r == -EINVAL || malformed)
                                failed = true;
                        if (r < 0 && r != -ENOENT && r != -EINVAL) {
                                sessiond_issues_add(issues, SESSIOND_ERROR, "daemon.env_file",
                                                    "%s: cannot read the env file: %s", env_path, strerror(-r));
                                failed = true;
                        }
                        envfile = owned;
                }
        }
        if (envfile) {
                struct source src = {.config = c,
                                     .issues = issues,
                                     .kind = SESSIOND_ORIGIN_ENV_FILE,
                                     .file = env_path ? env_path : "env file"};
                r = apply_env_file(&src, envfile);
                if (r < 0)
                        return r;
                failed = failed || src.failed;
        }

        /* 5. the process environment */
        if (env) {
                struct source src = {.config = c, .issues = issues, .kind = SESSIOND_ORIGIN_ENVIRONMENT};
                r = apply_environ(&src, env);
                if (r < 0)
                        return r;
                failed = failed || src.failed;
        }

        /* 2. the profile of the final environment, under everything explicit */
        r = sessiond_config_apply_profile(c, c->environment);
        if (r < 0)
                return r;

        if (failed)
                return -EINVAL;
        *ret = TAKE_PTR(c);
        return 0;
}
