/* The session engine's start-up, timers and shutdown (see engine-internal.h
 * for the other files).
 *
 * engine_new() reads the key file before it opens the store: a database
 * whose key is gone cannot resolve a single token, and making a new key
 * would hide that. Opening the store loads the live sessions into the
 * table, in batches (see "Loading" below). A timer writes the touches every
 * two seconds, the counts of failed validations once a minute (auditagg.c)
 * and sweeps the suspicious-activity records; another
 * dispatches the events. engine_free() commits what the iteration did and
 * the counts of failed validations, then writes every touch: a clean stop
 * loses nothing.
 */
#include "engine-internal.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "macro.h" /* lib/common: _cleanup_, TAKE_PTR */
#include "statefiles.h"

/* ---- for the observability modules -------------------------------------------------------------------------- */

struct store *engine_store(struct engine *e) {
        return e->store;
}

/* ---- timers --------------------------------------------------------------------------------------------------- */

static void flush_timer_cb(uv_timer_t *t) {
        struct engine *e = t->data;
        bool more = false;
        unsigned n = 0;

        (void) engine_flush_touches(e, TOUCH_FLUSH_BATCH, &n, &more);
        engine_audit_tick(e, clock_now_ms());
        fleet_tick(e, clock_now_ms());
        if (++e->ticks % SWEEP_EVERY_TICKS == 0)
                engine_security_sweep(e, clock_now_ms());
        /* More to write: go on in a later loop iteration, after this
         * batch is committed and other requests had their turn. Not 0: a
         * timer re-armed with 0 from its own callback runs again in the
         * same iteration under libuv 1.44, which would write every batch in
         * one transaction without ever yielding. */
        uv_timer_start(t, flush_timer_cb, more ? 1 : TOUCH_FLUSH_INTERVAL_MS, 0);
}

static void timer_close_cb(uv_handle_t *h) {
        free(h);
}

static uv_timer_t *timer_new(struct engine *e) {
        uv_timer_t *t = malloc(sizeof *t);

        if (!t)
                return NULL;
        if (uv_timer_init(e->d->loop, t) < 0) {
                free(t);
                return NULL;
        }
        t->data = e;
        uv_unref((uv_handle_t *) t);
        return t;
}

static void timer_free(uv_timer_t *t) {
        if (t) {
                uv_timer_stop(t);
                uv_close((uv_handle_t *) t, timer_close_cb);
        }
}

/* ---- lifecycle ------------------------------------------------------------------------------------------------ */

/* Loading. With a million sessions the index slots, the user entries and
 * the session entries are tens of MiB, and each row's lookups are cache
 * misses that depend on one another (slot, then entry). So rows are taken
 * in batches: their slots are prefetched when a row is copied, the user
 * entry a slot points to before the batch is added, and the misses of a
 * batch overlap instead of queueing up. Rows with texts longer than the
 * copy's room (rare: long user ids) flush the batch and go alone. */
#define LOAD_BATCH 32
#define LOAD_TEXT 64

struct load_row {
        struct store_session row;
        uint32_t user_hash;
        char id[TOKEN_ID_STRING_LEN + 1];
        char user_id[LOAD_TEXT];
        char platform_id[LOAD_TEXT];
};

struct load_batch {
        struct load_row rows[LOAD_BATCH];
        unsigned n;
};

static void prefetch_slot(const struct hindex *x, uint64_t hash) {
        if (x->slots)
                __builtin_prefetch(&x->slots[(uint32_t) hash & x->mask]);
}

static int load_add(struct engine *e, const struct store_session *row, uint32_t user_hash) {
        uint32_t h;
        int r = table_session_add_hashed(e, row, user_hash, &h);

        return r == -EINVAL ? 0 : r; /* a malformed row is skipped and logged */
}

static int load_flush(struct engine *e) {
        struct load_batch *b = e->loading;
        int r = 0;

        if (!b)
                return 0;
        /* The slots are in cache by now: bring in the user entries they name. */
        for (unsigned i = 0; i < b->n; i++) {
                const struct hindex *x = &e->by_user;
                uint32_t v = x->slots ? x->slots[b->rows[i].user_hash & x->mask] : 0;

                if (v != 0 && ((v & HINDEX_MAX_HANDLE) - 1) < e->users_used)
                        __builtin_prefetch(&e->users[(v & HINDEX_MAX_HANDLE) - 1]);
        }
        for (unsigned i = 0; i < b->n && r >= 0; i++)
                r = load_add(e, &b->rows[i].row, b->rows[i].user_hash);
        b->n = 0;
        return r;
}

static bool copy_text(char *dst, size_t size, const char *src, const char **ret) {
        size_t n;

        if (!src) {
                *ret = NULL;
                return true;
        }
        n = strlen(src);
        if (n >= size)
                return false;
        memcpy(dst, src, n + 1);
        *ret = dst;
        return true;
}

static int load_cb(const struct store_session *row, void *userdata) {
        struct engine *e = userdata;
        struct load_batch *b = e->loading;
        uint32_t user_hash = (uint32_t) table_name_hash(e, row->user_id);
        struct load_row *l;
        int r;

        prefetch_slot(&e->by_user, user_hash);
        prefetch_slot(&e->by_key, key_hash(row->token_hash));
        if (!b)
                return load_add(e, row, user_hash);
        l = &b->rows[b->n];
        l->row = *row;
        l->user_hash = user_hash;
        if (!copy_text(l->id, sizeof l->id, row->id, &l->row.id) ||
            !copy_text(l->user_id, sizeof l->user_id, row->user_id, &l->row.user_id) ||
            !copy_text(l->platform_id, sizeof l->platform_id, row->platform_id, &l->row.platform_id)) {
                r = load_flush(e); /* keep the order */
                return r < 0 ? r : load_add(e, row, user_hash);
        }
        l->row.end_reason = l->row.ip = l->row.user_agent = NULL; /* not kept */
        if (++b->n == LOAD_BATCH)
                return load_flush(e);
        return 0;
}

/* Sizes the session array and the indexes for the sessions about to be
 * loaded, so that loading a million never rehashes (a rehash reads every
 * entry's key: a cache miss each). Users are sized as if each session had
 * its own: at worst a few MiB more for a million sessions of few users. */
static int load_reserve_cb(uint64_t n, void *userdata) {
        struct engine *e = userdata;
        int r;

        if (n == 0)
                return 0;
        if (n > HINDEX_MAX_HANDLE)
                return -ENOMEM;
        r = table_grow_array32((void **) &e->sessions, &e->sessions_allocated, (uint32_t) n, sizeof *e->sessions);
        if (r >= 0)
                r = hindex_reserve(&e->by_key, (uint32_t) n);
        if (r >= 0)
                r = hindex_reserve(&e->by_user, (uint32_t) n);
        return r;
}

static int dirname_of(const char *path, char *buf, size_t size) {
        const char *slash = strrchr(path, '/');

        if (!slash) {
                snprintf(buf, size, ".");
                return 0;
        }
        if (slash == path) {
                snprintf(buf, size, "/");
                return 0;
        }
        if ((size_t) (slash - path) >= size)
                return -ENAMETOOLONG;
        memcpy(buf, path, slash - path);
        buf[slash - path] = '\0';
        return 0;
}

static int mkdir_p(const char *dir) {
        char buf[PATH_MAX];

        if (strlen(dir) >= sizeof buf)
                return -ENAMETOOLONG;
        strcpy(buf, dir);
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(buf, 0700) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, 0700) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* The token key's file: daemon.key_file, or sessiond.key in the folder of
 * the database (as before there was a setting). */
static int key_path_of(const struct sessiond_config *c, char *buf, size_t size) {
        char dir[PATH_MAX];
        int r;

        if (*c->daemon.key_file)
                return (size_t) snprintf(buf, size, "%s", c->daemon.key_file) >= size ? -ENAMETOOLONG : 0;
        r = dirname_of(c->daemon.database_path, dir, sizeof dir);
        if (r < 0)
                return r;
        return (size_t) snprintf(buf, size, "%s/%s", dir, TOKEN_KEY_FILE) >= size ? -ENAMETOOLONG : 0;
}

/* features.distributed: the store is the fleet's PostgreSQL database
 * (DESIGN 8). The key file is the fleet's: made here only when missing (a
 * first daemon), and the store refuses a daemon whose key's check value
 * differs from the one the first daemon left there. */
static int open_shared_store(struct engine *e, struct store_options *o, const char *dir, const char *key,
                             char check[TOKEN_KEY_CHECK_LEN + 1]) {
        bool created;
        int r;

        r = mkdir_p(dir);
        if (r < 0)
                return log_error_errno(r, "Failed to create the state folder %s: %m", dir);
        r = statefiles_check(dir, cfg(e)->daemon.database_path, key);
        if (r < 0)
                return r;
        r = token_key_load(key, true, &e->key, &created);
        if (r < 0)
                return r;
        if (created)
                log_notice("Created key file %s: every daemon of the fleet needs this same file (daemon.key_file).",
                           key);
        token_key_check(&e->key, check);
        o->postgres_url = cfg(e)->daemon.postgres_url;
        o->key_check = check;
        o->path = NULL;
        e->key_path = strdup(key);
        if (!e->key_path)
                return -ENOMEM;
        return 0;
}

/* One daemon's store (SQLite): the database folder made, the state files'
 * owners and modes checked, and the key loaded (or made for a new
 * database) and remembered. */
static int open_local_files(struct engine *e, const char *path, const char *dir, const char *key) {
        struct stat st;
        bool db_exists, created;
        int r;

        r = mkdir_p(dir);
        if (r < 0)
                return log_error_errno(r, "Failed to create the database folder %s: %m", dir);
        r = statefiles_check(dir, path, key); /* statefiles.c: owners and modes, logs what it refuses */
        if (r < 0)
                return r;
        db_exists = stat(path, &st) == 0 && st.st_size > 0;
        /* The key first: a database whose key is gone cannot resolve a single
         * token, and making a new key would hide that. */
        r = token_key_load(key, !db_exists, &e->key, &created);
        if (r == -ENOENT && db_exists) {
                log_error("Database %s exists but its key file %s is missing: no token could be "
                          "resolved. Restore the key file, or move the database away to start afresh.",
                          path, key);
                return r;
        }
        if (r < 0)
                return r;
        if (created)
                log_info("Created key file %s.", key);
        e->key_path = strdup(key);
        if (!e->key_path)
                return -ENOMEM;
        return 0;
}

static int open_store(struct engine *e) {
        const struct sessiond_config *c = cfg(e);
        struct store_options o = {
                .synchronous = c->daemon.synchronous,
                .reserve = load_reserve_cb,
                .load = load_cb,
                .load_userdata = e,
                .loop = e->d->loop,
        };
        char dir[PATH_MAX], key[PATH_MAX], check[TOKEN_KEY_CHECK_LEN + 1]; /* o.key_check points at check */
        int r;

        if (!c->features.persistence) {
                token_key_random(&e->key);
                o.path = ":memory:";
                return store_open(&o, &e->store);
        }
        o.path = c->daemon.database_path;
        r = dirname_of(o.path, dir, sizeof dir);
        if (r < 0)
                return log_error_errno(r, "Database path %s is too long.", o.path);
        r = key_path_of(c, key, sizeof key);
        if (r < 0)
                return log_error_errno(r, "Key file path %s is too long.", c->daemon.key_file);
        if (c->features.distributed)
                r = open_shared_store(e, &o, dir, key, check);
        else
                r = open_local_files(e, o.path, dir, key);
        if (r < 0)
                return r;

        e->loading = calloc(1, sizeof *e->loading); /* NULL: rows one by one */
        e->users_unsorted = true;                   /* the users' lists are sorted once, at the end */
        r = store_open(&o, &e->store);
        if (r >= 0) {
                r = load_flush(e); /* the last rows */
                if (r < 0)
                        log_error_errno(r, "Store %s: loading the sessions failed: %m", store_name(e->store));
        }
        table_users_sort(e);
        free(e->loading);
        e->loading = NULL;
        return r;
}

/* engine_new()'s cleanup: a half-made engine is freed on every failure. */
static void engine_freep(struct engine **e) {
        if (*e)
                engine_free(*e);
}

int engine_new(struct daemon *d, struct engine **ret) {
        uint64_t started;
        _cleanup_(engine_freep) struct engine *e = NULL;
        int r;

        assert(d && d->config && ret);
        r = token_init();
        if (r < 0)
                return log_error_errno(r, "Failed to initialise libsodium.");
        e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        e->d = d;
        e->sessions_free = e->users_free = e->platforms_free = NIL;
        randombytes_buf(e->name_key, sizeof e->name_key);
        r = hindex_init(&e->by_key, 1024, &table_session_index_ops, e);
        if (r >= 0)
                r = hindex_init(&e->by_user, 1024, &table_user_index_ops, e);
        if (r >= 0)
                r = hindex_init(&e->by_platform, 16, &table_platform_index_ops, e);
        if (r < 0)
                return r;

        e->fleet_configured = d->config->features.distributed;
        e->clustering_configured = d->config->features.clustering;
        e->fleet_url = strdup(d->config->daemon.postgres_url ? d->config->daemon.postgres_url : "");
        if (!e->fleet_url)
                return -ENOMEM;
        /* Opening loads the live sessions (see store_options). */
        started = uv_hrtime();
        r = open_store(e);
        if (r >= 0)
                r = engine_fleet_start(e);
        if (r < 0)
                return r;
        if (d->loop) {
                e->flush_timer = timer_new(e);
                e->dispatch_timer = timer_new(e);
                if (!e->flush_timer || !e->dispatch_timer)
                        return -ENOMEM;
                uv_timer_start(e->flush_timer, flush_timer_cb, TOUCH_FLUSH_INTERVAL_MS, 0);
        }
        log_info("Store %s: opened with %u live sessions of %u users in %llu ms.", store_name(e->store), e->n_sessions,
                 e->n_users, (unsigned long long) ((uv_hrtime() - started) / 1000000));
        *ret = TAKE_PTR(e);
        return 0;
}

void engine_config_changed(struct engine *e) {
        const struct sessiond_config *c = cfg(e);

        if (c->features.distributed != e->fleet_configured)
                log_warning("features.distributed changed; the store changes at the next start.");
        else if (e->fleet_configured && strcmp(c->daemon.postgres_url ? c->daemon.postgres_url : "", e->fleet_url) != 0)
                log_warning("daemon.postgres_url changed; %s stays in use until the next start.", store_name(e->store));
        if (c->features.clustering != e->clustering_configured)
                log_warning("features.clustering changed; the leadership changes at the next start.");
        if (e->fleet_configured) {
                char key[PATH_MAX];

                if (e->key_path && key_path_of(c, key, sizeof key) >= 0 && strcmp(key, e->key_path) != 0)
                        log_warning("daemon.key_file changed to %s; the key read from %s stays in use until the next "
                                    "start.",
                                    key, e->key_path);
        } else if (!store_is_memory(e->store)) {
                if (!c->features.persistence)
                        log_warning("features.persistence changed; the store changes at the next start.");
                else if (strcmp(c->daemon.database_path, store_name(e->store)) != 0)
                        log_warning("daemon.database_path changed to %s; %s stays in use until the next start.",
                                    c->daemon.database_path, store_name(e->store));
                char key[PATH_MAX];
                if (e->key_path && key_path_of(c, key, sizeof key) >= 0 && strcmp(key, e->key_path) != 0)
                        log_warning("daemon.key_file changed to %s; the key read from %s stays in use until the next "
                                    "start.",
                                    key, e->key_path);
                (void) store_set_synchronous(e->store, c->daemon.synchronous);
        } else if (c->features.persistence)
                log_warning("features.persistence changed; the store changes at the next start.");
}

void engine_free(struct engine *e) {
        if (!e)
                return;
        if (e->store) {
                unsigned n;
                bool more = true;

                /* Whatever the iteration did and the failed validations
                 * counted, then every touch, even those below the
                 * granularity: a clean stop loses nothing. */
                fleet_stop(e);
                auditagg_flush(e);
                (void) engine_commit(e);
                for (uint32_t h = 0; h < e->sessions_used; h++) {
                        struct session *s = &e->sessions[h];

                        if ((s->flags & (S_USED | S_DIRTY)) == S_USED &&
                            session_ms(s, ST_ACTIVITY) > session_ms(s, ST_PERSISTED) &&
                            GROW(e->dirty, e->dirty_allocated, e->n_dirty + 1) == 0) {
                                s->flags |= S_DIRTY;
                                e->dirty[e->n_dirty++] = h;
                        }
                }
                while (more && engine_flush_touches(e, UINT_MAX, &n, &more) >= 0 && n > 0)
                        ;
                if (engine_commit(e) < 0)
                        log_error("Store %s: the last touches could not be written.", store_name(e->store));
                store_close(e->store);
        }
        sync_waits_free(e);
        txn_waits_free(e);
        fleet_free(e);
        timer_free(e->flush_timer);
        timer_free(e->dispatch_timer);
        for (size_t i = 0; i < e->n_observers; i++)
                if (e->observers[i].free_fn)
                        e->observers[i].free_fn(e->observers[i].userdata);
        bus_queue_clear(&e->ready);
        bus_queue_clear(&e->in_txn);
        bus_queue_clear(&e->inflight_events);
        free(e->ready.items);
        free(e->in_txn.items);
        free(e->inflight_events.items);
        free(e->inflight_affected);
        for (uint32_t i = 0; i < e->users_used; i++)
                if (e->users[i].name.ext.is_long)
                        free(e->users[i].name.ext.ptr);
        for (size_t i = 0; i < e->n_secs; i++)
                security_user_sec_free(e->secs[i].sec);
        auditagg_free(e);
        for (uint32_t i = 0; i < e->platforms_used; i++)
                free(e->platforms[i].name);
        sodium_memzero(e->sessions, (size_t) e->sessions_allocated * sizeof *e->sessions);
        free(e->sessions);
        free(e->users);
        free(e->platforms);
        free(e->secs);
        free(e->affected);
        free(e->dirty);
        hindex_free(&e->by_key);
        hindex_free(&e->by_user);
        hindex_free(&e->by_platform);
        sodium_memzero(&e->key, sizeof e->key);
        free(e->key_path);
        if (e->fleet_url)
                sodium_memzero(e->fleet_url, strlen(e->fleet_url)); /* it may hold a password */
        free(e->fleet_url);
        free(e);
}
