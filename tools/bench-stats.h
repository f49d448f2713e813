/* sessiond-bench: what a run counts — every request's latency and the
 * Varlink errors by name.
 *
 * Latencies are kept one per request (nanoseconds, 8 bytes each: 80 MB for
 * ten million requests) rather than in a bucketed histogram, so percentiles
 * are exact and the maximum is the true maximum. The array is allocated for
 * the whole run up front, so recording is a store and an increment on the
 * hot path; it is sorted once at the end.
 *
 * Errors are few distinct names (NotFound, Expired, ...), kept in a small
 * table searched linearly; names beyond the table's room are counted under
 * "(other)".
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct bench_latency {
        uint64_t *ns; /* one per recorded request */
        size_t n;
        size_t capacity;
        uint64_t sum_ns;
        int sorted;
};

/* Room for `capacity` samples, allocated now. -ENOMEM, -EINVAL (0). */
int bench_latency_init(struct bench_latency *l, size_t capacity);
void bench_latency_free(struct bench_latency *l);
/* Records one sample; -ENOBUFS when the capacity is used up. */
int bench_latency_add(struct bench_latency *l, uint64_t ns);
/* Sorts (once); call before the queries below. */
void bench_latency_finish(struct bench_latency *l);
/* The nearest-rank percentile p (0 < p <= 100) in nanoseconds; 0 without samples. */
uint64_t bench_latency_percentile(const struct bench_latency *l, double p);
uint64_t bench_latency_max(const struct bench_latency *l);
uint64_t bench_latency_mean(const struct bench_latency *l);

#define BENCH_ERRORS_MAX 16
#define BENCH_ERROR_NAME_MAX 128

struct bench_errors {
        struct {
                char name[BENCH_ERROR_NAME_MAX];
                uint64_t count;
        } entry[BENCH_ERRORS_MAX];
        size_t n;
        uint64_t other; /* names that did not fit the table or were too long */
        uint64_t total;
};

/* Counts one error reply named by the `len` bytes at `name`. */
void bench_errors_add(struct bench_errors *e, const char *name, size_t len);
