/* The SQLite backend's upkeep: room on disk, WAL checkpoints, pacing of
 * bulk writers, retention purges and maintenance (see sqlite.c for the
 * backend).
 *
 * Checkpoints. With synchronous=normal a commit writes the WAL and does not
 * sync; the checkpoint copies the WAL into the database and syncs both. On
 * the loop it would stall every request behind it for tens of milliseconds,
 * so SQLite's automatic checkpoint is off and a thread with its own
 * connection runs PASSIVE checkpoints whenever a commit leaves more than
 * STORE_CHECKPOINT_PAGES pages in the WAL (a WAL hook tells it). A passive
 * checkpoint never blocks the writer, but under a steady load the writer
 * has always committed a little more by the time it ends, and SQLite starts
 * the WAL over only when a checkpoint has copied all of it. So once the
 * thread has copied the bulk and gone idle, the committer (the writer
 * thread, whose WAL hook runs right after its commit, when nothing else can
 * write) copies the short tail itself with a PASSIVE checkpoint on the
 * store's connection: the next transaction then starts the WAL from its
 * beginning, and the WAL stays at most STORE_CHECKPOINT_TAIL_PAGES pages
 * long, give or take. (Before the writer thread this was the loop's stall;
 * now it delays only the next unit's commit.) Each start-over costs three
 * fdatasyncs (the WAL and the database in the tail's checkpoint, the new
 * WAL header at the next commit), which take a fraction of a millisecond
 * on a quiet disk and tens of milliseconds on one busy with the thread's
 * writes: so the WAL starts over only every STORE_CHECKPOINT_TAIL_PAGES
 * pages (64 MiB), and the tail copied there is short
 * (STORE_CHECKPOINT_TAIL_MAX pages); when it is longer the thread goes
 * again, and as it copies faster than the loop writes each pass leaves a
 * shorter tail. A bulk writer (the cleanup) paces itself with
 * store_pace(): it waits while the thread is behind, and when the WAL
 * is due to start over it waits for the thread to be done and copies the
 * tail then, so that the start-over costs one short stall rather than a
 * race between its writes and the thread. If the thread cannot keep up at
 * all, the committer checkpoints everything itself at
 * STORE_CHECKPOINT_HARD_PAGES, a stall that keeps the WAL bounded.
 */
#include "sqlite-internal.h"

/* ---- room on disk ------------------------------------------------------------- */

void sqlite_space_update(struct sqlite_store *s) {
        struct statvfs v;
        int64_t free_pages, tail;

        s->commits_since_space = 0;
        s->ckpt_pages = STORE_CHECKPOINT_PAGES;
        s->tail_pages = STORE_CHECKPOINT_TAIL_PAGES;
        s->hard_pages = STORE_CHECKPOINT_HARD_PAGES;
        if (s->memory || s->page_size <= 0 || statvfs(s->path, &v) < 0)
                return;
        free_pages = (int64_t) v.f_bavail * (int64_t) v.f_frsize / s->page_size + s->wal_pages;
        tail = free_pages / 4;
        if (tail >= STORE_CHECKPOINT_TAIL_PAGES)
                return;
        if (tail < STORE_SPACE_MIN_TAIL)
                tail = STORE_SPACE_MIN_TAIL;
        s->tail_pages = (int) tail;
        s->ckpt_pages = (int) (tail / 4 > 4 ? tail / 4 : 4);
        s->hard_pages = (int) (2 * tail);
}

/* ---- the checkpoint thread ------------------------------------------------ */

static void *checkpointer_main(void *userdata) {
        struct sqlite_store *s = userdata;
        struct checkpointer *c = &s->ckpt;

        pthread_mutex_lock(&c->lock);
        for (;;) {
                while (!c->wanted && !c->stop)
                        pthread_cond_wait(&c->cond, &c->lock);
                if (c->stop)
                        break;
                c->wanted = false;
                c->running = true;
                pthread_mutex_unlock(&c->lock);

                for (int pass = 0; pass < STORE_CHECKPOINT_PASSES; pass++) {
                        int log = 0, done = 0;
                        int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);

                        if (rc != SQLITE_OK) {
                                if (rc != SQLITE_BUSY)
                                        log_warning("Store %s: checkpoint failed: %s", s->path, sqlite3_errmsg(c->db));
                                break;
                        }
                        pthread_mutex_lock(&c->lock);
                        c->backfilled = done;
                        pthread_mutex_unlock(&c->lock);
                        if (done >= log) /* everything copied: the WAL can start over */
                                break;
                }

                pthread_mutex_lock(&c->lock);
                c->running = false;
                c->runs++;
        }
        pthread_mutex_unlock(&c->lock);
        return NULL;
}

/* Runs after every commit on the store's connection (SQLite's WAL hook), on
 * the committing thread, with s->lock held. */
static int wal_hook(void *userdata, sqlite3 *db, const char *name, int pages) {
        struct sqlite_store *s = userdata;
        struct checkpointer *c = &s->ckpt;
        bool idle, ours = false;

        (void) name;
        s->wal_pages = pages;
        if (++s->commits_since_space >= STORE_SPACE_EVERY_COMMITS)
                sqlite_space_update(s);
        if (pages < s->ckpt_pages || !c->started)
                return SQLITE_OK;
        pthread_mutex_lock(&c->lock);
        if (pages < c->backfilled)
                c->backfilled = 0; /* the WAL started over since */
        idle = !c->running && !c->wanted;
        if (idle) {
                /* Long, the thread is done with what it took, and what is
                 * left is short: the tail is ours. Otherwise the thread
                 * goes again. */
                ours = pages >= s->hard_pages ||
                       (pages >= s->tail_pages && pages - c->backfilled <= STORE_CHECKPOINT_TAIL_MAX);
                if (!ours) {
                        c->wanted = true;
                        pthread_cond_signal(&c->cond);
                }
        }
        pthread_mutex_unlock(&c->lock);
        if (ours) {
                int log = 0, done = 0;

                if (pages >= s->hard_pages && s->hard_pages == STORE_CHECKPOINT_HARD_PAGES)
                        log_warning("Store %s: the WAL holds %d pages, more than the checkpoint thread keeps up "
                                    "with; checkpointing after this commit.",
                                    s->path, pages);
                if (sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done) == SQLITE_OK &&
                    done >= log) {
                        pthread_mutex_lock(&c->lock);
                        c->backfilled = done;
                        pthread_mutex_unlock(&c->lock);
                }
        }
        return SQLITE_OK;
}

int sqlite_checkpointer_start(struct sqlite_store *s) {
        struct checkpointer *c = &s->ckpt;
        int rc, r;

        rc = sqlite3_open_v2(s->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK)
                return sqlite_fail(s, rc, "opening the checkpoint connection");
        sqlite3_busy_timeout(c->db, STORE_BUSY_TIMEOUT_MS);
        /* A connection learns that the database is in WAL mode when it
         * first reads it; until then a checkpoint does nothing. Copying
         * pages needs no page cache of its own to speak of. */
        rc = sqlite_exec_simple(c->db, "PRAGMA cache_size = -256; SELECT count(*) FROM sqlite_master");
        if (rc != SQLITE_OK) {
                r = sqlite_fail(s, rc, "reading with the checkpoint connection");
                sqlite3_close(c->db);
                c->db = NULL;
                return r;
        }
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->cond, NULL);
        pthread_cond_init(&c->maintained, NULL);
        r = -pthread_create(&c->thread, NULL, checkpointer_main, s);
        if (r < 0) {
                pthread_mutex_destroy(&c->lock);
                pthread_cond_destroy(&c->cond);
                pthread_cond_destroy(&c->maintained);
                sqlite3_close(c->db);
                c->db = NULL;
                return log_error_errno(r, "Store %s: cannot start the checkpoint thread: %m", s->path);
        }
        c->started = true;
        sqlite3_wal_autocheckpoint(s->db, 0);
        sqlite3_wal_hook(s->db, wal_hook, s);
        return 0;
}

void sqlite_checkpointer_stop(struct sqlite_store *s) {
        struct checkpointer *c = &s->ckpt;

        if (!c->started)
                return;
        sqlite3_wal_hook(s->db, NULL, NULL);
        pthread_mutex_lock(&c->lock);
        c->stop = true;
        pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->lock);
        pthread_join(c->thread, NULL);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->cond);
        pthread_cond_destroy(&c->maintained);
        sqlite3_close(c->db);
        c->db = NULL;
        c->started = false;
}

static int bulk_pace_locked(struct sqlite_store *s);

int sqlite_pace_locked(struct sqlite_store *s) {
        if (!s->ckpt.started || sqlite_in_transaction(s))
                return 0; /* a unit is being recorded or committed: its commit wakes the thread */
        return bulk_pace_locked(s);
}

static int bulk_pace_locked(struct sqlite_store *s) {
        struct checkpointer *c = &s->ckpt;
        int backlog, log = 0, done = 0;
        bool idle, due = s->wal_pages >= s->tail_pages;

        pthread_mutex_lock(&c->lock);
        if (c->backfilled > s->wal_pages)
                c->backfilled = 0; /* the WAL started over since the thread's last pass */
        backlog = s->wal_pages - c->backfilled;
        idle = !c->running && !c->wanted;
        if (idle && (backlog > 2 * s->ckpt_pages || (due && backlog > STORE_CHECKPOINT_TAIL_MAX))) {
                /* No commit may come to wake the thread: wake it here. */
                c->wanted = true;
                pthread_cond_signal(&c->cond);
                idle = false;
        }
        pthread_mutex_unlock(&c->lock);
        if (backlog > 2 * s->ckpt_pages || (due && !idle))
                return -EAGAIN;
        if (!due)
                return 0;
        /* Due, the thread done, a short tail left: copy it, and the next
         * commit starts the WAL over. */
        if (sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done) == SQLITE_OK &&
            done >= log) {
                pthread_mutex_lock(&c->lock);
                c->backfilled = done;
                pthread_mutex_unlock(&c->lock);
        }
        return 0;
}

unsigned long long sqlite_checkpoint_count(struct sqlite_store *s) {
        unsigned long long n;

        if (!s->ckpt.started)
                return 0;
        pthread_mutex_lock(&s->ckpt.lock);
        n = s->ckpt.runs;
        pthread_mutex_unlock(&s->ckpt.lock);
        return n;
}
/* ---- audit ---------------------------------------------------------------- */

/* ---- retention and maintenance -------------------------------------------- */

/* A purge runs at once, inside the open unit's transaction: it returns how
 * many rows went, and it becomes durable (or is lost) with that unit. */
static int purge(struct sqlite_store *s, int which, int64_t before, int limit, const char *what) {
        sqlite3_stmt *st;
        int r = 0;

        if (!sqlite_in_transaction(s))
                r = sqlite_stmt_done(s, sqlite_stmt(s, STMT_BEGIN), "BEGIN");
        if (r >= 0) {
                st = sqlite_stmt(s, which);
                sqlite3_bind_int64(st, 1, before);
                sqlite3_bind_int(st, 2, limit);
                r = sqlite_stmt_done(s, st, what);
                if (r >= 0)
                        r = sqlite3_changes(s->db);
        }
        return r;
}

int sqlite_purge_sessions_locked(struct sqlite_store *s, int64_t before, int limit) {
        return purge(s, STMT_PURGE_SESSIONS, before, limit, "purging ended sessions");
}

int sqlite_purge_audit_locked(struct sqlite_store *s, int64_t before, int limit) {
        return purge(s, STMT_PURGE_AUDIT, before, limit, "purging audit rows");
}

int sqlite_checkpoint_locked(struct sqlite_store *s) {
        int rc;

        if (s->memory)
                return 0;
        rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        return rc == SQLITE_OK ? 0 : sqlite_fail(s, rc, "checkpoint");
}

int sqlite_maintain_locked(struct sqlite_store *s, struct store_maintenance *ret) {
        int rc, log_pages = 0, ckpt = 0, r;

        assert(sqlite3_get_autocommit(s->db));
        rc = sqlite_exec_simple(s->db, "PRAGMA optimize");
        if (rc != SQLITE_OK)
                return sqlite_fail(s, rc, "PRAGMA optimize");
        if (!s->memory) {
                rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log_pages, &ckpt);
                if (rc != SQLITE_OK && rc != SQLITE_BUSY)
                        return sqlite_fail(s, rc, "checkpoint");
        }
        r = sqlite_quick_check_locked(s, ret); /* clears *ret first */
        ret->pages_compacted = ckpt;
        return r;
}

static int optimize_locked(struct sqlite_store *s) {
        int rc;

        assert(sqlite3_get_autocommit(s->db));
        rc = sqlite_exec_simple(s->db, "PRAGMA analysis_limit = 1000; PRAGMA optimize");
        return rc == SQLITE_OK ? 0 : sqlite_fail(s, rc, "PRAGMA optimize");
}

static int checkpoint_nowait_locked(struct sqlite_store *s) {
        int rc;

        if (s->memory)
                return 0;
        assert(sqlite3_get_autocommit(s->db));
        sqlite3_busy_timeout(s->db, 0);
        rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
                return -EBUSY;
        return rc == SQLITE_OK ? 0 : sqlite_fail(s, rc, "checkpoint");
}

/* Deep cleanup's maintenance, a step at a time on the loop: PRAGMA optimize
 * (bounded) on the first step, then a checkpoint that truncates the WAL
 * without waiting for a reader in its way (-EBUSY: try again later). */
int sqlite_maintain_step_locked(struct sqlite_store *s, bool first) {
        int r = 0;

        if (first)
                r = optimize_locked(s);
        if (r >= 0)
                r = checkpoint_nowait_locked(s);
        return r;
}

/* ---- the maintenance step off the loop ------------------------------------------ */

/* store_maintain_start(): PRAGMA optimize (bounded) on the loop, then the
 * truncating checkpoint in the thread pool on a connection of its own.
 * There it first copies what is left with a PASSIVE checkpoint, which
 * takes no lock a commit needs, so that the TRUNCATE after it has little
 * or nothing left to copy and sync while it holds the writer lock (the
 * writer thread's commits wait for that lock meanwhile). It never waits
 * for a reader: a busy timeout of 0 and a few quick tries, then -EBUSY for
 * the caller to try again later, as store_maintain_step() does. The work
 * holds a copy of the path and, to say it is done, the checkpointer's
 * count, which store_close() waits for (its own truncating checkpoint
 * would otherwise find the work's in its way). */
#define MAINTAIN_TRUNCATE_TRIES 10
#define MAINTAIN_TRUNCATE_RETRY_US 2000

struct maintain_work {
        uv_work_t work;
        char *path;                /* NULL: in memory, nothing to truncate */
        struct checkpointer *ckpt; /* counts it (with path) */
        int result;
        store_maintain_fn done;
        void *userdata;
};

static int truncate_checkpoint(sqlite3 *db) {
        int rc, log = 0, done = 0;

        /* A connection learns that the database is in WAL mode when it
         * first reads it. A PASSIVE checkpoint that finds another one
         * running (SQLITE_BUSY) leaves its copying to the TRUNCATE. */
        rc = sqlite_exec_simple(db, "SELECT count(*) FROM sqlite_master");
        if (rc != SQLITE_OK)
                return rc;
        rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
                return rc;
        for (int i = 0; i < MAINTAIN_TRUNCATE_TRIES; i++) {
                if (i > 0)
                        usleep(MAINTAIN_TRUNCATE_RETRY_US);
                rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
                if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
                        break;
        }
        return rc;
}

static void maintain_count(struct checkpointer *c, int delta) {
        pthread_mutex_lock(&c->lock);
        c->maintaining += delta;
        pthread_cond_broadcast(&c->maintained);
        pthread_mutex_unlock(&c->lock);
}

void sqlite_maintain_wait(struct sqlite_store *s) {
        struct checkpointer *c = &s->ckpt;

        if (!c->started)
                return;
        pthread_mutex_lock(&c->lock);
        while (c->maintaining > 0)
                pthread_cond_wait(&c->maintained, &c->lock);
        pthread_mutex_unlock(&c->lock);
}

static void maintain_work(uv_work_t *w) {
        struct maintain_work *m = w->data;
        sqlite3 *db = NULL;
        int rc;

        if (!m->path)
                return;
        rc = sqlite3_open_v2(m->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc == SQLITE_OK) {
                sqlite3_busy_timeout(db, 0);
                rc = truncate_checkpoint(db);
        }
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
                m->result = -EBUSY;
        else if (rc != SQLITE_OK) {
                log_error("Store %s: checkpoint failed: %s", m->path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
                m->result = sqlite_errno(rc);
        }
        sqlite3_close(db);
        maintain_count(m->ckpt, -1);
}

static void maintain_after(uv_work_t *w, int status) {
        struct maintain_work *m = w->data;

        m->done(status < 0 && m->result == 0 ? -ECANCELED : m->result, m->userdata);
        free(m->path);
        free(m);
}

int sqlite_maintain_start_locked(struct sqlite_store *s, bool first, store_maintain_fn done, void *userdata) {
        struct maintain_work *m;
        int r = first ? optimize_locked(s) : 0;

        if (r < 0)
                return r;
        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        *m = (struct maintain_work){.done = done, .userdata = userdata};
        m->work.data = m;
        if (s->ckpt.started) {
                m->path = strdup(s->path);
                if (!m->path) {
                        free(m);
                        return -ENOMEM;
                }
                m->ckpt = &s->ckpt;
                maintain_count(m->ckpt, +1);
        }
        r = uv_queue_work(s->base.loop, &m->work, maintain_work, maintain_after);
        if (r < 0) {
                if (m->ckpt)
                        maintain_count(m->ckpt, -1);
                free(m->path);
                free(m);
        }
        return r;
}

static int64_t file_size(const char *path, const char *suffix) {
        char p[PATH_MAX + 8];
        struct stat st;

        snprintf(p, sizeof p, "%s%s", path, suffix);
        return stat(p, &st) == 0 ? (int64_t) st.st_size : 0;
}

int64_t sqlite_size_of(struct sqlite_store *s) {
        if (s->memory)
                return 0;
        return file_size(s->path, "") + file_size(s->path, "-wal");
}
