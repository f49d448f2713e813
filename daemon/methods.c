/* Routing of method calls and the helpers shared by the handlers.
 *
 * The server hands every call of an interface other than
 * org.varlink.service here, after its admin check. The interface is looked
 * up in a small table, then the method in that interface's table (both are
 * short and fixed: a linear search beats anything clever). An unknown
 * interface answers org.varlink.service.InterfaceNotFound {"interface": ...},
 * an unknown method MethodNotFound {"method": ...} with the full name, as the
 * Varlink service interface defines them.
 */
#include "methods.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "daemon.h"
#include "engine.h"
#include "server.h"
#include "sessiond/varlink.h"

struct interface {
        const char *name;
        const struct method *methods;
        const size_t *count;
};

static const struct interface interfaces[] = {
        {METHODS_SESSION_INTERFACE, methods_session, &methods_session_count},
        {METHODS_ADMIN_INTERFACE, methods_admin, &methods_admin_count},
        /* io.sessiond.Admin continued: observability (methods_observe.c). */
        {METHODS_ADMIN_INTERFACE, methods_observe, &methods_observe_count},
};

void methods_dispatch(struct daemon *d, struct call *c) {
        const char *full = call_method(c), *name;
        bool known = false;
        char iface[256];

        name = varlink_method_split(full, iface, sizeof iface);
        if (!name) {
                /* The server parsed it, so this cannot happen; answer anyway. */
                call_error(c, VARLINK_ERROR_METHOD_NOT_FOUND, json_pack("{s:s}", "method", full));
                return;
        }
        for (size_t i = 0; i < sizeof interfaces / sizeof interfaces[0]; i++) {
                const struct interface *f = &interfaces[i];

                if (strcmp(f->name, iface) != 0)
                        continue;
                known = true;
                for (size_t k = 0; k < *f->count; k++)
                        if (strcmp(f->methods[k].name, name) == 0) {
                                if (d->engine)
                                        engine_fetch_allow(d->engine, f->methods[k].token_fetch);
                                f->methods[k].handler(d, c);
                                if (d->engine)
                                        engine_fetch_allow(d->engine, false);
                                return;
                        }
        }
        if (known)
                call_error(c, VARLINK_ERROR_METHOD_NOT_FOUND, json_pack("{s:s}", "method", full));
        else
                call_error(c, VARLINK_ERROR_INTERFACE_NOT_FOUND, json_pack("{s:s}", "interface", iface));
}

int64_t methods_now(void) {
        return clock_now();
}

int64_t methods_now_ms(void) {
        return clock_now_ms();
}

/* SessionInfo is encoded two ways: written straight into a reply by the
 * reply writer (the per-request answers: Validate, Create...), and as a
 * jansson object where it is part of something larger (Watch events,
 * listings). Both take their members from session_info_fields(), the one
 * list of the type's fields and of which ones are optional, so the two
 * cannot disagree; and both keep its order, so the bytes are the same. */
#define SESSION_INFO_MAX_FIELDS 12

struct session_info_field {
        const char *key;
        const char *string; /* NULL: the value is `integer` */
        int64_t integer;
};

static size_t session_info_fields(const struct engine_info *i, struct session_info_field f[SESSION_INFO_MAX_FIELDS]) {
        size_t n = 0;

        f[n++] = (struct session_info_field){"id", i->id, 0};
        f[n++] = (struct session_info_field){"user_id", i->user_id, 0};
        f[n++] = (struct session_info_field){"created_at", NULL, i->created_at};
        f[n++] = (struct session_info_field){"last_activity", NULL, i->last_activity};
        f[n++] = (struct session_info_field){"renewed_at", NULL, i->renewed_at};
        f[n++] = (struct session_info_field){"expires_at", NULL, i->expires_at};
        f[n++] = (struct session_info_field){"state", engine_state_to_string(i->state), 0};
        /* Optional fields are left out rather than null, as Varlink does. */
        if (i->platform_id)
                f[n++] = (struct session_info_field){"platform_id", i->platform_id, 0};
        if (i->ip)
                f[n++] = (struct session_info_field){"ip", i->ip, 0};
        if (i->user_agent)
                f[n++] = (struct session_info_field){"user_agent", i->user_agent, 0};
        if (i->state == ENGINE_STATE_ENDED) {
                f[n++] = (struct session_info_field){"ended_at", NULL, i->ended_at};
                f[n++] = (struct session_info_field){"end_reason", engine_end_reason_to_string(i->end_reason), 0};
        }
        assert(n <= SESSION_INFO_MAX_FIELDS);
        return n;
}

json_t *methods_session_info(const struct engine_info *i) {
        struct session_info_field f[SESSION_INFO_MAX_FIELDS];
        size_t n = session_info_fields(i, f);
        json_t *o = json_object();

        for (size_t k = 0; o && k < n; k++) {
                json_t *v = f[k].string ? json_string(f[k].string) : json_integer(f[k].integer);

                if (json_object_set_new(o, f[k].key, v) < 0) { /* v NULL fails too */
                        json_decref(o);
                        o = NULL;
                }
        }
        return o;
}

int methods_session_info_write(struct varlink_writer *w, const struct engine_info *i) {
        struct session_info_field f[SESSION_INFO_MAX_FIELDS];
        size_t n = session_info_fields(i, f);

        varlink_writer_object_begin(w);
        for (size_t k = 0; k < n; k++) {
                varlink_writer_key(w, f[k].key);
                if (f[k].string)
                        varlink_writer_string(w, f[k].string);
                else
                        varlink_writer_int(w, f[k].integer);
        }
        /* Errors are sticky: the last call reports any. */
        return varlink_writer_object_end(w);
}

void methods_reply_written(struct call *c, struct varlink_writer *w) {
        char *data;
        size_t len;

        if (varlink_writer_finish_reply(w, false, &data, &len) < 0)
                methods_reply_oom(c);
        else
                call_reply_encoded(c, data, len);
}

static void error_named(struct call *c, const char *iface, const char *name, json_t *params) {
        char full[128];

        snprintf(full, sizeof full, "%s.%s", iface, name);
        call_error(c, full, params);
}

void methods_reply_oom(struct call *c) {
        call_error(c, "io.sessiond.Session.StorageError", json_pack("{s:s}", "reason", strerror(ENOMEM)));
}

/* A token being read off the loop (engine_fetch_wait): the call waits, and
 * its method runs again once the token is read; it detaches if its peer
 * goes first, and a stop waits for its answer. */
static void token_fetched(void *userdata) {
        struct call *c = userdata;

        call_set_cancel(c, NULL, NULL);
        methods_dispatch(call_daemon(c), c);
}

static void token_fetch_cancel(struct call *c, void *userdata) {
        (void) c;
        engine_fetch_detach(userdata);
}

static int token_fetch_wait(struct call *c) {
        struct engine_fetch *f = NULL;
        int r = engine_fetch_wait(call_daemon(c)->engine, token_fetched, c, &f);

        if (r < 0)
                return r;
        call_set_detach(c, token_fetch_cancel, f);
        return 0;
}

void methods_reply_error(struct call *c, const char *iface, int r, const struct engine_error *err) {
        const char *session = METHODS_SESSION_INTERFACE;

        if (r == -EINPROGRESS) {
                r = token_fetch_wait(c);
                if (r == 0)
                        return;
                if (r == -EINVAL)
                        r = -EIO; /* no miss recorded: not the caller's fault */
        }
        switch (r) {
        case -EINVAL:
                error_named(c, iface, "InvalidArgument",
                            json_pack("{s:s, s:s}", "field", err->field ? err->field : "", "reason",
                                      err->reason ? err->reason : "invalid"));
                return;
        case -ENOENT:
                error_named(c, iface, "NotFound", json_object());
                return;
        case -ESTALE:
                error_named(c, session, "Expired",
                            json_pack("{s:s}", "reason", engine_end_reason_to_string(err->end_reason)));
                return;
        case -EACCES:
                error_named(c, session, "FingerprintMismatch", json_object());
                return;
        case -EBUSY:
                error_named(c, session, "RateLimited",
                            json_pack("{s:I}", "retry_after", (json_int_t) err->retry_after));
                return;
        case -E2BIG:
                error_named(c, session, "TooLarge", json_pack("{s:I}", "max", (json_int_t) err->max));
                return;
        case -EAGAIN:
                error_named(c, session, "Conflict", json_pack("{s:I}", "version", (json_int_t) err->version));
                return;
        case -EOPNOTSUPP:
                error_named(c, session, "FeatureDisabled",
                            json_pack("{s:s}", "feature", err->feature ? err->feature : ""));
                return;
        case -EUSERS:
                error_named(c, session, "StorageFull", json_pack("{s:s}", "reason", "max_sessions"));
                return;
        case -ENOSPC:
        case -EDQUOT:
                error_named(c, session, "StorageFull", json_pack("{s:s}", "reason", strerror(-r)));
                return;
        default:
                error_named(c, session, "StorageError", json_pack("{s:s}", "reason", strerror(r < 0 ? -r : EIO)));
                return;
        }
}

void methods_mark_write(struct call *c, struct daemon *d, uint64_t seq) {
        if (engine_write_seq(d->engine) != seq)
                call_mark_write(c);
}

/* A string parameter must not hide a NUL: the engine takes C strings. (The
 * parsers refuse "\u0000" today; this keeps the engine safe if they stop.) */
static int param_check_nul(struct call *c, const char *iface, const char *field, const struct varlink_value *v) {
        if (strlen(v->string) == v->length)
                return 0;
        error_named(c, iface, "InvalidArgument",
                    json_pack("{s:s, s:s}", "field", field, "reason", "contains a NUL character"));
        return -EINVAL;
}

int methods_param_string(struct call *c, const char *iface, const char *key, bool required, const char **ret) {
        struct varlink_value v;
        int r = call_param(c, NULL, key, &v);

        if (r == -ENOENT && !required)
                return -ENOENT;
        if (r < 0 || v.type != VARLINK_VALUE_STRING) {
                call_error_invalid_parameter(c, key);
                return -EINVAL;
        }
        if (param_check_nul(c, iface, key, &v) < 0)
                return -EINVAL;
        *ret = v.string;
        return 0;
}

int methods_param_bytes(struct call *c, const char *key, const char **ret, size_t *size) {
        struct varlink_value v;
        int r = call_param(c, NULL, key, &v);

        if (r == -ENOENT)
                return -ENOENT;
        if (r < 0 || v.type != VARLINK_VALUE_STRING) {
                call_error_invalid_parameter(c, key);
                return -EINVAL;
        }
        *ret = v.string;
        *size = v.length;
        return 0;
}

int methods_param_int(struct call *c, const char *key, int64_t *ret) {
        struct varlink_value v;
        int r = call_param(c, NULL, key, &v);

        if (r == -ENOENT)
                return -ENOENT;
        if (r < 0 || v.type != VARLINK_VALUE_INTEGER) {
                call_error_invalid_parameter(c, key);
                return -EINVAL;
        }
        *ret = v.integer;
        return 0;
}

int methods_param_bool(struct call *c, const char *key, bool *ret) {
        struct varlink_value v;
        int r = call_param(c, NULL, key, &v);

        if (r == -ENOENT)
                return -ENOENT;
        if (r < 0 || v.type != VARLINK_VALUE_BOOLEAN) {
                call_error_invalid_parameter(c, key);
                return -EINVAL;
        }
        *ret = v.boolean;
        return 0;
}

int methods_param_client(struct call *c, const char *iface, struct engine_client *ret, bool *given) {
        static const char *const keys[] = {"user_agent", "ip", "accept_language", "accept_encoding"};
        const char **fields[] = {&ret->user_agent, &ret->ip, &ret->accept_language, &ret->accept_encoding};
        struct varlink_value v;
        int r;

        memset(ret, 0, sizeof *ret);
        *given = false;
        r = call_param(c, NULL, "client", &v);
        if (r == -ENOENT)
                return 0;
        if (r < 0 || v.type != VARLINK_VALUE_OBJECT) {
                call_error_invalid_parameter(c, "client");
                return -EINVAL;
        }
        for (size_t i = 0; i < 4; i++) {
                r = call_param(c, "client", keys[i], &v);
                if (r == -ENOENT)
                        continue;
                if (r < 0 || v.type != VARLINK_VALUE_STRING) {
                        call_error_invalid_parameter(c, "client");
                        return -EINVAL;
                }
                if (strlen(v.string) != v.length) {
                        char field[64];

                        snprintf(field, sizeof field, "client.%s", keys[i]);
                        return param_check_nul(c, iface, field, &v);
                }
                *fields[i] = v.string;
        }
        *given = true;
        return 0;
}
