/* The side files of a SQLite database: see sidefiles.h.
 *
 * A read-only connection to a database in WAL mode creates its -wal and
 * -shm files and cannot remove them. After refusing a database, or after
 * only reading it, we remove the ones we made (an empty -wal and its
 * index), never one that was there before or that holds frames.
 */
#include "sidefiles.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

void side_files_note(struct side_files *f, const char *path) {
        snprintf(f->wal, sizeof f->wal, "%s-wal", path);
        snprintf(f->shm, sizeof f->shm, "%s-shm", path);
        f->had_wal = access(f->wal, F_OK) == 0;
        f->had_shm = access(f->shm, F_OK) == 0;
}

void side_files_restore(const struct side_files *f) {
        struct stat st;

        if (!f->had_wal && stat(f->wal, &st) == 0 && st.st_size == 0) {
                (void) unlink(f->wal);
                if (!f->had_shm)
                        (void) unlink(f->shm);
        }
}
