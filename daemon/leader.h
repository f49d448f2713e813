/* Leadership in a fleet (features.clustering): see leader.c. */
#pragma once

#include <stdbool.h>
#include <uv.h>

struct store;
struct leader;

#define LEADER_TICK_MS 1000
/* The daemons seen within this long are shown by Status. */
#define LEADER_SEEN_WINDOW_MS (10 * LEADER_TICK_MS)

/* Starts trying for the leadership on store s (decided once before this
 * returns, then every LEADER_TICK_MS). */
int leader_new(uv_loop_t *loop, struct store *s, struct leader **ret);
/* True when this daemon runs the fleet's jobs: it holds the lock, or there
 * is no clustering (l NULL). */
bool leader_is_me(const struct leader *l);
/* "host:pid", the daemon's id in the heartbeat rows; NULL without clustering. */
const char *leader_id(const struct leader *l);
void leader_free(struct leader *l);
