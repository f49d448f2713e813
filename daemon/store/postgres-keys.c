/* The PostgreSQL backend's session keys (DESIGN 8; postgres-internal.h
 * lists the backend's files).
 *
 * Keys come from the sequence sessiond_session_keys, which advances by
 * PG_KEY_BLOCK: one nextval() gives this store a block of PG_KEY_BLOCK
 * keys that no other daemon gets, handed out locally, so Create does not
 * pay a round trip per key. Keys are unique, not ordered across daemons.
 * The loop hands them out without core.lock (allocate_key_unlocked): once
 * it begins a block, the writer fetches the next one after its next
 * commit (pg_keys_fetch_ahead, under key_lock), so a Create usually
 * neither pays a round trip nor waits for the unit in flight; only when
 * no block is ready (the first key, a burst of more than PG_KEY_BLOCK
 * creations between two commits, a failed fetch ahead) does the loop
 * fetch one, under core.lock.
 */
#include "postgres-internal.h"

#include <stdlib.h>

/* A block of PG_KEY_BLOCK keys no other daemon gets: *first (the
 * writing connection, under core.lock). */
static int keys_fetch(struct pg_store *p, int64_t *first) {
        int r = pg_in_tx(p) ? 0 : pg_writer_ready(p);
        _cleanup_pqclear_ PGresult *res = r < 0 ? NULL : pg_run(p, Q_NEXT_KEYS, NULL);

        if (r < 0)
                return r;
        r = pg_result_check(p->name, p->w.c, res, PGRES_TUPLES_OK, "allocating session keys");
        if (r < 0)
                return r;
        *first = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        return 0;
}

/* After a commit, on the writer: the block the loop will want next. */
void pg_keys_fetch_ahead(struct pg_store *p) {
        int64_t first;
        bool wanted;

        pthread_mutex_lock(&p->key_lock);
        wanted = p->key_wanted && p->key_spare == 0;
        pthread_mutex_unlock(&p->key_lock);
        if (!wanted || p->reader || PQstatus(p->w.c) != CONNECTION_OK || keys_fetch(p, &first) < 0)
                return; /* failed: the loop fetches its block itself */
        pthread_mutex_lock(&p->key_lock);
        p->key_spare = first;
        p->key_wanted = false;
        pthread_mutex_unlock(&p->key_lock);
}

/* Called without core.lock (allocate_key_unlocked): a Create does not wait
 * for the unit in flight, whose commit holds the lock for round trips.
 * The block fetched ahead is taken when the loop's runs out; only when
 * there is none (the first key, or a burst of more than PG_KEY_BLOCK
 * creations in one commit) is one fetched here, waiting for the lock. */
int pg_allocate_key(struct store *s, int64_t *ret) {
        struct pg_store *p = pg(s);
        int64_t first;

        if (p->key_next >= p->key_end) {
                pthread_mutex_lock(&p->key_lock);
                first = p->key_spare;
                p->key_spare = 0;
                p->key_wanted = true;
                pthread_mutex_unlock(&p->key_lock);
                if (first == 0) {
                        int r;

                        pthread_mutex_lock(&s->lock);
                        r = keys_fetch(p, &first);
                        pthread_mutex_unlock(&s->lock);
                        if (r < 0)
                                return r;
                }
                p->key_next = first;
                p->key_end = first + PG_KEY_BLOCK;
        }
        *ret = p->key_next++;
        return 0;
}
