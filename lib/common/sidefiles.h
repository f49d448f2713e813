/* The -wal and -shm files next to a SQLite database (lib/common/sidefiles.c).
 *
 * Shared by the daemon's store and `sessionctl db`, which both open
 * databases they may refuse or only read, and must leave the folder as they
 * found it. */
#pragma once

#include <limits.h>
#include <stdbool.h>

struct side_files {
        char wal[PATH_MAX], shm[PATH_MAX];
        bool had_wal, had_shm;
};

/* Remembers which of path's side files exist before it is opened. */
void side_files_note(struct side_files *f, const char *path);
/* Removes a -wal (and its -shm) that opening made and left empty. */
void side_files_restore(const struct side_files *f);
