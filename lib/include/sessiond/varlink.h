/* The Varlink wire protocol, shared by the daemon, sessionctl and clients.
 *
 * Varlink messages are JSON objects, each terminated by one NUL byte, on a
 * stream socket. A reader accumulates whatever the socket delivers (partial
 * messages, several pipelined messages at once) and hands out one complete
 * message at a time; a message that grows beyond the configured maximum
 * without its NUL is an error, so a peer cannot make us buffer without bound.
 *
 * Calls are {"method": "iface.Method", "parameters": {...}, "oneway": bool,
 * "more": bool, "upgrade": bool}; replies are {"parameters": {...}},
 * optionally with "continues": true, or {"error": "iface.Error",
 * "parameters": {...}}. JSON is handled by jansson.
 *
 * Functions return 0 (or a positive count where documented) or a negative
 * errno. The library never logs.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Standard errors of org.varlink.service. */
#define VARLINK_ERROR_INTERFACE_NOT_FOUND "org.varlink.service.InterfaceNotFound"
#define VARLINK_ERROR_METHOD_NOT_FOUND "org.varlink.service.MethodNotFound"
#define VARLINK_ERROR_METHOD_NOT_IMPLEMENTED "org.varlink.service.MethodNotImplemented"
#define VARLINK_ERROR_INVALID_PARAMETER "org.varlink.service.InvalidParameter"
#define VARLINK_ERROR_PERMISSION_DENIED "org.varlink.service.PermissionDenied"
#define VARLINK_ERROR_EXPECTED_MORE "org.varlink.service.ExpectedMore"

/* JSON nesting deeper than this is rejected as malformed. */
#define VARLINK_MAX_DEPTH 64

/* ---- framing ------------------------------------------------------------ */

/* The reader, the call and the writer are public structs on purpose: the
 * daemon keeps a reader per connection and a call and a writer per request
 * on the stack, with no allocation. Programs use them through the
 * functions below (of a call they read method, oneway, more and upgrade);
 * the other fields are the library's. Their size and layout are part of
 * the ABI: a change of them changes the soname (lib/meson.build). */
struct varlink_reader {
        char *buf;
        size_t start;   /* first byte not yet handed out */
        size_t end;     /* one past the last byte received */
        size_t scanned; /* bytes after start already known to hold no NUL */
        size_t allocated;
        size_t max_message_size; /* without the NUL */
};

int varlink_reader_init(struct varlink_reader *r, size_t max_message_size);
void varlink_reader_free(struct varlink_reader *r);

/* Space to read into directly (for read(2) or a libuv alloc callback):
 * makes room for at least `want` bytes and returns a pointer and the room.
 * After reading n bytes call varlink_reader_commit(r, n). */
int varlink_reader_space(struct varlink_reader *r, size_t want, char **ret, size_t *room);
void varlink_reader_commit(struct varlink_reader *r, size_t n);
/* Copies bytes in (convenience for tests and fuzzers). */
int varlink_reader_feed(struct varlink_reader *r, const void *data, size_t n);

/* Hands out the next complete message (NUL-terminated, valid until the next
 * call on the reader). Returns 1 and sets *msg and *len when there is one, 0 when
 * more bytes are needed, -EMSGSIZE when the pending message is longer than
 * max_message_size. */
int varlink_reader_next(struct varlink_reader *r, const char **msg, size_t *len);

/* Bytes received but not yet handed out (a half-sent message). */
size_t varlink_reader_pending(const struct varlink_reader *r);

/* ---- messages ------------------------------------------------------------ */

struct varlink_scanned;

struct varlink_call {
        const char *method; /* "io.sessiond.Session.Create" */
        bool oneway;
        bool more;
        bool upgrade;
        /* Private: read the parameters with varlink_call_param() or
         * varlink_call_parameters(). A call is parsed either by the scanner
         * (scanned set, parameters made from its text on first request) or
         * by jansson (root set, owning method and parameters). */
        struct varlink_scanned *scanned;
        json_t *root;
        json_t *parameters;
};

/* Parses a call. -EBADMSG: not JSON, not an object, nested too deep, method
 * missing or not a string or not "iface.Method", parameters not an object,
 * or oneway/more/upgrade not booleans, or oneway together with more.
 * Duplicate keys anywhere are -EBADMSG too. */
int varlink_call_parse(const char *msg, size_t len, struct varlink_call *ret);
void varlink_call_clear(struct varlink_call *c);

/* A parameter's value. Strings are NUL-terminated and `length` counts their
 * bytes. (A call with "\u0000" in a string is refused as malformed, so
 * today length == strlen(string); callers that store bytes use length.) */
enum varlink_value_type {
        VARLINK_VALUE_NULL,
        VARLINK_VALUE_BOOLEAN,
        VARLINK_VALUE_INTEGER,
        VARLINK_VALUE_REAL,
        VARLINK_VALUE_STRING,
        VARLINK_VALUE_OBJECT,
        VARLINK_VALUE_ARRAY,
};

struct varlink_value {
        enum varlink_value_type type;
        bool boolean;
        int64_t integer;
        double real;
        const char *string;
        size_t length;
};

/* Looks up parameters.key, or parameters.object.key when object is not
 * NULL, without building JSON objects when the call was scanned. Returns 0
 * and the value (never of type NULL; borrowed from the call), -ENOENT when
 * the member (or the object) is absent or null, -EINVAL when object names a
 * member that is not an object. */
int varlink_call_param(struct varlink_call *c, const char *object, const char *key, struct varlink_value *ret);

/* The parameters as a jansson object, made on first use for a scanned call
 * (borrowed; the call owns it). NULL only when memory ran out. */
json_t *varlink_call_parameters(struct varlink_call *c);

/* Splits "a.b.c.Method" into interface "a.b.c" (copied into iface, which has
 * room for size bytes) and returns a pointer to "Method". NULL if malformed. */
const char *varlink_method_split(const char *method, char *iface, size_t size);

struct varlink_reply {
        json_t *root;
        const char *error;  /* NULL for success */
        json_t *parameters; /* always an object */
        bool continues;
};

/* Parses a reply. -EBADMSG as above. */
int varlink_reply_parse(const char *msg, size_t len, struct varlink_reply *ret);
void varlink_reply_clear(struct varlink_reply *r);

/* Encoders. Each returns a malloc'ed buffer holding the JSON text followed by
 * the terminating NUL; *len includes the NUL. `parameters` may be NULL
 * (encoded as {}); the reference is borrowed, not stolen. */
int varlink_encode_call(const char *method, json_t *parameters, bool oneway, bool more, char **ret, size_t *len);
int varlink_encode_reply(json_t *parameters, bool continues, char **ret, size_t *len);
int varlink_encode_error(const char *error, json_t *parameters, char **ret, size_t *len);

/* ---- parameter helpers ---------------------------------------------------- */

/* Typed lookups for handlers. They return 0 and the value, -ENOENT when the
 * key is absent or JSON null (the value is then left untouched), -EINVAL when
 * it has the wrong type. */
int varlink_param_string(json_t *params, const char *key, const char **ret);
int varlink_param_int(json_t *params, const char *key, int64_t *ret);
int varlink_param_bool(json_t *params, const char *key, bool *ret);
int varlink_param_object(json_t *params, const char *key, json_t **ret);

/* ---- reply writer ---------------------------------------------------------- */

/* Writes a reply's JSON text straight into its wire buffer, without jansson
 * objects, for the hot replies (lib/varlink/writer.c). The result is what
 * varlink_encode_reply() makes of the same members in the same order, byte
 * for byte. Commas are handled by the writer:
 *
 *   varlink_writer_init(&w);
 *   varlink_writer_begin_reply(&w);          {"parameters":
 *   varlink_writer_object_begin(&w);         {
 *   varlink_writer_key(&w, "expires_in");    "expires_in":
 *   varlink_writer_int(&w, 600);             600
 *   varlink_writer_object_end(&w);           }
 *   r = varlink_writer_finish_reply(&w, false, &data, &len);   }\0
 *
 * Errors are sticky: every function returns 0 or the writer's first error
 * (-ENOMEM; -EINVAL from varlink_writer_json() for a value jansson cannot
 * dump), and finish_reply returns it too, so checking only that is enough.
 * Misuse (a value where a key is due, unbalanced ends, nesting deeper than
 * VARLINK_WRITER_MAX_DEPTH) is asserted.
 *
 * Strings must be valid UTF-8 (not checked): bytes >= 0x80 are copied as
 * they are; ", \ and control characters are escaped. */
#define VARLINK_WRITER_MAX_DEPTH 64

struct varlink_writer {
        char *data;
        size_t len;
        size_t allocated;
        int error;              /* first failure, 0 if none */
        unsigned depth;         /* open objects and arrays */
        uint64_t has_members;   /* bit d: the container at depth d has a member */
        uint64_t is_object;     /* bit d: the container at depth d is an object */
        bool after_key;         /* a value is due (after a key or the envelope) */
        bool began;             /* begin_reply() was called */
        bool parameters_object; /* the parameters written are an object */
};

void varlink_writer_init(struct varlink_writer *w);
/* Drops whatever was written (finish_reply hands the buffer out instead). */
void varlink_writer_free(struct varlink_writer *w);

/* Starts a reply: {"parameters": — the next value written (an object) is
 * the parameters. */
int varlink_writer_begin_reply(struct varlink_writer *w);
int varlink_writer_object_begin(struct varlink_writer *w);
int varlink_writer_object_end(struct varlink_writer *w);
int varlink_writer_array_begin(struct varlink_writer *w);
int varlink_writer_array_end(struct varlink_writer *w);
/* The key of the next member of the current object. */
int varlink_writer_key(struct varlink_writer *w, const char *key);
int varlink_writer_string(struct varlink_writer *w, const char *s);
/* n bytes, which may include NUL (written as \u0000). */
int varlink_writer_stringn(struct varlink_writer *w, const char *s, size_t n);
int varlink_writer_int(struct varlink_writer *w, int64_t v);
int varlink_writer_bool(struct varlink_writer *w, bool v);
int varlink_writer_null(struct varlink_writer *w);
/* Any existing value, dumped compactly by jansson (borrowed). */
int varlink_writer_json(struct varlink_writer *w, json_t *value);
/* A bare JSON value instead of a reply (an audit row's detail, say):
 * begin_value(), one value (usually an object), then finish_value() hands
 * out the malloc'ed text with a terminating NUL that *len does not count.
 * The bytes are what json_dumps(JSON_COMPACT) makes of the same value. */
int varlink_writer_begin_value(struct varlink_writer *w);
int varlink_writer_finish_value(struct varlink_writer *w, char **ret, size_t *len);
/* Closes the envelope (with "continues": true if asked) and hands out the
 * malloc'ed message with its terminating NUL, as varlink_encode_reply()
 * does; *len includes the NUL. The writer is left empty, ready for
 * another reply after varlink_writer_init(). On failure (a sticky error,
 * or parameters that are not an object: -EINVAL) the buffer is freed. */
int varlink_writer_finish_reply(struct varlink_writer *w, bool continues, char **ret, size_t *len);

#ifdef __cplusplus
}
#endif
