/* Helpers shared by the configuration unit tests: a scratch folder per
 * test, files written and read whole, and loading from explicit sources
 * only (never /etc, never the test runner's environment). */
#pragma once

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/envfile-private.h" /* the lines of an env file, private to the library */
#include "config/settings.h"        /* the table of settings, private to the library */
#include "sessiond/config.h"
#include "sessiond/envfile.h"

static char test_dir[256];

/* A fresh scratch folder for the running test; Check forks per test, so a
 * static is per test. */
static inline const char *scratch(void) {
        if (!test_dir[0]) {
                snprintf(test_dir, sizeof(test_dir), "/tmp/sessiond-config-test-XXXXXX");
                ck_assert_ptr_nonnull(mkdtemp(test_dir));
        }
        return test_dir;
}

static inline void scratch_remove(void) {
        char cmd[512];
        if (!test_dir[0])
                return;
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_dir);
        ck_assert_int_eq(system(cmd), 0);
        test_dir[0] = '\0';
}

/* Path of name inside the scratch folder; the same name always gives the
 * same buffer, so pointers stay valid for the whole test. */
static inline const char *path_in(const char *name) {
        static struct {
                char name[64];
                char path[512];
        } cache[32];
        static size_t used;
        for (size_t i = 0; i < used; i++)
                if (strcmp(cache[i].name, name) == 0)
                        return cache[i].path;
        ck_assert_uint_lt(used, 32);
        snprintf(cache[used].name, sizeof(cache[0].name), "%s", name);
        snprintf(cache[used].path, sizeof(cache[0].path), "%s/%s", scratch(), name);
        return cache[used++].path;
}

static inline void write_text(const char *path, const char *text) {
        FILE *f = fopen(path, "we");
        ck_assert_msg(f != NULL, "cannot write %s: %s", path, strerror(errno));
        fputs(text, f);
        ck_assert_int_eq(fclose(f), 0);
}

/* Returns the file's content (caller frees) or NULL when it does not exist. */
static inline char *read_text(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t size = 0;
        if (!f)
                return NULL;
        FILE *m = open_memstream(&buf, &size);
        int c;
        while ((c = fgetc(f)) != EOF)
                fputc(c, m);
        fclose(f);
        fclose(m);
        return buf;
}

/* Does any issue's message start with (or, with anywhere, contain) text? */
static inline const struct sessiond_issue *find_issue(const struct sessiond_issues *is, enum sessiond_severity sev,
                                                      const char *text) {
        for (size_t i = 0; i < is->count; i++)
                if (is->items[i].severity == sev && strstr(is->items[i].message, text))
                        return &is->items[i];
        return NULL;
}

static inline char *issues_text(const struct sessiond_issues *is) {
        char *buf = NULL;
        size_t size = 0;
        FILE *m = open_memstream(&buf, &size);
        for (size_t i = 0; i < is->count; i++)
                fprintf(m, "  %s: %s\n", sessiond_severity_to_string(is->items[i].severity), is->items[i].message);
        fclose(m);
        return buf;
}

#define assert_issue(is, sev, text)                                                                                  \
        do {                                                                                                         \
                if (!find_issue((is), (sev), (text))) {                                                              \
                        char *_all = issues_text(is);                                                                \
                        ck_abort_msg("no %s containing \"%s\" among:\n%s", sessiond_severity_to_string(sev), (text), \
                                     _all);                                                                          \
                }                                                                                                    \
        } while (0)

#define assert_no_issues(is)                                          \
        do {                                                          \
                if ((is)->count > 0) {                                \
                        char *_all = issues_text(is);                 \
                        ck_abort_msg("unexpected issues:\n%s", _all); \
                }                                                     \
        } while (0)

/* Loads from a config file (NULL: none), an env file (NULL: none) and an
 * environment (NULL-terminated KEY=VALUE list, NULL: empty). */
static inline int load_from(const char *conf, const char *envfile, char **env, struct sessiond_config **ret,
                            struct sessiond_issues *issues) {
        static char *empty[] = {NULL};
        struct sessiond_config_sources s = {
                .config_file = conf ? conf : "",
                .env_file = envfile ? envfile : "",
                .environ = env ? env : empty,
        };
        return sessiond_config_load(&s, ret, issues);
}

/* Writes text to a scratch file and loads it as the libconfig file. */
static inline int load_conf_text(const char *text, struct sessiond_config **ret, struct sessiond_issues *issues) {
        const char *p = path_in("test.conf");
        write_text(p, text);
        return load_from(p, NULL, NULL, ret, issues);
}

static inline int load_env(char **env, struct sessiond_config **ret, struct sessiond_issues *issues) {
        return load_from(NULL, NULL, env, ret, issues);
}
