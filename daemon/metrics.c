/* Metrics: see metrics.h.
 *
 * The list of metrics is written out in one function (metrics_current) from
 * a table-like sequence of add() calls: the names, types and help texts are
 * the interface operators build dashboards on, so they are kept in one
 * place and never computed. Counters come from their owners (engine,
 * server, jobs) and only ever grow; gauges are read at the moment of the
 * call.
 */
#include "metrics.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "analytics.h"
#include "clock.h"
#include "daemon.h"
#include "log.h"
#include "ring.h"
#include "server.h"
#include "store.h"

enum {
        W_CREATED,
        W_VALIDATIONS,
        W_FAILURES,
        W_SUSPICIOUS,
        W_ENDED,
        W_ENDED_SECONDS,
};

struct metrics {
        struct daemon *d;
        struct metrics_counters counters;
        struct ring history;
        struct rate_window window;
        struct reservoir requests, commits;
        uint64_t requests_ns_sum, commits_ns_sum;
        uint64_t ended;         /* sessions ended, not by rotation */
        uint64_t ended_seconds; /* their summed durations */
        double lag_last_ms;
        double lag_sample_ms; /* max since the last sample */
        double lag_health_ms; /* max since the last health check */
        bool lag_measured;
        double *scratch; /* METRICS_RESERVOIR doubles for quantiles */
};

static const char *const cleanup_kind_names[_METRICS_CLEANUP_MAX] = {"regular", "batch", "deep"};

const char *metrics_cleanup_kind_to_string(enum metrics_cleanup_kind k) {
        return (unsigned) k < _METRICS_CLEANUP_MAX ? cleanup_kind_names[k] : "regular";
}

static size_t history_size(const struct daemon *d) {
        return (size_t) d->config->monitoring.metrics_buffer_size;
}

static void window_counters(struct metrics *m, uint64_t v[RATE_WINDOW_COUNTERS]) {
        const struct engine_counters *ec = engine_get_counters(m->d->engine);
        uint64_t failures = 0;

        for (int f = 0; f < _ENGINE_FAIL_MAX; f++)
                failures += ec->validate_failed[f];
        memset(v, 0, RATE_WINDOW_COUNTERS * sizeof *v);
        v[W_CREATED] = ec->created;
        v[W_VALIDATIONS] = ec->validated + failures;
        v[W_FAILURES] = failures;
        v[W_SUSPICIOUS] = ec->suspicious;
        v[W_ENDED] = m->ended;
        v[W_ENDED_SECONDS] = m->ended_seconds;
}

void metrics_window_restart(struct metrics *m) {
        uint64_t v[RATE_WINDOW_COUNTERS];

        rate_window_init(&m->window, METRICS_RATE_WINDOW_MS);
        window_counters(m, v);
        rate_window_add(&m->window, (int64_t) uv_now(m->d->loop), v);
}

int metrics_new(struct daemon *d, struct metrics **ret) {
        struct metrics *m = calloc(1, sizeof *m);
        int r;

        if (!m)
                return -ENOMEM;
        m->d = d;
        metrics_window_restart(m);
        m->scratch = calloc(METRICS_RESERVOIR, sizeof *m->scratch);
        r = m->scratch ? ring_init(&m->history, history_size(d), ring_json_free) : -ENOMEM;
        if (r < 0 && m->scratch)
                log_error_errno(r, "Failed to allocate the metrics history (monitoring.metrics_buffer_size=%zu): %m",
                                history_size(d));
        if (r < 0 || (r = reservoir_init(&m->requests, METRICS_RESERVOIR)) < 0 ||
            (r = reservoir_init(&m->commits, METRICS_RESERVOIR)) < 0) {
                metrics_free(m);
                return -ENOMEM;
        }
        *ret = m;
        return 0;
}

void metrics_free(struct metrics *m) {
        if (!m)
                return;
        ring_done(&m->history);
        reservoir_done(&m->requests);
        reservoir_done(&m->commits);
        free(m->scratch);
        free(m);
}

int metrics_config_changed(struct metrics *m) {
        return ring_resize(&m->history, history_size(m->d));
}

int metrics_config_reserve(struct metrics *m, const struct sessiond_config *c) {
        assert(c->monitoring.metrics_buffer_size > 0);
        return ring_reserve(&m->history, (size_t) c->monitoring.metrics_buffer_size);
}

void metrics_config_unreserve(struct metrics *m) {
        ring_unreserve(&m->history);
}

struct metrics_counters *metrics_counters(struct metrics *m) {
        return &m->counters;
}

void metrics_observe(struct metrics *m, const struct engine_event *ev) {
        json_t *reason, *duration;

        if (strcmp(ev->kind, "ended") != 0)
                return;
        reason = json_object_get(ev->detail, "reason");
        duration = json_object_get(ev->detail, "duration");
        /* A rotated token is not the end of the session: it goes on under
         * the new token, which keeps created_at. */
        if (json_is_string(reason) && strcmp(json_string_value(reason), "rotated") == 0)
                return;
        m->ended++;
        if (json_is_integer(duration) && json_integer_value(duration) > 0)
                m->ended_seconds += (uint64_t) json_integer_value(duration);
}

static uint32_t to_us(uint64_t nsec) {
        uint64_t us = nsec / 1000;
        return us > UINT32_MAX ? UINT32_MAX : (uint32_t) us;
}

void metrics_request_done(struct metrics *m, const char *method, uint64_t nsec) {
        (void) method;
        reservoir_add(&m->requests, to_us(nsec));
        m->requests_ns_sum += nsec;
}

void metrics_commit_done(struct metrics *m, uint64_t nsec) {
        reservoir_add(&m->commits, to_us(nsec));
        m->commits_ns_sum += nsec;
}

void metrics_loop_lag(struct metrics *m, uint64_t lag_ns) {
        double ms = (double) lag_ns / 1e6;

        m->lag_measured = true;
        m->lag_last_ms = ms;
        if (ms > m->lag_sample_ms)
                m->lag_sample_ms = ms;
        if (ms > m->lag_health_ms)
                m->lag_health_ms = ms;
}

double metrics_take_health_lag(struct metrics *m, bool *measured, bool reset) {
        double v = m->lag_health_ms;

        *measured = m->lag_measured && m->d->config->monitoring.performance_monitoring;
        if (reset)
                m->lag_health_ms = 0;
        return v;
}

double metrics_commit_p99_ms(struct metrics *m) {
        size_t n = reservoir_sorted(&m->commits, m->scratch);

        return n ? analytics_percentile(m->scratch, n, 99) / 1e3 : NAN;
}

/* ---- current values ------------------------------------------------------------ */

struct builder {
        json_t *list;
        int error;
};

/* Appends {name, help, type, value, labels}; labels: NULL or "key", "value"
 * pairs ending with NULL. */
static void add(struct builder *b, const char *name, const char *type, const char *help, json_t *value, ...) {
        json_t *m, *labels = NULL;
        const char *key;
        va_list ap;

        if (b->error || !value) {
                json_decref(value);
                b->error = -ENOMEM;
                return;
        }
        va_start(ap, value);
        while ((key = va_arg(ap, const char *))) {
                const char *v = va_arg(ap, const char *);

                if (!labels)
                        labels = json_object();
                if (labels)
                        json_object_set_new(labels, key, json_string(v));
        }
        va_end(ap);
        m = json_pack("{s:s, s:s, s:s, s:o}", "name", name, "help", help, "type", type, "value", value);
        if (m && labels)
                json_object_set_new(m, "labels", labels);
        else
                json_decref(labels);
        if (!m || json_array_append_new(b->list, m) < 0)
                b->error = -ENOMEM;
}

static json_t *u64(uint64_t v) {
        return json_integer((json_int_t) (v > INT64_MAX ? INT64_MAX : v));
}

/* A counter of reads by where they ran: the store's writer after a
 * commit, or the event loop (the fleet's reads, DESIGN 8). */
static void add_where(struct builder *b, const char *name, const char *help, uint64_t after_commit, uint64_t loop) {
        add(b, name, "counter", help, u64(after_commit), "where", "after_commit", NULL);
        add(b, name, "counter", help, u64(loop), "where", "loop", NULL);
}

static json_t *real(double v) {
        return isnan(v) || isinf(v) ? json_real(0) : json_real(v);
}

static const char *const quantile_labels[] = {"0.5", "0.9", "0.99"};
static const double quantile_values[] = {50, 90, 99};

/* Quantile gauges of a reservoir of microseconds, in seconds. */
static void add_quantiles(struct metrics *m, struct builder *b, const struct reservoir *r, const char *name,
                          const char *help) {
        size_t n = reservoir_sorted(r, m->scratch);

        for (size_t i = 0; i < 3; i++)
                add(b, name, "gauge", help, real(n ? analytics_percentile(m->scratch, n, quantile_values[i]) / 1e6 : 0),
                    "quantile", quantile_labels[i], NULL);
}

static int64_t db_size(struct daemon *d) {
        struct store *s = engine_store(d->engine);

        return s ? store_size(s) : 0;
}

/* The thresholds of the daemon's own alerts, in the unit of each alert, so
 * that Prometheus rules (conf/prometheus/sessiond.rules.yml) compare with
 * the configured values instead of copies of the defaults. */
static void add_thresholds(struct builder *b, const struct sessiond_config *c) {
        static const char help[] = "Threshold of the daemon's alert: per minute (creation_rate, suspicious_rate), "
                                   "percent (failure_rate), seconds (avg_duration), sessions (concurrent_sessions, "
                                   "cleanup_backlog), events per user and hour (suspicious_users).";
        const struct {
                const char *alert;
                double value;
        } t[] = {
                {"creation_rate", c->monitoring.alerts.creation_rate},
                {"failure_rate", c->monitoring.alerts.failure_rate},
                {"avg_duration", c->monitoring.alerts.avg_duration},
                {"concurrent_sessions", c->monitoring.alerts.concurrent_sessions},
                {"suspicious_rate", c->monitoring.alerts.suspicious_rate},
                {"cleanup_backlog", (double) c->cleanup.max_expired_threshold},
                {"suspicious_users", (double) c->security.suspicious_activity_threshold},
        };

        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
                add(b, "alert_threshold", "gauge", help, real(t[i].value), "alert", t[i].alert, NULL);
}

json_t *metrics_current(struct metrics *m, int64_t now, const struct metrics_extra *x) {
        static const char *const fail_names[_ENGINE_FAIL_MAX] = {"not_found", "expired", "fingerprint", "invalid"};
        struct daemon *d = m->d;
        const struct engine_counters *ec = engine_get_counters(d->engine);
        const struct metrics_counters *mc = &m->counters;
        bool perf = d->config->monitoring.performance_monitoring;
        struct server_stats st = {0};
        struct engine_counts counts;
        struct builder b = {json_array(), 0};

        if (!b.list)
                return NULL;
        if (d->server)
                server_get_stats(d->server, &st);
        engine_count(d->engine, clock_now_ms(), &counts);

        /* sessions */
        add(&b, "sessions_active", "gauge", "Live sessions (active or in their expiration grace).",
            u64(counts.active + counts.grace), NULL);
        add(&b, "sessions_grace", "gauge", "Sessions past their end, within timeout.expiration_grace.",
            u64(counts.grace), NULL);
        add(&b, "sessions_awaiting_cleanup", "gauge",
            "Sessions past their end + timeout.cleanup_grace that cleanup has not ended yet.",
            u64(counts.awaiting_cleanup), NULL);
        add(&b, "sessions_in_memory", "gauge", "Sessions held in memory (live and expired, not yet ended).",
            u64(counts.sessions), NULL);
        add(&b, "sessions_max", "gauge", "daemon.max_sessions: sessions held at once before Create is refused.",
            json_integer(d->config->daemon.max_sessions), NULL);
        add(&b, "sessions_refused_total", "counter", "Creates refused, by reason.",
            u64(ec->create_refused_max_sessions), "reason", "max_sessions", NULL);
        add(&b, "users", "gauge", "Users with sessions in memory.", u64(counts.users), NULL);
        add(&b, "sessions_created_total", "counter", "Sessions created.", u64(ec->created), NULL);
        add(&b, "validations_total", "counter", "Validations by result.", u64(ec->validated - ec->validated_grace),
            "result", "ok", NULL);
        add(&b, "validations_total", "counter", "Validations by result.", u64(ec->validated_grace), "result", "grace",
            NULL);
        for (int f = 0; f < _ENGINE_FAIL_MAX; f++)
                add(&b, "validations_total", "counter", "Validations by result.", u64(ec->validate_failed[f]), "result",
                    fail_names[f], NULL);
        add(&b, "heartbeats_total", "counter", "Heartbeats answered.", u64(ec->heartbeats), NULL);
        add(&b, "sessions_extended_total", "counter", "Sessions extended after re-authentication.", u64(ec->extended),
            NULL);
        add(&b, "sessions_rotated_total", "counter", "Tokens rotated.", u64(ec->rotated), NULL);
        for (int r = 1; r < _ENGINE_END_MAX; r++)
                add(&b, "sessions_ended_total", "counter", "Sessions ended, by reason.", u64(ec->ended[r]), "reason",
                    engine_end_reason_to_string((enum engine_end_reason) r), NULL);
        add(&b, "platform_switches_total", "counter", "Platform switches by result.", u64(ec->platform_switches),
            "result", "ok", NULL);
        add(&b, "platform_switches_total", "counter", "Platform switches by result.",
            u64(ec->platform_switches_refused), "result", "refused", NULL);
        add(&b, "sync_operations_total", "counter", "Cross-tab sync state operations.", u64(ec->sync_reads), "op",
            "read", NULL);
        add(&b, "sync_operations_total", "counter", "Cross-tab sync state operations.", u64(ec->sync_writes), "op",
            "write", NULL);
        add(&b, "sync_operations_total", "counter", "Cross-tab sync state operations.", u64(ec->sync_conflicts), "op",
            "conflict", NULL);
        add_where(
                &b, "sync_state_reads_total",
                "Reads of the cross-tab sync state in the store: by the store's writer after a commit, or on the event "
                "loop.",
                ec->sync_reads_after_commit, ec->sync_reads_on_loop);
        add(&b, "fingerprint_changes_total", "counter",
            "Client changes: recorded (IP, language) or refused (user agent).", u64(ec->fingerprint_changes), "result",
            "recorded", NULL);
        add(&b, "fingerprint_changes_total", "counter",
            "Client changes: recorded (IP, language) or refused (user agent).", u64(ec->fingerprint_mismatches),
            "result", "refused", NULL);
        add(&b, "suspicious_events_total", "counter", "Suspicious events counted.", u64(ec->suspicious), NULL);
        add(&b, "suspicious_threshold_reached_total", "counter",
            "Times a user reached security.suspicious_activity_threshold in a sliding hour.",
            u64(ec->suspicious_alerts), NULL);

        /* store */
        add(&b, "audit_rows_total", "counter", "Audit rows written.", u64(ec->audit_rows), NULL);
        add(&b, "store_commits_total", "counter", "Group commits of the store by result.", u64(ec->commits), "result",
            "ok", NULL);
        add(&b, "store_commits_total", "counter", "Group commits of the store by result.", u64(ec->commit_failures),
            "result", "failed", NULL);
        add(&b, "touches_written_total", "counter", "Coalesced activity times written to the store.",
            u64(ec->touches_written), NULL);
        add(&b, "fleet_changes_total", "counter",
            "Sessions another daemon of the fleet changed, learnt from the shared store, by kind.",
            u64(ec->remote_ended), "kind", "ended", NULL);
        add(&b, "fleet_changes_total", "counter",
            "Sessions another daemon of the fleet changed, learnt from the shared store, by kind.",
            u64(ec->remote_changed), "kind", "created_or_changed", NULL);
        add_where(&b, "fleet_change_reads_total",
                  "Rows of other daemons' changes read again: by the store's writer after a commit, or on the event "
                  "loop.",
                  ec->remote_reads_after_commit, ec->remote_reads_on_loop);
        add(&b, "fleet_rereads_total", "counter",
            "Re-reads of every live session after other daemons' changes may have been missed (the listening "
            "connection lost, the store unreachable), done.",
            u64(ec->rereads), NULL);
        add(&b, "fleet_reread_rows_total", "counter",
            "Live rows those re-reads read: by the store's writer after a commit, in pages.",
            u64(ec->reread_rows_after_commit), "where", "after_commit", NULL);
        add(&b, "store_loop_row_reads_total", "counter",
            "Session rows read on the event loop (waiting for the store): a fleet's reads that could not wait for a "
            "commit, and the rows of a unit lost, read back.",
            u64(ec->loop_row_reads), NULL);
        add(&b, "fleet_token_reads_total", "counter",
            "Tokens this daemon's memory did not know, read by the store's writer after a commit.",
            u64(ec->token_reads_after_commit), NULL);
        add_where(&b, "fleet_cleanup_reads_total",
                  "Sessions the cleanup was about to end, read again first (another daemon may have touched them): by "
                  "the "
                  "store's writer after a commit, or on the event loop.",
                  ec->cleanup_reads_after_commit, ec->cleanup_reads_on_loop);
        add_where(
                &b, "watch_final_reads_total",
                "Ended sessions read for a Watch's final reply: by the store's writer after a commit (a fleet), or on "
                "the event loop (SQLite).",
                ec->final_reads_after_commit, ec->final_reads_on_loop);
        add_where(&b, "listing_page_reads_total",
                  "Pages of ListSessions, ListUser, GetSession, Terminate and Audit read from the store: by the "
                  "store's writer after a commit (a fleet), or on the event loop (SQLite).",
                  ec->page_reads_after_commit, ec->page_reads_on_loop);
        add(&b, "db_size_bytes", "gauge", "Size of the database file and its WAL (0 in memory).",
            json_integer(db_size(d)), NULL);

        /* cleanup */
        for (int k = 0; k < _METRICS_CLEANUP_MAX; k++)
                add(&b, "cleanup_runs_total", "counter", "Cleanup runs by kind.", u64(mc->cleanup_runs[k]), "kind",
                    cleanup_kind_names[k], NULL);
        for (int k = 0; k < _METRICS_CLEANUP_MAX; k++)
                add(&b, "cleanup_duration_seconds_sum", "counter",
                    "Wall time of the cleanup runs by kind, start to end (rests between steps included).",
                    real(mc->cleanup_seconds[k]), "kind", cleanup_kind_names[k], NULL);
        add(&b, "cleanup_failures_total", "counter", "Cleanup runs that stopped on an error.",
            u64(mc->cleanup_failures), NULL);
        add(&b, "cleanup_triggered_total", "counter",
            "Regular cleanups started early because cleanup.trigger_threshold was reached.", u64(mc->cleanup_triggered),
            NULL);
        add(&b, "cleanup_ended_total", "counter", "Sessions ended by cleanup (past their end + cleanup_grace).",
            u64(mc->cleanup_ended), NULL);
        add(&b, "cleanup_evicted_total", "counter",
            "Sessions ended by batch cleanup to enforce security.max_concurrent_per_user.", u64(mc->cleanup_evicted),
            NULL);
        add(&b, "purged_total", "counter", "Rows deleted by deep cleanup (retention).", u64(ec->purged_sessions),
            "what", "sessions", NULL);
        add(&b, "purged_total", "counter", "Rows deleted by deep cleanup (retention).", u64(ec->purged_audit), "what",
            "audit", NULL);
        add(&b, "security_checks_total", "counter", "Security checks run.", u64(mc->security_checks), NULL);

        /* server */
        add(&b, "connections", "gauge", "Open client connections.", json_integer(st.connections), NULL);
        add(&b, "connections_accepted_total", "counter", "Connections accepted.", u64(st.accepted), NULL);
        add(&b, "connections_rejected_total", "counter", "Connections refused (daemon.max_connections, per-uid cap).",
            u64(st.rejected), NULL);
        add(&b, "calls_total", "counter", "Varlink calls received.", u64(st.calls), NULL);
        add(&b, "protocol_errors_total", "counter", "Connections closed for malformed input.", u64(st.protocol_errors),
            NULL);

        /* performance (monitoring.performance_monitoring) */
        if (perf) {
                add(&b, "requests_timed_total", "counter", "Calls timed from dispatch to final reply.",
                    u64(m->requests.total), NULL);
                add(&b, "request_duration_seconds_sum", "counter", "Total time of the timed calls.",
                    real((double) m->requests_ns_sum / 1e9), NULL);
                add_quantiles(m, &b, &m->requests, "request_duration_seconds",
                              "Call duration quantiles over the newest 1024 calls.");
                add(&b, "commit_duration_seconds_sum", "counter", "Total time of the group commits.",
                    real((double) m->commits_ns_sum / 1e9), NULL);
                add_quantiles(m, &b, &m->commits, "commit_duration_seconds",
                              "Group commit duration quantiles over the newest 1024 commits.");
                add(&b, "loop_lag_seconds", "gauge", "How late the event loop ran its last probe timer.",
                    real(m->lag_last_ms / 1e3), NULL);
                add(&b, "loop_lag_max_seconds", "gauge", "The largest loop lag since the last metrics sample.",
                    real(m->lag_sample_ms / 1e3), NULL);
        }

        /* observability itself */
        add(&b, "alerts_firing", "gauge", "Alerts firing now.", json_integer(x ? x->alerts_firing : 0), NULL);
        add(&b, "events_total", "counter", "Events recorded.", u64(x ? x->events_total : 0), NULL);
        add(&b, "event_followers", "gauge", "Open Admin.Events streams.", json_integer(x ? x->event_followers : 0),
            NULL);
        if (x && x->health_status >= 0)
                add(&b, "health_status", "gauge",
                    "Overall health of the last check: 0 healthy, 1 degraded, 2 unhealthy.",
                    json_integer(x->health_status), NULL);
        add(&b, "metrics_samples_total", "counter", "Samples taken into the history.", u64(mc->samples), NULL);
        add(&b, "uptime_seconds", "gauge", "Seconds since the daemon started.", json_integer(now - d->started_at),
            NULL);
        add(&b, "reloads_total", "counter", "Configuration reloads that succeeded.", u64(d->reloads), NULL);
        add_thresholds(&b, d->config);

        if (b.error) {
                json_decref(b.list);
                return NULL;
        }
        return b.list;
}

/* ---- samples ------------------------------------------------------------------- */

static json_t *maybe_number(double v) {
        return isnan(v) || isinf(v) ? json_null() : json_real(round(v * 1000.0) / 1000.0);
}

int metrics_sample(struct metrics *m, int64_t now, const struct metrics_extra *x, struct metrics_rates *rates) {
        struct daemon *d = m->d;
        uint64_t v[RATE_WINDOW_COUNTERS], delta[RATE_WINDOW_COUNTERS];
        struct metrics_rates rt = {.failure_percent = NAN, .mean_duration = NAN};
        struct server_stats st = {0};
        struct engine_counts counts;
        json_t *sample;
        size_t n;
        int64_t span;

        window_counters(m, v);
        rate_window_add(&m->window, (int64_t) uv_now(d->loop), v);
        if (rate_window_delta(&m->window, delta, &span) == 0) {
                int64_t w = METRICS_RATE_WINDOW_MS;

                rt.span_ms = span;
                rt.created = rate_window_per_window(delta[W_CREATED], span, w);
                rt.validations = rate_window_per_window(delta[W_VALIDATIONS], span, w);
                rt.suspicious = rate_window_per_window(delta[W_SUSPICIOUS], span, w);
                rt.ended = rate_window_per_window(delta[W_ENDED], span, w);
                if (delta[W_VALIDATIONS] > 0)
                        rt.failure_percent = 100.0 * (double) delta[W_FAILURES] / (double) delta[W_VALIDATIONS];
                if (delta[W_ENDED] > 0)
                        rt.mean_duration = (double) delta[W_ENDED_SECONDS] / (double) delta[W_ENDED];
        }
        if (d->server)
                server_get_stats(d->server, &st);
        engine_count(d->engine, clock_now_ms(), &counts);
        rt.active = counts.active + counts.grace;
        rt.awaiting_cleanup = counts.awaiting_cleanup;
        if (rates)
                *rates = rt;
        n = reservoir_sorted(&m->requests, m->scratch);
        sample = json_pack(
                "{s:I, s:I, s:I, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:i}", "time", (json_int_t) now,
                "sessions_active", (json_int_t) (counts.active + counts.grace), "sessions_awaiting_cleanup",
                (json_int_t) counts.awaiting_cleanup, "connections", (int) st.connections, "created_per_minute",
                maybe_number(rt.created), "failure_rate_percent", maybe_number(rt.failure_percent),
                "suspicious_per_minute", maybe_number(rt.suspicious), "mean_duration_seconds",
                maybe_number(rt.mean_duration), "request_p99_seconds",
                n ? maybe_number(analytics_percentile(m->scratch, n, 99) / 1e6) : json_null(), "loop_lag_max_seconds",
                d->config->monitoring.performance_monitoring ? maybe_number(m->lag_sample_ms / 1e3) : json_null(),
                "db_size_bytes", (json_int_t) db_size(d), "alerts_firing", x ? (int) x->alerts_firing : 0);
        m->lag_sample_ms = 0;
        if (!sample)
                return -ENOMEM;
        ring_push(&m->history, sample);
        m->counters.samples++;
        return 0;
}

json_t *metrics_history(struct metrics *m) {
        return ring_to_array(&m->history);
}

void metrics_history_clear(struct metrics *m) {
        ring_clear(&m->history);
}
