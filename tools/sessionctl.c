/* sessionctl: the operator's tool, in the style of loginctl.
 *
 * Global options are parsed here; `config` is handed to sessionctl-config.c
 * (it works without a daemon), `backup` reads the database itself, and
 * every other verb is one io.sessiond.Admin call (or any call for `call`)
 * made through libsessiond's blocking client.
 *
 * Each verb is a small function that builds the call's parameters, makes
 * the call and renders the reply: with --json the reply's parameters as
 * they came (one compact line, for scripts), otherwise a table with a
 * header and a "N ... listed." footer (--no-legend drops both) or
 * "key: value" lines, with Unix times shown as local times and durations
 * as "2h 5m". Session tokens are never shown: the Admin interface deals in
 * public ids only, and the human renderers hide any field named like a
 * token should a daemon ever send one.
 *
 * The socket is -s, else $SESSIOND_SOCKET, else daemon.socket_path of the
 * configuration (-c, loaded only when needed), else the built-in default.
 *
 * Exit codes (sessionctl.h, documented in --help and sessionctl(1)):
 * 0 success, 1 failure (a Varlink error reply included), 2 usage, 3 and 4
 * for `health` degraded and unhealthy, 5 when no daemon is running.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "macro.h" /* lib/common: ELEMENTSOF, _cleanup_free_, _cleanup_json_ */
#include "sessiond/client.h"
#include "sessiond/config.h"
#include "outfile.h"
#include "sessionctl.h"

#define ADMIN "io.sessiond.Admin."
#define PERMISSION_DENIED_TEXT "permission denied: need root or membership in group sessiond-admin"

static void usage(FILE *f) {
        fputs("Usage: sessionctl [-s SOCKET] [-c FILE] [--json] [--no-legend] VERB [ARGS...]\n"
              "\n"
              "Control and inspect the sessiond session daemon.\n"
              "\n"
              "Verbs:\n"
              "  status                       the daemon's state and its background jobs\n"
              "  health                       overall health and each component\n"
              "  list [--user U] [--all] [--limit N]\n"
              "                               live sessions (--all: also expired and ended ones)\n"
              "  show ID                      everything about one session\n"
              "  terminate ID                 end one session now\n"
              "  terminate-user U             end every session of user U\n"
              "  cleanup [regular|batch|deep] run a cleanup now (default: regular)\n"
              "  reload                       reload the configuration; prints every issue if invalid\n"
              "  metrics [--prometheus]       counters and gauges (Prometheus text format 0.0.4)\n"
              "  alerts                       firing and resolved alerts\n"
              "  events [--follow]            recent events (--follow: then every new one)\n"
              "  audit [--user U] [--since T] [--kind K] [--limit N]\n"
              "                               audit records; T is Unix seconds, a duration back\n"
              "                               from now (90s, 30m, 48h, 7d) or YYYY-MM-DD[ HH:MM[:SS]]\n"
              "  analytics                    session analytics\n"
              "  call [--more|--oneway] METHOD [JSON]\n"
              "                               any Varlink call; prints the reply parameters verbatim\n"
              "  backup [--force] FILE        online copy of the database into FILE\n"
              "  db check [--database FILE]   integrity check of the database, without the daemon\n"
              "  db recover [--database FILE] [--force] OUTPUT\n"
              "                               copy every readable row into a new database OUTPUT\n"
              "  config --validate|--show [--origin]|--summary|--set-env ENV|\n"
              "         --optimize-for ENV|--generate-template [--output FILE] [--format env|conf]\n"
              "\n"
              "Options:\n"
              "  -s, --socket PATH   the daemon's socket (default: $SESSIOND_SOCKET, then\n"
              "                      daemon.socket_path of the configuration, then\n"
              "                      " SESSIOND_DEFAULT_SOCKET ")\n"
              "  -c, --config FILE   configuration file (default " SESSIOND_DEFAULT_CONFIG_FILE ")\n"
              "      --json          print replies as JSON, for scripts\n"
              "      --no-legend     tables without header and footer\n"
              "  -h, --help          this text\n"
              "\n"
              "Exit status:\n"
              "  0  success (health: healthy)\n"
              "  1  failure, including an error reply of the daemon\n"
              "  2  usage error\n"
              "  3  health: degraded\n"
              "  4  health: unhealthy\n"
              "  5  the daemon is not running (no socket, or nobody listening)\n",
              f);
}

/* ---- small helpers -------------------------------------------------------- */

/* "sessionctl: <message>" on stderr, without the newline. Messages quote
 * what a user typed or a daemon sent: control characters are escaped. */
static void error_vprint(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static void error_vprint(const char *fmt, va_list ap) {
        _cleanup_free_ char *text = NULL, *escaped = NULL;

        fputs("sessionctl: ", stderr);
        if (vasprintf(&text, fmt, ap) < 0 || !(escaped = sessiond_text_escape_dup(text))) {
                fputs("out of memory", stderr);
                return;
        }
        fputs(escaped, stderr);
}

static int error_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int error_usage(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        error_vprint(fmt, ap);
        va_end(ap);
        fputs("\nTry 'sessionctl --help'.\n", stderr);
        return SESSIONCTL_EXIT_USAGE;
}

static int error_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int error_fail(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        error_vprint(fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return SESSIONCTL_EXIT_FAILURE;
}

static bool str_has_suffix(const char *s, const char *suffix) {
        size_t a = strlen(s), b = strlen(suffix);
        return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Fields that would hold a bearer secret: never shown to people. */
static bool key_is_secret(const char *key) {
        return strcmp(key, "token") == 0 || str_has_suffix(key, "_token");
}

/* Unix seconds as local time, "2024-05-01 12:00:00". */
static const char *format_time(int64_t t, char *buf, size_t size) {
        time_t tt = (time_t) t;
        struct tm tm;

        if (t <= 0 || !localtime_r(&tt, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
                snprintf(buf, size, "-");
        return buf;
}

/* Seconds as "3d 4h", "2h 5m", "4m 3s", "12s". */
static const char *format_duration(int64_t s, char *buf, size_t size) {
        const char *sign = s < 0 ? "-" : "";
        uint64_t u = s < 0 ? (uint64_t) 0 - (uint64_t) s : (uint64_t) s;

        if (u >= 86400)
                snprintf(buf, size, "%s%" PRIu64 "d %" PRIu64 "h", sign, u / 86400, u % 86400 / 3600);
        else if (u >= 3600)
                snprintf(buf, size, "%s%" PRIu64 "h %" PRIu64 "m", sign, u / 3600, u % 3600 / 60);
        else if (u >= 60)
                snprintf(buf, size, "%s%" PRIu64 "m %" PRIu64 "s", sign, u / 60, u % 60);
        else
                snprintf(buf, size, "%s%" PRIu64 "s", sign, u);
        return buf;
}

static bool key_is_time(const char *key) {
        return str_has_suffix(key, "_at") || strcmp(key, "at") == 0 || strcmp(key, "time") == 0 ||
               strcmp(key, "hour") == 0 || strcmp(key, "last_run") == 0 || strcmp(key, "next_run") == 0 ||
               strcmp(key, "last_activity") == 0 || strcmp(key, "since") == 0;
}

static bool key_is_duration(const char *key) {
        return strcmp(key, "uptime") == 0 || strcmp(key, "interval") == 0 || strcmp(key, "expires_in") == 0 ||
               str_has_suffix(key, "_interval") || strcmp(key, "retry_after") == 0;
}

/* A string for a terminal: control characters (C0, DEL and C1, which
 * could move the cursor or start an escape sequence: user agents come from
 * the web) are shown escaped (sessiond_text_escape()). Returns a malloc'ed
 * string. */
static char *escape_for_terminal(const char *s) {
        return sessiond_text_escape_dup(s);
}

/* Display width of UTF-8 text (code points; the text is valid UTF-8, as
 * jansson accepts nothing else). */
static size_t text_width(const char *s) {
        size_t w = 0;

        for (; *s; s++)
                w += ((unsigned char) *s & 0xc0) != 0x80;
        return w;
}

/* A scalar for people: times and durations by key, strings bare, null "-".
 * Returns a malloc'ed string (NULL on ENOMEM). */
static char *format_scalar(const char *key, json_t *v) {
        char buf[64];
        char *s = NULL;

        if (key && key_is_secret(key))
                return strdup("(hidden)");
        switch (json_typeof(v)) {
        case JSON_STRING:
                return escape_for_terminal(json_string_value(v));
        case JSON_INTEGER:
                if (key && key_is_time(key))
                        return strdup(format_time(json_integer_value(v), buf, sizeof(buf)));
                if (key && key_is_duration(key))
                        return strdup(format_duration(json_integer_value(v), buf, sizeof(buf)));
                if (asprintf(&s, "%" JSON_INTEGER_FORMAT, json_integer_value(v)) < 0)
                        return NULL;
                return s;
        case JSON_REAL:
                if (asprintf(&s, "%.6g", json_real_value(v)) < 0)
                        return NULL;
                return s;
        case JSON_TRUE:
                return strdup("yes");
        case JSON_FALSE:
                return strdup("no");
        case JSON_NULL:
                return strdup("-");
        default:
                return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        }
}

static void print_json(json_t *j) {
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);

        if (s) {
                puts(s);
                free(s);
        }
}

/* ---- trees of key: value lines ----------------------------------------- */

static void print_tree(json_t *obj, int indent);

static bool json_is_scalar(json_t *v) {
        return !json_is_object(v) && !json_is_array(v);
}

/* An object of scalars only (a record that fits on one line). */
static bool object_is_flat(json_t *obj) {
        const char *k;
        json_t *x;

        json_object_foreach(obj, k, x)
                if (!json_is_scalar(x))
                        return false;
        return true;
}

static void print_field(const char *key, json_t *v, int indent) {
        if (json_is_object(v)) {
                if (json_object_size(v) == 0 || key_is_secret(key)) {
                        printf("%*s%s: %s\n", indent, "", key, key_is_secret(key) ? "(hidden)" : "-");
                        return;
                }
                printf("%*s%s:\n", indent, "", key);
                print_tree(v, indent + 2);
        } else if (json_is_array(v)) {
                size_t i;
                json_t *e;
                bool scalars = true;

                json_array_foreach(v, i, e)
                        scalars = scalars && json_is_scalar(e);
                if (scalars) {
                        printf("%*s%s: ", indent, "", key);
                        if (json_array_size(v) == 0)
                                fputs("-", stdout);
                        json_array_foreach(v, i, e) {
                                _cleanup_free_ char *s = format_scalar(key, e);
                                printf("%s%s", i > 0 ? ", " : "", s ? s : "?");
                        }
                        putchar('\n');
                        return;
                }
                printf("%*s%s:\n", indent, "", key);
                json_array_foreach(v, i, e) {
                        if (json_is_object(e) && object_is_flat(e)) {
                                /* a record: one line, "- hour: ..., created: 3" */
                                const char *k;
                                json_t *x;
                                bool first = true;

                                printf("%*s-", indent + 2, "");
                                json_object_foreach(e, k, x) {
                                        _cleanup_free_ char *t = format_scalar(k, x);
                                        printf("%s %s: %s", first ? "" : ",", k, t ? t : "?");
                                        first = false;
                                }
                                putchar('\n');
                        } else if (json_is_object(e)) {
                                printf("%*s-\n", indent + 2, "");
                                print_tree(e, indent + 4);
                        } else {
                                _cleanup_free_ char *s =
                                        json_is_scalar(e) ? format_scalar(key, e) : json_dumps(e, JSON_COMPACT);
                                printf("%*s- %s\n", indent + 2, "", s ? s : "?");
                        }
                }
        } else {
                _cleanup_free_ char *s = format_scalar(key, v);
                printf("%*s%s: %s\n", indent, "", key, s ? s : "?");
        }
}

static void print_tree(json_t *obj, int indent) {
        const char *key;
        json_t *v;

        json_object_foreach(obj, key, v)
                print_field(key, v, indent);
}

/* ---- tables --------------------------------------------------------------- */

#define TABLE_MAX_COLUMNS 8

struct table {
        size_t n_columns;
        const char *headers[TABLE_MAX_COLUMNS];
        char **cells; /* n_rows * n_columns, owned */
        size_t n_rows;
        size_t allocated;
};

static void table_free(struct table *t) {
        for (size_t i = 0; i < t->n_rows * t->n_columns; i++)
                free(t->cells[i]);
        free(t->cells);
}

/* Adds a row of n_columns malloc'ed strings (NULL shown as "-"); takes them. */
static int table_add_row(struct table *t, char **row) {
        if (t->n_rows == t->allocated) {
                size_t n = t->allocated ? t->allocated * 2 : 16;
                char **p = realloc(t->cells, n * t->n_columns * sizeof(char *));
                if (!p) {
                        for (size_t i = 0; i < t->n_columns; i++)
                                free(row[i]);
                        return -ENOMEM;
                }
                t->cells = p;
                t->allocated = n;
        }
        memcpy(t->cells + t->n_rows * t->n_columns, row, t->n_columns * sizeof(char *));
        t->n_rows++;
        return 0;
}

/* Prints the rows, columns separated by two spaces, the last one unpadded,
 * after the headers when `header` (and not --no-legend). */
static void table_print_rows(const struct table *t, const struct sessionctl_globals *g, bool header) {
        size_t width[TABLE_MAX_COLUMNS] = {};

        for (size_t c = 0; c < t->n_columns; c++) {
                if (!g->no_legend)
                        width[c] = strlen(t->headers[c]);
                for (size_t r = 0; r < t->n_rows; r++) {
                        const char *s = t->cells[r * t->n_columns + c];
                        size_t l = text_width(s ? s : "-");
                        if (l > width[c])
                                width[c] = l;
                }
        }
        for (size_t r = 0; r <= t->n_rows; r++) {
                if (r == 0 && (g->no_legend || !header))
                        continue;
                for (size_t c = 0; c < t->n_columns; c++) {
                        const char *s = r == 0 ? t->headers[c] : t->cells[(r - 1) * t->n_columns + c];
                        bool last = c + 1 == t->n_columns;

                        if (!s)
                                s = "-";
                        if (last)
                                printf("%s\n", s);
                        else
                                printf("%s%*s  ", s, (int) (width[c] - text_width(s)), "");
                }
        }
}

static void table_print_legend(size_t n, const struct sessionctl_globals *g, const char *noun_one,
                               const char *noun_many) {
        if (!g->no_legend)
                printf("\n%zu %s listed.\n", n, n == 1 ? noun_one : noun_many);
}

/* Prints the table, then "N <noun> listed." unless --no-legend. */
static void table_print(const struct table *t, const struct sessionctl_globals *g, const char *noun_one,
                        const char *noun_many) {
        table_print_rows(t, g, true);
        table_print_legend(t->n_rows, g, noun_one, noun_many);
}

/* A column of a table of objects: its header, the member it shows, and
 * how; format NULL: like format_scalar(), "-" for a missing member. */
struct column {
        const char *header;
        const char *key;
        char *(*format)(json_t *value); /* value NULL when missing */
};

static char *column_cell(const struct column *c, json_t *obj) {
        json_t *v = json_object_get(obj, c->key);

        if (c->format)
                return c->format(v);
        return v ? format_scalar(c->key, v) : strdup("-");
}

/* Fills t with the columns' headers and a row an object. Returns 0 or an
 * exit code (t is freed then). */
static int table_from_objects(struct table *t, const struct column *columns, size_t n_columns, json_t *objects) {
        json_t *obj;
        size_t i;

        assert(n_columns <= TABLE_MAX_COLUMNS);
        *t = (struct table){.n_columns = n_columns};
        for (size_t c = 0; c < n_columns; c++)
                t->headers[c] = columns[c].header;
        json_array_foreach(objects, i, obj) {
                char *row[TABLE_MAX_COLUMNS];

                for (size_t c = 0; c < n_columns; c++)
                        row[c] = column_cell(&columns[c], obj);
                if (table_add_row(t, row) < 0) {
                        table_free(t);
                        return error_fail("out of memory");
                }
        }
        return 0;
}

/* Prints an array of objects as rows of a table (headers when `header`).
 * Returns 0 or an exit code. */
static int table_print_page(const struct column *columns, size_t n_columns, json_t *objects,
                            const struct sessionctl_globals *g, bool header) {
        struct table t;
        int r = table_from_objects(&t, columns, n_columns, objects);

        if (r != 0)
                return r;
        table_print_rows(&t, g, header);
        table_free(&t);
        fflush(stdout);
        return 0;
}

/* Prints an array of objects as a table, a row an object. Returns 0 or an
 * exit code. */
static int table_print_objects(const struct column *columns, size_t n_columns, json_t *objects,
                               const struct sessionctl_globals *g, const char *noun_one, const char *noun_many) {
        struct table t;
        int r = table_from_objects(&t, columns, n_columns, objects);

        if (r != 0)
                return r;
        table_print(&t, g, noun_one, noun_many);
        table_free(&t);
        return 0;
}

/* ---- talking to the daemon --------------------------------------------- */

struct ctl {
        const struct sessionctl_globals *g;
        struct sessiond_client *client;
        const char *socket_path;
        char *socket_path_owned;
};

static void ctl_done(struct ctl *ctl) {
        sessiond_client_free(ctl->client);
        free(ctl->socket_path_owned);
}

int sessionctl_load_config(const struct sessionctl_globals *g, const char *who, const char *hint,
                           struct sessiond_config **ret) {
        struct sessiond_config_sources sources = {.config_file = g->config_file};
        struct sessiond_issues issues = {};
        int r;

        r = sessiond_config_load(&sources, ret, &issues);
        if (r < 0) {
                fprintf(stderr, "%s: cannot load the configuration%s%s%s:\n", who, g->config_file ? " " : "",
                        g->config_file ? g->config_file : "", hint);
                for (size_t i = 0; i < issues.count; i++)
                        if (issues.items[i].severity == SESSIOND_ERROR)
                                fprintf(stderr, "  %s\n", issues.items[i].message);
        }
        sessiond_issues_clear(&issues);
        return r;
}

/* -s, else $SESSIOND_SOCKET, else daemon.socket_path of the configuration,
 * else the default. A configuration that cannot be loaded is not fatal here
 * (the daemon might still be reachable at the default): warn and go on. */
static void ctl_resolve_socket(struct ctl *ctl) {
        struct sessiond_config *config = NULL;
        const char *e;

        if (ctl->g->socket_path) {
                ctl->socket_path = ctl->g->socket_path;
                return;
        }
        e = getenv("SESSIOND_SOCKET");
        if (e && *e) {
                ctl->socket_path = e;
                return;
        }
        if (sessionctl_load_config(ctl->g, "sessionctl", "", &config) >= 0 && config->daemon.socket_path) {
                ctl->socket_path_owned = strdup(config->daemon.socket_path);
                ctl->socket_path = ctl->socket_path_owned;
        } else if (!config)
                fprintf(stderr, "sessionctl: warning: using the default socket %s\n", SESSIOND_DEFAULT_SOCKET);
        sessiond_config_free(config);
        if (!ctl->socket_path)
                ctl->socket_path = SESSIOND_DEFAULT_SOCKET;
}

static int ctl_connect(struct ctl *ctl) {
        int r;

        ctl_resolve_socket(ctl);
        r = sessiond_client_connect(ctl->socket_path, 0, &ctl->client);
        if (r == -ENOENT || r == -ECONNREFUSED) {
                fprintf(stderr, "sessionctl: sessiond is not running (nothing listens on %s)\n", ctl->socket_path);
                return SESSIONCTL_EXIT_NOT_RUNNING;
        }
        if (r == -EACCES)
                return error_fail("cannot connect to %s: %s (access needs membership in group sessiond)",
                                  ctl->socket_path, strerror(-r));
        if (r < 0)
                return error_fail("cannot connect to %s: %s", ctl->socket_path, strerror(-r));
        return 0;
}

static int report_transport_error(const char *method, int r) {
        switch (r) {
        case -ETIMEDOUT:
                return error_fail("%s: timed out waiting for the daemon", method);
        case -ECONNRESET:
        case -EPIPE:
                return error_fail("%s: the daemon closed the connection", method);
        case -EBADMSG:
                return error_fail("%s: malformed reply from the daemon", method);
        case -EINVAL:
                return error_fail("%s: not a valid call", method);
        default:
                return error_fail("%s: %s", method, strerror(-r));
        }
}

/* Prints a Varlink error reply: its name and parameters. */
static int report_varlink_error(const char *method, const char *error, json_t *params) {
        _cleanup_free_ char *p = NULL;

        if (strcmp(error, VARLINK_ERROR_PERMISSION_DENIED) == 0)
                return error_fail(PERMISSION_DENIED_TEXT);
        if (strcmp(error, VARLINK_ERROR_METHOD_NOT_FOUND) == 0 ||
            strcmp(error, VARLINK_ERROR_INTERFACE_NOT_FOUND) == 0) {
                p = json_dumps(params, JSON_COMPACT);
                return error_fail("%s: %s %s (the daemon does not offer this method)", method, error, p ? p : "{}");
        }
        p = json_dumps(params, JSON_COMPACT);
        return error_fail("%s: %s %s", method, error, p ? p : "{}");
}

/* Makes a call. Returns 0 with *ret set (a new reference) on success, or an
 * exit code after printing what went wrong. When error_ret is not NULL, a
 * Varlink error is handed to the caller instead: *error_ret is then the
 * name (valid until the next call) and *ret its parameters. Steals params. */
static int ctl_call_full(struct ctl *ctl, const char *method, json_t *params, unsigned flags, json_t **ret,
                         const char **error_ret, bool *continues) {
        const char *error = NULL;
        json_t *reply = NULL;
        int r;

        if (!ctl->client) {
                r = ctl_connect(ctl);
                if (r != 0) {
                        json_decref(params);
                        return r;
                }
        }
        r = sessiond_client_call(ctl->client, method, params, flags, &reply, &error, continues);
        json_decref(params);
        if (r < 0)
                return report_transport_error(method, r);
        if (error && !error_ret) {
                r = report_varlink_error(method, error, reply);
                json_decref(reply);
                return r;
        }
        if (error_ret)
                *error_ret = error;
        *ret = reply;
        return 0;
}

static int ctl_call(struct ctl *ctl, const char *method, json_t *params, json_t **ret) {
        return ctl_call_full(ctl, method, params, 0, ret, NULL, NULL);
}

/* The next reply of a call made with SESSIOND_CALL_MORE, in place of
 * *reply. Returns 0 or an exit code after printing what went wrong (an
 * error reply included). */
static int ctl_call_next(struct ctl *ctl, const char *method, json_t **reply, bool *continues) {
        const char *error = NULL;
        int r;

        json_decref(*reply);
        *reply = NULL;
        r = sessiond_client_next(ctl->client, -1, reply, &error, continues);
        if (r < 0)
                return report_transport_error(method, r);
        if (error)
                return report_varlink_error(method, error, *reply);
        return 0;
}

/* The member key of reply, which must be of the given type. */
static json_t *reply_member(json_t *reply, const char *key, json_type type) {
        json_t *v = json_object_get(reply, key);
        return v && json_typeof(v) == type ? v : NULL;
}

static int error_reply_shape(const char *method, const char *what) {
        return error_fail("%s: unexpected reply from the daemon (%s)", method, what);
}

/* The first steps of a verb that renders its reply: makes the call; when
 * raw (--json), prints the reply as it came and sets *ret_member to NULL,
 * for nothing is left to render. Otherwise *ret_member is the reply's
 * member key, which must be of the given type ("no <key> array" if not),
 * or the whole reply when key is NULL; it is borrowed from *ret_reply.
 * Returns 0 or an exit code after printing what went wrong. Steals params. */
static int ctl_call_member(struct ctl *ctl, const char *method, json_t *params, bool raw, const char *key,
                           json_type type, json_t **ret_reply, json_t **ret_member) {
        int r;

        *ret_member = NULL;
        r = ctl_call(ctl, method, params, ret_reply);
        if (r != 0)
                return r;
        if (raw) {
                print_json(*ret_reply);
                return 0;
        }
        if (!key) {
                *ret_member = *ret_reply;
                return 0;
        }
        *ret_member = reply_member(*ret_reply, key, type);
        if (!*ret_member) {
                char what[128];

                snprintf(what, sizeof(what), "no %s%s", key,
                         type == JSON_OBJECT  ? " object"
                         : type == JSON_ARRAY ? " array"
                                              : "");
                return error_reply_shape(method, what);
        }
        return 0;
}

/* ---- verb option parsing ------------------------------------------------- */

/* Every verb accepts --json and --no-legend after it too (as loginctl
 * does), plus its own options. */
enum {
        OPT_JSON = 0x100,
        OPT_NO_LEGEND,
        OPT_USER,
        OPT_ALL,
        OPT_LIMIT,
        OPT_SINCE,
        OPT_KIND,
        OPT_PROMETHEUS,
        OPT_FOLLOW,
        OPT_MORE,
        OPT_ONEWAY,
        OPT_FORCE,
        OPT_HELP,
};

struct verb_args {
        const char *user;
        const char *since;
        const char *kind;
        const char *limit;
        bool all, prometheus, follow, more, oneway, force;
        char **positional;
        int n_positional;
};

#define ALLOW(o) (1u << (((o)) - OPT_USER)) /* ((o)): clang-format would read (o) as a cast */

/* Parses argv (argv[0] is the verb); allowed: a mask of ALLOW(OPT_x).
 *
 * Verbs have long options only, so an argument with a single leading dash
 * is an argument, not an option: session ids are base64url and may start
 * with '-'. "--" ends the options (for an id that starts with "--").
 * Options and arguments may come in any order. Positional arguments are
 * gathered, in order, at the front of argv + 1. */
static int verb_parse(int argc, char **argv, unsigned allowed, int min_pos, int max_pos, struct sessionctl_globals *g,
                      struct verb_args *a) {
        static const struct {
                const char *name;
                int id;
                bool has_arg;
        } options[] = {
                /* clang-format off */
                { "json", OPT_JSON, false },
                { "no-legend", OPT_NO_LEGEND, false },
                { "user", OPT_USER, true },
                { "all", OPT_ALL, false },
                { "limit", OPT_LIMIT, true },
                { "since", OPT_SINCE, true },
                { "kind", OPT_KIND, true },
                { "prometheus", OPT_PROMETHEUS, false },
                { "follow", OPT_FOLLOW, false },
                { "more", OPT_MORE, false },
                { "oneway", OPT_ONEWAY, false },
                { "force", OPT_FORCE, false },
                { "help", OPT_HELP, false },
                /* clang-format on */
        };
        bool options_done = false;
        int n = 0;

        for (int i = 1; i < argc; i++) {
                const char *arg = argv[i], *value = NULL, *eq;
                size_t name_len;
                int id = -1;

                if (options_done || strncmp(arg, "--", 2) != 0) {
                        argv[1 + n++] = argv[i]; /* never ahead of i: safe in place */
                        continue;
                }
                if (arg[2] == '\0') {
                        options_done = true;
                        continue;
                }
                eq = strchr(arg, '=');
                name_len = eq ? (size_t) (eq - arg - 2) : strlen(arg + 2);
                for (size_t k = 0; k < ELEMENTSOF(options) && id < 0; k++)
                        if (strlen(options[k].name) == name_len && strncmp(arg + 2, options[k].name, name_len) == 0) {
                                id = options[k].id;
                                if (options[k].has_arg) {
                                        if (eq)
                                                value = eq + 1;
                                        else if (i + 1 < argc)
                                                value = argv[++i];
                                        else
                                                return error_usage("%s: option '%s' needs an argument", argv[0], arg);
                                } else if (eq)
                                        return error_usage("%s: option '%.*s' takes no argument", argv[0],
                                                           (int) (name_len + 2), arg);
                        }
                if (id < 0)
                        return error_usage("%s: unknown option '%s'", argv[0], arg);
                if (id >= OPT_USER && id <= OPT_FORCE && !(allowed & ALLOW(id)))
                        return error_usage("%s: option '--%s' does not apply here", argv[0], arg + 2);
                /* one line an option: */
                /* clang-format off */
                switch (id) {
                case OPT_JSON: g->json = true; break;
                case OPT_NO_LEGEND: g->no_legend = true; break;
                case OPT_USER: a->user = value; break;
                case OPT_ALL: a->all = true; break;
                case OPT_LIMIT: a->limit = value; break;
                case OPT_SINCE: a->since = value; break;
                case OPT_KIND: a->kind = value; break;
                case OPT_PROMETHEUS: a->prometheus = true; break;
                case OPT_FOLLOW: a->follow = true; break;
                case OPT_MORE: a->more = true; break;
                case OPT_ONEWAY: a->oneway = true; break;
                case OPT_FORCE: a->force = true; break;
                case OPT_HELP: usage(stdout); return -1;
                default: abort(); /* every id of the table is handled */
                }
                /* clang-format on */
        }
        a->positional = argv + 1;
        a->n_positional = n;
        if (a->n_positional < min_pos)
                return error_usage("%s: missing argument", argv[0]);
        if (a->n_positional > max_pos)
                return error_usage("%s: unexpected argument '%s'", argv[0], a->positional[max_pos]);
        return 0;
}


/* A positive count, for --limit. */
static int parse_limit(const char *s, int64_t *ret) {
        int64_t v;

        if (sessiond_parse_int(s, &v) < 0 || v <= 0)
                return error_usage("--limit: '%s' is not a positive number", s);
        *ret = v;
        return 0;
}

/* --since: Unix seconds ("1714560000"), a duration back from now ("90s",
 * "30m", "48h", "7d") or a local date "YYYY-MM-DD[ HH:MM[:SS]]". */
static int parse_since(const char *s, int64_t *ret) {
        struct tm tm = {};
        const char *end;
        int64_t v;

        if (*s && strspn(s, "0123456789") == strlen(s) && sessiond_parse_int(s, &v) >= 0) {
                *ret = v;
                return 0;
        }
        if (strchr(s, '-') && (((end = strptime(s, "%Y-%m-%d %H:%M:%S", &tm)) && !*end) ||
                               (memset(&tm, 0, sizeof(tm)), (end = strptime(s, "%Y-%m-%d %H:%M", &tm)) && !*end) ||
                               (memset(&tm, 0, sizeof(tm)), (end = strptime(s, "%Y-%m-%d", &tm)) && !*end))) {
                time_t t;

                tm.tm_isdst = -1;
                t = mktime(&tm);
                if (t == (time_t) -1)
                        return error_usage("--since: '%s' is not a valid time", s);
                *ret = t;
                return 0;
        }
        if (sessiond_parse_duration(s, &v) >= 0 && v >= 0) {
                *ret = (int64_t) time(NULL) - v;
                return 0;
        }
        return error_usage("--since: '%s' is neither Unix seconds, a duration (90s, 30m, 48h, 7d) "
                           "nor a date (YYYY-MM-DD[ HH:MM[:SS]])",
                           s);
}

/* The filters a verb was given (--user, --all, --kind, --since, --limit:
 * verb_parse() lets through only the verb's own) as its call's parameters.
 * Returns 0 or an exit code. */
static int verb_args_to_params(const struct verb_args *a, json_t **ret) {
        _cleanup_json_ json_t *params = json_object();
        int64_t v = 0;
        int r;

        if (!params)
                return error_fail("out of memory");
        if (a->user)
                json_object_set_new(params, "user_id", json_string(a->user));
        if (a->all)
                json_object_set_new(params, "include_ended", json_true());
        if (a->kind)
                json_object_set_new(params, "kind", json_string(a->kind));
        if (a->since) {
                r = parse_since(a->since, &v);
                if (r != 0)
                        return r;
                json_object_set_new(params, "since", json_integer(v));
        }
        if (a->limit) {
                r = parse_limit(a->limit, &v);
                if (r != 0)
                        return r;
                json_object_set_new(params, "limit", json_integer(v));
        }
        *ret = params;
        params = NULL;
        return 0;
}

/* ---- the verbs ------------------------------------------------------------ */

/* A verb whose reply is one object, shown as "key: value" lines. */
static int verb_print_tree(struct ctl *ctl, const char *method, const char *key) {
        _cleanup_json_ json_t *reply = NULL;
        json_t *obj;
        int r;

        r = ctl_call_member(ctl, method, NULL, ctl->g->json, key, JSON_OBJECT, &reply, &obj);
        if (r == 0 && obj)
                print_tree(obj, 0);
        return r;
}

static int verb_status(struct ctl *ctl, const struct verb_args *a) {
        return verb_print_tree(ctl, ADMIN "Status", "status");
}

static int health_exit_code(const char *status) {
        if (strcmp(status, "healthy") == 0)
                return SESSIONCTL_EXIT_OK;
        if (strcmp(status, "degraded") == 0)
                return SESSIONCTL_EXIT_DEGRADED;
        if (strcmp(status, "unhealthy") == 0)
                return SESSIONCTL_EXIT_UNHEALTHY;
        return -1;
}

static int verb_health(struct ctl *ctl, const struct verb_args *a) {
        _cleanup_json_ json_t *reply = NULL;
        json_t *status, *components, *comp;
        const char *name;
        int r, code;

        r = ctl_call(ctl, ADMIN "Health", NULL, &reply);
        if (r != 0)
                return r;
        status = reply_member(reply, "status", JSON_STRING);
        if (!status || (code = health_exit_code(json_string_value(status))) < 0)
                return error_reply_shape(ADMIN "Health", "status is not healthy, degraded or unhealthy");
        if (ctl->g->json) {
                print_json(reply);
                return code;
        }

        printf("Health: %s\n", json_string_value(status));
        components = reply_member(reply, "components", JSON_OBJECT);
        json_object_foreach(components, name, comp) {
                const char *key;
                json_t *v;

                if (!json_is_object(comp)) {
                        print_field(name, comp, 2);
                        continue;
                }
                printf("  %s: %s", name, json_string_value(json_object_get(comp, "status")) ?: "?");
                if (json_is_string(json_object_get(comp, "message")) &&
                    *json_string_value(json_object_get(comp, "message")))
                        printf(" (%s)", json_string_value(json_object_get(comp, "message")));
                putchar('\n');
                json_object_foreach(comp, key, v)
                        if (strcmp(key, "status") != 0 && strcmp(key, "message") != 0)
                                print_field(key, v, 4);
        }
        return code;
}

/* A verb whose reply is an array of objects (the member key), shown as a
 * table. Steals params. */
static int verb_print_table(struct ctl *ctl, const char *method, json_t *params, const char *key,
                            const struct column *columns, size_t n_columns, const char *noun_one,
                            const char *noun_many) {
        _cleanup_json_ json_t *reply = NULL;
        json_t *objects;
        int r;

        r = ctl_call_member(ctl, method, params, ctl->g->json, key, JSON_ARRAY, &reply, &objects);
        if (r != 0 || !objects)
                return r;
        return table_print_objects(columns, n_columns, objects, ctl->g, noun_one, noun_many);
}

/* A listing the daemon answers in pages (ListSessions, Audit: `cursor`):
 * asks page after page, each for the entries still wanted (--limit, else
 * the daemon's default of 100), and prints each as it comes (the table's
 * columns are as wide as each page needs); --json gathers them into the
 * one reply object an unpaged call gives. A daemon without pages answers
 * everything at once, without a cursor: that is the last page. Steals
 * params. */
#define PAGED_DEFAULT_LIMIT 100
static int verb_print_pages(struct ctl *ctl, const char *method, json_t *params, const char *key,
                            const struct column *columns, size_t n_columns, const char *noun_one,
                            const char *noun_many) {
        _cleanup_json_ json_t *all = json_array();
        json_t *limit = json_object_get(params, "limit");
        int64_t wanted = json_is_integer(limit) ? json_integer_value(limit) : PAGED_DEFAULT_LIMIT;
        size_t total = 0;
        int r = 0;

        if (!all || json_object_set_new(params, "cursor", json_string("")) < 0) {
                json_decref(params);
                return error_fail("out of memory");
        }
        for (;;) {
                _cleanup_json_ json_t *reply = NULL;
                json_t *objects, *cursor;

                /* Within what every daemon accepts; a page is smaller anyway. */
                json_object_set_new(
                        params, "limit",
                        json_integer(wanted - (int64_t) total < 100000 ? wanted - (int64_t) total : 100000));
                r = ctl_call(ctl, method, json_incref(params), &reply);
                if (r != 0)
                        break;
                objects = reply_member(reply, key, JSON_ARRAY);
                if (!objects) {
                        char what[64];

                        snprintf(what, sizeof(what), "no %s array", key);
                        r = error_reply_shape(method, what);
                        break;
                }
                if (ctl->g->json)
                        json_array_extend(all, objects);
                else {
                        r = table_print_page(columns, n_columns, objects, ctl->g, total == 0);
                        if (r != 0)
                                break;
                }
                total += json_array_size(objects);
                cursor = json_object_get(reply, "cursor");
                if (!json_is_string(cursor) || (int64_t) total >= wanted)
                        break;
                json_object_set(params, "cursor", cursor);
        }
        json_decref(params);
        if (r != 0)
                return r;
        if (ctl->g->json) {
                _cleanup_json_ json_t *out = json_pack("{s:O}", key, all);

                if (!out)
                        return error_fail("out of memory");
                print_json(out);
                return 0;
        }
        if (total == 0)
                table_print_page(columns, n_columns, all, ctl->g, true);
        table_print_legend(total, ctl->g, noun_one, noun_many);
        return 0;
}

static int verb_list(struct ctl *ctl, const struct verb_args *a) {
        static const struct column columns[] = {
                {"ID", "id", NULL},
                {"USER", "user_id", NULL},
                {"PLATFORM", "platform_id", NULL},
                {"STATE", "state", NULL},
                {"CREATED", "created_at", NULL},
                {"LAST-ACTIVE", "last_activity", NULL},
                {"EXPIRES", "expires_at", NULL},
        };
        json_t *params = NULL;
        int r;

        r = verb_args_to_params(a, &params);
        if (r != 0)
                return r;
        return verb_print_pages(ctl, ADMIN "ListSessions", params, "sessions", columns, ELEMENTSOF(columns), "session",
                                "sessions");
}

/* Looks a session up by id with Admin.GetSession: live ones and ended ones
 * the daemon still retains, however many sessions there are. *ret is NULL
 * (and the return 0) when quiet and the daemon holds no such session. */
static int get_session(struct ctl *ctl, const char *id, bool quiet, json_t **ret) {
        _cleanup_json_ json_t *reply = NULL;
        const char *error = NULL;
        json_t *session;
        int r;

        *ret = NULL;
        r = ctl_call_full(ctl, ADMIN "GetSession", json_pack("{s:s}", "id", id), 0, &reply, &error, NULL);
        if (r != 0)
                return r;
        if (error && strcmp(error, ADMIN "NotFound") == 0)
                return quiet ? 0 : error_fail("no session with id '%s'", id);
        if (error && strcmp(error, ADMIN "InvalidArgument") == 0 && json_is_string(json_object_get(reply, "reason")))
                return error_fail("'%s' is not a session id: %s", id,
                                  json_string_value(json_object_get(reply, "reason")));
        if (error)
                return report_varlink_error(ADMIN "GetSession", error, reply);
        session = reply_member(reply, "session", JSON_OBJECT);
        if (!session)
                return error_reply_shape(ADMIN "GetSession", "no session object");
        *ret = json_incref(session);
        return 0;
}

static int verb_show(struct ctl *ctl, const struct verb_args *a) {
        const char *id = a->positional[0];
        _cleanup_json_ json_t *s = NULL;
        const char *key;
        json_t *v;
        int64_t now = (int64_t) time(NULL);
        int r;

        r = get_session(ctl, id, false, &s);
        if (r != 0)
                return r;
        if (ctl->g->json) {
                print_json(s);
                return 0;
        }
        json_object_foreach(s, key, v) {
                _cleanup_free_ char *text = NULL;
                char rel[64] = "";

                if (key_is_secret(key))
                        continue;
                if (!json_is_scalar(v)) {
                        print_field(key, v, 0);
                        continue;
                }
                text = format_scalar(key, v);
                if (key_is_time(key) && json_is_integer(v) && json_integer_value(v) > 0) {
                        char d[32];
                        int64_t delta = json_integer_value(v) - now;
                        if (delta == 0)
                                snprintf(rel, sizeof(rel), " (now)");
                        else
                                snprintf(rel, sizeof(rel), delta > 0 ? " (in %s)" : " (%s ago)",
                                         format_duration(delta > 0 ? delta : -delta, d, sizeof(d)));
                }
                printf("%s: %s%s\n", key, text ? text : "?", rel);
        }
        return 0;
}

static int verb_terminate(struct ctl *ctl, const struct verb_args *a) {
        const char *id = a->positional[0];
        _cleanup_json_ json_t *reply = NULL;
        const char *error = NULL;
        int r;

        r = ctl_call_full(ctl, ADMIN "Terminate", json_pack("{s:s}", "id", id), 0, &reply, &error, NULL);
        if (r != 0)
                return r;
        /* Terminate ends live sessions only: an id whose session already
         * ended (still shown by `show` until retention purges it) is
         * NotFound too, so ask GetSession which it is. */
        if (error && strcmp(error, ADMIN "NotFound") == 0) {
                _cleanup_json_ json_t *s = NULL;
                json_t *reason;

                r = get_session(ctl, id, true, &s);
                if (r != 0)
                        return r;
                if (!s)
                        return error_fail("no session with id '%s'", id);
                reason = json_object_get(s, "end_reason");
                return error_fail("session '%s' already ended (%s)", id,
                                  json_is_string(reason) ? json_string_value(reason) : "not live");
        }
        if (error && strcmp(error, ADMIN "InvalidArgument") == 0 && json_is_string(json_object_get(reply, "reason")))
                return error_fail("'%s' is not a session id: %s", id,
                                  json_string_value(json_object_get(reply, "reason")));
        if (error)
                return report_varlink_error(ADMIN "Terminate", error, reply);
        if (ctl->g->json)
                print_json(reply);
        return 0;
}

static int verb_terminate_user(struct ctl *ctl, const struct verb_args *a) {
        const char *user = a->positional[0];
        _cleanup_json_ json_t *reply = NULL;
        json_t *count;
        int r;

        r = ctl_call_member(ctl, ADMIN "TerminateUser", json_pack("{s:s}", "user_id", user), ctl->g->json, "count",
                            JSON_INTEGER, &reply, &count);
        if (r != 0 || !count)
                return r;
        printf("Terminated %" JSON_INTEGER_FORMAT " session%s of user %s.\n", json_integer_value(count),
               json_integer_value(count) == 1 ? "" : "s", user);
        return 0;
}

static int verb_cleanup(struct ctl *ctl, const struct verb_args *a) {
        const char *kind = a->n_positional > 0 ? a->positional[0] : "regular";
        _cleanup_json_ json_t *reply = NULL;
        json_t *fields, *ended, *purged;
        int r;

        if (strcmp(kind, "regular") != 0 && strcmp(kind, "batch") != 0 && strcmp(kind, "deep") != 0)
                return error_usage("cleanup: unknown kind '%s' (regular, batch or deep)", kind);
        r = ctl_call_member(ctl, ADMIN "Cleanup", json_pack("{s:s}", "kind", kind), ctl->g->json, NULL, JSON_OBJECT,
                            &reply, &fields);
        if (r != 0 || !fields)
                return r;
        ended = reply_member(fields, "ended", JSON_INTEGER);
        purged = reply_member(fields, "purged", JSON_INTEGER);
        if (!ended || !purged)
                return error_reply_shape(ADMIN "Cleanup", "no ended and purged counts");
        printf("%c%s cleanup: %" JSON_INTEGER_FORMAT " session%s ended, %" JSON_INTEGER_FORMAT " row%s purged.\n",
               kind[0] - 'a' + 'A', kind + 1, json_integer_value(ended), json_integer_value(ended) == 1 ? "" : "s",
               json_integer_value(purged), json_integer_value(purged) == 1 ? "" : "s");
        return 0;
}

static int verb_reload(struct ctl *ctl, const struct verb_args *a) {
        _cleanup_json_ json_t *reply = NULL;
        const char *error = NULL;
        json_t *issues, *issue;
        size_t i;
        int r;

        r = ctl_call_full(ctl, ADMIN "Reload", NULL, 0, &reply, &error, NULL);
        if (r != 0)
                return r;
        if (!error) {
                if (ctl->g->json)
                        print_json(reply);
                return 0;
        }
        if (strcmp(error, ADMIN "ConfigInvalid") != 0)
                return report_varlink_error(ADMIN "Reload", error, reply);

        issues = reply_member(reply, "issues", JSON_ARRAY);
        fputs("sessionctl: reload failed: the new configuration cannot be used; the daemon keeps the previous one.\n",
              stderr);
        json_array_foreach(issues, i, issue) {
                _cleanup_free_ char *text =
                        sessiond_text_escape_dup(json_is_string(issue) ? json_string_value(issue) : "?");
                fprintf(stderr, "  %s\n", text ? text : "?");
        }
        return SESSIONCTL_EXIT_FAILURE;
}

/* ---- metrics in the Prometheus text exposition format 0.0.4 --------------- */

/* Metric and label names: [a-zA-Z_:][a-zA-Z0-9_:]* (no ':' in labels);
 * anything else becomes '_'. */
static void prom_put_name(const char *s, bool label) {
        for (size_t i = 0; s[i]; i++) {
                char c = s[i];
                bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':') ||
                          (i > 0 && c >= '0' && c <= '9');
                putchar(ok ? c : '_');
        }
}

/* HELP text escapes backslash and newline; label values also '"'. */
static void prom_put_escaped(const char *s, bool quote) {
        for (; *s; s++) {
                if (*s == '\\')
                        fputs("\\\\", stdout);
                else if (*s == '\n')
                        fputs("\\n", stdout);
                else if (quote && *s == '"')
                        fputs("\\\"", stdout);
                else
                        putchar(*s);
        }
}

static void prom_put_value(json_t *v) {
        switch (json_typeof(v)) {
        case JSON_INTEGER:
                printf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
                break;
        case JSON_REAL: {
                double d = json_real_value(v);
                if (isnan(d))
                        fputs("NaN", stdout);
                else if (isinf(d))
                        fputs(d > 0 ? "+Inf" : "-Inf", stdout);
                else
                        printf("%.17g", d);
                break;
        }
        case JSON_TRUE:
                putchar('1');
                break;
        case JSON_FALSE:
                putchar('0');
                break;
        default:
                fputs("NaN", stdout);
                break;
        }
}

static void prom_put_sample(json_t *m) {
        json_t *labels = json_object_get(m, "labels"), *v;
        const char *key;
        bool first = true;

        fputs("sessiond_", stdout);
        prom_put_name(json_string_value(json_object_get(m, "name")), false);
        if (json_is_object(labels) && json_object_size(labels) > 0) {
                putchar('{');
                json_object_foreach(labels, key, v) {
                        _cleanup_free_ char *text = json_is_string(v) ? strdup(json_string_value(v))
                                                                      : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                        if (!first)
                                putchar(',');
                        first = false;
                        prom_put_name(key, true);
                        fputs("=\"", stdout);
                        prom_put_escaped(text ? text : "", true);
                        putchar('"');
                }
                putchar('}');
        }
        putchar(' ');
        prom_put_value(json_object_get(m, "value"));
        putchar('\n');
}

/* One HELP and TYPE per name, then every sample of that name, in the order
 * names first appear. */
static int metrics_print_prometheus(json_t *metrics) {
        size_t n = json_array_size(metrics);
        _cleanup_free_ bool *done = calloc(n ? n : 1, sizeof(bool));

        if (!done)
                return error_fail("out of memory");
        for (size_t i = 0; i < n; i++) {
                json_t *m = json_array_get(metrics, i);
                const char *name = json_string_value(json_object_get(m, "name"));
                const char *type = json_string_value(json_object_get(m, "type"));
                const char *help = json_string_value(json_object_get(m, "help"));

                if (done[i] || !name || !*name)
                        continue;
                if (!type || (strcmp(type, "counter") != 0 && strcmp(type, "gauge") != 0))
                        type = "untyped";
                fputs("# HELP sessiond_", stdout);
                prom_put_name(name, false);
                putchar(' ');
                prom_put_escaped(help ? help : name, false);
                fputs("\n# TYPE sessiond_", stdout);
                prom_put_name(name, false);
                printf(" %s\n", type);
                for (size_t j = i; j < n; j++) {
                        json_t *o = json_array_get(metrics, j);
                        const char *oname = json_string_value(json_object_get(o, "name"));
                        if (!done[j] && oname && strcmp(oname, name) == 0) {
                                prom_put_sample(o);
                                done[j] = true;
                        }
                }
        }
        return 0;
}

static char *labels_text(json_t *labels) {
        char *out = NULL;
        size_t len = 0;
        FILE *f;
        const char *key;
        json_t *v;
        bool first = true;

        if (!json_is_object(labels) || json_object_size(labels) == 0)
                return strdup("-");
        f = open_memstream(&out, &len);
        if (!f)
                return NULL;
        json_object_foreach(labels, key, v) {
                _cleanup_free_ char *text = format_scalar(NULL, v);
                fprintf(f, "%s%s=%s", first ? "" : ",", key, text ? text : "?");
                first = false;
        }
        fclose(f);
        return out;
}

static int verb_metrics(struct ctl *ctl, const struct verb_args *a) {
        static const struct column columns[] = {
                {"NAME", "name", NULL},
                {"LABELS", "labels", labels_text},
                {"TYPE", "type", NULL},
                {"VALUE", "value", NULL},
        };
        _cleanup_json_ json_t *reply = NULL;
        json_t *metrics;
        int r;

        r = ctl_call_member(ctl, ADMIN "Metrics", NULL, ctl->g->json && !a->prometheus, "metrics", JSON_ARRAY, &reply,
                            &metrics);
        if (r != 0 || !metrics)
                return r;
        if (a->prometheus)
                return metrics_print_prometheus(metrics);
        return table_print_objects(columns, ELEMENTSOF(columns), metrics, ctl->g, "metric", "metrics");
}

static int verb_alerts(struct ctl *ctl, const struct verb_args *a) {
        static const struct column columns[] = {
                {"NAME", "name", NULL},           {"STATE", "state", NULL},      {"VALUE", "value", NULL},
                {"THRESHOLD", "threshold", NULL}, {"RAISED", "raised_at", NULL}, {"RESOLVED", "resolved_at", NULL},
                {"MESSAGE", "message", NULL},
        };

        return verb_print_table(ctl, ADMIN "Alerts", NULL, "alerts", columns, ELEMENTSOF(columns), "alert", "alerts");
}

/* One event per line: its time, its kind, then its other fields. */
static void event_print(json_t *ev, const struct sessionctl_globals *g) {
        static const char *const kind_keys[] = {"kind", "type", "event", "name"};
        const char *kind_key = NULL, *key;
        json_t *v;
        char buf[64];

        if (g->json) {
                print_json(ev);
                return;
        }
        if (!json_is_object(ev)) {
                print_json(ev);
                return;
        }
        v = json_object_get(ev, "time");
        printf("%s", json_is_integer(v) ? format_time(json_integer_value(v), buf, sizeof(buf)) : "-");
        for (size_t i = 0; i < ELEMENTSOF(kind_keys) && !kind_key; i++)
                if (json_is_string(json_object_get(ev, kind_keys[i])))
                        kind_key = kind_keys[i];
        if (kind_key)
                printf(" %s", json_string_value(json_object_get(ev, kind_key)));
        json_object_foreach(ev, key, v) {
                _cleanup_free_ char *text = NULL;

                if (strcmp(key, "time") == 0 || (kind_key && strcmp(key, kind_key) == 0))
                        continue;
                text = json_is_scalar(v) ? format_scalar(key, v) : json_dumps(v, JSON_COMPACT);
                printf(" %s=%s", key, text ? text : "?");
        }
        putchar('\n');
}

/* A reply of Events: {"events": [...]} (the ring, or new ones while
 * following); a single {"event": {...}} is accepted as well. */
static int events_print_reply(json_t *reply, const struct sessionctl_globals *g) {
        json_t *events = reply_member(reply, "events", JSON_ARRAY), *ev;
        size_t i;

        if (events) {
                json_array_foreach(events, i, ev)
                        event_print(ev, g);
        } else if ((ev = reply_member(reply, "event", JSON_OBJECT)))
                event_print(ev, g);
        else
                return error_reply_shape(ADMIN "Events", "no events array");
        fflush(stdout);
        return 0;
}

static int verb_events(struct ctl *ctl, const struct verb_args *a) {
        _cleanup_json_ json_t *reply = NULL;
        bool continues = false;
        int r;

        r = ctl_call_full(ctl, ADMIN "Events", NULL, a->follow ? SESSIOND_CALL_MORE : 0, &reply, NULL, &continues);
        if (r != 0)
                return r;
        if (ctl->g->json && !a->follow) {
                print_json(reply);
                return 0;
        }
        for (;;) {
                r = events_print_reply(reply, ctl->g);
                if (r != 0 || !continues)
                        return r;
                r = ctl_call_next(ctl, ADMIN "Events", &reply, &continues);
                if (r != 0)
                        return r;
        }
}

/* An audit record's detail: compact JSON, "-" when missing or empty. */
static char *audit_detail_text(json_t *detail) {
        if (!detail || (json_is_object(detail) && json_object_size(detail) == 0))
                return strdup("-");
        return json_dumps(detail, JSON_COMPACT | JSON_ENCODE_ANY);
}

static int verb_audit(struct ctl *ctl, const struct verb_args *a) {
        static const struct column columns[] = {
                {"TIME", "time", NULL},
                {"KIND", "kind", NULL},
                {"USER", "user_id", NULL},
                {"SESSION", "session_id", NULL},
                {"DETAIL", "detail", audit_detail_text},
        };
        json_t *params = NULL;
        int r;

        r = verb_args_to_params(a, &params);
        if (r != 0)
                return r;
        return verb_print_pages(ctl, ADMIN "Audit", params, "entries", columns, ELEMENTSOF(columns), "entry",
                                "entries");
}

static int verb_analytics(struct ctl *ctl, const struct verb_args *a) {
        return verb_print_tree(ctl, ADMIN "Analytics", "analytics");
}

/* `call`: the reply's parameters verbatim (indented for people, one compact
 * line with --json or for each reply of a stream). */
static int verb_call(struct ctl *ctl, const struct verb_args *a) {
        const char *method = a->positional[0];
        _cleanup_json_ json_t *reply = NULL;
        json_t *params = NULL;
        unsigned flags = 0;
        bool continues = false;
        size_t flags_json;
        int r;

        if (a->more && a->oneway)
                return error_usage("call: --more and --oneway exclude each other");
        if (!varlink_method_split(method, NULL, 0))
                return error_usage("call: '%s' is not a method name (interface.Method, "
                                   "e.g. io.sessiond.Admin.Status)",
                                   method);
        if (a->n_positional > 1) {
                json_error_t jerr;

                params = json_loads(a->positional[1], 0, &jerr);
                if (!params)
                        return error_usage("call: parameters are not JSON: %s", jerr.text);
                if (!json_is_object(params)) {
                        json_decref(params);
                        return error_usage("call: parameters must be a JSON object");
                }
        }
        flags = a->more ? SESSIOND_CALL_MORE : a->oneway ? SESSIOND_CALL_ONEWAY : 0;
        flags_json = ctl->g->json || a->more ? JSON_COMPACT : JSON_INDENT(2);

        r = ctl_call_full(ctl, method, params, flags, &reply, NULL, &continues);
        if (r != 0 || a->oneway)
                return r;
        for (;;) {
                _cleanup_free_ char *text = json_dumps(reply, flags_json);

                if (text)
                        puts(text);
                fflush(stdout);
                if (!continues)
                        return 0;
                r = ctl_call_next(ctl, method, &reply, &continues);
                if (r != 0)
                        return r;
        }
}

/* ---- backup ---------------------------------------------------------------- */

static void sqlite3_closep(sqlite3 **db) {
        sqlite3_close_v2(*db);
}

static int db_count(sqlite3 *db, const char *sql, int64_t *ret) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        if (rc == SQLITE_OK) {
                rc = sqlite3_step(st);
                if (rc == SQLITE_ROW) {
                        *ret = sqlite3_column_int64(st, 0);
                        rc = SQLITE_OK;
                }
        }
        sqlite3_finalize(st);
        return rc;
}

/* Copies the database into tmp with SQLite's online backup API (one
 * consistent snapshot: the daemon runs in WAL mode, so our read transaction
 * never blocks its writes), makes the copy a self-contained rollback-journal
 * database and checks it. */
static int backup_copy(const char *source, const char *tmp, int64_t *ret_sessions, int64_t *ret_live) {
        _cleanup_(sqlite3_closep) sqlite3 *src = NULL, *dst = NULL;
        sqlite3_backup *b;
        char *err = NULL;
        int rc;

        rc = sqlite3_open_v2(source, &src, SQLITE_OPEN_READONLY, NULL);
        if (rc != SQLITE_OK)
                return error_fail("cannot open database %s: %s", source,
                                  src ? sqlite3_errmsg(src) : sqlite3_errstr(rc));
        sqlite3_busy_timeout(src, 5000);
        /* Fail early and clearly on a file that is not a sessiond database. */
        rc = db_count(src, "SELECT count(*) FROM sessions", ret_sessions);
        if (rc != SQLITE_OK)
                return error_fail("cannot read database %s: %s", source, sqlite3_errmsg(src));

        /* tmp is the empty file outfile_begin() made (an empty file is an
         * empty database); never a symbolic link. */
        rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL);
        if (rc != SQLITE_OK)
                return error_fail("cannot create %s: %s", tmp, dst ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
        sqlite3_busy_timeout(dst, 5000);

        b = sqlite3_backup_init(dst, "main", src, "main");
        if (!b)
                return error_fail("cannot back up %s: %s", source, sqlite3_errmsg(dst));
        /* All pages in one step: the copy is one snapshot and is never
         * restarted by the daemon's writes. */
        do {
                rc = sqlite3_backup_step(b, -1);
                if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
                        sqlite3_sleep(50);
        } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
        sqlite3_backup_finish(b);
        if (rc != SQLITE_DONE)
                return error_fail("backup of %s failed: %s", source, sqlite3_errstr(rc));

        if (sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", NULL, NULL, &err) != SQLITE_OK) {
                error_fail("cannot finish %s: %s", tmp, err ? err : sqlite3_errmsg(dst));
                sqlite3_free(err);
                return SESSIONCTL_EXIT_FAILURE;
        }
        rc = db_count(dst, "SELECT count(*) FROM sessions", ret_sessions);
        if (rc == SQLITE_OK)
                rc = db_count(dst, "SELECT count(*) FROM sessions WHERE ended_at IS NULL", ret_live);
        if (rc != SQLITE_OK)
                return error_fail("cannot read the copy %s: %s", tmp, sqlite3_errmsg(dst));
        return 0;
}

static bool same_file(const char *a, const char *b) {
        struct stat x, y;

        if (strcmp(a, b) == 0)
                return true;
        return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

/* Which database to copy: the one the daemon on the socket uses (Status
 * tells it). The local configuration must name the same file, or the
 * backup is refused: copying another file and saying it worked is what
 * this guards against. Only when no socket was named (-s, SESSIOND_SOCKET)
 * and nothing listens on the configured one is the configured database
 * copied as it is (an offline backup). *ret points into config or *owned. */
static int backup_source(struct ctl *ctl, const struct sessiond_config *config, const char **ret, char **owned) {
        const char *env = getenv("SESSIOND_SOCKET");
        bool named = ctl->g->socket_path || (env && *env);
        _cleanup_json_ json_t *reply = NULL;
        json_t *db;
        int r;

        ctl_resolve_socket(ctl);
        r = sessiond_client_connect(ctl->socket_path, 0, &ctl->client);
        if ((r == -ENOENT || r == -ECONNREFUSED) && !named) {
                if (!config->features.persistence)
                        return error_fail("features.persistence is off: the daemon keeps its sessions in memory, "
                                          "there is no database to back up");
                fprintf(stderr,
                        "sessionctl: sessiond is not running (nothing listens on %s): backing up the "
                        "configured database %s\n",
                        ctl->socket_path, config->daemon.database_path);
                *ret = config->daemon.database_path;
                return 0;
        }
        if (r < 0) {
                ctl->client = NULL;
                return ctl_connect(ctl); /* says why, as every verb does */
        }
        r = ctl_call(ctl, ADMIN "Status", NULL, &reply);
        if (r != 0)
                return r;
        db = json_object_get(reply_member(reply, "status", JSON_OBJECT), "database");
        if (!db)
                return error_fail("the daemon on %s does not tell which database it uses (an older sessiond): "
                                  "stop it and back up its database file, or upgrade it",
                                  ctl->socket_path);
        if (json_is_null(db))
                return error_fail("the daemon on %s keeps its sessions in memory (features.persistence off): "
                                  "there is no database to back up",
                                  ctl->socket_path);
        if (!json_is_string(db))
                return error_reply_shape(ADMIN "Status", "database is not a string");
        if (config->features.persistence && !same_file(config->daemon.database_path, json_string_value(db)))
                return error_fail("the daemon on %s uses the database %s, but the configuration%s%s names %s: "
                                  "nothing was copied. Pass that daemon's configuration with -c, or its socket "
                                  "with -s.",
                                  ctl->socket_path, json_string_value(db), ctl->g->config_file ? " " : "",
                                  ctl->g->config_file ? ctl->g->config_file : "", config->daemon.database_path);
        *owned = strdup(json_string_value(db));
        if (!*owned)
                return error_fail("out of memory");
        *ret = *owned;
        return 0;
}

static int verb_backup(struct ctl *ctl, const struct verb_args *a) {
        const struct sessionctl_globals *g = ctl->g;
        const char *file = a->positional[0], *source = NULL;
        _cleanup_(sessiond_config_freep) struct sessiond_config *config = NULL;
        _cleanup_free_ char *source_owned = NULL;
        struct outfile out;
        int64_t sessions = 0, live = 0;
        struct stat st;
        int r;

        if (!*file)
                return error_usage("backup: empty file name");
        if (sessionctl_load_config(g, "sessionctl", "", &config) < 0)
                return SESSIONCTL_EXIT_FAILURE;
        if (config->features.distributed)
                return error_fail(
                        "backup: features.distributed is on: the sessions are in PostgreSQL "
                        "(daemon.postgres_url); back the database up with pg_dump (e.g. pg_dump -Fc DBNAME > FILE), "
                        "and keep the daemons' key file (daemon.key_file) with it");
        if (!a->force && lstat(file, &st) == 0)
                return error_fail("%s exists; use --force to overwrite it", file);
        r = backup_source(ctl, config, &source, &source_owned);
        if (r != 0)
                return r;
        if (stat(source, &st) < 0)
                return error_fail("cannot open database %s: %s", source, strerror(errno));

        /* The copy holds what the database holds: owner-only, like it, in a
         * fresh temporary file nobody else can swap (outfile.c). */
        if (outfile_begin(&out, "sessionctl backup", file) < 0)
                return SESSIONCTL_EXIT_FAILURE;
        r = backup_copy(source, out.tmp, &sessions, &live);
        if (r != 0) {
                outfile_abort(&out);
                return r;
        }
        if (outfile_commit(&out, "sessionctl backup", a->force) < 0)
                return SESSIONCTL_EXIT_FAILURE;

        if (g->json) {
                json_t *j = json_pack("{s:s, s:s, s:I, s:I}", "file", file, "database", source, "sessions",
                                      (json_int_t) sessions, "live", (json_int_t) live);
                print_json(j);
                json_decref(j);
        } else
                printf("Backed up %s to %s: %" PRId64 " session%s (%" PRId64 " not ended).\n", source, file, sessions,
                       sessions == 1 ? "" : "s", live);
        return 0;
}

/* ---- main ------------------------------------------------------------------ */

/* Each verb: the options it takes besides --json and --no-legend, how many
 * arguments, and what it does. */
static const struct verb {
        const char *name;
        unsigned allowed; /* ALLOW(OPT_x) | ... */
        int min_pos, max_pos;
        int (*run)(struct ctl *ctl, const struct verb_args *a);
} verbs[] = {
        {"status", 0, 0, 0, verb_status},
        {"health", 0, 0, 0, verb_health},
        {"list", ALLOW(OPT_USER) | ALLOW(OPT_ALL) | ALLOW(OPT_LIMIT), 0, 0, verb_list},
        {"show", 0, 1, 1, verb_show},
        {"terminate", 0, 1, 1, verb_terminate},
        {"terminate-user", 0, 1, 1, verb_terminate_user},
        {"cleanup", 0, 0, 1, verb_cleanup},
        {"reload", 0, 0, 0, verb_reload},
        {"metrics", ALLOW(OPT_PROMETHEUS), 0, 0, verb_metrics},
        {"alerts", 0, 0, 0, verb_alerts},
        {"events", ALLOW(OPT_FOLLOW), 0, 0, verb_events},
        {"audit", ALLOW(OPT_USER) | ALLOW(OPT_SINCE) | ALLOW(OPT_KIND) | ALLOW(OPT_LIMIT), 0, 0, verb_audit},
        {"analytics", 0, 0, 0, verb_analytics},
        {"call", ALLOW(OPT_MORE) | ALLOW(OPT_ONEWAY), 1, 2, verb_call},
        {"backup", ALLOW(OPT_FORCE), 1, 1, verb_backup},
};

static int run_verb(int argc, char **argv, struct sessionctl_globals *g) {
        const struct verb *v = NULL;
        struct verb_args a = {};
        struct ctl ctl = {.g = g};
        int r;

        for (size_t i = 0; i < ELEMENTSOF(verbs) && !v; i++)
                if (strcmp(argv[0], verbs[i].name) == 0)
                        v = &verbs[i];
        if (!v)
                return error_usage("unknown verb '%s'", argv[0]);
        r = verb_parse(argc, argv, v->allowed, v->min_pos, v->max_pos, g, &a);
        if (r != 0)
                return r < 0 ? SESSIONCTL_EXIT_OK : r; /* < 0: --help */
        r = v->run(&ctl, &a);
        ctl_done(&ctl);
        return r;
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                {"socket", required_argument, NULL, 's'}, {"config", required_argument, NULL, 'c'},
                {"json", no_argument, NULL, 'j'},         {"no-legend", no_argument, NULL, 'L'},
                {"help", no_argument, NULL, 'h'},         {}};
        struct sessionctl_globals g = {};
        int c, r;

        /* "+": stop at the verb, so that verbs parse their own options. */
        while ((c = getopt_long(argc, argv, "+s:c:h", options, NULL)) >= 0) {
                switch (c) {
                case 's':
                        g.socket_path = optarg;
                        break;
                case 'c':
                        g.config_file = optarg;
                        break;
                case 'j':
                        g.json = true;
                        break;
                case 'L':
                        g.no_legend = true;
                        break;
                case 'h':
                        usage(stdout);
                        return SESSIONCTL_EXIT_OK;
                default:
                        usage(stderr);
                        return SESSIONCTL_EXIT_USAGE;
                }
        }
        if (optind >= argc) {
                usage(stderr);
                return SESSIONCTL_EXIT_USAGE;
        }
        if (strcmp(argv[optind], "config") == 0)
                return sessionctl_config(argc - optind, argv + optind, &g);
        if (strcmp(argv[optind], "db") == 0)
                return sessionctl_db(argc - optind, argv + optind, &g);

        r = run_verb(argc - optind, argv + optind, &g);
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "sessionctl: cannot write the output: %s\n", strerror(errno));
                return SESSIONCTL_EXIT_FAILURE;
        }
        return r;
}
