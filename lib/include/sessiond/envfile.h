/* Env files: read, edit and write KEY=VALUE files without losing a line.
 *
 * The env file (daemon.env_file, /etc/sessiond/session.env by default) is
 * one of the configuration sources and the file `sessionctl config
 * --set-env/--optimize-for` edits. An operator's file holds comments, blank
 * lines and keys that are not ours; an edit must keep all of them, in order,
 * byte for byte, and change only the line it means to change.
 *
 * So a parsed file keeps every line's original text next to its meaning.
 * Syntax (a common subset of systemd EnvironmentFile= and dotenv):
 *   - blank lines, and lines whose first non-blank character is '#';
 *   - [export ]KEY=VALUE, KEY matching [A-Za-z_][A-Za-z0-9_]*, blanks
 *     allowed around '=';
 *   - VALUE unquoted (ends at the end of the line or at blank + '#', trailing
 *     blanks dropped), or in single quotes (literal), or in double quotes
 *     (backslash escapes \" \\ \$ \`), optionally followed by blanks and a
 *     '#' comment.
 * Anything else is a malformed line: an error naming PATH:LINE.
 *
 * Writing is atomic: a temporary file in the same folder, fsync, rename over
 * the old one, fsync of the folder. The old file's mode (and owner, when we
 * may) is kept. An existing file is never truncated: on any error it stays
 * as it was.
 *
 * Functions return 0 or a negative errno.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "sessiond/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A parsed file: every line with its text, key and value, in order.
 * Opaque: read and edit it with the functions below. */
struct sessiond_envfile;

/* An empty file named path (path may be NULL). */
int sessiond_envfile_new(const char *path, struct sessiond_envfile **ret);

/* Parses text (len bytes). Malformed lines are reported as errors
 * "PATH:LINE: ..." in issues (all of them) and make it return -EINVAL. */
int sessiond_envfile_parse(const char *path, const char *text, size_t len, struct sessiond_envfile **ret,
                           struct sessiond_issues *issues);

/* Reads and parses path. -ENOENT when it does not exist (no issue added),
 * another negative errno when it cannot be read, -EINVAL when malformed. */
int sessiond_envfile_read(const char *path, struct sessiond_envfile **ret, struct sessiond_issues *issues);

void sessiond_envfile_free(struct sessiond_envfile *f);
static inline void sessiond_envfile_freep(struct sessiond_envfile **f) {
        if (*f)
                sessiond_envfile_free(*f);
}

/* The value of the last line setting key, or NULL. When line is not NULL it
 * receives that line's index (0-based) among the file's lines. */
const char *sessiond_envfile_get(const struct sessiond_envfile *f, const char *key, size_t *line);

/* Sets key=value: rewrites the last line that sets key in place (keeping an
 * `export ` prefix), or appends a line. Returns 1 if the file changed, 0 if
 * it already said exactly that, -EINVAL for a bad key, -ENOMEM. */
int sessiond_envfile_set(struct sessiond_envfile *f, const char *key, const char *value);

/* The file as text: every line, in order, each ended by '\n' (except a last
 * line that had none and was not edited). Returns NULL on ENOMEM. */
char *sessiond_envfile_format(const struct sessiond_envfile *f, size_t *len);

/* Formats and writes f to path atomically (sessiond_file_write_atomic). */
int sessiond_envfile_write(const struct sessiond_envfile *f, const char *path);

/* Formats a value for a KEY=VALUE line: bare when it is made of safe
 * characters, double-quoted with escapes otherwise. NULL on ENOMEM. */
char *sessiond_envfile_quote(const char *value);

/* Replaces path with data atomically. A symlink is followed (its target is
 * replaced). An existing file keeps its mode; a new one gets mode_if_new.
 * -EACCES when the file is read-only (no write permission bit, even for
 * root, or not writable by us), -EISDIR/-EINVAL when it is not a regular
 * file, -EPERM when its folder belongs to another user (not root) or is
 * writable by group or others without the sticky bit (they could swap the
 * file), -ESTALE when the temporary file was replaced before the rename,
 * or the errno of the step that failed. On error the old file is
 * untouched and no temporary file of ours is left behind. */
int sessiond_file_write_atomic(const char *path, const char *data, size_t len, mode_t mode_if_new);

#ifdef __cplusplus
}
#endif
