/* Atomic replacement of a file: the only way the configuration tools write.
 *
 * The new content goes to a temporary file in the same folder (so that
 * rename(2) is atomic), is flushed with fsync, gets the old file's mode and
 * owner, and is renamed over the old file; then the folder is flushed so the
 * rename itself survives a power loss. A reader sees the old file or the
 * new one, never a mix or an empty file, and any failure leaves the old file
 * exactly as it was.
 *
 * "Read-only" is decided before anything is written: a file without any
 * write permission bit is refused even for root (who could otherwise rename
 * over it), since an operator who made it read-only meant it.
 *
 * Another user must not be able to swap the file between our steps: the
 * folder must be ours or root's and not writable by group or others unless
 * it has the sticky bit (-EPERM otherwise: the rule of the daemon's state
 * folder, daemon/statefiles.h); the temporary file is new (mkostemp: O_EXCL,
 * 0600, a random name, never a symbolic link); and what is renamed must
 * still be the file we wrote (same device and inode), else -ESTALE.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static int write_all(int fd, const char *data, size_t len) {
        while (len > 0) {
                ssize_t n = write(fd, data, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                data += n;
                len -= (size_t) n;
        }
        return 0;
}

/* The rule of statefiles_folder_problem() (daemon/statefiles.h). */
static int folder_check(const char *dir) {
        struct stat st;

        if (stat(dir, &st) < 0)
                return -errno;
        if (st.st_uid != geteuid() && st.st_uid != 0)
                return -EPERM;
        if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
                return -EPERM;
        return 0;
}

static int fsync_folder(const char *dir) {
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

SESSIOND_EXPORT int sessiond_file_write_atomic(const char *path, const char *data, size_t len, mode_t mode_if_new) {
        _cleanup_free_ char *target = NULL, *dir_copy = NULL, *base_copy = NULL, *tmp = NULL;
        const char *dir, *base;
        struct stat st, ours;
        bool exists;
        mode_t mode = mode_if_new;
        _cleanup_unlink_ char *created = NULL; /* tmp, once the file exists */
        _cleanup_close_ int fd = -1;
        int r;

        if (!path || !*path)
                return -EINVAL;

        /* Follow a symlink: replace its target, keep the link. */
        target = realpath(path, NULL);
        if (!target) {
                if (errno != ENOENT)
                        return -errno;
                target = strdup(path);
                if (!target)
                        return -ENOMEM;
        }

        exists = stat(target, &st) == 0;
        if (!exists && errno != ENOENT)
                return -errno;
        if (exists) {
                if (S_ISDIR(st.st_mode))
                        return -EISDIR;
                if (!S_ISREG(st.st_mode))
                        return -EINVAL;
                if ((st.st_mode & 0222) == 0 || access(target, W_OK) < 0)
                        return -EACCES;
                mode = st.st_mode & 07777;
        }

        dir_copy = strdup(target);
        base_copy = strdup(target);
        if (!dir_copy || !base_copy)
                return -ENOMEM;
        dir = dirname(dir_copy);
        base = basename(base_copy);
        if (asprintf(&tmp, "%s/.%s.XXXXXX", dir, base) < 0) {
                tmp = NULL;
                return -ENOMEM;
        }

        r = folder_check(dir);
        if (r < 0)
                return r;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        created = tmp; /* from here on, every failure removes it */
        if (fstat(fd, &ours) < 0)
                return -errno;

        r = write_all(fd, data, len);
        if (r < 0)
                return r;
        if (fchmod(fd, mode) < 0)
                return -errno;
        /* Keep the owner when we may (root editing a file of another user);
         * an unprivileged user editing their own file has nothing to keep. */
        if (exists && (st.st_uid != geteuid() || st.st_gid != getegid()) && fchown(fd, st.st_uid, st.st_gid) < 0 &&
            errno != EPERM)
                return -errno;
        if (fsync(fd) < 0)
                return -errno;
        if (close(TAKE_FD(fd)) < 0)
                return -errno;
        if (lstat(tmp, &st) < 0 || st.st_dev != ours.st_dev || st.st_ino != ours.st_ino) {
                created = NULL; /* not ours any more: never touch it */
                return -ESTALE; /* somebody replaced it: never rename what we did not write */
        }
        if (rename(tmp, target) < 0)
                return -errno;
        created = NULL; /* renamed: it is the file now */
        /* The new file is in place. A failing folder fsync only weakens the
         * guarantee against a power loss; reporting failure now would tell
         * the caller the old file is still there, which is false. */
        (void) fsync_folder(dir);
        return 0;
}
