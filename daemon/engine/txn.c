/* The session engine's transaction (see engine-internal.h for the other
 * files).
 *
 * Writes. The writes of a loop iteration go into the store's open unit of
 * work; main's loop step hands it to the store (engine_commit_submit),
 * whose writer thread commits it while the loop serves the next iteration:
 * every request of the iteration shares one commit, and the replies wait
 * for it (main holds them). At most one unit is in flight; the writes made
 * meanwhile wait in the next one. Each write records the row it touched
 * ("affected"). If a commit fails, the engine drops the open unit too (it
 * was built on the lost one) and reloads every affected row of both from
 * the store: entries created disappear, ended ones come back, rotated ones
 * get their old token back. Memory then matches the database again, and
 * main turns the held replies into StorageError/StorageFull. A write that
 * fails while it is recorded (out of memory) loses its unit at once, and no
 * further write is accepted until that unit is handed off, so a write is
 * never committed behind a reply that said it failed.
 *
 * Audit rows share the transaction of what they describe.
 *
 * Some writes are decided by the store when their unit runs (a platform
 * switch on a shared store counts other daemons' switches): their calls
 * wait for the unit (struct unit_wait), in the order the units go, open
 * then in flight, and are answered when it commits or is lost.
 */
#include "engine-internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

uint64_t engine_write_seq(const struct engine *e) {
        return e->write_seq;
}
const struct engine_counters *engine_get_counters(const struct engine *e) {
        return &e->counters;
}

int engine_storage_error(const struct engine *e) {
        return e->storage_error;
}
/* A failed write leaves no unit but an error to report: that is pending
 * too, so that main hands it off and the held replies fail; so is the unit
 * being committed. */
bool engine_has_pending(const struct engine *e) {
        return e->txn || e->commit_error || e->inflight;
}

/* ---- transactions ----------------------------------------------------------------- */

int txn_storage_errno(int r) {
        return r == -ENOSPC || r == -ENOMEM ? r : -EIO;
}

struct reload_ctx {
        struct engine *e;
        int64_t last_activity; /* ms, of the entry memory had, 0: none */
};

static int reload_cb(const struct store_session *row, void *userdata) {
        struct reload_ctx *x = userdata;
        struct engine *e = x->e;
        int64_t last = x->last_activity;
        uint32_t h, existing;

        if (row->ended_at != 0)
                return 0;
        existing = session_find_key(e, row->token_hash);
        if (existing != NIL)
                table_session_remove(e, existing);
        if (table_session_add(e, row, &h) < 0) {
                log_error("Store %s: could not restore session %s in memory after a rollback.", store_name(e->store),
                          row->id);
                return 0;
        }
        if (last > session_ms(&e->sessions[h], ST_ACTIVITY)) {
                /* Keep the newer touch; it goes to the store with the next flush. */
                session_ms_set(&e->sessions[h], ST_ACTIVITY, last);
                table_session_activity_moved(e, h);
                if (GROW(e->dirty, e->dirty_allocated, e->n_dirty + 1) == 0) {
                        e->sessions[h].flags |= S_DIRTY;
                        e->dirty[e->n_dirty++] = h;
                }
        }
        return 0;
}

static int affected_cmp(const void *a, const void *b) {
        const struct affected *x = a, *y = b;
        return x->row_key < y->row_key ? -1 : x->row_key > y->row_key;
}

/* After a rollback: make memory match the store for every row the
 * transaction touched. */
static void reload_affected(struct engine *e) {
        qsort(e->affected, e->n_affected, sizeof *e->affected, affected_cmp);
        for (size_t i = 0; i < e->n_affected; i++) {
                struct affected *a = &e->affected[i];
                struct reload_ctx x = {e, 0};

                if (i > 0 && a->row_key == e->affected[i - 1].row_key)
                        continue;
                /* The entry recorded with this row_key, if it is still the
                 * same session (handles are reused). */
                for (size_t k = i; k < e->n_affected && e->affected[k].row_key == a->row_key; k++) {
                        uint32_t h = e->affected[k].handle;

                        /* Touches are not part of the transaction: keep the
                         * newest one memory had, even for an entry that the
                         * transaction removed. */
                        if (e->affected[k].last_activity > x.last_activity)
                                x.last_activity = e->affected[k].last_activity;
                        if (h < e->sessions_used && (e->sessions[h].flags & S_USED) &&
                            e->sessions[h].row_key == a->row_key) {
                                if (session_ms(&e->sessions[h], ST_ACTIVITY) > x.last_activity)
                                        x.last_activity = session_ms(&e->sessions[h], ST_ACTIVITY);
                                table_session_remove(e, h);
                        }
                }
                e->counters.loop_row_reads++; /* newer than a read after the commit in flight (fleet.c) */
                (void) store_session_by_row_key(e->store, a->row_key, reload_cb, &x);
        }
        e->n_affected = 0;
}

/* ---- calls answered when their unit is done ------------------------------------------------------------- */

void txn_wait_add(struct engine *e, struct unit_wait *w) {
        struct unit_wait **at = &e->waits_open;

        while (*at)
                at = &(*at)->next;
        w->next = NULL;
        *at = w;
}

static void waits_lost(struct engine *e, struct unit_wait **list, int r) {
        struct unit_wait *w = *list, *next;

        *list = NULL;
        for (; w; w = next) {
                next = w->next;
                w->lost(e, w, r);
        }
}

static void waits_committed(struct engine *e) {
        struct unit_wait *w = e->waits_inflight, *next;

        e->waits_inflight = NULL;
        for (; w; w = next) {
                next = w->next;
                w->committed(e, w);
        }
}

static void waits_hand_off(struct engine *e) {
        struct unit_wait **at = &e->waits_inflight;

        while (*at)
                at = &(*at)->next;
        *at = e->waits_open;
        e->waits_open = NULL;
}

void txn_waits_free(struct engine *e) {
        waits_lost(e, &e->waits_inflight, -ECANCELED);
        waits_lost(e, &e->waits_open, -ECANCELED);
}

void engine_abort(struct engine *e) {
        if (!e->txn)
                return;
        store_rollback(e->store);
        e->txn = false;
        reload_affected(e);
        bus_queue_clear(&e->in_txn);
        sync_waits_abort(e, e->commit_error ? e->commit_error : -EIO);
        waits_lost(e, &e->waits_open, e->commit_error ? e->commit_error : -EIO);
        fleet_lost(e, false);
}

/* A write failed inside the iteration's unit of work: nothing of it may be
 * committed any more. Returns the error for the caller to pass on. */
int txn_fail(struct engine *e, int r) {
        r = txn_storage_errno(r);
        if (e->commit_error == 0)
                e->commit_error = r;
        engine_abort(e);
        return r;
}

int txn_begin(struct engine *e) {
        if (e->commit_error)
                return e->commit_error;
        if (!e->txn) {
                e->txn = true;
                e->n_affected = 0;
        }
        return 0;
}

/* Records that the row behind handle h is written in this unit. */
int txn_row_touch(struct engine *e, int64_t row_key, uint32_t h) {
        if (GROW(e->affected, e->affected_allocated, e->n_affected + 1) < 0)
                return -ENOMEM;
        e->affected[e->n_affected++] = (struct affected){row_key, h, session_ms(&e->sessions[h], ST_ACTIVITY)};
        e->write_seq++;
        return 0;
}

/* Moves a unit's events on; once the unit has committed, the events of its
 * conditional writes that did not apply are dropped here. */
static void queue_move(struct event_queue *to, struct event_queue *from, bool committed) {
        for (size_t i = 0; i < from->n; i++) {
                if (committed && from->items[i].applied && !*from->items[i].applied) {
                        bus_event_clear(&from->items[i]);
                        continue;
                }
                if (committed)
                        from->items[i].applied = NULL;
                if (GROW(to->items, to->allocated, to->n + 1) < 0) {
                        bus_event_clear(&from->items[i]);
                        continue;
                }
                to->items[to->n++] = from->items[i];
        }
        from->n = 0;
}

/* The store is done with the unit in flight. Committed: its events can be
 * told. Lost: the open unit was built on top of it and goes too, and memory
 * is made to match the store again for every row either touched. */
static void unit_done(int result, void *userdata) {
        struct engine *e = userdata;
        uint64_t seq = e->inflight_seq;

        assert(e->inflight);
        e->inflight = false;
        if (result >= 0) {
                e->storage_error = 0;
                e->counters.commits++;
                e->n_inflight_affected = 0;
                queue_move(&e->ready, &e->inflight_events, true);
                fleet_committed(e);
                sync_waits_committed(e);
                waits_committed(e);
                bus_dispatch_schedule(e);
                result = 0;
        } else {
                log_error("Store %s: commit failed (%s); its writes and those made since are rolled back.",
                          store_name(e->store), strerror(-result));
                e->counters.commit_failures++;
                e->storage_error = result = txn_storage_errno(result);
                store_rollback(e->store);
                for (size_t i = 0; i < e->n_affected; i++)
                        if (GROW(e->inflight_affected, e->inflight_affected_allocated, e->n_inflight_affected + 1) == 0)
                                e->inflight_affected[e->n_inflight_affected++] = e->affected[i];
                SWAP(e->affected, e->inflight_affected);
                SWAP(e->affected_allocated, e->inflight_affected_allocated);
                e->n_affected = e->n_inflight_affected;
                e->n_inflight_affected = 0;
                reload_affected(e);
                e->txn = false;
                e->commit_error = 0;
                bus_queue_clear(&e->in_txn);
                bus_queue_clear(&e->inflight_events);
                sync_waits_lost(e, result, true);
                waits_lost(e, &e->waits_inflight, result);
                waits_lost(e, &e->waits_open, result);
                fleet_lost(e, true);
        }
        if (e->commit_fn)
                e->commit_fn(e, seq, result, e->commit_userdata);
}

/* Hands the open unit to the store: in the background, or (wait) committed
 * here. */
static void unit_hand_off(struct engine *e, uint64_t seq, bool wait) {
        int r;

        assert(!e->inflight);
        if (e->commit_error) {
                /* Already lost, and rolled back when it failed. */
                r = e->commit_error;
                e->commit_error = 0;
                e->counters.commit_failures++;
                e->storage_error = r;
                fleet_hand_off_failed(e, r);
                if (e->commit_fn)
                        e->commit_fn(e, seq, r, e->commit_userdata);
                return;
        }
        SWAP(e->affected, e->inflight_affected);
        SWAP(e->affected_allocated, e->inflight_affected_allocated);
        e->n_inflight_affected = e->n_affected;
        e->n_affected = 0;
        queue_move(&e->inflight_events, &e->in_txn, false);
        sync_waits_hand_off(e);
        waits_hand_off(e);
        fleet_hand_off(e);
        e->txn = false;
        e->inflight = true;
        e->inflight_seq = seq;
        if (wait)
                unit_done(store_commit(e->store), e);
        else if ((r = store_submit(e->store, unit_done, e)) < 0) {
                store_rollback(e->store);
                unit_done(r, e);
        }
}

void engine_set_commit_callback(struct engine *e, engine_commit_fn fn, void *userdata) {
        e->commit_fn = fn;
        e->commit_userdata = userdata;
}

bool engine_commit_busy(const struct engine *e) {
        return e->inflight;
}

int engine_commit_submit(struct engine *e, uint64_t seq) {
        if (!e->txn && !e->commit_error)
                return 0;
        if (e->inflight)
                return -EBUSY;
        unit_hand_off(e, seq, false);
        return 0;
}

int engine_commit(struct engine *e) {
        int r = 0;

        if (e->inflight) {
                store_wait(e->store);
                r = e->storage_error;
        }
        if (!e->txn && !e->commit_error)
                return r;
        unit_hand_off(e, UINT64_MAX, true);
        return e->storage_error ? e->storage_error : r;
}

/* ---- audit -------------------------------------------------------------------------- */

/* Writes an audit row whose detail is already JSON text. */
int txn_audit_text(struct engine *e, int64_t now, const char *kind, const char *user_id, const char *session_id,
                   const char *text) {
        int r;

        assert(text);
        if (!cfg(e)->security.audit_logging)
                return 0;
        r = txn_begin(e);
        if (r < 0)
                return r;
        r = store_audit_insert(e->store, ms_floor_s(now), kind, user_id, session_id, text);
        if (r < 0)
                return txn_fail(e, r);
        e->write_seq++;
        e->counters.audit_rows++;
        return 0;
}

/* Writes an audit row (steals detail). Audit rows share the transaction of
 * what they describe. */
int txn_audit(struct engine *e, int64_t now, const char *kind, const char *user_id, const char *session_id,
              json_t *detail) {
        char *text;
        int r;

        if (!cfg(e)->security.audit_logging) {
                json_decref(detail);
                return 0;
        }
        text = json_dumps(detail ? detail : json_object(), JSON_COMPACT);
        json_decref(detail);
        if (!text)
                return txn_fail(e, -ENOMEM);
        r = txn_audit_text(e, now, kind, user_id, session_id, text);
        free(text);
        return r;
}

bool txn_audit_on(const struct engine *e) {
        return cfg(e)->security.audit_logging;
}

void txn_detail_begin(struct varlink_writer *w) {
        varlink_writer_init(w);
        (void) varlink_writer_begin_value(w);
        (void) varlink_writer_object_begin(w);
}

void txn_detail_string(struct varlink_writer *w, const char *key, const char *value) {
        (void) varlink_writer_key(w, key);
        (void) (value ? varlink_writer_string(w, value) : varlink_writer_null(w));
}

void txn_detail_int(struct varlink_writer *w, const char *key, int64_t value) {
        (void) varlink_writer_key(w, key);
        (void) varlink_writer_int(w, value);
}

char *txn_detail_end(struct varlink_writer *w) {
        char *text;
        size_t len;

        (void) varlink_writer_object_end(w);
        return varlink_writer_finish_value(w, &text, &len) < 0 ? NULL : text;
}

int txn_audit_written(struct engine *e, int64_t now, const char *kind, const char *user_id, const char *session_id,
                      struct varlink_writer *w) {
        char *text;
        size_t len;
        int r;

        (void) varlink_writer_object_end(w);
        r = varlink_writer_finish_value(w, &text, &len);
        if (r < 0)
                return txn_fail(e, r);
        r = txn_audit_text(e, now, kind, user_id, session_id, text);
        free(text);
        return r;
}

int engine_audit(struct engine *e, int64_t now, const char *kind, const char *user_id, const char *session_id,
                 json_t *detail) {
        assert(kind);
        return txn_audit(e, now, kind, user_id, session_id, detail ? json_incref(detail) : NULL);
}
