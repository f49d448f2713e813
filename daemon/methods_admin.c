/* io.sessiond.Admin: the methods operators (sessionctl) call.
 *
 * The server lets only uid 0 and members of daemon.admin_group reach this
 * table. The session-related methods (ListSessions, Terminate,
 * TerminateUser, GetSession), the configuration (GetConfig, Reload) and a basic Status
 * live here; health, metrics, alerts, events, audit, cleanup and analytics
 * belong to the observability work and join this table with it.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "daemon.h"
#include "engine.h"
#include "leader.h"
#include "methods.h"
#include "server.h"
#include "sessiond/config.h"
#include "store.h"

#define IFACE METHODS_ADMIN_INTERFACE
#define LIST_DEFAULT_LIMIT 100
#define LIST_MAX_LIMIT 100000

static void invalid_argument(struct call *c, const char *field, const char *reason) {
        call_error(c, IFACE ".InvalidArgument", json_pack("{s:s, s:s}", "field", field, "reason", reason));
}

static int status_add_fleet(struct daemon *d, json_t *status);

static void method_status(struct daemon *d, struct call *c) {
        struct server_stats st = {0};
        struct engine_counts counts;
        int64_t now = methods_now();
        json_t *status;

        if (d->server)
                server_get_stats(d->server, &st);
        engine_count(d->engine, methods_now_ms(), &counts);
        status = json_pack("{s:s, s:i, s:I, s:I, s:s, s:s?, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "version",
                           SESSIOND_VERSION, "pid", (int) getpid(), "uptime", (json_int_t) (now - d->started_at),
                           "started_at", (json_int_t) d->started_at, "environment",
                           sessiond_environment_to_string(d->config->environment), "config_file",
                           d->config->config_file, "sessions_active", (json_int_t) (counts.active + counts.grace),
                           "sessions_awaiting_cleanup", (json_int_t) counts.awaiting_cleanup, "sessions_in_memory",
                           (json_int_t) counts.sessions, "max_sessions", (json_int_t) d->config->daemon.max_sessions,
                           "users", (json_int_t) counts.users, "connections", (json_int_t) st.connections,
                           "output_buffered", (json_int_t) st.output_bytes, "output_budget",
                           (json_int_t) st.output_budget, "reloads", (json_int_t) d->reloads);
        /* The file this daemon uses (sessionctl backup copies it), which a
         * reload never changes; null: in memory. */
        if (status && !store_is_memory(engine_store(d->engine))) {
                char *real = realpath(store_name(engine_store(d->engine)), NULL);

                json_object_set_new(status, "database", json_string(real ? real : store_name(engine_store(d->engine))));
                free(real);
        } else if (status)
                json_object_set_new(status, "database", json_null());
        if (status && d->config->features.distributed && status_add_fleet(d, status) < 0) {
                json_decref(status);
                status = NULL;
        }
        if (!status || methods_observe_status(d, status) < 0) {
                json_decref(status);
                methods_reply_oom(c);
                return;
        }
        call_reply(c, json_pack("{s:o}", "status", status));
}

static int fleet_daemon_cb(const struct store_daemon_row *row, void *userdata) {
        json_t *list = userdata;

        return json_array_append_new(list, json_pack("{s:s, s:I, s:b}", "id", row->daemon_id, "seen_at_ms",
                                                     (json_int_t) row->seen_ms, "leader", row->leader)) < 0
                       ? -ENOMEM
                       : 0;
}

/* A fleet (DESIGN 8): this daemon's id, whether it leads, who does, and
 * the daemons whose heartbeat was seen lately (leader.c). */
static int status_add_fleet(struct daemon *d, json_t *status) {
        json_t *daemons = json_array(), *leader = json_null();
        int r;

        if (!daemons)
                return -ENOMEM;
        r = store_daemons_each(engine_store(d->engine), clock_now_ms() - LEADER_SEEN_WINDOW_MS, fleet_daemon_cb,
                               daemons);
        if (r < 0 && r != -EOPNOTSUPP && r != -ENOMEM) {
                json_decref(daemons);
                daemons = json_null(); /* the store cannot say now */
        } else if (r == -ENOMEM) {
                json_decref(daemons);
                return r;
        }
        for (size_t i = 0; json_is_array(daemons) && i < json_array_size(daemons); i++)
                if (json_is_true(json_object_get(json_array_get(daemons, i), "leader")))
                        leader = json_incref(json_object_get(json_array_get(daemons, i), "id"));
        r = json_object_set_new(status, "fleet",
                                json_pack("{s:s?, s:b, s:b, s:o, s:o}", "daemon_id", leader_id(d->leader), "leader",
                                          d->config->features.clustering && leader_is_me(d->leader), "caching",
                                          d->config->features.caching, "leader_id", leader, "daemons", daemons));
        return r < 0 ? -ENOMEM : 0;
}

static void method_get_config(struct daemon *d, struct call *c) {
        json_t *config = sessiond_config_to_json(d->config, false);

        if (!config) {
                methods_reply_oom(c);
                return;
        }
        call_reply(c, json_pack("{s:o}", "config", config));
}

static void method_reload(struct daemon *d, struct call *c) {
        struct sessiond_issues issues = {0};
        uint64_t seq = engine_write_seq(d->engine);
        json_t *list;
        int r;

        r = daemon_reload(d, &issues);
        if (r >= 0) {
                sessiond_issues_clear(&issues);
                methods_mark_write(c, d, seq); /* the audit row of the reload */
                call_reply(c, json_object());
                return;
        }
        list = json_array();
        for (size_t i = 0; list && i < issues.count; i++) {
                const struct sessiond_issue *is = &issues.items[i];
                char *line = NULL;

                if (asprintf(&line, "%s: %s", sessiond_severity_to_string(is->severity), is->message) < 0)
                        continue;
                json_array_append_new(list, json_string(line));
                free(line);
        }
        if (list && issues.count == 0)
                json_array_append_new(list, json_string(strerror(r < 0 ? -r : EINVAL)));
        sessiond_issues_clear(&issues);
        if (!list) {
                methods_reply_oom(c);
                return;
        }
        call_error(c, IFACE ".ConfigInvalid", json_pack("{s:o}", "issues", list));
}

static void method_list_sessions(struct daemon *d, struct call *c) {
        const char *user = NULL;
        bool include_ended = false;
        int64_t limit = LIST_DEFAULT_LIMIT, unused;
        struct engine_page page = {.scan_max = METHODS_PAGE_SCAN};
        bool paged;

        if (methods_param_string(c, IFACE, "user_id", false, &user) == -EINVAL ||
            methods_param_bool(c, "include_ended", &include_ended) == -EINVAL ||
            methods_param_int(c, "limit", &limit) == -EINVAL ||
            methods_param_cursor(c, IFACE, &paged, &page.after, &unused) < 0)
                return;
        if (user && !*user) {
                invalid_argument(c, "user_id", "must not be empty");
                return;
        }
        if (limit < 1 || limit > LIST_MAX_LIMIT) {
                invalid_argument(c, "limit", "must be between 1 and 100000");
                return;
        }
        /* Without a cursor: the whole listing in one reply, built a page
         * per loop iteration (methods_listing.c). */
        if (!paged) {
                methods_list_sessions_steps(d, c, IFACE, user, include_ended, false, (unsigned) limit);
                return;
        }
        /* With a cursor: one page of at most `limit` (methods_page.c). */
        if (limit > METHODS_PAGE_MAX)
                limit = METHODS_PAGE_MAX;
        methods_sessions_page(
                d, c, IFACE,
                &(struct engine_list_ask){
                        .user_id = user, .include_ended = include_ended, .limit = (unsigned) limit, .page = page});
}

/* The "id" parameter, a well-formed public session id; < 0: answered. */
static int param_session_id(struct call *c, const char **ret) {
        uint8_t raw[TOKEN_ID_BYTES];

        if (methods_param_string(c, IFACE, "id", true, ret) < 0)
                return -EINVAL;
        if (token_id_parse(*ret, raw) < 0) {
                invalid_argument(c, "id", "not a session id (22 base64url characters)");
                return -EINVAL;
        }
        return 0;
}

/* One session by public id, live (from memory, through the engine) or
 * ended and still retained (from the store): what `sessionctl show` needs,
 * without walking a listing. */
static void method_get_session(struct daemon *d, struct call *c) {
        const char *id;

        if (param_session_id(c, &id) < 0)
                return;
        methods_sessions_page(d, c, IFACE, &(struct engine_list_ask){.id = id});
}

struct terminate_call {
        struct call *call;
        struct daemon *d;
        struct engine_page_read *read;
};

static void terminate_cancel(struct call *c, void *userdata) {
        struct terminate_call *t = userdata;

        (void) c;
        engine_page_read_detach(t->read);
        free(t);
}

/* The session was ended (a write: the reply waits for its commit), or r. */
static void terminate_done(int r, const struct engine_page *page, void *userdata) {
        struct terminate_call *t = userdata;

        (void) page;
        call_set_cancel(t->call, NULL, NULL);
        if (r < 0)
                methods_reply_error(t->call, IFACE, r, &(struct engine_error){0});
        else {
                call_mark_write(t->call);
                call_reply(t->call, json_object());
        }
        free(t);
}

/* The row is looked up by id (after the store's next commit on a fleet),
 * then the session is ended in memory and in the store. A stopping daemon
 * answers it, as it answers every write under way (call_set_detach). */
static void method_terminate(struct daemon *d, struct call *c) {
        struct terminate_call *t;
        struct engine_page_read *read = NULL;
        const char *id;
        int r;

        if (param_session_id(c, &id) < 0)
                return;
        t = calloc(1, sizeof *t);
        if (!t) {
                methods_reply_oom(c);
                return;
        }
        t->call = c;
        t->d = d;
        r = engine_terminate_later(d->engine, methods_now_ms(), id, terminate_done, t, &read);
        if (r < 0) {
                free(t);
                methods_reply_error(c, IFACE, r, &(struct engine_error){0});
                return;
        }
        if (read) {
                t->read = read;
                call_set_detach(c, terminate_cancel, t);
        }
}

/* In steps for a user with many sessions (methods_bulk.c). */
static void method_terminate_user(struct daemon *d, struct call *c) {
        const char *user;

        if (methods_param_string(c, IFACE, "user_id", true, &user) < 0)
                return;
        if (!*user) {
                invalid_argument(c, "user_id", "must not be empty");
                return;
        }
        methods_bulk_end_user(d, c, IFACE, methods_now_ms(), user, 0, ENGINE_END_TERMINATED);
}

const struct method methods_admin[] = {
        {"Status", method_status, false},
        {"GetConfig", method_get_config, false},
        {"Reload", method_reload, false},
        {"ListSessions", method_list_sessions, false},
        {"GetSession", method_get_session, false},
        {"Terminate", method_terminate, false},
        {"TerminateUser", method_terminate_user, false},
};
const size_t methods_admin_count = sizeof methods_admin / sizeof methods_admin[0];
