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
        return w->keys[h] == *(const uint64_t *)key;
}

static const struct hindex_ops ops = {elem_hash, elem_equal};

static void run(bool collide, unsigned seed) {
        static struct world w;
        struct hindex h;

        memset(&w, 0, sizeof w);
        w.collide = collide;
        srand(seed);
        for (uint32_t i = 0; i < N; i++)
                w.keys[i] = ((uint64_t)rand() << 32) ^ (uint64_t)rand() ^ i;
        ck_assert_int_eq(hindex_init(&h, 4, &ops, &w), 0);

        for (int round = 0; round < 6 * N; round++) {
                uint32_t i = (uint32_t)rand() % (collide ? 300 : N);
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

int main(void) {
        Suite *s = suite_create("hindex");
        TCase *tc = tcase_create("hindex");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_random);
        tcase_add_test(tc, test_colliding);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
