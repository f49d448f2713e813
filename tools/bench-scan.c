/* sessiond-bench: the reply scanner (see bench-scan.h for why it exists).
 *
 * One pass, no allocation. A stack of frames, one per open object or array,
 * remembers whether the keys leading to it match the path so far, whether the
 * next string in an object is a key, and whether the last key read matched.
 * The scan stops at the first match, so a typical error reply is decided
 * after its first few bytes.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "bench-scan.h"

#define SCAN_MAX_DEPTH 64

struct scan_frame {
        bool object;      /* '{' (else '[') */
        bool on_path;     /* the keys leading here match path[0 .. depth-2] */
        bool expect_key;  /* in an object: the next string is a key */
        bool key_matched; /* in an object: the last key read is path[depth-1] */
};

static bool key_equal(const char *key, size_t key_len, const char *want) {
        return strlen(want) == key_len && memcmp(key, want, key_len) == 0;
}

int bench_scan_string(const char *json, size_t len, const char *const *path, size_t n_path, const char **ret,
                      size_t *ret_len) {
        struct scan_frame stack[SCAN_MAX_DEPTH];
        size_t depth = 0, i = 0;

        assert(json || len == 0);
        assert(path && n_path > 0);
        assert(ret && ret_len);

        while (i < len && (json[i] == ' ' || json[i] == '\t' || json[i] == '\n' || json[i] == '\r'))
                i++;
        if (i >= len || json[i] != '{')
                return -EBADMSG;

        for (; i < len; i++) {
                struct scan_frame *top = depth > 0 ? &stack[depth - 1] : NULL;
                char c = json[i];

                switch (c) {
                case '"': {
                        size_t start = ++i;

                        while (i < len && json[i] != '"')
                                i += json[i] == '\\' ? 2 : 1;
                        if (i >= len || !top)
                                return -EBADMSG;

                        if (top->object && top->expect_key) {
                                top->expect_key = false;
                                top->key_matched = top->on_path && depth <= n_path &&
                                                   key_equal(json + start, i - start, path[depth - 1]);
                        } else {
                                if (top->object && top->key_matched && depth == n_path) {
                                        *ret = json + start;
                                        *ret_len = i - start;
                                        return 1;
                                }
                                top->key_matched = false;
                        }
                        break;
                }
                case '{':
                case '[':
                        if (depth >= SCAN_MAX_DEPTH)
                                return -EBADMSG;
                        stack[depth] = (struct scan_frame){
                                .object = c == '{',
                                .on_path = !top || (top->object && top->key_matched && c == '{' && depth < n_path),
                                .expect_key = c == '{',
                        };
                        if (top)
                                top->key_matched = false;
                        depth++;
                        break;
                case '}':
                case ']':
                        if (!top || top->object != (c == '}'))
                                return -EBADMSG;
                        depth--;
                        if (depth == 0)
                                return 0;
                        break;
                case ',':
                        if (!top)
                                return -EBADMSG;
                        if (top->object)
                                top->expect_key = true;
                        top->key_matched = false;
                        break;
                case ':':
                case ' ':
                case '\t':
                case '\n':
                case '\r':
                        break;
                default:
                        /* A number or a literal: a value that is not a string. */
                        if (top)
                                top->key_matched = false;
                        break;
                }
        }

        return -EBADMSG;
}
