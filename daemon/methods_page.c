/* Pages of the big listings (issue 15): ListSessions, ListUser and Audit
 * take an optional `cursor`. Without it they answer as they always did,
 * the whole listing in one reply (old clients keep working). With it ("" to
 * begin) the reply is one page, at most METHODS_PAGE_MAX entries and built
 * from at most METHODS_PAGE_SCAN rows examined, so a page takes a bounded
 * time on the loop (a few ms at most) whatever the store holds; the reply
 * carries `cursor` for the next page and none once the listing is over. A
 * client pages with one call a page: the daemon serves every other client
 * between two of them (sessionctl list and audit page this way).
 *
 * A sessions cursor is the row after which the next page begins, so a
 * session is listed at most once however the table changes between pages,
 * and one that lives throughout the listing is listed exactly once. An
 * audit cursor is the (time, id) of the last entry listed; an audit
 * listing goes oldest first from the `limit`-th newest matching entry at
 * its first page, each later call passing the `limit` it still wants.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "methods.h"
#include "server.h"

int methods_param_cursor(struct call *c, const char *iface, bool *given, int64_t *a, int64_t *b) {
        const char *text = NULL;
        char tail;
        int r;

        *given = false;
        *a = *b = 0;
        r = methods_param_string(c, iface, "cursor", false, &text);
        if (r == -EINVAL)
                return r;
        if (r == -ENOENT || !text)
                return 0;
        *given = true;
        if (!*text)
                return 0;
        if ((sscanf(text, "%" SCNd64 ".%" SCNd64 "%c", a, b, &tail) == 2 ||
             sscanf(text, "%" SCNd64 "%c", a, &tail) == 1) &&
            *a >= 0 && *b >= 0)
                return 0;
        call_error(c, METHODS_ADMIN_INTERFACE ".InvalidArgument",
                   json_pack("{s:s, s:s}", "field", "cursor", "reason", "not a cursor this daemon made"));
        return -EINVAL;
}

int methods_reply_set_cursor(json_t *reply, bool more, int64_t a, int64_t b, bool pair) {
        char text[48];

        if (!reply)
                return -ENOMEM;
        if (!more)
                return 0;
        if (pair)
                snprintf(text, sizeof text, "%" PRId64 ".%" PRId64, a, b);
        else
                snprintf(text, sizeof text, "%" PRId64, a);
        return json_object_set_new(reply, "cursor", json_string(text)) < 0 ? -ENOMEM : 0;
}
