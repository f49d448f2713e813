/* Listings (see engine-internal.h for the other files): ListSessions,
 * ListUser, GetSession, the audit, and a Watch's final reply.
 *
 * A listing reads live sessions from memory and their rows (ip, user
 * agent) from the store; ended sessions only from the store. A store of
 * one host (SQLite) is read on the loop, a page at a time (the functions
 * of "on the loop" below): a local read of a bounded page costs a few ms
 * at most. A shared store is PostgreSQL across a network, and the loop
 * never waits on the network (DESIGN 8): there each page is read by the
 * store's writer right after the next commit (store_read_page_after), the
 * call waiting for that unit (struct unit_wait), and built from the rows
 * read with the same row callback (the functions "later" below; on one
 * host they answer at once). A page of a later read follows the same
 * rules as one read on the loop: in row order, at most scan_max rows
 * examined, one that lives throughout a listing listed exactly once.
 */
#include "engine-internal.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"

/* ---- listings on the loop -------------------------------------------------------------------------------------------- */

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

        if (u->next < u->n_live && u->live[u->next] == row->row_key)
                u->next++; /* ended in the store, live in memory still: listed once, as ended */
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

/* The live rows of a user after `after`, ascending: the `cap` smallest
 * (all with cap 0); *cut when more are after them. A page examines at most
 * scan_max rows (expired ones it skips included), and one more tells it
 * that more follow. Sorting every live row of the user cost each page of a
 * 50,000-session user 10 ms; picking the smallest is one pass. */
static int user_live_keys(struct engine *e, uint32_t user, int64_t after, size_t cap, int64_t **ret, size_t *n_ret,
                          bool *cut) {
        size_t n = e->users[user].n_sessions, seen = 0;

        if (cap == 0 || cap > n)
                cap = n;
        *n_ret = 0;
        *ret = malloc((cap > 0 ? cap : 1) * sizeof **ret);
        if (!*ret)
                return -ENOMEM;
        for (uint32_t h = e->users[user].head; h != NIL; h = e->sessions[h].user_next)
                if (e->sessions[h].row_key > after) {
                        heap_push_smallest(*ret, n_ret, cap, e->sessions[h].row_key);
                        seen++;
                }
        qsort(*ret, *n_ret, sizeof **ret, row_key_cmp);
        if (cut)
                *cut = seen > *n_ret;
        return 0;
}

static int list_user(struct engine *e, struct list_ctx *x, const char *user_id, int64_t after) {
        struct user_list u = {x, NULL, 0, 0};
        uint32_t user = table_user_find(e, user_id);
        int r = 0;

        if (user != NIL && e->users[user].n_sessions > 0) {
                r = user_live_keys(e, user, after, x->scan_max ? (size_t) x->scan_max + 1 : 0, &u.live, &u.n_live,
                                   NULL);
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

/* ---- pages read later (a fleet) ------------------------------------------------------------------------------ */

struct engine_page_read {
        struct unit_wait base; /* first: the unit's list holds it */
        struct store_page_read x;
        int64_t now;
        struct engine_list_ask ask; /* its strings: user_id, id below */
        char *user_id, *id, *audit_user, *audit_kind;
        int64_t *keys; /* OF_USER: the user's live rows asked */
        size_t n_keys;
        bool keys_cut;  /* more live rows follow the last key */
        bool terminate; /* BY_ID: end the session read (engine_terminate_later) */
        bool again;     /* read a second time (page_read_stale) */
        engine_info_fn cb;
        engine_audit_fn audit_cb;
        engine_page_done_fn done; /* NULL: detached */
        engine_audit_done_fn audit_done;
        void *userdata;
};

static void page_read_free(struct engine_page_read *w) {
        store_page_read_clear(&w->x);
        free(w->user_id);
        free(w->id);
        free(w->audit_user);
        free(w->audit_kind);
        free(w->keys);
        free(w);
}

void engine_page_read_detach(struct engine_page_read *w) {
        w->done = NULL;
        w->audit_done = NULL;
}

static bool page_read_detached(const struct engine_page_read *w) {
        return !w->done && !w->audit_done;
}

static void page_read_answer(struct engine_page_read *w, int r, const struct engine_page *page) {
        if (w->done)
                w->done(r, page, w->userdata);
        else if (w->audit_done)
                w->audit_done(r, w->x.audit_after, w->userdata);
}

/* The entries of a sessions page read after a commit, as a page read on
 * the loop gives them: the same row callback, the same page. Rows after
 * what the read covers (it stopped at max_rows, or the live rows asked
 * did) are not examined: the next page begins after the last row that
 * was. */
static int page_sessions(struct engine *e, struct engine_page_read *w, struct engine_page *page) {
        struct list_ctx x = {
                e, w->now, w->ask.include_ended, w->ask.limit, 0, w->cb, w->userdata, 0, w->ask.page.scan_max,
                0, false};
        bool cut = !w->x.complete || w->keys_cut;
        int64_t bound = INT64_MAX;
        int r = 0;

        if (w->x.kind == STORE_PAGE_SESSIONS && !w->x.complete)
                bound = w->x.rows[w->x.n_rows - 1].row_key;
        if (w->x.kind == STORE_PAGE_OF_USER && !w->x.complete)
                bound = w->x.bound;
        if (w->keys_cut && w->keys[w->n_keys - 1] < bound)
                bound = w->keys[w->n_keys - 1];
        *page = (struct engine_page){.after = w->ask.page.after, .next = w->ask.page.after};
        for (size_t i = 0; i < w->x.n_rows && r == 0; i++) {
                if (w->x.rows[i].row_key > bound)
                        break;
                r = list_row_cb(&w->x.rows[i], &x);
        }
        if (r < 0)
                return r;
        if (x.stopped) {
                page->next = x.last > page->after ? x.last : page->after;
                page->more = true;
        } else if (cut) {
                page->next = bound;
                page->more = true;
        }
        return 0;
}

static int page_one(struct engine *e, struct engine_page_read *w) {
        struct list_ctx x = {e, w->now, true, 1, 0, w->cb, w->userdata, 0, 0, 0, false};
        int r;

        if (w->x.n_rows == 0)
                return -ENOENT;
        r = list_row_cb(&w->x.rows[0], &x);
        if (r < 0)
                return r;
        return x.n == 0 ? -ENOENT : 0; /* a live row memory does not hold: not a session (yet) */
}

static int page_audit(struct engine_page_read *w) {
        int r = 0;

        for (size_t i = 0; i < w->x.n_entries && r == 0; i++)
                r = w->audit_cb(&w->x.entries[i], w->userdata);
        return r < 0 ? r : 0;
}

/* Whether the page shows a row live that memory no longer holds, while it
 * wants ended rows too (GetSession, include_ended). Memory ends a session
 * at once and the store only with the unit that follows: a session ended
 * on the loop while its page was being read (by this daemon's Terminate
 * answered from the same commit, by a Destroy) reads live, and would be
 * left out, or "not found". Read after the next commit, which holds the
 * end, it reads ended. (A live row memory does not hold for another
 * reason, a session another daemon made and this one has not heard of
 * yet, is left out the second time, as on one host.) */
static bool page_read_stale(struct engine *e, const struct engine_page_read *w) {
        if (w->again || w->terminate || w->x.result < 0 || w->x.kind == STORE_PAGE_AUDIT ||
            (w->x.kind != STORE_PAGE_BY_ID && !w->ask.include_ended))
                return false;
        for (size_t i = 0; i < w->x.n_rows; i++)
                if (w->x.rows[i].ended_at == 0 && session_find_key(e, w->x.rows[i].token_hash) == NIL)
                        return true;
        return false;
}

/* The read is in (or failed: -EAGAIN): the caller gets its page. */
static void page_read_finish(struct engine *e, struct engine_page_read *w) {
        struct engine_page page = {0};
        int r = w->x.result;

        if (r == -EAGAIN)
                r = -EIO; /* not read: no read on the loop instead */
        else if (r >= 0 && w->x.kind == STORE_PAGE_AUDIT)
                r = page_audit(w);
        else if (r >= 0 && w->terminate)
                r = w->x.n_rows == 0 ? -ENOENT : session_terminate_row(e, w->now, &w->x.rows[0]);
        else if (r >= 0 && w->x.kind == STORE_PAGE_BY_ID)
                r = page_one(e, w);
        else if (r >= 0)
                r = page_sessions(e, w, &page);
        page_read_answer(w, r == -ENOENT || r == -ENOMEM ? r : r < 0 ? txn_storage_errno(r) : 0, &page);
        page_read_free(w);
}

static void page_read_committed(struct engine *e, struct unit_wait *base) {
        struct engine_page_read *w = container_of(base, struct engine_page_read, base);

        if (page_read_detached(w)) {
                page_read_free(w);
                return;
        }
        e->counters.page_reads_after_commit++;
        if (page_read_stale(e, w)) {
                int r = txn_begin(e);

                w->again = true;
                if (r >= 0)
                        r = store_read_page_after(e->store, &w->x);
                if (r >= 0) {
                        txn_wait_add(e, &w->base); /* the same caller's read, one unit later */
                        return;
                }
                w->x.result = -EAGAIN; /* answered as not read */
        }
        page_read_finish(e, w);
}

static void page_read_lost(struct engine *e, struct unit_wait *base, int r) {
        struct engine_page_read *w = container_of(base, struct engine_page_read, base);

        (void) e;
        page_read_answer(w, r, &(struct engine_page){0});
        page_read_free(w);
}

/* Asks the open unit for w's read; w waits for that unit. */
static int page_read_ask(struct engine *e, struct engine_page_read *w, struct engine_page_read **ret) {
        int r = txn_begin(e);

        if (r >= 0)
                r = store_read_page_after(e->store, &w->x);
        if (r < 0) {
                page_read_free(w);
                return txn_storage_errno(r);
        }
        w->base = (struct unit_wait){.committed = page_read_committed, .lost = page_read_lost};
        txn_wait_add(e, &w->base);
        if (ret)
                *ret = w;
        return 0;
}

static int strdup_or_null(const char *v, char **ret) {
        *ret = NULL;
        if (v && !(*ret = strdup(v)))
                return -ENOMEM;
        return 0;
}

/* One host: the page read on the loop at once. */
static int list_page_now(struct engine *e, int64_t now, const struct engine_list_ask *ask, engine_info_fn cb,
                         engine_page_done_fn done, void *userdata, struct engine_error *err) {
        struct engine_page page = ask->page;
        int r;

        e->counters.page_reads_on_loop++;
        if (ask->id) {
                struct list_ctx x = {e, now, true, 1, 0, cb, userdata, 0, 0, 0, false};

                r = store_session_by_id(e->store, ask->id, list_row_cb, &x);
                if (r >= 0 && x.n == 0)
                        r = -ENOENT;
                done(r == -ENOENT || r == -ENOMEM ? r : r < 0 ? txn_storage_errno(r) : 0, &page, userdata);
                return 0;
        }
        if (ask->user_listing)
                r = engine_list_user_page(e, now, ask->user_id, ask->limit, &page, cb, userdata, err);
        else
                r = engine_list_sessions_page(e, now, ask->user_id, ask->include_ended, ask->limit, &page, cb,
                                              userdata);
        if (r == -EINVAL)
                return r; /* err says why; done does not run */
        done(r, &page, userdata);
        return 0;
}

int engine_list_page_later(struct engine *e, int64_t now, const struct engine_list_ask *ask, engine_info_fn cb,
                           engine_page_done_fn done, void *userdata, struct engine_error *err,
                           struct engine_page_read **ret) {
        struct engine_page_read *w;
        uint32_t user = NIL;
        size_t cap;
        int r;

        assert(cb && done);
        assert(ask->id || ask->page.scan_max > 0);
        if (ret)
                *ret = NULL;
        if (ask->user_listing) {
                const char *why = session_check_name(ask->user_id, ENGINE_USER_ID_MAX);

                if (why)
                        return session_invalid(err, "user_id", why);
        }
        if (!e->fleet)
                return list_page_now(e, now, ask, cb, done, userdata, err);
        if (ask->user_id)
                user = table_user_find(e, ask->user_id);
        if (!ask->id && ask->limit == 0) {
                done(0, &(struct engine_page){.after = ask->page.after, .next = ask->page.after}, userdata);
                return 0;
        }
        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->now = now;
        w->ask = *ask;
        w->cb = cb;
        w->done = done;
        w->userdata = userdata;
        if (strdup_or_null(ask->user_id, &w->user_id) < 0 || strdup_or_null(ask->id, &w->id) < 0) {
                page_read_free(w);
                return -ENOMEM;
        }
        w->ask.user_id = w->user_id;
        w->ask.id = w->id;
        cap = (ask->limit < ask->page.scan_max ? ask->limit : ask->page.scan_max) + (size_t) 1;
        if (ask->id) {
                w->x.kind = STORE_PAGE_BY_ID;
                w->x.id = w->id;
        } else if (!ask->user_id) {
                w->x.kind = STORE_PAGE_SESSIONS;
                w->x.filter = (struct store_filter){.live_only = !ask->include_ended, .after_row_key = ask->page.after};
                w->x.max_rows = cap;
        } else {
                w->x.kind = STORE_PAGE_OF_USER;
                w->x.user_id = w->user_id;
                w->x.filter = (struct store_filter){.live_only = !ask->include_ended, .after_row_key = ask->page.after};
                w->x.max_rows = cap;
                if (user != NIL) {
                        r = user_live_keys(e, user, ask->page.after, cap, &w->keys, &w->n_keys, &w->keys_cut);
                        if (r < 0) {
                                page_read_free(w);
                                return r;
                        }
                }
                w->x.row_keys = w->keys;
                w->x.n_row_keys = w->n_keys;
                if (w->n_keys == 0 && !ask->include_ended) { /* nothing to read */
                        done(0, &(struct engine_page){.after = ask->page.after, .next = ask->page.after}, userdata);
                        page_read_free(w);
                        return 0;
                }
        }
        return page_read_ask(e, w, ret);
}

int engine_audit_page_later(struct engine *e, const struct store_audit_filter *f, unsigned newest, engine_audit_fn cb,
                            engine_audit_done_fn done, void *userdata, struct engine_page_read **ret) {
        struct engine_page_read *w;
        int r;

        assert(cb && done);
        if (ret)
                *ret = NULL;
        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->audit_cb = cb;
        w->audit_done = done;
        w->userdata = userdata;
        w->x.kind = STORE_PAGE_AUDIT;
        w->x.audit = *f;
        w->x.audit_newest = newest;
        if (strdup_or_null(f->user_id, &w->audit_user) < 0 || strdup_or_null(f->kind, &w->audit_kind) < 0) {
                page_read_free(w);
                return -ENOMEM;
        }
        w->x.audit.user_id = w->audit_user;
        w->x.audit.kind = w->audit_kind;
        if (e->fleet)
                return page_read_ask(e, w, ret);
        /* One host: read on the loop at once. */
        e->counters.page_reads_on_loop++;
        r = store_read_page(e->store, &w->x);
        if (r < 0)
                w->x.result = r == -ENOMEM ? r : -EAGAIN;
        page_read_finish(e, w);
        return 0;
}

int engine_terminate_later(struct engine *e, int64_t now, const char *id, engine_page_done_fn done, void *userdata,
                           struct engine_page_read **ret) {
        struct engine_page_read *w;

        assert(done);
        if (ret)
                *ret = NULL;
        if (!e->fleet) {
                done(engine_terminate(e, now, id), &(struct engine_page){0}, userdata);
                return 0;
        }
        w = calloc(1, sizeof *w);
        if (!w || !(w->id = strdup(id))) {
                free(w);
                return -ENOMEM;
        }
        w->now = now;
        w->done = done;
        w->userdata = userdata;
        w->terminate = true;
        w->x.kind = STORE_PAGE_BY_ID;
        w->x.id = w->id;
        return page_read_ask(e, w, ret);
}
