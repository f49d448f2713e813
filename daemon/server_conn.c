/* A connection of the Varlink server (server-internal.h: the other files):
 * its input, its output and its lifetime, and the flush of every
 * connection once a loop turn.
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
 */
#include "server-internal.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "log.h"
#include "macro.h"

static void conn_process(struct conn *c);
static void conn_write(struct conn *c);

/* ---- output buffers and accounting ------------------------------------------------------- */

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

static void on_wake(uv_idle_t *h) {
        /* Nothing to do: being active is the point (see server_wake). */
}

/* Makes the loop's poll phase return at once, so that the uv_check which
 * flushes runs in this iteration even when the reply was made in a timer. */
static void server_wake(struct server *s) {
        if (s->wake_open)
                (void) uv_idle_start(&s->wake, on_wake);
}

size_t conn_output_bytes(const struct conn *c) {
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

void conn_mark_ready(struct conn *c) {
        if (c->in_ready || c->closed)
                return;
        DLIST_PUSH(c->server->ready, c, ready);
        c->in_ready = true;
        server_wake(c->server);
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
int conn_queue(struct conn *c, char *data, size_t len, bool write) {
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
                c->held[c->n_held++] =
                        (struct held_reply){.data = data, .len = len, .seq = s->commit_seq, .write = write};
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

/* ---- input ------------------------------------------------------------------------------- */

void conn_protocol_error(struct conn *c, const char *what) {
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
                                          c->id, (int) c->peer.ucred.pid, c->peer.ucred.uid, conn_output_bytes(c));
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
void conn_update_reading(struct conn *c) {
        bool want = !c->closed && !c->read_eof && !c->stop_calls && !conn_output_full(c) &&
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

/* ---- output ------------------------------------------------------------------------------ */

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

/* ---- lifetime ---------------------------------------------------------------------------- */

/* Closes a connection whose work is over: the peer sent EOF (or we are
 * shutting down), no call is open and every reply has been written. */
void conn_check_done(struct conn *c) {
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
void conn_cancel_call(struct conn *c) {
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
void conn_close(struct conn *c, const char *why) {
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

/* ---- flushing ---------------------------------------------------------------------------- */

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
