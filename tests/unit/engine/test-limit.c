/* The per-user bookkeeping of the engine (daemon/engine/cleanup.c, the
 * concurrency limit, and table.c, the users' lists in order of activity):
 * the live count and the victim, checked against a model that recomputes
 * them from scratch after every step of a random walk (creates, touches,
 * extends, destroys, time passing, idle and lifetime expiry, a clock set
 * back); expired-not-yet-cleaned sessions neither counted nor evicted;
 * the order kept across a restart (the lists are sorted at load); and a
 * lowered limit applied by the batch cleanup. */
#include "helpers.h"
#include "engine/engine-internal.h" /* the users' lists, checked link by link */

/* Short limits: idle 100, lifetime 1000, absolute 5000, grace 10, cleanup
 * grace 20. */
static void short_timeouts(struct fixture *f) {
        f->c->timeout.idle_timeout = 100;
        f->c->timeout.session_lifetime = 1000;
        f->c->timeout.absolute_timeout = 5000;
        f->c->timeout.expiration_grace = 10;
        f->c->timeout.cleanup_grace = 20;
        f->c->timeout.warning_threshold = 30;
}

static int peek_validate(struct fixture *f, int64_t now, const char *token) {
        struct engine_info info;
        struct engine_error err = {0};
        int r = engine_validate(f->e, now, token, NULL, false, &info, &err);

        ck_assert_int_eq(engine_commit(f->e), 0);
        return r;
}

/* Every user's list of sessions in memory, link by link: forward from head
 * to NIL in order of activity, n_sessions long, each user_prev the one
 * before and the first's the last (table.c keeps no tail in the user). */
static void check_lists(const struct engine *e) {
        for (uint32_t u = 0; u < e->users_used; u++) {
                const struct user *x = &e->users[u];
                uint32_t n = 0, prev = NIL;

                if (!user_used(e, u))
                        continue;
                for (uint32_t h = x->head; h != NIL; prev = h, h = e->sessions[h].user_next) {
                        const struct session *s = &e->sessions[h];

                        ck_assert(s->flags & S_USED);
                        ck_assert_uint_eq(s->user, u);
                        if (prev != NIL) {
                                ck_assert_uint_eq(s->user_prev, prev);
                                ck_assert_int_le(session_ms(&e->sessions[prev], ST_ACTIVITY),
                                                 session_ms(s, ST_ACTIVITY));
                        }
                        ck_assert_uint_le(++n, x->n_sessions);
                }
                ck_assert_uint_eq(n, x->n_sessions);
                if (x->head != NIL)
                        ck_assert_uint_eq(e->sessions[x->head].user_prev, prev);
        }
}

/* ---- the model ------------------------------------------------------------------------ */

struct model_session {
        char token[TOKEN_STRING_LEN + 1];
        char id[TOKEN_ID_STRING_LEN + 1];
        int64_t created_at, renewed_at, last_activity;
        uint64_t order; /* when it reached its last_activity, for ties */
        bool in_memory;
};

struct model {
        struct model_session *s;
        size_t n, allocated;
        uint64_t clock;
        int64_t idle, lifetime, absolute, grace;
};

static int64_t model_end(const struct model *m, const struct model_session *s) {
        int64_t end = s->last_activity + m->idle;

        if (s->renewed_at + m->lifetime < end)
                end = s->renewed_at + m->lifetime;
        if (s->created_at + m->absolute < end)
                end = s->created_at + m->absolute;
        return end;
}

static bool model_live(const struct model *m, const struct model_session *s, int64_t now) {
        return s->in_memory && now < model_end(m, s) + m->grace;
}

static size_t model_count_live(const struct model *m, int64_t now) {
        size_t n = 0;

        for (size_t i = 0; i < m->n; i++)
                n += model_live(m, &m->s[i], now);
        return n;
}

/* The least recently active live session: lowest last_activity, then the
 * one that reached it first. */
static struct model_session *model_lru(struct model *m, int64_t now) {
        struct model_session *best = NULL;

        for (size_t i = 0; i < m->n; i++) {
                struct model_session *s = &m->s[i];

                if (!model_live(m, s, now))
                        continue;
                if (!best || s->last_activity < best->last_activity ||
                    (s->last_activity == best->last_activity && s->order < best->order))
                        best = s;
        }
        return best;
}

static void model_touch(struct model *m, struct model_session *s, int64_t now) {
        if (now > s->last_activity) {
                s->last_activity = now;
                s->order = ++m->clock;
        }
}

/* Creates a session in engine and model; checks who was evicted. */
static void model_create(struct fixture *f, struct model *m, int64_t now, int64_t max) {
        struct engine_create a = {.user_id = "alice"};
        struct engine_created out;
        struct engine_error err = {0};
        struct model_session *s;
        size_t expect = 0;

        /* Who the model expects to go: the LRU ones, until at most max are
         * live counting the new one. */
        struct model_session *victims[8];
        while (model_count_live(m, now) + 1 > (size_t) max) {
                struct model_session *v = model_lru(m, now);
                ck_assert_ptr_nonnull(v);
                ck_assert_uint_lt(expect, 8);
                v->in_memory = false;
                victims[expect++] = v;
        }
        ck_assert_int_eq(engine_create(f->e, now, &a, &out, &err), 0);
        ck_assert_int_eq(engine_commit(f->e), 0);
        ck_assert_uint_eq(out.n_evicted, expect);
        for (size_t i = 0; i < expect; i++)
                ck_assert_str_eq(out.evicted[i], victims[i]->id);
        if (m->n == m->allocated) {
                m->allocated = m->allocated ? 2 * m->allocated : 64;
                m->s = realloc(m->s, m->allocated * sizeof *m->s);
                ck_assert_ptr_nonnull(m->s);
        }
        s = &m->s[m->n++];
        memset(s, 0, sizeof *s);
        memcpy(s->token, out.token, sizeof s->token);
        memcpy(s->id, out.info.id, sizeof s->id);
        s->created_at = s->renewed_at = s->last_activity = now;
        s->order = ++m->clock;
        s->in_memory = true;
        engine_created_clear(&out);
}

static struct model_session *model_pick(struct model *m, unsigned *seed, int64_t now) {
        for (int tries = 0; tries < 20 && m->n > 0; tries++) {
                struct model_session *s = &m->s[rand_r(seed) % m->n];
                if (model_live(m, s, now))
                        return s;
        }
        return NULL;
}

static void model_free(struct model *m) {
        free(m->s);
}

/* A random walk against the model. Most steps move the clock by 0 to 3.75
 * seconds in quarters (ties happen, and times within one second keep their
 * order by the millisecond), some jump past the idle timeout of the oldest,
 * one sets the clock back. */
static void random_walk(int64_t max, unsigned seed, int steps) {
        struct fixture f;
        struct model m = {0};
        struct engine_info info;
        struct engine_error err = {0};
        int64_t now = MS(T0); /* the engine's now and the model's times: ms */
        unsigned ended;
        bool more;

        fixture_init(&f, NULL);
        short_timeouts(&f);
        f.c->security.max_concurrent_per_user = max;
        fixture_open(&f);
        m.idle = MS(100);
        m.lifetime = MS(1000);
        m.absolute = MS(5000);
        m.grace = MS(10);
        for (int step = 0; step < steps; step++) {
                unsigned op = rand_r(&seed) % 100;
                struct model_session *s;

                if (op < 45)
                        model_create(&f, &m, now, max);
                else if (op < 80 && (s = model_pick(&m, &seed, now))) {
                        bool grace = now >= model_end(&m, s);
                        ck_assert_int_eq(validate(&f, now, s->token, &info, &err), 0);
                        if (!grace)
                                model_touch(&m, s, now);
                } else if (op < 85 && (s = model_pick(&m, &seed, now))) {
                        ck_assert_int_eq(engine_extend(f.e, now, s->token, &info, &err), 0);
                        ck_assert_int_eq(engine_commit(f.e), 0);
                        s->renewed_at = now;
                        model_touch(&m, s, now);
                } else if (op < 88 && (s = model_pick(&m, &seed, now))) {
                        ck_assert_int_eq(engine_destroy(f.e, now, s->token, &err), 0);
                        ck_assert_int_eq(engine_commit(f.e), 0);
                        s->in_memory = false;
                } else if (op < 90) {
                        /* Cleanup ends what is past its end + cleanup grace. */
                        ck_assert_int_eq(engine_cleanup_expired(f.e, now, UINT32_MAX, &ended, &more), 0);
                        ck_assert_int_eq(engine_commit(f.e), 0);
                        for (size_t i = 0; i < m.n; i++)
                                if (m.s[i].in_memory && now >= model_end(&m, &m.s[i]) + MS(20))
                                        m.s[i].in_memory = false;
                } else if (op < 92)
                        now += MS(60 + rand_r(&seed) % 120); /* some expire by idle */
                else if (op == 92 && step > steps / 2 && step < steps / 2 + 100)
                        now -= MS(5) - 250;                  /* the wall clock set back a little */
                now += (int64_t) (rand_r(&seed) % 16) * 250; /* 0 to 3.75 s: ties, and times within a second */
                check_lists(f.e);
        }
        model_free(&m);
        fixture_done(&f);
}

START_TEST(test_limit_random_walk_small) {
        random_walk(3, 1, 4000);
        random_walk(1, 2, 2000);
}
END_TEST

START_TEST(test_limit_random_walk_large) {
        /* A limit the walk reaches and sessions that reach their lifetime
         * (1000 s) while still in use. */
        random_walk(40, 3, 6000);
        random_walk(200, 4, 6000);
}
END_TEST

/* A session past its lifetime but recently used (not a prefix of the list
 * by activity) is not live: not counted, not evicted. */
START_TEST(test_limit_lifetime_expired_not_counted) {
        struct fixture f;
        struct engine_info info;
        struct engine_error err = {0};
        struct engine_create a = {.user_id = "alice"};
        struct engine_created out;
        char old[TOKEN_STRING_LEN + 1], t[3][TOKEN_STRING_LEN + 1], id[3][TOKEN_ID_STRING_LEN + 1];

        fixture_init(&f, NULL);
        short_timeouts(&f);
        f.c->security.max_concurrent_per_user = 2;
        fixture_open(&f);
        create_session(&f, MS(T0), "alice", NULL, old, NULL);
        for (int64_t now = MS(T0 + 90); now < MS(T0 + 1000); now += MS(90))
                ck_assert_int_eq(validate(&f, now, old, &info, &err), 0);
        create_session(&f, MS(T0 + 995), "alice", NULL, t[0], id[0]);
        /* At +1012 `old` is past its lifetime + grace though active at +990. */
        ck_assert_int_eq(validate(&f, MS(T0 + 1012), old, &info, &err), -ESTALE);
        ck_assert_int_eq(err.end_reason, ENGINE_END_LIFETIME);
        ck_assert_int_eq(engine_create(f.e, MS(T0 + 1012), &a, &out, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(out.n_evicted, 0);
        memcpy(t[1], out.token, sizeof t[1]);
        engine_created_clear(&out);
        /* Now full: the least recently active live one goes, not `old`. */
        ck_assert_int_eq(engine_create(f.e, MS(T0 + 1013), &a, &out, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(out.n_evicted, 1);
        ck_assert_str_eq(out.evicted[0], id[0]);
        engine_created_clear(&out);
        fixture_done(&f);
}
END_TEST

/* The order of activity survives a restart: the lists are sorted at load. */
START_TEST(test_limit_order_after_restart) {
        struct fixture f;
        struct engine_info info;
        struct engine_error err = {0};
        struct engine_create a = {.user_id = "alice"};
        struct engine_created out;
        char t[6][TOKEN_STRING_LEN + 1], id[6][TOKEN_ID_STRING_LEN + 1];
        static const int order[6] = {3, 0, 5, 1, 4, 2}; /* least recently used first, after the touches */

        fixture_init(&f, path_in("limit.db"));
        short_timeouts(&f);
        f.c->security.max_concurrent_per_user = 6;
        fixture_open(&f);
        for (int i = 0; i < 6; i++)
                create_session(&f, MS(T0 + i), "alice", NULL, t[i], id[i]);
        for (int i = 1; i < 6; i++)
                ck_assert_int_eq(validate(&f, MS(T0 + 10 + i), t[order[i]], &info, &err), 0);
        fixture_close(&f); /* writes every touch */
        fixture_open(&f);
        check_lists(f.e);
        for (int i = 0; i < 6; i++) {
                ck_assert_int_eq(engine_create(f.e, MS(T0 + 30 + i), &a, &out, &err), 0);
                ck_assert_int_eq(engine_commit(f.e), 0);
                ck_assert_uint_eq(out.n_evicted, 1);
                ck_assert_str_eq(out.evicted[0], id[order[i]]);
                engine_created_clear(&out);
        }
        fixture_done(&f);
        scratch_remove();
}
END_TEST

/* Many sessions under a high limit: none evicted, the count exact; then a
 * lowered limit keeps the most recently active. */
START_TEST(test_limit_many_then_lowered) {
        enum { N = 20000 };
        struct fixture f;
        struct engine_info info;
        struct engine_error err = {0};
        struct engine_counts counts;
        char(*t)[TOKEN_STRING_LEN + 1] = calloc(N, sizeof *t);
        unsigned ended, total = 0;
        bool more = true;

        ck_assert_ptr_nonnull(t);
        fixture_init(&f, NULL);
        short_timeouts(&f);
        f.c->timeout.idle_timeout = 900;
        f.c->security.max_concurrent_per_user = N;
        fixture_open(&f);
        for (int i = 0; i < N; i++)
                create_session(&f, MS(T0 + i / 100), "alice", NULL, t[i], NULL);
        engine_count(f.e, MS(T0 + 200), &counts);
        ck_assert_uint_eq(counts.sessions, N);
        /* The first hundred are used again: they are the most recent now. */
        for (int i = 0; i < 100; i++)
                ck_assert_int_eq(validate(&f, MS(T0 + 201), t[i], &info, &err), 0);
        f.c->security.max_concurrent_per_user = 150;
        engine_config_changed(f.e);
        while (more) {
                ck_assert_int_eq(engine_enforce_user_limit(f.e, MS(T0 + 202), 1000, &ended, &more), 0);
                ck_assert_int_eq(engine_commit(f.e), 0);
                total += ended;
        }
        ck_assert_uint_eq(total, N - 150);
        for (int i = 0; i < 100; i++)
                ck_assert_int_eq(peek_validate(&f, MS(T0 + 203), t[i]), 0);
        for (int i = N - 50; i < N; i++)
                ck_assert_int_eq(peek_validate(&f, MS(T0 + 203), t[i]), 0);
        for (int i = 100; i < N - 50; i += 97)
                ck_assert_int_eq(peek_validate(&f, MS(T0 + 203), t[i]), -ESTALE);
        free(t);
        fixture_done(&f);
}
END_TEST

/* A lowered limit applied in time-capped steps (a deadline of 1 ns is
 * always past: every call stops after a few evictions or a few thousand
 * users looked at): the calls together end exactly the least recently
 * active sessions of each user over the limit, and say when none is left,
 * across more users than one call looks at. */
START_TEST(test_limit_lowered_in_steps) {
        enum { USERS = 5000, BIG = 3, N = 600, KEEP = 40 };
        struct fixture f;
        struct engine_info info;
        struct engine_error err = {0};
        char(*t)[N][TOKEN_STRING_LEN + 1] = calloc(BIG, sizeof *t);
        char token[TOKEN_STRING_LEN + 1];
        unsigned ended, total = 0, calls = 0;
        bool more = true;

        ck_assert_ptr_nonnull(t);
        fixture_init(&f, NULL);
        short_timeouts(&f);
        f.c->timeout.idle_timeout = 900;
        f.c->security.max_concurrent_per_user = N;
        fixture_open(&f);
        /* Users with one session each, the big ones among them. */
        for (int i = 0; i < USERS; i++) {
                char user[32];

                snprintf(user, sizeof user, "small%d", i);
                create_session(&f, MS(T0), user, NULL, token, NULL);
                if (i % (USERS / BIG) == USERS / BIG / 2)
                        for (int k = 0; k < N; k++) {
                                snprintf(user, sizeof user, "big%d", i / (USERS / BIG));
                                create_session(&f, MS(T0 + k / 100), user, NULL, t[i / (USERS / BIG)][k], NULL);
                        }
        }
        /* The first ten of each big user are used again: the most recent now. */
        for (int b = 0; b < BIG; b++)
                for (int k = 0; k < 10; k++)
                        ck_assert_int_eq(validate(&f, MS(T0 + 201), t[b][k], &info, &err), 0);
        f.c->security.max_concurrent_per_user = KEEP;
        engine_config_changed(f.e);
        while (more) {
                ck_assert_int_eq(engine_enforce_user_limit_until(f.e, MS(T0 + 202), 1000, 1, &ended, &more), 0);
                ck_assert_int_eq(engine_commit(f.e), 0);
                ck_assert_uint_lt(ended, 1000); /* stopped by the clock, not by the count */
                total += ended;
                ck_assert_uint_lt(++calls, 100000);
        }
        ck_assert_uint_eq(total, BIG * (N - KEEP));
        ck_assert_uint_gt(calls, BIG * (N - KEEP) / 1000);
        for (int b = 0; b < BIG; b++) {
                for (int k = 0; k < 10; k++)
                        ck_assert_int_eq(peek_validate(&f, MS(T0 + 203), t[b][k]), 0);
                for (int k = 10; k < N - (KEEP - 10); k++)
                        ck_assert_int_eq(peek_validate(&f, MS(T0 + 203), t[b][k]), -ESTALE);
                for (int k = N - (KEEP - 10); k < N; k++)
                        ck_assert_int_eq(peek_validate(&f, MS(T0 + 203), t[b][k]), 0);
        }
        /* Nothing over the limit: a pass says so, whatever the clock. */
        calls = 0;
        do {
                ck_assert_int_eq(engine_enforce_user_limit_until(f.e, MS(T0 + 204), 1000, 1, &ended, &more), 0);
                ck_assert_uint_eq(ended, 0);
                ck_assert_uint_lt(++calls, 100);
        } while (more);
        free(t);
        fixture_done(&f);
}
END_TEST

/* Milliseconds (issue 13): the order of activity and the live count go by
 * the millisecond. A session touched later within the same second is the
 * more recent one; one whose idle end + grace falls 0.9 s into a second is
 * live until then, not from the start of that second. */
START_TEST(test_limit_milliseconds) {
        struct fixture f;
        struct engine_info info;
        struct engine_error err = {0};
        struct engine_create a = {.user_id = "alice"};
        struct engine_created out;
        char t[3][TOKEN_STRING_LEN + 1], id[3][TOKEN_ID_STRING_LEN + 1];

        fixture_init(&f, NULL);
        short_timeouts(&f);
        f.c->security.max_concurrent_per_user = 3;
        fixture_open(&f);
        for (int i = 0; i < 3; i++)
                create_session(&f, MS(T0) + 100 * (i + 1), "alice", NULL, t[i], id[i]);
        /* The first, touched at 0.9 s, is now the most recent. */
        ck_assert_int_eq(validate(&f, MS(T0) + 900, t[0], &info, &err), 0);
        ck_assert_int_eq(engine_create(f.e, MS(T0) + 950, &a, &out, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(out.n_evicted, 1);
        ck_assert_str_eq(out.evicted[0], id[1]);
        engine_created_clear(&out);
        fixture_done(&f);

        /* Idle 100 s, grace 10 s: a session active at 0.9 s is live until
         * 110.9 s. */
        fixture_init(&f, NULL);
        short_timeouts(&f);
        f.c->security.max_concurrent_per_user = 1;
        fixture_open(&f);
        create_session(&f, MS(T0) + 900, "alice", NULL, t[0], id[0]);
        ck_assert_int_eq(engine_create(f.e, MS(T0 + 110) + 899, &a, &out, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(out.n_evicted, 1);
        ck_assert_str_eq(out.evicted[0], id[0]);
        memcpy(t[1], out.token, sizeof t[1]);
        memcpy(id[1], out.info.id, sizeof id[1]);
        engine_created_clear(&out);
        /* The new one (at 110.899 s) is live until 220.899 s. */
        ck_assert_int_eq(engine_create(f.e, MS(T0 + 220) + 899, &a, &out, &err), 0);
        ck_assert_int_eq(engine_commit(f.e), 0);
        ck_assert_uint_eq(out.n_evicted, 0);
        engine_created_clear(&out);
        fixture_done(&f);
}
END_TEST

int main(void) {
        Suite *s = suite_create("limit");
        TCase *tc = tcase_create("limit");

        log_setup();
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_limit_random_walk_small);
        tcase_add_test(tc, test_limit_random_walk_large);
        tcase_add_test(tc, test_limit_lifetime_expired_not_counted);
        tcase_add_test(tc, test_limit_order_after_restart);
        tcase_add_test(tc, test_limit_many_then_lowered);
        tcase_add_test(tc, test_limit_lowered_in_steps);
        tcase_add_test(tc, test_limit_milliseconds);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
