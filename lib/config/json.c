/* The JSON forms of a configuration (DESIGN 2.2).
 *
 * --show and Admin.GetConfig: one object whose keys are exactly the
 * libconfig paths, nested by their dots, in table order, with `custom`
 * before `daemon`. Durations are integer seconds, booleans JSON booleans,
 * alert thresholds numbers. With origins every leaf becomes
 * {"value": v, "origin": "..."}. A connection string (daemon.postgres_url)
 * is shown with its password as *** (sessiond_conninfo_redact()).
 * The summary is the guide's get_config_summary(); the client form is what
 * GetClientConfig hands to a browser script.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static json_t *value_json(const struct sessiond_config *c, const struct sessiond_setting *s) {
        const void *p = setting_cptr(c, s);

        switch (s->type) {
        case SESSIOND_TYPE_BOOL:
                return json_boolean(*(const bool *) p);
        case SESSIOND_TYPE_INT:
        case SESSIOND_TYPE_DURATION:
                return json_integer((json_int_t) * (const int64_t *) p);
        case SESSIOND_TYPE_DOUBLE:
                return json_real(*(const double *) p);
        case SESSIOND_TYPE_STRING:
                if (setting_is_conninfo(s)) {
                        _cleanup_free_ char *redacted = NULL;
                        if (sessiond_conninfo_redact(*(char *const *) p, &redacted) < 0)
                                return NULL;
                        return json_string(redacted);
                }
                return json_string(*(char *const *) p);
        case SESSIOND_TYPE_ENVIRONMENT:
                return json_string(sessiond_environment_to_string(*(const enum sessiond_environment *) p));
        }
        return NULL;
}

static json_t *with_origin(json_t *value, const struct sessiond_origin *o) {
        _cleanup_free_ char *origin = sessiond_origin_to_string(o);

        if (!value || !origin) {
                json_decref(value);
                return NULL;
        }
        return json_pack("{s:o,s:s}", "value", value, "origin", origin);
}

/* Sets root[a][b]...[leaf] = value for path "a.b.leaf"; steals value. */
static int set_path(json_t *root, const char *path, json_t *value) {
        _cleanup_free_ char *copy = strdup(path);
        json_t *node = root;
        char *part, *dot;

        if (!copy || !value) {
                json_decref(value);
                return -ENOMEM;
        }
        part = copy;
        while ((dot = strchr(part, '.'))) {
                *dot = '\0';
                json_t *child = json_object_get(node, part);
                if (!child) {
                        child = json_object();
                        if (!child || json_object_set_new(node, part, child) < 0) {
                                json_decref(value);
                                return -ENOMEM;
                        }
                }
                node = child;
                part = dot + 1;
        }
        return json_object_set_new(node, part, value) < 0 ? -ENOMEM : 0;
}

static json_t *custom_json(const struct sessiond_config *c, bool with_origins) {
        json_t *o = json_object();

        if (!o)
                return NULL;
        for (size_t i = 0; i < c->n_custom; i++) {
                json_t *v = json_string(c->custom[i].value);
                if (with_origins)
                        v = with_origin(v, &c->custom[i].origin);
                if (!v || json_object_set_new(o, c->custom[i].name, v) < 0) {
                        json_decref(o);
                        return NULL;
                }
        }
        return o;
}

SESSIOND_EXPORT json_t *sessiond_config_to_json(const struct sessiond_config *c, bool with_origins) {
        _cleanup_json_ json_t *root = json_object();
        bool custom_done = false;

        if (!root)
                return NULL;
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                const struct sessiond_setting *s = &sessiond_settings[i];
                json_t *v;

                if (!custom_done && strncmp(s->path, "daemon.", 7) == 0) {
                        if (json_object_set_new(root, "custom", custom_json(c, with_origins)) < 0)
                                return NULL;
                        custom_done = true;
                }
                v = value_json(c, s);
                if (with_origins)
                        v = with_origin(v, &c->origins[i]);
                if (set_path(root, s->path, v) < 0)
                        return NULL;
        }
        if (!custom_done && json_object_set_new(root, "custom", custom_json(c, with_origins)) < 0)
                return NULL;
        return TAKE_PTR(root);
}

/* The original's get_config_summary(), key by key: its features_enabled is
 * a mapping of four flags, two of which are not features.* settings
 * ("monitoring" is performance monitoring, "security" fingerprinting). */
SESSIOND_EXPORT json_t *sessiond_config_summary(const struct sessiond_config *c) {
        return json_pack("{s:s,s:b,s:f,s:f,s:{s:b,s:b,s:b,s:b},s:I}", "environment",
                         sessiond_environment_to_string(c->environment), "debug_mode", c->debug_mode,
                         "session_lifetime_hours", (double) c->timeout.session_lifetime / 3600.0,
                         "cleanup_interval_minutes", (double) c->cleanup.interval / 60.0, "features_enabled",
                         "cross_tab_sync", c->features.cross_tab_sync, "platform_switching",
                         c->features.platform_switching, "monitoring", c->monitoring.performance_monitoring, "security",
                         c->security.fingerprinting, "custom_settings_count", (json_int_t) c->n_custom);
}

SESSIOND_EXPORT json_t *sessiond_config_client_json(const struct sessiond_config *c) {
        /* Every flag of features.*, the three of the scale-out path too
         * (DESIGN 8), so a script can test any flag of DESIGN 2.3 without
         * guessing which ones are served. */
        return json_pack("{s:{s:I,s:I,s:I,s:I,s:s,s:I},s:I,s:{s:b,s:b,s:b,s:b,s:b,s:b,s:b,s:b,s:b}}", "sync",
                         "check_interval", (json_int_t) c->sync.check_interval, "heartbeat_interval",
                         (json_int_t) c->sync.heartbeat_interval, "timeout", (json_int_t) c->sync.timeout,
                         "tab_response_timeout", (json_int_t) c->sync.tab_response_timeout, "localstorage_prefix",
                         c->sync.localstorage_prefix, "max_data_size", (json_int_t) c->sync.max_data_size,
                         "warning_threshold", (json_int_t) c->timeout.warning_threshold, "features", "cross_tab_sync",
                         c->features.cross_tab_sync, "platform_switching", c->features.platform_switching,
                         "persistence", c->features.persistence, "optimistic_ui", c->features.optimistic_ui,
                         "background_cleanup", c->features.background_cleanup, "analytics", c->features.analytics,
                         "clustering", c->features.clustering, "distributed", c->features.distributed, "caching",
                         c->features.caching);
}
