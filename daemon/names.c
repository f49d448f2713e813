/* The text of a user id or a platform id: see names.h.
 *
 * Names travel far: into log lines, audit rows, sessionctl tables on an
 * operator's terminal and the web application's own logs. A C0 control or
 * DEL (a newline, an escape sequence) breaks or forges those lines, and so
 * do the C1 controls (U+0080..U+009F: NEL, CSI), which terminals also obey,
 * and U+2028/U+2029, which JavaScript and many log viewers treat as line
 * ends. So a name is strict UTF-8 without any of them.
 *
 * The decoder is written out here because it is a few lines and none of our
 * libraries exports one (jansson's is internal). "Strict" is RFC 3629: no
 * overlong forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF,
 * no truncated sequence. Requests only reach us through jansson, which
 * already refuses invalid UTF-8; the check stands on its own anyway, since
 * the engine must not depend on which parser fed it.
 */
#include "names.h"

#include <assert.h>
#include <stdint.h>

/* Decodes the sequence at s (at most n bytes): its length, and the code
 * point in *cp; 0 when the bytes are not strict UTF-8. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
        static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
        size_t len;
        uint32_t c;

        assert(n > 0);
        if (s[0] < 0x80) {
                *cp = s[0];
                return 1;
        }
        if (s[0] >= 0xc2 && s[0] <= 0xdf) {
                len = 2;
                c = s[0] & 0x1f;
        } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
                len = 3;
                c = s[0] & 0x0f;
        } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
                len = 4;
                c = s[0] & 0x07;
        } else
                return 0; /* a continuation byte, 0xc0/0xc1 (overlong) or 0xf5.. */
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                c = (c << 6) | (s[i] & 0x3f);
        }
        if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
                return 0;
        *cp = c;
        return len;
}

static int is_control(uint32_t c) {
        return c < 0x20 || (c >= 0x7f && c <= 0x9f);
}

const char *name_text_problem(const char *s, size_t n) {
        const unsigned char *p = (const unsigned char *) s;

        assert(s || n == 0);
        for (size_t i = 0; i < n;) {
                uint32_t c;
                size_t len = utf8_decode(p + i, n - i, &c);

                if (len == 0)
                        return "is not valid UTF-8";
                if (is_control(c))
                        return "contains control characters";
                if (c == 0x2028 || c == 0x2029)
                        return "contains line or paragraph separators";
                i += len;
        }
        return NULL;
}
