/* sessiond-bench: latency samples and error counts (see bench-stats.h). */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench-stats.h"

int bench_latency_init(struct bench_latency *l, size_t capacity) {
        assert(l);

        if (capacity == 0 || capacity > SIZE_MAX / sizeof(uint64_t))
                return -EINVAL;
        *l = (struct bench_latency){.capacity = capacity};
        l->ns = malloc(capacity * sizeof(uint64_t));
        if (!l->ns)
                return -ENOMEM;
        return 0;
}

void bench_latency_free(struct bench_latency *l) {
        if (!l)
                return;
        free(l->ns);
        *l = (struct bench_latency){};
}

int bench_latency_add(struct bench_latency *l, uint64_t ns) {
        assert(l);

        if (l->n >= l->capacity)
                return -ENOBUFS;
        l->ns[l->n++] = ns;
        l->sum_ns += ns;
        l->sorted = 0;
        return 0;
}

static int compare_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return (x > y) - (x < y);
}

void bench_latency_finish(struct bench_latency *l) {
        assert(l);

        if (!l->sorted && l->n > 1)
                qsort(l->ns, l->n, sizeof(uint64_t), compare_u64);
        l->sorted = 1;
}

uint64_t bench_latency_percentile(const struct bench_latency *l, double p) {
        size_t rank;

        assert(l);
        assert(l->sorted || l->n <= 1);
        assert(p > 0 && p <= 100);

        if (l->n == 0)
                return 0;
        /* Nearest rank: the smallest sample with at least p% of all samples
         * at or below it. */
        rank = (size_t) ceil(p / 100.0 * (double) l->n);
        if (rank < 1)
                rank = 1;
        if (rank > l->n)
                rank = l->n;
        return l->ns[rank - 1];
}

uint64_t bench_latency_max(const struct bench_latency *l) {
        assert(l);
        assert(l->sorted || l->n <= 1);

        return l->n > 0 ? l->ns[l->n - 1] : 0;
}

uint64_t bench_latency_mean(const struct bench_latency *l) {
        assert(l);

        return l->n > 0 ? l->sum_ns / l->n : 0;
}

void bench_errors_add(struct bench_errors *e, const char *name, size_t len) {
        assert(e);
        assert(name || len == 0);

        e->total++;
        if (len >= BENCH_ERROR_NAME_MAX) {
                e->other++;
                return;
        }
        for (size_t i = 0; i < e->n; i++)
                if (strlen(e->entry[i].name) == len && memcmp(e->entry[i].name, name, len) == 0) {
                        e->entry[i].count++;
                        return;
                }
        if (e->n >= BENCH_ERRORS_MAX) {
                e->other++;
                return;
        }
        memcpy(e->entry[e->n].name, name, len);
        e->entry[e->n].name[len] = '\0';
        e->entry[e->n].count = 1;
        e->n++;
}
