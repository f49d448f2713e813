/* The PostgreSQL backend's reads (DESIGN 8; postgres-internal.h lists the
 * backend's files): sessions by key, token hash or id, listings, the audit,
 * the analytics' aggregates, maintenance and the tables' room. Reads run on
 * the writing connection under s->lock (in the open unit's transaction if
 * there is one: they see its writes), but the tables' room, measured on the
 * auxiliary connection (the metrics ask without the lock).
 *
 * Reads that may return many rows (listings, loading at open) are fetched
 * in pages of PG_PAGE_ROWS by row number, never as one result, so memory
 * stays bounded and a read's callback may read again on the connection.
 */
#include "postgres-internal.h"

#include <errno.h>
#include <string.h>

#include "log.h"

/* ---- reads --------------------------------------------------------------------------------- */

/* The connection, ready for a read: in the open unit's transaction, or
 * (re)connected. */
static int read_ready(struct pg_store *p) {
        return pg_in_tx(p) ? 0 : pg_writer_ready(p);
}

static int hexval(char c) {
        return c >= '0' && c <= '9'   ? c - '0'
               : c >= 'a' && c <= 'f' ? c - 'a' + 10
               : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                      : -1;
}

/* A bytea in hex output ("\x0102...") into exactly n bytes; false if it is not that. */
static bool bytea_exact(const char *v, uint8_t *out, size_t n) {
        if (strncmp(v, "\\x", 2) != 0 || strlen(v + 2) != 2 * n)
                return false;
        v += 2;
        for (size_t i = 0; i < n; i++) {
                int hi = hexval(v[2 * i]), lo = hexval(v[2 * i + 1]);

                if (hi < 0 || lo < 0)
                        return false;
                out[i] = (uint8_t) (hi << 4 | lo);
        }
        return true;
}

/* Row i of a SESSION_COLUMNS result (strings borrowed from res). */
static void row_from_result(const PGresult *res, int i, struct store_session *row, bool light) {
        memset(row, 0, sizeof *row);
        row->row_key = pg_value_int(res, i, 0);
        row->id = PQgetvalue(res, i, 1);
        (void) bytea_exact(PQgetvalue(res, i, 2), row->token_hash, TOKEN_HASH_BYTES);
        row->user_id = PQgetvalue(res, i, 3);
        row->platform_id = pg_value_or_null(res, i, 4);
        row->created_at = pg_value_int(res, i, 5);
        row->last_activity = pg_value_int(res, i, 6);
        row->renewed_at = pg_value_int(res, i, 7);
        row->ended_at = pg_value_int(res, i, 8);
        row->end_reason = pg_value_or_null(res, i, 9);
        row->fp_user_agent = (uint64_t) pg_value_int(res, i, 10);
        row->fp_ip = (uint64_t) pg_value_int(res, i, 11);
        row->fp_accept_language = (uint64_t) pg_value_int(res, i, 12);
        row->fp_accept_encoding = (uint64_t) pg_value_int(res, i, 13);
        if (!light) {
                row->ip = pg_value_or_null(res, i, 14);
                row->user_agent = pg_value_or_null(res, i, 15);
        }
        row->sync_version = pg_value_int(res, i, 16);
}

/* Hands the rows of res to cb: 0, cb's non-zero value, or -ENOENT for
 * none when want_one. *last: the last row handed. */
static int result_each(const PGresult *res, bool light, store_session_fn cb, void *userdata, bool want_one,
                       int64_t *last) {
        struct store_session row;
        int n = PQntuples(res), r = 0;

        for (int i = 0; i < n && r == 0; i++) {
                row_from_result(res, i, &row, light);
                if (last)
                        *last = row.row_key;
                r = cb(&row, userdata);
        }
        return r == 0 && want_one && n == 0 ? -ENOENT : r;
}

/* A query for one row by a parameter. */
static int session_one(struct store *s, int q, struct params *a, store_session_fn cb, void *userdata) {
        struct pg_store *p = pg(s);
        int r = read_ready(p);

        if (r < 0)
                return r;
        _cleanup_pqclear_ PGresult *res = pg_run(p, q, a);
        r = pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "reading a session");
        return r < 0 ? r : result_each(res, false, cb, userdata, true, NULL);
}

/* ---- rows read after a commit (store_read_after) ------------------------------------------ */

struct pg_row_index {
        int64_t row_key;
        int index; /* in res, -1: not there */
};

struct pg_rows {
        PGresult *res;  /* by row key */
        PGresult *hres; /* by token hash */
        uint8_t (*hashes)[TOKEN_HASH_BYTES];
        size_t n, n_hashes;
        struct pg_row_index keys[]; /* by row_key: every key asked for */
};

static int row_index_cmp(const void *a, const void *b) {
        int64_t x = ((const struct pg_row_index *) a)->row_key, y = ((const struct pg_row_index *) b)->row_key;

        return x < y ? -1 : x > y;
}

void pg_rows_free(void *rows) {
        struct pg_rows *x = rows;

        if (!x)
                return;
        PQclear(x->res);
        PQclear(x->hres);
        free(x->hashes);
        free(x);
}

/* A PostgreSQL array literal of row keys, "{k1,k2,...}"; NULL: no memory. */
static char *keys_array_text(const int64_t *keys, size_t n) {
        char *arr = malloc(n * 22 + 3);
        size_t len = 0;

        if (!arr)
                return NULL;
        arr[len++] = '{';
        for (size_t i = 0; i < n; i++)
                len += (size_t) sprintf(arr + len, "%s%" PRId64, i ? "," : "", keys[i]);
        arr[len++] = '}';
        arr[len] = '\0';
        return arr;
}

static int rows_by_key(struct pg_store *p, struct pg_rows *x, const int64_t *keys, size_t n) {
        _cleanup_free_ char *arr = keys_array_text(keys, n);
        struct params a = {0};

        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                x->keys[i] = (struct pg_row_index){.row_key = keys[i], .index = -1};
        x->n = n;
        qsort(x->keys, n, sizeof x->keys[0], row_index_cmp);
        param_text(&a, arr);
        x->res = pg_run(p, Q_BY_ROWIDS, &a);
        if (pg_result_check(p->name, p->w.c, x->res, PGRES_TUPLES_OK, "reading sessions other daemons changed") < 0)
                return -EIO;
        for (int i = 0; i < PQntuples(x->res); i++) {
                struct pg_row_index key = {.row_key = pg_value_int(x->res, i, 0)}, *f;

                f = bsearch(&key, x->keys, n, sizeof x->keys[0], row_index_cmp);
                if (f)
                        f->index = i;
        }
        return 0;
}

static int rows_by_hash(struct pg_store *p, struct pg_rows *x, const uint8_t (*hashes)[TOKEN_HASH_BYTES], size_t n) {
        _cleanup_free_ char *arr = malloc(n * (2 * TOKEN_HASH_BYTES + 8) + 3);
        struct params a = {0};
        size_t len = 0;

        x->hashes = malloc(n * sizeof *x->hashes);
        if (!arr || !x->hashes)
                return -ENOMEM;
        memcpy(x->hashes, hashes, n * sizeof *x->hashes);
        x->n_hashes = n;
        arr[len++] = '{';
        for (size_t i = 0; i < n; i++) {
                len += (size_t) sprintf(arr + len, "%s\"\\\\x", i ? "," : "");
                for (size_t k = 0; k < TOKEN_HASH_BYTES; k++)
                        len += (size_t) sprintf(arr + len, "%02x", hashes[i][k]);
                arr[len++] = '"';
        }
        arr[len++] = '}';
        arr[len] = '\0';
        param_text(&a, arr);
        x->hres = pg_run(p, Q_BY_HASHES, &a);
        return pg_result_check(p->name, p->w.c, x->hres, PGRES_TUPLES_OK, "reading sessions by token") < 0 ? -EIO : 0;
}

/* Reads the unit's reads (store_read_after, store_read_after_hash) in one
 * statement each, on the writer's turn, after the unit's commit: other
 * daemons' changes, and tokens memory did not know, that the engine
 * learns without reading on the loop (fleet.c). A notification names up
 * to a thousand rows (a DestroyUser of 50,000 sessions: about sixty), so
 * that is one round trip for each, not one for each row. NULL on a
 * failure (logged): the engine then reads them itself. */
struct pg_rows *pg_rows_read(struct pg_store *p, const struct store_uow *u) {
        struct pg_rows *x = calloc(1, sizeof *x + u->n_reads * sizeof x->keys[0]);
        int r = x ? read_ready(p) : -ENOMEM;

        if (r >= 0 && u->n_reads > 0)
                r = rows_by_key(p, x, u->reads, u->n_reads);
        if (r >= 0 && u->n_hash_reads > 0)
                r = rows_by_hash(p, x, (const uint8_t(*)[TOKEN_HASH_BYTES]) u->hash_reads, u->n_hash_reads);
        if (r < 0) {
                pg_rows_free(x);
                return NULL;
        }
        return x;
}

int pg_rows_find(void *rows, int64_t row_key, store_session_fn cb, void *userdata) {
        struct pg_rows *x = rows;
        struct pg_row_index key = {.row_key = row_key}, *f;
        struct store_session row;

        f = x->n ? bsearch(&key, x->keys, x->n, sizeof x->keys[0], row_index_cmp) : NULL;
        if (!f)
                return -EAGAIN; /* not asked for */
        if (f->index < 0)
                return -ENOENT;
        row_from_result(x->res, f->index, &row, false);
        return cb(&row, userdata);
}

int pg_rows_find_hash(void *rows, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb, void *userdata) {
        struct pg_rows *x = rows;
        struct store_session row;
        bool asked = false, found = false;
        int r = 0;

        for (size_t i = 0; i < x->n_hashes && !asked; i++)
                asked = memcmp(x->hashes[i], hash, TOKEN_HASH_BYTES) == 0;
        if (!asked)
                return -EAGAIN;
        for (int i = 0; i < PQntuples(x->hres) && r == 0; i++) {
                row_from_result(x->hres, i, &row, false);
                if (memcmp(row.token_hash, hash, TOKEN_HASH_BYTES) != 0)
                        continue;
                found = true;
                r = cb(&row, userdata);
        }
        return found ? r : -ENOENT;
}

int pg_session_by_row_key(struct store *s, int64_t row_key, store_session_fn cb, void *userdata) {
        struct params a = {0};

        param_int(&a, row_key);
        return session_one(s, Q_BY_ROWID, &a, cb, userdata);
}

/* Rows by key, one statement for all of them (a page of ListUser: the
 * user's live rows are known by key). */
int pg_sessions_by_row_keys(struct store *s, const int64_t *keys, size_t n, store_session_fn cb, void *userdata) {
        struct pg_store *p = pg(s);
        _cleanup_free_ char *arr = NULL;
        struct params a = {0};
        int r = read_ready(p);

        if (r < 0 || n == 0)
                return r;
        arr = keys_array_text(keys, n);
        if (!arr)
                return -ENOMEM;
        param_text(&a, arr);
        _cleanup_pqclear_ PGresult *res = pg_run(p, Q_BY_ROWIDS, &a);
        r = pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "reading sessions");
        return r < 0 ? r : result_each(res, false, cb, userdata, false, NULL);
}

int pg_session_by_hash(struct store *s, const uint8_t hash[TOKEN_HASH_BYTES], store_session_fn cb, void *userdata) {
        struct params a = {0};

        param_bytes(&a, hash, TOKEN_HASH_BYTES);
        return session_one(s, Q_BY_HASH, &a, cb, userdata);
}

int pg_session_by_id(struct store *s, const char *id, store_session_fn cb, void *userdata) {
        struct params a = {0};

        param_text(&a, id);
        return session_one(s, Q_BY_ID, &a, cb, userdata);
}

/* Pages of PG_PAGE_ROWS rows after a row number: q's last two parameters
 * are the row to start after and the page's size. */
int pg_session_pages(struct store *s, int q, const char *user_id, int64_t after, bool light, store_session_fn cb,
                     void *userdata) {
        struct pg_store *p = pg(s);
        int r = 0, n;

        do {
                struct params a = {0};
                int64_t last = after;

                r = read_ready(p);
                if (r < 0)
                        return r;
                if (user_id)
                        param_text(&a, user_id);
                param_int(&a, after);
                param_int(&a, PG_PAGE_ROWS);
                _cleanup_pqclear_ PGresult *res = pg_run(p, q, &a);
                r = pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "reading sessions");
                if (r < 0)
                        return r;
                n = PQntuples(res);
                r = result_each(res, light, cb, userdata, false, &last);
                after = last;
        } while (r == 0 && n == PG_PAGE_ROWS);
        return r;
}

int pg_sessions_each(struct store *s, const struct store_filter *f, store_session_fn cb, void *userdata) {
        int q = f->live_only ? (f->light ? Q_LIVE_LIGHT : Q_LIVE) : (f->light ? Q_ALL_LIGHT : Q_ALL);

        return pg_session_pages(s, q, NULL, f->after_row_key, f->light, cb, userdata);
}

int pg_sessions_ended_of_user_after(struct store *s, const char *user_id, int64_t after_row_key, store_session_fn cb,
                                    void *userdata) {
        return pg_session_pages(s, Q_USER_ENDED, user_id, after_row_key, false, cb, userdata);
}

/* A read of one row by its key; res is the caller's to clear. -ENOENT: none. */
static int read_by_row_key(struct store *s, int q, int64_t row_key, const char *what, PGresult **ret) {
        struct pg_store *p = pg(s);
        struct params a = {0};
        int r = read_ready(p);

        if (r < 0)
                return r;
        param_int(&a, row_key);
        _cleanup_pqclear_ PGresult *res = pg_run(p, q, &a);
        r = pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, what);
        if (r >= 0 && PQntuples(res) == 0)
                r = -ENOENT;
        if (r < 0)
                return r;
        *ret = TAKE_PTR(res);
        return 0;
}

int pg_session_get_switches(struct store *s, int64_t row_key, char **ret) {
        _cleanup_pqclear_ PGresult *res = NULL;
        int r = read_by_row_key(s, Q_GET_SWITCHES, row_key, "reading platform switches", &res);

        if (r < 0)
                return r;
        *ret = strdup(PQgetisnull(res, 0, 0) ? "[]" : PQgetvalue(res, 0, 0));
        return *ret ? 0 : -ENOMEM;
}

int pg_session_read_sync(struct store *s, struct store_sync_read *out) {
        _cleanup_pqclear_ PGresult *res = NULL;
        _cleanup_(pqfreememp) unsigned char *b = NULL;
        const char *reason;
        size_t n = 0;
        int r;

        out->data = NULL;
        out->size = 0;
        r = read_by_row_key(s, Q_GET_SYNC, out->row_key, "reading sync state", &res);
        if (r < 0)
                return r;
        out->version = pg_value_int(res, 0, 0);
        out->live = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
        reason = pg_value_or_null(res, 0, 3);
        snprintf(out->end_reason, sizeof out->end_reason, "%s", out->live || !reason ? "" : reason);
        if (PQgetisnull(res, 0, 1))
                return 0;
        b = PQunescapeBytea((const unsigned char *) PQgetvalue(res, 0, 1), &n);
        if (!b)
                return -ENOMEM;
        out->data = malloc(n + 1);
        if (!out->data)
                return -ENOMEM;
        memcpy(out->data, b, n);
        out->data[n] = '\0';
        out->size = n;
        return 0;
}

/* A read of one number with a prepared statement. */
static int read_int(struct store *s, int q, const char *what, int64_t *ret) {
        struct pg_store *p = pg(s);
        int r = read_ready(p);

        if (r < 0)
                return r;
        _cleanup_pqclear_ PGresult *res = pg_run(p, q, NULL);
        r = pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, what);
        if (r < 0)
                return r;
        *ret = PQntuples(res) > 0 ? pg_value_int(res, 0, 0) : 0;
        return 0;
}

int pg_count_sessions(struct store *s, bool ended, int64_t *ret) {
        return read_int(s, ended ? Q_COUNT_ENDED : Q_COUNT_LIVE, "counting sessions", ret);
}

int pg_probe(struct store *s) {
        int64_t v;

        return read_int(s, Q_PROBE, "probing the database", &v);
}

/* An ad-hoc query with text parameters (operators' queries are rare: not
 * prepared). */
static int query(struct store *s, const char *sql, const struct params *a, const char *what, PGresult **ret) {
        struct pg_store *p = pg(s);
        PGresult *res;
        int r = read_ready(p);

        if (r < 0)
                return r;
        res = PQexecParams(p->w.c, sql, a ? a->n : 0, NULL, a ? a->v : NULL, NULL, NULL, 0);
        r = pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, what);
        if (r < 0) {
                PQclear(res);
                return r;
        }
        *ret = res;
        return 0;
}

/* As sqlite.c's audit_query(): one query of the audit, the whole filter
 * (AUDIT_ALL), or for a page after (a, b) oldest first the rows at time a
 * after id b (AUDIT_SAME_TIME) then those after time a (AUDIT_LATER). */
enum { AUDIT_ALL, AUDIT_SAME_TIME, AUDIT_LATER };

static int audit_query(struct store *s, const struct store_audit_filter *f, int part, unsigned limit, store_audit_fn cb,
                       void *userdata, unsigned *n) {
        _cleanup_pqclear_ PGresult *res = NULL;
        struct params a = {0};
        char sql[512], cond[160] = "";
        int r;

        param_int(&a, f->since);
        if (f->user_id) {
                param_text(&a, f->user_id);
                snprintf(cond + strlen(cond), sizeof cond - strlen(cond), " AND user_id = $%d", a.n);
        }
        if (f->kind) {
                param_text(&a, f->kind);
                snprintf(cond + strlen(cond), sizeof cond - strlen(cond), " AND kind = $%d", a.n);
        }
        if (part == AUDIT_SAME_TIME) {
                param_int(&a, f->after_time);
                param_int(&a, f->after_id);
                snprintf(cond + strlen(cond), sizeof cond - strlen(cond), " AND time = $%d AND id > $%d", a.n - 1, a.n);
        } else if (part == AUDIT_LATER) {
                param_int(&a, f->after_time);
                snprintf(cond + strlen(cond), sizeof cond - strlen(cond), " AND time > $%d", a.n);
        }
        param_int(&a, limit);
        param_int(&a, f->offset);
        snprintf(sql, sizeof sql, "SELECT %s FROM audit WHERE time >= $1%s ORDER BY %s LIMIT $%d OFFSET $%d",
                 f->keys_only ? "id, time, NULL, NULL, NULL, NULL" : "id, time, kind, user_id, session_id, detail",
                 cond, f->ascending ? "time, id" : "time DESC, id DESC", a.n - 1, a.n);
        r = query(s, sql, &a, "reading audit rows", &res);
        if (r < 0)
                return r;
        for (int i = 0; i < PQntuples(res) && r == 0; i++) {
                struct store_audit_row row = {
                        .id = pg_value_int(res, i, 0),
                        .time = pg_value_int(res, i, 1),
                        .kind = PQgetisnull(res, i, 2) ? "" : PQgetvalue(res, i, 2),
                        .user_id = pg_value_or_null(res, i, 3),
                        .session_id = pg_value_or_null(res, i, 4),
                        .detail = pg_value_or_null(res, i, 5),
                };
                (*n)++;
                r = cb(&row, userdata);
        }
        return r;
}

int pg_audit_each(struct store *s, const struct store_audit_filter *f, store_audit_fn cb, void *userdata) {
        unsigned n = 0;
        int r;

        if (!f->ascending)
                return audit_query(s, f, AUDIT_ALL, f->limit, cb, userdata, &n);
        r = audit_query(s, f, AUDIT_SAME_TIME, f->limit, cb, userdata, &n);
        if (r == 0 && n < f->limit)
                r = audit_query(s, f, AUDIT_LATER, f->limit - n, cb, userdata, &n);
        return r;
}

/* Session times are milliseconds here, and the analytics count seconds
 * (store.h): since and bucket are seconds, durations the difference of the
 * seconds, as sqlite.c. */
int pg_count_created(struct store *s, int64_t since, int64_t bucket, uint64_t *counts, size_t n) {
        _cleanup_pqclear_ PGresult *res = NULL;
        struct params a = {0};
        int r;

        assert(bucket > 0);
        memset(counts, 0, n * sizeof *counts);
        param_int(&a, since);
        param_int(&a, bucket);
        r = query(s,
                  "SELECT (created_at / 1000 - $1::bigint) / $2::bigint, "
                  "count(*) - count(*) FILTER (WHERE end_reason = 'rotated') FROM sessions "
                  "WHERE created_at >= $1::bigint * 1000 GROUP BY 1",
                  &a, "counting created sessions", &res);
        if (r < 0)
                return r;
        for (int i = 0; i < PQntuples(res); i++) {
                int64_t b = pg_value_int(res, i, 0), c = pg_value_int(res, i, 1);

                if (b >= 0 && (uint64_t) b < n && c > 0)
                        counts[b] = (uint64_t) c;
        }
        return 0;
}

/* Grouped by duration: a million ended sessions are a few thousand
 * distinct durations, so the result stays small; each is handed as many
 * times as it occurs. */
int pg_ended_durations(struct store *s, store_value_fn cb, void *userdata) {
        _cleanup_pqclear_ PGresult *res = NULL;
        int r = query(s,
                      "SELECT GREATEST(ended_at / 1000 - created_at / 1000, 0) AS d, count(*) FROM sessions "
                      "WHERE ended_at IS NOT NULL AND end_reason IS DISTINCT FROM 'rotated' GROUP BY d ORDER BY d",
                      NULL, "reading session durations", &res);

        for (int i = 0; r == 0 && i < PQntuples(res); i++)
                for (int64_t k = pg_value_int(res, i, 1); r == 0 && k > 0; k--)
                        r = cb(pg_value_int(res, i, 0), userdata);
        return r;
}

int pg_end_reasons(struct store *s, store_group_fn cb, void *userdata) {
        _cleanup_pqclear_ PGresult *res = NULL;
        int r = query(s,
                      "SELECT end_reason, count(*) FROM sessions WHERE ended_at IS NOT NULL "
                      "GROUP BY end_reason ORDER BY end_reason COLLATE \"C\" NULLS FIRST",
                      NULL, "counting end reasons", &res);

        for (int i = 0; r == 0 && i < PQntuples(res); i++)
                r = cb(pg_value_or_null(res, i, 0), pg_value_int(res, i, 1), userdata);
        return r;
}

/* PostgreSQL checks its own pages (checksums, if the cluster has them);
 * what is checked here is that the tables answer. */
int pg_check_integrity(struct store *s, struct store_maintenance *ret) {
        _cleanup_pqclear_ PGresult *res = NULL;
        int r;

        memset(ret, 0, sizeof *ret);
        r = query(s, "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM audit)", NULL,
                  "checking the tables", &res);
        if (r < 0)
                return r;
        ret->ok = true;
        snprintf(ret->message, sizeof ret->message, "ok");
        return 0;
}

/* ANALYZE for the planner (autovacuum does the rest), then the check. */
int pg_maintain(struct store *s, struct store_maintenance *ret) {
        struct pg_store *p = pg(s);
        int r = read_ready(p);

        if (r >= 0 && !pg_in_tx(p))
                r = pg_exec_command(p, p->w.c, "ANALYZE sessions, audit", "ANALYZE");
        return r < 0 ? r : pg_check_integrity(s, ret);
}

/* Nothing to do a step at a time: autovacuum runs on the server. */
int pg_maintain_step(struct store *s, bool first) {
        return 0;
}

/* The asynchronous form: nothing runs off the loop, done runs from a timer
 * of its own on the next turn (freed in its close callback). */
struct pg_maintain_later {
        uv_timer_t timer;
        store_maintain_fn done;
        void *userdata;
};

static void pg_maintain_later_closed(uv_handle_t *h) {
        free(h->data);
}

static void pg_maintain_later_cb(uv_timer_t *t) {
        struct pg_maintain_later *m = t->data;

        m->done(0, m->userdata);
        uv_close((uv_handle_t *) &m->timer, pg_maintain_later_closed);
}

int pg_maintain_start(struct store *s, bool first, store_maintain_fn done, void *userdata) {
        struct pg_maintain_later *m;
        int r = pg_maintain_step(s, first);

        if (r < 0)
                return r;
        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        *m = (struct pg_maintain_later){.done = done, .userdata = userdata};
        if (uv_timer_init(s->loop, &m->timer) < 0) {
                free(m);
                return -ENOMEM;
        }
        m->timer.data = m;
        uv_timer_start(&m->timer, pg_maintain_later_cb, 0, 0);
        return 0;
}

int pg_pace(struct store *s) {
        return 0;
}

unsigned long long pg_checkpoint_runs(struct store *s) {
        return 0;
}

const char *pg_synchronous_value(const char *v) {
        static const char *const ok[] = {"off", "normal", "full", "extra"};

        for (size_t i = 0; i < ELEMENTSOF(ok); i++)
                if (v && strcasecmp(v, ok[i]) == 0)
                        return ok[i];
        return NULL;
}

/* See the top of this file: checked, and otherwise PostgreSQL's own. */
int pg_set_synchronous(struct store *s, const char *synchronous) {
        return pg_synchronous_value(synchronous) ? 0 : -EINVAL;
}

/* ---- the tables' room (on the auxiliary connection: called without s->lock) ---------------------- */

/* The tables' room on the server, as the last refresh measured it
 * (pg_fleet_refresh, every PG_SIZE_CACHE_MS on a worker thread); 0 until
 * known. */
int64_t pg_size(struct store *s) {
        return __atomic_load_n(&pg(s)->size_cached, __ATOMIC_RELAXED);
}
