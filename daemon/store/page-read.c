/* Pages read after a commit (store_read_page_after, store.h).
 *
 * On a shared store every read is a round trip to PostgreSQL, and the loop
 * must never wait on the network. The writer thread already holds the
 * writing connection, and runs statements there anyway: right after it
 * commits a unit, it reads the pages that the unit was asked for (a page
 * of a listing, the audit's, a row by its public id, a page of live rows
 * when a fleet re-reads its cache) and copies them out. The loop gets them
 * with the unit's commit callback, as it gets the unit's result: no wait,
 * and what was read sees every write committed before it, the unit's own
 * included (a listing sees the sessions its caller just created).
 *
 * Why copies: the backend's rows live in its statement's result (SQLite's
 * statement, libpq's PGresult), which the next statement frees; the loop
 * reads them after the writer has gone on. Strings go into blocks that
 * never move, so that a row's pointers stay good while the array of rows
 * grows.
 *
 * Why after a commit and not on a reader connection of their own: a
 * listing must see its caller's writes (DESIGN 3), which are in the open
 * unit; the unit after which the writer reads is the one that holds them.
 * The cost is that the next unit waits for the read: a page is bounded
 * (a few thousand rows), a few ms at most.
 */
#include "backend.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct store_page_block {
        struct store_page_block *next;
        size_t used, size;
        char data[];
};

#define PAGE_BLOCK_BYTES (64 * 1024)

static const char *page_strdup(struct store_page_read *x, const char *v) {
        struct store_page_block *b = x->blocks;
        size_t n;
        char *p;

        if (!v)
                return NULL;
        n = strlen(v) + 1;
        if (!b || b->size - b->used < n) {
                size_t size = n > PAGE_BLOCK_BYTES ? n : PAGE_BLOCK_BYTES;

                b = malloc(sizeof *b + size);
                if (!b)
                        return NULL;
                b->next = x->blocks;
                b->used = 0;
                b->size = size;
                x->blocks = b;
        }
        p = b->data + b->used;
        memcpy(p, v, n);
        b->used += n;
        return p;
}

/* Whether a copy of v (NULL or not) went well. */
static bool page_copy(struct store_page_read *x, const char **dst, const char *v) {
        *dst = page_strdup(x, v);
        return !v || *dst;
}

void store_page_read_clear(struct store_page_read *x) {
        struct store_page_block *b, *next;

        for (b = x->blocks; b; b = next) {
                next = b->next;
                free(b);
        }
        free(x->rows);
        free(x->entries);
        x->blocks = NULL;
        x->rows = NULL;
        x->entries = NULL;
        x->n_rows = x->n_entries = x->allocated = 0;
        x->complete = false;
}

/* Room for one more element of an array of `size`-byte elements. */
static int page_grow(void **a, size_t n, size_t *allocated, size_t size, size_t cap) {
        size_t m;
        void *p;

        if (n < *allocated)
                return 0;
        m = *allocated ? 2 * *allocated : 64;
        if (cap && m > cap)
                m = cap;
        p = reallocarray(*a, m, size);
        if (!p)
                return -ENOMEM;
        *a = p;
        *allocated = m;
        return 0;
}

static int row_copy_cb(const struct store_session *row, void *userdata) {
        struct store_page_read *x = userdata;
        struct store_session *c;

        if (x->n_rows == x->max_rows) {
                x->complete = false; /* one more row follows */
                return 1;
        }
        if (page_grow((void **) &x->rows, x->n_rows, &x->allocated, sizeof *x->rows, x->max_rows) < 0)
                return -ENOMEM;
        c = &x->rows[x->n_rows];
        *c = *row;
        if (!page_copy(x, &c->id, row->id) || !page_copy(x, &c->user_id, row->user_id) ||
            !page_copy(x, &c->platform_id, row->platform_id) || !page_copy(x, &c->end_reason, row->end_reason) ||
            !page_copy(x, &c->ip, row->ip) || !page_copy(x, &c->user_agent, row->user_agent))
                return -ENOMEM;
        x->n_rows++;
        return 0;
}

static int entry_copy_cb(const struct store_audit_row *row, void *userdata) {
        struct store_page_read *x = userdata;
        struct store_audit_row *c;

        if (page_grow((void **) &x->entries, x->n_entries, &x->allocated, sizeof *x->entries, 0) < 0)
                return -ENOMEM;
        c = &x->entries[x->n_entries];
        *c = *row;
        if (!page_copy(x, &c->kind, row->kind) || !page_copy(x, &c->user_id, row->user_id) ||
            !page_copy(x, &c->session_id, row->session_id) || !page_copy(x, &c->detail, row->detail))
                return -ENOMEM;
        x->n_entries++;
        return 0;
}

static int start_cb(const struct store_audit_row *row, void *userdata) {
        int64_t *start = userdata;

        start[0] = row->time;
        start[1] = row->id;
        return 0;
}

/* The audit page: where the newest audit_newest entries begin first
 * (before every entry when fewer match), then the page from there, oldest
 * first. */
static int audit_run(struct store *s, struct store_page_read *x) {
        struct store_audit_filter f = x->audit;
        int r;

        if (x->audit_newest > 0) {
                struct store_audit_filter nth = f;
                int64_t start[2] = {-1, 0};

                nth.limit = 1;
                nth.offset = x->audit_newest - 1; /* newest first */
                nth.ascending = false;
                nth.after_time = nth.after_id = 0;
                nth.keys_only = true;
                r = s->backend->audit_each(s, &nth, start_cb, start);
                if (r < 0)
                        return r;
                f.after_time = start[0];
                f.after_id = start[0] >= 0 ? start[1] - 1 : 0;
                f.ascending = true;
                f.offset = 0;
        }
        x->audit_after[0] = f.after_time;
        x->audit_after[1] = f.after_id;
        return s->backend->audit_each(s, &f, entry_copy_cb, x);
}

static int row_key_cmp(const void *a, const void *b) {
        int64_t x = ((const struct store_session *) a)->row_key, y = ((const struct store_session *) b)->row_key;

        return (x > y) - (x < y);
}

/* A user's page: its live rows by key, its ended ones after the page's
 * start, merged in row order, each row once, cut at the last ended row
 * read when they did not all fit. */
static int user_page_run(struct store *s, struct store_page_read *x) {
        size_t want_ended = x->max_rows, n_live, kept = 0;
        int r = 0;

        x->max_rows = SIZE_MAX;
        if (s->backend->sessions_by_row_keys)
                r = s->backend->sessions_by_row_keys(s, x->row_keys, x->n_row_keys, row_copy_cb, x);
        else
                for (size_t i = 0; i < x->n_row_keys && r >= 0; i++) {
                        r = s->backend->session_by_row_key(s, x->row_keys[i], row_copy_cb, x);
                        if (r == -ENOENT)
                                r = 0;
                }
        n_live = x->n_rows;
        x->max_rows = n_live + want_ended;
        if (r >= 0 && !x->filter.live_only)
                r = s->backend->sessions_ended_of_user_after(s, x->user_id, x->filter.after_row_key, row_copy_cb, x);
        x->max_rows = want_ended;
        if (r < 0)
                return r;
        if (!x->complete)
                x->bound = x->rows[x->n_rows - 1].row_key; /* the last ended row read */
        qsort(x->rows, x->n_rows, sizeof *x->rows, row_key_cmp);
        for (size_t i = 0; i < x->n_rows; i++) {
                if (!x->complete && x->rows[i].row_key > x->bound)
                        break;
                if (kept > 0 && x->rows[kept - 1].row_key == x->rows[i].row_key) {
                        if (x->rows[i].ended_at != 0) /* the ended read is the newer */
                                x->rows[kept - 1] = x->rows[i];
                        continue;
                }
                x->rows[kept++] = x->rows[i];
        }
        x->n_rows = kept;
        return 0;
}

int store_page_run(struct store *s, struct store_page_read *x) {
        x->complete = true;
        switch (x->kind) {
        case STORE_PAGE_SESSIONS:
                return s->backend->sessions_each(s, &x->filter, row_copy_cb, x);
        case STORE_PAGE_OF_USER:
                return user_page_run(s, x);
        case STORE_PAGE_BY_ID: {
                int r = s->backend->session_by_id(s, x->id, row_copy_cb, x);

                return r == -ENOENT ? 0 : r;
        }
        case STORE_PAGE_AUDIT:
                return audit_run(s, x);
        }
        return -EINVAL;
}

void store_page_reads_run(struct store *s, struct store_uow *u, int commit_result) {
        for (size_t i = 0; i < u->n_page_reads; i++) {
                struct store_page_read *x = u->page_reads[i];
                int r;

                if (commit_result < 0)
                        continue; /* stays -EAGAIN */
                r = store_page_run(s, x);
                if (r < 0) {
                        log_warning("Store %s: reading a page after a commit failed: %s", s->backend->name_of(s),
                                    strerror(-r));
                        store_page_read_clear(x);
                        continue;
                }
                x->result = 0;
        }
}

int store_read_page_after(struct store *s, struct store_page_read *out) {
        struct store_uow *u = &s->open;

        if (out->kind == STORE_PAGE_BY_ID)
                out->max_rows = 1;
        assert(out->kind == STORE_PAGE_AUDIT || out->max_rows > 0);
        if (page_grow((void **) &u->page_reads, u->n_page_reads, &u->allocated_page_reads, sizeof *u->page_reads, 0) <
            0)
                return -ENOMEM;
        store_page_read_clear(out);
        out->result = -EAGAIN;
        u->page_reads[u->n_page_reads++] = out;
        return 0;
}
