/* The open-addressing index (daemon/hindex.c) against a plain array:
 * inserts, lookups and backward-shift removals in random order, with keys
 * chosen to collide. */
#include "helpers.h"
#include "hindex.h"

enum { N = 5000 };

struct world {
        uint64_t keys[N];
        bool present[N];
        bool collide; /* hash only the low 4 bits: long probe runs */
};

static uint64_t hash_of(const struct world *w, uint64_t key) {
        return w->collide ? key & 15 : key * 0x9E3779B97F4A7C15ull;
}

static uint64_t elem_hash(uint32_t h, void *ctx) {
        struct world *w = ctx;
        return hash_of(w, w->keys[h]);
}

static bool elem_equal(uint32_t h, const void *key, void *ctx) {
        struct world *w = ctx;
        return w->keys[h] == *(const uint64_t *) key;
}

static const struct hindex_ops ops = {elem_hash, elem_equal};

static void run(bool collide, unsigned seed) {
        static struct world w;
        struct hindex h;

        memset(&w, 0, sizeof w);
        w.collide = collide;
        srand(seed);
        for (uint32_t i = 0; i < N; i++)
                w.keys[i] = ((uint64_t) rand() << 32) ^ (uint64_t) rand() ^ i;
        ck_assert_int_eq(hindex_init(&h, 4, &ops, &w), 0);

        for (int round = 0; round < 6 * N; round++) {
                uint32_t i = (uint32_t) rand() % (collide ? 300 : N);
                uint64_t hv = hash_of(&w, w.keys[i]);

                if (w.present[i]) {
                        ck_assert_uint_eq(hindex_find(&h, hv, &w.keys[i]), i);
                        if (rand() % 2) {
                                ck_assert_int_eq(hindex_remove(&h, hv, i), 0);
                                w.present[i] = false;
                                ck_assert_uint_eq(hindex_find(&h, hv, &w.keys[i]), HINDEX_NONE);
                                ck_assert_int_eq(hindex_remove(&h, hv, i), -ENOENT);
                        }
                } else {
                        ck_assert_uint_eq(hindex_find(&h, hv, &w.keys[i]), HINDEX_NONE);
                        ck_assert_int_eq(hindex_insert(&h, hv, i), 0);
                        w.present[i] = true;
                }
                if (round % 997 == 0) {
                        uint32_t count = 0;
                        for (uint32_t k = 0; k < N; k++) {
                                uint32_t found = hindex_find(&h, hash_of(&w, w.keys[k]), &w.keys[k]);
                                ck_assert_uint_eq(found, w.present[k] ? k : HINDEX_NONE);
                                count += w.present[k];
                        }
                        ck_assert_uint_eq(h.count, count);
                }
        }
        hindex_free(&h);
}

START_TEST(test_random) {
        run(false, 1);
        run(false, 2);
}
END_TEST

START_TEST(test_colliding) {
        run(true, 3);
        run(true, 4);
}
END_TEST

/* Reserving keeps the members findable and makes room: inserting up to
 * the reserved count then never resizes the table. */
START_TEST(test_reserve) {
        static struct world w;
        struct hindex h;
        uint32_t mask;

        memset(&w, 0, sizeof w);
        for (uint32_t i = 0; i < N; i++)
                w.keys[i] = i * 7919u + 1;
        ck_assert_int_eq(hindex_init(&h, 4, &ops, &w), 0);
        for (uint32_t i = 0; i < 10; i++)
                ck_assert_int_eq(hindex_insert(&h, hash_of(&w, w.keys[i]), i), 0);
        ck_assert_int_eq(hindex_reserve(&h, N), 0);
        mask = h.mask;
        ck_assert_uint_ge((uint64_t) (mask + 1) * 3, (uint64_t) N * 4);
        for (uint32_t i = 0; i < 10; i++)
                ck_assert_uint_eq(hindex_find(&h, hash_of(&w, w.keys[i]), &w.keys[i]), i);
        for (uint32_t i = 10; i < N; i++)
                ck_assert_int_eq(hindex_insert(&h, hash_of(&w, w.keys[i]), i), 0);
        ck_assert_uint_eq(h.mask, mask);
        for (uint32_t i = 0; i < N; i++)
                ck_assert_uint_eq(hindex_find(&h, hash_of(&w, w.keys[i]), &w.keys[i]), i);
        /* Reserving less than there is room for changes nothing. */
        ck_assert_int_eq(hindex_reserve(&h, 16), 0);
        ck_assert_uint_eq(h.mask, mask);
        ck_assert_int_eq(hindex_reserve(&h, HINDEX_MAX_HANDLE + 1), -ENOMEM);
        hindex_free(&h);
}
END_TEST

int main(void) {
        Suite *s = suite_create("hindex");
        TCase *tc = tcase_create("hindex");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_random);
        tcase_add_test(tc, test_colliding);
        tcase_add_test(tc, test_reserve);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
