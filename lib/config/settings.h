/* The table of settings (settings.c), private to the library.
 *
 * It used to be in the public header; an exported array puts its size and
 * the layout of its rows into every program that reads it (the linker
 * copies it into the program), so adding a setting changed the ABI. The
 * public API numbers the settings and hands out their path and variable
 * (sessiond_setting_count/path/variable); the table itself is for the files
 * of lib/config, the unit tests and the fuzz targets, which link the
 * library's objects statically (libsessiond_internal). Never installed. */
#pragma once

#include <stddef.h>

enum sessiond_setting_type {
        SESSIOND_TYPE_BOOL,
        SESSIOND_TYPE_INT,      /* a count or size */
        SESSIOND_TYPE_DURATION, /* seconds; units s, m, h, d accepted */
        SESSIOND_TYPE_DOUBLE,
        SESSIOND_TYPE_STRING,
        SESSIOND_TYPE_ENVIRONMENT,
};

struct sessiond_setting {
        const char *path;     /* libconfig path, also the JSON key path */
        const char *variable; /* SESSION_* variable, NULL when there is none */
        enum sessiond_setting_type type;
        size_t offset;            /* offset of the value in struct sessiond_config */
        const char *default_text; /* the default as written in a template */
        const char *description;  /* one line, for templates and man pages */
};

/* One row per setting; row i is setting number i of the public API. */
extern const struct sessiond_setting sessiond_settings[];
extern const size_t sessiond_settings_count;
