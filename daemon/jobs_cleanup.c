/* Cleanup runs of the background jobs (jobs-internal.h: the other files).
 *
 * Cleanup runs. A run (regular, batch or deep; from a timer, the trigger or
 * Admin.Cleanup) is a small state machine that does one step per loop
 * iteration from an idle handle: the step's writes go into the unit of work
 * that main hands off at the end of the iteration (the same unit as the
 * requests of that iteration, never one of its own) and the requests that
 * arrived meanwhile are answered before the next step. Ending expired
 * sessions is the expensive part (10 to 30 us a session, mostly the
 * store's update of its ended-row indexes), so
 * a step of that phase (and of the batch run's per-user limit, which ends
 * sessions the same way) ends after CLEANUP_STEP_NS of loop time as well as
 * at the end of a batch, and the run then rests CLEANUP_REST_MS while the
 * loop serves requests alone (with 50 busy clients a step in every
 * iteration still doubled the latency of each; at 250 us out of every
 * 1.25 ms or more, the cleanup takes a fifth of the loop at most). A batch
 * of cleanup.batch_size sessions thus spans several steps, and
 * cleanup.max_batches still counts whole batches (the time cap makes steps
 * smaller, never a run shorter). A step also waits
 * (CLEANUP_THROTTLE_MS at a time, CLEANUP_THROTTLE_MAX_MS at most, then
 * no more until the backend has caught up: a reader that holds it back
 * must not slow the run to a crawl) while store_pace() says so (a large
 * cleanup writes faster than requests do: the backend decides how fast it
 * can take it; see daemon/store/). The batch size is read when a batch
 * begins, so a reload in the middle of one changes the next. Runs are
 * queued, one at a time; a kind already waiting is not queued twice.
 *
 * Deep runs. The retention purge deletes rows on the loop (inside the
 * iteration's unit of work), and a DELETE cannot be cut short: a step
 * deletes at most purge_rows rows of each table (sessions, then audit rows
 * when time is left), and the run measures each step with the monotonic
 * clock and sizes the next one so that it takes about three quarters of
 * PURGE_STEP_NS (shrinking at once, growing at most twofold a step, never
 * beyond cleanup.batch_size), resting CLEANUP_REST_MS between steps and
 * pacing itself like the expiry phase. (Before, a step deleted batch_size
 * rows of both tables whatever they cost, and one was measured at 82 ms.)
 * The maintenance then waits for the checkpoint thread to have copied what
 * the purge wrote (store_pace, at most MAINTAIN_PACE_MAX_MS) and holds the
 * loop only for the cheap part of store_maintain_start() (PRAGMA optimize,
 * bounded): the checkpoint that truncates the WAL, with its fsync, runs in
 * the thread pool and never waits for a reader (something in the way: the
 * run pauses and tries again; it was 45 to 66 ms on the loop when it ran
 * there in one piece); the integrity check, which reads
 * the whole store, runs in the thread pool on its own reader, like the
 * health check's. Every run records its longest step on the loop (Status:
 * last_longest_step_us; the cleanup event: longest_step_us).
 */
#include "jobs-internal.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "engine.h"
#include "log.h"
#include "store.h"

#define DEEP_CHECKPOINT_TRIES 50 /* a reader in the way: retried for about 5 s */
#define DEEP_CHECKPOINT_RETRY_MS 100
#define CLEANUP_STEP_NS (250 * 1000) /* loop time of one step ending expired sessions */
#define CLEANUP_REST_MS 1            /* then the loop serves requests only, for this long */
#define CLEANUP_THROTTLE_MS 2
/* A step waits this long when the previous step's unit is still being committed. */
#define CLEANUP_COMMIT_WAIT_MS 1
#define CLEANUP_THROTTLE_MAX_MS 200     /* a reader holds the store back: go on anyway */
#define PURGE_STEP_NS (2 * 1000 * 1000) /* loop time a purge step aims at */
#define PURGE_ROWS_FIRST 16             /* rows per statement of a run's first purge step */
#define MAINTAIN_PACE_MAX_MS 2000       /* waited at most for the checkpoint thread before maintaining */

static void run_pause(struct jobs *j, struct run *r, uint64_t ms);

/* ---- cleanup runs ------------------------------------------------------------------ */

static enum job_id job_of_kind(enum metrics_cleanup_kind k) {
        return k == METRICS_CLEANUP_BATCH ? JOB_BATCH : k == METRICS_CLEANUP_DEEP ? JOB_DEEP : JOB_REGULAR;
}

static struct run *find_queued(struct jobs *j, enum metrics_cleanup_kind kind) {
        for (size_t i = 0; i < j->n_queue; i++)
                if (j->queue[i]->kind == kind)
                        return j->queue[i];
        return NULL;
}

bool jobs_kind_busy(struct jobs *j, enum metrics_cleanup_kind kind) {
        return (j->running && j->running->kind == kind) || find_queued(j, kind);
}

/* Queues a run of kind unless one is waiting already; returns the waiting
 * run (NULL on ENOMEM). */
struct run *jobs_run_queue(struct jobs *j, enum metrics_cleanup_kind kind, const char *reason) {
        struct run *r = find_queued(j, kind);

        if (r)
                return r;
        assert(j->n_queue < _METRICS_CLEANUP_MAX);
        r = calloc(1, sizeof *r);
        if (!r)
                return NULL;
        r->kind = kind;
        r->reason = reason;
        r->phase = kind == METRICS_CLEANUP_DEEP ? PHASE_PURGE : PHASE_EXPIRE;
        j->queue[j->n_queue++] = r;
        jobs_run_step_later(j);
        return r;
}

void jobs_run_notify(struct run *r) {
        struct jobs_cleanup_result res = {
                .error = r->error,
                .ended = r->ended + r->evicted,
                .purged = r->purged_sessions + r->purged_audit,
        };
        struct jobs_waiter *w;

        while ((w = r->waiters)) {
                r->waiters = w->next;
                w->done(&res, w->userdata);
                free(w);
        }
}

static void run_finish(struct jobs *j, struct run *r) {
        struct job *job = &j->job[job_of_kind(r->kind)];
        struct metrics_counters *mc = metrics_counters(j->metrics);
        uint64_t ms = (uv_hrtime() - r->started_ns) / 1000000;
        const char *kind = metrics_cleanup_kind_to_string(r->kind);
        char text[300];

        if (r->error < 0)
                snprintf(text, sizeof text, "failed: %s (ended %u, purged %u)", strerror(-r->error),
                         r->ended + r->evicted, r->purged_sessions + r->purged_audit);
        else if (r->kind == METRICS_CLEANUP_DEEP)
                snprintf(text, sizeof text,
                         "purged %u sessions and %u audit rows; %s; integrity %.80s (maintenance %llu ms; "
                         "longest step: purge %.1f ms, maintenance %.1f ms)",
                         r->purged_sessions, r->purged_audit,
                         r->checkpoint_done ? "store compacted" : "store not compacted (readers)",
                         store_is_memory(engine_store(j->d->engine)) ? "not checked (in memory)"
                         : j->check_ok                               ? "ok"
                                                                     : j->check_message,
                         (unsigned long long) r->maintain_ms, (double) r->purge_max_ns / 1e6,
                         (double) r->maintain_max_ns / 1e6);
        else if (r->kind == METRICS_CLEANUP_BATCH)
                snprintf(text, sizeof text, "ended %u sessions, %u over the per-user limit", r->ended, r->evicted);
        else
                snprintf(text, sizeof text, "ended %u sessions in %u batch%s%s", r->ended, r->batches,
                         r->batches == 1 ? "" : "es", r->more ? "; more remain (cleanup.max_batches)" : "");
        snprintf(job->last_result, sizeof job->last_result, "%.300s (%s)", text, r->reason);
        job->last_run = r->started_at;
        job->last_duration_ms = ms;
        job->last_step_max_us = r->step_max_ns / 1000;
        job->runs++;

        mc->cleanup_runs[r->kind]++;
        mc->cleanup_seconds[r->kind] += (double) ms / 1e3;
        mc->cleanup_ended += r->ended;
        mc->cleanup_evicted += r->evicted;
        mc->cleanup_purged_sessions += r->purged_sessions;
        mc->cleanup_purged_audit += r->purged_audit;
        if (r->error < 0) {
                mc->cleanup_failures++;
                snprintf(j->last_cleanup_error_buf, sizeof j->last_cleanup_error_buf, "%s cleanup: %s", kind,
                         strerror(-r->error));
                j->last_cleanup_error = j->last_cleanup_error_buf;
                log_error("Cleanup (%s, %s) failed after %llu ms: %s", kind, r->reason, (unsigned long long) ms,
                          strerror(-r->error));
        } else {
                j->last_cleanup_error = NULL;
                if (r->ended + r->evicted + r->purged_sessions + r->purged_audit > 0 || r->kind == METRICS_CLEANUP_DEEP)
                        log_info("Cleanup (%s, %s) in %llu ms: %s", kind, r->reason, (unsigned long long) ms, text);
                else
                        log_debug("Cleanup (%s, %s) in %llu ms: nothing to do", kind, r->reason,
                                  (unsigned long long) ms);
        }
        /* An event when something happened (or somebody asked): a quiet
         * timer run would only push the interesting events out of the ring. */
        if (r->error < 0 || r->waiters || strcmp(r->reason, "manual") == 0 ||
            r->ended + r->evicted + r->purged_sessions + r->purged_audit > 0 || r->kind == METRICS_CLEANUP_DEEP)
                events_push(j->events, now_s(), "cleanup", NULL, NULL,
                            json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:I, s:I, s:b, s:s?}", "kind", kind,
                                      "reason", r->reason, "batches", (int) r->batches, "ended", (int) r->ended,
                                      "evicted", (int) r->evicted, "purged_sessions", (int) r->purged_sessions,
                                      "purged_audit", (int) r->purged_audit, "duration_ms", (json_int_t) ms,
                                      "longest_step_us", (json_int_t) (r->step_max_ns / 1000), "more", r->more, "error",
                                      r->error < 0 ? strerror(-r->error) : NULL));
        jobs_run_notify(r);
        jobs_maintain_detach(j);
        free(r);
}

/* Whether the run may write to the store in this step. Only between units
 * of work: a timer before us may have written in this iteration (the loop
 * step hands that off), or the previous step's unit is being committed
 * (then wait a little rather than spin). And not while the backend asks
 * for a slower pace, but not for ever: a reader that holds it back keeps
 * it behind, and after throttle_max_ms in a row the run goes on unpaced
 * until the backend has caught up. */
static bool run_may_write(struct jobs *j, struct run *r, unsigned throttle_max_ms) {
        struct engine *e = j->d->engine;

        if (engine_commit_busy(e)) {
                run_pause(j, r, CLEANUP_COMMIT_WAIT_MS);
                return false;
        }
        if (engine_has_pending(e))
                return false;
        if (store_pace(engine_store(e)) != -EAGAIN)
                r->throttled_ms = 0;
        else if (r->throttled_ms < throttle_max_ms) {
                r->throttled_ms += CLEANUP_THROTTLE_MS;
                run_pause(j, r, CLEANUP_THROTTLE_MS);
                return false;
        }
        return true;
}

/* The rows per statement of the next purge step, from how long the last
 * one took: scaled to three quarters of PURGE_STEP_NS (room for the
 * variation between steps), at most doubled at a time and only when the
 * count was what stopped the step, within [1, max]. */
static unsigned purge_rows_next(unsigned rows, bool more, uint64_t took_ns, unsigned max) {
        uint64_t next = (uint64_t) rows * (PURGE_STEP_NS * 3 / 4) / (took_ns > 0 ? took_ns : 1);

        if (next > rows && !more)
                next = rows; /* the rows ran out: the time says nothing about a fuller step */
        if (next > (uint64_t) rows * 2)
                next = (uint64_t) rows * 2;
        if (next > max)
                next = max;
        return next > 0 ? (unsigned) next : 1;
}

/* One step of the retention purge: at most purge_rows rows per table,
 * sized so that the step stays within PURGE_STEP_NS of loop time. */
static int purge_step(struct jobs *j, struct run *r, int64_t now, unsigned max) {
        uint64_t t0 = uv_hrtime(), took;
        unsigned s = 0, a = 0;
        bool more = false;
        int rc;

        if (r->purge_rows == 0)
                r->purge_rows = PURGE_ROWS_FIRST;
        if (r->purge_rows > max)
                r->purge_rows = max; /* also a batch_size lowered by a reload */
        rc = engine_purge_until(j->d->engine, now, r->purge_rows, t0 + PURGE_STEP_NS, &s, &a, &more);
        took = uv_hrtime() - t0;
        if (took > r->purge_max_ns)
                r->purge_max_ns = took;
        r->batches++;
        r->purged_sessions += s;
        r->purged_audit += a;
        if (rc < 0)
                return rc;
        r->purge_rows = purge_rows_next(r->purge_rows, more, took, max);
        if (!more)
                r->phase = PHASE_MAINTAIN;
        return 0;
}

/* The outcome of a maintenance step, on the loop. Something in the way (a
 * reader): the run pauses and tries again, never waiting on the loop. */
static void maintain_result(struct jobs *j, struct run *r, int rc) {
        r->checkpoint_done = rc == 0;
        if (rc == -EBUSY) {
                /* A reader (an integrity check, analytics, a backup) is in
                 * the way: never wait for it on the loop. */
                if (r->checkpoint_tries < DEEP_CHECKPOINT_TRIES) {
                        run_pause(j, r, DEEP_CHECKPOINT_RETRY_MS);
                        return;
                }
                log_notice("Deep cleanup: the store could not be compacted (readers kept it busy); "
                           "its background maintenance goes on.");
                rc = 0;
        }
        if (rc < 0) {
                r->error = rc;
                r->phase = PHASE_DONE;
        } else
                r->phase = PHASE_CHECK;
        jobs_run_step_later(j);
}

static void maintain_done(int result, void *userdata) {
        struct maintain_req *m = userdata;
        struct jobs *j = m->j;
        struct run *r = j ? j->running : NULL;

        if (j)
                j->maintain = NULL;
        if (r && r->phase == PHASE_MAINTAIN && r->waiting) {
                r->waiting = false;
                r->maintain_ms += (uv_hrtime() - m->started_ns) / 1000000;
                maintain_result(j, r, result);
        }
        free(m);
}

/* The run no longer hears of the maintenance step in flight (it ended or
 * the jobs are going): the step frees itself when it is done. */
void jobs_maintain_detach(struct jobs *j) {
        if (j->maintain)
                j->maintain->j = NULL;
        j->maintain = NULL;
}

/* One step of the store's maintenance, once the checkpoint thread has
 * copied what the purge wrote (or MAINTAIN_PACE_MAX_MS went by): the
 * step itself then has little left to copy. The loop holds only the
 * cheap part (store_maintain_start: PRAGMA optimize); the truncating
 * checkpoint runs off the loop and maintain_done() resumes the run. Its
 * time on the loop is the run's maintenance step, its time to done goes
 * into maintain_ms. */
static int maintain_step(struct jobs *j, struct run *r) {
        struct store *st = engine_store(j->d->engine);
        struct maintain_req *m;
        uint64_t t0 = uv_hrtime(), took;
        int rc;

        assert(!j->maintain);
        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        *m = (struct maintain_req){.j = j, .started_ns = t0};
        j->maintain = m;
        r->waiting = true; /* maintain_done() resumes the run */
        uv_idle_stop(&j->step);
        /* (Without a loop done has run, and freed m, when this returns.) */
        rc = store_maintain_start(st, r->checkpoint_tries++ == 0, maintain_done, m);
        took = uv_hrtime() - t0;
        if (rc < 0) {
                j->maintain = NULL;
                free(m);
                r->waiting = false;
                return rc;
        }
        if (took > r->maintain_max_ns)
                r->maintain_max_ns = took;
        return 0;
}

/* One batch of the current run. */
static void run_batch(struct jobs *j, struct run *r) {
        const struct sessiond_config *c = cfg(j);
        struct engine *e = j->d->engine;
        unsigned limit = c->cleanup.batch_size > UINT32_MAX ? UINT32_MAX : (unsigned) c->cleanup.batch_size;
        int64_t now = clock_now_ms(); /* the engine's now: Unix milliseconds */
        unsigned n = 0;
        bool more = false;
        int rc = 0;

        switch (r->phase) {
        case PHASE_EXPIRE:
                if (!run_may_write(j, r, CLEANUP_THROTTLE_MAX_MS))
                        return;
                if (r->in_batch == 0)
                        r->batch_limit = limit;
                assert(r->in_batch < r->batch_limit);
                rc = engine_cleanup_expired_until(e, now, r->batch_limit - r->in_batch, uv_hrtime() + CLEANUP_STEP_NS,
                                                  &n, &more);
                r->ended += n;
                r->in_batch += n;
                if (rc < 0) {
                        r->batches++;
                        break;
                }
                if (more && r->in_batch < r->batch_limit) {
                        run_pause(j, r, CLEANUP_REST_MS); /* the batch goes on in the next step */
                        return;
                }
                r->batches++;
                r->in_batch = 0;
                if (r->kind == METRICS_CLEANUP_REGULAR) {
                        if (!more)
                                r->phase = PHASE_DONE;
                        else if ((int64_t) r->batches >= c->cleanup.max_batches) {
                                r->more = true;
                                r->phase = PHASE_DONE;
                        }
                } else if (!more)
                        r->phase = PHASE_LIMIT;
                if (r->phase == PHASE_EXPIRE) {
                        run_pause(j, r, CLEANUP_REST_MS); /* the next batch */
                        return;
                }
                break;
        case PHASE_LIMIT:
                /* Like the expiry: time-capped steps, a rest between them. */
                if (!run_may_write(j, r, CLEANUP_THROTTLE_MAX_MS))
                        return;
                if (r->in_batch == 0)
                        r->batch_limit = limit;
                assert(r->in_batch < r->batch_limit);
                rc = engine_enforce_user_limit_until(e, now, r->batch_limit - r->in_batch,
                                                     uv_hrtime() + CLEANUP_STEP_NS, &n, &more);
                r->evicted += n;
                r->in_batch += n;
                if (rc < 0) {
                        r->batches++;
                        break;
                }
                if (!more || r->in_batch >= r->batch_limit) {
                        r->batches++;
                        r->in_batch = 0;
                }
                if (!more) {
                        r->phase = PHASE_DONE;
                        break;
                }
                run_pause(j, r, CLEANUP_REST_MS); /* the next step */
                return;
        case PHASE_PURGE:
                if (!run_may_write(j, r, CLEANUP_THROTTLE_MAX_MS))
                        return;
                rc = purge_step(j, r, now, limit);
                if (rc >= 0 && r->phase == PHASE_PURGE) {
                        run_pause(j, r, CLEANUP_REST_MS); /* the next step */
                        return;
                }
                break;
        case PHASE_MAINTAIN:
                if (!run_may_write(j, r, MAINTAIN_PACE_MAX_MS))
                        return;
                rc = maintain_step(j, r);
                if (rc >= 0)
                        return;
                break;
        case PHASE_CHECK:
                if (store_is_memory(engine_store(e))) {
                        r->phase = PHASE_DONE; /* nothing on disk to check */
                        break;
                }
                if (j->check) { /* the health check's: wait for it */
                        run_pause(j, r, DEEP_CHECKPOINT_RETRY_MS);
                        return;
                }
                rc = jobs_check_start(j, true);
                if (rc >= 0) {
                        r->waiting = true; /* check_after() resumes the run */
                        uv_idle_stop(&j->step);
                        return;
                }
                break;
        case PHASE_DONE:
                break;
        }
        if (rc < 0) {
                r->error = rc;
                r->phase = PHASE_DONE;
        }
}

static void step_cb(uv_idle_t *h) {
        struct jobs *j = h->data;
        struct run *r;

        if (j->closing)
                return;
        if (!j->running) {
                if (j->n_queue == 0) {
                        uv_idle_stop(h);
                        return;
                }
                r = j->queue[0];
                memmove(j->queue, j->queue + 1, (j->n_queue - 1) * sizeof j->queue[0]);
                j->n_queue--;
                r->started_ns = uv_hrtime();
                r->started_at = now_s();
                j->running = r;
        }
        r = j->running;
        if (r->waiting && !j->d->stopping) {
                uv_idle_stop(h);
                return;
        }
        if (j->d->stopping) {
                r->error = -ECANCELED;
                r->phase = PHASE_DONE;
        } else {
                uint64_t t0 = uv_hrtime(), took;

                run_batch(j, r);
                took = uv_hrtime() - t0;
                j->turn_step_ns += took;
                if (took > r->step_max_ns)
                        r->step_max_ns = took;
        }
        if (r->phase == PHASE_DONE) {
                j->running = NULL;
                run_finish(j, r);
        }
        if (!j->running && j->n_queue == 0)
                uv_idle_stop(h);
}

/* An idle handle runs once per loop iteration, before the loop polls for
 * I/O (without blocking while it is active): one batch, then the requests
 * that came in, then the commit of both. (A zero timer restarted from its
 * own callback would run again in the same iteration with libuv 1.44.) */
void jobs_run_step_later(struct jobs *j) {
        if (!j->closing && !uv_is_active((uv_handle_t *) &j->step))
                uv_idle_start(&j->step, step_cb);
}

static void resume_cb(uv_timer_t *t) {
        struct jobs *j = t->data;

        if (j->running)
                j->running->waiting = false;
        jobs_run_step_later(j);
}

/* The run waits ms before its next step (the loop sleeps meanwhile). */
static void run_pause(struct jobs *j, struct run *r, uint64_t ms) {
        r->waiting = true;
        uv_idle_stop(&j->step);
        uv_timer_start(&j->resume, resume_cb, ms, 0);
}

int jobs_cleanup(struct jobs *j, enum metrics_cleanup_kind kind, jobs_cleanup_fn done, void *userdata,
                 struct jobs_waiter **ret) {
        struct jobs_waiter *w;
        struct run *r;

        assert(j && done);
        if (j->closing || j->d->stopping)
                return -ECANCELED;
        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        r = jobs_run_queue(j, kind, "manual");
        if (!r) {
                free(w);
                return -ENOMEM;
        }
        w->done = done;
        w->userdata = userdata;
        w->next = r->waiters;
        r->waiters = w;
        if (ret)
                *ret = w;
        return 0;
}

static bool unlink_waiter(struct run *r, struct jobs_waiter *w) {
        for (struct jobs_waiter **p = r ? &r->waiters : NULL; p && *p; p = &(*p)->next)
                if (*p == w) {
                        *p = w->next;
                        free(w);
                        return true;
                }
        return false;
}

void jobs_cleanup_forget(struct jobs *j, struct jobs_waiter *w) {
        if (unlink_waiter(j->running, w))
                return;
        for (size_t i = 0; i < j->n_queue; i++)
                if (unlink_waiter(j->queue[i], w))
                        return;
}

void jobs_fire_cleanup(struct jobs *j, struct job *job) {
        enum metrics_cleanup_kind kind = job->id == JOB_BATCH  ? METRICS_CLEANUP_BATCH
                                         : job->id == JOB_DEEP ? METRICS_CLEANUP_DEEP
                                                               : METRICS_CLEANUP_REGULAR;

        if (jobs_kind_busy(j, kind)) {
                log_debug("%s cleanup timer: a run of that kind is still waiting or running", jobs_job_names[job->id]);
                return;
        }
        if (!jobs_run_queue(j, kind, "timer"))
                log_error("Out of memory starting the %s cleanup", jobs_job_names[job->id]);
}
