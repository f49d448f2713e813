/* The rule for a folder others must not be able to write in: the daemon's
 * state files (daemon/statefiles.c) and the files sessionctl writes
 * (tools/outfile.c) both live only in such folders. */
#pragma once

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Why another user could replace or plant files in the folder st describes,
 * for uid me: NULL when none can (a folder of me or root, not writable by
 * group or others unless it has the sticky bit). A header function, so that
 * sessionctl shares it without the daemon's logging. */
static inline const char *statefiles_folder_problem(const struct stat *st, uid_t me) {
        if (!S_ISDIR(st->st_mode))
                return "is not a folder";
        if (st->st_uid != me && st->st_uid != 0)
                return "is owned by another user";
        if ((st->st_mode & (S_IWGRP | S_IWOTH)) && !(st->st_mode & S_ISVTX))
                return "is writable by group or others without the sticky bit";
        return NULL;
}
