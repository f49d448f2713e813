/* Varlink framing: turning a byte stream into NUL-terminated messages.
 *
 * The reader is one growable buffer. Bytes arrive at `end` (read(2) straight
 * into varlink_reader_space(), or copied by varlink_reader_feed()), messages
 * leave at `start`. Since a message is handed out in place, its NUL already
 * terminates it as a C string: no copy is made between the socket and the
 * JSON parser.
 *
 * Scanning is O(n) over the whole stream: `scanned` remembers how many bytes
 * after `start` are already known to hold no NUL, so a message that arrives
 * one byte at a time is never rescanned from its beginning. memchr() does the
 * actual search.
 *
 * Memory is bounded by the caller's discipline plus max_message_size: a
 * pending message that grows past the limit without its NUL is -EMSGSIZE as
 * soon as it is seen, so one peer can never make us buffer more than
 * max_message_size + one read of a partial message. Complete messages are
 * not limited here beyond their size: a caller that stops calling
 * varlink_reader_next() (because a call is in flight) must also stop reading.
 *
 * The buffer is compacted (pending bytes moved to the front) only when room
 * is requested and the front holds consumed bytes worth reclaiming, so each
 * byte is moved at most a bounded number of times per message handed out.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h" /* lib/common: SESSIOND_EXPORT */
#include "sessiond/varlink.h"

#define READER_MIN_ALLOC 4096

SESSIOND_EXPORT int varlink_reader_init(struct varlink_reader *r, size_t max_message_size) {
        assert(r);

        if (max_message_size == 0 || max_message_size > SIZE_MAX / 4)
                return -EINVAL;
        *r = (struct varlink_reader){.max_message_size = max_message_size};
        return 0;
}

SESSIOND_EXPORT void varlink_reader_free(struct varlink_reader *r) {
        if (!r)
                return;
        free(r->buf);
        *r = (struct varlink_reader){.max_message_size = r->max_message_size};
}

SESSIOND_EXPORT size_t varlink_reader_pending(const struct varlink_reader *r) {
        assert(r);
        assert(r->start <= r->end);
        return r->end - r->start;
}

/* Moves the pending bytes to the front of the buffer. */
static void reader_compact(struct varlink_reader *r) {
        size_t pending = r->end - r->start;

        if (r->start == 0)
                return;
        if (pending > 0)
                memmove(r->buf, r->buf + r->start, pending);
        r->start = 0;
        r->end = pending;
}

SESSIOND_EXPORT int varlink_reader_space(struct varlink_reader *r, size_t want, char **ret, size_t *room) {
        assert(r);
        assert(ret);
        assert(room);

        if (want == 0)
                want = 1;

        if (r->allocated - r->end < want) {
                size_t pending = r->end - r->start;

                /* Reclaim the consumed front first if that makes enough room,
                 * or if it is at least half of the buffer (cheap: the pending
                 * part is then small compared to what we keep). */
                if (r->start > 0 && (r->allocated - pending >= want || r->start >= r->allocated / 2))
                        reader_compact(r);

                if (r->allocated - r->end < want) {
                        size_t need, n;
                        char *p;

                        if (want > SIZE_MAX / 2 - r->end)
                                return -ENOMEM;
                        need = r->end + want;
                        n = r->allocated > 0 ? r->allocated : READER_MIN_ALLOC;
                        while (n < need)
                                n *= 2;
                        p = realloc(r->buf, n);
                        if (!p)
                                return -ENOMEM;
                        r->buf = p;
                        r->allocated = n;
                }
        }

        *ret = r->buf + r->end;
        *room = r->allocated - r->end;
        return 0;
}

SESSIOND_EXPORT void varlink_reader_commit(struct varlink_reader *r, size_t n) {
        assert(r);
        assert(n <= r->allocated - r->end);
        r->end += n;
}

SESSIOND_EXPORT int varlink_reader_feed(struct varlink_reader *r, const void *data, size_t n) {
        char *p;
        size_t room;
        int k;

        assert(r);
        assert(data || n == 0);

        if (n == 0)
                return 0;
        k = varlink_reader_space(r, n, &p, &room);
        if (k < 0)
                return k;
        memcpy(p, data, n);
        varlink_reader_commit(r, n);
        return 0;
}

SESSIOND_EXPORT int varlink_reader_next(struct varlink_reader *r, const char **msg, size_t *len) {
        const char *nul;
        size_t pending;

        assert(r);
        assert(msg);
        assert(len);
        assert(r->start <= r->end);

        pending = r->end - r->start;
        if (pending == 0) {
                /* Everything consumed: start over at the front, no move needed. */
                r->start = r->end = r->scanned = 0;
                return 0;
        }

        assert(r->scanned <= pending);
        nul = memchr(r->buf + r->start + r->scanned, 0, pending - r->scanned);
        if (!nul) {
                r->scanned = pending;
                if (pending > r->max_message_size)
                        return -EMSGSIZE;
                return 0;
        }

        *msg = r->buf + r->start;
        *len = (size_t) (nul - *msg);
        if (*len > r->max_message_size)
                return -EMSGSIZE;

        r->start += *len + 1;
        r->scanned = 0;
        return 1;
}
