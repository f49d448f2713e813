/* sd_notify glue: see notify.h.
 *
 * A failing notification is logged and otherwise ignored: systemd's
 * supervision of the service is its own concern, and a daemon that serves
 * its clients must not stop because a datagram could not be sent. Each
 * failure is logged once, not on every watchdog tick.
 */
#include "notify.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "log.h"

struct notify_watchdog {
        uv_timer_t timer;
};

static char last_status[256];

static void notify_send(const char *text) {
        static bool warned;
        int r = sd_notify(0, text);

        if (r < 0 && !warned) {
                log_warning_errno(r, "Failed to notify systemd (NOTIFY_SOCKET): %m");
                warned = true;
        }
}

void notify_ready(const char *status) {
        char text[320];

        if (status) {
                snprintf(last_status, sizeof last_status, "%s", status);
                snprintf(text, sizeof text, "READY=1\nSTATUS=%s", last_status);
        } else
                snprintf(text, sizeof text, "READY=1");
        notify_send(text);
}

void notify_reloading(void) {
        struct timespec ts;
        char text[96];

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(text, sizeof text, "RELOADING=1\nSTATUS=Reloading the configuration\nMONOTONIC_USEC=%llu",
                 (unsigned long long) ts.tv_sec * 1000000ULL + (unsigned long long) ts.tv_nsec / 1000ULL);
        snprintf(last_status, sizeof last_status, "Reloading the configuration");
        notify_send(text);
}

void notify_stopping(void) {
        snprintf(last_status, sizeof last_status, "Shutting down");
        notify_send("STOPPING=1\nSTATUS=Shutting down");
}

void notify_status(const char *fmt, ...) {
        char status[sizeof last_status], text[sizeof last_status + 8];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(status, sizeof status, fmt, ap);
        va_end(ap);
        if (strcmp(status, last_status) == 0)
                return;
        memcpy(last_status, status, sizeof last_status);
        snprintf(text, sizeof text, "STATUS=%s", status);
        notify_send(text);
}

static void on_watchdog(uv_timer_t *t) {
        notify_send("WATCHDOG=1");
}

int notify_watchdog_new(uv_loop_t *loop, struct notify_watchdog **ret) {
        struct notify_watchdog *w;
        uint64_t usec = 0, period_ms;
        int r;

        assert(loop && ret);
        *ret = NULL;
        r = sd_watchdog_enabled(0, &usec);
        if (r < 0)
                return log_error_errno(r, "Invalid watchdog settings (WATCHDOG_USEC, WATCHDOG_PID): %m");
        if (r == 0)
                return 0;

        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        period_ms = usec / 2000;
        if (period_ms == 0)
                period_ms = 1;
        (void) uv_timer_init(loop, &w->timer);
        w->timer.data = w;
        /* The first ping at once: a start that took a while still counts. */
        (void) uv_timer_start(&w->timer, on_watchdog, 0, period_ms);
        /* The watchdog alone does not keep the loop running at shutdown. */
        uv_unref((uv_handle_t *) &w->timer);
        log_info("Watchdog: pinging systemd every %llu ms", (unsigned long long) period_ms);
        *ret = w;
        return 0;
}

static void on_watchdog_closed(uv_handle_t *h) {
        free(h->data);
}

void notify_watchdog_free(struct notify_watchdog *w) {
        if (!w)
                return;
        uv_close((uv_handle_t *) &w->timer, on_watchdog_closed);
}
