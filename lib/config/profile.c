/* Environment profiles (DESIGN 2.4): what development, testing, staging and
 * production change.
 *
 * A profile only changes defaults: it is applied after every source has
 * been read, to the settings whose origin is still "default", so an
 * explicit value from the file, the env file or the environment always
 * wins. (The original Python applied the profile over explicit variables;
 * DESIGN calls that a bug.)
 *
 * Two views of the same table: the overrides (only the cells that differ
 * from the defaults, the guide's get_environment_specific_config()) and the
 * full columns (every column, "default" cells filled in), which is what
 * `sessionctl config --optimize-for` writes so that its result does not
 * depend on what an earlier run wrote.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

#define LIFETIME(v) \
        { "timeout.session_lifetime", "SESSION_LIFETIME_SECONDS", v }
#define IDLE(v) \
        { "timeout.idle_timeout", "SESSION_IDLE_TIMEOUT_SECONDS", v }
#define INTERVAL(v) \
        { "cleanup.interval", "SESSION_CLEANUP_INTERVAL_SECONDS", v }
#define BATCH_SIZE(v) \
        { "cleanup.batch_size", "SESSION_CLEANUP_BATCH_SIZE", v }
#define MAX_BATCHES(v) \
        { "cleanup.max_batches", "SESSION_MAX_CLEANUP_BATCHES", v }
#define PERF(v) \
        { "monitoring.performance_monitoring", "SESSION_ENABLE_PERFORMANCE_MONITORING", v }
#define ANALYTICS(v) \
        { "features.analytics", "SESSION_FEATURE_ANALYTICS", v }
#define DEBUG(v) \
        { "debug_mode", "SESSION_DEBUG_MODE", v }

/* Table 2.4, cells that are not "default". */
static const struct sessiond_override development[] = {
        LIFETIME("86400"), INTERVAL("900"), PERF("true"), ANALYTICS("true"), DEBUG("true"),
};
static const struct sessiond_override testing[] = {
        LIFETIME("1800"), IDLE("1800"),       INTERVAL("300"), BATCH_SIZE("10"),
        PERF("false"),    ANALYTICS("false"), DEBUG("true"),
};
static const struct sessiond_override staging[] = {
        LIFETIME("172800"), INTERVAL("1800"), PERF("true"), ANALYTICS("true"), DEBUG("false"),
};
static const struct sessiond_override production[] = {
        LIFETIME("172800"), INTERVAL("3600"),  BATCH_SIZE("200"), MAX_BATCHES("20"),
        PERF("true"),       ANALYTICS("true"), DEBUG("false"),
};

/* Table 2.4, every column ("default" cells are the defaults of table 2.3). */
static const struct sessiond_override development_full[] = {
        LIFETIME("86400"), IDLE("86400"), INTERVAL("900"),   BATCH_SIZE("100"),
        MAX_BATCHES("10"), PERF("true"),  ANALYTICS("true"), DEBUG("true"),
};
static const struct sessiond_override testing_full[] = {
        LIFETIME("1800"),  IDLE("1800"),  INTERVAL("300"),    BATCH_SIZE("10"),
        MAX_BATCHES("10"), PERF("false"), ANALYTICS("false"), DEBUG("true"),
};
static const struct sessiond_override staging_full[] = {
        LIFETIME("172800"), IDLE("86400"), INTERVAL("1800"),  BATCH_SIZE("100"),
        MAX_BATCHES("10"),  PERF("true"),  ANALYTICS("true"), DEBUG("false"),
};
static const struct sessiond_override production_full[] = {
        LIFETIME("172800"), IDLE("86400"), INTERVAL("3600"),  BATCH_SIZE("200"),
        MAX_BATCHES("20"),  PERF("true"),  ANALYTICS("true"), DEBUG("false"),
};

static const struct {
        const struct sessiond_override *overrides, *full;
        size_t n_overrides, n_full;
} profiles[_SESSIOND_ENV_MAX] = {
        [SESSIOND_ENV_DEVELOPMENT] = {development, development_full, ELEMENTSOF(development),
                                      ELEMENTSOF(development_full)},
        [SESSIOND_ENV_TESTING] = {testing, testing_full, ELEMENTSOF(testing), ELEMENTSOF(testing_full)},
        [SESSIOND_ENV_STAGING] = {staging, staging_full, ELEMENTSOF(staging), ELEMENTSOF(staging_full)},
        [SESSIOND_ENV_PRODUCTION] = {production, production_full, ELEMENTSOF(production), ELEMENTSOF(production_full)},
};

SESSIOND_EXPORT int sessiond_profile_overrides(enum sessiond_environment e, const struct sessiond_override **ret,
                                               size_t *n) {
        if ((unsigned) e >= _SESSIOND_ENV_MAX)
                return -EINVAL;
        *ret = profiles[e].overrides;
        *n = profiles[e].n_overrides;
        return 0;
}

SESSIOND_EXPORT int sessiond_profile_values(enum sessiond_environment e, const struct sessiond_override **ret,
                                            size_t *n) {
        if ((unsigned) e >= _SESSIOND_ENV_MAX)
                return -EINVAL;
        *ret = profiles[e].full;
        *n = profiles[e].n_full;
        return 0;
}

SESSIOND_EXPORT int sessiond_config_apply_profile(struct sessiond_config *c, enum sessiond_environment e) {
        const struct sessiond_override *o;
        size_t n;
        int r;

        r = sessiond_profile_overrides(e, &o, &n);
        if (r < 0)
                return r;

        /* Undo an earlier profile first, so that applying B after A leaves
         * nothing of A behind. */
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                union setting_value v;
                const char *problem;

                if (c->origins[i].kind != SESSIOND_ORIGIN_PROFILE)
                        continue;
                r = setting_parse_text(&sessiond_settings[i], sessiond_settings[i].default_text, &v, &problem);
                if (r < 0)
                        return r;
                r = config_store(c, i, &v, SESSIOND_ORIGIN_DEFAULT, NULL, 0);
                if (r < 0)
                        return r;
        }

        for (size_t i = 0; i < n; i++) {
                int idx = sessiond_setting_find(o[i].path);
                union setting_value v;
                const char *problem;

                if (idx < 0)
                        return -EINVAL;
                /* Explicit values win. */
                if (c->origins[idx].kind != SESSIOND_ORIGIN_DEFAULT)
                        continue;
                r = setting_parse_text(&sessiond_settings[idx], o[i].value, &v, &problem);
                if (r < 0)
                        return r;
                r = config_store(c, (size_t) idx, &v, SESSIOND_ORIGIN_PROFILE, sessiond_environment_to_string(e), 0);
                if (r < 0)
                        return r;
        }
        return 0;
}
