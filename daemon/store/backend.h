/* What a backend gives the store: the table behind store.h.
 *
 * store.c owns what every backend shares: the open unit of work (uow.h),
 * the writer thread that commits it, the lock that makes the loop's reads
 * wait for the unit in flight and see the open unit's writes, and the
 * dispatch of the interface. A backend (sqlite.c, postgres.c) owns its
 * connections and its SQL: it embeds struct store as the first member of
 * its own structure, fills `backend`, and implements the table below.
 *
 * Locking. Every function of the table but open, close, reader_open (and
 * allocate_key when allocate_key_unlocked says so) is called with s->lock
 * held (recursive: a read's callback may read again), by the writer thread
 * for a unit's commit or by the loop for anything else; a backend never
 * takes s->lock itself (but in an unlocked allocate_key) and never calls
 * back into store.c but for store_core_init()/store_core_destroy(). Reads
 * are called after uow_apply() ran the open unit's operations, so they see
 * every write made before them.
 *
 * Return values are those of store.h: 0 (or a count), or a negative errno
 * (-ENOSPC full, -EIO other storage failures, -ENOENT missing row,
 * -EOPNOTSUPP: this backend has no such thing).
 */
#pragma once

#include <pthread.h>

#include "store.h"
#include "uow.h"

struct store_backend;

/* The part of every store that store.c runs. */
struct store {
        const struct store_backend *backend;

        pthread_mutex_t lock; /* held by whoever runs statements on the backend's writing connection */
        pthread_cond_t idle;  /* the writer is done with a unit */
        pthread_cond_t wake;  /* the writer has a unit to commit */
        pthread_t writer;
        bool writer_started, writer_stop, writer_wanted;
        bool writer_busy;      /* a unit is handed to the writer and not yet committed */
        struct store_uow open; /* recorded by the loop */
        struct store_uow *inflight;
        int inflight_result;
        bool inflight_done; /* committed or failed, not yet collected by the loop */
        store_commit_fn commit_fn;
        void *commit_userdata;
        uv_async_t *async; /* the writer wakes the loop (freed in its close callback) */
        uv_loop_t *loop;   /* the store_options' loop, NULL: none */
        void *rows;        /* what the last unit done read after its commit (store_read_row) */
};

struct store_backend {
        const char *name; /* "sqlite", "postgresql" */

        /* Opens (creates, checks, migrates, loads: see store_options) and
         * returns a store whose struct store was set up with
         * store_core_init(). store.c starts the writer afterwards. */
        int (*open)(const struct store_options *o, struct store **ret);
        /* Closes and frees; the writer is stopped and nothing is in
         * flight. The open unit may hold operations nobody committed: drop
         * them (store_uow_clear) and roll back. Calls store_core_destroy(). */
        void (*close)(struct store *s);
        /* A read-only handle for a worker thread (store_reader_open). */
        int (*reader_open)(const char *locator, struct store **ret);
        /* For logs (no secret in it) and for reader_open (may hold one). */
        const char *(*name_of)(const struct store *s);
        const char *(*locator)(const struct store *s);
        bool (*is_memory)(const struct store *s);
        int (*set_synchronous)(struct store *s, const char *synchronous);

        /* The unit of work. uow_apply runs u->ops[u->applied..n_ops) in
         * the open transaction (begun if none), advancing u->applied; on a
         * failure it rolls back, sets u->error and u->applied = n_ops, and
         * returns the error (a unit with u->error set returns it at once).
         * uow_commit runs what is left and commits: 0 or the error (the
         * unit is then lost, rolled back). rollback ends an open
         * transaction keeping nothing. */
        int (*uow_apply)(struct store *s, struct store_uow *u);
        /* uow_commit also reads u->reads once committed, into u->rows
         * (left NULL when the read fails: the caller reads them itself),
         * when the backend has rows_find. */
        int (*uow_commit)(struct store *s, struct store_uow *u);
        /* A row of a unit's u->rows (0, cb's value, or -ENOENT: not
         * there), and their end. NULL: no reads after a commit. */
        int (*rows_find)(void *rows, int64_t row_key, store_session_fn cb, void *userdata);
        int (*rows_find_hash)(void *rows, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb, void *userdata);
        void (*rows_free)(void *rows);
        void (*rollback)(struct store *s);
        int (*allocate_key)(struct store *s, int64_t *ret);
        /* store.c calls allocate_key without s->lock, so that a Create
         * never waits for the unit the writer is committing: it touches
         * only what the loop owns (SQLite: a counter in memory;
         * PostgreSQL: a block of keys, the next one fetched by the writer
         * after a commit), and takes s->lock itself in the rare case it
         * must use the writing connection. false (the default): called
         * under s->lock. */
        bool allocate_key_unlocked;

        /* Reads and the rest: as the store_* function of the same name. */
        int (*session_get_switches)(struct store *s, int64_t row_key, char **ret);
        /* out->row_key's sync state, liveness and end reason (as
         * store_session_read_sync; out->data NULL on a failure). */
        int (*session_read_sync)(struct store *s, struct store_sync_read *out);
        int (*session_by_row_key)(struct store *s, int64_t row_key, store_session_fn cb, void *userdata);
        /* Rows by key, in any order, the missing ones left out; NULL: one
         * session_by_row_key each (a local store). */
        int (*sessions_by_row_keys)(struct store *s, const int64_t *keys, size_t n, store_session_fn cb,
                                    void *userdata);
        int (*session_by_hash)(struct store *s, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb,
                               void *userdata);
        int (*session_by_id)(struct store *s, const char *id, store_session_fn cb, void *userdata);
        int (*sessions_each)(struct store *s, const struct store_filter *f, store_session_fn cb, void *userdata);
        int (*sessions_ended_of_user_after)(struct store *s, const char *user_id, int64_t after_row_key,
                                            store_session_fn cb, void *userdata);
        /* Purges run in the open unit's transaction (begin one if none);
         * store.c marks the unit and drops it on a failure. */
        int (*purge_sessions)(struct store *s, int64_t before, int limit);
        int (*purge_audit)(struct store *s, int64_t before, int limit);
        int (*maintain)(struct store *s, struct store_maintenance *ret);
        int (*maintain_step)(struct store *s, bool first);
        /* store_maintain_start() on a store with a loop (s->loop): the
         * cheap part here, under s->lock; done on s->loop, never before
         * this returns, and whatever becomes of the store meanwhile. */
        int (*maintain_start)(struct store *s, bool first, store_maintain_fn done, void *userdata);
        /* Called with s->lock held but only when no unit is in flight,
         * and without running the open unit: an open transaction is the
         * backend's to notice. */
        int (*pace)(struct store *s);
        /* These two without s->lock (they read counters of their own). */
        unsigned long long (*checkpoint_runs)(struct store *s);
        int64_t (*size)(struct store *s);
        int (*count_sessions)(struct store *s, bool ended, int64_t *ret);
        int (*audit_each)(struct store *s, const struct store_audit_filter *f, store_audit_fn cb, void *userdata);
        int (*check_integrity)(struct store *s, struct store_maintenance *ret);
        int (*probe)(struct store *s);
        /* The same from any thread, without s->lock (NULL: none). */
        int (*probe_any_thread)(struct store *s);
        int (*count_created)(struct store *s, int64_t since, int64_t bucket, uint64_t *counts, size_t n);
        int (*ended_durations)(struct store *s, store_value_fn cb, void *userdata);
        int (*end_reasons)(struct store *s, store_group_fn cb, void *userdata);

        /* Several daemons (NULL on a backend for one daemon: store.c then
         * answers -EOPNOTSUPP). Called on the loop WITHOUT s->lock: they
         * use connections of their own, never the writing one. */
        int (*changes_subscribe)(struct store *s, uv_loop_t *loop, store_change_fn fn, void *userdata);
        int (*leader_try)(struct store *s, bool *is_leader);
        int (*heartbeat)(struct store *s, const char *daemon_id, bool leader, int64_t now_ms);
        int (*daemons_each)(struct store *s, int64_t since_ms, store_daemon_fn cb, void *userdata);
        /* Any thread, without s->lock (NULL: nothing to refresh). */
        int (*fleet_refresh)(struct store *s, int64_t since_ms);
};

extern const struct store_backend store_backend_sqlite;
extern const struct store_backend store_backend_postgres;

/* Sets up s's shared part (lock, conditions) for backend b: a backend's
 * open calls it on its zeroed structure; its close calls
 * store_core_destroy() last but for the free. */
void store_core_init(struct store *s, const struct store_backend *b);
void store_core_destroy(struct store *s);
/* After a unit's commit (commit_result), with s->lock held: the pages it
 * was asked to read (page-read.c). */
void store_page_reads_run(struct store *s, struct store_uow *u, int commit_result);
/* One page read now, with s->lock held: 0 or the read's error. */
int store_page_run(struct store *s, struct store_page_read *x);
