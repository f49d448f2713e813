/* Rings (daemon/ring.c): the ring keeps the newest items in order through
 * wrap-around and resizes and frees, with the function it was given, every
 * item it drops (evicted, cleared, cut by a shrink, left at the end) and
 * no other; as a ring of jansson values it answers arrays; the reservoir keeps the newest samples
 * and running totals; the rate window takes its base a window back and
 * never extrapolates a short span. */
#include <errno.h>
#include <math.h>

#include "helpers.h"
#include "ring.h"

static void assert_ring(const struct ring *r, json_int_t first, size_t n) {
        ck_assert_uint_eq(ring_count(r), n);
        for (size_t i = 0; i < n; i++)
                ck_assert_int_eq(json_integer_value(ring_get(r, i)), first + (json_int_t) i);
        ck_assert_ptr_null(ring_get(r, n));
}

START_TEST(test_ring_wraps) {
        struct ring r;
        json_t *a;

        ck_assert_int_eq(ring_init(&r, 3, ring_json_free), 0);
        assert_ring(&r, 0, 0);
        for (int i = 1; i <= 2; i++)
                ring_push(&r, json_integer(i));
        assert_ring(&r, 1, 2);
        for (int i = 3; i <= 10; i++)
                ring_push(&r, json_integer(i));
        assert_ring(&r, 8, 3);
        ck_assert_uint_eq(r.pushed, 10);

        a = ring_to_array(&r);
        ck_assert_uint_eq(json_array_size(a), 3);
        ck_assert_int_eq(json_integer_value(json_array_get(a, 0)), 8);
        ck_assert_int_eq(json_integer_value(json_array_get(a, 2)), 10);
        json_decref(a);
        a = ring_tail_to_array(&r, 2);
        ck_assert_uint_eq(json_array_size(a), 2);
        ck_assert_int_eq(json_integer_value(json_array_get(a, 0)), 9);
        json_decref(a);
        a = ring_tail_to_array(&r, 99);
        ck_assert_uint_eq(json_array_size(a), 3);
        json_decref(a);

        ring_push(&r, NULL); /* a failed json_pack: ignored */
        assert_ring(&r, 8, 3);
        ring_done(&r);
}
END_TEST

START_TEST(test_ring_resize) {
        struct ring r;

        ck_assert_int_eq(ring_init(&r, 4, ring_json_free), 0);
        for (int i = 1; i <= 6; i++) /* wrapped: start is not 0 */
                ring_push(&r, json_integer(i));
        assert_ring(&r, 3, 4);
        ck_assert_int_eq(ring_resize(&r, 2), 0); /* shrink keeps the newest */
        assert_ring(&r, 5, 2);
        ck_assert_int_eq(ring_resize(&r, 5), 0); /* grow keeps everything */
        assert_ring(&r, 5, 2);
        for (int i = 7; i <= 9; i++)
                ring_push(&r, json_integer(i));
        assert_ring(&r, 5, 5);
        ring_push(&r, json_integer(10));
        assert_ring(&r, 6, 5);
        ck_assert_int_eq(ring_resize(&r, 5), 0);
        assert_ring(&r, 6, 5);
        ring_clear(&r);
        assert_ring(&r, 0, 0);
        ring_push(&r, json_integer(42));
        assert_ring(&r, 42, 1);
        ring_done(&r);
        ring_done(&r); /* twice is harmless */
}
END_TEST

/* A reservation made ahead is what the resize to that capacity uses: that
 * resize allocates nothing (so cannot fail); another one frees it. */
START_TEST(test_ring_reserve) {
        struct ring r;
        void **spare;

        ck_assert_int_eq(ring_init(&r, 3, ring_json_free), 0);
        for (int i = 1; i <= 4; i++)
                ring_push(&r, json_integer(i));
        ck_assert_int_eq(ring_reserve(&r, 3), 0); /* the capacity it has: nothing to reserve */
        ck_assert_ptr_null(r.spare);
        ck_assert_int_eq(ring_reserve(&r, 6), 0);
        spare = r.spare;
        ck_assert_ptr_nonnull(spare);
        ck_assert_uint_eq(r.spare_capacity, 6);
        ck_assert_int_eq(ring_reserve(&r, 6), 0); /* again: the same reservation */
        ck_assert_ptr_eq(r.spare, spare);
        assert_ring(&r, 2, 3); /* untouched so far */
        ck_assert_int_eq(ring_resize(&r, 6), 0);
        ck_assert_ptr_eq(r.items, spare);
        ck_assert_ptr_null(r.spare);
        assert_ring(&r, 2, 3);

        ck_assert_int_eq(ring_reserve(&r, 2), 0);
        ring_unreserve(&r); /* a reload given up */
        ck_assert_ptr_null(r.spare);
        ck_assert_uint_eq(r.capacity, 6);
        ck_assert_int_eq(ring_reserve(&r, 2), 0);
        ck_assert_int_eq(ring_resize(&r, 6), 0); /* no change: the reservation goes */
        ck_assert_ptr_null(r.spare);
        ck_assert_int_eq(ring_reserve(&r, 9), 0);
        ck_assert_int_eq(ring_resize(&r, 2), 0); /* another size: allocated anew, reservation freed */
        ck_assert_ptr_null(r.spare);
        assert_ring(&r, 3, 2);
        ck_assert_int_eq(ring_reserve(&r, 7), 0);
        ring_done(&r); /* frees a reservation too (ASan and valgrind would see a leak) */
}
END_TEST

/* The generic ring: items of any kind, freed by the ring's function. The
 * items here are ints that the free function logs before freeing them. */
static int freed[32];
static size_t n_freed;

static void int_free(void *p) {
        ck_assert_uint_lt(n_freed, sizeof freed / sizeof *freed);
        freed[n_freed++] = *(int *) p;
        free(p);
}

static int *int_new(int v) {
        int *p = malloc(sizeof *p);

        ck_assert_ptr_nonnull(p);
        *p = v;
        return p;
}

static void assert_ints(const struct ring *r, int first, size_t n) {
        ck_assert_uint_eq(ring_count(r), n);
        for (size_t i = 0; i < n; i++)
                ck_assert_int_eq(*(int *) ring_get(r, i), first + (int) i);
        ck_assert_ptr_null(ring_get(r, n));
}

static void assert_freed(const int *want, size_t n) {
        ck_assert_uint_eq(n_freed, n);
        for (size_t i = 0; i < n; i++)
                ck_assert_int_eq(freed[i], want[i]);
        n_freed = 0;
}

/* A full ring frees the oldest on each push, in the order they came. */
START_TEST(test_ring_free_evicts) {
        struct ring r;

        n_freed = 0;
        ck_assert_int_eq(ring_init(&r, 3, int_free), 0);
        for (int i = 1; i <= 3; i++)
                ring_push(&r, int_new(i));
        assert_freed(NULL, 0);
        ring_push(&r, int_new(4));
        assert_freed((const int[]){1}, 1);
        assert_ints(&r, 2, 3);
        ring_push(&r, int_new(5));
        ring_push(&r, int_new(6));
        assert_freed((const int[]){2, 3}, 2);
        assert_ints(&r, 4, 3);
        ring_push(&r, NULL); /* a failed allocation: neither kept nor freed nor counted */
        assert_freed(NULL, 0);
        ck_assert_uint_eq(r.pushed, 6);
        ring_done(&r); /* frees what is left, oldest first */
        assert_freed((const int[]){4, 5, 6}, 3);
        ring_done(&r);
        assert_freed(NULL, 0);
}
END_TEST

/* Clear and a shrinking resize free what they drop, and only that. */
START_TEST(test_ring_free_clear_resize) {
        struct ring r;

        n_freed = 0;
        ck_assert_int_eq(ring_init(&r, 4, int_free), 0);
        for (int i = 1; i <= 6; i++) /* wrapped: start is not 0 */
                ring_push(&r, int_new(i));
        assert_freed((const int[]){1, 2}, 2);
        ck_assert_int_eq(ring_reserve(&r, 2), 0);
        assert_freed(NULL, 0);
        ck_assert_int_eq(ring_resize(&r, 2), 0); /* keeps 5, 6 */
        assert_freed((const int[]){3, 4}, 2);
        assert_ints(&r, 5, 2);
        ck_assert_int_eq(ring_resize(&r, 8), 0); /* grow: nothing freed */
        assert_freed(NULL, 0);
        assert_ints(&r, 5, 2);
        ring_clear(&r);
        assert_freed((const int[]){5, 6}, 2);
        assert_ints(&r, 0, 0);
        ck_assert_uint_eq(r.pushed, 6); /* the count of ever is not the content */
        ring_clear(&r);                 /* empty: nothing to free */
        assert_freed(NULL, 0);
        ring_push(&r, int_new(7));
        assert_ints(&r, 7, 1);
        ring_done(&r);
        assert_freed((const int[]){7}, 1);
}
END_TEST

START_TEST(test_reservoir) {
        struct reservoir r;
        double out[4];

        ck_assert_int_eq(reservoir_init(&r, 4), 0);
        ck_assert_uint_eq(reservoir_sorted(&r, out), 0);
        reservoir_add(&r, 30);
        reservoir_add(&r, 10);
        ck_assert_uint_eq(reservoir_sorted(&r, out), 2);
        ck_assert(out[0] == 10 && out[1] == 30);
        for (uint32_t v = 1; v <= 6; v++) /* pushes 30 and 10 out */
                reservoir_add(&r, v * 100);
        ck_assert_uint_eq(reservoir_sorted(&r, out), 4);
        ck_assert(out[0] == 300 && out[1] == 400 && out[2] == 500 && out[3] == 600);
        ck_assert_uint_eq(r.total, 8);
        ck_assert_uint_eq(r.sum, 40 + 2100);
        ck_assert_uint_eq(r.max, 600);
        reservoir_reset_max(&r);
        ck_assert_uint_eq(r.max, 0);
        reservoir_done(&r);
}
END_TEST

static void add_point(struct rate_window *w, int64_t t, uint64_t a) {
        uint64_t v[RATE_WINDOW_COUNTERS] = {a, 2 * a};
        rate_window_add(w, t, v);
}

START_TEST(test_rate_window) {
        struct rate_window w;
        uint64_t d[RATE_WINDOW_COUNTERS];
        int64_t span;

        rate_window_init(&w, 60000);
        ck_assert_int_eq(rate_window_delta(&w, d, &span), -ENODATA);
        add_point(&w, 0, 0);
        ck_assert_int_eq(rate_window_delta(&w, d, &span), -ENODATA);

        /* A young window: everything since the first point, not scaled up. */
        add_point(&w, 10000, 50);
        ck_assert_int_eq(rate_window_delta(&w, d, &span), 0);
        ck_assert_int_eq(span, 10000);
        ck_assert_uint_eq(d[0], 50);
        ck_assert_uint_eq(d[1], 100);
        ck_assert(rate_window_per_window(d[0], span, 60000) == 50.0);

        /* One-second samples for two minutes: the base is a minute back. */
        for (int64_t t = 11000; t <= 130000; t += 1000)
                add_point(&w, t, 50 + (uint64_t) (t - 10000) / 1000);
        ck_assert_int_eq(rate_window_delta(&w, d, &span), 0);
        ck_assert_int_eq(span, 60000);
        ck_assert_uint_eq(d[0], 60);
        ck_assert_uint_le(w.count, 62);

        /* Nothing new for a while: the count falls to zero. */
        add_point(&w, 200000, 170);
        ck_assert_int_eq(rate_window_delta(&w, d, &span), 0);
        ck_assert_uint_eq(d[0], 0);

        /* Samples further apart than the window are averaged to a window. */
        rate_window_init(&w, 60000);
        add_point(&w, 0, 0);
        add_point(&w, 120000, 100);
        ck_assert_int_eq(rate_window_delta(&w, d, &span), 0);
        ck_assert_int_eq(span, 120000);
        ck_assert(fabs(rate_window_per_window(d[0], span, 60000) - 50.0) < 1e-9);

        /* A counter that went backwards (never does; must not wrap). */
        rate_window_init(&w, 60000);
        add_point(&w, 0, 100);
        add_point(&w, 1000, 50);
        ck_assert_int_eq(rate_window_delta(&w, d, &span), 0);
        ck_assert_uint_eq(d[0], 0);

        /* Time going backwards is clamped to the newest point. */
        add_point(&w, 500, 120);
        ck_assert_int_eq(rate_window_delta(&w, d, &span), 0);
        ck_assert_int_eq(span, 1000);
        ck_assert_uint_eq(d[0], 20);
}
END_TEST

START_TEST(test_rate_window_dense) {
        struct rate_window w;
        uint64_t d[RATE_WINDOW_COUNTERS];
        int64_t span;

        /* More points than the ring holds within one window: the oldest go,
         * the base is a little younger than a window, nothing breaks. */
        rate_window_init(&w, 60000);
        for (int64_t t = 0; t <= 1000 * 100; t += 100)
                add_point(&w, t, (uint64_t) t / 100);
        ck_assert_uint_eq(w.count, RATE_WINDOW_POINTS);
        ck_assert_int_eq(rate_window_delta(&w, d, &span), 0);
        ck_assert_int_eq(span, (RATE_WINDOW_POINTS - 1) * 100);
        ck_assert_uint_eq(d[0], RATE_WINDOW_POINTS - 1);
}
END_TEST

int main(void) {
        Suite *s = suite_create("ring");
        TCase *tc = tcase_create("ring");

        tcase_add_test(tc, test_ring_wraps);
        tcase_add_test(tc, test_ring_resize);
        tcase_add_test(tc, test_ring_reserve);
        tcase_add_test(tc, test_ring_free_evicts);
        tcase_add_test(tc, test_ring_free_clear_resize);
        tcase_add_test(tc, test_reservoir);
        tcase_add_test(tc, test_rate_window);
        tcase_add_test(tc, test_rate_window_dense);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
