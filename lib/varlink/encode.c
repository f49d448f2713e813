/* Varlink messages: encoding calls, replies and errors.
 *
 * Encoding is on the daemon's hot path (every reply), so it is one pass
 * into one buffer: the fixed envelope ({"parameters": ... }) is written as
 * text around the parameters, which jansson dumps straight into the same
 * growing buffer through json_dump_callback(). No wrapper object is built,
 * the text is never produced twice (as json_dumpb() sizing would) and never
 * copied (as json_dumps() does). The buffer ends with the NUL that frames
 * the message on the wire, so it can be handed to write(2) as it is.
 *
 * Method and error names are checked against the Varlink grammar before
 * they are written: they then need no JSON escaping, and a caller cannot
 * put a malformed name on the wire.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sessiond/varlink.h"

struct encode_buffer {
        char *data;
        size_t len;
        size_t allocated;
        bool oom; /* set when an append from jansson's callback failed */
};

static int encode_buffer_reserve(struct encode_buffer *b, size_t n) {
        size_t want;
        char *p;

        if (b->allocated - b->len >= n)
                return 0;
        if (n > SIZE_MAX / 2 - b->len)
                return -ENOMEM;
        want = b->allocated > 0 ? b->allocated : 256;
        while (want < b->len + n)
                want *= 2;
        p = realloc(b->data, want);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->allocated = want;
        return 0;
}

static int encode_buffer_append(struct encode_buffer *b, const char *s, size_t n) {
        int r = encode_buffer_reserve(b, n);

        if (r < 0)
                return r;
        memcpy(b->data + b->len, s, n);
        b->len += n;
        return 0;
}

static int encode_buffer_append_str(struct encode_buffer *b, const char *s) {
        return encode_buffer_append(b, s, strlen(s));
}

static int encode_dump_cb(const char *s, size_t n, void *userdata) {
        struct encode_buffer *b = userdata;

        if (encode_buffer_append(b, s, n) < 0) {
                b->oom = true;
                return -1;
        }
        return 0;
}

static int encode_buffer_append_parameters(struct encode_buffer *b, json_t *parameters) {
        if (!parameters)
                return encode_buffer_append_str(b, "{}");
        if (!json_is_object(parameters))
                return -EINVAL;
        /* jansson fails on a memory shortage or on a value that cannot be
         * encoded (a structure that contains itself). */
        if (json_dump_callback(parameters, encode_dump_cb, b, JSON_COMPACT) < 0)
                return b->oom ? -ENOMEM : -EINVAL;
        return 0;
}

/* Terminates the message with its NUL and hands the buffer out. */
static int encode_buffer_finish(struct encode_buffer *b, char **ret, size_t *len) {
        int r = encode_buffer_append(b, "", 1);

        if (r < 0)
                return r;
        *ret = b->data;
        *len = b->len;
        *b = (struct encode_buffer){};
        return 0;
}

int varlink_encode_call(const char *method, json_t *parameters, bool oneway, bool more,
                        char **ret, size_t *len) {
        struct encode_buffer b = {};
        int r;

        assert(ret);
        assert(len);

        if (!varlink_method_split(method, NULL, 0))
                return -EINVAL;
        if (oneway && more)
                return -EINVAL;

        r = encode_buffer_reserve(&b, 64 + strlen(method));
        if (r < 0)
                goto fail;
        if ((r = encode_buffer_append_str(&b, "{\"method\":\"")) < 0 ||
            (r = encode_buffer_append_str(&b, method)) < 0 ||
            (r = encode_buffer_append_str(&b, "\",\"parameters\":")) < 0 ||
            (r = encode_buffer_append_parameters(&b, parameters)) < 0)
                goto fail;
        if (oneway && (r = encode_buffer_append_str(&b, ",\"oneway\":true")) < 0)
                goto fail;
        if (more && (r = encode_buffer_append_str(&b, ",\"more\":true")) < 0)
                goto fail;
        if ((r = encode_buffer_append_str(&b, "}")) < 0)
                goto fail;
        return encode_buffer_finish(&b, ret, len);
fail:
        free(b.data);
        return r;
}

int varlink_encode_reply(json_t *parameters, bool continues, char **ret, size_t *len) {
        struct encode_buffer b = {};
        int r;

        assert(ret);
        assert(len);

        r = encode_buffer_reserve(&b, 256);
        if (r < 0)
                goto fail;
        if ((r = encode_buffer_append_str(&b, "{\"parameters\":")) < 0 ||
            (r = encode_buffer_append_parameters(&b, parameters)) < 0)
                goto fail;
        if (continues && (r = encode_buffer_append_str(&b, ",\"continues\":true")) < 0)
                goto fail;
        if ((r = encode_buffer_append_str(&b, "}")) < 0)
                goto fail;
        return encode_buffer_finish(&b, ret, len);
fail:
        free(b.data);
        return r;
}

int varlink_encode_error(const char *error, json_t *parameters, char **ret, size_t *len) {
        struct encode_buffer b = {};
        int r;

        assert(ret);
        assert(len);

        if (!varlink_method_split(error, NULL, 0))
                return -EINVAL;

        r = encode_buffer_reserve(&b, 64 + strlen(error));
        if (r < 0)
                goto fail;
        if ((r = encode_buffer_append_str(&b, "{\"error\":\"")) < 0 ||
            (r = encode_buffer_append_str(&b, error)) < 0 ||
            (r = encode_buffer_append_str(&b, "\",\"parameters\":")) < 0 ||
            (r = encode_buffer_append_parameters(&b, parameters)) < 0 ||
            (r = encode_buffer_append_str(&b, "}")) < 0)
                goto fail;
        return encode_buffer_finish(&b, ret, len);
fail:
        free(b.data);
        return r;
}
