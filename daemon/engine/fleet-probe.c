/* The session engine in a fleet: the shared store's reachability (DESIGN
 * 8; see engine-internal.h for the other files, fleet.c for the rest of
 * the fleet).
 *
 * PostgreSQL down. Writes fail at once (their unit's commit fails:
 * StorageError). Validations of cached sessions need no store, so they go
 * on, but memory stops learning of other daemons' ends: a destroyed
 * session would stay valid here. So the engine probes the store with the
 * touch flush (every two seconds) and, once the store has been unreachable
 * for FLEET_CACHE_GRACE_MS, fails validations closed (StorageError) until a
 * probe succeeds again; then, as changes may have been missed, every
 * cached session is read again.
 */
#include "engine-internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* ---- the store's reachability -------------------------------------------------------------------- */

/* The probe runs on a worker thread, on a connection the loop never uses
 * (store_probe_any_thread): an unreachable PostgreSQL (a connection
 * timeout) or a slow one costs the loop nothing; its result is applied on
 * the loop. One at a time: a tick while one runs lets it be, and one that
 * has not answered for FLEET_PROBE_SLOW_MS counts as a failure from when
 * it was sent (the cached sessions' grace runs from there). */
struct fleet_probe {
        struct engine *e; /* NULL once the engine is freed: the after-callback frees */
        struct store *store;
        uv_work_t work;
        pthread_mutex_t lock;
        pthread_cond_t done;
        bool working; /* under lock: the work function runs (fleet_free waits for it) */
        bool queued;  /* loop only: the after-callback has not run */
        int64_t now;
        int result;
};

static void probe_result(struct engine *e, int r, int64_t now);

static void probe_destroy(struct fleet_probe *p) {
        pthread_cond_destroy(&p->done);
        pthread_mutex_destroy(&p->lock);
        free(p);
}

static void probe_work(uv_work_t *w) {
        struct fleet_probe *p = w->data;

        p->result = store_probe_any_thread(p->store);
        pthread_mutex_lock(&p->lock);
        p->working = false;
        pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->lock);
}

static void probe_after(uv_work_t *w, int status) {
        struct fleet_probe *p = w->data;

        p->queued = false;
        if (!p->e) {
                probe_destroy(p);
                return;
        }
        if (status < 0)
                return;
        if (p->result == -EOPNOTSUPP) /* a backend without: on the loop */
                p->result = store_probe(p->e->store);
        probe_result(p->e, p->result, p->now);
}

void fleet_probe_stop(struct engine *e) {
        struct fleet_probe *p = e->probe;

        if (!p)
                return;
        e->probe = NULL;
        pthread_mutex_lock(&p->lock);
        while (p->working)
                pthread_cond_wait(&p->done, &p->lock);
        pthread_mutex_unlock(&p->lock);
        if (p->queued)
                p->e = NULL; /* freed by its after-callback */
        else
                probe_destroy(p);
}

void fleet_tick(struct engine *e, int64_t now) {
        struct fleet_probe *p = e->probe;

        if (!e->fleet)
                return;
        if (!p) {
                p = e->probe = calloc(1, sizeof *p);
                if (!p) {
                        probe_result(e, store_probe(e->store), now);
                        return;
                }
                p->e = e;
                p->store = e->store;
                p->work.data = p;
                pthread_mutex_init(&p->lock, NULL);
                pthread_cond_init(&p->done, NULL);
        }
        if (p->queued) {
                /* Still no answer (a server that stopped answering, not
                 * one that refuses): as good as down from the start. */
                if (e->fleet_down_since == 0 && now - p->now >= FLEET_PROBE_SLOW_MS)
                        probe_result(e, -ETIMEDOUT, p->now);
                return;
        }
        p->queued = p->working = true;
        p->now = now;
        if (uv_queue_work(e->d->loop, &p->work, probe_work, probe_after) < 0) {
                probe_work(&p->work);
                probe_after(&p->work, 0);
        }
}

static void probe_result(struct engine *e, int r, int64_t now) {
        if (r < 0 && e->fleet_down_since == 0) {
                e->fleet_down_since = now;
                log_warning("Store %s unreachable (%s): writes fail; cached sessions are honoured for %d s more, "
                            "then validations fail closed until it is back.",
                            store_name(e->store), strerror(-r), FLEET_CACHE_GRACE_MS / 1000);
        } else if (r >= 0 && e->fleet_down_since != 0) {
                log_notice("Store %s reachable again after %lld ms.", store_name(e->store),
                           (long long) (now - e->fleet_down_since));
                e->fleet_down_since = 0;
                e->remote_missed = false;
                fleet_reload_all(e);
        } else if (r >= 0 && e->remote_missed) {
                log_notice("Store %s: a unit of work that was to read other daemons' changes was lost; reading "
                           "the live sessions again.",
                           store_name(e->store));
                e->remote_missed = false;
                fleet_reload_all(e);
        }
}

bool fleet_cache_stale(const struct engine *e, int64_t now) {
        return e->fleet && e->fleet_down_since != 0 && now - e->fleet_down_since >= FLEET_CACHE_GRACE_MS;
}
