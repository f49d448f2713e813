/* The session operations (see engine-internal.h for the other files):
 * create, look up, validate, heartbeat, extend, rotate, and the end of
 * one session (platform switches: platform.c). Sync state, destroy, listings and the
 * operator's verbs are in session-admin.c.
 *
 * Validate and Heartbeat move last_activity in memory only (cleanup.c
 * writes the touches). Explicit ends (destroyed, terminated, evicted,
 * rotated) take effect at once, without grace: a logged-out token must stop
 * working.
 *
 * Rotation makes a new session (new token, new id) that keeps created_at,
 * renewed_at, platform, client, sync state and switch history, and ends the
 * old one with reason rotated; its token then answers Expired(rotated), and
 * its use after expiration_grace counts as suspicious.
 */
#include "engine-internal.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "names.h"

/* The detail of an "ended" audit row, as json_dumps(JSON_COMPACT) writes
 * {"reason": name}: written as is, per ended session, by the cleanup. */
static const char *const end_reason_audit_texts[_ENGINE_END_MAX] = {
        [ENGINE_END_NONE] = "{\"reason\":\"none\"}",
        [ENGINE_END_IDLE] = "{\"reason\":\"idle\"}",
        [ENGINE_END_LIFETIME] = "{\"reason\":\"lifetime\"}",
        [ENGINE_END_ABSOLUTE] = "{\"reason\":\"absolute\"}",
        [ENGINE_END_TERMINATED] = "{\"reason\":\"terminated\"}",
        [ENGINE_END_EVICTED] = "{\"reason\":\"evicted\"}",
        [ENGINE_END_ROTATED] = "{\"reason\":\"rotated\"}",
        [ENGINE_END_DESTROYED] = "{\"reason\":\"destroyed\"}",
};

/* ---- ending sessions -------------------------------------------------------------------- */

/* Ends a session in memory and store. audit_kind NULL: the caller writes
 * its own audit row. */
int session_end(struct engine *e, int64_t now, uint32_t h, enum engine_end_reason reason, int64_t ended_at,
                const char *audit_kind, char id_out[TOKEN_ID_STRING_LEN + 1]) {
        struct session *s = S(e, h);
        char id[TOKEN_ID_STRING_LEN + 1];
        const char *user = user_name(e, s->user);
        int64_t duration = ms_floor_s(ended_at - session_ms(s, ST_CREATED)); /* seconds */
        int r;

        assert((unsigned) reason < _ENGINE_END_MAX);
        r = txn_begin(e);
        if (r < 0)
                return r;
        r = txn_row_touch(e, s->row_key, h);
        if (r < 0)
                return txn_fail(e, r);
        r = store_session_end(e->store, s->row_key, ended_at, engine_end_reason_to_string(reason));
        if (r < 0 && r != -ENOENT)
                return txn_fail(e, r);
        table_session_id(e, s, id);
        if (id_out)
                memcpy(id_out, id, sizeof id);
        if (audit_kind) {
                r = txn_audit_text(e, now, audit_kind, user, id, end_reason_audit_texts[reason]);
                if (r < 0)
                        return r;
        }
        e->counters.ended[reason]++;
        log_debug("Session %s of user %s ended (%s).", id, user, engine_end_reason_to_string(reason));
        if (bus_observed(e)) {
                /* The user's name goes with the session when it was the
                 * last one: the event keeps a copy (its only one). */
                char *user_copy = strdup(user);

                table_session_remove(e, h);
                bus_emit_take(e, now, "ended", id, user_copy,
                              json_pack("{s:s, s:I}", "reason", engine_end_reason_to_string(reason), "duration",
                                        (json_int_t) (duration > 0 ? duration : 0)));
        } else
                table_session_remove(e, h);
        return 0;
}

/* ---- argument checks ---------------------------------------------------------------------- */

int session_invalid(struct engine_error *err, const char *field, const char *reason) {
        err->field = field;
        err->reason = reason;
        return -EINVAL;
}

const char *session_check_name(const char *s, size_t max) {
        size_t n;

        if (!s || !*s)
                return "must not be empty";
        n = strlen(s);
        if (n > max)
                return max == ENGINE_USER_ID_MAX ? "longer than 255 bytes" : "longer than 128 bytes";
        return name_text_problem(s, n); /* names.c */
}

static int check_client(const struct engine_client *c, struct engine_error *err) {
        static const char *const names[] = {"client.user_agent", "client.ip", "client.accept_language",
                                            "client.accept_encoding"};
        const char *v[] = {c->user_agent, c->ip, c->accept_language, c->accept_encoding};

        for (size_t i = 0; i < 4; i++)
                if (v[i] && strlen(v[i]) > ENGINE_CLIENT_FIELD_MAX)
                        return session_invalid(err, names[i], "longer than 2048 bytes");
        return 0;
}

/* ---- create -------------------------------------------------------------------------------- */

/* daemon.max_sessions bounds the sessions held (memory and store): a Create
 * that would hold one more is refused. One that ends one of the user's own
 * live sessions (the user is at security.max_concurrent_per_user) holds no
 * more and goes ahead, like a Rotate. A cap lowered below the count only
 * refuses; nothing is ended. Logged once per crossing. */
_Static_assert(SESSIOND_MAX_SESSIONS_LIMIT + 1 < HINDEX_MAX_HANDLE,
               "daemon.max_sessions and the one more a Rotate holds must fit the handles");

static bool create_over_cap(struct engine *e, int64_t now, const char *user_id) {
        const struct sessiond_config *c = cfg(e);
        uint32_t user;

        if ((int64_t) e->n_sessions < c->daemon.max_sessions) {
                e->at_max_sessions = false;
                return false;
        }
        user = table_user_find(e, user_id);
        if (user != NIL && (int64_t) cleanup_user_count_live(e, user, now) >= c->security.max_concurrent_per_user)
                return false;
        e->counters.create_refused_max_sessions++;
        if (!e->at_max_sessions) {
                e->at_max_sessions = true;
                log_warning("daemon.max_sessions reached (%u sessions held, limit %lld): Create is refused "
                            "until sessions end.",
                            e->n_sessions, (long long) c->daemon.max_sessions);
        }
        return true;
}

void engine_created_clear(struct engine_created *c) {
        free(c->evicted);
        c->evicted = NULL;
        c->n_evicted = 0;
        sodium_memzero(c->token, sizeof c->token);
}

int engine_create(struct engine *e, int64_t now, const struct engine_create *a, struct engine_created *ret,
                  struct engine_error *err) {
        const struct sessiond_config *c = cfg(e);
        uint8_t hash[TOKEN_HASH_BYTES], id[TOKEN_ID_BYTES];
        char id_text[TOKEN_ID_STRING_LEN + 1];
        struct store_session row = {0};
        const char *why;
        unsigned ended = 0;
        int64_t row_key;
        uint32_t h;
        int r;

        memset(ret, 0, sizeof *ret);
        if ((why = session_check_name(a->user_id, ENGINE_USER_ID_MAX)))
                return session_invalid(err, "user_id", why);
        if (a->platform_id && (why = session_check_name(a->platform_id, ENGINE_PLATFORM_ID_MAX)))
                return session_invalid(err, "platform_id", why);
        r = check_client(&a->client, err);
        if (r < 0)
                return r;
        if (a->sync_data) {
                if (!c->features.cross_tab_sync) {
                        err->feature = "cross_tab_sync";
                        return -EOPNOTSUPP;
                }
                if ((int64_t) a->sync_size > c->sync.max_data_size) {
                        err->max = c->sync.max_data_size;
                        return -E2BIG;
                }
        }
        if (create_over_cap(e, now, a->user_id))
                return -EUSERS;
        r = txn_begin(e);
        if (r < 0)
                return r;

        r = store_allocate_key(e->store, &row_key);
        if (r < 0)
                return r;
        token_new(ret->token);
        token_hash(&e->key, ret->token, hash);
        token_id_derive(&e->key, t32(ms_floor_s(now)), row_key, id);
        token_id_format(id, id_text);

        row.row_key = row_key;
        row.id = id_text;
        memcpy(row.token_hash, hash, sizeof hash);
        row.user_id = a->user_id;
        row.platform_id = a->platform_id;
        row.created_at = row.last_activity = row.renewed_at = now;
        if (c->security.fingerprinting) {
                row.fp_user_agent = a->client.user_agent ? token_fingerprint(&e->key, a->client.user_agent) : 0;
                row.fp_ip = a->client.ip ? token_fingerprint(&e->key, a->client.ip) : 0;
                row.fp_accept_language =
                        a->client.accept_language ? token_fingerprint(&e->key, a->client.accept_language) : 0;
                row.fp_accept_encoding =
                        a->client.accept_encoding ? token_fingerprint(&e->key, a->client.accept_encoding) : 0;
        }
        row.ip = a->client.ip;
        row.user_agent = a->client.user_agent;
        row.sync_version = a->sync_data ? 1 : 0;

        r = store_session_insert(e->store, &row, a->sync_data, a->sync_size);
        if (r < 0) {
                sodium_memzero(ret->token, sizeof ret->token);
                return txn_fail(e, r);
        }
        r = table_session_add(e, &row, &h);
        if (r < 0) {
                sodium_memzero(ret->token, sizeof ret->token);
                return txn_fail(e, r);
        }
        r = txn_row_touch(e, row_key, h);
        if (r < 0) {
                sodium_memzero(ret->token, sizeof ret->token);
                return txn_fail(e, r);
        }
        r = 0;
        if (txn_audit_on(e)) {
                struct varlink_writer w;

                txn_detail_begin(&w);
                txn_detail_string(&w, "platform_id", a->platform_id);
                txn_detail_string(&w, "ip", a->client.ip);
                r = txn_audit_written(e, now, "created", a->user_id, id_text, &w);
        }
        if (r < 0) {
                engine_created_clear(ret);
                return r;
        }
        e->counters.created++;
        log_debug("Session %s created for user %s.", id_text, a->user_id);
        if (bus_observed(e)) {
                struct varlink_writer w;

                txn_detail_begin(&w);
                txn_detail_string(&w, "platform_id", a->platform_id);
                bus_emit_text(e, now, "created", id_text, a->user_id, txn_detail_end(&w));
        }

        r = cleanup_user_enforce(e, now, e->sessions[h].user, h, c->security.max_concurrent_per_user, UINT_MAX,
                                 &ret->evicted, &ret->n_evicted, &ended);
        if (r >= 0 && e->fleet && c->security.max_concurrent_per_user > 0) {
                /* Other daemons may be creating for this user at once: the store decides too. */
                r = store_user_limit(e->store, a->user_id, c->security.max_concurrent_per_user, now);
                if (r < 0)
                        r = txn_fail(e, r);
        }
        if (r < 0) {
                engine_created_clear(ret);
                return r;
        }

        table_info_fill(e, h, now, &ret->info);
        ret->info.ip = a->client.ip;
        ret->info.user_agent = a->client.user_agent;
        return 0;
}

/* ---- looking tokens up ------------------------------------------------------------------------ */

int session_ended_cb(const struct store_session *row, void *userdata) {
        struct ended_lookup *l = userdata;

        l->found = true;
        l->reason = engine_end_reason_from_string(row->end_reason);
        l->ended_at = row->ended_at;
        snprintf(l->user_id, sizeof l->user_id, "%s", row->user_id);
        snprintf(l->id, sizeof l->id, "%s", row->id);
        return 1;
}

/* Finds the in-memory session of a token. On a miss, looks for an ended
 * session in the store (the rare path) and answers Expired or NotFound.
 * `count`: this is a validation, failures are counted and audited. */
int session_lookup(struct engine *e, int64_t now, const char *token, bool count, uint32_t *ret,
                   struct engine_error *err) {
        uint8_t hash[TOKEN_HASH_BYTES];
        struct ended_lookup l = {0};
        uint32_t h;
        int r;

        if (!token_is_wellformed(token)) {
                if (count)
                        security_failed_validation(e, now, ENGINE_FAIL_INVALID, NULL, NULL, ENGINE_END_NONE);
                return session_invalid(err, "token", "not a sessiond token (43 base64url characters)");
        }
        if (fleet_cache_stale(e, now))
                return -EIO; /* fail closed: memory may be stale (fleet.c) */
        token_hash(&e->key, token, hash);
        h = session_find_key(e, hash);
        if (h != NIL && !(e->fleet && !cfg(e)->features.caching)) {
                *ret = h;
                return 0;
        }
        if (e->fleet) {
                /* Memory is a cache (fleet.c): a session created on another
                 * daemon may not have come in yet, and without
                 * features.caching every lookup reads the store: after the
                 * next commit, off the loop, when the caller can wait
                 * (-EINPROGRESS: engine_fetch_wait), else now. */
                const struct engine_fetch *f = fleet_fetched(e, hash);

                if (f && fleet_fetch_error(f))
                        return fleet_fetch_error(f);
                if (f && fleet_fetch_ended(f) && (h != NIL || !fleet_fetch_live(f))) {
                        if (h != NIL) {
                                *ret = h;
                                return 0;
                        }
                        l = *fleet_fetch_ended(f);
                } else if (!f && fleet_fetch_ask(e, hash)) {
                        return -EINPROGRESS;
                } else {
                        r = fleet_lookup(e, hash, &h, session_ended_cb, &l);
                        if (r < 0 && r != -ENOENT)
                                return txn_storage_errno(r);
                        if (h != NIL) {
                                *ret = h;
                                return 0;
                        }
                }
        } else {
                /* Memory has every live session: the store is asked about ended ones only. */
                r = store_session_by_hash(e->store, hash, session_ended_cb, &l);
                if (r < 0 && r != -ENOENT)
                        return txn_storage_errno(r);
        }
        if (!l.found) {
                if (count)
                        security_failed_validation(e, now, ENGINE_FAIL_NOT_FOUND, NULL, NULL, ENGINE_END_NONE);
                return -ENOENT;
        }
        if (l.reason == ENGINE_END_ROTATED && now > l.ended_at + SEC_MS(cfg(e)->timeout.expiration_grace))
                security_suspicious(e, now, l.user_id, l.id, "rotated_token_reused");
        if (count)
                security_failed_validation(e, now, ENGINE_FAIL_EXPIRED, l.user_id, l.id, l.reason);
        err->end_reason = l.reason != ENGINE_END_NONE ? l.reason : ENGINE_END_DESTROYED;
        return -ESTALE;
}

/* A session that must still be honoured (active or grace). */
int session_lookup_live(struct engine *e, int64_t now, const char *token, bool count, uint32_t *ret,
                        enum engine_state *state, struct engine_error *err) {
        enum engine_end_reason why;
        enum engine_state st;
        uint32_t h;
        int r;

        r = session_lookup(e, now, token, count, &h, err);
        if (r < 0)
                return r;
        st = table_session_state(e, S(e, h), now, NULL, &why);
        if (st == ENGINE_STATE_EXPIRED && e->fleet && cfg(e)->features.caching) {
                /* Another daemon may have seen it since (touches are not
                 * reported): the store decides, read after the next commit
                 * when the caller can wait (as a token memory does not
                 * know: fleet.c), else now. */
                uint8_t hash[TOKEN_HASH_BYTES];
                const struct engine_fetch *f;

                token_hash(&e->key, token, hash);
                f = fleet_fetched(e, hash);
                if (f && fleet_fetch_error(f))
                        return fleet_fetch_error(f);
                if (!f && fleet_fetch_ask(e, hash))
                        return -EINPROGRESS;
                if (f && fleet_fetch_ended(f))
                        h = session_find_key(e, hash); /* memory has the store's row now, if still live */
                else {
                        r = fleet_refresh(e, &h);
                        if (r < 0)
                                return txn_storage_errno(r);
                }
                if (h == NIL)
                        return session_lookup(e, now, token, count, ret,
                                              err); /* ended: Expired with the store's reason */
                st = table_session_state(e, S(e, h), now, NULL, &why);
        }
        if (st == ENGINE_STATE_EXPIRED) {
                if (count) {
                        char id[TOKEN_ID_STRING_LEN + 1];
                        table_session_id(e, &e->sessions[h], id);
                        security_failed_validation(e, now, ENGINE_FAIL_EXPIRED, user_name(e, e->sessions[h].user), id,
                                                   why);
                }
                err->end_reason = why;
                return -ESTALE;
        }
        *ret = h;
        if (state)
                *state = st;
        return 0;
}

static void session_touch(struct engine *e, uint32_t h, int64_t now) {
        struct session *s = S(e, h);
        int64_t granularity = cfg(e)->timeout.idle_timeout / 100;

        if (granularity < 1)
                granularity = 1;
        if (granularity > 60)
                granularity = 60;
        if (now > session_ms(s, ST_ACTIVITY)) {
                session_ms_set(s, ST_ACTIVITY, now);
                table_session_activity_moved(e, h);
        }
        if (!(s->flags & S_DIRTY) && session_ms(s, ST_ACTIVITY) >= session_ms(s, ST_PERSISTED) + SEC_MS(granularity) &&
            GROW(e->dirty, e->dirty_allocated, e->n_dirty + 1) == 0) {
                s->flags |= S_DIRTY;
                e->dirty[e->n_dirty++] = h;
        }
}

/* ---- validate, heartbeat, extend ------------------------------------------------------------- */

/* The fingerprint prefix memory keeps for field i, and the one it has. */
static uint32_t fp_prefix(int i, uint64_t full) {
        return i == FP_USER_AGENT ? fp32(full) : fp16(full);
}

static uint32_t fp_stored(const struct session *s, int i) {
        return i == FP_USER_AGENT ? s->fp_user_agent : s->fp_small[i - 1];
}

static void fp_store(struct session *s, int i, uint64_t full) {
        if (i == FP_USER_AGENT)
                s->fp_user_agent = fp32(full);
        else
                s->fp_small[i - 1] = fp16(full);
}

/* The fingerprint policy. Returns -EACCES on a changed user agent; records
 * other changes (a write) and counts them as suspicious. */
static int fingerprint_check(struct engine *e, int64_t now, uint32_t h, const struct engine_client *client) {
        static const char *const field_names[_FP_MAX] = {"user_agent", "ip", "accept_language", "accept_encoding"};
        const char *values[_FP_MAX] = {client->user_agent, client->ip, client->accept_language,
                                       client->accept_encoding};
        uint64_t full[_FP_MAX] = {0};
        struct session *s = S(e, h);
        bool record = false, changed[_FP_MAX] = {false};
        struct store_session row = {0};
        char id[TOKEN_ID_STRING_LEN + 1];
        const char *user = user_name(e, s->user);
        json_t *fields;
        int r;

        for (int i = 0; i < _FP_MAX; i++) {
                if (!values[i])
                        continue;
                full[i] = token_fingerprint(&e->key, values[i]);
                if (fp_stored(s, i) == 0)
                        record = true; /* first value seen: adopt it */
                else if (fp_stored(s, i) != fp_prefix(i, full[i])) {
                        changed[i] = true;
                        record = true;
                }
        }
        if (!record)
                return 0;
        table_session_id(e, s, id);
        if (changed[FP_USER_AGENT]) {
                e->counters.fingerprint_mismatches++;
                log_info("Session %s of user %s: user agent changed; validation refused.", id, user);
                security_failed_validation(e, now, ENGINE_FAIL_FINGERPRINT, user, id, ENGINE_END_NONE);
                security_suspicious(e, now, user, id, "user_agent_changed");
                return -EACCES;
        }

        r = txn_begin(e);
        if (r < 0)
                return r;
        r = txn_row_touch(e, s->row_key, h);
        if (r < 0)
                return txn_fail(e, r);
        for (int i = 0; i < _FP_MAX; i++)
                if (!values[i])
                        full[i] = 0;
        /* The full hashes of the values given; absent ones (0) keep what
         * the store has. */
        row.fp_user_agent = full[FP_USER_AGENT];
        row.fp_ip = full[FP_IP];
        row.fp_accept_language = full[FP_LANGUAGE];
        row.fp_accept_encoding = full[FP_ENCODING];
        row.ip = client->ip;
        row.user_agent = client->user_agent;
        r = store_session_set_client(e->store, s->row_key, &row);
        if (r < 0)
                return txn_fail(e, r);
        for (int i = 0; i < _FP_MAX; i++)
                if (values[i])
                        fp_store(s, i, full[i]);

        fields = json_array();
        for (int i = 0; i < _FP_MAX; i++)
                if (changed[i])
                        json_array_append_new(fields, json_string(field_names[i]));
        if (json_array_size(fields) == 0) {
                json_decref(fields);
                return 0;
        }
        e->counters.fingerprint_changes++;
        log_info("Session %s of user %s: client changed (%s%s%s%s%s); recorded.", id, user, changed[FP_IP] ? "ip" : "",
                 changed[FP_IP] && changed[FP_LANGUAGE] ? ", " : "", changed[FP_LANGUAGE] ? "accept_language" : "",
                 (changed[FP_IP] || changed[FP_LANGUAGE]) && changed[FP_ENCODING] ? ", " : "",
                 changed[FP_ENCODING] ? "accept_encoding" : "");
        if (bus_observed(e))
                bus_emit(e, now, "fingerprint_changed", id, user, json_pack("{s:O}", "fields", fields));
        r = txn_audit(e, now, "fingerprint_changed", user, id,
                      json_pack("{s:O, s:s?}", "fields", fields, "ip", client->ip));
        json_decref(fields);
        if (r < 0)
                return r;
        /* The user's name may move if the user table grows: look it up again. */
        security_suspicious(e, now, user_name(e, S(e, h)->user), id, "client_changed");
        return 0;
}

int engine_validate(struct engine *e, int64_t now, const char *token, const struct engine_client *client, bool touch,
                    struct engine_info *ret, struct engine_error *err) {
        enum engine_state st;
        uint32_t h;
        int r;

        r = session_lookup_live(e, now, token, true, &h, &st, err);
        if (r < 0)
                return r;
        if (client && cfg(e)->security.fingerprinting) {
                r = check_client(client, err);
                if (r < 0)
                        return r;
                r = fingerprint_check(e, now, h, client);
                if (r < 0)
                        return r;
        }
        if (touch && st == ENGINE_STATE_ACTIVE)
                session_touch(e, h, now);
        e->counters.validated++;
        if (st == ENGINE_STATE_GRACE)
                e->counters.validated_grace++;
        table_info_fill(e, h, now, ret);
        return 0;
}

int engine_heartbeat(struct engine *e, int64_t now, const char *token, struct engine_info *ret,
                     struct engine_error *err) {
        enum engine_state st;
        uint32_t h;
        int r;

        r = session_lookup_live(e, now, token, false, &h, &st, err);
        if (r < 0)
                return r;
        if (st == ENGINE_STATE_ACTIVE)
                session_touch(e, h, now);
        e->counters.heartbeats++;
        table_info_fill(e, h, now, ret);
        return 0;
}

int engine_extend(struct engine *e, int64_t now, const char *token, struct engine_info *ret, struct engine_error *err) {
        struct session *s;
        char id[TOKEN_ID_STRING_LEN + 1];
        uint32_t h;
        int r;

        r = session_lookup_live(e, now, token, false, &h, NULL, err);
        if (r < 0)
                return r;
        r = txn_begin(e);
        if (r < 0)
                return r;
        s = S(e, h);
        r = txn_row_touch(e, s->row_key, h);
        if (r < 0)
                return txn_fail(e, r);
        r = store_session_set_renewed(e->store, s->row_key, now, now);
        if (r < 0)
                return txn_fail(e, r);
        session_ms_set(s, ST_RENEWED, now);
        if (now > session_ms(s, ST_ACTIVITY)) {
                session_ms_set(s, ST_ACTIVITY, now);
                table_session_activity_moved(e, h);
        }
        session_ms_set(s, ST_PERSISTED, session_ms(s, ST_ACTIVITY));
        table_info_fill(e, h, now, ret);
        table_session_id(e, s, id);
        r = 0;
        if (txn_audit_on(e)) {
                struct varlink_writer w;

                txn_detail_begin(&w);
                txn_detail_int(&w, "expires_at", ret->expires_at);
                r = txn_audit_written(e, now, "extended", ret->user_id, id, &w);
        }
        if (r < 0)
                return r;
        e->counters.extended++;
        if (bus_observed(e))
                bus_emit(e, now, "extended", id, ret->user_id,
                         json_pack("{s:I}", "expires_at", (json_int_t) ret->expires_at));
        return 0;
}

/* ---- rotate ------------------------------------------------------------------------------------ */

/* A rotation that fails: the new token is wiped (never handed out), and
 * rotate_fail() also gives up the iteration's transaction. */
static int rotate_abandon(char new_token[TOKEN_STRING_LEN + 1], int r) {
        sodium_memzero(new_token, TOKEN_STRING_LEN + 1);
        return r;
}

static int rotate_fail(struct engine *e, int r, char new_token[TOKEN_STRING_LEN + 1]) {
        return rotate_abandon(new_token, txn_fail(e, r));
}

int engine_rotate(struct engine *e, int64_t now, const char *token, char new_token[TOKEN_STRING_LEN + 1],
                  struct engine_info *ret, struct engine_error *err) {
        uint8_t hash[TOKEN_HASH_BYTES], id[TOKEN_ID_BYTES];
        char new_id[TOKEN_ID_STRING_LEN + 1], old_id[TOKEN_ID_STRING_LEN + 1];
        struct store_session row = {0};
        enum engine_state st;
        struct session *old;
        int64_t row_key, last;
        uint32_t h, nh;
        _cleanup_free_ char *user = NULL, *platform = NULL;
        int r;

        r = session_lookup_live(e, now, token, false, &h, &st, err);
        if (r < 0)
                return r;
        r = txn_begin(e);
        if (r < 0)
                return r;
        old = S(e, h);
        /* Rotation is activity only for an active session: it must not
         * revive one in grace. */
        last = st == ENGINE_STATE_ACTIVE ? now : session_ms(old, ST_ACTIVITY);

        r = store_allocate_key(e->store, &row_key);
        if (r < 0)
                return r;
        token_new(new_token);
        token_hash(&e->key, new_token, hash);
        token_id_derive(&e->key, old->sec[ST_CREATED], row_key, id);
        token_id_format(id, new_id);
        table_session_id(e, old, old_id);

        r = store_session_copy(e->store, old->row_key, row_key, new_id, hash, last);
        if (r < 0)
                return rotate_fail(e, r, new_token);
        user = strdup(user_name(e, old->user));
        platform = old->platform ? strdup(platform_name(e, old->platform)) : NULL;
        if (!user || (old->platform && !platform))
                return rotate_fail(e, -ENOMEM, new_token);
        row.row_key = row_key;
        row.id = new_id;
        memcpy(row.token_hash, hash, sizeof hash);
        row.user_id = user;
        row.platform_id = platform;
        row.created_at = session_ms(old, ST_CREATED);
        row.last_activity = last;
        row.renewed_at = session_ms(old, ST_RENEWED);
        r = table_session_add(e, &row, &nh);
        if (r < 0)
                return rotate_fail(e, r, new_token);
        old = S(e, h); /* the array may have moved */
        e->sessions[nh].fp_user_agent = old->fp_user_agent;
        memcpy(e->sessions[nh].fp_small, old->fp_small, sizeof old->fp_small);
        r = txn_row_touch(e, row_key, nh);
        if (r < 0)
                return rotate_fail(e, r, new_token);
        platform_rotated(e, h, row_key);
        r = 0;
        if (txn_audit_on(e)) {
                struct varlink_writer w;

                txn_detail_begin(&w);
                txn_detail_string(&w, "new_session_id", new_id);
                r = txn_audit_written(e, now, "rotated", user, old_id, &w);
        }
        if (r < 0)
                return rotate_abandon(new_token, r);
        if (bus_observed(e))
                bus_emit(e, now, "rotated", old_id, user, json_pack("{s:s}", "new_session_id", new_id));
        r = session_end(e, now, h, ENGINE_END_ROTATED, now, NULL, NULL);
        if (r < 0)
                return rotate_abandon(new_token, r);
        e->counters.rotated++;
        log_debug("Session %s of user %s rotated into %s.", old_id, user, new_id);
        table_info_fill(e, nh, now, ret);
        return 0;
}
