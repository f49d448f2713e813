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
 * Without clustering every daemon is its own leader and nothing here runs.
 * The calls are short statements on a local connection with a statement
 * timeout, made on the loop once a second.
 */
#include "leader.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "store.h"

struct leader {
        struct store *store;
        uv_timer_t timer;
        char id[300];
        bool is_leader;
        bool warned; /* the store failed: said once until it works again */
};

static void leader_tick(uv_timer_t *t) {
        struct leader *l = t->data;
        bool now_leader = false;
        int r;

        r = store_leader_try(l->store, &now_leader);
        if (r < 0) {
                if (!l->warned)
                        log_warning("Leadership: the store cannot say who leads (%s); this daemon runs no "
                                    "fleet jobs until it can.",
                                    strerror(-r));
                l->warned = true;
                now_leader = false;
        } else
                l->warned = false;
        if (now_leader != l->is_leader)
                log_notice("Leadership: %s %s the fleet's background jobs.", l->id,
                           now_leader ? "now runs" : "no longer runs");
        l->is_leader = now_leader;
        r = store_heartbeat(l->store, l->id, l->is_leader, clock_now_ms());
        if (r < 0 && r != -EOPNOTSUPP)
                log_debug("Leadership: heartbeat not written: %s", strerror(-r));
}

int leader_new(uv_loop_t *loop, struct store *s, struct leader **ret) {
        struct leader *l = calloc(1, sizeof *l);
        char host[256] = "localhost";
        int r;

        if (!l)
                return -ENOMEM;
        (void) gethostname(host, sizeof host - 1);
        snprintf(l->id, sizeof l->id, "%s:%d", host, (int) getpid());
        l->store = s;
        r = uv_timer_init(loop, &l->timer);
        if (r < 0) {
                free(l);
                return r;
        }
        l->timer.data = l;
        leader_tick(&l->timer); /* decided before the first job runs */
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
        free(h->data);
}

void leader_free(struct leader *l) {
        if (!l)
                return;
        uv_timer_stop(&l->timer);
        uv_close((uv_handle_t *) &l->timer, leader_closed);
}
