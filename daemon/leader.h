/* Leadership in a fleet (features.clustering): see leader.c. */
#pragma once

#include <stdbool.h>
#include <uv.h>

struct store;
struct leader;

#define LEADER_TICK_MS 1000
/* The daemons seen within this long are shown by Status. */
#define LEADER_SEEN_WINDOW_MS (10 * LEADER_TICK_MS)

/* Starts the ticks on shared store s: with contend (features.clustering)
 * trying for the leadership (decided once before this returns, then every
 * LEADER_TICK_MS); without, this daemon leads its own jobs and the ticks
 * only write its heartbeat and refresh what Status shows. */
int leader_new(uv_loop_t *loop, struct store *s, bool contend, struct leader **ret);
/* True when this daemon runs the fleet's jobs: it holds the lock, or there
 * is no clustering (or no fleet: l NULL). */
bool leader_is_me(const struct leader *l);
/* "host:pid", the daemon's id in the heartbeat rows; NULL on one host. */
const char *leader_id(const struct leader *l);
void leader_free(struct leader *l);
