/* The daemon's clock: what "now" means for sessions.
 *
 * Session times are Unix milliseconds (created_at, last_activity, the
 * end...), stored as such and compared with "now" (clock_now_ms(), the
 * engine's clock; clock_now() is the same in whole seconds, floored, for
 * what keeps seconds). If "now" were the wall clock read
 * on every request, an administrator's `date -s`, a bad NTP step or a VM
 * resumed from a snapshot would end every session at once (a jump forward
 * past the idle timeout) or bring ended ones back (a jump back). So the
 * wall clock is read once, at start, and from then on the daemon's now is
 *
 *     wall clock at start + monotonic time elapsed since start
 *
 * (CLOCK_MONOTONIC never jumps). A jump of the wall clock while the daemon
 * runs changes nothing; the next start reads the wall clock anew (and a
 * large jump then applies, as it must: the daemon cannot know which clock
 * was wrong). A slow drift between the two clocks over a long uptime is
 * the price, at most seconds per day with NTP slewing.
 *
 * Everything in the daemon that compares with session times uses
 * clock_now() or clock_now_ms(); timers that only measure intervals use
 * libuv's monotonic loop time directly.
 */
#pragma once

#include <stdint.h>

/* Anchors the clock: reads the wall clock and the monotonic clock. Called
 * once at start; the first clock_now() anchors it if nobody did. */
void clock_start(void);

/* Unix seconds by the rule above. */
int64_t clock_now(void);

/* Unix milliseconds by the rule above. */
int64_t clock_now_ms(void);
