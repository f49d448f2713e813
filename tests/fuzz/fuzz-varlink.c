/* Fuzz target: Varlink framing and message decoding (lib/varlink).
 *
 * This is the code that reads what any local user writes to the daemon's
 * socket, so it is fuzzed as the daemon uses it: a byte stream arrives in
 * pieces of arbitrary size, the reader hands out NUL-terminated messages,
 * each is parsed as a call (and, since the client library reads replies with
 * the same code, as a reply), the handlers' parameter helpers run over what
 * parsed, and the result is encoded again.
 *
 * Input: byte 0 picks the reader's size limit and whether bytes come in
 * through varlink_reader_feed() or through varlink_reader_space()/commit()
 * (the daemon's zero-copy path); byte 1 seeds the chunk sizes; the rest is
 * the stream, exactly as a peer would write it.
 *
 * Beyond "no crash, no leak, no undefined behaviour" the target checks
 * properties that a bug could break silently:
 *  - framing is exact: the messages handed out, each followed by its NUL,
 *    are the stream's bytes in order, whatever the chunking; -EMSGSIZE comes
 *    only when a message really is longer than the limit;
 *  - the call scanner (the daemon's fast path) never refuses a message, and
 *    what it parses jansson parses to the same call, value by value;
 *  - "parameters": null means no parameters to both parsers: for every
 *    method that parses, the call with null parameters is taken by the
 *    scanner and by jansson alike, with no parameters and the same flags;
 *  - what a parser accepts satisfies the documented shape (method splits,
 *    parameters an object, oneway and more not both);
 *  - the parameter helpers agree with the JSON type of every value;
 *  - encoding a parsed call or reply and parsing it again gives the same
 *    method or error, the same flags and equal parameters.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "sessiond/varlink.h"
#include "varlink/scan.h"

static const size_t max_sizes[] = {24, 512, 4096, 65536};

/* Checks every parameter helper against the JSON type of every member of
 * params, recursing into object values (the nesting check bounds the depth). */
static void check_params(json_t *params) {
        const char *key;
        json_t *v;

        fuzz_assert(json_is_object(params));
        json_object_foreach(params, key, v) {
                const char *s = NULL;
                int64_t i = 0;
                bool b = false;
                json_t *o = NULL;
                bool absent = json_is_null(v);

                int rs = varlink_param_string(params, key, &s);
                int ri = varlink_param_int(params, key, &i);
                int rb = varlink_param_bool(params, key, &b);
                int ro = varlink_param_object(params, key, &o);

                fuzz_assert(rs == (absent ? -ENOENT : json_is_string(v) ? 0 : -EINVAL));
                fuzz_assert(ri == (absent ? -ENOENT : json_is_integer(v) ? 0 : -EINVAL));
                fuzz_assert(rb == (absent ? -ENOENT : json_is_boolean(v) ? 0 : -EINVAL));
                fuzz_assert(ro == (absent ? -ENOENT : json_is_object(v) ? 0 : -EINVAL));
                if (rs == 0)
                        fuzz_assert(s == json_string_value(v));
                if (ri == 0)
                        fuzz_assert(i == (int64_t) json_integer_value(v));
                if (rb == 0)
                        fuzz_assert(b == json_is_true(v));
                if (ro == 0) {
                        fuzz_assert(o == v);
                        check_params(o);
                }
        }

        /* A key that is not there, and a value that is not an object. */
        if (!json_object_get(params, "\x01")) {
                const char *s = "untouched";
                fuzz_assert(varlink_param_string(params, "\x01", &s) == -ENOENT);
                fuzz_assert(strcmp(s, "untouched") == 0);
        }
        {
                json_t *str = json_string("x");
                int64_t i = 7;
                fuzz_assert(str);
                fuzz_assert(varlink_param_int(str, "x", &i) == -ENOENT && i == 7);
                json_decref(str);
        }
}

/* varlink_method_split() on a name that parsed: the interface is copied
 * exactly, and a buffer one byte too small is refused. */
static void check_split(const char *name) {
        size_t len = strlen(name);
        char *iface = malloc(len + 1);
        const char *member;
        size_t n;

        fuzz_assert(iface);
        member = varlink_method_split(name, iface, len + 1);
        fuzz_assert(member);
        fuzz_assert(member > name && member[-1] == '.');
        n = (size_t) (member - name) - 1;
        fuzz_assert(strlen(iface) == n && memcmp(iface, name, n) == 0);
        fuzz_assert(varlink_method_split(name, NULL, 0) == member);
        fuzz_assert(varlink_method_split(name, iface, n) == NULL);
        free(iface);
}

/* Encoded messages: one NUL, at the end, and nothing else. */
static void check_encoded(const char *buf, size_t len) {
        fuzz_assert(buf && len > 0);
        fuzz_assert(buf[len - 1] == '\0');
        fuzz_assert(strlen(buf) == len - 1);
}

/* One parameter read through varlink_call_param() from two calls. */
static void check_value_agrees(struct varlink_call *a, struct varlink_call *b, const char *object, const char *key) {
        struct varlink_value va, vb;
        int ra = varlink_call_param(a, object, key, &va);
        int rb = varlink_call_param(b, object, key, &vb);

        fuzz_assert(ra == rb);
        fuzz_assert(ra == 0 || ra == -ENOENT || ra == -EINVAL);
        if (ra < 0)
                return;
        fuzz_assert(va.type == vb.type && va.type != VARLINK_VALUE_NULL);
        switch (va.type) {
        case VARLINK_VALUE_STRING:
                fuzz_assert(va.length == vb.length && memcmp(va.string, vb.string, va.length) == 0);
                fuzz_assert(va.string[va.length] == '\0' && vb.string[vb.length] == '\0');
                break;
        case VARLINK_VALUE_INTEGER:
                fuzz_assert(va.integer == vb.integer);
                break;
        case VARLINK_VALUE_BOOLEAN:
                fuzz_assert(va.boolean == vb.boolean);
                break;
        case VARLINK_VALUE_REAL:
                fuzz_assert(memcmp(&va.real, &vb.real, sizeof va.real) == 0);
                break;
        default:
                break;
        }
}

/* The scanner's promise (lib/varlink/scan.c): it never refuses, and what it
 * parses, jansson parses to the same method, flags and parameters; the
 * values varlink_call_param() reads agree member by member. */
static void check_scan_agrees(const char *msg, size_t len, struct varlink_call *j, int json_r) {
        struct varlink_call s = {};
        json_t *params, *v;
        const char *key;
        int r;

        r = varlink_call_scan(msg, len, &s);
        fuzz_assert(r == 0 || r == -EAGAIN);
        if (r < 0) {
                fuzz_assert(!s.scanned && !s.method);
                return;
        }
        fuzz_assert(json_r == 0);
        fuzz_assert(s.scanned && !s.root && strcmp(s.method, j->method) == 0);
        fuzz_assert(s.oneway == j->oneway && s.more == j->more && s.upgrade == j->upgrade);
        params = varlink_call_parameters(j);
        json_object_foreach(params, key, v) {
                check_value_agrees(&s, j, NULL, key);
                if (json_is_object(v)) {
                        const char *inner;
                        json_t *w;

                        json_object_foreach(v, inner, w)
                                check_value_agrees(&s, j, key, inner);
                        check_value_agrees(&s, j, key, "\x01");
                }
        }
        check_value_agrees(&s, j, NULL, "\x01");
        fuzz_assert(json_equal(varlink_call_parameters(&s), params));
        varlink_call_clear(&s);
        fuzz_assert(!s.scanned && !s.parameters);
}

/* The call c with "parameters": null: no parameters, in both parsers. */
static void check_null_parameters(const struct varlink_call *c) {
        struct varlink_call s = {}, j = {};
        char *text = NULL;
        int n;

        n = asprintf(&text, "{\"method\":\"%s\",\"parameters\":null,\"more\":%s,\"oneway\":%s}", c->method,
                     c->more ? "true" : "false", c->oneway ? "true" : "false");
        fuzz_assert(n > 0 && text);
        fuzz_assert(varlink_call_scan(text, (size_t) n, &s) == 0);
        fuzz_assert(varlink_call_parse_json(text, (size_t) n, &j) == 0);
        fuzz_assert(json_object_size(varlink_call_parameters(&s)) == 0);
        fuzz_assert(json_equal(varlink_call_parameters(&s), varlink_call_parameters(&j)));
        fuzz_assert(strcmp(s.method, c->method) == 0 && strcmp(j.method, c->method) == 0);
        fuzz_assert(s.more == c->more && j.more == c->more && s.oneway == c->oneway && j.oneway == c->oneway);
        varlink_call_clear(&s);
        varlink_call_clear(&j);
        free(text);
}

static void check_call(const char *msg, size_t len) {
        struct varlink_call c = {}, again = {}, both = {};
        char *buf = NULL;
        size_t blen = 0;
        int r;

        r = varlink_call_parse_json(msg, len, &c);
        fuzz_assert(r == 0 || r == -EBADMSG);
        check_scan_agrees(msg, len, &c, r);
        /* The parser the daemon uses (scanner, then jansson) has the same verdict. */
        fuzz_assert(varlink_call_parse(msg, len, &both) == r);
        varlink_call_clear(&both);
        if (r < 0)
                return;

        fuzz_assert(c.root && c.method && json_is_object(varlink_call_parameters(&c)));
        fuzz_assert(!(c.oneway && c.more));
        check_split(c.method);
        check_params(varlink_call_parameters(&c));
        check_null_parameters(&c);

        fuzz_assert(varlink_encode_call(c.method, varlink_call_parameters(&c), c.oneway, c.more, &buf, &blen) == 0);
        check_encoded(buf, blen);
        fuzz_assert(varlink_call_parse(buf, blen - 1, &again) == 0);
        fuzz_assert(strcmp(again.method, c.method) == 0);
        fuzz_assert(again.oneway == c.oneway && again.more == c.more && !again.upgrade);
        fuzz_assert(json_equal(varlink_call_parameters(&again), varlink_call_parameters(&c)));
        free(buf);
        buf = NULL;

        /* oneway together with more is refused by the encoder too. */
        fuzz_assert(varlink_encode_call(c.method, NULL, true, true, &buf, &blen) == -EINVAL);

        varlink_call_clear(&again);
        varlink_call_clear(&c);
        fuzz_assert(!c.root && !c.method && !c.parameters);
}

static void check_reply(const char *msg, size_t len) {
        struct varlink_reply rp = {}, again = {};
        char *buf = NULL;
        size_t blen = 0;
        int r;

        r = varlink_reply_parse(msg, len, &rp);
        fuzz_assert(r == 0 || r == -EBADMSG);
        if (r < 0)
                return;

        fuzz_assert(rp.root && json_is_object(rp.parameters));
        fuzz_assert(!(rp.error && rp.continues));
        check_params(rp.parameters);

        if (rp.error) {
                check_split(rp.error);
                fuzz_assert(varlink_encode_error(rp.error, rp.parameters, &buf, &blen) == 0);
        } else
                fuzz_assert(varlink_encode_reply(rp.parameters, rp.continues, &buf, &blen) == 0);
        check_encoded(buf, blen);
        fuzz_assert(varlink_reply_parse(buf, blen - 1, &again) == 0);
        fuzz_assert(again.continues == rp.continues);
        fuzz_assert(rp.error ? again.error && strcmp(again.error, rp.error) == 0 : !again.error);
        fuzz_assert(json_equal(again.parameters, rp.parameters));
        free(buf);

        varlink_reply_clear(&again);
        varlink_reply_clear(&rp);
        fuzz_assert(!rp.root && !rp.error && !rp.parameters);
}

/* The message itself as a method or error name: the encoders accept
 * exactly what varlink_method_split() accepts. */
static void check_name(const char *msg, size_t len) {
        bool valid = varlink_method_split(msg, NULL, 0) != NULL;
        char *buf = NULL;
        size_t blen = 0;
        int r;

        if (len > 256)
                return;
        r = varlink_encode_call(msg, NULL, false, false, &buf, &blen);
        fuzz_assert(r == (valid ? 0 : -EINVAL));
        if (r == 0) {
                check_encoded(buf, blen);
                check_call(buf, blen - 1);
                free(buf);
        }
        r = varlink_encode_error(msg, NULL, &buf, &blen);
        fuzz_assert(r == (valid ? 0 : -EINVAL));
        if (r == 0) {
                check_encoded(buf, blen);
                check_reply(buf, blen - 1);
                free(buf);
        }
        if (valid)
                check_split(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct varlink_reader rd;
        struct fuzz_rng g;
        const char *stream;
        size_t n, max, pos = 0, consumed = 0;
        bool use_space;

        if (size < 2)
                return 0;
        max = max_sizes[data[0] & 3];
        use_space = data[0] & 4;
        fuzz_rng_init(&g, (uint32_t) data[0] << 8 | data[1]);
        stream = (const char *) data + 2;
        n = size - 2;

        fuzz_assert(varlink_reader_init(&rd, max) == 0);
        while (pos < n) {
                size_t chunk;

                switch (fuzz_rng_next(&g) % 4) {
                case 0:
                        chunk = 1;
                        break;
                case 1:
                        chunk = fuzz_rng_range(&g, 1, 16);
                        break;
                case 2:
                        chunk = fuzz_rng_range(&g, 1, 4096);
                        break;
                default:
                        chunk = n - pos;
                        break;
                }
                if (chunk > n - pos)
                        chunk = n - pos;

                if (use_space) {
                        size_t want = chunk + fuzz_rng_range(&g, 0, 64), room = 0;
                        char *p = NULL;
                        fuzz_assert(varlink_reader_space(&rd, want, &p, &room) == 0);
                        fuzz_assert(p && room >= want);
                        memcpy(p, stream + pos, chunk);
                        varlink_reader_commit(&rd, chunk);
                } else
                        fuzz_assert(varlink_reader_feed(&rd, stream + pos, chunk) == 0);
                pos += chunk;

                for (;;) {
                        const char *msg = NULL;
                        size_t len = 0;
                        int r = varlink_reader_next(&rd, &msg, &len);

                        if (r == 1) {
                                /* The next message of the stream, exactly. */
                                fuzz_assert(len <= max);
                                fuzz_assert(consumed + len < pos);
                                fuzz_assert(msg[len] == '\0' && !memchr(msg, '\0', len));
                                fuzz_assert(memcmp(msg, stream + consumed, len) == 0);
                                fuzz_assert(stream[consumed + len] == '\0');
                                consumed += len + 1;
                                check_call(msg, len);
                                check_reply(msg, len);
                                check_name(msg, len);
                                continue;
                        }
                        if (r == 0) {
                                fuzz_assert(varlink_reader_pending(&rd) == pos - consumed);
                                fuzz_assert(!memchr(stream + consumed, '\0', pos - consumed));
                                fuzz_assert(pos - consumed <= max);
                                break;
                        }
                        /* Too long: no NUL within the limit, and more than
                         * the limit is there. The peer is cut off. */
                        fuzz_assert(r == -EMSGSIZE);
                        fuzz_assert(pos - consumed > max);
                        fuzz_assert(!memchr(stream + consumed, '\0', max + 1));
                        goto out;
                }
        }
        fuzz_assert(varlink_reader_pending(&rd) == n - consumed);
out:
        varlink_reader_free(&rd);
        fuzz_assert(!rd.buf && rd.max_message_size == max);
        return 0;
}
