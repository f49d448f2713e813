/* Lookup over the embedded interface texts (see interface.h).
 *
 * Three interfaces: a linear scan with a length check first is as fast as
 * anything cleverer, and it runs once per call on the method's prefix.
 */
#include "interface.h"

#include <assert.h>
#include <string.h>

const struct interface_text *interface_find(const char *name, size_t name_len) {
        assert(name || name_len == 0);

        for (const struct interface_text *t = interface_texts; t->name; t++)
                if (t->name_len == name_len && memcmp(t->name, name, name_len) == 0)
                        return t;
        return NULL;
}

bool interface_is_admin(const char *name, size_t name_len) {
        return name_len == strlen(INTERFACE_ADMIN) && memcmp(name, INTERFACE_ADMIN, name_len) == 0;
}
