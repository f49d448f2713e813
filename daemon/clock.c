/* The daemon's clock: see clock.h for the rule and why.
 *
 * Two readings taken together at start (CLOCK_REALTIME, CLOCK_MONOTONIC);
 * afterwards only the monotonic clock is read. The anchor is set from the
 * loop thread before any other thread starts; worker threads that want
 * "now" get it passed from the loop, so no lock is needed.
 */
#include "clock.h"

#include <stdbool.h>
#include <time.h>

static struct {
        bool set;
        int64_t wall_ms; /* CLOCK_REALTIME at start, ms */
        int64_t mono_ms; /* CLOCK_MONOTONIC at start, ms */
} anchor;

static int64_t read_ms(clockid_t id) {
        struct timespec ts;

        (void) clock_gettime(id, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void clock_start(void) {
        anchor.wall_ms = read_ms(CLOCK_REALTIME);
        anchor.mono_ms = read_ms(CLOCK_MONOTONIC);
        anchor.set = true;
}

int64_t clock_now_ms(void) {
        if (!anchor.set)
                clock_start();
        return anchor.wall_ms + (read_ms(CLOCK_MONOTONIC) - anchor.mono_ms);
}

int64_t clock_now(void) {
        int64_t ms = clock_now_ms();

        /* Floor, also for times before 1970 (a test clock). */
        return ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
}
