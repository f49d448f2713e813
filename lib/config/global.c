/* The process-wide configuration: the guide's get_session_config() and
 * reload_session_config().
 *
 * For programs that want one configuration without passing it around (a C
 * web app linking libsessiond, small tools). The daemon does not use it: it
 * keeps its own pointer in struct daemon and swaps it on reload.
 *
 * sessiond_config_get() returns a pointer that stays valid for the life of
 * the process: a reload publishes a new configuration but retires the old
 * one instead of freeing it, because another thread may still be reading
 * it. Reloads are rare (an operator's action), so the retired ones cost a
 * few kilobytes each; they are freed at exit so leak checkers stay quiet.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct sessiond_config *current;
static struct sessiond_config **retired;
static size_t n_retired;

/* Loads and validates; *ret is NULL on any error. */
static int load_valid(const struct sessiond_config_sources *sources, struct sessiond_config **ret,
                      struct sessiond_issues *issues) {
        struct sessiond_config *c = NULL;
        int r;

        r = sessiond_config_load(sources, &c, issues);
        if (r < 0)
                return r;
        r = sessiond_config_validate(c, issues);
        if (r < 0) {
                sessiond_config_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

SESSIOND_EXPORT const struct sessiond_config *sessiond_config_get(void) {
        const struct sessiond_config *c;

        pthread_mutex_lock(&lock);
        if (!current) {
                struct sessiond_issues issues = {};
                (void) load_valid(NULL, &current, &issues);
                sessiond_issues_clear(&issues);
        }
        c = current;
        pthread_mutex_unlock(&lock);
        return c;
}

SESSIOND_EXPORT int sessiond_config_reload(const struct sessiond_config_sources *sources,
                                           struct sessiond_issues *issues) {
        struct sessiond_config *c = NULL, **n;
        int r;

        r = load_valid(sources, &c, issues);
        if (r < 0)
                return r;

        pthread_mutex_lock(&lock);
        if (current) {
                n = realloc(retired, (n_retired + 1) * sizeof(*n));
                if (!n) {
                        pthread_mutex_unlock(&lock);
                        sessiond_config_free(c);
                        return -ENOMEM;
                }
                retired = n;
                retired[n_retired++] = current;
        }
        current = c;
        pthread_mutex_unlock(&lock);
        return 0;
}

__attribute__((destructor)) static void global_config_free(void) {
        for (size_t i = 0; i < n_retired; i++)
                sessiond_config_free(retired[i]);
        free(retired);
        sessiond_config_free(current);
        retired = NULL;
        n_retired = 0;
        current = NULL;
}
