/* Varlink replies written straight into their wire buffer.
 *
 * The daemon's hottest replies (Validate, Heartbeat...) are a few flat
 * fields and one SessionInfo object. Building them as jansson objects costs
 * a tree of small allocations, a hash insert per key and then a second walk
 * to dump the tree; that was a quarter of the daemon's CPU on Validate. The
 * writer instead appends the JSON text in one pass to one growing buffer,
 * which ends up exactly as varlink_encode_reply() hands it out: the message
 * followed by its NUL terminator, ready for write(2).
 *
 * Why it looks the way it does:
 * - The output is byte for byte what jansson's JSON_COMPACT dump would give
 *   for the same members in the same order (same escapes, no spaces), so a
 *   peer cannot tell the two encoders apart.
 * - Commas are the writer's business: a small stack with one bit per open
 *   object or array says whether it already has a member. The caller only
 *   says key / value / begin / end.
 * - Errors are sticky: the first failure (ENOMEM, or EINVAL for a json_t
 *   that cannot be dumped) is remembered, later calls do nothing and
 *   return it, and finish_reply() reports it. A handler can write all its
 *   fields and check once. Misuse (a value where a key is due, unbalanced
 *   ends, nesting deeper than VARLINK_WRITER_MAX_DEPTH) is a programming
 *   error and asserted.
 * - The first allocation is sized for a typical reply (a Validate reply is
 *   about 300 bytes), so the hot path makes one malloc and no realloc.
 * - Strings are escaped as JSON requires ("  \  and the control characters
 *   below 0x20, with jansson's short forms where they exist). Bytes from
 *   0x80 up are copied unchanged: the caller must hand in valid UTF-8. The
 *   daemon's strings satisfy this because they come from jansson-parsed
 *   input (which rejects invalid UTF-8) or from the daemon itself (ids,
 *   tokens, enum names). The writer does not check it.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h" /* lib/common: SESSIOND_EXPORT */
#include "sessiond/varlink.h"
#include "varlink/writer.h"

#define WRITER_FIRST_ALLOCATION 512

static int writer_fail(struct varlink_writer *w, int error) {
        assert(error < 0);
        if (w->error == 0)
                w->error = error;
        return w->error;
}

/* Grows the buffer to hold n more bytes (the slow half of writer_reserve). */
static int writer_grow(struct varlink_writer *w, size_t n) {
        size_t want;
        char *p;

        if (n > SIZE_MAX / 4 - w->len)
                return writer_fail(w, -ENOMEM);
        want = w->allocated > 0 ? w->allocated * 2 : WRITER_FIRST_ALLOCATION;
        while (want < w->len + n)
                want *= 2;
        p = realloc(w->data, want);
        if (!p)
                return writer_fail(w, -ENOMEM);
        w->data = p;
        w->allocated = want;
        return 0;
}

/* Makes room for n more bytes. */
static inline int writer_reserve(struct varlink_writer *w, size_t n) {
        if (w->allocated - w->len >= n)
                return 0;
        return writer_grow(w, n);
}

static inline int writer_append(struct varlink_writer *w, const char *s, size_t n) {
        int r = writer_reserve(w, n);

        if (r < 0)
                return r;
        memcpy(w->data + w->len, s, n);
        w->len += n;
        return 0;
}

/* Appends a member separator if the innermost container already has a
 * member, and counts the coming one. */
static void writer_separate(struct varlink_writer *w) {
        uint64_t bit;

        assert(w->depth > 0);
        bit = UINT64_C(1) << (w->depth - 1);
        if (w->has_members & bit)
                w->data[w->len++] = ',';
        else
                w->has_members |= bit;
}

/* Before any value: a value follows a key in an object, is the next member
 * of an array, or is the parameters right after begin_reply(). Reserves
 * room for the separator plus `n` bytes. */
static int writer_value_start(struct varlink_writer *w, size_t n) {
        int r;

        if (w->error < 0)
                return w->error;
        r = writer_reserve(w, n + 1);
        if (r < 0)
                return r;
        if (w->after_key) {
                w->after_key = false;
                return 0;
        }
        /* Not after a key: only array members may stand alone. */
        assert(w->depth > 0);
        assert(!(w->is_object & (UINT64_C(1) << (w->depth - 1))));
        writer_separate(w);
        return 0;
}

/* The bytes a JSON string cannot hold as they are: ", \ and the control
 * characters. 0: copied; otherwise the letter of the short escape, or 'u'
 * for \u00XX (jansson's choice of forms, so the bytes match). */
static const char escape_table[256] = {
        ['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', ['\f'] = 'f', ['\r'] = 'r', [0x00] = 'u',  [0x01] = 'u',
        [0x02] = 'u', [0x03] = 'u', [0x04] = 'u', [0x05] = 'u', [0x06] = 'u', [0x07] = 'u',  [0x0b] = 'u',
        [0x0e] = 'u', [0x0f] = 'u', [0x10] = 'u', [0x11] = 'u', [0x12] = 'u', [0x13] = 'u',  [0x14] = 'u',
        [0x15] = 'u', [0x16] = 'u', [0x17] = 'u', [0x18] = 'u', [0x19] = 'u', [0x1a] = 'u',  [0x1b] = 'u',
        [0x1c] = 'u', [0x1d] = 'u', [0x1e] = 'u', [0x1f] = 'u', ['"'] = '"',  ['\\'] = '\\',
};

/* Copies s[0..n) as the inside of a JSON string (no quotes): runs that
 * need no escape are copied at once. */
static int writer_escape(struct varlink_writer *w, const char *s, size_t n) {
        static const char hex[] = "0123456789ABCDEF";
        size_t run = 0;

        for (size_t i = 0; i < n; i++) {
                unsigned char ch = (unsigned char) s[i];
                char kind = escape_table[ch];
                int r;

                if (kind == 0)
                        continue;
                {
                        char esc[6] = {'\\', kind, '0', '0', hex[ch >> 4], hex[ch & 0xf]};

                        if ((r = writer_append(w, s + run, i - run)) < 0 ||
                            (r = writer_append(w, esc, kind == 'u' ? 6 : 2)) < 0)
                                return r;
                }
                run = i + 1;
        }
        return writer_append(w, s + run, n - run);
}

static int writer_quoted(struct varlink_writer *w, const char *s, size_t n) {
        int r;

        /* The common case, nothing to escape, then needs no further growth. */
        r = writer_reserve(w, n + 2);
        if (r < 0)
                return r;
        w->data[w->len++] = '"';
        if ((r = writer_escape(w, s, n)) < 0 || (r = writer_append(w, "\"", 1)) < 0)
                return r;
        return 0;
}

SESSIOND_EXPORT void varlink_writer_init(struct varlink_writer *w) {
        assert(w);
        *w = (struct varlink_writer){};
}

SESSIOND_EXPORT void varlink_writer_free(struct varlink_writer *w) {
        if (!w)
                return;
        free(w->data);
        *w = (struct varlink_writer){};
}

/* For a finishing function: the writer is freed on every failure path
 * (the variable is set to NULL once it succeeded). */
static void writer_freep(struct varlink_writer **w) {
        if (*w)
                varlink_writer_free(*w);
}

int varlink_writer_begin_message(struct varlink_writer *w, const char *member, const char *name) {
        static const char plain[] = "{\"parameters\":", named[] = "\",\"parameters\":";
        int r;

        assert(w);
        assert(!member == !name);
        if (w->error < 0)
                return w->error;
        assert(w->len == 0 && w->depth == 0 && !w->after_key && !w->began);
        if (member) {
                /* Names of the Varlink grammar need no escaping. */
                assert(varlink_method_split(name, NULL, 0));
                if ((r = writer_append(w, "{\"", 2)) < 0 || (r = writer_append(w, member, strlen(member))) < 0 ||
                    (r = writer_append(w, "\":\"", 3)) < 0 || (r = writer_append(w, name, strlen(name))) < 0 ||
                    (r = writer_append(w, named, sizeof named - 1)) < 0)
                        return r;
        } else if ((r = writer_append(w, plain, sizeof plain - 1)) < 0)
                return r;
        w->began = true;
        w->after_key = true; /* the parameters are the value of that key */
        return 0;
}

SESSIOND_EXPORT int varlink_writer_begin_value(struct varlink_writer *w) {
        assert(w);
        if (w->error < 0)
                return w->error;
        assert(w->len == 0 && w->depth == 0 && !w->after_key && !w->began);
        w->after_key = true; /* one value follows */
        return 0;
}

SESSIOND_EXPORT int varlink_writer_finish_value(struct varlink_writer *w, char **ret, size_t *len) {
        _cleanup_(writer_freep) struct varlink_writer *unfinished = w; /* freed on failure */
        int r;

        assert(w && ret && len);
        if (w->error < 0)
                return w->error;
        assert(!w->began);
        assert(w->depth == 0 && !w->after_key);
        r = writer_append(w, "", 1); /* the NUL */
        if (r < 0)
                return r;
        *ret = w->data;
        *len = w->len - 1;
        *w = (struct varlink_writer){};
        unfinished = NULL; /* the caller has the text */
        return 0;
}

SESSIOND_EXPORT int varlink_writer_begin_reply(struct varlink_writer *w) {
        return varlink_writer_begin_message(w, NULL, NULL);
}

static int writer_container_begin(struct varlink_writer *w, char open, bool object) {
        uint64_t bit;
        int r;

        assert(w);
        if (w->error < 0)
                return w->error;
        assert(w->depth < VARLINK_WRITER_MAX_DEPTH);
        r = writer_value_start(w, 1);
        if (r < 0)
                return r;
        if (w->depth == 0)
                w->parameters_object = object;
        w->data[w->len++] = open;
        bit = UINT64_C(1) << w->depth;
        w->has_members &= ~bit;
        if (object)
                w->is_object |= bit;
        else
                w->is_object &= ~bit;
        w->depth++;
        return 0;
}

static int writer_container_end(struct varlink_writer *w, char close, bool object) {
        assert(w);
        if (w->error < 0)
                return w->error;
        assert(w->depth > 0);
        assert(!w->after_key);
        assert(!!(w->is_object & (UINT64_C(1) << (w->depth - 1))) == object);
        (void) object;
        w->depth--;
        return writer_append(w, &close, 1);
}

SESSIOND_EXPORT int varlink_writer_object_begin(struct varlink_writer *w) {
        return writer_container_begin(w, '{', true);
}

SESSIOND_EXPORT int varlink_writer_object_end(struct varlink_writer *w) {
        return writer_container_end(w, '}', true);
}

SESSIOND_EXPORT int varlink_writer_array_begin(struct varlink_writer *w) {
        return writer_container_begin(w, '[', false);
}

SESSIOND_EXPORT int varlink_writer_array_end(struct varlink_writer *w) {
        return writer_container_end(w, ']', false);
}

SESSIOND_EXPORT int varlink_writer_key(struct varlink_writer *w, const char *key) {
        size_t n;
        int r;

        assert(w);
        assert(key);
        if (w->error < 0)
                return w->error;
        assert(w->depth > 0);
        assert(w->is_object & (UINT64_C(1) << (w->depth - 1)));
        assert(!w->after_key);
        n = strlen(key);
        /* , " key " : */
        r = writer_reserve(w, n + 4);
        if (r < 0)
                return r;
        writer_separate(w);
        if ((r = writer_quoted(w, key, n)) < 0 || (r = writer_append(w, ":", 1)) < 0)
                return r;
        w->after_key = true;
        return 0;
}

SESSIOND_EXPORT int varlink_writer_stringn(struct varlink_writer *w, const char *s, size_t n) {
        int r;

        assert(w);
        assert(s || n == 0);
        r = writer_value_start(w, n + 2);
        if (r < 0)
                return r;
        return writer_quoted(w, s ? s : "", n);
}

SESSIOND_EXPORT int varlink_writer_string(struct varlink_writer *w, const char *s) {
        assert(s);
        return varlink_writer_stringn(w, s, strlen(s));
}

static const char digit_pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                  "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                  "8081828384858687888990919293949596979899";

SESSIOND_EXPORT int varlink_writer_int(struct varlink_writer *w, int64_t v) {
        char digits[20]; /* 2^64 has 20 digits */
        size_t n = 0;
        uint64_t u;
        int r;

        assert(w);
        r = writer_value_start(w, 21);
        if (r < 0)
                return r;
        /* The magnitude as unsigned, so INT64_MIN needs no special case;
         * two digits per division (times are ten digits long). */
        u = v < 0 ? -(uint64_t) v : (uint64_t) v;
        while (u >= 100) {
                unsigned pair = (unsigned) (u % 100);

                u /= 100;
                digits[n++] = digit_pairs[2 * pair + 1];
                digits[n++] = digit_pairs[2 * pair];
        }
        if (u >= 10) {
                digits[n++] = digit_pairs[2 * u + 1];
                digits[n++] = digit_pairs[2 * u];
        } else
                digits[n++] = (char) ('0' + u);
        if (v < 0)
                w->data[w->len++] = '-';
        while (n > 0)
                w->data[w->len++] = digits[--n];
        return 0;
}

SESSIOND_EXPORT int varlink_writer_bool(struct varlink_writer *w, bool v) {
        int r;

        assert(w);
        r = writer_value_start(w, 5);
        if (r < 0)
                return r;
        return writer_append(w, v ? "true" : "false", v ? 4 : 5);
}

SESSIOND_EXPORT int varlink_writer_null(struct varlink_writer *w) {
        int r;

        assert(w);
        r = writer_value_start(w, 4);
        if (r < 0)
                return r;
        return writer_append(w, "null", 4);
}

static int writer_dump_cb(const char *s, size_t n, void *userdata) {
        return writer_append(userdata, s, n) < 0 ? -1 : 0;
}

SESSIOND_EXPORT int varlink_writer_json(struct varlink_writer *w, json_t *value) {
        int r;

        assert(w);
        assert(value);
        r = writer_value_start(w, 0);
        if (r < 0)
                return r;
        if (w->depth == 0)
                w->parameters_object = json_is_object(value);
        /* jansson fails on a memory shortage (recorded by the callback) or on
         * a value it cannot encode (a structure that contains itself). */
        if (json_dump_callback(value, writer_dump_cb, w, JSON_COMPACT | JSON_ENCODE_ANY) < 0)
                return writer_fail(w, w->error < 0 ? w->error : -EINVAL);
        return 0;
}

int varlink_writer_finish_message(struct varlink_writer *w, const char *flag, char **ret, size_t *len) {
        _cleanup_(writer_freep) struct varlink_writer *unfinished = w; /* freed on failure */
        int r;

        assert(w);
        assert(ret);
        assert(len);
        if (w->error < 0)
                return w->error;
        /* The parameters are complete: one value after the envelope's key. */
        assert(w->began);
        assert(w->depth == 0 && !w->after_key);
        if (!w->parameters_object)
                return -EINVAL;
        if (flag && ((r = writer_append(w, ",\"", 2)) < 0 || (r = writer_append(w, flag, strlen(flag))) < 0 ||
                     (r = writer_append(w, "\":true", 6)) < 0))
                return r;
        r = writer_append(w, "}", 2); /* with its NUL */
        if (r < 0)
                return r;
        *ret = w->data;
        *len = w->len;
        *w = (struct varlink_writer){};
        unfinished = NULL; /* the caller has the text */
        return 0;
}

SESSIOND_EXPORT int varlink_writer_finish_reply(struct varlink_writer *w, bool continues, char **ret, size_t *len) {
        return varlink_writer_finish_message(w, continues ? "continues" : NULL, ret, len);
}
