/* Analytics: see analytics.h.
 *
 * The store hands out the durations already sorted (ORDER BY), so the
 * percentiles are read off an array without sorting in C. The job in the
 * thread pool owns everything it touches (its own connection, its result);
 * the loop side only sees the result in the after-work callback, which is
 * the one place the two sides meet, so no lock is needed.
 */
#include "analytics.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

double analytics_percentile(const double *sorted, size_t n, double p) {
        double rank, frac;
        size_t lo;

        if (n == 0)
                return NAN;
        if (p <= 0)
                return sorted[0];
        if (p >= 100)
                return sorted[n - 1];
        rank = p / 100.0 * (double) (n - 1);
        lo = (size_t) floor(rank);
        frac = rank - (double) lo;
        if (lo + 1 >= n)
                return sorted[n - 1];
        return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * frac;
}

void analytics_durations_summarize(const double *sorted, size_t n, struct analytics_durations *d) {
        double sum = 0;

        d->count = n;
        for (size_t i = 0; i < n; i++)
                sum += sorted[i];
        d->mean = n ? sum / (double) n : NAN;
        d->min = n ? sorted[0] : NAN;
        d->max = n ? sorted[n - 1] : NAN;
        d->p50 = analytics_percentile(sorted, n, 50);
        d->p90 = analytics_percentile(sorted, n, 90);
        d->p99 = analytics_percentile(sorted, n, 99);
}

/* ---- the store part --------------------------------------------------------- */

struct values {
        double *v;
        size_t n, allocated;
};

static int values_add(int64_t v, void *userdata) {
        struct values *x = userdata;

        if (x->n == x->allocated) {
                size_t a = x->allocated ? x->allocated * 2 : 1024;
                double *p = realloc(x->v, a * sizeof *p);

                if (!p)
                        return -ENOMEM;
                x->v = p;
                x->allocated = a;
        }
        x->v[x->n++] = (double) v;
        return 0;
}

static int reason_add(const char *key, int64_t count, void *userdata) {
        return json_object_set_new(userdata, key ? key : "unknown", json_integer(count)) < 0 ? -ENOMEM : 0;
}

int analytics_compute(struct store *s, int64_t now, struct analytics_result *ret) {
        struct values durations = {0};
        int r;

        memset(ret, 0, sizeof *ret);
        ret->now = now;
        ret->first_hour = (now / 3600 - (ANALYTICS_HOURS - 1)) * 3600;
        ret->durations = (struct analytics_durations){0, NAN, NAN, NAN, NAN, NAN, NAN};
        ret->end_reasons = json_object();
        if (!ret->end_reasons)
                return ret->error = -ENOMEM;

        r = store_count_created(s, ret->first_hour, 3600, ret->created_per_hour, ANALYTICS_HOURS);
        if (r >= 0)
                r = store_ended_durations(s, values_add, &durations);
        if (r >= 0)
                r = store_end_reasons(s, reason_add, ret->end_reasons);
        if (r >= 0)
                analytics_durations_summarize(durations.v, durations.n, &ret->durations);
        free(durations.v);
        return ret->error = r < 0 ? r : 0;
}

void analytics_result_clear(struct analytics_result *r) {
        json_decref(r->end_reasons);
        r->end_reasons = NULL;
}

static json_t *number(double v) {
        if (isnan(v) || isinf(v))
                return json_null();
        return json_real(round(v * 1000.0) / 1000.0);
}

json_t *analytics_to_json(const struct analytics_result *r, json_t *platforms) {
        const struct analytics_durations *d = &r->durations;
        json_t *hours = json_array(), *o;

        if (!hours) {
                json_decref(platforms);
                return NULL;
        }
        for (size_t i = 0; i < ANALYTICS_HOURS; i++)
                json_array_append_new(hours,
                                      json_pack("{s:I, s:I}", "hour", (json_int_t) (r->first_hour + 3600 * (int64_t) i),
                                                "created", (json_int_t) r->created_per_hour[i]));
        o = json_pack("{s:I, s:o, s:{s:I, s:o, s:o, s:o, s:o, s:o, s:o}, s:O, s:o}", "generated_at",
                      (json_int_t) r->now, "created_per_hour", hours, "durations", "count", (json_int_t) d->count,
                      "mean", number(d->mean), "min", number(d->min), "max", number(d->max), "p50", number(d->p50),
                      "p90", number(d->p90), "p99", number(d->p99), "end_reasons",
                      r->end_reasons ? r->end_reasons : json_object(), "active_by_platform",
                      platforms ? platforms : json_object());
        return o;
}

/* ---- in the thread pool --------------------------------------------------------- */

struct analytics_job {
        uv_work_t work;
        char *path;
        analytics_done_fn done;
        void *userdata;
        bool cancelled;
        struct analytics_result result;
};

static void job_work(uv_work_t *w) {
        struct analytics_job *job = w->data;
        struct store *s = NULL;
        int r;

        r = store_reader_open(job->path, &s);
        if (r < 0) {
                memset(&job->result, 0, sizeof job->result);
                job->result.error = r;
                return;
        }
        (void) analytics_compute(s, job->result.now, &job->result);
        store_close(s);
}

static void job_after(uv_work_t *w, int status) {
        struct analytics_job *job = w->data;

        if (status < 0 && job->result.error == 0)
                job->result.error = -ECANCELED;
        if (!job->cancelled)
                job->done(&job->result, job->userdata);
        analytics_result_clear(&job->result);
        free(job->path);
        free(job);
}

int analytics_start(uv_loop_t *loop, const char *database_path, int64_t now, analytics_done_fn done, void *userdata,
                    struct analytics_job **ret) {
        struct analytics_job *job;
        int r;

        assert(loop && database_path && done);
        job = calloc(1, sizeof *job);
        if (!job)
                return -ENOMEM;
        job->path = strdup(database_path);
        if (!job->path) {
                free(job);
                return -ENOMEM;
        }
        job->done = done;
        job->userdata = userdata;
        job->result.now = now;
        job->work.data = job;
        r = uv_queue_work(loop, &job->work, job_work, job_after);
        if (r < 0) {
                free(job->path);
                free(job);
                return -EIO;
        }
        if (ret)
                *ret = job;
        return 0;
}

void analytics_cancel(struct analytics_job *job) {
        if (job)
                job->cancelled = true;
}
