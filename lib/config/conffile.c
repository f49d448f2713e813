/* Reading the libconfig file (sessiond.conf) into a configuration.
 *
 * libconfig parses the syntax and gives each setting its file and line; we
 * walk the tree against sessiond_settings[]: a known path is read with its
 * type checked, a known group is descended into, `custom` is a free group,
 * anything else is a warning with the nearest known name.
 *
 * One gap of libconfig 1.5 needs covering: an integer literal that does not
 * fit 32 bits (without the L suffix) or 64 bits is silently wrapped by its
 * scanner ("5000000000" reads as 705032704). "A huge value is an error, not
 * a wrap", so before trusting the tree we scan the file's integer literals
 * ourselves (skipping strings and comments, following @include) and report
 * each one that libconfig would get wrong, with its line.
 *
 * The same scan covers a second gap: when the token at which libconfig's
 * parser fails is a string ("a = 1 \"x\";", a string at the top level or
 * inside { }), libconfig 1.5 leaks that string. Reloading a bad file
 * must not cost memory each time, so a string where the grammar allows
 * none (only after '=', ':', '[', '(', ',', another string or @include) is
 * reported as a syntax error at its line without calling libconfig.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libconfig.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define INCLUDE_DEPTH_MAX 10

struct bad_line {
        char *file;
        int line;
};

struct reader {
        struct sessiond_config *config;
        struct sessiond_issues *issues;
        const char *path;     /* the main file */
        const char *dir;      /* its folder: where @include is resolved */
        struct bad_line *bad; /* lines with a literal libconfig reads wrong */
        size_t n_bad;
        char *syntax_file; /* first string where none may stand, or a NUL */
        int syntax_line;
        const char *syntax_what;
        bool failed;
};

static void reader_error(struct reader *rd, const char *setting, const char *file, int line, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

static void reader_error(struct reader *rd, const char *setting, const char *file, int line, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        sessiond_issues_add(rd->issues, SESSIOND_ERROR, setting, "%s:%d: %s", file, line, msg ? msg : "out of memory");
        rd->failed = true;
}

static void reader_mark_bad(struct reader *rd, const char *file, int line) {
        struct bad_line *n = realloc(rd->bad, (rd->n_bad + 1) * sizeof(*n));
        char *copy = strdup(file);

        if (!n || !copy) {
                free(copy);
                if (n)
                        rd->bad = n;
                return;
        }
        rd->bad = n;
        rd->bad[rd->n_bad++] = (struct bad_line){.file = copy, .line = line};
}

static bool reader_is_bad(const struct reader *rd, const char *file, int line) {
        for (size_t i = 0; i < rd->n_bad; i++)
                if (rd->bad[i].line == line && strcmp(rd->bad[i].file, file) == 0)
                        return true;
        return false;
}

static int read_text(const char *path, char **ret, size_t *ret_size) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t size = 0;
        int r = 0;

        if (!f)
                return -errno;
        FILE *m = open_memstream(&buf, &size);
        if (!m) {
                fclose(f);
                return -ENOMEM;
        }
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
                fwrite(chunk, 1, n, m);
        if (ferror(f))
                r = -EIO;
        fclose(f);
        if (fclose(m) != 0 && r == 0)
                r = -ENOMEM;
        if (r < 0) {
                free(buf);
                return r;
        }
        *ret = buf;
        *ret_size = size;
        return 0;
}

/* Checks one integer literal [s, e) at line of file. */
static void check_integer_literal(struct reader *rd, const char *file, int line, const char *s, const char *e) {
        const char *p = s;
        bool neg = false, hex = false, is64 = false;
        uint64_t v = 0, limit;
        bool overflow = false;

        if (*p == '+' || *p == '-')
                neg = *p++ == '-';
        if (e - p > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
                hex = true;
                p += 2;
        }
        while (e > p && (e[-1] == 'L' || e[-1] == 'l')) {
                is64 = true;
                e--;
        }
        for (; p < e; p++) {
                unsigned d;
                if (isdigit((unsigned char) *p))
                        d = (unsigned) (*p - '0');
                else if (hex && isxdigit((unsigned char) *p))
                        d = (unsigned) (tolower((unsigned char) *p) - 'a' + 10);
                else
                        return; /* not an integer literal: libconfig reports it */
                if (__builtin_mul_overflow(v, hex ? 16u : 10u, &v) || __builtin_add_overflow(v, d, &v))
                        overflow = true;
        }
        /* Magnitudes: INT32 or INT64, one more on the negative side. */
        limit = is64 ? (uint64_t) INT64_MAX : (uint64_t) INT32_MAX;
        if (hex)
                limit = is64 ? UINT64_MAX : UINT32_MAX; /* hex is a bit pattern */
        else if (neg)
                limit++;
        if (!overflow && v <= limit)
                return;

        _cleanup_free_ char *lit = strndup(s, (size_t) (e - s) + (is64 ? 1 : 0));
        if (!is64 && !overflow && v <= (uint64_t) INT64_MAX)
                reader_error(rd, NULL, file, line,
                             "integer %s does not fit a plain libconfig integer (it would wrap); write it with an L "
                             "suffix (%sL) or as a duration string",
                             lit ? lit : "?", lit ? lit : "?");
        else
                reader_error(rd, NULL, file, line, "integer %s is out of range", lit ? lit : "?");
        reader_mark_bad(rd, file, line);
}

static void scan_file(struct reader *rd, const char *file, int depth);

/* Scans text for integer literals, skipping strings, comments and names. */
static void scan_text(struct reader *rd, const char *file, const char *t, int depth) {
        int line = 1;
        const char *p = t;
        /* May the next token be a string? After '=', ':', '[', '(', another
         * string, and after ',' inside [ ] or ( ) (a ',' that ends a
         * setting is followed by a name). */
        bool string_allowed = false;
        char open[64];
        size_t nesting = 0;

        while (*p) {
                if (*p == '=' || *p == ':') {
                        string_allowed = true;
                        p++;
                } else if (*p == '[' || *p == '(' || *p == '{') {
                        if (nesting < sizeof(open))
                                open[nesting] = *p;
                        nesting++;
                        string_allowed = *p != '{';
                        p++;
                } else if (*p == ']' || *p == ')' || *p == '}') {
                        if (nesting > 0)
                                nesting--;
                        string_allowed = false;
                        p++;
                } else if (*p == ',') {
                        /* Deeper than we track: allow, libconfig judges. */
                        string_allowed = nesting > sizeof(open) ||
                                         (nesting > 0 && (open[nesting - 1] == '[' || open[nesting - 1] == '('));
                        p++;
                } else if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\f' || *p == '\v') {
                        p++;
                } else if (*p == '\n') {
                        line++;
                        p++;
                } else if (*p == '#' || (*p == '/' && p[1] == '/')) {
                        while (*p && *p != '\n')
                                p++;
                } else if (*p == '/' && p[1] == '*') {
                        p += 2;
                        while (*p && !(*p == '*' && p[1] == '/')) {
                                if (*p == '\n')
                                        line++;
                                p++;
                        }
                        if (*p)
                                p += 2;
                } else if (*p == '"') {
                        if (!string_allowed && !rd->syntax_file) {
                                rd->syntax_file = strdup(file);
                                rd->syntax_line = line;
                                rd->syntax_what = "syntax error";
                        }
                        string_allowed = true; /* "a" "b" concatenates */
                        p++;
                        while (*p && *p != '"') {
                                if (*p == '\\' && p[1])
                                        p++;
                                if (*p == '\n')
                                        line++;
                                p++;
                        }
                        if (*p)
                                p++;
                } else if (*p == '@' && strncmp(p, "@include", 8) == 0) {
                        const char *q = p + 8, *name;
                        while (*q == ' ' || *q == '\t')
                                q++;
                        if (*q == '"') {
                                name = ++q;
                                while (*q && *q != '"' && *q != '\n')
                                        q++;
                                _cleanup_free_ char *inc = strndup(name, (size_t) (q - name));
                                _cleanup_free_ char *full = NULL;
                                if (inc && inc[0] != '/' && asprintf(&full, "%s/%s", rd->dir, inc) < 0)
                                        full = NULL;
                                if (inc)
                                        scan_file(rd, full ? full : inc, depth + 1);
                                if (*q == '"')
                                        q++;
                        }
                        string_allowed = false;
                        p = q;
                } else if (isalpha((unsigned char) *p) || *p == '*' || *p == '_') {
                        while (*p && (isalnum((unsigned char) *p) || strchr("-_*", *p)))
                                p++;
                        string_allowed = false;
                } else if (isdigit((unsigned char) *p) ||
                           ((*p == '-' || *p == '+' || *p == '.') && (isdigit((unsigned char) p[1]) || p[1] == '.'))) {
                        const char *s = p;
                        bool is_float = false, hex = false;
                        if (*p == '-' || *p == '+')
                                p++;
                        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
                                hex = true;
                        while (*p && (isalnum((unsigned char) *p) || *p == '.' ||
                                      ((*p == '-' || *p == '+') && !hex && (p[-1] == 'e' || p[-1] == 'E')))) {
                                if (*p == '.' || (!hex && (*p == 'e' || *p == 'E')))
                                        is_float = true;
                                p++;
                        }
                        if (!is_float)
                                check_integer_literal(rd, file, line, s, p);
                        string_allowed = false;
                } else {
                        string_allowed = false;
                        p++;
                }
        }
}

static void scan_file(struct reader *rd, const char *file, int depth) {
        _cleanup_free_ char *text = NULL;
        const char *nul;
        size_t size;

        if (depth > INCLUDE_DEPTH_MAX)
                return;
        /* A file libconfig cannot read is reported by libconfig. */
        if (read_text(file, &text, &size) < 0)
                return;
        /* libconfig reads on past a NUL byte, this scan would not: refuse
         * such a file (it is not text) rather than scan half of it. */
        nul = memchr(text, '\0', size);
        if (nul) {
                if (!rd->syntax_file) {
                        int line = 1;
                        for (const char *p = text; p < nul; p++)
                                line += *p == '\n';
                        rd->syntax_file = strdup(file);
                        rd->syntax_line = line;
                        rd->syntax_what = "a NUL byte: not a text file";
                }
                return;
        }
        scan_text(rd, file, text, depth);
}

static const char *type_name(int type) {
        switch (type) {
        case CONFIG_TYPE_GROUP:
                return "a group";
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                return "an integer";
        case CONFIG_TYPE_FLOAT:
                return "a number with a fraction";
        case CONFIG_TYPE_STRING:
                return "a string";
        case CONFIG_TYPE_BOOL:
                return "a boolean";
        case CONFIG_TYPE_ARRAY:
                return "an array";
        case CONFIG_TYPE_LIST:
                return "a list";
        }
        return "something else";
}

static const char *expected_name(enum sessiond_setting_type t) {
        switch (t) {
        case SESSIOND_TYPE_BOOL:
                return "a boolean (true or false)";
        case SESSIOND_TYPE_INT:
                return "an integer";
        case SESSIOND_TYPE_DURATION:
                return "a duration (integer seconds, or a string like \"90s\", \"30m\", \"48h\", \"7d\")";
        case SESSIOND_TYPE_DOUBLE:
                return "a number";
        case SESSIOND_TYPE_STRING:
                return "a string";
        case SESSIOND_TYPE_ENVIRONMENT:
                return "a string (development, testing, staging or production)";
        }
        return "?";
}

/* The file a setting was read from, as a new string (NULL on ENOMEM).
 * libconfig names an included file as the @include line wrote it; make it
 * relative to the main file's folder, as libconfig itself resolved it. */
static char *setting_file(const struct reader *rd, const config_setting_t *s) {
        const char *f = config_setting_source_file(s);
        char *out = NULL;

        if (!f || strcmp(f, rd->path) == 0)
                return strdup(rd->path);
        if (f[0] == '/')
                return strdup(f);
        if (asprintf(&out, "%s/%s", rd->dir, f) < 0)
                return NULL;
        return out;
}

static void read_value(struct reader *rd, size_t idx, const config_setting_t *s) {
        const struct sessiond_setting *def = &sessiond_settings[idx];
        _cleanup_free_ char *file = setting_file(rd, s);
        int line = config_setting_source_line(s);
        int type = config_setting_type(s);
        union setting_value v = {};
        const char *problem = NULL;
        bool type_ok = false;
        int r = 0;

        if (!file) {
                rd->failed = true;
                return;
        }
        /* libconfig read a wrapped number here; the scan reported it. */
        if ((type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64) && reader_is_bad(rd, file, line))
                return;

        switch (def->type) {
        case SESSIOND_TYPE_BOOL:
                if (type == CONFIG_TYPE_BOOL) {
                        v.b = config_setting_get_bool(s);
                        type_ok = true;
                } else if (type == CONFIG_TYPE_STRING) {
                        type_ok = true;
                        r = setting_parse_text(def, config_setting_get_string(s), &v, &problem);
                } else if ((type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64) &&
                           (config_setting_get_int64(s) == 0 || config_setting_get_int64(s) == 1)) {
                        v.b = config_setting_get_int64(s) == 1;
                        type_ok = true;
                }
                break;
        case SESSIOND_TYPE_INT:
        case SESSIOND_TYPE_DURATION:
                if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64) {
                        type_ok = true;
                        v.i = config_setting_get_int64(s);
                        r = setting_check_range(def, v.i, &problem);
                } else if (type == CONFIG_TYPE_STRING && def->type == SESSIOND_TYPE_DURATION) {
                        type_ok = true;
                        r = setting_parse_text(def, config_setting_get_string(s), &v, &problem);
                }
                break;
        case SESSIOND_TYPE_DOUBLE:
                if (type == CONFIG_TYPE_FLOAT || type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64) {
                        type_ok = true;
                        v.d = type == CONFIG_TYPE_FLOAT ? config_setting_get_float(s)
                                                        : (double) config_setting_get_int64(s);
                        if (!(v.d <= SETTING_DOUBLE_MAX && v.d >= -SETTING_DOUBLE_MAX)) {
                                problem = "is out of range (at most 1e15)";
                                r = -ERANGE;
                        }
                }
                break;
        case SESSIOND_TYPE_STRING:
        case SESSIOND_TYPE_ENVIRONMENT:
                if (type == CONFIG_TYPE_STRING) {
                        type_ok = true;
                        const char *str = config_setting_get_string(s);
                        if (def->type == SESSIOND_TYPE_STRING) {
                                /* Empty is for the validation to refuse. */
                                v.s = str;
                                if (!utf8_is_valid(str)) {
                                        problem = "is not valid UTF-8";
                                        r = -EINVAL;
                                }
                        } else
                                r = setting_parse_text(def, str, &v, &problem);
                }
                break;
        }

        if (!type_ok) {
                reader_error(rd, def->path, file, line, "%s: expected %s, found %s", def->path,
                             expected_name(def->type), type_name(type));
                return;
        }
        if (r < 0) {
                /* Quote the bad value as written. */
                _cleanup_free_ char *text = NULL;
                if (type == CONFIG_TYPE_STRING) {
                        _cleanup_free_ char *redacted = NULL;
                        const char *str = config_setting_get_string(s);

                        /* A connection string only with its password hidden. */
                        if (setting_is_conninfo(def) && sessiond_conninfo_redact(str, &redacted) < 0)
                                redacted = NULL;
                        if (asprintf(&text, "\"%s\"",
                                     !setting_is_conninfo(def) ? str
                                     : redacted                ? redacted
                                                               : "***") < 0)
                                text = NULL;
                } else if (type == CONFIG_TYPE_FLOAT) {
                        if (asprintf(&text, "%g", config_setting_get_float(s)) < 0)
                                text = NULL;
                } else if (asprintf(&text, "%lld", (long long) config_setting_get_int64(s)) < 0)
                        text = NULL;
                reader_error(rd, def->path, file, line, "%s: value %s %s", def->path, text ? text : "?", problem);
                return;
        }
        if (config_store(rd->config, idx, &v, SESSIOND_ORIGIN_FILE, file, line) < 0)
                rd->failed = true;
}

static void read_custom(struct reader *rd, const config_setting_t *group) {
        int n = config_setting_length(group);

        for (int i = 0; i < n; i++) {
                const config_setting_t *s = config_setting_get_elem(group, (unsigned) i);
                _cleanup_free_ char *file = setting_file(rd, s);
                const char *name = config_setting_name(s);
                int line = config_setting_source_line(s);
                _cleanup_free_ char *text = NULL;
                int r = 0;

                if (!file || !name) {
                        rd->failed = rd->failed || !file;
                        continue;
                }
                switch (config_setting_type(s)) {
                case CONFIG_TYPE_STRING:
                        if (!utf8_is_valid(config_setting_get_string(s))) {
                                reader_error(rd, "custom", file, line, "custom.%s: value \"%s\" is not valid UTF-8",
                                             name, config_setting_get_string(s));
                                continue;
                        }
                        text = strdup(config_setting_get_string(s));
                        break;
                case CONFIG_TYPE_INT:
                case CONFIG_TYPE_INT64:
                        r = asprintf(&text, "%lld", (long long) config_setting_get_int64(s));
                        break;
                case CONFIG_TYPE_FLOAT:
                        r = asprintf(&text, "%g", config_setting_get_float(s));
                        break;
                case CONFIG_TYPE_BOOL:
                        text = strdup(config_setting_get_bool(s) ? "true" : "false");
                        break;
                default:
                        reader_error(rd, "custom", file, line,
                                     "custom.%s: expected a string, number or boolean, found %s", name,
                                     type_name(config_setting_type(s)));
                        continue;
                }
                if (r < 0 || !text || config_store_custom(rd->config, name, text, SESSIOND_ORIGIN_FILE, file, line) < 0)
                        rd->failed = true;
        }
}

static bool is_group_path(const char *path) {
        size_t len = strlen(path);

        for (size_t i = 0; i < sessiond_settings_count; i++)
                if (strncmp(sessiond_settings[i].path, path, len) == 0 && sessiond_settings[i].path[len] == '.')
                        return true;
        return false;
}

static void walk(struct reader *rd, const config_setting_t *group, const char *prefix) {
        int n = config_setting_length(group);

        for (int i = 0; i < n; i++) {
                const config_setting_t *s = config_setting_get_elem(group, (unsigned) i);
                const char *name = config_setting_name(s);
                _cleanup_free_ char *file = setting_file(rd, s);
                int line = config_setting_source_line(s);
                _cleanup_free_ char *path = NULL;
                int idx;

                if (!name || !file) {
                        rd->failed = rd->failed || !file;
                        continue;
                }
                if (asprintf(&path, "%s%s%s", prefix ? prefix : "", prefix ? "." : "", name) < 0) {
                        rd->failed = true;
                        return;
                }

                if (strcmp(path, "custom") == 0) {
                        if (config_setting_type(s) != CONFIG_TYPE_GROUP)
                                reader_error(rd, "custom", file, line, "custom: expected a group, found %s",
                                             type_name(config_setting_type(s)));
                        else
                                read_custom(rd, s);
                        continue;
                }
                idx = sessiond_setting_find(path);
                if (idx >= 0) {
                        read_value(rd, (size_t) idx, s);
                        continue;
                }
                if (is_group_path(path)) {
                        if (config_setting_type(s) != CONFIG_TYPE_GROUP)
                                reader_error(rd, path, file, line, "%s: expected a group, found %s", path,
                                             type_name(config_setting_type(s)));
                        else
                                walk(rd, s, path);
                        continue;
                }

                const char *near = suggest_setting_path(path);
                if (near)
                        sessiond_issues_add(rd->issues, SESSIOND_WARNING, path,
                                            "%s:%d: unknown setting %s (ignored); did you mean %s?", file, line, path,
                                            near);
                else
                        sessiond_issues_add(rd->issues, SESSIOND_WARNING, path, "%s:%d: unknown setting %s (ignored)",
                                            file, line, path);
        }
}

/* Frees what the reader gathered (bad files, the syntax finding). */
static void reader_done(struct reader *rd) {
        for (size_t i = 0; i < rd->n_bad; i++)
                free(rd->bad[i].file);
        free(rd->bad);
        free(rd->syntax_file);
}

int conffile_read(struct sessiond_config *c, const char *path, struct sessiond_issues *issues) {
        _cleanup_free_ char *dir_copy = NULL;
        _cleanup_(reader_done) struct reader rd = {.config = c, .issues = issues, .path = path};
        struct stat st;
        config_t cf;
        int r = 0;

        if (stat(path, &st) < 0) {
                r = -errno;
                sessiond_issues_add(issues, SESSIOND_ERROR, NULL, "%s: cannot read the configuration file: %s", path,
                                    strerror(errno));
                return r;
        }
        if (S_ISDIR(st.st_mode)) {
                sessiond_issues_add(issues, SESSIOND_ERROR, NULL, "%s: is a folder, not a configuration file", path);
                return -EISDIR;
        }
        if (access(path, R_OK) < 0) {
                r = -errno;
                sessiond_issues_add(issues, SESSIOND_ERROR, NULL, "%s: cannot read the configuration file: %s", path,
                                    strerror(errno));
                return r;
        }

        dir_copy = strdup(path);
        if (!dir_copy)
                return -ENOMEM;
        rd.dir = dirname(dir_copy);

        /* The scan first: its integer findings wait until libconfig has
         * parsed the file (a syntax error is the only thing to say about a
         * file that does not parse), its syntax finding stops us here. */
        _cleanup_(sessiond_issues_clear) struct sessiond_issues pending = {};
        rd.issues = &pending;
        scan_file(&rd, path, 0);
        rd.issues = issues;
        if (rd.syntax_file) {
                sessiond_issues_add(issues, SESSIOND_ERROR, NULL, "%s:%d: %s", rd.syntax_file, rd.syntax_line,
                                    rd.syntax_what);
                return -EINVAL;
        }

        config_init(&cf);
        config_set_include_dir(&cf, rd.dir);
        if (!config_read_file(&cf, path)) {
                if (config_error_type(&cf) == CONFIG_ERR_FILE_IO)
                        sessiond_issues_add(issues, SESSIOND_ERROR, NULL, "%s: cannot read the configuration file",
                                            config_error_file(&cf) ? config_error_file(&cf) : path);
                else
                        sessiond_issues_add(issues, SESSIOND_ERROR, NULL, "%s:%d: %s",
                                            config_error_file(&cf) ? config_error_file(&cf) : path,
                                            config_error_line(&cf), config_error_text(&cf));
                config_destroy(&cf);
                return -EINVAL;
        }

        for (size_t i = 0; i < pending.count; i++)
                sessiond_issues_add(issues, pending.items[i].severity, pending.items[i].setting, "%s",
                                    pending.items[i].message);
        walk(&rd, config_root_setting(&cf), NULL);
        config_destroy(&cf);

        free(c->config_file);
        c->config_file = strdup(path);
        if (!c->config_file)
                return -ENOMEM;
        return rd.failed ? -EINVAL : 0;
}
