/* The unit of work: the engine's writes of one loop iteration, recorded.
 *
 * A write at the store interface (store_session_insert(), ..._end(),
 * store_audit_insert(), ...) runs nothing: it appends an operation to the
 * open unit and copies its strings and blobs into the unit's arena, so the
 * caller's buffers may go at once (but for what the store answers: a
 * compare-and-set's `applied` and a switch's struct store_switch, which
 * must stay until the unit is done). A backend runs the operations in order,
 * in one transaction, when the unit is committed (see store.c for who runs
 * it when, and backend.h for what a backend provides). This file knows no
 * database: SQLite and PostgreSQL run the same operations.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

enum store_op_kind {
        STORE_OP_INSERT,   /* row (live), blob: sync data */
        STORE_OP_ACTIVITY, /* t1: last_activity (never moves it back) */
        STORE_OP_RENEWED,  /* t1: renewed_at, t2: last_activity */
        STORE_OP_END,      /* t1: ended_at, s1: reason (a row already ended is left alone: -ENOENT
                            * on SQLite, whose engine knows every end; moot on a shared store) */
        STORE_OP_CLIENT,   /* row: fingerprint hashes, ip, user agent (0/NULL: keep) */
        STORE_OP_COPY,     /* rotation: t1: last_activity, t2: new key, s1: new id, row.token_hash */
        STORE_OP_PLATFORM, /* s1: platform id, s2: switch history (JSON) */
        STORE_OP_SWITCH,   /* s1: platform id, s2: audit user (NULL: no audit row), s3: session id, sw */
        STORE_OP_SYNC,     /* t1: version, t2: the version it replaces (-1: any), blob: data, applied */
        STORE_OP_AUDIT,    /* t1: time, s1: kind, s2: user, s3: session id, blob: detail JSON text */
        STORE_OP_LIMIT,    /* s1: user, t1: keep, t2: now (store_user_limit) */
};

struct store_op {
        enum store_op_kind kind;
        int64_t row_key;
        int64_t t1, t2;
        const char *s1, *s2, *s3;
        const void *blob; /* NULL: none */
        size_t blob_size;
        struct store_session row;
        int *applied;            /* STORE_OP_SYNC with t2 >= 0, STORE_OP_SWITCH: set when the operation runs */
        struct store_switch *sw; /* STORE_OP_SWITCH: asked and answered */
};

struct store_arena_block;

struct store_uow {
        struct store_op *ops;
        size_t n_ops, allocated_ops;
        size_t applied; /* operations already run in the open transaction */
        struct store_arena_block *blocks;
        int error;  /* an operation failed: the unit is lost (rolled back) */
        bool wrote; /* the backend wrote outside the operation list (purges) */
        /* Rows to read once the unit has committed (store_read_after), and
         * what the backend read (its own object, NULL: not read). */
        int64_t *reads;
        size_t n_reads, allocated_reads;
        uint8_t (*hash_reads)[TOKEN_HASH_BYTES]; /* rows by token hash (store_read_after_hash) */
        size_t n_hash_reads, allocated_hash_reads;
        struct store_sync_read **sync_reads; /* sync states (store_read_sync_after), filled by store.c */
        size_t n_sync_reads, allocated_sync_reads;
        struct store_page_read **page_reads; /* pages (store_read_page_after), filled by page-read.c */
        size_t n_page_reads, allocated_page_reads;
        void *rows;
};

void store_uow_clear(struct store_uow *u);
bool store_uow_empty(const struct store_uow *u);
