/* What the background jobs watch of the loop (jobs-internal.h: the other
 * files): the cleanup trigger's poll, the loop-lag probe, the loop-turn
 * watch and the request timing hook of the server.
 *
 * The trigger. Counting the sessions that await cleanup is a scan of
 * memory (no SQL), and the poll spaces itself so that the scan takes at
 * most 1% of the loop's time: every second, or every 100 scan durations on
 * a very large store. The scan itself goes in steps of TRIGGER_STEP_NS
 * (a millisecond, a rest of one between two): over 400,000 sessions in one
 * piece it held the loop for several milliseconds every second.
 */
#include "jobs-internal.h"

#include <stdio.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#include "engine.h"
#include "log.h"
#include "server.h"

#define TRIGGER_POLL_MAX_MS 60000
#define TRIGGER_STEP_NS (1000 * 1000) /* loop time of one step of the count */
#define TRIGGER_STEP_REST_MS 1        /* between two steps */
#define TRIGGER_POLL_COST_FACTOR 100  /* poll interval >= 100 x scan time */
#define LAG_PROBE_MS 250
#define TURN_LOG_NS (10 * 1000 * 1000) /* a loop turn this long is logged with what ran in it */

/* ---- request timing (server hook) ------------------------------------------------ */

static void timing(const char *method, uint64_t nsec, void *userdata) {
        struct jobs *j = userdata;

        if (method)
                metrics_request_done(j->metrics, method, nsec);
        else
                metrics_commit_done(j->metrics, nsec);
}

/* ---- the trigger and the loop-lag probe -------------------------------------------------- */

void jobs_trigger_cb(uv_timer_t *t) {
        struct jobs *j = t->data;
        const struct sessiond_config *c = cfg(j);
        uint64_t t0 = uv_hrtime(), took, scan_ns, next;
        int64_t now = now_s();
        char msg[ALERTS_MESSAGE_MAX];
        bool done;

        done = engine_count_awaiting_cleanup_step(j->d->engine, clock_now_ms(), t0 + TRIGGER_STEP_NS, &j->poll_cursor,
                                                  &j->poll_count);
        took = uv_hrtime() - t0;
        j->poll_ns += took;
        j->turn_poll_ns += took;
        if (!done) {
                uv_timer_start(t, jobs_trigger_cb, TRIGGER_STEP_REST_MS, 0); /* the count goes on */
                return;
        }
        j->awaiting = j->poll_count;
        j->awaiting_at = now;
        scan_ns = j->poll_ns;
        j->poll_count = 0;
        j->poll_ns = 0;
        j->poll_scan_ms = (double) scan_ns / 1e6;

        snprintf(msg, sizeof msg, "%llu sessions await cleanup (cleanup.max_expired_threshold %lld)%s",
                 (unsigned long long) j->awaiting, (long long) c->cleanup.max_expired_threshold,
                 c->features.background_cleanup ? "" : "; background cleanup is off");
        jobs_alert_set(j, "cleanup_backlog", (int64_t) j->awaiting > c->cleanup.max_expired_threshold,
                       (double) j->awaiting, (double) c->cleanup.max_expired_threshold, msg, now);

        if (c->features.background_cleanup && (int64_t) j->awaiting >= c->cleanup.trigger_threshold &&
            !jobs_kind_busy(j, METRICS_CLEANUP_REGULAR) && !jobs_kind_busy(j, METRICS_CLEANUP_BATCH) &&
            !j->d->stopping) {
                log_info("%llu sessions await cleanup (cleanup.trigger_threshold %lld): starting a regular cleanup now",
                         (unsigned long long) j->awaiting, (long long) c->cleanup.trigger_threshold);
                if (jobs_run_queue(j, METRICS_CLEANUP_REGULAR, "trigger"))
                        metrics_counters(j->metrics)->cleanup_triggered++;
        }

        next = scan_ns / 1000000 * TRIGGER_POLL_COST_FACTOR;
        if (next < TRIGGER_POLL_MIN_MS)
                next = TRIGGER_POLL_MIN_MS;
        if (next > TRIGGER_POLL_MAX_MS)
                next = TRIGGER_POLL_MAX_MS;
        j->poll_ms = next;
        uv_timer_start(t, jobs_trigger_cb, next, 0);
}

static void lag_cb(uv_timer_t *t) {
        struct jobs *j = t->data;
        uint64_t now = uv_hrtime();

        if (j->lag_expected_ns && now > j->lag_expected_ns)
                metrics_loop_lag(j->metrics, now - j->lag_expected_ns);
        else if (j->lag_expected_ns)
                metrics_loop_lag(j->metrics, 0);
        j->lag_expected_ns = now + (uint64_t) LAG_PROBE_MS * 1000000;
}

/* The loop-turn watch (monitoring.performance_monitoring). A prepare
 * handle runs once a turn, just before the loop polls: the time since the
 * last one, less what the loop spent waiting in that poll
 * (uv_metrics_idle_time), is the turn's work. A turn of TURN_LOG_NS or
 * more is logged with its time on the thread's CPU, the context switches
 * in it (involuntary: the thread was preempted; voluntary: it blocked), the
 * calls the server dispatched (and the longest handler), the replies'
 * writing, the cleanup step and the trigger's count: a long turn whose CPU time is short was
 * not the daemon's work but the machine's (other processes on the cores),
 * or a wait in a system call. Costs a clock read and a getrusage() a turn. */
static uint64_t thread_cpu_ns(void) {
        struct timespec ts;

        if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0)
                return 0;
        return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

static void turn_cb(uv_prepare_t *h) {
        struct jobs *j = h->data;
        uint64_t now = uv_hrtime(), idle = uv_metrics_idle_time(j->d->loop), cpu = thread_cpu_ns();
        struct server_turn st = {};
        struct rusage ru = {};

        (void) getrusage(RUSAGE_THREAD, &ru);
        if (j->d->server)
                server_turn_take(j->d->server, &st);
        if (j->turn_at_ns != 0 && now - j->turn_at_ns >= TURN_LOG_NS + (idle - j->turn_idle_ns)) {
                uint64_t busy = now - j->turn_at_ns - (idle - j->turn_idle_ns);
                char calls[120] = "no call";

                if (st.calls > 0)
                        snprintf(calls, sizeof calls, "%u call%s, the longest %s in %.1f ms", st.calls,
                                 st.calls == 1 ? "" : "s", st.longest_method, (double) st.longest_call_ns / 1e6);
                log_info("Loop turn of %.1f ms, %.1f ms of it on the CPU (%ld involuntary, %ld voluntary context "
                         "switches): %s; replies written in %.1f ms; cleanup step %.1f ms; trigger count %.1f ms; "
                         "malloc_trim %.1f ms",
                         (double) busy / 1e6, (double) (cpu - j->turn_cpu_ns) / 1e6, ru.ru_nivcsw - j->turn_nivcsw,
                         ru.ru_nvcsw - j->turn_nvcsw, calls, (double) st.flush_ns / 1e6, (double) j->turn_step_ns / 1e6,
                         (double) j->turn_poll_ns / 1e6, (double) st.trim_ns / 1e6);
        }
        j->turn_at_ns = uv_hrtime();
        j->turn_idle_ns = idle;
        j->turn_cpu_ns = cpu;
        j->turn_nivcsw = ru.ru_nivcsw;
        j->turn_nvcsw = ru.ru_nvcsw;
        j->turn_step_ns = 0;
        j->turn_poll_ns = 0;
}

static void turn_arm(struct jobs *j, bool on) {
        if (!j->turn_on || on == uv_is_active((uv_handle_t *) &j->turn))
                return;
        if (on) {
                j->turn_at_ns = 0;
                uv_prepare_start(&j->turn, turn_cb);
        } else
                uv_prepare_stop(&j->turn);
}

void jobs_lag_arm(struct jobs *j) {
        bool on = cfg(j)->monitoring.performance_monitoring;

        turn_arm(j, on);

        if (on && !uv_is_active((uv_handle_t *) &j->lag)) {
                j->lag_expected_ns = uv_hrtime() + (uint64_t) LAG_PROBE_MS * 1000000;
                uv_timer_start(&j->lag, lag_cb, LAG_PROBE_MS, LAG_PROBE_MS);
        } else if (!on && uv_is_active((uv_handle_t *) &j->lag)) {
                uv_timer_stop(&j->lag);
                j->lag_expected_ns = 0;
        }
        if (j->d->server)
                server_set_timing(j->d->server, on ? timing : NULL, on ? j : NULL);
}

/* Opens the watch's handle (closed by jobs_turn_close()). It needs the
 * loop's idle time, which libuv only measures when told so before the
 * loop runs: without it there is no watch. */
void jobs_turn_open(struct jobs *j) {
        if (uv_loop_configure(j->d->loop, UV_METRICS_IDLE_TIME) < 0 || uv_prepare_init(j->d->loop, &j->turn) < 0)
                return;
        j->turn.data = j;
        uv_unref((uv_handle_t *) &j->turn);
        j->open_handles++;
        j->turn_on = true;
}

void jobs_turn_close(struct jobs *j) {
        if (j->turn_on && !uv_is_closing((uv_handle_t *) &j->turn)) {
                uv_prepare_stop(&j->turn);
                uv_close((uv_handle_t *) &j->turn, jobs_handle_closed);
        }
}
