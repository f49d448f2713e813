/* Open-addressing hash index of handles: see hindex.h.
 *
 * A slot is 32 bits: the handle + 1 in the low HINDEX_HANDLE_BITS (0 is an
 * empty slot, so zeroed memory is an empty table) and 6 bits of the key's
 * hash above it. A lookup compares keys only where those bits match, so it
 * rarely touches an element that is not the one it looks for: with a
 * million entries each comparison is a cache miss into the caller's array,
 * and probing past a few of them would cost more than the rest of a
 * validation. The table doubles when it would become more than 3/4 full.
 */
#include "hindex.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#define HANDLE_MASK ((1u << HINDEX_HANDLE_BITS) - 1)

static uint32_t round_pow2(uint32_t n) {
        uint32_t p = 16;

        while (p < n && p < (1u << 31))
                p <<= 1;
        return p;
}

/* Hash bits above the ones a table of up to 2^HINDEX_HANDLE_BITS slots
 * uses for the position. */
static uint32_t tag_of(uint64_t hash) {
        return (uint32_t) (hash >> HINDEX_HANDLE_BITS) & ((1u << (32 - HINDEX_HANDLE_BITS)) - 1);
}

static uint32_t slot_of(uint64_t hash, uint32_t handle) {
        return tag_of(hash) << HINDEX_HANDLE_BITS | (handle + 1);
}

int hindex_init(struct hindex *h, uint32_t capacity, const struct hindex_ops *ops, void *ctx) {
        uint32_t n = round_pow2(capacity + capacity / 2);

        h->slots = calloc(n, sizeof *h->slots);
        if (!h->slots)
                return -ENOMEM;
        h->mask = n - 1;
        h->count = 0;
        h->ops = ops;
        h->ctx = ctx;
        return 0;
}

void hindex_free(struct hindex *h) {
        free(h->slots);
        h->slots = NULL;
        h->mask = 0;
        h->count = 0;
}

uint32_t hindex_find(const struct hindex *h, uint64_t hash, const void *key) {
        uint32_t tag = tag_of(hash);

        for (uint32_t i = (uint32_t) hash & h->mask;; i = (i + 1) & h->mask) {
                uint32_t v = h->slots[i];
                if (v == 0)
                        return HINDEX_NONE;
                if (v >> HINDEX_HANDLE_BITS == tag && h->ops->equal((v & HANDLE_MASK) - 1, key, h->ctx))
                        return (v & HANDLE_MASK) - 1;
        }
}

static void place(uint32_t *slots, uint32_t mask, uint64_t hash, uint32_t slot) {
        uint32_t i = (uint32_t) hash & mask;

        while (slots[i] != 0)
                i = (i + 1) & mask;
        slots[i] = slot;
}

/* Rehashes into a table of n slots (a power of two). */
static int resize(struct hindex *h, uint32_t n) {
        uint32_t *slots;

        assert(n > h->mask + 1 && (n & (n - 1)) == 0);
        slots = calloc(n, sizeof *slots);
        if (!slots)
                return -ENOMEM;
        for (uint32_t i = 0; i <= h->mask; i++)
                if (h->slots[i])
                        place(slots, n - 1, h->ops->hash((h->slots[i] & HANDLE_MASK) - 1, h->ctx), h->slots[i]);
        free(h->slots);
        h->slots = slots;
        h->mask = n - 1;
        return 0;
}

static int grow(struct hindex *h) {
        uint32_t n = (h->mask + 1) * 2;

        return n == 0 ? -ENOMEM : resize(h, n);
}

int hindex_reserve(struct hindex *h, uint32_t capacity) {
        uint64_t need = (uint64_t) capacity * 4 / 3 + 1, n = h->mask + 1;

        if (capacity > HINDEX_MAX_HANDLE)
                return -ENOMEM;
        while (n < need)
                n *= 2;
        return n == (uint64_t) h->mask + 1 ? 0 : resize(h, (uint32_t) n);
}

int hindex_insert(struct hindex *h, uint64_t hash, uint32_t handle) {
        if (handle >= HINDEX_MAX_HANDLE)
                return -ENOMEM;
        if ((uint64_t) (h->count + 1) * 4 > (uint64_t) (h->mask + 1) * 3) {
                int r = grow(h);
                if (r < 0)
                        return r;
        }
        place(h->slots, h->mask, hash, slot_of(hash, handle));
        h->count++;
        return 0;
}

int hindex_remove(struct hindex *h, uint64_t hash, uint32_t handle) {
        uint32_t i = (uint32_t) hash & h->mask, j;

        for (;; i = (i + 1) & h->mask) {
                if (h->slots[i] == 0)
                        return -ENOENT;
                if ((h->slots[i] & HANDLE_MASK) == handle + 1)
                        break;
        }
        /* Backward shift: move later members of the run into the hole when
         * their home slot is not between the hole and their position. */
        for (j = i;;) {
                uint32_t home;

                h->slots[i] = 0;
                for (;;) {
                        j = (j + 1) & h->mask;
                        if (h->slots[j] == 0) {
                                h->count--;
                                return 0;
                        }
                        home = (uint32_t) h->ops->hash((h->slots[j] & HANDLE_MASK) - 1, h->ctx) & h->mask;
                        /* Stay if home lies cyclically in (i, j]. */
                        if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
                                continue;
                        break;
                }
                h->slots[i] = h->slots[j];
                i = j;
        }
}
