/* The parsed env file (envfile.c), private to the library.
 *
 * struct sessiond_envfile is opaque in the public header: programs read and
 * edit an env file through the sessiond_envfile_* functions, so its layout
 * can change without an ABI change. The files of lib/config, the unit tests
 * and the fuzz targets (which link the library's objects statically) see
 * the lines. Never installed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct sessiond_envfile_line {
        char *text;  /* the line as read (no newline), or as formatted by a set */
        char *key;   /* NULL for blank and comment lines */
        char *value; /* the value with quotes and escapes removed */
        int lineno;  /* 1-based line in the file as read; 0 for an appended line */
};

struct sessiond_envfile {
        char *path; /* for messages; may be NULL */
        struct sessiond_envfile_line *lines;
        size_t n_lines;
        size_t allocated;
        bool missing_final_newline; /* the last line had no '\n' */
};
