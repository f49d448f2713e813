/* Analytics: what the sessions of the last day looked like.
 *
 * Admin.Analytics answers (gated by features.analytics):
 *   created_per_hour   sessions created in each of the last 24 wall-clock
 *                      hours (the current one included, oldest first), from
 *                      the store; a rotation is not a new session.
 *   durations          count, mean, min, max, p50, p90, p99 (seconds) of the
 *                      sessions that ended and are still retained
 *                      (cleanup.expired_retention_days); a rotated token is
 *                      not an end (the session goes on under its new one).
 *   end_reasons        {reason: count} over the same retained ended rows.
 *   active_by_platform {platform: count} of the live sessions (memory),
 *                      "none" for sessions without a platform.
 *
 * The store part reads every retained row, which on a large store takes a
 * while: with a database file it runs in the libuv thread pool on its own
 * read-only connection (WAL lets it read while the loop writes), so that
 * the loop keeps answering. An in-memory store has no second connection;
 * there it runs on the loop.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct store;

#define ANALYTICS_HOURS 24

/* Percentile p (0..100) of n sorted values, interpolating linearly between
 * the closest ranks (the rule of numpy's default and Excel's PERCENTILE.INC):
 * rank = p/100 * (n-1). NaN when n is 0. */
double analytics_percentile(const double *sorted, size_t n, double p);

struct analytics_durations {
        size_t count;
        double mean, min, max, p50, p90, p99; /* NaN when count is 0 */
};
/* Fills d from n sorted values. */
void analytics_durations_summarize(const double *sorted, size_t n, struct analytics_durations *d);

struct analytics_result {
        int error; /* 0 or the negative errno of the store queries */
        int64_t now;
        int64_t first_hour; /* start of created_per_hour[0] (Unix seconds, a multiple of 3600) */
        uint64_t created_per_hour[ANALYTICS_HOURS];
        struct analytics_durations durations;
        json_t *end_reasons; /* {reason: count} */
};

/* The store part, on any connection (the loop's or a reader). */
int analytics_compute(struct store *s, int64_t now, struct analytics_result *ret);
void analytics_result_clear(struct analytics_result *r);
/* {"generated_at", "created_per_hour": [{hour, created}], "durations": {...},
 * "end_reasons": {...}, "active_by_platform": platforms (stolen)}. */
json_t *analytics_to_json(const struct analytics_result *r, json_t *platforms);

struct analytics_job;
typedef void (*analytics_done_fn)(struct analytics_result *r, void *userdata);

/* Computes on a read-only connection to database_path in the thread pool,
 * then calls done on the loop (r is valid during the call). */
int analytics_start(uv_loop_t *loop, const char *database_path, int64_t now, analytics_done_fn done, void *userdata,
                    struct analytics_job **ret);
/* done will not be called; the job frees itself when the thread is done. */
void analytics_cancel(struct analytics_job *job);
