/* Who may own the daemon's state files (daemon/statefiles.c), and the rule
 * for a folder others must not be able to write in (lib/common/folder-rule.h,
 * shared with the files sessionctl writes: tools/outfile.c). */
#pragma once

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "folder-rule.h" /* lib/common: statefiles_folder_problem() */

/* Checks the folder dir, the database db_path in it with its -wal and
 * -shm, and the key file key_path (daemon.key_file; when it lives in
 * another folder, that folder too): refuses (logs what is wrong and
 * returns -EPERM) what another user owns, could write, or could read (the
 * key); files that do not exist yet are fine (the daemon makes them). Call
 * before reading the key and before opening the store. */
int statefiles_check(const char *dir, const char *db_path, const char *key_path);
