/* Health: see health.h for the rules.
 *
 * Every rule is written as "the worst thing found wins": each component
 * starts healthy with an empty message and each finding can only make it
 * worse, appending its sentence to the message. That keeps the rules
 * independent of each other and their order.
 */
#include "health.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *health_status_to_string(enum health_status s) {
        switch (s) {
        case HEALTH_HEALTHY:
                return "healthy";
        case HEALTH_DEGRADED:
                return "degraded";
        case HEALTH_UNHEALTHY:
                return "unhealthy";
        }
        return "unhealthy";
}

enum health_status health_worst(enum health_status a, enum health_status b) {
        return a > b ? a : b;
}

int health_component_add(json_t *components, const char *name, enum health_status status, const char *message,
                         json_t *fields, enum health_status *overall) {
        json_t *c = fields ? fields : json_object();

        if (!c)
                return -ENOMEM;
        if (json_object_set_new(c, "status", json_string(health_status_to_string(status))) < 0 ||
            json_object_set_new(c, "message", json_string(message ? message : "")) < 0 ||
            json_object_set_new(components, name, c) < 0)
                return -ENOMEM;
        if (overall)
                *overall = health_worst(*overall, status);
        return 0;
}

/* A component being judged: its status so far and its message. */
struct verdict {
        enum health_status status;
        char message[512];
};

static void find(struct verdict *v, enum health_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void find(struct verdict *v, enum health_status s, const char *fmt, ...) {
        size_t n = strlen(v->message);
        va_list ap;

        v->status = health_worst(v->status, s);
        if (n > 0 && n + 2 < sizeof v->message) {
                strcpy(v->message + n, "; ");
                n += 2;
        }
        va_start(ap, fmt);
        vsnprintf(v->message + n, sizeof v->message - n, fmt, ap);
        va_end(ap);
}

static int add(json_t *components, const char *name, struct verdict *v, json_t *fields, enum health_status *overall) {
        if (!fields)
                return -ENOMEM;
        return health_component_add(components, name, v->status, v->message, fields, overall);
}

static int database(const struct health_inputs *in, json_t *components, enum health_status *overall) {
        struct verdict v = {0};
        json_t *f;

        if (in->probe_error < 0)
                find(&v, HEALTH_UNHEALTHY, "the database does not answer: %s", strerror(-in->probe_error));
        else if (in->probe_ms > HEALTH_DB_SLOW_MS)
                find(&v, HEALTH_DEGRADED, "the database answered in %.0f ms (slow above %.0f ms)", in->probe_ms,
                     HEALTH_DB_SLOW_MS);
        if (in->check_known && !in->check_ok)
                find(&v, HEALTH_UNHEALTHY, "the integrity check failed: %s",
                     in->check_message ? in->check_message : "?");
        if (in->storage_error == -ENOSPC || in->storage_error == -EDQUOT)
                find(&v, HEALTH_UNHEALTHY, "writes fail: the file system is full (%s)", strerror(-in->storage_error));
        else if (in->storage_error < 0)
                find(&v, HEALTH_UNHEALTHY, "writes fail: %s", strerror(-in->storage_error));
        if (in->commit_failures > 0)
                find(&v, HEALTH_DEGRADED, "%llu commit%s failed since the last check",
                     (unsigned long long) in->commit_failures, in->commit_failures == 1 ? "" : "s");
        if (in->in_memory && v.status == HEALTH_HEALTHY)
                find(&v, HEALTH_HEALTHY, "sessions are kept in memory (features.persistence = false)");

        f = json_pack("{s:f, s:b}", "latency_ms", in->probe_ms, "in_memory", in->in_memory);
        if (f && in->db_size_bytes >= 0)
                json_object_set_new(f, "size_bytes", json_integer(in->db_size_bytes));
        if (f && in->check_known)
                json_object_set_new(f, "integrity_check",
                                    json_pack("{s:s, s:I}", "result", in->check_message ? in->check_message : "?", "at",
                                              (json_int_t) in->check_at));
        if (f)
                json_object_set_new(f, "commit_failures", json_integer((json_int_t) in->commit_failures));
        return add(components, "database", &v, f, overall);
}

static int cleanup(const struct health_inputs *in, json_t *components, enum health_status *overall) {
        const struct sessiond_config *c = in->config;
        struct verdict v = {0};

        if ((int64_t) in->awaiting_cleanup > c->cleanup.max_expired_threshold)
                find(&v, HEALTH_DEGRADED, "%llu sessions await cleanup (above cleanup.max_expired_threshold %lld)%s",
                     (unsigned long long) in->awaiting_cleanup, (long long) c->cleanup.max_expired_threshold,
                     in->background_cleanup ? "" : "; background cleanup is off (features.background_cleanup)");
        if (in->cleanup_failed)
                find(&v, HEALTH_DEGRADED, "the last cleanup failed: %s", in->cleanup_error ? in->cleanup_error : "?");
        return add(components, "cleanup", &v,
                   json_pack("{s:I, s:I, s:I, s:b}", "awaiting", (json_int_t) in->awaiting_cleanup, "trigger_threshold",
                             (json_int_t) c->cleanup.trigger_threshold, "max_expired_threshold",
                             (json_int_t) c->cleanup.max_expired_threshold, "background", in->background_cleanup),
                   overall);
}

static int security(const struct health_inputs *in, json_t *components, enum health_status *overall) {
        const struct sessiond_config *c = in->config;
        bool production = c->environment == SESSIOND_ENV_PRODUCTION;
        enum health_status off = production ? HEALTH_DEGRADED : HEALTH_HEALTHY;
        struct verdict v = {0};

        if (!c->security.fingerprinting)
                find(&v, off, "fingerprinting is off%s", production ? " in production" : "");
        if (!c->security.suspicious_detection)
                find(&v, off, "suspicious activity detection is off%s", production ? " in production" : "");
        if (!c->security.audit_logging)
                find(&v, off, "audit logging is off%s", production ? " in production" : "");
        if (production && c->debug_mode)
                find(&v, HEALTH_DEGRADED, "debug mode is on in production (debug_mode = true)");
        if (in->suspicious_users > 0)
                find(&v, HEALTH_DEGRADED, "%u user%s at or above the suspicious activity threshold (%lld an hour)",
                     in->suspicious_users, in->suspicious_users == 1 ? "" : "s",
                     (long long) c->security.suspicious_activity_threshold);
        return add(components, "security", &v,
                   json_pack("{s:b, s:b, s:b, s:b, s:i}", "fingerprinting", c->security.fingerprinting,
                             "suspicious_detection", c->security.suspicious_detection, "audit_logging",
                             c->security.audit_logging, "debug_mode", c->debug_mode, "suspicious_users",
                             (int) in->suspicious_users),
                   overall);
}

static int loop(const struct health_inputs *in, json_t *components, enum health_status *overall) {
        struct verdict v = {0};
        json_t *f;

        if (!in->lag_measured) {
                /* On, but no sample yet (the first moments after start). */
                if (in->config->monitoring.performance_monitoring)
                        find(&v, HEALTH_HEALTHY, "not measured yet");
                else
                        find(&v, HEALTH_HEALTHY, "not measured (monitoring.performance_monitoring = false)");
                return add(components, "loop", &v, json_object(), overall);
        }
        if (in->lag_max_ms > HEALTH_LAG_UNHEALTHY_MS)
                find(&v, HEALTH_UNHEALTHY, "the event loop was blocked for %.0f ms", in->lag_max_ms);
        else if (in->lag_max_ms > HEALTH_LAG_DEGRADED_MS)
                find(&v, HEALTH_DEGRADED, "the event loop was late by %.0f ms", in->lag_max_ms);
        f = json_pack("{s:f}", "lag_max_ms", in->lag_max_ms);
        return add(components, "loop", &v, f, overall);
}

json_t *health_evaluate(const struct health_inputs *in, enum health_status *ret_status) {
        enum health_status overall = HEALTH_HEALTHY;
        json_t *components = json_object();

        assert(in && in->config && ret_status);
        if (!components)
                return NULL;
        if (database(in, components, &overall) < 0 || cleanup(in, components, &overall) < 0 ||
            security(in, components, &overall) < 0 || loop(in, components, &overall) < 0) {
                json_decref(components);
                return NULL;
        }
        *ret_status = overall;
        return components;
}
