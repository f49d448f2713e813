/* The unit of work's recording: the store's write functions (see uow.h).
 *
 * Every write copies what it was given into the open unit's arena (blocks
 * of 64 KiB, freed together when the unit is done), so recording costs a
 * few copies and no allocation per operation, and the unit can be handed
 * whole to the writer thread while the loop records the next one.
 */
#include "backend.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct store_arena_block {
        struct store_arena_block *next;
        size_t used, size;
        char data[];
};

#define ARENA_BLOCK_MIN (64 * 1024 - sizeof(struct store_arena_block))

static void *arena_alloc(struct store_uow *u, size_t n) {
        struct store_arena_block *b = u->blocks;
        void *p;

        n = (n + 7) & ~(size_t) 7;
        if (!b || b->size - b->used < n) {
                size_t size = n > ARENA_BLOCK_MIN ? n : ARENA_BLOCK_MIN;

                b = malloc(sizeof *b + size);
                if (!b)
                        return NULL;
                b->size = size;
                b->used = 0;
                b->next = u->blocks;
                u->blocks = b;
        }
        p = b->data + b->used;
        b->used += n;
        return p;
}

/* Copies a text into the unit (NULL stays NULL); false when out of memory. */
static bool arena_text(struct store_uow *u, const char *in, const char **out) {
        size_t n;
        char *p;

        *out = NULL;
        if (!in)
                return true;
        n = strlen(in) + 1;
        p = arena_alloc(u, n);
        if (!p)
                return false;
        memcpy(p, in, n);
        *out = p;
        return true;
}

static bool arena_blob(struct store_uow *u, const void *in, size_t n, const void **out) {
        void *p;

        *out = NULL;
        if (!in)
                return true;
        p = arena_alloc(u, n > 0 ? n : 1);
        if (!p)
                return false;
        if (n > 0)
                memcpy(p, in, n);
        *out = p;
        return true;
}

void store_uow_clear(struct store_uow *u) {
        struct store_arena_block *next;

        for (struct store_arena_block *b = u->blocks; b; b = next) {
                next = b->next;
                free(b);
        }
        free(u->ops);
        free(u->reads);
        free(u->hash_reads);
        free(u->sync_reads);
        free(u->page_reads);
        assert(!u->rows); /* taken by store.c (store_rows_take), which frees it with the backend */
        *u = (struct store_uow){0};
}

bool store_uow_empty(const struct store_uow *u) {
        return u->n_ops == 0 && u->n_reads == 0 && u->n_hash_reads == 0 && u->n_sync_reads == 0 &&
               u->n_page_reads == 0 && !u->wrote && u->error == 0;
}

/* A new operation at the end of the open unit, zeroed but for kind and
 * row_key; NULL when out of memory. It counts once uow_pushed() says so:
 * an operation whose copies failed is not there. */
static struct store_op *uow_push(struct store *s, enum store_op_kind kind, int64_t row_key) {
        struct store_uow *u = &s->open;
        struct store_op *op;

        if (u->n_ops == u->allocated_ops) {
                size_t n = u->allocated_ops ? u->allocated_ops * 2 : 64;
                struct store_op *p = reallocarray(u->ops, n, sizeof *p);

                if (!p)
                        return NULL;
                u->ops = p;
                u->allocated_ops = n;
        }
        op = &u->ops[u->n_ops];
        memset(op, 0, sizeof *op);
        op->kind = kind;
        op->row_key = row_key;
        return op;
}

static int uow_pushed(struct store *s) {
        s->open.n_ops++;
        return 0;
}

int store_session_insert(struct store *s, const struct store_session *row, const void *sync_data, size_t sync_size) {
        struct store_uow *u = &s->open;
        struct store_op *op;

        assert(row->row_key > 0);
        op = uow_push(s, STORE_OP_INSERT, row->row_key);
        if (!op)
                return -ENOMEM;
        op->row = *row;
        op->blob_size = sync_size;
        if (!arena_text(u, row->id, &op->row.id) || !arena_text(u, row->user_id, &op->row.user_id) ||
            !arena_text(u, row->platform_id, &op->row.platform_id) || !arena_text(u, row->ip, &op->row.ip) ||
            !arena_text(u, row->user_agent, &op->row.user_agent) || !arena_blob(u, sync_data, sync_size, &op->blob))
                return -ENOMEM;
        op->row.end_reason = NULL;
        return uow_pushed(s);
}

static int push_times(struct store *s, enum store_op_kind kind, int64_t row_key, int64_t t1, int64_t t2) {
        struct store_op *op = uow_push(s, kind, row_key);

        if (!op)
                return -ENOMEM;
        op->t1 = t1;
        op->t2 = t2;
        return uow_pushed(s);
}

int store_session_set_activity(struct store *s, int64_t row_key, int64_t last_activity) {
        return push_times(s, STORE_OP_ACTIVITY, row_key, last_activity, 0);
}

int store_session_set_renewed(struct store *s, int64_t row_key, int64_t renewed_at, int64_t last_activity) {
        return push_times(s, STORE_OP_RENEWED, row_key, renewed_at, last_activity);
}

int store_session_end(struct store *s, int64_t row_key, int64_t ended_at, const char *reason) {
        struct store_op *op = uow_push(s, STORE_OP_END, row_key);

        assert(reason);
        if (!op)
                return -ENOMEM;
        op->t1 = ended_at;
        if (!arena_text(&s->open, reason, &op->s1))
                return -ENOMEM;
        return uow_pushed(s);
}

int store_session_set_client(struct store *s, int64_t row_key, const struct store_session *c) {
        struct store_op *op = uow_push(s, STORE_OP_CLIENT, row_key);

        if (!op)
                return -ENOMEM;
        op->row.fp_user_agent = c->fp_user_agent;
        op->row.fp_ip = c->fp_ip;
        op->row.fp_accept_language = c->fp_accept_language;
        op->row.fp_accept_encoding = c->fp_accept_encoding;
        if (!arena_text(&s->open, c->ip, &op->row.ip) || !arena_text(&s->open, c->user_agent, &op->row.user_agent))
                return -ENOMEM;
        return uow_pushed(s);
}

int store_session_copy(struct store *s, int64_t from_row_key, int64_t new_row_key, const char *new_id,
                       const uint8_t token_hash[TOKEN_HASH_BYTES], int64_t last_activity) {
        struct store_op *op = uow_push(s, STORE_OP_COPY, from_row_key);

        if (!op)
                return -ENOMEM;
        op->t1 = last_activity;
        op->t2 = new_row_key;
        memcpy(op->row.token_hash, token_hash, TOKEN_HASH_BYTES);
        if (!arena_text(&s->open, new_id, &op->s1))
                return -ENOMEM;
        return uow_pushed(s);
}

int store_session_set_platform(struct store *s, int64_t row_key, const char *platform_id, const char *switches_json) {
        struct store_op *op = uow_push(s, STORE_OP_PLATFORM, row_key);

        if (!op)
                return -ENOMEM;
        if (!arena_text(&s->open, platform_id, &op->s1) || !arena_text(&s->open, switches_json, &op->s2))
                return -ENOMEM;
        return uow_pushed(s);
}

int store_session_switch_platform(struct store *s, int64_t row_key, const char *platform_id, const char *audit_user,
                                  const char *session_id, struct store_switch *sw) {
        struct store_op *op;

        assert(platform_id && sw && strlen(platform_id) <= STORE_PLATFORM_ID_MAX);
        op = uow_push(s, STORE_OP_SWITCH, row_key);
        if (!op)
                return -ENOMEM;
        op->sw = sw;
        op->applied = &sw->applied;
        sw->applied = 0;
        sw->outcome = STORE_SWITCH_GONE;
        if (!arena_text(&s->open, platform_id, &op->s1) || !arena_text(&s->open, audit_user, &op->s2) ||
            !arena_text(&s->open, session_id, &op->s3))
                return -ENOMEM;
        return uow_pushed(s);
}

int store_session_set_sync(struct store *s, int64_t row_key, int64_t version, const void *data, size_t size) {
        struct store_op *op = uow_push(s, STORE_OP_SYNC, row_key);

        if (!op)
                return -ENOMEM;
        op->t1 = version;
        op->t2 = -1;
        op->blob_size = size;
        if (!arena_blob(&s->open, data, size, &op->blob))
                return -ENOMEM;
        return uow_pushed(s);
}

int store_session_cas_sync(struct store *s, int64_t row_key, int64_t from, const void *data, size_t size,
                           int *applied) {
        struct store_op *op;

        assert(from >= 0 && applied);
        op = uow_push(s, STORE_OP_SYNC, row_key);
        if (!op)
                return -ENOMEM;
        op->t1 = from + 1;
        op->t2 = from;
        op->applied = applied;
        *applied = 0;
        op->blob_size = size;
        if (!arena_blob(&s->open, data, size, &op->blob))
                return -ENOMEM;
        return uow_pushed(s);
}

int store_audit_insert(struct store *s, int64_t time, const char *kind, const char *user_id, const char *session_id,
                       const char *detail_json) {
        struct store_op *op = uow_push(s, STORE_OP_AUDIT, 0);

        if (!op)
                return -ENOMEM;
        op->t1 = time;
        if (!arena_text(&s->open, kind, &op->s1) || !arena_text(&s->open, user_id, &op->s2) ||
            !arena_text(&s->open, session_id, &op->s3) ||
            !arena_text(&s->open, detail_json ? detail_json : "{}", (const char **) &op->blob))
                return -ENOMEM;
        return uow_pushed(s);
}

int store_user_limit(struct store *s, const char *user_id, int64_t keep, int64_t now) {
        struct store_op *op = uow_push(s, STORE_OP_LIMIT, 0);

        assert(keep > 0);
        if (!op)
                return -ENOMEM;
        op->t1 = keep;
        op->t2 = now;
        if (!arena_text(&s->open, user_id, &op->s1))
                return -ENOMEM;
        return uow_pushed(s);
}
