/* The SQLite backend of the store: see store.h for the interface.
 *
 * Opening is the delicate part. A database that exists is first opened
 * read-only (a `file:...?mode=ro` URI with SQLITE_OPEN_READONLY): its header
 * is read, its schema version compared with ours, and PRAGMA quick_check run.
 * Only a database that passes is opened read-write, because switching to WAL
 * and migrating write the file, and a corrupt or foreign file must be left
 * exactly as it was for the operator to inspect or restore. With a million
 * sessions the check and the loading of the live sessions take about a
 * second each, and both only read: so the check runs on a read-only
 * connection in a thread while the caller's loader is fed from another
 * read-only connection, and start-up takes the longer of the two. A missing file
 * is created by us with O_EXCL and mode 0600 first (SQLite would use 0644),
 * in a folder created 0700 if needed; SQLite gives the -wal and -shm files
 * the same mode.
 *
 * The schema has a version in PRAGMA user_version and is reached by forward
 * migration steps, each applied in its own transaction together with the new
 * version number. A database newer than this binary is refused: running old
 * code on a new schema could lose data silently.
 *
 * Every statement is prepared once (SQLITE_PREPARE_PERSISTENT) and reused;
 * sqlite_stmt() hands it out reset with its bindings cleared. The connection
 * is used by the loop (reads) and by the writer thread (units of work), one
 * at a time under s->lock (SQLITE_OPEN_NOMUTEX: the lock is ours).
 *
 * Sessions keep their rows after they end (ended_at, end_reason) until the
 * retention purge, which walks the partial index on ended rows. That index
 * changes only when a session ends, never on the per-request path; touches
 * update last_activity, which is in no index at all.
 *
 * Indexes and Create. Every index an insert touches at a random place costs
 * a page written to the WAL per create (and later to the database), which
 * is what bounds Create: a group commit of 50 creates with a random
 * token-hash index and a random user index wrote about 100 pages. So an
 * insert touches only the ends of B-trees: rows and audit rows are numbered
 * in time order, and ids start with their creation time. The token hash and
 * the user have partial indexes over ended rows only: live sessions are all
 * in the engine's memory (found there by token hash and by user), so the
 * store is asked for a token or a user's sessions only about ended ones
 * (Expired with its reason, listings with ended sessions). Those two index
 * entries are written when a session ends, where the end-time index is
 * written anyway. The token hash is not declared UNIQUE: 256 random bits
 * do not collide, and the engine's memory index is the authority on live
 * tokens.
 *
 * This file opens, checks, migrates and loads, closes, and fills the
 * backend table; the other files of the backend: see sqlite-internal.h.
 */
#include "sqlite-internal.h"

static struct sqlite_store *store_alloc(void);
static void sqlite_close(struct store *b);

static void sqlite_store_closep(struct sqlite_store **s) {
        if (*s)
                sqlite_close(&(*s)->base);
}

/* Forward migrations: step i brings the schema from version i to i + 1.
 *
 * Indexes cost a random page write per insert each, and Create is the
 * write on the hot path (see the top of this file): an insert touches only
 * the ends of the row, id and audit B-trees; token hash, user and end time
 * are indexed for ended rows only. */
static const char *const migrations[STORE_SCHEMA_VERSION] = {
        /* 0 -> 1: the first schema. */
        "CREATE TABLE sessions ("
        "  row INTEGER PRIMARY KEY,"  /* an alias of the rowid: stable (VACUUM keeps it) */
        "  id TEXT NOT NULL UNIQUE,"  /* public id */
        "  token_hash BLOB NOT NULL," /* keyed BLAKE2b of the token */
        "  user_id TEXT NOT NULL,"
        "  platform_id TEXT,"
        "  created_at INTEGER NOT NULL,"
        "  last_activity INTEGER NOT NULL,"
        "  renewed_at INTEGER NOT NULL,"
        "  ended_at INTEGER,"
        "  end_reason TEXT,"
        "  fp_user_agent INTEGER,"
        "  fp_ip INTEGER,"
        "  fp_accept_language INTEGER,"
        "  fp_accept_encoding INTEGER,"
        "  ip TEXT,"
        "  user_agent TEXT,"
        "  sync_data BLOB,"
        "  sync_version INTEGER NOT NULL DEFAULT 0,"
        "  platform_switches TEXT" /* JSON array of recent switch times */
        ");"
        "CREATE INDEX sessions_ended ON sessions (ended_at) WHERE ended_at IS NOT NULL;"
        "CREATE INDEX sessions_ended_token ON sessions (token_hash) WHERE ended_at IS NOT NULL;"
        "CREATE INDEX sessions_ended_user ON sessions (user_id) WHERE ended_at IS NOT NULL;"
        "CREATE TABLE audit ("
        "  id INTEGER PRIMARY KEY,"
        "  time INTEGER NOT NULL,"
        "  kind TEXT NOT NULL,"
        "  user_id TEXT,"
        "  session_id TEXT,"
        "  detail TEXT NOT NULL DEFAULT '{}'"
        ");"
        "CREATE INDEX audit_time ON audit (time);",
        /* 1 -> 2: session times to the millisecond. Each time keeps its
         * Unix second in its column, and the millisecond within that
         * second (0-999) goes in a column of its own, so that readers of
         * the seconds (analytics, indexes, an operator's SQL) are
         * unchanged, and the migration rewrites no row: a column added
         * with a constant default is only a change of the schema, and the
         * rows written before it read as second.000. */
        "ALTER TABLE sessions ADD COLUMN created_at_ms INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE sessions ADD COLUMN last_activity_ms INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE sessions ADD COLUMN renewed_at_ms INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE sessions ADD COLUMN ended_at_ms INTEGER NOT NULL DEFAULT 0;",
};
/* ---- opening -------------------------------------------------------------- */

/* "file:" URI of a path, with the characters URIs give a meaning escaped. */
static char *path_to_uri(const char *path, const char *query) {
        size_t n = strlen(path);
        char *uri = malloc(5 + 3 * n + strlen(query) + 2), *p;

        if (!uri)
                return NULL;
        p = stpcpy(uri, "file:");
        for (const char *c = path; *c; c++) {
                if (*c == '?' || *c == '#' || *c == '%') {
                        sprintf(p, "%%%02X", (unsigned char) *c);
                        p += 3;
                } else
                        *p++ = *c;
        }
        *p++ = '?';
        strcpy(p, query);
        return uri;
}

static int64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int open_readonly(const char *path, sqlite3 **ret) {
        char *uri = path_to_uri(path, "mode=ro");
        int rc;

        if (!uri)
                return -ENOMEM;
        rc = sqlite3_open_v2(uri, ret, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL);
        free(uri);
        if (rc != SQLITE_OK) {
                log_error("Cannot open database %s: %s", path, *ret ? sqlite3_errmsg(*ret) : sqlite3_errstr(rc));
                return sqlite_errno(rc);
        }
        sqlite3_busy_timeout(*ret, STORE_BUSY_TIMEOUT_MS);
        return 0;
}

/* PRAGMA quick_check reads every page of the file, which with a million
 * sessions takes about as long as loading them: it runs on a connection of
 * its own in a thread of its own while the loop thread loads. */
struct quick_check {
        sqlite3 *db;
        pthread_t thread;
        bool threaded;
        int rc;       /* of the step: SQLITE_ROW when it answered */
        char *answer; /* its first line ("ok" when sound), or the error */
        int64_t ms;
};

static void *quick_check_main(void *userdata) {
        struct quick_check *q = userdata;
        int64_t started = now_ms();
        sqlite3_stmt *st = NULL;
        const char *text;

        q->rc = sqlite3_prepare_v2(q->db, "PRAGMA quick_check", -1, &st, NULL);
        if (q->rc == SQLITE_OK)
                q->rc = sqlite3_step(st);
        text = q->rc == SQLITE_ROW ? (const char *) sqlite3_column_text(st, 0) : sqlite3_errmsg(q->db);
        q->answer = strdup(text ? text : "");
        sqlite3_finalize(st);
        q->ms = now_ms() - started;
        return NULL;
}

static int quick_check_start(struct quick_check *q, const char *path) {
        int r = open_readonly(path, &q->db);

        if (r < 0)
                return r;
        q->threaded = pthread_create(&q->thread, NULL, quick_check_main, q) == 0;
        return 0;
}

/* Waits for the check (runs it here if no thread could be made); logs a
 * refusal. `cancel`: the caller gives up anyway, the verdict is not needed. */
static int quick_check_finish(struct quick_check *q, const char *path, bool cancel) {
        int r = 0;

        if (cancel)
                sqlite3_interrupt(q->db);
        if (q->threaded)
                pthread_join(q->thread, NULL);
        else if (!cancel)
                quick_check_main(q);
        if (!cancel) {
                if (!q->answer)
                        r = -ENOMEM;
                else if (q->rc != SQLITE_ROW) {
                        log_error("Database %s failed its integrity check (%s); refusing to start and "
                                  "leaving the file untouched.",
                                  path, q->answer);
                        r = -EBADMSG;
                } else if (strcmp(q->answer, "ok") != 0) {
                        log_error("Database %s is corrupt (quick_check: %s); refusing to start and leaving "
                                  "the file untouched.",
                                  path, q->answer);
                        r = -EBADMSG;
                }
        }
        free(q->answer);
        sqlite3_close(q->db);
        return r;
}

static int load_failed(sqlite3 *db, const char *path, int rc) {
        log_error("Database %s: loading the sessions failed: %s", path, sqlite3_errmsg(db));
        return sqlite_errno(rc) == -EIO ? -EBADMSG : sqlite_errno(rc);
}

/* Hands the live sessions to the loader of o, in row_key order. */
static int load_live(sqlite3 *db, const char *path, const struct store_options *o, uint64_t *loaded) {
        _cleanup_(sqlite_finalizep) sqlite3_stmt *st = NULL;
        struct store_session row;
        int64_t live = 0;
        int rc, r = 0;

        *loaded = 0;
        if (o->reserve) {
                rc = sqlite_query_int(db,
                                      "SELECT (SELECT count(*) FROM sessions) - "
                                      "(SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL)",
                                      &live);
                if (rc != SQLITE_OK)
                        return load_failed(db, path, rc);
                r = o->reserve(live > 0 ? (uint64_t) live : 0, o->load_userdata);
                if (r < 0)
                        return log_error_errno(r, "Database %s: no room for %lld sessions: %m", path, (long long) live);
        }
        rc = sqlite3_prepare_v2(db, "SELECT " SESSION_COLUMNS " FROM sessions WHERE ended_at IS NULL ORDER BY row", -1,
                                &st, NULL);
        if (rc != SQLITE_OK)
                return load_failed(db, path, rc);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                sqlite_row_from_stmt(st, &row, true);
                r = o->load(&row, o->load_userdata);
                if (r < 0)
                        return log_error_errno(r, "Database %s: loading the sessions failed: %m", path);
                (*loaded)++;
        }
        return rc == SQLITE_DONE ? 0 : load_failed(db, path, rc);
}

/* store_check_readonly() but for putting the side files back. */
static int check_readonly(const struct store_options *o, bool *loaded) {
        _cleanup_(sqlite_closep) sqlite3 *db = NULL;
        const char *path = o->path;
        struct quick_check q = {0};
        int64_t version = 0, tables = 0, started;
        uint64_t n = 0;
        int rc, r;

        r = open_readonly(path, &db);
        if (r < 0)
                return r;

        rc = sqlite_query_int(db, "PRAGMA user_version", &version);
        if (rc == SQLITE_OK)
                rc = sqlite_query_int(db, "SELECT count(*) FROM sqlite_master", &tables);
        if (rc != SQLITE_OK) {
                log_error("Database %s is not a readable SQLite database (%s); refusing to start "
                          "and leaving the file untouched.",
                          path, sqlite3_errmsg(db));
                return rc == SQLITE_BUSY ? -EBUSY : rc == SQLITE_CANTOPEN || rc == SQLITE_PERM ? -EACCES : -EBADMSG;
        }
        if (version > STORE_SCHEMA_VERSION) {
                log_error("Database %s has schema version %lld, newer than this sessiond supports (%d); "
                          "refusing to start. Run the newer sessiond or restore a backup.",
                          path, (long long) version, STORE_SCHEMA_VERSION);
                return -EPROTO;
        }
        if (version == 0 && tables > 0) {
                log_error("Database %s holds tables but no sessiond schema version; it is not a "
                          "sessiond database. Refusing to start.",
                          path);
                return -EBADMSG;
        }

        r = quick_check_start(&q, path);
        if (r < 0)
                return r;
        started = now_ms();
        if (o->load && version == STORE_SCHEMA_VERSION) {
                r = load_live(db, path, o, &n);
                *loaded = r >= 0;
        }
        started = now_ms() - started;
        /* A damaged file may fail the loading first: the check then says
         * what is wrong. Any other failure of the loader needs no verdict. */
        rc = quick_check_finish(&q, path, r < 0 && r != -EBADMSG);
        if (r >= 0 || r == -EBADMSG)
                r = rc < 0 ? rc : r;
        if (r >= 0 && *loaded)
                log_info("Database %s: %llu live sessions loaded in %lld ms, quick_check in %lld ms "
                         "(at the same time).",
                         path, (unsigned long long) n, (long long) started, (long long) q.ms);
        return r;
}

/* The read-only inspection of an existing database, and its loading when
 * its schema is ours (an older one is loaded after migrating). Logs every
 * refusal. *loaded tells whether the sessions were handed to the loader.
 * On a refusal the side files (-wal, -shm) are as they were. */
static int store_check_readonly(const struct store_options *o, bool *loaded) {
        struct side_files side;
        int r;

        *loaded = false;
        side_files_note(&side, o->path);
        r = check_readonly(o, loaded); /* its connection is closed when it returns */
        if (r < 0)
                side_files_restore(&side);
        return r;
}

static int mkdir_parents(const char *dir, mode_t mode) {
        char buf[PATH_MAX];
        size_t n = strlen(dir);

        if (n == 0 || n >= sizeof buf)
                return n ? -ENAMETOOLONG : 0;
        memcpy(buf, dir, n + 1);
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static const char *synchronous_value(const char *s) {
        static const char *const ok[] = {"off", "normal", "full", "extra"};

        for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
                if (s && strcasecmp(s, ok[i]) == 0)
                        return ok[i];
        return NULL;
}

static int set_synchronous_locked(struct sqlite_store *s, const char *synchronous) {
        const char *v = synchronous_value(synchronous);
        char sql[64];
        int rc;

        if (!v)
                return -EINVAL;
        if (s->memory)
                return 0;
        snprintf(sql, sizeof sql, "PRAGMA synchronous = %s", v);
        rc = sqlite_exec_simple(s->db, sql);
        return rc == SQLITE_OK ? 0 : sqlite_fail(s, rc, "PRAGMA synchronous");
}

static int store_migrate(struct sqlite_store *s) {
        int64_t version = 0;
        char sql[64];
        int rc;

        rc = sqlite_query_int(s->db, "PRAGMA user_version", &version);
        if (rc != SQLITE_OK)
                return sqlite_fail(s, rc, "reading the schema version");
        if (version > STORE_SCHEMA_VERSION) { /* raced with a newer binary */
                log_error("Database %s has schema version %lld, newer than this sessiond supports (%d).", s->path,
                          (long long) version, STORE_SCHEMA_VERSION);
                return -EPROTO;
        }
        for (int64_t v = version; v < STORE_SCHEMA_VERSION; v++) {
                rc = sqlite_exec_simple(s->db, "BEGIN IMMEDIATE");
                if (rc == SQLITE_OK)
                        rc = sqlite_exec_simple(s->db, migrations[v]);
                if (rc == SQLITE_OK) {
                        snprintf(sql, sizeof sql, "PRAGMA user_version = %lld", (long long) v + 1);
                        rc = sqlite_exec_simple(s->db, sql);
                }
                if (rc == SQLITE_OK)
                        rc = sqlite_exec_simple(s->db, "COMMIT");
                if (rc != SQLITE_OK) {
                        int r = sqlite_fail(s, rc, "schema migration");
                        sqlite_exec_simple(s->db, "ROLLBACK");
                        return r;
                }
                if (!s->memory)
                        log_info("Database %s: schema migrated to version %lld.", s->path, (long long) v + 1);
        }
        return 0;
}

/* Creates a new, empty database file with mode 0600 (and its folder 0700). */
static int store_create_file(const char *path) {
        char dir[PATH_MAX];
        const char *slash = strrchr(path, '/');
        int fd, r;

        if (slash && slash != path) {
                if ((size_t) (slash - path) >= sizeof dir)
                        return -ENAMETOOLONG;
                memcpy(dir, path, slash - path);
                dir[slash - path] = '\0';
                r = mkdir_parents(dir, 0700);
                if (r < 0)
                        return log_error_errno(r, "Failed to create the database folder %s: %m", dir);
        }
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return log_error_errno(-errno, "Failed to create database %s: %m", path);
        close(fd);
        return 0;
}

static int sqlite_open(const struct store_options *o, struct store **ret) {
        _cleanup_(sqlite_store_closep) struct sqlite_store *s = NULL;
        _cleanup_free_ char *journal = NULL;
        struct stat st;
        const char *sync_mode;
        bool memory = !o->path || strcmp(o->path, ":memory:") == 0;
        int rc, r, flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
        bool created = false, loaded = false;

        assert(ret);
        sync_mode = synchronous_value(o->synchronous ? o->synchronous : "normal");
        if (!sync_mode) {
                log_error("Invalid daemon.synchronous value '%s'.", o->synchronous);
                return -EINVAL;
        }

        if (!memory) {
                if (stat(o->path, &st) == 0) {
                        if (!S_ISREG(st.st_mode)) {
                                log_error("Database %s is not a regular file; refusing to start.", o->path);
                                return -EBADMSG;
                        }
                        if (st.st_size > 0) {
                                r = store_check_readonly(o, &loaded);
                                if (r < 0)
                                        return r;
                        }
                } else if (errno == ENOENT) {
                        r = store_create_file(o->path);
                        if (r < 0)
                                return r;
                        created = true;
                } else
                        return log_error_errno(-errno, "Cannot access database %s: %m", o->path);
        } else
                flags |= SQLITE_OPEN_CREATE | SQLITE_OPEN_MEMORY;

        s = store_alloc();
        if (!s)
                return -ENOMEM;
        s->memory = memory;
        s->path = strdup(memory ? ":memory:" : o->path);
        if (!s->path || asprintf(&s->locator, "sqlite:%s", s->path) < 0) {
                s->locator = NULL;
                return -ENOMEM;
        }

        rc = sqlite3_open_v2(s->path, &s->db, flags, o->vfs);
        if (rc != SQLITE_OK) {
                log_error("Cannot open database %s read-write: %s", s->path,
                          s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
                return sqlite_errno(rc);
        }
        sqlite3_extended_result_codes(s->db, 0);
        sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);

        if (!memory) {
                sqlite3_stmt *jm = NULL;

                rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &jm, NULL);
                if (rc == SQLITE_OK && sqlite3_step(jm) == SQLITE_ROW)
                        journal = strdup((const char *) sqlite3_column_text(jm, 0));
                else
                        rc = sqlite3_errcode(s->db);
                sqlite3_finalize(jm);
                if (rc != SQLITE_OK || !journal || strcmp(journal, "wal") != 0) {
                        log_error("Database %s: cannot switch to WAL mode (%s).", s->path,
                                  journal ? journal : sqlite3_errmsg(s->db));
                        return -EIO;
                }
                r = set_synchronous_locked(s, sync_mode);
                if (r < 0)
                        return r;
        }
        rc = sqlite_exec_simple(s->db, "PRAGMA temp_store = MEMORY; PRAGMA foreign_keys = OFF;"
                                       "PRAGMA cache_size = -" STRINGIFY(STORE_CACHE_KIB));
        if (rc != SQLITE_OK) {
                return sqlite_fail(s, rc, "setting pragmas");
        }

        r = store_migrate(s);
        if (r < 0)
                return r;
        r = sqlite_prepare_all(s);
        if (r < 0)
                return r;
        r = sqlite_max_row_key_locked(s, &s->next_key);
        if (r < 0)
                return r;
        s->next_key++;
        if (o->load && !loaded) { /* new, empty or just migrated */
                uint64_t n;
                r = load_live(s->db, s->path, o, &n);
                if (r < 0)
                        return r;
        }
        {
                int64_t ps = 0;

                if (sqlite_query_int(s->db, "PRAGMA page_size", &ps) == SQLITE_OK)
                        s->page_size = (int) ps;
                sqlite_space_update(s);
        }
        if (!memory) {
                r = sqlite_checkpointer_start(s);
                if (r < 0)
                        return r;
        }
        if (created)
                log_info("Created database %s.", s->path);
        *ret = &s->base;
        s = NULL;
        return 0;
}

/* A zeroed store, its shared half set up. */
static struct sqlite_store *store_alloc(void) {
        struct sqlite_store *s = calloc(1, sizeof *s);

        if (s)
                store_core_init(&s->base, &store_backend_sqlite);
        return s;
}

static void sqlite_close(struct store *b) {
        struct sqlite_store *s = container_of(b, struct sqlite_store, base);

        sqlite_maintain_wait(s);
        if (s->ckpt.started && !sqlite_in_transaction(s))
                /* A clean stop leaves no WAL behind: everything in place. */
                (void) sqlite_checkpoint_locked(s);
        sqlite_checkpointer_stop(s);
        for (int i = 0; i < _STMT_MAX; i++)
                sqlite3_finalize(s->stmt[i]);
        if (s->db && !sqlite3_get_autocommit(s->db))
                sqlite_exec_simple(s->db, "ROLLBACK");
        if (sqlite3_close(s->db) != SQLITE_OK)
                log_error("Store %s: closing failed: %s", s->path, sqlite3_errmsg(s->db));
        free(s->path);
        free(s->locator);
        store_core_destroy(&s->base);
        free(s);
}
/* ---- queries for operators ------------------------------------------------- */

static int sqlite_reader_open(const char *path, struct store **ret) {
        struct sqlite_store *s;
        char *uri;
        int rc, r;

        assert(path && ret);
        s = store_alloc();
        if (!s)
                return -ENOMEM;
        s->path = strdup(path);
        uri = path_to_uri(path, "mode=ro");
        if (!s->path || !uri || asprintf(&s->locator, "sqlite:%s", path) < 0) {
                s->locator = NULL;
                free(uri);
                sqlite_close(&s->base);
                return -ENOMEM;
        }
        rc = sqlite3_open_v2(uri, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL);
        free(uri);
        if (rc != SQLITE_OK) {
                r = sqlite_fail(s, rc, "opening a reader");
                sqlite_close(&s->base);
                return r;
        }
        sqlite3_extended_result_codes(s->db, 0);
        sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
        *ret = &s->base;
        return 0;
}

/* ---- the table ------------------------------------------------------------------ */

static struct sqlite_store *sq(struct store *b) {
        assert(b->backend == &store_backend_sqlite);
        return container_of(b, struct sqlite_store, base);
}

static const struct sqlite_store *sq_const(const struct store *b) {
        assert(b->backend == &store_backend_sqlite);
        return container_of(b, const struct sqlite_store, base);
}

static const char *sqlite_name(const struct store *b) {
        return sq_const(b)->path;
}
static const char *sqlite_locator(const struct store *b) {
        return sq_const(b)->locator;
}
static bool sqlite_is_memory(const struct store *b) {
        return sq_const(b)->memory;
}

static int sqlite_set_synchronous(struct store *b, const char *synchronous) {
        const char *mode = synchronous_value(synchronous);

        return mode ? set_synchronous_locked(sq(b), mode) : -EINVAL;
}

static int sqlite_uow_apply(struct store *b, struct store_uow *u) {
        return sqlite_unit_apply(sq(b), u);
}
static int sqlite_uow_commit(struct store *b, struct store_uow *u) {
        return sqlite_unit_commit(sq(b), u);
}
static void sqlite_rollback(struct store *b) {
        sqlite_rollback_locked(sq(b));
}

static int sqlite_allocate_key(struct store *b, int64_t *ret) {
        struct sqlite_store *s = sq(b);

        assert(s->next_key > 0);
        *ret = s->next_key++;
        return 0;
}

static int sqlite_session_get_switches(struct store *b, int64_t row_key, char **ret) {
        return sqlite_session_get_switches_locked(sq(b), row_key, ret);
}

static int sqlite_session_read_sync(struct store *b, struct store_sync_read *out) {
        return sqlite_session_read_sync_locked(sq(b), out);
}

static int sqlite_session_by_row_key(struct store *b, int64_t row_key, store_session_fn cb, void *userdata) {
        return sqlite_session_by_row_key_locked(sq(b), row_key, cb, userdata);
}

static int sqlite_session_by_hash(struct store *b, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb,
                                  void *userdata) {
        return sqlite_session_by_hash_locked(sq(b), hash, cb, userdata);
}

static int sqlite_session_by_id(struct store *b, const char *id, store_session_fn cb, void *userdata) {
        return sqlite_session_by_id_locked(sq(b), id, cb, userdata);
}

static int sqlite_sessions_each(struct store *b, const struct store_filter *f, store_session_fn cb, void *userdata) {
        return sqlite_sessions_each_locked(sq(b), f, cb, userdata);
}

static int sqlite_sessions_ended_of_user_after(struct store *b, const char *user_id, int64_t after_row_key,
                                               store_session_fn cb, void *userdata) {
        return sqlite_sessions_ended_of_user_locked(sq(b), user_id, after_row_key, cb, userdata);
}

static int sqlite_purge_sessions(struct store *b, int64_t before, int limit) {
        return sqlite_purge_sessions_locked(sq(b), before, limit);
}

static int sqlite_purge_audit(struct store *b, int64_t before, int limit) {
        return sqlite_purge_audit_locked(sq(b), before, limit);
}

static int sqlite_maintain(struct store *b, struct store_maintenance *ret) {
        return sqlite_maintain_locked(sq(b), ret);
}
static int sqlite_maintain_step(struct store *b, bool first) {
        return sqlite_maintain_step_locked(sq(b), first);
}
static int sqlite_maintain_start(struct store *b, bool first, store_maintain_fn done, void *userdata) {
        return sqlite_maintain_start_locked(sq(b), first, done, userdata);
}
static int sqlite_pace(struct store *b) {
        return sqlite_pace_locked(sq(b));
}
static unsigned long long sqlite_checkpoint_runs(struct store *b) {
        return sqlite_checkpoint_count(sq(b));
}
static int64_t sqlite_size(struct store *b) {
        return sqlite_size_of(sq(b));
}

static int sqlite_count_sessions(struct store *b, bool ended, int64_t *ret) {
        return sqlite_count_sessions_locked(sq(b), ended, ret);
}

static int sqlite_audit_each(struct store *b, const struct store_audit_filter *f, store_audit_fn cb, void *userdata) {
        return sqlite_audit_each_locked(sq(b), f, cb, userdata);
}

static int sqlite_check_integrity(struct store *b, struct store_maintenance *ret) {
        return sqlite_quick_check_locked(sq(b), ret);
}

static int sqlite_probe(struct store *b) {
        return sqlite_probe_locked(sq(b));
}

static int sqlite_count_created(struct store *b, int64_t since, int64_t bucket, uint64_t *counts, size_t n) {
        return sqlite_count_created_locked(sq(b), since, bucket, counts, n);
}

static int sqlite_ended_durations(struct store *b, store_value_fn cb, void *userdata) {
        return sqlite_ended_durations_locked(sq(b), cb, userdata);
}

static int sqlite_end_reasons(struct store *b, store_group_fn cb, void *userdata) {
        return sqlite_end_reasons_locked(sq(b), cb, userdata);
}

const struct store_backend store_backend_sqlite = {
        .name = "sqlite",
        .open = sqlite_open,
        .close = sqlite_close,
        .reader_open = sqlite_reader_open,
        .name_of = sqlite_name,
        .locator = sqlite_locator,
        .is_memory = sqlite_is_memory,
        .set_synchronous = sqlite_set_synchronous,
        .uow_apply = sqlite_uow_apply,
        .uow_commit = sqlite_uow_commit,
        .rollback = sqlite_rollback,
        .allocate_key = sqlite_allocate_key,
        .allocate_key_unlocked = true,
        .session_get_switches = sqlite_session_get_switches,
        .session_read_sync = sqlite_session_read_sync,
        .session_by_row_key = sqlite_session_by_row_key,
        .session_by_hash = sqlite_session_by_hash,
        .session_by_id = sqlite_session_by_id,
        .sessions_each = sqlite_sessions_each,
        .sessions_ended_of_user_after = sqlite_sessions_ended_of_user_after,
        .purge_sessions = sqlite_purge_sessions,
        .purge_audit = sqlite_purge_audit,
        .maintain = sqlite_maintain,
        .maintain_step = sqlite_maintain_step,
        .maintain_start = sqlite_maintain_start,
        .pace = sqlite_pace,
        .checkpoint_runs = sqlite_checkpoint_runs,
        .size = sqlite_size,
        .count_sessions = sqlite_count_sessions,
        .audit_each = sqlite_audit_each,
        .check_integrity = sqlite_check_integrity,
        .probe = sqlite_probe,
        .count_created = sqlite_count_created,
        .ended_durations = sqlite_ended_durations,
        .end_reasons = sqlite_end_reasons,
};
