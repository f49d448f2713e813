/* Escaping text for terminals and logs.
 *
 * Values in messages come from outside: a configuration file, an env file, a
 * variable, a web client's user agent. Printed raw, an ESC starts a terminal
 * escape sequence, a newline splits a journal entry (and lets a value forge
 * the next one), a byte that is not UTF-8 makes JSON refuse the message. One
 * rule for all of them, used by the issues of the configuration system, by
 * sessionctl's output and by the daemon's log:
 *   - C0 control characters and DEL: \xNN;
 *   - bytes that are not part of valid UTF-8: \xNN;
 *   - C1 control characters (U+0080 to U+009F, which some terminals obey
 *     as well): \u0080 to \u009f;
 *   - everything else, backslashes included, as it is.
 * The result is valid UTF-8 without control characters.
 *
 * The writer works into a caller's buffer like snprintf (so the daemon's log
 * needs no allocation) and never cuts an escape or a character in half.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The escaped form of the character at s: its bytes and their count in
 * *in, the text to write in out (NUL-terminated, at most 7 bytes). */
static size_t escape_one(const char *s, size_t *in, char out[8]) {
        const unsigned char *p = (const unsigned char *) s;
        size_t n = utf8_char_length(s);

        if (n == 0 || p[0] < 0x20 || p[0] == 0x7f) {
                *in = 1;
                return (size_t) snprintf(out, 8, "\\x%02x", p[0]);
        }
        if (n == 2 && p[0] == 0xc2 && p[1] <= 0x9f) {
                *in = 2;
                return (size_t) snprintf(out, 8, "\\u%04x", p[1]);
        }
        *in = n;
        memcpy(out, s, n);
        out[n] = '\0';
        return n;
}

SESSIOND_EXPORT size_t sessiond_text_escape(char *buf, size_t size, const char *s) {
        size_t total = 0, used = 0;
        bool full = false;

        if (!s)
                s = "";
        while (*s) {
                char piece[8];
                size_t in, n = escape_one(s, &in, piece);

                if (!full && used + n < size) {
                        memcpy(buf + used, piece, n);
                        used += n;
                } else
                        full = true;
                total += n;
                s += in;
        }
        if (size > 0)
                buf[used] = '\0';
        return total;
}

SESSIOND_EXPORT char *sessiond_text_escape_dup(const char *s) {
        size_t n = sessiond_text_escape(NULL, 0, s);
        char *out = malloc(n + 1);

        if (out)
                sessiond_text_escape(out, n + 1, s);
        return out;
}
