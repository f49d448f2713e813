/* The cross-tab sync state (see engine-internal.h for the other files).
 *
 * A session's sync state (a version and opaque data) lives in the store
 * only; memory keeps none of it. SetSyncState is a compare-and-set on the
 * version: the engine reads the version stored, refuses at once when the
 * caller's expected_version differs (Conflict), and otherwise records a
 * write of version + 1 that the store runs only if the row still holds the
 * version read (store_session_cas_sync).
 *
 * Why the write is conditional. On one daemon nothing can come between the
 * read and the write: reads see the open unit's own writes and the loop is
 * the only writer. On a shared store (DESIGN 8) another daemon may write
 * the same session in between, and an unconditional write would then
 * answer two callers that each replaced version N with N + 1 (one of the
 * two states silently lost, both told they won). So a write is answered
 * when its unit of work is done, not when it is recorded (struct
 * engine_sync_wait, in the order the units go: open, then in flight):
 *  - written: the reply gives the new version, and the `sync` event goes
 *    to the observers (queued with the unit's other events when the write
 *    is recorded, so it keeps its place before an `ended` of the same
 *    unit, and dropped if the write does not apply);
 *  - outrun by another daemon's write: a caller who named expected_version
 *    gets Conflict with the version now stored (what it would have got had
 *    the other write come first); one who did not has its write recorded
 *    again on top of that version (last writer wins, as it asked) for as
 *    long as the session lives: each round is a unit that another daemon's
 *    write beat, so a writer starves only while others keep writing;
 *  - not applied because the session ended: Expired with the store's
 *    reason;
 *  - lost with its unit (a failed commit): the storage error, like every
 *    other write of that unit.
 * A caller that goes away (its connection closed) detaches; the write
 * stands or not all the same.
 *
 * Where the store is read. On a fleet the loop never waits for
 * PostgreSQL: the version a write compares, and after a write that did not
 * apply the version and the row's end, are one read that the store's
 * writer runs right after the next commit (store_read_sync_after: the
 * version, whether the row is live, and its end reason), while the write
 * waits; what to do then is wait_read()'s, the same for a first write and
 * for one written again. Such a read may be older than memory (a session
 * this daemon's open unit ends, or one another daemon ended since): a
 * session read live but gone from memory is read once more after the next
 * commit, which then holds its end. Not a fleet (SQLite), the store is
 * local and its reads see the open unit's writes: the version is read on
 * the loop at once, as is the row after a write that did not apply.
 */
#include "engine-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct engine_sync_wait {
        struct engine_sync_wait *next;
        struct engine *e;
        int64_t expected; /* expected_version, -1: none */
        uint8_t key[16];  /* the session in memory (a fleet: still there when its version is read?) */
        int applied;      /* set by the store when the unit runs (store_session_cas_sync) */
        int64_t row_key;
        int64_t version;  /* the version written */
        int64_t now;      /* the request's time, for the event */
        bool any_version; /* no expected_version: written again when outrun */
        bool read_again;  /* a fleet: read again once already (live in the store, gone from memory) */
        char id[TOKEN_ID_STRING_LEN + 1];
        char *user_id;
        char *data; /* kept for after the version is read (a fleet), or for writing again (wait_read) */
        size_t size;
        engine_sync_done_fn done; /* NULL: detached */
        void *userdata;
};

static void wait_free(struct engine_sync_wait *w) {
        free(w->user_id);
        free(w->data);
        free(w);
}

static void wait_finish_error(struct engine_sync_wait *w, int r, const struct engine_error *err) {
        if (w->done)
                w->done(r, err, w->userdata);
        wait_free(w);
}

static void wait_finish(struct engine_sync_wait *w, int r, int64_t version) {
        wait_finish_error(w, r, &(struct engine_error){.version = version});
}

static void waits_append(struct engine_sync_wait **list, struct engine_sync_wait *w) {
        while (*list)
                list = &(*list)->next;
        *list = w;
}

static void waits_fail(struct engine_sync_wait **list, int r) {
        struct engine_sync_wait *w = *list, *next;

        *list = NULL;
        for (; w; w = next) {
                next = w->next;
                wait_finish(w, r, 0);
        }
}

/* ---- reads ------------------------------------------------------------------------------------------------- */

int engine_sync_get(struct engine *e, int64_t now, const char *token, int64_t *version, char **data, size_t *size,
                    struct engine_error *err) {
        uint32_t h;
        int r;

        if (!cfg(e)->features.cross_tab_sync) {
                err->feature = "cross_tab_sync";
                return -EOPNOTSUPP;
        }
        r = session_lookup_live(e, now, token, false, &h, NULL, err);
        if (r < 0)
                return r;
        e->counters.sync_reads_on_loop++;
        r = store_session_get_sync(e->store, S(e, h)->row_key, version, data, size);
        if (r < 0)
                return txn_storage_errno(r);
        e->counters.sync_reads++;
        return 0;
}

static int row_key_cb(const struct store_session *row, void *userdata) {
        *(int64_t *) userdata = row->row_key;
        return 1;
}

int engine_sync_get_by_id(struct engine *e, const char *id, int64_t *version, char **data, size_t *size) {
        int64_t row_key = 0;
        int r;

        e->counters.sync_reads_on_loop++;
        r = store_session_by_id(e->store, id, row_key_cb, &row_key);
        if (r < 0)
                return r == -ENOENT ? r : txn_storage_errno(r);
        r = store_session_get_sync(e->store, row_key, version, data, size);
        return r < 0 ? txn_storage_errno(r) : 0;
}

/* ---- reads after a commit (a fleet's store: engine_sync_reads_later) ---------------------------------------- */

struct engine_sync_read {
        struct engine_sync_read *next;
        struct store_sync_read out;
        struct engine_sync_wait *wait; /* a SetSyncState's read (wait_read), or: */
        engine_sync_got_fn done;       /* NULL: detached */
        void *userdata;
};

static void wait_read(struct engine_sync_wait *w, int r, const struct store_sync_read *x);

bool engine_sync_reads_later(const struct engine *e) {
        return e->fleet;
}

static void reads_append(struct engine_sync_read **list, struct engine_sync_read *x) {
        while (*list)
                list = &(*list)->next;
        *list = x;
}

static void read_finish(struct engine_sync_read *x, int r) {
        if (x->wait)
                wait_read(x->wait, r, &x->out);
        else if (x->done)
                x->done(r, x->out.version, x->out.data, x->out.size, x->userdata);
        free(x->out.data);
        free(x);
}

static void reads_fail(struct engine_sync_read **list, int r) {
        struct engine_sync_read *x = *list, *next;

        *list = NULL;
        for (; x; x = next) {
                next = x->next;
                read_finish(x, r);
        }
}

/* Reads row_key's sync state after the next commit: for w (wait_read),
 * or else for done. */
static int read_later(struct engine *e, int64_t row_key, struct engine_sync_wait *w, engine_sync_got_fn done,
                      void *userdata, struct engine_sync_read **ret) {
        struct engine_sync_read *x = calloc(1, sizeof *x);
        int r = x ? txn_begin(e) : -ENOMEM;

        if (r >= 0) {
                x->out.row_key = row_key;
                r = store_read_sync_after(e->store, &x->out);
        }
        if (r < 0) {
                free(x);
                return txn_storage_errno(r);
        }
        x->wait = w;
        x->done = done;
        x->userdata = userdata;
        reads_append(&e->sync_reads_open, x);
        e->counters.sync_reads_after_commit++;
        if (ret)
                *ret = x;
        return 0;
}

int engine_sync_get_later(struct engine *e, int64_t now, const char *token, engine_sync_got_fn done, void *userdata,
                          struct engine_sync_read **ret, struct engine_error *err) {
        uint32_t h;
        int r;

        assert(done && ret);
        if (!cfg(e)->features.cross_tab_sync) {
                err->feature = "cross_tab_sync";
                return -EOPNOTSUPP;
        }
        r = session_lookup_live(e, now, token, false, &h, NULL, err);
        if (r < 0)
                return r;
        e->counters.sync_reads++;
        return read_later(e, S(e, h)->row_key, NULL, done, userdata, ret);
}

int engine_sync_get_ref_later(struct engine *e, const struct engine_ref *ref, engine_sync_got_fn done, void *userdata,
                              struct engine_sync_read **ret) {
        uint32_t h = session_find_key(e, ref->key);

        assert(done && ret);
        if (h == NIL)
                return -ENOENT;
        return read_later(e, S(e, h)->row_key, NULL, done, userdata, ret);
}

void engine_sync_read_detach(struct engine_sync_read *x) {
        x->done = NULL;
}

/* The sync state stored now, on the loop (one daemon: the store's reads
 * see the open unit's writes). x->data is the caller's to free. */
static int read_now(struct engine *e, struct store_sync_read *x) {
        e->counters.sync_reads_on_loop++;
        return store_session_read_sync(e->store, x);
}

/* ---- writes ------------------------------------------------------------------------------------------------ */

/* Records w's write of current + 1 in the open unit; w joins the open waits. */
static int wait_record(struct engine *e, struct engine_sync_wait *w, uint32_t h, int64_t current, const char *data,
                       size_t size) {
        int r = txn_begin(e);

        if (r < 0)
                return r;
        if (h != NIL)
                r = txn_row_touch(e, w->row_key, h);
        if (r >= 0)
                r = store_session_cas_sync(e->store, w->row_key, current, data, size, &w->applied);
        if (r < 0)
                return txn_fail(e, r);
        w->version = current + 1;
        waits_append(&e->sync_open, w);
        if (bus_observed(e)) {
                char *text = NULL;

                if (asprintf(&text, "{\"version\":%lld}", (long long) w->version) < 0)
                        text = NULL;
                bus_emit_text_applied(e, w->now, "sync", w->id, w->user_id, text, &w->applied);
        }
        return 0;
}

int engine_sync_set(struct engine *e, int64_t now, const char *token, const char *data, size_t size,
                    int64_t expected_version, engine_sync_done_fn done, void *userdata, struct engine_sync_wait **ret,
                    struct engine_error *err) {
        const struct sessiond_config *c = cfg(e);
        struct engine_sync_wait *w;
        struct store_sync_read x = {0};
        uint32_t h;
        int r;

        assert(done && ret);
        if (!c->features.cross_tab_sync) {
                err->feature = "cross_tab_sync";
                return -EOPNOTSUPP;
        }
        if ((int64_t) size > c->sync.max_data_size) {
                err->max = c->sync.max_data_size;
                return -E2BIG;
        }
        r = session_lookup_live(e, now, token, false, &h, NULL, err);
        if (r < 0)
                return r;
        if (!e->fleet) {
                x.row_key = S(e, h)->row_key;
                r = read_now(e, &x);
                free(x.data);
                if (r < 0)
                        return txn_storage_errno(r);
                if (expected_version >= 0 && expected_version != x.version) {
                        e->counters.sync_conflicts++;
                        err->version = x.version;
                        return -EAGAIN;
                }
        }
        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        *w = (struct engine_sync_wait){.e = e,
                                       .expected = expected_version,
                                       .row_key = S(e, h)->row_key,
                                       .now = now,
                                       .any_version = expected_version < 0,
                                       .done = done,
                                       .userdata = userdata};
        table_session_id(e, S(e, h), w->id);
        memcpy(w->key, S(e, h)->key, sizeof w->key);
        w->user_id = strdup(user_name(e, S(e, h)->user));
        w->data = malloc(size + 1);
        if (w->data) {
                memcpy(w->data, data, size);
                w->size = size;
        }
        if (!w->user_id || !w->data) {
                wait_free(w);
                return -ENOMEM;
        }
        if (e->fleet) {
                /* The version is read after the next commit, off the loop;
                 * the write is recorded then (wait_read). */
                r = read_later(e, w->row_key, w, NULL, NULL, NULL);
                if (r < 0) {
                        wait_free(w);
                        return r;
                }
                *ret = w;
                return 0;
        }
        r = wait_record(e, w, h, x.version, data, size);
        if (r < 0) {
                wait_free(w);
                return r;
        }
        *ret = w;
        return 0;
}

void engine_sync_detach(struct engine_sync_wait *w) {
        w->done = NULL;
}

/* A write's session, read (r: the read's result; x: what it found): on a
 * fleet the first read of a SetSyncState, and for every write the read
 * after its unit committed without applying it. Answers the session's end
 * (Expired with the store's reason) or a Conflict with expected_version,
 * or records the write (again) as a compare-and-set on the version read. */
static void wait_read(struct engine_sync_wait *w, int r, const struct store_sync_read *x) {
        struct engine *e = w->e;
        uint32_t h;

        if (r < 0) {
                wait_finish(w, r == -ENOENT ? r : txn_storage_errno(r), 0);
                return;
        }
        if (!x->live) {
                wait_finish_error(w, -ESTALE,
                                  &(struct engine_error){.end_reason = engine_end_reason_from_string(x->end_reason)});
                return;
        }
        w->next = NULL;
        h = session_find_key(e, w->key);
        if (e->fleet && (h == NIL || S(e, h)->row_key != w->row_key)) {
                /* Live when read, ended since (rotated, destroyed, ended
                 * by another daemon): the store has its end after the next
                 * commit at the latest. */
                if (!w->read_again) {
                        w->read_again = true;
                        r = read_later(e, w->row_key, w, NULL, NULL, NULL);
                        if (r < 0)
                                wait_finish(w, r, 0);
                        return;
                }
                wait_finish_error(w, -ESTALE, &(struct engine_error){.end_reason = ENGINE_END_DESTROYED});
                return;
        }
        if (!w->any_version && w->expected != x->version) {
                e->counters.sync_conflicts++;
                wait_finish(w, -EAGAIN, x->version);
                return;
        }
        r = wait_record(e, w, NIL, x->version, w->data, w->size);
        if (r < 0)
                wait_finish(w, r, 0);
}

/* A write its unit committed without applying it: another daemon's came
 * between, or the session ended (the write applies to live rows only).
 * The row is read again (wait_read): after the next commit on a fleet, at
 * once when not a fleet. */
static void wait_outrun(struct engine *e, struct engine_sync_wait *w) {
        struct store_sync_read x = {.row_key = w->row_key};
        int r;

        w->next = NULL;
        if (e->fleet) {
                r = read_later(e, w->row_key, w, NULL, NULL, NULL);
                if (r < 0)
                        wait_finish(w, r, 0);
                return;
        }
        r = read_now(e, &x);
        wait_read(w, r, &x);
        free(x.data);
}

/* ---- the units' ends (txn.c) ------------------------------------------------------------------------------- */

void sync_waits_hand_off(struct engine *e) {
        waits_append(&e->sync_inflight, e->sync_open);
        e->sync_open = NULL;
        reads_append(&e->sync_reads_inflight, e->sync_reads_open);
        e->sync_reads_open = NULL;
}

/* The reads of the unit that committed: each answered (or, for a
 * SetSyncState, its write recorded in the open unit). */
static void reads_committed(struct engine *e) {
        struct engine_sync_read *x = e->sync_reads_inflight, *next;

        e->sync_reads_inflight = NULL;
        for (; x; x = next) {
                next = x->next;
                read_finish(x, x->out.result == -EAGAIN ? -EIO : x->out.result);
        }
}

void sync_waits_committed(struct engine *e) {
        struct engine_sync_wait *w = e->sync_inflight, *next;

        e->sync_inflight = NULL;
        reads_committed(e);
        for (; w; w = next) {
                next = w->next;
                if (!w->applied && !w->done) {
                        wait_free(w);
                        continue;
                }
                if (!w->applied) {
                        wait_outrun(e, w);
                        continue;
                }
                e->counters.sync_writes++;
                wait_finish(w, 0, w->version);
        }
}

void sync_waits_lost(struct engine *e, int r, bool open_too) {
        waits_fail(&e->sync_inflight, r);
        reads_fail(&e->sync_reads_inflight, r);
        if (open_too) {
                waits_fail(&e->sync_open, r);
                reads_fail(&e->sync_reads_open, r);
        }
}

void sync_waits_abort(struct engine *e, int r) {
        waits_fail(&e->sync_open, r);
        reads_fail(&e->sync_reads_open, r);
}

void sync_waits_free(struct engine *e) {
        waits_fail(&e->sync_inflight, -ECANCELED);
        waits_fail(&e->sync_open, -ECANCELED);
        reads_fail(&e->sync_reads_inflight, -ECANCELED);
        reads_fail(&e->sync_reads_open, -ECANCELED);
}
