/* The session engine in a fleet: learning what other daemons committed
 * (DESIGN 8, features.caching; see engine-internal.h for the other files).
 *
 * On a store that several daemons share, the engine's memory is a cache of
 * the live sessions. The store reports every change another daemon
 * commits (PostgreSQL LISTEN/NOTIFY: store_changes_subscribe) as the row
 * that changed; the engine reads that row again and makes memory match it,
 * the way a rolled-back unit's rows are reloaded (txn.c): a session ended
 * elsewhere leaves memory (so Validate answers Expired with the reason the
 * store has), one created elsewhere enters it, one renewed, switched or
 * re-fingerprinted is replaced by the store's version. Touches are not
 * reported (each daemon coalesces its own and the store keeps the
 * greatest), so a replaced entry keeps the newer last activity of the two.
 * Watch streams on this daemon hear of ends and sync writes made on
 * another.
 *
 * Creations come a little later than the rest (PostgreSQL announces them
 * after their commit, coalesced, to keep the notify lock out of the
 * creating transactions), possibly after a later change of the same
 * session: each change is a row read again, so order does not matter.
 *
 * Since touches are not reported, a session memory thinks awaits
 * cleanup may be alive elsewhere: the cleanup's candidates are read again
 * the same way, by the writer after a commit, before they are ended
 * (cleanup.c).
 *
 * When the store says changes may have been missed (its listening
 * connection was lost, or another daemon died before announcing its last
 * creations), every live session in memory is read again: the store's
 * live rows, a page per commit, then the sessions no page found live, all
 * by the writer after a commit like the changes' rows (never on the loop,
 * with a million sessions as with ten; "every live session, read again").
 *
 * PostgreSQL down: fleet-probe.c.
 */
#include "engine-internal.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "macro.h"

struct remote_ctx {
        struct engine *e;
        enum store_change_kind kind;
        uint32_t h;                /* out: the entry now in memory, NIL: none (ended or gone) */
        store_session_fn ended_cb; /* an ended row, after memory let go of it (may be NULL) */
        void *ended_userdata;
};

static void remote_ended(struct engine *e, uint32_t h, const struct store_session *row) {
        char id[TOKEN_ID_STRING_LEN + 1];
        int64_t duration = (row->ended_at - row->created_at) / 1000;

        e->counters.remote_ended++;
        if (!bus_observed(e)) {
                table_session_remove(e, h);
                return;
        }
        table_session_id(e, S(e, h), id);
        {
                char *user_copy = strdup(user_name(e, S(e, h)->user));

                table_session_remove(e, h);
                bus_emit_take_committed(e, clock_now_ms(), "ended", id, user_copy,
                                        json_pack("{s:s, s:I}", "reason",
                                                  row->end_reason ? row->end_reason : "destroyed", "duration",
                                                  (json_int_t) (duration > 0 ? duration : 0)));
        }
}

/* What Watch streams (and other observers) hear of a change made elsewhere:
 * the events this daemon would have emitted had it made it. */
static void remote_emit(struct engine *e, enum store_change_kind kind, const struct store_session *row) {
        if (!bus_observed(e))
                return;
        switch (kind) {
        case STORE_CHANGE_SYNC:
                bus_emit_take_committed(e, clock_now_ms(), "sync", row->id, strdup(row->user_id),
                                        json_pack("{s:I}", "version", (json_int_t) row->sync_version));
                break;
        case STORE_CHANGE_PLATFORM:
                bus_emit_take_committed(e, clock_now_ms(), "platform_switched", row->id, strdup(row->user_id),
                                        json_pack("{s:s?}", "to", row->platform_id));
                break;
        case STORE_CHANGE_RENEWED:
                bus_emit_take_committed(e, clock_now_ms(), "extended", row->id, strdup(row->user_id), json_object());
                break;
        default:
                break;
        }
}

/* Makes memory match one row of the store. */
static int remote_row_cb(const struct store_session *row, void *userdata) {
        struct remote_ctx *x = userdata;
        struct engine *e = x->e;
        uint32_t h = session_find_key(e, row->token_hash);
        int64_t last = 0;

        x->h = NIL;
        if (row->ended_at != 0) {
                if (h != NIL)
                        remote_ended(e, h, row);
                return x->ended_cb ? x->ended_cb(row, x->ended_userdata) : 0;
        }
        if (h != NIL) {
                last = session_ms(S(e, h), ST_ACTIVITY);
                table_session_remove(e, h);
        }
        if (table_session_add(e, row, &h) < 0) {
                log_error("Store %s: could not take session %s, changed by another daemon, into memory.",
                          store_name(e->store), row->id);
                return 0;
        }
        x->h = h;
        e->counters.remote_changed++;
        if (last > session_ms(S(e, h), ST_ACTIVITY)) {
                /* This daemon's touch is newer: keep it (it goes to the store with the next flush). */
                session_ms_set(S(e, h), ST_ACTIVITY, last);
                table_session_activity_moved(e, h);
                if (GROW(e->dirty, e->dirty_allocated, e->n_dirty + 1) == 0) {
                        S(e, h)->flags |= S_DIRTY;
                        e->dirty[e->n_dirty++] = h;
                }
        }
        remote_emit(e, x->kind, row);
        return 0;
}

/* Every live session memory holds, read again (changes may have been
 * missed), never on the loop: entries are marked S_STALE, and the store's
 * live rows are read by the writer after commits, a page at a time
 * (reread_answer, below). A pass under way starts again from the first
 * page (the page asked is dropped when it comes). */
static void reread_ask(struct engine *e);

void fleet_reload_all(struct engine *e) {
        for (uint32_t h = 0; h < e->sessions_used; h++)
                if (e->sessions[h].flags & S_USED)
                        e->sessions[h].flags |= S_STALE;
        e->reread_active = true;
        e->reread_ends = false;
        e->reread_after = 0;
        e->n_reread_gone = e->reread_gone_total = 0;
        if (e->reread_open || e->reread_inflight) {
                e->reread_restart = true;
                return;
        }
        reread_ask(e);
}

/* A change read now, on the loop, through the writing connection: it sees
 * the open unit's writes. */
static void remote_read_now(struct engine *e, const struct store_change *c) {
        struct remote_ctx x = {.e = e, .kind = c->kind};
        int r = store_session_by_row_key(e->store, c->row_key, remote_row_cb, &x);

        e->counters.loop_row_reads++;
        e->counters.remote_reads_on_loop++;
        if (r < 0 && r != -ENOENT)
                log_warning("Store %s: could not read session row %lld changed by another daemon: %s",
                            store_name(e->store), (long long) c->row_key, strerror(-r));
}

static void remote_clear(struct engine *e) {
        e->n_remote_open = e->n_remote_inflight = 0;
}

/* A change heard: its row is read by the writer after the open unit's
 * commit (store_read_after), and memory follows when that unit is done
 * (fleet_committed). Read now only when that cannot be. */
static void remote_change_cb(const struct store_change *c, bool lost, void *userdata) {
        struct engine *e = userdata;

        if (lost) {
                remote_clear(e); /* the whole pass below reads them too */
                e->remote_missed = false;
                fleet_reload_all(e);
                return;
        }
        if (GROW(e->remote_open, e->remote_open_allocated, e->n_remote_open + 1) < 0 || txn_begin(e) < 0 ||
            store_read_after(e->store, c->row_key) < 0) {
                remote_read_now(e, c);
                return;
        }
        e->remote_open[e->n_remote_open++] = *c;
}

void fleet_row_changed(struct engine *e, int64_t row_key, enum store_change_kind kind) {
        remote_change_cb(&(struct store_change){.kind = kind, .row_key = row_key}, false, e);
}

/* ---- the changes' rows, read after a commit (txn.c calls these) ------------------------------
 * Why after the commit, by the writer. A row read on another connection,
 * or at another time, could be older than what this daemon wrote since
 * (a session it ended would come back to life in memory). The writer reads
 * the rows right after committing the unit, before the next: the read
 * sees every write of this daemon committed so far, and the only writes
 * newer than it are those of the unit open when the answer comes
 * (e->affected): those rows are read again on the loop, through the
 * writing connection, which sees the open unit's writes. Memory may also
 * be newer than the writer's read when the loop itself read rows since
 * the unit was handed off (a read now, a refresh, a token looked up on
 * the loop): then every row is read again on the loop (rare), but for the
 * re-read of every session, whose reads are asked again after the next
 * commit instead (below). */

static void fetches_append(struct engine_fetch **list, struct engine_fetch *f);

void fleet_hand_off(struct engine *e) {
        assert(!e->fetch_inflight);
        e->loop_row_reads_at_hand_off = e->counters.loop_row_reads;
        e->fetch_inflight = e->fetch_open;
        e->fetch_open = NULL;
        SWAP(e->remote_open, e->remote_inflight);
        SWAP(e->remote_open_allocated, e->remote_inflight_allocated);
        e->n_remote_inflight = e->n_remote_open;
        e->n_remote_open = 0;
        SWAP(e->cleanup_open, e->cleanup_inflight);
        SWAP(e->cleanup_open_allocated, e->cleanup_inflight_allocated);
        e->n_cleanup_inflight = e->n_cleanup_open;
        e->n_cleanup_open = 0;
        e->reread_inflight = e->reread_open;
        e->reread_open = false;
}

static int affected_cmp(const void *a, const void *b) {
        int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;

        return x < y ? -1 : x > y;
}

static void fetches_answer(struct engine *e, const int64_t *written, size_t n_written);
static size_t cleanup_reads_answer(struct engine *e, const int64_t *written, size_t n_written);
static void cleanup_reads_end(struct engine *e, size_t n);
static void reread_answer(struct engine *e, const int64_t *written, size_t n_written);

void fleet_committed(struct engine *e) {
        _cleanup_free_ int64_t *written = NULL;
        size_t n = e->n_remote_inflight, n_written = e->n_affected;

        if (n == 0 && !e->fetch_inflight && e->n_cleanup_inflight == 0 && !e->reread_inflight)
                return;
        e->n_remote_inflight = 0;
        if (e->counters.loop_row_reads != e->loop_row_reads_at_hand_off)
                /* Rows were read on the loop since the writer's read may
                 * have run: memory may be newer than it for any row, so
                 * every row is read again, on the loop (rare). */
                n_written = SIZE_MAX;
        else if (n_written > 0 && (written = malloc(n_written * sizeof *written))) {
                for (size_t i = 0; i < n_written; i++)
                        written[i] = e->affected[i].row_key;
                qsort(written, n_written, sizeof *written, affected_cmp);
        }
        for (size_t i = 0; i < n; i++) {
                const struct store_change *c = &e->remote_inflight[i];
                struct remote_ctx x = {.e = e, .kind = c->kind};
                int r = -EAGAIN;

                if (n_written == 0 ||
                    (written && !bsearch(&c->row_key, written, n_written, sizeof *written, affected_cmp)))
                        r = store_read_row(e->store, c->row_key, remote_row_cb, &x);
                if (r == -EAGAIN)
                        remote_read_now(e, c);
                else
                        e->counters.remote_reads_after_commit++;
        }
        size_t n_cleanup;

        reread_answer(e, written, n_written);
        n_cleanup = cleanup_reads_answer(e, written, n_written);
        fetches_answer(e, written, n_written);
        /* Last: every row read is in memory first (an end now would be a
         * write of the open unit that rows read before it must not undo). */
        cleanup_reads_end(e, n_cleanup);
}

/* ---- every live session, read again after a commit (fleet_reload_all) -----------------------
 * The pages of live rows, then the entries no page found live, each read
 * by the writer after a commit (so the loop never waits for the network
 * for them, with a million sessions as with ten); each page's rows go into
 * memory when its unit is done (a page of FLEET_REREAD_PAGE rows per
 * commit: the loop applies them a page per iteration, not all at once).
 * The rule of the reads above holds: a row the open unit writes is read
 * again after the next commit (a change's read), and when the loop read
 * rows since the hand-off the whole page (or the ends' reads) is asked
 * again after the next commit rather than read on the loop. A read the
 * writer could not make, or a unit lost (fleet_lost), leaves the pass to
 * start again once a probe finds the store well (e->remote_missed). */

#define FLEET_REREAD_PAGE 10000

static void reread_stop(struct engine *e) {
        for (uint32_t h = 0; h < e->sessions_used; h++)
                e->sessions[h].flags &= ~S_STALE;
        e->reread_active = e->reread_ends = e->reread_restart = false;
        e->n_reread_gone = e->reread_gone_total = 0;
        if (!e->reread_open && !e->reread_inflight)
                store_page_read_clear(&e->reread);
}

/* Gives up the pass; the next good probe starts it again. */
static void reread_fail(struct engine *e) {
        reread_stop(e);
        e->remote_missed = true;
}

/* Asks the open unit for the pass's next read: a page of live rows, or
 * the rows of the entries not found live. */
static void reread_ask(struct engine *e) {
        int r = txn_begin(e);

        if (!e->reread_ends) {
                if (r >= 0) {
                        e->reread.kind = STORE_PAGE_SESSIONS;
                        e->reread.filter = (struct store_filter){
                                .live_only = true, .light = true, .after_row_key = e->reread_after};
                        e->reread.max_rows = FLEET_REREAD_PAGE;
                        r = store_read_page_after(e->store, &e->reread);
                }
        } else
                for (size_t i = 0; r >= 0 && i < e->n_reread_gone; i++)
                        r = store_read_after(e->store, e->reread_gone[i].row_key);
        if (r < 0) {
                log_warning("Store %s: cannot ask to re-read the cached sessions (%s); trying again later.",
                            store_name(e->store), strerror(-r));
                reread_fail(e);
                return;
        }
        e->reread_open = true;
}

/* The pages are done: each entry still S_STALE is no longer live in the
 * store; its row is read after the next commit to learn how it ended. */
static void reread_pages_done(struct engine *e) {
        e->n_reread_gone = 0;
        for (uint32_t h = 0; h < e->sessions_used; h++) {
                if (!(e->sessions[h].flags & S_STALE))
                        continue;
                e->sessions[h].flags &= ~S_STALE;
                if (GROW(e->reread_gone, e->reread_gone_allocated, e->n_reread_gone + 1) < 0) {
                        reread_fail(e);
                        return;
                }
                e->reread_gone[e->n_reread_gone++] =
                        (struct cleanup_ask){.row_key = e->sessions[h].row_key, .handle = h};
        }
        e->reread_gone_total = e->n_reread_gone;
        e->reread_ends = true;
        store_page_read_clear(&e->reread);
        if (e->n_reread_gone > 0)
                reread_ask(e);
}

static void reread_done(struct engine *e) {
        size_t gone = e->reread_gone_total;

        reread_stop(e);
        e->counters.rereads++;
        log_notice("Store %s: re-read the live sessions after missing changes of other daemons "
                   "(%zu no longer live).",
                   store_name(e->store), gone);
}

static bool row_written(int64_t row_key, const int64_t *written, size_t n_written) {
        return n_written > 0 && (!written || bsearch(&row_key, written, n_written, sizeof *written, affected_cmp));
}

static void reread_answer(struct engine *e, const int64_t *written, size_t n_written) {
        struct store_page_read *x = &e->reread;
        size_t kept = 0;

        if (!e->reread_inflight)
                return;
        e->reread_inflight = false;
        if (!e->reread_active)
                return; /* given up meanwhile */
        if (e->reread_restart) {
                e->reread_restart = false;
                reread_ask(e); /* from the first page */
                return;
        }
        if (n_written == SIZE_MAX) {
                /* The loop read rows since the hand-off: memory may be
                 * newer than what was read. Asked again. */
                reread_ask(e);
                return;
        }
        if (!e->reread_ends) {
                if (x->result < 0) {
                        log_warning("Store %s: re-reading the cached sessions failed; trying again later.",
                                    store_name(e->store));
                        reread_fail(e);
                        return;
                }
                for (size_t i = 0; i < x->n_rows; i++) {
                        const struct store_session *row = &x->rows[i];
                        struct remote_ctx rc = {.e = e, .kind = STORE_CHANGE_UPDATED};

                        if (row_written(row->row_key, written, n_written)) {
                                /* The open unit writes it: memory is newer
                                 * than this read; read after the next
                                 * commit, as a change. */
                                uint32_t h = session_find_key(e, row->token_hash);

                                if (h != NIL)
                                        e->sessions[h].flags &= ~S_STALE;
                                fleet_row_changed(e, row->row_key, STORE_CHANGE_UPDATED);
                                continue;
                        }
                        (void) remote_row_cb(row, &rc);
                }
                e->counters.reread_rows_after_commit += x->n_rows;
                if (!x->complete) {
                        e->reread_after = x->rows[x->n_rows - 1].row_key;
                        reread_ask(e);
                        return;
                }
                reread_pages_done(e);
                if (e->reread_active && e->n_reread_gone == 0)
                        reread_done(e);
                return;
        }
        for (size_t i = 0; i < e->n_reread_gone; i++) {
                const struct cleanup_ask *a = &e->reread_gone[i];
                struct remote_ctx rc = {.e = e, .kind = STORE_CHANGE_ENDED, .h = NIL};
                int r = -EAGAIN;

                if (!cleanup_ask_current(e, a))
                        continue; /* ended or replaced since */
                if (!row_written(a->row_key, written, n_written)) {
                        r = store_read_row(e->store, a->row_key, remote_row_cb, &rc);
                        if (r == -EAGAIN) {
                                log_warning("Store %s: re-reading the cached sessions failed; trying again later.",
                                            store_name(e->store));
                                reread_fail(e);
                                return;
                        }
                        e->counters.remote_reads_after_commit++;
                        if (r == -ENOENT) /* purged: another daemon ended it long ago */
                                table_session_remove(e, a->handle);
                        continue;
                }
                e->reread_gone[kept++] = *a; /* the open unit writes it: after the next commit */
        }
        e->n_reread_gone = kept;
        if (kept > 0)
                reread_ask(e);
        else
                reread_done(e);
}

/* ---- the cleanup's candidates, read after a commit (cleanup.c) ---------------------------------
 * A session memory thinks awaits cleanup may have been touched or renewed
 * on another daemon (touches are not reported): its row is read by the
 * writer after the open unit's commit, like a change's, and goes into
 * memory; the entry is then ended at once if memory, as read, still says
 * it awaits cleanup (cleanup_end_read: on the freshest read there is,
 * whenever the next cleanup step comes), and the next step counts it. */

int fleet_cleanup_ask(struct engine *e, uint32_t h) {
        int r;

        assert(e->fleet && !(S(e, h)->flags & S_CLEANUP_ASKED));
        r = GROW(e->cleanup_open, e->cleanup_open_allocated, e->n_cleanup_open + 1);
        if (r < 0)
                return r;
        r = txn_begin(e);
        if (r < 0)
                return r;
        r = store_read_after(e->store, S(e, h)->row_key);
        if (r < 0)
                return r;
        S(e, h)->flags |= S_CLEANUP_ASKED;
        e->cleanup_open[e->n_cleanup_open++] = (struct cleanup_ask){.row_key = S(e, h)->row_key, .handle = h};
        return 0;
}

/* The candidates read after the unit that just committed. A row the open
 * unit writes too, or every row when the loop read rows since the
 * hand-off, is read again on the loop (as a change's is); a row the
 * writer could not read fails the next cleanup step (the store is in
 * trouble; as a read on the loop that failed did), and a later run asks
 * again. */
static size_t cleanup_reads_answer(struct engine *e, const int64_t *written, size_t n_written) {
        size_t n = e->n_cleanup_inflight, k = 0;

        e->n_cleanup_inflight = 0;
        if (n > 0)
                e->cleanup_quiet = 0; /* the next step looks at every entry again */
        for (size_t i = 0; i < n; i++) {
                const struct cleanup_ask *a = &e->cleanup_inflight[i];
                struct remote_ctx x = {.e = e, .kind = STORE_CHANGE_UPDATED, .h = NIL};
                uint32_t h = a->handle;
                int r;

                if (!cleanup_ask_current(e, a))
                        continue; /* ended or replaced since: a later step finds it if it must */
                e->sessions[h].flags &= ~S_CLEANUP_ASKED;
                if (n_written == 0 ||
                    (written && !bsearch(&a->row_key, written, n_written, sizeof *written, affected_cmp))) {
                        r = store_read_row(e->store, a->row_key, remote_row_cb, &x);
                        if (r == -EAGAIN) {
                                e->cleanup_error = -EIO; /* the read failed: the store is in trouble */
                                continue;
                        }
                        e->counters.cleanup_reads_after_commit++;
                        if (r == -ENOENT) /* purged: another daemon ended it long ago */
                                table_session_remove(e, h);
                        if (r < 0)
                                continue;
                        h = x.h;
                } else {
                        e->counters.cleanup_reads_on_loop++;
                        if (fleet_refresh(e, &h) < 0)
                                continue;
                }
                if (h != NIL) /* read: to end once every row read is in (cleanup_reads_end) */
                        e->cleanup_inflight[k++] = (struct cleanup_ask){.row_key = e->sessions[h].row_key, .handle = h};
        }
        return k;
}

/* The candidates read, ended if they still await cleanup as read. */
static void cleanup_reads_end(struct engine *e, size_t n) {
        int64_t now = clock_now_ms();

        for (size_t i = 0; i < n; i++) {
                const struct cleanup_ask *a = &e->cleanup_inflight[i];
                int r;

                if (!cleanup_ask_current(e, a))
                        continue; /* ended or replaced since */
                r = cleanup_end_read(e, a->handle, now);
                if (r < 0 && e->cleanup_error == 0)
                        e->cleanup_error = r;
        }
}

/* Asks of a unit lost: with a failed commit (r), the next cleanup step
 * fails with it (a cleanup that went on asking would never end while the
 * store is down); the open unit dropped after a failed write (r = 0: the
 * store is not in question) is asked again by the next step. */
static void cleanup_asks_drop(struct engine *e, struct cleanup_ask *list, size_t *n, int r) {
        for (size_t i = 0; i < *n; i++)
                if (cleanup_ask_current(e, &list[i]))
                        e->sessions[list[i].handle].flags &= ~S_CLEANUP_ASKED;
        if (*n > 0) {
                e->cleanup_quiet = 0;
                if (r < 0 && e->cleanup_error == 0)
                        e->cleanup_error = txn_storage_errno(r);
        }
        *n = 0;
}

/* ---- tokens memory did not know, read after a commit (engine_fetch_wait) ------------------- */

struct engine_fetch {
        struct engine_fetch *next;
        uint8_t hash[TOKEN_HASH_BYTES];
        int error;                 /* its unit was lost */
        bool read;                 /* ended: what the read found (else read it now) */
        bool live;                 /* it found the session live (memory had it then) */
        struct ended_lookup ended; /* the token's ended row, if that is what it found */
        engine_fetch_fn done;      /* NULL: detached */
        void *userdata;
};

static void fetches_append(struct engine_fetch **list, struct engine_fetch *f) {
        while (*list)
                list = &(*list)->next;
        *list = f;
}

void engine_fetch_allow(struct engine *e, bool allow) {
        e->fetch_allowed = allow;
        e->fetch_miss_set = false;
}

bool fleet_fetch_ask(struct engine *e, const uint8_t hash[TOKEN_HASH_BYTES]) {
        if (!e->fetch_allowed)
                return false;
        memcpy(e->fetch_miss, hash, TOKEN_HASH_BYTES);
        e->fetch_miss_set = true;
        return true;
}

const struct engine_fetch *fleet_fetched(const struct engine *e, const uint8_t hash[TOKEN_HASH_BYTES]) {
        return e->fetched && memcmp(e->fetched->hash, hash, TOKEN_HASH_BYTES) == 0 ? e->fetched : NULL;
}

int fleet_fetch_error(const struct engine_fetch *f) {
        return f->error;
}

const struct ended_lookup *fleet_fetch_ended(const struct engine_fetch *f) {
        return f->read ? &f->ended : NULL;
}

bool fleet_fetch_live(const struct engine_fetch *f) {
        return f->read && f->live;
}

static int fetch_request(struct engine *e, struct engine_fetch *f) {
        int r = txn_begin(e);

        if (r >= 0)
                r = store_read_after_hash(e->store, f->hash);
        if (r < 0)
                return r;
        fetches_append(&e->fetch_open, f);
        return 0;
}

int engine_fetch_wait(struct engine *e, engine_fetch_fn done, void *userdata, struct engine_fetch **ret) {
        struct engine_fetch *f;
        int r;

        assert(done && ret);
        if (!e->fetch_miss_set)
                return -EINVAL;
        e->fetch_miss_set = false;
        f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        memcpy(f->hash, e->fetch_miss, TOKEN_HASH_BYTES);
        f->done = done;
        f->userdata = userdata;
        r = fetch_request(e, f);
        if (r < 0) {
                free(f);
                return txn_storage_errno(r);
        }
        *ret = f;
        return 0;
}

void engine_fetch_detach(struct engine_fetch *f) {
        f->done = NULL;
}

/* The caller runs its method again, which finds f through fleet_fetched(). */
static void fetch_finish(struct engine *e, struct engine_fetch *f) {
        if (f->done) {
                e->fetched = f;
                f->done(f->userdata);
                e->fetched = NULL;
        }
        free(f);
}

static void fetches_fail(struct engine *e, struct engine_fetch **list, int r) {
        struct engine_fetch *f = *list, *next;

        *list = NULL;
        for (; f; f = next) {
                next = f->next;
                f->error = r;
                fetch_finish(e, f);
        }
}

struct fetch_ctx {
        struct engine *e;
        struct engine_fetch *f;
        const int64_t *written; /* sorted, n_written of them; NULL with n_written > 0: unknown (every row is) */
        size_t n_written;
};

static int fetch_row_cb(const struct store_session *row, void *userdata) {
        struct fetch_ctx *x = userdata;
        struct remote_ctx rc = {
                .e = x->e, .kind = STORE_CHANGE_UPDATED, .ended_cb = session_ended_cb, .ended_userdata = &x->f->ended};

        if (x->n_written > 0 &&
            (!x->written || bsearch(&row->row_key, x->written, x->n_written, sizeof *x->written, affected_cmp))) {
                x->f->read = false; /* the open unit writes it: read it now, with those writes */
                return 1;
        }
        if (row->ended_at == 0)
                x->f->live = true;
        return remote_row_cb(row, &rc);
}

/* The tokens read after the unit that just committed: what was read goes
 * into memory (a live session) or to the fetch (an ended one), and each
 * caller runs its method again. A row the open unit writes too is read
 * again then, on the loop (as a change is: see above). */
static void fetches_answer(struct engine *e, const int64_t *written, size_t n_written) {
        struct engine_fetch *list = e->fetch_inflight, *f, *next;

        /* Every row into memory first, against the open unit as it is now;
         * only then the methods again (they write to the open unit). */
        e->fetch_inflight = NULL;
        for (f = list; f; f = f->next) {
                struct fetch_ctx x = {e, f, written, n_written};
                int r;

                f->read = true;
                r = store_read_row_hash(e->store, f->hash, fetch_row_cb, &x);
                if (r == -EAGAIN)
                        f->read = false;
                else {
                        e->counters.token_reads_after_commit++;
                        if (r == -ENOENT) { /* purged: memory lets go too */
                                uint32_t h = session_find_key(e, f->hash);

                                if (h != NIL)
                                        table_session_remove(e, h);
                        }
                }
        }
        for (f = list; f; f = next) {
                next = f->next;
                fetch_finish(e, f);
        }
}

/* The unit that was to read them is lost. Changes: the store is in
 * trouble (no read now either), they are read with everything else once a
 * probe finds the store well (fleet_tick); so is a re-read of every
 * session whose page or ends' reads the unit carried (the pass starts
 * again then, never left half done). Fetches: answered with the
 * error when the loop is done with the unit (a unit in flight lost, or
 * fleet_hand_off_failed: not from inside the method whose write failed);
 * the open unit dropped without an error asks again. The cleanup's
 * candidates: asked again by a later cleanup step (after a failed commit,
 * the next one fails with its error). */
void fleet_lost(struct engine *e, bool inflight_too) {
        if (e->n_remote_open > 0 || (inflight_too && e->n_remote_inflight > 0))
                e->remote_missed = true;
        if (e->reread_open || (inflight_too && e->reread_inflight)) {
                e->reread_open = false;
                if (inflight_too)
                        e->reread_inflight = false;
                reread_fail(e); /* the whole pass again, once a probe finds the store well */
        }
        e->n_remote_open = 0;
        cleanup_asks_drop(e, e->cleanup_open, &e->n_cleanup_open,
                          inflight_too ? (e->storage_error ? e->storage_error : -EIO) : 0);
        if (inflight_too) {
                e->n_remote_inflight = 0;
                cleanup_asks_drop(e, e->cleanup_inflight, &e->n_cleanup_inflight,
                                  e->storage_error ? e->storage_error : -EIO);
                fetches_fail(e, &e->fetch_inflight, e->storage_error ? e->storage_error : -EIO);
                fetches_fail(e, &e->fetch_open, e->storage_error ? e->storage_error : -EIO);
        } else if (!e->commit_error) {
                struct engine_fetch *f = e->fetch_open, *next;

                e->fetch_open = NULL;
                for (; f; f = next) {
                        next = f->next;
                        f->next = NULL;
                        if (fetch_request(e, f) < 0) {
                                f->error = -EIO;
                                fetches_append(&e->fetch_open, f);
                        }
                }
        }
}

void fleet_hand_off_failed(struct engine *e, int r) {
        fetches_fail(e, &e->fetch_open, r);
}

void fleet_free(struct engine *e) {
        struct engine_fetch *f, *next;

        fleet_stop(e);
        for (f = e->fetch_open; f; f = next) {
                next = f->next;
                free(f);
        }
        for (f = e->fetch_inflight; f; f = next) {
                next = f->next;
                free(f);
        }
        e->fetch_open = e->fetch_inflight = NULL;
        free(e->remote_open);
        free(e->remote_inflight);
        e->remote_open = e->remote_inflight = NULL;
        remote_clear(e);
        free(e->cleanup_open);
        free(e->cleanup_inflight);
        store_page_read_clear(&e->reread);
        free(e->reread_gone);
        e->reread_gone = NULL;
        e->n_reread_gone = e->reread_gone_allocated = 0;
        e->reread_open = e->reread_inflight = e->reread_active = false;
        e->cleanup_open = e->cleanup_inflight = NULL;
        e->n_cleanup_open = e->n_cleanup_inflight = 0;
}

/* ---- memory checked against the store ---------------------------------------------------------
 * Memory may be behind the store by the time a change takes to come in
 * (and by the touch granularity for activity, which is not reported): so
 * where memory alone would refuse (a token it does not know, a session it
 * thinks expired, one the cleanup is about to end) the engine of a fleet
 * reads the row first: mostly by the writer after a commit (fetches and
 * the cleanup's candidates, above), with these reads on the loop where
 * that cannot be. */

int fleet_refresh(struct engine *e, uint32_t *h) {
        struct remote_ctx x = {.e = e, .kind = STORE_CHANGE_UPDATED, .h = NIL};
        int r;

        assert(e->fleet && *h != NIL);
        e->counters.loop_row_reads++;
        r = store_session_by_row_key(e->store, S(e, *h)->row_key, remote_row_cb, &x);
        if (r == -ENOENT) { /* purged: another daemon ended it long ago */
                table_session_remove(e, *h);
                r = 0;
        }
        *h = x.h;
        return r < 0 ? r : 0;
}

int fleet_lookup(struct engine *e, const uint8_t hash[TOKEN_HASH_BYTES], uint32_t *h, store_session_fn ended_cb,
                 void *userdata) {
        struct remote_ctx x = {
                .e = e, .kind = STORE_CHANGE_UPDATED, .h = NIL, .ended_cb = ended_cb, .ended_userdata = userdata};
        int r;

        assert(e->fleet);
        e->counters.loop_row_reads++;
        r = store_session_by_hash(e->store, hash, remote_row_cb, &x);
        *h = x.h;
        return r < 0 ? r : 0;
}

void fleet_stop(struct engine *e) {
        if (e->reread_active)
                reread_stop(e); /* stopping: the last commits read no more pages */
        fleet_probe_stop(e);
}

int engine_fleet_start(struct engine *e) {
        int r;

        if (!e->d->loop)
                return 0;
        r = store_changes_subscribe(e->store, e->d->loop, remote_change_cb, e);
        if (r == -EOPNOTSUPP)
                return 0; /* a store of one daemon: nothing to learn */
        if (r < 0)
                return log_error_errno(r, "Store %s: cannot listen for other daemons' changes: %m",
                                       store_name(e->store));
        e->fleet = true;
        return 0;
}
