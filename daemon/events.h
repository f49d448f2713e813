/* Events: the ring of recent events and the Admin.Events streams.
 *
 * An event is a JSON object {time, kind, session_id?, user_id?, detail}:
 * every event of the session engine (created, ended, rotated, ...; see
 * engine.h), and the daemon's own (cleanup, alert_raised, alert_resolved,
 * health_changed, config_reloaded). The newest monitoring.events_buffer_size
 * are kept. Tokens never appear in events.
 *
 * Admin.Events answers the ring; with `more` the call stays open and every
 * new event follows. Events of one loop iteration are sent together in one
 * reply {"events": [...]} from a zero timer, so a burst (a cleanup batch
 * ending a hundred sessions) costs one write per follower. A follower that
 * does not read is disconnected by the server once its output passes the
 * output cap (call_reply_continues() returns -ENOBUFS): memory stays bounded.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct call;
struct engine_event;
struct events;

int events_new(uv_loop_t *loop, size_t capacity, struct events **ret);
/* Ends every stream (final empty reply is not possible once the server is
 * gone: the calls are simply dropped; the server cancels them first). */
void events_free(struct events *ev);
/* Cannot fail after events_reserve_capacity(ev, capacity). */
int events_set_capacity(struct events *ev, size_t capacity);
/* Allocates, ahead of a reload, the buffer of a new capacity
 * (monitoring.events_buffer_size); -ENOMEM changes nothing.
 * events_unreserve() gives it back when the reload is abandoned. */
int events_reserve_capacity(struct events *ev, size_t capacity);
void events_unreserve(struct events *ev);

/* Records an event; steals detail (NULL: {}). session_id, user_id may be NULL. */
void events_push(struct events *ev, int64_t time, const char *kind, const char *session_id, const char *user_id,
                 json_t *detail);
/* The same with the detail as JSON text (NULL: {}), copied: no jansson
 * object is made until somebody reads the events. */
void events_push_text(struct events *ev, int64_t time, const char *kind, const char *session_id, const char *user_id,
                      const char *detail);
/* Records an event of the engine (an observer's argument). */
void events_push_engine(struct events *ev, const struct engine_event *e);
/* The ring as an array, oldest first (a new reference). */
json_t *events_list(struct events *ev);
/* Answers the call with the ring and, when it asked for `more`, keeps it
 * open and streams every new event to it. */
void events_answer(struct events *ev, struct call *c);
unsigned events_followers(const struct events *ev);
uint64_t events_total(const struct events *ev);
