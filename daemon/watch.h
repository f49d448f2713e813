/* Watch streams: io.sessiond.Session.Watch.
 *
 * A watcher follows one session and tells its client, as `continues`
 * replies, what happens to it: sync (the sync state changed), platform (it
 * switched platform), warning (expires_in reached warning_threshold), and as
 * the final reply ended (it ended or stopped being honoured) or rotated.
 * The first reply is a "state" snapshot: the session, and its sync version
 * and data when cross-tab sync is on.
 */
#pragma once

struct call;
struct daemon;

/* Answers the call: an error, or the first reply of the stream (the call
 * then stays open until the session ends or the client goes away). The
 * caller has checked that the call wants `more`. */
void watch_start(struct daemon *d, struct call *c, const char *token);
