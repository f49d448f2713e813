/* The PostgreSQL backend's unit of work in one round trip (DESIGN 8;
 * postgres-internal.h lists the backend's files).
 *
 * A unit that nothing ran early (no read on the loop ran its operations:
 * the common case) is sent as one pipeline: BEGIN, the users' locks, its
 * inserts (one statement, postgres-batch.c), its other operations, its
 * audit rows (one statement), each user's limit, and,
 * when none of its operations needs a look at its result before the unit
 * may commit (pg_unit_commits_blind), its notifications and COMMIT. One
 * round trip for all of it; a unit that must look first (an update that
 * may find no row, a compare-and-set) sends COMMIT after (postgres-uow.c).
 *
 * Why: measured on a Create load, what bounded a unit was not the disk but
 * the writer waiting for the server five times a unit (BEGIN, the locks,
 * the operations, the limits, COMMIT) and the server running three
 * statements a create, most of each one's cost its own overhead.
 */
#include "postgres-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

enum pipe_kind { PIPE_BEGIN, PIPE_LOCK, PIPE_BATCH, PIPE_OP, PIPE_LIMIT, PIPE_NOTIFY, PIPE_COMMIT };

struct pipe_item {
        enum pipe_kind kind;
        const struct store_op *op;
};

struct pipe_sending {
        struct pipe_item *items;
        size_t n, max;
};

static int pipe_push(struct pipe_sending *x, enum pipe_kind kind, const struct store_op *op) {
        if (x->n == x->max)
                return -E2BIG;
        x->items[x->n++] = (struct pipe_item){kind, op};
        return 0;
}

static size_t unit_count(const struct store_uow *u, enum store_op_kind kind) {
        size_t n = 0;

        for (size_t i = 0; i < u->n_ops; i++)
                n += u->ops[i].kind == kind;
        return n;
}

static int notify_pipelined(struct pg_store *p, const char *payload, void *ctx) {
        struct params a = {0};

        param_text(&a, payload);
        return pg_send(p, Q_NOTIFY, &a, "NOTIFY") < 0 ? -EIO : pipe_push(ctx, PIPE_NOTIFY, NULL);
}

/* BEGIN or COMMIT, queued. */
static int send_command(struct pg_store *p, const char *command) {
        if (PQsendQueryParams(p->w.c, command, 0, NULL, NULL, NULL, NULL, 0))
                return 0;
        pg_log_error(p->name, command, PQerrorMessage(p->w.c));
        return -EIO;
}

/* Whether a unit may be committed without looking at its results first:
 * every operation either succeeds in the server or fails there (an insert,
 * an audit row, an end, a touch, a limit), none is judged by its result
 * here (an update that found no row, a compare-and-set: those units look
 * first, then commit). */
bool pg_unit_commits_blind(const struct store_uow *u) {
        for (size_t i = 0; i < u->n_ops; i++)
                switch (u->ops[i].kind) {
                case STORE_OP_INSERT:
                case STORE_OP_AUDIT:
                case STORE_OP_END:
                case STORE_OP_ACTIVITY:
                case STORE_OP_LIMIT:
                        if (u->ops[i].applied)
                                return false;
                        break;
                default:
                        return false;
                }
        return true;
}

static int pipe_result(struct pg_store *p, const struct pipe_item *it, PGresult *res) {
        int r;

        switch (it->kind) {
        case PIPE_BEGIN:
                return pg_result_check(p->name, p->w.c, res, PGRES_COMMAND_OK, "BEGIN");
        case PIPE_LOCK:
                return pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "locking the users of new sessions");
        case PIPE_BATCH:
                return pg_result_check(p->name, p->w.c, res, PGRES_COMMAND_OK, "inserting sessions or audit rows");
        case PIPE_OP:
                return pg_op_result(p, it->op, res);
        case PIPE_LIMIT:
                return pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "holding a user's limit");
        case PIPE_NOTIFY:
                return pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "NOTIFY");
        case PIPE_COMMIT:
                r = pg_result_check(p->name, p->w.c, res, PGRES_COMMAND_OK, "COMMIT");
                if (r >= 0 && strcmp(PQcmdStatus(res), "COMMIT") != 0) {
                        log_error("Store %s: the transaction was rolled back at COMMIT.", p->name);
                        r = -EIO;
                }
                return r;
        }
        return -EINVAL;
}

/* Sends the unit's items (BEGIN, the locks, the operations, the limits;
 * with commit, the notifications and COMMIT) and lists them in x, in
 * order. */
static int pipe_send(struct pg_store *p, const struct store_uow *u, bool commit, bool defer, struct pipe_sending *x) {
        _cleanup_free_ char *users = NULL;
        int r = pg_users_array(u, &users);

        if (r < 0)
                return r;
        r = send_command(p, "BEGIN");
        if (r >= 0)
                r = pipe_push(x, PIPE_BEGIN, NULL);
        if (r >= 0 && users) {
                struct params a = {0};

                param_text(&a, users);
                r = pg_send(p, Q_LOCK_USERS, &a, "locking the users of new sessions");
                if (r >= 0)
                        r = pipe_push(x, PIPE_LOCK, NULL);
        }
        /* The inserts first, in one statement (postgres-batch.c), the
         * audit rows in one after the other operations. */
        if (r >= 0 && unit_count(u, STORE_OP_INSERT) > 0) {
                r = pg_batch_send(p, u, STORE_OP_INSERT);
                if (r >= 0)
                        r = pipe_push(x, PIPE_BATCH, NULL);
        }
        for (size_t i = 0; i < u->n_ops && r >= 0; i++)
                if (pg_op_sent(&u->ops[i]) && u->ops[i].kind != STORE_OP_INSERT && u->ops[i].kind != STORE_OP_AUDIT) {
                        r = pg_op_send(p, &u->ops[i]);
                        if (r >= 0)
                                r = pipe_push(x, PIPE_OP, &u->ops[i]);
                }
        if (r >= 0 && unit_count(u, STORE_OP_AUDIT) > 0) {
                r = pg_batch_send(p, u, STORE_OP_AUDIT);
                if (r >= 0)
                        r = pipe_push(x, PIPE_BATCH, NULL);
        }
        for (size_t i = 0; i < u->n_ops && r >= 0; i++)
                if (u->ops[i].kind == STORE_OP_LIMIT) {
                        r = pg_limit_send(p, &u->ops[i]);
                        if (r >= 0)
                                r = pipe_push(x, PIPE_LIMIT, &u->ops[i]);
                }
        if (r < 0 || !commit)
                return r;
        r = pg_notify_unit(p, u, defer, notify_pipelined, x);
        /* COMMIT's item before COMMIT: once queued, it may run whatever
         * this side decides after (libpq flushes a long pipeline as it
         * grows), so nothing may fail after it is sent. */
        if (r >= 0)
                r = pipe_push(x, PIPE_COMMIT, NULL);
        return r < 0 ? r : send_command(p, "COMMIT");
}

/* The whole unit in one pipeline (with commit, COMMIT included): 0 or the
 * first failure (the server skips what follows it; the caller rolls
 * back). */
int pg_unit_pipeline(struct pg_store *p, const struct store_uow *u, bool commit, bool defer) {
        PGconn *c = p->w.c;
        _cleanup_free_ struct pipe_item *items = calloc(u->n_ops + PG_PIPE_EXTRA, sizeof *items);
        struct pipe_sending x = {items, 0, u->n_ops + PG_PIPE_EXTRA};
        size_t k = 0;
        int r, first = 0;

        if (!items)
                return -ENOMEM;
        if (!PQenterPipelineMode(c)) {
                pg_log_error(p->name, "entering pipeline mode", PQerrorMessage(c));
                return -EIO;
        }
        r = pipe_send(p, u, commit, defer, &x);
        if (r >= 0 && !PQpipelineSync(c)) {
                pg_log_error(p->name, "sending a unit of work", PQerrorMessage(c));
                r = -EIO;
        }
        while (r >= 0) {
                PGresult *res = PQgetResult(c);
                ExecStatusType st;

                if (!res) { /* the end of one item's results */
                        if (PQstatus(c) != CONNECTION_OK || k >= x.n)
                                r = first < 0 ? first : -EIO;
                        k++;
                        continue;
                }
                st = PQresultStatus(res);
                if (st == PGRES_PIPELINE_SYNC) {
                        PQclear(res);
                        r = first;
                        break;
                }
                if (first == 0 && k < x.n && st != PGRES_PIPELINE_ABORTED)
                        first = pipe_result(p, &items[k], res);
                PQclear(res);
        }
        if (!PQexitPipelineMode(c) && r >= 0)
                r = -EIO;
        return r;
}
