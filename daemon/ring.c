/* Rings: see ring.h.
 *
 * The ring is a circular array of owned pointers with the function that
 * frees them; the reservoir a circular array of samples with running
 * totals; the rate window a circular array of counter snapshots pruned from
 * the front as time moves on. All three are plain arrays because they are
 * read far less often than they are written: a push is O(1) and never
 * allocates. The ring knows nothing of what it holds (a void pointer and a
 * free function, as a libuv handle knows its close callback): the events
 * keep records of text in it, the metrics history jansson values, and both
 * get the same eviction and resizing. Only ring_to_array() looks inside,
 * and asserts that the ring is one of jansson values.
 */
#include "ring.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

/* ---- owned pointers ---------------------------------------------------------- */

int ring_init(struct ring *r, size_t capacity, ring_free_t free_item) {
        assert(r && capacity > 0 && free_item);
        *r = (struct ring){.items = calloc(capacity, sizeof *r->items), .capacity = capacity, .free_item = free_item};
        return r->items ? 0 : -ENOMEM;
}

void *ring_get(const struct ring *r, size_t i) {
        return i < r->count ? r->items[(r->start + i) % r->capacity] : NULL;
}

/* Frees the oldest n items (they stay in the array: the caller forgets them). */
static void ring_free_oldest(struct ring *r, size_t n) {
        assert(n <= r->count);
        for (size_t i = 0; i < n; i++)
                r->free_item(ring_get(r, i));
}

void ring_done(struct ring *r) {
        ring_unreserve(r);
        if (!r->items)
                return;
        ring_free_oldest(r, r->count);
        free(r->items);
        *r = (struct ring){0};
}

void ring_push(struct ring *r, void *item) {
        assert(r->items);
        if (!item)
                return;
        r->pushed++;
        if (r->count == r->capacity) {
                r->free_item(r->items[r->start]);
                r->items[r->start] = item;
                r->start = (r->start + 1) % r->capacity;
                return;
        }
        r->items[(r->start + r->count) % r->capacity] = item;
        r->count++;
}

void ring_clear(struct ring *r) {
        ring_free_oldest(r, r->count);
        r->start = r->count = 0;
}

int ring_reserve(struct ring *r, size_t capacity) {
        _cleanup_free_ void **items = NULL;

        assert(capacity > 0);
        if (capacity == r->capacity || capacity == r->spare_capacity)
                return 0;
        items = calloc(capacity, sizeof *items);
        if (!items)
                return -ENOMEM;
        ring_unreserve(r);
        r->spare = TAKE_PTR(items);
        r->spare_capacity = capacity;
        return 0;
}

void ring_unreserve(struct ring *r) {
        free(r->spare);
        r->spare = NULL;
        r->spare_capacity = 0;
}

int ring_resize(struct ring *r, size_t capacity) {
        void **items;
        size_t keep, drop;
        int ret;

        assert(capacity > 0);
        if (capacity == r->capacity) {
                ring_unreserve(r);
                return 0;
        }
        ret = ring_reserve(r, capacity);
        if (ret < 0)
                return ret;
        assert(r->spare && r->spare_capacity == capacity);
        items = TAKE_PTR(r->spare);
        r->spare_capacity = 0;
        keep = r->count < capacity ? r->count : capacity;
        drop = r->count - keep;
        ring_free_oldest(r, drop);
        for (size_t i = 0; i < keep; i++)
                items[i] = ring_get(r, drop + i);
        free(r->items);
        r->items = items;
        r->capacity = capacity;
        r->start = 0;
        r->count = keep;
        return 0;
}

/* ---- JSON values: a ring made with ring_json_free -------------------------- */

void ring_json_free(void *item) {
        json_decref(item);
}

json_t *ring_tail_to_array(const struct ring *r, size_t n) {
        _cleanup_json_ json_t *a = NULL;
        size_t first;

        assert(r->count == 0 || r->free_item == ring_json_free);
        a = json_array();
        if (!a)
                return NULL;
        first = r->count > n ? r->count - n : 0;
        for (size_t i = first; i < r->count; i++)
                if (json_array_append(a, ring_get(r, i)) < 0)
                        return NULL;
        return TAKE_PTR(a);
}

json_t *ring_to_array(const struct ring *r) {
        return ring_tail_to_array(r, r->count);
}

/* ---- samples ------------------------------------------------------------------ */

int reservoir_init(struct reservoir *r, size_t capacity) {
        assert(r && capacity > 0);
        memset(r, 0, sizeof *r);
        r->items = calloc(capacity, sizeof *r->items);
        if (!r->items)
                return -ENOMEM;
        r->capacity = capacity;
        return 0;
}

void reservoir_done(struct reservoir *r) {
        free(r->items);
        memset(r, 0, sizeof *r);
}

void reservoir_add(struct reservoir *r, uint32_t v) {
        assert(r->items);
        r->items[r->next] = v;
        r->next = (r->next + 1) % r->capacity;
        if (r->count < r->capacity)
                r->count++;
        r->total++;
        r->sum += v;
        if (v > r->max)
                r->max = v;
}

void reservoir_reset_max(struct reservoir *r) {
        r->max = 0;
}

static int double_cmp(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

size_t reservoir_sorted(const struct reservoir *r, double *out) {
        for (size_t i = 0; i < r->count; i++)
                out[i] = r->items[i];
        qsort(out, r->count, sizeof *out, double_cmp);
        return r->count;
}

/* ---- counters over a time window ------------------------------------------- */

void rate_window_init(struct rate_window *w, int64_t window_ms) {
        assert(window_ms > 0);
        memset(w, 0, sizeof *w);
        w->window_ms = window_ms;
}

static const struct rate_point *point(const struct rate_window *w, size_t i) {
        assert(i < w->count);
        return &w->points[(w->start + i) % RATE_WINDOW_POINTS];
}

void rate_window_add(struct rate_window *w, int64_t t_ms, const uint64_t v[RATE_WINDOW_COUNTERS]) {
        struct rate_point *p;

        if (w->count > 0 && t_ms < point(w, w->count - 1)->t_ms)
                t_ms = point(w, w->count - 1)->t_ms;
        if (w->count == RATE_WINDOW_POINTS) {
                /* Points closer together than window/256: the oldest goes,
                 * the base is then merely a little younger than a window. */
                w->start = (w->start + 1) % RATE_WINDOW_POINTS;
                w->count--;
        }
        p = &w->points[(w->start + w->count) % RATE_WINDOW_POINTS];
        p->t_ms = t_ms;
        memcpy(p->v, v, sizeof p->v);
        w->count++;
        /* The oldest is needed as the base only while the next one is not a
         * full window old itself. */
        while (w->count >= 2 && point(w, 1)->t_ms <= t_ms - w->window_ms) {
                w->start = (w->start + 1) % RATE_WINDOW_POINTS;
                w->count--;
        }
}

int rate_window_delta(const struct rate_window *w, uint64_t delta[RATE_WINDOW_COUNTERS], int64_t *span_ms) {
        const struct rate_point *base, *last;

        if (w->count < 2)
                return -ENODATA;
        base = point(w, 0);
        last = point(w, w->count - 1);
        for (size_t i = 0; i < RATE_WINDOW_COUNTERS; i++)
                delta[i] = last->v[i] >= base->v[i] ? last->v[i] - base->v[i] : 0;
        *span_ms = last->t_ms - base->t_ms;
        return 0;
}

double rate_window_per_window(uint64_t delta, int64_t span_ms, int64_t window_ms) {
        assert(window_ms > 0);
        if (span_ms <= window_ms)
                return (double) delta;
        return (double) delta * (double) window_ms / (double) span_ms;
}
