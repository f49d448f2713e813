/* Alerts: conditions that are raised once, resolve by themselves, and are
 * listed with their times.
 *
 * An alert is named ("creation_rate", "cleanup_backlog", "health_database",
 * ...). Its owner evaluates the condition whenever it has fresh numbers and
 * tells alerts_set() whether it holds now. The first time it holds the alert
 * is raised (logged at warning level, raised_at = now); while it keeps
 * holding only its value and message follow the numbers; the first time it
 * no longer holds it is resolved (logged at notice level, resolved_at =
 * now) and moves to the history. Holding again later raises a new alert.
 * Nobody acknowledges alerts: they are facts about the recent past.
 *
 * The history keeps the newest ALERTS_HISTORY resolved alerts.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ALERTS_HISTORY 100
#define ALERTS_NAME_MAX 48
#define ALERTS_MESSAGE_MAX 256

enum alert_transition {
        ALERT_UNCHANGED = 0,
        ALERT_RAISED,
        ALERT_RESOLVED,
};

struct alert {
        char name[ALERTS_NAME_MAX];
        bool firing;
        double value; /* the latest value while firing; the last one seen firing once resolved */
        double peak;  /* the highest value while firing */
        double threshold;
        char message[ALERTS_MESSAGE_MAX];
        int64_t raised_at;
        int64_t resolved_at; /* 0 while firing */
};

struct alerts;

int alerts_new(struct alerts **ret);
void alerts_free(struct alerts *a);

/* Evaluates one alert. holds: whether the condition holds now; value and
 * threshold: the numbers compared; message: a sentence for operators (used
 * while it holds). Returns the transition. *ret (may be NULL) points at the
 * alert's record, valid until the next call: the firing one, the one just
 * resolved, or NULL when the alert neither fires nor just resolved. */
enum alert_transition alerts_set(struct alerts *a, const char *name, bool holds, double value, double threshold,
                                 const char *message, int64_t now, const struct alert **ret);
unsigned alerts_firing(const struct alerts *a);
bool alerts_is_firing(const struct alerts *a, const char *name);
/* Every alert: the firing ones (oldest raised first), then the resolved
 * history (newest resolved first), each {name, state, value, peak,
 * threshold, message, raised_at, resolved_at}. NULL on ENOMEM. */
json_t *alerts_to_json(const struct alerts *a);
json_t *alert_to_json(const struct alert *al);
