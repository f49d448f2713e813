/* sessiond-bench: finding one string value in a Varlink reply without parsing it.
 *
 * A load generator must stay cheaper than the server it measures. A full JSON
 * parse of every reply (jansson allocates a node per value) would cost about
 * as much as the daemon's own work per request, so the bench only scans the
 * reply once for the one thing it needs: the "error" name at the top level,
 * or the "token" inside "parameters" of a Create reply.
 *
 * The scanner follows JSON's structure (strings with escapes, objects,
 * arrays, nesting) far enough to tell keys from values and to know at which
 * depth a key sits, so a user agent that happens to contain the text
 * "error" never counts as an error. It does not validate numbers or literals
 * and does not decode escapes: the span it returns is the raw text between
 * the quotes (tokens and error names never contain escapes).
 */
#pragma once

#include <stddef.h>

/* Looks up the string at `path` (n_path keys, outermost first) in the JSON
 * object `json` of `len` bytes. Returns 1 and sets *ret / *ret_len to the raw
 * text between the quotes when found, 0 when the path is absent or its value
 * is not a string, -EBADMSG when the text is not a JSON object or is cut
 * short (an unterminated string, unbalanced brackets). */
int bench_scan_string(const char *json, size_t len, const char *const *path, size_t n_path, const char **ret,
                      size_t *ret_len);
