/* What the fuzz targets share: the libFuzzer entry point, an assertion that
 * survives NDEBUG, and a tiny generator of choices drawn from the input.
 *
 * Each target (fuzz-<name>.c) is one LLVMFuzzerTestOneInput(). It is linked
 * two ways: with libFuzzer (clang, -Dfuzz=true) for the long runs, and with
 * regress-main.c into a plain program that runs it over the reproducers and
 * the seed corpus, so that every build (gcc too) keeps them as tests.
 *
 * A target must be deterministic: the same bytes take the same path, or a
 * reproducer would not reproduce. Choices such as chunk sizes are therefore
 * drawn from the input itself (fuzz_rng), never from a clock or rand().
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A property that does not hold is a finding, like a crash: abort() so that
 * libFuzzer saves the input and the regression runner fails. */
#define fuzz_assert(expr)                                                                                  \
        do {                                                                                               \
                if (!(expr)) {                                                                             \
                        fprintf(stderr, "%s:%d: property does not hold: %s\n", __FILE__, __LINE__, #expr); \
                        abort();                                                                           \
                }                                                                                          \
        } while (0)

/* xorshift32, seeded from input bytes: cheap, deterministic choices. */
struct fuzz_rng {
        uint32_t state;
};

static inline void fuzz_rng_init(struct fuzz_rng *g, uint32_t seed) {
        g->state = seed * 2654435761u + 0x9e3779b9u;
        if (g->state == 0)
                g->state = 1;
}

static inline uint32_t fuzz_rng_next(struct fuzz_rng *g) {
        uint32_t x = g->state;

        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        g->state = x;
        return x;
}

/* A number in [lo, hi]. */
static inline size_t fuzz_rng_range(struct fuzz_rng *g, size_t lo, size_t hi) {
        return lo + (size_t) fuzz_rng_next(g) % (hi - lo + 1);
}
