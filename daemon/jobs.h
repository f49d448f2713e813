/* Background jobs: the timers of cleanup, security checks, metrics and
 * health, and the observability state they feed (metrics, alerts, events).
 *
 * main creates the jobs once the engine and the server exist
 * (jobs_new), tells them about a new configuration (jobs_config_changed,
 * from daemon_reload) and frees them before the engine when the daemon
 * stops (jobs_free). The Admin methods of methods_observe.c reach the state
 * through the accessors below.
 *
 * See jobs.c for how each timer uses its settings.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "health.h"
#include "metrics.h"

struct daemon;
struct jobs;
struct alerts;
struct events;

int jobs_new(struct daemon *d, struct jobs **ret);
/* Stops every timer and run; waiting Cleanup callers get -ECANCELED. The
 * engine must still exist (observers are removed from it). NULL is fine. */
void jobs_free(struct jobs *j);
/* d->config is the new configuration: intervals, switches and buffer sizes
 * take effect now (timers whose interval or switch changed are re-armed). */
void jobs_config_changed(struct jobs *j);

struct metrics *jobs_metrics(struct jobs *j);
struct alerts *jobs_alerts(struct jobs *j);
struct events *jobs_events(struct jobs *j);
/* What metrics_current() needs from the other parts. */
void jobs_metrics_extra(struct jobs *j, struct metrics_extra *ret);

/* Status: {regular|batch|deep|security|metrics|health: {enabled, interval,
 * last_run, next_run, last_duration_ms, last_result, runs}} (the cleanup
 * jobs also last_longest_step_us: the longest step their last run held the
 * loop), plus "cleanup_running" and "cleanup_trigger" details added to
 * status. */
int jobs_status(struct jobs *j, int64_t now, json_t *status);
/* One line for systemd's STATUS= ("health degraded: ..."), empty when healthy
 * or not checked. */
void jobs_status_line(struct jobs *j, char *buf, size_t size);

/* Health now, on demand (Admin.Health): components, *status the worst. The
 * integrity check is the newest one run (health timer, deep cleanup, or
 * the check at start). NULL on ENOMEM. */
json_t *jobs_health(struct jobs *j, enum health_status *status);

/* A cleanup asked for by an operator (Admin.Cleanup). It runs like the
 * timer's, in batches with the loop serving requests in between, and done
 * is called once it finished (or failed, or the daemon stops: error
 * -ECANCELED). A run of the same kind already waiting is shared. */
struct jobs_cleanup_result {
        int error;       /* 0 or negative errno */
        unsigned ended;  /* sessions ended (expired, and for batch those over the user limit) */
        unsigned purged; /* rows deleted (deep: ended sessions and audit rows past retention) */
};
typedef void (*jobs_cleanup_fn)(const struct jobs_cleanup_result *r, void *userdata);
struct jobs_waiter;
int jobs_cleanup(struct jobs *j, enum metrics_cleanup_kind kind, jobs_cleanup_fn done, void *userdata,
                 struct jobs_waiter **ret);
/* The caller went away: done will not be called. */
void jobs_cleanup_forget(struct jobs *j, struct jobs_waiter *w);
