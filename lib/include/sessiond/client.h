/* A small blocking Varlink client for sessionctl and C applications.
 *
 * One connection, one call in flight at a time (plus `more` streams read with
 * sessiond_client_next()). Every wait has a timeout so that a stuck daemon
 * never hangs a script. The library never logs: errors come back as negative
 * errno values, and Varlink errors as the error name plus its parameters.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "sessiond/varlink.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SESSIOND_DEFAULT_SOCKET "/run/sessiond/sessiond.sock"

struct sessiond_client;

/* Connects to the Unix socket at path (NULL: $SESSIOND_SOCKET, then the
 * default). -ENOENT / -ECONNREFUSED when no daemon listens there.
 * timeout_ms applies to every later wait (0: 30 s). */
int sessiond_client_connect(const char *path, int timeout_ms, struct sessiond_client **ret);
void sessiond_client_free(struct sessiond_client *c);
static inline void sessiond_client_freep(struct sessiond_client **c) {
        if (*c)
                sessiond_client_free(*c);
}

#define SESSIOND_CALL_ONEWAY (1u << 0)
#define SESSIOND_CALL_MORE (1u << 1)

/* Sends a call and waits for the (first) reply.
 * On a successful reply: returns 0, *ret_params is a new reference and
 * *ret_error (if not NULL) is set to NULL.
 * On a Varlink error reply: returns 0 as well, *ret_error points to a
 * string valid until the next call on c, *ret_params holds its parameters.
 * With SESSIOND_CALL_ONEWAY nothing is read; *ret_params is NULL.
 * *ret_continues (if not NULL) tells whether more replies follow.
 * Transport problems: -ETIMEDOUT, -ECONNRESET, -EBADMSG, -ENOMEM... */
int sessiond_client_call(struct sessiond_client *c, const char *method, json_t *params, unsigned flags,
                         json_t **ret_params, const char **ret_error, bool *ret_continues);

/* Reads the next reply of a `more` stream (same conventions). timeout_ms < 0
 * waits forever (used by `sessionctl events --follow`). */
int sessiond_client_next(struct sessiond_client *c, int timeout_ms, json_t **ret_params, const char **ret_error,
                         bool *ret_continues);

/* File descriptor, for callers that poll themselves. */
int sessiond_client_fd(const struct sessiond_client *c);

#ifdef __cplusplus
}
#endif
