/* Listings without a cursor, in steps (issue 15).
 *
 * ListSessions, ListUser and Audit called without `cursor` answer the whole
 * listing in one reply, as they always did: the contract's methods, keys
 * and limits are unchanged (ListSessions up to 100,000 sessions, Audit up
 * to 10,000 entries, ListUser every live session of the user). What changed
 * is how the reply is made. Built in one piece, a listing of 100,000
 * SessionInfo held the loop for more than a second and 9,000 audit entries
 * for 160 ms, every other client waiting. So it is built the way a client
 * walks the paged listing (methods_page.c): one page per loop iteration (at
 * most METHODS_PAGE_MAX entries from at most METHODS_PAGE_SCAN rows
 * examined), each page written straight into the reply's text with the
 * reply writer (no JSON objects for the whole listing and no dump of them
 * at the end), and the call is answered with that text once the last page
 * is written. The loop serves the other clients between two pages.
 *
 * The first page is asked for in the handler: on one host it is read on
 * the loop at once, and a listing that fits in one page (the common case)
 * is answered at once and costs what it did. On a fleet each page is read
 * by the store's writer after its next commit (engine_list_page_later):
 * the listing asks for the next page once the one before is in. A longer
 * listing keeps its call open; when its peer goes away the listing stops
 * there, and a page still being read is dropped when it comes. A daemon
 * that stops finishes it first (within the stop's deadline).
 *
 * What a listing in steps shows: its pages follow each other by row (audit:
 * by time and id, oldest first from the limit-th newest entry), as the
 * pages of a paged listing do, so a session that lives throughout the
 * listing is listed exactly once, each entry in its state when its page
 * was built; a session created meanwhile may be listed (after the rows
 * listed so far), and one that ended meanwhile may show as ended or, in a
 * listing of live sessions, be left out. Without concurrent changes the
 * listing is the one the single piece gave, entry for entry.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "daemon.h"
#include "engine.h"
#include "log.h"
#include "methods.h"
#include "server.h"
#include "sessiond/varlink.h"
#include "store.h"

#include "macro.h"

/* A page also ends after this much loop time (the row being written is
 * the last): the loop time of a step stays about the same whatever the
 * entries cost (audit entries with their details cost more than sessions). */
#define LISTING_STEP_NS (2 * 1000 * 1000)

struct listing;

struct listing_kind {
        const char *key; /* the reply's array: "sessions" or "entries" */
        /* Asks for the next page; listing_page_done() when it is in
         * (perhaps before this returns). < 0: failed, no page asked. */
        int (*page)(struct listing *l);
};

struct listing {
        uv_idle_t step;
        struct daemon *d;
        struct call *call; /* NULL once answered or cancelled */
        const char *iface;
        const struct listing_kind *kind;
        struct varlink_writer w;
        unsigned remaining; /* entries still wanted */
        unsigned written;   /* entries written by the current page */
        uint64_t deadline;  /* of the current page, uv_hrtime(), from its first entry; 0 before */
        uint64_t page_started;
        struct engine_page_read *read; /* the page being read (a fleet), NULL: none */
        bool cut;                      /* the current page ended at its deadline */
        unsigned steps, entries;
        size_t reply_bytes;
        uint64_t started, longest, first; /* uv_hrtime(); the longest page, the first (ns) */
        struct engine_error err;

        /* sessions */
        char *user_id;
        bool include_ended, user_listing;
        struct engine_page page;

        /* audit */
        struct store_audit_filter filter; /* its strings point to user_id and audit_kind */
        char *audit_kind;
        bool audit_started;
        int64_t last[2]; /* (time, id) of the last entry written */
};

static void listing_free(struct listing *l) {
        if (!l)
                return;
        varlink_writer_free(&l->w);
        free(l->user_id);
        free(l->audit_kind);
        free(l);
}

static void listing_closed(uv_handle_t *h) {
        listing_free(h->data);
}

/* Drops a listing whose idle handle was opened. */
static void listing_close(struct listing *l) {
        uv_idle_stop(&l->step);
        uv_close((uv_handle_t *) &l->step, listing_closed);
}

static int listing_begin(struct listing *l) {
        varlink_writer_init(&l->w);
        varlink_writer_begin_reply(&l->w);
        varlink_writer_object_begin(&l->w);
        varlink_writer_key(&l->w, l->kind->key);
        return varlink_writer_array_begin(&l->w);
}

/* The final reply (or error r) of the call. */
static void listing_answer(struct listing *l, int r) {
        struct call *c = l->call;

        if (!c)
                return;
        l->call = NULL;
        call_set_cancel(c, NULL, NULL);
        if (r >= 0) {
                varlink_writer_array_end(&l->w);
                varlink_writer_object_end(&l->w);
                methods_reply_written(c, &l->w); /* hands the text over */
                return;
        }
        if (r == -ENOMEM)
                methods_reply_oom(c);
        else
                methods_reply_error(c, l->iface, r, &l->err);
}

static void listing_log(const struct listing *l, uint64_t answer_ns) {
        log_debug("%s listing without a cursor: %u entries in %u steps over %.1f ms; pages: the first %.2f ms, "
                  "the longest %.2f ms; the reply (%zu bytes) handed over in %.2f ms",
                  l->kind->key, l->entries, l->steps, (double) (uv_hrtime() - l->started) / 1e6,
                  (double) l->first / 1e6, (double) l->longest / 1e6, l->reply_bytes, (double) answer_ns / 1e6);
}

static void step_cb(uv_idle_t *h);

/* A page is in (or failed): the call is answered when it was the last,
 * otherwise the next page is asked for in the next loop iteration. */
static void listing_page_done(struct listing *l, int r, bool done) {
        uint64_t t0 = uv_hrtime(), took = t0 - l->page_started;

        l->read = NULL;
        if (r >= 0)
                r = l->w.error;
        if (r >= 0 && l->written >= l->remaining)
                done = true;
        else if (r >= 0)
                l->remaining -= l->written;
        l->steps++;
        l->entries += l->written;
        if (took > l->longest)
                l->longest = took;
        if (l->steps == 1)
                l->first = took;
        if (r < 0 || done) {
                l->reply_bytes = l->w.len;
                listing_answer(l, r);
                listing_log(l, uv_hrtime() - t0);
                listing_close(l);
                return;
        }
        uv_idle_start(&l->step, step_cb);
}

/* Asks for the next page: on one host it is in before this returns, on a
 * fleet after the store's next commit. */
static void listing_step(struct listing *l) {
        int r;

        l->written = 0;
        l->cut = false;
        l->deadline = 0;
        l->page_started = uv_hrtime();
        if (!l->started)
                l->started = l->page_started;
        r = l->kind->page(l);
        if (r < 0)
                listing_page_done(l, r, true);
}

/* The idle handle stays on for one more turn after a page is asked: a
 * page read on a fleet goes to the store when the loop's turn ends (main's
 * check handle), and without a handle active the loop would first wait in
 * poll for something else to happen. */
static void step_cb(uv_idle_t *h) {
        struct listing *l = h->data;

        if (l->read) {
                uv_idle_stop(h); /* asked and handed to the store: its commit wakes the loop */
                return;
        }
        listing_step(l);
}

static void listing_cancel(struct call *c, void *userdata) {
        struct listing *l = userdata;

        (void) c;
        l->call = NULL;
        if (l->read)
                engine_page_read_detach(l->read);
        listing_close(l);
}

/* Asks for the first page now; the rest a page per loop iteration once
 * the one before is in. Takes l. */
static void listing_run(struct listing *l) {
        if (listing_begin(l) < 0 || uv_idle_init(l->d->loop, &l->step) < 0) {
                methods_reply_oom(l->call);
                listing_free(l);
                return;
        }
        l->step.data = l;
        /* Answered at stop like any call that waits for a commit (the
         * server lets it finish; the stop's deadline bounds it), dropped
         * when its peer goes. */
        call_set_detach(l->call, listing_cancel, l);
        listing_step(l);
}

/* ---- sessions ------------------------------------------------------------------------------- */

/* Whether the page has had its time: then the entry just written is its last. */
static bool listing_past_deadline(struct listing *l) {
        uint64_t now = uv_hrtime();

        if (!l->deadline)
                l->deadline = now + LISTING_STEP_NS;
        l->cut = now >= l->deadline;
        return l->cut;
}

static int session_write_cb(const struct engine_info *info, void *userdata) {
        struct listing *l = userdata;

        l->written++;
        if (methods_session_info_write(&l->w, info) < 0)
                return 1; /* the writer keeps the error */
        return listing_past_deadline(l) ? 1 : 0;
}

static void sessions_page_done(int r, const struct engine_page *page, void *userdata) {
        struct listing *l = userdata;

        if (r >= 0)
                l->page.after = page->next;
        listing_page_done(l, r, r >= 0 && !page->more);
}

static int sessions_page(struct listing *l) {
        struct engine_list_ask ask = {
                .user_id = l->user_id,
                .include_ended = l->include_ended,
                .user_listing = l->user_listing,
                .limit = l->remaining < METHODS_PAGE_MAX ? l->remaining : METHODS_PAGE_MAX,
                .page = {.after = l->page.after, .scan_max = METHODS_PAGE_SCAN},
        };

        return engine_list_page_later(l->d->engine, methods_now_ms(), &ask, session_write_cb, sessions_page_done, l,
                                      &l->err, &l->read);
}

static const struct listing_kind sessions_kind = {"sessions", sessions_page};

static struct listing *listing_new(struct daemon *d, struct call *c, const char *iface, const struct listing_kind *kind,
                                   unsigned limit, const char *user_id) {
        struct listing *l = calloc(1, sizeof *l);

        if (!l)
                return NULL;
        l->d = d;
        l->call = c;
        l->iface = iface;
        l->kind = kind;
        l->remaining = limit;
        if (user_id && !(l->user_id = strdup(user_id))) {
                free(l);
                return NULL;
        }
        return l;
}

void methods_list_sessions_steps(struct daemon *d, struct call *c, const char *iface, const char *user_id,
                                 bool include_ended, bool user_listing, unsigned limit) {
        struct listing *l = listing_new(d, c, iface, &sessions_kind, limit, user_id);

        if (!l) {
                methods_reply_oom(c);
                return;
        }
        l->include_ended = include_ended;
        l->user_listing = user_listing;
        listing_run(l);
}

/* ---- audit ---------------------------------------------------------------------------------- */

static int audit_write_cb(const struct store_audit_row *row, void *userdata) {
        struct listing *l = userdata;
        json_t *entry = methods_audit_entry(row);
        int r;

        if (!entry)
                return -ENOMEM;
        r = varlink_writer_json(&l->w, entry);
        json_decref(entry);
        l->last[0] = row->time;
        l->last[1] = row->id;
        l->written++;
        if (r < 0)
                return r;
        return listing_past_deadline(l) ? 1 : 0;
}

static void audit_page_done(int r, const int64_t after[2], void *userdata) {
        struct listing *l = userdata;
        bool done = !l->cut && l->written < l->filter.limit;

        if (r >= 0 && !l->audit_started) { /* the listing goes on from where the first page began, oldest first */
                l->filter.ascending = true;
                l->audit_started = true;
        }
        if (r >= 0 && l->written > 0) {
                l->filter.after_time = l->last[0];
                l->filter.after_id = l->last[1];
        } else if (r >= 0) {
                l->filter.after_time = after[0];
                l->filter.after_id = after[1];
        }
        listing_page_done(l, r < 0 && r != -ENOMEM ? -EIO : r, done);
}

static int audit_page(struct listing *l) {
        l->filter.limit = l->remaining < METHODS_PAGE_MAX ? l->remaining : METHODS_PAGE_MAX;
        return engine_audit_page_later(l->d->engine, &l->filter, l->audit_started ? 0 : l->remaining, audit_write_cb,
                                       audit_page_done, l, &l->read);
}

static const struct listing_kind audit_kind = {"entries", audit_page};

void methods_audit_steps(struct daemon *d, struct call *c, const char *iface, const struct store_audit_filter *f) {
        struct listing *l = listing_new(d, c, iface, &audit_kind, f->limit, f->user_id);

        if (!l || (f->kind && !(l->audit_kind = strdup(f->kind)))) {
                listing_free(l);
                methods_reply_oom(c);
                return;
        }
        l->filter = (struct store_audit_filter){
                .user_id = l->user_id,
                .kind = l->audit_kind,
                .since = f->since,
        };
        listing_run(l);
}
