/* Validation (DESIGN 2.5): one test per rule, asserting the start of each
 * message exactly, plus the origins named in it. */
#include <netinet/in.h>
#include <sys/socket.h>

#include "helpers.h"

/* Loads env (must load), validates, returns the validation result. */
static int validate_env(char **env, struct sessiond_issues *is) {
        struct sessiond_config *c = NULL;
        int r;

        ck_assert_int_eq(load_env(env, &c, is), 0);
        r = sessiond_config_validate(c, is);
        sessiond_config_free(c);
        return r;
}

/* An issue of severity sev whose message starts with start. */
#define assert_starts(is, sev, start)                                                                               \
        do {                                                                                                        \
                bool _found = false;                                                                                \
                for (size_t _i = 0; _i < (is)->count; _i++)                                                         \
                        if ((is)->items[_i].severity == (sev) &&                                                    \
                            strncmp((is)->items[_i].message, (start), strlen(start)) == 0)                          \
                                _found = true;                                                                      \
                if (!_found)                                                                                        \
                        ck_abort_msg("no %s starting \"%s\" among:\n%s", sessiond_severity_to_string(sev), (start), \
                                     issues_text(is));                                                              \
        } while (0)

#define RULE_TEST(name, start, ...)                                \
        START_TEST(name) {                                         \
                struct sessiond_issues is = {};                    \
                char *env[] = {__VA_ARGS__, NULL};                 \
                ck_assert_int_eq(validate_env(env, &is), -EINVAL); \
                assert_starts(&is, SESSIOND_ERROR, start);         \
                sessiond_issues_clear(&is);                        \
        }                                                          \
        END_TEST

START_TEST(test_idle_over_lifetime) {
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_IDLE_TIMEOUT_SECONDS=90000", NULL};
        char *equal[] = {"SESSION_IDLE_TIMEOUT_SECONDS=86400", NULL};

        ck_assert_int_eq(validate_env(env, &is), -EINVAL);
        /* The whole message: the guide's words, each setting, its value
         * and where it came from. */
        ck_assert_uint_eq(is.count, 1);
        ck_assert_str_eq(
                is.items[0].message,
                "Idle timeout should be less than session lifetime (timeout.idle_timeout=90000 from environment, "
                "timeout.session_lifetime=86400 from profile development)");
        ck_assert_str_eq(is.items[0].setting, "timeout.idle_timeout");
        sessiond_issues_clear(&is);

        /* DESIGN: the error is idle > lifetime; equal is allowed. */
        ck_assert_int_eq(validate_env(equal, &is), 0);
        assert_no_issues(&is);
}
END_TEST

RULE_TEST(test_expiration_grace,
          "Expiration grace period should be less than idle timeout (timeout.expiration_grace=86400 from environment, "
          "timeout.idle_timeout=86400 from default)",
          "SESSION_EXPIRATION_GRACE_SECONDS=86400", "SESSION_CLEANUP_GRACE_SECONDS=90000")
RULE_TEST(test_batch_size_positive, "Cleanup batch size must be positive (cleanup.batch_size=0 from environment)",
          "SESSION_CLEANUP_BATCH_SIZE=0")
RULE_TEST(test_interval_vs_batch_interval,
          "Cleanup interval should be less than batch cleanup interval (cleanup.interval=21600 from environment, "
          "cleanup.batch_interval=21600 from default)",
          "SESSION_CLEANUP_INTERVAL_SECONDS=21600")
RULE_TEST(test_sync_timeout_vs_heartbeat,
          "Sync timeout should be less than heartbeat interval (sync.timeout=30 from environment, "
          "sync.heartbeat_interval=30 from default)",
          "SESSION_SYNC_TIMEOUT_SECONDS=30")
RULE_TEST(test_max_concurrent_positive,
          "Max concurrent sessions per user must be positive (security.max_concurrent_per_user=-1 from environment)",
          "SESSION_MAX_CONCURRENT_PER_USER=-1")
RULE_TEST(test_metrics_buffer_positive,
          "Metrics buffer size must be positive (monitoring.metrics_buffer_size=0 from environment)",
          "SESSION_METRICS_BUFFER_SIZE=0")
RULE_TEST(test_lifetime_vs_absolute,
          "Session lifetime should not exceed absolute timeout (timeout.session_lifetime=700000 from environment, "
          "timeout.absolute_timeout=604800 from default)",
          "SESSION_LIFETIME_SECONDS=700000")
RULE_TEST(test_batch_vs_deep,
          "Batch cleanup interval should be less than deep cleanup interval (cleanup.batch_interval=86400 from "
          "environment, cleanup.deep_interval=86400 from default)",
          "SESSION_BATCH_CLEANUP_INTERVAL_SECONDS=86400")
RULE_TEST(test_cleanup_grace_vs_expiration_grace,
          "Cleanup grace period should not be less than expiration grace period (a session still honoured could be "
          "purged) (timeout.cleanup_grace=200 from environment, timeout.expiration_grace=300 from default)",
          "SESSION_CLEANUP_GRACE_SECONDS=200")
RULE_TEST(test_trigger_vs_max_expired,
          "Cleanup trigger threshold should not exceed max expired threshold (cleanup.trigger_threshold=2000 from "
          "environment, cleanup.max_expired_threshold=1000 from default)",
          "SESSION_CLEANUP_TRIGGER_THRESHOLD=2000")
RULE_TEST(test_tab_response_vs_sync_timeout,
          "Tab response timeout should be less than sync timeout (sync.tab_response_timeout=5 from environment, "
          "sync.timeout=5 from default)",
          "SESSION_TAB_RESPONSE_TIMEOUT_SECONDS=5")
RULE_TEST(test_failure_rate_percent,
          "Alert failure rate is a percentage and must not exceed 100 (monitoring.alerts.failure_rate=100.5 from "
          "environment)",
          "SESSION_ALERT_FAILURE_RATE=100.5")
RULE_TEST(test_expired_retention,
          "Expired retention must be at least 1 day (cleanup.expired_retention_days=0 from environment)",
          "SESSION_EXPIRED_RETENTION_DAYS=0")
RULE_TEST(test_audit_retention,
          "Audit retention must be at least 1 day (cleanup.audit_retention_days=-2 from environment)",
          "SESSION_AUDIT_RETENTION_DAYS=-2")
/* The fleet (DESIGN 8): distributed needs a URL that libpq can read,
 * clustering and caching need distributed. */
RULE_TEST(test_clustering,
          "features.clustering needs features.distributed: it works over the shared PostgreSQL store "
          "(features.clustering=true from environment, features.distributed=false from default)",
          "SESSION_FEATURE_CLUSTERING=true")
RULE_TEST(test_caching,
          "features.caching needs features.distributed: it works over the shared PostgreSQL store "
          "(features.caching=true from environment, features.distributed=false from default)",
          "SESSION_FEATURE_CACHING=1")

#define FLEET_URL "postgresql://app:s3cr3t@/sessions?host=/run/pg"

static void assert_no_secret(const struct sessiond_issues *is) {
        for (size_t i = 0; i < is->count; i++)
                ck_assert_msg(!strstr(is->items[i].message, "s3cr3t"), "password in: %s", is->items[i].message);
}

START_TEST(test_distributed) {
        struct sessiond_issues is = {};
        char *bare[] = {"SESSION_FEATURE_DISTRIBUTED=yes", NULL};
        char *empty[] = {"SESSION_FEATURE_DISTRIBUTED=yes", "SESSIOND_POSTGRES_URL=", "SESSION_FEATURE_CACHING=true",
                         NULL};
        char *fleet[] = {"SESSION_FEATURE_DISTRIBUTED=yes", "SESSION_FEATURE_CLUSTERING=on",
                         "SESSION_FEATURE_CACHING=1", "SESSIOND_POSTGRES_URL=" FLEET_URL, NULL};
        char *keywords[] = {"SESSION_FEATURE_DISTRIBUTED=true",
                            "SESSIOND_POSTGRES_URL=host=/run/pg dbname=sessions password='a b'", NULL};

        /* Without a URL: one error, naming daemon.postgres_url. */
        ck_assert_int_eq(validate_env(bare, &is), -EINVAL);
        ck_assert_uint_eq(is.count, 1);
        ck_assert_str_eq(is.items[0].message,
                         "features.distributed needs daemon.postgres_url (SESSIOND_POSTGRES_URL), the libpq connection "
                         "string or URI of the shared PostgreSQL store "
                         "(features.distributed=true from environment, daemon.postgres_url= from default)");
        sessiond_issues_clear(&is);
        /* Set empty is unset; caching is fine with distributed on. */
        ck_assert_int_eq(validate_env(empty, &is), -EINVAL);
        ck_assert_uint_eq(is.count, 1);
        assert_starts(&is, SESSIOND_ERROR, "features.distributed needs daemon.postgres_url");
        sessiond_issues_clear(&is);

        /* With one, in either form: valid, clustering and caching too. */
        ck_assert_int_eq(validate_env(fleet, &is), 0);
        assert_no_issues(&is);
        ck_assert_int_eq(validate_env(keywords, &is), 0);
        assert_no_issues(&is);
}
END_TEST

START_TEST(test_postgres_url_unreadable) {
        struct sessiond_issues is = {};
        char *broken[] = {"SESSION_FEATURE_DISTRIBUTED=1", "SESSIOND_POSTGRES_URL=host=/run/pg s3cr3t", NULL};
        char *token[] = {"SESSION_FEATURE_DISTRIBUTED=1", "SESSIOND_POSTGRES_URL=postgresql://app:s3cr3t%zz@h/db",
                         NULL};
        char *unused[] = {"SESSIOND_POSTGRES_URL=postgresql://app:s3cr3t@h/db?nonsense=1", NULL};

        /* An error naming the setting, libpq's reason, never the password. */
        ck_assert_int_eq(validate_env(broken, &is), -EINVAL);
        ck_assert_uint_eq(is.count, 1);
        ck_assert_str_eq(is.items[0].setting, "daemon.postgres_url");
        ck_assert_str_eq(is.items[0].message,
                         "daemon.postgres_url is not a connection string or URI that libpq can read: "
                         "missing \"=\" after \"***\" in connection info string "
                         "(daemon.postgres_url=host=/run/pg *** from environment)");
        sessiond_issues_clear(&is);
        ck_assert_int_eq(validate_env(token, &is), -EINVAL);
        assert_starts(&is, SESSIOND_ERROR,
                      "daemon.postgres_url is not a connection string or URI that libpq can read: invalid "
                      "percent-encoded token: \"***\" "
                      "(daemon.postgres_url=postgresql://app:***@h/db from environment)");
        assert_no_secret(&is);
        sessiond_issues_clear(&is);

        /* Unused (distributed is off): a warning only. */
        ck_assert_int_eq(validate_env(unused, &is), 0);
        ck_assert_uint_eq(is.count, 1);
        assert_starts(&is, SESSIOND_WARNING,
                      "daemon.postgres_url is not a connection string or URI that libpq can read: invalid URI query "
                      "parameter: \"***\" "
                      "(ignored while features.distributed is false) "
                      "(daemon.postgres_url=postgresql://app:***@h/db?nonsense=1 from environment)");
        assert_no_secret(&is);
        sessiond_issues_clear(&is);
}
END_TEST

/* A URL while distributed is off: ignored, with a warning. */
START_TEST(test_postgres_url_ignored) {
        struct sessiond_issues is = {};
        char *env[] = {"SESSIOND_POSTGRES_URL=" FLEET_URL, NULL};

        ck_assert_int_eq(validate_env(env, &is), 0);
        ck_assert_uint_eq(is.count, 1);
        ck_assert_int_eq(is.items[0].severity, SESSIOND_WARNING);
        ck_assert_str_eq(is.items[0].message, "daemon.postgres_url is ignored while features.distributed is false (the "
                                              "store is the SQLite database at daemon.database_path) "
                                              "(daemon.postgres_url=postgresql://app:***@/sessions?host=/run/pg from "
                                              "environment, features.distributed=false from default)");
        sessiond_issues_clear(&is);
}
END_TEST

/* The fleet's rules among the others: every issue is still reported. */
START_TEST(test_fleet_among_others) {
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_IDLE_TIMEOUT_SECONDS=90000", "SESSION_FEATURE_CACHING=true",
                       "SESSION_FEATURE_CLUSTERING=true", "SESSION_CLEANUP_BATCH_SIZE=0", NULL};
        char *clustering[] = {"SESSION_FEATURE_DISTRIBUTED=true", "SESSION_FEATURE_CLUSTERING=true", NULL};

        ck_assert_int_eq(validate_env(env, &is), -EINVAL);
        ck_assert_uint_eq(is.count, 4);
        assert_starts(&is, SESSIOND_ERROR, "Idle timeout should be less than session lifetime");
        assert_starts(&is, SESSIOND_ERROR, "features.caching needs features.distributed");
        assert_starts(&is, SESSIOND_ERROR, "features.clustering needs features.distributed");
        assert_starts(&is, SESSIOND_ERROR, "Cleanup batch size must be positive");
        sessiond_issues_clear(&is);

        /* Clustering over distributed without a URL: only the URL is missing. */
        ck_assert_int_eq(validate_env(clustering, &is), -EINVAL);
        ck_assert_uint_eq(is.count, 1);
        assert_starts(&is, SESSIOND_ERROR, "features.distributed needs daemon.postgres_url");
        sessiond_issues_clear(&is);
}
END_TEST

/* daemon.key_file: any path, or empty for the default beside the database. */
START_TEST(test_key_file) {
        struct sessiond_issues is = {};
        char *env[] = {"SESSIOND_KEY_FILE=/etc/sessiond/fleet.key", NULL};
        char *empty[] = {"SESSIOND_KEY_FILE=", NULL};

        ck_assert_int_eq(validate_env(env, &is), 0);
        assert_no_issues(&is);
        ck_assert_int_eq(validate_env(empty, &is), 0);
        assert_no_issues(&is);
}
END_TEST

START_TEST(test_failure_rate_100_allowed) {
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_ALERT_FAILURE_RATE=100", NULL};
        ck_assert_int_eq(validate_env(env, &is), 0);
        assert_no_issues(&is);
}
END_TEST

/* Every duration, size, count, threshold and buffer: <= 0 is an error that
 * names the setting (loop test over the table). */
START_TEST(test_every_number_positive) {
        const struct sessiond_setting *s = &sessiond_settings[_i];
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        bool found = false;

        if (s->type != SESSIOND_TYPE_INT && s->type != SESSIOND_TYPE_DURATION && s->type != SESSIOND_TYPE_DOUBLE)
                return;
        for (int zero = 0; zero < 2; zero++) {
                ck_assert_int_eq(sessiond_config_new_defaults(&c), 0);
                if (s->type == SESSIOND_TYPE_DOUBLE)
                        *(double *) ((char *) c + s->offset) = zero ? 0.0 : -1.5;
                else
                        *(int64_t *) ((char *) c + s->offset) = zero ? 0 : -7;
                ck_assert_int_eq(sessiond_config_validate(c, &is), -EINVAL);
                for (size_t i = 0; i < is.count; i++)
                        if (is.items[i].setting && strcmp(is.items[i].setting, s->path) == 0 &&
                            (strstr(is.items[i].message, "must be positive") ||
                             strstr(is.items[i].message, "at least 1 day")))
                                found = true;
                ck_assert_msg(found, "%s <= 0 not reported:\n%s", s->path, issues_text(&is));
                /* No setting gets two positivity messages. */
                size_t n = 0;
                for (size_t i = 0; i < is.count; i++)
                        if (is.items[i].setting && strcmp(is.items[i].setting, s->path) == 0 &&
                            strstr(is.items[i].message, "must be positive"))
                                n++;
                ck_assert_uint_le(n, 1);
                sessiond_issues_clear(&is);
                sessiond_config_free(c);
        }
}
END_TEST

START_TEST(test_generic_positive_message) {
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_EVENTS_BUFFER_SIZE=0", NULL};
        ck_assert_int_eq(validate_env(env, &is), -EINVAL);
        assert_starts(
                &is, SESSIOND_ERROR,
                "monitoring.events_buffer_size must be positive (monitoring.events_buffer_size=0 from environment)");
        sessiond_issues_clear(&is);
}
END_TEST

static int validate_conf(const char *text, struct sessiond_issues *is) {
        struct sessiond_config *c = NULL;
        int r;

        ck_assert_int_eq(load_conf_text(text, &c, is), 0);
        r = sessiond_config_validate(c, is);
        sessiond_config_free(c);
        return r;
}

START_TEST(test_daemon_settings) {
        struct sessiond_issues is = {};
        char expected[700];

        ck_assert_int_eq(validate_conf("daemon: { synchronous = \"off\"; };\n", &is), -EINVAL);
        snprintf(expected, sizeof(expected),
                 "daemon.synchronous must be normal, full or extra (off would lose acknowledged writes on a crash) "
                 "(daemon.synchronous=off from %s:1)",
                 path_in("test.conf"));
        assert_starts(&is, SESSIOND_ERROR, expected);
        sessiond_issues_clear(&is);

        ck_assert_int_eq(validate_conf("daemon: { synchronous = \"full\"; env_file = \"\"; };\n", &is), 0);
        ck_assert_int_eq(validate_conf("daemon: { synchronous = \"extra\"; };\n", &is), 0);
        assert_no_issues(&is);

        ck_assert_int_eq(validate_conf("sync: { localstorage_prefix = \"\"; };\ndaemon: { socket_path = \"\"; "
                                       "database_path = \"\"; admin_group = \"\"; };\n",
                                       &is),
                         -EINVAL);
        assert_starts(&is, SESSIOND_ERROR, "sync.localstorage_prefix must not be empty");
        assert_starts(&is, SESSIOND_ERROR, "daemon.socket_path must not be empty");
        assert_starts(&is, SESSIOND_ERROR, "daemon.database_path must not be empty");
        assert_starts(&is, SESSIOND_ERROR, "daemon.admin_group must not be empty");
        sessiond_issues_clear(&is);

        char conf[400] = "daemon: { socket_path = \"/";
        for (int i = 0; i < 120; i++)
                strcat(conf, "s");
        strcat(conf, "\"; };\n");
        ck_assert_int_eq(validate_conf(conf, &is), -EINVAL);
        assert_starts(&is, SESSIOND_ERROR, "daemon.socket_path is too long for a Unix socket (at most 107 bytes)");
        sessiond_issues_clear(&is);

        /* daemon.max_sessions: 1 .. 64000000 (the engine's handles). */
        ck_assert_int_eq(validate_conf("daemon: { max_sessions = 1; };\n", &is), 0);
        ck_assert_int_eq(validate_conf("daemon: { max_sessions = 64000000; };\n", &is), 0);
        assert_no_issues(&is);
        ck_assert_int_eq(validate_conf("daemon: { max_sessions = 0; };\n", &is), -EINVAL);
        assert_starts(&is, SESSIOND_ERROR, "daemon.max_sessions must be positive");
        sessiond_issues_clear(&is);
        ck_assert_int_eq(validate_conf("daemon: { max_sessions = 64000001; };\n", &is), -EINVAL);
        snprintf(expected, sizeof(expected),
                 "daemon.max_sessions must be at most 64000000 (the daemon's limit on sessions held at once) "
                 "(daemon.max_sessions=64000001 from %s:1)",
                 path_in("test.conf"));
        assert_starts(&is, SESSIOND_ERROR, expected);
        sessiond_issues_clear(&is);
        scratch_remove();
}
END_TEST

START_TEST(test_metrics_listen) {
        static const char *const good[] = {"127.0.0.1:9567", "0.0.0.0:1",    "[::1]:9567",
                                           "[::]:65535",     "[fe80::1]:80", "10.1.2.3:09567"};
        static const char *const bad[] = {"",
                                          "9567",
                                          ":9567",
                                          "127.0.0.1",
                                          "127.0.0.1:",
                                          "127.0.0.1:0",
                                          "127.0.0.1:65536",
                                          "127.0.0.1:123456",
                                          "localhost:9567",
                                          "127.1:9567",
                                          "::1:9567",
                                          "[::1]",
                                          "[::1]:x",
                                          "[127.0.0.1]:80",
                                          "127.0.0.1:95 67",
                                          "127.0.0.1:+80",
                                          "[]:80",
                                          "1.2.3.4.5:80"};
        struct sessiond_issues is = {};
        struct sockaddr_storage ss;
        size_t len = 0;
        char conf[200];

        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                ck_assert_msg(sessiond_listen_address_parse(good[i], (struct sockaddr *) &ss, sizeof ss, &len) == 0,
                              "%s refused", good[i]);
                ck_assert_uint_eq(len, good[i][0] == '[' ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
                snprintf(conf, sizeof conf, "daemon: { metrics_listen = \"%s\"; };\n", good[i]);
                ck_assert_int_eq(validate_conf(conf, &is), 0);
                assert_no_issues(&is);
        }
        ck_assert_int_eq(sessiond_listen_address_parse("[::1]:1", (struct sockaddr *) &ss, 8, &len), -ENOBUFS);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                ck_assert_msg(sessiond_listen_address_parse(bad[i], NULL, 0, NULL) == -EINVAL, "%s taken", bad[i]);
                if (!*bad[i])
                        continue; /* "" is off, and valid */
                snprintf(conf, sizeof conf, "daemon: { metrics_listen = \"%s\"; };\n", bad[i]);
                ck_assert_int_eq(validate_conf(conf, &is), -EINVAL);
                assert_starts(&is, SESSIOND_ERROR, "daemon.metrics_listen must be empty (off) or a numeric IP address");
                sessiond_issues_clear(&is);
        }
        /* "" is off, from every source: the default, the file, the environment */
        ck_assert_int_eq(validate_conf("daemon: { metrics_listen = \"\"; };\n", &is), 0);
        assert_no_issues(&is);
        {
                char *off[] = {"SESSIOND_METRICS_LISTEN=", NULL};
                char *on[] = {"SESSIOND_METRICS_LISTEN=[::1]:9567", NULL};
                char *wrong[] = {"SESSIOND_METRICS_LISTEN=localhost:9567", NULL};

                ck_assert_int_eq(validate_env(off, &is), 0);
                ck_assert_int_eq(validate_env(on, &is), 0);
                assert_no_issues(&is);
                ck_assert_int_eq(validate_env(wrong, &is), -EINVAL);
                assert_starts(&is, SESSIOND_ERROR, "daemon.metrics_listen must be empty (off) or a numeric IP address");
                sessiond_issues_clear(&is);
        }
        scratch_remove();
}
END_TEST

START_TEST(test_warnings_allowed) {
        struct sessiond_issues is = {};
        char *env[] = {"SESSION_WARNING_THRESHOLD_SECONDS=86400", NULL};

        /* A warning: printed, allowed. */
        ck_assert_int_eq(validate_env(env, &is), 0);
        ck_assert_uint_eq(is.count, 1);
        assert_starts(&is, SESSIOND_WARNING,
                      "Warning threshold should be less than idle timeout (every reply would carry warning: true) "
                      "(timeout.warning_threshold=86400 from environment, timeout.idle_timeout=86400 from default)");
        ck_assert(!sessiond_issues_has_errors(&is));
        sessiond_issues_clear(&is);

        ck_assert_int_eq(validate_conf("sync: { max_data_size = 70000; };\n", &is), 0);
        assert_starts(&is, SESSIOND_WARNING, "Sync data size should be less than the maximum message size");
        sessiond_issues_clear(&is);
        scratch_remove();
}
END_TEST

/* A production configuration may have debug_mode on, with a warning. */
START_TEST(test_debug_mode_in_production) {
        struct sessiond_issues is = {};
        char *production[] = {"SESSION_ENVIRONMENT=production", "SESSION_DEBUG_MODE=true", NULL};
        char *staging[] = {"SESSION_ENVIRONMENT=staging", "SESSION_DEBUG_MODE=true", NULL};
        char *quiet[] = {"SESSION_ENVIRONMENT=production", NULL};

        ck_assert_int_eq(validate_env(production, &is), 0);
        ck_assert_uint_eq(is.count, 1);
        ck_assert_int_eq(is.items[0].severity, SESSIOND_WARNING);
        ck_assert_str_eq(is.items[0].message,
                         "Debug mode should be off in production (debug lines are logged and replies are verbose) "
                         "(debug_mode=true from environment, environment=production from environment)");
        ck_assert_str_eq(is.items[0].setting, "debug_mode");
        sessiond_issues_clear(&is);
        ck_assert_int_eq(validate_env(staging, &is), 0);
        assert_no_issues(&is);
        ck_assert_int_eq(validate_env(quiet, &is), 0);
        assert_no_issues(&is);
}
END_TEST

/* sync.localstorage_prefix: printable ASCII without spaces or quotes. */
START_TEST(test_localstorage_prefix) {
        static const char *const bad[] = {
                "SESSION_LOCALSTORAGE_PREFIX=app\x1b[31m_",
                "SESSION_LOCALSTORAGE_PREFIX=a\nb",
                "SESSION_LOCALSTORAGE_PREFIX=my app_",
                "SESSION_LOCALSTORAGE_PREFIX=a\"b",
                "SESSION_LOCALSTORAGE_PREFIX=a'b",
                "SESSION_LOCALSTORAGE_PREFIX=a`b",
                "SESSION_LOCALSTORAGE_PREFIX=a\tb",
                "SESSION_LOCALSTORAGE_PREFIX=a\x7f",
                "SESSION_LOCALSTORAGE_PREFIX=\xc3\xa9t\xc3\xa9",
                "SESSION_LOCALSTORAGE_PREFIX=a\xc2\x9b"
                "b",
        };
        static const char *const good[] = {
                "SESSION_LOCALSTORAGE_PREFIX=vedfolnir_session_",
                "SESSION_LOCALSTORAGE_PREFIX=app:v2/sess-",
                "SESSION_LOCALSTORAGE_PREFIX=!#$%&()*+,-./;<=>?@[\\]^{|}~",
        };
        struct sessiond_issues is = {};

        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                char *env[] = {(char *) bad[i], NULL};

                ck_assert_msg(validate_env(env, &is) == -EINVAL, "accepted: %s", bad[i]);
                assert_starts(&is, SESSIOND_ERROR,
                              "sync.localstorage_prefix may hold only printable ASCII characters without spaces or "
                              "quotes (\" ' `) (sync.localstorage_prefix=");
                ck_assert_uint_eq(is.count, 1);
                /* the value is quoted escaped: no control character in the message */
                for (const char *p = is.items[0].message; *p; p++)
                        ck_assert_msg((unsigned char) *p >= 0x20 && *p != 0x7f, "raw control character: %s",
                                      is.items[0].message);
                sessiond_issues_clear(&is);
        }
        for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
                char *env[] = {(char *) good[i], NULL};

                ck_assert_msg(validate_env(env, &is) == 0, "refused: %s", good[i]);
                assert_no_issues(&is);
        }
}
END_TEST

/* The buffers are allocated whole: an upper bound. */
START_TEST(test_buffer_sizes_bounded) {
        struct sessiond_issues is = {};
        char *too_big[] = {"SESSION_METRICS_BUFFER_SIZE=2147483647", "SESSION_EVENTS_BUFFER_SIZE=100001", NULL};
        char *largest[] = {"SESSION_METRICS_BUFFER_SIZE=100000", "SESSION_EVENTS_BUFFER_SIZE=100000", NULL};

        ck_assert_int_eq(validate_env(too_big, &is), -EINVAL);
        assert_starts(&is, SESSIOND_ERROR,
                      "Metrics buffer size must be at most 100000 (monitoring.metrics_buffer_size=2147483647 from "
                      "environment)");
        assert_starts(
                &is, SESSIOND_ERROR,
                "Events buffer size must be at most 100000 (monitoring.events_buffer_size=100001 from environment)");
        ck_assert_uint_eq(is.count, 2);
        sessiond_issues_clear(&is);
        ck_assert_int_eq(validate_env(largest, &is), 0);
        assert_no_issues(&is);
}
END_TEST

START_TEST(test_all_issues_at_once) {
        struct sessiond_issues is = {};
        char *env[] = {
                "SESSION_IDLE_TIMEOUT_SECONDS=90000",
                "SESSION_CLEANUP_BATCH_SIZE=0",
                "SESSION_SYNC_TIMEOUT_SECONDS=40",
                "SESSION_MAX_CONCURRENT_PER_USER=0",
                "SESSION_METRICS_BUFFER_SIZE=0",
                "SESSION_CLEANUP_INTERVAL_SECONDS=99999",
                "SESSION_WARNING_THRESHOLD_SECONDS=100000",
                "SESSION_BATCH_CLEANUP_INTERVAL_SECONDS=90000",
                "SESSION_TAB_RESPONSE_TIMEOUT_SECONDS=50",
                NULL,
        };

        ck_assert_int_eq(validate_env(env, &is), -EINVAL);
        assert_starts(&is, SESSIOND_ERROR, "Idle timeout should be less than session lifetime");
        assert_starts(&is, SESSIOND_ERROR, "Cleanup batch size must be positive");
        assert_starts(&is, SESSIOND_ERROR, "Sync timeout should be less than heartbeat interval");
        assert_starts(&is, SESSIOND_ERROR, "Max concurrent sessions per user must be positive");
        assert_starts(&is, SESSIOND_ERROR, "Metrics buffer size must be positive");
        assert_starts(&is, SESSIOND_ERROR, "Cleanup interval should be less than batch cleanup interval");
        assert_starts(&is, SESSIOND_ERROR, "Batch cleanup interval should be less than deep cleanup interval");
        assert_starts(&is, SESSIOND_ERROR, "Tab response timeout should be less than sync timeout");
        assert_starts(&is, SESSIOND_WARNING, "Warning threshold should be less than idle timeout");
        sessiond_issues_clear(&is);
}
END_TEST

START_TEST(test_origins_in_messages) {
        struct sessiond_issues is = {};
        struct sessiond_config *c = NULL;
        char expected[900];

        write_text(path_in("o.conf"), "\n\ntimeout: {\n  idle_timeout = \"50h\";\n};\n");
        write_text(path_in("o.env"), "# x\nSESSION_LIFETIME_SECONDS=1d\n");
        ck_assert_int_eq(load_from(path_in("o.conf"), path_in("o.env"), NULL, &c, &is), 0);
        ck_assert_int_eq(sessiond_config_validate(c, &is), -EINVAL);
        snprintf(expected, sizeof(expected),
                 "Idle timeout should be less than session lifetime (timeout.idle_timeout=180000 from %s:4, "
                 "timeout.session_lifetime=86400 from env file %s:2)",
                 path_in("o.conf"), path_in("o.env"));
        assert_starts(&is, SESSIOND_ERROR, expected);
        sessiond_issues_clear(&is);
        /* validate without an issue list still answers */
        ck_assert_int_eq(sessiond_config_validate(c, NULL), -EINVAL);
        sessiond_config_free(c);
        scratch_remove();
}
END_TEST

START_TEST(test_defaults_valid) {
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};

        ck_assert_int_eq(sessiond_config_new_defaults(&c), 0);
        ck_assert_int_eq(sessiond_config_validate(c, &is), 0);
        assert_no_issues(&is);
        sessiond_config_free(c);
}
END_TEST

static Suite *validate_suite(void) {
        Suite *s = suite_create("config-validate");
        TCase *tc = tcase_create("guide");
        tcase_add_test(tc, test_idle_over_lifetime);
        tcase_add_test(tc, test_expiration_grace);
        tcase_add_test(tc, test_batch_size_positive);
        tcase_add_test(tc, test_interval_vs_batch_interval);
        tcase_add_test(tc, test_sync_timeout_vs_heartbeat);
        tcase_add_test(tc, test_max_concurrent_positive);
        tcase_add_test(tc, test_metrics_buffer_positive);
        suite_add_tcase(s, tc);

        tc = tcase_create("design");
        tcase_add_test(tc, test_lifetime_vs_absolute);
        tcase_add_test(tc, test_batch_vs_deep);
        tcase_add_test(tc, test_cleanup_grace_vs_expiration_grace);
        tcase_add_test(tc, test_trigger_vs_max_expired);
        tcase_add_test(tc, test_tab_response_vs_sync_timeout);
        tcase_add_test(tc, test_failure_rate_percent);
        tcase_add_test(tc, test_failure_rate_100_allowed);
        tcase_add_test(tc, test_expired_retention);
        tcase_add_test(tc, test_audit_retention);
        tcase_add_test(tc, test_clustering);
        tcase_add_test(tc, test_metrics_listen);
        tcase_add_test(tc, test_distributed);
        tcase_add_test(tc, test_caching);
        tcase_add_test(tc, test_postgres_url_unreadable);
        tcase_add_test(tc, test_postgres_url_ignored);
        tcase_add_test(tc, test_fleet_among_others);
        tcase_add_test(tc, test_key_file);
        tcase_add_loop_test(tc, test_every_number_positive, 0, (int) sessiond_settings_count);
        tcase_add_test(tc, test_generic_positive_message);
        tcase_add_test(tc, test_daemon_settings);
        tcase_add_test(tc, test_warnings_allowed);
        tcase_add_test(tc, test_debug_mode_in_production);
        tcase_add_test(tc, test_localstorage_prefix);
        tcase_add_test(tc, test_buffer_sizes_bounded);
        tcase_add_test(tc, test_all_issues_at_once);
        tcase_add_test(tc, test_origins_in_messages);
        tcase_add_test(tc, test_defaults_valid);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(validate_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
