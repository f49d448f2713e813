/* The Varlink server: the listening socket, connections and calls on libuv.
 *
 * Listening. systemd may hand over the socket (LISTEN_FDS with the name
 * "varlink", FileDescriptorName=varlink); one named "metrics" is kept for
 * the scrape endpoint (metrics_http.c); any other descriptor it passes is
 * refused, so a unit file mistake is seen at once instead of serving on the
 * wrong socket. Otherwise we bind daemon.socket_path ourselves with the
 * umask set before bind(2), so the socket never exists with a wider mode
 * than 0660, not even for an instant. A socket file that is already there
 * is removed only when connecting to it is refused (a crashed daemon left
 * it); if somebody answers, another sessiond owns it and we refuse to start.
 * At exit we unlink only the socket we bound (same inode), never one a newer
 * daemon has bound in the meantime.
 *
 * Accepting. The peer's credentials (SO_PEERCRED and SO_PEERGROUPS: uid,
 * gid, supplementary groups) are read once, at accept, and kept with the
 * connection. The admin decision (uid 0, or daemon.admin_group as that gid
 * or one of those groups; never the user database: see peer.c) is made from
 * them at accept and made again from them at every reload, so a reload that
 * changes daemon.admin_group reaches connections already open. Limits: daemon.max_connections in total, and
 * three quarters of it (at least one) per non-root uid, so one local user
 * cannot take every slot and lock out the others; root is only bound by the
 * total. A connection over a limit is accepted and closed at once (closing
 * is the only way to tell the peer; leaving it in the backlog would stall
 * the listener), counted as rejected and logged at most once a second.
 *
 * Reading. Whatever the socket has goes straight into the connection's
 * varlink_reader (libuv reads into the reader's buffer, no copy, no
 * per-byte reads); complete messages are then handled one after the other.
 * A connection works on one call at a time: the next message waits until the
 * current call has its final reply. That gives in-order replies for free,
 * and a `more` call (Watch, Events) owns its connection until it ends. While
 * a call is open we keep reading, so that a streaming peer that hangs up is
 * noticed, but only up to max_message_size of buffered input: a peer that
 * pipelines without end then waits in the kernel's buffers, not in ours.
 * Anything that is not a well-formed call (bad JSON, not an object, no
 * method, flags of the wrong type, longer than daemon.max_message_size)
 * closes that connection only, with a debug line and a protocol error in the
 * counters. A connection that holds half a message for more than
 * SERVER_PARTIAL_TIMEOUT_MS (10 s) is closed too, so a slow sender cannot pin
 * a connection slot and a buffer forever; a connection that is simply idle
 * between messages may stay as long as it likes (web apps keep pools). At
 * EOF the complete messages already received are still answered, then the
 * connection closes; an open stream is cancelled.
 *
 * Writing. Replies are encoded (varlink_encode_*) and appended to the
 * connection's output; nothing is written from a handler. Once per loop
 * iteration main calls server_flush() from a uv_check handle, which writes
 * each connection's output with one write call (uv_try_write, and uv_write
 * for whatever the socket did not take). A reply to a call marked with
 * call_mark_write() is held back (and every later reply of the same
 * connection with it, to keep the order), tagged with the current batch
 * number. Durability is main's business, not ours: when main hands the
 * store the writes made so far it seals the batch (server_seal_writes), and
 * when the store says how that went it releases the held replies up to
 * that batch (server_release_held), turning the write replies into the
 * error it names when the writes were lost. The server knows no store and
 * no application error names, so no peer is ever told that a lost write
 * happened, whatever the store is.
 * A uv_idle handle runs while output or work is waiting, so a reply made in
 * a timer callback does not wait for the next I/O to be flushed.
 *
 * Memory per connection is bounded: input by max_message_size (plus one
 * read), output by the output cap (the larger of 1 MiB and four times
 * max_message_size). A connection over the output cap stops reading and handling
 * calls until the peer reads (back pressure); a stream reply that would go
 * over it closes the connection instead (call_reply_continues() returns
 * -ENOBUFS), so a Watch client that never reads cannot grow us.
 *
 * Ownership. The server owns its handles (listener, sweep timer, wake idle)
 * and every connection; a connection is freed only in its libuv close
 * callback, after libuv is done with it. A call belongs to the server until
 * its final reply; when its connection goes away first, its cancel callback
 * runs and the server frees it (a call without one is detached, and freed
 * when the handler replies).
 */
#include "server.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "daemon.h"
#include "interface.h"
#include "log.h"
#include "macro.h"
#include "peer.h"
#include "metrics_http.h"
#include "sessiond/varlink.h"

#define SERVER_PARTIAL_TIMEOUT_MS 10000 /* half a message held longer: closed */
#define SERVER_SWEEP_INTERVAL_MS 1000
#define SERVER_REJECT_LOG_INTERVAL_MS 1000
#define SERVER_READ_SIZE 16384
#define SERVER_OUTPUT_CAP_MIN (1024 * 1024)
#define SERVER_OUTPUT_CAP_MESSAGES 4
#define SERVER_OUTPUT_BUDGET (32 * 1024 * 1024) /* all connections together (at least two caps) */
#define SERVER_OUTPUT_KEEP (64 * 1024)          /* a drained buffer larger than this is freed */
#define SERVER_TRIM_AFTER (1024 * 1024)         /* freed since the last malloc_trim() */
#define SERVER_GETINFO_URL "man:sessiond(8)"


/* Intrusive doubly-linked lists: `name` selects the pair of link fields. */
#define DLIST_PUSH(head, item, name)                                \
        do {                                                        \
                (item)->name##_prev = NULL;                         \
                (item)->name##_next = (head);                       \
                if (head)                                           \
                        (head)->name##_prev = (item);               \
                (head) = (item);                                    \
        } while (0)
#define DLIST_REMOVE(head, item, name)                                          \
        do {                                                                    \
                if ((item)->name##_prev)                                        \
                        (item)->name##_prev->name##_next = (item)->name##_next; \
                else                                                            \
                        (head) = (item)->name##_next;                           \
                if ((item)->name##_next)                                        \
                        (item)->name##_next->name##_prev = (item)->name##_prev; \
                (item)->name##_prev = (item)->name##_next = NULL;               \
        } while (0)

struct outbuf {
        char *data;
        size_t len;
        size_t allocated;
};

/* A reply waiting for the commit of the loop iteration it was made in. */
struct held_reply {
        char *data; /* encoded message, with its NUL */
        size_t len;
        uint64_t seq; /* the batch it belongs to: server's commit_seq when queued */
        bool write;   /* acknowledges a write: replaced by an error if the commit fails */
};

struct conn {
        struct server *server;
        uv_pipe_t pipe;
        unsigned long long id;

        struct conn *all_prev, *all_next;     /* server->conns (open ones) */
        struct conn *dirty_prev, *dirty_next; /* server->dirty: output or held replies */
        struct conn *ready_prev, *ready_next; /* server->ready: may handle its next message */
        bool in_dirty, in_ready;
        size_t accounted; /* its share of server->output_total */

        struct peer_cred peer; /* at accept: uid, gid, groups (peer.c) */
        bool admin;            /* decided from peer, again at each reload */
        bool counted; /* in the connection count (not a rejected one) */

        struct varlink_reader reader;
        bool reader_ready;
        bool partial;             /* half a message is buffered ... */
        uint64_t partial_since;   /* ... since this loop time (ms) */

        struct call *current; /* the call being answered, or NULL */

        struct outbuf out;  /* released replies, not yet handed to the socket */
        struct outbuf wbuf; /* handed to uv_write, in flight */
        size_t wbuf_offset; /* bytes of wbuf the kernel took at once */
        uv_write_t write_req;
        bool writing;

        struct held_reply *held;
        size_t n_held, allocated_held;
        size_t held_bytes;

        bool reading;
        bool processing;
        bool output_blocked; /* calls wait until the peer reads (output cap) */
        bool read_eof;   /* the peer sent EOF: answer what is buffered, then close */
        bool stop_calls; /* shutting down: start no new call, close when drained */
        bool closed;     /* uv_close() called */
};

struct call {
        struct server *server;
        struct conn *conn; /* NULL once detached from a closed connection */
        struct varlink_call vc;
        call_cancel_fn cancel;
        void *userdata;
        struct ucred cred;
        bool admin;
        bool write;
        bool cancelled; /* its cancel callback is running or has run */
        uint64_t started_ns; /* uv_hrtime() at dispatch when timed, else 0 */
};

struct server {
        struct daemon *d;

        uv_pipe_t listener;
        uv_timer_t sweep;
        uv_idle_t wake;
        unsigned open_handles; /* ours, including connections not yet freed */
        bool listener_open;
        bool sweep_open;
        bool wake_open;
        bool accepting;
        bool accept_stalled; /* a pending accept could not be served (no memory) */

        bool activated;   /* socket handed over by systemd */
        char *bound_path; /* the socket file we bound, to unlink at stop */
        dev_t bound_dev;
        ino_t bound_ino;

        struct conn *conns;
        struct conn *dirty;
        struct conn *ready;
        unsigned n_conns;
        unsigned long long next_id;

        size_t max_message_size;
        unsigned max_connections;
        unsigned max_per_uid;
        size_t output_cap;
        size_t output_budget; /* of output_total */
        size_t output_total;  /* output bytes of every connection (conn_output_bytes) */
        size_t freed_untrimmed; /* buffer bytes freed since the last malloc_trim() */
        struct peer_admin_group admin_group; /* daemon.admin_group, resolved once per configuration */

        uint64_t commit_seq;
        size_t n_held_total; /* held replies over every connection */
        unsigned long long rejected_unlogged;
        uint64_t last_reject_log;
        bool reject_logged;

        bool closing;
        bool free_on_close; /* server_new() failed half-way */
        void (*close_cb)(struct server *s);

        struct server_stats stats;

        server_timing_fn timing; /* request timing, NULL: off */
        void *timing_userdata;

        struct server_turn turn; /* since the last server_turn_take() */
};

static void conn_close(struct conn *c, const char *why);
static void conn_process(struct conn *c);
static void conn_write(struct conn *c);
static void conn_check_done(struct conn *c);
static void conn_update_reading(struct conn *c);
static void server_maybe_closed(struct server *s);
static void server_apply_admin_group(struct server *s);

/* ---- small helpers ------------------------------------------------------- */

static int outbuf_append(struct outbuf *b, const char *data, size_t n) {
        if (b->allocated - b->len < n) {
                size_t want = b->allocated > 0 ? b->allocated : 4096;
                char *p;

                if (n > SIZE_MAX / 2 - b->len)
                        return -ENOMEM;
                while (want < b->len + n)
                        want *= 2;
                p = realloc(b->data, want);
                if (!p)
                        return -ENOMEM;
                b->data = p;
                b->allocated = want;
        }
        memcpy(b->data + b->len, data, n);
        b->len += n;
        return 0;
}

static void outbuf_free(struct outbuf *b) {
        free(b->data);
        *b = (struct outbuf){};
}

static void server_apply_limits(struct server *s) {
        const struct sessiond_config *cfg = s->d->config;
        size_t cap;

        assert(cfg->daemon.max_connections > 0 && cfg->daemon.max_message_size > 0);
        s->max_message_size = (size_t) cfg->daemon.max_message_size;
        s->max_connections = cfg->daemon.max_connections > UINT_MAX ? UINT_MAX
                                                                    : (unsigned) cfg->daemon.max_connections;
        /* Three quarters per uid: see the top of the file. */
        s->max_per_uid = s->max_connections - s->max_connections / 4;
        if (s->max_per_uid == 0)
                s->max_per_uid = 1;
        cap = s->max_message_size > SIZE_MAX / SERVER_OUTPUT_CAP_MESSAGES
                      ? SIZE_MAX
                      : s->max_message_size * SERVER_OUTPUT_CAP_MESSAGES;
        s->output_cap = cap > SERVER_OUTPUT_CAP_MIN ? cap : SERVER_OUTPUT_CAP_MIN;
        s->output_budget = s->output_cap > SERVER_OUTPUT_BUDGET / 2 ? s->output_cap * 2 : SERVER_OUTPUT_BUDGET;
}


static void on_wake(uv_idle_t *h) {
        /* Nothing to do: being active is the point (see server_wake). */
}

/* Makes the loop's poll phase return at once, so that the uv_check which
 * flushes runs in this iteration even when the reply was made in a timer. */
static void server_wake(struct server *s) {
        if (s->wake_open)
                (void) uv_idle_start(&s->wake, on_wake);
}

static void server_handle_gone(struct server *s) {
        assert(s->open_handles > 0);
        s->open_handles--;
        server_maybe_closed(s);
}

static void server_on_handle_closed(uv_handle_t *h) {
        server_handle_gone(h->data);
}

static size_t conn_output_bytes(const struct conn *c) {
        return c->out.len + (c->wbuf.len - c->wbuf_offset) + c->held_bytes;
}

/* Brings server->output_total up to date with c's output (call after
 * anything that changes it). */
static void conn_account(struct conn *c) {
        struct server *s = c->server;
        size_t now = conn_output_bytes(c);

        assert(s->output_total >= c->accounted);
        s->output_total = s->output_total - c->accounted + now;
        c->accounted = now;
}

/* Whether c must wait for its peer to read before it is served again: its
 * own output at the per-connection cap, or any output of its own while all
 * connections together hold the budget. A connection with nothing waiting
 * is always served (its replies then count against the budget until its
 * peer reads them), so a peer that reads is never starved by those that do
 * not. */
static bool conn_output_full(const struct conn *c) {
        size_t mine = conn_output_bytes(c);

        return mine >= c->server->output_cap || (mine > 0 && c->server->output_total >= c->server->output_budget);
}

/* Frees a buffer that drained, when it grew large: a connection that once
 * buffered a megabyte does not keep it while idle. */
static void conn_shrink(struct conn *c, struct outbuf *b) {
        if (b->len > 0 || b->allocated <= SERVER_OUTPUT_KEEP)
                return;
        c->server->freed_untrimmed += b->allocated;
        outbuf_free(b);
}

static void conn_mark_dirty(struct conn *c) {
        if (c->in_dirty || c->closed)
                return;
        DLIST_PUSH(c->server->dirty, c, dirty);
        c->in_dirty = true;
        server_wake(c->server);
}

static void conn_mark_ready(struct conn *c) {
        if (c->in_ready || c->closed)
                return;
        DLIST_PUSH(c->server->ready, c, ready);
        c->in_ready = true;
        server_wake(c->server);
}

/* ---- calls --------------------------------------------------------------- */

static void call_free(struct call *c) {
        if (!c)
                return;
        varlink_call_clear(&c->vc);
        free(c);
}

const char *call_method(const struct call *c) {
        assert(c);
        return c->vc.method;
}

json_t *call_parameters(struct call *c) {
        assert(c);
        return varlink_call_parameters(&c->vc);
}

int call_param(struct call *c, const char *object, const char *key, struct varlink_value *ret) {
        assert(c);
        return varlink_call_param(&c->vc, object, key, ret);
}

bool call_wants_more(const struct call *c) {
        assert(c);
        return c->vc.more;
}

bool call_is_oneway(const struct call *c) {
        assert(c);
        return c->vc.oneway;
}

bool call_peer_is_admin(const struct call *c) {
        assert(c);
        return c->admin;
}

uid_t call_peer_uid(const struct call *c) {
        assert(c);
        return c->cred.uid;
}

pid_t call_peer_pid(const struct call *c) {
        assert(c);
        return c->cred.pid;
}

struct daemon *call_daemon(const struct call *c) {
        assert(c);
        return c->server->d;
}

void call_mark_write(struct call *c) {
        assert(c);
        c->write = true;
}

void call_set_cancel(struct call *c, call_cancel_fn cb, void *userdata) {
        assert(c);
        c->cancel = cb;
        c->userdata = userdata;
}

/* Moves an encoded message (taking `data`) to the connection's output. A
 * large one that finds the output empty becomes the output buffer itself,
 * freed once written (conn_shrink): copying a listing of 100,000 sessions
 * (31 MB) took 115 to 130 ms of the loop. Small ones are copied, so the
 * buffer the connection keeps (SERVER_OUTPUT_KEEP) serves the next ones. */
static int conn_output_take(struct conn *c, char *data, size_t len) {
        int r;

        if (c->out.len == 0 && len > SERVER_OUTPUT_KEEP) {
                c->server->freed_untrimmed += c->out.allocated;
                free(c->out.data);
                c->out = (struct outbuf){.data = data, .len = len, .allocated = len};
                return 0;
        }
        r = outbuf_append(&c->out, data, len);
        free(data);
        return r;
}

/* Appends an encoded message (taking `data`) to the connection's output,
 * or to its held replies when it must wait for the commit. */
static int conn_queue(struct conn *c, char *data, size_t len, bool write) {
        struct server *s = c->server;
        int r;

        if (write || c->n_held > 0) {
                if (c->n_held == c->allocated_held) {
                        size_t n = c->allocated_held > 0 ? c->allocated_held * 2 : 8;
                        struct held_reply *p = reallocarray(c->held, n, sizeof *p);

                        if (!p) {
                                free(data);
                                return -ENOMEM;
                        }
                        c->held = p;
                        c->allocated_held = n;
                }
                s->n_held_total++;
                c->held[c->n_held++] = (struct held_reply){
                        .data = data, .len = len, .seq = s->commit_seq, .write = write };
                c->held_bytes += len;
        } else {
                r = conn_output_take(c, data, len);
                if (r < 0)
                        return r;
        }
        conn_account(c);
        conn_mark_dirty(c);
        return 0;
}

/* One message for a call's peer: JSON parameters still to be encoded (a
 * reply, or an error when `error` is set), or a message a handler already
 * encoded (data, e.g. by the reply writer). Owns params and data. */
struct outgoing {
        const char *error;
        json_t *params;
        char *data; /* with its NUL; NULL: encode params */
        size_t len;
        bool continues;
};

static void outgoing_clear(struct outgoing *m) {
        json_decref(m->params);
        free(m->data);
        *m = (struct outgoing){};
}

/* Encodes (unless it already is) and queues one message of `call` on its
 * connection; the message's buffer moves to the connection. On failure the
 * caller detaches the call and closes the connection: a peer cannot make
 * sense of a missing reply. */
static int conn_send(struct conn *c, struct call *call, struct outgoing *m) {
        int r = 0;

        if (!m->data) {
                if (m->error)
                        r = varlink_encode_error(m->error, m->params, &m->data, &m->len);
                else
                        r = varlink_encode_reply(m->params, m->continues, &m->data, &m->len);
        }
        if (r >= 0) {
                r = conn_queue(c, m->data, m->len, call->write); /* takes data, even on failure */
                m->data = NULL;
        }
        if (r < 0)
                log_error_errno(r, "Failed to send the reply to %s: %m", call->vc.method);
        return r;
}

/* Final reply or error: the call ends here. Takes the message. */
static int call_finish(struct call *c, struct outgoing *m) {
        struct conn *conn;

        assert(c);
        assert(!m->continues);
        if (c->cancelled) {
                /* A handler answering from its cancel callback: the server
                 * frees the call when the callback returns. */
                outgoing_clear(m);
                return -ENOTCONN;
        }
        if (c->started_ns && c->server->timing && !c->vc.more)
                c->server->timing(c->vc.method, uv_hrtime() - c->started_ns, c->server->timing_userdata);
        conn = c->conn;
        if (conn) {
                assert(conn->current == c);
                conn->current = NULL;
                c->conn = NULL;
                if (!c->vc.oneway && !conn->closed && conn_send(conn, c, m) < 0)
                        conn_close(conn, "reply could not be sent");
                if (!conn->closed) {
                        /* Handled inside conn_process(): its loop goes on.
                         * Answered later (a stream ending, a timer): the
                         * next message waits for the flush. */
                        if (!conn->processing)
                                conn_mark_ready(conn);
                }
        }
        outgoing_clear(m);
        call_free(c);
        return 0;
}

int call_reply(struct call *c, json_t *params) {
        return call_finish(c, &(struct outgoing){ .params = params });
}

int call_reply_encoded(struct call *c, char *data, size_t len) {
        assert(data);
        assert(len > 0 && data[len - 1] == '\0');
        return call_finish(c, &(struct outgoing){ .data = data, .len = len });
}

int call_error(struct call *c, const char *error, json_t *params) {
        assert(error);
        return call_finish(c, &(struct outgoing){ .error = error, .params = params });
}

int call_error_invalid_parameter(struct call *c, const char *name) {
        assert(name);
        return call_error(c, VARLINK_ERROR_INVALID_PARAMETER, json_pack("{s:s}", "parameter", name));
}

int call_reply_continues(struct call *c, json_t *params) {
        struct outgoing m = { .params = params, .continues = true };
        struct conn *conn;
        int r;

        assert(c);
        assert(c->vc.more);
        if (c->cancelled) {
                outgoing_clear(&m);
                return -ENOTCONN;
        }
        conn = c->conn;
        if (!conn || conn->closed) {
                /* Detached: the peer is gone and nobody else holds the call. */
                outgoing_clear(&m);
                if (conn)
                        conn->current = NULL;
                call_free(c);
                return -ENOTCONN;
        }
        if (conn_output_bytes(conn) > conn->server->output_cap ||
            (conn->server->output_total >= conn->server->output_budget &&
             conn_output_bytes(conn) >= SERVER_OUTPUT_KEEP)) {
                log_warning("Peer pid %d uid %u does not read the replies of %s (%zu bytes waiting); "
                            "closing the connection",
                            (int) conn->peer.ucred.pid, (unsigned) conn->peer.ucred.uid, c->vc.method,
                            conn_output_bytes(conn));
                r = -ENOBUFS;
        } else
                r = conn_send(conn, c, &m);
        outgoing_clear(&m);
        if (r < 0) {
                /* The stream ends here: the call is freed without its cancel
                 * callback, the return value tells the handler. */
                conn->current = NULL;
                c->conn = NULL;
                call_free(c);
                conn_close(conn, r == -ENOBUFS ? "peer does not read its stream" : "reply could not be sent");
                return r;
        }
        return 0;
}

/* ---- org.varlink.service ------------------------------------------------- */

/* Out of memory building a reply of our own: a reply cannot be skipped, so
 * the call ends with its connection. */
static void call_fail_oom(struct call *c) {
        struct conn *conn = c->conn;

        log_error("Out of memory answering %s", c->vc.method);
        assert(conn && conn->current == c);
        conn->current = NULL;
        call_free(c);
        conn_close(conn, "out of memory");
}

/* Replies with params, where NULL means that building them failed. */
static void service_reply(struct call *c, const char *error, json_t *params) {
        if (!params)
                call_fail_oom(c);
        else
                (void) call_finish(c, &(struct outgoing){ .error = error, .params = params });
}

static void service_get_info(struct call *c) {
        json_t *interfaces = json_array();

        for (const struct interface_text *t = interface_texts; t->name && interfaces; t++)
                if (json_array_append_new(interfaces, json_stringn(t->name, t->name_len)) < 0) {
                        json_decref(interfaces);
                        interfaces = NULL;
                }
        service_reply(c, NULL,
                      interfaces ? json_pack("{s:s, s:s, s:s, s:s, s:o}",
                                             "vendor", "sessiond",
                                             "product", "sessiond",
                                             "version", SESSIOND_VERSION,
                                             "url", SERVER_GETINFO_URL,
                                             "interfaces", interfaces)
                                 : NULL);
}

static void service_get_interface_description(struct call *c) {
        const struct interface_text *t;
        struct varlink_value v;
        const char *name;

        if (call_param(c, NULL, "interface", &v) < 0 || v.type != VARLINK_VALUE_STRING) {
                service_reply(c, VARLINK_ERROR_INVALID_PARAMETER, json_pack("{s:s}", "parameter", "interface"));
                return;
        }
        name = v.string;
        t = interface_find(name, strlen(name));
        if (!t)
                service_reply(c, VARLINK_ERROR_INTERFACE_NOT_FOUND, json_pack("{s:s}", "interface", name));
        else
                service_reply(c, NULL, json_pack("{s:s%}", "description", t->text, t->text_len));
}

static void service_dispatch(struct call *c, const char *member) {
        if (strcmp(member, "GetInfo") == 0)
                service_get_info(c);
        else if (strcmp(member, "GetInterfaceDescription") == 0)
                service_get_interface_description(c);
        else
                service_reply(c, VARLINK_ERROR_METHOD_NOT_FOUND, json_pack("{s:s}", "method", c->vc.method));
}

/* Routes one parsed call: our own interface, the access check, then the
 * method handlers. */
static void call_dispatch(struct call *c) {
        const char *method = c->vc.method;
        const char *dot = strrchr(method, '.');
        const struct interface_text *iface;
        size_t iface_len;

        assert(dot); /* varlink_call_parse() checked "iface.Method" */
        iface_len = (size_t) (dot - method);

        log_debug("Connection %llu (pid %d uid %u): %s%s%s", c->conn->id, (int) c->cred.pid,
                  (unsigned) c->cred.uid, method, c->vc.more ? " (more)" : "",
                  c->vc.oneway ? " (oneway)" : "");

        if (c->vc.upgrade) {
                /* No method of ours hands the connection over to another protocol. */
                service_reply(c, VARLINK_ERROR_METHOD_NOT_IMPLEMENTED, json_pack("{s:s}", "method", method));
                return;
        }
        iface = interface_find(method, iface_len);
        if (!iface) {
                service_reply(c, VARLINK_ERROR_INTERFACE_NOT_FOUND,
                              json_pack("{s:s%}", "interface", method, iface_len));
                return;
        }
        if (strcmp(iface->name, INTERFACE_SERVICE) == 0) {
                service_dispatch(c, dot + 1);
                return;
        }
        if (interface_is_admin(method, iface_len) && !c->admin) {
                log_debug("Connection %llu (pid %d uid %u): %s refused, not an administrator",
                          c->conn->id, (int) c->cred.pid, (unsigned) c->cred.uid, method);
                service_reply(c, VARLINK_ERROR_PERMISSION_DENIED, json_object());
                return;
        }
        methods_dispatch(c->server->d, c);
}

/* ---- connections: input ---------------------------------------------------- */

static void conn_protocol_error(struct conn *c, const char *what) {
        c->server->stats.protocol_errors++;
        log_debug("Connection %llu (pid %d uid %u): %s; closing it", c->id, (int) c->peer.ucred.pid,
                  (unsigned) c->peer.ucred.uid, what);
        conn_close(c, NULL);
}

static void conn_handle_message(struct conn *c, const char *msg, size_t len) {
        struct server *s = c->server;
        char method[sizeof s->turn.longest_method];
        size_t method_len;
        uint64_t t0, took;
        struct call *call;
        int r;

        call = calloc(1, sizeof *call);
        if (!call) {
                log_error("Out of memory for a call; closing connection %llu", c->id);
                conn_close(c, NULL);
                return;
        }
        r = varlink_call_parse(msg, len, &call->vc);
        if (r < 0) {
                free(call);
                conn_protocol_error(c, r == -ENOMEM ? "out of memory parsing a call"
                                                    : "malformed call (not a Varlink call object)");
                return;
        }
        call->server = c->server;
        call->conn = c;
        call->cred = c->peer.ucred;
        call->admin = c->admin;
        c->current = call;
        c->server->stats.calls++;
        t0 = uv_hrtime();
        if (c->server->timing)
                call->started_ns = t0;
        method_len = strlen(call->vc.method);
        if (method_len >= sizeof s->turn.longest_method)
                method_len = sizeof s->turn.longest_method - 1;
        memcpy(method, call->vc.method, method_len); /* the call may be gone when dispatch returns */
        method[method_len] = '\0';
        call_dispatch(call);
        took = uv_hrtime() - t0;
        s->turn.calls++;
        if (took > s->turn.longest_call_ns) {
                s->turn.longest_call_ns = took;
                memcpy(s->turn.longest_method, method, method_len + 1);
        }
}

/* Handles the complete messages buffered, one call at a time. */
static void conn_process(struct conn *c) {
        struct server *s = c->server;

        if (c->processing)
                return; /* the loop below is already running for c */
        c->processing = true;
        while (!c->closed && !c->stop_calls && !c->current) {
                const char *msg;
                size_t len;
                int r;

                if (conn_output_full(c)) {
                        if (!c->output_blocked)
                                log_debug("Connection %llu (pid %d uid %u): %zu bytes of replies unread, "
                                          "handling its calls paused until it reads",
                                          c->id, (int) c->peer.ucred.pid, c->peer.ucred.uid,
                                          conn_output_bytes(c));
                        c->output_blocked = true;
                        break;
                }
                r = varlink_reader_next(&c->reader, &msg, &len);
                if (r == -EMSGSIZE) {
                        char what[96];

                        snprintf(what, sizeof what, "message longer than daemon.max_message_size (%zu bytes)",
                                 c->reader.max_message_size);
                        conn_protocol_error(c, what);
                        break;
                }
                assert(r >= 0);
                if (r == 0) {
                        bool partial = varlink_reader_pending(&c->reader) > 0;

                        if (partial && !c->partial)
                                c->partial_since = uv_now(s->d->loop);
                        c->partial = partial;
                        break;
                }
                c->partial = false;
                conn_handle_message(c, msg, len);
        }
        c->processing = false;
        if (!c->closed) {
                conn_update_reading(c);
                conn_check_done(c);
        }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        struct conn *c = h->data;
        char *p;
        size_t room;

        if (varlink_reader_space(&c->reader, SERVER_READ_SIZE, &p, &room) < 0) {
                *buf = uv_buf_init(NULL, 0); /* on_read gets UV_ENOBUFS */
                return;
        }
        *buf = uv_buf_init(p, room > UINT_MAX ? UINT_MAX : (unsigned) room);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
        struct conn *c = stream->data;

        if (nread > 0) {
                varlink_reader_commit(&c->reader, (size_t) nread);
                conn_process(c);
                return;
        }
        if (nread == 0)
                return; /* EAGAIN */
        if (nread != UV_EOF) {
                if (nread == UV_ENOBUFS)
                        log_error("Out of memory reading from connection %llu", c->id);
                conn_close(c, uv_strerror((int) nread));
                return;
        }

        /* EOF: answer what is complete, drop half a message, cancel a stream. */
        c->read_eof = true;
        c->partial = false;
        conn_update_reading(c);
        if (c->current && c->current->vc.more) {
                conn_close(c, "peer hung up during a stream");
                return;
        }
        conn_process(c);
}

/* Reads while there is room: always when idle, up to max_message_size of
 * buffered input while a call is open, never past the output cap. */
static void conn_update_reading(struct conn *c) {
        bool want = !c->closed && !c->read_eof && !c->stop_calls &&
                    !conn_output_full(c) &&
                    (!c->current || varlink_reader_pending(&c->reader) <= c->reader.max_message_size);

        if (want == c->reading)
                return;
        if (want) {
                int r = uv_read_start((uv_stream_t *) &c->pipe, on_alloc, on_read);

                if (r < 0) {
                        log_error("Failed to read from connection %llu: %s", c->id, uv_strerror(r));
                        conn_close(c, NULL);
                        return;
                }
        } else
                (void) uv_read_stop((uv_stream_t *) &c->pipe);
        c->reading = want;
}

/* ---- connections: output ----------------------------------------------------- */

/* Moves the held replies of sealed batches up to `upto` to the output; a
 * write among them becomes the error `error` (with `params`) when that is
 * not NULL: its unit of work was not committed. */
static void conn_release_held(struct conn *c, uint64_t upto, const char *error, json_t *params) {
        bool failed = false;
        size_t i;

        for (i = 0; i < c->n_held && c->held[i].seq <= upto; i++) {
                struct held_reply *h = &c->held[i];
                int r;

                if (h->write && error) {
                        char *data;
                        size_t len;

                        r = varlink_encode_error(error, json_incref(params), &data, &len);
                        if (r < 0) {
                                /* Without an error to send, the only honest
                                 * answer left is to hang up. */
                                conn_close(c, "error reply could not be encoded");
                                return;
                        }
                        free(h->data);
                        h->data = data;
                        c->held_bytes += len;
                        c->held_bytes -= h->len;
                        h->len = len;
                }
                c->held_bytes -= h->len;
                r = conn_output_take(c, h->data, h->len);
                h->data = NULL;
                if (r < 0) {
                        log_error("Out of memory writing to connection %llu", c->id);
                        failed = true;
                        i++; /* its data is gone */
                        break;
                }
        }
        if (i > 0) {
                memmove(c->held, c->held + i, (c->n_held - i) * sizeof *c->held);
                c->n_held -= i;
                c->server->n_held_total -= i;
                conn_mark_dirty(c);
        }
        conn_account(c);
        if (failed)
                conn_close(c, NULL);
}

static void after_output_drained(struct conn *c) {
        if (c->closed)
                return;
        conn_account(c);
        conn_shrink(c, &c->out);
        conn_shrink(c, &c->wbuf);
        /* Below the cap again: take input and calls again. */
        conn_update_reading(c);
        if (c->output_blocked) {
                c->output_blocked = false;
                conn_mark_ready(c);
        }
        conn_check_done(c);
}

static void on_write(uv_write_t *req, int status) {
        struct conn *c = container_of(req, struct conn, write_req);

        c->writing = false;
        c->wbuf.len = 0;
        c->wbuf_offset = 0;
        conn_account(c);
        if (status < 0) {
                if (status != UV_ECANCELED)
                        conn_close(c, uv_strerror(status));
                return;
        }
        conn_write(c);
}

/* One write call for everything released; the kernel's leftovers go to
 * uv_write, which finishes them when the socket has room. */
static void conn_write(struct conn *c) {
        uv_buf_t b;
        int n, r;

        if (c->closed || c->writing)
                return;
        if (c->out.len == 0) {
                after_output_drained(c);
                return;
        }
        b = uv_buf_init(c->out.data, (unsigned) (c->out.len > UINT_MAX ? UINT_MAX : c->out.len));
        n = uv_try_write((uv_stream_t *) &c->pipe, &b, 1);
        if (n == UV_EAGAIN)
                n = 0;
        if (n < 0) {
                conn_close(c, uv_strerror(n));
                return;
        }
        if ((size_t) n == c->out.len) {
                c->out.len = 0;
                after_output_drained(c);
                return;
        }

        /* The rest is in flight: out becomes wbuf, the old wbuf's memory
         * takes the next replies. */
        {
                struct outbuf t = c->wbuf;

                c->wbuf = c->out;
                c->out = t;
                c->out.len = 0;
        }
        c->wbuf_offset = (size_t) n;
        conn_account(c);
        b = uv_buf_init(c->wbuf.data + n, (unsigned) (c->wbuf.len - (size_t) n));
        r = uv_write(&c->write_req, (uv_stream_t *) &c->pipe, &b, 1, on_write);
        if (r < 0) {
                c->wbuf.len = 0;
                c->wbuf_offset = 0;
                conn_account(c);
                conn_close(c, uv_strerror(r));
                return;
        }
        c->writing = true;
}

/* ---- connections: lifetime ----------------------------------------------------- */

/* Closes a connection whose work is over: the peer sent EOF (or we are
 * shutting down), no call is open and every reply has been written. */
static void conn_check_done(struct conn *c) {
        if (c->closed || !(c->read_eof || c->stop_calls) || c->current || c->in_ready)
                return;
        if (c->output_blocked || c->writing || c->out.len > 0 || c->n_held > 0)
                return; /* replies (or calls waiting for the peer to read) left */
        conn_close(c, c->stop_calls ? "shutting down" : "peer closed the connection");
}

static void on_conn_closed(uv_handle_t *h) {
        struct conn *c = h->data;
        struct server *s = c->server;

        assert(c->closed && !c->in_dirty && !c->in_ready && !c->current);
        assert(s->output_total >= c->accounted);
        s->output_total -= c->accounted;
        s->freed_untrimmed += c->out.allocated + c->wbuf.allocated + c->held_bytes;
        varlink_reader_free(&c->reader);
        peer_cred_clear(&c->peer);
        outbuf_free(&c->out);
        outbuf_free(&c->wbuf);
        for (size_t i = 0; i < c->n_held; i++)
                free(c->held[i].data);
        c->server->n_held_total -= c->n_held;
        free(c->held);
        free(c);
        server_handle_gone(s);
}

/* Ends the open call of a connection that goes away: its cancel callback
 * runs and the call is freed, or, without a callback, it is detached (the
 * handler still owns it and frees it with its reply). */
static void conn_cancel_call(struct conn *c) {
        struct call *call = c->current;

        if (!call)
                return;
        c->current = NULL;
        call->conn = NULL;
        if (call->cancel) {
                call->cancelled = true;
                call->cancel(call, call->userdata);
                call_free(call);
        }
}

/* Closes at once: unsent output is dropped, an open call is cancelled.
 * Memory is freed in the close callback. */
static void conn_close(struct conn *c, const char *why) {
        struct server *s = c->server;

        if (c->closed)
                return;
        c->closed = true;
        if (why)
                log_debug("Connection %llu (pid %d uid %u) closed: %s", c->id, (int) c->peer.ucred.pid,
                          (unsigned) c->peer.ucred.uid, why);

        if (c->in_dirty) {
                DLIST_REMOVE(s->dirty, c, dirty);
                c->in_dirty = false;
        }
        if (c->in_ready) {
                DLIST_REMOVE(s->ready, c, ready);
                c->in_ready = false;
        }
        if (c->counted) {
                DLIST_REMOVE(s->conns, c, all);
                assert(s->n_conns > 0);
                s->n_conns--;
                c->counted = false;
        }
        if (c->reading) {
                (void) uv_read_stop((uv_stream_t *) &c->pipe);
                c->reading = false;
        }

        conn_cancel_call(c);
        uv_close((uv_handle_t *) &c->pipe, on_conn_closed);
}

/* ---- accepting --------------------------------------------------------------- */

static unsigned server_count_uid(const struct server *s, uid_t uid) {
        unsigned n = 0;

        for (const struct conn *c = s->conns; c; c = c->all_next)
                n += c->peer.ucred.uid == uid;
        return n;
}

static void server_log_reject(struct server *s, const char *why, const struct ucred *cred) {
        uint64_t now = uv_now(s->d->loop);

        s->stats.rejected++;
        s->rejected_unlogged++;
        if (s->reject_logged && now - s->last_reject_log < SERVER_REJECT_LOG_INTERVAL_MS)
                return;
        log_warning("Refused %llu connection(s) (last from pid %d uid %u): %s",
                    s->rejected_unlogged, (int) cred->pid, (unsigned) cred->uid, why);
        s->rejected_unlogged = 0;
        s->last_reject_log = now;
        s->reject_logged = true;
}

static void server_accept(struct server *s) {
        struct conn *c;
        uv_os_fd_t fd;
        int r;

        c = calloc(1, sizeof *c);
        if (!c) {
                /* libuv holds the accepted socket until uv_accept(): try
                 * again from the sweep timer. */
                log_error("Out of memory accepting a connection; retrying");
                s->accept_stalled = true;
                return;
        }
        s->accept_stalled = false;
        c->server = s;
        c->id = ++s->next_id;
        r = uv_pipe_init(s->d->loop, &c->pipe, 0);
        if (r < 0) {
                log_error("Failed to set up a connection: %s", uv_strerror(r));
                free(c);
                s->accept_stalled = true;
                return;
        }
        c->pipe.data = c;
        s->open_handles++;
        r = uv_accept((uv_stream_t *) &s->listener, (uv_stream_t *) &c->pipe);
        if (r < 0) {
                log_warning("Failed to accept a connection: %s", uv_strerror(r));
                conn_close(c, NULL);
                return;
        }

        r = uv_fileno((uv_handle_t *) &c->pipe, &fd) < 0 ? -EBADF : peer_cred_read(fd, &c->peer);
        if (r < 0) {
                log_warning_errno(r, "Failed to read the credentials of a peer: %m");
                conn_close(c, NULL);
                return;
        }

        if (s->n_conns >= s->max_connections) {
                server_log_reject(s, "daemon.max_connections reached", &c->peer.ucred);
                conn_close(c, NULL);
                return;
        }
        if (c->peer.ucred.uid != 0 && server_count_uid(s, c->peer.ucred.uid) >= s->max_per_uid) {
                server_log_reject(s, "this uid holds 3/4 of daemon.max_connections", &c->peer.ucred);
                conn_close(c, NULL);
                return;
        }

        c->admin = peer_is_admin(&c->peer, &s->admin_group);
        r = varlink_reader_init(&c->reader, s->max_message_size);
        if (r < 0) {
                log_error_errno(r, "Failed to set up a connection: %m");
                conn_close(c, NULL);
                return;
        }
        c->reader_ready = true;
        DLIST_PUSH(s->conns, c, all);
        c->counted = true;
        s->n_conns++;
        s->stats.accepted++;
        log_debug("Connection %llu from pid %d uid %u gid %u%s", c->id, (int) c->peer.ucred.pid,
                  (unsigned) c->peer.ucred.uid, (unsigned) c->peer.ucred.gid, c->admin ? " (admin)" : "");
        conn_update_reading(c);
}

static void on_connection(uv_stream_t *listener, int status) {
        struct server *s = listener->data;

        if (status < 0) {
                log_warning("Failed to accept a connection: %s", uv_strerror(status));
                return;
        }
        if (!s->accepting)
                return;
        server_accept(s);
}

static void on_sweep(uv_timer_t *t) {
        struct server *s = t->data;
        uint64_t now = uv_now(s->d->loop);
        struct conn *next;

        if (s->accept_stalled && s->accepting)
                server_accept(s);
        for (struct conn *c = s->conns; c; c = next) {
                next = c->all_next;
                if (c->partial && !c->current && now - c->partial_since >= SERVER_PARTIAL_TIMEOUT_MS)
                        conn_protocol_error(c, "half a message held for 10 s");
        }
        /* Output buffers are large and short-lived: glibc keeps what they
         * freed in its heap (the mmap threshold grows with them), so hand
         * the free pages back to the system, at most once a second. */
        if (s->freed_untrimmed >= SERVER_TRIM_AFTER) {
                s->freed_untrimmed = 0;
                (void) malloc_trim(0);
        }
}

/* ---- the listening socket ---------------------------------------------------- */

/* The socket systemd passed: 1 and *ret_fd, 0 when none was passed. */
static int server_listen_fd_from_systemd(int *ret_fd) {
        char **names = NULL;
        int n, fd = -1, r = 0;

        n = sd_listen_fds_with_names(1, &names);
        if (n < 0)
                return log_error_errno(n, "Failed to read the sockets passed by systemd: %m");
        for (int i = 0; i < n; i++) {
                int f = SD_LISTEN_FDS_START + i;
                const char *name = names && names[i] ? names[i] : "unknown";

                if (strcmp(name, "varlink") == 0 && fd < 0)
                        fd = f;
                else if (strcmp(name, METRICS_HTTP_FD_NAME) == 0 && metrics_http_adopt_fd(f) == 0)
                        continue;
                else {
                        log_error("systemd passed an unexpected socket (fd %d, name \"%s\"): sessiond takes "
                                  "one named \"varlink\" (FileDescriptorName=varlink) and at most one named \"metrics\"",
                                  f, name);
                        r = -EINVAL;
                }
        }
        if (names)
                for (int i = 0; i < n; i++)
                        free(names[i]);
        free(names);
        if (r == 0 && fd >= 0) {
                int k = sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0);

                if (k < 0)
                        r = log_error_errno(k, "Failed to check the socket passed by systemd: %m");
                else if (k == 0) {
                        log_error("The socket passed by systemd is not a listening Unix stream socket");
                        r = -EINVAL;
                }
        }
        if (r < 0) {
                for (int i = 0; i < n; i++)
                        (void) close(SD_LISTEN_FDS_START + i);
                return r;
        }
        *ret_fd = fd;
        return fd >= 0;
}

/* 0 when something accepts connections at path, -ECONNREFUSED when it is
 * a socket nobody listens on, another negative errno otherwise. */
static int socket_probe(const struct sockaddr_un *sa, socklen_t len) {
        int fd, r = 0;

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (const struct sockaddr *) sa, len) < 0)
                r = errno == EAGAIN ? 0 : -errno; /* EAGAIN: a full backlog, but alive */
        (void) close(fd);
        return r;
}

static int server_bind(struct server *s, const char *path, int *ret_fd) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        socklen_t sa_len;
        struct stat st;
        mode_t old_umask;
        int fd, r;

        if (!path || !*path) {
                log_error("daemon.socket_path is empty");
                return -EINVAL;
        }
        if (strlen(path) >= sizeof sa.sun_path) {
                log_error("daemon.socket_path %s is too long for a Unix socket (at most %zu bytes)", path,
                          sizeof sa.sun_path - 1);
                return -ENAMETOOLONG;
        }
        memcpy(sa.sun_path, path, strlen(path));
        sa_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return log_error_errno(-errno, "Failed to create a socket: %m");

        /* The mode is right from the first instant: 0777 & ~0117 = 0660. */
        old_umask = umask(0117);
        r = bind(fd, (struct sockaddr *) &sa, sa_len) < 0 ? -errno : 0;
        if (r == -EADDRINUSE) {
                int k = socket_probe(&sa, sa_len);

                if (k == 0) {
                        log_error("Another sessiond is listening on %s", path);
                        r = -EADDRINUSE;
                } else if (k == -ECONNREFUSED && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
                        log_notice("Removing the stale socket %s (nobody listens on it)", path);
                        if (unlink(path) < 0 && errno != ENOENT)
                                r = -errno;
                        else
                                r = bind(fd, (struct sockaddr *) &sa, sa_len) < 0 ? -errno : 0;
                        if (r < 0)
                                log_error_errno(r, "Failed to bind %s: %m", path);
                } else
                        log_error("Failed to bind %s: the path exists and is not a stale socket", path);
        } else if (r < 0)
                log_error_errno(r, "Failed to bind %s: %m", path);
        umask(old_umask);
        if (r < 0)
                goto fail;

        if (listen(fd, SOMAXCONN) < 0) {
                r = log_error_errno(-errno, "Failed to listen on %s: %m", path);
                (void) unlink(path);
                goto fail;
        }
        if (stat(path, &st) < 0) {
                r = log_error_errno(-errno, "Failed to stat %s: %m", path);
                goto fail;
        }
        s->bound_dev = st.st_dev;
        s->bound_ino = st.st_ino;
        s->bound_path = strdup(path);
        if (!s->bound_path) {
                r = -ENOMEM;
                (void) unlink(path);
                goto fail;
        }
        *ret_fd = fd;
        return 0;
fail:
        (void) close(fd);
        return r;
}

/* Unlinks the socket file if it is still the one we bound. */
static void server_unlink_socket(struct server *s) {
        struct stat st;

        if (!s->bound_path)
                return;
        if (lstat(s->bound_path, &st) == 0 && st.st_dev == s->bound_dev && st.st_ino == s->bound_ino)
                (void) unlink(s->bound_path);
        free(s->bound_path);
        s->bound_path = NULL;
}

int server_new(struct daemon *d, struct server **ret) {
        struct server *s;
        int fd = -1, r;

        assert(d && d->loop && d->config && ret);

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->d = d;
        server_apply_limits(s);
        server_apply_admin_group(s);

        r = server_listen_fd_from_systemd(&fd);
        if (r < 0)
                goto fail;
        if (r > 0)
                s->activated = true;
        else {
                r = server_bind(s, d->config->daemon.socket_path, &fd);
                if (r < 0)
                        goto fail;
        }

        /* No failure is possible after these: every handle is open. */
        r = uv_pipe_init(d->loop, &s->listener, 0);
        if (r == 0) {
                s->listener.data = s;
                s->listener_open = true;
                s->open_handles++;
                r = uv_pipe_open(&s->listener, fd);
                if (r == 0)
                        fd = -1; /* the listener owns it now */
        }
        if (r == 0)
                r = uv_listen((uv_stream_t *) &s->listener, SOMAXCONN, on_connection);
        if (r < 0) {
                log_error("Failed to listen: %s", uv_strerror(r));
                r = -EIO;
                goto fail;
        }
        (void) uv_timer_init(d->loop, &s->sweep);
        s->sweep.data = s;
        s->sweep_open = true;
        s->open_handles++;
        (void) uv_timer_start(&s->sweep, on_sweep, SERVER_SWEEP_INTERVAL_MS, SERVER_SWEEP_INTERVAL_MS);
        uv_unref((uv_handle_t *) &s->sweep);
        (void) uv_idle_init(d->loop, &s->wake);
        s->wake.data = s;
        s->wake_open = true;
        s->open_handles++;
        s->accepting = true;

        if (s->activated)
                log_info("Listening on the socket passed by systemd");
        else
                log_info("Listening on %s", s->bound_path);
        *ret = s;
        return 0;

fail:
        if (fd >= 0)
                (void) close(fd);
        server_unlink_socket(s);
        if (s->listener_open) {
                /* The server is freed by the listener's close callback. */
                s->listener_open = false;
                s->closing = true;
                s->free_on_close = true;
                uv_close((uv_handle_t *) &s->listener, server_on_handle_closed);
                return r;
        }
        free(s);
        return r;
}

void server_stop_accepting(struct server *s) {
        assert(s);
        s->accepting = false;
        if (s->listener_open) {
                s->listener_open = false;
                uv_close((uv_handle_t *) &s->listener, server_on_handle_closed);
        }
        server_unlink_socket(s);
}

static void server_maybe_closed(struct server *s) {
        if (!s->closing)
                return;
        if (s->open_handles == 1 && s->wake_open) {
                /* Only the wake handle is left: nothing can need a flush. */
                s->wake_open = false;
                uv_close((uv_handle_t *) &s->wake, server_on_handle_closed);
                return;
        }
        if (s->open_handles > 0)
                return;
        if (s->close_cb) {
                void (*cb)(struct server *) = s->close_cb;

                s->close_cb = NULL;
                cb(s);
        } else if (s->free_on_close)
                free(s);
}

void server_close(struct server *s, void (*cb)(struct server *s)) {
        struct conn *next;

        assert(s);
        server_stop_accepting(s);
        s->closing = true;
        s->close_cb = cb;
        if (s->sweep_open) {
                s->sweep_open = false;
                uv_close((uv_handle_t *) &s->sweep, server_on_handle_closed);
        }
        for (struct conn *c = s->conns; c; c = c->all_next) {
                c->stop_calls = true;
                conn_update_reading(c);
                /* Streams never end by themselves; other open calls get
                 * their reply (until main's deadline calls server_abort). */
                if (c->current && c->current->cancel)
                        conn_cancel_call(c);
        }
        /* Whatever is answered goes out first (held replies wait for
         * main to release them). */
        server_flush(s);
        for (struct conn *c = s->conns; c; c = next) {
                next = c->all_next;
                conn_check_done(c);
        }
        server_maybe_closed(s);
}

void server_abort(struct server *s) {
        struct conn *next;

        assert(s);
        for (struct conn *c = s->conns; c; c = next) {
                next = c->all_next;
                conn_close(c, "shutting down (forced)");
        }
        server_maybe_closed(s);
}

void server_free(struct server *s) {
        if (!s)
                return;
        assert(s->open_handles == 0);
        assert(!s->conns && !s->dirty && !s->ready);
        free(s->bound_path);
        free(s);
}

/* ---- flushing -------------------------------------------------------------- */

void server_process_ready(struct server *s) {
        struct conn *c;

        /* Connections whose call ended outside their read callback take
         * their next message now, so its writes join this unit of work. */
        while ((c = s->ready)) {
                DLIST_REMOVE(s->ready, c, ready);
                c->in_ready = false;
                conn_process(c);
        }
}

bool server_has_held(const struct server *s) {
        return s->n_held_total > 0;
}

uint64_t server_seal_writes(struct server *s) {
        assert(s);
        return s->commit_seq++;
}

void server_release_held(struct server *s, uint64_t upto, const char *error, json_t *params) {
        struct conn *next;

        assert(s);
        for (struct conn *c = s->conns; c; c = next) {
                next = c->all_next;
                if (c->n_held > 0 && !c->closed)
                        conn_release_held(c, upto, error, params);
        }
        json_decref(params);
}

void server_report_commit(struct server *s, uint64_t nsec) {
        assert(s);
        if (s->timing)
                s->timing(NULL, nsec, s->timing_userdata);
}

void server_flush(struct server *s) {
        uint64_t t0;
        struct conn *c;

        server_process_ready(s);
        t0 = uv_hrtime();
        while ((c = s->dirty)) {
                DLIST_REMOVE(s->dirty, c, dirty);
                c->in_dirty = false;
                conn_write(c);
        }
        s->turn.flush_ns += uv_hrtime() - t0;
        if (!s->dirty && !s->ready && s->wake_open)
                (void) uv_idle_stop(&s->wake);
}

void server_get_stats(const struct server *s, struct server_stats *ret) {
        assert(s && ret);
        *ret = s->stats;
        ret->connections = s->n_conns;
        ret->output_bytes = s->output_total;
        ret->output_budget = s->output_budget;
}

static bool call_is_admin(const struct call *c) {
        const char *dot = strrchr(c->vc.method, '.');

        return dot && interface_is_admin(c->vc.method, (size_t) (dot - c->vc.method));
}

/* Resolves daemon.admin_group (once per configuration, not per accept), then
 * decides the rights of every open connection again from the credentials
 * it had at accept: a reload that adds or removes the group, or names
 * another, reaches connections already open. One that loses its rights
 * while an Admin stream (Events) is open is closed, since that stream is
 * what it may no longer see. */
static void server_apply_admin_group(struct server *s) {
        const char *name = s->d->config->daemon.admin_group;
        struct conn *next;
        int r;

        r = peer_admin_group_resolve(name, &s->admin_group);
        if (r == -ENOENT && name && *name)
                log_notice("daemon.admin_group %s does not exist: only root may call io.sessiond.Admin", name);
        else if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Failed to look up daemon.admin_group %s: %m; only root may call "
                                     "io.sessiond.Admin", name);
        for (struct conn *c = s->conns; c; c = next) {
                bool admin = peer_is_admin(&c->peer, &s->admin_group);

                next = c->all_next;
                if (admin == c->admin)
                        continue;
                c->admin = admin;
                log_info("Connection %llu (pid %d uid %u) %s administrator rights (daemon.admin_group %s)", c->id,
                         (int) c->peer.ucred.pid, (unsigned) c->peer.ucred.uid, admin ? "gained" : "lost",
                         name && *name ? name : "unset");
                if (!admin && c->current && c->current->vc.more && call_is_admin(c->current))
                        conn_close(c, "administrator rights revoked during an Admin stream");
        }
}

void server_config_changed(struct server *s) {
        assert(s);
        server_apply_limits(s);
        for (struct conn *c = s->conns; c; c = c->all_next)
                c->reader.max_message_size = s->max_message_size;
        server_apply_admin_group(s);
}

void server_set_timing(struct server *s, server_timing_fn fn, void *userdata) {
        assert(s);
        s->timing = fn;
        s->timing_userdata = fn ? userdata : NULL;
}

void server_turn_take(struct server *s, struct server_turn *ret) {
        assert(s && ret);
        *ret = s->turn;
        s->turn = (struct server_turn){};
}
