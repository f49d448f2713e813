/* Fuzz target: the configuration loader (lib/config), libconfig file, env
 * file and environment together.
 *
 * The loader reads files only (libconfig's @include and the env file are
 * paths), so the input is written to a private scratch folder each time:
 * the input is split at lines that read exactly "%%" into the libconfig
 * file, the env file and the environment (one KEY=VALUE entry a line).
 * Then it runs what the daemon and `sessionctl config` run: load,
 * validate, JSON with and without origins, the summary, the client JSON,
 * a copy, every value as text.
 *
 * Properties checked besides crashes, leaks and undefined behaviour:
 *  - load returns 0 exactly when it reported no error, and then a
 *    configuration; -EINVAL and no configuration otherwise; every issue
 *    has a message, valid UTF-8 like everything that goes into JSON;
 *  - a configuration that loads has a JSON form (the daemon's GetConfig);
 *  - the env file read from disk and the same text handed over parsed
 *    (env_file_data, what `sessionctl config --set-env` validates) give the
 *    same configuration and the same issues;
 *  - a copy has the same JSON as the original;
 *  - a valid configuration survives being written out: every setting that
 *    has a variable, written with sessiond_config_value_to_string() (the
 *    raw text for daemon.postgres_url, which that shows redacted) into
 *    the environment, or with sessiond_envfile_set() into an env file
 *    (what `sessionctl config --optimize-for` does), loads back to the
 *    same values (all but daemon.env_file in the env file, which cannot
 *    move itself).
 *
 * @include could name any file of the machine (/dev/zero would never end),
 * so an input whose @include names anything but a plain file name in the
 * scratch folder is skipped, and so is one with more than one of them (a
 * file that includes itself twice is read 2^10 times before libconfig's
 * depth limit stops it, in libconfig as in the loader's pre-scan: slow
 * runs that find nothing new).
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/settings.h" /* the table of settings, private to the library */
#include "fuzz.h"
#include "sessiond/config.h"
#include "sessiond/envfile.h"

#define MAX_ENV_ENTRIES 64

static char scratch_dir[256];
static char conf_path[300];
static char env_path[300];

static void scratch_remove(void) {
        unlink(conf_path);
        unlink(env_path);
        rmdir(scratch_dir);
}

static void scratch_init(void) {
        const char *tmp = getenv("TMPDIR");

        if (scratch_dir[0])
                return;
        snprintf(scratch_dir, sizeof(scratch_dir), "%s/sessiond-fuzz-config-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        fuzz_assert(mkdtemp(scratch_dir));
        snprintf(conf_path, sizeof(conf_path), "%s/sessiond.conf", scratch_dir);
        snprintf(env_path, sizeof(env_path), "%s/session.env", scratch_dir);
        atexit(scratch_remove);
}

static void write_file(const char *path, const char *data, size_t len) {
        FILE *f = fopen(path, "we");

        fuzz_assert(f);
        fuzz_assert(fwrite(data, 1, len, f) == len);
        fuzz_assert(fclose(f) == 0);
}

/* Only @include "name" with a plain name, at most once. */
static bool includes_are_safe(const char *data, size_t size) {
        static const char directive[] = "@include";
        const char *p = data, *end = data + size;
        int count = 0;

        while ((p = memmem(p, (size_t) (end - p), directive, sizeof(directive) - 1))) {
                if (++count > 1)
                        return false;
                p += sizeof(directive) - 1;
                while (p < end && (*p == ' ' || *p == '\t'))
                        p++;
                if (p < end && *p == '"') {
                        const char *name = ++p;
                        while (p < end && *p != '"' && *p != '\n') {
                                if (*p == '/' || *p == '\\' || *p == '\0')
                                        return false;
                                p++;
                        }
                        if (p == name || *name == '.')
                                return false;
                }
        }
        return true;
}

/* The next part of the input: up to a line that reads "%%" (the line is
 * dropped), or the rest. */
static const char *next_part(const char *p, const char *end, size_t *len) {
        const char *line = p;

        while (line < end) {
                const char *nl = memchr(line, '\n', (size_t) (end - line));
                const char *le = nl ? nl : end;
                if (le - line == 2 && line[0] == '%' && line[1] == '%') {
                        *len = (size_t) (line - p);
                        return nl ? nl + 1 : end;
                }
                if (!nl)
                        break;
                line = nl + 1;
        }
        *len = (size_t) (end - p);
        return end;
}

static char *issues_text(const struct sessiond_issues *is) {
        char *buf = NULL;
        size_t size = 0;
        FILE *m = open_memstream(&buf, &size);

        fuzz_assert(m);
        for (size_t i = 0; i < is->count; i++)
                fprintf(m, "%d %s %s\n", is->items[i].severity, is->items[i].setting ? is->items[i].setting : "-",
                        is->items[i].message);
        fuzz_assert(fclose(m) == 0);
        return buf;
}

/* Every issue has a message, and it can go into JSON (a Reload error
 * reply, `sessionctl config --validate --json`): valid UTF-8. */
static void check_issues(const struct sessiond_issues *is) {
        for (size_t i = 0; i < is->count; i++) {
                json_t *m;
                fuzz_assert(is->items[i].message && *is->items[i].message);
                m = json_string(is->items[i].message);
                fuzz_assert(m);
                json_decref(m);
                fuzz_assert(is->items[i].severity == SESSIOND_WARNING || is->items[i].severity == SESSIOND_ERROR);
        }
}

/* Loads and checks the contract of sessiond_config_load(). */
static int load(const struct sessiond_config_sources *s, struct sessiond_config **ret, struct sessiond_issues *is) {
        struct sessiond_config *c = (struct sessiond_config *) 1;
        int r = sessiond_config_load(s, &c, is);

        check_issues(is);
        if (r == 0) {
                fuzz_assert(c && !sessiond_issues_has_errors(is));
        } else {
                fuzz_assert(r == -EINVAL);
                fuzz_assert(!c && sessiond_issues_has_errors(is));
        }
        *ret = c;
        return r;
}

static bool json_same(const struct sessiond_config *a, const struct sessiond_config *b, bool with_origins) {
        json_t *ja = sessiond_config_to_json(a, with_origins), *jb = sessiond_config_to_json(b, with_origins);
        bool same;

        fuzz_assert(ja && jb);
        same = json_equal(ja, jb);
        json_decref(ja);
        json_decref(jb);
        return same;
}

/* The env file cannot move itself: SESSIOND_ENV_FILE is ignored there. */
static bool env_file_may_set(const char *variable) {
        return strcmp(variable, "SESSIOND_ENV_FILE") != 0;
}

/* Setting i as text to write out: sessiond_config_value_to_string(), but
 * the connection string as it is (the former shows it with its password
 * as ***, for display only). */
static char *value_text(const struct sessiond_config *c, size_t i) {
        if (strcmp(sessiond_settings[i].path, "daemon.postgres_url") == 0)
                return strdup(c->daemon.postgres_url);
        return sessiond_config_value_to_string(c, i);
}

/* Every setting with a variable (that the env file may set, when in_file)
 * has the same value as text in a and b. */
static void assert_same_values(const struct sessiond_config *a, const struct sessiond_config *b, bool in_file) {
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                char *va, *vb;
                if (!sessiond_settings[i].variable || (in_file && !env_file_may_set(sessiond_settings[i].variable)))
                        continue;
                va = value_text(a, i);
                vb = value_text(b, i);
                fuzz_assert(va && vb);
                if (strcmp(va, vb) != 0) {
                        fprintf(stderr, "%s: %s became %s\n", sessiond_settings[i].path, va, vb);
                        fuzz_assert(!"a value survives being written out");
                }
                free(va);
                free(vb);
        }
}

/* Writes every setting that has a variable into the environment, and into
 * an env file through sessiond_envfile_set(); both load back the same. */
static void check_written_out(const struct sessiond_config *c) {
        char **env = calloc(sessiond_settings_count + 1, sizeof(char *));
        struct sessiond_envfile *f = NULL, *reread = NULL;
        struct sessiond_issues is = {};
        struct sessiond_config *back = NULL;
        size_t n = 0, n_file = 0, n_wanted = 0, len = 0;
        char *text;

        fuzz_assert(env);
        fuzz_assert(sessiond_envfile_new(env_path, &f) == 0);
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                const char *var = sessiond_settings[i].variable;
                char *v;
                int r;

                if (!var)
                        continue;
                v = value_text(c, i);
                fuzz_assert(v);
                fuzz_assert(asprintf(&env[n++], "%s=%s", var, v) >= 0);
                if (env_file_may_set(var)) {
                        r = sessiond_envfile_set(f, var, v);
                        fuzz_assert(strchr(v, '\n') ? r == -EINVAL : r == 1);
                        n_file += r == 1;
                }
                free(v);
        }

        struct sessiond_config_sources from_env = {.config_file = "", .env_file = "", .environ = env};
        fuzz_assert(load(&from_env, &back, &is) == 0);
        assert_same_values(c, back, false);
        sessiond_config_free(back);
        sessiond_issues_clear(&is);

        /* A value with a newline cannot go into an env file: only compare
         * when every value went in. */
        for (size_t i = 0; i < sessiond_settings_count; i++)
                n_wanted += sessiond_settings[i].variable && env_file_may_set(sessiond_settings[i].variable);
        if (n_file == n_wanted) {
                text = sessiond_envfile_format(f, &len);
                fuzz_assert(text);
                fuzz_assert(sessiond_envfile_parse(env_path, text, len, &reread, &is) == 0);
                struct sessiond_config_sources from_file = {
                        .config_file = "", .env_file_data = reread, .ignore_environment = true};
                fuzz_assert(load(&from_file, &back, &is) == 0);
                assert_same_values(c, back, true);
                sessiond_config_free(back);
                sessiond_envfile_free(reread);
                sessiond_issues_clear(&is);
                free(text);
        }

        sessiond_envfile_free(f);
        for (size_t i = 0; i < n; i++)
                free(env[i]);
        free(env);
}

static void check_config(const struct sessiond_config *c) {
        struct sessiond_issues is = {};
        struct sessiond_config *copy = NULL;
        json_t *j;
        int r;

        r = sessiond_config_validate(c, &is);
        check_issues(&is);
        fuzz_assert(r == (sessiond_issues_has_errors(&is) ? -EINVAL : 0));
        fuzz_assert(sessiond_config_validate(c, NULL) == r);
        sessiond_issues_clear(&is);

        j = sessiond_config_to_json(c, false);
        fuzz_assert(j && json_is_object(j));
        json_decref(j);
        j = sessiond_config_to_json(c, true);
        fuzz_assert(j && json_is_object(j));
        json_decref(j);
        j = sessiond_config_summary(c);
        fuzz_assert(j);
        json_decref(j);
        j = sessiond_config_client_json(c);
        fuzz_assert(j);
        json_decref(j);

        for (size_t i = 0; i < sessiond_settings_count; i++) {
                char *v = sessiond_config_value_to_string(c, i);
                char *o = sessiond_origin_to_string(&c->origins[i]);
                fuzz_assert(v && o);
                free(v);
                free(o);
        }
        for (size_t i = 0; i < c->n_custom; i++)
                fuzz_assert(sessiond_config_custom(c, c->custom[i].name, NULL) != NULL);

        fuzz_assert(sessiond_config_copy(c, &copy) == 0);
        fuzz_assert(json_same(c, copy, true));
        sessiond_config_free(copy);

        if (r == 0)
                check_written_out(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *p = (const char *) data, *end = p + size, *conf, *envf, *envl;
        size_t conf_len, envf_len, envl_len;
        char *env_text, *env[MAX_ENV_ENTRIES + 1];
        size_t n_env = 0;
        struct sessiond_issues is = {}, is2 = {};
        struct sessiond_config *c = NULL, *c2 = NULL;
        struct sessiond_envfile *parsed = NULL;
        int r, r2;

        if (!includes_are_safe((const char *) data, size))
                return 0;
        scratch_init();

        conf = p;
        p = next_part(p, end, &conf_len);
        envf = p;
        p = next_part(p, end, &envf_len);
        envl = p;
        envl_len = (size_t) (end - p);

        write_file(conf_path, conf, conf_len);
        write_file(env_path, envf, envf_len);

        /* The environment: one entry a line, cut at a NUL like execve(). */
        env_text = strndup(envl, envl_len);
        fuzz_assert(env_text);
        for (char *save = NULL, *line = strtok_r(env_text, "\n", &save); line && n_env < MAX_ENV_ENTRIES;
             line = strtok_r(NULL, "\n", &save))
                env[n_env++] = line;
        env[n_env] = NULL;

        struct sessiond_config_sources s = {.config_file = conf_path, .env_file = env_path, .environ = env};
        r = load(&s, &c, &is);
        if (r == 0)
                check_config(c);

        /* The same env file, parsed beforehand. */
        if (sessiond_envfile_parse(env_path, envf, envf_len, &parsed, &is2) == 0) {
                struct sessiond_config_sources s2 = {.config_file = conf_path, .env_file_data = parsed, .environ = env};
                char *t1, *t2;

                sessiond_issues_clear(&is2);
                r2 = load(&s2, &c2, &is2);
                fuzz_assert(r2 == r);
                t1 = issues_text(&is);
                t2 = issues_text(&is2);
                fuzz_assert(strcmp(t1, t2) == 0);
                free(t1);
                free(t2);
                if (r == 0)
                        fuzz_assert(json_same(c, c2, true));
                sessiond_config_free(c2);
                sessiond_envfile_free(parsed);
        }

        sessiond_issues_clear(&is2);
        sessiond_issues_clear(&is);
        sessiond_config_free(c);
        free(env_text);
        return 0;
}
