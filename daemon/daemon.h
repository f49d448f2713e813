/* The daemon's context: one instance, owned by main, passed to every module.
 *
 * Every subsystem hangs off struct daemon so that a handler can reach the
 * configuration, the store and the session engine from a call, and so that
 * reload can hand the new configuration to each subsystem in one place
 * (daemon_reload). The configuration pointer is swapped, never edited in
 * place: a module that needs a value reads d->config when it needs it.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "sessiond/config.h"

struct server;
struct engine;
struct jobs;
struct metrics_http;
struct bulk;
struct leader;

struct daemon {
        uv_loop_t *loop;
        struct sessiond_config *config; /* current, validated */
        const char *config_path;        /* -c FILE, or NULL for the default */
        struct server *server;
        struct engine *engine;             /* sessions: store + in-memory index + policy */
        struct jobs *jobs;                 /* background timers (cleanup, security, metrics, health) */
        struct metrics_http *metrics_http; /* GET /metrics (daemon.metrics_listen) */
        struct bulk *bulk;                 /* DestroyUser and TerminateUser in steps (bulk.c) */
        struct leader *leader; /* features.clustering: who runs the fleet's jobs (leader.c); NULL: this one */
        int64_t started_at;    /* wall clock, Unix seconds */
        uint64_t started_usec; /* monotonic */
        unsigned long long reloads;
        bool stopping;
};

/* Reads the configuration sources again, validates, and swaps on success
 * (then tells every subsystem). On failure the old configuration stays and
 * the issues say why. Returns 0 or -EINVAL. Used by SIGHUP and Admin.Reload. */
int daemon_reload(struct daemon *d, struct sessiond_issues *issues);

/* Begins a clean shutdown (SIGTERM, SIGINT). */
void daemon_stop(struct daemon *d);

/* Sends systemd a fresh STATUS= line now (the health check calls it when
 * the health changed). Does nothing without NOTIFY_SOCKET. */
void daemon_status_update(struct daemon *d);
