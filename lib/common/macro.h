/* Macros and cleanup helpers shared by lib/, daemon/ and tools/.
 *
 * Internal: never installed, not part of libsessiond's ABI (an installed
 * header must not need it). Each of these used to be defined again in the
 * file that needed it; this is the one copy.
 */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The number of elements of an array (not of a pointer). */
#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

/* The struct that holds member at ptr. (The extra parentheses around the
 * cast keep clang-format from reading "(ptr) - offsetof" as a cast.) */
#define container_of(ptr, type, member) ((type *) (((char *) (ptr)) - offsetof(type, member)))

/* __attribute__((cleanup)): the function is called with a pointer to the
 * variable when it goes out of scope. */
#define _cleanup_(f) __attribute__((cleanup(f)))

/* Frees *p (p points to any pointer variable). */
static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Frees a NULL-terminated array of strings and the array (*p may be NULL). */
static inline void strv_freep(char ***p) {
        if (*p)
                for (char **s = *p; *s; s++)
                        free(*s);
        free(*p);
}

/* Closes *fd when it is open (>= 0); errno is kept, so that a failure
 * path may return -errno after its cleanup ran. */
static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;

                (void) close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(closep)

/* Closes *f when there is one (errno kept, as closep()). */
static inline void fclosep(FILE **f) {
        if (*f) {
                int saved = errno;

                (void) fclose(*f);
                errno = saved;
        }
}
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Unlinks the file that *path names, when not NULL, without freeing the
 * string (another variable owns it): a temporary file that goes away on
 * every failure path; TAKE_PTR() it once it must stay. errno kept. */
static inline void unlinkp(char **path) {
        if (*path) {
                int saved = errno;

                (void) unlink(*path);
                errno = saved;
        }
}
#define _cleanup_unlink_ _cleanup_(unlinkp)

/* Takes a value out of a cleanup variable: the value is returned and the
 * variable left NULL (or -1), so that its cleanup does nothing. */
#define TAKE_PTR(p)                          \
        ({                                   \
                __typeof__(p) _taken_ = (p); \
                (p) = NULL;                  \
                _taken_;                     \
        })
#define TAKE_FD(fd)                 \
        ({                          \
                int _taken_ = (fd); \
                (fd) = -1;          \
                _taken_;            \
        })

/* Drops a jansson reference (json_decrefp() comes with jansson.h, which the
 * file that uses this includes). */
#define _cleanup_json_ _cleanup_(json_decrefp)

/* Marks a definition in lib/ as part of libsessiond's public ABI.
 *
 * libsessiond is compiled with -fvisibility=hidden, so a function leaves
 * the shared library only when its definition carries this mark; the
 * version script lib/libsessiond.sym then lists the same names, gives them
 * the version node and makes everything else local. Both, on purpose: the
 * mark is next to the code (a reader sees at the definition that it is
 * API, and the compiler binds every other call inside the library
 * directly, not through the PLT), the script is the one list that the ABI
 * test (tests/abi/check-exports.py) holds the built and installed library,
 * and the installed headers, to. Hidden visibility alone would need no
 * script; the script alone would leave every internal function
 * interposable and the headers' promise unchecked. */
#define SESSIOND_EXPORT __attribute__((visibility("default")))
