/* systemd service notifications (sd_notify) and the watchdog.
 *
 * Type=notify needs the daemon to say when it is ready, reloading and
 * stopping, and lets it publish a one-line STATUS= for `systemctl status`.
 * When WatchdogSec= is set, systemd kills a service that stops pinging; the
 * ping is a timer on the daemon's own event loop, so a loop that hangs stops
 * pinging and is restarted, which is the point. Without NOTIFY_SOCKET every
 * function here does nothing, so the daemon runs the same from a shell.
 */
#pragma once

#include <stdbool.h>
#include <uv.h>

/* READY=1 with a STATUS= line (status may be NULL). */
void notify_ready(const char *status);
/* RELOADING=1 with MONOTONIC_USEC=now, as systemd's reload protocol asks. */
void notify_reloading(void);
/* STOPPING=1. */
void notify_stopping(void);
/* STATUS=... (a printf format). Sent only when it differs from the last one. */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

struct notify_watchdog;

/* Starts pinging WATCHDOG=1 at half of WATCHDOG_USEC when systemd asked for
 * it (sd_watchdog_enabled); *ret is NULL when it did not. */
int notify_watchdog_new(uv_loop_t *loop, struct notify_watchdog **ret);
/* Stops and frees (in the handle's close callback). NULL is fine. */
void notify_watchdog_free(struct notify_watchdog *w);
