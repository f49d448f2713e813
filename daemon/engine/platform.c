/* Platform switching (see engine-internal.h for the other files).
 *
 * A session may switch platform at most security.max_platform_switches_per_hour
 * times in any hour; the switch history (the Unix seconds of the switches)
 * is kept in the store only, and the store's window function decides
 * (store_switch_window): the switches of the hour before now, and one more
 * if fewer than the limit. A refusal tells when the oldest switch in the
 * way leaves the hour (retry_after) and counts as suspicious.
 *
 * Who decides, and when. On one daemon (SQLite) memory is the only writer:
 * the history is read, the switch decided and written in the iteration's
 * unit, and answered at once like every write (the reply still waits for
 * the commit). On a shared store (DESIGN 8) two daemons switching one
 * session at once would each read a history without the other's switch
 * and both pass the limit. So there the engine only asks, even when
 * memory thinks the session is on that platform already (memory may not
 * know another daemon's switch, or this daemon's still to be decided):
 * the switch goes into the unit as store_session_switch_platform(), which
 * PostgreSQL decides under the row's lock when the unit runs (on the
 * writer; or on the loop, if a read there runs the open unit first), with
 * its audit row or none; the call waits for the unit (struct unit_wait,
 * txn.c) and is answered from what the store decided: memory takes the
 * new platform and the event is told (once the unit is done, so after
 * the unit's other events), or the refusal is counted. A rotation made
 * while a switch waits copies memory's platform, which the switch may
 * change: the new row is then read after its commit (platform_rotated).
 */
#include "engine-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"

_Static_assert(ENGINE_PLATFORM_ID_MAX == STORE_PLATFORM_ID_MAX, "the store keeps what the engine accepts");

/* The checks every switch makes first: *h the live session; *already
 * (ret filled) when memory decides and it is on that platform (not a
 * switch). */
static int switch_begin(struct engine *e, int64_t now, const char *token, const char *platform_id, uint32_t *h,
                        bool *already, struct engine_info *ret, struct engine_error *err) {
        const char *why;
        struct session *s;
        int r;

        *already = false;
        if (!cfg(e)->features.platform_switching) {
                err->feature = "platform_switching";
                return -EOPNOTSUPP;
        }
        if ((why = session_check_name(platform_id, ENGINE_PLATFORM_ID_MAX)))
                return session_invalid(err, "platform_id", why);
        r = session_lookup_live(e, now, token, false, h, NULL, err);
        if (r < 0)
                return r;
        s = S(e, *h);
        if (!e->fleet && s->platform && strcmp(platform_name(e, s->platform), platform_id) == 0) {
                table_info_fill(e, *h, now, ret);
                *already = true;
        }
        return 0;
}

static int switch_refused(struct engine *e, int64_t now, int64_t retry_at, const char *user_id, const char *session_id,
                          struct engine_error *err) {
        e->counters.platform_switches_refused++;
        err->retry_after = retry_at - ms_floor_s(now);
        if (err->retry_after < 1)
                err->retry_after = 1;
        security_suspicious(e, now, user_id, session_id, "platform_switch_rate");
        return -EBUSY;
}

/* Memory follows a switch made: h's platform becomes platform_id. */
static int switch_memory(struct engine *e, uint32_t h, const char *platform_id) {
        uint32_t platform;
        int r = table_platform_get(e, platform_id, &platform);

        if (r < 0)
                return r;
        table_platform_put(e, S(e, h)->platform);
        S(e, h)->platform = platform;
        e->counters.platform_switches++;
        return 0;
}

static json_t *switch_detail(const char *from, const char *to) {
        return json_pack("{s:s?, s:s}", "from", from && *from ? from : NULL, "to", to);
}

/* ---- one daemon: decided here ---------------------------------------------------------------------------- */

int engine_switch_platform(struct engine *e, int64_t now, const char *token, const char *platform_id,
                           struct engine_info *ret, struct engine_error *err) {
        int64_t now_s = ms_floor_s(now); /* the switch history keeps Unix seconds */
        char id[TOKEN_ID_STRING_LEN + 1];
        _cleanup_free_ char *history = NULL, *next = NULL, *from = NULL;
        int64_t retry_at = 0;
        struct session *s;
        bool already, fits;
        uint32_t h;
        int r;

        r = switch_begin(e, now, token, platform_id, &h, &already, ret, err);
        if (r < 0 || already)
                return r;
        s = S(e, h);
        table_session_id(e, s, id);
        r = store_session_get_switches(e->store, s->row_key, &history);
        if (r < 0)
                return txn_storage_errno(r);
        r = store_switch_window(history, now_s, cfg(e)->security.max_platform_switches_per_hour, &fits, &next,
                                &retry_at);
        if (r < 0)
                return r;
        if (!fits)
                return switch_refused(e, now, retry_at, user_name(e, s->user), id, err);

        r = txn_begin(e);
        if (r < 0)
                return r;
        r = txn_row_touch(e, S(e, h)->row_key, h);
        if (r >= 0)
                r = store_session_set_platform(e->store, S(e, h)->row_key, platform_id, next);
        if (r < 0)
                return txn_fail(e, r);
        s = S(e, h);
        if (s->platform && !(from = strdup(platform_name(e, s->platform))))
                return txn_fail(e, -ENOMEM);
        r = switch_memory(e, h, platform_id);
        if (r < 0)
                return txn_fail(e, r);
        s = S(e, h);
        r = txn_audit(e, now, "platform_switched", user_name(e, s->user), id, switch_detail(from, platform_id));
        if (r < 0)
                return r;
        if (bus_observed(e))
                bus_emit(e, now, "platform_switched", id, user_name(e, S(e, h)->user),
                         switch_detail(from, platform_id));
        table_info_fill(e, h, now, ret);
        return 0;
}

/* ---- a shared store: decided by the store when the unit runs --------------------------------------------- */

struct engine_switch_wait {
        struct unit_wait base; /* first: the unit's list holds it */
        struct store_switch sw;
        uint8_t key[16]; /* the session in memory */
        int64_t row_key;
        int64_t now;
        char id[TOKEN_ID_STRING_LEN + 1];
        char platform[ENGINE_PLATFORM_ID_MAX + 1];
        char *user_id;
        struct engine_info info;    /* the session when asked: the answer if memory has let it go since */
        bool audited;               /* its audit row asked for */
        engine_switch_done_fn done; /* NULL: detached */
        void *userdata;
};

bool engine_switch_decided_by_store(const struct engine *e) {
        return e->fleet;
}

void engine_switch_detach(struct engine_switch_wait *w) {
        w->done = NULL;
}

static struct engine_switch_wait *engine_switch_detach_now(struct engine_switch_wait *w) {
        engine_switch_detach(w);
        return w;
}

static void wait_finish(struct engine_switch_wait *w, int r, const struct engine_info *info,
                        const struct engine_error *err) {
        if (w->done)
                w->done(r, info, err, w->userdata);
        free(w->user_id);
        free(w);
}

static void wait_committed(struct engine *e, struct unit_wait *base);

/* The session's entry, if memory still has it: NIL otherwise. */
static uint32_t wait_entry(struct engine *e, const struct engine_switch_wait *w) {
        uint32_t h = session_find_key(e, w->key);

        return h != NIL && S(e, h)->row_key == w->row_key ? h : NIL;
}

/* w is answered: its entry is no longer switching unless another switch
 * of it waits too. */
static void wait_done(struct engine *e, struct engine_switch_wait *w) {
        const struct unit_wait *lists[] = {e->waits_inflight, e->waits_open};
        uint32_t h = wait_entry(e, w);

        if (h == NIL)
                return;
        for (size_t i = 0; i < ELEMENTSOF(lists); i++)
                for (const struct unit_wait *o = lists[i]; o; o = o->next)
                        if (o != &w->base && o->committed == wait_committed &&
                            container_of(o, struct engine_switch_wait, base)->row_key == w->row_key)
                                return;
        S(e, h)->flags &= ~S_SWITCHING;
}

static void wait_lost(struct engine *e, struct unit_wait *base, int r) {
        struct engine_switch_wait *w = container_of(base, struct engine_switch_wait, base);

        wait_done(e, w);
        wait_finish(w, r, NULL, &(struct engine_error){0});
}

/* The session is on w's platform (switched now, or already): the answer
 * from memory, or from the session as it was asked if memory has let it
 * go since. */
static void wait_answer(struct engine *e, struct engine_switch_wait *w, bool switched) {
        uint32_t h = wait_entry(e, w);
        struct engine_info info = w->info;

        if (switched && w->audited)
                e->counters.audit_rows++;
        if (h != NIL && (!switched || switch_memory(e, h, w->platform) >= 0))
                table_info_fill(e, h, w->now, &info);
        else if (switched)
                e->counters.platform_switches++; /* made, though memory has let the session go since */
        if (switched && bus_observed(e))
                bus_emit_take_committed(e, w->now, "platform_switched", w->id, strdup(w->user_id),
                                        switch_detail(w->sw.from, w->platform));
        wait_finish(w, 0, &info, &(struct engine_error){0});
}

static void wait_committed(struct engine *e, struct unit_wait *base) {
        struct engine_switch_wait *w = container_of(base, struct engine_switch_wait, base);
        struct engine_error err = {0};
        int r;

        wait_done(e, w);
        switch (w->sw.outcome) {
        case STORE_SWITCH_APPLIED:
        case STORE_SWITCH_ALREADY:
                wait_answer(e, w, w->sw.outcome == STORE_SWITCH_APPLIED);
                return;
        case STORE_SWITCH_REFUSED:
                r = switch_refused(e, w->now, w->sw.retry_at, w->user_id, w->id, &err);
                break;
        case STORE_SWITCH_ENDED: /* another daemon ended it first: memory learns it too */
                err.end_reason = engine_end_reason_from_string(w->sw.end_reason);
                if (err.end_reason == ENGINE_END_NONE)
                        err.end_reason = ENGINE_END_DESTROYED; /* as a lookup answers an unknown reason */
                fleet_row_changed(e, w->row_key, STORE_CHANGE_ENDED);
                r = -ESTALE;
                break;
        default: /* purged */
                fleet_row_changed(e, w->row_key, STORE_CHANGE_ENDED);
                r = -ENOENT;
                break;
        }
        wait_finish(w, r, NULL, &err);
}

int engine_switch_platform_later(struct engine *e, int64_t now, const char *token, const char *platform_id,
                                 engine_switch_done_fn done, void *userdata, struct engine_switch_wait **ret,
                                 struct engine_info *info, struct engine_error *err) {
        struct engine_switch_wait *w;
        struct session *s;
        bool already;
        uint32_t h;
        int r;

        assert(done && ret && e->fleet);
        *ret = NULL;
        r = switch_begin(e, now, token, platform_id, &h, &already, info, err);
        if (r < 0)
                return r;
        assert(!already); /* a fleet's store decides that too */
        s = S(e, h);
        w = calloc(1, sizeof *w);
        if (!w || !(w->user_id = strdup(user_name(e, s->user)))) {
                free(w);
                return -ENOMEM;
        }
        w->base = (struct unit_wait){.committed = wait_committed, .lost = wait_lost};
        w->sw = (struct store_switch){.now = ms_floor_s(now),
                                      .max_per_hour = cfg(e)->security.max_platform_switches_per_hour};
        memcpy(w->key, s->key, sizeof w->key);
        w->row_key = s->row_key;
        w->now = now;
        w->done = done;
        w->userdata = userdata;
        table_session_id(e, s, w->id);
        snprintf(w->platform, sizeof w->platform, "%s", platform_id);
        table_info_fill(e, h, now, &w->info);
        w->info.user_id = w->user_id;
        w->info.platform_id = w->platform;

        r = txn_begin(e);
        if (r < 0) {
                wait_finish(engine_switch_detach_now(w), r, NULL, NULL);
                return r;
        }
        w->audited = cfg(e)->security.audit_logging;
        r = txn_row_touch(e, w->row_key, h);
        if (r >= 0)
                r = store_session_switch_platform(e->store, w->row_key, platform_id, w->audited ? w->user_id : NULL,
                                                  w->id, &w->sw);
        if (r < 0) {
                wait_finish(engine_switch_detach_now(w), r, NULL, NULL);
                return txn_fail(e, r);
        }
        txn_wait_add(e, &w->base);
        S(e, h)->flags |= S_SWITCHING;
        *ret = w;
        return 0;
}

void platform_rotated(struct engine *e, uint32_t old_h, int64_t new_row_key) {
        if (e->fleet && (S(e, old_h)->flags & S_SWITCHING))
                fleet_row_changed(e, new_row_key, STORE_CHANGE_PLATFORM);
}
