/* Strict parsing of the values an operator writes, and "did you mean".
 *
 * Every number, boolean and duration of the configuration goes through one
 * of these parsers, whatever its source, so that "5x", "1e3" for an integer,
 * "enabled" for a boolean or a value that overflows are refused the same way
 * everywhere. The parsers do not skip blanks, do not accept trailing
 * garbage, and report overflow as -ERANGE instead of clamping or wrapping.
 *
 * The suggestion helper is a plain Levenshtein distance over the known
 * names: the lists are short (about sixty names), so nothing cleverer pays.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

SESSIOND_EXPORT int sessiond_parse_int(const char *s, int64_t *ret) {
        char *end;
        long long v;

        if (!s || !*s || isspace((unsigned char) *s))
                return -EINVAL;
        /* strtoll accepts a leading sign; refuse "0x..." and friends by
         * checking the characters ourselves. */
        for (const char *p = (*s == '-' || *s == '+') ? s + 1 : s; *p; p++)
                if (!isdigit((unsigned char) *p))
                        return -EINVAL;
        if (s[0] == '-' || s[0] == '+') {
                if (!s[1])
                        return -EINVAL;
        }
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (errno != 0 || *end)
                return -EINVAL;
        *ret = (int64_t) v;
        return 0;
}

SESSIOND_EXPORT int sessiond_parse_duration(const char *s, int64_t *ret) {
        static const struct {
                char unit;
                int64_t factor;
        } units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
        _cleanup_free_ char *number = NULL;
        int64_t factor = 1, v;
        size_t len;
        int r;

        if (!s || !*s)
                return -EINVAL;
        len = strlen(s);
        if (isalpha((unsigned char) s[len - 1])) {
                bool found = false;
                for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
                        if (s[len - 1] == units[i].unit) {
                                factor = units[i].factor;
                                found = true;
                        }
                if (!found || len < 2)
                        return -EINVAL;
                len--;
        }
        number = strndup(s, len);
        if (!number)
                return -ENOMEM;
        r = sessiond_parse_int(number, &v);
        if (r < 0)
                return r;
        if (__builtin_mul_overflow(v, factor, ret))
                return -ERANGE;
        return 0;
}

SESSIOND_EXPORT int sessiond_parse_bool(const char *s, bool *ret) {
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};

        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
                if (strcasecmp(s, yes[i]) == 0) {
                        *ret = true;
                        return 0;
                }
                if (strcasecmp(s, no[i]) == 0) {
                        *ret = false;
                        return 0;
                }
        }
        return -EINVAL;
}

SESSIOND_EXPORT int sessiond_parse_double(const char *s, double *ret) {
        char *end;
        double v;

        if (!s || !*s || isspace((unsigned char) *s))
                return -EINVAL;
        /* Decimal notation only: no "inf", "nan" or hexadecimal floats. */
        for (const char *p = s; *p; p++)
                if (!isdigit((unsigned char) *p) && !strchr("+-.eE", *p))
                        return -EINVAL;
        errno = 0;
        v = strtod(s, &end);
        if (*end || end == s)
                return -EINVAL;
        if (errno == ERANGE && fabs(v) > 1.0)
                return -ERANGE;
        if (!isfinite(v))
                return -ERANGE;
        *ret = v;
        return 0;
}

size_t utf8_char_length(const char *s) {
        const unsigned char *p = (const unsigned char *) s;
        uint32_t cp;
        size_t n;

        if (p[0] < 0x80)
                return 1;
        if (p[0] >= 0xc2 && p[0] <= 0xdf) {
                n = 2;
                cp = p[0] & 0x1f;
        } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
                n = 3;
                cp = p[0] & 0x0f;
        } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
                n = 4;
                cp = p[0] & 0x07;
        } else
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((p[i] & 0xc0) != 0x80) /* also stops at the NUL */
                        return 0;
                cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return n;
}

bool utf8_is_valid(const char *s) {
        for (size_t n; *s; s += n) {
                n = utf8_char_length(s);
                if (n == 0)
                        return false;
        }
        return true;
}

/* Levenshtein distance, case-insensitive, two rows. */
size_t edit_distance(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        size_t *prev, *cur, d;

        prev = calloc(lb + 1, sizeof(size_t));
        cur = calloc(lb + 1, sizeof(size_t));
        if (!prev || !cur) {
                free(prev);
                free(cur);
                return SIZE_MAX;
        }
        for (size_t j = 0; j <= lb; j++)
                prev[j] = j;
        for (size_t i = 1; i <= la; i++) {
                cur[0] = i;
                for (size_t j = 1; j <= lb; j++) {
                        size_t cost = tolower((unsigned char) a[i - 1]) != tolower((unsigned char) b[j - 1]);
                        size_t best = prev[j - 1] + cost;
                        if (prev[j] + 1 < best)
                                best = prev[j] + 1;
                        if (cur[j - 1] + 1 < best)
                                best = cur[j - 1] + 1;
                        cur[j] = best;
                }
                size_t *t = prev;
                prev = cur;
                cur = t;
        }
        d = prev[lb];
        free(prev);
        free(cur);
        return d;
}

const char *suggest_nearest(const char *name, const char *const *candidates, size_t n) {
        const char *best = NULL;
        size_t best_d = SIZE_MAX;
        /* A typo changes a few characters; beyond half the name it is a
         * different name, and a suggestion would only confuse. */
        size_t len = strlen(name), limit = len / 2;

        if (limit < 2)
                limit = 2;
        for (size_t i = 0; i < n; i++) {
                size_t d, clen;

                if (!candidates[i])
                        continue;
                clen = strlen(candidates[i]);
                /* The commonest slip is a dropped suffix ("_SECONDS"): a
                 * candidate that starts with a long enough name counts as
                 * two edits away, so that a true one-letter typo still wins.
                 * (Its distance is the length of the suffix.) */
                if (len >= 10 && clen > len && strncasecmp(candidates[i], name, len) == 0)
                        d = clen - len > 2 ? 2 : clen - len;
                /* The distance is at least the difference in length: skip
                 * what is too far anyway, so that a very long unknown name
                 * costs time linear in its length, not quadratic. */
                else if ((len > clen ? len - clen : clen - len) > limit)
                        continue;
                else
                        d = edit_distance(name, candidates[i]);
                if (d < best_d) {
                        best_d = d;
                        best = candidates[i];
                }
        }
        return best_d <= limit ? best : NULL;
}

/* The groups of the libconfig file, so that a misspelt group gets a
 * suggestion too (a test checks this list against the table). */
const char *const setting_groups[] = {
        "timeout",           "cleanup",  "sync",   "security", "monitoring",
        "monitoring.alerts", "features", "custom", "daemon",   NULL,
};

static const char *suggest_by(const char *name, bool variables) {
        const char **candidates = calloc(2 * sessiond_settings_count, sizeof(char *));
        const char *best;
        size_t n = 0;

        if (!candidates)
                return NULL;
        for (size_t i = 0; i < sessiond_settings_count; i++)
                candidates[n++] = variables ? sessiond_settings[i].variable : sessiond_settings[i].path;
        for (size_t i = 0; !variables && setting_groups[i]; i++)
                candidates[n++] = setting_groups[i];
        best = suggest_nearest(name, candidates, n);
        free(candidates);
        return best;
}

const char *suggest_setting_path(const char *path) {
        return suggest_by(path, false);
}

const char *suggest_setting_variable(const char *variable) {
        return suggest_by(variable, true);
}
