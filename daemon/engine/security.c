/* The session engine's suspicious-activity counting (see engine-internal.h
 * for the other files).
 *
 * Suspicious events (user agent changes, IP or language changes, refused
 * platform switches, rotated tokens used after grace, bursts of 10 failed
 * validations of one user within a minute) are counted per user in a
 * sliding hour; reaching security.suspicious_activity_threshold writes one
 * "suspicious" audit row until the count falls below it again.
 *
 * Every failed validation counts here, in the metrics and in the events;
 * its audit row is written in aggregate (auditagg.c).
 */
#include "engine-internal.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

void security_user_sec_free(struct user_sec *sec) {
        if (sec) {
                free(sec->times);
                free(sec);
        }
}

/* ---- suspicious activity --------------------------------------------------------------- */

static void sec_prune(struct user_sec *sec, int64_t now, int64_t threshold) {
        uint32_t k = 0;

        while (k < sec->n && sec->times[k] <= now - SEC_MS(HOUR))
                k++;
        if (k > 0) {
                memmove(sec->times, sec->times + k, (sec->n - k) * sizeof *sec->times);
                sec->n -= k;
        }
        if (sec->n < threshold)
                sec->alerted = false;
}

static struct user_sec *user_sec(struct engine *e, uint32_t user) {
        struct user *u = &e->users[user];
        struct user_sec *sec;

        if (u->sec)
                return e->secs[u->sec - 1].sec;
        if (GROW(e->secs, e->secs_allocated, e->n_secs + 1) < 0)
                return NULL;
        sec = calloc(1, sizeof *sec);
        if (!sec)
                return NULL;
        e->secs[e->n_secs++] = (struct sec_entry){user, sec};
        u->sec = (uint32_t) e->n_secs;
        return sec;
}

/* One suspicious event of a user (by name). */
void security_suspicious(struct engine *e, int64_t now, const char *user_id, const char *session_id, const char *what) {
        const struct sessiond_config *c = cfg(e);
        int64_t threshold = c->security.suspicious_activity_threshold;
        struct user_sec *sec;
        uint32_t user;

        if (!c->security.suspicious_detection || !user_id || !*user_id)
                return;
        e->counters.suspicious++;
        if (table_user_get(e, user_id, &user) < 0)
                return;
        sec = user_sec(e, user);
        if (!sec) {
                table_user_maybe_free(e, user);
                return;
        }
        sec_prune(sec, now, threshold);
        /* Only whether the count reaches the threshold matters: keep the
         * newest `threshold` times, so a flood cannot grow this without bound. */
        if (threshold > UINT32_MAX / 2)
                threshold = UINT32_MAX / 2;
        if (sec->cap < (uint32_t) threshold) {
                int64_t *t = realloc(sec->times, (size_t) threshold * sizeof *t);
                if (!t)
                        return;
                sec->times = t;
                sec->cap = (uint32_t) threshold;
        }
        if (sec->n >= (uint32_t) threshold) {
                uint32_t drop = sec->n - (uint32_t) threshold + 1;
                memmove(sec->times, sec->times + drop, (sec->n - drop) * sizeof *sec->times);
                sec->n -= drop;
        }
        sec->times[sec->n++] = now;

        log_info("Suspicious activity of user %s (%s), %u in the last hour.", user_id, what, sec->n);
        if (bus_observed(e))
                bus_emit(e, now, "suspicious", session_id, user_id,
                         json_pack("{s:s, s:I, s:I}", "what", what, "count", (json_int_t) sec->n, "threshold",
                                   (json_int_t) threshold));
        if ((int64_t) sec->n >= threshold && !sec->alerted) {
                sec->alerted = true;
                e->counters.suspicious_alerts++;
                log_warning("User %s reached the suspicious activity threshold (%u events in an hour, "
                            "threshold %lld).",
                            user_id, sec->n, (long long) threshold);
                (void) txn_audit(e, now, "suspicious", user_id, session_id,
                                 json_pack("{s:s, s:I, s:I}", "what", what, "count", (json_int_t) sec->n, "threshold",
                                           (json_int_t) threshold));
                if (bus_observed(e))
                        bus_emit(e, now, "suspicious_threshold", session_id, user_id,
                                 json_pack("{s:I, s:I}", "count", (json_int_t) sec->n, "threshold",
                                           (json_int_t) threshold));
        }
}

void engine_security_sweep(struct engine *e, int64_t now) {
        int64_t threshold = cfg(e)->security.suspicious_activity_threshold;
        size_t k = 0;

        for (size_t i = 0; i < e->n_secs; i++) {
                uint32_t h = e->secs[i].user;
                struct user_sec *sec = e->secs[i].sec;

                sec_prune(sec, now, threshold);
                if (sec->n == 0 && (sec->fail_count == 0 || now - sec->fail_start >= SEC_MS(BURST_WINDOW))) {
                        security_user_sec_free(sec);
                        e->users[h].sec = 0;
                        table_user_maybe_free(e, h);
                        continue;
                }
                e->secs[k] = e->secs[i];
                e->users[h].sec = (uint32_t) ++k;
        }
        e->n_secs = k;
}

/* ---- failures ----------------------------------------------------------------------------- */

void security_failed_validation(struct engine *e, int64_t now, enum engine_failure f, const char *user_id,
                                const char *session_id, enum engine_end_reason end_reason) {
        json_t *detail = NULL;

        e->counters.validate_failed[f]++;
        if (bus_observed(e)) {
                detail = json_pack("{s:s}", "reason", engine_failure_to_string(f));
                if (detail && end_reason != ENGINE_END_NONE)
                        json_object_set_new(detail, "end_reason", json_string(engine_end_reason_to_string(end_reason)));
                bus_emit(e, now, "validation_failed", session_id, user_id, detail);
        }
        auditagg_add(e, now, f, user_id, session_id, end_reason); /* the audit row: in aggregate */
        if (user_id && *user_id && cfg(e)->security.suspicious_detection) {
                uint32_t user;
                struct user_sec *sec;

                if (table_user_get(e, user_id, &user) < 0)
                        return;
                sec = user_sec(e, user);
                if (!sec) {
                        table_user_maybe_free(e, user);
                        return;
                }
                if (now - sec->fail_start >= SEC_MS(BURST_WINDOW)) {
                        sec->fail_start = now;
                        sec->fail_count = 0;
                }
                if (++sec->fail_count >= BURST_FAILURES) {
                        sec->fail_count = 0;
                        security_suspicious(e, now, user_id, session_id, "failed_validations");
                }
        }
}

int engine_suspicious_users(struct engine *e, int64_t now, engine_count_fn cb, void *userdata) {
        int64_t threshold = cfg(e)->security.suspicious_activity_threshold;
        int r = 0;

        for (size_t i = 0; r == 0 && i < e->n_secs; i++) {
                struct user_sec *sec = e->secs[i].sec;

                sec_prune(sec, now, threshold);
                if (sec->n > 0)
                        r = cb(user_name(e, e->secs[i].user), sec->n, userdata);
        }
        return r;
}
