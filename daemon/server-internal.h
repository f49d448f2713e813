/* The Varlink server's shared state (daemon/server*.c; the interface is
 * server.h). One struct server, three files, one concept each:
 *   server.c       the listening socket, accepting with the peer's
 *                  credentials and the connection limits, the admin
 *                  decision, the server's lifecycle and statistics;
 *   server_conn.c  a connection's input, its output with the output cap
 *                  and the held replies (released by main after the
 *                  commit), its lifetime, and the flush once a loop turn;
 *   server_call.c  a call: its accessors and replies (the API of
 *                  server.h), org.varlink.service and the dispatch to the
 *                  methods.
 * Functions shared between them are declared here; everything else stays
 * static in its file.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "peer.h"
#include "server.h"
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
#define DLIST_PUSH(head, item, name)                  \
        do {                                          \
                (item)->name##_prev = NULL;           \
                (item)->name##_next = (head);         \
                if (head)                             \
                        (head)->name##_prev = (item); \
                (head) = (item);                      \
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
        bool counted;          /* in the connection count (not a rejected one) */

        struct varlink_reader reader;
        bool reader_ready;
        bool partial;           /* half a message is buffered ... */
        uint64_t partial_since; /* ... since this loop time (ms) */

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
        bool read_eof;       /* the peer sent EOF: answer what is buffered, then close */
        bool stop_calls;     /* shutting down: start no new call, close when drained */
        bool closed;         /* uv_close() called */
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
        bool cancelled;      /* its cancel callback is running or has run */
        bool answers_soon;   /* call_set_detach(): a stop waits for its reply */
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
        size_t output_budget;                /* of output_total */
        size_t output_total;                 /* output bytes of every connection (conn_output_bytes) */
        size_t freed_untrimmed;              /* buffer bytes freed since the last malloc_trim() */
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

/* server.c */
void server_handle_gone(struct server *s);

/* server_conn.c */
size_t conn_output_bytes(const struct conn *c);
int conn_queue(struct conn *c, char *data, size_t len, bool write);
void conn_mark_ready(struct conn *c);
void conn_update_reading(struct conn *c);
void conn_check_done(struct conn *c);
void conn_cancel_call(struct conn *c);
void conn_protocol_error(struct conn *c, const char *what);
void conn_close(struct conn *c, const char *why);

/* server_call.c */
void call_free(struct call *c);
void call_dispatch(struct call *c);
bool call_method_is_admin(const struct call *c);
