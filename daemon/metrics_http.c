/* The Prometheus scrape endpoint: see metrics_http.h.
 *
 * Threads. libmicrohttpd (Debian's libmicrohttpd12) runs a listening
 * thread and one thread per connection (MHD_USE_THREAD_PER_CONNECTION with
 * poll(), never select(): the daemon's descriptors go well past
 * FD_SETSIZE). Connections are bounded (METRICS_HTTP_MAX_CONNECTIONS,
 * MHD_OPTION_CONNECTION_LIMIT; more are refused by MHD) and a connection
 * that sends nothing for METRICS_HTTP_TIMEOUT_S is closed. Those threads
 * never read the daemon's state, which belongs to the loop: they only copy
 * the snapshot, a string under a mutex.
 *
 * The snapshot. The loop renders it (metrics_current() through
 * prometheus.c) at start, every monitoring.metrics_interval, and on
 * demand: a scrape that finds it older than METRICS_HTTP_FRESH_MS wakes the
 * loop with a uv_async and waits on a condition variable, at most
 * METRICS_HTTP_WAIT_MS, for the next one. Scrapes that arrive together
 * share one render, and the loop renders at most about once a second
 * however often it is scraped (rendering counts the sessions in memory,
 * which is a scan). A loop too busy to answer in time does not hold the
 * scrape: it gets the previous snapshot, and
 * sessiond_metrics_snapshot_age_seconds, computed as the reply is made,
 * says how old that is (with sessiond_build_info, the two series that only
 * the endpoint has).
 *
 * Requests. GET and HEAD of /metrics (any query string) answer 200 with
 * text/plain; version=0.0.4. Another method on /metrics is 405 with
 * "Allow: GET, HEAD"; any other path is 404. Request bodies are not read.
 *
 * Where it listens. A socket passed by systemd under the name "metrics"
 * (sessiond-metrics.socket) is used as it is, for the life of the process:
 * the service's sandbox (PrivateNetwork=yes, RestrictAddressFamilies=
 * AF_UNIX) lets it accept on a socket made outside, never create one, which
 * keeps the unit's exposure where it was. Otherwise daemon.metrics_listen is
 * bound here (SO_REUSEADDR; an IPv6 address is IPv6 only). A bind that
 * fails at start stops the start. On reload the listener follows the
 * setting: it is started, stopped or moved (the old one is stopped first,
 * so moving between 127.0.0.1:P and 0.0.0.0:P works); when the new address
 * cannot be bound the error is logged and the old address is taken again.
 */
#include "metrics_http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "clock.h"
#include "daemon.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "prometheus.h"

#define METRICS_HTTP_MAX_CONNECTIONS 16
#define METRICS_HTTP_TIMEOUT_S 10
#define METRICS_HTTP_FRESH_MS 1000
#define METRICS_HTTP_WAIT_MS 2000
#define METRICS_HTTP_BACKLOG 64
#define METRICS_HTTP_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics_http {
        struct daemon *d;
        uv_timer_t timer;
        uv_async_t async;
        struct MHD_Daemon *mhd;
        char *listen;          /* the address bound here, NULL when off or from systemd */
        bool from_systemd;     /* serving the socket systemd passed */
        int64_t interval;      /* of the running timer, seconds; 0 stopped */
        unsigned handles_open; /* while closing */

        /* Shared with the HTTP threads, under lock. */
        pthread_mutex_t lock;
        pthread_cond_t rendered;
        char *text;
        size_t len;
        uint64_t rendered_ms; /* CLOCK_MONOTONIC */
        uint64_t generation;
        bool render_asked;
        bool closing;
};

static int adopted_fd = -1;

int metrics_http_adopt_fd(int fd) {
        if (adopted_fd >= 0)
                return -EEXIST;
        adopted_fd = fd;
        return 0;
}

static uint64_t mono_ms(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

/* ---- the snapshot (loop thread) ---------------------------------------------- */

/* Publishes a new text (NULL: keep the old one) and wakes the waiting scrapes. */
static void snapshot_publish(struct metrics_http *h, char *text, size_t len) {
        char *old = NULL;

        pthread_mutex_lock(&h->lock);
        if (text) {
                old = h->text;
                h->text = text;
                h->len = len;
                h->rendered_ms = mono_ms();
        }
        h->generation++;
        h->render_asked = false;
        pthread_cond_broadcast(&h->rendered);
        pthread_mutex_unlock(&h->lock);
        free(old);
}

static void snapshot_render(struct metrics_http *h) {
        struct daemon *d = h->d;
        struct metrics_extra x;
        json_t *list;
        char *text = NULL;
        size_t len = 0;
        int r;

        assert(d->jobs);
        jobs_metrics_extra(d->jobs, &x);
        list = metrics_current(jobs_metrics(d->jobs), clock_now(), &x);
        r = list ? prometheus_render(list, &text, &len) : -ENOMEM;
        json_decref(list);
        if (r < 0)
                log_warning_errno(r, "Failed to render the metrics for /metrics: %m");
        /* A failed render still ends the wait: the scrape gets the old text. */
        snapshot_publish(h, r < 0 ? NULL : text, len);
}

static void on_timer(uv_timer_t *t) {
        snapshot_render(t->data);
}

static void on_async(uv_async_t *a) {
        struct metrics_http *h = a->data;

        if (h->mhd && h->d->jobs)
                snapshot_render(h);
        else
                snapshot_publish(h, NULL, 0);
}

static void timer_update(struct metrics_http *h) {
        int64_t interval = h->mhd ? h->d->config->monitoring.metrics_interval : 0;
        uint64_t ms;

        if (interval == h->interval)
                return;
        h->interval = interval;
        (void) uv_timer_stop(&h->timer);
        if (interval <= 0)
                return;
        ms = (uint64_t) interval * 1000u;
        (void) uv_timer_start(&h->timer, on_timer, ms, ms);
}

/* ---- requests (HTTP threads) ---------------------------------------------------- */

/* A copy of the snapshot with the endpoint's own series after it; asks the
 * loop for a fresh one first when it is stale. NULL on ENOMEM. */
static char *snapshot_copy(struct metrics_http *h, size_t *ret_len) {
        uint64_t now = mono_ms(), generation, deadline_ms;
        struct timespec deadline;
        char *out = NULL;
        size_t len = 0;
        FILE *f;

        pthread_mutex_lock(&h->lock);
        if (!h->closing && (!h->text || now - h->rendered_ms >= METRICS_HTTP_FRESH_MS)) {
                generation = h->generation;
                if (!h->render_asked) {
                        h->render_asked = true;
                        (void) uv_async_send(&h->async);
                }
                deadline_ms = now + METRICS_HTTP_WAIT_MS;
                deadline.tv_sec = (time_t) (deadline_ms / 1000u);
                deadline.tv_nsec = (long) (deadline_ms % 1000u) * 1000000L;
                while (h->generation == generation && !h->closing)
                        if (pthread_cond_timedwait(&h->rendered, &h->lock, &deadline) == ETIMEDOUT)
                                break;
        }
        f = open_memstream(&out, &len);
        if (f) {
                if (h->text)
                        fwrite(h->text, 1, h->len, f);
                fprintf(f,
                        "# HELP sessiond_metrics_snapshot_age_seconds How old the rendered metrics of this scrape "
                        "are.\n"
                        "# TYPE sessiond_metrics_snapshot_age_seconds gauge\n"
                        "sessiond_metrics_snapshot_age_seconds %.3f\n"
                        "# HELP sessiond_build_info The version of the daemon.\n"
                        "# TYPE sessiond_build_info gauge\n"
                        "sessiond_build_info{version=\"%s\"} 1\n",
                        h->text ? (double) (mono_ms() - h->rendered_ms) / 1e3 : 0.0, SESSIOND_VERSION);
        }
        pthread_mutex_unlock(&h->lock);
        if (!f || fclose(f) != 0) {
                free(out);
                return NULL;
        }
        *ret_len = len;
        return out;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type, const char *body,
                             size_t len, const char *allow) {
        struct MHD_Response *resp;
        enum MHD_Result r;

        resp = MHD_create_response_from_buffer(len, (void *) body, MHD_RESPMEM_MUST_COPY);
        if (!resp)
                return MHD_NO;
        (void) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
        if (allow)
                (void) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
        r = MHD_queue_response(conn, status, resp);
        MHD_destroy_response(resp);
        return r;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *text, const char *allow) {
        return reply(conn, status, "text/plain; charset=utf-8", text, strlen(text), allow);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
        struct metrics_http *h = cls;
        enum MHD_Result r;
        size_t len = 0;
        char *body;

        (void) version;
        (void) upload_data;
        (void) upload_data_size;
        (void) con_cls;
        if (strcmp(url, "/metrics") != 0)
                return reply_text(conn, MHD_HTTP_NOT_FOUND, "Not found: sessiond serves GET /metrics only.\n", NULL);
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
                return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "Method not allowed: GET or HEAD.\n", "GET, HEAD");
        body = snapshot_copy(h, &len);
        if (!body)
                return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "Out of memory.\n", NULL);
        r = reply(conn, MHD_HTTP_OK, METRICS_HTTP_CONTENT_TYPE, body, len, NULL);
        free(body);
        return r;
}

/* ---- the listener (loop thread) ---------------------------------------------------- */

static int listener_start_fd(struct metrics_http *h, int fd) {
        h->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD, 0, NULL, NULL,
                                  on_request, h, MHD_OPTION_LISTEN_SOCKET, (MHD_socket) fd, MHD_OPTION_CONNECTION_LIMIT,
                                  (unsigned) METRICS_HTTP_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
                                  (unsigned) METRICS_HTTP_TIMEOUT_S, MHD_OPTION_END);
        return h->mhd ? 0 : -EIO;
}

/* A listening socket on address; the fd or a negative errno. */
static int listen_socket(const char *address) {
        struct sockaddr_storage ss;
        size_t len = 0;
        int fd, one = 1, r;

        r = sessiond_listen_address_parse(address, (struct sockaddr *) &ss, sizeof ss, &len);
        if (r < 0)
                return r;
        fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
            bind(fd, (struct sockaddr *) &ss, (socklen_t) len) < 0 || listen(fd, METRICS_HTTP_BACKLOG) < 0) {
                r = -errno;
                (void) close(fd);
                return r;
        }
        return fd;
}

static int listener_start_address(struct metrics_http *h, const char *address) {
        int fd = listen_socket(address), r;

        if (fd < 0) {
                bool sandboxed = fd == -EAFNOSUPPORT || fd == -EPERM || fd == -EACCES;

                return log_error_errno(fd, "Failed to listen on daemon.metrics_listen=%s: %m%s", address,
                                       sandboxed ? " (under systemd the service may not open IP sockets: "
                                                   "enable sessiond-metrics.socket instead, see sessiond(8))"
                                                 : "");
        }
        r = listener_start_fd(h, fd);
        if (r < 0) /* fd not closed: whether MHD already did is not said */
                return log_error_errno(r, "Failed to start the HTTP server on %s", address);
        h->listen = strdup(address);
        if (!h->listen) {
                MHD_stop_daemon(h->mhd);
                h->mhd = NULL;
                return log_error_errno(-ENOMEM, "Failed to start the HTTP server on %s: %m", address);
        }
        log_info("Serving metrics on http://%s/metrics", address);
        return 0;
}

static void listener_stop(struct metrics_http *h) {
        if (!h->mhd)
                return;
        /* Scrapes waiting for a render give up now; MHD joins their threads. */
        pthread_mutex_lock(&h->lock);
        h->closing = true;
        pthread_cond_broadcast(&h->rendered);
        pthread_mutex_unlock(&h->lock);
        MHD_stop_daemon(h->mhd); /* closes the listening socket too */
        h->mhd = NULL;
        pthread_mutex_lock(&h->lock);
        h->closing = false;
        pthread_mutex_unlock(&h->lock);
        free(h->listen);
        h->listen = NULL;
}

/* "127.0.0.1:9567" of a socket, for messages. */
static void socket_address(int fd, char *buf, size_t size) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        char host[INET6_ADDRSTRLEN] = "?";

        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0) {
                snprintf(buf, size, "?");
                return;
        }
        if (ss.ss_family == AF_INET6) {
                const struct sockaddr_in6 *sa = (const struct sockaddr_in6 *) &ss;

                (void) inet_ntop(AF_INET6, &sa->sin6_addr, host, sizeof host);
                snprintf(buf, size, "[%s]:%u", host, ntohs(sa->sin6_port));
        } else {
                const struct sockaddr_in *sa = (const struct sockaddr_in *) &ss;

                (void) inet_ntop(AF_INET, &sa->sin_addr, host, sizeof host);
                snprintf(buf, size, "%s:%u", host, ntohs(sa->sin_port));
        }
}

static int listener_start_systemd(struct metrics_http *h, int fd) {
        char where[INET6_ADDRSTRLEN + 16];
        const char *want = h->d->config->daemon.metrics_listen;
        int r;

        if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) <= 0) {
                log_error("The socket systemd passed as \"%s\" is not a listening TCP socket", METRICS_HTTP_FD_NAME);
                (void) close(fd);
                return -EINVAL;
        }
        socket_address(fd, where, sizeof where);
        r = listener_start_fd(h, fd);
        if (r < 0) /* see listener_start_address() */
                return log_error_errno(r, "Failed to start the HTTP server on the socket from systemd (%s)", where);
        h->from_systemd = true;
        log_info("Serving metrics on http://%s/metrics (socket from systemd)", where);
        if (want && *want && strcmp(want, where) != 0)
                log_warning("daemon.metrics_listen=%s is not the address of the socket systemd passed (%s): "
                            "serving on the latter",
                            want, where);
        return 0;
}

/* ---- lifetime ------------------------------------------------------------------------ */

int metrics_http_new(struct daemon *d, struct metrics_http **ret) {
        struct metrics_http *h;
        pthread_condattr_t attr;
        const char *address = d->config->daemon.metrics_listen;
        int r = 0;

        h = calloc(1, sizeof *h);
        if (!h)
                return -ENOMEM;
        h->d = d;
        (void) pthread_condattr_init(&attr);
        (void) pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        (void) pthread_mutex_init(&h->lock, NULL);
        (void) pthread_cond_init(&h->rendered, &attr);
        (void) pthread_condattr_destroy(&attr);
        (void) uv_timer_init(d->loop, &h->timer);
        (void) uv_async_init(d->loop, &h->async, on_async);
        h->timer.data = h->async.data = h;
        /* Neither keeps the loop alive: the server does. */
        uv_unref((uv_handle_t *) &h->timer);
        uv_unref((uv_handle_t *) &h->async);

        if (adopted_fd >= 0) {
                r = listener_start_systemd(h, adopted_fd);
                adopted_fd = -1;
        } else if (address && *address)
                r = listener_start_address(h, address);
        if (r < 0) {
                metrics_http_free(h);
                return r;
        }
        if (h->mhd)
                snapshot_render(h);
        timer_update(h);
        *ret = h;
        return 0;
}

static void on_closed(uv_handle_t *handle) {
        struct metrics_http *h = handle->data;

        if (--h->handles_open > 0)
                return;
        pthread_cond_destroy(&h->rendered);
        pthread_mutex_destroy(&h->lock);
        free(h->text);
        free(h);
}

void metrics_http_free(struct metrics_http *h) {
        if (!h)
                return;
        listener_stop(h);
        /* No HTTP thread is left; h goes once the loop has closed both handles. */
        h->handles_open = 2;
        uv_close((uv_handle_t *) &h->timer, on_closed);
        uv_close((uv_handle_t *) &h->async, on_closed);
}

void metrics_http_config_changed(struct metrics_http *h) {
        const char *want = h->d->config->daemon.metrics_listen;
        char *previous;

        if (!want)
                want = "";
        if (h->from_systemd) {
                if (*want)
                        log_notice("daemon.metrics_listen is ignored while systemd passes the metrics socket");
        } else if (strcmp(want, h->listen ? h->listen : "") != 0) {
                previous = h->listen ? strdup(h->listen) : NULL;
                listener_stop(h);
                if (!*want)
                        log_info("Stopped serving metrics (daemon.metrics_listen is empty)");
                else if (listener_start_address(h, want) < 0 && previous) {
                        log_warning("Keeping the metrics endpoint on %s", previous);
                        (void) listener_start_address(h, previous);
                }
                free(previous);
                if (h->mhd)
                        snapshot_render(h);
        }
        timer_update(h);
}
