/* The session operations off the validation path (see engine-internal.h
 * for the other files): Destroy and DestroyUser, the watch's lookups and
 * the operator's Terminate and TerminateUser. The listings, and a Watch's
 * final reply, are in listing.c.
 */
#include "engine-internal.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"

/* ---- destroy ------------------------------------------------------------------------------------------ */

int engine_destroy(struct engine *e, int64_t now, const char *token, struct engine_error *err) {
        uint32_t h;
        int r;

        /* Any session still in memory can be logged out, even one past its
         * end that cleanup has not reached yet. */
        r = session_lookup(e, now, token, false, &h, err);
        if (r < 0)
                return r;
        return session_end(e, now, h, ENGINE_END_DESTROYED, now, "ended", NULL);
}

/* Bulk ends. A user may hold tens of thousands of sessions, and each end
 * costs 10 to 30 us of SQLite: DestroyUser and TerminateUser end them in
 * steps bounded by a deadline (the daemon's bulk.c drives the steps, one
 * unit of work each, the loop serving others in between). A step walks the
 * user's list from its head again, so that nothing that moved meanwhile is
 * missed; what it skips (expired sessions, which cleanup ends, the
 * excepted one, and those created after the call) is all it walks twice.
 * Sessions created after the call began (created_at > created_by, in ms; a
 * rotation keeps created_at, so a rotated session is still ended) are left
 * alone, so that a user creating sessions cannot keep the call going for
 * ever. */
#define BULK_CLOCK_ENDED 4 /* the clock is read every few sessions ended */

int engine_end_user_step(struct engine *e, int64_t now, const char *user_id, int64_t created_by, int64_t except_row_key,
                         enum engine_end_reason reason, uint64_t deadline_ns, unsigned *ended, bool *more) {
        uint32_t user = table_user_find(e, user_id), h, next;
        int r = 0;

        *ended = 0;
        *more = false;
        if (user == NIL)
                return 0;
        /* Hold the user: ending its last session would free it mid-walk. */
        e->users[user].n_sessions++;
        for (h = e->users[user].head; h != NIL; h = next) {
                const struct session *s = &e->sessions[h];

                next = s->user_next;
                if (s->row_key == except_row_key || session_ms(s, ST_CREATED) > created_by ||
                    table_session_state(e, s, now, NULL, NULL) == ENGINE_STATE_EXPIRED)
                        continue;
                if (*ended > 0 && *ended % BULK_CLOCK_ENDED == 0 && deadline_ns && uv_hrtime() >= deadline_ns) {
                        *more = true;
                        break;
                }
                r = session_end(e, now, h, reason, now, "ended", NULL);
                if (r < 0)
                        break;
                (*ended)++;
        }
        e->users[user].n_sessions--;
        table_user_maybe_free(e, user);
        return r;
}

int engine_destroy_user_check(struct engine *e, int64_t now, const char *user_id, const char *except_token,
                              int64_t *except_row_key, struct engine_error *err) {
        uint32_t except;
        const char *why;
        int r;

        *except_row_key = 0;
        if ((why = session_check_name(user_id, ENGINE_USER_ID_MAX)))
                return session_invalid(err, "user_id", why);
        if (!except_token)
                return 0;
        r = session_lookup_live(e, now, except_token, false, &except, NULL, err);
        if (r < 0) {
                if (r == -EINVAL)
                        err->field = "except_token";
                return r;
        }
        if (strcmp(user_name(e, S(e, except)->user), user_id) != 0)
                return session_invalid(err, "except_token", "belongs to another user");
        *except_row_key = S(e, except)->row_key;
        return 0;
}

int engine_destroy_user(struct engine *e, int64_t now, const char *user_id, const char *except_token, unsigned *count,
                        struct engine_error *err) {
        int64_t except;
        bool more;
        int r;

        *count = 0;
        r = engine_destroy_user_check(e, now, user_id, except_token, &except, err);
        if (r < 0)
                return r;
        return engine_end_user_step(e, now, user_id, now, except, ENGINE_END_DESTROYED, 0, count, &more);
}

/* ---- watch support ------------------------------------------------------------------------------------------ */

int engine_resolve(struct engine *e, int64_t now, const char *token, struct engine_ref *ref, struct engine_info *ret,
                   struct engine_error *err) {
        uint32_t h;
        int r;

        r = session_lookup_live(e, now, token, false, &h, NULL, err);
        if (r < 0)
                return r;
        memcpy(ref->key, S(e, h)->key, sizeof ref->key);
        ref->row_key = S(e, h)->row_key;
        table_info_fill(e, h, now, ret);
        return 0;
}

int engine_peek(struct engine *e, int64_t now, const struct engine_ref *ref, struct engine_info *ret) {
        uint32_t h = session_find_key(e, ref->key);

        if (h == NIL)
                return -ENOENT;
        table_info_fill(e, h, now, ret);
        return 0;
}

/* ---- administration ------------------------------------------------------------------------------------------- */

/* Ends the session of a row read by its id (terminated): -ENOENT when it
 * is not live in the store or not in memory. */
int session_terminate_row(struct engine *e, int64_t now, const struct store_session *row) {
        uint32_t h;

        if (row->ended_at != 0)
                return -ENOENT;
        h = session_find_key(e, row->token_hash);
        if (h == NIL)
                return -ENOENT;
        log_info("Session %s terminated by an operator.", row->id);
        return session_end(e, now, h, ENGINE_END_TERMINATED, now, "ended", NULL);
}

struct terminate_ctx {
        bool found;
        struct store_session row; /* its strings are not kept */
};

static int terminate_row_cb(const struct store_session *row, void *userdata) {
        struct terminate_ctx *t = userdata;

        t->found = true;
        t->row = *row;
        t->row.id = t->row.user_id = t->row.platform_id = t->row.end_reason = t->row.ip = t->row.user_agent = NULL;
        return 1;
}

int engine_terminate(struct engine *e, int64_t now, const char *id) {
        struct terminate_ctx t = {0};
        int r;

        r = store_session_by_id(e->store, id, terminate_row_cb, &t);
        if (r == -ENOENT || (r >= 0 && !t.found))
                return -ENOENT;
        if (r < 0)
                return txn_storage_errno(r);
        t.row.id = id;
        return session_terminate_row(e, now, &t.row);
}

int engine_terminate_user(struct engine *e, int64_t now, const char *user_id, unsigned *count) {
        bool more;
        int r = engine_end_user_step(e, now, user_id, now, 0, ENGINE_END_TERMINATED, 0, count, &more);

        if (r >= 0 && *count > 0)
                log_info("%u sessions of user %s terminated by an operator.", *count, user_id);
        return r;
}
