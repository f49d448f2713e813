/* Private to lib/varlink: the writer's envelope for any message, which the
 * encoders of encode.c use (the public writer only starts replies). */
#pragma once

#include "sessiond/varlink.h"

/* Starts {"parameters": when member is NULL, else {"MEMBER":"NAME","parameters":
 * (member "method" or "error"; name already checked against the grammar). */
int varlink_writer_begin_message(struct varlink_writer *w, const char *member, const char *name);
/* Closes the message, with "FLAG":true when flag is not NULL ("continues",
 * "oneway", "more"); otherwise as varlink_writer_finish_reply(). */
int varlink_writer_finish_message(struct varlink_writer *w, const char *flag, char **ret, size_t *len);
