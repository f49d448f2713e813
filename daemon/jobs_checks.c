/* The checks of the background jobs (jobs-internal.h: the other files):
 * the security check (the sliding hour of suspicious events pruned, users
 * at or above security.suspicious_activity_threshold raise the
 * suspicious_users alert and get a security_check audit row), the metrics
 * tick (a sample, then the five threshold alerts computed from it), and
 * health: the periodic evaluation (STATUS=, transitions, component alerts)
 * after an integrity check that reads the whole store in the thread pool on
 * a reader of its own, never on the loop (the deep cleanup runs the same
 * check through jobs_check_start()). Every alert goes through
 * jobs_alert_set(), which also pushes the alert's event.
 */
#include "jobs-internal.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "engine.h"
#include "log.h"
#include "store.h"

#define SECURITY_LIST_MAX 20 /* users named in an audit row */

/* ---- alerts ---------------------------------------------------------------------------- */
/* An alert changed: log (alerts.c did), event. */
static void alert_event(struct jobs *j, enum alert_transition t, const struct alert *al, int64_t now) {
        if (t == ALERT_UNCHANGED || !al)
                return;
        events_push(j->events, now, t == ALERT_RAISED ? "alert_raised" : "alert_resolved", NULL, NULL,
                    alert_to_json(al));
}

void jobs_alert_set(struct jobs *j, const char *name, bool holds, double value, double threshold, const char *message,
                    int64_t now) {
        const struct alert *al = NULL;
        enum alert_transition t = alerts_set(j->alerts, name, holds, value, threshold, message, now, &al);

        alert_event(j, t, al, now);
}

/* ---- the security check and the metrics tick ---------------------------------------- */

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

        if ((int64_t) count < x->threshold)
                return 0;
        x->flagged++;
        if ((int64_t) count > x->max)
                x->max = count;
        if (x->users && json_array_size(x->users) < SECURITY_LIST_MAX)
                json_array_append_new(x->users,
                                      json_pack("{s:s, s:I}", "user_id", user_id, "count", (json_int_t) count));
        n = strlen(x->names);
        if (n + 4 < sizeof x->names)
                snprintf(x->names + n, sizeof x->names - n, "%s%s (%llu)", n ? ", " : "", user_id,
                         (unsigned long long) count);
        return 0;
}

void jobs_fire_security(struct jobs *j, struct job *job) {
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
                 x.flagged == 1 ? "" : "s", (long long) x.threshold, x.names);
        jobs_alert_set(j, "suspicious_users", x.flagged > 0, (double) x.max, (double) x.threshold, message, now);
        if (x.flagged > 0) {
                int r = engine_audit(e, clock_now_ms(), "security_check", NULL, NULL,
                                     json_pack("{s:i, s:I, s:O}", "flagged", (int) x.flagged, "threshold",
                                               (json_int_t) x.threshold, "users", x.users ? x.users : json_array()));
                if (r < 0)
                        log_warning_errno(r, "Failed to write the security_check audit row: %m");
                events_push(j->events, now, "security_check", NULL, NULL,
                            json_pack("{s:i, s:I, s:O}", "flagged", (int) x.flagged, "threshold",
                                      (json_int_t) x.threshold, "users", x.users ? x.users : json_array()));
        }
        json_decref(x.users);
        jobs_job_done(job, t0, x.flagged ? "%u user%s flagged" : "no user at the threshold", x.flagged,
                      x.flagged == 1 ? "" : "s");
}

void jobs_fire_metrics(struct jobs *j, struct job *job) {
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
                jobs_job_done(job, t0, "failed: %s", strerror(-r));
                return;
        }
        snprintf(msg, sizeof msg, "%.0f sessions created in the last minute (threshold %.1f)", rt.created,
                 c->monitoring.alerts.creation_rate);
        jobs_alert_set(j, "creation_rate", rt.created > c->monitoring.alerts.creation_rate, rt.created,
                       c->monitoring.alerts.creation_rate, msg, now);
        snprintf(msg, sizeof msg, "%.1f%% of %.0f validations failed in the last minute (threshold %.1f%%)",
                 isnan(rt.failure_percent) ? 0 : rt.failure_percent, rt.validations, c->monitoring.alerts.failure_rate);
        jobs_alert_set(j, "failure_rate",
                       !isnan(rt.failure_percent) && rt.failure_percent > c->monitoring.alerts.failure_rate,
                       isnan(rt.failure_percent) ? 0 : rt.failure_percent, c->monitoring.alerts.failure_rate, msg, now);
        snprintf(msg, sizeof msg, "sessions that ended in the last minute lasted %.0f s on average (threshold %.0f s)",
                 isnan(rt.mean_duration) ? 0 : rt.mean_duration, c->monitoring.alerts.avg_duration);
        jobs_alert_set(j, "avg_duration",
                       !isnan(rt.mean_duration) && rt.mean_duration > c->monitoring.alerts.avg_duration,
                       isnan(rt.mean_duration) ? 0 : rt.mean_duration, c->monitoring.alerts.avg_duration, msg, now);
        snprintf(msg, sizeof msg, "%llu active sessions (threshold %.0f)", (unsigned long long) rt.active,
                 c->monitoring.alerts.concurrent_sessions);
        jobs_alert_set(j, "concurrent_sessions", (double) rt.active > c->monitoring.alerts.concurrent_sessions,
                       (double) rt.active, c->monitoring.alerts.concurrent_sessions, msg, now);
        snprintf(msg, sizeof msg, "%.0f suspicious events in the last minute (threshold %.1f)", rt.suspicious,
                 c->monitoring.alerts.suspicious_rate);
        jobs_alert_set(j, "suspicious_rate", rt.suspicious > c->monitoring.alerts.suspicious_rate, rt.suspicious,
                       c->monitoring.alerts.suspicious_rate, msg, now);
        jobs_job_done(job, t0, "sampled: %.0f created, %.0f validations in the last minute", rt.created,
                      rt.validations);
}

/* The five threshold alerts: evaluated on the metrics tick only. */
const char *const jobs_threshold_alerts[] = {"creation_rate",       "failure_rate",    "avg_duration",
                                             "concurrent_sessions", "suspicious_rate", NULL};

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
        in->probe_ms = (double) (uv_hrtime() - t0) / 1e6;
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
                jobs_alert_set(j, alert_name, cs && strcmp(cs, "unhealthy") == 0, 2, 2,
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
                jobs_job_done(job, t0, "failed: %s", strerror(ENOMEM));
                return;
        }
        j->commit_failures_seen = cf;
        metrics_counters(j->metrics)->health_checks++;
        health_apply(j, components, st, now_s());
        json_decref(components);
        jobs_job_done(job, t0, "%s%s%s", health_status_to_string(st), *j->health_summary ? ": " : "",
                      j->health_summary);
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
                                jobs_run_step_later(j);
                        }
                } else if (!j->closing)
                        health_run(j, &j->job[JOB_HEALTH], uv_hrtime());
        }
        free(c->path);
        free(c);
}

/* The integrity check reads the whole file: in the thread pool, on its own
 * read-only connection, so that the loop keeps serving meanwhile. */
int jobs_check_start(struct jobs *j, bool deep) {
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

void jobs_fire_health(struct jobs *j, struct job *job) {
        if (j->check)
                return; /* a check is still running: its verdict comes then */
        /* With a database file the verdict follows the integrity check; a
         * store in memory has no file to check. */
        if (store_is_memory(engine_store(j->d->engine)) || jobs_check_start(j, false) < 0)
                health_run(j, job, uv_hrtime());
}
