/* Env files: parsing that keeps every line, and editing in place.
 *
 * See sessiond/envfile.h for the syntax. A parsed file is the list of its
 * lines, each with its original text, so that formatting an unedited file
 * gives back the same bytes, and an edit changes exactly one line (or adds
 * one at the end). The same parser feeds the configuration loader, so the
 * daemon and the editor can never disagree on what a line means.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* Files larger than this are not env files; refuse rather than read them. */
#define ENVFILE_MAX_SIZE (4u * 1024u * 1024u)

SESSIOND_EXPORT int sessiond_envfile_new(const char *path, struct sessiond_envfile **ret) {
        struct sessiond_envfile *f = calloc(1, sizeof(*f));

        if (!f)
                return -ENOMEM;
        if (path) {
                f->path = strdup(path);
                if (!f->path) {
                        free(f);
                        return -ENOMEM;
                }
        }
        *ret = f;
        return 0;
}

SESSIOND_EXPORT void sessiond_envfile_free(struct sessiond_envfile *f) {
        if (!f)
                return;
        for (size_t i = 0; i < f->n_lines; i++) {
                free(f->lines[i].text);
                free(f->lines[i].key);
                free(f->lines[i].value);
        }
        free(f->lines);
        free(f->path);
        free(f);
}

/* Frees what a line owns (a line not, or no longer, in a file). */
static void envfile_line_done(struct sessiond_envfile_line *l) {
        free(l->text);
        free(l->key);
        free(l->value);
}

/* Takes *line into f (on success the file owns what it points to). */
static int envfile_append(struct sessiond_envfile *f, struct sessiond_envfile_line *line) {
        if (f->n_lines == f->allocated) {
                size_t n = f->allocated ? f->allocated * 2 : 16;
                struct sessiond_envfile_line *lines = realloc(f->lines, n * sizeof(*lines));
                if (!lines)
                        return -ENOMEM;
                f->lines = lines;
                f->allocated = n;
        }
        f->lines[f->n_lines++] = *line;
        return 0;
}

static bool key_valid(const char *k, size_t len) {
        if (len == 0 || !(isalpha((unsigned char) k[0]) || k[0] == '_'))
                return false;
        for (size_t i = 1; i < len; i++)
                if (!(isalnum((unsigned char) k[i]) || k[i] == '_'))
                        return false;
        return true;
}

/* Parses one line (without its '\n'). On success *key and *value are set
 * (both NULL for blank and comment lines). Returns -EINVAL with *why set
 * for a malformed line. */
static int parse_line(const char *line, char **key, char **value, const char **why) {
        const char *p = line, *k, *eq, *end;
        size_t klen, cap;
        char *v, *o;

        *key = *value = NULL;
        while (*p == ' ' || *p == '\t')
                p++;
        if (*p == '\0' || *p == '#' || (*p == '\r' && p[1] == '\0'))
                return 0;

        if (strncmp(p, "export", 6) == 0 && (p[6] == ' ' || p[6] == '\t')) {
                p += 6;
                while (*p == ' ' || *p == '\t')
                        p++;
        }
        /* The key is what comes before the first '=': one message for every
         * key that is not a name ("=5", "SESSION_CUSTOM_ÜBER=1", "X Y=1"). */
        k = p;
        eq = strchr(p, '=');
        if (!eq) {
                *why = "expected KEY=VALUE";
                return -EINVAL;
        }
        for (p = eq; p > k && (p[-1] == ' ' || p[-1] == '\t'); p--)
                ;
        klen = (size_t) (p - k);
        if (!key_valid(k, klen)) {
                *why = "the key is not a valid name ([A-Za-z_][A-Za-z0-9_]*)";
                return -EINVAL;
        }
        p = eq;
        p++;
        while (*p == ' ' || *p == '\t')
                p++;

        end = p + strlen(p);
        if (end > p && end[-1] == '\r')
                end--;
        cap = (size_t) (end - p) + 1;
        v = malloc(cap);
        if (!v)
                return -ENOMEM;
        o = v;

        if (*p == '\'' || *p == '"') {
                char q = *p++;
                bool closed = false;
                while (p < end) {
                        if (*p == q) {
                                closed = true;
                                p++;
                                break;
                        }
                        if (q == '"' && *p == '\\' && p + 1 < end && strchr("\"\\$`", p[1])) {
                                *o++ = p[1];
                                p += 2;
                                continue;
                        }
                        *o++ = *p++;
                }
                if (!closed) {
                        free(v);
                        *why = "unterminated quoted value";
                        return -EINVAL;
                }
                while (p < end && (*p == ' ' || *p == '\t'))
                        p++;
                if (p < end && *p != '#') {
                        free(v);
                        *why = "unexpected text after the closing quote";
                        return -EINVAL;
                }
        } else {
                /* Unquoted: up to the end, or to blank + '#' (a comment). */
                const char *stop = end;
                for (const char *s = p; s < end; s++)
                        if (*s == '#' && s > p && (s[-1] == ' ' || s[-1] == '\t')) {
                                stop = s;
                                break;
                        }
                while (stop > p && (stop[-1] == ' ' || stop[-1] == '\t'))
                        stop--;
                memcpy(o, p, (size_t) (stop - p));
                o += stop - p;
                if (memchr(p, '"', (size_t) (stop - p)) || memchr(p, '\'', (size_t) (stop - p))) {
                        free(v);
                        *why = "a quote inside an unquoted value (quote the whole value)";
                        return -EINVAL;
                }
        }
        *o = '\0';
        *key = strndup(k, klen);
        if (!*key) {
                free(v);
                return -ENOMEM;
        }
        *value = v;
        return 0;
}

/* Parses every line; a malformed one is reported and kept as a line
 * without a key, and *malformed says whether there was one. */
static int envfile_parse_all(const char *path, const char *text, size_t len, struct sessiond_envfile **ret,
                             struct sessiond_issues *issues, bool *malformed) {
        _cleanup_(sessiond_envfile_freep) struct sessiond_envfile *f = NULL;
        const char *p = text, *end = text + len;
        bool bad = false;
        int lineno = 0, r;

        r = sessiond_envfile_new(path, &f);
        if (r < 0)
                return r;
        if (memchr(text, '\0', len)) {
                sessiond_issues_add(issues, SESSIOND_ERROR, NULL, "%s: contains a NUL byte: not a text file",
                                    path ? path : "env file");
                return -EINVAL;
        }

        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                const char *le = nl ? nl : end;
                _cleanup_(envfile_line_done) struct sessiond_envfile_line line = {.lineno = ++lineno};
                const char *why = NULL;

                line.text = strndup(p, (size_t) (le - p));
                if (!line.text)
                        return -ENOMEM;
                r = parse_line(line.text, &line.key, &line.value, &why);
                if (r == -EINVAL) {
                        sessiond_issues_add(issues, SESSIOND_ERROR, NULL, "%s:%d: malformed line (%s): %s",
                                            path ? path : "env file", lineno, why, line.text);
                        bad = true;
                } else if (r < 0)
                        return r;
                r = envfile_append(f, &line);
                if (r < 0)
                        return r;
                line = (struct sessiond_envfile_line){}; /* the file's now */
                if (!nl) {
                        f->missing_final_newline = true;
                        break;
                }
                p = nl + 1;
        }
        *malformed = bad;
        *ret = TAKE_PTR(f);
        return 0;
}

SESSIOND_EXPORT int sessiond_envfile_parse(const char *path, const char *text, size_t len,
                                           struct sessiond_envfile **ret, struct sessiond_issues *issues) {
        struct sessiond_envfile *f = NULL;
        bool malformed = false;
        int r;

        r = envfile_parse_all(path, text, len, &f, issues, &malformed);
        if (r < 0)
                return r;
        if (malformed) {
                sessiond_envfile_free(f);
                return -EINVAL;
        }
        *ret = f;
        return 0;
}

/* The whole file, NUL-terminated, into *ret (*len bytes). */
static int envfile_read_text(const char *path, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0;
        _cleanup_close_ int fd = -1;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if ((size_t) st.st_size > ENVFILE_MAX_SIZE)
                return -EFBIG;
        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        while (len < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + len, (size_t) st.st_size - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
        }
        buf[len] = '\0';
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

int envfile_read_all(const char *path, struct sessiond_envfile **ret, struct sessiond_issues *issues, bool *malformed) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r;

        r = envfile_read_text(path, &buf, &len);
        if (r < 0)
                return r;
        return envfile_parse_all(path, buf, len, ret, issues, malformed);
}

SESSIOND_EXPORT int sessiond_envfile_read(const char *path, struct sessiond_envfile **ret,
                                          struct sessiond_issues *issues) {
        struct sessiond_envfile *f = NULL;
        bool malformed = false;
        int r;

        r = envfile_read_all(path, &f, issues, &malformed);
        if (r < 0)
                return r;
        if (malformed) {
                sessiond_envfile_free(f);
                return -EINVAL;
        }
        *ret = f;
        return 0;
}

SESSIOND_EXPORT const char *sessiond_envfile_get(const struct sessiond_envfile *f, const char *key, size_t *line) {
        for (size_t i = f->n_lines; i > 0; i--)
                if (f->lines[i - 1].key && strcmp(f->lines[i - 1].key, key) == 0) {
                        if (line)
                                *line = i - 1;
                        return f->lines[i - 1].value;
                }
        return NULL;
}

SESSIOND_EXPORT char *sessiond_envfile_quote(const char *value) {
        size_t n = 0;
        bool safe = *value != '\0';
        char *out, *o;

        for (const char *p = value; *p; p++) {
                if (!isalnum((unsigned char) *p) && !strchr("_./:@%+,-", *p))
                        safe = false;
                n += strchr("\"\\$`", *p) ? 2 : 1;
        }
        if (safe)
                return strdup(value);
        out = malloc(n + 3);
        if (!out)
                return NULL;
        o = out;
        *o++ = '"';
        for (const char *p = value; *p; p++) {
                if (strchr("\"\\$`", *p))
                        *o++ = '\\';
                *o++ = *p;
        }
        *o++ = '"';
        *o = '\0';
        return out;
}

SESSIOND_EXPORT int sessiond_envfile_set(struct sessiond_envfile *f, const char *key, const char *value) {
        _cleanup_free_ char *quoted = NULL;
        _cleanup_(envfile_line_done) struct sessiond_envfile_line line = {};
        const char *old;
        size_t idx;
        bool export = false;
        int r;

        if (!key_valid(key, strlen(key)) || strchr(value, '\n'))
                return -EINVAL;
        old = sessiond_envfile_get(f, key, &idx);
        if (old && strcmp(old, value) == 0)
                return 0;

        quoted = sessiond_envfile_quote(value);
        if (!quoted)
                return -ENOMEM;
        if (old) {
                const char *t = f->lines[idx].text;
                while (*t == ' ' || *t == '\t')
                        t++;
                export = strncmp(t, "export", 6) == 0 && (t[6] == ' ' || t[6] == '\t');
        }
        if (asprintf(&line.text, "%s%s=%s", export ? "export " : "", key, quoted) < 0) {
                line.text = NULL; /* undefined after a failure */
                return -ENOMEM;
        }
        line.key = strdup(key);
        line.value = strdup(value);
        if (!line.key || !line.value)
                return -ENOMEM;
        if (old) {
                struct sessiond_envfile_line *l = &f->lines[idx];
                line.lineno = l->lineno;
                free(l->text);
                free(l->key);
                free(l->value);
                *l = line;
                line = (struct sessiond_envfile_line){}; /* the file's now */
                /* An edited last line gets its newline back. */
                if (idx == f->n_lines - 1)
                        f->missing_final_newline = false;
                return 1;
        }
        r = envfile_append(f, &line);
        if (r < 0)
                return r;
        line = (struct sessiond_envfile_line){}; /* the file's now */
        /* The old last line ends with '\n' now that a line follows it. */
        f->missing_final_newline = false;
        return 1;
}

SESSIOND_EXPORT char *sessiond_envfile_format(const struct sessiond_envfile *f, size_t *len) {
        size_t n = 1, pos = 0;
        char *out;

        for (size_t i = 0; i < f->n_lines; i++)
                n += strlen(f->lines[i].text) + 1;
        out = malloc(n);
        if (!out)
                return NULL;
        for (size_t i = 0; i < f->n_lines; i++) {
                size_t l = strlen(f->lines[i].text);
                memcpy(out + pos, f->lines[i].text, l);
                pos += l;
                if (i + 1 < f->n_lines || !f->missing_final_newline)
                        out[pos++] = '\n';
        }
        out[pos] = '\0';
        if (len)
                *len = pos;
        return out;
}

SESSIOND_EXPORT int sessiond_envfile_write(const struct sessiond_envfile *f, const char *path) {
        _cleanup_free_ char *text = NULL;
        size_t len;

        text = sessiond_envfile_format(f, &len);
        if (!text)
                return -ENOMEM;
        return sessiond_file_write_atomic(path, text, len, 0644);
}
