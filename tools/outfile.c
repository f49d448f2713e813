/* Output files of sessionctl: see outfile.h.
 *
 * A backup or a recovered database holds every session's user, address and
 * token hash, and an operator may write it anywhere, e.g. into a folder
 * another user can write. The old way (unlink FILE.tmp, create it without
 * O_EXCL, rename whatever is there) let that user win the race: plant
 * FILE.tmp or a symbolic link of that name, and own the backup. Now:
 *
 *  - the folder is checked first with the daemon's rule for its state
 *    folder (statefiles_folder_problem): ours or root's, and not writable by
 *    group or others unless sticky. In any other folder somebody else can
 *    rename our file away and put theirs in its place between any two
 *    steps, and SQLite, which opens files by name, would write into it;
 *  - the temporary file gets a fresh random name with mkostemp (O_CREAT |
 *    O_EXCL: it is new, it is ours, it is no symbolic link) and mode 0600,
 *    in the destination's folder, so that the rename is atomic;
 *  - before the rename, the name must still be the file we made (same
 *    device and inode as our descriptor), so that what is renamed into
 *    place is what we wrote; without --force the rename never replaces a
 *    file (RENAME_NOREPLACE).
 * SQLite opens the temporary file by name (with SQLITE_OPEN_NOFOLLOW, in
 * the callers); in a folder that passed the check nobody else can change
 * what that name means.
 */
#include "outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "folder-rule.h" /* lib/common */
#include "macro.h"       /* lib/common: _cleanup_ */

static int outfile_fail(const char *who, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int outfile_fail(const char *who, int r, const char *fmt, ...) {
        va_list ap;

        fprintf(stderr, "%s: ", who);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return r;
}

static void outfile_free(struct outfile *f) {
        if (f->fd >= 0)
                close(f->fd);
        free(f->path);
        free(f->dir);
        free(f->tmp);
        *f = (struct outfile){.fd = -1};
}

/* 0 when the temporary name still is the file behind f->fd. */
static int outfile_still_ours(const struct outfile *f) {
        struct stat st;

        if (lstat(f->tmp, &st) < 0)
                return -errno;
        return S_ISREG(st.st_mode) && st.st_dev == f->dev && st.st_ino == f->ino ? 0 : -ESTALE;
}

int outfile_begin(struct outfile *f, const char *who, const char *path) {
        const char *problem;
        char *copy, *base;
        struct stat st;

        *f = (struct outfile){.fd = -1};
        copy = strdup(path);
        f->path = strdup(path);
        if (!copy || !f->path) {
                free(copy);
                outfile_free(f);
                return outfile_fail(who, -ENOMEM, "out of memory");
        }
        f->dir = strdup(dirname(copy));
        free(copy);
        copy = strdup(path);
        base = copy ? basename(copy) : NULL;
        if (!f->dir || !base || asprintf(&f->tmp, "%s/.%s.XXXXXX", f->dir, base) < 0) {
                f->tmp = NULL;
                free(copy);
                outfile_free(f);
                return outfile_fail(who, -ENOMEM, "out of memory");
        }
        free(copy);

        if (stat(f->dir, &st) < 0) {
                int r = -errno;

                outfile_fail(who, r, "cannot write into %s: %s", f->dir, strerror(-r));
                outfile_free(f);
                return r;
        }
        problem = statefiles_folder_problem(&st, geteuid());
        if (problem) {
                outfile_fail(who, -EPERM,
                             "refusing to write %s: its folder %s %s (mode %04o, owner uid %u), so another user "
                             "could replace the file; choose a folder only you (or root) can write",
                             path, f->dir, problem, (unsigned) (st.st_mode & 07777), (unsigned) st.st_uid);
                outfile_free(f);
                return -EPERM;
        }

        f->fd = mkostemp(f->tmp, O_CLOEXEC); /* O_CREAT | O_EXCL, mode 0600 */
        if (f->fd < 0 || fstat(f->fd, &st) < 0) {
                int r = -errno;

                outfile_fail(who, r, "cannot create a temporary file in %s: %s", f->dir, strerror(-r));
                if (f->fd >= 0)
                        (void) unlink(f->tmp);
                outfile_free(f);
                return r;
        }
        f->dev = st.st_dev;
        f->ino = st.st_ino;
        return 0;
}

/* For outfile_commit(): the temporary file is removed on every failure
 * path (the variable is set to NULL once it is renamed into place). */
static void outfile_abortp(struct outfile **f) {
        if (*f)
                outfile_abort(*f);
}

int outfile_commit(struct outfile *f, const char *who, bool replace) {
        _cleanup_(outfile_abortp) struct outfile *pending = f;
        _cleanup_close_ int dfd = -1;
        int r;

        if (fsync(f->fd) < 0) {
                r = -errno;
                outfile_fail(who, r, "cannot sync %s: %s", f->tmp, strerror(-r));
                return r;
        }
        r = outfile_still_ours(f);
        if (r < 0) {
                outfile_fail(who, r,
                             "the temporary file %s was replaced or removed by somebody else; "
                             "%s is not written",
                             f->tmp, f->path);
                return r;
        }
        if (replace ? rename(f->tmp, f->path) < 0
                    : renameat2(AT_FDCWD, f->tmp, AT_FDCWD, f->path, RENAME_NOREPLACE) < 0) {
                r = -errno;
                if (r == -EEXIST)
                        outfile_fail(who, r, "%s exists; use --force to overwrite it", f->path);
                else
                        outfile_fail(who, r, "cannot rename %s to %s: %s", f->tmp, f->path, strerror(-r));
                return r;
        }
        pending = NULL; /* renamed: the file is in place */
        dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
                (void) fsync(dfd); /* the rename survives a power loss */
        outfile_free(f);
        return 0;
}

void outfile_abort(struct outfile *f) {
        if (f->tmp && f->fd >= 0 && outfile_still_ours(f) == 0)
                (void) unlink(f->tmp);
        outfile_free(f);
}
