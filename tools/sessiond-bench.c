/* sessiond-bench: a load generator for sessiond's Varlink socket.
 *
 * It measures what a web application sees: -c connections, each with exactly
 * one request in flight (no pipelining, like redis-benchmark's default), so
 * the rate is bounded by the daemon's latency and the report's percentiles
 * are the latencies a request really waited for.
 *
 * A run has four phases, separated by barriers (every connection idle):
 *   connect  all connections are opened first;
 *   setup    the population of --sessions sessions is created with pipelined
 *            Create calls (a window of BENCH_SETUP_WINDOW per connection),
 *            which is how a million sessions are made in seconds; their
 *            tokens are kept for validate and mixed;
 *   warmup   --warmup requests of the chosen operation, not recorded;
 *   timed    -n requests, each latency recorded (bench-stats.h), Varlink
 *            error replies counted by name, the client's own CPU time taken
 *            with getrusage() so a saturated client shows in the report.
 *
 * The parameters are what a web application sends: user ids spread over
 * --users users (by default a million, so the per-user limit is rarely hit),
 * and a client object (user agent, IP, Accept-Language, Accept-Encoding)
 * derived from the user, so a validation carries the same fingerprint as the
 * creation. Mixed load is 90% Validate, 8% Create, 2% Destroy over a live pool
 * of tokens: creates join it, destroys leave it, and a token is destroyed
 * only while no validation of it is in flight, so a correct daemon answers
 * every request of a mixed run without an error.
 *
 * To stay cheaper than the daemon, requests are formatted with snprintf into
 * a buffer per connection and written with uv_try_write() (one syscall), and
 * replies are framed by libsessiond's varlink_reader and scanned for the
 * error name or the token only (bench-scan.h) instead of being parsed.
 *
 * A population can outlive a run: --save-tokens writes it (one "USER TOKEN"
 * line per session, after the setup), --load-tokens reads it instead of
 * creating one, so several runs (or a run after a daemon restart) validate
 * the same million sessions without creating them again; -n 0 runs the
 * setup only.
 *
 * A script can ask for the latencies of one stretch of the run (say, while it
 * makes the daemon clean up): SIGUSR1 opens a window and the next SIGUSR1
 * closes it; every timed request sent or answered while a window is open is
 * also recorded apart, and the report adds its percentiles, for all windows
 * together and for each one (a request sent in one window and answered
 * after it counts for the window it was sent in). SIGUSR2 ends the timed
 * phase early: no request is sent after it, those in flight are answered,
 * and the report covers the requests done (so a script can keep a load
 * running for as long as its own work takes, with -n as a ceiling).
 *
 * Output: a report for people on stdout; with --json its last line is one
 * JSON object (op, requests, rps, p50_us, p99_us, errors, ...). Progress
 * notes go to stderr ("sessiond-bench: timed phase started" lets a script
 * act while the load runs). Exit status: 0 when the run completed (error
 * replies are results, not failures), 1 when it could not (no daemon, a
 * closed connection, a malformed reply, a failed setup), 2 on bad usage.
 */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <uv.h>

#include "sessiond/varlink.h"

#include "bench-scan.h"
#include "bench-stats.h"

#define BENCH_REQUEST_MAX 1024        /* one request's text, NUL included */
#define BENCH_SETUP_WINDOW 64         /* creates in flight per connection during setup */
#define BENCH_READ_SIZE 65536         /* room offered to each read */
#define BENCH_MAX_REPLY (1024 * 1024) /* a longer reply is a protocol failure */
#define BENCH_DESTROY_TRIES 8         /* picks to find a token with no validation in flight */
#define BENCH_DEFAULT_SOCKET "/run/sessiond/sessiond.sock"
#define BENCH_WINDOW_ERROR (UINT32_C(1) << 31) /* flag in bench.window_of */

enum bench_op { BENCH_OP_CREATE, BENCH_OP_VALIDATE, BENCH_OP_MIXED };
enum bench_kind { BENCH_KIND_CREATE, BENCH_KIND_VALIDATE, BENCH_KIND_DESTROY, _BENCH_KIND_MAX };
enum bench_phase { BENCH_PHASE_CONNECT, BENCH_PHASE_SETUP, BENCH_PHASE_WARMUP, BENCH_PHASE_TIMED, BENCH_PHASE_DONE };

static const char *const op_names[] = {"create", "validate", "mixed"};

/* Realistic user agents; a user keeps one, so fingerprints stay stable. */
static const char *const user_agents[] = {
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
        "Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 "
        "Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
};

struct bench_options {
        const char *socket_path;
        unsigned connections;
        uint64_t requests;
        enum bench_op op;
        uint64_t sessions;
        bool sessions_set;
        uint64_t warmup;
        const char *save_tokens;
        const char *load_tokens;
        uint32_t users;
        uint64_t seed;
        unsigned timeout_s;
        bool json;
};

/* A token of the population: its text lives in the arena. */
struct bench_token {
        uint64_t offset;
        uint32_t user;
        uint16_t len;
        uint16_t inflight; /* validations sent, not yet answered */
};

struct bench;

struct bench_conn {
        uv_pipe_t pipe;
        uv_connect_t connect_req;
        struct bench *bench;
        struct varlink_reader reader;

        /* setup: the users of the pipelined creates in flight, oldest first */
        uint32_t ring[BENCH_SETUP_WINDOW];
        unsigned ring_head;
        unsigned inflight;

        /* warmup and timed: the one request in flight */
        enum bench_kind kind;
        uint32_t user;  /* create: the user it is for */
        uint32_t token; /* validate, destroy: the token's index */
        uint64_t sent_ns;
        bool sent_in_window;
        unsigned sent_window; /* the window it was sent in (1, 2, ...), 0: none */
        char buf[BENCH_REQUEST_MAX];
};

struct bench_write {
        uv_write_t req;
        char data[];
};

struct bench {
        struct bench_options opt;
        uv_loop_t *loop;
        struct bench_conn *conns;
        unsigned connected;
        enum bench_phase phase;

        /* the population */
        struct bench_token *tokens;
        size_t n_tokens, cap_tokens;
        char *arena;
        size_t arena_used, arena_size;
        uint32_t *live; /* indices into tokens of the sessions still alive */
        size_t n_live;
        size_t n_loaded; /* read with --load-tokens */

        /* the current phase */
        uint64_t target, issued, completed;

        uint64_t rng;
        struct bench_latency latency;
        struct bench_errors errors;
        uint64_t kind_count[_BENCH_KIND_MAX];
        uint64_t setup_start_ns, setup_end_ns, timed_start_ns, timed_end_ns;
        struct rusage ru_start, ru_end;

        /* the window opened and closed by SIGUSR1 */
        uv_signal_t window_signal;
        bool window_open;
        unsigned windows;
        struct bench_latency window_latency;
        uint32_t *window_of; /* per window sample: its window, BENCH_WINDOW_ERROR when answered with an error */
        uint64_t window_errors;
        uv_signal_t stop_signal; /* SIGUSR2: end the timed phase now */
        bool stopping;

        uv_timer_t watchdog;
        uint64_t progress, watchdog_progress;
        unsigned stalled_s;

        int failed;
        char failure[512];
};

static void bench_advance(struct bench *b);
static int conn_issue(struct bench_conn *c);

/* ---- helpers ------------------------------------------------------------- */

/* xorshift64*: fast, and good enough to pick users, tokens and operations. */
static uint64_t bench_random(struct bench *b) {
        b->rng ^= b->rng >> 12;
        b->rng ^= b->rng << 25;
        b->rng ^= b->rng >> 27;
        return b->rng * UINT64_C(2685821657736338717);
}

static void bench_close_all(struct bench *b) {
        for (unsigned i = 0; i < b->opt.connections; i++)
                if (!uv_is_closing((uv_handle_t *) &b->conns[i].pipe))
                        uv_close((uv_handle_t *) &b->conns[i].pipe, NULL);
        if (!uv_is_closing((uv_handle_t *) &b->watchdog))
                uv_close((uv_handle_t *) &b->watchdog, NULL);
        if (!uv_is_closing((uv_handle_t *) &b->window_signal))
                uv_close((uv_handle_t *) &b->window_signal, NULL);
        if (!uv_is_closing((uv_handle_t *) &b->stop_signal))
                uv_close((uv_handle_t *) &b->stop_signal, NULL);
}

static void bench_fail(struct bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bench_fail(struct bench *b, const char *fmt, ...) {
        va_list ap;

        if (b->failed)
                return;
        b->failed = 1;
        va_start(ap, fmt);
        vsnprintf(b->failure, sizeof b->failure, fmt, ap);
        va_end(ap);
        b->phase = BENCH_PHASE_DONE;
        bench_close_all(b);
}

/* A failed read or write: a peer that went away is named as such, whichever
 * of EOF, EPIPE or ECONNRESET the kernel reported first. */
static void bench_fail_io(struct bench *b, const char *what, int r) {
        if (r == UV_EOF || r == UV_EPIPE || r == UV_ECONNRESET)
                bench_fail(b, "the daemon closed a connection (%s while %s)",
                           r == UV_EOF ? "end of file" : uv_strerror(r), what);
        else
                bench_fail(b, "%s %s: %s", what, b->opt.socket_path, uv_strerror(r));
}

static double ns_to_s(uint64_t ns) {
        return (double) ns / 1e9;
}

static double ns_to_us(uint64_t ns) {
        return (double) ns / 1e3;
}

static double timeval_s(const struct timeval *tv) {
        return (double) tv->tv_sec + (double) tv->tv_usec / 1e6;
}

/* ---- the population -------------------------------------------------------- */

static int population_reserve(struct bench *b, size_t n) {
        struct bench_token *t;
        uint32_t *l;

        if (n <= b->cap_tokens)
                return 0;
        if (n > UINT32_MAX)
                return -E2BIG;
        t = reallocarray(b->tokens, n, sizeof *t);
        if (!t)
                return -ENOMEM;
        b->tokens = t;
        l = reallocarray(b->live, n, sizeof *l);
        if (!l)
                return -ENOMEM;
        b->live = l;
        b->cap_tokens = n;
        return 0;
}

static int population_add(struct bench *b, const char *token, size_t len, uint32_t user) {
        struct bench_token *t;
        int r;

        if (len == 0 || len > UINT16_MAX)
                return -EBADMSG;
        if (b->n_tokens >= b->cap_tokens) {
                r = population_reserve(b, b->cap_tokens > 0 ? b->cap_tokens * 2 : 1024);
                if (r < 0)
                        return r;
        }
        if (b->arena_size - b->arena_used < len) {
                size_t n = b->arena_size > 0 ? b->arena_size : 65536;
                char *p;

                while (n - b->arena_used < len)
                        n *= 2;
                p = realloc(b->arena, n);
                if (!p)
                        return -ENOMEM;
                b->arena = p;
                b->arena_size = n;
        }

        memcpy(b->arena + b->arena_used, token, len);
        t = &b->tokens[b->n_tokens];
        *t = (struct bench_token){.offset = b->arena_used, .user = user, .len = (uint16_t) len};
        b->arena_used += len;
        b->live[b->n_live++] = (uint32_t) b->n_tokens;
        b->n_tokens++;
        return 0;
}

/* Writes the population, one "USER TOKEN" line per session, to a temporary
 * file renamed over path, so a reader never sees half a file. */
static int population_save(const struct bench *b, const char *path) {
        char tmp[4096];
        FILE *f;
        int r = 0;

        if ((size_t) snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
                return -ENAMETOOLONG;
        f = fopen(tmp, "we");
        if (!f)
                return -errno;
        for (size_t i = 0; i < b->n_live && r == 0; i++) {
                const struct bench_token *t = &b->tokens[b->live[i]];

                if (fprintf(f, "%" PRIu32 " %.*s\n", t->user, (int) t->len, b->arena + t->offset) < 0)
                        r = -EIO;
        }
        if (fclose(f) != 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                (void) unlink(tmp);
        return r;
}

/* Reads a population written by population_save(). Reports a bad line
 * itself (file and line number) and returns -EBADMSG for it. */
static int population_load(struct bench *b, const char *path) {
        FILE *f = fopen(path, "re");
        char *line = NULL;
        size_t allocated = 0, lineno = 0;
        ssize_t n;
        int r = 0;

        if (!f)
                return -errno;
        while (r == 0 && (n = getline(&line, &allocated, f)) >= 0) {
                unsigned long long user;
                char *end, *token;
                size_t len;

                lineno++;
                if (n > 0 && line[n - 1] == '\n')
                        line[--n] = '\0';
                errno = 0;
                user = strtoull(line, &end, 10);
                token = end + 1;
                len = *end == ' ' ? strlen(token) : 0;
                if (errno != 0 || end == line || *end != ' ' || user > UINT32_MAX || len == 0 ||
                    strcspn(token, " \"\\") != len) {
                        fprintf(stderr, "sessiond-bench: %s:%zu: not a \"USER TOKEN\" line\n", path, lineno);
                        r = -EBADMSG;
                        break;
                }
                r = population_add(b, token, len, (uint32_t) user);
        }
        if (r == 0 && ferror(f))
                r = -EIO;
        free(line);
        fclose(f);
        if (r == 0 && b->n_tokens == 0) {
                fprintf(stderr, "sessiond-bench: %s holds no tokens\n", path);
                r = -EBADMSG;
        }
        return r;
}

/* ---- requests ------------------------------------------------------------ */

static int format_client(char *p, size_t size, uint32_t user) {
        return snprintf(p, size,
                        "\"client\":{\"user_agent\":\"%s\",\"ip\":\"10.%u.%u.%u\","
                        "\"accept_language\":\"en-US,en;q=0.9\",\"accept_encoding\":\"gzip, deflate, br\"}",
                        user_agents[user % (sizeof user_agents / sizeof user_agents[0])], (user >> 16) & 0xffu,
                        (user >> 8) & 0xffu, user & 0xffu);
}

/* Formats one request into p (NUL included in the returned length, since
 * the NUL is Varlink's message terminator). */
static int format_request(const struct bench *b, enum bench_kind kind, uint32_t user, uint32_t token, char *p,
                          size_t size) {
        const struct bench_token *t = kind == BENCH_KIND_CREATE ? NULL : &b->tokens[token];
        char client[384];
        int n;

        if (format_client(client, sizeof client, t ? t->user : user) >= (int) sizeof client)
                return -ENOBUFS;

        switch (kind) {
        case BENCH_KIND_CREATE:
                n = snprintf(p, size,
                             "{\"method\":\"io.sessiond.Session.Create\",\"parameters\":"
                             "{\"user_id\":\"bench-user-%" PRIu32 "\",%s}}",
                             user, client);
                break;
        case BENCH_KIND_VALIDATE:
                n = snprintf(p, size,
                             "{\"method\":\"io.sessiond.Session.Validate\",\"parameters\":"
                             "{\"token\":\"%.*s\",%s}}",
                             (int) t->len, b->arena + t->offset, client);
                break;
        case BENCH_KIND_DESTROY:
                n = snprintf(p, size,
                             "{\"method\":\"io.sessiond.Session.Destroy\",\"parameters\":"
                             "{\"token\":\"%.*s\"}}",
                             (int) t->len, b->arena + t->offset);
                break;
        default:
                assert(!"unknown request kind");
                return -EINVAL;
        }
        if (n < 0 || (size_t) n + 1 > size)
                return -ENOBUFS;
        return n + 1;
}

static void on_write(uv_write_t *req, int status) {
        struct bench_write *w = (struct bench_write *) req;
        struct bench_conn *c = req->handle->data;

        if (status < 0 && status != UV_ECANCELED)
                bench_fail_io(c->bench, "writing to", status);
        free(w);
}

/* Queues a copy of data for a uv_write (what uv_try_write could not send). */
static int conn_write_copy(struct bench_conn *c, const char *data, size_t len) {
        struct bench_write *w;
        uv_buf_t buf;
        int r;

        w = malloc(sizeof *w + len);
        if (!w)
                return -ENOMEM;
        memcpy(w->data, data, len);
        buf = uv_buf_init(w->data, (unsigned) len);
        r = uv_write(&w->req, (uv_stream_t *) &c->pipe, &buf, 1, on_write);
        if (r < 0) {
                free(w);
                return r;
        }
        return 0;
}

/* Sends in one write(2) when the socket takes it, queues the rest otherwise. */
static int conn_send(struct bench_conn *c, const char *data, size_t len) {
        uv_buf_t buf = uv_buf_init((char *) data, (unsigned) len);
        int r;

        r = uv_try_write((uv_stream_t *) &c->pipe, &buf, 1);
        if (r == (int) len)
                return 0;
        if (r < 0 && r != UV_EAGAIN)
                return r;
        if (r < 0)
                r = 0;
        return conn_write_copy(c, data + r, len - (size_t) r);
}

/* Setup: tops up the connection's window of pipelined creates, in one write. */
static int conn_setup_refill(struct bench_conn *c) {
        struct bench *b = c->bench;
        unsigned room = BENCH_SETUP_WINDOW - c->inflight;
        char *batch;
        size_t used = 0;
        int r;

        if (room == 0 || b->issued >= b->target)
                return 0;
        batch = malloc((size_t) room * BENCH_REQUEST_MAX);
        if (!batch)
                return -ENOMEM;
        while (room > 0 && b->issued < b->target) {
                uint32_t user = (uint32_t) (b->issued % b->opt.users);
                int n = format_request(b, BENCH_KIND_CREATE, user, 0, batch + used, BENCH_REQUEST_MAX);

                if (n < 0) {
                        free(batch);
                        return n;
                }
                used += (size_t) n;
                c->ring[(c->ring_head + c->inflight) % BENCH_SETUP_WINDOW] = user;
                c->inflight++;
                b->issued++;
                room--;
        }
        r = conn_send(c, batch, used);
        free(batch);
        return r;
}

/* Picks the next operation of the current run. */
static enum bench_kind bench_pick_kind(struct bench *b) {
        uint64_t x;

        switch (b->opt.op) {
        case BENCH_OP_CREATE:
                return BENCH_KIND_CREATE;
        case BENCH_OP_VALIDATE:
                return BENCH_KIND_VALIDATE;
        case BENCH_OP_MIXED:
                if (b->n_live == 0)
                        return BENCH_KIND_CREATE;
                x = bench_random(b) % 100;
                return x < 90 ? BENCH_KIND_VALIDATE : x < 98 ? BENCH_KIND_CREATE : BENCH_KIND_DESTROY;
        }
        assert(!"unknown operation");
        return BENCH_KIND_VALIDATE;
}

/* Warmup and timed: sends the connection's next request, if the phase has one left. */
static int conn_issue(struct bench_conn *c) {
        struct bench *b = c->bench;
        enum bench_kind kind;
        uint32_t user = 0, token = 0;
        int n;

        assert(c->inflight == 0);
        if (b->issued >= b->target)
                return 0;

        kind = bench_pick_kind(b);
        if (kind == BENCH_KIND_DESTROY) {
                size_t pos = 0;
                bool found = false;

                /* Only a token no validation is waiting on, so that no reply
                 * depends on which connection the daemon serves first. */
                for (unsigned i = 0; i < BENCH_DESTROY_TRIES && !found; i++) {
                        pos = bench_random(b) % b->n_live;
                        found = b->tokens[b->live[pos]].inflight == 0;
                }
                if (found) {
                        token = b->live[pos];
                        b->live[pos] = b->live[--b->n_live];
                } else
                        kind = BENCH_KIND_VALIDATE;
        }
        if (kind == BENCH_KIND_VALIDATE) {
                token = b->live[bench_random(b) % b->n_live];
                b->tokens[token].inflight++;
        } else if (kind == BENCH_KIND_CREATE)
                user = (uint32_t) (bench_random(b) % b->opt.users);

        n = format_request(b, kind, user, token, c->buf, sizeof c->buf);
        if (n < 0)
                return n;
        c->kind = kind;
        c->user = user;
        c->token = token;
        c->inflight = 1;
        b->issued++;
        c->sent_in_window = b->window_open;
        c->sent_window = b->window_open ? b->windows : 0;
        c->sent_ns = uv_hrtime();
        return conn_send(c, c->buf, (size_t) n);
}

/* ---- replies ------------------------------------------------------------- */

static const char *const error_path[] = {"error"};
static const char *const token_path[] = {"parameters", "token"};

static int reply_token(const char *msg, size_t len, const char **token, size_t *token_len) {
        int r = bench_scan_string(msg, len, token_path, 2, token, token_len);

        return r == 1 ? 0 : r < 0 ? r : -ENOENT;
}

static void conn_setup_reply(struct bench_conn *c, const char *msg, size_t len, const char *error, size_t error_len) {
        struct bench *b = c->bench;
        const char *token;
        size_t token_len;
        uint32_t user;
        int r;

        if (c->inflight == 0) {
                bench_fail(b, "setup: a reply nobody asked for: %.200s", msg);
                return;
        }
        user = c->ring[c->ring_head];
        c->ring_head = (c->ring_head + 1) % BENCH_SETUP_WINDOW;
        c->inflight--;

        if (error) {
                bench_fail(b, "setup: Create failed with %.*s: %.300s", (int) error_len, error, msg);
                return;
        }
        r = reply_token(msg, len, &token, &token_len);
        if (r >= 0)
                r = population_add(b, token, token_len, user);
        if (r < 0) {
                bench_fail(b, "setup: cannot take the token of a Create reply (%s): %.300s", strerror(-r), msg);
                return;
        }

        b->completed++;
        if (b->completed == b->target) {
                bench_advance(b);
                return;
        }
        if (c->inflight <= BENCH_SETUP_WINDOW / 2) {
                r = conn_setup_refill(c);
                if (r < 0)
                        bench_fail_io(b, "writing to", r);
        }
}

static void conn_run_reply(struct bench_conn *c, const char *msg, size_t len, const char *error, size_t error_len) {
        struct bench *b = c->bench;
        uint64_t now = uv_hrtime();
        int r;

        if (c->inflight != 1) {
                bench_fail(b, "a reply nobody asked for: %.200s", msg);
                return;
        }
        c->inflight = 0;

        if (b->phase == BENCH_PHASE_TIMED) {
                r = bench_latency_add(&b->latency, now - c->sent_ns);
                assert(r == 0);
                b->kind_count[c->kind]++;
                if (error)
                        bench_errors_add(&b->errors, error, error_len);
                if (c->sent_in_window || b->window_open) {
                        uint32_t w = c->sent_in_window ? c->sent_window : b->windows;

                        b->window_of[b->window_latency.n] = w | (error ? BENCH_WINDOW_ERROR : 0);
                        r = bench_latency_add(&b->window_latency, now - c->sent_ns);
                        assert(r == 0);
                        if (error)
                                b->window_errors++;
                }
        }

        switch (c->kind) {
        case BENCH_KIND_VALIDATE:
                assert(b->tokens[c->token].inflight > 0);
                b->tokens[c->token].inflight--;
                break;
        case BENCH_KIND_CREATE:
                if (b->opt.op == BENCH_OP_MIXED && !error) {
                        const char *token;
                        size_t token_len;

                        r = reply_token(msg, len, &token, &token_len);
                        if (r >= 0)
                                r = population_add(b, token, token_len, c->user);
                        if (r < 0) {
                                bench_fail(b, "cannot take the token of a Create reply (%s): %.300s", strerror(-r),
                                           msg);
                                return;
                        }
                }
                break;
        case BENCH_KIND_DESTROY:
        default:
                break;
        }

        b->completed++;
        if (b->completed == b->target || (b->stopping && b->phase == BENCH_PHASE_TIMED && b->completed == b->issued)) {
                bench_advance(b);
                return;
        }
        if (b->stopping && b->phase == BENCH_PHASE_TIMED)
                return; /* the others in flight are answered, nothing more is sent */
        r = conn_issue(c);
        if (r < 0)
                bench_fail_io(b, "writing to", r);
}

static void conn_handle_reply(struct bench_conn *c, const char *msg, size_t len) {
        struct bench *b = c->bench;
        const char *error = NULL;
        size_t error_len = 0;
        int r;

        b->progress++;
        r = bench_scan_string(msg, len, error_path, 1, &error, &error_len);
        if (r < 0) {
                bench_fail(b, "malformed reply: %.300s", msg);
                return;
        }
        if (r == 0)
                error = NULL;

        switch (b->phase) {
        case BENCH_PHASE_SETUP:
                conn_setup_reply(c, msg, len, error, error_len);
                break;
        case BENCH_PHASE_WARMUP:
        case BENCH_PHASE_TIMED:
                conn_run_reply(c, msg, len, error, error_len);
                break;
        default:
                bench_fail(b, "a reply outside of a phase: %.200s", msg);
                break;
        }
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
        struct bench_conn *c = handle->data;
        char *p;
        size_t room;

        if (varlink_reader_space(&c->reader, BENCH_READ_SIZE, &p, &room) < 0) {
                *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
                return;
        }
        *buf = uv_buf_init(p, (unsigned) (room > UINT32_MAX ? UINT32_MAX : room));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
        struct bench_conn *c = stream->data;
        struct bench *b = c->bench;

        if (nread == 0)
                return;
        if (nread < 0) {
                bench_fail_io(b, "reading from", (int) nread);
                return;
        }

        varlink_reader_commit(&c->reader, (size_t) nread);
        while (b->phase != BENCH_PHASE_DONE) {
                const char *msg;
                size_t len;
                int r;

                r = varlink_reader_next(&c->reader, &msg, &len);
                if (r < 0) {
                        bench_fail(b, "a reply longer than %d bytes", BENCH_MAX_REPLY);
                        return;
                }
                if (r == 0)
                        break;
                conn_handle_reply(c, msg, len);
        }
}

/* ---- phases ---------------------------------------------------------------- */

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...) {
        va_list ap;

        fputs("sessiond-bench: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        fflush(stderr);
}

static void bench_issue_all(struct bench *b) {
        for (unsigned i = 0; i < b->opt.connections && !b->failed; i++) {
                struct bench_conn *c = &b->conns[i];
                int r;

                assert(c->inflight == 0);
                r = b->phase == BENCH_PHASE_SETUP ? conn_setup_refill(c) : conn_issue(c);
                if (r < 0)
                        bench_fail_io(b, "writing to", r);
        }
}

/* Called when the current phase is complete (every connection idle): moves
 * on to the next phase that has work, or ends the run. */
static void bench_advance(struct bench *b) {
        uint64_t now = uv_hrtime();

        b->issued = b->completed = 0;
        switch (b->phase) {
        case BENCH_PHASE_CONNECT:
                if (b->opt.sessions > 0) {
                        b->phase = BENCH_PHASE_SETUP;
                        b->target = b->opt.sessions;
                        b->setup_start_ns = now;
                        note("creating %" PRIu64 " sessions (pipelined)", b->opt.sessions);
                        bench_issue_all(b);
                        return;
                }
                /* fall through */
        case BENCH_PHASE_SETUP:
                if (b->phase == BENCH_PHASE_SETUP) {
                        int r;

                        b->setup_end_ns = now;
                        note("setup: %" PRIu64 " sessions created in %.3f s", b->opt.sessions,
                             ns_to_s(now - b->setup_start_ns));
                        if (b->opt.save_tokens) {
                                r = population_save(b, b->opt.save_tokens);
                                if (r < 0) {
                                        bench_fail(b, "cannot write the tokens to %s: %s", b->opt.save_tokens,
                                                   strerror(-r));
                                        return;
                                }
                                note("tokens written to %s", b->opt.save_tokens);
                        }
                }
                if (b->opt.warmup > 0) {
                        b->phase = BENCH_PHASE_WARMUP;
                        b->target = b->opt.warmup;
                        note("warmup: %" PRIu64 " requests", b->opt.warmup);
                        bench_issue_all(b);
                        return;
                }
                /* fall through */
        case BENCH_PHASE_WARMUP:
                b->phase = BENCH_PHASE_TIMED;
                b->target = b->opt.requests;
                note("timed phase started");
                (void) getrusage(RUSAGE_SELF, &b->ru_start);
                b->timed_start_ns = uv_hrtime();
                if (b->target > 0) {
                        bench_issue_all(b);
                        return;
                }
                /* -n 0: the setup was all there was to do. */
                /* fall through */
        case BENCH_PHASE_TIMED:
                b->timed_end_ns = uv_hrtime();
                (void) getrusage(RUSAGE_SELF, &b->ru_end);
                b->phase = BENCH_PHASE_DONE;
                bench_close_all(b);
                return;
        case BENCH_PHASE_DONE:
                return;
        }
}

static void on_window_signal(uv_signal_t *handle, int signum) {
        struct bench *b = handle->data;
        size_t capacity = b->opt.requests > 0 ? b->opt.requests : 1;
        int r;

        if (!b->window_latency.ns) {
                r = bench_latency_init(&b->window_latency, capacity);
                b->window_of = calloc(capacity, sizeof *b->window_of);
                if (r < 0 || !b->window_of) {
                        bench_fail(b, "no memory for the window's latencies");
                        return;
                }
        }
        if (!b->window_open && b->windows >= BENCH_WINDOW_ERROR - 1) {
                note("too many windows: SIGUSR1 ignored");
                return;
        }
        b->window_open = !b->window_open;
        if (b->window_open)
                b->windows++;
        note("window %s", b->window_open ? "opened" : "closed");
}

static void on_stop_signal(uv_signal_t *handle, int signum) {
        struct bench *b = handle->data;

        (void) signum;
        if (b->stopping)
                return;
        b->stopping = true;
        note("stopping: the timed phase ends once the requests in flight are answered");
        /* In the timed phase with nothing in flight (a run between two
         * replies cannot be: every connection has one), end now. */
        if (b->phase == BENCH_PHASE_TIMED && b->completed == b->issued)
                bench_advance(b);
}

static void on_watchdog(uv_timer_t *timer) {
        struct bench *b = timer->data;

        if (b->progress != b->watchdog_progress) {
                b->watchdog_progress = b->progress;
                b->stalled_s = 0;
                return;
        }
        if (++b->stalled_s >= b->opt.timeout_s)
                bench_fail(b, "no reply from %s for %u s", b->opt.socket_path, b->opt.timeout_s);
}

static void on_connect(uv_connect_t *req, int status) {
        struct bench_conn *c = req->handle->data;
        struct bench *b = c->bench;
        int r;

        if (b->failed)
                return;
        if (status < 0) {
                bench_fail(b, "cannot connect to %s: %s", b->opt.socket_path, uv_strerror(status));
                return;
        }
        r = uv_read_start((uv_stream_t *) &c->pipe, on_alloc, on_read);
        if (r < 0) {
                bench_fail_io(b, "reading from", r);
                return;
        }
        b->progress++;
        if (++b->connected == b->opt.connections)
                bench_advance(b);
}

/* ---- the report -------------------------------------------------------------- */

/* One window's figures, from the samples recorded while windows were open
 * (before they are sorted). NULL on ENOMEM. */
static json_t *window_stats(const struct bench *b, uint32_t window) {
        struct bench_latency l = {};
        uint64_t errors = 0;
        size_t n = 0;
        json_t *o;

        for (size_t i = 0; i < b->window_latency.n; i++)
                n += (b->window_of[i] & ~BENCH_WINDOW_ERROR) == window;
        if (bench_latency_init(&l, n > 0 ? n : 1) < 0)
                return NULL;
        for (size_t i = 0; i < b->window_latency.n; i++)
                if ((b->window_of[i] & ~BENCH_WINDOW_ERROR) == window) {
                        (void) bench_latency_add(&l, b->window_latency.ns[i]);
                        errors += (b->window_of[i] & BENCH_WINDOW_ERROR) != 0;
                }
        bench_latency_finish(&l);
        o = json_pack("{s:I, s:I, s:f, s:f, s:f, s:I}", "window", (json_int_t) window, "requests", (json_int_t) l.n,
                      "p50_us", ns_to_us(bench_latency_percentile(&l, 50)), "p99_us",
                      ns_to_us(bench_latency_percentile(&l, 99)), "max_us", ns_to_us(bench_latency_max(&l)), "errors",
                      (json_int_t) errors);
        bench_latency_free(&l);
        return o;
}

/* Each window apart: printed, and returned as a JSON array (NULL on ENOMEM). */
static json_t *window_report(const struct bench *b) {
        json_t *list = json_array();

        for (uint32_t w = 1; list && w <= b->windows; w++) {
                json_t *o = window_stats(b, w);

                if (!o || json_array_append_new(list, o) < 0) {
                        json_decref(list);
                        return NULL;
                }
                printf("window %u: %" JSON_INTEGER_FORMAT " requests: p50 %.0f us, p99 %.0f us, max %.0f us, "
                       "errors %" JSON_INTEGER_FORMAT "\n",
                       w, json_integer_value(json_object_get(o, "requests")),
                       json_real_value(json_object_get(o, "p50_us")), json_real_value(json_object_get(o, "p99_us")),
                       json_real_value(json_object_get(o, "max_us")), json_integer_value(json_object_get(o, "errors")));
        }
        return list;
}

static void bench_report(struct bench *b) {
        struct bench_latency *l = &b->latency;
        uint64_t duration = b->timed_end_ns - b->timed_start_ns;
        double seconds = ns_to_s(duration > 0 ? duration : 1);
        double rps = (double) l->n / seconds;
        /* -n 0 times nothing: no rate, no share of a core. */
        double cpu_pct = l->n > 0 ? (timeval_s(&b->ru_end.ru_utime) - timeval_s(&b->ru_start.ru_utime) +
                                     timeval_s(&b->ru_end.ru_stime) - timeval_s(&b->ru_start.ru_stime)) /
                                            seconds * 100.0
                                  : 0.0;
        double user = timeval_s(&b->ru_end.ru_utime) - timeval_s(&b->ru_start.ru_utime);
        double sys = timeval_s(&b->ru_end.ru_stime) - timeval_s(&b->ru_start.ru_stime);
        double setup = b->opt.sessions > 0 ? ns_to_s(b->setup_end_ns - b->setup_start_ns) : 0;
        uint64_t p50, p90, p99, max, mean;
        json_t *each = NULL;

        bench_latency_finish(l);
        p50 = bench_latency_percentile(l, 50);
        p90 = bench_latency_percentile(l, 90);
        p99 = bench_latency_percentile(l, 99);
        max = bench_latency_max(l);
        mean = bench_latency_mean(l);

        printf("sessiond-bench: %s on %s, %u connections, one request in flight each\n", op_names[b->opt.op],
               b->opt.socket_path, b->opt.connections);
        if (b->n_loaded > 0)
                printf("setup:    %zu sessions read from %s\n", b->n_loaded, b->opt.load_tokens);
        if (b->opt.sessions > 0)
                printf("setup:    %" PRIu64 " sessions created in %.3f s (%.0f/s, pipelined)\n", b->opt.sessions, setup,
                       setup > 0 ? (double) b->opt.sessions / setup : 0.0);
        if (b->opt.warmup > 0)
                printf("warmup:   %" PRIu64 " requests (not counted)\n", b->opt.warmup);
        printf("requests: %zu (create %" PRIu64 ", validate %" PRIu64 ", destroy %" PRIu64 ")\n", l->n,
               b->kind_count[BENCH_KIND_CREATE], b->kind_count[BENCH_KIND_VALIDATE], b->kind_count[BENCH_KIND_DESTROY]);
        printf("errors:   %" PRIu64 "\n", b->errors.total);
        for (size_t i = 0; i < b->errors.n; i++)
                printf("          %s: %" PRIu64 "\n", b->errors.entry[i].name, b->errors.entry[i].count);
        if (b->errors.other > 0)
                printf("          (other): %" PRIu64 "\n", b->errors.other);
        printf("duration: %.3f s\n", seconds);
        printf("rps:      %.0f\n", rps);
        printf("latency:  p50 %.0f us, p90 %.0f us, p99 %.0f us, max %.0f us, mean %.0f us\n", ns_to_us(p50),
               ns_to_us(p90), ns_to_us(p99), ns_to_us(max), ns_to_us(mean));
        printf("client:   cpu %.2f s (user %.2f s, sys %.2f s) = %.0f%% of one core during the timed phase\n",
               user + sys, user, sys, cpu_pct);
        if (b->windows > 0) {
                each = window_report(b); /* before the samples are sorted */
                bench_latency_finish(&b->window_latency);
                printf("window:   %zu requests in %u window(s) marked by SIGUSR1: p50 %.0f us, p99 %.0f us, "
                       "max %.0f us, errors %" PRIu64 "\n",
                       b->window_latency.n, b->windows, ns_to_us(bench_latency_percentile(&b->window_latency, 50)),
                       ns_to_us(bench_latency_percentile(&b->window_latency, 99)),
                       ns_to_us(bench_latency_max(&b->window_latency)), b->window_errors);
        }

        if (b->opt.json) {
                json_t *errors = json_object(), *o;
                char *text;

                for (size_t i = 0; errors && i < b->errors.n; i++)
                        json_object_set_new(errors, b->errors.entry[i].name,
                                            json_integer((json_int_t) b->errors.entry[i].count));
                if (errors && b->errors.other > 0)
                        json_object_set_new(errors, "(other)", json_integer((json_int_t) b->errors.other));

                o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:f, s:f, "
                              "s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
                              "op", op_names[b->opt.op], "connections", (json_int_t) b->opt.connections, "requests",
                              (json_int_t) l->n, "sessions", (json_int_t) b->opt.sessions, "loaded_sessions",
                              (json_int_t) b->n_loaded, "warmup", (json_int_t) b->opt.warmup, "creates",
                              (json_int_t) b->kind_count[BENCH_KIND_CREATE], "validates",
                              (json_int_t) b->kind_count[BENCH_KIND_VALIDATE], "destroys",
                              (json_int_t) b->kind_count[BENCH_KIND_DESTROY], "live_sessions", (json_int_t) b->n_live,
                              "errors", (json_int_t) b->errors.total, "errors_by_name", errors, "duration_s", seconds,
                              "rps", rps, "p50_us", ns_to_us(p50), "p90_us", ns_to_us(p90), "p99_us", ns_to_us(p99),
                              "max_us", ns_to_us(max), "mean_us", ns_to_us(mean), "setup_s", setup, "client_user_s",
                              user, "client_sys_s", sys, "client_cpu_pct", cpu_pct);
                if (o && b->windows > 0) {
                        struct bench_latency *w = &b->window_latency;

                        json_object_set_new(o, "windows", json_integer(b->windows));
                        json_object_set_new(o, "window_requests", json_integer((json_int_t) w->n));
                        json_object_set_new(o, "window_errors", json_integer((json_int_t) b->window_errors));
                        json_object_set_new(o, "window_p50_us", json_real(ns_to_us(bench_latency_percentile(w, 50))));
                        json_object_set_new(o, "window_p99_us", json_real(ns_to_us(bench_latency_percentile(w, 99))));
                        json_object_set_new(o, "window_max_us", json_real(ns_to_us(bench_latency_max(w))));
                        json_object_set_new(o, "window_list", each ? json_incref(each) : json_array());
                }
                text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
                if (!text) {
                        fprintf(stderr, "sessiond-bench: out of memory writing the JSON report\n");
                        json_decref(o);
                        json_decref(each);
                        return;
                }
                puts(text);
                free(text);
                json_decref(o);
        }
        json_decref(each);
        fflush(stdout);
}

/* ---- options -------------------------------------------------------------- */

static void usage(FILE *f) {
        fputs("Usage: sessiond-bench [OPTIONS]\n"
              "\n"
              "Load generator for sessiond: -c connections, one request in flight on each.\n"
              "\n"
              "  -s, --socket PATH      the daemon's socket (default $SESSIOND_SOCKET or\n"
              "                         " BENCH_DEFAULT_SOCKET ")\n"
              "  -c, --connections N    concurrent connections (default 50)\n"
              "  -n, --requests N       requests in the timed phase (default 100000; 0: setup only)\n"
              "  -o, --op OP            create | validate | mixed (default validate);\n"
              "                         mixed: 90% validate, 8% create, 2% destroy\n"
              "      --sessions N       sessions created (pipelined) before timing starts;\n"
              "                         validate and mixed use them (default 10000 for\n"
              "                         validate and mixed, 0 for create)\n"
              "      --warmup N         requests sent and not counted before timing (default 0)\n"
              "      --users N          user ids are spread over N users (default 1000000)\n"
              "      --seed N           seed of the random choices (default 1)\n"
              "      --timeout S        give up after S seconds without a reply (default 30)\n"
              "      --save-tokens FILE write the population (\"USER TOKEN\" lines) after the setup\n"
              "      --load-tokens FILE use the population in FILE instead of creating one\n"
              "      --json             end the report with one line of JSON\n"
              "  -h, --help             this text\n"
              "\n"
              "SIGUSR1 opens a window and the next one closes it: the latencies of the\n"
              "requests sent or answered while it is open are reported apart as well\n"
              "(all windows together, and each one). SIGUSR2 ends the timed phase early.\n",
              f);
}

static int parse_u64(const char *name, const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        char *end;
        unsigned long long v;

        errno = 0;
        if (!s || *s < '0' || *s > '9')
                goto bad;
        v = strtoull(s, &end, 10);
        if (errno != 0 || *end != '\0' || v < min || v > max)
                goto bad;
        *ret = v;
        return 0;
bad:
        fprintf(stderr, "sessiond-bench: invalid value for %s: '%s' (an integer from %" PRIu64 " to %" PRIu64 ")\n",
                name, s ? s : "", min, max);
        return -EINVAL;
}

/* Returns 0 to run, 1 after --help, -EINVAL on bad usage (already reported). */
static int parse_options(int argc, char **argv, struct bench_options *o) {
        enum {
                OPT_SESSIONS = 256,
                OPT_WARMUP,
                OPT_USERS,
                OPT_SEED,
                OPT_TIMEOUT,
                OPT_JSON,
                OPT_SAVE_TOKENS,
                OPT_LOAD_TOKENS
        };
        static const struct option options[] = {{"socket", required_argument, NULL, 's'},
                                                {"connections", required_argument, NULL, 'c'},
                                                {"requests", required_argument, NULL, 'n'},
                                                {"op", required_argument, NULL, 'o'},
                                                {"sessions", required_argument, NULL, OPT_SESSIONS},
                                                {"warmup", required_argument, NULL, OPT_WARMUP},
                                                {"users", required_argument, NULL, OPT_USERS},
                                                {"seed", required_argument, NULL, OPT_SEED},
                                                {"timeout", required_argument, NULL, OPT_TIMEOUT},
                                                {"json", no_argument, NULL, OPT_JSON},
                                                {"save-tokens", required_argument, NULL, OPT_SAVE_TOKENS},
                                                {"load-tokens", required_argument, NULL, OPT_LOAD_TOKENS},
                                                {"help", no_argument, NULL, 'h'},
                                                {}};
        const char *env = getenv("SESSIOND_SOCKET");
        uint64_t v;
        int c;

        *o = (struct bench_options){
                .socket_path = env && *env ? env : BENCH_DEFAULT_SOCKET,
                .connections = 50,
                .requests = 100000,
                .op = BENCH_OP_VALIDATE,
                .users = 1000000,
                .seed = 1,
                .timeout_s = 30,
        };

        while ((c = getopt_long(argc, argv, "s:c:n:o:h", options, NULL)) >= 0) {
                switch (c) {
                case 's':
                        o->socket_path = optarg;
                        break;
                case 'c':
                        if (parse_u64("--connections", optarg, 1, 10000, &v) < 0)
                                return -EINVAL;
                        o->connections = (unsigned) v;
                        break;
                case 'n':
                        if (parse_u64("--requests", optarg, 0, UINT32_MAX, &o->requests) < 0)
                                return -EINVAL;
                        break;
                case 'o':
                        if (strcmp(optarg, "create") == 0)
                                o->op = BENCH_OP_CREATE;
                        else if (strcmp(optarg, "validate") == 0)
                                o->op = BENCH_OP_VALIDATE;
                        else if (strcmp(optarg, "mixed") == 0)
                                o->op = BENCH_OP_MIXED;
                        else {
                                fprintf(stderr, "sessiond-bench: unknown operation '%s' (create, validate or mixed)\n",
                                        optarg);
                                return -EINVAL;
                        }
                        break;
                case OPT_SESSIONS:
                        if (parse_u64("--sessions", optarg, 0, UINT32_MAX / 2, &o->sessions) < 0)
                                return -EINVAL;
                        o->sessions_set = true;
                        break;
                case OPT_WARMUP:
                        if (parse_u64("--warmup", optarg, 0, UINT32_MAX, &o->warmup) < 0)
                                return -EINVAL;
                        break;
                case OPT_USERS:
                        if (parse_u64("--users", optarg, 1, UINT32_MAX, &v) < 0)
                                return -EINVAL;
                        o->users = (uint32_t) v;
                        break;
                case OPT_SEED:
                        if (parse_u64("--seed", optarg, 0, UINT64_MAX, &o->seed) < 0)
                                return -EINVAL;
                        break;
                case OPT_TIMEOUT:
                        if (parse_u64("--timeout", optarg, 1, 86400, &v) < 0)
                                return -EINVAL;
                        o->timeout_s = (unsigned) v;
                        break;
                case OPT_JSON:
                        o->json = true;
                        break;
                case OPT_SAVE_TOKENS:
                        o->save_tokens = optarg;
                        break;
                case OPT_LOAD_TOKENS:
                        o->load_tokens = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 1;
                default:
                        usage(stderr);
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "sessiond-bench: unexpected argument '%s'\n", argv[optind]);
                usage(stderr);
                return -EINVAL;
        }

        if (o->load_tokens && o->sessions_set) {
                fprintf(stderr, "sessiond-bench: --load-tokens and --sessions exclude each other\n");
                return -EINVAL;
        }
        if (!o->sessions_set)
                o->sessions = o->op == BENCH_OP_CREATE || o->load_tokens ? 0 : 10000;
        if (o->op != BENCH_OP_CREATE && o->sessions == 0 && !o->load_tokens) {
                fprintf(stderr, "sessiond-bench: -o %s needs a population: --sessions must be at least 1\n",
                        op_names[o->op]);
                return -EINVAL;
        }
        if (o->save_tokens && o->sessions == 0) {
                fprintf(stderr, "sessiond-bench: --save-tokens needs sessions to save: give --sessions\n");
                return -EINVAL;
        }
        if (strlen(o->socket_path) >= sizeof(((struct sockaddr_un *) NULL)->sun_path)) {
                fprintf(stderr, "sessiond-bench: socket path too long (at most %zu bytes): %s\n",
                        sizeof(((struct sockaddr_un *) NULL)->sun_path) - 1, o->socket_path);
                return -EINVAL;
        }
        return 0;
}

/* ---- main --------------------------------------------------------------------- */

static void bench_free(struct bench *b) {
        if (b->conns)
                for (unsigned i = 0; i < b->opt.connections; i++)
                        varlink_reader_free(&b->conns[i].reader);
        free(b->conns);
        free(b->tokens);
        free(b->live);
        free(b->arena);
        bench_latency_free(&b->latency);
        bench_latency_free(&b->window_latency);
        free(b->window_of);
}

int main(int argc, char **argv) {
        struct bench b = {};
        uint64_t capacity;
        int r;

        r = parse_options(argc, argv, &b.opt);
        if (r != 0)
                return r > 0 ? 0 : 2;

        /* A daemon that goes away mid-write is reported as EPIPE, not a signal. */
        signal(SIGPIPE, SIG_IGN);

        /* splitmix64 of the seed: never the all-zero state xorshift cannot leave. */
        b.rng = b.opt.seed + UINT64_C(0x9E3779B97F4A7C15);
        b.rng = (b.rng ^ (b.rng >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
        b.rng = (b.rng ^ (b.rng >> 27)) * UINT64_C(0x94D049BB133111EB);
        b.rng ^= b.rng >> 31;
        if (b.rng == 0)
                b.rng = 1;

        /* Mixed creates join the pool: room for all of them up front keeps
         * reallocation off the timed path. */
        capacity = b.opt.sessions + (b.opt.op == BENCH_OP_MIXED ? b.opt.warmup + b.opt.requests : 0);
        if (capacity > 0 && (r = population_reserve(&b, capacity)) < 0) {
                fprintf(stderr, "sessiond-bench: cannot reserve room for %" PRIu64 " tokens: %s\n", capacity,
                        strerror(-r));
                bench_free(&b);
                return 1;
        }
        if (b.opt.load_tokens) {
                r = population_load(&b, b.opt.load_tokens);
                if (r < 0) {
                        if (r != -EBADMSG)
                                fprintf(stderr, "sessiond-bench: cannot read the tokens in %s: %s\n", b.opt.load_tokens,
                                        strerror(-r));
                        bench_free(&b);
                        return 1;
                }
                b.n_loaded = b.n_tokens;
                note("%zu sessions read from %s", b.n_loaded, b.opt.load_tokens);
        }
        r = bench_latency_init(&b.latency, b.opt.requests > 0 ? b.opt.requests : 1);
        b.conns = calloc(b.opt.connections, sizeof *b.conns);
        if (r < 0 || !b.conns) {
                fprintf(stderr, "sessiond-bench: out of memory\n");
                bench_free(&b);
                return 1;
        }

        b.loop = uv_default_loop();
        uv_timer_init(b.loop, &b.watchdog);
        b.watchdog.data = &b;
        uv_timer_start(&b.watchdog, on_watchdog, 1000, 1000);
        uv_signal_init(b.loop, &b.window_signal);
        b.window_signal.data = &b;
        r = uv_signal_start(&b.window_signal, on_window_signal, SIGUSR1);
        assert(r == 0);
        uv_signal_init(b.loop, &b.stop_signal);
        b.stop_signal.data = &b;
        r = uv_signal_start(&b.stop_signal, on_stop_signal, SIGUSR2);
        assert(r == 0);

        for (unsigned i = 0; i < b.opt.connections; i++) {
                struct bench_conn *c = &b.conns[i];

                c->bench = &b;
                r = varlink_reader_init(&c->reader, BENCH_MAX_REPLY);
                assert(r == 0);
                uv_pipe_init(b.loop, &c->pipe, 0);
                c->pipe.data = c;
                uv_pipe_connect(&c->connect_req, &c->pipe, b.opt.socket_path, on_connect);
        }

        uv_run(b.loop, UV_RUN_DEFAULT);
        r = uv_loop_close(b.loop);
        assert(r == 0);

        if (b.failed) {
                fprintf(stderr, "sessiond-bench: %s\n", b.failure);
                bench_free(&b);
                return 1;
        }
        bench_report(&b);
        bench_free(&b);
        return 0;
}
