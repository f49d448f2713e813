/* The blocking Varlink client of libsessiond (see client.h).
 *
 * One non-blocking Unix stream socket, driven with poll(2) so that every
 * wait has a deadline: a daemon that hangs makes a call fail with
 * -ETIMEDOUT instead of hanging the script that called sessionctl. The
 * deadline covers the whole operation (sending the call and receiving its
 * reply), not each read, so a daemon that dribbles bytes cannot stretch it.
 *
 * Replies are framed by the same varlink_reader the daemon uses. The client
 * keeps the last reply's JSON alive so that the error name it hands out
 * stays valid until the next call, without a copy.
 *
 * State is strict: one call at a time. After a reply with "continues" the
 * stream must be read to its end with sessiond_client_next() before the
 * next call (-EBUSY otherwise), because Varlink replies carry no call id and
 * only their order ties them to calls.
 *
 * "No daemon" is kept apart from other failures: connect(2) on a missing
 * socket file gives -ENOENT and on a socket nobody listens on
 * -ECONNREFUSED, and both are passed through unchanged so that sessionctl
 * can exit with its own code for them.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "macro.h" /* lib/common: freep */
#include "sessiond/client.h"

#define CLIENT_DEFAULT_TIMEOUT_MS 30000
/* Replies can be large (a listing of every session, a metrics history);
 * the limit only guards against a peer that never ends a message. */
#define CLIENT_MAX_REPLY_SIZE (128u * 1024u * 1024u)
#define CLIENT_READ_SIZE 65536

struct sessiond_client {
        int fd;
        int timeout_ms;
        struct varlink_reader reader;
        json_t *last;   /* root of the last reply (owns the error string) */
        bool streaming; /* a reply with "continues" was read, more follow */
        bool broken;    /* a transport error happened; only free() remains */
};

static int64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline for poll(2); deadline < 0 is forever. */
static int deadline_left(int64_t deadline) {
        int64_t left;

        if (deadline < 0)
                return -1;
        left = deadline - now_ms();
        if (left <= 0)
                return 0;
        return left > 1000000000 ? 1000000000 : (int) left;
}

static int client_wait(struct sessiond_client *c, short events, int64_t deadline) {
        struct pollfd p = {.fd = c->fd, .events = events};

        for (;;) {
                int left = deadline_left(deadline);
                int r;

                if (left == 0 && deadline >= 0)
                        return -ETIMEDOUT;
                r = poll(&p, 1, left);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (r == 0)
                        return -ETIMEDOUT;
                /* POLLHUP/POLLERR: let read/send report what happened. */
                return 0;
        }
}

SESSIOND_EXPORT int sessiond_client_connect(const char *path, int timeout_ms, struct sessiond_client **ret) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        _cleanup_(sessiond_client_freep) struct sessiond_client *c = NULL;
        struct timeval tv;
        int r;

        assert(ret);

        if (!path || !*path) {
                path = getenv("SESSIOND_SOCKET");
                if (!path || !*path)
                        path = SESSIOND_DEFAULT_SOCKET;
        }
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        if (timeout_ms < 0)
                return -EINVAL;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->fd = -1; /* sessiond_client_free() closes it when open */
        c->timeout_ms = timeout_ms > 0 ? timeout_ms : CLIENT_DEFAULT_TIMEOUT_MS;
        r = varlink_reader_init(&c->reader, CLIENT_MAX_REPLY_SIZE);
        if (r < 0)
                return r;

        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return -errno;

        /* A blocking connect(2) on a Unix socket waits only when the
         * listener's backlog is full; SO_SNDTIMEO bounds that wait. */
        tv.tv_sec = c->timeout_ms / 1000;
        tv.tv_usec = (c->timeout_ms % 1000) * 1000;
        if (setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
                return -errno;
        while (connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                if (errno == EINTR)
                        continue;
                return (errno == EAGAIN || errno == EINPROGRESS) ? -ETIMEDOUT : -errno;
        }
        if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0)
                return -errno;

        *ret = TAKE_PTR(c);
        return 0;
}

SESSIOND_EXPORT void sessiond_client_free(struct sessiond_client *c) {
        if (!c)
                return;
        if (c->fd >= 0)
                close(c->fd);
        varlink_reader_free(&c->reader);
        json_decref(c->last);
        free(c);
}

SESSIOND_EXPORT int sessiond_client_fd(const struct sessiond_client *c) {
        assert(c);
        return c->fd;
}

static int client_send_all(struct sessiond_client *c, const char *data, size_t len, int64_t deadline) {
        while (len > 0) {
                ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                int r = client_wait(c, POLLOUT, deadline);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        return errno == EPIPE ? -ECONNRESET : -errno;
                }
                data += n;
                len -= (size_t) n;
        }
        return 0;
}

/* Reads until the reader holds one complete message and parses it. */
static int client_read_reply(struct sessiond_client *c, int64_t deadline, struct varlink_reply *ret) {
        for (;;) {
                const char *msg;
                size_t len, room;
                char *p;
                ssize_t n;
                int r;

                r = varlink_reader_next(&c->reader, &msg, &len);
                if (r < 0)
                        return r; /* -EMSGSIZE: a reply longer than we accept */
                if (r > 0)
                        return varlink_reply_parse(msg, len, ret);

                r = varlink_reader_space(&c->reader, CLIENT_READ_SIZE, &p, &room);
                if (r < 0)
                        return r;
                n = recv(c->fd, p, room, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                r = client_wait(c, POLLIN, deadline);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        return -errno;
                }
                if (n == 0)
                        return -ECONNRESET; /* the daemon closed the connection */
                varlink_reader_commit(&c->reader, (size_t) n);
        }
}

/* Receives one reply and hands it out as client.h describes. */
static int client_receive(struct sessiond_client *c, int64_t deadline, bool more_allowed, json_t **ret_params,
                          const char **ret_error, bool *ret_continues) {
        struct varlink_reply reply;
        int r;

        r = client_read_reply(c, deadline, &reply);
        if (r < 0) {
                c->broken = true;
                return r;
        }
        if (reply.continues && !more_allowed) {
                varlink_reply_clear(&reply);
                c->broken = true;
                return -EBADMSG;
        }

        json_decref(c->last);
        c->last = reply.root; /* keeps reply.error alive */
        c->streaming = reply.continues;

        if (ret_params)
                *ret_params = json_incref(reply.parameters);
        if (ret_error)
                *ret_error = reply.error;
        if (ret_continues)
                *ret_continues = reply.continues;
        return 0;
}

SESSIOND_EXPORT int sessiond_client_call(struct sessiond_client *c, const char *method, json_t *params, unsigned flags,
                                         json_t **ret_params, const char **ret_error, bool *ret_continues) {
        bool oneway = flags & SESSIOND_CALL_ONEWAY, more = flags & SESSIOND_CALL_MORE;
        _cleanup_(freep) char *buf = NULL;
        size_t len;
        int64_t deadline;
        int r;

        assert(c);
        assert(method);

        if (c->broken)
                return -ENOTCONN;
        if (c->streaming)
                return -EBUSY;
        if (flags & ~(SESSIOND_CALL_ONEWAY | SESSIOND_CALL_MORE))
                return -EINVAL;

        r = varlink_encode_call(method, params, oneway, more, &buf, &len);
        if (r < 0)
                return r;

        deadline = now_ms() + c->timeout_ms;
        /* The NUL is part of the message on the wire. */
        r = client_send_all(c, buf, len, deadline);
        if (r < 0) {
                c->broken = true;
                return r;
        }

        if (oneway) {
                if (ret_params)
                        *ret_params = NULL;
                if (ret_error)
                        *ret_error = NULL;
                if (ret_continues)
                        *ret_continues = false;
                return 0;
        }
        return client_receive(c, deadline, more, ret_params, ret_error, ret_continues);
}

SESSIOND_EXPORT int sessiond_client_next(struct sessiond_client *c, int timeout_ms, json_t **ret_params,
                                         const char **ret_error, bool *ret_continues) {
        assert(c);

        if (c->broken)
                return -ENOTCONN;
        if (!c->streaming)
                return -ENOMSG; /* no stream open: nothing more will come */
        return client_receive(c, timeout_ms < 0 ? -1 : now_ms() + timeout_ms, true, ret_params, ret_error,
                              ret_continues);
}
