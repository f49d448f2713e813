/* The store's shared half: the unit of work's life, and the dispatch of
 * store.h to a backend (backend.h: sqlite.c or postgres.c).
 *
 * The engine's writes are recorded, not run (uow.c): each is an operation
 * in the open unit of work. store_submit() hands the unit to the writer
 * thread, which has the backend run it in one transaction and tells the
 * loop through a uv_async; the loop records the next unit meanwhile.
 * store_commit() runs the open unit on the calling thread.
 *
 * One writing connection, one lock. Whoever runs statements on the
 * backend's writing connection holds s->lock (recursive: a read's callback
 * may read again): the writer for a whole unit, the loop for a read. A read
 * on the loop first waits for the writer to be done with the unit in
 * flight, then has the backend run the operations of the open unit that
 * have not run yet (in a transaction that the unit's commit later ends),
 * so that it sees every write made before it: reads see their own writes,
 * and the writer only ever finds an open transaction that belongs to the
 * unit it is handed. A read thus waits at most for one commit. An
 * operation that fails makes the whole unit fail (it is rolled back at
 * once and its commit reports the error).
 *
 * Reads after a commit. The engine can also ask for reads that the writer
 * runs right after committing the open unit, before the next: rows by
 * key or token hash (store_read_after, store_read_after_hash), sync
 * states (store_read_sync_after), pages of rows or audit entries
 * (store_read_page_after, page-read.c). They see every write committed so far and cost
 * the loop no wait; the results travel with the unit and are read on the
 * loop when it is done (store_read_row, ...). A fleet's memory learns the
 * store this way without a round trip on the loop (DESIGN 8).
 *
 * Why a table and not one backend chosen at build time: one binary serves
 * a single host on SQLite and a fleet on PostgreSQL (DESIGN 8), chosen by
 * the configuration at start.
 */
#include "backend.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* ---- the shared part ----------------------------------------------------------- */

void store_core_init(struct store *s, const struct store_backend *b) {
        pthread_mutexattr_t a;

        s->backend = b;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
        pthread_mutex_init(&s->lock, &a);
        pthread_mutexattr_destroy(&a);
        pthread_cond_init(&s->idle, NULL);
}

/* The rows a unit done read after its commit become the store's, for
 * store_read_row() until the next unit is done. */
static void rows_take(struct store *s, struct store_uow *u) {
        if (s->rows)
                s->backend->rows_free(s->rows);
        s->rows = u->rows;
        u->rows = NULL;
}

void store_core_destroy(struct store *s) {
        if (s->rows)
                s->backend->rows_free(s->rows);
        s->rows = NULL;
        if (s->inflight) { /* collected nowhere: the loop is gone */
                rows_take(s, s->inflight);
                store_uow_clear(s->inflight);
                free(s->inflight);
                s->inflight = NULL;
                if (s->rows)
                        s->backend->rows_free(s->rows);
                s->rows = NULL;
        }
        store_uow_clear(&s->open);
        pthread_cond_destroy(&s->idle);
        pthread_mutex_destroy(&s->lock);
}

/* ---- the loop's side of the lock ---------------------------------------------- */

/* Takes the writing connection for a read or a write on the calling (loop)
 * thread: waits for the writer to be done with the unit in flight, then
 * runs what the open unit has not run yet. Always pair with store_leave(). */
static int store_enter(struct store *s) {
        pthread_mutex_lock(&s->lock);
        while (s->writer_busy)
                pthread_cond_wait(&s->idle, &s->lock);
        if (s->open.error)
                return s->open.error;
        if (s->open.applied == s->open.n_ops)
                return 0;
        return s->backend->uow_apply(s, &s->open);
}

static void store_leave(struct store *s) {
        pthread_mutex_unlock(&s->lock);
}

/* The value of call run with the connection taken, or the error of taking
 * it: what every read of the interface does. */
#define STORE_WITH_LOCK(s, call)         \
        __extension__({                  \
                int r_ = store_enter(s); \
                if (r_ >= 0)             \
                        r_ = (call);     \
                store_leave(s);          \
                r_;                      \
        })

/* ---- the writer thread ---------------------------------------------------------- */

/* After a unit's commit, with the connection (s->lock) held: the sync
 * states it was asked to read, with their rows' liveness and end reason
 * (store_read_sync_after). */
static void sync_reads_run(struct store *s, struct store_uow *u, int commit_result) {
        for (size_t i = 0; i < u->n_sync_reads; i++) {
                struct store_sync_read *x = u->sync_reads[i];

                if (commit_result < 0)
                        continue; /* stays -EAGAIN */
                x->result = s->backend->session_read_sync(s, x);
                if (x->result < 0 && x->result != -ENOENT)
                        x->result = -EAGAIN;
        }
}

static void *writer_main(void *userdata) {
        struct store *s = userdata;

        pthread_mutex_lock(&s->lock);
        for (;;) {
                while (!s->writer_wanted && !s->writer_stop)
                        pthread_cond_wait(&s->wake, &s->lock);
                if (!s->writer_wanted)
                        break;
                s->writer_wanted = false;
                s->inflight_result = s->backend->uow_commit(s, s->inflight);
                sync_reads_run(s, s->inflight, s->inflight_result);
                store_page_reads_run(s, s->inflight, s->inflight_result);
                s->inflight_done = true;
                s->writer_busy = false;
                pthread_cond_broadcast(&s->idle);
                uv_async_send(s->async);
        }
        pthread_mutex_unlock(&s->lock);
        return NULL;
}

/* On the loop: hands the result of the unit in flight to its callback. */
static void store_collect(struct store *s) {
        struct store_uow *u;
        store_commit_fn fn;
        void *userdata;
        int r;

        pthread_mutex_lock(&s->lock);
        if (!s->inflight_done) {
                pthread_mutex_unlock(&s->lock);
                return;
        }
        u = s->inflight;
        r = s->inflight_result;
        fn = s->commit_fn;
        userdata = s->commit_userdata;
        s->inflight = NULL;
        s->inflight_done = false;
        pthread_mutex_unlock(&s->lock);
        uv_unref((uv_handle_t *) s->async);
        rows_take(s, u);
        store_uow_clear(u);
        free(u);
        fn(r, userdata);
}

static void writer_async_cb(uv_async_t *a) {
        if (a->data)
                store_collect(a->data);
}

static void writer_async_closed(uv_handle_t *h) {
        free(h);
}

static int writer_start(struct store *s, uv_loop_t *loop) {
        int r;

        s->async = malloc(sizeof *s->async);
        if (!s->async)
                return -ENOMEM;
        r = uv_async_init(loop, s->async, writer_async_cb);
        if (r < 0) {
                free(s->async);
                s->async = NULL;
                return log_error_errno(r, "Store %s: cannot set up the writer's wake-up: %m", store_name(s));
        }
        s->async->data = s;
        /* The async handle keeps the loop running only while a unit is in
         * flight (store_submit to store_collect): a stopping daemon's loop
         * runs until the commit that answers its held replies is in. */
        uv_unref((uv_handle_t *) s->async);
        pthread_cond_init(&s->wake, NULL);
        r = -pthread_create(&s->writer, NULL, writer_main, s);
        if (r < 0) {
                pthread_cond_destroy(&s->wake);
                return log_error_errno(r, "Store %s: cannot start the writer thread: %m", store_name(s));
        }
        s->writer_started = true;
        return 0;
}

static void writer_stop(struct store *s) {
        if (s->writer_started) {
                store_wait(s);
                pthread_mutex_lock(&s->lock);
                s->writer_stop = true;
                pthread_cond_signal(&s->wake);
                pthread_mutex_unlock(&s->lock);
                pthread_join(s->writer, NULL);
                pthread_cond_destroy(&s->wake);
                s->writer_started = false;
        }
        if (s->async) {
                /* Freed in its close callback, when the loop runs it: the
                 * store itself may be gone by then. */
                s->async->data = NULL;
                uv_close((uv_handle_t *) s->async, writer_async_closed);
                s->async = NULL;
        }
}

/* ---- opening and closing ------------------------------------------------------- */

/* The backends this build has: SQLite always, PostgreSQL when built with
 * libpq (STORE_HAVE_POSTGRES, from meson). */
static const struct store_backend *const backends[] = {
        &store_backend_sqlite,
#if STORE_HAVE_POSTGRES
        &store_backend_postgres,
#endif
};

static const struct store_backend *backend_named(const char *name, size_t n) {
        for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
                if (strlen(backends[i]->name) == n && strncmp(backends[i]->name, name, n) == 0)
                        return backends[i];
        return NULL;
}

int store_open(const struct store_options *o, struct store **ret) {
        const struct store_backend *b = o->postgres_url ? backend_named("postgresql", 10) : &store_backend_sqlite;
        struct store *s = NULL;
        int r;

        assert(o && ret);
        if (!b) {
                log_error("This build of sessiond has no PostgreSQL store (built without libpq).");
                return -EOPNOTSUPP;
        }
        r = b->open(o, &s);
        if (r < 0)
                return r;
        assert(s && s->backend == b);
        if (o->loop) {
                s->loop = o->loop;
                r = writer_start(s, o->loop);
                if (r < 0) {
                        store_close(s);
                        return r;
                }
        }
        *ret = s;
        return 0;
}

void store_close(struct store *s) {
        if (!s)
                return;
        writer_stop(s);
        s->backend->close(s);
}

int store_reader_open(const char *locator, struct store **ret) {
        const char *colon;
        const struct store_backend *b;

        assert(locator && ret);
        colon = strchr(locator, ':');
        b = colon ? backend_named(locator, (size_t) (colon - locator)) : NULL;
        return b ? b->reader_open(colon + 1, ret) : -EINVAL;
}

const char *store_name(const struct store *s) {
        return s->backend->name_of(s);
}

const char *store_locator(const struct store *s) {
        return s->backend->locator(s);
}

bool store_is_memory(const struct store *s) {
        return s->backend->is_memory(s);
}

int store_set_synchronous(struct store *s, const char *synchronous) {
        return STORE_WITH_LOCK(s, s->backend->set_synchronous(s, synchronous));
}

/* ---- the unit of work ------------------------------------------------------------ */

/* Room for one more element in an array of the open unit's reads (*p, of
 * *allocated elements of size bytes, n used): doubled when full, from 16. */
static int grow_one(void **p, size_t *allocated, size_t n, size_t size) {
        size_t m;
        void *a;

        if (n < *allocated)
                return 0;
        m = *allocated ? 2 * *allocated : 16;
        a = reallocarray(*p, m, size);
        if (!a)
                return -ENOMEM;
        *p = a;
        *allocated = m;
        return 0;
}
#define GROW_ONE(arr, n, allocated) grow_one((void **) &(arr), &(allocated), (n), sizeof *(arr))

int store_read_after(struct store *s, int64_t row_key) {
        struct store_uow *u = &s->open;
        int r;

        if (!s->backend->rows_find)
                return -EOPNOTSUPP;
        r = GROW_ONE(u->reads, u->n_reads, u->allocated_reads);
        if (r < 0)
                return r;
        u->reads[u->n_reads++] = row_key;
        return 0;
}

int store_read_after_hash(struct store *s, const uint8_t hash[TOKEN_HASH_BYTES]) {
        struct store_uow *u = &s->open;
        int r;

        if (!s->backend->rows_find_hash)
                return -EOPNOTSUPP;
        r = GROW_ONE(u->hash_reads, u->n_hash_reads, u->allocated_hash_reads);
        if (r < 0)
                return r;
        memcpy(u->hash_reads[u->n_hash_reads++], hash, TOKEN_HASH_BYTES);
        return 0;
}

int store_read_row_hash(struct store *s, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb, void *userdata) {
        if (!s->rows)
                return -EAGAIN;
        return s->backend->rows_find_hash(s->rows, hash, cb, userdata);
}

int store_read_sync_after(struct store *s, struct store_sync_read *out) {
        struct store_uow *u = &s->open;
        int r = GROW_ONE(u->sync_reads, u->n_sync_reads, u->allocated_sync_reads);

        if (r < 0)
                return r;
        out->result = -EAGAIN;
        out->data = NULL;
        out->size = 0;
        u->sync_reads[u->n_sync_reads++] = out;
        return 0;
}

int store_read_page(struct store *s, struct store_page_read *out) {
        int r;

        store_page_read_clear(out);
        out->result = -EAGAIN;
        r = STORE_WITH_LOCK(s, store_page_run(s, out));
        if (r < 0)
                store_page_read_clear(out);
        else
                out->result = 0;
        return r < 0 ? r : 0;
}

int store_read_row(struct store *s, int64_t row_key, store_session_fn cb, void *userdata) {
        if (!s->rows)
                return -EAGAIN;
        return s->backend->rows_find(s->rows, row_key, cb, userdata);
}

bool store_has_pending(const struct store *s) {
        return !store_uow_empty(&s->open);
}

bool store_busy(struct store *s) {
        return s->inflight != NULL;
}

int store_submit(struct store *s, store_commit_fn fn, void *userdata) {
        struct store_uow *u;

        assert(s && fn);
        assert(!s->inflight);
        if (!s->writer_started) {
                int r = store_commit(s);

                fn(r, userdata);
                return 0;
        }
        u = malloc(sizeof *u);
        if (!u)
                return -ENOMEM;
        pthread_mutex_lock(&s->lock);
        *u = s->open;
        s->open = (struct store_uow){0};
        s->inflight = u;
        s->commit_fn = fn;
        s->commit_userdata = userdata;
        s->writer_busy = true;
        s->writer_wanted = true;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        uv_ref((uv_handle_t *) s->async);
        return 0;
}

void store_wait(struct store *s) {
        pthread_mutex_lock(&s->lock);
        while (s->writer_busy)
                pthread_cond_wait(&s->idle, &s->lock);
        pthread_mutex_unlock(&s->lock);
        store_collect(s);
}

int store_commit(struct store *s) {
        int r;

        assert(!s->inflight);
        pthread_mutex_lock(&s->lock);
        r = s->backend->uow_commit(s, &s->open);
        sync_reads_run(s, &s->open, r);
        store_page_reads_run(s, &s->open, r);
        rows_take(s, &s->open);
        store_uow_clear(&s->open);
        pthread_mutex_unlock(&s->lock);
        return r;
}

void store_rollback(struct store *s) {
        pthread_mutex_lock(&s->lock);
        while (s->writer_busy)
                pthread_cond_wait(&s->idle, &s->lock);
        s->backend->rollback(s);
        store_uow_clear(&s->open);
        pthread_mutex_unlock(&s->lock);
}

int store_allocate_key(struct store *s, int64_t *ret) {
        int r;

        /* Not STORE_WITH_LOCK: a key is given without waiting for a commit.
         * The writer holds s->lock for a whole commit: a backend whose keys
         * are the loop's own is called without it (measured: a Create no
         * longer waits for the unit in flight). */
        if (s->backend->allocate_key_unlocked)
                return s->backend->allocate_key(s, ret);
        pthread_mutex_lock(&s->lock);
        r = s->backend->allocate_key(s, ret);
        pthread_mutex_unlock(&s->lock);
        return r;
}

/* ---- reads ----------------------------------------------------------------------- */

int store_session_get_switches(struct store *s, int64_t row_key, char **ret) {
        return STORE_WITH_LOCK(s, s->backend->session_get_switches(s, row_key, ret));
}

int store_session_read_sync(struct store *s, struct store_sync_read *out) {
        return STORE_WITH_LOCK(s, s->backend->session_read_sync(s, out));
}

int store_session_get_sync(struct store *s, int64_t row_key, int64_t *version, char **data, size_t *size) {
        struct store_sync_read x = {.row_key = row_key};
        int r = store_session_read_sync(s, &x);

        if (r < 0)
                return r;
        *version = x.version;
        *data = x.data;
        *size = x.size;
        return 0;
}

int store_session_by_row_key(struct store *s, int64_t row_key, store_session_fn cb, void *userdata) {
        return STORE_WITH_LOCK(s, s->backend->session_by_row_key(s, row_key, cb, userdata));
}

int store_session_by_hash(struct store *s, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb, void *userdata) {
        return STORE_WITH_LOCK(s, s->backend->session_by_hash(s, hash, cb, userdata));
}

int store_session_by_id(struct store *s, const char *id, store_session_fn cb, void *userdata) {
        return STORE_WITH_LOCK(s, s->backend->session_by_id(s, id, cb, userdata));
}

int store_sessions_each(struct store *s, const struct store_filter *f, store_session_fn cb, void *userdata) {
        return STORE_WITH_LOCK(s, s->backend->sessions_each(s, f, cb, userdata));
}

int store_sessions_ended_of_user_after(struct store *s, const char *user_id, int64_t after_row_key, store_session_fn cb,
                                       void *userdata) {
        return STORE_WITH_LOCK(s, s->backend->sessions_ended_of_user_after(s, user_id, after_row_key, cb, userdata));
}

int store_sessions_ended_of_user(struct store *s, const char *user_id, store_session_fn cb, void *userdata) {
        return store_sessions_ended_of_user_after(s, user_id, 0, cb, userdata);
}

int store_audit_each(struct store *s, const struct store_audit_filter *f, store_audit_fn cb, void *userdata) {
        return STORE_WITH_LOCK(s, s->backend->audit_each(s, f, cb, userdata));
}

int store_count_sessions(struct store *s, bool ended, int64_t *ret) {
        return STORE_WITH_LOCK(s, s->backend->count_sessions(s, ended, ret));
}

int store_check_integrity(struct store *s, struct store_maintenance *ret) {
        return STORE_WITH_LOCK(s, s->backend->check_integrity(s, ret));
}

int store_probe(struct store *s) {
        return STORE_WITH_LOCK(s, s->backend->probe(s));
}

int store_probe_any_thread(struct store *s) {
        return s->backend->probe_any_thread ? s->backend->probe_any_thread(s) : -EOPNOTSUPP;
}

int store_count_created(struct store *s, int64_t since, int64_t bucket, uint64_t *counts, size_t n) {
        return STORE_WITH_LOCK(s, s->backend->count_created(s, since, bucket, counts, n));
}

int store_ended_durations(struct store *s, store_value_fn cb, void *userdata) {
        return STORE_WITH_LOCK(s, s->backend->ended_durations(s, cb, userdata));
}

int store_end_reasons(struct store *s, store_group_fn cb, void *userdata) {
        return STORE_WITH_LOCK(s, s->backend->end_reasons(s, cb, userdata));
}

/* ---- retention and maintenance ----------------------------------------------------- */

/* A purge runs at once, inside the open unit's transaction: it returns how
 * many rows went, and it becomes durable (or is lost) with that unit. */
static int store_purge(struct store *s, bool sessions, int64_t before, int limit) {
        int r = store_enter(s);

        if (r >= 0)
                r = sessions ? s->backend->purge_sessions(s, before, limit) : s->backend->purge_audit(s, before, limit);
        s->open.wrote = true;
        if (r < 0 && s->open.error == 0) {
                s->backend->rollback(s);
                s->open.error = r;
                s->open.applied = s->open.n_ops;
        }
        store_leave(s);
        return r;
}

int store_purge_sessions(struct store *s, int64_t before, int limit) {
        return store_purge(s, true, before, limit);
}

int store_purge_audit(struct store *s, int64_t before, int limit) {
        return store_purge(s, false, before, limit);
}

int store_maintain(struct store *s, struct store_maintenance *ret) {
        return STORE_WITH_LOCK(s, s->backend->maintain(s, ret));
}

int store_maintain_step(struct store *s, bool first) {
        return STORE_WITH_LOCK(s, s->backend->maintain_step(s, first));
}

int store_maintain_start(struct store *s, bool first, store_maintain_fn done, void *userdata) {
        assert(done);
        if (!s->loop) {
                done(store_maintain_step(s, first), userdata);
                return 0;
        }
        return STORE_WITH_LOCK(s, s->backend->maintain_start(s, first, done, userdata));
}

int store_pace(struct store *s) {
        int r = 0;

        pthread_mutex_lock(&s->lock);
        /* While a unit is being committed, the commit paces the backend itself. */
        if (!s->writer_busy)
                r = s->backend->pace(s);
        pthread_mutex_unlock(&s->lock);
        return r;
}

unsigned long long store_checkpoint_runs(struct store *s) {
        return s->backend->checkpoint_runs(s);
}

int64_t store_size(struct store *s) {
        return s->backend->size(s);
}

/* ---- several daemons ------------------------------------------------------------- */

int store_changes_subscribe(struct store *s, uv_loop_t *loop, store_change_fn fn, void *userdata) {
        return s->backend->changes_subscribe ? s->backend->changes_subscribe(s, loop, fn, userdata) : -EOPNOTSUPP;
}

int store_leader_try(struct store *s, bool *is_leader) {
        return s->backend->leader_try ? s->backend->leader_try(s, is_leader) : -EOPNOTSUPP;
}

int store_heartbeat(struct store *s, const char *daemon_id, bool leader, int64_t now_ms) {
        return s->backend->heartbeat ? s->backend->heartbeat(s, daemon_id, leader, now_ms) : -EOPNOTSUPP;
}

int store_fleet_refresh(struct store *s, int64_t since_ms) {
        return s->backend->fleet_refresh ? s->backend->fleet_refresh(s, since_ms) : -EOPNOTSUPP;
}

int store_daemons_each(struct store *s, int64_t since_ms, store_daemon_fn cb, void *userdata) {
        return s->backend->daemons_each ? s->backend->daemons_each(s, since_ms, cb, userdata) : -EOPNOTSUPP;
}
