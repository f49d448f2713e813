/* Alerts: see alerts.h.
 *
 * The firing alerts are few (one per condition: at most a dozen), so they
 * live in a small array searched by name. Resolved ones go into a ring of
 * ALERTS_HISTORY records. The transitions are logged here, so that every
 * owner logs them the same way: raising at warning level (an operator
 * should look), resolving at notice level.
 */
#include "alerts.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"

#define ALERTS_FIRING_MAX 64

struct alerts {
        struct alert firing[ALERTS_FIRING_MAX];
        size_t n_firing;
        struct alert history[ALERTS_HISTORY]; /* ring, oldest at history_start */
        size_t history_start, n_history;
};

int alerts_new(struct alerts **ret) {
        struct alerts *a = calloc(1, sizeof *a);

        if (!a)
                return -ENOMEM;
        *ret = a;
        return 0;
}

void alerts_free(struct alerts *a) {
        free(a);
}

static struct alert *find_firing(const struct alerts *a, const char *name) {
        for (size_t i = 0; i < a->n_firing; i++)
                if (strcmp(a->firing[i].name, name) == 0)
                        return (struct alert *) &a->firing[i];
        return NULL;
}

static void history_add(struct alerts *a, const struct alert *al) {
        if (a->n_history == ALERTS_HISTORY) {
                a->history[a->history_start] = *al;
                a->history_start = (a->history_start + 1) % ALERTS_HISTORY;
                return;
        }
        a->history[(a->history_start + a->n_history) % ALERTS_HISTORY] = *al;
        a->n_history++;
}

/* Moves firing[i] to the history, resolved at now. */
static const struct alert *resolve_at(struct alerts *a, size_t i, int64_t now) {
        struct alert *al = &a->firing[i];
        size_t slot;

        al->firing = false;
        al->resolved_at = now;
        log_notice("Alert %s resolved after %llds: %s", al->name, (long long) (now - al->raised_at), al->message);
        history_add(a, al);
        slot = (a->history_start + a->n_history - 1) % ALERTS_HISTORY;
        memmove(&a->firing[i], &a->firing[i + 1], (a->n_firing - i - 1) * sizeof a->firing[0]);
        a->n_firing--;
        return &a->history[slot];
}

enum alert_transition alerts_set(struct alerts *a, const char *name, bool holds, double value, double threshold,
                                 const char *message, int64_t now, const struct alert **ret) {
        struct alert *al = find_firing(a, name);

        assert(a && name);
        if (ret)
                *ret = al;
        if (!holds) {
                if (!al)
                        return ALERT_UNCHANGED;
                if (ret)
                        *ret = resolve_at(a, (size_t) (al - a->firing), now);
                else
                        (void) resolve_at(a, (size_t) (al - a->firing), now);
                return ALERT_RESOLVED;
        }
        if (al) {
                al->value = value;
                if (value > al->peak || isnan(al->peak))
                        al->peak = value;
                al->threshold = threshold;
                if (message)
                        snprintf(al->message, sizeof al->message, "%s", message);
                return ALERT_UNCHANGED;
        }
        if (a->n_firing == ALERTS_FIRING_MAX) {
                log_error("Alert %s cannot be raised: %d alerts are firing already", name, ALERTS_FIRING_MAX);
                return ALERT_UNCHANGED;
        }
        al = &a->firing[a->n_firing++];
        *al = (struct alert){.firing = true, .value = value, .peak = value, .threshold = threshold, .raised_at = now};
        snprintf(al->name, sizeof al->name, "%s", name);
        snprintf(al->message, sizeof al->message, "%s", message ? message : name);
        log_warning("Alert %s raised: %s", al->name, al->message);
        if (ret)
                *ret = al;
        return ALERT_RAISED;
}

unsigned alerts_firing(const struct alerts *a) {
        return (unsigned) a->n_firing;
}

bool alerts_is_firing(const struct alerts *a, const char *name) {
        return find_firing(a, name) != NULL;
}

/* A number for JSON: integral values as integers (a count of sessions
 * reads better as 1500 than 1500.0), NaN and infinities as null. */
static json_t *number(double v) {
        if (isnan(v) || isinf(v))
                return json_null();
        if (v == floor(v) && fabs(v) < 9007199254740992.0)
                return json_integer((json_int_t) v);
        return json_real(v);
}

json_t *alert_to_json(const struct alert *al) {
        return json_pack("{s:s, s:s, s:o, s:o, s:o, s:s, s:I, s:o}", "name", al->name, "state",
                         al->firing ? "firing" : "resolved", "value", number(al->value), "peak", number(al->peak),
                         "threshold", number(al->threshold), "message", al->message, "raised_at",
                         (json_int_t) al->raised_at, "resolved_at",
                         al->firing ? json_null() : json_integer(al->resolved_at));
}

json_t *alerts_to_json(const struct alerts *a) {
        _cleanup_json_ json_t *list = json_array();

        if (!list)
                return NULL;
        for (size_t i = 0; i < a->n_firing; i++)
                if (json_array_append_new(list, alert_to_json(&a->firing[i])) < 0)
                        return NULL;
        for (size_t i = a->n_history; i > 0; i--) {
                const struct alert *al = &a->history[(a->history_start + i - 1) % ALERTS_HISTORY];

                if (json_array_append_new(list, alert_to_json(al)) < 0)
                        return NULL;
        }
        return TAKE_PTR(list);
}
