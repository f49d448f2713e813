/* Method tables of io.sessiond.Session and io.sessiond.Admin.
 * methods_dispatch() (declared in server.h) is the entry point.
 *
 * Each interface is a table of {name, handler} (methods_session.c,
 * methods_admin.c); methods.c routes a call to its row and answers unknown
 * interfaces and methods with the standard Varlink errors. The helpers below
 * are shared by the handlers: reading typed parameters, turning engine
 * results into Varlink errors, and SessionInfo as JSON.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

struct call;
struct daemon;
struct varlink_writer;

#define METHODS_SESSION_INTERFACE "io.sessiond.Session"
#define METHODS_ADMIN_INTERFACE "io.sessiond.Admin"

typedef void (*method_fn)(struct daemon *d, struct call *c);

struct method {
        const char *name; /* "Create" */
        method_fn handler;
        /* On a fleet, a token memory does not know is read off the loop
         * while the call waits (engine_fetch_allow): the handler is run
         * again once it is read, so it must do nothing before its engine
         * call that it may not do twice. */
        bool token_fetch;
};

extern const struct method methods_session[];
extern const size_t methods_session_count;
extern const struct method methods_admin[];
extern const size_t methods_admin_count;
/* io.sessiond.Admin, observability: Health, Metrics, Alerts, Events, Audit,
 * Cleanup, Analytics (methods_observe.c). */
extern const struct method methods_observe[];
extern const size_t methods_observe_count;
/* Adds the background jobs' state and the configuration's origin to the
 * object of Admin.Status. Returns 0 or -ENOMEM. */
int methods_observe_status(struct daemon *d, json_t *status);

/* The clock handed to the engine (Unix seconds). */
int64_t methods_now(void);
/* The same clock in Unix milliseconds: the `now` of every engine call. */
int64_t methods_now_ms(void);

/* SessionInfo (the Varlink type); NULL on ENOMEM. */
json_t *methods_session_info(const struct engine_info *i);
/* The same SessionInfo written as the next value of a reply writer, with
 * the same members in the same order. Returns the writer's error. */
int methods_session_info_write(struct varlink_writer *w, const struct engine_info *i);
/* Finishes the writer's reply and sends it as the call's final reply
 * (an out-of-memory StorageError if it could not be written). */
void methods_reply_written(struct call *c, struct varlink_writer *w);

/* Answers an engine failure `r` (see engine.h) with the error of `iface`
 * (NotFound, InvalidArgument...) or io.sessiond.Session's otherwise. */
void methods_reply_error(struct call *c, const char *iface, int r, const struct engine_error *err);

/* Marks the call as a write when the engine wrote since `seq`. */
void methods_mark_write(struct call *c, struct daemon *d, uint64_t seq);

/* Typed parameters. Each returns 0 and the value, -ENOENT when absent (the
 * value is left alone), or answers the call itself and returns -EINVAL:
 * InvalidParameter for a wrong JSON type (or a missing required one),
 * InvalidArgument for a string with a NUL in it. */
int methods_param_string(struct call *c, const char *iface, const char *key, bool required, const char **ret);
/* A string kept as bytes (sync data): its bytes and their count. */
int methods_param_bytes(struct call *c, const char *key, const char **ret, size_t *size);
int methods_param_int(struct call *c, const char *key, int64_t *ret);
int methods_param_bool(struct call *c, const char *key, bool *ret);
int methods_param_client(struct call *c, const char *iface, struct engine_client *ret, bool *given);

/* Replies an out-of-memory StorageError (the reply could not be built). */
void methods_reply_oom(struct call *c);

/* Pages (methods_page.c). A page holds at most METHODS_PAGE_MAX entries
 * and examines at most METHODS_PAGE_SCAN rows. */
#define METHODS_PAGE_MAX 200
#define METHODS_PAGE_SCAN 2000
/* The optional `cursor` parameter: *given false when absent; "" is the
 * start (a = b = 0); "A" or "A.B" otherwise. Answers InvalidArgument
 * itself and returns -EINVAL for anything else. */
int methods_param_cursor(struct call *c, const char *iface, bool *given, int64_t *a, int64_t *b);
/* Adds "cursor" to a reply object when more follows. */
int methods_reply_set_cursor(json_t *reply, bool more, int64_t a, int64_t b, bool pair);
/* A page of ListSessions or ListUser ({"sessions", "cursor"?}), or with
 * ask->id GetSession's {"session"}: answered when the engine has it (at
 * once on one host, after the store's next commit on a fleet). */
struct engine_list_ask;
void methods_sessions_page(struct daemon *d, struct call *c, const char *iface, const struct engine_list_ask *ask);
/* A page of the audit ({"entries", "cursor"?}): the first (where the
 * newest f->limit begin) or the one after (f->after_time, f->after_id). */
struct store_audit_filter;
void methods_audit_page(struct daemon *d, struct call *c, const char *iface, const struct store_audit_filter *f,
                        bool first);

/* Listings without a cursor (methods_listing.c): the whole listing in one
 * reply, built a page per loop iteration, the first page at once. The
 * sessions of user_id (NULL: all; user_listing: ListUser's checks and
 * live sessions only), at most `limit`. */
void methods_list_sessions_steps(struct daemon *d, struct call *c, const char *iface, const char *user_id,
                                 bool include_ended, bool user_listing, unsigned limit);
/* The newest f->limit audit entries matching f (user_id, kind, since),
 * oldest first. */
struct store_audit_filter;
void methods_audit_steps(struct daemon *d, struct call *c, const char *iface, const struct store_audit_filter *f);
/* An audit row as an Audit entry; NULL on ENOMEM (methods_observe.c). */
struct store_audit_row;
json_t *methods_audit_entry(const struct store_audit_row *row);

/* DestroyUser and Admin.TerminateUser: ends the user's live sessions in
 * time-capped steps (bulk.c) and answers {"count": n} when done
 * (methods_bulk.c). */
void methods_bulk_end_user(struct daemon *d, struct call *c, const char *iface, int64_t now, const char *user_id,
                           int64_t except_row_key, enum engine_end_reason reason);
