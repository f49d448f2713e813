/* The session engine's background work (see engine-internal.h for the
 * other files): the concurrency limit, cleanup of expired sessions, purge,
 * maintenance, the touch flush and the counts.
 *
 * Touches. Validate and Heartbeat move last_activity in memory only. An
 * entry becomes dirty once it is ahead of the store by the touch
 * granularity (1% of the idle timeout, between 1 and 60 seconds), and a
 * timer writes dirty entries every two seconds in batches of 512, yielding
 * to the loop between batches; shutdown writes them all. A crash thus loses
 * at most granularity + 2 seconds of idle-time precision, never a session,
 * and a million busy sessions do not turn every validation into a write.
 *
 * Cleanup ends expired sessions in calls bounded by a count and, for the
 * background jobs, by a deadline on the loop's clock
 * (engine_cleanup_expired_until): an ended session costs 10 to 30 us,
 * nearly all of it SQLite's update of the three ended-row indexes (two of
 * them at random places: two WAL pages a session), so its audit detail is
 * a constant text and its event keeps the one copy of the user's name.
 *
 * On a fleet (a store shared by several daemons: fleet.c) memory may be
 * behind the store: another daemon may have touched a session (touches
 * are not reported) or renewed it. So a candidate is not ended at once: a
 * step asks for its row to be read by the store's writer after the next
 * commit (fleet_cleanup_ask; the entry is marked S_CLEANUP_ASKED, so it is
 * asked once), and the loop never waits for PostgreSQL. Once the unit has
 * committed, the row is in memory, and the entry is ended right then if,
 * as read, it still awaits cleanup (cleanup_end_read: on the freshest
 * read, however long the next step takes to come); the next step counts
 * those ends as its own. Asks count against a step's limit like ends, and
 * a step answers "more" while asks or uncounted ends are pending, so the
 * run goes on stepping (one step per commit: a step
 * waits for the unit in flight, daemon/jobs_cleanup.c). A unit whose
 * commit failed (or a read that failed) drops its asks and fails the next
 * step, as a failed read on the loop did, so that a run does not ask for
 * ever while the store is down; a later run asks again (fleet_lost).
 */
#include "engine-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* The clock is read after every CLEANUP_CLOCK_ENDED sessions ended (each
 * costs 10 to 30 us, mostly SQLite) and every CLEANUP_CLOCK_SCANNED entries
 * looked at (a few ns each): a step overruns its deadline by about one
 * ended session. */
#define CLEANUP_CLOCK_ENDED 4
#define CLEANUP_CLOCK_SCANNED 4096

static bool past(uint64_t deadline_ns) {
        return deadline_ns != 0 && uv_hrtime() >= deadline_ns;
}

/* ---- the concurrency limit ----------------------------------------------------------------------- */

/* The per-user limit in O(1). "Live" depends on now: a session past its end
 * + expiration_grace is not live, though it stays in memory (and in its
 * user's list) until cleanup ends it. So:
 *  - the count of a user's sessions in memory (n_sessions) is exact and
 *    bounds the live count from above: at or below the limit, as when a
 *    user creates its 50,000th session under a limit of 100,000, a Create
 *    looks at nothing else and costs what the first one did;
 *  - above it, the live count and the victim come from the head of the
 *    user's list, which is in order of last activity (table.c): sessions
 *    expired by the idle timeout are a prefix of it, and the first live one
 *    after them is the least recently active. Sessions expired by the
 *    lifetime or the absolute cap may sit anywhere, but none can exist
 *    while now is before min_renewed + session_lifetime (and min_created +
 *    absolute_timeout) + expiration_grace, lower bounds kept by the table;
 *    so this step walks only the expired-not-yet-cleaned prefix, in
 *    practice a few entries;
 *  - otherwise (a session may have reached its lifetime or absolute cap)
 *    one walk of the whole list counts and picks, and makes the bounds
 *    exact again: it repeats only while such a session really awaits its
 *    cleanup (cleanup_grace), which ends it.
 * The victim is the first live session in list order other than `keep`:
 * the least recently active, ties going to the one that reached that
 * millisecond first (at load, the lower row). */
static bool user_fixed_ends_ahead(const struct engine *e, const struct user *u, int64_t now) {
        const struct sessiond_config *c = cfg(e);
        int64_t grace = c->timeout.expiration_grace;

        /* min_renewed and min_created are seconds (floored, so lower bounds
         * of the sessions' milliseconds), now is ms. */
        return now < SEC_MS((int64_t) u->min_renewed + c->timeout.session_lifetime + grace) &&
               now < SEC_MS((int64_t) u->min_created + c->timeout.absolute_timeout + grace);
}

static void user_scan_all(struct engine *e, uint32_t user, uint32_t keep, int64_t now, uint32_t *live,
                          uint32_t *victim) {
        struct user *u = &e->users[user];

        *live = 0;
        *victim = NIL;
        u->min_created = u->min_renewed = UINT32_MAX;
        for (uint32_t h = u->head; h != NIL; h = e->sessions[h].user_next) {
                const struct session *s = &e->sessions[h];

                if (s->sec[ST_CREATED] < u->min_created)
                        u->min_created = s->sec[ST_CREATED];
                if (s->sec[ST_RENEWED] < u->min_renewed)
                        u->min_renewed = s->sec[ST_RENEWED];
                if (table_session_state(e, s, now, NULL, NULL) == ENGINE_STATE_EXPIRED)
                        continue;
                (*live)++;
                if (*victim == NIL && h != keep)
                        *victim = h;
        }
}

/* The live sessions of a user and the least recently active of them other
 * than keep (NIL: none). */
static void user_scan(struct engine *e, uint32_t user, uint32_t keep, int64_t now, uint32_t *live, uint32_t *victim) {
        const struct user *u = &e->users[user];
        int64_t idle_gone = now - SEC_MS(cfg(e)->timeout.idle_timeout + cfg(e)->timeout.expiration_grace); /* ms */
        uint32_t expired = 0, h;

        if (!user_fixed_ends_ahead(e, u, now)) {
                user_scan_all(e, user, keep, now, live, victim);
                return;
        }
        for (h = u->head; h != NIL && session_ms(&e->sessions[h], ST_ACTIVITY) <= idle_gone;
             h = e->sessions[h].user_next)
                expired++;
        if (h == keep)
                h = e->sessions[h].user_next;
        assert(h == NIL || table_session_state(e, &e->sessions[h], now, NULL, NULL) != ENGINE_STATE_EXPIRED);
        *victim = h;
        *live = u->n_sessions - expired;
}

/* The live sessions of a user (the max_sessions cap of session.c). */
unsigned cleanup_user_count_live(struct engine *e, uint32_t user, int64_t now) {
        uint32_t live, victim;

        user_scan(e, user, NIL, now, &live, &victim);
        return live;
}

/* Ends least recently active sessions of a user until at most max are live,
 * at most `budget` of them; with a deadline (uv_hrtime(), 0: none) also
 * stops once it has passed (*cut: the user may still be over), the clock
 * read every CLEANUP_CLOCK_ENDED sessions ended. */
static int user_enforce_until(struct engine *e, int64_t now, uint32_t user, uint32_t keep, int64_t max, unsigned budget,
                              uint64_t deadline_ns, char (**ids)[TOKEN_ID_STRING_LEN + 1], size_t *n_ids,
                              unsigned *ended, bool *cut) {
        size_t allocated = 0;
        unsigned n = 0;
        int r;

        *cut = false;
        while (budget > 0 && user_used(e, user) && (int64_t) e->users[user].n_sessions > max) {
                char id[TOKEN_ID_STRING_LEN + 1];
                uint32_t live, victim;

                user_scan(e, user, keep, now, &live, &victim);
                if ((int64_t) live <= max || victim == NIL)
                        break;
                r = session_end(e, now, victim, ENGINE_END_EVICTED, now, "evicted", id);
                if (r < 0)
                        return r;
                budget--;
                n++;
                (*ended)++;
                if (ids) {
                        allocated = *n_ids;
                        if (GROW(*ids, allocated, *n_ids + 1) == 0)
                                memcpy((*ids)[(*n_ids)++], id, sizeof id);
                }
                if (n % CLEANUP_CLOCK_ENDED == 0 && past(deadline_ns)) {
                        *cut = true;
                        break;
                }
        }
        return 0;
}

int cleanup_user_enforce(struct engine *e, int64_t now, uint32_t user, uint32_t keep, int64_t max, unsigned budget,
                         char (**ids)[TOKEN_ID_STRING_LEN + 1], size_t *n_ids, unsigned *ended) {
        bool cut;

        return user_enforce_until(e, now, user, keep, max, budget, 0, ids, n_ids, ended, &cut);
}

/* ---- background work ------------------------------------------------------------------------------------------- */

static bool session_awaits_cleanup(const struct engine *e, const struct session *s, int64_t now, int64_t *end,
                                   enum engine_end_reason *why) {
        int64_t t = table_session_end_time(e, s, why);

        if (end)
                *end = t;
        return now >= t + SEC_MS(cfg(e)->timeout.cleanup_grace);
}

/* An entry the cursor passed without ending it: counted towards "nothing
 * left" (cleanup_quiet), which holds until the earliest time one of those
 * entries, or a session created since the count began, may await cleanup
 * (cleanup_quiet_next). Without that bound a count left by a run an hour
 * ago told the next run's first step, out of time before it found
 * anything, that nothing was left. */
static void cleanup_quiet_note(struct engine *e, int64_t now, const struct session *s, int64_t end) {
        const struct sessiond_config *c = cfg(e);
        int64_t next;

        if (e->cleanup_quiet == 0) {
                int64_t shortest = c->timeout.idle_timeout;

                if (c->timeout.session_lifetime < shortest)
                        shortest = c->timeout.session_lifetime;
                if (c->timeout.absolute_timeout < shortest)
                        shortest = c->timeout.absolute_timeout;
                e->cleanup_quiet_next = now + SEC_MS(shortest + c->timeout.cleanup_grace);
        }
        next = end + SEC_MS(c->timeout.cleanup_grace);
        if (s && next < e->cleanup_quiet_next)
                e->cleanup_quiet_next = next;
        if (e->cleanup_quiet < UINT32_MAX)
                e->cleanup_quiet++;
}

static bool cleanup_fleet_pending(const struct engine *e) {
        return e->n_cleanup_open > 0 || e->n_cleanup_inflight > 0 || e->cleanup_ended_on_read > 0;
}

int cleanup_end_read(struct engine *e, uint32_t h, int64_t now) {
        enum engine_end_reason why;
        int64_t end;
        int r;

        if (!session_awaits_cleanup(e, &e->sessions[h], now, &end, &why))
                return 0; /* touched or renewed elsewhere */
        r = session_end(e, now, h, why, end, "ended", NULL);
        if (r >= 0)
                e->cleanup_ended_on_read++;
        return r;
}

int engine_cleanup_expired_until(struct engine *e, int64_t now, unsigned limit, uint64_t deadline_ns, unsigned *ended,
                                 bool *more) {
        uint32_t scanned = 0;
        unsigned asked = 0;
        int r;

        *ended = 0;
        *more = false;
        if (e->cleanup_error < 0) {
                /* Asks were lost with their unit: the run stops on it (as
                 * on a read that failed) rather than ask for ever while
                 * the store is down; a later run asks again. */
                r = e->cleanup_error;
                e->cleanup_error = 0;
                return r;
        }
        *ended = e->cleanup_ended_on_read; /* ended when their rows were read (fleet.c) */
        e->cleanup_ended_on_read = 0;
        if (e->cleanup_quiet > 0 && now >= e->cleanup_quiet_next)
                e->cleanup_quiet = 0; /* what it counted may await cleanup by now */
        while (scanned < e->sessions_used && *ended + asked < limit) {
                uint32_t h;
                enum engine_end_reason why;
                int64_t end;

                if (scanned % CLEANUP_CLOCK_SCANNED == CLEANUP_CLOCK_SCANNED - 1 && past(deadline_ns)) {
                        /* Out of time before a whole pass. Steps go on where
                         * this one stopped, so once the cursor has gone all
                         * the way round since its last end there is nothing
                         * left (a table too large to pass in one step would
                         * otherwise answer "maybe" for ever). */
                        *more = e->cleanup_quiet < e->sessions_used || cleanup_fleet_pending(e);
                        return 0;
                }
                if (e->cleanup_cursor >= e->sessions_used)
                        e->cleanup_cursor = 0;
                h = e->cleanup_cursor++;
                scanned++;
                if (!(e->sessions[h].flags & S_USED)) {
                        cleanup_quiet_note(e, now, NULL, 0);
                        continue;
                }
                if (!session_awaits_cleanup(e, &e->sessions[h], now, &end, &why)) {
                        cleanup_quiet_note(e, now, &e->sessions[h], end);
                        continue;
                }
                e->cleanup_quiet = 0;
                if (e->fleet) {
                        /* Touched or renewed on another daemon meanwhile?
                         * The store decides: its row is read after the
                         * next commit, and a later step ends it (above). */
                        if (e->sessions[h].flags & S_CLEANUP_ASKED)
                                continue;
                        r = fleet_cleanup_ask(e, h);
                        if (r < 0)
                                return txn_storage_errno(r);
                        asked++;
                        continue;
                }
                r = session_end(e, now, h, why, end, "ended", NULL);
                if (r < 0)
                        return r;
                (*ended)++;
                if (*ended < limit && *ended % CLEANUP_CLOCK_ENDED == 0 && past(deadline_ns)) {
                        *more = true;
                        return 0;
                }
        }
        /* Budget used up: is there at least one more? (Stops at the first;
         * out of time before it is found: maybe.) */
        for (uint32_t i = 0, h = e->cleanup_cursor; *ended + asked >= limit && !*more && i < e->sessions_used;
             i++, h++) {
                if (h >= e->sessions_used)
                        h = 0;
                if (i % CLEANUP_CLOCK_SCANNED == CLEANUP_CLOCK_SCANNED - 1 && past(deadline_ns)) {
                        *more = true;
                        break;
                }
                *more = (e->sessions[h].flags & S_USED) && session_awaits_cleanup(e, &e->sessions[h], now, NULL, NULL);
        }
        if (cleanup_fleet_pending(e))
                *more = true; /* asks to be read, or read and to be ended */
        return 0;
}

int engine_cleanup_expired(struct engine *e, int64_t now, unsigned limit, unsigned *ended, bool *more) {
        return engine_cleanup_expired_until(e, now, limit, 0, ended, more);
}

bool engine_count_awaiting_cleanup_step(struct engine *e, int64_t now, uint64_t deadline_ns, uint32_t *cursor,
                                        uint64_t *count) {
        for (uint32_t h = *cursor; h < e->sessions_used; h++) {
                if (h > *cursor && (h - *cursor) % CLEANUP_CLOCK_SCANNED == 0 && past(deadline_ns)) {
                        *cursor = h;
                        return false;
                }
                if ((e->sessions[h].flags & S_USED) && session_awaits_cleanup(e, &e->sessions[h], now, NULL, NULL))
                        (*count)++;
        }
        *cursor = 0;
        return true;
}

uint64_t engine_count_awaiting_cleanup(struct engine *e, int64_t now) {
        uint32_t cursor = 0;
        uint64_t n = 0;

        (void) engine_count_awaiting_cleanup_step(e, now, 0, &cursor, &n);
        return n;
}

static bool user_over_limit(struct engine *e, uint32_t u, int64_t now, int64_t max) {
        uint32_t live, victim;

        if (!user_used(e, u) || (int64_t) e->users[u].n_sessions <= max)
                return false;
        user_scan(e, u, NIL, now, &live, &victim);
        return (int64_t) live > max;
}

/* A pass over the users from where the last call stopped (limit_cursor),
 * bounded like the expiry above: by `limit` sessions ended and by the
 * deadline, read every CLEANUP_CLOCK_ENDED sessions ended and every
 * CLEANUP_CLOCK_SCANNED users looked at (a few ns each, more for a user
 * over the limit whose bounds need a walk: user_scan). A user cut short
 * is taken up again by the next call, where it stopped (its least recently
 * active live sessions go first whatever the steps). Once the cursor has
 * gone all the way round since the last eviction, nothing is left. */
int engine_enforce_user_limit_until(struct engine *e, int64_t now, unsigned limit, uint64_t deadline_ns,
                                    unsigned *ended, bool *more) {
        int64_t max = cfg(e)->security.max_concurrent_per_user;
        int r;

        *ended = 0;
        *more = false;
        if (e->limit_quiet_max != max) {
                /* Users passed under another limit say nothing of this one. */
                e->limit_quiet = 0;
                e->limit_quiet_max = max;
        }
        for (uint32_t scanned = 0; scanned < e->users_used && *ended < limit; scanned++) {
                uint32_t u;

                if (scanned % CLEANUP_CLOCK_SCANNED == CLEANUP_CLOCK_SCANNED - 1 && past(deadline_ns)) {
                        *more = e->limit_quiet < e->users_used;
                        return 0;
                }
                if (e->limit_cursor >= e->users_used)
                        e->limit_cursor = 0;
                u = e->limit_cursor;
                if (user_over_limit(e, u, now, max)) {
                        bool cut;

                        e->limit_quiet = 0;
                        r = user_enforce_until(e, now, u, NIL, max, limit - *ended, deadline_ns, NULL, NULL, ended,
                                               &cut);
                        if (r < 0)
                                return r;
                        if (cut || user_over_limit(e, u, now, max)) {
                                *more = true; /* this user needs another step */
                                return 0;
                        }
                } else if (e->limit_quiet < UINT32_MAX)
                        e->limit_quiet++;
                e->limit_cursor++;
        }
        /* Budget used up: is there at least one more? (Out of time before
         * it is found: maybe.) */
        for (uint32_t u = 0; *ended >= limit && !*more && u < e->users_used; u++) {
                if (u % CLEANUP_CLOCK_SCANNED == CLEANUP_CLOCK_SCANNED - 1 && past(deadline_ns)) {
                        *more = true;
                        break;
                }
                *more = user_over_limit(e, u, now, max);
        }
        return 0;
}

int engine_enforce_user_limit(struct engine *e, int64_t now, unsigned limit, unsigned *ended, bool *more) {
        return engine_enforce_user_limit_until(e, now, limit, 0, ended, more);
}

/* One statement per table: ended sessions first, then audit rows. With a
 * deadline, the audit rows wait for the next call when the sessions filled
 * their limit or took the time (a DELETE cannot be cut short, so the caller
 * bounds each by `limit` and sizes that to its time budget). */
int engine_purge_until(struct engine *e, int64_t now, unsigned limit, uint64_t deadline_ns, unsigned *sessions,
                       unsigned *audit_rows, bool *more) {
        const struct sessiond_config *c = cfg(e);
        int r;

        *sessions = *audit_rows = 0;
        *more = false;
        if (limit == 0)
                return 0;
        r = txn_begin(e);
        if (r < 0)
                return r;
        r = store_purge_sessions(e->store, now - SEC_MS(c->cleanup.expired_retention_days * 86400), (int) limit);
        if (r < 0)
                return txn_fail(e, r);
        *sessions = (unsigned) r;
        e->write_seq++;
        e->counters.purged_sessions += *sessions;
        if (deadline_ns != 0 && (*sessions >= limit || past(deadline_ns))) {
                *more = true; /* the audit rows (or more sessions) in the next step */
                return 0;
        }
        r = store_purge_audit(e->store, ms_floor_s(now) - c->cleanup.audit_retention_days * 86400, (int) limit);
        if (r < 0)
                return txn_fail(e, r);
        *audit_rows = (unsigned) r;
        e->counters.purged_audit += *audit_rows;
        *more = *sessions >= limit || *audit_rows >= limit;
        return 0;
}

int engine_purge(struct engine *e, int64_t now, unsigned limit, unsigned *sessions, unsigned *audit_rows, bool *more) {
        return engine_purge_until(e, now, limit, 0, sessions, audit_rows, more);
}

int engine_maintain(struct engine *e, struct store_maintenance *ret) {
        int r = engine_commit(e);

        if (r < 0)
                return r;
        r = store_maintain(e->store, ret);
        if (r < 0)
                return txn_storage_errno(r);
        if (!ret->ok)
                log_error("Database %s failed its quick check: %s", store_name(e->store), ret->message);
        return 0;
}

int engine_flush_touches(struct engine *e, unsigned limit, unsigned *written, bool *more) {
        unsigned n = 0;
        int r;

        while (e->n_dirty > 0 && n < limit) {
                uint32_t h = e->dirty[e->n_dirty - 1];
                struct session *s;

                if (h >= e->sessions_used || (e->sessions[h].flags & (S_USED | S_DIRTY)) != (S_USED | S_DIRTY)) {
                        e->n_dirty--; /* ended since, or written already */
                        continue;
                }
                r = txn_begin(e);
                if (r < 0)
                        break;
                s = &e->sessions[h];
                r = txn_row_touch(e, s->row_key, h);
                if (r < 0) {
                        txn_fail(e, r);
                        break;
                }
                r = store_session_set_activity(e->store, s->row_key, session_ms(s, ST_ACTIVITY));
                if (r < 0 && r != -ENOENT) {
                        txn_fail(e, r);
                        break;
                }
                e->n_dirty--;
                session_ms_set(s, ST_PERSISTED, session_ms(s, ST_ACTIVITY));
                s->flags &= ~S_DIRTY;
                n++;
        }
        e->counters.touches_written += n;
        if (written)
                *written = n;
        if (more)
                *more = e->n_dirty > 0;
        return e->commit_error ? e->commit_error : 0;
}

void engine_count(struct engine *e, int64_t now, struct engine_counts *ret) {
        memset(ret, 0, sizeof *ret);
        for (uint32_t h = 0; h < e->sessions_used; h++) {
                const struct session *s = &e->sessions[h];
                int64_t end;

                if (!(s->flags & S_USED))
                        continue;
                ret->sessions++;
                switch (table_session_state(e, s, now, &end, NULL)) {
                case ENGINE_STATE_ACTIVE:
                        ret->active++;
                        break;
                case ENGINE_STATE_GRACE:
                        ret->grace++;
                        break;
                default:
                        ret->expired++;
                        break;
                }
                if (now >= end + SEC_MS(cfg(e)->timeout.cleanup_grace))
                        ret->awaiting_cleanup++;
                if (s->flags & S_DIRTY)
                        ret->dirty_touches++;
        }
        ret->users = e->n_users;
}

int engine_count_by_platform(struct engine *e, int64_t now, engine_count_fn cb, void *userdata) {
        uint64_t *counts = calloc((size_t) e->platforms_used + 1, sizeof *counts);
        int r = 0;

        if (!counts)
                return -ENOMEM;
        for (uint32_t h = 0; h < e->sessions_used; h++) {
                const struct session *s = &e->sessions[h];

                if ((s->flags & S_USED) && table_session_state(e, s, now, NULL, NULL) != ENGINE_STATE_EXPIRED)
                        counts[s->platform]++;
        }
        for (uint32_t p = 0; r == 0 && p <= e->platforms_used; p++)
                if (counts[p] > 0)
                        r = cb(platform_name(e, p), counts[p], userdata);
        free(counts);
        return r;
}
