/* The PostgreSQL backend's batched writes (DESIGN 8; postgres-internal.h
 * lists the backend's files): a unit's new sessions in one INSERT, its
 * audit rows in another.
 *
 * A Create is an insert of its session, one of its audit row and its
 * user's limit. Sent one statement each, a unit of 25 creates cost the
 * server 75 executions (parse of the parameters, executor start and end),
 * most of it overhead. One INSERT ... SELECT FROM unnest() of arrays, a
 * column an array, pays that overhead once. The arrays travel as text
 * literals ({...}, elements quoted, NULL for none, bytea as "\\x..."), the
 * form PostgreSQL reads for any array type.
 *
 * The limits stay one statement each. Every user's limit in one statement
 * (a lateral count per user) was tried: prepared, its plan made while the
 * table was empty (a fresh database) kept scanning the whole table for
 * each user, and creates fell from 20,000 a second to 500; planned at
 * each run instead, the planning cost more than it saved.
 *
 * Used by the unit sent in one pipeline (postgres-pipeline.c), which sends
 * its inserts first (no other operation of a unit names a row it has not
 * inserted yet: keys are new) and its audit rows after its other
 * operations (nothing reads them in the unit).
 */
#include "postgres-internal.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* A growing array literal. */
struct lit {
        char *p;
        size_t len, size;
        bool failed;
};

static bool lit_room(struct lit *l, size_t n) {
        char *p;
        size_t m;

        if (l->failed)
                return false;
        if (l->len + n + 2 <= l->size)
                return true;
        m = l->size ? l->size : 256;
        while (m < l->len + n + 2)
                m *= 2;
        p = realloc(l->p, m);
        if (!p) {
                l->failed = true;
                return false;
        }
        l->p = p;
        l->size = m;
        return true;
}

static void lit_raw(struct lit *l, const char *v, size_t n) {
        if (!lit_room(l, n + 1))
                return;
        if (l->len > 0 && l->p[l->len - 1] != '{')
                l->p[l->len++] = ',';
        memcpy(l->p + l->len, v, n);
        l->len += n;
        l->p[l->len] = '\0';
}

static void lit_begin(struct lit *l) {
        l->len = 0;
        if (lit_room(l, 1)) {
                l->p[l->len++] = '{';
                l->p[l->len] = '\0';
        }
}

static void lit_end(struct lit *l) {
        if (lit_room(l, 1)) {
                l->p[l->len++] = '}';
                l->p[l->len] = '\0';
        }
}

static void lit_int(struct lit *l, int64_t v) {
        char num[24];

        lit_raw(l, num, (size_t) snprintf(num, sizeof num, "%" PRId64, v));
}

static void lit_fp(struct lit *l, uint64_t v) {
        if (v)
                lit_int(l, (int64_t) v);
        else
                lit_raw(l, "NULL", 4);
}

/* A text element, quoted; NULL for none. */
static void lit_text(struct lit *l, const char *v) {
        size_t n;
        char *o;

        if (!v) {
                lit_raw(l, "NULL", 4);
                return;
        }
        n = strlen(v);
        if (!lit_room(l, 2 * n + 3))
                return;
        if (l->len > 0 && l->p[l->len - 1] != '{')
                l->p[l->len++] = ',';
        o = l->p + l->len;
        *o++ = '"';
        for (const char *c = v; *c; c++) {
                if (*c == '"' || *c == '\\')
                        *o++ = '\\';
                *o++ = *c;
        }
        *o++ = '"';
        *o = '\0';
        l->len = (size_t) (o - l->p);
}

/* A bytea element in hex ("\\x..."); NULL for none (an empty one is not). */
static void lit_bytes(struct lit *l, const void *v, size_t n) {
        static const char hex[] = "0123456789abcdef";
        const unsigned char *b = v;
        char *o;

        if (!v) {
                lit_raw(l, "NULL", 4);
                return;
        }
        if (!lit_room(l, 2 * n + 8))
                return;
        if (l->len > 0 && l->p[l->len - 1] != '{')
                l->p[l->len++] = ',';
        o = l->p + l->len;
        memcpy(o, "\"\\\\x", 4);
        o += 4;
        for (size_t i = 0; i < n; i++) {
                *o++ = hex[b[i] >> 4];
                *o++ = hex[b[i] & 15];
        }
        *o++ = '"';
        *o = '\0';
        l->len = (size_t) (o - l->p);
}

static void lits_free(struct lit *l, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(l[i].p);
}

/* The columns of one operation's row, a literal each. */
static void insert_row(struct lit *l, const struct store_op *op) {
        const struct store_session *row = &op->row;

        lit_int(&l[0], op->row_key);
        lit_text(&l[1], row->id);
        lit_bytes(&l[2], row->token_hash, TOKEN_HASH_BYTES);
        lit_text(&l[3], row->user_id);
        lit_text(&l[4], row->platform_id);
        lit_int(&l[5], row->created_at);
        lit_int(&l[6], row->last_activity);
        lit_int(&l[7], row->renewed_at);
        lit_fp(&l[8], row->fp_user_agent);
        lit_fp(&l[9], row->fp_ip);
        lit_fp(&l[10], row->fp_accept_language);
        lit_fp(&l[11], row->fp_accept_encoding);
        lit_text(&l[12], row->ip);
        lit_text(&l[13], row->user_agent);
        lit_bytes(&l[14], op->blob, op->blob_size);
        lit_int(&l[15], row->sync_version);
}

static void audit_row(struct lit *l, const struct store_op *op) {
        lit_int(&l[0], op->t1);
        lit_text(&l[1], op->s1);
        lit_text(&l[2], op->s2);
        lit_text(&l[3], op->s3);
        lit_text(&l[4], op->blob ? (const char *) op->blob : "{}");
}

#define BATCH_COLUMNS_MAX 16

static const struct batch {
        enum store_op_kind kind;
        int q;
        size_t columns;
        void (*row)(struct lit *l, const struct store_op *op);
        const char *what;
} batches[] = {
        {STORE_OP_INSERT, Q_INSERT_MANY, 16, insert_row, "inserting sessions"},
        {STORE_OP_AUDIT, Q_AUDIT_MANY, 5, audit_row, "writing audit rows"},
};

int pg_batch_send(struct pg_store *p, const struct store_uow *u, enum store_op_kind kind) {
        const struct batch *b = NULL;
        struct lit l[BATCH_COLUMNS_MAX] = {0};
        struct params a = {0};
        int r = 0;

        for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++)
                if (batches[i].kind == kind)
                        b = &batches[i];
        assert(b && b->columns <= BATCH_COLUMNS_MAX);
        for (size_t k = 0; k < b->columns; k++)
                lit_begin(&l[k]);
        for (size_t i = 0; i < u->n_ops; i++)
                if (u->ops[i].kind == kind)
                        b->row(l, &u->ops[i]);
        for (size_t k = 0; k < b->columns; k++) {
                lit_end(&l[k]);
                if (l[k].failed)
                        r = -ENOMEM;
                param_text(&a, l[k].p);
        }
        if (r >= 0)
                r = pg_send(p, b->q, &a, b->what);
        lits_free(l, b->columns);
        return r;
}
