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
                                f->methods[k].handler(d, c);
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

json_t *methods_session_info(const struct engine_info *i) {
        json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:s}", "id", i->id, "user_id", i->user_id,
                              "created_at", (json_int_t)i->created_at, "last_activity", (json_int_t)i->last_activity,
                              "renewed_at", (json_int_t)i->renewed_at, "expires_at", (json_int_t)i->expires_at,
                              "state", engine_state_to_string(i->state));

        if (!o)
                return NULL;
        /* Optional fields are left out rather than null, as Varlink does. */
        if ((i->platform_id && json_object_set_new(o, "platform_id", json_string(i->platform_id)) < 0) ||
            (i->ip && json_object_set_new(o, "ip", json_string(i->ip)) < 0) ||
            (i->user_agent && json_object_set_new(o, "user_agent", json_string(i->user_agent)) < 0) ||
            (i->state == ENGINE_STATE_ENDED &&
             (json_object_set_new(o, "ended_at", json_integer(i->ended_at)) < 0 ||
              json_object_set_new(o, "end_reason", json_string(engine_end_reason_to_string(i->end_reason))) < 0))) {
                json_decref(o);
                return NULL;
        }
        return o;
}

static void error_named(struct call *c, const char *iface, const char *name, json_t *params) {
        char full[128];

        snprintf(full, sizeof full, "%s.%s", iface, name);
        call_error(c, full, params);
}

void methods_reply_oom(struct call *c) {
        call_error(c, "io.sessiond.Session.StorageError", json_pack("{s:s}", "reason", strerror(ENOMEM)));
}

void methods_reply_error(struct call *c, const char *iface, int r, const struct engine_error *err) {
        const char *session = METHODS_SESSION_INTERFACE;

        switch (r) {
        case -EINVAL:
                error_named(c, iface, "InvalidArgument",
                            json_pack("{s:s, s:s}", "field", err->field ? err->field : "",
                                      "reason", err->reason ? err->reason : "invalid"));
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
                error_named(c, session, "RateLimited", json_pack("{s:I}", "retry_after", (json_int_t)err->retry_after));
                return;
        case -E2BIG:
                error_named(c, session, "TooLarge", json_pack("{s:I}", "max", (json_int_t)err->max));
                return;
        case -EAGAIN:
                error_named(c, session, "Conflict", json_pack("{s:I}", "version", (json_int_t)err->version));
                return;
        case -EOPNOTSUPP:
                error_named(c, session, "FeatureDisabled", json_pack("{s:s}", "feature", err->feature ? err->feature : ""));
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

/* A string parameter must not hide a NUL: the engine takes C strings. */
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
