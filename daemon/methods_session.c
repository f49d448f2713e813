/* io.sessiond.Session: the methods a web application calls.
 *
 * Each handler reads its parameters (wrong JSON types answer
 * org.varlink.service.InvalidParameter naming the parameter), calls the
 * engine with the wall clock, and turns the result into the reply or the
 * interface's error. A handler whose operation wrote to the store marks its
 * call, so that the server holds the reply until the write is committed.
 *
 * Replies about one session carry SessionInfo from memory: its ip and
 * user_agent, which only the store holds, appear in Create's reply (they
 * were just given) and in listings, not in the per-request answers.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "engine.h"
#include "methods.h"
#include "server.h"
#include "sessiond/config.h"
#include "sessiond/varlink.h"
#include "watch.h"

#define IFACE METHODS_SESSION_INTERFACE

/* The replies that carry a SessionInfo, and the other hot ones, are
 * written straight into their wire buffer by the reply writer (no jansson
 * objects): reply_begin() opens the parameters, the handler writes its own
 * members, reply_session() adds "session" last (where the members appeared
 * when these replies were built with jansson) and sends the reply. */
static void reply_begin(struct varlink_writer *w) {
        varlink_writer_init(w);
        varlink_writer_begin_reply(w);
        varlink_writer_object_begin(w);
}

static void reply_session(struct call *c, struct varlink_writer *w, const struct engine_info *info) {
        varlink_writer_key(w, "session");
        methods_session_info_write(w, info);
        varlink_writer_object_end(w);
        methods_reply_written(c, w); /* reports any error of the writes above */
}

static void method_create(struct daemon *d, struct call *c) {
        struct engine_create a = {0};
        struct engine_created created;
        struct engine_error err = {0};
        uint64_t seq = engine_write_seq(d->engine);
        struct varlink_writer w;
        bool given;
        int r;

        if (methods_param_string(c, IFACE, "user_id", true, &a.user_id) < 0 ||
            methods_param_string(c, IFACE, "platform_id", false, &a.platform_id) == -EINVAL ||
            methods_param_client(c, IFACE, &a.client, &given) < 0)
                return;
        /* Sync data is stored as bytes: take its length. */
        if (methods_param_bytes(c, "sync_data", &a.sync_data, &a.sync_size) == -EINVAL)
                return;

        r = engine_create(d->engine, methods_now_ms(), &a, &created, &err);
        if (r < 0) {
                methods_reply_error(c, IFACE, r, &err);
                return;
        }
        methods_mark_write(c, d, seq);
        reply_begin(&w);
        varlink_writer_key(&w, "token");
        varlink_writer_string(&w, created.token);
        varlink_writer_key(&w, "evicted");
        varlink_writer_array_begin(&w);
        for (size_t i = 0; i < created.n_evicted; i++)
                varlink_writer_string(&w, created.evicted[i]);
        varlink_writer_array_end(&w);
        reply_session(c, &w, &created.info);
        engine_created_clear(&created);
}

static int param_token(struct call *c, const char **ret) {
        return methods_param_string(c, IFACE, "token", true, ret);
}

static void method_validate(struct daemon *d, struct call *c) {
        struct engine_error err = {0};
        struct engine_client client;
        struct engine_info info;
        uint64_t seq = engine_write_seq(d->engine);
        struct varlink_writer w;
        const char *token;
        bool touch = true, given;
        int r;

        if (param_token(c, &token) < 0 || methods_param_client(c, IFACE, &client, &given) < 0 ||
            methods_param_bool(c, "touch", &touch) == -EINVAL)
                return;
        r = engine_validate(d->engine, methods_now_ms(), token, given ? &client : NULL, touch, &info, &err);
        if (r < 0) {
                methods_reply_error(c, IFACE, r, &err);
                return;
        }
        methods_mark_write(c, d, seq);
        reply_begin(&w);
        varlink_writer_key(&w, "state");
        varlink_writer_string(&w, engine_state_to_string(info.state));
        varlink_writer_key(&w, "expires_in");
        varlink_writer_int(&w, info.expires_in);
        varlink_writer_key(&w, "warning");
        varlink_writer_bool(&w, info.warning);
        reply_session(c, &w, &info);
}

static void method_heartbeat(struct daemon *d, struct call *c) {
        struct engine_error err = {0};
        struct engine_info info;
        struct varlink_writer w;
        const char *token;
        int r;

        if (param_token(c, &token) < 0)
                return;
        r = engine_heartbeat(d->engine, methods_now_ms(), token, &info, &err);
        if (r < 0) {
                methods_reply_error(c, IFACE, r, &err);
                return;
        }
        reply_begin(&w);
        varlink_writer_key(&w, "expires_in");
        varlink_writer_int(&w, info.expires_in);
        varlink_writer_key(&w, "warning");
        varlink_writer_bool(&w, info.warning);
        varlink_writer_object_end(&w);
        methods_reply_written(c, &w);
}

static void method_extend(struct daemon *d, struct call *c) {
        struct engine_error err = {0};
        struct engine_info info;
        uint64_t seq = engine_write_seq(d->engine);
        struct varlink_writer w;
        const char *token;
        int r;

        if (param_token(c, &token) < 0)
                return;
        r = engine_extend(d->engine, methods_now_ms(), token, &info, &err);
        if (r < 0) {
                methods_reply_error(c, IFACE, r, &err);
                return;
        }
        methods_mark_write(c, d, seq);
        reply_begin(&w);
        varlink_writer_key(&w, "expires_in");
        varlink_writer_int(&w, info.expires_in);
        reply_session(c, &w, &info);
}

static void method_rotate(struct daemon *d, struct call *c) {
        struct engine_error err = {0};
        struct engine_info info;
        char token[TOKEN_STRING_LEN + 1];
        uint64_t seq = engine_write_seq(d->engine);
        struct varlink_writer w;
        const char *old;
        int r;

        if (param_token(c, &old) < 0)
                return;
        r = engine_rotate(d->engine, methods_now_ms(), old, token, &info, &err);
        if (r < 0) {
                methods_reply_error(c, IFACE, r, &err);
                return;
        }
        methods_mark_write(c, d, seq);
        reply_begin(&w);
        varlink_writer_key(&w, "token");
        varlink_writer_string(&w, token);
        reply_session(c, &w, &info);
        memset(token, 0, sizeof token);
}

/* On a shared store a switch is answered when its unit of work is done
 * (engine_switch_platform_later): the call detaches if its peer goes
 * first; a stop waits for its answer. */
static void switch_cancel(struct call *c, void *userdata) {
        (void) c;
        engine_switch_detach(userdata);
}

static void switch_done(int r, const struct engine_info *info, const struct engine_error *err, void *userdata) {
        struct call *c = userdata;
        struct varlink_writer w;

        call_set_cancel(c, NULL, NULL);
        if (r < 0) {
                methods_reply_error(c, IFACE, r, err);
                return;
        }
        reply_begin(&w);
        reply_session(c, &w, info);
}

static void switch_platform_later(struct daemon *d, struct call *c, const char *token, const char *platform) {
        struct engine_switch_wait *wait = NULL;
        struct engine_error err = {0};
        struct engine_info info;
        struct varlink_writer w;
        int r = engine_switch_platform_later(d->engine, methods_now_ms(), token, platform, switch_done, c, &wait, &info,
                                             &err);

        if (r < 0)
                methods_reply_error(c, IFACE, r, &err);
        else if (wait)
                call_set_detach(c, switch_cancel, wait);
        else {
                reply_begin(&w);
                reply_session(c, &w, &info);
        }
}

static void method_switch_platform(struct daemon *d, struct call *c) {
        struct engine_error err = {0};
        struct engine_info info;
        uint64_t seq = engine_write_seq(d->engine);
        struct varlink_writer w;
        const char *token, *platform;
        int r;

        if (param_token(c, &token) < 0 || methods_param_string(c, IFACE, "platform_id", true, &platform) < 0)
                return;
        if (engine_switch_decided_by_store(d->engine)) {
                switch_platform_later(d, c, token, platform);
                return;
        }
        r = engine_switch_platform(d->engine, methods_now_ms(), token, platform, &info, &err);
        if (r < 0) {
                methods_reply_error(c, IFACE, r, &err);
                return;
        }
        methods_mark_write(c, d, seq);
        reply_begin(&w);
        reply_session(c, &w, &info);
}

static void sync_state_reply(struct call *c, int64_t version, const char *data, size_t size) {
        json_t *reply = json_pack("{s:I}", "version", (json_int_t) version);

        if (reply && data && json_object_set_new(reply, "data", json_stringn(data, size)) < 0) {
                json_decref(reply);
                reply = NULL;
        }
        if (!reply)
                methods_reply_oom(c);
        else
                call_reply(c, reply);
}

/* On a fleet's store the state is read after the next commit, off the
 * loop (engine_sync_get_later): the call waits, detached if its peer goes. */
static void sync_got(int r, int64_t version, const char *data, size_t size, void *userdata) {
        struct engine_error err = {0};
        struct call *c = userdata;

        call_set_cancel(c, NULL, NULL);
        if (r < 0)
                methods_reply_error(c, IFACE, r, &err);
        else
                sync_state_reply(c, version, data, size);
}

static void sync_read_cancel(struct call *c, void *userdata) {
        (void) c;
        engine_sync_read_detach(userdata);
}

static void method_get_sync_state(struct daemon *d, struct call *c) {
        struct engine_error err = {0};
        struct engine_sync_read *x = NULL;
        const char *token;
        int64_t version = 0;
        char *data = NULL;
        size_t size = 0;
        int r;

        if (param_token(c, &token) < 0)
                return;
        if (engine_sync_reads_later(d->engine)) {
                r = engine_sync_get_later(d->engine, methods_now_ms(), token, sync_got, c, &x, &err);
                if (r < 0)
                        methods_reply_error(c, IFACE, r, &err);
                else
                        call_set_detach(c, sync_read_cancel, x);
                return;
        }
        r = engine_sync_get(d->engine, methods_now_ms(), token, &version, &data, &size, &err);
        if (r < 0) {
                methods_reply_error(c, IFACE, r, &err);
                return;
        }
        sync_state_reply(c, version, data, size);
        free(data);
}

/* SetSyncState is answered when its unit of work is done (engine_sync_set):
 * the call detaches if its peer goes first; a stop waits for its answer. */
static void sync_set_cancel(struct call *c, void *userdata) {
        (void) c;
        engine_sync_detach(userdata);
}

static void sync_set_done(int r, const struct engine_error *err, void *userdata) {
        struct call *c = userdata;

        call_set_cancel(c, NULL, NULL);
        if (r < 0)
                methods_reply_error(c, IFACE, r, err);
        else
                call_reply(c, json_pack("{s:I}", "version", (json_int_t) err->version));
}

static void method_set_sync_state(struct daemon *d, struct call *c) {
        struct engine_error err = {0};
        struct engine_sync_wait *w = NULL;
        int64_t expected = -1;
        const char *token, *data = NULL;
        size_t size = 0;
        int r;

        if (param_token(c, &token) < 0)
                return;
        r = methods_param_bytes(c, "data", &data, &size);
        if (r == -ENOENT)
                call_error_invalid_parameter(c, "data"); /* required */
        if (r < 0)
                return;
        r = methods_param_int(c, "expected_version", &expected);
        if (r == -EINVAL)
                return;
        if (r == 0 && expected < 0) {
                call_error(c, IFACE ".InvalidArgument",
                           json_pack("{s:s, s:s}", "field", "expected_version", "reason", "must not be negative"));
                return;
        }
        r = engine_sync_set(d->engine, methods_now_ms(), token, data, size, expected, sync_set_done, c, &w, &err);
        if (r < 0) {
                methods_reply_error(c, IFACE, r, &err);
                return;
        }
        call_set_detach(c, sync_set_cancel, w);
}

static void method_watch(struct daemon *d, struct call *c) {
        const char *token;

        if (!call_wants_more(c)) {
                call_error(c, VARLINK_ERROR_EXPECTED_MORE, json_object());
                return;
        }
        if (param_token(c, &token) < 0)
                return;
        watch_start(d, c, token);
}

static void method_destroy(struct daemon *d, struct call *c) {
        struct engine_error err = {0};
        uint64_t seq = engine_write_seq(d->engine);
        struct varlink_writer w;
        const char *token;
        int r;

        if (param_token(c, &token) < 0)
                return;
        r = engine_destroy(d->engine, methods_now_ms(), token, &err);
        if (r < 0) {
                methods_reply_error(c, IFACE, r, &err);
                return;
        }
        methods_mark_write(c, d, seq);
        reply_begin(&w);
        varlink_writer_object_end(&w);
        methods_reply_written(c, &w);
}

/* In steps for a user with many sessions (methods_bulk.c). */
static void method_destroy_user(struct daemon *d, struct call *c) {
        struct engine_error err = {0};
        int64_t now = methods_now_ms(), except_row_key;
        const char *user, *except = NULL;
        int r;

        if (methods_param_string(c, IFACE, "user_id", true, &user) < 0 ||
            methods_param_string(c, IFACE, "except_token", false, &except) == -EINVAL)
                return;
        r = engine_destroy_user_check(d->engine, now, user, except, &except_row_key, &err);
        if (r < 0) {
                methods_reply_error(c, IFACE, r, &err);
                return;
        }
        methods_bulk_end_user(d, c, IFACE, now, user, except_row_key, ENGINE_END_DESTROYED);
}

/* With `cursor`, a page (methods_page.c). */
static void method_list_user(struct daemon *d, struct call *c) {
        struct engine_page page = {.scan_max = METHODS_PAGE_SCAN};
        const char *user;
        int64_t unused;
        bool paged;

        if (methods_param_string(c, IFACE, "user_id", true, &user) < 0 ||
            methods_param_cursor(c, IFACE, &paged, &page.after, &unused) < 0)
                return;
        /* Without a cursor: every live session in one reply, built a page
         * per loop iteration (methods_listing.c). */
        if (!paged) {
                methods_list_sessions_steps(d, c, IFACE, user, false, true, UINT_MAX);
                return;
        }
        methods_sessions_page(d, c, IFACE,
                              &(struct engine_list_ask){
                                      .user_id = user, .user_listing = true, .limit = METHODS_PAGE_MAX, .page = page});
}

static void method_get_client_config(struct daemon *d, struct call *c) {
        json_t *config = sessiond_config_client_json(d->config);

        if (!config) {
                methods_reply_oom(c);
                return;
        }
        call_reply(c, json_pack("{s:o}", "config", config));
}

const struct method methods_session[] = {
        {"Create", method_create, false},
        {"Validate", method_validate, true},
        {"Heartbeat", method_heartbeat, true},
        {"Extend", method_extend, true},
        {"Rotate", method_rotate, true},
        {"SwitchPlatform", method_switch_platform, true},
        {"GetSyncState", method_get_sync_state, true},
        {"SetSyncState", method_set_sync_state, true},
        {"Watch", method_watch, true},
        {"Destroy", method_destroy, true},
        {"DestroyUser", method_destroy_user, false},
        {"ListUser", method_list_user, false},
        {"GetClientConfig", method_get_client_config, false},
};
const size_t methods_session_count = sizeof methods_session / sizeof methods_session[0];
