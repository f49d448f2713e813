/* Rings: bounded memories of the recent past for the observability code.
 *
 * Three shapes, all fixed in size so that a busy daemon never grows them:
 *
 *   struct ring        the newest N items, each a pointer the ring owns and
 *                      frees with the function given to ring_init(): the
 *                      events (records of text, daemon/events.c) and the
 *                      metrics history (jansson values, ring_json_free());
 *                      pushing into a full ring frees the oldest, resizing
 *                      (a reload changed the buffer size) keeps the newest.
 *                      One implementation for every kind of item, so that
 *                      eviction, resizing and the reservation a reload
 *                      makes ahead are written (and tested) once.
 *   struct reservoir   the newest N unsigned 32-bit samples (request
 *                      durations in microseconds), from which quantiles
 *                      are taken on demand.
 *   struct rate_window counter snapshots over a sliding time window: the
 *                      difference between now and the snapshot taken a
 *                      window ago is the count "in the last minute" that the
 *                      alert thresholds speak of.
 *
 * None of them allocates after its init/resize, none logs; functions return
 * 0 or a negative errno.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- owned pointers ---------------------------------------------------------- */

/* Frees one item of a ring (never called with NULL). */
typedef void (*ring_free_t)(void *item);

struct ring {
        void **items;
        size_t capacity;
        size_t start; /* index of the oldest */
        size_t count;
        uint64_t pushed; /* ever, including the ones dropped */
        ring_free_t free_item;
        void **spare; /* ring_reserve(): the array of a resize to come */
        size_t spare_capacity;
};

/* capacity >= 1; free_item frees an item the ring drops (free, or
 * ring_json_free for jansson values). */
int ring_init(struct ring *r, size_t capacity, ring_free_t free_item);
/* Frees every item and the arrays; a second call does nothing. */
void ring_done(struct ring *r);
/* Takes item (NULL, a failed allocation, is ignored and not counted).
 * Frees the oldest when full. */
void ring_push(struct ring *r, void *item);
/* Frees every item. */
void ring_clear(struct ring *r);
/* Keeps the newest min(count, capacity) items, frees the others. -ENOMEM
 * leaves r as it was; after ring_reserve(r, capacity) it cannot fail. */
int ring_resize(struct ring *r, size_t capacity);
/* Allocates what ring_resize(r, capacity) needs, ahead: a reload first
 * reserves every buffer of its new configuration and swaps only when all
 * of them could be had. -ENOMEM leaves r as it was. The reservation is used
 * by the next ring_resize() to that capacity, freed by any other resize, by
 * ring_unreserve() and by ring_done(). */
int ring_reserve(struct ring *r, size_t capacity);
void ring_unreserve(struct ring *r);
static inline size_t ring_count(const struct ring *r) {
        return r->count;
}
/* i = 0 is the oldest; borrowed; NULL when i >= count. */
void *ring_get(const struct ring *r, size_t i);

/* ---- JSON values: a ring made with ring_json_free -------------------------- */

/* json_decref() as a ring_free_t. */
void ring_json_free(void *item);
/* A new array of the values, oldest first (references, not copies); NULL on ENOMEM. */
json_t *ring_to_array(const struct ring *r);
/* The newest at most n values, oldest first. */
json_t *ring_tail_to_array(const struct ring *r, size_t n);

/* ---- samples ------------------------------------------------------------------ */

struct reservoir {
        uint32_t *items;
        size_t capacity;
        size_t next; /* where the next sample goes */
        size_t count;
        uint64_t total; /* samples ever added */
        uint64_t sum;   /* of every sample ever added */
        uint32_t max;   /* largest since the last reservoir_reset_max() */
};

int reservoir_init(struct reservoir *r, size_t capacity);
void reservoir_done(struct reservoir *r);
void reservoir_add(struct reservoir *r, uint32_t v);
void reservoir_reset_max(struct reservoir *r);
/* Copies the samples held into out (room for r->count), sorted ascending;
 * returns how many. */
size_t reservoir_sorted(const struct reservoir *r, double *out);

/* ---- counters over a time window ------------------------------------------- */

#define RATE_WINDOW_COUNTERS 8
#define RATE_WINDOW_POINTS 256

struct rate_point {
        int64_t t_ms;
        uint64_t v[RATE_WINDOW_COUNTERS];
};

struct rate_window {
        int64_t window_ms;
        struct rate_point points[RATE_WINDOW_POINTS]; /* a ring, oldest at start */
        size_t start, count;
};

void rate_window_init(struct rate_window *w, int64_t window_ms);
/* Records the counters at time t_ms (monotonic, never decreasing) and
 * forgets the points no longer needed as a base. */
void rate_window_add(struct rate_window *w, int64_t t_ms, const uint64_t v[RATE_WINDOW_COUNTERS]);
/* The change of each counter between the base point and the newest point:
 * the base is the newest point at least window_ms older than the newest,
 * or the oldest point when none is that old (a young daemon). *span_ms is
 * the time between the two. -ENODATA with fewer than two points. */
int rate_window_delta(const struct rate_window *w, uint64_t delta[RATE_WINDOW_COUNTERS], int64_t *span_ms);
/* delta as a rate per window: delta * window / max(span, window). A span
 * shorter than the window counts what happened in it (no extrapolation),
 * a longer one (samples further apart than the window) is averaged. */
double rate_window_per_window(uint64_t delta, int64_t span_ms, int64_t window_ms);
