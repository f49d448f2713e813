/* Shared between sessionctl's verbs (sessionctl.c) and `sessionctl config`
 * (sessionctl-config.c). */
#pragma once

#include <stdbool.h>

struct sessiond_config;

/* Exit codes, documented in sessionctl(1). */
enum {
        SESSIONCTL_EXIT_OK = 0,
        SESSIONCTL_EXIT_FAILURE = 1,
        SESSIONCTL_EXIT_USAGE = 2,
        SESSIONCTL_EXIT_DEGRADED = 3,    /* health: degraded */
        SESSIONCTL_EXIT_UNHEALTHY = 4,   /* health: unhealthy */
        SESSIONCTL_EXIT_NOT_RUNNING = 5, /* no daemon on the socket */
};

struct sessionctl_globals {
        const char *socket_path; /* -s/--socket, NULL: from config/env/default */
        const char *config_file; /* -c/--config, NULL: default */
        bool json;               /* --json */
        bool no_legend;          /* --no-legend */
};

/* Loads the configuration of -c (defaults, file, env file, environment).
 * On failure prints "<who>: cannot load the configuration [FILE]<hint>:"
 * and each error, and returns a negative errno. (sessionctl.c) */
int sessionctl_load_config(const struct sessionctl_globals *g, const char *who, const char *hint,
                           struct sessiond_config **ret);

/* `sessionctl config ...`: argv[0] is "config". Returns an exit code. */
int sessionctl_config(int argc, char **argv, const struct sessionctl_globals *g);

/* `sessionctl db check|recover ...` (sessionctl-db.c): argv[0] is "db".
 * Returns an exit code. */
int sessionctl_db(int argc, char **argv, const struct sessionctl_globals *g);
