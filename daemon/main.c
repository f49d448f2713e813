/* sessiond: options, configuration, the event loop, signals, reload, stop.
 *
 * One libuv loop runs everything; main owns it and the handles that belong
 * to the process as a whole: the signal handlers, the uv_check that ends
 * each iteration, the stop deadline and the STATUS= timer. Each subsystem
 * owns its own handles.
 *
 * Durability is ordered here, between the engine and the server, which know
 * nothing of each other: each iteration ends by handing the engine's unit
 * of work to the store (main_commit_step) and sealing the server's batch of
 * held replies; the commit callback releases that batch, or turns its write
 * replies into StorageFull/StorageError when the unit was lost. Then the
 * server writes what is released.
 *
 * Start: the configuration is loaded from its sources (-c FILE or the
 * default file, the env file, the process environment) and validated; any
 * error stops the start with every issue printed. The process environment
 * is copied once at start: a reload reads the file and the env file again,
 * never the environment, as DESIGN 2.1 says (and a library calling setenv()
 * later cannot change what a reload sees). Then the store opens (engine),
 * the socket is taken or bound (server) and the background jobs are armed
 * (they time the server's calls, so they come after it); the loop has not
 * run yet, so a client that connects meanwhile waits in the backlog and is
 * served by the complete daemon. READY=1 follows.
 *
 * Reload (SIGHUP, Admin.Reload, both through daemon_reload()): read and
 * validate a new configuration and allocate the buffers it sizes (so that
 * nothing can fail halfway through the swap); on success swap the pointer
 * and tell each subsystem, on failure keep the old one, whole. Either way every issue is logged
 * and systemd hears RELOADING=1 then READY=1, and the store gets an audit
 * row.
 *
 * Stop (SIGTERM, SIGINT): stop accepting, let each connection finish the
 * call it is in (streams are cancelled: they never finish by themselves),
 * write what is answered, then close the store (commit and checkpoint) and
 * exit 0. A second signal, or MAIN_STOP_DEADLINE_MS without the connections
 * draining, closes the remaining connections at once; the store is still
 * closed cleanly, so no acknowledged write is lost either way.
 */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bulk.h"
#include "clock.h"
#include "daemon.h"
#include "engine.h"
#include "events.h"
#include "jobs.h"
#include "leader.h"
#include "log.h"
#include "macro.h"
#include "metrics_http.h"
#include "metrics.h"
#include "notify.h"
#include "server.h"
#include "sessiond/config.h"
#include "sessiond/envfile.h"

#define MAIN_STOP_DEADLINE_MS 5000
#define MAIN_STATUS_INTERVAL_MS 10000 /* engine_count() scans memory */


extern char **environ;

struct sessiond_main;
static void main_commit_step(struct sessiond_main *m);

struct sessiond_main {
        struct daemon d;
        uv_loop_t loop;
        uv_signal_t sig_term, sig_int, sig_hup;
        uv_check_t flush;
        uv_timer_t deadline;
        uv_timer_t status;
        bool handles_open;
        struct notify_watchdog *watchdog;
        char **environ_copy;        /* the process environment as it was at start */
        uint64_t commit_started_ns; /* uv_hrtime() at the hand-off of the unit being committed */
};

/* The one instance, for the callbacks that only get a subsystem. */
static struct sessiond_main *instance;

static struct sessiond_main *main_of(struct daemon *d) {
        return container_of(d, struct sessiond_main, d);
}

/* ---- configuration ----------------------------------------------------------- */

static void strv_free(char **l) {
        if (!l)
                return;
        for (char **p = l; *p; p++)
                free(*p);
        free(l);
}

static char **strv_copy(char *const *l) {
        size_t n = 0;
        char **c;

        while (l && l[n])
                n++;
        c = calloc(n + 1, sizeof *c);
        if (!c)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                c[i] = strdup(l[i]);
                if (!c[i]) {
                        strv_free(c);
                        return NULL;
                }
        }
        return c;
}

/* systemd's EnvironmentFile=/etc/sessiond/session.env hands the env file to
 * us a second time, as process environment. The process environment is
 * fixed at start and beats the env file, so without care an edited line of
 * session.env would never take effect on reload. Rule: a variable whose name
 * and value are exactly those of the env file at start came from the env
 * file; it is dropped from our copy of the environment, and the env file,
 * read again on every reload, stays its only source. A variable set
 * differently in the environment (Environment=, the shell) still wins. */
static void environ_drop_env_file_copies(const char *config_path, char **env) {
        struct sessiond_config_sources sources = {.config_file = config_path, .environ = env};
        struct sessiond_issues ignored = {};
        _cleanup_(sessiond_config_freep) struct sessiond_config *c = NULL;
        _cleanup_(sessiond_envfile_freep) struct sessiond_envfile *f = NULL;
        size_t out = 0;

        if (sessiond_config_load(&sources, &c, &ignored) < 0 || !c->daemon.env_file || !*c->daemon.env_file ||
            sessiond_envfile_read(c->daemon.env_file, &f, &ignored) < 0) {
                sessiond_issues_clear(&ignored);
                return;
        }
        sessiond_issues_clear(&ignored);
        for (size_t i = 0; env[i]; i++) {
                const char *eq = strchr(env[i], '='), *v;
                char *key = eq ? strndup(env[i], (size_t) (eq - env[i])) : NULL;
                bool copy = key && (v = sessiond_envfile_get(f, key, NULL)) && strcmp(v, eq + 1) == 0;

                free(key);
                if (copy) {
                        free(env[i]);
                        continue;
                }
                env[out++] = env[i];
        }
        env[out] = NULL;
}

/* Loads every source and validates; *ret only when there is no error. */
static int config_read(const char *path, char **env, struct sessiond_config **ret, struct sessiond_issues *issues) {
        struct sessiond_config_sources sources = {
                .config_file = path,
                .environ = env,
        };
        struct sessiond_config *c = NULL;
        int r;

        r = sessiond_config_load(&sources, &c, issues);
        if (r < 0)
                return r;
        r = sessiond_config_validate(c, issues);
        if (r < 0) {
                sessiond_config_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

static void issues_count(const struct sessiond_issues *issues, size_t *errors, size_t *warnings) {
        *errors = *warnings = 0;
        for (size_t i = 0; i < issues->count; i++) {
                if (issues->items[i].severity == SESSIOND_ERROR)
                        (*errors)++;
                else
                        (*warnings)++;
        }
}

static void issues_log(const struct sessiond_issues *issues) {
        for (size_t i = 0; i < issues->count; i++) {
                if (issues->items[i].severity == SESSIOND_ERROR)
                        log_error("%s", issues->items[i].message);
                else
                        log_warning("%s", issues->items[i].message);
        }
}

/* Logs each setting whose value differs between two configurations (the
 * JSON of DESIGN 2.2, walked in parallel) and records it in `changes` as
 * path -> {"from", "to"} (a value that is absent on one side is null). */
static void config_diff(json_t *old, json_t *new, const char *prefix, json_t *changes) {
        const char *key;
        json_t *v;

        json_object_foreach(new, key, v) {
                json_t *o = json_object_get(old, key);
                char path[256];
                char *a, *b;

                snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", key);
                if (json_is_object(v) && json_is_object(o)) {
                        config_diff(o, v, path, changes);
                        continue;
                }
                if (o && json_equal(o, v))
                        continue;
                a = o ? json_dumps(o, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
                b = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
                if (o)
                        log_info("Reload: %s changed from %s to %s", path, a ? a : "?", b ? b : "?");
                else
                        log_info("Reload: %s set to %s", path, b ? b : "?");
                free(a);
                free(b);
                (void) json_object_set_new(changes, path, json_pack("{s:O?, s:O}", "from", o, "to", v));
        }
        json_object_foreach(old, key, v) {
                char path[256];

                if (json_object_get(new, key))
                        continue;
                snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", key);
                log_info("Reload: %s removed", path);
                (void) json_object_set_new(changes, path, json_pack("{s:O, s:n}", "from", v, "to"));
        }
}

/* The config_reloaded audit row (when security.audit_logging is on); it is
 * committed with the other writes of this loop iteration. */
static void config_audit(struct daemon *d, bool ok, json_t *detail) {
        int r;

        if (!d->engine || !detail)
                return;
        (void) json_object_set_new(detail, "ok", json_boolean(ok));
        r = engine_audit(d->engine, clock_now_ms(), "config_reloaded", NULL, NULL, detail);
        if (r < 0)
                log_warning_errno(r, "Failed to write the config_reloaded audit row: %m");
}

/* The STATUS= line: "Serving 12 sessions, 3 connections; environment production". */
static void main_status_text(struct sessiond_main *m, char *buf, size_t size) {
        struct engine_counts counts = {};
        struct server_stats st = {};
        unsigned long long live;
        char health[112];

        if (m->d.server)
                server_get_stats(m->d.server, &st);
        if (m->d.engine)
                engine_count(m->d.engine, clock_now_ms(), &counts);
        live = (unsigned long long) (counts.active + counts.grace);
        jobs_status_line(m->d.jobs, health, sizeof health);
        snprintf(buf, size, "Serving %llu session%s, %u connection%s; environment %s%s%s", live, live == 1 ? "" : "s",
                 st.connections, st.connections == 1 ? "" : "s",
                 sessiond_environment_to_string(m->d.config->environment), *health ? "; " : "", health);
}

static void main_ready(struct sessiond_main *m) {
        char status[280];

        main_status_text(m, status, sizeof status);
        notify_ready(status);
}

/* A reload that failed: the issues are logged already; keep the current
 * configuration, audit the attempt, tell systemd. */
static int reload_failed(struct daemon *d, struct sessiond_issues *issues, size_t errors, int r) {
        json_t *list = json_array(), *detail;

        log_error("Reload failed (%zu error%s): keeping the current configuration", errors, errors == 1 ? "" : "s");
        for (size_t i = 0; list && i < issues->count; i++)
                if (issues->items[i].severity == SESSIOND_ERROR)
                        (void) json_array_append_new(list, json_string(issues->items[i].message));
        detail = list ? json_pack("{s:o}", "errors", list) : NULL;
        config_audit(d, false, detail);
        json_decref(detail);
        notify_ready("Reload failed; serving with the previous configuration");
        return r == -ENOMEM ? r : -EINVAL;
}

/* Allocates every buffer the new configuration sizes (the metrics history
 * and the events ring) before the swap, so that a value that cannot be
 * applied fails the reload as a whole: the old configuration stays, with
 * its buffers, and the issue names the setting. */
static int reload_reserve(struct daemon *d, const struct sessiond_config *c, struct sessiond_issues *issues) {
        struct metrics *m = jobs_metrics(d->jobs);
        struct events *ev = jobs_events(d->jobs);
        int r;

        r = metrics_config_reserve(m, c);
        if (r < 0) {
                sessiond_issues_add(
                        issues, SESSIOND_ERROR, "monitoring.metrics_buffer_size",
                        "monitoring.metrics_buffer_size=%lld cannot be applied: its buffer cannot be allocated (%s)",
                        (long long) c->monitoring.metrics_buffer_size, strerror(-r));
                return r;
        }
        r = events_reserve_capacity(ev, (size_t) c->monitoring.events_buffer_size);
        if (r < 0) {
                metrics_config_unreserve(m);
                sessiond_issues_add(
                        issues, SESSIOND_ERROR, "monitoring.events_buffer_size",
                        "monitoring.events_buffer_size=%lld cannot be applied: its buffer cannot be allocated (%s)",
                        (long long) c->monitoring.events_buffer_size, strerror(-r));
                return r;
        }
        return 0;
}

int daemon_reload(struct daemon *d, struct sessiond_issues *issues) {
        struct sessiond_main *m = main_of(d);
        struct sessiond_issues local = {};
        struct sessiond_config *c = NULL, *old;
        size_t errors, warnings, changed = 0;
        json_t *a, *b, *detail;
        int r;

        if (!issues)
                issues = &local;
        notify_reloading();
        log_info("Reloading the configuration%s%s", d->config_path ? " from " : "",
                 d->config_path ? d->config_path : "");

        r = config_read(d->config_path, m->environ_copy, &c, issues);
        if (r >= 0) {
                r = reload_reserve(d, c, issues);
                if (r < 0) {
                        sessiond_config_free(c);
                        c = NULL;
                }
        }
        issues_log(issues);
        issues_count(issues, &errors, &warnings);
        if (r < 0) {
                r = reload_failed(d, issues, errors, r);
                sessiond_issues_clear(&local);
                return r;
        }

        detail = json_object();
        a = sessiond_config_to_json(d->config, false);
        b = sessiond_config_to_json(c, false);
        if (a && b && detail) {
                json_t *changes = json_object();

                if (changes) {
                        config_diff(a, b, "", changes);
                        changed = json_object_size(changes);
                        (void) json_object_set_new(detail, "changed", changes);
                }
        }
        json_decref(a);
        json_decref(b);
        if (strcmp(c->daemon.socket_path, d->config->daemon.socket_path) != 0)
                log_warning("daemon.socket_path changed: still listening on the old socket until a restart");

        old = d->config;
        d->config = c;
        d->reloads++;
        log_set_debug(c->debug_mode);
        engine_config_changed(d->engine);
        server_config_changed(d->server);
        jobs_config_changed(d->jobs);
        metrics_http_config_changed(d->metrics_http);
        sessiond_config_free(old);
        config_audit(d, true, detail);
        json_decref(detail);

        log_info("Configuration reloaded: %zu setting%s changed, %zu warning%s", changed, changed == 1 ? "" : "s",
                 warnings, warnings == 1 ? "" : "s");
        main_ready(m);
        sessiond_issues_clear(&local);
        return 0;
}

/* ---- stopping ------------------------------------------------------------------ */

static void main_close_handles(struct sessiond_main *m) {
        if (!m->handles_open)
                return;
        m->handles_open = false;
        uv_close((uv_handle_t *) &m->sig_term, NULL);
        uv_close((uv_handle_t *) &m->sig_int, NULL);
        uv_close((uv_handle_t *) &m->sig_hup, NULL);
        uv_close((uv_handle_t *) &m->flush, NULL);
        uv_close((uv_handle_t *) &m->deadline, NULL);
        uv_close((uv_handle_t *) &m->status, NULL);
        notify_watchdog_free(m->watchdog);
        m->watchdog = NULL;
}

/* Every connection is gone: close the store and let the loop run dry. */
static void on_server_closed(struct server *s) {
        struct sessiond_main *m = instance;

        assert(m && m->d.server == s);
        metrics_http_free(m->d.metrics_http); /* before the jobs: it renders their metrics */
        m->d.metrics_http = NULL;
        bulk_free(m->d.bulk); /* finishes the bulk ends still queued */
        m->d.bulk = NULL;
        jobs_free(m->d.jobs); /* before the engine: the jobs observe it */
        m->d.jobs = NULL;
        leader_free(m->d.leader); /* before the store it holds the lock in */
        m->d.leader = NULL;
        engine_free(m->d.engine); /* commits and checkpoints */
        m->d.engine = NULL;
        /* Only now: closing the signal handles gives SIGTERM its default
         * action back, which must not cut the checkpoint short. */
        main_close_handles(m);
        log_info("Stopped");
}

static void on_deadline(uv_timer_t *t) {
        struct sessiond_main *m = t->data;

        log_warning("Connections still busy after %d s: closing them", MAIN_STOP_DEADLINE_MS / 1000);
        server_abort(m->d.server);
}

void daemon_stop(struct daemon *d) {
        struct sessiond_main *m = main_of(d);

        if (d->stopping) {
                log_notice("Stop requested again: closing every connection now");
                server_abort(d->server);
                return;
        }
        d->stopping = true;
        log_info("Stopping: finishing the calls in flight");
        main_commit_step(m);
        notify_stopping();
        (void) uv_timer_start(&m->deadline, on_deadline, MAIN_STOP_DEADLINE_MS, 0);
        server_close(d->server, on_server_closed);
}

/* ---- the loop ------------------------------------------------------------------- */

static void on_signal(uv_signal_t *h, int signum) {
        struct sessiond_main *m = h->data;

        if (signum == SIGHUP) {
                if (m->d.stopping) {
                        log_notice("SIGHUP ignored: stopping");
                        return;
                }
                (void) daemon_reload(&m->d, NULL);
                return;
        }
        log_info("Received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
        daemon_stop(&m->d);
}

/* ---- durability: the loop step -------------------------------------------------- */

/* Hands the writes of the iteration to the store, unless the previous unit
 * of work is still being committed: then they wait for it and go together
 * with whatever comes meanwhile (group commit). The replies they acknowledge
 * are held by the server under the batch sealed here. */
static void main_commit_step(struct sessiond_main *m) {
        struct engine *e = m->d.engine;
        struct server *s = m->d.server;

        if (!e || !s || engine_commit_busy(e))
                return;
        if (engine_has_pending(e)) {
                m->commit_started_ns = uv_hrtime();
                (void) engine_commit_submit(e, server_seal_writes(s));
        } else if (server_has_held(s))
                /* Replies marked as writes that wrote nothing new (a
                 * cleanup whose last step found nothing): everything they
                 * acknowledge is committed already. */
                server_release_held(s, server_seal_writes(s), NULL, NULL);
}

/* The store is done with a unit of work: release the replies it held, as
 * they are when it is durable, as storage errors when it was lost (the
 * engine dropped the writes made after it too: every held write fails). */
static void on_committed(struct engine *e, uint64_t seq, int result, void *userdata) {
        struct sessiond_main *m = userdata;
        struct server *s = m->d.server;
        bool full = result == -ENOSPC || result == -EDQUOT;

        if (!s)
                return;
        if (m->commit_started_ns)
                server_report_commit(s, uv_hrtime() - m->commit_started_ns);
        m->commit_started_ns = 0;
        if (result >= 0) {
                server_release_held(s, seq, NULL, NULL);
                return;
        }
        log_error_errno(result, "Failed to commit the store: %m; the writes of this round are answered with a "
                                "storage error");
        server_release_held(s, UINT64_MAX,
                            full ? "io.sessiond.Session.StorageFull" : "io.sessiond.Session.StorageError",
                            json_pack("{s:s}", "reason", strerror(-result)));
}

static void on_check(uv_check_t *h) {
        struct sessiond_main *m = h->data;

        if (!m->d.server)
                return;
        server_process_ready(m->d.server);
        main_commit_step(m);
        server_flush(m->d.server);
}

static void on_status(uv_timer_t *t) {
        char status[280];

        main_status_text(t->data, status, sizeof status);
        notify_status("%s", status);
}

void daemon_status_update(struct daemon *d) {
        struct sessiond_main *m = main_of(d);

        if (m->handles_open && getenv("NOTIFY_SOCKET"))
                on_status(&m->status);
}

static int main_open_handles(struct sessiond_main *m) {
        uv_loop_t *loop = &m->loop;
        int r;

        (void) uv_signal_init(loop, &m->sig_term);
        (void) uv_signal_init(loop, &m->sig_int);
        (void) uv_signal_init(loop, &m->sig_hup);
        (void) uv_check_init(loop, &m->flush);
        (void) uv_timer_init(loop, &m->deadline);
        (void) uv_timer_init(loop, &m->status);
        m->sig_term.data = m->sig_int.data = m->sig_hup.data = m;
        m->flush.data = m->deadline.data = m->status.data = m;
        m->handles_open = true;

        if ((r = uv_signal_start(&m->sig_term, on_signal, SIGTERM)) < 0 ||
            (r = uv_signal_start(&m->sig_int, on_signal, SIGINT)) < 0 ||
            (r = uv_signal_start(&m->sig_hup, on_signal, SIGHUP)) < 0 ||
            (r = uv_check_start(&m->flush, on_check)) < 0) {
                log_error("Failed to set up the event loop: %s", uv_strerror(r));
                return -EIO;
        }
        /* The signals and the flush do not keep the loop alive by
         * themselves: the server and the jobs do. */
        uv_unref((uv_handle_t *) &m->sig_term);
        uv_unref((uv_handle_t *) &m->sig_int);
        uv_unref((uv_handle_t *) &m->sig_hup);
        uv_unref((uv_handle_t *) &m->flush);
        uv_unref((uv_handle_t *) &m->deadline);
        if (getenv("NOTIFY_SOCKET")) {
                (void) uv_timer_start(&m->status, on_status, MAIN_STATUS_INTERVAL_MS, MAIN_STATUS_INTERVAL_MS);
                uv_unref((uv_handle_t *) &m->status);
        }
        return notify_watchdog_new(loop, &m->watchdog);
}

static uint64_t now_usec(clockid_t clock) {
        struct timespec ts;

        (void) clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

static void on_walk_leftover(uv_handle_t *h, void *arg) {
        if (!uv_is_closing(h)) {
                log_error("Handle of type %s left open at exit", uv_handle_type_name(uv_handle_get_type(h)));
                uv_close(h, NULL);
        }
}

/* What main_run() opened, closed whichever way it returns (its cleanup). */
static void main_teardown(struct sessiond_main **mp) {
        struct sessiond_main *m = *mp;
        struct daemon *d = &m->d;

        /* On a failed start, the pieces that exist are closed here; after a
         * normal stop, on_server_closed() did it already. */
        if (d->server && !d->stopping) {
                d->stopping = true;
                server_close(d->server, on_server_closed);
        } else {
                metrics_http_free(d->metrics_http);
                d->metrics_http = NULL;
                bulk_free(d->bulk);
                d->bulk = NULL;
                jobs_free(d->jobs);
                d->jobs = NULL;
                leader_free(d->leader);
                d->leader = NULL;
                if (d->engine)
                        engine_free(d->engine);
                d->engine = NULL;
                main_close_handles(m);
        }
        uv_run(&m->loop, UV_RUN_DEFAULT);
        server_free(d->server);
        d->server = NULL;
        if (uv_loop_close(&m->loop) == UV_EBUSY) {
                uv_walk(&m->loop, on_walk_leftover, NULL);
                uv_run(&m->loop, UV_RUN_DEFAULT);
                (void) uv_loop_close(&m->loop);
        }
}

/* Runs the daemon with a validated configuration; returns the exit code. */
static int main_run(struct sessiond_main *m) {
        struct daemon *d = &m->d;
        int r;

        r = uv_loop_init(&m->loop);
        if (r < 0) {
                log_error("Failed to create the event loop: %s", uv_strerror(r));
                return EXIT_FAILURE;
        }
        d->loop = &m->loop;
        _cleanup_(main_teardown) struct sessiond_main *running = m; /* from here on, every return closes it */
        /* The daemon's clock (clock.h): the wall clock is read here, once. */
        clock_start();
        d->started_at = clock_now();
        d->started_usec = now_usec(CLOCK_MONOTONIC);

        if (main_open_handles(m) < 0)
                return EXIT_FAILURE;
        r = engine_new(d, &d->engine);
        if (r < 0) {
                log_error_errno(r, "Failed to open the session store: %m");
                return EXIT_FAILURE;
        }
        engine_set_commit_callback(d->engine, on_committed, m);
        if (d->config->features.distributed) {
                r = leader_new(d->loop, engine_store(d->engine), d->config->features.clustering, &d->leader);
                if (r < 0) {
                        log_error_errno(r, "Failed to start the fleet's leadership: %m");
                        return EXIT_FAILURE;
                }
        }
        r = server_new(d, &d->server);
        if (r < 0)
                return EXIT_FAILURE;
        r = jobs_new(d, &d->jobs);
        if (r < 0)
                return EXIT_FAILURE;
        r = metrics_http_new(d, &d->metrics_http);
        if (r < 0)
                return EXIT_FAILURE;
        r = bulk_new(d, &d->bulk);
        if (r < 0)
                return EXIT_FAILURE;

        log_info("sessiond %s started (pid %d, environment %s%s%s)", SESSIOND_VERSION, (int) getpid(),
                 sessiond_environment_to_string(d->config->environment),
                 d->config->config_file ? ", configuration " : "",
                 d->config->config_file ? d->config->config_file : "");
        main_ready(m);

        uv_run(&m->loop, UV_RUN_DEFAULT);
        return EXIT_SUCCESS;
}

/* ---- options ---------------------------------------------------------------------- */

static void help(void) {
        printf("Usage: sessiond [-c FILE] [--check-config]\n"
               "       sessiond --version\n"
               "\n"
               "Session-management daemon for web applications (Varlink on a Unix socket).\n"
               "\n"
               "  -c, --config FILE   read FILE instead of %s\n"
               "      --check-config  validate the configuration, print every issue, exit 0/1\n"
               "      --version       print the version and exit\n"
               "  -h, --help          print this help and exit\n"
               "\n"
               "Runs in the foreground. SIGHUP reloads the configuration, SIGTERM stops.\n"
               "See sessiond(8) and sessiond.conf(5).\n",
               SESSIOND_DEFAULT_CONFIG_FILE);
}

/* --check-config: every issue on stderr, a summary on stdout. */
static int check_config(const char *path, char **env) {
        struct sessiond_issues issues = {};
        struct sessiond_config *c = NULL;
        size_t errors, warnings;
        int r;

        r = config_read(path, env, &c, &issues);
        for (size_t i = 0; i < issues.count; i++)
                fprintf(stderr, "%s: %s\n", sessiond_severity_to_string(issues.items[i].severity),
                        issues.items[i].message);
        issues_count(&issues, &errors, &warnings);
        if (r < 0 && errors == 0) {
                fprintf(stderr, "error: failed to load the configuration: %s\n", strerror(-r));
                errors = 1;
        }
        if (r < 0)
                printf("Configuration invalid: %zu error%s, %zu warning%s\n", errors, errors == 1 ? "" : "s", warnings,
                       warnings == 1 ? "" : "s");
        else
                printf("Configuration valid (environment %s): %zu warning%s\n",
                       sessiond_environment_to_string(c->environment), warnings, warnings == 1 ? "" : "s");
        sessiond_config_free(c);
        sessiond_issues_clear(&issues);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

int main(int argc, char **argv) {
        enum { ARG_CHECK_CONFIG = 0x100, ARG_VERSION };
        static const struct option options[] = {
                {"config", required_argument, NULL, 'c'},
                {"check-config", no_argument, NULL, ARG_CHECK_CONFIG},
                {"version", no_argument, NULL, ARG_VERSION},
                {"help", no_argument, NULL, 'h'},
                {},
        };
        static struct sessiond_main m;
        struct sessiond_issues issues = {};
        bool check = false;
        int opt, r, status;

        while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) >= 0) {
                switch (opt) {
                case 'c':
                        m.d.config_path = optarg;
                        break;
                case ARG_CHECK_CONFIG:
                        check = true;
                        break;
                case ARG_VERSION:
                        printf("sessiond %s\n", SESSIOND_VERSION);
                        return EXIT_SUCCESS;
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                default:
                        fprintf(stderr, "Try 'sessiond --help'.\n");
                        return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "sessiond: unexpected argument '%s'. Try 'sessiond --help'.\n", argv[optind]);
                return 2;
        }

        m.environ_copy = strv_copy(environ);
        if (!m.environ_copy) {
                fprintf(stderr, "sessiond: out of memory\n");
                return EXIT_FAILURE;
        }
        environ_drop_env_file_copies(m.d.config_path, m.environ_copy);
        if (check) {
                status = check_config(m.d.config_path, m.environ_copy);
                strv_free(m.environ_copy);
                return status;
        }

        log_setup();
        /* A peer that hangs up ends its own connection (EPIPE), not us. */
        signal(SIGPIPE, SIG_IGN);

        r = config_read(m.d.config_path, m.environ_copy, &m.d.config, &issues);
        issues_log(&issues);
        sessiond_issues_clear(&issues);
        if (r < 0) {
                log_error("Invalid configuration: not starting");
                strv_free(m.environ_copy);
                return EXIT_FAILURE;
        }
        log_set_debug(m.d.config->debug_mode);

        instance = &m;
        status = main_run(&m);
        instance = NULL;

        sessiond_config_free(m.d.config);
        strv_free(m.environ_copy);
        return status;
}
