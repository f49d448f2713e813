/* `sessionctl db check` and `sessionctl db recover OUTPUT`: the way out for
 * an operator whose database sessiond refuses.
 *
 * sessiond refuses a database that is corrupt, foreign or newer than it
 * and leaves it byte-for-byte as it was (daemon/store.c). These two verbs
 * work on that file without a daemon and never write it:
 *
 *   check    opens the file read-only, reads its schema version and runs
 *            PRAGMA integrity_check, printing what SQLite says. Exit 0 when
 *            sessiond would accept the file (sound, a sessiond schema it
 *            knows), 1 otherwise.
 *   recover  copies every row that can still be read into a new database
 *            OUTPUT. Debian's libsqlite3 has no sqlite3_recover (it is an
 *            extension in ext/recover, not in the library) and no
 *            sqlite_dbpage table, so the copy goes row by row through the
 *            read-only connection: the schema is taken from sqlite_master
 *            of the damaged file (tables, then indexes, so that UNIQUE
 *            constraints reject what a damaged page made up), then each
 *            table is read in rowid order. When a read fails, the scan
 *            resumes past the damage: it probes rowids further and further
 *            ahead (1, 2, 4, ...) until a seek succeeds, then narrows back
 *            by bisection to the first rowid that can be read, so that
 *            only the unreadable pages are lost. Rows are inserted with
 *            INSERT OR IGNORE; the schema version is copied; the result is
 *            checked, written to a fresh temporary file (0600, O_EXCL:
 *            tools/outfile.c) in OUTPUT's folder and renamed to OUTPUT.
 *            Without a readable schema there is nothing to copy into and
 *            the verb says so (start sessiond on an empty file, or restore
 *            a backup).
 *
 * Opening read-only may make SQLite create an empty -wal and its -shm next
 * to a database that has none; those are removed again, as the daemon does,
 * so the folder is left as it was. The database is daemon.database_path of
 * the configuration (-c, the env file, SESSIOND_DATABASE) or --database.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "macro.h"        /* lib/common: freep */
#include "sidefiles.h"    /* lib/common */
#include "store-schema.h" /* lib/common: STORE_SCHEMA_VERSION */
#include "sessiond/config.h"
#include "outfile.h"
#include "sessionctl.h"

/* How many damaged regions of one table a recovery steps over before it
 * gives up on the rest of that table. */
#define DB_RECOVER_MAX_REGIONS 10000

struct db_options {
        const char *database; /* --database, else from the configuration */
        bool force;           /* recover: replace OUTPUT */
        const char *output;   /* recover */
};

static void db_usage(FILE *f) {
        fputs("Usage: sessionctl [-c FILE] [--json] db check [--database FILE]\n"
              "       sessionctl [-c FILE] [--json] db recover [--database FILE] [--force] OUTPUT\n"
              "\n"
              "  check      integrity check of the database (read-only); exit 0 if sessiond\n"
              "             would accept it, 1 if not\n"
              "  recover    copy every readable row into the new database OUTPUT; the damaged\n"
              "             file is never written\n"
              "\n"
              "The database is daemon.database_path of the configuration unless --database is given.\n",
              f);
}

static int db_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int db_fail(const char *fmt, ...) {
        va_list ap;

        fputs("sessionctl db: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return SESSIONCTL_EXIT_FAILURE;
}

static void db_closep(sqlite3 **db) {
        sqlite3_close_v2(*db);
}

static void stmt_finalizep(sqlite3_stmt **st) {
        sqlite3_finalize(*st);
}

/* json_decrefp() comes with jansson. */
/* ---- opening ----------------------------------------------------------------- */

static int db_resolve_path(const struct sessionctl_globals *g, const struct db_options *o, char **ret) {
        struct sessiond_config *config = NULL;

        if (o->database) {
                *ret = strdup(o->database);
                return *ret ? 0 : db_fail("out of memory");
        }
        if (sessionctl_load_config(g, "sessionctl db", " (use --database FILE)", &config) < 0)
                return SESSIONCTL_EXIT_FAILURE;
        if (!config->features.persistence) {
                sessiond_config_free(config);
                return db_fail("features.persistence is off: the daemon keeps its sessions in memory and has "
                               "no database (use --database FILE for a file)");
        }
        if (config->features.distributed) {
                sessiond_config_free(config);
                return db_fail("features.distributed is on: the sessions are in PostgreSQL (daemon.postgres_url), "
                               "not in a file; use psql for queries and PostgreSQL's own maintenance (VACUUM, "
                               "ANALYZE, amcheck) there (use --database FILE for an SQLite file)");
        }
        *ret = strdup(config->daemon.database_path);
        sessiond_config_free(config);
        return *ret ? 0 : db_fail("out of memory");
}

/* Percent-encodes what a file: URI must not hold raw. */
static char *path_to_uri(const char *path) {
        size_t n = strlen(path);
        char *uri = malloc(3 * n + sizeof "file:?mode=ro");
        char *p = uri;

        if (!uri)
                return NULL;
        p += sprintf(p, "file:");
        for (const unsigned char *s = (const unsigned char *) path; *s; s++) {
                if (*s == '%' || *s == '?' || *s == '#' || *s < 0x20 || *s >= 0x7f)
                        p += sprintf(p, "%%%02X", *s);
                else
                        *p++ = (char) *s;
        }
        strcpy(p, "?mode=ro");
        return uri;
}

/* Opens `path` read-only (never created, never written). */
static int db_open_readonly(const char *path, sqlite3 **ret) {
        char *uri;
        struct stat st;
        int rc;

        if (stat(path, &st) < 0)
                return db_fail("cannot open database %s: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return db_fail("%s is not a regular file", path);
        /* sqlite3_open_v2 with READONLY succeeds on a file we cannot read and
         * fails later with a vaguer message: say it now. */
        if (access(path, R_OK) < 0)
                return db_fail("cannot read database %s: %s", path, strerror(errno));
        uri = path_to_uri(path);
        if (!uri)
                return db_fail("out of memory");
        rc = sqlite3_open_v2(uri, ret, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
        free(uri);
        if (rc != SQLITE_OK)
                return db_fail("cannot open database %s: %s", path, *ret ? sqlite3_errmsg(*ret) : sqlite3_errstr(rc));
        sqlite3_busy_timeout(*ret, 5000);
        return 0;
}

static int query_int(sqlite3 *db, const char *sql, int64_t *ret) {
        _cleanup_(stmt_finalizep) sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return rc;
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return rc == SQLITE_DONE ? SQLITE_CORRUPT : rc;
        *ret = sqlite3_column_int64(st, 0);
        return SQLITE_OK;
}

/* ---- check --------------------------------------------------------------------- */

enum db_verdict {
        DB_SOUND,
        DB_UNREADABLE, /* not a readable SQLite database */
        DB_CORRUPT,    /* integrity_check found problems */
        DB_FOREIGN,    /* tables, but no sessiond schema version */
        DB_NEWER,      /* schema newer than this sessiond */
};

static const char *const verdict_names[] = {
        [DB_SOUND] = "ok",        [DB_UNREADABLE] = "unreadable", [DB_CORRUPT] = "corrupt",
        [DB_FOREIGN] = "foreign", [DB_NEWER] = "newer",
};

/* integrity_check may put several lines in one row: one message each. */
static void append_lines(json_t *messages, const char *text) {
        while (*text) {
                size_t n = strcspn(text, "\n");

                if (n > 0)
                        json_array_append_new(messages, json_stringn(text, n));
                text += n;
                if (*text)
                        text++;
        }
}

/* Runs the checks; the messages (SQLite's own words) go to `messages`. */
static enum db_verdict db_inspect(sqlite3 *db, int64_t *ret_version, json_t *messages) {
        _cleanup_(stmt_finalizep) sqlite3_stmt *st = NULL;
        int64_t version = 0, tables = 0;
        bool ok = true;
        int rc;

        rc = query_int(db, "PRAGMA user_version", &version);
        if (rc == SQLITE_OK)
                rc = query_int(db, "SELECT count(*) FROM sqlite_master", &tables);
        if (rc != SQLITE_OK) {
                json_array_append_new(messages, json_string(sqlite3_errmsg(db)));
                /* A file SQLite recognises but whose schema is damaged is
                 * corrupt; anything else is no database at all. */
                return (sqlite3_errcode(db) & 0xff) == SQLITE_CORRUPT ? DB_CORRUPT : DB_UNREADABLE;
        }
        *ret_version = version;

        rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
        while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *line = (const char *) sqlite3_column_text(st, 0);

                if (!line || strcmp(line, "ok") != 0) {
                        ok = false;
                        append_lines(messages, line ? line : "(null)");
                }
                rc = SQLITE_OK;
        }
        if (rc != SQLITE_DONE) {
                json_array_append_new(messages, json_string(sqlite3_errmsg(db)));
                return DB_CORRUPT;
        }
        if (!ok)
                return DB_CORRUPT;
        if (version > STORE_SCHEMA_VERSION) {
                json_array_append_new(messages, json_sprintf("schema version %" PRId64 " is newer than this "
                                                             "sessiond supports (%d)",
                                                             version, STORE_SCHEMA_VERSION));
                return DB_NEWER;
        }
        if (version == 0 && tables > 0) {
                json_array_append_new(messages, json_string("tables but no sessiond schema version: "
                                                            "not a sessiond database"));
                return DB_FOREIGN;
        }
        return DB_SOUND;
}

static int db_check(const struct sessionctl_globals *g, const char *path) {
        _cleanup_(json_decrefp) json_t *messages = json_array();
        struct side_files side;
        enum db_verdict v;
        int64_t version = 0;
        sqlite3 *db = NULL;
        int r;

        if (!messages)
                return db_fail("out of memory");
        side_files_note(&side, path);
        r = db_open_readonly(path, &db);
        if (r != 0) {
                sqlite3_close_v2(db);
                side_files_restore(&side);
                return r;
        }
        v = db_inspect(db, &version, messages);
        sqlite3_close_v2(db);
        side_files_restore(&side);

        if (g->json) {
                _cleanup_(json_decrefp) json_t *j =
                        json_pack("{s:s, s:s, s:I, s:O}", "database", path, "status", verdict_names[v],
                                  "schema_version", (json_int_t) version, "messages", messages);
                char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

                if (!s)
                        return db_fail("out of memory");
                puts(s);
                free(s);
        } else if (v == DB_SOUND)
                printf("%s: ok (integrity_check ok, schema version %" PRId64 ")\n", path, version);
        else {
                static const char *const what[] = {
                        [DB_UNREADABLE] = "not a readable SQLite database",
                        [DB_CORRUPT] = "corrupt",
                        [DB_FOREIGN] = "not a sessiond database",
                        [DB_NEWER] = "from a newer sessiond",
                };
                size_t i;
                json_t *m;

                printf("%s: %s\n", path, what[v]);
                json_array_foreach(messages, i, m)
                        printf("  %s\n", json_string_value(m));
                if (v == DB_CORRUPT || v == DB_UNREADABLE)
                        printf("Copy what can still be read into a new file with: sessionctl db recover OUTPUT\n");
        }
        return v == DB_SOUND ? SESSIONCTL_EXIT_OK : SESSIONCTL_EXIT_FAILURE;
}

/* ---- recover ------------------------------------------------------------------- */

struct table_stats {
        int64_t copied;   /* rows inserted */
        int64_t rejected; /* rows read but refused by a constraint */
        unsigned regions; /* damaged regions stepped over */
        bool gave_up;     /* the rest of the table could not be reached */
        char first_error[200];
};

static char *quote_ident(const char *name) {
        size_t n = strlen(name);
        char *q = malloc(2 * n + 3), *p = q;

        if (!q)
                return NULL;
        *p++ = '"';
        for (; *name; name++) {
                if (*name == '"')
                        *p++ = '"';
                *p++ = *name;
        }
        *p++ = '"';
        *p = '\0';
        return q;
}

/* Whether a scan of `table` from rowid `from` can start: 1 yes (a row or
 * the end), 0 no (damage), negative errno on other trouble. */
static int seek_ok(sqlite3 *src, const char *qtable, int64_t from) {
        _cleanup_(stmt_finalizep) sqlite3_stmt *st = NULL;
        char *sql = NULL;
        int rc;

        if (asprintf(&sql, "SELECT rowid FROM %s WHERE rowid >= ?1 ORDER BY rowid LIMIT 1", qtable) < 0)
                return -ENOMEM;
        rc = sqlite3_prepare_v2(src, sql, -1, &st, NULL);
        free(sql);
        if (rc != SQLITE_OK)
                return 0;
        sqlite3_bind_int64(st, 1, from);
        rc = sqlite3_step(st);
        return rc == SQLITE_ROW || rc == SQLITE_DONE;
}

/* The first rowid after `failed` (a rowid whose seek fails) from which a
 * scan can start: exponential probes, then bisection back to the edge of
 * the damage (which is taken to be one run of rowids). Returns 1 and *ret,
 * 0 when nothing after it can be reached. */
static int find_resume(sqlite3 *src, const char *qtable, int64_t failed, int64_t *ret) {
        int64_t bad = failed, good, step = 1;
        int r;

        for (;;) {
                if (failed > INT64_MAX - step)
                        return 0;
                good = failed + step;
                r = seek_ok(src, qtable, good);
                if (r < 0)
                        return r;
                if (r > 0)
                        break;
                bad = good;
                if (step > INT64_MAX / 2)
                        return 0;
                step *= 2;
        }
        while (good - bad > 1) {
                int64_t mid = bad + (good - bad) / 2;

                r = seek_ok(src, qtable, mid);
                if (r < 0)
                        return r;
                if (r > 0)
                        good = mid;
                else
                        bad = mid;
        }
        *ret = good;
        return 1;
}

/* `max_reads` bounds the rows read over all passes: a damaged tree could
 * lead a scan in circles, and no table can hold more rows than its file has
 * room for. */
static int copy_table(sqlite3 *src, sqlite3 *dst, const char *table, int64_t max_reads, struct table_stats *stats) {
        _cleanup_(stmt_finalizep) sqlite3_stmt *ins = NULL;
        _cleanup_(freep) char *qtable = quote_ident(table);
        _cleanup_(freep) char *select_sql = NULL;
        _cleanup_(freep) char *insert_sql = NULL;
        int64_t from = INT64_MIN, reads = 0;
        int columns = -1, rc, r;

        if (!qtable || asprintf(&select_sql, "SELECT rowid, * FROM %s WHERE rowid >= ?1 ORDER BY rowid", qtable) < 0)
                return -ENOMEM;

        for (;;) {
                _cleanup_(stmt_finalizep) sqlite3_stmt *sel = NULL;
                int64_t last = from, base;
                bool any = false;

                rc = sqlite3_prepare_v2(src, select_sql, -1, &sel, NULL);
                if (rc == SQLITE_OK) {
                        sqlite3_bind_int64(sel, 1, from);
                        while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
                                if (++reads > max_reads) {
                                        stats->gave_up = true;
                                        return 0;
                                }
                                if (columns < 0) {
                                        columns = sqlite3_column_count(sel) - 1;
                                        if (columns < 1)
                                                return -EBADMSG;
                                        insert_sql = malloc(strlen(qtable) + 40 + 2 * (size_t) columns);
                                        if (!insert_sql)
                                                return -ENOMEM;
                                        char *p = insert_sql +
                                                  sprintf(insert_sql, "INSERT OR IGNORE INTO %s VALUES (?", qtable);
                                        for (int i = 1; i < columns; i++)
                                                p += sprintf(p, ",?");
                                        strcpy(p, ")");
                                        if (sqlite3_prepare_v2(dst, insert_sql, -1, &ins, NULL) != SQLITE_OK)
                                                return -EIO;
                                }
                                /* A damaged tree may hand rows out of order:
                                 * resume after the highest rowid seen, so that
                                 * every pass moves forward. */
                                if (!any || sqlite3_column_int64(sel, 0) > last)
                                        last = sqlite3_column_int64(sel, 0);
                                any = true;
                                sqlite3_reset(ins);
                                for (int i = 0; i < columns; i++)
                                        sqlite3_bind_value(ins, i + 1, sqlite3_column_value(sel, i + 1));
                                rc = sqlite3_step(ins);
                                if (rc == SQLITE_DONE && sqlite3_changes(dst) == 1)
                                        stats->copied++;
                                else if (rc == SQLITE_DONE || rc == SQLITE_CONSTRAINT || rc == SQLITE_MISMATCH)
                                        stats->rejected++;
                                else
                                        return -EIO; /* the new file: no space, no permission */
                                rc = SQLITE_ROW;
                        }
                }
                if (rc == SQLITE_DONE)
                        return 0;

                /* Damage: remember SQLite's words, step over it. */
                stats->regions++;
                if (!stats->first_error[0])
                        snprintf(stats->first_error, sizeof stats->first_error, "%s", sqlite3_errmsg(src));
                if (stats->regions > DB_RECOVER_MAX_REGIONS) {
                        stats->gave_up = true;
                        return 0;
                }
                /* The rows up to `last` were read; the failure is after it
                 * (or at `from` itself when nothing was read; a table whose
                 * first page is damaged resumes from rowid 1, where SQLite's
                 * rowids start). */
                if (any && last == INT64_MAX)
                        return 0;
                base = any && last > from ? last : from == INT64_MIN ? 0 : from;
                r = find_resume(src, qtable, base, &from);
                if (r < 0)
                        return r;
                if (r == 0)
                        return 0;
        }
}

struct schema_entry {
        char *type, *name, *sql;
};

static void schema_free(struct schema_entry *s, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(s[i].type);
                free(s[i].name);
                free(s[i].sql);
        }
        free(s);
}

/* A schema as read_schema() gives it, freed at the end of its scope. */
struct schema_list {
        struct schema_entry *entries;
        size_t n;
};

static void schema_listp(struct schema_list *l) {
        schema_free(l->entries, l->n);
}

static int read_schema(sqlite3 *src, struct schema_entry **ret, size_t *ret_n) {
        _cleanup_(stmt_finalizep) sqlite3_stmt *st = NULL;
        struct schema_entry *s = NULL;
        size_t n = 0;
        int rc;

        rc = sqlite3_prepare_v2(src,
                                "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                                "AND type IN ('table', 'index') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                                "ORDER BY type = 'index', rowid",
                                -1, &st, NULL);
        while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct schema_entry *t = realloc(s, (n + 1) * sizeof *s);

                if (!t) {
                        schema_free(s, n);
                        return SQLITE_NOMEM;
                }
                s = t;
                s[n].type = strdup((const char *) sqlite3_column_text(st, 0));
                s[n].name = strdup((const char *) sqlite3_column_text(st, 1));
                s[n].sql = strdup((const char *) sqlite3_column_text(st, 2));
                n++;
                if (!s[n - 1].type || !s[n - 1].name || !s[n - 1].sql) {
                        schema_free(s, n);
                        return SQLITE_NOMEM;
                }
                rc = SQLITE_OK;
        }
        if (rc != SQLITE_DONE) {
                schema_free(s, n);
                return rc;
        }
        *ret = s;
        *ret_n = n;
        return SQLITE_OK;
}

static int exec(sqlite3 *db, const char *sql) {
        return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* The failure of a write to the copy. */
static int recover_write_failed(sqlite3 *dst, const char *tmp) {
        return db_fail("cannot write %s: %s", tmp, sqlite3_errmsg(dst));
}

/* Copies what can be read of `src` into the new file `tmp`. */
static int recover_into(sqlite3 *src, const char *path, const char *tmp, json_t *tables_out) {
        _cleanup_(db_closep) sqlite3 *dst = NULL;
        _cleanup_(schema_listp) struct schema_list schema = {};
        int64_t version = 0, max_reads;
        struct stat src_st;
        char pragma[64];
        int rc, r = 0;

        /* A damaged page may make SQLite refuse to load the schema at all
         * (a root page past the end of a truncated file): writable_schema
         * makes it take what sqlite_master says as it is. On a read-only
         * connection nothing can be written with it. */
        (void) exec(src, "PRAGMA writable_schema = ON");
        rc = read_schema(src, &schema.entries, &schema.n);
        if (rc != SQLITE_OK)
                return db_fail("cannot read the schema of %s (%s): nothing can be recovered from it. Move it "
                               "away and start sessiond on an empty database, or restore a backup.",
                               path, sqlite3_errmsg(src));
        if (schema.n == 0)
                return db_fail("%s holds no tables: nothing to recover", path);
        if (query_int(src, "PRAGMA user_version", &version) != SQLITE_OK)
                version = 0;

        /* A row takes at least 4 bytes of a page (its pointer and header). */
        max_reads = stat(path, &src_st) == 0 ? (int64_t) src_st.st_size / 4 + 1000 : INT64_MAX;

        /* tmp is the empty file outfile_begin() made; never a symbolic link. */
        rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL);
        if (rc != SQLITE_OK)
                return db_fail("cannot open %s: %s", tmp, dst ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
        if (exec(dst, "BEGIN") != SQLITE_OK)
                return recover_write_failed(dst, tmp);
        /* Tables, then indexes (the ORDER BY of read_schema): the UNIQUE
         * indexes then refuse duplicates that damage made up. */
        for (size_t i = 0; i < schema.n; i++)
                if (exec(dst, schema.entries[i].sql) != SQLITE_OK)
                        return recover_write_failed(dst, tmp);
        for (size_t i = 0; i < schema.n; i++) {
                struct table_stats stats = {};
                json_t *t;

                if (strcmp(schema.entries[i].type, "table") != 0)
                        continue;
                r = copy_table(src, dst, schema.entries[i].name, max_reads, &stats);
                if (r == -EIO)
                        return recover_write_failed(dst, tmp);
                if (r < 0)
                        return db_fail("cannot copy table %s: %s", schema.entries[i].name, strerror(-r));
                t = json_pack("{s:s, s:I, s:I, s:i, s:b}", "table", schema.entries[i].name, "rows",
                              (json_int_t) stats.copied, "rejected", (json_int_t) stats.rejected, "damaged_regions",
                              (int) stats.regions, "gave_up", stats.gave_up);
                if (t && stats.first_error[0])
                        json_object_set_new(t, "error", json_string(stats.first_error));
                json_array_append_new(tables_out, t);
        }
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %" PRId64, version);
        if (exec(dst, pragma) != SQLITE_OK || exec(dst, "COMMIT") != SQLITE_OK)
                return recover_write_failed(dst, tmp);
        /* The copy must be sound, or it is no way out. */
        {
                _cleanup_(stmt_finalizep) sqlite3_stmt *st = NULL;

                if (sqlite3_prepare_v2(dst, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK ||
                    sqlite3_step(st) != SQLITE_ROW || strcmp((const char *) sqlite3_column_text(st, 0), "ok") != 0)
                        return db_fail("the copy %s fails its integrity check", tmp);
        }
        return 0; /* outfile_commit() syncs it */
}

static int db_recover(const struct sessionctl_globals *g, const char *path, const struct db_options *o) {
        _cleanup_(json_decrefp) json_t *tables = json_array();
        struct outfile out;
        struct side_files side;
        struct stat src_st, out_st;
        sqlite3 *src = NULL;
        mode_t old_umask;
        int r;

        if (!tables)
                return db_fail("out of memory");
        if (!o->output[0])
                return db_fail("recover: empty file name");
        if (stat(path, &src_st) < 0)
                return db_fail("cannot open database %s: %s", path, strerror(errno));
        if (stat(o->output, &out_st) == 0) {
                if (out_st.st_dev == src_st.st_dev && out_st.st_ino == src_st.st_ino)
                        return db_fail("%s is the database itself: recover into a new file", o->output);
                if (!o->force)
                        return db_fail("%s exists; use --force to overwrite it", o->output);
        }
        /* A fresh temporary file nobody else can swap (outfile.c). */
        if (outfile_begin(&out, "sessionctl db", o->output) < 0)
                return SESSIONCTL_EXIT_FAILURE;
        side_files_note(&side, path);
        r = db_open_readonly(path, &src);
        if (r == 0) {
                old_umask = umask(0077); /* SQLite's journal of the copy */
                r = recover_into(src, path, out.tmp, tables);
                umask(old_umask);
        }
        sqlite3_close_v2(src);
        side_files_restore(&side);
        if (r != 0) {
                outfile_abort(&out);
                return r;
        }
        if (outfile_commit(&out, "sessionctl db", o->force) < 0)
                return SESSIONCTL_EXIT_FAILURE;

        if (g->json) {
                _cleanup_(json_decrefp) json_t *j =
                        json_pack("{s:s, s:s, s:O}", "database", path, "output", o->output, "tables", tables);
                char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

                if (!s)
                        return db_fail("out of memory");
                puts(s);
                free(s);
        } else {
                size_t i;
                json_t *t;

                printf("Recovered %s into %s:\n", path, o->output);
                json_array_foreach(tables, i, t) {
                        json_int_t regions = json_integer_value(json_object_get(t, "damaged_regions"));

                        printf("  %s: %" JSON_INTEGER_FORMAT " rows", json_string_value(json_object_get(t, "table")),
                               json_integer_value(json_object_get(t, "rows")));
                        if (json_integer_value(json_object_get(t, "rejected")))
                                printf(", %" JSON_INTEGER_FORMAT " rejected",
                                       json_integer_value(json_object_get(t, "rejected")));
                        if (regions)
                                printf(", %" JSON_INTEGER_FORMAT " unreadable region%s skipped (%s)%s", regions,
                                       regions == 1 ? "" : "s", json_string_value(json_object_get(t, "error")),
                                       json_is_true(json_object_get(t, "gave_up")) ? ", rest unreachable" : "");
                        putchar('\n');
                }
                printf("To use it: stop sessiond, move %s (and any -wal, -shm next to it) away, move %s to %s "
                       "(its folder holds the key file the tokens need), start sessiond.\n",
                       path, o->output, path);
        }
        return SESSIONCTL_EXIT_OK;
}

/* ---- entry ---------------------------------------------------------------------- */

int sessionctl_db(int argc, char **argv, const struct sessionctl_globals *g) {
        static const struct option options[] = {{"database", required_argument, NULL, 'd'},
                                                {"force", no_argument, NULL, 'f'},
                                                {"help", no_argument, NULL, 'h'},
                                                {}};
        _cleanup_(freep) char *path = NULL;
        struct db_options o = {};
        const char *action;
        int c, r;

        if (argc < 2) {
                db_usage(stderr);
                return SESSIONCTL_EXIT_USAGE;
        }
        action = argv[1];
        if (strcmp(action, "-h") == 0 || strcmp(action, "--help") == 0) {
                db_usage(stdout);
                return SESSIONCTL_EXIT_OK;
        }
        if (strcmp(action, "check") != 0 && strcmp(action, "recover") != 0) {
                fprintf(stderr, "sessionctl db: unknown action '%s'\n", action);
                db_usage(stderr);
                return SESSIONCTL_EXIT_USAGE;
        }
        optind = 0; /* argv[1] is the action; start afresh after it */
        argc--;
        argv++;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'd':
                        o.database = optarg;
                        break;
                case 'f':
                        o.force = true;
                        break;
                case 'h':
                        db_usage(stdout);
                        return SESSIONCTL_EXIT_OK;
                default:
                        db_usage(stderr);
                        return SESSIONCTL_EXIT_USAGE;
                }
        }
        if (o.force && strcmp(action, "recover") != 0) {
                fprintf(stderr, "sessionctl db: --force is for recover\n");
                return SESSIONCTL_EXIT_USAGE;
        }
        if (strcmp(action, "recover") == 0) {
                if (argc - optind != 1) {
                        fprintf(stderr, "sessionctl db recover: expected one OUTPUT file\n");
                        return SESSIONCTL_EXIT_USAGE;
                }
                o.output = argv[optind];
        } else if (optind < argc) {
                fprintf(stderr, "sessionctl db check: unexpected argument '%s'\n", argv[optind]);
                return SESSIONCTL_EXIT_USAGE;
        }
        if (o.database && !o.database[0]) {
                fprintf(stderr, "sessionctl db: --database: empty file name\n");
                return SESSIONCTL_EXIT_USAGE;
        }

        r = db_resolve_path(g, &o, &path);
        if (r != 0)
                return r;
        if (strcmp(action, "check") == 0)
                return db_check(g, path);
        return db_recover(g, path, &o);
}
