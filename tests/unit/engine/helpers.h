/* Helpers shared by the engine unit tests: a scratch folder per test, whole
 * files read for byte-for-byte comparisons, and an engine on a daemon
 * context without a loop (events are then delivered at once, timers are
 * not used, and the tests drive the clock through `now`). */
#pragma once

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "engine.h"
#include "log.h"
#include "sessiond/config.h"
#include "store.h"
#include "token.h"

static char test_dir[256];

static inline const char *scratch(void) {
        if (!test_dir[0]) {
                snprintf(test_dir, sizeof test_dir, "/tmp/sessiond-engine-test-XXXXXX");
                ck_assert_ptr_nonnull(mkdtemp(test_dir));
        }
        return test_dir;
}

static inline void scratch_remove(void) {
        char cmd[512];

        if (!test_dir[0])
                return;
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_dir);
        ck_assert_int_eq(system(cmd), 0);
        test_dir[0] = '\0';
}

/* Path of name in the scratch folder; the same name gives the same buffer,
 * valid for the whole test (Check forks per test). */
static inline char *path_in(const char *name) {
        static struct {
                char name[64];
                char path[512];
        } cache[16];
        static size_t used;

        for (size_t i = 0; i < used; i++)
                if (strcmp(cache[i].name, name) == 0)
                        return cache[i].path;
        ck_assert_uint_lt(used, 16);
        snprintf(cache[used].name, sizeof cache[0].name, "%s", name);
        snprintf(cache[used].path, sizeof cache[0].path, "%s/%s", scratch(), name);
        return cache[used++].path;
}

struct blob {
        unsigned char *data;
        size_t size;
};

static inline struct blob read_file(const char *path) {
        struct blob b = {0};
        struct stat st;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        ck_assert_msg(fd >= 0, "cannot open %s: %s", path, strerror(errno));
        ck_assert_int_eq(fstat(fd, &st), 0);
        b.size = (size_t) st.st_size;
        b.data = malloc(b.size + 1);
        ck_assert_ptr_nonnull(b.data);
        ck_assert_int_eq(read(fd, b.data, b.size), (ssize_t) b.size);
        close(fd);
        return b;
}

static inline void write_file(const char *path, const void *data, size_t size, mode_t mode) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

        ck_assert_msg(fd >= 0, "cannot write %s: %s", path, strerror(errno));
        ck_assert_int_eq(write(fd, data, size), (ssize_t) size);
        close(fd);
}

static inline bool blob_equal(struct blob a, struct blob b) {
        return a.size == b.size && memcmp(a.data, b.data, a.size) == 0;
}

/* ---- an engine under test ------------------------------------------------- */

#define T0 1700000000 /* the tests' "now" starts here (Unix seconds) */
/* The engine's `now` is Unix milliseconds: MS(T0 + 5) is 5 s after T0,
 * MS(T0) + 900 is 0.9 s after it. The helpers below take milliseconds too. */
#define MS(t) ((int64_t) (t) *1000)

struct fixture {
        struct daemon d;
        struct sessiond_config *c;
        struct engine *e;
};

/* Defaults of DESIGN 2.3, in memory unless a database path is given. */
static inline void fixture_init(struct fixture *f, const char *database) {
        memset(f, 0, sizeof *f);
        ck_assert_int_eq(sessiond_config_new_defaults(&f->c), 0);
        if (database) {
                free(f->c->daemon.database_path);
                f->c->daemon.database_path = strdup(database);
                f->c->features.persistence = true;
        } else
                f->c->features.persistence = false;
        f->d.config = f->c;
}

static inline void fixture_open(struct fixture *f) {
        ck_assert_int_eq(engine_new(&f->d, &f->e), 0);
        f->d.engine = f->e;
}

static inline void fixture_close(struct fixture *f) {
        engine_free(f->e);
        f->e = NULL;
        f->d.engine = NULL;
}

static inline void fixture_done(struct fixture *f) {
        fixture_close(f);
        sessiond_config_free(f->c);
}

/* Creates a session for user at now; returns the token (static buffer per
 * call site is not needed: the caller passes one). */
static inline void create_session(struct fixture *f, int64_t now, const char *user, const struct engine_client *client,
                                  char token[TOKEN_STRING_LEN + 1], char id[TOKEN_ID_STRING_LEN + 1]) {
        struct engine_create a = {.user_id = user};
        struct engine_created out;
        struct engine_error err = {0};

        if (client)
                a.client = *client;
        ck_assert_int_eq(engine_create(f->e, now, &a, &out, &err), 0);
        ck_assert_int_eq(engine_commit(f->e), 0);
        if (token)
                memcpy(token, out.token, TOKEN_STRING_LEN + 1);
        if (id)
                memcpy(id, out.info.id, TOKEN_ID_STRING_LEN + 1);
        engine_created_clear(&out);
}

static inline int validate(struct fixture *f, int64_t now, const char *token, struct engine_info *info,
                           struct engine_error *err) {
        struct engine_info i;
        struct engine_error e = {0};
        int r = engine_validate(f->e, now, token, NULL, true, info ? info : &i, err ? err : &e);

        ck_assert_int_eq(engine_commit(f->e), 0);
        return r;
}

static inline int run_suite(Suite *s) {
        SRunner *sr = srunner_create(s);
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
