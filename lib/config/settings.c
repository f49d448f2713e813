/* The table of settings (DESIGN 2.3): one row per setting.
 *
 * Everything that handles settings one by one is driven by this table:
 * defaults, the env file and environment variables, the libconfig file,
 * origins, the JSON of --show, templates, "did you mean" suggestions, and
 * the unit tests that check each setting through every source. A setting
 * added here is therefore loaded, shown, templated and tested without
 * further code; only validation rules between settings are written by hand.
 *
 * The order of the rows is the order of sections in the JSON and templates.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define OFF(member) offsetof(struct sessiond_config, member)
#define B SESSIOND_TYPE_BOOL
#define I SESSIOND_TYPE_INT
#define D SESSIOND_TYPE_DURATION
#define F SESSIOND_TYPE_DOUBLE
#define S SESSIOND_TYPE_STRING

/* One setting on two lines, as DESIGN 2.3 lists them: */
/* clang-format off */
const struct sessiond_setting sessiond_settings[] = {
        { "environment", "SESSION_ENVIRONMENT", SESSIOND_TYPE_ENVIRONMENT, OFF(environment), "development",
          "deployment environment; selects the profile (development, testing, staging, production)" },
        { "debug_mode", "SESSION_DEBUG_MODE", B, OFF(debug_mode), "false",
          "log debug lines and verbose output" },

        { "timeout.session_lifetime", "SESSION_LIFETIME_SECONDS", D, OFF(timeout.session_lifetime), "172800",
          "a session ends this long after login or its last Extend" },
        { "timeout.idle_timeout", "SESSION_IDLE_TIMEOUT_SECONDS", D, OFF(timeout.idle_timeout), "86400",
          "a session ends after this long without activity" },
        { "timeout.absolute_timeout", "SESSION_ABSOLUTE_TIMEOUT_SECONDS", D, OFF(timeout.absolute_timeout), "604800",
          "hard cap after creation, even with Extend" },
        { "timeout.expiration_grace", "SESSION_EXPIRATION_GRACE_SECONDS", D, OFF(timeout.expiration_grace), "300",
          "after its end a session still validates (state grace) this long" },
        { "timeout.cleanup_grace", "SESSION_CLEANUP_GRACE_SECONDS", D, OFF(timeout.cleanup_grace), "600",
          "cleanup ends a session only this long after its end" },
        { "timeout.warning_threshold", "SESSION_WARNING_THRESHOLD_SECONDS", D, OFF(timeout.warning_threshold), "900",
          "replies carry warning: true once a session expires within this" },

        { "cleanup.interval", "SESSION_CLEANUP_INTERVAL_SECONDS", D, OFF(cleanup.interval), "1800",
          "period of the regular cleanup" },
        { "cleanup.batch_interval", "SESSION_BATCH_CLEANUP_INTERVAL_SECONDS", D, OFF(cleanup.batch_interval), "21600",
          "period of the batch cleanup (runs until nothing is left, enforces per-user limits)" },
        { "cleanup.deep_interval", "SESSION_DEEP_CLEANUP_INTERVAL_SECONDS", D, OFF(cleanup.deep_interval), "86400",
          "period of the deep cleanup (purges past retention, optimises the database)" },
        { "cleanup.batch_size", "SESSION_CLEANUP_BATCH_SIZE", I, OFF(cleanup.batch_size), "100",
          "sessions handled per cleanup batch" },
        { "cleanup.max_batches", "SESSION_MAX_CLEANUP_BATCHES", I, OFF(cleanup.max_batches), "10",
          "batches per regular cleanup run at most" },
        { "cleanup.max_expired_threshold", "SESSION_MAX_EXPIRED_THRESHOLD", I, OFF(cleanup.max_expired_threshold), "1000",
          "sessions awaiting cleanup above which health is degraded and an alert raised" },
        { "cleanup.trigger_threshold", "SESSION_CLEANUP_TRIGGER_THRESHOLD", I, OFF(cleanup.trigger_threshold), "500",
          "sessions awaiting cleanup at which a regular cleanup runs at once" },
        { "cleanup.expired_retention_days", "SESSION_EXPIRED_RETENTION_DAYS", I, OFF(cleanup.expired_retention_days), "7",
          "days ended sessions are kept for audit and analytics" },
        { "cleanup.audit_retention_days", "SESSION_AUDIT_RETENTION_DAYS", I, OFF(cleanup.audit_retention_days), "30",
          "days audit rows are kept" },

        { "sync.check_interval", "SESSION_SYNC_CHECK_INTERVAL_SECONDS", D, OFF(sync.check_interval), "2",
          "how often a browser tab checks the shared session state" },
        { "sync.heartbeat_interval", "SESSION_HEARTBEAT_INTERVAL_SECONDS", D, OFF(sync.heartbeat_interval), "30",
          "how often a browser tab sends Heartbeat" },
        { "sync.timeout", "SESSION_SYNC_TIMEOUT_SECONDS", D, OFF(sync.timeout), "5",
          "a tab gives up on a sync round after this" },
        { "sync.tab_response_timeout", "SESSION_TAB_RESPONSE_TIMEOUT_SECONDS", D, OFF(sync.tab_response_timeout), "3",
          "a tab waits this long for the other tabs to answer" },
        { "sync.localstorage_prefix", "SESSION_LOCALSTORAGE_PREFIX", S, OFF(sync.localstorage_prefix), "vedfolnir_session_",
          "prefix of the browser's localStorage keys" },
        { "sync.max_data_size", "SESSION_MAX_SYNC_DATA_SIZE", I, OFF(sync.max_data_size), "1024",
          "largest sync state in bytes (SetSyncState beyond it: TooLarge)" },

        { "security.fingerprinting", "SESSION_ENABLE_FINGERPRINTING", B, OFF(security.fingerprinting), "true",
          "check the client fingerprint on Validate" },
        { "security.suspicious_detection", "SESSION_ENABLE_SUSPICIOUS_DETECTION", B, OFF(security.suspicious_detection), "true",
          "count suspicious events and alert on them" },
        { "security.audit_logging", "SESSION_ENABLE_AUDIT_LOGGING", B, OFF(security.audit_logging), "true",
          "write audit events to the store" },
        { "security.max_concurrent_per_user", "SESSION_MAX_CONCURRENT_PER_USER", I, OFF(security.max_concurrent_per_user), "5",
          "live sessions per user; Create beyond it evicts the least recently active" },
        { "security.suspicious_activity_threshold", "SESSION_SUSPICIOUS_ACTIVITY_THRESHOLD", I, OFF(security.suspicious_activity_threshold), "10",
          "suspicious events per user in an hour that raise an alert" },
        { "security.max_platform_switches_per_hour", "SESSION_MAX_PLATFORM_SWITCHES_PER_HOUR", I, OFF(security.max_platform_switches_per_hour), "50",
          "platform switches per session in a sliding hour" },
        { "security.check_interval", "SESSION_SECURITY_CHECK_INTERVAL_SECONDS", D, OFF(security.check_interval), "300",
          "period of the security check job" },

        { "monitoring.performance_monitoring", "SESSION_ENABLE_PERFORMANCE_MONITORING", B, OFF(monitoring.performance_monitoring), "true",
          "measure request latency and loop lag" },
        { "monitoring.metrics_collection", "SESSION_ENABLE_METRICS_COLLECTION", B, OFF(monitoring.metrics_collection), "true",
          "sample counters and gauges into the metrics ring" },
        { "monitoring.health_checks", "SESSION_ENABLE_HEALTH_CHECKS", B, OFF(monitoring.health_checks), "true",
          "run the periodic health check" },
        { "monitoring.metrics_interval", "SESSION_METRICS_INTERVAL_SECONDS", D, OFF(monitoring.metrics_interval), "60",
          "period of metrics sampling" },
        { "monitoring.health_check_interval", "SESSION_HEALTH_CHECK_INTERVAL_SECONDS", D, OFF(monitoring.health_check_interval), "300",
          "period of the health check" },
        { "monitoring.metrics_buffer_size", "SESSION_METRICS_BUFFER_SIZE", I, OFF(monitoring.metrics_buffer_size), "1000",
          "metrics samples kept" },
        { "monitoring.events_buffer_size", "SESSION_EVENTS_BUFFER_SIZE", I, OFF(monitoring.events_buffer_size), "500",
          "events kept" },
        { "monitoring.alerts.creation_rate", "SESSION_ALERT_CREATION_RATE", F, OFF(monitoring.alerts.creation_rate), "100.0",
          "alert above this many sessions created per minute" },
        { "monitoring.alerts.failure_rate", "SESSION_ALERT_FAILURE_RATE", F, OFF(monitoring.alerts.failure_rate), "10.0",
          "alert above this percentage of failing validations" },
        { "monitoring.alerts.avg_duration", "SESSION_ALERT_AVG_DURATION", F, OFF(monitoring.alerts.avg_duration), "3600.0",
          "alert when ended sessions lasted this many seconds on average" },
        { "monitoring.alerts.concurrent_sessions", "SESSION_ALERT_CONCURRENT_SESSIONS", F, OFF(monitoring.alerts.concurrent_sessions), "1000.0",
          "alert above this many active sessions" },
        { "monitoring.alerts.suspicious_rate", "SESSION_ALERT_SUSPICIOUS_RATE", F, OFF(monitoring.alerts.suspicious_rate), "5.0",
          "alert above this many suspicious events per minute" },

        { "features.cross_tab_sync", "SESSION_FEATURE_CROSS_TAB_SYNC", B, OFF(features.cross_tab_sync), "true",
          "sync state and Watch for browser tabs" },
        { "features.platform_switching", "SESSION_FEATURE_PLATFORM_SWITCHING", B, OFF(features.platform_switching), "true",
          "SwitchPlatform" },
        { "features.persistence", "SESSION_FEATURE_PERSISTENCE", B, OFF(features.persistence), "true",
          "keep sessions in the database file (false: in memory only)" },
        { "features.optimistic_ui", "SESSION_FEATURE_OPTIMISTIC_UI", B, OFF(features.optimistic_ui), "true",
          "browsers may update their UI before the daemon answers" },
        { "features.background_cleanup", "SESSION_FEATURE_BACKGROUND_CLEANUP", B, OFF(features.background_cleanup), "true",
          "run the cleanup timers (false: only on request)" },
        { "features.analytics", "SESSION_FEATURE_ANALYTICS", B, OFF(features.analytics), "true",
          "Admin.Analytics" },
        { "features.clustering", "SESSION_FEATURE_CLUSTERING", B, OFF(features.clustering), "false",
          "background jobs on one daemon of the fleet at a time, the leader (needs features.distributed)" },
        { "features.distributed", "SESSION_FEATURE_DISTRIBUTED", B, OFF(features.distributed), "false",
          "sessions in the shared PostgreSQL store at daemon.postgres_url, for a fleet of daemons" },
        { "features.caching", "SESSION_FEATURE_CACHING", B, OFF(features.caching), "false",
          "serve Validate from memory, kept coherent by PostgreSQL notifications (needs features.distributed)" },

        { "daemon.socket_path", "SESSIOND_SOCKET", S, OFF(daemon.socket_path), "/run/sessiond/sessiond.sock",
          "the Varlink socket (unless systemd passes one)" },
        { "daemon.database_path", "SESSIOND_DATABASE", S, OFF(daemon.database_path), "/var/lib/sessiond/sessions.db",
          "the SQLite database" },
        { "daemon.env_file", "SESSIOND_ENV_FILE", S, OFF(daemon.env_file), "/etc/sessiond/session.env",
          "optional KEY=VALUE file read after this one (\"\": none)" },
        { "daemon.admin_group", NULL, S, OFF(daemon.admin_group), "sessiond-admin",
          "group whose members may call io.sessiond.Admin" },
        { "daemon.synchronous", NULL, S, OFF(daemon.synchronous), "normal",
          "SQLite synchronous: normal (survives a crash), full or extra (also a power loss)" },
        { "daemon.max_connections", NULL, I, OFF(daemon.max_connections), "1024",
          "clients connected at once" },
        { "daemon.max_message_size", NULL, I, OFF(daemon.max_message_size), "65536",
          "largest Varlink message in bytes" },
        { "daemon.metrics_listen", "SESSIOND_METRICS_LISTEN", S, OFF(daemon.metrics_listen), "",
          "serve GET /metrics (Prometheus) on this IP:PORT, e.g. 127.0.0.1:9567 (\"\": off)" },
        { "daemon.max_sessions", NULL, I, OFF(daemon.max_sessions), "10000000",
          "live sessions held at once (about 140 bytes of memory each); Create beyond it: StorageFull" },
        /* The fleet's (DESIGN 8), after the rest: settings keep their numbers. */
        { "daemon.postgres_url", "SESSIOND_POSTGRES_URL", S, OFF(daemon.postgres_url), "",
          "the shared PostgreSQL store with features.distributed: a libpq connection string or URI (\"\": none)" },
        { "daemon.key_file", "SESSIOND_KEY_FILE", S, OFF(daemon.key_file), "",
          "the token key, the same file on every daemon of a fleet (\"\": sessiond.key beside daemon.database_path)" },
};
/* clang-format on */

const size_t sessiond_settings_count = sizeof(sessiond_settings) / sizeof(sessiond_settings[0]);

SESSIOND_EXPORT int sessiond_setting_find(const char *path) {
        if (!path)
                return -ENOENT;
        for (size_t i = 0; i < sessiond_settings_count; i++)
                if (strcmp(sessiond_settings[i].path, path) == 0)
                        return (int) i;
        return -ENOENT;
}

SESSIOND_EXPORT int sessiond_setting_find_variable(const char *variable) {
        if (!variable)
                return -ENOENT;
        for (size_t i = 0; i < sessiond_settings_count; i++)
                if (sessiond_settings[i].variable && strcmp(sessiond_settings[i].variable, variable) == 0)
                        return (int) i;
        return -ENOENT;
}

SESSIOND_EXPORT size_t sessiond_setting_count(void) {
        return sessiond_settings_count;
}

SESSIOND_EXPORT const char *sessiond_setting_path(size_t idx) {
        return idx < sessiond_settings_count ? sessiond_settings[idx].path : NULL;
}

SESSIOND_EXPORT const char *sessiond_setting_variable(size_t idx) {
        return idx < sessiond_settings_count ? sessiond_settings[idx].variable : NULL;
}

bool setting_is_conninfo(const struct sessiond_setting *s) {
        return strcmp(s->path, "daemon.postgres_url") == 0;
}

static const char *const environment_names[_SESSIOND_ENV_MAX] = {
        [SESSIOND_ENV_DEVELOPMENT] = "development",
        [SESSIOND_ENV_TESTING] = "testing",
        [SESSIOND_ENV_STAGING] = "staging",
        [SESSIOND_ENV_PRODUCTION] = "production",
};

SESSIOND_EXPORT const char *sessiond_environment_to_string(enum sessiond_environment e) {
        if ((unsigned) e >= _SESSIOND_ENV_MAX)
                return NULL;
        return environment_names[e];
}

SESSIOND_EXPORT int sessiond_environment_from_string(const char *s) {
        if (!s)
                return -EINVAL;
        for (int e = 0; e < _SESSIOND_ENV_MAX; e++)
                if (strcasecmp(s, environment_names[e]) == 0)
                        return e;
        return -EINVAL;
}

SESSIOND_EXPORT const char *sessiond_environment_valid_names(void) {
        return "development, testing, staging, production";
}

int setting_check_range(const struct sessiond_setting *s, int64_t v, const char **problem) {
        int64_t max = s->type == SESSIOND_TYPE_DURATION ? SETTING_DURATION_MAX : SETTING_INT_MAX;

        if (v > max || v < -max) {
                *problem = s->type == SESSIOND_TYPE_DURATION ? "is out of range (at most 3153600000 seconds, 100 years)"
                                                             : "is out of range (at most 2147483647)";
                return -ERANGE;
        }
        return 0;
}

int setting_parse_text(const struct sessiond_setting *s, const char *text, union setting_value *v,
                       const char **problem) {
        int r;

        /* A string whose default is empty ("off", daemon.metrics_listen)
         * may be set empty again, to turn it off over a lower source. */
        if (text && !*text && s->type == SESSIOND_TYPE_STRING && !*s->default_text) {
                v->s = text;
                return 0;
        }
        if (!text || !*text) {
                *problem = "is empty";
                return -EINVAL;
        }
        switch (s->type) {
        case SESSIOND_TYPE_BOOL:
                r = sessiond_parse_bool(text, &v->b);
                if (r < 0)
                        *problem = "is not a boolean (use true/false, yes/no, on/off or 1/0)";
                return r;
        case SESSIOND_TYPE_INT:
                r = sessiond_parse_int(text, &v->i);
                if (r == -ERANGE) {
                        *problem = "is out of range (at most 2147483647)";
                        return r;
                }
                if (r < 0) {
                        *problem = "is not an integer";
                        return r;
                }
                return setting_check_range(s, v->i, problem);
        case SESSIOND_TYPE_DURATION:
                r = sessiond_parse_duration(text, &v->i);
                if (r == -ERANGE) {
                        *problem = "is out of range (at most 3153600000 seconds, 100 years)";
                        return r;
                }
                if (r < 0) {
                        *problem = "is not a duration (integer seconds, or a number with unit s, m, h or d)";
                        return r;
                }
                return setting_check_range(s, v->i, problem);
        case SESSIOND_TYPE_DOUBLE:
                r = sessiond_parse_double(text, &v->d);
                if (r == -ERANGE || (r == 0 && (v->d > SETTING_DOUBLE_MAX || v->d < -SETTING_DOUBLE_MAX))) {
                        *problem = "is out of range (at most 1e15)";
                        return -ERANGE;
                }
                if (r < 0)
                        *problem = "is not a number";
                return r;
        case SESSIOND_TYPE_STRING:
                if (!utf8_is_valid(text)) {
                        *problem = "is not valid UTF-8";
                        return -EINVAL;
                }
                v->s = text;
                return 0;
        case SESSIOND_TYPE_ENVIRONMENT:
                r = sessiond_environment_from_string(text);
                if (r < 0) {
                        *problem = "is not an environment (valid: development, testing, staging, production)";
                        return -EINVAL;
                }
                v->e = r;
                return 0;
        }
        *problem = "has an unknown type";
        return -EINVAL;
}
