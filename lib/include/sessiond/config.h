/* sessiond configuration: one validated value for every setting of the guide.
 *
 * A configuration is built from five sources, lowest precedence first:
 * built-in defaults, the environment profile (it only changes defaults),
 * the libconfig file, the env file (KEY=VALUE lines) and the process
 * environment (SESSION_*). An explicit value always beats a profile. Each
 * value remembers where it came from, so that every message can name the
 * source of a bad value and `sessionctl config --show --origin` can print it.
 *
 * Loading and validating are separate steps, like the guide's from_env() and
 * validate_configuration(): loading fails only on input that cannot be
 * parsed (bad syntax, wrong type, bad unit); validation checks the rules
 * between settings and reports every issue at once.
 *
 * The library never logs. Problems are returned as a list of issues, each
 * with a severity and a complete human-readable message.
 *
 * Functions return 0 or a negative errno.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SESSIOND_DEFAULT_CONFIG_FILE "/etc/sessiond/sessiond.conf"
/* The largest daemon.max_sessions: the daemon refers to its sessions by
 * handles below 2^26 (67,108,863), and a Rotate or an evicting Create holds
 * one session more for a moment. */
#define SESSIOND_MAX_SESSIONS_LIMIT 64000000

/* ---- issues ------------------------------------------------------------ */

enum sessiond_severity {
        SESSIOND_WARNING = 1,
        SESSIOND_ERROR = 2,
};

struct sessiond_issue {
        enum sessiond_severity severity;
        char *setting; /* libconfig path ("timeout.idle_timeout"), or NULL */
        char *message; /* complete sentence, names the setting and its origin */
};

struct sessiond_issues {
        struct sessiond_issue *items;
        size_t count;
        size_t allocated;
};

void sessiond_issues_clear(struct sessiond_issues *issues);
bool sessiond_issues_has_errors(const struct sessiond_issues *issues);
/* Adds a formatted issue. Returns 0 or -ENOMEM. */
int sessiond_issues_add(struct sessiond_issues *issues, enum sessiond_severity severity, const char *setting,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* "error: ..." / "warning: ..." */
const char *sessiond_severity_to_string(enum sessiond_severity s);

/* Text for a terminal or a log line (issue messages are made so already):
 * C0 control characters, DEL and bytes that are not valid UTF-8 become
 * \xNN, C1 control characters \u0080 to \u009f, the rest stays. Writes at
 * most size bytes including a NUL, never half an escape or a character, and
 * returns the length of the whole escaped text (as snprintf does). */
size_t sessiond_text_escape(char *buf, size_t size, const char *s);
/* The same as a new string; NULL on ENOMEM. */
char *sessiond_text_escape_dup(const char *s);

/* ---- origins ----------------------------------------------------------- */

enum sessiond_origin_kind {
        SESSIOND_ORIGIN_DEFAULT = 0,
        SESSIOND_ORIGIN_PROFILE,
        SESSIOND_ORIGIN_FILE,
        SESSIOND_ORIGIN_ENV_FILE,
        SESSIOND_ORIGIN_ENVIRONMENT,
};

struct sessiond_origin {
        enum sessiond_origin_kind kind;
        char *file; /* FILE and ENV_FILE: the path; PROFILE: profile name */
        int line;   /* FILE and ENV_FILE: 1-based line, 0 if unknown */
};

/* Formats an origin as "default", "profile production", "/etc/x.conf:12",
 * "env file /etc/sessiond/session.env:3" or "environment". Returns a newly
 * allocated string or NULL on ENOMEM. */
char *sessiond_origin_to_string(const struct sessiond_origin *o);

/* ---- the configuration -------------------------------------------------- */

enum sessiond_environment {
        SESSIOND_ENV_DEVELOPMENT = 0,
        SESSIOND_ENV_TESTING,
        SESSIOND_ENV_STAGING,
        SESSIOND_ENV_PRODUCTION,
        _SESSIOND_ENV_MAX,
};

const char *sessiond_environment_to_string(enum sessiond_environment e);
/* Returns the environment or -EINVAL. Case-insensitive. */
int sessiond_environment_from_string(const char *s);
/* "development, testing, staging, production" */
const char *sessiond_environment_valid_names(void);

struct sessiond_custom_setting {
        char *name; /* lower case */
        char *value;
        struct sessiond_origin origin;
};

/* Durations are seconds, all positive after validation. */
struct sessiond_config {
        enum sessiond_environment environment;
        bool debug_mode;

        struct {
                int64_t session_lifetime;
                int64_t idle_timeout;
                int64_t absolute_timeout;
                int64_t expiration_grace;
                int64_t cleanup_grace;
                int64_t warning_threshold;
        } timeout;

        struct {
                int64_t interval;
                int64_t batch_interval;
                int64_t deep_interval;
                int64_t batch_size;
                int64_t max_batches;
                int64_t max_expired_threshold;
                int64_t trigger_threshold;
                int64_t expired_retention_days;
                int64_t audit_retention_days;
        } cleanup;

        struct {
                int64_t check_interval;
                int64_t heartbeat_interval;
                int64_t timeout;
                int64_t tab_response_timeout;
                char *localstorage_prefix;
                int64_t max_data_size;
        } sync;

        struct {
                bool fingerprinting;
                bool suspicious_detection;
                bool audit_logging;
                int64_t max_concurrent_per_user;
                int64_t suspicious_activity_threshold;
                int64_t max_platform_switches_per_hour;
                int64_t check_interval;
        } security;

        struct {
                bool performance_monitoring;
                bool metrics_collection;
                bool health_checks;
                int64_t metrics_interval;
                int64_t health_check_interval;
                int64_t metrics_buffer_size;
                int64_t events_buffer_size;
                struct {
                        double creation_rate;       /* sessions created per minute */
                        double failure_rate;        /* percent of validations failing */
                        double avg_duration;        /* seconds */
                        double concurrent_sessions; /* active sessions */
                        double suspicious_rate;     /* suspicious events per minute */
                } alerts;
        } monitoring;

        struct {
                bool cross_tab_sync;
                bool platform_switching;
                bool persistence;
                bool optimistic_ui;
                bool background_cleanup;
                bool analytics;
                bool clustering;
                bool distributed;
                bool caching;
        } features;

        struct sessiond_custom_setting *custom;
        size_t n_custom;

        struct {
                char *socket_path;
                char *database_path;
                char *env_file;
                char *admin_group;
                char *synchronous; /* "normal", "full" or "extra" (validated; "off" is refused) */
                int64_t max_connections;
                int64_t max_message_size;
                char *metrics_listen; /* "" (off), "IPv4:PORT" or "[IPv6]:PORT" */
                int64_t max_sessions; /* live sessions held at once, 1..SESSIOND_MAX_SESSIONS_LIMIT */
                /* The shared PostgreSQL store of a fleet (DESIGN 8): a libpq
                 * connection string or URI, "" when none. It may hold a
                 * password: print it only through sessiond_conninfo_redact(). */
                char *postgres_url;
                /* The token key; "": sessiond.key in the folder of
                 * database_path. */
                char *key_file;
        } daemon;

        /* Where each setting came from, indexed by setting number
         * (sessiond_setting_find(), below). */
        struct sessiond_origin *origins;
        /* The file that was read (NULL when none), for messages and Status. */
        char *config_file;
};

/* ---- the settings ---------------------------------------------------------- */

/* Settings are numbered 0 .. sessiond_setting_count() - 1, in the order of
 * sections in the JSON and templates; config->origins[] and
 * sessiond_config_value_to_string() take these numbers. (The table behind
 * them is private to the library, so that a setting can be added without
 * changing the ABI.) */
size_t sessiond_setting_count(void);
/* The number of the setting with this libconfig path, or SESSION_*
 * variable, or -ENOENT. */
int sessiond_setting_find(const char *path);
int sessiond_setting_find_variable(const char *variable);
/* Setting idx's libconfig path ("timeout.idle_timeout"), and its variable
 * ("SESSION_IDLE_TIMEOUT_SECONDS", NULL when it has none). NULL when idx is
 * out of range. Static strings. */
const char *sessiond_setting_path(size_t idx);
const char *sessiond_setting_variable(size_t idx);

/* ---- building a configuration ------------------------------------------- */

struct sessiond_envfile;

struct sessiond_config_sources {
        /* libconfig file. NULL: SESSIOND_DEFAULT_CONFIG_FILE if it exists,
         * otherwise none; "": no file. A path that is given but missing is
         * an error. */
        const char *config_file;
        /* Overrides daemon.env_file when not NULL; "" means no env file.
         * A missing env file is not an error (it is optional). */
        const char *env_file;
        /* NULL-terminated KEY=VALUE array; NULL means the process environ. */
        char **environ;
        /* Skip the process environment entirely (tests, templates). */
        bool ignore_environment;
        /* Use this parsed env file (sessiond/envfile.h) instead of reading
         * the env file from disk: `sessionctl config --set-env` validates an
         * edit before it writes it. Its path names it in messages. */
        const struct sessiond_envfile *env_file_data;
};

/* All defaults (development profile NOT applied: the raw table of 2.3). */
int sessiond_config_new_defaults(struct sessiond_config **ret);

/* The guide's from_env(): defaults < profile < file < env file < environment.
 * Parse problems (syntax, type, unit, unknown names as warnings) are added
 * to issues; returns -EINVAL when any of them is an error, in which case
 * *ret is NULL. Does not run the validation rules. */
int sessiond_config_load(const struct sessiond_config_sources *sources, struct sessiond_config **ret,
                         struct sessiond_issues *issues);

/* The guide's validate_configuration(): every rule of DESIGN 2.5, all issues
 * at once. Returns 0 if there is no error (warnings allowed), -EINVAL if
 * there is at least one error. */
int sessiond_config_validate(const struct sessiond_config *c, struct sessiond_issues *issues);

void sessiond_config_free(struct sessiond_config *c);
static inline void sessiond_config_freep(struct sessiond_config **c) {
        if (*c)
                sessiond_config_free(*c);
}

int sessiond_config_copy(const struct sessiond_config *c, struct sessiond_config **ret);

/* Value of custom.<name>, or def. */
const char *sessiond_config_custom(const struct sessiond_config *c, const char *name, const char *def);

/* Setting number idx as text, the way the env file and the
 * messages write it ("86400", "true", "100.0", "production"); a connection
 * string (daemon.postgres_url) with its password as *** (for display, not
 * to be written back). NULL on ENOMEM. */
char *sessiond_config_value_to_string(const struct sessiond_config *c, size_t idx);

/* ---- connection strings ------------------------------------------------- */

/* daemon.postgres_url for a terminal, a log line or a reply: the text as it
 * was written (a libpq keyword/value connection string or a postgresql://
 * URI), with every password replaced by "***":
 *   postgresql://app:secret@/sessions?host=/run/pg -> postgresql://app:***@/sessions?host=/run/pg
 *   host=/x password=secret dbname=y               -> host=/x password=*** dbname=y
 *   host=/x password='a b' dbname=y                -> host=/x password='***' dbname=y
 * The password of a URI's user info and the values of password= and
 * sslpassword= (keyword/value pairs or URI parameters) are hidden. Text
 * that libpq could not read is hidden generously rather than precisely (a
 * keyword/value string from the pair that breaks off on). For display
 * only: never write the result back as the setting. *ret is a new
 * string. Returns 0 or -ENOMEM (-EINVAL when conninfo or ret is NULL). */
int sessiond_conninfo_redact(const char *conninfo, char **ret);

/* ---- addresses ------------------------------------------------------------ */

struct sockaddr;

/* daemon.metrics_listen: "IPv4:PORT" (127.0.0.1:9567) or "[IPv6]:PORT"
 * ([::1]:9567), numeric only (no names: nothing is resolved), port 1 to
 * 65535. Writes the address into *ret (room for a struct sockaddr_in6,
 * *ret_len its length) when ret is not NULL. -EINVAL when text is not
 * such an address (also for ""). */
int sessiond_listen_address_parse(const char *text, struct sockaddr *ret, size_t ret_size, size_t *ret_len);

/* ---- profiles ----------------------------------------------------------- */

struct sessiond_override {
        const char *path;     /* libconfig path */
        const char *variable; /* SESSION_* variable */
        const char *value;    /* as text, e.g. "86400", "true" */
};

/* The guide's get_environment_specific_config(): the overrides a profile
 * makes (table 2.4). *ret points into static storage. */
int sessiond_profile_overrides(enum sessiond_environment e, const struct sessiond_override **ret, size_t *n);

/* Every column of table 2.4 for e, "default" cells filled in with the
 * built-in default: what `sessionctl config --optimize-for` writes, so that
 * the result does not depend on what an earlier run wrote. Static storage. */
int sessiond_profile_values(enum sessiond_environment e, const struct sessiond_override **ret, size_t *n);

/* The guide's apply_environment_overrides(): applies the profile of
 * c->environment to every setting whose origin is still default or profile;
 * explicit values are kept. */
int sessiond_config_apply_profile(struct sessiond_config *c, enum sessiond_environment e);

/* ---- JSON ---------------------------------------------------------------- */

/* The JSON of DESIGN 2.2. With origins: every leaf becomes
 * {"value": v, "origin": "..."}. daemon.postgres_url is shown with its
 * password as *** (sessiond_conninfo_redact()). Returns a new reference or
 * NULL on ENOMEM. */
json_t *sessiond_config_to_json(const struct sessiond_config *c, bool with_origins);

/* The guide's get_config_summary(): environment, debug_mode,
 * session_lifetime_hours, cleanup_interval_minutes, custom_settings_count and
 * features_enabled, the original's mapping {"cross_tab_sync": bool,
 * "platform_switching": bool, "monitoring": bool (performance_monitoring),
 * "security": bool (fingerprinting)}. */
json_t *sessiond_config_summary(const struct sessiond_config *c);

/* What a browser script needs (GetClientConfig): the sync settings,
 * warning_threshold and the feature flags. */
json_t *sessiond_config_client_json(const struct sessiond_config *c);

/* ---- templates ------------------------------------------------------------ */

enum sessiond_template_format {
        SESSIOND_TEMPLATE_ENV,  /* KEY=VALUE lines for the env file */
        SESSIOND_TEMPLATE_CONF, /* libconfig, for sessiond.conf */
};

/* Every setting with its default and a one-line comment, grouped by
 * section. In the conf format the settings that the environment profile
 * governs (table 2.4) are written commented out, so that the profile keeps
 * working; in the env format every setting is commented out (the env file
 * overrides sessiond.conf, so an active default there would hide the
 * operator's values). Reading the text back unchanged gives the same
 * configuration as no file at all; with every setting uncommented it gives
 * exactly the table defaults. *ret is a new string. */
int sessiond_config_template(enum sessiond_template_format format, char **ret);

/* ---- process-wide instance (the guide's get/reload pair) ----------------- */

/* Returns the process-wide configuration, loading it from the process
 * environment and the default file on first use; NULL if that fails. */
const struct sessiond_config *sessiond_config_get(void);
/* Loads and validates again; swaps only on success, keeping the old one
 * otherwise. Issues are reported in *issues. */
int sessiond_config_reload(const struct sessiond_config_sources *sources, struct sessiond_issues *issues);

/* ---- parsing helpers (shared with the env-file editor) ------------------- */

/* "90", "90s", "30m", "48h", "7d" -> seconds. -EINVAL on bad syntax,
 * -ERANGE on overflow. A value <= 0 is NOT rejected here (validation does). */
int sessiond_parse_duration(const char *s, int64_t *ret);
/* true/false, yes/no, on/off, 1/0, any case. */
int sessiond_parse_bool(const char *s, bool *ret);
int sessiond_parse_int(const char *s, int64_t *ret);
int sessiond_parse_double(const char *s, double *ret);

#ifdef __cplusplus
}
#endif
