/* Health: how the daemon is doing, component by component.
 *
 * health_evaluate() is a pure function from measurements (struct
 * health_inputs) to a verdict per component and overall, so that the rules
 * are unit-tested without a daemon. The jobs gather the measurements (a
 * database probe, the last integrity check, the cleanup backlog, the loop
 * lag) and call it on the health timer and on every Admin.Health call.
 *
 * Components and their rules:
 *   database  unhealthy when the probe fails, the last integrity check
 *             found a problem or the last commit failed (writes fail until
 *             one succeeds: a full file system says so); degraded when the
 *             probe took longer than
 *             HEALTH_DB_SLOW_MS or commits failed since the last check.
 *   cleanup   degraded when more sessions await cleanup than
 *             cleanup.max_expired_threshold, or the last cleanup run failed.
 *   security  degraded in the production environment when fingerprinting,
 *             suspicious_detection or audit_logging is off (elsewhere that
 *             is only noted in the message) or debug_mode is on; degraded
 *             while users are at or above
 *             security.suspicious_activity_threshold.
 *   loop      degraded when the event loop was late by more than
 *             HEALTH_LAG_DEGRADED_MS since the last check, unhealthy beyond
 *             HEALTH_LAG_UNHEALTHY_MS; not measured (healthy, and the
 *             message says so) with monitoring.performance_monitoring off,
 *             and "not measured yet" with it on before the first sample.
 * Overall: the worst component.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "sessiond/config.h"

#define HEALTH_DB_SLOW_MS 250.0
#define HEALTH_LAG_DEGRADED_MS 500.0
#define HEALTH_LAG_UNHEALTHY_MS 5000.0

enum health_status {
        HEALTH_HEALTHY = 0,
        HEALTH_DEGRADED,
        HEALTH_UNHEALTHY,
};

const char *health_status_to_string(enum health_status s);
enum health_status health_worst(enum health_status a, enum health_status b);

struct health_inputs {
        const struct sessiond_config *config;

        /* database */
        bool in_memory;
        int probe_error;       /* 0 or a negative errno of the probe */
        double probe_ms;       /* how long the probe took */
        int64_t db_size_bytes; /* main file + WAL, -1 unknown */
        bool check_known;      /* an integrity check has run */
        bool check_ok;
        const char *check_message; /* its first message ("ok" when fine) */
        int64_t check_at;          /* when it ran (Unix seconds) */
        uint64_t commit_failures;  /* since the previous evaluation */
        int storage_error;         /* negative errno of the last commit if it failed, else 0 */

        /* cleanup */
        uint64_t awaiting_cleanup;
        bool cleanup_failed; /* the last run ended with an error */
        const char *cleanup_error;
        bool background_cleanup;

        /* security */
        unsigned suspicious_users; /* at or above the threshold in the sliding hour */

        /* loop */
        bool lag_measured;
        double lag_max_ms; /* the largest lateness since the previous evaluation */
};

/* components: {name: {status, message, ...measurements}}; *ret_status the
 * worst. NULL on ENOMEM. */
json_t *health_evaluate(const struct health_inputs *in, enum health_status *ret_status);
/* Adds one component to components and folds its status into *overall;
 * fields (stolen, may be NULL) become its measurements. Returns 0 or -ENOMEM. */
int health_component_add(json_t *components, const char *name, enum health_status status, const char *message,
                         json_t *fields, enum health_status *overall);
