/* The SQLite backend's reads: sessions by row, token hash, id and user,
 * listings, the audit log, counts and the analytics queries (see sqlite.c
 * for the backend).
 *
 * They run on the loop with s->lock held, after store.c had the open unit's
 * operations applied, so they see every write made before them. Reads of
 * the hot paths use the prepared statements of sqlite-uow.c; operators'
 * queries (audit with its filters, analytics, quick_check) are prepared
 * when asked and finalized after, since they are rare. Rows are handed to
 * callbacks one at a time from the statement (never a whole listing in
 * memory here); a callback's negative return stops the walk and is
 * returned.
 */
#include "sqlite-internal.h"

/* ---- sessions ------------------------------------------------------------- */

int sqlite_max_row_key_locked(struct sqlite_store *s, int64_t *ret) {
        int rc = sqlite_query_int(s->db, "SELECT coalesce(max(row), 0) FROM sessions", ret);

        return rc == SQLITE_OK ? 0 : sqlite_fail(s, rc, "reading the largest row number");
}

int sqlite_session_get_switches_locked(struct sqlite_store *s, int64_t row_key, char **ret) {
        sqlite3_stmt *st = sqlite_stmt(s, STMT_SESSION_GET_SWITCHES);
        const char *v;
        int rc;

        sqlite3_bind_int64(st, 1, row_key);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
                sqlite3_reset(st);
                return -ENOENT;
        }
        if (rc != SQLITE_ROW) {
                sqlite3_reset(st);
                return sqlite_fail(s, rc, "reading platform switches");
        }
        v = (const char *) sqlite3_column_text(st, 0);
        *ret = strdup(v ? v : "[]");
        sqlite3_reset(st);
        return *ret ? 0 : -ENOMEM;
}

int sqlite_session_read_sync_locked(struct sqlite_store *s, struct store_sync_read *out) {
        sqlite3_stmt *st = sqlite_stmt(s, STMT_SESSION_GET_SYNC);
        const char *reason;
        int rc, n;

        out->data = NULL;
        out->size = 0;
        sqlite3_bind_int64(st, 1, out->row_key);
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                sqlite3_reset(st);
                return rc == SQLITE_DONE ? -ENOENT : sqlite_fail(s, rc, "reading sync state");
        }
        out->version = sqlite3_column_int64(st, 0);
        out->live = sqlite3_column_int(st, 2) != 0;
        reason = (const char *) sqlite3_column_text(st, 3);
        snprintf(out->end_reason, sizeof out->end_reason, "%s", out->live || !reason ? "" : reason);
        if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
                const void *b = sqlite3_column_blob(st, 1);
                n = sqlite3_column_bytes(st, 1);
                out->data = malloc((size_t) n + 1);
                if (!out->data) {
                        sqlite3_reset(st);
                        return -ENOMEM;
                }
                if (n > 0)
                        memcpy(out->data, b, (size_t) n);
                out->data[n] = '\0';
                out->size = (size_t) n;
        }
        sqlite3_reset(st);
        return 0;
}

static const char *column_text(sqlite3_stmt *st, int i) {
        return (const char *) sqlite3_column_text(st, i);
}

void sqlite_row_from_stmt(sqlite3_stmt *st, struct store_session *row, bool light) {
        const void *h;

        memset(row, 0, sizeof *row);
        row->row_key = sqlite3_column_int64(st, 0);
        row->id = column_text(st, 1);
        h = sqlite3_column_blob(st, 2);
        if (h && sqlite3_column_bytes(st, 2) == TOKEN_HASH_BYTES)
                memcpy(row->token_hash, h, TOKEN_HASH_BYTES);
        row->user_id = column_text(st, 3);
        row->platform_id = column_text(st, 4);
        row->created_at = sqlite3_column_int64(st, 5);
        row->last_activity = sqlite3_column_int64(st, 6);
        row->renewed_at = sqlite3_column_int64(st, 7);
        row->ended_at = sqlite3_column_int64(st, 8);
        row->end_reason = column_text(st, 9);
        row->fp_user_agent = (uint64_t) sqlite3_column_int64(st, 10);
        row->fp_ip = (uint64_t) sqlite3_column_int64(st, 11);
        row->fp_accept_language = (uint64_t) sqlite3_column_int64(st, 12);
        row->fp_accept_encoding = (uint64_t) sqlite3_column_int64(st, 13);
        if (!light) {
                row->ip = column_text(st, 14);
                row->user_agent = column_text(st, 15);
        }
        row->sync_version = sqlite3_column_int64(st, 16);
        if (!row->id)
                row->id = "";
        if (!row->user_id)
                row->user_id = "";
}

/* Steps through a select, handing rows to cb. */
static int stmt_each(struct sqlite_store *s, sqlite3_stmt *st, bool light, store_session_fn cb, void *userdata,
                     bool want_one) {
        struct store_session row;
        bool found = false;
        int rc, r = 0;

        for (;;) {
                rc = sqlite3_step(st);
                if (rc == SQLITE_DONE)
                        break;
                if (rc != SQLITE_ROW) {
                        r = sqlite_fail(s, rc, "reading sessions");
                        break;
                }
                found = true;
                sqlite_row_from_stmt(st, &row, light);
                r = cb(&row, userdata);
                if (r != 0)
                        break;
        }
        sqlite3_reset(st);
        if (r == 0 && want_one && !found)
                return -ENOENT;
        return r;
}

int sqlite_session_by_row_key_locked(struct sqlite_store *s, int64_t row_key, store_session_fn cb, void *userdata) {
        sqlite3_stmt *st = sqlite_stmt(s, STMT_SESSION_BY_ROWID);

        sqlite3_bind_int64(st, 1, row_key);
        return stmt_each(s, st, false, cb, userdata, true);
}

int sqlite_session_by_hash_locked(struct sqlite_store *s, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb,
                                  void *userdata) {
        sqlite3_stmt *st = sqlite_stmt(s, STMT_SESSION_BY_HASH);

        sqlite3_bind_blob(st, 1, hash, TOKEN_HASH_BYTES, SQLITE_STATIC);
        return stmt_each(s, st, false, cb, userdata, true);
}

int sqlite_session_by_id_locked(struct sqlite_store *s, const char *id, store_session_fn cb, void *userdata) {
        sqlite3_stmt *st = sqlite_stmt(s, STMT_SESSION_BY_ID);

        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        return stmt_each(s, st, false, cb, userdata, true);
}

int sqlite_sessions_each_locked(struct sqlite_store *s, const struct store_filter *f, store_session_fn cb,
                                void *userdata) {
        sqlite3_stmt *st = sqlite_stmt(s, f->live_only ? STMT_SESSIONS_LIVE : STMT_SESSIONS_ALL);

        sqlite3_bind_int64(st, 1, f->after_row_key);
        return stmt_each(s, st, f->light, cb, userdata, false);
}

int sqlite_sessions_ended_of_user_locked(struct sqlite_store *s, const char *user_id, int64_t after_row_key,
                                         store_session_fn cb, void *userdata) {
        sqlite3_stmt *st = sqlite_stmt(s, STMT_SESSIONS_USER_ENDED);

        sqlite3_bind_text(st, 1, user_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, after_row_key);
        return stmt_each(s, st, false, cb, userdata, false);
}

int sqlite_count_sessions_locked(struct sqlite_store *s, bool ended, int64_t *ret) {
        int rc = sqlite_query_int(s->db,
                                  ended ? "SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL"
                                        : "SELECT count(*) FROM sessions WHERE ended_at IS NULL",
                                  ret);
        return rc == SQLITE_OK ? 0 : sqlite_fail(s, rc, "counting sessions");
}

/* Prepares an ad-hoc statement (operators' queries are rare: not kept). */
static int query_prepare(struct sqlite_store *s, const char *sql, sqlite3_stmt **ret) {
        int rc = sqlite3_prepare_v2(s->db, sql, -1, ret, NULL);

        return rc == SQLITE_OK ? 0 : sqlite_fail(s, rc, "preparing a query");
}

/* One query of the audit. part: AUDIT_ALL the filter as it is (newest
 * first, or oldest first from the start); for a page after (a, b), oldest
 * first, AUDIT_SAME_TIME the rows at time a after id b, then AUDIT_LATER
 * those after time a: two index seeks, where one condition on (time, id)
 * would step over every row of second a (a burst writes thousands).
 *
 * Each part has one lower bound on time, the tighter of `since` and the
 * cursor's: given both (time >= since AND time > a), SQLite seeks on one of
 * them and checks the other on every row, and it sought on since (0 by
 * default) and stepped over every row older than the cursor: 16 to 28 ms
 * a page on 500,000 rows. */
enum { AUDIT_ALL, AUDIT_SAME_TIME, AUDIT_LATER };

/* The condition on time of a part and its value: one lower bound. */
static const char *audit_time_condition(const struct store_audit_filter *f, int part, int64_t *value) {
        if (part == AUDIT_SAME_TIME) {
                *value = f->after_time;
                return "time = ? AND id > ?";
        }
        if (part == AUDIT_LATER && f->after_time >= f->since) {
                *value = f->after_time;
                return "time > ?";
        }
        *value = f->since;
        return "time >= ?";
}

static int audit_query(struct sqlite_store *s, const struct store_audit_filter *f, int part, unsigned limit,
                       store_audit_fn cb, void *userdata, unsigned *n) {
        char sql[320];
        sqlite3_stmt *st = NULL;
        const char *cond;
        int64_t bound;
        int rc, r, i = 1;

        if (part == AUDIT_SAME_TIME && f->after_time < f->since)
                return 0; /* second a is before `since` */
        cond = audit_time_condition(f, part, &bound);
        snprintf(sql, sizeof sql, "SELECT %s FROM audit WHERE %s%s%s ORDER BY %s LIMIT ? OFFSET ?",
                 f->keys_only ? "id, time, NULL, NULL, NULL, NULL" : "id, time, kind, user_id, session_id, detail",
                 cond, f->user_id ? " AND user_id = ?" : "", f->kind ? " AND kind = ?" : "",
                 f->ascending ? "time, id" : "time DESC, id DESC");
        r = query_prepare(s, sql, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, i++, bound);
        if (part == AUDIT_SAME_TIME)
                sqlite3_bind_int64(st, i++, f->after_id);
        if (f->user_id)
                sqlite3_bind_text(st, i++, f->user_id, -1, SQLITE_STATIC);
        if (f->kind)
                sqlite3_bind_text(st, i++, f->kind, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, i++, limit);
        sqlite3_bind_int64(st, i, f->offset);
        r = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct store_audit_row row = {
                        .id = sqlite3_column_int64(st, 0),
                        .time = sqlite3_column_int64(st, 1),
                        .kind = column_text(st, 2),
                        .user_id = column_text(st, 3),
                        .session_id = column_text(st, 4),
                        .detail = column_text(st, 5),
                };
                if (!row.kind)
                        row.kind = "";
                (*n)++;
                r = cb(&row, userdata);
                if (r != 0)
                        break;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sqlite_fail(s, rc, "reading audit rows");
        sqlite3_finalize(st);
        return r;
}

int sqlite_audit_each_locked(struct sqlite_store *s, const struct store_audit_filter *f, store_audit_fn cb,
                             void *userdata) {
        unsigned n = 0;
        int r;

        if (!f->ascending)
                return audit_query(s, f, AUDIT_ALL, f->limit, cb, userdata, &n);
        r = audit_query(s, f, AUDIT_SAME_TIME, f->limit, cb, userdata, &n);
        if (r == 0 && n < f->limit)
                r = audit_query(s, f, AUDIT_LATER, f->limit - n, cb, userdata, &n);
        return r;
}

int sqlite_quick_check_locked(struct sqlite_store *s, struct store_maintenance *ret) {
        sqlite3_stmt *st = NULL;
        int rc, r;

        memset(ret, 0, sizeof *ret);
        r = query_prepare(s, "PRAGMA quick_check", &st);
        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                r = sqlite_fail(s, rc, "quick_check");
                sqlite3_finalize(st);
                return r;
        }
        snprintf(ret->message, sizeof ret->message, "%s", (const char *) sqlite3_column_text(st, 0));
        ret->ok = strcmp(ret->message, "ok") == 0;
        sqlite3_finalize(st);
        return 0;
}

int sqlite_probe_locked(struct sqlite_store *s) {
        int64_t v;
        int rc = sqlite_query_int(s->db, "SELECT max(row) FROM sessions", &v);

        return rc == SQLITE_OK ? 0 : sqlite_fail(s, rc, "probing the database");
}

int sqlite_count_created_locked(struct sqlite_store *s, int64_t since, int64_t bucket, uint64_t *counts, size_t n) {
        sqlite3_stmt *st = NULL;
        int rc, r;

        assert(bucket > 0);
        memset(counts, 0, n * sizeof *counts);
        r = query_prepare(s,
                          "SELECT (created_at - ?1) / ?2, count(*) - sum(end_reason IS 'rotated') FROM sessions "
                          "WHERE created_at >= ?1 GROUP BY 1",
                          &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, since);
        sqlite3_bind_int64(st, 2, bucket);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                int64_t b = sqlite3_column_int64(st, 0), c = sqlite3_column_int64(st, 1);

                if (b >= 0 && (uint64_t) b < n && c > 0)
                        counts[b] = (uint64_t) c;
        }
        r = rc == SQLITE_DONE ? 0 : sqlite_fail(s, rc, "counting created sessions");
        sqlite3_finalize(st);
        return r;
}

int sqlite_ended_durations_locked(struct sqlite_store *s, store_value_fn cb, void *userdata) {
        sqlite3_stmt *st = NULL;
        int rc, r;

        r = query_prepare(s,
                          "SELECT max(ended_at - created_at, 0) AS d FROM sessions "
                          "WHERE ended_at IS NOT NULL AND end_reason IS NOT 'rotated' ORDER BY d",
                          &st);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                if ((r = cb(sqlite3_column_int64(st, 0), userdata)) != 0)
                        break;
        if (r == 0 && rc != SQLITE_DONE)
                r = sqlite_fail(s, rc, "reading session durations");
        sqlite3_finalize(st);
        return r;
}

int sqlite_end_reasons_locked(struct sqlite_store *s, store_group_fn cb, void *userdata) {
        sqlite3_stmt *st = NULL;
        int rc, r;

        r = query_prepare(s,
                          "SELECT end_reason, count(*) FROM sessions WHERE ended_at IS NOT NULL "
                          "GROUP BY end_reason ORDER BY end_reason",
                          &st);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                if ((r = cb(column_text(st, 0), sqlite3_column_int64(st, 1), userdata)) != 0)
                        break;
        if (r == 0 && rc != SQLITE_DONE)
                r = sqlite_fail(s, rc, "counting end reasons");
        sqlite3_finalize(st);
        return r;
}
