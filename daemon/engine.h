/* The session engine: the store, the in-memory index and every session policy.
 *
 * This header starts with what main and the server need; the session helper
 * owns the rest of it (the operations the Varlink methods and background jobs
 * call).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct daemon;
struct engine;

/* Opens (or creates) the store named by d->config->daemon.database_path
 * (in memory when features.persistence is false), loads live sessions.
 * A corrupt or unreadable database is refused with a message naming the
 * file, and never modified. */
int engine_new(struct daemon *d, struct engine **ret);
/* Commits, checkpoints and closes. */
void engine_free(struct engine *e);

/* Commits the open transaction, if any (group commit). Called by
 * server_flush() before replies are written. Returns 0 or negative errno;
 * on failure the server answers the pending writes with an error. */
int engine_commit(struct engine *e);
/* True when writes are waiting for engine_commit(). */
bool engine_has_pending(const struct engine *e);

/* The configuration was swapped (d->config is the new one). */
void engine_config_changed(struct engine *e);
