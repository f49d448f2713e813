/* The fast path of call parsing: one pass over the bytes, no JSON objects.
 *
 * Why. Under load the daemon spent about 3.7 us of its ~12 us per Validate
 * in jansson's parser: a lexer fed one byte at a time, a malloc for every
 * string and key, a hash table for every object, all freed again a few
 * microseconds later. The calls web applications send are small and flat:
 * {"method": "...", "parameters": {"token": "...", "client": {"ip": ...}}}.
 * This scanner reads exactly that shape in one pass, decodes the strings
 * into one arena allocated with the call, and keeps the members in a small
 * table that varlink_call_param() searches (a call has a handful of them).
 *
 * Why it is safe. The scanner never rejects anything. It either parses a
 * message, and then jansson would have parsed the same method, flags and
 * values from it, or it answers -EAGAIN and varlink_call_parse() hands the
 * message to the jansson parser (message.c), which stays the one authority
 * on what is valid and on every error. So the scanner may give up whenever
 * it likes, and it does on anything unusual:
 *  - a byte >= 0x80 or a control character in a string (jansson checks
 *    UTF-8 and rejects raw control characters), a \u escape (surrogates,
 *    NUL), any escape not in the short list;
 *  - a number with a fraction or exponent, more than 18 digits, or a
 *    leading zero (jansson's reals, overflow checks and errors apply);
 *  - an array anywhere, an object deeper than parameters.member.member, an
 *    object value among the call's own members;
 *  - a duplicate key (jansson rejects the message: JSON_REJECT_DUPLICATES),
 *    a missing or malformed method, parameters that are neither an object
 *    nor null (null, like an absent member, means no parameters),
 *    flags that are not booleans, oneway with more, trailing bytes;
 *  - more than SCAN_MAX_FIELDS parameters or SCAN_MAX_MEMBERS call members.
 * The fuzz target fuzz-varlink checks the claim on every input it makes:
 * whatever the scanner parses, jansson parses to the same call.
 *
 * The parameters' text is kept (copied into the same allocation), so that a
 * handler that wants a jansson object after all (sync data, admin methods)
 * gets one from varlink_call_parameters(), parsed on first use.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "varlink/scan.h"

#define SCAN_MAX_FIELDS 24 /* parameters and members of object parameters */
#define SCAN_MAX_MEMBERS 8 /* members of the call object itself */

struct scan_field {
        const char *key;
        size_t key_len;
        int parent; /* -1: a member of parameters; else the index of its object */
        struct varlink_value value;
};

struct varlink_scanned {
        struct scan_field fields[SCAN_MAX_FIELDS];
        size_t n_fields;
        const char *params_text; /* in data[]; NULL: the call had no parameters */
        size_t params_len;
        char data[]; /* the parameters' text, then the decoded strings */
};

struct scanner {
        const char *p;
        const char *end;
        char *out; /* next free byte of the string arena */
        char *out_end;
        struct varlink_scanned *scanned;
};

static void scan_skip_space(struct scanner *s) {
        while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
                s->p++;
}

/* Consumes c (after white space) if it is next. */
static bool scan_take(struct scanner *s, char c) {
        scan_skip_space(s);
        if (s->p < s->end && *s->p == c) {
                s->p++;
                return true;
        }
        return false;
}

/* A string, decoded into the arena with a NUL after it. */
static int scan_string(struct scanner *s, const char **ret, size_t *len) {
        char *start = s->out, *o = s->out;

        scan_skip_space(s);
        if (s->p >= s->end || *s->p != '"')
                return -EAGAIN;
        s->p++;
        for (;;) {
                unsigned char ch;

                if (s->p >= s->end)
                        return -EAGAIN;
                ch = (unsigned char) *s->p++;
                if (ch == '"')
                        break;
                if (ch < 0x20 || ch >= 0x80)
                        return -EAGAIN;
                if (ch == '\\') {
                        if (s->p >= s->end)
                                return -EAGAIN;
                        switch (*s->p++) {
                        case '"':
                                ch = '"';
                                break;
                        case '\\':
                                ch = '\\';
                                break;
                        case '/':
                                ch = '/';
                                break;
                        case 'b':
                                ch = '\b';
                                break;
                        case 'f':
                                ch = '\f';
                                break;
                        case 'n':
                                ch = '\n';
                                break;
                        case 'r':
                                ch = '\r';
                                break;
                        case 't':
                                ch = '\t';
                                break;
                        default:
                                return -EAGAIN;
                        }
                }
                /* The decoded text is never longer than the quoted one. */
                assert(o < s->out_end);
                *o++ = (char) ch;
        }
        assert(o < s->out_end);
        *o++ = '\0';
        s->out = o;
        *ret = start;
        *len = (size_t) (o - start) - 1;
        return 0;
}

static bool char_is_digit(char c) {
        return c >= '0' && c <= '9';
}

/* An integer of at most 18 digits (so it cannot overflow int64_t). */
static int scan_integer(struct scanner *s, int64_t *ret) {
        const char *p = s->p;
        bool negative = false;
        uint64_t v = 0;
        unsigned digits = 0;

        if (p < s->end && *p == '-') {
                negative = true;
                p++;
        }
        if (p >= s->end || !char_is_digit(*p))
                return -EAGAIN;
        if (*p == '0' && p + 1 < s->end && char_is_digit(p[1]))
                return -EAGAIN;
        while (p < s->end && char_is_digit(*p)) {
                if (++digits > 18)
                        return -EAGAIN;
                v = v * 10 + (uint64_t) (*p - '0');
                p++;
        }
        if (p < s->end && (*p == '.' || *p == 'e' || *p == 'E'))
                return -EAGAIN;
        *ret = negative ? -(int64_t) v : (int64_t) v;
        s->p = p;
        return 0;
}

static bool scan_literal(struct scanner *s, const char *word, size_t n) {
        if ((size_t) (s->end - s->p) < n || memcmp(s->p, word, n) != 0)
                return false;
        s->p += n;
        return true;
}

/* A value that is not an object or array. */
static int scan_scalar(struct scanner *s, struct varlink_value *v) {
        scan_skip_space(s);
        if (s->p >= s->end)
                return -EAGAIN;
        *v = (struct varlink_value){};
        switch (*s->p) {
        case '"':
                v->type = VARLINK_VALUE_STRING;
                return scan_string(s, &v->string, &v->length);
        case 't':
                v->type = VARLINK_VALUE_BOOLEAN;
                v->boolean = true;
                return scan_literal(s, "true", 4) ? 0 : -EAGAIN;
        case 'f':
                v->type = VARLINK_VALUE_BOOLEAN;
                return scan_literal(s, "false", 5) ? 0 : -EAGAIN;
        case 'n':
                v->type = VARLINK_VALUE_NULL;
                return scan_literal(s, "null", 4) ? 0 : -EAGAIN;
        default:
                v->type = VARLINK_VALUE_INTEGER;
                return scan_integer(s, &v->integer);
        }
}

static bool key_equal(const char *a, size_t a_len, const char *b, size_t b_len) {
        return a_len == b_len && memcmp(a, b, a_len) == 0;
}

/* Members of an object among the parameters (level 2) or of the parameters
 * themselves (level 1, parent -1); the '{' has been read. */
static int scan_params_object(struct scanner *s, int parent) {
        struct varlink_scanned *sc = s->scanned;
        size_t first = sc->n_fields;
        int r;

        if (scan_take(s, '}'))
                return 0;
        for (;;) {
                struct scan_field *f;
                size_t index;

                if (sc->n_fields >= SCAN_MAX_FIELDS)
                        return -EAGAIN;
                index = sc->n_fields++;
                f = &sc->fields[index];
                f->parent = parent;
                r = scan_string(s, &f->key, &f->key_len);
                if (r < 0)
                        return r;
                for (size_t i = first; i < index; i++)
                        if (sc->fields[i].parent == parent &&
                            key_equal(sc->fields[i].key, sc->fields[i].key_len, f->key, f->key_len))
                                return -EAGAIN; /* a duplicate: jansson's verdict */
                if (!scan_take(s, ':'))
                        return -EAGAIN;
                if (scan_take(s, '{')) {
                        if (parent >= 0)
                                return -EAGAIN; /* deeper than we go */
                        f->value = (struct varlink_value){.type = VARLINK_VALUE_OBJECT};
                        r = scan_params_object(s, (int) index);
                } else
                        r = scan_scalar(s, &f->value);
                if (r < 0)
                        return r;
                if (scan_take(s, ','))
                        continue;
                return scan_take(s, '}') ? 0 : -EAGAIN;
        }
}

/* The flags oneway, more and upgrade: booleans only. */
static int scan_flag(struct scanner *s, bool *ret) {
        struct varlink_value v;
        int r = scan_scalar(s, &v);

        if (r < 0)
                return r;
        if (v.type != VARLINK_VALUE_BOOLEAN)
                return -EAGAIN;
        *ret = v.boolean;
        return 0;
}

/* The call's parameters: an object, whose text is kept, or null, which
 * means none (as when the member is absent; jansson reads it so too). */
static int scan_parameters(struct scanner *s, const char **start, const char **end) {
        int r;

        scan_skip_space(s);
        if (scan_literal(s, "null", 4))
                return 0;
        *start = s->p;
        if (!scan_take(s, '{'))
                return -EAGAIN;
        r = scan_params_object(s, -1);
        if (r < 0)
                return r;
        *end = s->p;
        return 0;
}

/* The call object: method, parameters, flags, and other members (ignored,
 * as the Varlink specification asks, but scanned so the JSON is checked). */
static int scan_call(struct scanner *s, struct varlink_call *c, const char **params_start, const char **params_end) {
        const char *keys[SCAN_MAX_MEMBERS];
        size_t key_lens[SCAN_MAX_MEMBERS], n = 0;
        int r;

        if (!scan_take(s, '{'))
                return -EAGAIN;
        if (scan_take(s, '}'))
                return -EAGAIN; /* no method */
        for (;;) {
                const char *key;
                size_t key_len;

                if (n >= SCAN_MAX_MEMBERS)
                        return -EAGAIN;
                r = scan_string(s, &key, &key_len);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n; i++)
                        if (key_equal(keys[i], key_lens[i], key, key_len))
                                return -EAGAIN;
                keys[n] = key;
                key_lens[n++] = key_len;
                if (!scan_take(s, ':'))
                        return -EAGAIN;

                if (key_equal(key, key_len, "method", 6)) {
                        struct varlink_value v;

                        r = scan_scalar(s, &v);
                        if (r < 0)
                                return r;
                        if (v.type != VARLINK_VALUE_STRING || strlen(v.string) != v.length ||
                            !varlink_method_split(v.string, NULL, 0))
                                return -EAGAIN;
                        c->method = v.string;
                } else if (key_equal(key, key_len, "parameters", 10))
                        r = scan_parameters(s, params_start, params_end);
                else if (key_equal(key, key_len, "oneway", 6))
                        r = scan_flag(s, &c->oneway);
                else if (key_equal(key, key_len, "more", 4))
                        r = scan_flag(s, &c->more);
                else if (key_equal(key, key_len, "upgrade", 7))
                        r = scan_flag(s, &c->upgrade);
                else {
                        struct varlink_value ignored;

                        r = scan_scalar(s, &ignored);
                }
                if (r < 0)
                        return r;
                if (scan_take(s, ','))
                        continue;
                if (scan_take(s, '}'))
                        break;
                return -EAGAIN;
        }
        scan_skip_space(s);
        if (s->p != s->end || !c->method || (c->oneway && c->more))
                return -EAGAIN;
        return 0;
}

int varlink_call_scan(const char *msg, size_t len, struct varlink_call *ret) {
        struct varlink_call c = {};
        struct varlink_scanned *sc;
        struct scanner s;
        const char *params_start = NULL, *params_end = NULL;
        int r;

        assert(ret);
        if (!msg || len == 0 || len > SIZE_MAX / 2 - sizeof *sc - 2)
                return -EAGAIN;
        /* data[]: room for the parameters' text (at most len bytes and a
         * NUL), then for every string decoded (at most len bytes with NULs). */
        sc = malloc(sizeof *sc + 2 * len + 2);
        if (!sc)
                return -ENOMEM;
        sc->n_fields = 0;
        sc->params_text = NULL;
        sc->params_len = 0;
        s = (struct scanner){
                .p = msg,
                .end = msg + len,
                .out = sc->data + len + 1,
                .out_end = sc->data + 2 * len + 2,
                .scanned = sc,
        };
        r = scan_call(&s, &c, &params_start, &params_end);
        if (r < 0) {
                free(sc);
                return r;
        }
        if (params_start) {
                assert(params_end && params_end > params_start && (size_t) (params_end - params_start) <= len);
                sc->params_len = (size_t) (params_end - params_start);
                memcpy(sc->data, params_start, sc->params_len);
                sc->data[sc->params_len] = '\0';
                sc->params_text = sc->data;
        }
        c.scanned = sc;
        *ret = c;
        return 0;
}

void varlink_scanned_free(struct varlink_scanned *s) {
        free(s);
}

static int scanned_find(const struct varlink_scanned *s, int parent, const char *key) {
        size_t key_len = strlen(key);

        for (size_t i = 0; i < s->n_fields; i++)
                if (s->fields[i].parent == parent && key_equal(s->fields[i].key, s->fields[i].key_len, key, key_len))
                        return (int) i;
        return -1;
}

int varlink_scanned_param(struct varlink_scanned *s, const char *object, const char *key, struct varlink_value *ret) {
        int parent = -1, i;

        assert(s && key && ret);
        if (object) {
                parent = scanned_find(s, -1, object);
                if (parent < 0 || s->fields[parent].value.type == VARLINK_VALUE_NULL)
                        return -ENOENT;
                if (s->fields[parent].value.type != VARLINK_VALUE_OBJECT)
                        return -EINVAL;
        }
        i = scanned_find(s, parent, key);
        if (i < 0 || s->fields[i].value.type == VARLINK_VALUE_NULL)
                return -ENOENT;
        *ret = s->fields[i].value;
        return 0;
}

/* The parameters as jansson sees them: parsed from the kept text (already
 * known to be valid, so only memory can fail), or {} when there were none. */
int varlink_scanned_parameters(struct varlink_scanned *s, json_t **ret) {
        json_t *p;

        assert(s && ret);
        if (s->params_text)
                p = json_loadb(s->params_text, s->params_len, JSON_REJECT_DUPLICATES, NULL);
        else
                p = json_object();
        if (!p)
                return -ENOMEM;
        assert(json_is_object(p));
        *ret = p;
        return 0;
}
