/* The PostgreSQL backend's unit of work (DESIGN 8; postgres-internal.h
 * lists the backend's files).
 *
 * The unit of work runs its operations with prepared statements (prepared
 * once per connection) in one transaction, sent in libpq's pipeline mode
 * (PG_PIPELINE_OPS at a time): a unit of a hundred writes costs one round
 * trip, not a hundred; the first failure fails the unit (the server skips
 * the rest of the pipeline, the transaction is rolled back). A unit that
 * nothing ran early goes whole in one pipeline, BEGIN to COMMIT when none
 * of its operations needs a look at its result first
 * (postgres-pipeline.c), its inserts, audit rows and limits batched
 * (postgres-batch.c): one round trip a unit. Per-user limits across daemons
 * (store_user_limit(), STORE_OP_LIMIT): at commit, on the writer thread,
 * the transaction first takes pg_advisory_xact_lock(PG_USER_LOCK_CLASS,
 * hashtext(user_id)) for every user of its inserts and limits, all in one
 * statement in hash order (so two daemons never wait for each other in
 * opposite orders), then runs what is left of the unit, then each limit:
 * the user's live sessions beyond `keep`, least recently active first, end
 * as "evicted" (the statement NOTIFYs each row it ends). Under the lock
 * the count sees every other daemon's
 * committed rows, so of two daemons creating for one user at once the
 * second to commit sees the first's sessions: the limit holds. (An insert
 * that a read on the loop ran earlier took no lock: the loop never waits
 * for another daemon's commit. It needs none: what holds the limit is the
 * count under the lock.) Touches are written with
 * GREATEST(last_activity, $2): several daemons touch one session. Before
 * COMMIT the unit sends NOTIFY sessiond_changes for every change another
 * daemon must learn: payload "<origin>:<kind>:<row>[,<kind>:<row>...]"
 * (c created, e ended, r renewed, p platform, s sync state, u client; at
 * most PG_NOTIFY_MAX bytes each), origin
 * being a random id per store so that a store skips its own; sessions
 * ended for a limit go with origin "*", which every store hears, its own
 * included (its engine did not end them). PostgreSQL delivers
 * notifications at commit, in commit order, and drops them with a
 * rolled-back transaction.
 *
 * Keys: postgres-keys.c.
 *
 * A platform switch (STORE_OP_SWITCH) is decided by Q_SWITCH under the
 * row's lock and answers a row (switch_result), not a count.
 */
#include "postgres-internal.h"

#include <errno.h>
#include <string.h>

#include "log.h"

/* ---- the unit of work -------------------------------------------------------------------- */

/* Rolls the writer's transaction back. A pipeline left unfinished (a
 * failure on this side while it was sent: out of memory for a batch's
 * literal, a statement libpq refused to queue) cannot be left: libpq
 * keeps its items, refuses every later synchronous statement, and would
 * send them with the next unit's. The connection is closed instead (what
 * the server ran of it is rolled back: a unit's COMMIT is the last item
 * queued) and the next unit makes it again (pg_writer_ready()). */
void pg_tx_rollback(struct pg_store *p) {
        if (p->w.c && PQpipelineStatus(p->w.c) != PQ_PIPELINE_OFF && !PQexitPipelineMode(p->w.c)) {
                if (PQstatus(p->w.c) == CONNECTION_OK)
                        log_warning("Store %s: a unit of work was not sent whole; closing the connection to "
                                    "PostgreSQL.",
                                    p->name);
                pg_conn_close(&p->w);
                return;
        }
        if (pg_in_tx(p))
                (void) pg_exec_command(p, p->w.c, "ROLLBACK", "ROLLBACK");
}

/* The unit's transaction: open already, or begun now. A unit that ran
 * operations (or a purge) in a transaction that is gone (the connection
 * was lost) cannot go on: -EIO. */
static int tx_begin(struct pg_store *p, const struct store_uow *u) {
        int r;

        if (pg_in_tx(p))
                return 0;
        if (u->applied > 0 || u->wrote) {
                log_error("Store %s: the connection was lost in the middle of a unit of work; its writes are "
                          "lost.",
                          p->name);
                return -EIO;
        }
        r = pg_writer_ready(p);
        return r < 0 ? r : pg_exec_command(p, p->w.c, "BEGIN", "BEGIN");
}

/* Appends a text as an element of a PostgreSQL array literal. */
static char *array_append(char *o, const char *v) {
        *o++ = '"';
        for (; *v; v++) {
                if (*v == '"' || *v == '\\')
                        *o++ = '\\';
                *o++ = *v;
        }
        *o++ = '"';
        return o;
}

/* The user an operation counts for in a per-user limit, or NULL. */
static const char *op_user(const struct store_op *op) {
        return op->kind == STORE_OP_INSERT ? op->row.user_id : op->kind == STORE_OP_LIMIT ? op->s1 : NULL;
}

/* The users of the unit's inserts and limits as a PostgreSQL array
 * literal in *ret (NULL: none). */
int pg_users_array(const struct store_uow *u, char **ret) {
        size_t n = 3;
        char *o;

        *ret = NULL;
        for (size_t i = 0; i < u->n_ops; i++)
                if (op_user(&u->ops[i]))
                        n += 2 * strlen(op_user(&u->ops[i])) + 3;
        if (n == 3)
                return 0;
        *ret = o = malloc(n);
        if (!o)
                return -ENOMEM;
        *o++ = '{';
        for (size_t i = 0; i < u->n_ops; i++)
                if (op_user(&u->ops[i])) {
                        if (o[-1] != '{')
                                *o++ = ',';
                        o = array_append(o, op_user(&u->ops[i]));
                }
        *o++ = '}';
        *o = '\0';
        return 0;
}

/* Takes the per-user locks of the unit's inserts and limits, at commit:
 * one statement, in hash order, so that two daemons never wait for each
 * other in opposite orders (see the top of this file). */
static int lock_users(struct pg_store *p, const struct store_uow *u) {
        _cleanup_free_ char *arr = NULL;
        struct params a = {0};
        int r = pg_users_array(u, &arr);

        if (r < 0 || !arr)
                return r;
        param_text(&a, arr);
        _cleanup_pqclear_ PGresult *res = pg_run(p, Q_LOCK_USERS, &a);
        return pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "locking the users of new sessions");
}

int pg_limit_send(struct pg_store *p, const struct store_op *op) {
        struct params a = {0};

        param_text(&a, op->s1);
        param_int(&a, op->t1);
        param_int(&a, op->t2);
        return pg_send(p, Q_LIMIT, &a, "holding a user's limit");
}

/* The unit's limits (after all its inserts, under the users' locks), in
 * one pipeline: for each, the user's most recently active `keep` live
 * sessions stay, the others end. */
static int run_limits(struct pg_store *p, const struct store_uow *u) {
        PGconn *c = p->w.c;
        int r = 0, first = 0;
        size_t n = 0;

        for (size_t i = 0; i < u->n_ops; i++)
                n += u->ops[i].kind == STORE_OP_LIMIT;
        if (n == 0)
                return 0;
        if (!PQenterPipelineMode(c)) {
                pg_log_error(p->name, "entering pipeline mode", PQerrorMessage(c));
                return -EIO;
        }
        for (size_t i = 0; i < u->n_ops && r >= 0; i++)
                if (u->ops[i].kind == STORE_OP_LIMIT)
                        r = pg_limit_send(p, &u->ops[i]);
        if (r >= 0 && !PQpipelineSync(c)) {
                pg_log_error(p->name, "sending the users' limits", PQerrorMessage(c));
                r = -EIO;
        }
        while (r >= 0) {
                PGresult *res = PQgetResult(c);

                if (!res) {
                        if (PQstatus(c) != CONNECTION_OK)
                                r = -EIO;
                        continue;
                }
                if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
                        PQclear(res);
                        break;
                }
                if (first == 0 && PQresultStatus(res) != PGRES_PIPELINE_ABORTED)
                        first = pg_result_check(p->name, c, res, PGRES_TUPLES_OK, "holding a user's limit");
                PQclear(res);
        }
        if (!PQexitPipelineMode(c) && r >= 0)
                r = -EIO;
        return r < 0 ? r : first;
}

static void insert_params(const struct store_op *op, struct params *a) {
        const struct store_session *row = &op->row;

        param_int(a, op->row_key);
        param_text(a, row->id);
        param_bytes(a, row->token_hash, TOKEN_HASH_BYTES);
        param_text(a, row->user_id);
        param_text(a, row->platform_id);
        param_int(a, row->created_at);
        param_int(a, row->last_activity);
        param_int(a, row->renewed_at);
        param_fp(a, row->fp_user_agent);
        param_fp(a, row->fp_ip);
        param_fp(a, row->fp_accept_language);
        param_fp(a, row->fp_accept_encoding);
        param_text(a, row->ip);
        param_text(a, row->user_agent);
        param_bytes(a, op->blob, op->blob_size);
        param_int(a, row->sync_version);
}

static void audit_params(const struct store_op *op, struct params *a) {
        param_int(a, op->t1);
        param_text(a, op->s1);
        param_text(a, op->s2);
        param_text(a, op->s3);
        param_text(a, op->blob ? op->blob : "{}");
}

static int op_update_params(const struct store_op *op, struct params *a, const char **what) {
        switch (op->kind) {
        case STORE_OP_ACTIVITY:
                param_int(a, op->t1);
                *what = "updating last_activity";
                return Q_ACTIVITY;
        case STORE_OP_RENEWED:
                param_int(a, op->t1);
                param_int(a, op->t2);
                *what = "renewing a session";
                return Q_RENEWED;
        case STORE_OP_END:
                param_int(a, op->t1);
                param_text(a, op->s1);
                *what = "ending a session";
                return Q_END;
        case STORE_OP_CLIENT:
                param_fp(a, op->row.fp_user_agent);
                param_fp(a, op->row.fp_ip);
                param_fp(a, op->row.fp_accept_language);
                param_fp(a, op->row.fp_accept_encoding);
                param_text(a, op->row.ip);
                param_text(a, op->row.user_agent);
                *what = "recording a client change";
                return Q_CLIENT;
        case STORE_OP_COPY:
                param_text(a, op->s1);
                param_bytes(a, op->row.token_hash, TOKEN_HASH_BYTES);
                param_int(a, op->t1);
                param_int(a, op->t2);
                *what = "copying a session";
                return Q_COPY;
        case STORE_OP_PLATFORM:
                param_text(a, op->s1);
                param_text(a, op->s2);
                *what = "switching the platform";
                return Q_PLATFORM;
        case STORE_OP_SYNC:
                param_int(a, op->t1);
                param_bytes(a, op->blob, op->blob_size);
                param_int(a, op->t2);
                *what = "writing sync state";
                return Q_SYNC;
        case STORE_OP_SWITCH:
                param_text(a, op->s1);
                param_int(a, op->sw->now);
                param_int(a, op->sw->max_per_hour);
                param_text(a, op->s2);
                param_text(a, op->s3);
                *what = "switching the platform";
                return Q_SWITCH;
        default:
                return -EINVAL;
        }
}

/* The statement of an operation and its parameters (not for
 * STORE_OP_LIMIT, run at commit: run_limits()). */
static int op_statement(const struct store_op *op, struct params *a, const char **what) {
        switch (op->kind) {
        case STORE_OP_INSERT:
                insert_params(op, a);
                *what = "inserting a session";
                return Q_INSERT;
        case STORE_OP_AUDIT:
                audit_params(op, a);
                *what = "writing an audit row";
                return Q_AUDIT;
        default:
                param_int(a, op->row_key);
                return op_update_params(op, a, what);
        }
}

bool pg_op_sent(const struct store_op *op) {
        return op->kind != STORE_OP_LIMIT;
}

int pg_op_send(struct pg_store *p, const struct store_op *op) {
        struct params a = {0};
        const char *what = NULL;
        int q = op_statement(op, &a, &what);

        assert(q >= 0);
        return q < 0 ? q : pg_send(p, q, &a, what);
}

static void copy_value(const PGresult *res, int column, char *to, size_t size) {
        snprintf(to, size, "%s", PQgetisnull(res, 0, column) ? "" : PQgetvalue(res, 0, column));
}

static bool value_true(const PGresult *res, int column) {
        return strcmp(PQgetvalue(res, 0, column), "t") == 0;
}

/* Q_SWITCH's answer: ok, live, end_reason, from_platform, kept, already. */
static int switch_result(const struct store_op *op, PGresult *res) {
        struct store_switch *sw = op->sw;
        _cleanup_free_ char *next = NULL;
        bool fits;

        sw->applied = 0;
        if (PQntuples(res) != 1)
                sw->outcome = STORE_SWITCH_GONE;
        else if (!value_true(res, 1)) {
                sw->outcome = STORE_SWITCH_ENDED;
                copy_value(res, 2, sw->end_reason, sizeof sw->end_reason);
        } else if (value_true(res, 5))
                sw->outcome = STORE_SWITCH_ALREADY;
        else if (value_true(res, 0)) {
                sw->outcome = STORE_SWITCH_APPLIED;
                sw->applied = 1;
                copy_value(res, 3, sw->from, sizeof sw->from);
        } else {
                /* Refused: the hour kept tells when one more fits. */
                sw->outcome = STORE_SWITCH_REFUSED;
                if (store_switch_window(PQgetvalue(res, 0, 4), sw->now, sw->max_per_hour, &fits, &next, &sw->retry_at) <
                    0)
                        return -ENOMEM;
        }
        return 0;
}

/* An operation's result: an update (or the copy) that changed no row is
 * -ENOENT, as in sqlite.c (a row that is not there, or already ended for
 * COPY), but for END and ACTIVITY. Several daemons write one table, and a
 * daemon's memory follows the others' changes only within the
 * notification's delay: another daemon may have ended the session first
 * (its end stands, with its reason, and this daemon learns of it), or the
 * leader may have purged a row long ended whose last touch is written
 * late. Such a write is moot, not a failure that would lose the unit's
 * other writes. */
int pg_op_result(struct pg_store *p, const struct store_op *op, PGresult *res) {
        struct params a = {0};
        const char *what = NULL;
        int r;

        (void) op_statement(op, &a, &what);
        if (op->kind == STORE_OP_SWITCH) {
                r = pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, what);
                return r < 0 ? r : switch_result(op, res);
        }
        r = pg_result_check(p->name, p->w.c, res, PGRES_COMMAND_OK, what);
        if (r < 0)
                return r;
        if (op->applied) { /* a compare-and-set that found another daemon's version is not a failure */
                *op->applied = atoi(PQcmdTuples(res)) > 0;
                return 0;
        }
        if (op->kind != STORE_OP_INSERT && op->kind != STORE_OP_AUDIT && op->kind != STORE_OP_END &&
            op->kind != STORE_OP_ACTIVITY && atoi(PQcmdTuples(res)) == 0)
                return -ENOENT;
        return 0;
}

static size_t next_sent(const struct store_uow *u, size_t i, size_t to) {
        while (i < to && !pg_op_sent(&u->ops[i]))
                i++;
        return i;
}

/* Reads a pipeline's results up to its sync: 0 or the first failure; i is
 * the first operation sent. */
static int pipeline_results(struct pg_store *p, const struct store_uow *u, size_t i, size_t to) {
        PGconn *c = p->w.c;
        int first = 0;

        for (;;) {
                PGresult *res = PQgetResult(c);
                ExecStatusType st;

                if (!res) { /* the end of one operation's results */
                        if (PQstatus(c) != CONNECTION_OK || i >= to)
                                return first < 0 ? first : -EIO;
                        i = next_sent(u, i + 1, to);
                        continue;
                }
                st = PQresultStatus(res);
                if (st == PGRES_PIPELINE_SYNC) {
                        PQclear(res);
                        return first;
                }
                if (first == 0 && i < to && st != PGRES_PIPELINE_ABORTED)
                        first = pg_op_result(p, &u->ops[i], res);
                PQclear(res);
        }
}

/* Runs u->ops[from..to) in one pipeline, one round trip for all of them:
 * 0, or the first failure (the server skips what follows a failure in a
 * pipeline; the caller rolls back). */
static int ops_pipeline(struct pg_store *p, const struct store_uow *u, size_t from, size_t to) {
        PGconn *c = p->w.c;
        size_t i = next_sent(u, from, to);
        int r = 0;

        if (i == to)
                return 0;
        if (!PQenterPipelineMode(c)) {
                pg_log_error(p->name, "entering pipeline mode", PQerrorMessage(c));
                return -EIO;
        }
        for (size_t k = i; k < to && r >= 0; k = next_sent(u, k + 1, to))
                r = pg_op_send(p, &u->ops[k]);
        if (r >= 0 && !PQpipelineSync(c)) {
                pg_log_error(p->name, "sending a unit of work", PQerrorMessage(c));
                r = -EIO;
        }
        if (r >= 0)
                r = pipeline_results(p, u, i, to);
        /* Fails only with results pending, on a broken connection (which
         * is then made again: pg_conn_ready()). */
        if (!PQexitPipelineMode(c) && r >= 0)
                r = -EIO;
        return r;
}

int pg_uow_apply(struct store *s, struct store_uow *u) {
        struct pg_store *p = pg(s);
        int r;

        if (u->error)
                return u->error;
        if (u->applied == u->n_ops)
                return 0;
        r = tx_begin(p, u);
        while (r >= 0 && u->applied < u->n_ops) {
                size_t to = u->applied + PG_PIPELINE_OPS < u->n_ops ? u->applied + PG_PIPELINE_OPS : u->n_ops;

                r = ops_pipeline(p, u, u->applied, to);
                if (r >= 0)
                        u->applied = to;
        }
        if (r < 0) {
                pg_tx_rollback(p);
                u->error = r;
                u->applied = u->n_ops;
        }
        return r;
}

/* What other daemons learn of an operation: 0 nothing, else its letter
 * and the row it names. */
static char change_letter(const struct store_op *op, int64_t *row_key) {
        *row_key = op->row_key;
        switch (op->kind) {
        case STORE_OP_INSERT:
                return 'c';
        case STORE_OP_COPY:
                *row_key = op->t2; /* the new row; the old one's END is an operation of its own */
                return 'c';
        case STORE_OP_END:
                return 'e';
        case STORE_OP_RENEWED:
                return 'r';
        case STORE_OP_PLATFORM:
        case STORE_OP_SWITCH:
                return 'p';
        case STORE_OP_SYNC:
                return 's';
        case STORE_OP_CLIENT:
                return 'u';
        default:
                return 0;
        }
}

static int notify_send(struct pg_store *p, const char *payload) {
        struct params a = {0};

        param_text(&a, payload);
        _cleanup_pqclear_ PGresult *res = pg_run(p, Q_NOTIFY, &a);
        return pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "NOTIFY");
}

static int notify_now(struct pg_store *p, const char *payload, void *ctx) {
        (void) ctx;
        return notify_send(p, payload);
}

/* NOTIFY sessiond_changes for the unit's changes, batched in payloads of
 * at most PG_NOTIFY_MAX bytes, each handed to send; with defer_created,
 * not its creations (STORE_OP_INSERT: announced after the commit,
 * pg_announce_created()). */
int pg_notify_unit(struct pg_store *p, const struct store_uow *u, bool defer_created, pg_notify_fn send, void *ctx) {
        char payload[PG_NOTIFY_MAX + 32];
        size_t head = (size_t) snprintf(payload, sizeof payload, "%s:", p->origin), len = head;
        int r;

        for (size_t i = 0; i < u->n_ops; i++) {
                char item[32];
                int64_t row_key;
                char k = change_letter(&u->ops[i], &row_key);
                int n;

                if (!k || (defer_created && u->ops[i].kind == STORE_OP_INSERT))
                        continue;
                if (u->ops[i].applied && !*u->ops[i].applied)
                        continue; /* a compare-and-set that another daemon's write beat: nothing changed */
                n = snprintf(item, sizeof item, "%s%c:%" PRId64, len > head ? "," : "", k, row_key);
                if (len + (size_t) n > PG_NOTIFY_MAX) {
                        r = send(p, payload, ctx);
                        if (r < 0)
                                return r;
                        len = head;
                        n = snprintf(item, sizeof item, "%c:%" PRId64, k, row_key);
                }
                memcpy(payload + len, item, (size_t) n + 1);
                len += (size_t) n;
        }
        return len > head ? send(p, payload, ctx) : 0;
}

/* ---- creations announced after their commit: the writer's side ---------------- */

/* Whether creations can wait for the listener (the store has one). */
static bool pg_announcer_present(struct pg_store *p) {
        bool r;

        pthread_mutex_lock(&p->announce_lock);
        r = p->announce_async != NULL;
        pthread_mutex_unlock(&p->announce_lock);
        return r;
}

/* The unit's creations, committed: queued for the listener, woken when
 * the queue was empty (it sends at most every PG_ANNOUNCE_MS anyway). Out
 * of memory, a creation goes unannounced: the others still find the
 * session by its token in the store (fleet_lookup). */
static void pg_announce_created(struct pg_store *p, const struct store_uow *u) {
        size_t before;

        pthread_mutex_lock(&p->announce_lock);
        before = p->n_announce;
        for (size_t i = 0; i < u->n_ops; i++) {
                if (u->ops[i].kind != STORE_OP_INSERT)
                        continue;
                if (p->n_announce == p->allocated_announce) {
                        size_t m = p->allocated_announce ? 2 * p->allocated_announce : 256;
                        int64_t *a = reallocarray(p->announce, m, sizeof *a);

                        if (!a) {
                                log_error("Store %s: out of memory; a creation is not announced to the other "
                                          "daemons.",
                                          p->name);
                                break;
                        }
                        p->announce = a;
                        p->allocated_announce = m;
                }
                p->announce[p->n_announce++] = u->ops[i].row_key;
        }
        if (before == 0 && p->n_announce > 0 && p->announce_async)
                uv_async_send(p->announce_async);
        pthread_mutex_unlock(&p->announce_lock);
}

/* Whether the only news of the unit for the others are creations: then
 * they wait for the listener. A unit that sends a NOTIFY in its
 * transaction anyway (an end, a sync write...) has taken the lock
 * already; its creations go with it, in order. */
static bool unit_only_creates(const struct store_uow *u) {
        bool creates = false;

        for (size_t i = 0; i < u->n_ops; i++) {
                int64_t row_key;
                char k = change_letter(&u->ops[i], &row_key);

                if (k && u->ops[i].kind != STORE_OP_INSERT)
                        return false;
                creates = creates || k;
        }
        return creates;
}

/* Whether the unit needs the per-user locks. */
static bool unit_has_users(const struct store_uow *u) {
        for (size_t i = 0; i < u->n_ops; i++)
                if (op_user(&u->ops[i]))
                        return true;
        return false;
}

/* The per-user locks first (inserts run earlier by a read took none: the
 * limit, counted here under the lock, sees every other daemon's committed
 * rows, which is what holds it), then what is left, the limits, the
 * notifications, COMMIT. */
static int uow_commit_once(struct store *s, struct store_uow *u) {
        struct pg_store *p = pg(s);
        bool defer = unit_only_creates(u) && pg_announcer_present(p), limits_run = false;
        int r = u->error;

        /* At most PG_PIPELINE_OPS statements in flight (a pipeline sent
         * whole without reading can deadlock with a server whose replies
         * fill the socket): larger units take the steps below. */
        if (r >= 0 && u->n_ops > 0 && u->n_ops + PG_PIPE_EXTRA <= PG_PIPELINE_OPS && u->applied == 0 && !u->wrote &&
            !pg_in_tx(p)) {
                bool blind = pg_unit_commits_blind(u);

                r = pg_writer_ready(p);
                if (r >= 0)
                        r = pg_unit_pipeline(p, u, blind, defer);
                if (blind && defer && (r >= 0 || PQstatus(p->w.c) != CONNECTION_OK))
                        pg_announce_created(p, u); /* committed, or perhaps (see below) */
                if (r < 0) {
                        pg_tx_rollback(p);
                        u->error = r;
                        u->applied = u->n_ops;
                        return r;
                }
                u->applied = u->n_ops;
                if (blind)
                        return 0;
                limits_run = true;
        } else if (r >= 0 && unit_has_users(u)) {
                r = tx_begin(p, u);
                if (r >= 0)
                        r = lock_users(p, u);
                if (r < 0) {
                        pg_tx_rollback(p);
                        u->error = r;
                        u->applied = u->n_ops;
                }
        }
        if (r >= 0)
                r = pg_uow_apply(s, u);
        if (r < 0)
                return r;
        if (!pg_in_tx(p)) {
                if (u->n_ops == 0 && !u->wrote)
                        return 0;
                log_error("Store %s: the connection was lost before a unit of work was committed; its writes "
                          "are lost.",
                          p->name);
                return -EIO;
        }
        r = limits_run ? 0 : run_limits(p, u);
        if (r >= 0)
                r = pg_notify_unit(p, u, defer, notify_now, NULL);
        if (r >= 0) {
                _cleanup_pqclear_ PGresult *res = PQexec(p->w.c, "COMMIT");

                r = pg_result_check(p->name, p->w.c, res, PGRES_COMMAND_OK, "COMMIT");
                if (r >= 0 && strcmp(PQcmdStatus(res), "COMMIT") != 0) {
                        log_error("Store %s: the transaction was rolled back at COMMIT.", p->name);
                        r = -EIO;
                }
                /* Also when COMMIT failed: a lost connection leaves it
                 * unknown whether it committed, and announcing a row that
                 * is not there costs the others a read that finds nothing. */
                if (defer)
                        pg_announce_created(p, u);
        }
        if (r < 0)
                pg_tx_rollback(p);
        return r;
}

/* A unit whose operations a read on the loop ran early (reads see the
 * open unit's writes) took its row locks before the users' locks, so it
 * can deadlock with another daemon's unit that holds a user's lock and
 * waits for one of those rows; PostgreSQL then aborts one of the two
 * (-EBUSY: deadlock or serialization failure). The writer runs such a
 * unit again from its first operation, the users' locks first this time,
 * so it waits its turn instead. A unit that purged cannot be run again
 * (its purge is not an operation) and fails. */
#define PG_UNIT_TRIES 3

int pg_uow_commit(struct store *s, struct store_uow *u) {
        int r = uow_commit_once(s, u);

        for (int i = 1; r == -EBUSY && !u->wrote && i < PG_UNIT_TRIES; i++) {
                log_notice("Store %s: a unit of work met another daemon's (deadlock); running it again.", pg(s)->name);
                u->error = 0;
                u->applied = 0;
                r = uow_commit_once(s, u);
        }
        /* The rows the engine asked to read after the commit
         * (store_read_after): on their own, outside the unit's
         * transaction, so that a failed read costs no write. */
        if (r >= 0 && (u->n_reads > 0 || u->n_hash_reads > 0))
                u->rows = pg_rows_read(pg(s), u);
        if (r >= 0)
                pg_keys_fetch_ahead(pg(s));
        return r;
}

void pg_rollback(struct store *s) {
        pg_tx_rollback(pg(s));
}

/* Purges run in the open unit's transaction (store.c marks the unit). */
static int purge(struct store *s, int q, int64_t before, int limit, const char *what) {
        struct pg_store *p = pg(s);
        struct params a = {0};
        int r = tx_begin(p, &s->open);

        if (r < 0)
                return r;
        param_int(&a, before);
        param_int(&a, limit);
        return pg_run_command(p, q, &a, what);
}

int pg_purge_sessions(struct store *s, int64_t before, int limit) {
        return purge(s, Q_PURGE_SESSIONS, before, limit, "purging ended sessions");
}

int pg_purge_audit(struct store *s, int64_t before, int limit) {
        return purge(s, Q_PURGE_AUDIT, before, limit, "purging audit rows");
}
