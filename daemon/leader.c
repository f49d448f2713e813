/* Leadership in a fleet (features.clustering, DESIGN 8).
 *
 * Several daemons share one PostgreSQL store; the background jobs that
 * change it for everyone (cleanup, retention purge, the security check)
 * must run on one of them at a time. The store keeps a lock that one
 * daemon holds on a connection of its own (pg_try_advisory_lock): whoever
 * holds it is the leader. Every LEADER_TICK_MS each daemon tries to take it
 * (a follower) or checks it still has it (the leader), and writes its
 * heartbeat row, which Status reads to show the fleet. When the leader dies,
 * even by kill -9, PostgreSQL ends its session and frees the lock, and the
 * next tick of another daemon takes it: the jobs move within a tick plus
 * one job interval. Metrics, health and alerts stay per daemon.
 *
 * Without clustering every daemon is its own leader and tries for no lock;
 * its tick still writes its heartbeat and refreshes what Status and Metrics
 * show of the fleet (the daemons seen, the tables' room:
 * store_fleet_refresh), so that those answer without a round trip on the
 * loop. The calls are short statements with a statement timeout, made once
 * a second on a worker thread (uv_queue_work): the lock's connection and
 * the auxiliary one are the store's only connections that the loop never
 * uses, so a slow or unreachable PostgreSQL costs the loop nothing here.
 */
#include "leader.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "store.h"

struct leader {
        struct store *store;
        uv_loop_t *loop;
        uv_timer_t timer;
        uv_work_t work;
        char id[300];
        bool contend; /* features.clustering: try for the lock */
        bool is_leader;
        bool warned; /* the store failed: said once until it works again */
        bool queued; /* a tick's work is queued or running: its after-callback has not run (loop only) */
        bool closing, timer_closed;
        /* The tick on a worker thread: what it was given and found. */
        pthread_mutex_t lock;
        pthread_cond_t done;
        bool working; /* under lock: the work function runs (leader_free waits for it) */
        int64_t now_ms;
        int try_result, beat_result;
        bool now_leader;
};

/* On a worker thread: the lock's try and the heartbeat (the leader's own
 * connection and the auxiliary one: neither is the loop's). */
static void tick_work(uv_work_t *w) {
        struct leader *l = w->data;

        l->now_leader = !l->contend;
        l->try_result = l->contend ? store_leader_try(l->store, &l->now_leader) : 0;
        if (l->try_result < 0)
                l->now_leader = false;
        l->beat_result = store_heartbeat(l->store, l->id, l->contend && l->now_leader, l->now_ms);
        (void) store_fleet_refresh(l->store, l->now_ms - LEADER_SEEN_WINDOW_MS);
        pthread_mutex_lock(&l->lock);
        l->working = false;
        pthread_cond_signal(&l->done);
        pthread_mutex_unlock(&l->lock);
}

static void leader_destroy(struct leader *l) {
        pthread_cond_destroy(&l->done);
        pthread_mutex_destroy(&l->lock);
        free(l);
}

/* Back on the loop: what the tick found. */
static void tick_after(uv_work_t *w, int status) {
        struct leader *l = w->data;

        l->queued = false;
        if (l->closing) {
                if (l->timer_closed)
                        leader_destroy(l);
                return;
        }
        if (status < 0)
                return;
        if (l->try_result < 0) {
                if (!l->warned)
                        log_warning("Leadership: the store cannot say who leads (%s); this daemon runs no "
                                    "fleet jobs until it can.",
                                    strerror(-l->try_result));
                l->warned = true;
        } else
                l->warned = false;
        if (l->contend && l->now_leader != l->is_leader)
                log_notice("Leadership: %s %s the fleet's background jobs.", l->id,
                           l->now_leader ? "now runs" : "no longer runs");
        l->is_leader = l->now_leader;
        if (l->beat_result < 0 && l->beat_result != -EOPNOTSUPP)
                log_debug("Leadership: heartbeat not written: %s", strerror(-l->beat_result));
}

/* Every LEADER_TICK_MS: the statements run on a worker thread (a slow or
 * unreachable PostgreSQL never holds the loop); a tick still running when
 * the next is due lets that one pass. */
static void leader_tick(uv_timer_t *t) {
        struct leader *l = t->data;

        if (l->queued)
                return;
        l->queued = l->working = true;
        l->now_ms = clock_now_ms();
        if (uv_queue_work(l->loop, &l->work, tick_work, tick_after) < 0) {
                tick_work(&l->work);
                tick_after(&l->work, 0);
        }
}

int leader_new(uv_loop_t *loop, struct store *s, bool contend, struct leader **ret) {
        struct leader *l = calloc(1, sizeof *l);
        char host[256] = "localhost";
        int r;

        if (!l)
                return -ENOMEM;
        (void) gethostname(host, sizeof host - 1);
        snprintf(l->id, sizeof l->id, "%s:%d", host, (int) getpid());
        l->store = s;
        l->loop = loop;
        l->contend = contend;
        l->work.data = l;
        pthread_mutex_init(&l->lock, NULL);
        pthread_cond_init(&l->done, NULL);
        r = uv_timer_init(loop, &l->timer);
        if (r < 0) {
                leader_destroy(l);
                return r;
        }
        l->timer.data = l;
        /* Decided before the first job runs: the first tick on this thread. */
        l->working = true;
        l->now_ms = clock_now_ms();
        tick_work(&l->work);
        tick_after(&l->work, 0);
        (void) uv_timer_start(&l->timer, leader_tick, LEADER_TICK_MS, LEADER_TICK_MS);
        uv_unref((uv_handle_t *) &l->timer);
        *ret = l;
        return 0;
}

bool leader_is_me(const struct leader *l) {
        return !l || l->is_leader;
}

const char *leader_id(const struct leader *l) {
        return l ? l->id : NULL;
}

static void leader_closed(uv_handle_t *h) {
        struct leader *l = h->data;

        l->timer_closed = true;
        if (!l->queued)
                leader_destroy(l);
}

/* The store is closed next: a tick still running on a worker is waited for
 * (one statement timeout at most); its after-callback, which the loop runs
 * later, frees what is left. */
void leader_free(struct leader *l) {
        if (!l)
                return;
        uv_timer_stop(&l->timer);
        pthread_mutex_lock(&l->lock);
        while (l->working)
                pthread_cond_wait(&l->done, &l->lock);
        pthread_mutex_unlock(&l->lock);
        l->closing = true;
        uv_close((uv_handle_t *) &l->timer, leader_closed);
}
