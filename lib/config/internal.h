/* Private interface between the files of the configuration system.
 *
 * The public header (sessiond/config.h) describes a configuration as a
 * struct; the table of settings (sessiond_settings[], settings.h) says where
 * each value lives in the struct, how it is typed and where it came from. The
 * files of lib/config share a few helpers on top of that table: typed access
 * to a value through its offset, setting a value together with its origin,
 * and "did you mean" suggestions. Nothing here is installed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "macro.h" /* lib/common: freep, _cleanup_free_, ELEMENTSOF */
#include "sessiond/config.h"
#include "sessiond/envfile.h"
#include "envfile-private.h"
#include "settings.h"

/* Upper bounds checked while loading, so that a huge value is an error and
 * never wraps in later arithmetic (now + timeout, batch_size * batches). */
#define SETTING_INT_MAX INT64_C(2147483647)      /* counts and sizes */
#define SETTING_DURATION_MAX INT64_C(3153600000) /* 100 years, in seconds */
#define SETTING_DOUBLE_MAX 1e15                  /* alert thresholds */

/* A parsed value of one setting, before it is stored. */
union setting_value {
        bool b;
        int64_t i;
        double d;
        const char *s; /* borrowed; copied when stored */
        int e;         /* enum sessiond_environment */
};

static inline void *setting_ptr(struct sessiond_config *c, const struct sessiond_setting *s) {
        return (char *) c + s->offset;
}
static inline const void *setting_cptr(const struct sessiond_config *c, const struct sessiond_setting *s) {
        return (const char *) c + s->offset;
}

/* Parses text for setting s (env file, environment, profile, defaults).
 * Returns 0, or -EINVAL/-ERANGE with *problem set to a static phrase such as
 * "is not an integer" that completes a message. */
int setting_parse_text(const struct sessiond_setting *s, const char *text, union setting_value *v,
                       const char **problem);
/* Checks the range of an integer or duration for setting s: -ERANGE if out. */
int setting_check_range(const struct sessiond_setting *s, int64_t v, const char **problem);

/* Stores value v into setting idx of c and records its origin. Returns 0 or -ENOMEM. */
int config_store(struct sessiond_config *c, size_t idx, const union setting_value *v, enum sessiond_origin_kind kind,
                 const char *file, int line);
/* Adds or replaces custom.<name> (name is lower-cased). 0 or -ENOMEM. */
int config_store_custom(struct sessiond_config *c, const char *name, const char *value, enum sessiond_origin_kind kind,
                        const char *file, int line);
/* An empty configuration with every setting at its table default. */
int config_new(struct sessiond_config **ret);

/* Reads the libconfig file into c (conffile.c). Problems go to issues;
 * returns 0, -EINVAL (parse problems reported) or another negative errno. */
int conffile_read(struct sessiond_config *c, const char *path, struct sessiond_issues *issues);

/* Reads and parses the env file at path like sessiond_envfile_read(), but a
 * malformed line does not stop it: each is reported, kept without a key,
 * and *malformed set, so that the loader can still report the problems of
 * every other line at once. */
int envfile_read_all(const char *path, struct sessiond_envfile **ret, struct sessiond_issues *issues, bool *malformed);

/* Origins. */
int origin_assign(struct sessiond_origin *o, enum sessiond_origin_kind kind, const char *file, int line);
void origin_clear(struct sessiond_origin *o);

/* UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF), as jansson checks it: whatever goes into the JSON forms must
 * pass. The length of the character that starts at s (1 for ASCII), or 0
 * when s does not start a valid one; and whether all of s is valid. */
size_t utf8_char_length(const char *s);
bool utf8_is_valid(const char *s);

/* Connection strings (conninfo.c). 0 when libpq can read conninfo (a
 * keyword/value string or a URI); -EINVAL when it cannot, with
 * *ret_reason (when not NULL; the caller frees it) libpq's reason, every
 * piece of conninfo in it hidden; -ENOMEM. */
int conninfo_check(const char *conninfo, char **ret_reason);
/* Settings whose value is a connection string: shown only redacted
 * (sessiond_conninfo_redact()) in messages, --show and replies. */
bool setting_is_conninfo(const struct sessiond_setting *s);

/* Levenshtein distance between a and b, ignoring case. */
size_t edit_distance(const char *a, const char *b);
/* The candidate nearest to name by edit distance (case-insensitive), or NULL
 * when none is close enough to be a plausible typo. */
const char *suggest_nearest(const char *name, const char *const *candidates, size_t n);
/* The groups of the file ("timeout", "monitoring.alerts", ...), NULL-ended. */
extern const char *const setting_groups[];
/* Same over the libconfig paths or the variables of sessiond_settings[]. */
const char *suggest_setting_path(const char *path);
const char *suggest_setting_variable(const char *variable);
