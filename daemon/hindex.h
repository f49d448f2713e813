/* An open-addressing hash index of 32-bit handles.
 *
 * The engine keeps its sessions and users in arrays and refers to them by
 * index ("handle"). This index maps keys to those handles without storing
 * keys or pointers itself: a slot is 4 bytes (26 bits of handle, 6 bits of
 * hash), so a million sessions cost 8 MiB of index at most. The caller
 * supplies how to hash a handle's key and how to compare it with a key
 * being looked up (the token index compares in constant time).
 *
 * Linear probing, load factor at most 3/4 (then the table doubles),
 * deletion by backward shift (no tombstones, so lookups of absent keys stay
 * short).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define HINDEX_NONE UINT32_MAX
/* Handles are below 2^26 (67 million); the other 6 bits of a slot carry
 * hash bits that spare most key comparisons. */
#define HINDEX_HANDLE_BITS 26
#define HINDEX_MAX_HANDLE ((1u << HINDEX_HANDLE_BITS) - 1)

struct hindex_ops {
        /* Hash of the key of an element already in the index. */
        uint64_t (*hash)(uint32_t handle, void *ctx);
        /* Does the element's key equal `key`? */
        bool (*equal)(uint32_t handle, const void *key, void *ctx);
};

struct hindex {
        uint32_t *slots; /* handle + 1; 0 is empty */
        uint32_t mask;
        uint32_t count;
        const struct hindex_ops *ops;
        void *ctx;
};

int hindex_init(struct hindex *h, uint32_t capacity, const struct hindex_ops *ops, void *ctx);
/* Makes room for `capacity` handles in all, so that inserting up to that
 * many never rehashes (a rehash hashes every member again). 0 or -ENOMEM. */
int hindex_reserve(struct hindex *h, uint32_t capacity);
void hindex_free(struct hindex *h);

/* The handle whose key equals `key` (with hash `hash`), or HINDEX_NONE. */
uint32_t hindex_find(const struct hindex *h, uint64_t hash, const void *key);
/* Adds a handle (its key must not be present). Returns 0, or -ENOMEM (also
 * for a handle of HINDEX_MAX_HANDLE or more). */
int hindex_insert(struct hindex *h, uint64_t hash, uint32_t handle);
/* Removes a handle. Returns 0 or -ENOENT. */
int hindex_remove(struct hindex *h, uint64_t hash, uint32_t handle);
