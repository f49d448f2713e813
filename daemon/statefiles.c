/* The state files' owners and modes: see statefiles.h.
 *
 * The key file turns tokens into the hashes the database keeps; whoever
 * reads it, or chose it, can match every stored hash, and whoever can write
 * the database or its WAL can read or forge every session. So, like
 * OpenSSH's StrictModes and PostgreSQL's check of its data directory, the
 * daemon refuses to start on state it cannot trust, with a message that
 * names the file and what is wrong:
 *
 *   - the folder holding them must be owned by the daemon's user (or root)
 *     and not writable by group or others, unless it has the sticky bit
 *     (then others cannot rename or remove our files, only add their own,
 *     and those fail the next rules);
 *   - the key file, the database, its -wal and -shm must be regular files
 *     (not symbolic links) owned by the daemon's user;
 *   - none of them may be writable by group or others, and the key may not
 *     be readable by them either.
 *
 * The key file may live elsewhere (daemon.key_file, one key for a fleet of
 * daemons): its folder is then held to the folder's rule as well.
 *
 * The daemon's user is its effective uid: sessiond under systemd
 * (User=sessiond, StateDirectory= makes the folder its own 0700), root in a
 * test. A missing file passes: the daemon creates the folder 0700 and the
 * files 0600 (UMask=0077 in the unit; the key with mode 0600 in any case),
 * so a first start on an empty folder works, and SQLite gives -wal and
 * -shm the database's owner and mode. Checking once, before anything is
 * opened, is enough: once the folder is ours and closed to others, nobody
 * else can replace what is in it while we run.
 */
#include "statefiles.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define MODE(st) ((unsigned) ((st)->st_mode & 07777))

static int statefiles_check_folder(const char *dir, uid_t me) {
        const char *problem;
        struct stat st;

        if (stat(dir, &st) < 0)
                return log_error_errno(-errno, "Failed to check the state folder %s: %m", dir);
        problem = statefiles_folder_problem(&st, me);
        if (!problem)
                return 0;
        if (!S_ISDIR(st.st_mode))
                log_error("State folder %s %s; refusing to start.", dir, problem);
        else if (st.st_uid != me && st.st_uid != 0)
                log_error("State folder %s is owned by uid %u, not by uid %u that sessiond runs as (or root): "
                          "its owner could replace the key or the database. Refusing to start.",
                          dir, (unsigned) st.st_uid, (unsigned) me);
        else
                log_error("State folder %s is writable by group or others (mode %04o) without the sticky bit: "
                          "they could replace the key or the database. Refusing to start; make it 0700.",
                          dir, MODE(&st));
        return -EPERM;
}

/* what: "Key file", "Database" ...; forbidden: the mode bits others may not
 * have. A missing file is fine. */
static int statefiles_check_file(const char *what, const char *path, uid_t me, mode_t forbidden) {
        struct stat st;

        if (lstat(path, &st) < 0) {
                if (errno == ENOENT)
                        return 0;
                return log_error_errno(-errno, "Failed to check %s %s: %m", what, path);
        }
        if (S_ISLNK(st.st_mode)) {
                log_error("%s %s is a symbolic link; state files must be regular files. Refusing to start.", what,
                          path);
                return -EPERM;
        }
        if (!S_ISREG(st.st_mode)) {
                log_error("%s %s is not a regular file. Refusing to start.", what, path);
                return -EPERM;
        }
        if (st.st_uid != me) {
                log_error("%s %s is owned by uid %u, not by uid %u that sessiond runs as: its owner may read "
                          "or have chosen what it holds. Refusing to start.",
                          what, path, (unsigned) st.st_uid, (unsigned) me);
                return -EPERM;
        }
        if (st.st_mode & forbidden) {
                log_error("%s %s is %s by group or others (mode %04o); it must be 0600. Refusing to start.", what, path,
                          forbidden & (S_IRGRP | S_IROTH) ? "accessible" : "writable", MODE(&st));
                return -EPERM;
        }
        return 0;
}

/* The folder of path ("." for a bare name). */
static int folder_of(const char *path, char *buf, size_t size) {
        const char *slash = strrchr(path, '/');
        size_t len = !slash ? 0 : slash == path ? 1 : (size_t) (slash - path);

        if (!slash)
                return (size_t) snprintf(buf, size, ".") >= size ? -ENAMETOOLONG : 0;
        if (len >= size)
                return -ENAMETOOLONG;
        memcpy(buf, path, len);
        buf[len] = '\0';
        return 0;
}

int statefiles_check(const char *dir, const char *db_path, const char *key_path) {
        char wal[PATH_MAX], shm[PATH_MAX], key_dir[PATH_MAX];
        uid_t me = geteuid();
        struct stat a, b;
        int r;

        if ((size_t) snprintf(wal, sizeof wal, "%s-wal", db_path) >= sizeof wal ||
            (size_t) snprintf(shm, sizeof shm, "%s-shm", db_path) >= sizeof shm)
                return log_error_errno(-ENAMETOOLONG, "Database path %s is too long.", db_path);
        if (folder_of(key_path, key_dir, sizeof key_dir) < 0)
                return log_error_errno(-ENAMETOOLONG, "Key file path %s is too long.", key_path);

        r = statefiles_check_folder(dir, me);
        if (r < 0)
                return r;
        /* The key's own folder, unless it is the same one. */
        if (stat(key_dir, &b) < 0)
                return log_error_errno(-errno, "Failed to check the folder %s of the key file %s: %m", key_dir,
                                       key_path);
        if (stat(dir, &a) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
                r = statefiles_check_folder(key_dir, me);
                if (r < 0)
                        return r;
        }
        r = statefiles_check_file("Key file", key_path, me, S_IRWXG | S_IRWXO);
        if (r < 0)
                return r;
        r = statefiles_check_file("Database", db_path, me, S_IWGRP | S_IWOTH);
        if (r < 0)
                return r;
        r = statefiles_check_file("Database WAL file", wal, me, S_IWGRP | S_IWOTH);
        if (r < 0)
                return r;
        return statefiles_check_file("Database shared-memory file", shm, me, S_IWGRP | S_IWOTH);
}
