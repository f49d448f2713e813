/* Metrics: counters and gauges of the daemon, their history, and the rates
 * the alerts compare with their thresholds.
 *
 * Current values (Admin.Metrics "metrics", `sessionctl metrics`) are built
 * on demand from the engine's counters, a scan of the sessions in memory,
 * the server's statistics and this module's own counters (cleanup runs,
 * request durations, loop lag). Each is {name, help, type, value, labels};
 * names carry no "sessiond_" prefix (sessionctl adds it for Prometheus).
 *
 * Every monitoring.metrics_interval the metrics job calls metrics_sample():
 * one compact sample goes into the history ring (monitoring.
 * metrics_buffer_size samples, Admin.Metrics "history") and the counters
 * the alerts need go into a one-minute rate window. The alert values are
 * taken over that window (METRICS_RATE_WINDOW_MS, one minute): sessions
 * created, validations failing, suspicious events and the mean duration of
 * the sessions that ended within the last minute. While the daemon is
 * younger than a minute the window is shorter (counts are not
 * extrapolated); with samples further apart than a minute the counts are
 * averaged to a minute.
 *
 * Request durations (monitoring.performance_monitoring): the time from a
 * call's dispatch to its final reply, and the time of each group commit;
 * quantiles over the newest METRICS_RESERVOIR calls. Loop lag: how late the
 * loop ran a 250 ms probe timer.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine.h"

struct daemon;
struct metrics;
struct sessiond_config;

#define METRICS_RATE_WINDOW_MS 60000
#define METRICS_RESERVOIR 1024

enum metrics_cleanup_kind {
        METRICS_CLEANUP_REGULAR,
        METRICS_CLEANUP_BATCH,
        METRICS_CLEANUP_DEEP,
        _METRICS_CLEANUP_MAX,
};
const char *metrics_cleanup_kind_to_string(enum metrics_cleanup_kind k);

/* Counted by the jobs. */
struct metrics_counters {
        uint64_t cleanup_runs[_METRICS_CLEANUP_MAX];
        double cleanup_seconds[_METRICS_CLEANUP_MAX]; /* wall time of the runs, start to end */
        uint64_t cleanup_failures;
        uint64_t cleanup_triggered; /* regular runs started by trigger_threshold */
        uint64_t cleanup_ended;     /* sessions ended by cleanup (past end + cleanup_grace) */
        uint64_t cleanup_evicted;   /* sessions ended to enforce a lowered max_concurrent_per_user */
        uint64_t cleanup_purged_sessions;
        uint64_t cleanup_purged_audit;
        uint64_t security_checks;
        uint64_t health_checks;
        uint64_t samples;
};

/* Values from the other observability parts, for metrics_current(). */
struct metrics_extra {
        unsigned alerts_firing;
        unsigned event_followers;
        uint64_t events_total;
        int health_status; /* enum health_status of the last check, -1 none yet */
};

/* The alert values over the rate window. */
struct metrics_rates {
        int64_t span_ms;           /* the window actually covered */
        double created;            /* sessions created in the window */
        double validations;        /* validations (successful and failed) */
        double failure_percent;    /* failed / validations * 100, NaN without validations */
        double suspicious;         /* suspicious events */
        double ended;              /* sessions ended (not by rotation) */
        double mean_duration;      /* of those, seconds; NaN when none ended */
        uint64_t active;           /* live sessions at the sample */
        uint64_t awaiting_cleanup; /* sessions awaiting cleanup at the sample */
};

int metrics_new(struct daemon *d, struct metrics **ret);
void metrics_free(struct metrics *m);
/* The buffer size may have changed. Cannot fail after
 * metrics_config_reserve() for the configuration now in force. */
int metrics_config_changed(struct metrics *m);
/* Allocates, ahead of a reload, the history buffer that configuration c
 * needs (monitoring.metrics_buffer_size); -ENOMEM changes nothing.
 * metrics_config_unreserve() gives it back when the reload is abandoned. */
int metrics_config_reserve(struct metrics *m, const struct sessiond_config *c);
void metrics_config_unreserve(struct metrics *m);
struct metrics_counters *metrics_counters(struct metrics *m);

/* Engine events (ended sessions and their durations). */
void metrics_observe(struct metrics *m, const struct engine_event *ev);
/* One call answered (nsec from dispatch to final reply); commit: a group commit. */
void metrics_request_done(struct metrics *m, const char *method, uint64_t nsec);
void metrics_commit_done(struct metrics *m, uint64_t nsec);
/* The loop ran a timer lag_ns late. */
void metrics_loop_lag(struct metrics *m, uint64_t lag_ns);
/* The largest lag since the previous periodic health check, in ms; reset:
 * this is the periodic check (the next one starts from zero). *measured is
 * false when nothing was measured (performance_monitoring off). */
double metrics_take_health_lag(struct metrics *m, bool *measured, bool reset);
/* The 99th percentile of the newest group commits, ms; NaN without any. */
double metrics_commit_p99_ms(struct metrics *m);

/* The current values as [{name, help, type, value, labels}]. NULL on ENOMEM. */
json_t *metrics_current(struct metrics *m, int64_t now, const struct metrics_extra *x);
/* Takes a sample: history and rate window. rates (may be NULL) receives
 * the alert values. */
int metrics_sample(struct metrics *m, int64_t now, const struct metrics_extra *x, struct metrics_rates *rates);
/* The history, oldest first. */
json_t *metrics_history(struct metrics *m);
/* Forgets the history (monitoring.metrics_collection turned off). */
void metrics_history_clear(struct metrics *m);
/* Starts the rate window afresh from the counters now (at start, and when
 * monitoring.metrics_collection is turned back on: a gap without samples
 * must not count as part of the next minute). */
void metrics_window_restart(struct metrics *m);
