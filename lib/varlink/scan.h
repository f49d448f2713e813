/* Private to lib/varlink: the two parsers of a call (see scan.c). */
#pragma once

#include "sessiond/varlink.h"

/* The scanner: 0 and the call, or -EAGAIN when the message is outside the
 * shape it handles (the jansson parser then decides), or -ENOMEM. It never
 * rejects a message: -EAGAIN is its only "no". */
int varlink_call_scan(const char *msg, size_t len, struct varlink_call *ret);

/* The reference parser, jansson only: what varlink_call_parse() falls back
 * to. Exposed for the tests that compare the two. */
int varlink_call_parse_json(const char *msg, size_t len, struct varlink_call *ret);

void varlink_scanned_free(struct varlink_scanned *s);
int varlink_scanned_param(struct varlink_scanned *s, const char *object, const char *key, struct varlink_value *ret);
int varlink_scanned_parameters(struct varlink_scanned *s, json_t **ret);
