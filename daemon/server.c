/* The Varlink server: the listening socket, accepting connections, the
 * server's lifecycle (server-internal.h: the other files, server_conn.c for
 * a connection's input and output, server_call.c for calls).
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
 * Ownership. The server owns its handles (listener, sweep timer, wake idle)
 * and every connection; a connection is freed only in its libuv close
 * callback, after libuv is done with it. A call belongs to the server until
 * its final reply; when its connection goes away first, its cancel callback
 * runs and the server frees it (a call without one is detached, and freed
 * when the handler replies).
 */
#include "server-internal.h"

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
#include "log.h"
#include "macro.h"
#include "metrics_http.h"

static void server_maybe_closed(struct server *s);
static void server_apply_admin_group(struct server *s);

static void fd_closep(int *fd) {
        if (*fd >= 0)
                (void) close(*fd);
}

static void server_apply_limits(struct server *s) {
        const struct sessiond_config *cfg = s->d->config;
        size_t cap;

        assert(cfg->daemon.max_connections > 0 && cfg->daemon.max_message_size > 0);
        s->max_message_size = (size_t) cfg->daemon.max_message_size;
        s->max_connections = cfg->daemon.max_connections > UINT_MAX ? UINT_MAX : (unsigned) cfg->daemon.max_connections;
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

void server_handle_gone(struct server *s) {
        assert(s->open_handles > 0);
        s->open_handles--;
        server_maybe_closed(s);
}

static void server_on_handle_closed(uv_handle_t *h) {
        server_handle_gone(h->data);
}

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
        log_warning("Refused %llu connection(s) (last from pid %d uid %u): %s", s->rejected_unlogged, (int) cred->pid,
                    (unsigned) cred->uid, why);
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
                uint64_t t0 = uv_hrtime();

                s->freed_untrimmed = 0;
                (void) malloc_trim(0);
                s->turn.trim_ns += uv_hrtime() - t0;
        }
}

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
                        log_error(
                                "systemd passed an unexpected socket (fd %d, name \"%s\"): sessiond takes "
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
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        socklen_t sa_len;
        struct stat st;
        mode_t old_umask;
        _cleanup_(fd_closep) int fd = -1;
        int r;

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
                return r;

        if (listen(fd, SOMAXCONN) < 0) {
                r = log_error_errno(-errno, "Failed to listen on %s: %m", path);
                (void) unlink(path);
                return r;
        }
        if (stat(path, &st) < 0)
                return log_error_errno(-errno, "Failed to stat %s: %m", path);
        s->bound_dev = st.st_dev;
        s->bound_ino = st.st_ino;
        s->bound_path = strdup(path);
        if (!s->bound_path) {
                (void) unlink(path);
                return -ENOMEM;
        }
        *ret_fd = fd;
        fd = -1; /* the caller's now */
        return 0;
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

/* Undoes what server_new() did before it failed (_cleanup_ of its server). */
static void server_new_failedp(struct server **sp) {
        struct server *s = *sp;

        if (!s)
                return;
        server_unlink_socket(s);
        if (s->listener_open) {
                /* The server is freed by the listener's close callback. */
                s->listener_open = false;
                s->closing = true;
                s->free_on_close = true;
                uv_close((uv_handle_t *) &s->listener, server_on_handle_closed);
                return;
        }
        free(s);
}

int server_new(struct daemon *d, struct server **ret) {
        _cleanup_(server_new_failedp) struct server *s = NULL;
        _cleanup_(fd_closep) int fd = -1; /* closed before s is undone */
        int r;

        assert(d && d->loop && d->config && ret);

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->d = d;
        server_apply_limits(s);
        server_apply_admin_group(s);

        r = server_listen_fd_from_systemd(&fd);
        if (r < 0)
                return r;
        if (r > 0)
                s->activated = true;
        else {
                r = server_bind(s, d->config->daemon.socket_path, &fd);
                if (r < 0)
                        return r;
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
                return -EIO;
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
        s = NULL;
        return 0;
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
                if (c->current && c->current->cancel && !c->current->answers_soon)
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

void server_get_stats(const struct server *s, struct server_stats *ret) {
        assert(s && ret);
        *ret = s->stats;
        ret->connections = s->n_conns;
        ret->output_bytes = s->output_total;
        ret->output_budget = s->output_budget;
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
                log_warning_errno(r,
                                  "Failed to look up daemon.admin_group %s: %m; only root may call "
                                  "io.sessiond.Admin",
                                  name);
        for (struct conn *c = s->conns; c; c = next) {
                bool admin = peer_is_admin(&c->peer, &s->admin_group);

                next = c->all_next;
                if (admin == c->admin)
                        continue;
                c->admin = admin;
                log_info("Connection %llu (pid %d uid %u) %s administrator rights (daemon.admin_group %s)", c->id,
                         (int) c->peer.ucred.pid, (unsigned) c->peer.ucred.uid, admin ? "gained" : "lost",
                         name && *name ? name : "unset");
                if (!admin && c->current && c->current->vc.more && call_method_is_admin(c->current))
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
