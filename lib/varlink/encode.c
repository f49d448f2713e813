/* Varlink messages: encoding calls, replies and errors.
 *
 * Every message is written by the reply writer (writer.c): the envelope as
 * text, the parameters dumped by jansson straight into the same growing
 * buffer (varlink_writer_json), the NUL that frames the message on the wire
 * at the end, so it can be handed to write(2) as it is. One encoder, so a
 * reply the daemon writes field by field and one encoded from a jansson
 * object are the same bytes.
 *
 * Method and error names are checked against the Varlink grammar before
 * they are written: they then need no JSON escaping, and a caller cannot
 * put a malformed name on the wire.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

#include "macro.h" /* lib/common: SESSIOND_EXPORT */
#include "sessiond/varlink.h"
#include "varlink/writer.h"

/* parameters NULL is {}; anything but an object is -EINVAL. */
static int encode_message(const char *member, const char *name, json_t *parameters, const char *flag, char **ret,
                          size_t *len) {
        struct varlink_writer w;

        assert(ret);
        assert(len);
        varlink_writer_init(&w);
        (void) varlink_writer_begin_message(&w, member, name);
        if (parameters)
                (void) varlink_writer_json(&w, parameters);
        else {
                (void) varlink_writer_object_begin(&w);
                (void) varlink_writer_object_end(&w);
        }
        /* A failure of any step above is sticky: finish reports it. */
        return varlink_writer_finish_message(&w, flag, ret, len);
}

SESSIOND_EXPORT int varlink_encode_call(const char *method, json_t *parameters, bool oneway, bool more, char **ret,
                                        size_t *len) {
        if (!varlink_method_split(method, NULL, 0) || (oneway && more))
                return -EINVAL;
        return encode_message("method", method, parameters, oneway ? "oneway" : more ? "more" : NULL, ret, len);
}

SESSIOND_EXPORT int varlink_encode_reply(json_t *parameters, bool continues, char **ret, size_t *len) {
        return encode_message(NULL, NULL, parameters, continues ? "continues" : NULL, ret, len);
}

SESSIOND_EXPORT int varlink_encode_error(const char *error, json_t *parameters, char **ret, size_t *len) {
        if (!varlink_method_split(error, NULL, 0))
                return -EINVAL;
        return encode_message("error", error, parameters, NULL, ret, len);
}
