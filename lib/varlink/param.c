/* Typed lookups of call parameters, for method handlers.
 *
 * Varlink's optional fields (`?string`) may be absent or null; both mean
 * "not given" and answer -ENOENT, leaving the caller's default in place.
 * A present value of the wrong type is -EINVAL, which the daemon turns into
 * org.varlink.service.InvalidParameter naming the key. Integers must be JSON
 * integers: 3.0 or "3" is not an int.
 */
#include <assert.h>
#include <errno.h>

#include "macro.h" /* lib/common: SESSIOND_EXPORT */
#include "sessiond/varlink.h"
#include "varlink/scan.h"

static json_t *param_get(json_t *params, const char *key) {
        json_t *v;

        assert(key);
        if (!json_is_object(params))
                return NULL;
        v = json_object_get(params, key);
        return json_is_null(v) ? NULL : v;
}

SESSIOND_EXPORT int varlink_param_string(json_t *params, const char *key, const char **ret) {
        json_t *v = param_get(params, key);

        assert(ret);
        if (!v)
                return -ENOENT;
        if (!json_is_string(v))
                return -EINVAL;
        *ret = json_string_value(v);
        return 0;
}

SESSIOND_EXPORT int varlink_param_int(json_t *params, const char *key, int64_t *ret) {
        json_t *v = param_get(params, key);

        assert(ret);
        if (!v)
                return -ENOENT;
        if (!json_is_integer(v))
                return -EINVAL;
        *ret = (int64_t) json_integer_value(v);
        return 0;
}

SESSIOND_EXPORT int varlink_param_bool(json_t *params, const char *key, bool *ret) {
        json_t *v = param_get(params, key);

        assert(ret);
        if (!v)
                return -ENOENT;
        if (!json_is_boolean(v))
                return -EINVAL;
        *ret = json_is_true(v);
        return 0;
}

SESSIOND_EXPORT int varlink_param_object(json_t *params, const char *key, json_t **ret) {
        json_t *v = param_get(params, key);

        assert(ret);
        if (!v)
                return -ENOENT;
        if (!json_is_object(v))
                return -EINVAL;
        *ret = v;
        return 0;
}

/* The same lookups over a call, whichever parser read it: the scanner's
 * table (no JSON objects), or jansson's tree. */
SESSIOND_EXPORT int varlink_call_param(struct varlink_call *c, const char *object, const char *key,
                                       struct varlink_value *ret) {
        json_t *params, *v;

        assert(c && key && ret);
        if (c->scanned)
                return varlink_scanned_param(c->scanned, object, key, ret);
        params = c->parameters;
        assert(json_is_object(params));
        if (object) {
                params = param_get(params, object);
                if (!params)
                        return -ENOENT;
                if (!json_is_object(params))
                        return -EINVAL;
        }
        v = param_get(params, key);
        if (!v)
                return -ENOENT;
        *ret = (struct varlink_value){};
        switch (json_typeof(v)) {
        case JSON_OBJECT:
                ret->type = VARLINK_VALUE_OBJECT;
                break;
        case JSON_ARRAY:
                ret->type = VARLINK_VALUE_ARRAY;
                break;
        case JSON_STRING:
                ret->type = VARLINK_VALUE_STRING;
                ret->string = json_string_value(v);
                ret->length = json_string_length(v);
                break;
        case JSON_INTEGER:
                ret->type = VARLINK_VALUE_INTEGER;
                ret->integer = (int64_t) json_integer_value(v);
                break;
        case JSON_REAL:
                ret->type = VARLINK_VALUE_REAL;
                ret->real = json_real_value(v);
                break;
        case JSON_TRUE:
        case JSON_FALSE:
                ret->type = VARLINK_VALUE_BOOLEAN;
                ret->boolean = json_is_true(v);
                break;
        case JSON_NULL:
        default:
                assert(!"param_get() returns no null");
                return -ENOENT;
        }
        return 0;
}
