/* The SQLite backend's statements and unit of work (see sqlite.c for the
 * backend, store.c for who calls what when).
 *
 * Every statement of the hot paths is prepared once
 * (SQLITE_PREPARE_PERSISTENT) when the store opens and reused;
 * sqlite_stmt() hands it out reset with its bindings cleared. A unit of
 * work (uow.h) is a list of operations: sqlite_unit_apply() runs the ones
 * not run yet in the open transaction (BEGIN IMMEDIATE, begun on the first),
 * so that a read on the loop sees the writes recorded before it, and
 * sqlite_unit_commit() runs the rest and commits, on the writer thread. An
 * operation that fails rolls the whole transaction back: the unit is lost
 * as a whole (u->error), never half committed. A full file system is often
 * a long WAL: the commit then checkpoints and tries the unit once more
 * (see sqlite_unit_commit()).
 */
#include "sqlite-internal.h"

static const char *const stmt_sql[_STMT_MAX] = {
        [STMT_BEGIN] = "BEGIN IMMEDIATE",
        [STMT_COMMIT] = "COMMIT",
        [STMT_ROLLBACK] = "ROLLBACK",
        [STMT_SESSION_INSERT] =
                "INSERT INTO sessions (id, token_hash, user_id, platform_id, created_at, last_activity, "
                "renewed_at, fp_user_agent, fp_ip, fp_accept_language, fp_accept_encoding, ip, user_agent, "
                "sync_data, sync_version, row, created_at_ms, last_activity_ms, renewed_at_ms) "
                "VALUES (?1, ?2, ?3, ?4, ?5 / 1000, ?6 / 1000, ?7 / 1000, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, "
                "?5 % 1000, ?6 % 1000, ?7 % 1000)",
        [STMT_SESSION_SET_ACTIVITY] =
                "UPDATE sessions SET last_activity = ?2 / 1000, last_activity_ms = ?2 % 1000 WHERE row = ?1",
        [STMT_SESSION_SET_RENEWED] =
                "UPDATE sessions SET renewed_at = ?2 / 1000, renewed_at_ms = ?2 % 1000, "
                "last_activity = max(last_activity * 1000 + last_activity_ms, ?3) / 1000, "
                "last_activity_ms = max(last_activity * 1000 + last_activity_ms, ?3) % 1000 WHERE row = ?1",
        [STMT_SESSION_END] = "UPDATE sessions SET ended_at = ?2 / 1000, ended_at_ms = ?2 % 1000, end_reason = ?3 "
                             "WHERE row = ?1 AND ended_at IS NULL",
        [STMT_SESSION_SET_CLIENT] =
                "UPDATE sessions SET fp_user_agent = coalesce(?2, fp_user_agent), fp_ip = coalesce(?3, fp_ip), "
                "fp_accept_language = coalesce(?4, fp_accept_language), "
                "fp_accept_encoding = coalesce(?5, fp_accept_encoding), ip = coalesce(?6, ip), "
                "user_agent = coalesce(?7, user_agent) WHERE row = ?1",
        [STMT_SESSION_COPY] =
                "INSERT INTO sessions (row, id, token_hash, user_id, platform_id, created_at, last_activity, "
                "renewed_at, fp_user_agent, fp_ip, fp_accept_language, fp_accept_encoding, ip, user_agent, "
                "sync_data, sync_version, platform_switches, created_at_ms, last_activity_ms, renewed_at_ms) "
                "SELECT ?5, ?2, ?3, user_id, platform_id, created_at, ?4 / 1000, renewed_at, fp_user_agent, fp_ip, "
                "fp_accept_language, fp_accept_encoding, ip, user_agent, sync_data, sync_version, "
                "platform_switches, created_at_ms, ?4 % 1000, renewed_at_ms "
                "FROM sessions WHERE row = ?1 AND ended_at IS NULL",
        [STMT_SESSION_SET_PLATFORM] = "UPDATE sessions SET platform_id = ?2, platform_switches = ?3 WHERE row = ?1",
        [STMT_SESSION_GET_SWITCHES] = "SELECT platform_switches FROM sessions WHERE row = ?1",
        [STMT_SESSION_SWITCH_READ] =
                "SELECT platform_id, platform_switches, ended_at IS NULL, end_reason FROM sessions WHERE row = ?1",
        [STMT_SESSION_GET_SYNC] =
                "SELECT sync_version, sync_data, ended_at IS NULL, end_reason FROM sessions WHERE row = ?1",
        [STMT_SESSION_SET_SYNC] = "UPDATE sessions SET sync_version = ?2, sync_data = ?3 "
                                  "WHERE row = ?1 AND ended_at IS NULL AND (?4 < 0 OR sync_version = ?4)",
        [STMT_SESSION_BY_ROWID] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE row = ?1",
        [STMT_SESSION_BY_HASH] =
                "SELECT " SESSION_COLUMNS " FROM sessions WHERE token_hash = ?1 AND ended_at IS NOT NULL",
        [STMT_SESSION_BY_ID] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE id = ?1",
        [STMT_SESSIONS_ALL] = "SELECT " SESSION_COLUMNS " FROM sessions WHERE row > ?1 ORDER BY row",
        [STMT_SESSIONS_LIVE] =
                "SELECT " SESSION_COLUMNS " FROM sessions WHERE ended_at IS NULL AND row > ?1 ORDER BY row",
        [STMT_SESSIONS_USER_ENDED] =
                "SELECT " SESSION_COLUMNS
                " FROM sessions WHERE user_id = ?1 AND ended_at IS NOT NULL AND row > ?2 ORDER BY row",
        [STMT_AUDIT_INSERT] = "INSERT INTO audit (time, kind, user_id, session_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        [STMT_PURGE_SESSIONS] =
                "DELETE FROM sessions WHERE row IN (SELECT row FROM sessions WHERE ended_at IS NOT NULL "
                "AND ended_at <= ?1 / 1000 AND ended_at * 1000 + ended_at_ms < ?1 ORDER BY ended_at LIMIT ?2)",
        [STMT_PURGE_AUDIT] =
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE time < ?1 ORDER BY time LIMIT ?2)",
};
int sqlite_errno(int rc) {
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_CANTOPEN:
                return -ENOENT;
        case SQLITE_TOOBIG:
                return -E2BIG;
        default:
                return -EIO;
        }
}

int sqlite_fail(struct sqlite_store *s, int rc, const char *what) {
        log_error("Store %s: %s failed: %s", s->path, what, sqlite3_errmsg(s->db));
        return sqlite_errno(rc);
}

sqlite3_stmt *sqlite_stmt(struct sqlite_store *s, int which) {
        sqlite3_stmt *st = s->stmt[which];

        assert(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return st;
}

/* Runs a statement that returns no rows; leaves it reset. */
int sqlite_stmt_done(struct sqlite_store *s, sqlite3_stmt *st, const char *what) {
        int rc = sqlite3_step(st);

        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
                return sqlite_fail(s, rc, what);
        return 0;
}

int sqlite_exec_simple(sqlite3 *db, const char *sql) {
        return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

int sqlite_query_int(sqlite3 *db, const char *sql, int64_t *ret) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return rc;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret = sqlite3_column_int64(st, 0);
                rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
                *ret = 0;
                rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
        return rc;
}
int sqlite_prepare_all(struct sqlite_store *s) {
        for (int i = 0; i < _STMT_MAX; i++) {
                int rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i], NULL);
                if (rc != SQLITE_OK)
                        return sqlite_fail(s, rc, "preparing a statement");
        }
        return 0;
}

/* ---- running operations (s->lock held) ---------------------------------------- */

bool sqlite_in_transaction(const struct sqlite_store *s) {
        return !sqlite3_get_autocommit(s->db);
}

static int changed_or_enoent(struct sqlite_store *s) {
        return sqlite3_changes(s->db) > 0 ? 0 : -ENOENT;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v) {
        if (v)
                sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, i);
}

static void bind_fp(sqlite3_stmt *st, int i, uint64_t v) {
        if (v)
                sqlite3_bind_int64(st, i, (int64_t) v);
        else
                sqlite3_bind_null(st, i);
}

static void bind_blob_or_null(sqlite3_stmt *st, int i, const void *data, size_t size) {
        if (data)
                sqlite3_bind_blob(st, i, data, (int) size, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, i);
}

static int apply_insert(struct sqlite_store *s, const struct store_op *op) {
        sqlite3_stmt *st = sqlite_stmt(s, STMT_SESSION_INSERT);
        const struct store_session *row = &op->row;

        sqlite3_bind_text(st, 1, row->id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, row->token_hash, TOKEN_HASH_BYTES, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, row->user_id, -1, SQLITE_STATIC);
        bind_text_or_null(st, 4, row->platform_id);
        sqlite3_bind_int64(st, 5, row->created_at);
        sqlite3_bind_int64(st, 6, row->last_activity);
        sqlite3_bind_int64(st, 7, row->renewed_at);
        bind_fp(st, 8, row->fp_user_agent);
        bind_fp(st, 9, row->fp_ip);
        bind_fp(st, 10, row->fp_accept_language);
        bind_fp(st, 11, row->fp_accept_encoding);
        bind_text_or_null(st, 12, row->ip);
        bind_text_or_null(st, 13, row->user_agent);
        bind_blob_or_null(st, 14, op->blob, op->blob_size);
        sqlite3_bind_int64(st, 15, row->sync_version);
        sqlite3_bind_int64(st, 16, op->row_key);
        return sqlite_stmt_done(s, st, "inserting a session");
}

static int apply_update(struct sqlite_store *s, const struct store_op *op) {
        sqlite3_stmt *st;
        const char *what;
        int r;

        switch (op->kind) {
        case STORE_OP_ACTIVITY:
                st = sqlite_stmt(s, STMT_SESSION_SET_ACTIVITY);
                sqlite3_bind_int64(st, 2, op->t1);
                what = "updating last_activity";
                break;
        case STORE_OP_RENEWED:
                st = sqlite_stmt(s, STMT_SESSION_SET_RENEWED);
                sqlite3_bind_int64(st, 2, op->t1);
                sqlite3_bind_int64(st, 3, op->t2);
                what = "renewing a session";
                break;
        case STORE_OP_END:
                st = sqlite_stmt(s, STMT_SESSION_END);
                sqlite3_bind_int64(st, 2, op->t1);
                sqlite3_bind_text(st, 3, op->s1, -1, SQLITE_STATIC);
                what = "ending a session";
                break;
        case STORE_OP_CLIENT:
                st = sqlite_stmt(s, STMT_SESSION_SET_CLIENT);
                bind_fp(st, 2, op->row.fp_user_agent);
                bind_fp(st, 3, op->row.fp_ip);
                bind_fp(st, 4, op->row.fp_accept_language);
                bind_fp(st, 5, op->row.fp_accept_encoding);
                bind_text_or_null(st, 6, op->row.ip);
                bind_text_or_null(st, 7, op->row.user_agent);
                what = "recording a client change";
                break;
        case STORE_OP_COPY:
                st = sqlite_stmt(s, STMT_SESSION_COPY);
                sqlite3_bind_text(st, 2, op->s1, -1, SQLITE_STATIC);
                sqlite3_bind_blob(st, 3, op->row.token_hash, TOKEN_HASH_BYTES, SQLITE_STATIC);
                sqlite3_bind_int64(st, 4, op->t1);
                sqlite3_bind_int64(st, 5, op->t2);
                what = "copying a session";
                break;
        case STORE_OP_PLATFORM:
                st = sqlite_stmt(s, STMT_SESSION_SET_PLATFORM);
                bind_text_or_null(st, 2, op->s1);
                bind_text_or_null(st, 3, op->s2);
                what = "switching the platform";
                break;
        case STORE_OP_SYNC:
                st = sqlite_stmt(s, STMT_SESSION_SET_SYNC);
                sqlite3_bind_int64(st, 2, op->t1);
                bind_blob_or_null(st, 3, op->blob, op->blob_size);
                sqlite3_bind_int64(st, 4, op->t2);
                what = "writing sync state";
                break;
        default:
                assert(false);
                return -EINVAL;
        }
        sqlite3_bind_int64(st, 1, op->row_key);
        r = sqlite_stmt_done(s, st, what);
        if (r >= 0 && op->applied) { /* a compare-and-set that found another version is not a failure */
                *op->applied = sqlite3_changes(s->db) > 0;
                return 0;
        }
        return r < 0 ? r : changed_or_enoent(s);
}

static int apply_audit(struct sqlite_store *s, const struct store_op *op) {
        sqlite3_stmt *st = sqlite_stmt(s, STMT_AUDIT_INSERT);

        sqlite3_bind_int64(st, 1, op->t1);
        sqlite3_bind_text(st, 2, op->s1, -1, SQLITE_STATIC);
        bind_text_or_null(st, 3, op->s2);
        bind_text_or_null(st, 4, op->s3);
        sqlite3_bind_text(st, 5, op->blob ? op->blob : "{}", -1, SQLITE_STATIC);
        return sqlite_stmt_done(s, st, "writing an audit row");
}

static void copy_column(sqlite3_stmt *st, int i, char *to, size_t size) {
        const char *v = (const char *) sqlite3_column_text(st, i);

        snprintf(to, size, "%s", v ? v : "");
}

/* STORE_OP_SWITCH: one writer, so the row read here is the row written. */
static int switch_decide(struct sqlite_store *s, const struct store_op *op, char **next) {
        struct store_switch *sw = op->sw;
        sqlite3_stmt *st = sqlite_stmt(s, STMT_SESSION_SWITCH_READ);
        int rc, r = 0;

        sqlite3_bind_int64(st, 1, op->row_key);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                sw->outcome = STORE_SWITCH_GONE;
        else if (rc != SQLITE_ROW)
                r = sqlite_fail(s, rc, "reading platform switches");
        else if (!sqlite3_column_int(st, 2)) {
                sw->outcome = STORE_SWITCH_ENDED;
                copy_column(st, 3, sw->end_reason, sizeof sw->end_reason);
        } else {
                bool fits = false;

                copy_column(st, 0, sw->from, sizeof sw->from);
                if (strcmp(sw->from, op->s1) == 0)
                        sw->outcome = STORE_SWITCH_ALREADY;
                else {
                        r = store_switch_window((const char *) sqlite3_column_text(st, 1), sw->now, sw->max_per_hour,
                                                &fits, next, &sw->retry_at);
                        sw->outcome = fits ? STORE_SWITCH_APPLIED : STORE_SWITCH_REFUSED;
                }
        }
        sqlite3_reset(st);
        return r;
}

static int apply_switch(struct sqlite_store *s, const struct store_op *op) {
        _cleanup_free_ char *next = NULL, *detail = NULL;
        struct store_switch *sw = op->sw;
        sqlite3_stmt *st;
        int r;

        sw->applied = 0;
        r = switch_decide(s, op, &next);
        if (r < 0 || sw->outcome != STORE_SWITCH_APPLIED)
                return r < 0 ? r : 0;
        st = sqlite_stmt(s, STMT_SESSION_SET_PLATFORM);
        sqlite3_bind_int64(st, 1, op->row_key);
        sqlite3_bind_text(st, 2, op->s1, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, next, -1, SQLITE_STATIC);
        r = sqlite_stmt_done(s, st, "switching the platform");
        if (r >= 0 && op->s2) {
                detail = store_switch_audit_detail(sw->from, op->s1);
                if (!detail)
                        return -ENOMEM;
                r = apply_audit(s, &(struct store_op){.kind = STORE_OP_AUDIT,
                                                      .t1 = sw->now,
                                                      .s1 = "platform_switched",
                                                      .s2 = op->s2,
                                                      .s3 = op->s3,
                                                      .blob = detail});
        }
        if (r >= 0)
                sw->applied = 1;
        return r;
}

static int op_apply(struct sqlite_store *s, const struct store_op *op) {
        switch (op->kind) {
        case STORE_OP_LIMIT:
                return 0; /* one daemon: its engine enforced the limit (store.h) */
        case STORE_OP_INSERT:
                return apply_insert(s, op);
        case STORE_OP_AUDIT:
                return apply_audit(s, op);
        case STORE_OP_SWITCH:
                return apply_switch(s, op);
        default:
                return apply_update(s, op);
        }
}

/* Ends the open transaction without keeping anything. */
void sqlite_rollback_locked(struct sqlite_store *s) {
        if (sqlite_in_transaction(s))
                (void) sqlite_stmt_done(s, sqlite_stmt(s, STMT_ROLLBACK), "ROLLBACK");
}

/* Runs the operations of u that have not run yet, in the open transaction
 * (begun here if needed). On failure everything is rolled back and the
 * unit is lost: u->error. */
int sqlite_unit_apply(struct sqlite_store *s, struct store_uow *u) {
        int r = 0;

        if (u->error)
                return u->error;
        for (; u->applied < u->n_ops; u->applied++) {
                if (!sqlite_in_transaction(s)) {
                        r = sqlite_stmt_done(s, sqlite_stmt(s, STMT_BEGIN), "BEGIN");
                        if (r < 0)
                                break;
                }
                r = op_apply(s, &u->ops[u->applied]);
                if (r < 0)
                        break;
        }
        if (r < 0) {
                sqlite_rollback_locked(s);
                u->error = r;
                u->applied = u->n_ops;
        }
        return r;
}

/* Runs what is left of u and commits it. */
static int uow_commit_once(struct sqlite_store *s, struct store_uow *u) {
        int r = sqlite_unit_apply(s, u);

        if (r >= 0 && sqlite_in_transaction(s)) {
                r = sqlite_stmt_done(s, sqlite_stmt(s, STMT_COMMIT), "COMMIT");
                if (r < 0)
                        sqlite_rollback_locked(s);
        }
        return r;
}

/* A full file system is often a long WAL on a small disk: the pages it
 * holds are mostly copies of pages the database file already has room
 * for. So on -ENOSPC the WAL is copied into the database and truncated, the
 * threshold of the next start-over is taken down to the free space, and
 * the unit runs once more from its first operation (a unit that purged
 * cannot: its purge ran outside the operation list). */
int sqlite_unit_commit(struct sqlite_store *s, struct store_uow *u) {
        int r = uow_commit_once(s, u);

        if (r != -ENOSPC || u->wrote || s->memory)
                return r;
        if (sqlite_checkpoint_locked(s) < 0)
                return r;
        sqlite_space_update(s);
        log_notice("Store %s: the file system was full; the WAL was copied into the database and the "
                   "writes tried again.",
                   s->path);
        u->error = 0;
        u->applied = 0;
        r = uow_commit_once(s, u);
        if (r == -ENOSPC)
                /* The blocks the failed try took stay with the WAL file,
                 * where a smaller write would then fit while a larger one
                 * does not: give them back, so that a full disk refuses
                 * every write that needs room. */
                (void) sqlite_checkpoint_locked(s);
        return r;
}
