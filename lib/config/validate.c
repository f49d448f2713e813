/* Validation (DESIGN 2.5): the rules between settings, all issues at once.
 *
 * Loading has already checked each value on its own (syntax, type, range);
 * here we check what only makes sense together: timeouts that contradict
 * each other, intervals in the wrong order, limits that are not positive,
 * and the fleet's settings that need one another (DESIGN 8). Each message
 * starts with the guide's wording where the guide has one, then names
 * every setting involved with its value and where that value came from,
 * e.g.
 *   Idle timeout should be less than session lifetime
 *   (timeout.idle_timeout=90000 from environment,
 *    timeout.session_lifetime=86400 from profile development)
 * so the operator knows which line or variable to change.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Maximum length of a Unix socket path, without the final NUL. */
#define SOCKET_PATH_MAX 107

/* The rings of the metrics history and of the events are allocated whole
 * (a pointer a slot) and fill up to this many JSON values, each up to a few
 * KiB: 100,000 metrics samples are 69 days at the default interval. A
 * larger value would only let a typo take gigabytes. */
#define BUFFER_SIZE_MAX 100000

struct validator {
        const struct sessiond_config *c;
        struct sessiond_issues *issues;
};

/* "timeout.idle_timeout=90000 from environment" */
static char *describe(const struct sessiond_config *c, const char *path) {
        int idx = sessiond_setting_find(path);
        _cleanup_free_ char *value = NULL, *origin = NULL;
        char *out = NULL;

        if (idx < 0)
                return strdup(path);
        value = sessiond_config_value_to_string(c, (size_t) idx);
        origin = sessiond_origin_to_string(&c->origins[idx]);
        if (asprintf(&out, "%s=%s from %s", path, value ? value : "?", origin ? origin : "?") < 0)
                return NULL;
        return out;
}

/* Adds "<message> (<a described>[, <b described>])". */
static void report(struct validator *v, enum sessiond_severity sev, const char *message, const char *a, const char *b) {
        _cleanup_free_ char *da = describe(v->c, a), *db = b ? describe(v->c, b) : NULL;

        if (b)
                sessiond_issues_add(v->issues, sev, a, "%s (%s, %s)", message, da ? da : a, db ? db : b);
        else
                sessiond_issues_add(v->issues, sev, a, "%s (%s)", message, da ? da : a);
}

/* Settings whose positivity has its own message in the guide. */
static const struct {
        const char *path, *message;
} positive_messages[] = {
        {"cleanup.batch_size", "Cleanup batch size must be positive"},
        {"security.max_concurrent_per_user", "Max concurrent sessions per user must be positive"},
        {"monitoring.metrics_buffer_size", "Metrics buffer size must be positive"},
        {"cleanup.expired_retention_days", "Expired retention must be at least 1 day"},
        {"cleanup.audit_retention_days", "Audit retention must be at least 1 day"},
};

static void check_positive(struct validator *v) {
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                const struct sessiond_setting *s = &sessiond_settings[i];
                const char *message = NULL;
                bool bad;
                _cleanup_free_ char *generic = NULL;

                if (s->type == SESSIOND_TYPE_INT || s->type == SESSIOND_TYPE_DURATION)
                        bad = *(const int64_t *) setting_cptr(v->c, s) <= 0;
                else if (s->type == SESSIOND_TYPE_DOUBLE)
                        bad = !(*(const double *) setting_cptr(v->c, s) > 0.0);
                else
                        continue;
                if (!bad)
                        continue;
                for (size_t j = 0; j < sizeof(positive_messages) / sizeof(positive_messages[0]); j++)
                        if (strcmp(positive_messages[j].path, s->path) == 0)
                                message = positive_messages[j].message;
                if (!message) {
                        if (asprintf(&generic, "%s must be positive", s->path) < 0)
                                generic = NULL;
                        message = generic ? generic : "A setting must be positive";
                }
                report(v, SESSIOND_ERROR, message, s->path, NULL);
        }
}

static void check_at_most(struct validator *v, const char *path, const char *message, int64_t value, int64_t max) {
        _cleanup_free_ char *msg = NULL;

        if (value <= max)
                return;
        if (asprintf(&msg, "%s must be at most %lld", message, (long long) max) < 0)
                msg = NULL;
        report(v, SESSIOND_ERROR, msg ? msg : message, path, NULL);
}

/* A localStorage key prefix goes into browser scripts and keys as it is:
 * printable ASCII without spaces or quotes (" ' `), so that it needs no
 * escaping anywhere and cannot carry control characters to a browser. */
static void check_localstorage_prefix(struct validator *v, const char *prefix) {
        if (!prefix || !*prefix)
                return; /* check_not_empty() says so */
        for (const char *p = prefix; *p; p++)
                if (*p <= ' ' || *p > '~' || *p == '"' || *p == '\'' || *p == '`') {
                        report(v, SESSIOND_ERROR,
                               "sync.localstorage_prefix may hold only printable ASCII characters without spaces or "
                               "quotes (\" \' `)",
                               "sync.localstorage_prefix", NULL);
                        return;
                }
}

static void check_not_empty(struct validator *v, const char *path, const char *value) {
        if (!value || !*value) {
                _cleanup_free_ char *msg = NULL;
                if (asprintf(&msg, "%s must not be empty", path) < 0)
                        msg = NULL;
                report(v, SESSIOND_ERROR, msg ? msg : path, path, NULL);
        }
}

/* The fleet (DESIGN 8): features.distributed puts the sessions in the
 * PostgreSQL store at daemon.postgres_url; clustering and caching work over
 * that store, so they need it. A URL that libpq cannot read is an error
 * when it is used, a warning when it is not (it is ignored then anyway).
 * Messages name the URL only through describe(), which hides its
 * password, and libpq's reason only as conninfo_check() masks it. */
static void check_fleet(struct validator *v) {
        const struct sessiond_config *c = v->c;
        const char *url = c->daemon.postgres_url;
        bool has_url = url && *url;

        if (c->features.distributed && !has_url)
                report(v, SESSIOND_ERROR,
                       "features.distributed needs daemon.postgres_url (SESSIOND_POSTGRES_URL), the libpq connection "
                       "string or URI of the shared PostgreSQL store",
                       "features.distributed", "daemon.postgres_url");
        if (c->features.clustering && !c->features.distributed)
                report(v, SESSIOND_ERROR,
                       "features.clustering needs features.distributed: it works over the shared PostgreSQL store",
                       "features.clustering", "features.distributed");
        if (c->features.caching && !c->features.distributed)
                report(v, SESSIOND_ERROR,
                       "features.caching needs features.distributed: it works over the shared PostgreSQL store",
                       "features.caching", "features.distributed");
        if (!has_url)
                return;

        _cleanup_free_ char *reason = NULL, *msg = NULL;
        int r = conninfo_check(url, &reason);

        if (r == -EINVAL) {
                if (asprintf(&msg, "daemon.postgres_url is not a connection string or URI that libpq can read: %s%s",
                             reason,
                             c->features.distributed ? "" : " (ignored while features.distributed is false)") < 0)
                        msg = NULL;
                report(v, c->features.distributed ? SESSIOND_ERROR : SESSIOND_WARNING,
                       msg ? msg : "daemon.postgres_url is not a connection string or URI that libpq can read",
                       "daemon.postgres_url", NULL);
        } else if (r < 0)
                report(v, SESSIOND_ERROR, "daemon.postgres_url could not be checked (out of memory)",
                       "daemon.postgres_url", NULL);
        else if (!c->features.distributed)
                report(v, SESSIOND_WARNING,
                       "daemon.postgres_url is ignored while features.distributed is false (the store is the SQLite "
                       "database at daemon.database_path)",
                       "daemon.postgres_url", "features.distributed");
}

SESSIOND_EXPORT int sessiond_config_validate(const struct sessiond_config *c, struct sessiond_issues *issues) {
        struct sessiond_issues local = {};
        struct validator v = {.c = c, .issues = issues ? issues : &local};
        size_t before = v.issues->count;
        bool errors = false;

        /* The guide's seven, word for word (positivity ones in check_positive). */
        if (c->timeout.idle_timeout > c->timeout.session_lifetime)
                report(&v, SESSIOND_ERROR, "Idle timeout should be less than session lifetime", "timeout.idle_timeout",
                       "timeout.session_lifetime");
        if (c->timeout.expiration_grace >= c->timeout.idle_timeout)
                report(&v, SESSIOND_ERROR, "Expiration grace period should be less than idle timeout",
                       "timeout.expiration_grace", "timeout.idle_timeout");
        if (c->cleanup.interval >= c->cleanup.batch_interval)
                report(&v, SESSIOND_ERROR, "Cleanup interval should be less than batch cleanup interval",
                       "cleanup.interval", "cleanup.batch_interval");
        if (c->sync.timeout >= c->sync.heartbeat_interval)
                report(&v, SESSIOND_ERROR, "Sync timeout should be less than heartbeat interval", "sync.timeout",
                       "sync.heartbeat_interval");

        /* DESIGN's further errors. */
        if (c->timeout.session_lifetime > c->timeout.absolute_timeout)
                report(&v, SESSIOND_ERROR, "Session lifetime should not exceed absolute timeout",
                       "timeout.session_lifetime", "timeout.absolute_timeout");
        if (c->cleanup.batch_interval >= c->cleanup.deep_interval)
                report(&v, SESSIOND_ERROR, "Batch cleanup interval should be less than deep cleanup interval",
                       "cleanup.batch_interval", "cleanup.deep_interval");
        if (c->timeout.cleanup_grace < c->timeout.expiration_grace)
                report(&v, SESSIOND_ERROR,
                       "Cleanup grace period should not be less than expiration grace period (a session still honoured "
                       "could be purged)",
                       "timeout.cleanup_grace", "timeout.expiration_grace");
        if (c->cleanup.trigger_threshold > c->cleanup.max_expired_threshold)
                report(&v, SESSIOND_ERROR, "Cleanup trigger threshold should not exceed max expired threshold",
                       "cleanup.trigger_threshold", "cleanup.max_expired_threshold");
        if (c->sync.tab_response_timeout >= c->sync.timeout)
                report(&v, SESSIOND_ERROR, "Tab response timeout should be less than sync timeout",
                       "sync.tab_response_timeout", "sync.timeout");
        check_positive(&v);
        check_at_most(&v, "monitoring.metrics_buffer_size", "Metrics buffer size", c->monitoring.metrics_buffer_size,
                      BUFFER_SIZE_MAX);
        check_at_most(&v, "monitoring.events_buffer_size", "Events buffer size", c->monitoring.events_buffer_size,
                      BUFFER_SIZE_MAX);
        if (c->monitoring.alerts.failure_rate > 100.0)
                report(&v, SESSIOND_ERROR, "Alert failure rate is a percentage and must not exceed 100",
                       "monitoring.alerts.failure_rate", NULL);

        check_fleet(&v);

        /* The daemon's own settings. */
        if (!c->daemon.synchronous ||
            (strcmp(c->daemon.synchronous, "normal") != 0 && strcmp(c->daemon.synchronous, "full") != 0 &&
             strcmp(c->daemon.synchronous, "extra") != 0))
                report(&v, SESSIOND_ERROR,
                       "daemon.synchronous must be normal, full or extra (off would lose acknowledged writes on a "
                       "crash)",
                       "daemon.synchronous", NULL);
        check_not_empty(&v, "sync.localstorage_prefix", c->sync.localstorage_prefix);
        check_localstorage_prefix(&v, c->sync.localstorage_prefix);
        check_not_empty(&v, "daemon.socket_path", c->daemon.socket_path);
        check_not_empty(&v, "daemon.database_path", c->daemon.database_path);
        check_not_empty(&v, "daemon.admin_group", c->daemon.admin_group);
        if (c->daemon.max_sessions > SESSIOND_MAX_SESSIONS_LIMIT)
                report(&v, SESSIOND_ERROR,
                       "daemon.max_sessions must be at most 64000000 (the daemon's limit on sessions held at once)",
                       "daemon.max_sessions", NULL);
        if (c->daemon.socket_path && strlen(c->daemon.socket_path) > SOCKET_PATH_MAX)
                report(&v, SESSIOND_ERROR, "daemon.socket_path is too long for a Unix socket (at most 107 bytes)",
                       "daemon.socket_path", NULL);
        if (c->daemon.metrics_listen && *c->daemon.metrics_listen &&
            sessiond_listen_address_parse(c->daemon.metrics_listen, NULL, 0, NULL) < 0)
                report(&v, SESSIOND_ERROR,
                       "daemon.metrics_listen must be empty (off) or a numeric IP address and a port from 1 to 65535: "
                       "127.0.0.1:9567, [::1]:9567",
                       "daemon.metrics_listen", NULL);

        /* Warnings. */
        if (c->environment == SESSIOND_ENV_PRODUCTION && c->debug_mode)
                report(&v, SESSIOND_WARNING,
                       "Debug mode should be off in production (debug lines are logged and replies are verbose)",
                       "debug_mode", "environment");
        if (c->timeout.warning_threshold >= c->timeout.idle_timeout)
                report(&v, SESSIOND_WARNING,
                       "Warning threshold should be less than idle timeout (every reply would carry warning: true)",
                       "timeout.warning_threshold", "timeout.idle_timeout");
        if (c->sync.max_data_size >= c->daemon.max_message_size)
                report(&v, SESSIOND_WARNING,
                       "Sync data size should be less than the maximum message size (the largest sync state could not "
                       "be sent)",
                       "sync.max_data_size", "daemon.max_message_size");

        for (size_t i = before; i < v.issues->count; i++)
                if (v.issues->items[i].severity == SESSIOND_ERROR)
                        errors = true;
        sessiond_issues_clear(&local);
        return errors ? -EINVAL : 0;
}
