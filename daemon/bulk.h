/* Bulk ends in steps: DestroyUser and Admin.TerminateUser of a user with
 * many sessions. See bulk.c for the design. */
#pragma once

#include <stdint.h>

#include "engine.h"

struct daemon;
struct bulk;
struct bulk_job;

/* error: 0, or the negative errno that stopped the job (-ECANCELED: the
 * daemon stopped first). count: the sessions it ended. */
typedef void (*bulk_done_fn)(int error, unsigned count, void *userdata);

int bulk_new(struct daemon *d, struct bulk **ret);
/* Finishes every job still queued (the daemon is stopping: one last unit,
 * no deadline), without callbacks for the jobs whose caller is gone, then
 * frees. */
void bulk_free(struct bulk *b);

/* Ends the live sessions of user_id created at or before `now` (Unix ms; except row
 * except_row_key, 0: none) with `reason`. The first step runs here: when it
 * is all (the common case, a user with a few sessions), *ret is NULL, the
 * count is in *count and done is not called. Otherwise the job goes on in
 * later loop iterations and done runs when it is over; *ret names it for
 * bulk_forget(). */
int bulk_end_user(struct bulk *b, int64_t now, const char *user_id, int64_t except_row_key,
                  enum engine_end_reason reason, bulk_done_fn done, void *userdata, unsigned *count,
                  struct bulk_job **ret);
/* The caller of a job is gone (its connection closed): the job goes on
 * (the sessions were asked to end), without a callback. */
void bulk_forget(struct bulk *b, struct bulk_job *job);
