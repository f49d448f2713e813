/* Events: see events.h.
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

#include "log.h"
#include "ring.h"
#include "server.h"

struct follower {
        struct events *ev;
        struct call *call;
        struct follower *prev, *next;
};

struct events {
        struct ring ring;
        struct follower *followers;
        unsigned n_followers;
        json_t *pending; /* events not yet sent to the followers */
        uv_timer_t *flush;
};

static void timer_closed(uv_handle_t *h) {
        free(h);
}

int events_new(uv_loop_t *loop, size_t capacity, struct events **ret) {
        struct events *ev = calloc(1, sizeof *ev);
        int r;

        if (!ev)
                return -ENOMEM;
        r = ring_init(&ev->ring, capacity);
        if (r < 0) {
                free(ev);
                return log_error_errno(r, "Failed to allocate the events buffer (monitoring.events_buffer_size=%zu): %m",
                                       capacity);
        }
        ev->flush = malloc(sizeof *ev->flush);
        if (!ev->flush || uv_timer_init(loop, ev->flush) < 0) {
                free(ev->flush);
                ring_done(&ev->ring);
                free(ev);
                return -ENOMEM;
        }
        ev->flush->data = ev;
        uv_unref((uv_handle_t *)ev->flush);
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
        uv_close((uv_handle_t *)ev->flush, timer_closed);
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

void events_push(struct events *ev, int64_t time, const char *kind, const char *session_id, const char *user_id,
                 json_t *detail) {
        json_t *o;

        assert(kind);
        o = json_pack("{s:I, s:s, s:s?, s:s?, s:o}", "time", (json_int_t)time, "kind", kind, "session_id", session_id,
                      "user_id", user_id, "detail", detail ? detail : json_object());
        if (!o)
                return;
        if (ev->followers) {
                if (!ev->pending)
                        ev->pending = json_array();
                if (ev->pending && json_array_append(ev->pending, o) == 0 && !uv_is_active((uv_handle_t *)ev->flush))
                        uv_timer_start(ev->flush, flush_cb, 0, 0);
        }
        ring_push(&ev->ring, o);
}

json_t *events_list(struct events *ev) {
        return ring_to_array(&ev->ring);
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
