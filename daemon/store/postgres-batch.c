/* The PostgreSQL backend's batched writes (DESIGN 8; postgres-internal.h
 * lists the backend's files): a unit's new sessions in one INSERT, its
 * audit rows in another.
 *
 * A Create is an insert of its session, one of its audit row and its
 * user's limit. Sent one statement each, a unit of 25 creates cost the
 * server 75 executions (parse of the parameters, executor start and end),
 * most of it overhead; the writer's backend was on the CPU three quarters
 * of the time. One INSERT ... SELECT FROM unnest() of arrays, a column an
 * array, pays that overhead once; the limits go the same way, every user
 * of the unit in one statement (Q_LIMIT_MANY: for each, the rows beyond
 * its `keep` end, as Q_LIMIT does for one). The arrays travel
 * as text literals ({...}, elements quoted, NULL for none, bytea as
 * "\\x..."), the form PostgreSQL reads for any array type.
 *
 * Used by the unit sent in one pipeline (postgres-uow.c), which sends its
 * inserts first (no other operation of a unit names a row it has not
 * inserted yet: keys are new), its audit rows after its other operations
 * (nothing reads them in the unit), its limits last (after every insert,
 * as one at a time ran them). A user limited twice in a unit (two
 * creates) is counted twice on the same rows: what ends is the same.
 */
#include "postgres-internal.h"

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

/* Sends prepared statement q with the n literals as its parameters. */
static int lits_send(struct pg_store *p, int q, struct lit *l, size_t n, const char *what) {
        struct params a = {0};
        char name[16];

        for (size_t i = 0; i < n; i++) {
                if (l[i].failed)
                        return -ENOMEM;
                param_text(&a, l[i].p);
        }
        snprintf(name, sizeof name, "q%d", q);
        if (PQsendQueryPrepared(p->w.c, name, a.n, a.v, a.len, a.fmt, 0))
                return 0;
        pg_log_error(p->name, what, PQerrorMessage(p->w.c));
        return -EIO;
}

#define INSERT_COLUMNS 16

int pg_insert_many_send(struct pg_store *p, const struct store_uow *u) {
        struct lit l[INSERT_COLUMNS] = {0};
        int r;

        for (size_t k = 0; k < INSERT_COLUMNS; k++)
                lit_begin(&l[k]);
        for (size_t i = 0; i < u->n_ops; i++) {
                const struct store_op *op = &u->ops[i];
                const struct store_session *row = &op->row;

                if (op->kind != STORE_OP_INSERT)
                        continue;
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
        for (size_t k = 0; k < INSERT_COLUMNS; k++)
                lit_end(&l[k]);
        r = lits_send(p, Q_INSERT_MANY, l, INSERT_COLUMNS, "inserting sessions");
        lits_free(l, INSERT_COLUMNS);
        return r;
}

#define AUDIT_COLUMNS 5

int pg_audit_many_send(struct pg_store *p, const struct store_uow *u) {
        struct lit l[AUDIT_COLUMNS] = {0};
        int r;

        for (size_t k = 0; k < AUDIT_COLUMNS; k++)
                lit_begin(&l[k]);
        for (size_t i = 0; i < u->n_ops; i++) {
                const struct store_op *op = &u->ops[i];

                if (op->kind != STORE_OP_AUDIT)
                        continue;
                lit_int(&l[0], op->t1);
                lit_text(&l[1], op->s1);
                lit_text(&l[2], op->s2);
                lit_text(&l[3], op->s3);
                lit_text(&l[4], op->blob ? (const char *) op->blob : "{}");
        }
        for (size_t k = 0; k < AUDIT_COLUMNS; k++)
                lit_end(&l[k]);
        r = lits_send(p, Q_AUDIT_MANY, l, AUDIT_COLUMNS, "writing audit rows");
        lits_free(l, AUDIT_COLUMNS);
        return r;
}

#define LIMIT_COLUMNS 3

int pg_limits_send(struct pg_store *p, const struct store_uow *u) {
        struct lit l[LIMIT_COLUMNS] = {0};
        int r;

        for (size_t k = 0; k < LIMIT_COLUMNS; k++)
                lit_begin(&l[k]);
        for (size_t i = 0; i < u->n_ops; i++) {
                const struct store_op *op = &u->ops[i];

                if (op->kind != STORE_OP_LIMIT)
                        continue;
                lit_text(&l[0], op->s1);
                lit_int(&l[1], op->t1);
                lit_int(&l[2], op->t2);
        }
        for (size_t k = 0; k < LIMIT_COLUMNS; k++)
                lit_end(&l[k]);
        r = lits_send(p, Q_LIMIT_MANY, l, LIMIT_COLUMNS, "holding the users' limits");
        lits_free(l, LIMIT_COLUMNS);
        return r;
}
