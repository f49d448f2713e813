/* io.sessiond.Admin: the observability methods.
 *
 * Health, Metrics, Alerts, Events, Audit, Cleanup and Analytics, and what
 * Status shows of the background jobs and of the configuration's origin.
 * The state lives in the jobs (jobs.h); these handlers read it and shape
 * the replies of io.sessiond.Admin.varlink.
 *
 * Choices where the interface leaves room:
 *   Health    always evaluated on demand (a database probe, counts from
 *             memory, the newest integrity check), also with
 *             monitoring.health_checks off: the switch stops the periodic
 *             check, never the answer.
 *   Metrics   always answers the current values; "history" is empty and
 *             "collecting" false with monitoring.metrics_collection off.
 *   Audit     the newest `limit` (default 100, at most 10000) matching rows,
 *             listed oldest first; since is Unix seconds (inclusive).
 *   Cleanup   answers when the run is over (it runs in batches, the loop
 *             serving other requests in between): ended and purged counts.
 *   Analytics FeatureDisabled("analytics") with features.analytics off;
 *             computed off the loop on a database file (see analytics.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alerts.h"
#include "analytics.h"
#include "daemon.h"
#include "engine.h"
#include "events.h"
#include "jobs.h"
#include "methods.h"
#include "metrics.h"
#include "server.h"
#include "store.h"

#define IFACE METHODS_ADMIN_INTERFACE
#define AUDIT_DEFAULT_LIMIT 100
#define AUDIT_MAX_LIMIT 10000
#define AUDIT_KIND_MAX 64

static void invalid_argument(struct call *c, const char *field, const char *reason) {
        call_error(c, IFACE ".InvalidArgument", json_pack("{s:s, s:s}", "field", field, "reason", reason));
}

static void reply_errno(struct call *c, int r) {
        methods_reply_error(c, IFACE, r, &(struct engine_error){0});
}

/* ---- Status --------------------------------------------------------------------- */

static json_t *configuration_origin(const struct sessiond_config *c) {
        static const char *const kinds[] = {"default", "profile", "file", "env_file", "environment"};
        json_int_t counts[5] = {0};
        const char *env_file = c->daemon.env_file;
        json_t *o;

        for (size_t i = 0; c->origins && i < sessiond_setting_count(); i++)
                if ((unsigned) c->origins[i].kind < 5)
                        counts[c->origins[i].kind]++;
        o = json_pack("{s:s?, s:s?, s:b, s:s, s:{s:I, s:I, s:I, s:I, s:I}}", "file", c->config_file, "env_file",
                      env_file && *env_file ? env_file : NULL, "env_file_present",
                      env_file && *env_file && access(env_file, R_OK) == 0, "environment",
                      sessiond_environment_to_string(c->environment), "settings_from", kinds[0], counts[0], kinds[1],
                      counts[1], kinds[2], counts[2], kinds[3], counts[3], kinds[4], counts[4]);
        return o;
}

int methods_observe_status(struct daemon *d, json_t *status) {
        const struct sessiond_config *c = d->config;
        json_t *origin = configuration_origin(c);

        if (!origin || json_object_set_new(status, "configuration", origin) < 0)
                return -ENOMEM;
        if (c->daemon.env_file && *c->daemon.env_file)
                json_object_set_new(status, "env_file", json_string(c->daemon.env_file));
        return d->jobs ? jobs_status(d->jobs, methods_now(), status) : 0;
}

/* ---- Health, Metrics, Alerts, Events ------------------------------------------------ */

static void method_health(struct daemon *d, struct call *c) {
        enum health_status st;
        json_t *components = jobs_health(d->jobs, &st);

        if (!components) {
                methods_reply_oom(c);
                return;
        }
        call_reply(c, json_pack("{s:s, s:o}", "status", health_status_to_string(st), "components", components));
}

static void method_metrics(struct daemon *d, struct call *c) {
        const struct sessiond_config *cf = d->config;
        struct metrics_extra x;
        json_t *metrics, *history;

        jobs_metrics_extra(d->jobs, &x);
        metrics = metrics_current(jobs_metrics(d->jobs), methods_now(), &x);
        history = metrics_history(jobs_metrics(d->jobs));
        if (!metrics || !history) {
                json_decref(metrics);
                json_decref(history);
                methods_reply_oom(c);
                return;
        }
        call_reply(c, json_pack("{s:o, s:o, s:b, s:I}", "metrics", metrics, "history", history, "collecting",
                                cf->monitoring.metrics_collection, "interval",
                                (json_int_t) cf->monitoring.metrics_interval));
}

static void method_alerts(struct daemon *d, struct call *c) {
        json_t *alerts = alerts_to_json(jobs_alerts(d->jobs));

        if (!alerts) {
                methods_reply_oom(c);
                return;
        }
        call_reply(c, json_pack("{s:o}", "alerts", alerts));
}

static void method_events(struct daemon *d, struct call *c) {
        events_answer(jobs_events(d->jobs), c);
}

/* ---- Audit -------------------------------------------------------------------------- */

json_t *methods_audit_entry(const struct store_audit_row *row) {
        json_t *detail = row->detail ? json_loads(row->detail, 0, NULL) : json_object();

        if (!json_is_object(detail)) {
                json_decref(detail);
                detail = json_pack("{s:s?}", "text", row->detail);
        }
        return json_pack("{s:I, s:I, s:s, s:s?, s:s?, s:o}", "id", (json_int_t) row->id, "time", (json_int_t) row->time,
                         "kind", row->kind, "user_id", row->user_id, "session_id", row->session_id, "detail",
                         detail ? detail : json_object());
}

static void method_audit(struct daemon *d, struct call *c) {
        struct store_audit_filter f = {.limit = AUDIT_DEFAULT_LIMIT};
        int64_t since = 0, limit = AUDIT_DEFAULT_LIMIT;
        uint64_t seq;
        bool paged;

        if (methods_param_string(c, IFACE, "user_id", false, &f.user_id) == -EINVAL ||
            methods_param_string(c, IFACE, "kind", false, &f.kind) == -EINVAL ||
            methods_param_int(c, "since", &since) == -EINVAL || methods_param_int(c, "limit", &limit) == -EINVAL ||
            methods_param_cursor(c, IFACE, &paged, &f.after_time, &f.after_id) < 0)
                return;
        if (f.user_id && !*f.user_id) {
                invalid_argument(c, "user_id", "must not be empty");
                return;
        }
        if (f.kind && (!*f.kind || strlen(f.kind) > AUDIT_KIND_MAX)) {
                invalid_argument(c, "kind", "must be 1 to 64 characters");
                return;
        }
        if (since < 0) {
                invalid_argument(c, "since", "must not be negative");
                return;
        }
        if (limit < 1 || limit > AUDIT_MAX_LIMIT) {
                invalid_argument(c, "limit", "must be between 1 and 10000");
                return;
        }
        f.since = since;
        f.limit = (unsigned) limit;
        /* The failed validations counted so far are written first, so the
         * listing shows them; the reply waits for their commit. */
        seq = engine_write_seq(d->engine);
        engine_audit_flush(d->engine);
        methods_mark_write(c, d, seq);
        if (paged) {
                methods_audit_page(d, c, IFACE, &f, f.after_time == 0 && f.after_id == 0);
                return;
        }
        /* Without a cursor: every entry in one reply, oldest first, built
         * a page per loop iteration (methods_listing.c). */
        methods_audit_steps(d, c, IFACE, &f);
}

/* ---- Cleanup ------------------------------------------------------------------------- */

struct cleanup_call {
        struct daemon *d;
        struct call *call;
        struct jobs_waiter *waiter;
};

static void cleanup_done(const struct jobs_cleanup_result *r, void *userdata) {
        struct cleanup_call *x = userdata;
        struct call *c = x->call;

        call_set_cancel(c, NULL, NULL);
        free(x);
        if (r->error < 0) {
                if (r->error == -ECANCELED)
                        call_error(c, "io.sessiond.Session.StorageError",
                                   json_pack("{s:s}", "reason", "the daemon is stopping"));
                else
                        reply_errno(c, r->error);
                return;
        }
        /* The last batch is committed with this iteration's writes: the
         * counts go out only if that commit succeeds. */
        call_mark_write(c);
        call_reply(c, json_pack("{s:I, s:I}", "ended", (json_int_t) r->ended, "purged", (json_int_t) r->purged));
}

static void cleanup_cancel(struct call *c, void *userdata) {
        struct cleanup_call *x = userdata;

        (void) c;
        jobs_cleanup_forget(x->d->jobs, x->waiter);
        free(x);
}

static void method_cleanup(struct daemon *d, struct call *c) {
        struct cleanup_call *x;
        enum metrics_cleanup_kind kind;
        const char *k;
        int r;

        if (methods_param_string(c, IFACE, "kind", true, &k) < 0)
                return;
        if (strcmp(k, "regular") == 0)
                kind = METRICS_CLEANUP_REGULAR;
        else if (strcmp(k, "batch") == 0)
                kind = METRICS_CLEANUP_BATCH;
        else if (strcmp(k, "deep") == 0)
                kind = METRICS_CLEANUP_DEEP;
        else {
                invalid_argument(c, "kind", "must be regular, batch or deep");
                return;
        }
        x = calloc(1, sizeof *x);
        if (!x) {
                methods_reply_oom(c);
                return;
        }
        x->d = d;
        x->call = c;
        r = jobs_cleanup(d->jobs, kind, cleanup_done, x, &x->waiter);
        if (r < 0) {
                free(x);
                reply_errno(c, r);
                return;
        }
        call_set_cancel(c, cleanup_cancel, x);
}

/* ---- Analytics ----------------------------------------------------------------------- */

struct platform_ctx {
        json_t *by_platform;
        uint64_t without;
};

static int platform_cb(const char *platform_id, uint64_t count, void *userdata) {
        struct platform_ctx *x = userdata;

        if (!platform_id) {
                x->without += count;
                return 0;
        }
        return json_object_set_new(x->by_platform, platform_id, json_integer((json_int_t) count)) < 0 ? -ENOMEM : 0;
}

static void analytics_reply(struct daemon *d, struct call *c, struct analytics_result *r) {
        struct platform_ctx p = {json_object(), 0};
        json_t *a;

        if (r->error < 0) {
                json_decref(p.by_platform);
                reply_errno(c, r->error == -ENOMEM ? r->error : -EIO);
                return;
        }
        if (!p.by_platform || engine_count_by_platform(d->engine, methods_now_ms(), platform_cb, &p) < 0) {
                json_decref(p.by_platform);
                methods_reply_oom(c);
                return;
        }
        a = analytics_to_json(r, p.by_platform);
        if (!a || json_object_set_new(a, "active_without_platform", json_integer((json_int_t) p.without)) < 0) {
                json_decref(a);
                methods_reply_oom(c);
                return;
        }
        call_reply(c, json_pack("{s:o}", "analytics", a));
}

struct analytics_call {
        struct daemon *d;
        struct call *call;
        struct analytics_job *job;
};

static void analytics_done(struct analytics_result *r, void *userdata) {
        struct analytics_call *x = userdata;

        call_set_cancel(x->call, NULL, NULL);
        analytics_reply(x->d, x->call, r);
        free(x);
}

static void analytics_call_cancel(struct call *c, void *userdata) {
        struct analytics_call *x = userdata;

        (void) c;
        analytics_cancel(x->job);
        free(x);
}

static void method_analytics(struct daemon *d, struct call *c) {
        struct store *s = engine_store(d->engine);
        struct analytics_call *x;
        int r;

        if (!d->config->features.analytics) {
                methods_reply_error(c, IFACE, -EOPNOTSUPP, &(struct engine_error){.feature = "analytics"});
                return;
        }
        if (store_is_memory(s)) {
                struct analytics_result res;

                (void) analytics_compute(s, methods_now(), &res);
                analytics_reply(d, c, &res);
                analytics_result_clear(&res);
                return;
        }
        x = calloc(1, sizeof *x);
        if (!x) {
                methods_reply_oom(c);
                return;
        }
        x->d = d;
        x->call = c;
        r = analytics_start(d->loop, store_locator(s), methods_now(), analytics_done, x, &x->job);
        if (r < 0) {
                free(x);
                reply_errno(c, r);
                return;
        }
        call_set_cancel(c, analytics_call_cancel, x);
}

const struct method methods_observe[] = {
        {"Health", method_health, false},       {"Metrics", method_metrics, false}, {"Alerts", method_alerts, false},
        {"Events", method_events, false},       {"Audit", method_audit, false},     {"Cleanup", method_cleanup, false},
        {"Analytics", method_analytics, false},
};
const size_t methods_observe_count = sizeof methods_observe / sizeof methods_observe[0];
