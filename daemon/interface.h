/* The Varlink interfaces sessiond serves, and their description texts.
 *
 * The texts are the .varlink files of daemon/, embedded byte for byte at build
 * time (daemon/embed-interfaces.py writes interface-texts.c), so the files
 * in the source tree are the single source of what GetInterfaceDescription
 * returns and what GetInfo lists. No copy of an interface text exists in C.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define INTERFACE_SERVICE "org.varlink.service"
#define INTERFACE_SESSION "io.sessiond.Session"
#define INTERFACE_ADMIN "io.sessiond.Admin"

struct interface_text {
        const char *name;
        size_t name_len;
        const char *text;
        size_t text_len;
};

/* Generated: every served interface in GetInfo order, ended by { 0 }. */
extern const struct interface_text interface_texts[];

/* The interface called `name` (name_len bytes, not necessarily
 * NUL-terminated), or NULL when sessiond does not serve it. */
const struct interface_text *interface_find(const char *name, size_t name_len);

/* True when `name` (name_len bytes) is io.sessiond.Admin. */
bool interface_is_admin(const char *name, size_t name_len);
