/* Pages of the big listings (issue 15): ListSessions, ListUser and Audit
 * take an optional `cursor`. Without it they answer as they always did,
 * the whole listing in one reply (old clients keep working). With it ("" to
 * begin) the reply is one page, at most METHODS_PAGE_MAX entries and built
 * from at most METHODS_PAGE_SCAN rows examined, so a page takes a bounded
 * time on the loop (a few ms at most) whatever the store holds; the reply
 * carries `cursor` for the next page and none once the listing is over. A
 * client pages with one call a page: the daemon serves every other client
 * between two of them (sessionctl list and audit page this way).
 *
 * A sessions cursor is the row after which the next page begins, so a
 * session is listed at most once however the table changes between pages,
 * and one that lives throughout the listing is listed exactly once. An
 * audit cursor is the (time, id) of the last entry listed; an audit
 * listing goes oldest first from the `limit`-th newest matching entry at
 * its first page, each later call passing the `limit` it still wants.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "engine.h"
#include "methods.h"
#include "server.h"
#include "store.h"

int methods_param_cursor(struct call *c, const char *iface, bool *given, int64_t *a, int64_t *b) {
        const char *text = NULL;
        char tail;
        int r;

        *given = false;
        *a = *b = 0;
        r = methods_param_string(c, iface, "cursor", false, &text);
        if (r == -EINVAL)
                return r;
        if (r == -ENOENT || !text)
                return 0;
        *given = true;
        if (!*text)
                return 0;
        if ((sscanf(text, "%" SCNd64 ".%" SCNd64 "%c", a, b, &tail) == 2 ||
             sscanf(text, "%" SCNd64 "%c", a, &tail) == 1) &&
            *a >= 0 && *b >= 0)
                return 0;
        call_error(c, METHODS_ADMIN_INTERFACE ".InvalidArgument",
                   json_pack("{s:s, s:s}", "field", "cursor", "reason", "not a cursor this daemon made"));
        return -EINVAL;
}

int methods_reply_set_cursor(json_t *reply, bool more, int64_t a, int64_t b, bool pair) {
        char text[48];

        if (!reply)
                return -ENOMEM;
        if (!more)
                return 0;
        if (pair)
                snprintf(text, sizeof text, "%" PRId64 ".%" PRId64, a, b);
        else
                snprintf(text, sizeof text, "%" PRId64, a);
        return json_object_set_new(reply, "cursor", json_string(text)) < 0 ? -ENOMEM : 0;
}

/* ---- a page answered later -------------------------------------------------------------------
 * A page is read on the loop on one host, after the store's next commit
 * on a fleet (engine_list_page_later): the call waits for it, and stops
 * waiting when its peer goes. A stopping daemon answers it (the read is
 * under way in a unit the stop commits), as it answers a write. */

enum page_call_kind { PAGE_SESSIONS, PAGE_ONE_SESSION, PAGE_AUDIT };

struct page_call {
        struct call *call;
        const char *iface;
        enum page_call_kind kind;
        json_t *items;
        struct engine_page_read *read;
        struct engine_error err;
        unsigned limit;  /* audit: the page's size */
        unsigned wanted; /* audit: the entries the caller still wants */
        int64_t last[2]; /* audit: (time, id) of the last entry */
};

static void page_call_free(struct page_call *p) {
        json_decref(p->items);
        free(p);
}

static void page_call_cancel(struct call *c, void *userdata) {
        struct page_call *p = userdata;

        (void) c;
        engine_page_read_detach(p->read);
        page_call_free(p);
}

static int page_session_cb(const struct engine_info *info, void *userdata) {
        struct page_call *p = userdata;
        json_t *session = methods_session_info(info);

        if (!session)
                return -ENOMEM;
        if (p->kind == PAGE_ONE_SESSION) {
                json_decref(p->items);
                p->items = session;
                return 1;
        }
        return json_array_append_new(p->items, session) < 0 ? -ENOMEM : 0;
}

static int page_audit_cb(const struct store_audit_row *row, void *userdata) {
        struct page_call *p = userdata;
        json_t *o = methods_audit_entry(row);

        if (!o || json_array_append_new(p->items, o) < 0)
                return -ENOMEM;
        p->last[0] = row->time;
        p->last[1] = row->id;
        return 0;
}

/* Answers the call with its page (or error r) and frees p. */
static void page_call_answer(struct page_call *p, int r, bool more, int64_t a, int64_t b) {
        struct call *c = p->call;
        json_t *reply = NULL;

        call_set_cancel(c, NULL, NULL);
        if (r >= 0 && p->kind == PAGE_ONE_SESSION)
                reply = p->items ? json_pack("{s:O}", "session", p->items) : NULL;
        else if (r >= 0) {
                reply = json_pack("{s:O}", p->kind == PAGE_AUDIT ? "entries" : "sessions", p->items);
                if (methods_reply_set_cursor(reply, more, a, b, p->kind == PAGE_AUDIT) < 0) {
                        json_decref(reply);
                        reply = NULL;
                }
        }
        if (r >= 0 && !reply)
                r = -ENOMEM;
        if (r == -ENOMEM)
                methods_reply_oom(c);
        else if (r < 0)
                methods_reply_error(c, p->iface, r, &p->err);
        else
                call_reply(c, reply);
        page_call_free(p);
}

static void page_sessions_done(int r, const struct engine_page *page, void *userdata) {
        struct page_call *p = userdata;

        page_call_answer(p, r, page->more, page->next, 0);
}

static void page_audit_done(int r, const int64_t after[2], void *userdata) {
        struct page_call *p = userdata;
        bool full = json_array_size(p->items) == p->limit;

        if (json_array_size(p->items) == 0) {
                p->last[0] = after[0];
                p->last[1] = after[1];
        }
        page_call_answer(p, r < 0 && r != -ENOMEM ? -EIO : r, full && p->wanted > p->limit, p->last[0], p->last[1]);
}

static struct page_call *page_call_new(struct call *c, const char *iface, enum page_call_kind kind) {
        struct page_call *p = calloc(1, sizeof *p);

        if (!p)
                return NULL;
        p->call = c;
        p->iface = iface;
        p->kind = kind;
        if (kind != PAGE_ONE_SESSION && !(p->items = json_array())) {
                free(p);
                return NULL;
        }
        return p;
}

/* After the page was asked for: r < 0 when it could not be (done will not
 * run), else the call waits (unless done ran already: p->read NULL). */
static void page_call_wait(struct page_call *p, int r, struct engine_page_read *read) {
        if (r < 0) {
                page_call_answer(p, r, false, 0, 0);
                return;
        }
        if (!read)
                return; /* answered */
        p->read = read;
        call_set_detach(p->call, page_call_cancel, p);
}

void methods_sessions_page(struct daemon *d, struct call *c, const char *iface, const struct engine_list_ask *ask) {
        struct page_call *p = page_call_new(c, iface, ask->id ? PAGE_ONE_SESSION : PAGE_SESSIONS);
        struct engine_page_read *read = NULL;
        int r;

        if (!p) {
                methods_reply_oom(c);
                return;
        }
        r = engine_list_page_later(d->engine, methods_now_ms(), ask, page_session_cb, page_sessions_done, p, &p->err,
                                   &read);
        page_call_wait(p, r, read);
}

void methods_audit_page(struct daemon *d, struct call *c, const char *iface, const struct store_audit_filter *f,
                        bool first) {
        struct page_call *p = page_call_new(c, iface, PAGE_AUDIT);
        struct store_audit_filter page = *f;
        struct engine_page_read *read = NULL;
        int r;

        if (!p) {
                methods_reply_oom(c);
                return;
        }
        p->wanted = f->limit;
        p->limit = f->limit < METHODS_PAGE_MAX ? f->limit : METHODS_PAGE_MAX;
        p->last[0] = f->after_time;
        p->last[1] = f->after_id;
        page.ascending = true;
        page.offset = 0;
        page.limit = p->limit;
        r = engine_audit_page_later(d->engine, &page, first ? f->limit : 0, page_audit_cb, page_audit_done, p, &read);
        page_call_wait(p, r, read);
}
