/* Failed validations, audited in aggregate (see engine-internal.h for the
 * other files).
 *
 * A failed Validate (a token that is malformed, unknown, expired or whose
 * user agent changed) used to write one audit row, so any peer on the
 * socket could make the daemon write rows (kept audit_retention_days) at
 * request rate: 50,000 bogus tokens, 50,000 rows. Here each failure only
 * counts in memory, per source: (user, or none for a token that names no
 * user; reason; end reason). Once the interval that began with the first
 * failure counted is AUDITAGG_INTERVAL seconds old, the touch timer writes
 * one "validation_failed" row per source, detail {reason, [end_reason],
 * count, since}: the row's time is the last failure, `since` the first,
 * session_id the session when all of them concerned one, else none. The
 * counts are written too at shutdown, before an Admin.Audit read (so an
 * operator sees them at once) and when AUDITAGG_MAX sources are held (a
 * flood of distinct users, each with a real token, cannot grow the table).
 *
 * Only the rows are aggregated. Each failure still counts in the metrics,
 * raises its event (Watch, Admin.Events) and counts toward the user's
 * suspicious activity (security.c), exactly as before.
 *
 * A crash loses the counts of the interval not yet written (at most
 * AUDITAGG_INTERVAL seconds of them); nothing else depends on them.
 */
#include "engine-internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define AUDITAGG_SLOTS (2 * AUDITAGG_MAX) /* open addressing, at most half full */

struct auditagg_source {
        char *user_id; /* NULL: the token named no user */
        uint64_t hash;
        uint8_t failure;    /* enum engine_failure */
        uint8_t end_reason; /* enum engine_end_reason */
        bool many_sessions;
        char session_id[TOKEN_ID_STRING_LEN + 1]; /* "": none */
        int64_t since, last;                      /* ms (the engine's now); the row keeps seconds */
        uint64_t count;
};

struct auditagg {
        struct auditagg_source sources[AUDITAGG_MAX];
        uint16_t slots[AUDITAGG_SLOTS]; /* sources[] index + 1, 0: empty */
        unsigned n;
        int64_t started; /* ms, the first failure of the interval */
};

static uint64_t source_hash(struct engine *e, const char *user_id, enum engine_failure f, enum engine_end_reason why) {
        uint64_t h = user_id ? table_name_hash(e, user_id) : 0x9e3779b97f4a7c15ull;

        return h ^ ((uint64_t) f << 8 | (uint64_t) why) * 0xff51afd7ed558ccdull;
}

static bool source_is(const struct auditagg_source *s, uint64_t hash, const char *user_id, enum engine_failure f,
                      enum engine_end_reason why) {
        if (s->hash != hash || s->failure != f || s->end_reason != why)
                return false;
        if (!s->user_id || !user_id)
                return !s->user_id && !user_id;
        return strcmp(s->user_id, user_id) == 0;
}

/* The source's entry, added if new; NULL when out of memory. */
static struct auditagg_source *source_get(struct engine *e, const char *user_id, enum engine_failure f,
                                          enum engine_end_reason why) {
        struct auditagg *a = e->auditagg;
        uint64_t hash = source_hash(e, user_id, f, why);
        uint32_t i = (uint32_t) hash % AUDITAGG_SLOTS;
        struct auditagg_source *s;

        for (; a->slots[i]; i = (i + 1) % AUDITAGG_SLOTS) {
                s = &a->sources[a->slots[i] - 1];
                if (source_is(s, hash, user_id, f, why))
                        return s;
        }
        assert(a->n < AUDITAGG_MAX);
        s = &a->sources[a->n];
        *s = (struct auditagg_source){.hash = hash, .failure = (uint8_t) f, .end_reason = (uint8_t) why};
        if (user_id && !(s->user_id = strdup(user_id)))
                return NULL;
        a->slots[i] = (uint16_t) ++a->n;
        return s;
}

static int source_write(struct engine *e, const struct auditagg_source *s) {
        json_t *detail = json_pack("{s:s}", "reason", engine_failure_to_string((enum engine_failure) s->failure));

        if (detail && s->end_reason != ENGINE_END_NONE)
                json_object_set_new(detail, "end_reason",
                                    json_string(engine_end_reason_to_string((enum engine_end_reason) s->end_reason)));
        if (detail) {
                json_object_set_new(detail, "count", json_integer((json_int_t) s->count));
                json_object_set_new(detail, "since", json_integer((json_int_t) ms_floor_s(s->since))); /* seconds */
        }
        return txn_audit(e, s->last, "validation_failed", s->user_id,
                         s->session_id[0] && !s->many_sessions ? s->session_id : NULL, detail);
}

void auditagg_flush(struct engine *e) {
        struct auditagg *a = e->auditagg;
        int r = 0;

        if (!a || a->n == 0)
                return;
        for (unsigned i = 0; i < a->n; i++) {
                if (r >= 0)
                        r = source_write(e, &a->sources[i]);
                free(a->sources[i].user_id);
        }
        if (r < 0)
                log_error_errno(r, "Store %s: the counts of failed validations could not be audited: %m",
                                store_name(e->store));
        a->n = 0;
        a->started = 0;
        memset(a->slots, 0, sizeof a->slots);
}

void engine_audit_tick(struct engine *e, int64_t now) {
        struct auditagg *a = e->auditagg;

        if (a && a->n > 0 && now - a->started >= SEC_MS(AUDITAGG_INTERVAL))
                auditagg_flush(e);
}

void auditagg_add(struct engine *e, int64_t now, enum engine_failure f, const char *user_id, const char *session_id,
                  enum engine_end_reason why) {
        struct auditagg_source *s;

        if (!cfg(e)->security.audit_logging)
                return;
        if (!e->auditagg && !(e->auditagg = calloc(1, sizeof *e->auditagg)))
                return;
        if (user_id && !*user_id)
                user_id = NULL;
        if (e->auditagg->n == AUDITAGG_MAX)
                auditagg_flush(e);
        s = source_get(e, user_id, f, why);
        if (!s)
                return;
        if (e->auditagg->started == 0)
                e->auditagg->started = now;
        if (s->count++ == 0) {
                s->since = now;
                if (session_id)
                        snprintf(s->session_id, sizeof s->session_id, "%s", session_id);
        } else if (!session_id || strcmp(session_id, s->session_id) != 0)
                s->many_sessions = true;
        if (now > s->last)
                s->last = now;
}

void auditagg_free(struct engine *e) {
        struct auditagg *a = e->auditagg;

        if (!a)
                return;
        for (unsigned i = 0; i < a->n; i++)
                free(a->sources[i].user_id);
        free(a);
        e->auditagg = NULL;
}

unsigned engine_audit_pending(const struct engine *e) {
        return e->auditagg ? e->auditagg->n : 0;
}

void engine_audit_flush(struct engine *e) {
        auditagg_flush(e);
}
