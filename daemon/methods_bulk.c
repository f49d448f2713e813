/* The answer of a bulk end (DestroyUser, Admin.TerminateUser), shared by
 * the two interfaces: the first step runs in the handler; a user with more
 * sessions than a step ends keeps the call open (bulk.c) and it is answered
 * when the job is over, {"count": n}, held like every write until the unit
 * of work with the last ends is committed. A caller that hangs up leaves
 * the job running without it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bulk.h"
#include "daemon.h"
#include "engine.h"
#include "log.h"
#include "methods.h"
#include "server.h"

struct bulk_call {
        struct daemon *d;
        struct call *call;
        struct bulk_job *job;
        const char *iface;
};

static void bulk_call_done(int error, unsigned count, void *userdata) {
        struct bulk_call *x = userdata;
        struct call *c = x->call;
        const char *iface = x->iface;

        call_set_cancel(c, NULL, NULL);
        free(x);
        if (error == -ECANCELED) {
                call_error(c, "io.sessiond.Session.StorageError",
                           json_pack("{s:s}", "reason", "the daemon is stopping"));
                return;
        }
        if (error < 0) {
                methods_reply_error(c, iface, error, &(struct engine_error){0});
                return;
        }
        if (count > 0)
                call_mark_write(c);
        call_reply(c, json_pack("{s:I}", "count", (json_int_t) count));
}

static void bulk_call_cancel(struct call *c, void *userdata) {
        struct bulk_call *x = userdata;

        (void) c;
        bulk_forget(x->d->bulk, x->job);
        free(x);
}

void methods_bulk_end_user(struct daemon *d, struct call *c, const char *iface, int64_t now, const char *user_id,
                           int64_t except_row_key, enum engine_end_reason reason) {
        uint64_t seq = engine_write_seq(d->engine);
        struct bulk_call *x = calloc(1, sizeof *x);
        unsigned count = 0;
        int r;

        if (!x) {
                methods_reply_oom(c);
                return;
        }
        x->d = d;
        x->call = c;
        x->iface = iface;
        r = bulk_end_user(d->bulk, now, user_id, except_row_key, reason, bulk_call_done, x, &count, &x->job);
        if (r < 0 || !x->job) {
                free(x);
                if (r < 0) {
                        methods_reply_error(c, iface, r, &(struct engine_error){0});
                        return;
                }
                if (reason == ENGINE_END_TERMINATED && count > 0)
                        log_info("%u sessions of user %s terminated by an operator.", count, user_id);
                methods_mark_write(c, d, seq);
                call_reply(c, json_pack("{s:I}", "count", (json_int_t) count));
                return;
        }
        call_set_cancel(c, bulk_call_cancel, x);
}
