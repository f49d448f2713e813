/* The files sessionctl writes for an operator: backups and recovered
 * databases (tools/outfile.c). */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

struct outfile {
        char *path; /* where the file goes */
        char *dir;  /* its folder */
        char *tmp;  /* the temporary file in that folder, ours until renamed */
        int fd;     /* open on tmp: its identity (and a place to write) */
        dev_t dev;
        ino_t ino;
};

/* Checks path's folder (nobody else may write in it: statefiles.h) and
 * creates an empty temporary file there: a new random name, O_EXCL, mode
 * 0600, never through a symbolic link. On failure prints why (prefixed by
 * who) and returns a negative errno; *f then holds nothing. */
int outfile_begin(struct outfile *f, const char *who, const char *path);
/* Syncs the temporary file, checks that the name still is the file we made,
 * and renames it to path: without replace, never over a file that exists
 * (RENAME_NOREPLACE). Then syncs the folder. Prints why on failure; the
 * temporary file is removed in any case. */
int outfile_commit(struct outfile *f, const char *who, bool replace);
/* Removes the temporary file (if it still is ours) and frees f. */
void outfile_abort(struct outfile *f);
