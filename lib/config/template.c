/* Templates: every setting with its default and a one-line comment.
 *
 * `sessionctl config --generate-template` prints one, conf/sessiond.conf and
 * conf/session.env.example are one (a test keeps them identical to the
 * generator's output), and the guide's migration path starts from one.
 *
 * A template must read back as the defaults without getting in the way of
 * the layers around it:
 *   - conf: the settings of the environment profile (table 2.4) are written
 *     commented out ("#name = value;"); pinning them would make them
 *     explicit, and the profile would stop working the moment an operator
 *     installed the template. Everything else is written as a setting.
 *   - env: every setting is commented out ("#SESSION_X=value"). The env file
 *     sits above sessiond.conf, so an active default there would silently
 *     override what the operator wrote in sessiond.conf.
 * Either way, reading a template back unchanged gives exactly the
 * configuration of no file at all, and uncommenting every setting gives
 * exactly the table defaults (both are tested).
 *
 * Comments about a setting start with "# "; a commented-out setting starts
 * with "#" directly followed by its name, so tools can tell them apart.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const struct {
        const char *group, *title;
} sections[] = {
        {"", "general"},
        {"timeout", "timeouts: how long a session lives"},
        {"cleanup", "cleanup: ending and purging expired sessions"},
        {"sync", "cross-tab synchronisation (served to browsers by GetClientConfig)"},
        {"security", "security"},
        {"monitoring", "monitoring: metrics, health checks and alerts"},
        {"features", "feature flags"},
        {"custom", "custom settings"},
        {"daemon", "the daemon itself"},
};

static const char *section_title(const char *group) {
        for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
                if (strcmp(sections[i].group, group) == 0)
                        return sections[i].title;
        return group;
}

/* Is path one of the columns of table 2.4 (in any profile)? */
static bool profile_governed(const char *path) {
        for (int e = 0; e < _SESSIOND_ENV_MAX; e++) {
                const struct sessiond_override *o;
                size_t n;
                if (sessiond_profile_values((enum sessiond_environment) e, &o, &n) < 0)
                        continue;
                for (size_t i = 0; i < n; i++)
                        if (strcmp(o[i].path, path) == 0)
                                return true;
        }
        return false;
}

static void conf_quote(FILE *f, const char *s) {
        fputc('"', f);
        for (; *s; s++) {
                if (*s == '"' || *s == '\\')
                        fputc('\\', f);
                fputc(*s, f);
        }
        fputc('"', f);
}

static void top_group(const char *path, char *out, size_t size) {
        const char *dot = strchr(path, '.');
        size_t len = dot ? (size_t) (dot - path) : 0;

        if (len >= size)
                len = size - 1;
        memcpy(out, path, len);
        out[len] = '\0';
}

static const char conf_header[] = "# sessiond.conf: the configuration of sessiond, in libconfig syntax.\n"
                                  "# Every setting is here at its built-in default; see sessiond.conf(5).\n"
                                  "#\n"
                                  "# Sources, lowest precedence first: built-in defaults < the environment\n"
                                  "# profile < this file < the env file (daemon.env_file) < the process\n"
                                  "# environment (SESSION_*). Durations are integer seconds or a string with\n"
                                  "# a unit: \"90s\", \"30m\", \"48h\", \"7d\". Booleans are true or false.\n"
                                  "#\n"
                                  "# A line \"#name = value;\" is set by the environment profile (development,\n"
                                  "# testing, staging, production) unless you uncomment it: an explicit value\n"
                                  "# always beats the profile.\n";

static const char env_header[] = "# session.env: sessiond settings as KEY=VALUE lines (daemon.env_file).\n"
                                 "# Every variable is here at its built-in default, commented out: a line\n"
                                 "# in this file beats sessiond.conf and the environment profile, so\n"
                                 "# uncomment only what you mean to set.\n"
                                 "#\n"
                                 "# Sources, lowest precedence first: built-in defaults < the environment\n"
                                 "# profile < sessiond.conf < this file < the process environment. *_SECONDS\n"
                                 "# take integer seconds (or a unit: 90s, 30m, 48h, 7d); booleans take\n"
                                 "# true/false, yes/no, on/off or 1/0.\n";

static void write_conf(FILE *f, const struct sessiond_config *d) {
        char open_group[64] = "-", open_sub[64] = "";
        bool custom_done = false;

        fputs(conf_header, f);
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                const struct sessiond_setting *s = &sessiond_settings[i];
                char group[64];
                const char *leaf, *sub_dot;
                char sub[64] = "";
                _cleanup_free_ char *value = sessiond_config_value_to_string(d, i);
                bool governed = profile_governed(s->path);

                top_group(s->path, group, sizeof(group));
                leaf = group[0] ? s->path + strlen(group) + 1 : s->path;
                sub_dot = strchr(leaf, '.');
                if (sub_dot) {
                        snprintf(sub, sizeof(sub), "%.*s", (int) (sub_dot - leaf), leaf);
                        leaf = sub_dot + 1;
                }

                if (strcmp(group, open_group) != 0) {
                        if (open_sub[0])
                                fputs("  };\n", f);
                        open_sub[0] = '\0';
                        if (open_group[0] && strcmp(open_group, "-") != 0)
                                fputs("};\n", f);
                        if (!custom_done && strcmp(group, "daemon") == 0) {
                                fprintf(f,
                                        "\n# %s: free-form values for the application (custom.<name>),\n"
                                        "# also SESSION_CUSTOM_<NAME>=value; for example:\n"
                                        "#   max_retries = \"3\";\n"
                                        "custom:\n{\n};\n",
                                        section_title("custom"));
                                custom_done = true;
                        }
                        if (group[0])
                                fprintf(f, "\n# %s\n%s:\n{\n", section_title(group), group);
                        else
                                fprintf(f, "\n# %s\n", section_title(group));
                        snprintf(open_group, sizeof(open_group), "%s", group);
                }
                if (strcmp(sub, open_sub) != 0) {
                        if (open_sub[0])
                                fputs("  };\n", f);
                        if (sub[0])
                                fprintf(f, "  %s:\n  {\n", sub);
                        snprintf(open_sub, sizeof(open_sub), "%s", sub);
                }

                const char *indent = open_sub[0] ? "    " : group[0] ? "  " : "";
                fprintf(f, "%s# %s%s\n", indent, s->description,
                        governed ? " (the profile sets it when not given)" : "");
                fprintf(f, "%s%s%s = ", indent, governed ? "#" : "", leaf);
                if (s->type == SESSIOND_TYPE_STRING || s->type == SESSIOND_TYPE_ENVIRONMENT)
                        conf_quote(f, value ? value : "");
                else
                        fputs(value ? value : "", f);
                fputs(";\n", f);
        }
        if (open_sub[0])
                fputs("  };\n", f);
        if (open_group[0] && strcmp(open_group, "-") != 0)
                fputs("};\n", f);
}

static void write_env(FILE *f, const struct sessiond_config *d) {
        char open_group[64] = "-";
        bool custom_done = false;

        fputs(env_header, f);
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                const struct sessiond_setting *s = &sessiond_settings[i];
                char group[64];
                _cleanup_free_ char *value = sessiond_config_value_to_string(d, i);
                _cleanup_free_ char *quoted = value ? sessiond_envfile_quote(value) : NULL;
                bool daemon_setting;

                top_group(s->path, group, sizeof(group));
                daemon_setting = strcmp(group, "daemon") == 0;
                if (strcmp(group, open_group) != 0) {
                        if (!custom_done && daemon_setting) {
                                fprintf(f,
                                        "\n## %s\n"
                                        "# SESSION_CUSTOM_<NAME>=value lands in custom.<name> (lower case), e.g.\n"
                                        "# SESSION_CUSTOM_MAX_RETRIES=3\n",
                                        section_title("custom"));
                                custom_done = true;
                        }
                        fprintf(f, "\n## %s\n", section_title(group));
                        if (daemon_setting)
                                fputs("# Usually set in sessiond.conf; a line here would override it.\n", f);
                        snprintf(open_group, sizeof(open_group), "%s", group);
                }
                if (!s->variable) {
                        fprintf(f, "# %s: %s (only in sessiond.conf; default %s)\n", s->path, s->description,
                                value ? value : "");
                        continue;
                }
                if (strcmp(s->variable, "SESSIOND_ENV_FILE") == 0) {
                        fprintf(f,
                                "# %s (%s): %s; set it in sessiond.conf or the service's environment, not here "
                                "(default %s)\n",
                                s->variable, s->path, s->description, value ? value : "");
                        continue;
                }
                fprintf(f, "# %s%s\n", s->description,
                        profile_governed(s->path) ? " (the profile sets it when not given)" : "");
                fprintf(f, "#%s=%s\n", s->variable, quoted ? quoted : "");
        }
}

SESSIOND_EXPORT int sessiond_config_template(enum sessiond_template_format format, char **ret) {
        struct sessiond_config *d = NULL;
        char *buf = NULL;
        size_t size = 0;
        FILE *f;
        int r;

        if (format != SESSIOND_TEMPLATE_ENV && format != SESSIOND_TEMPLATE_CONF)
                return -EINVAL;
        r = sessiond_config_new_defaults(&d);
        if (r < 0)
                return r;
        f = open_memstream(&buf, &size);
        if (!f) {
                sessiond_config_free(d);
                return -ENOMEM;
        }
        if (format == SESSIOND_TEMPLATE_CONF)
                write_conf(f, d);
        else
                write_env(f, d);
        sessiond_config_free(d);
        if (fclose(f) != 0 || !buf) {
                free(buf);
                return -ENOMEM;
        }
        *ret = buf;
        return 0;
}
