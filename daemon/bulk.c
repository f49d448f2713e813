/* Bulk ends in steps: DestroyUser and Admin.TerminateUser.
 *
 * Ending a session costs 10 to 30 us, nearly all of it SQLite's update of
 * the ended-row indexes: a user holding 50,000 sessions took 1.25 s in one
 * piece, and every other client waited that long. So a bulk end is a job
 * that works like the cleanup runs of jobs.c: one step per loop iteration
 * from an idle handle, each step ending sessions for BULK_STEP_NS of loop
 * time (engine_end_user_step), then a rest of BULK_REST_MS while the loop
 * serves the requests alone; a step waits while the previous unit of work
 * is being committed and while the store's checkpoint thread asks for a
 * slower pace (store_pace, at most BULK_THROTTLE_MAX_MS in a row).
 * Each step's ends go into the iteration's unit of work and are committed
 * with it; the call is answered when the job is over, its reply held like
 * any write until the unit holding its last ends is committed. A user with
 * a few sessions is done in the first step, run at once by the handler:
 * the common call costs what it did.
 *
 * What a job ends: the live sessions of the user created at or before the
 * millisecond the call arrived (a rotation keeps created_at: rotated ones too),
 * except the excepted session. Sessions created after that are not the
 * call's business, and a user creating sessions cannot keep it going.
 * Jobs run one at a time, in the order they came.
 *
 * Crashes. The steps commit separately, so a job cut by a crash (kill -9,
 * power loss) is visibly partial: every session is either still live or
 * ended with the job's reason, the caller never got its reply (so it never
 * believed the job done), and calling again ends the rest (DestroyUser and
 * TerminateUser are idempotent: the second call counts what it ended). A
 * job is not resumed by itself after a restart: the daemon keeps no journal
 * of calls, and a reply-less call is one the client must retry anyway. A
 * clean stop (SIGTERM) finishes the queued jobs before the store closes.
 * A job whose caller went away goes on to its end: the user asked for it.
 */
#include "bulk.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "clock.h"
#include "daemon.h"
#include "log.h"
#include "store.h"

#define BULK_STEP_NS (250 * 1000) /* loop time of one step */
#define BULK_REST_MS 1            /* then the loop serves requests only, for this long */
#define BULK_COMMIT_WAIT_MS 1     /* the previous step's unit is being committed */
#define BULK_THROTTLE_MS 2
#define BULK_THROTTLE_MAX_MS 200

struct bulk_job {
        struct bulk_job *next;
        char *user_id;
        int64_t created_by, except_row_key;
        enum engine_end_reason reason;
        unsigned count;
        unsigned throttled_ms;
        uint64_t started_ns;
        bulk_done_fn done; /* NULL: the caller is gone */
        void *userdata;
};

struct bulk {
        struct daemon *d;
        uv_idle_t step;
        uv_timer_t resume;
        struct bulk_job *head, *tail;
        bool waiting; /* paused: the resume timer restarts the steps */
        bool closing;
        unsigned open_handles;
};

static void job_free(struct bulk_job *job) {
        if (job) {
                free(job->user_id);
                free(job);
        }
}

static void bulk_step_later(struct bulk *b);

static void resume_cb(uv_timer_t *t) {
        struct bulk *b = t->data;

        b->waiting = false;
        bulk_step_later(b);
}

static void bulk_pause(struct bulk *b, uint64_t ms) {
        b->waiting = true;
        uv_idle_stop(&b->step);
        uv_timer_start(&b->resume, resume_cb, ms, 0);
}

static void job_finish(struct bulk *b, struct bulk_job *job, int error) {
        assert(b->head == job);
        b->head = job->next;
        if (!b->head)
                b->tail = NULL;
        if (job->count > 0)
                log_info("%u sessions of user %s ended (%s) in %llu ms.", job->count, job->user_id,
                         engine_end_reason_to_string(job->reason),
                         (unsigned long long) ((uv_hrtime() - job->started_ns) / 1000000));
        if (job->done)
                job->done(error, job->count, job->userdata);
        job_free(job);
}

static void step_cb(uv_idle_t *h) {
        struct bulk *b = h->data;
        struct engine *e = b->d->engine;
        struct bulk_job *job = b->head;
        unsigned n = 0;
        bool more = false;
        int r;

        if (!job || b->closing) {
                uv_idle_stop(h);
                return;
        }
        /* Between units of work only (as the cleanup steps). */
        if (engine_commit_busy(e)) {
                bulk_pause(b, BULK_COMMIT_WAIT_MS);
                return;
        }
        if (engine_has_pending(e))
                return;
        if (store_pace(engine_store(e)) != -EAGAIN)
                job->throttled_ms = 0;
        else if (job->throttled_ms < BULK_THROTTLE_MAX_MS) {
                job->throttled_ms += BULK_THROTTLE_MS;
                bulk_pause(b, BULK_THROTTLE_MS);
                return;
        }
        r = engine_end_user_step(e, clock_now_ms(), job->user_id, job->created_by, job->except_row_key, job->reason,
                                 uv_hrtime() + BULK_STEP_NS, &n, &more);
        job->count += n;
        if (r < 0 || !more) {
                job_finish(b, job, r < 0 ? r : 0);
                if (!b->head) {
                        uv_idle_stop(h);
                        return;
                }
        }
        bulk_pause(b, BULK_REST_MS);
}

static void bulk_step_later(struct bulk *b) {
        if (!b->closing && !b->waiting && !uv_is_active((uv_handle_t *) &b->step))
                uv_idle_start(&b->step, step_cb);
}

int bulk_end_user(struct bulk *b, int64_t now, const char *user_id, int64_t except_row_key,
                  enum engine_end_reason reason, bulk_done_fn done, void *userdata, unsigned *count,
                  struct bulk_job **ret) {
        struct bulk_job *job;
        bool more = false;
        int r;

        assert(b && user_id && done && count && ret);
        *ret = NULL;
        *count = 0;
        if (b->closing)
                return -ECANCELED;
        /* Behind a job already queued for the same user the first step
         * could overtake it: only an idle queue runs it at once. */
        if (!b->head) {
                r = engine_end_user_step(b->d->engine, now, user_id, now, except_row_key, reason,
                                         uv_hrtime() + BULK_STEP_NS, count, &more);
                if (r < 0 || !more)
                        return r;
        }
        job = calloc(1, sizeof *job);
        if (!job)
                return -ENOMEM;
        job->user_id = strdup(user_id);
        if (!job->user_id) {
                free(job);
                return -ENOMEM;
        }
        job->created_by = now;
        job->except_row_key = except_row_key;
        job->reason = reason;
        job->count = *count;
        job->started_ns = uv_hrtime();
        job->done = done;
        job->userdata = userdata;
        if (b->tail)
                b->tail->next = job;
        else
                b->head = job;
        b->tail = job;
        bulk_step_later(b);
        *ret = job;
        return 0;
}

void bulk_forget(struct bulk *b, struct bulk_job *job) {
        (void) b;
        job->done = NULL;
        job->userdata = NULL;
}

static void handle_closed(uv_handle_t *h) {
        struct bulk *b = h->data;

        assert(b->open_handles > 0);
        if (--b->open_handles == 0)
                free(b);
}

int bulk_new(struct daemon *d, struct bulk **ret) {
        struct bulk *b = calloc(1, sizeof *b);

        if (!b)
                return -ENOMEM;
        b->d = d;
        /* Neither fails on a loop that exists (they only fill in the handle). */
        if (uv_idle_init(d->loop, &b->step) < 0 || uv_timer_init(d->loop, &b->resume) < 0)
                abort();
        b->open_handles = 2;
        b->step.data = b->resume.data = b;
        uv_unref((uv_handle_t *) &b->resume);
        *ret = b;
        return 0;
}

void bulk_free(struct bulk *b) {
        if (!b)
                return;
        b->closing = true;
        /* A clean stop finishes what was asked: no deadline now, the loop
         * serves nobody any more; engine_free() commits. */
        while (b->head) {
                struct bulk_job *job = b->head;
                unsigned n = 0;
                bool more = false;
                int r = engine_end_user_step(b->d->engine, job->created_by, job->user_id, job->created_by,
                                             job->except_row_key, job->reason, 0, &n, &more);

                job->count += n;
                job_finish(b, job, r < 0 ? r : -ECANCELED);
        }
        uv_idle_stop(&b->step);
        uv_timer_stop(&b->resume);
        uv_close((uv_handle_t *) &b->step, handle_closed);
        uv_close((uv_handle_t *) &b->resume, handle_closed);
}
