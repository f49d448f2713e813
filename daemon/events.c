/* Events: see events.h.
 *
 * The ring holds records, not jansson objects: an event of the engine
 * arrives on the hot path (one per Create), so a record is one allocation
 * holding its kind, ids and its detail as compact JSON text (the engine
 * builds the detail of its frequent events as text; the daemon's own rare
 * events are dumped from their jansson detail here). The JSON objects
 * {time, kind, session_id, user_id, detail} are made only when somebody
 * reads them: Admin.Events (the whole ring) and its followers. Keys keep
 * their order and values their text, so the bytes sent are those jansson
 * wrote when the ring held objects. The ring itself is the daemon's one
 * ring (ring.h) with free() as the function that drops a record: a record
 * is a single allocation, so eviction, resizing and the reservation of a
 * reload are those the metrics history has.
 *
 * New events go into the ring and, when somebody follows, into a pending
 * array that a zero timer sends to every follower in one reply. A follower
 * is a call kept open by its connection; it ends when the peer goes away
 * (the server runs our cancel callback), when its output passes the cap
 * (call_reply_continues() fails and has freed the call), or when the
 * daemon stops (the server cancels every stream before closing).
 */
#include "events.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "macro.h"
#include "log.h"
#include "ring.h"
#include "server.h"

/* One event: a single allocation, the strings in buf. */
struct record {
        int64_t time;
        const char *kind, *session_id, *user_id, *detail; /* ids may be NULL; detail: JSON text */
        char buf[];
};

struct follower {
        struct events *ev;
        struct call *call;
        struct follower *prev, *next;
};

struct events {
        struct ring ring; /* of struct record, freed with free() */
        struct follower *followers;
        unsigned n_followers;
        json_t *pending; /* events not yet sent to the followers */
        uv_timer_t *flush;
};

/* ---- records ------------------------------------------------------------------ */

static struct record *record_new(int64_t time, const char *kind, const char *session_id, const char *user_id,
                                 const char *detail) {
        size_t lk = strlen(kind) + 1, ls = session_id ? strlen(session_id) + 1 : 0,
               lu = user_id ? strlen(user_id) + 1 : 0, ld = strlen(detail) + 1;
        struct record *r = malloc(sizeof *r + lk + ls + lu + ld);
        char *p;

        if (!r)
                return NULL;
        p = r->buf;
        r->time = time;
        r->kind = memcpy(p, kind, lk);
        p += lk;
        r->session_id = session_id ? memcpy(p, session_id, ls) : NULL;
        p += ls;
        r->user_id = user_id ? memcpy(p, user_id, lu) : NULL;
        p += lu;
        r->detail = memcpy(p, detail, ld);
        return r;
}

/* The event as the JSON object Admin.Events sends (a new reference). */
static json_t *record_to_json(const struct record *r) {
        json_t *detail = json_loads(r->detail, JSON_DECODE_ANY, NULL);

        if (!detail)
                return NULL;
        return json_pack("{s:I, s:s, s:s?, s:s?, s:o}", "time", (json_int_t) r->time, "kind", r->kind, "session_id",
                         r->session_id, "user_id", r->user_id, "detail", detail);
}

/* ---- events ------------------------------------------------------------------- */

static void timer_closed(uv_handle_t *h) {
        free(h);
}

int events_new(uv_loop_t *loop, size_t capacity, struct events **ret) {
        struct events *ev = calloc(1, sizeof *ev);
        int r;

        if (!ev)
                return -ENOMEM;
        r = ring_init(&ev->ring, capacity, free);
        if (r < 0) {
                free(ev);
                return log_error_errno(
                        r, "Failed to allocate the events buffer (monitoring.events_buffer_size=%zu): %m", capacity);
        }
        ev->flush = malloc(sizeof *ev->flush);
        if (!ev->flush || uv_timer_init(loop, ev->flush) < 0) {
                free(ev->flush);
                ring_done(&ev->ring);
                free(ev);
                return -ENOMEM;
        }
        ev->flush->data = ev;
        uv_unref((uv_handle_t *) ev->flush);
        *ret = ev;
        return 0;
}

static void follower_unlink(struct events *ev, struct follower *f) {
        if (f->prev)
                f->prev->next = f->next;
        else
                ev->followers = f->next;
        if (f->next)
                f->next->prev = f->prev;
        ev->n_followers--;
        free(f);
}

void events_free(struct events *ev) {
        if (!ev)
                return;
        /* The server cancels streams before the daemon frees its parts; a
         * follower left here belongs to a call that must not call us back. */
        while (ev->followers) {
                call_set_cancel(ev->followers->call, NULL, NULL);
                follower_unlink(ev, ev->followers);
        }
        uv_timer_stop(ev->flush);
        uv_close((uv_handle_t *) ev->flush, timer_closed);
        json_decref(ev->pending);
        ring_done(&ev->ring);
        free(ev);
}

int events_set_capacity(struct events *ev, size_t capacity) {
        return ring_resize(&ev->ring, capacity);
}

int events_reserve_capacity(struct events *ev, size_t capacity) {
        return ring_reserve(&ev->ring, capacity);
}

void events_unreserve(struct events *ev) {
        ring_unreserve(&ev->ring);
}

static void flush_cb(uv_timer_t *t) {
        struct events *ev = t->data;
        json_t *batch = ev->pending;
        struct follower *f, *next;

        ev->pending = NULL;
        if (!batch)
                return;
        for (f = ev->followers; f; f = next) {
                next = f->next;
                if (call_reply_continues(f->call, json_pack("{s:O}", "events", batch)) < 0)
                        follower_unlink(ev, f); /* the call is gone already */
        }
        json_decref(batch);
}

void events_push_text(struct events *ev, int64_t time, const char *kind, const char *session_id, const char *user_id,
                      const char *detail) {
        struct record *rec;

        assert(kind);
        rec = record_new(time, kind, session_id, user_id, detail ? detail : "{}");
        if (!rec)
                return;
        if (ev->followers) {
                json_t *o = record_to_json(rec);

                if (o && !ev->pending)
                        ev->pending = json_array();
                if (o && ev->pending && json_array_append(ev->pending, o) == 0 &&
                    !uv_is_active((uv_handle_t *) ev->flush))
                        uv_timer_start(ev->flush, flush_cb, 0, 0);
                json_decref(o);
        }
        ring_push(&ev->ring, rec);
}

void events_push(struct events *ev, int64_t time, const char *kind, const char *session_id, const char *user_id,
                 json_t *detail) {
        _cleanup_free_ char *text = detail ? json_dumps(detail, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

        json_decref(detail);
        if (detail && !text)
                return;
        events_push_text(ev, time, kind, session_id, user_id, text);
}

void events_push_engine(struct events *ev, const struct engine_event *e) {
        if (e->detail_text)
                events_push_text(ev, e->time, e->kind, e->session_id, e->user_id, e->detail_text);
        else
                events_push(ev, e->time, e->kind, e->session_id, e->user_id, json_incref(e->detail));
}

json_t *events_list(struct events *ev) {
        _cleanup_json_ json_t *a = json_array();

        if (!a)
                return NULL;
        for (size_t i = 0; i < ring_count(&ev->ring); i++)
                if (json_array_append_new(a, record_to_json(ring_get(&ev->ring, i))) < 0)
                        return NULL;
        return TAKE_PTR(a);
}

static void follower_cancel(struct call *c, void *userdata) {
        struct follower *f = userdata;

        assert(f->call == c);
        follower_unlink(f->ev, f);
}

void events_answer(struct events *ev, struct call *c) {
        json_t *list = events_list(ev);
        struct follower *f;

        if (!list) {
                call_error(c, "io.sessiond.Session.StorageError", json_pack("{s:s}", "reason", "out of memory"));
                return;
        }
        if (!call_wants_more(c)) {
                call_reply(c, json_pack("{s:o}", "events", list));
                return;
        }
        /* Pending events are in the list already: the followers before
         * this one get them now, so that this one does not get them twice. */
        if (ev->pending) {
                uv_timer_stop(ev->flush);
                flush_cb(ev->flush);
        }
        f = calloc(1, sizeof *f);
        if (!f) {
                json_decref(list);
                call_error(c, "io.sessiond.Session.StorageError", json_pack("{s:s}", "reason", "out of memory"));
                return;
        }
        if (call_reply_continues(c, json_pack("{s:o}", "events", list)) < 0) {
                free(f);
                return;
        }
        f->ev = ev;
        f->call = c;
        f->next = ev->followers;
        if (f->next)
                f->next->prev = f;
        ev->followers = f;
        ev->n_followers++;
        call_set_cancel(c, follower_cancel, f);
        log_debug("Events: %u follower%s", ev->n_followers, ev->n_followers == 1 ? "" : "s");
}

unsigned events_followers(const struct events *ev) {
        return ev->n_followers;
}

uint64_t events_total(const struct events *ev) {
        return ev->ring.pushed;
}
