/* Background jobs: see jobs.h.
 *
 * Every job is a one-shot uv_timer re-armed after each run with its
 * interval from the current configuration plus or minus JOBS_JITTER_PERCENT
 * (so that a fleet of daemons started together does not clean up in
 * lockstep, while a one-second interval in a test stays about a second).
 * A reload re-arms the timers whose interval or switch changed, from the
 * moment of the reload. The first run of each job comes one interval after
 * the start. Every timer is unreferenced: the jobs never keep the loop
 * alive on their own.
 *
 * How each setting is used here:
 *   features.background_cleanup  off: no regular, batch or deep timer and no
 *                                trigger (Admin.Cleanup still runs them).
 *   cleanup.interval             regular cleanup: sessions past their end +
 *                                timeout.cleanup_grace are ended, at most
 *                                cleanup.max_batches batches of
 *                                cleanup.batch_size.
 *   cleanup.batch_interval       batch cleanup: the same until none is left,
 *                                then security.max_concurrent_per_user is
 *                                enforced on existing sessions.
 *   cleanup.deep_interval        deep cleanup: ended sessions older than
 *                                cleanup.expired_retention_days and audit rows
 *                                older than cleanup.audit_retention_days are
 *                                purged in steps of at most batch_size rows
 *                                a table, fewer when that takes longer than
 *                                PURGE_STEP_NS, then the store is maintained
 *                                (store_maintain_start: the truncating
 *                                checkpoint off the loop) and checked.
 *   cleanup.trigger_threshold    the trigger poll starts a regular cleanup at
 *                                once when that many sessions await cleanup.
 *   cleanup.max_expired_threshold above it, the cleanup_backlog alert fires
 *                                and health is degraded.
 *   security.check_interval      security check: the sliding hour of
 *                                suspicious events is pruned and users at or
 *                                above security.suspicious_activity_threshold
 *                                raise the suspicious_users alert and get a
 *                                security_check audit row (security.
 *                                suspicious_detection off: no check).
 *   monitoring.metrics_collection off: no samples, no history, and the five
 *                                threshold alerts are not evaluated (they are
 *                                computed from the samples).
 *   monitoring.metrics_interval  the sample and alert evaluation period.
 *   monitoring.metrics_buffer_size / events_buffer_size: the ring sizes.
 *   monitoring.health_checks     off: no periodic check (no STATUS= health, no
 *                                component alerts); Admin.Health still
 *                                evaluates on demand.
 *   monitoring.health_check_interval: the period of that check, which also
 *                                runs an integrity check off the loop.
 *   monitoring.performance_monitoring off: no request timing, no loop-lag
 *                                probe (health says "not measured").
 *   monitoring.alerts.*          the five thresholds, see metrics.h for the
 *                                one-minute window.
 *
 * Cleanup runs. A run (regular, batch or deep; from a timer, the trigger or
 * Admin.Cleanup) is a small state machine that does one step per loop
 * iteration from an idle handle: the step's writes go into the unit of work
 * that main hands off at the end of the iteration (the same unit as the
 * requests of that iteration, never one of its own) and the requests that
 * arrived meanwhile are answered before the next step. Ending expired
 * sessions is the expensive part (10 to 30 us a session, mostly the
 * store's update of its ended-row indexes), so
 * a step of that phase ends after CLEANUP_STEP_NS of loop time as well as
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
 *
 * The trigger. Counting the sessions that await cleanup is a scan of
 * memory (no SQL), and the poll spaces itself so that the scan takes at
 * most 1% of the loop's time: every second, or every 100 scan durations on
 * a very large store.
 */
#include "jobs.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "alerts.h"
#include "clock.h"
#include "daemon.h"
#include "engine.h"
#include "events.h"
#include "leader.h"
#include "log.h"
#include "server.h"
#include "store.h"

#define JOBS_JITTER_PERCENT 5
#define TRIGGER_POLL_MIN_MS 1000
#define TRIGGER_POLL_MAX_MS 60000
#define TRIGGER_POLL_COST_FACTOR 100 /* poll interval >= 100 x scan time */
#define LAG_PROBE_MS 250
#define SECURITY_LIST_MAX 20 /* users named in an audit row */
#define DEEP_CHECKPOINT_TRIES 50      /* a reader in the way: retried for about 5 s */
#define DEEP_CHECKPOINT_RETRY_MS 100
#define CLEANUP_STEP_NS (250 * 1000)    /* loop time of one step ending expired sessions */
#define CLEANUP_REST_MS 1                /* then the loop serves requests only, for this long */
#define CLEANUP_THROTTLE_MS 2
/* A step waits this long when the previous step's unit is still being committed. */
#define CLEANUP_COMMIT_WAIT_MS 1
#define CLEANUP_THROTTLE_MAX_MS 200     /* a reader holds the store back: go on anyway */
#define PURGE_STEP_NS (2 * 1000 * 1000) /* loop time a purge step aims at */
#define PURGE_ROWS_FIRST 16              /* rows per statement of a run's first purge step */
#define MAINTAIN_PACE_MAX_MS 2000       /* waited at most for the checkpoint thread before maintaining */

enum job_id {
        JOB_REGULAR,
        JOB_BATCH,
        JOB_DEEP,
        JOB_SECURITY,
        JOB_METRICS,
        JOB_HEALTH,
        _JOB_MAX,
};

static const char *const job_names[_JOB_MAX] = {"regular", "batch", "deep", "security", "metrics", "health"};

static bool job_is_cleanup(enum job_id id) {
        return id == JOB_REGULAR || id == JOB_BATCH || id == JOB_DEEP;
}

struct jobs;

struct job {
        struct jobs *owner;
        enum job_id id;
        uv_timer_t timer;
        bool enabled;
        int64_t interval; /* seconds */
        int64_t last_run; /* Unix seconds, 0: never */
        int64_t next_run; /* Unix seconds, 0: not armed */
        uint64_t last_duration_ms;
        uint64_t last_step_max_us; /* cleanup: the longest step of the last run on the loop */
        char last_result[320];
        uint64_t runs;
};

struct jobs_waiter {
        struct jobs_waiter *next;
        jobs_cleanup_fn done;
        void *userdata;
};

enum run_phase {
        PHASE_EXPIRE,   /* end sessions past end + cleanup_grace */
        PHASE_LIMIT,    /* batch: enforce max_concurrent_per_user */
        PHASE_PURGE,    /* deep: retention */
        PHASE_MAINTAIN, /* deep: store_maintain_start(), the heavy part off the loop */
        PHASE_CHECK,    /* deep: the integrity check, in the thread pool */
        PHASE_DONE,
};

struct run {
        enum metrics_cleanup_kind kind;
        const char *reason; /* timer, trigger, manual */
        enum run_phase phase;
        unsigned batches;     /* completed (a batch may span several steps) */
        unsigned in_batch;    /* sessions ended so far in the batch in progress */
        unsigned batch_limit; /* its batch_size, fixed when it began (a reload may change the setting) */
        unsigned throttled_ms; /* waited in a row for the store to catch up */
        unsigned purge_rows;   /* deep: rows per statement of the next purge step (adapted to PURGE_STEP_NS) */
        unsigned steps;        /* steps that did work on the loop */
        uint64_t step_max_ns;  /* the longest of them */
        uint64_t purge_max_ns, maintain_max_ns; /* deep: the longest purge step, maintenance step */
        unsigned ended, evicted, purged_sessions, purged_audit;
        bool more; /* regular: stopped at max_batches with sessions left */
        uint64_t maintain_ms; /* deep: the store's maintenance steps */
        unsigned checkpoint_tries;
        bool checkpoint_done; /* the store's maintenance completed */
        bool waiting;         /* paused: the resume timer restarts it */
        int error;
        uint64_t started_ns;
        int64_t started_at;
        struct jobs_waiter *waiters;
};

/* A maintenance step of the deep cleanup off the loop (store_maintain_start). */
struct maintain_req {
        struct jobs *j; /* NULL once the run or the jobs are gone */
        uint64_t started_ns;
};

/* The integrity check in the thread pool (health, deep cleanup). */
struct check_job {
        uv_work_t work;
        struct jobs *j; /* NULL once the jobs are gone */
        bool deep;      /* for the deep cleanup running now, else for health */
        char *path;
        int error;
        struct store_maintenance result;
};

struct jobs {
        struct daemon *d;
        struct job job[_JOB_MAX];
        uv_idle_t step;     /* drives the current cleanup run: one batch per loop iteration */
        uv_timer_t resume;  /* restarts a paused run */
        uv_timer_t trigger; /* the trigger poll */
        uv_timer_t lag;     /* the loop-lag probe */
        unsigned open_handles;
        bool closing;

        struct run *running;
        struct run *queue[_METRICS_CLEANUP_MAX]; /* FIFO */
        size_t n_queue;
        const char *last_cleanup_error; /* static text of the last failed run, NULL: fine */
        char last_cleanup_error_buf[160];

        /* trigger */
        uint64_t awaiting;     /* at the last poll */
        int64_t awaiting_at;   /* when */
        uint64_t poll_ms;      /* current poll interval */
        double poll_scan_ms;   /* how long the last scan took */

        /* loop lag */
        uint64_t lag_expected_ns;

        /* health */
        enum health_status health;
        bool health_known;
        char health_summary[200];
        bool check_known, check_ok;
        char check_message[256];
        int64_t check_at;
        struct check_job *check;
        struct maintain_req *maintain; /* deep cleanup: the step in flight */
        uint64_t commit_failures_seen;
        unsigned suspicious_users;

        struct metrics *metrics;
        struct alerts *alerts;
        struct events *events;
};

static void run_step_later(struct jobs *j);
static void run_pause(struct jobs *j, struct run *r, uint64_t ms);
static int check_start(struct jobs *j, bool deep);
static void maintain_detach(struct jobs *j);
static void job_arm(struct jobs *j, struct job *job);

static int64_t now_s(void) {
        return clock_now();
}

static const struct sessiond_config *cfg(const struct jobs *j) {
        return j->d->config;
}

/* ---- handles ------------------------------------------------------------------ */

static void handle_closed(uv_handle_t *h) {
        struct jobs *j = h->data;

        assert(j->open_handles > 0);
        if (--j->open_handles == 0) {
                events_free(j->events);
                alerts_free(j->alerts);
                metrics_free(j->metrics);
                free(j);
        }
}

static int timer_open(struct jobs *j, uv_timer_t *t) {
        int r = uv_timer_init(j->d->loop, t);

        if (r < 0)
                return -ENOMEM;
        t->data = j;
        uv_unref((uv_handle_t *)t);
        j->open_handles++;
        return 0;
}

static void timer_close(uv_timer_t *t) {
        if (t->data && !uv_is_closing((uv_handle_t *)t)) {
                uv_timer_stop(t);
                uv_close((uv_handle_t *)t, handle_closed);
        }
}

/* ---- events from the engine ------------------------------------------------------ */

static void observer(const struct engine_event *ev, void *userdata) {
        struct jobs *j = userdata;

        metrics_observe(j->metrics, ev);
        events_push_engine(j->events, ev);
}

/* An alert changed: log (alerts.c did), event. */
static void alert_event(struct jobs *j, enum alert_transition t, const struct alert *al, int64_t now) {
        if (t == ALERT_UNCHANGED || !al)
                return;
        events_push(j->events, now, t == ALERT_RAISED ? "alert_raised" : "alert_resolved", NULL, NULL,
                    alert_to_json(al));
}

static void alert_set(struct jobs *j, const char *name, bool holds, double value, double threshold,
                      const char *message, int64_t now) {
        const struct alert *al = NULL;
        enum alert_transition t = alerts_set(j->alerts, name, holds, value, threshold, message, now, &al);

        alert_event(j, t, al, now);
}

/* ---- request timing (server hook) ------------------------------------------------ */

static void timing(const char *method, uint64_t nsec, void *userdata) {
        struct jobs *j = userdata;

        if (method)
                metrics_request_done(j->metrics, method, nsec);
        else
                metrics_commit_done(j->metrics, nsec);
}

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

static bool kind_busy(struct jobs *j, enum metrics_cleanup_kind kind) {
        return (j->running && j->running->kind == kind) || find_queued(j, kind);
}

/* Queues a run of kind unless one is waiting already; returns the waiting
 * run (NULL on ENOMEM). */
static struct run *run_queue(struct jobs *j, enum metrics_cleanup_kind kind, const char *reason) {
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
        run_step_later(j);
        return r;
}

static void run_notify(struct run *r) {
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
                         (unsigned long long)r->maintain_ms, (double)r->purge_max_ns / 1e6,
                         (double)r->maintain_max_ns / 1e6);
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
        mc->cleanup_seconds[r->kind] += (double)ms / 1e3;
        mc->cleanup_ended += r->ended;
        mc->cleanup_evicted += r->evicted;
        mc->cleanup_purged_sessions += r->purged_sessions;
        mc->cleanup_purged_audit += r->purged_audit;
        if (r->error < 0) {
                mc->cleanup_failures++;
                snprintf(j->last_cleanup_error_buf, sizeof j->last_cleanup_error_buf, "%s cleanup: %s", kind,
                         strerror(-r->error));
                j->last_cleanup_error = j->last_cleanup_error_buf;
                log_error("Cleanup (%s, %s) failed after %llu ms: %s", kind, r->reason, (unsigned long long)ms,
                          strerror(-r->error));
        } else {
                j->last_cleanup_error = NULL;
                if (r->ended + r->evicted + r->purged_sessions + r->purged_audit > 0 || r->kind == METRICS_CLEANUP_DEEP)
                        log_info("Cleanup (%s, %s) in %llu ms: %s", kind, r->reason, (unsigned long long)ms, text);
                else
                        log_debug("Cleanup (%s, %s) in %llu ms: nothing to do", kind, r->reason, (unsigned long long)ms);
        }
        /* An event when something happened (or somebody asked): a quiet
         * timer run would only push the interesting events out of the ring. */
        if (r->error < 0 || r->waiters || strcmp(r->reason, "manual") == 0 ||
            r->ended + r->evicted + r->purged_sessions + r->purged_audit > 0 || r->kind == METRICS_CLEANUP_DEEP)
                events_push(j->events, now_s(), "cleanup", NULL, NULL,
                            json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:I, s:I, s:b, s:s?}", "kind", kind,
                                      "reason", r->reason, "batches", (int)r->batches, "ended", (int)r->ended,
                                      "evicted", (int)r->evicted, "purged_sessions", (int)r->purged_sessions,
                                      "purged_audit", (int)r->purged_audit, "duration_ms", (json_int_t)ms,
                                      "longest_step_us", (json_int_t)(r->step_max_ns / 1000), "more", r->more,
                                      "error", r->error < 0 ? strerror(-r->error) : NULL));
        run_notify(r);
        maintain_detach(j);
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
        uint64_t next = (uint64_t)rows * (PURGE_STEP_NS * 3 / 4) / (took_ns > 0 ? took_ns : 1);

        if (next > rows && !more)
                next = rows; /* the rows ran out: the time says nothing about a fuller step */
        if (next > (uint64_t)rows * 2)
                next = (uint64_t)rows * 2;
        if (next > max)
                next = max;
        return next > 0 ? (unsigned)next : 1;
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
        run_step_later(j);
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
static void maintain_detach(struct jobs *j) {
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
        unsigned limit = c->cleanup.batch_size > UINT32_MAX ? UINT32_MAX : (unsigned)c->cleanup.batch_size;
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
                rc = engine_cleanup_expired_until(e, now, r->batch_limit - r->in_batch,
                                                  uv_hrtime() + CLEANUP_STEP_NS, &n, &more);
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
                        else if ((int64_t)r->batches >= c->cleanup.max_batches) {
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
                rc = engine_enforce_user_limit(e, now, limit, &n, &more);
                r->batches++;
                r->evicted += n;
                if (rc >= 0 && !more)
                        r->phase = PHASE_DONE;
                break;
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
                rc = check_start(j, true);
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
static void run_step_later(struct jobs *j) {
        if (!j->closing && !uv_is_active((uv_handle_t *)&j->step))
                uv_idle_start(&j->step, step_cb);
}

static void resume_cb(uv_timer_t *t) {
        struct jobs *j = t->data;

        if (j->running)
                j->running->waiting = false;
        run_step_later(j);
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
        r = run_queue(j, kind, "manual");
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

/* ---- the timers --------------------------------------------------------------------- */

static void job_done(struct job *job, uint64_t started_ns, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void job_done(struct job *job, uint64_t started_ns, const char *fmt, ...) {
        va_list ap;

        job->runs++;
        job->last_duration_ms = (uv_hrtime() - started_ns) / 1000000;
        va_start(ap, fmt);
        vsnprintf(job->last_result, sizeof job->last_result, fmt, ap);
        va_end(ap);
}

static void fire_cleanup(struct jobs *j, struct job *job) {
        enum metrics_cleanup_kind kind = job->id == JOB_BATCH    ? METRICS_CLEANUP_BATCH
                                         : job->id == JOB_DEEP   ? METRICS_CLEANUP_DEEP
                                                                 : METRICS_CLEANUP_REGULAR;

        if (kind_busy(j, kind)) {
                log_debug("%s cleanup timer: a run of that kind is still waiting or running", job_names[job->id]);
                return;
        }
        if (!run_queue(j, kind, "timer"))
                log_error("Out of memory starting the %s cleanup", job_names[job->id]);
}

struct suspicious_scan {
        int64_t threshold;
        unsigned flagged;
        int64_t max;
        json_t *users; /* [{user_id, count}] of the flagged, up to SECURITY_LIST_MAX */
        char names[160];
};

static int suspicious_cb(const char *user_id, uint64_t count, void *userdata) {
        struct suspicious_scan *x = userdata;
        size_t n;

        if ((int64_t)count < x->threshold)
                return 0;
        x->flagged++;
        if ((int64_t)count > x->max)
                x->max = count;
        if (x->users && json_array_size(x->users) < SECURITY_LIST_MAX)
                json_array_append_new(x->users, json_pack("{s:s, s:I}", "user_id", user_id, "count", (json_int_t)count));
        n = strlen(x->names);
        if (n + 4 < sizeof x->names)
                snprintf(x->names + n, sizeof x->names - n, "%s%s (%llu)", n ? ", " : "", user_id,
                         (unsigned long long)count);
        return 0;
}

static void fire_security(struct jobs *j, struct job *job) {
        const struct sessiond_config *c = cfg(j);
        struct engine *e = j->d->engine;
        uint64_t t0 = uv_hrtime();
        int64_t now = now_s();
        struct suspicious_scan x = {.threshold = c->security.suspicious_activity_threshold, .users = json_array()};
        char message[ALERTS_MESSAGE_MAX];

        engine_security_sweep(e, clock_now_ms());
        engine_suspicious_users(e, clock_now_ms(), suspicious_cb, &x);
        j->suspicious_users = x.flagged;
        metrics_counters(j->metrics)->security_checks++;
        snprintf(message, sizeof message, "%u user%s at or above %lld suspicious events in an hour: %s", x.flagged,
                 x.flagged == 1 ? "" : "s", (long long)x.threshold, x.names);
        alert_set(j, "suspicious_users", x.flagged > 0, (double)x.max, (double)x.threshold, message, now);
        if (x.flagged > 0) {
                int r = engine_audit(e, clock_now_ms(), "security_check", NULL, NULL,
                                     json_pack("{s:i, s:I, s:O}", "flagged", (int)x.flagged, "threshold",
                                               (json_int_t)x.threshold, "users", x.users ? x.users : json_array()));
                if (r < 0)
                        log_warning_errno(r, "Failed to write the security_check audit row: %m");
                events_push(j->events, now, "security_check", NULL, NULL,
                            json_pack("{s:i, s:I, s:O}", "flagged", (int)x.flagged, "threshold", (json_int_t)x.threshold,
                                      "users", x.users ? x.users : json_array()));
        }
        json_decref(x.users);
        job_done(job, t0, x.flagged ? "%u user%s flagged" : "no user at the threshold", x.flagged,
                 x.flagged == 1 ? "" : "s");
}

static void fire_metrics(struct jobs *j, struct job *job) {
        const struct sessiond_config *c = cfg(j);
        uint64_t t0 = uv_hrtime();
        int64_t now = now_s();
        struct metrics_extra x;
        struct metrics_rates rt;
        char msg[ALERTS_MESSAGE_MAX];
        int r;

        jobs_metrics_extra(j, &x);
        r = metrics_sample(j->metrics, now, &x, &rt);
        if (r < 0) {
                job_done(job, t0, "failed: %s", strerror(-r));
                return;
        }
        snprintf(msg, sizeof msg, "%.0f sessions created in the last minute (threshold %.1f)", rt.created,
                 c->monitoring.alerts.creation_rate);
        alert_set(j, "creation_rate", rt.created > c->monitoring.alerts.creation_rate, rt.created,
                  c->monitoring.alerts.creation_rate, msg, now);
        snprintf(msg, sizeof msg, "%.1f%% of %.0f validations failed in the last minute (threshold %.1f%%)",
                 isnan(rt.failure_percent) ? 0 : rt.failure_percent, rt.validations, c->monitoring.alerts.failure_rate);
        alert_set(j, "failure_rate", !isnan(rt.failure_percent) && rt.failure_percent > c->monitoring.alerts.failure_rate,
                  isnan(rt.failure_percent) ? 0 : rt.failure_percent, c->monitoring.alerts.failure_rate, msg, now);
        snprintf(msg, sizeof msg, "sessions that ended in the last minute lasted %.0f s on average (threshold %.0f s)",
                 isnan(rt.mean_duration) ? 0 : rt.mean_duration, c->monitoring.alerts.avg_duration);
        alert_set(j, "avg_duration", !isnan(rt.mean_duration) && rt.mean_duration > c->monitoring.alerts.avg_duration,
                  isnan(rt.mean_duration) ? 0 : rt.mean_duration, c->monitoring.alerts.avg_duration, msg, now);
        snprintf(msg, sizeof msg, "%llu active sessions (threshold %.0f)", (unsigned long long)rt.active,
                 c->monitoring.alerts.concurrent_sessions);
        alert_set(j, "concurrent_sessions", (double)rt.active > c->monitoring.alerts.concurrent_sessions,
                  (double)rt.active, c->monitoring.alerts.concurrent_sessions, msg, now);
        snprintf(msg, sizeof msg, "%.0f suspicious events in the last minute (threshold %.1f)", rt.suspicious,
                 c->monitoring.alerts.suspicious_rate);
        alert_set(j, "suspicious_rate", rt.suspicious > c->monitoring.alerts.suspicious_rate, rt.suspicious,
                  c->monitoring.alerts.suspicious_rate, msg, now);
        job_done(job, t0, "sampled: %.0f created, %.0f validations in the last minute", rt.created, rt.validations);
}

/* The five threshold alerts: evaluated on the metrics tick only. */
static const char *const threshold_alerts[] = {"creation_rate", "failure_rate", "avg_duration", "concurrent_sessions",
                                               "suspicious_rate", NULL};

/* ---- health -------------------------------------------------------------------------- */

static void health_inputs(struct jobs *j, struct health_inputs *in, bool periodic, uint64_t *commit_failures) {
        struct engine *e = j->d->engine;
        struct store *s = engine_store(e);
        const struct engine_counters *ec = engine_get_counters(e);
        uint64_t t0;

        memset(in, 0, sizeof *in);
        in->config = cfg(j);
        in->in_memory = store_is_memory(s);
        t0 = uv_hrtime();
        in->probe_error = store_probe(s);
        in->probe_ms = (double)(uv_hrtime() - t0) / 1e6;
        in->db_size_bytes = -1;
        in->check_known = j->check_known;
        in->check_ok = j->check_ok;
        in->check_message = j->check_message;
        in->check_at = j->check_at;
        in->commit_failures = ec->commit_failures - j->commit_failures_seen;
        in->storage_error = engine_storage_error(e);
        *commit_failures = ec->commit_failures;
        in->awaiting_cleanup = engine_count_awaiting_cleanup(e, clock_now_ms());
        in->cleanup_failed = j->last_cleanup_error != NULL;
        in->cleanup_error = j->last_cleanup_error;
        in->background_cleanup = cfg(j)->features.background_cleanup;
        in->suspicious_users = cfg(j)->security.suspicious_detection ? j->suspicious_users : 0;
        in->lag_max_ms = metrics_take_health_lag(j->metrics, &in->lag_measured, periodic);
}

json_t *jobs_health(struct jobs *j, enum health_status *status) {
        /* Without periodic checks, each call is the check: "since the last
         * check" then means since the previous call. */
        bool is_check = !cfg(j)->monitoring.health_checks;
        struct health_inputs in;
        json_t *components;
        uint64_t cf;

        health_inputs(j, &in, is_check, &cf);
        components = health_evaluate(&in, status);
        if (components && is_check)
                j->commit_failures_seen = cf;
        return components;
}

/* After a periodic evaluation: STATUS=, transitions, component alerts. */
static void health_apply(struct jobs *j, json_t *components, enum health_status st, int64_t now) {
        const char *name;
        json_t *comp;
        char summary[sizeof j->health_summary] = "";

        json_object_foreach(components, name, comp) {
                const char *cs = json_string_value(json_object_get(comp, "status"));
                const char *msg = json_string_value(json_object_get(comp, "message"));
                char alert_name[ALERTS_NAME_MAX];
                size_t n = strlen(summary);

                if (cs && strcmp(cs, "healthy") != 0 && n + 8 < sizeof summary)
                        snprintf(summary + n, sizeof summary - n, "%s%s: %s", n ? "; " : "", name, msg ? msg : cs);
                snprintf(alert_name, sizeof alert_name, "health_%s", name);
                alert_set(j, alert_name, cs && strcmp(cs, "unhealthy") == 0, 2, 2,
                          msg && *msg ? msg : "component unhealthy", now);
        }
        if (!j->health_known || st != j->health) {
                if (j->health_known) {
                        if (st > j->health)
                                log_warning("Health %s: %s", health_status_to_string(st), summary);
                        else
                                log_notice("Health %s%s%s", health_status_to_string(st), *summary ? ": " : "", summary);
                }
                events_push(j->events, now, "health_changed", NULL, NULL,
                            json_pack("{s:s, s:s?, s:s}", "status", health_status_to_string(st), "previous",
                                      j->health_known ? health_status_to_string(j->health) : NULL, "summary", summary));
        }
        j->health = st;
        j->health_known = true;
        snprintf(j->health_summary, sizeof j->health_summary, "%s", summary);
        daemon_status_update(j->d);
}

static void health_run(struct jobs *j, struct job *job, uint64_t t0) {
        struct health_inputs in;
        enum health_status st;
        json_t *components;
        uint64_t cf;

        health_inputs(j, &in, true, &cf);
        components = health_evaluate(&in, &st);
        if (!components) {
                job_done(job, t0, "failed: %s", strerror(ENOMEM));
                return;
        }
        j->commit_failures_seen = cf;
        metrics_counters(j->metrics)->health_checks++;
        health_apply(j, components, st, now_s());
        json_decref(components);
        job_done(job, t0, "%s%s%s", health_status_to_string(st), *j->health_summary ? ": " : "", j->health_summary);
}

static void check_work(uv_work_t *w) {
        struct check_job *c = w->data;
        struct store *s = NULL;

        c->error = store_reader_open(c->path, &s);
        if (c->error < 0)
                return;
        c->error = store_check_integrity(s, &c->result);
        store_close(s);
}

static void check_after(uv_work_t *w, int status) {
        struct check_job *c = w->data;
        struct jobs *j = c->j;

        if (status < 0 && c->error == 0)
                c->error = -ECANCELED;
        if (j) {
                j->check = NULL;
                if (c->error == 0) {
                        j->check_known = true;
                        j->check_ok = c->result.ok;
                        snprintf(j->check_message, sizeof j->check_message, "%s", c->result.message);
                        j->check_at = now_s();
                        if (!c->result.ok)
                                log_error("Database integrity check failed: %s", c->result.message);
                } else
                        log_warning_errno(c->error, "Database integrity check could not run: %m");
                if (c->deep) {
                        struct run *r = j->running;

                        if (r && r->phase == PHASE_CHECK && r->waiting) {
                                r->waiting = false;
                                r->error = c->error;
                                r->phase = PHASE_DONE;
                                run_step_later(j);
                        }
                } else if (!j->closing)
                        health_run(j, &j->job[JOB_HEALTH], uv_hrtime());
        }
        free(c->path);
        free(c);
}

/* The integrity check reads the whole file: in the thread pool, on its own
 * read-only connection, so that the loop keeps serving meanwhile. */
static int check_start(struct jobs *j, bool deep) {
        struct store *s = engine_store(j->d->engine);
        struct check_job *c;

        assert(!j->check && !store_is_memory(s));
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->path = strdup(store_locator(s));
        c->work.data = c;
        c->j = j;
        c->deep = deep;
        if (!c->path || uv_queue_work(j->d->loop, &c->work, check_work, check_after) < 0) {
                int r = c->path ? -EIO : -ENOMEM;

                free(c->path);
                free(c);
                return r;
        }
        j->check = c;
        return 0;
}

static void fire_health(struct jobs *j, struct job *job) {
        if (j->check)
                return; /* a check is still running: its verdict comes then */
        /* With a database file the verdict follows the integrity check; a
         * store in memory has no file to check. */
        if (store_is_memory(engine_store(j->d->engine)) || check_start(j, false) < 0)
                health_run(j, job, uv_hrtime());
}

/* ---- the trigger and the loop-lag probe -------------------------------------------------- */

static void trigger_cb(uv_timer_t *t) {
        struct jobs *j = t->data;
        const struct sessiond_config *c = cfg(j);
        uint64_t t0 = uv_hrtime(), scan_ns, next;
        int64_t now = now_s();
        char msg[ALERTS_MESSAGE_MAX];

        j->awaiting = engine_count_awaiting_cleanup(j->d->engine, clock_now_ms());
        j->awaiting_at = now;
        scan_ns = uv_hrtime() - t0;
        j->poll_scan_ms = (double)scan_ns / 1e6;

        snprintf(msg, sizeof msg, "%llu sessions await cleanup (cleanup.max_expired_threshold %lld)%s",
                 (unsigned long long)j->awaiting, (long long)c->cleanup.max_expired_threshold,
                 c->features.background_cleanup ? "" : "; background cleanup is off");
        alert_set(j, "cleanup_backlog", (int64_t)j->awaiting > c->cleanup.max_expired_threshold, (double)j->awaiting,
                  (double)c->cleanup.max_expired_threshold, msg, now);

        if (c->features.background_cleanup && (int64_t)j->awaiting >= c->cleanup.trigger_threshold &&
            !kind_busy(j, METRICS_CLEANUP_REGULAR) && !kind_busy(j, METRICS_CLEANUP_BATCH) && !j->d->stopping) {
                log_info("%llu sessions await cleanup (cleanup.trigger_threshold %lld): starting a regular cleanup now",
                         (unsigned long long)j->awaiting, (long long)c->cleanup.trigger_threshold);
                if (run_queue(j, METRICS_CLEANUP_REGULAR, "trigger"))
                        metrics_counters(j->metrics)->cleanup_triggered++;
        }

        next = scan_ns / 1000000 * TRIGGER_POLL_COST_FACTOR;
        if (next < TRIGGER_POLL_MIN_MS)
                next = TRIGGER_POLL_MIN_MS;
        if (next > TRIGGER_POLL_MAX_MS)
                next = TRIGGER_POLL_MAX_MS;
        j->poll_ms = next;
        uv_timer_start(t, trigger_cb, next, 0);
}

static void lag_cb(uv_timer_t *t) {
        struct jobs *j = t->data;
        uint64_t now = uv_hrtime();

        if (j->lag_expected_ns && now > j->lag_expected_ns)
                metrics_loop_lag(j->metrics, now - j->lag_expected_ns);
        else if (j->lag_expected_ns)
                metrics_loop_lag(j->metrics, 0);
        j->lag_expected_ns = now + (uint64_t)LAG_PROBE_MS * 1000000;
}

static void lag_arm(struct jobs *j) {
        bool on = cfg(j)->monitoring.performance_monitoring;

        if (on && !uv_is_active((uv_handle_t *)&j->lag)) {
                j->lag_expected_ns = uv_hrtime() + (uint64_t)LAG_PROBE_MS * 1000000;
                uv_timer_start(&j->lag, lag_cb, LAG_PROBE_MS, LAG_PROBE_MS);
        } else if (!on && uv_is_active((uv_handle_t *)&j->lag)) {
                uv_timer_stop(&j->lag);
                j->lag_expected_ns = 0;
        }
        if (j->d->server)
                server_set_timing(j->d->server, on ? timing : NULL, on ? j : NULL);
}

/* ---- arming ------------------------------------------------------------------------------- */

/* The jobs that change the shared store for every daemon of a fleet. */
static bool job_for_the_fleet(enum job_id id) {
        return id == JOB_REGULAR || id == JOB_BATCH || id == JOB_DEEP || id == JOB_SECURITY;
}

static void job_cb(uv_timer_t *t) {
        struct job *job = t->data;
        struct jobs *j = job->owner;

        job->next_run = 0;
        if (j->closing || j->d->stopping)
                return;
        if (job_for_the_fleet(job->id) && !leader_is_me(j->d->leader)) {
                /* features.clustering: the leader runs it for every daemon (leader.c). */
                job_arm(j, job);
                return;
        }
        switch (job->id) {
        case JOB_REGULAR:
        case JOB_BATCH:
        case JOB_DEEP:
                fire_cleanup(j, job);
                break;
        case JOB_SECURITY:
                job->last_run = now_s();
                fire_security(j, job);
                break;
        case JOB_METRICS:
                job->last_run = now_s();
                fire_metrics(j, job);
                break;
        case JOB_HEALTH:
                job->last_run = now_s();
                fire_health(j, job);
                break;
        case _JOB_MAX:
                break;
        }
        job_arm(j, job);
}

static bool job_wanted(const struct jobs *j, enum job_id id) {
        const struct sessiond_config *c = cfg(j);

        switch (id) {
        case JOB_REGULAR:
        case JOB_BATCH:
        case JOB_DEEP:
                return c->features.background_cleanup;
        case JOB_SECURITY:
                return c->security.suspicious_detection;
        case JOB_METRICS:
                return c->monitoring.metrics_collection;
        case JOB_HEALTH:
                return c->monitoring.health_checks;
        case _JOB_MAX:
                break;
        }
        return false;
}

static int64_t job_interval(const struct jobs *j, enum job_id id) {
        const struct sessiond_config *c = cfg(j);

        switch (id) {
        case JOB_REGULAR: return c->cleanup.interval;
        case JOB_BATCH: return c->cleanup.batch_interval;
        case JOB_DEEP: return c->cleanup.deep_interval;
        case JOB_SECURITY: return c->security.check_interval;
        case JOB_METRICS: return c->monitoring.metrics_interval;
        case JOB_HEALTH: return c->monitoring.health_check_interval;
        case _JOB_MAX: break;
        }
        return 0;
}

/* interval +- JOBS_JITTER_PERCENT, in ms. */
static uint64_t jittered_ms(int64_t interval_s) {
        uint64_t ms = (uint64_t)interval_s * 1000;
        uint64_t spread = ms * JOBS_JITTER_PERCENT / 100;

        if (spread == 0)
                return ms;
        return ms - spread + randombytes_uniform((uint32_t)(spread * 2 > UINT32_MAX ? UINT32_MAX : spread * 2 + 1));
}

static void job_arm(struct jobs *j, struct job *job) {
        uint64_t ms;

        if (j->closing)
                return;
        job->enabled = job_wanted(j, job->id);
        job->interval = job_interval(j, job->id);
        if (!job->enabled || job->interval <= 0) {
                uv_timer_stop(&job->timer);
                job->next_run = 0;
                return;
        }
        ms = jittered_ms(job->interval);
        uv_timer_start(&job->timer, job_cb, ms, 0);
        job->next_run = now_s() + (int64_t)((ms + 500) / 1000);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void job_timer_closed(uv_handle_t *h) {
        struct job *job = h->data;

        h->data = job->owner;
        handle_closed(h);
}

int jobs_new(struct daemon *d, struct jobs **ret) {
        struct jobs *j;
        int r;

        assert(d && d->engine && d->loop);
        j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        j->d = d;
        j->check_known = true; /* the store passed a quick check when it opened */
        j->check_ok = true;
        snprintf(j->check_message, sizeof j->check_message, "ok");
        j->check_at = d->started_at;
        j->commit_failures_seen = engine_get_counters(d->engine)->commit_failures;
        j->poll_ms = TRIGGER_POLL_MIN_MS;

        r = metrics_new(d, &j->metrics);
        if (r >= 0)
                r = alerts_new(&j->alerts);
        if (r >= 0)
                r = events_new(d->loop, (size_t)d->config->monitoring.events_buffer_size, &j->events);
        if (r < 0) {
                events_free(j->events);
                alerts_free(j->alerts);
                metrics_free(j->metrics);
                free(j);
                return log_error_errno(r, "Failed to set up the background jobs: %m");
        }

        /* From here on every handle opened is closed by jobs_free(). */
        r = uv_idle_init(d->loop, &j->step) < 0 ? -ENOMEM : 0;
        if (r >= 0) {
                j->step.data = j;
                uv_unref((uv_handle_t *)&j->step);
                j->open_handles++;
                r = timer_open(j, &j->trigger);
        }
        if (r >= 0)
                r = timer_open(j, &j->resume);
        if (r >= 0)
                r = timer_open(j, &j->lag);
        for (int i = 0; r >= 0 && i < _JOB_MAX; i++) {
                j->job[i].owner = j;
                j->job[i].id = (enum job_id)i;
                r = timer_open(j, &j->job[i].timer);
                if (r >= 0)
                        j->job[i].timer.data = &j->job[i];
        }
        if (r >= 0)
                r = engine_add_observer(d->engine, observer, NULL, j);
        if (r < 0) {
                jobs_free(j);
                return log_error_errno(r, "Failed to set up the background jobs: %m");
        }

        for (int i = 0; i < _JOB_MAX; i++)
                job_arm(j, &j->job[i]);
        uv_timer_start(&j->trigger, trigger_cb, TRIGGER_POLL_MIN_MS, 0);
        lag_arm(j);
        if (!d->config->monitoring.metrics_collection)
                log_notice("monitoring.metrics_collection is off: no metric history and no threshold alerts.");
        *ret = j;
        return 0;
}

void jobs_free(struct jobs *j) {
        struct run *r;

        if (!j)
                return;
        assert(!j->closing);
        j->closing = true;
        if (j->d->engine)
                engine_remove_observer(j->d->engine, observer, j);
        if (j->d->server)
                server_set_timing(j->d->server, NULL, NULL);
        if (j->check)
                j->check->j = NULL; /* it frees itself when its thread is done */
        j->check = NULL;
        maintain_detach(j);

        /* Runs end here: their callers hear that they were cancelled. */
        r = j->running;
        j->running = NULL;
        if (r) {
                r->error = -ECANCELED;
                run_notify(r);
                free(r);
        }
        for (size_t i = 0; i < j->n_queue; i++) {
                j->queue[i]->error = -ECANCELED;
                run_notify(j->queue[i]);
                free(j->queue[i]);
        }
        j->n_queue = 0;

        if (j->open_handles == 0) {
                events_free(j->events);
                alerts_free(j->alerts);
                metrics_free(j->metrics);
                free(j);
                return;
        }
        if (j->step.data && !uv_is_closing((uv_handle_t *)&j->step)) {
                uv_idle_stop(&j->step);
                uv_close((uv_handle_t *)&j->step, handle_closed);
        }
        timer_close(&j->trigger);
        timer_close(&j->resume);
        timer_close(&j->lag);
        for (int i = 0; i < _JOB_MAX; i++)
                if (j->job[i].timer.data && !uv_is_closing((uv_handle_t *)&j->job[i].timer)) {
                        uv_timer_stop(&j->job[i].timer);
                        uv_close((uv_handle_t *)&j->job[i].timer, job_timer_closed);
                }
}

void jobs_config_changed(struct jobs *j) {
        const struct sessiond_config *c = cfg(j);
        bool metrics_was_on = j->job[JOB_METRICS].enabled;
        int64_t now = now_s();
        int r;

        for (int i = 0; i < _JOB_MAX; i++) {
                struct job *job = &j->job[i];

                if (job->enabled == job_wanted(j, job->id) && job->interval == job_interval(j, job->id))
                        continue;
                job_arm(j, job);
                if (job->enabled)
                        log_info("Job %s: every %llds", job_names[i], (long long)job->interval);
                else
                        log_info("Job %s: off", job_names[i]);
        }
        lag_arm(j);

        r = metrics_config_changed(j->metrics);
        if (r >= 0)
                r = events_set_capacity(j->events, (size_t)c->monitoring.events_buffer_size);
        if (r < 0)
                log_warning_errno(r, "Failed to resize the metrics or events buffer: %m");

        /* Checks that are off can no longer resolve their alerts. */
        if (c->monitoring.metrics_collection && !metrics_was_on)
                metrics_window_restart(j->metrics);
        if (!c->monitoring.metrics_collection) {
                metrics_history_clear(j->metrics);
                for (size_t i = 0; threshold_alerts[i]; i++)
                        alert_set(j, threshold_alerts[i], false, 0, 0, NULL, now);
        }
        if (!c->monitoring.health_checks) {
                static const char *const components[] = {"health_database", "health_cleanup", "health_security",
                                                         "health_loop"};
                for (size_t i = 0; i < sizeof components / sizeof components[0]; i++)
                        alert_set(j, components[i], false, 0, 0, NULL, now);
                j->health_known = false;
                j->health_summary[0] = '\0';
        }
        if (!c->security.suspicious_detection) {
                alert_set(j, "suspicious_users", false, 0, 0, NULL, now);
                j->suspicious_users = 0;
        }
        events_push(j->events, now, "config_reloaded", NULL, NULL, json_pack("{s:I}", "reloads", (json_int_t)j->d->reloads));
}

/* ---- accessors ------------------------------------------------------------------------------ */

struct metrics *jobs_metrics(struct jobs *j) {
        return j->metrics;
}

struct alerts *jobs_alerts(struct jobs *j) {
        return j->alerts;
}

struct events *jobs_events(struct jobs *j) {
        return j->events;
}

void jobs_metrics_extra(struct jobs *j, struct metrics_extra *ret) {
        *ret = (struct metrics_extra){
                .alerts_firing = alerts_firing(j->alerts),
                .event_followers = events_followers(j->events),
                .events_total = events_total(j->events),
                .health_status = j->health_known ? (int)j->health : -1,
        };
}

static json_t *time_or_null(int64_t t) {
        return t > 0 ? json_integer(t) : json_null();
}

int jobs_status(struct jobs *j, int64_t now, json_t *status) {
        json_t *jobs = json_object(), *queued = json_array();

        (void)now;
        if (!jobs || !queued)
                goto fail;
        for (int i = 0; i < _JOB_MAX; i++) {
                const struct job *job = &j->job[i];
                json_t *o = json_pack("{s:b, s:I, s:o, s:o, s:I, s:s?, s:I}", "enabled", job->enabled, "interval",
                                      (json_int_t)job->interval, "last_run", time_or_null(job->last_run), "next_run",
                                      time_or_null(job->enabled ? job->next_run : 0), "last_duration_ms",
                                      (json_int_t)job->last_duration_ms, "last_result",
                                      job->runs ? job->last_result : NULL, "runs", (json_int_t)job->runs);

                if (o && job_is_cleanup(job->id) &&
                    json_object_set_new(o, "last_longest_step_us", json_integer((json_int_t)job->last_step_max_us)) < 0) {
                        json_decref(o);
                        o = NULL;
                }
                if (!o || json_object_set_new(jobs, job_names[i], o) < 0)
                        goto fail;
        }
        for (size_t i = 0; i < j->n_queue; i++)
                json_array_append_new(queued, json_string(metrics_cleanup_kind_to_string(j->queue[i]->kind)));
        if (json_object_set_new(status, "jobs", jobs) < 0)
                goto fail_jobs_set;
        jobs = NULL;
        if (json_object_set_new(status, "cleanup",
                                json_pack("{s:s?, s:o, s:I, s:I, s:o, s:I, s:f}", "running",
                                          j->running ? metrics_cleanup_kind_to_string(j->running->kind) : NULL,
                                          "queued", queued, "awaiting", (json_int_t)j->awaiting, "trigger_threshold",
                                          (json_int_t)cfg(j)->cleanup.trigger_threshold, "counted_at",
                                          time_or_null(j->awaiting_at), "poll_interval_ms", (json_int_t)j->poll_ms,
                                          "poll_scan_ms", j->poll_scan_ms)) < 0)
                return -ENOMEM;
        if (j->health_known)
                json_object_set_new(status, "health", json_string(health_status_to_string(j->health)));
        json_object_set_new(status, "alerts_firing", json_integer(alerts_firing(j->alerts)));
        return 0;
fail:
        json_decref(jobs);
fail_jobs_set:
        json_decref(queued);
        return -ENOMEM;
}

void jobs_status_line(struct jobs *j, char *buf, size_t size) {
        if (!j || !j->health_known || j->health == HEALTH_HEALTHY) {
                if (size)
                        buf[0] = '\0';
                return;
        }
        snprintf(buf, size, "health %s: %s", health_status_to_string(j->health), j->health_summary);
}
