/* The session operations off the validation path (see engine-internal.h
 * for the other files): Destroy and DestroyUser,
 * the listings, the watch's lookups and the operator's Terminate and
 * TerminateUser. Listings read live sessions from memory and their rows
 * (ip, user agent) from the store; ended sessions only from the store.
 * A Watch's final reply reads its ended row on the loop, but on a fleet,
 * where the store's writer reads it after the next commit
 * (engine_session_by_id_later).
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

/* ---- listings -------------------------------------------------------------------------------------------- */

/* Pages. A listing goes in row order, so a page ends at a row and the
 * next begins after it: a session is listed at most once however the
 * table changes between pages, and one that exists throughout is listed
 * exactly once. A page also stops after examining scan_max rows (the ended
 * ones a live listing skips, expired ones), so that its time is bounded
 * whatever the table holds; it may then be short, even empty, with more to
 * come. */
struct list_ctx {
        struct engine *e;
        int64_t now;
        bool include_ended;
        unsigned limit, n;
        engine_info_fn cb;
        void *userdata;
        unsigned scanned, scan_max; /* scan_max 0: no bound */
        int64_t last;               /* the last row examined */
        bool stopped;               /* by the limit or scan_max: more may follow */
};

static int list_row_cb(const struct store_session *row, void *userdata) {
        struct list_ctx *x = userdata;
        struct engine_info info;
        uint32_t h;
        int r;

        if (x->n >= x->limit || (x->scan_max && x->scanned >= x->scan_max)) {
                x->stopped = true;
                return 1;
        }
        x->scanned++;
        x->last = row->row_key;
        if (row->ended_at == 0) {
                h = session_find_key(x->e, row->token_hash);
                if (h == NIL)
                        return 0;
                table_info_fill(x->e, h, x->now, &info);
                if (info.state == ENGINE_STATE_EXPIRED && !x->include_ended)
                        return 0;
                info.ip = row->ip;
                info.user_agent = row->user_agent;
        } else {
                if (!x->include_ended)
                        return 0;
                table_info_from_row(row, &info);
        }
        x->n++;
        r = x->cb(&info, x->userdata);
        if (r != 0)
                x->stopped = true; /* the callback ends the page here: more may follow */
        return r != 0 ? 1 : 0;
}

/* One user's sessions in row order: the live ones are in memory (their rows
 * are read by row_key, for ip and user agent), the ended ones come from the
 * store's index of ended rows; the two are merged. The store has no index
 * of live rows by user, so that Create writes no random index page. */
struct user_list {
        struct list_ctx *x;
        int64_t *live; /* row_keys, ascending */
        size_t n_live, next;
};

static int row_key_cmp(const void *a, const void *b) {
        int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;

        return (x > y) - (x < y);
}

/* Lists the live rows below `below`; a positive return stops. */
static int user_list_live(struct user_list *u, int64_t below) {
        int r;

        while (u->next < u->n_live && u->live[u->next] < below) {
                r = store_session_by_row_key(u->x->e->store, u->live[u->next++], list_row_cb, u->x);
                if (r != 0 && r != -ENOENT)
                        return r;
        }
        return 0;
}

static int user_list_ended_cb(const struct store_session *row, void *userdata) {
        struct user_list *u = userdata;
        int r = user_list_live(u, row->row_key);

        return r != 0 ? r : list_row_cb(row, u->x);
}

/* Keeps the `cap` smallest of the row_keys pushed, in a max-heap of heap[0..*n). */
static void heap_push_smallest(int64_t *heap, size_t *n, size_t cap, int64_t v) {
        size_t i;

        if (*n < cap) {
                for (i = (*n)++; i > 0 && heap[(i - 1) / 2] < v; i = (i - 1) / 2)
                        heap[i] = heap[(i - 1) / 2];
                heap[i] = v;
                return;
        }
        if (v >= heap[0])
                return;
        for (i = 0;;) { /* replace the largest and sift down */
                size_t c = 2 * i + 1;

                if (c >= *n)
                        break;
                if (c + 1 < *n && heap[c + 1] > heap[c])
                        c++;
                if (heap[c] <= v)
                        break;
                heap[i] = heap[c];
                i = c;
        }
        heap[i] = v;
}

/* The live rows of a user after `after` that a page can reach, ascending:
 * a page examines at most scan_max rows (expired ones it skips included),
 * and one more tells it that more follow, so the scan_max + 1 smallest
 * (all without a bound). Sorting every live row of the user cost each page
 * of a 50,000-session user 10 ms; picking the smallest is one pass. */
static int user_live_rows(struct engine *e, uint32_t user, const struct list_ctx *x, int64_t after,
                          struct user_list *u) {
        size_t n = e->users[user].n_sessions;
        size_t cap = x->scan_max && x->scan_max < n ? (size_t) x->scan_max + 1 : n;

        u->live = malloc((cap > 0 ? cap : 1) * sizeof *u->live);
        if (!u->live)
                return -ENOMEM;
        for (uint32_t h = e->users[user].head; h != NIL; h = e->sessions[h].user_next)
                if (e->sessions[h].row_key > after)
                        heap_push_smallest(u->live, &u->n_live, cap, e->sessions[h].row_key);
        qsort(u->live, u->n_live, sizeof *u->live, row_key_cmp);
        return 0;
}

static int list_user(struct engine *e, struct list_ctx *x, const char *user_id, int64_t after) {
        struct user_list u = {x, NULL, 0, 0};
        uint32_t user = table_user_find(e, user_id);
        int r = 0;

        if (user != NIL && e->users[user].n_sessions > 0) {
                r = user_live_rows(e, user, x, after, &u);
                if (r < 0)
                        return r;
        }
        if (x->include_ended)
                r = store_sessions_ended_of_user_after(e->store, user_id, after, user_list_ended_cb, &u);
        if (r == 0)
                r = user_list_live(&u, INT64_MAX);
        free(u.live);
        return r;
}

int engine_list_sessions_page(struct engine *e, int64_t now, const char *user_id, bool include_ended, unsigned limit,
                              struct engine_page *page, engine_info_fn cb, void *userdata) {
        struct list_ctx x = {e, now, include_ended, limit, 0, cb, userdata, 0, page ? page->scan_max : 0, 0, false};
        int64_t after = page ? page->after : 0;
        struct store_filter f = {.live_only = !include_ended, .after_row_key = after};
        int r;

        if (page) {
                page->next = after;
                page->more = false;
        }
        if (limit == 0)
                return 0;
        if (user_id)
                r = list_user(e, &x, user_id, after);
        else
                r = store_sessions_each(e->store, &f, list_row_cb, &x);
        if (r < 0)
                return txn_storage_errno(r);
        if (page && x.stopped) {
                page->next = x.last > after ? x.last : after;
                page->more = true;
        }
        return 0;
}

int engine_list_sessions(struct engine *e, int64_t now, const char *user_id, bool include_ended, unsigned limit,
                         engine_info_fn cb, void *userdata) {
        return engine_list_sessions_page(e, now, user_id, include_ended, limit, NULL, cb, userdata);
}

int engine_session_by_id(struct engine *e, int64_t now, const char *id, engine_info_fn cb, void *userdata) {
        struct list_ctx x = {e, now, true, 1, 0, cb, userdata, 0, 0, 0, false};
        int r;

        r = store_session_by_id(e->store, id, list_row_cb, &x);
        if (r == -ENOENT)
                return r;
        return r < 0 ? txn_storage_errno(r) : 0;
}

int engine_list_user_page(struct engine *e, int64_t now, const char *user_id, unsigned limit, struct engine_page *page,
                          engine_info_fn cb, void *userdata, struct engine_error *err) {
        const char *why;

        if (page) {
                page->next = page->after;
                page->more = false;
        }
        if ((why = session_check_name(user_id, ENGINE_USER_ID_MAX)))
                return session_invalid(err, "user_id", why);
        if (table_user_find(e, user_id) == NIL)
                return 0;
        return engine_list_sessions_page(e, now, user_id, false, limit, page, cb, userdata);
}

int engine_list_user(struct engine *e, int64_t now, const char *user_id, engine_info_fn cb, void *userdata,
                     struct engine_error *err) {
        return engine_list_user_page(e, now, user_id, UINT_MAX, NULL, cb, userdata, err);
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

/* A Watch's final reply: the ended row. Not a fleet it is read on the
 * loop at once; on a fleet by the store's writer right after the next
 * commit (store_read_after), the call waiting for that unit (struct
 * unit_wait). An ended row no longer changes, so a read after any commit
 * that followed its end is the row as it stays; a row still live there is
 * told from memory, as engine_session_by_id() does. */
struct engine_session_read {
        struct unit_wait base; /* first: the unit's list holds it */
        int64_t row_key;
        int64_t now;
        engine_session_got_fn done; /* NULL: detached */
        void *userdata;
};

struct got_ctx {
        engine_session_got_fn done;
        void *userdata;
        bool told;
};

static int got_cb(const struct engine_info *info, void *userdata) {
        struct got_ctx *g = userdata;

        g->told = true;
        g->done(0, info, g->userdata);
        return 1;
}

static void session_read_committed(struct engine *e, struct unit_wait *base) {
        struct engine_session_read *w = container_of(base, struct engine_session_read, base);
        struct got_ctx g = {w->done, w->userdata, false};
        struct list_ctx x = {e, w->now, true, 1, 0, got_cb, &g, 0, 0, 0, false};
        int r = -EAGAIN;

        if (w->done)
                r = store_read_row(e->store, w->row_key, list_row_cb, &x);
        if (r == -EAGAIN) /* not read (the read failed): no read on the loop instead */
                r = -EIO;
        else if (r >= 0)
                e->counters.final_reads_after_commit++;
        if (w->done && !g.told)
                w->done(r == -ENOENT ? r : r < 0 ? txn_storage_errno(r) : 0, NULL, w->userdata);
        free(w);
}

static void session_read_lost(struct engine *e, struct unit_wait *base, int r) {
        struct engine_session_read *w = container_of(base, struct engine_session_read, base);

        (void) e;
        if (w->done)
                w->done(r, NULL, w->userdata);
        free(w);
}

int engine_session_by_id_later(struct engine *e, int64_t now, const char *id, const struct engine_ref *ref,
                               engine_session_got_fn done, void *userdata, struct engine_session_read **ret) {
        struct engine_session_read *w;
        int r;

        assert(done);
        if (ret)
                *ret = NULL;
        if (!e->fleet) {
                struct got_ctx g = {done, userdata, false};

                e->counters.final_reads_on_loop++;
                r = engine_session_by_id(e, now, id, got_cb, &g);
                if (!g.told)
                        done(r < 0 ? r : 0, NULL, userdata);
                return 0;
        }
        assert(ref->row_key > 0); /* engine_resolve()'s */
        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        r = txn_begin(e);
        if (r >= 0)
                r = store_read_after(e->store, ref->row_key);
        if (r < 0) {
                free(w);
                return txn_storage_errno(r);
        }
        w->base = (struct unit_wait){.committed = session_read_committed, .lost = session_read_lost};
        w->row_key = ref->row_key;
        w->now = now;
        w->done = done;
        w->userdata = userdata;
        txn_wait_add(e, &w->base);
        if (ret)
                *ret = w;
        return 0;
}

void engine_session_read_detach(struct engine_session_read *x) {
        x->done = NULL;
}

/* ---- administration ------------------------------------------------------------------------------------------- */

struct key_row {
        bool found, live;
        uint8_t key[16];
};

static int key_row_cb(const struct store_session *row, void *userdata) {
        struct key_row *k = userdata;

        k->found = true;
        k->live = row->ended_at == 0;
        memcpy(k->key, row->token_hash, sizeof k->key);
        return 1;
}

int engine_terminate(struct engine *e, int64_t now, const char *id) {
        struct key_row k = {0};
        uint32_t h;
        int r;

        r = store_session_by_id(e->store, id, key_row_cb, &k);
        if (r == -ENOENT || (r >= 0 && (!k.found || !k.live)))
                return -ENOENT;
        if (r < 0)
                return txn_storage_errno(r);
        h = session_find_key(e, k.key);
        if (h == NIL)
                return -ENOENT;
        log_info("Session %s terminated by an operator.", id);
        return session_end(e, now, h, ENGINE_END_TERMINATED, now, "ended", NULL);
}

int engine_terminate_user(struct engine *e, int64_t now, const char *user_id, unsigned *count) {
        bool more;
        int r = engine_end_user_step(e, now, user_id, now, 0, ENGINE_END_TERMINATED, 0, count, &more);

        if (r >= 0 && *count > 0)
                log_info("%u sessions of user %s terminated by an operator.", *count, user_id);
        return r;
}
