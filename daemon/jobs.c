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
 *                                enforced on existing sessions (a lowered
 *                                limit), in the same time-capped steps.
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
 * The other files of the jobs: jobs-internal.h.
 */
#include "jobs-internal.h"

#include <assert.h>
#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "engine.h"
#include "leader.h"
#include "log.h"
#include "macro.h"
#include "server.h"
#include "store.h"

#define JOBS_JITTER_PERCENT 5

const char *const jobs_job_names[_JOB_MAX] = {"regular", "batch", "deep", "security", "metrics", "health"};

static void job_arm(struct jobs *j, struct job *job);

/* ---- handles ------------------------------------------------------------------ */

void jobs_handle_closed(uv_handle_t *h) {
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
        uv_unref((uv_handle_t *) t);
        j->open_handles++;
        return 0;
}

static void timer_close(uv_timer_t *t) {
        if (t->data && !uv_is_closing((uv_handle_t *) t)) {
                uv_timer_stop(t);
                uv_close((uv_handle_t *) t, jobs_handle_closed);
        }
}

/* ---- events from the engine ------------------------------------------------------ */

static void observer(const struct engine_event *ev, void *userdata) {
        struct jobs *j = userdata;

        metrics_observe(j->metrics, ev);
        events_push_engine(j->events, ev);
}

void jobs_job_done(struct job *job, uint64_t started_ns, const char *fmt, ...) {
        va_list ap;

        job->runs++;
        job->last_duration_ms = (uv_hrtime() - started_ns) / 1000000;
        va_start(ap, fmt);
        vsnprintf(job->last_result, sizeof job->last_result, fmt, ap);
        va_end(ap);
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
                jobs_fire_cleanup(j, job);
                break;
        case JOB_SECURITY:
                job->last_run = now_s();
                jobs_fire_security(j, job);
                break;
        case JOB_METRICS:
                job->last_run = now_s();
                jobs_fire_metrics(j, job);
                break;
        case JOB_HEALTH:
                job->last_run = now_s();
                jobs_fire_health(j, job);
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
        case JOB_REGULAR:
                return c->cleanup.interval;
        case JOB_BATCH:
                return c->cleanup.batch_interval;
        case JOB_DEEP:
                return c->cleanup.deep_interval;
        case JOB_SECURITY:
                return c->security.check_interval;
        case JOB_METRICS:
                return c->monitoring.metrics_interval;
        case JOB_HEALTH:
                return c->monitoring.health_check_interval;
        case _JOB_MAX:
                break;
        }
        return 0;
}

/* interval +- JOBS_JITTER_PERCENT, in ms. */
static uint64_t jittered_ms(int64_t interval_s) {
        uint64_t ms = (uint64_t) interval_s * 1000;
        uint64_t spread = ms * JOBS_JITTER_PERCENT / 100;

        if (spread == 0)
                return ms;
        return ms - spread + randombytes_uniform((uint32_t) (spread * 2 > UINT32_MAX ? UINT32_MAX : spread * 2 + 1));
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
        job->next_run = now_s() + (int64_t) ((ms + 500) / 1000);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void job_timer_closed(uv_handle_t *h) {
        struct job *job = h->data;

        h->data = job->owner;
        jobs_handle_closed(h);
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
                r = events_new(d->loop, (size_t) d->config->monitoring.events_buffer_size, &j->events);
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
                uv_unref((uv_handle_t *) &j->step);
                j->open_handles++;
                r = timer_open(j, &j->trigger);
        }
        if (r >= 0)
                r = timer_open(j, &j->resume);
        if (r >= 0)
                r = timer_open(j, &j->lag);
        if (r >= 0)
                jobs_turn_open(j);
        for (int i = 0; r >= 0 && i < _JOB_MAX; i++) {
                j->job[i].owner = j;
                j->job[i].id = (enum job_id) i;
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
        uv_timer_start(&j->trigger, jobs_trigger_cb, TRIGGER_POLL_MIN_MS, 0);
        jobs_lag_arm(j);
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
        jobs_maintain_detach(j);

        /* Runs end here: their callers hear that they were cancelled. */
        r = j->running;
        j->running = NULL;
        if (r) {
                r->error = -ECANCELED;
                jobs_run_notify(r);
                free(r);
        }
        for (size_t i = 0; i < j->n_queue; i++) {
                j->queue[i]->error = -ECANCELED;
                jobs_run_notify(j->queue[i]);
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
        if (j->step.data && !uv_is_closing((uv_handle_t *) &j->step)) {
                uv_idle_stop(&j->step);
                uv_close((uv_handle_t *) &j->step, jobs_handle_closed);
        }
        timer_close(&j->trigger);
        timer_close(&j->resume);
        timer_close(&j->lag);
        jobs_turn_close(j);
        for (int i = 0; i < _JOB_MAX; i++)
                if (j->job[i].timer.data && !uv_is_closing((uv_handle_t *) &j->job[i].timer)) {
                        uv_timer_stop(&j->job[i].timer);
                        uv_close((uv_handle_t *) &j->job[i].timer, job_timer_closed);
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
                        log_info("Job %s: every %llds", jobs_job_names[i], (long long) job->interval);
                else
                        log_info("Job %s: off", jobs_job_names[i]);
        }
        jobs_lag_arm(j);

        r = metrics_config_changed(j->metrics);
        if (r >= 0)
                r = events_set_capacity(j->events, (size_t) c->monitoring.events_buffer_size);
        if (r < 0)
                log_warning_errno(r, "Failed to resize the metrics or events buffer: %m");

        /* Checks that are off can no longer resolve their alerts. */
        if (c->monitoring.metrics_collection && !metrics_was_on)
                metrics_window_restart(j->metrics);
        if (!c->monitoring.metrics_collection) {
                metrics_history_clear(j->metrics);
                for (size_t i = 0; jobs_threshold_alerts[i]; i++)
                        jobs_alert_set(j, jobs_threshold_alerts[i], false, 0, 0, NULL, now);
        }
        if (!c->monitoring.health_checks) {
                static const char *const components[] = {"health_database", "health_cleanup", "health_security",
                                                         "health_loop"};
                for (size_t i = 0; i < sizeof components / sizeof components[0]; i++)
                        jobs_alert_set(j, components[i], false, 0, 0, NULL, now);
                j->health_known = false;
                j->health_summary[0] = '\0';
        }
        if (!c->security.suspicious_detection) {
                jobs_alert_set(j, "suspicious_users", false, 0, 0, NULL, now);
                j->suspicious_users = 0;
        }
        events_push(j->events, now, "config_reloaded", NULL, NULL,
                    json_pack("{s:I}", "reloads", (json_int_t) j->d->reloads));
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
                .health_status = j->health_known ? (int) j->health : -1,
        };
}

static json_t *time_or_null(int64_t t) {
        return t > 0 ? json_integer(t) : json_null();
}

int jobs_status(struct jobs *j, int64_t now, json_t *status) {
        _cleanup_json_ json_t *jobs = json_object(), *queued = json_array();

        (void) now;
        if (!jobs || !queued)
                return -ENOMEM;
        for (int i = 0; i < _JOB_MAX; i++) {
                const struct job *job = &j->job[i];
                _cleanup_json_ json_t *o =
                        json_pack("{s:b, s:I, s:o, s:o, s:I, s:s?, s:I}", "enabled", job->enabled, "interval",
                                  (json_int_t) job->interval, "last_run", time_or_null(job->last_run), "next_run",
                                  time_or_null(job->enabled ? job->next_run : 0), "last_duration_ms",
                                  (json_int_t) job->last_duration_ms, "last_result",
                                  job->runs ? job->last_result : NULL, "runs", (json_int_t) job->runs);

                if (!o)
                        return -ENOMEM;
                if (job_is_cleanup(job->id) &&
                    json_object_set_new(o, "last_longest_step_us", json_integer((json_int_t) job->last_step_max_us)) <
                            0)
                        return -ENOMEM;
                if (json_object_set(jobs, jobs_job_names[i], o) < 0)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < j->n_queue; i++)
                json_array_append_new(queued, json_string(metrics_cleanup_kind_to_string(j->queue[i]->kind)));
        if (json_object_set(status, "jobs", jobs) < 0)
                return -ENOMEM;
        if (json_object_set_new(status, "cleanup",
                                json_pack("{s:s?, s:O, s:I, s:I, s:o, s:I, s:f}", "running",
                                          j->running ? metrics_cleanup_kind_to_string(j->running->kind) : NULL,
                                          "queued", queued, "awaiting", (json_int_t) j->awaiting, "trigger_threshold",
                                          (json_int_t) cfg(j)->cleanup.trigger_threshold, "counted_at",
                                          time_or_null(j->awaiting_at), "poll_interval_ms", (json_int_t) j->poll_ms,
                                          "poll_scan_ms", j->poll_scan_ms)) < 0)
                return -ENOMEM;
        if (j->health_known)
                json_object_set_new(status, "health", json_string(health_status_to_string(j->health)));
        json_object_set_new(status, "alerts_firing", json_integer(alerts_firing(j->alerts)));
        return 0;
}

void jobs_status_line(struct jobs *j, char *buf, size_t size) {
        if (!j || !j->health_known || j->health == HEALTH_HEALTHY) {
                if (size)
                        buf[0] = '\0';
                return;
        }
        snprintf(buf, size, "health %s: %s", health_status_to_string(j->health), j->health_summary);
}
