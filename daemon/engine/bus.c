/* The session engine's events (see engine-internal.h for the other files).
 *
 * Observers (at most MAX_OBSERVERS: the jobs' metrics and event log, the
 * watches) see what the engine does. An event is built only when somebody
 * listens. One raised inside the iteration's transaction waits until
 * engine_commit() and is dropped with a rollback; the others are ready at
 * once. Ready events are dispatched from a timer of 0 ms, after the request
 * that raised them.
 */
#include "engine-internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- events --------------------------------------------------------------------- */

void bus_event_clear(struct pending_event *ev) {
        free(ev->user_id);
        json_decref(ev->detail);
        free(ev->detail_text);
}

void bus_queue_clear(struct event_queue *q) {
        for (size_t i = 0; i < q->n; i++)
                bus_event_clear(&q->items[i]);
        q->n = 0;
}

static void dispatch_cb(uv_timer_t *t) {
        engine_dispatch_events(t->data);
}

void bus_dispatch_schedule(struct engine *e) {
        if (e->ready.n == 0)
                return;
        if (e->dispatch_timer)
                uv_timer_start(e->dispatch_timer, dispatch_cb, 0, 0);
        else
                engine_dispatch_events(e);
}

void engine_dispatch_events(struct engine *e) {
        struct event_queue q = e->ready;

        e->ready = (struct event_queue){0};
        for (size_t i = 0; i < q.n; i++) {
                struct pending_event *p = &q.items[i];
                struct engine_event ev = {
                        .kind = p->kind,
                        .time = p->time,
                        .session_id = p->session_id[0] ? p->session_id : NULL,
                        .user_id = p->user_id,
                        .detail = p->detail,
                        .detail_text = p->detail_text,
                };
                for (size_t k = 0; k < e->n_observers; k++)
                        e->observers[k].fn(&ev, e->observers[k].userdata);
        }
        bus_queue_clear(&q);
        free(q.items);
}

/* An event goes out with the unit of work that holds what it tells, or at
 * once (committed) when that is already durable. */
static struct pending_event *bus_queue_add(struct engine *e, bool committed, struct event_queue **ret) {
        struct event_queue *q = e->txn && !committed ? &e->in_txn : &e->ready;

        if (e->n_observers == 0 || GROW(q->items, q->allocated, q->n + 1) < 0)
                return NULL;
        *ret = q;
        return &q->items[q->n];
}

static void bus_queue_commit(struct engine *e, struct event_queue *q, struct pending_event *p, int64_t now,
                             const char *kind, const char *session_id) {
        p->kind = kind;
        p->time = ms_floor_s(now); /* events keep Unix seconds */
        memset(p->session_id, 0, sizeof p->session_id);
        if (session_id)
                memcpy(p->session_id, session_id, strnlen(session_id, TOKEN_ID_STRING_LEN));
        q->n++;
        if (q == &e->ready)
                bus_dispatch_schedule(e);
}

/* Queues an event; steals detail and user_id (malloc'ed or NULL). Built
 * only when somebody listens. */
static void bus_emit_take_to(struct engine *e, bool committed, int64_t now, const char *kind, const char *session_id,
                             char *user_id, json_t *detail) {
        struct event_queue *q;
        struct pending_event *p = bus_queue_add(e, committed, &q);

        if (!p) {
                json_decref(detail);
                free(user_id);
                return;
        }
        *p = (struct pending_event){.detail = detail ? detail : json_object(), .user_id = user_id};
        bus_queue_commit(e, q, p, now, kind, session_id);
}

void bus_emit_take(struct engine *e, int64_t now, const char *kind, const char *session_id, char *user_id,
                   json_t *detail) {
        bus_emit_take_to(e, false, now, kind, session_id, user_id, detail);
}

/* An event of a change already committed (another daemon's, learnt from
 * the store): told now, whatever becomes of the unit open here. */
void bus_emit_take_committed(struct engine *e, int64_t now, const char *kind, const char *session_id, char *user_id,
                             json_t *detail) {
        bus_emit_take_to(e, true, now, kind, session_id, user_id, detail);
}

static void bus_emit_text_to(struct engine *e, int64_t now, const char *kind, const char *session_id,
                             const char *user_id, char *detail_text, const int *applied) {
        struct event_queue *q;
        struct pending_event *p = detail_text ? bus_queue_add(e, false, &q) : NULL;
        char *user = p && user_id ? strdup(user_id) : NULL;

        if (!p || (user_id && !user)) {
                free(detail_text);
                return;
        }
        *p = (struct pending_event){.detail_text = detail_text, .user_id = user, .applied = applied};
        bus_queue_commit(e, q, p, now, kind, session_id);
}

/* Queues an event whose detail is JSON text (steals detail_text, copies
 * user_id): no jansson object on the hot path. */
void bus_emit_text(struct engine *e, int64_t now, const char *kind, const char *session_id, const char *user_id,
                   char *detail_text) {
        bus_emit_text_to(e, now, kind, session_id, user_id, detail_text, NULL);
}

/* The same for a conditional write (a compare-and-set) of the open unit:
 * the event keeps its place among the unit's events, and is dropped when
 * the unit commits without applying the write (*applied is 0 then; txn.c
 * reads it before the owner of *applied can free it). */
void bus_emit_text_applied(struct engine *e, int64_t now, const char *kind, const char *session_id, const char *user_id,
                           char *detail_text, const int *applied) {
        assert(e->txn && applied);
        bus_emit_text_to(e, now, kind, session_id, user_id, detail_text, applied);
}

void bus_emit(struct engine *e, int64_t now, const char *kind, const char *session_id, const char *user_id,
              json_t *detail) {
        bus_emit_take(e, now, kind, session_id, user_id && e->n_observers > 0 ? strdup(user_id) : NULL, detail);
}

bool bus_observed(const struct engine *e) {
        return e->n_observers > 0;
}

int engine_add_observer(struct engine *e, engine_observer_fn fn, void (*free_fn)(void *userdata), void *userdata) {
        assert(fn);
        if (e->n_observers >= MAX_OBSERVERS)
                return -ENOSPC;
        e->observers[e->n_observers++] = (struct observer){fn, free_fn, userdata};
        return 0;
}

void engine_remove_observer(struct engine *e, engine_observer_fn fn, void *userdata) {
        for (size_t i = 0; i < e->n_observers; i++)
                if (e->observers[i].fn == fn && e->observers[i].userdata == userdata) {
                        memmove(&e->observers[i], &e->observers[i + 1],
                                (e->n_observers - i - 1) * sizeof e->observers[0]);
                        e->n_observers--;
                        return;
                }
}

void *engine_find_observer(struct engine *e, engine_observer_fn fn) {
        for (size_t i = 0; i < e->n_observers; i++)
                if (e->observers[i].fn == fn)
                        return e->observers[i].userdata;
        return NULL;
}
