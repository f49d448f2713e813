/* The Prometheus scrape endpoint: GET /metrics over HTTP (libmicrohttpd).
 *
 * Off unless daemon.metrics_listen names an address or systemd passes a
 * listening socket named "metrics" (sessiond-metrics.socket,
 * FileDescriptorName=metrics). The HTTP side runs in libmicrohttpd's own
 * threads and never touches the daemon's state: it serves a snapshot of
 * the text that the loop renders (every monitoring.metrics_interval, and on
 * demand when a scrape finds it older than a second). See metrics_http.c.
 *
 * main creates it after the jobs (the snapshot is built from their
 * metrics), tells it about a new configuration on reload, and frees it
 * before the jobs.
 */
#pragma once

struct daemon;
struct metrics_http;

/* The name systemd gives the socket (FileDescriptorName=). */
#define METRICS_HTTP_FD_NAME "metrics"

/* Keeps a listening socket passed by systemd under METRICS_HTTP_FD_NAME
 * until metrics_http_new() takes it (the server reads the passed sockets
 * first). 0, or -EEXIST when one was kept already. */
int metrics_http_adopt_fd(int fd);

/* Starts the listener when one is configured; fails (and logs why) when
 * the address cannot be bound or the passed socket is not a listening TCP
 * socket. */
int metrics_http_new(struct daemon *d, struct metrics_http **ret);
/* Stops the listener (its threads are joined) and closes the handles. NULL is fine. */
void metrics_http_free(struct metrics_http *h);
/* d->config is new: daemon.metrics_listen starts, stops or moves the
 * listener (a socket from systemd stays), monitoring.metrics_interval
 * re-arms the render timer. A bind that fails is logged and the previous
 * listener kept. */
void metrics_http_config_changed(struct metrics_http *h);
