/* The Varlink server: listening socket, connections, calls.
 *
 * The server owns the listening socket (bound by us or handed over by
 * systemd) and every connection. It decides what a peer may do from the
 * credentials the kernel recorded at connect time (SO_PEERCRED,
 * SO_PEERGROUPS): uid 0, or a process whose gid or supplementary groups
 * include daemon.admin_group, may call io.sessiond.Admin, anybody else gets
 * PermissionDenied there. The decision is made at accept and again at each
 * reload.
 *
 * A connection processes its calls strictly one after the other: the next
 * message is not parsed before the current call has its final reply. This
 * keeps replies in request order without any bookkeeping, and a `more` call
 * (Watch, Events) simply owns its connection until it ends.
 *
 * Replies are not written at once: they are appended to the connection's
 * output buffer and flushed once per loop iteration. A reply that
 * acknowledges a write is held until main releases its batch, once the
 * store has committed the unit of work holding it (group commit). A write
 * is thus never acknowledged before it is durable, and a connection that
 * sent ten pipelined calls gets ten replies in one write(2).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

struct daemon;
struct server;
struct call;
struct varlink_value;

/* ---- calls (used by the method handlers) --------------------------------- */

const char *call_method(const struct call *c); /* full name */
/* The parameters as a jansson object (borrowed; made on first use, NULL
 * only when memory ran out). The hot handlers use call_param() instead,
 * which reads the scanned call without building objects. */
json_t *call_parameters(struct call *c);
/* varlink_call_param() on this call: 0, -ENOENT (absent or null), -EINVAL
 * (object is not an object). */
int call_param(struct call *c, const char *object, const char *key, struct varlink_value *ret);
bool call_wants_more(const struct call *c);
bool call_is_oneway(const struct call *c);
bool call_peer_is_admin(const struct call *c);
uid_t call_peer_uid(const struct call *c);
pid_t call_peer_pid(const struct call *c);
struct daemon *call_daemon(const struct call *c);

/* Final reply; steals `params` (NULL means {}). The call is freed: do not
 * touch it afterwards. For a oneway call nothing is sent. Returns 0. */
int call_reply(struct call *c, json_t *params);
/* Final reply already encoded (by the reply writer: varlink.h), with its
 * terminating NUL counted in len; takes data. Otherwise as call_reply(). */
int call_reply_encoded(struct call *c, char *data, size_t len);
/* A reply with "continues": true (only when call_wants_more()); the call
 * stays alive. Steals params. Returns -ENOTCONN if the peer has gone (the
 * call is then already cancelled), -ENOBUFS if the peer does not read and its
 * output buffer is over the limit (the connection is closed, the call
 * cancelled). On any negative return the call has been freed WITHOUT running
 * its cancel callback: the handler drops its own state for it right there. */
int call_reply_continues(struct call *c, json_t *params);
/* Final error reply; steals params (NULL means {}). The call is freed. */
int call_error(struct call *c, const char *error, json_t *params);
/* InvalidParameter with {"parameter": name}. */
int call_error_invalid_parameter(struct call *c, const char *name);

/* The reply of this call acknowledges a write: it is held until main
 * releases its batch (server_release_held), which replaces it with an error
 * when the write was lost. Call before replying. */
void call_mark_write(struct call *c);

/* For calls that stay open (`more` streams): cb runs if the connection
 * closes (or the daemon stops) before the final reply; after cb the call is
 * freed by the server. userdata belongs to the handler. */
typedef void (*call_cancel_fn)(struct call *c, void *userdata);
void call_set_cancel(struct call *c, call_cancel_fn cb, void *userdata);
/* For a call answered later but soon, by work already under way (a write
 * waiting for its unit of work): cb runs only if the connection goes away
 * first. Unlike a stream, a stopping daemon waits for its reply. */
void call_set_detach(struct call *c, call_cancel_fn cb, void *userdata);

/* Method handlers: implemented by the session and admin modules.
 * methods_dispatch() must eventually reply to the call, now or later
 * (streams). It is called only for interfaces other than
 * org.varlink.service, and only after the admin check. */
void methods_dispatch(struct daemon *d, struct call *c);

/* ---- the server (used by main) ------------------------------------------- */

/* Takes the socket handed over by systemd (LISTEN_FDS, name "varlink") or
 * binds socket_path with mode 0660 (umask set before bind, stale socket
 * removed only if nobody listens on it). */
int server_new(struct daemon *d, struct server **ret);
/* Stops accepting; connections finish their current call. */
void server_stop_accepting(struct server *s);
/* Closes every connection (cancelling streams); cb when all are closed. */
void server_close(struct server *s, void (*cb)(struct server *s));
/* After server_close(): closes the connections still draining at once,
 * dropping unsent output (the shutdown deadline, a second SIGTERM). */
void server_abort(struct server *s);
void server_free(struct server *s);

/* Lets connections whose call ended outside their read callback take their
 * next message (so its writes join the current batch). */
void server_process_ready(struct server *s);
/* Writes every released reply (after server_process_ready()). Called by
 * main from a uv_check handle once per loop iteration, and before exit. */
void server_flush(struct server *s);

/* Durability (main's loop step, see main.c). Held replies carry the number
 * of the batch they were made in. server_seal_writes() returns the number
 * of the current batch and starts the next one: main calls it when it hands
 * the writes made so far to the store. server_release_held() moves the held
 * replies of every batch up to `upto` to the output; with `error` set, the
 * replies that acknowledge a write become that error with `params` (stolen;
 * NULL means {}). */
uint64_t server_seal_writes(struct server *s);
/* True when some reply is held. */
bool server_has_held(const struct server *s);
void server_release_held(struct server *s, uint64_t upto, const char *error, json_t *params);
/* A commit took nsec (from hand-off to its end): passed to the timing hook
 * with method NULL. */
void server_report_commit(struct server *s, uint64_t nsec);

/* Counters for Status and metrics. */
struct server_stats {
        unsigned connections;
        unsigned long long accepted;
        unsigned long long rejected; /* over max_connections or per-uid cap */
        unsigned long long calls;
        unsigned long long protocol_errors;
        size_t output_bytes;  /* replies buffered for peers that have not read them yet */
        size_t output_budget; /* the most all connections may buffer before they wait */
};
void server_get_stats(const struct server *s, struct server_stats *ret);

/* Applies daemon.max_connections / max_message_size after a reload, and
 * daemon.admin_group to every open connection. */
void server_config_changed(struct server *s);

/* Request timing (monitoring.performance_monitoring, set by the jobs): fn
 * runs for every call that ends with a final reply, with the time from its
 * dispatch to that reply in nanoseconds (streams, which stay open, are not
 * timed), and with method NULL for every group commit and its duration.
 * fn NULL turns timing off. */
typedef void (*server_timing_fn)(const char *method, uint64_t nsec, void *userdata);
void server_set_timing(struct server *s, server_timing_fn fn, void *userdata);

/* What the server did on the loop since the last call (the jobs' loop-turn
 * watch takes it at every turn): the calls it dispatched, the one whose
 * handler held the loop longest (its method: a static text or one owned by
 * the server until the next call, so copy it), the time spent writing
 * replies out and handing freed memory back. */
struct server_turn {
        unsigned calls;
        uint64_t longest_call_ns;
        char longest_method[64];
        uint64_t flush_ns;
        uint64_t trim_ns; /* malloc_trim(), once a second at most */
};
void server_turn_take(struct server *s, struct server_turn *ret);
