/* Varlink messages: parsing calls and replies.
 *
 * A message is parsed by jansson, but never before a cheap pre-scan has
 * checked its nesting: a run of 100,000 '[' would otherwise make the parser
 * recurse (jansson's own limit is 2048 levels, far more than any Varlink
 * message needs, and the walk of a deep tree by the caller recurses too).
 * The pre-scan tracks only brackets outside strings, so it is one linear
 * pass with no allocation; a message that passes it can be walked
 * recursively by anyone.
 *
 * Rules, chosen to make a confused or hostile peer visible early:
 *  - duplicate keys in any object are a protocol error (JSON_REJECT_DUPLICATES),
 *    so "method" or a parameter can never mean two things to two readers;
 *  - "method" is required and must be "interface.Method" with the names of
 *    the Varlink grammar; "parameters", when present, must be an object or
 *    null (null or absent means no parameters, an empty object: the Go
 *    reference implementation sends "parameters": null for every call
 *    without any);
 *    "oneway", "more", "upgrade" and "continues" must be booleans;
 *  - "oneway" with "more" is contradictory and rejected; so is an error
 *    reply that says it "continues";
 *  - unknown top-level keys are ignored, as the Varlink specification asks
 *    for forward compatibility.
 * Every violation is -EBADMSG; the caller decides to close the connection.
 *
 * Calls go to the scanner of scan.c first, which reads the common ones
 * without jansson; this parser is the authority for everything else.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "macro.h" /* lib/common: SESSIOND_EXPORT */
#include "sessiond/varlink.h"
#include "varlink/scan.h"

/* Fails when brackets outside strings nest deeper than VARLINK_MAX_DEPTH.
 * The JSON itself is validated later by jansson; this only has to be exact
 * about string boundaries so that brackets inside strings are not counted. */
static int json_depth_check(const char *s, size_t len) {
        unsigned depth = 0;
        bool in_string = false;

        for (size_t i = 0; i < len; i++) {
                char ch = s[i];

                if (in_string) {
                        if (ch == '\\')
                                i++; /* skip the escaped character */
                        else if (ch == '"')
                                in_string = false;
                        continue;
                }
                switch (ch) {
                case '"':
                        in_string = true;
                        break;
                case '[':
                case '{':
                        if (++depth > VARLINK_MAX_DEPTH)
                                return -EBADMSG;
                        break;
                case ']':
                case '}':
                        if (depth > 0)
                                depth--;
                        break;
                default:
                        break;
                }
        }
        return 0;
}

static int json_parse_object(const char *msg, size_t len, json_t **ret) {
        json_error_t error;
        json_t *root;

        if (!msg || len == 0)
                return -EBADMSG;
        if (json_depth_check(msg, len) < 0)
                return -EBADMSG;
        root = json_loadb(msg, len, JSON_REJECT_DUPLICATES, &error);
        if (!root)
                return json_error_code(&error) == json_error_out_of_memory ? -ENOMEM : -EBADMSG;
        if (!json_is_object(root)) {
                json_decref(root);
                return -EBADMSG;
        }
        *ret = root;
        return 0;
}

/* Reads an optional boolean member: absent is false, anything else than a
 * boolean is an error. */
static int object_get_flag(json_t *root, const char *key, bool *ret) {
        json_t *v = json_object_get(root, key);

        if (!v) {
                *ret = false;
                return 0;
        }
        if (!json_is_boolean(v))
                return -EBADMSG;
        *ret = json_is_true(v);
        return 0;
}

/* Returns the "parameters" member, made an empty object when absent or null. */
static int object_get_parameters(json_t *root, json_t **ret) {
        json_t *p = json_object_get(root, "parameters");

        if (!p || json_is_null(p)) {
                p = json_object();
                if (!p)
                        return -ENOMEM;
                if (json_object_set_new(root, "parameters", p) < 0)
                        return -ENOMEM;
        } else if (!json_is_object(p))
                return -EBADMSG;
        *ret = p;
        return 0;
}

static bool char_is_alpha(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool char_is_alnum(char c) {
        return char_is_alpha(c) || (c >= '0' && c <= '9');
}

/* Interface names of the Varlink grammar: at least two dot-separated
 * components; the first starts with a letter; a component is letters and
 * digits, with dashes allowed only between them ("org.example.foo-bar"). */
static bool interface_name_is_valid(const char *s, size_t len) {
        size_t components = 0, i = 0;

        if (len == 0 || !char_is_alpha(s[0]))
                return false;
        for (;;) {
                size_t b = i;

                while (i < len && s[i] != '.') {
                        if (!char_is_alnum(s[i]) && s[i] != '-')
                                return false;
                        i++;
                }
                /* a component is non-empty and starts and ends with a letter or digit */
                if (i == b || s[b] == '-' || s[i - 1] == '-')
                        return false;
                components++;
                if (i == len)
                        break;
                i++; /* the dot */
        }
        return components >= 2;
}

/* Method and error names: [A-Z][A-Za-z0-9]* */
static bool member_name_is_valid(const char *s) {
        if (!(s[0] >= 'A' && s[0] <= 'Z'))
                return false;
        for (const char *p = s + 1; *p; p++)
                if (!char_is_alnum(*p))
                        return false;
        return true;
}

SESSIOND_EXPORT const char *varlink_method_split(const char *method, char *iface, size_t size) {
        const char *dot;
        size_t n;

        if (!method)
                return NULL;
        dot = strrchr(method, '.');
        if (!dot)
                return NULL;
        n = (size_t) (dot - method);
        if (!interface_name_is_valid(method, n) || !member_name_is_valid(dot + 1))
                return NULL;
        if (iface) {
                if (n >= size)
                        return NULL;
                memcpy(iface, method, n);
                iface[n] = '\0';
        }
        return dot + 1;
}

int varlink_call_parse_json(const char *msg, size_t len, struct varlink_call *ret) {
        struct varlink_call c = {};
        json_t *m;
        _cleanup_json_ json_t *root = NULL; /* c.root once it all went well */
        int r;

        assert(ret);

        r = json_parse_object(msg, len, &root);
        if (r < 0)
                return r;

        m = json_object_get(root, "method");
        if (!json_is_string(m) || !varlink_method_split(json_string_value(m), NULL, 0))
                return -EBADMSG;
        c.method = json_string_value(m);

        r = object_get_parameters(root, &c.parameters);
        if (r < 0)
                return r;
        r = object_get_flag(root, "oneway", &c.oneway);
        if (r < 0)
                return r;
        r = object_get_flag(root, "more", &c.more);
        if (r < 0)
                return r;
        r = object_get_flag(root, "upgrade", &c.upgrade);
        if (r < 0)
                return r;
        if (c.oneway && c.more)
                return -EBADMSG;

        c.root = TAKE_PTR(root);
        *ret = c;
        return 0;
}

/* The scanner (scan.c) first: it takes the common calls without building
 * JSON objects, and passes everything else on to jansson. */
SESSIOND_EXPORT int varlink_call_parse(const char *msg, size_t len, struct varlink_call *ret) {
        int r = varlink_call_scan(msg, len, ret);

        if (r != -EAGAIN)
                return r;
        return varlink_call_parse_json(msg, len, ret);
}

SESSIOND_EXPORT json_t *varlink_call_parameters(struct varlink_call *c) {
        assert(c);
        assert(c->root || c->scanned);
        if (!c->parameters && c->scanned && varlink_scanned_parameters(c->scanned, &c->parameters) < 0)
                return NULL;
        return c->parameters;
}

SESSIOND_EXPORT void varlink_call_clear(struct varlink_call *c) {
        if (!c)
                return;
        if (c->scanned) {
                /* The parameters were made from the scanner's text. */
                json_decref(c->parameters);
                varlink_scanned_free(c->scanned);
        }
        json_decref(c->root);
        *c = (struct varlink_call){};
}

SESSIOND_EXPORT int varlink_reply_parse(const char *msg, size_t len, struct varlink_reply *ret) {
        struct varlink_reply rp = {};
        json_t *e;
        _cleanup_json_ json_t *root = NULL; /* rp.root once it all went well */
        int r;

        assert(ret);

        r = json_parse_object(msg, len, &root);
        if (r < 0)
                return r;

        e = json_object_get(root, "error");
        if (e) {
                if (!json_is_string(e) || !varlink_method_split(json_string_value(e), NULL, 0))
                        return -EBADMSG;
                rp.error = json_string_value(e);
        }

        r = object_get_parameters(root, &rp.parameters);
        if (r < 0)
                return r;
        r = object_get_flag(root, "continues", &rp.continues);
        if (r < 0)
                return r;
        if (rp.error && rp.continues)
                return -EBADMSG;

        rp.root = TAKE_PTR(root);
        *ret = rp;
        return 0;
}

SESSIOND_EXPORT void varlink_reply_clear(struct varlink_reply *r) {
        if (!r)
                return;
        json_decref(r->root);
        *r = (struct varlink_reply){};
}
