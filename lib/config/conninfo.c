/* Connection strings (daemon.postgres_url): checking, and hiding passwords.
 *
 * daemon.postgres_url goes to libpq as it was written: a keyword/value
 * connection string ("host=/run/postgresql dbname=sessions password=...")
 * or a URI ("postgresql://app:...@/sessions?host=/run/pg"). Either may hold
 * a password, which must never reach a terminal, a log line, a Varlink
 * reply or an audit row. Everything that prints the value goes through
 * sessiond_conninfo_redact(): the text as written, with each password
 * replaced by "***". The passwords are the URI's user info after its
 * colon, and the values of password= and sslpassword= in either form.
 *
 * The redaction reads the text the way libpq does (libpq's own parser
 * hands back values, not where they were), and where a mistyped value
 * could be read two ways it hides what either reading calls a password:
 *   - URI: the user info ends at the last '@' before the query, not at the
 *     first '@' or '/' as libpq has it, so that a password with an
 *     unencoded '@', '/' or '?' is hidden whole (base64 passwords hold
 *     '/'); the parameters are read both after that and from the first '?';
 *   - a password parameter of a URI runs to the next "&key=", so that an
 *     unencoded '&' in it does not show the rest;
 *   - keyword/value: a pair without '=' ("host=x mysecret") is hidden from
 *     there to the end, an unterminated quote to the end.
 * A quoted value keeps its quotes (password='***'), so that redacted text
 * reads as written and redacts to itself (not always when it was read two
 * ways: it is for display, never to be read back as the setting).
 *
 * conninfo_check() asks libpq (PQconninfoParse) whether it can read the
 * text at all, for the validation. libpq's message may quote a piece of
 * the text ("invalid percent-encoded token: \"se%zzcret\""); every quoted
 * piece taken from the text is hidden as well, and a message that still
 * shares a run of characters with the text is not shown at all.
 */
#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define MASK "***"
/* Runs of this many characters shared by libpq's message and the text
 * make conninfo_check() drop the message (a piece of the text it could not
 * hide by its quotes). */
#define SHARED_RUN_MAX 6

/* The parts of the input to hide, as byte offsets [start, end), in any
 * order, possibly overlapping: two readings of one text may both have a
 * say. */
struct span {
        size_t start, end;
};

struct spans {
        struct span *items;
        size_t n, allocated;
        bool oom;
};

static void hide(struct spans *h, size_t start, size_t end) {
        if (end <= start || h->oom)
                return;
        if (h->n == h->allocated) {
                size_t allocated = h->allocated ? h->allocated * 2 : 8;
                struct span *items = reallocarray(h->items, allocated, sizeof(*items));

                if (!items) {
                        h->oom = true;
                        return;
                }
                h->items = items;
                h->allocated = allocated;
        }
        h->items[h->n++] = (struct span){start, end};
}

static int span_compare(const void *a, const void *b) {
        const struct span *x = a, *y = b;

        return x->start < y->start ? -1 : x->start > y->start;
}

/* password or sslpassword (any case: libpq refuses other spellings, which
 * are hidden all the same). */
static bool secret_keyword(const char *k, size_t len) {
        return (len == 8 && strncasecmp(k, "password", 8) == 0) ||
               (len == 11 && strncasecmp(k, "sslpassword", 11) == 0);
}

static int hex_value(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* A URI parameter's key, percent-decoded as libpq decodes it ("pass%77ord"
 * is password). */
static bool secret_uri_key(const char *k, size_t len) {
        char decoded[32];
        size_t n = 0;

        for (size_t i = 0; i < len; i++) {
                if (n >= sizeof(decoded))
                        return false;
                if (k[i] == '%' && i + 2 < len && hex_value(k[i + 1]) >= 0 && hex_value(k[i + 2]) >= 0) {
                        decoded[n++] = (char) (hex_value(k[i + 1]) * 16 + hex_value(k[i + 2]));
                        i += 2;
                } else
                        decoded[n++] = k[i];
        }
        return secret_keyword(decoded, n);
}

/* Does a parameter "key=" start at p (up to the end of the text)? */
static bool parameter_starts(const char *p) {
        const char *q = p;

        while (*q && *q != '=' && *q != '&' && *q != '/' && !isspace((unsigned char) *q))
                q++;
        return q > p && *q == '=';
}

/* The parameters of a URI from its '?' at q: the values of password and
 * sslpassword. */
static void hide_parameters(struct spans *h, const char *s, const char *q) {
        if (!q)
                return;
        for (const char *p = q + 1; *p;) {
                const char *key = p, *value, *end;

                while (*p && *p != '=' && *p != '&')
                        p++;
                if (*p != '=') { /* a key without a value */
                        if (*p)
                                p++;
                        continue;
                }
                value = ++p;
                end = value + strcspn(value, "&");
                if (secret_uri_key(key, (size_t) (value - 1 - key))) {
                        /* To the next parameter: an unencoded '&' is the
                         * password's, not a separator. */
                        while (*end && !parameter_starts(end + 1))
                                end += 1 + strcspn(end + 1, "&");
                        hide(h, (size_t) (value - s), (size_t) (end - s));
                }
                p = *end ? end + 1 : end;
        }
}

static void redact_uri(struct spans *h, const char *s, size_t prefix) {
        const char *rest = s + prefix, *at = strchr(rest, '@'), *userinfo_end = NULL;

        if (at) {
                const char *q = strchr(at, '?');
                const char *end = q ? q : rest + strlen(rest);
                const char *colon;

                userinfo_end = at;
                for (const char *p = at; p < end; p++)
                        if (*p == '@')
                                userinfo_end = p;
                colon = memchr(rest, ':', (size_t) (userinfo_end - rest));
                if (colon)
                        hide(h, (size_t) (colon + 1 - s), (size_t) (userinfo_end - s));
        }
        /* The parameters from the first '?' (libpq's reading when the user
         * info holds none) and from the first one after the user info (when
         * it does): what either reading calls a password is hidden. */
        hide_parameters(h, s, strchr(rest, '?'));
        if (userinfo_end)
                hide_parameters(h, s, strchr(userinfo_end, '?'));
}

/* libpq's conninfo_parse(), reading only where each value is. A quoted
 * value keeps its quotes ("password='***'"), so that the redacted text
 * reads the same way again. */
static void redact_keywords(struct spans *h, const char *s) {
        const char *p = s;

        while (*p) {
                const char *key, *key_end, *value;
                bool secret;

                while (isspace((unsigned char) *p))
                        p++;
                if (!*p)
                        break;
                key = p;
                while (*p && *p != '=' && !isspace((unsigned char) *p))
                        p++;
                key_end = p;
                while (isspace((unsigned char) *p))
                        p++;
                if (*p != '=') {
                        /* libpq stops here ("missing \"=\""): what follows
                         * could be anything, a password typed without its
                         * keyword too. */
                        hide(h, (size_t) (key - s), strlen(s));
                        return;
                }
                p++;
                while (isspace((unsigned char) *p))
                        p++;
                secret = secret_keyword(key, (size_t) (key_end - key));
                if (*p == '\'') {
                        value = ++p;
                        for (; *p && *p != '\''; p++)
                                if (*p == '\\' && p[1])
                                        p++;
                        if (secret)
                                hide(h, (size_t) (value - s), (size_t) (p - s));
                        if (*p == '\'')
                                p++;
                } else {
                        value = p;
                        for (; *p && !isspace((unsigned char) *p); p++)
                                if (*p == '\\' && p[1])
                                        p++;
                        if (secret)
                                hide(h, (size_t) (value - s), (size_t) (p - s));
                }
        }
}

/* "postgresql://" or "postgres://", as libpq recognises them (case matters). */
static size_t uri_prefix_length(const char *s) {
        if (strncmp(s, "postgresql://", 13) == 0)
                return 13;
        if (strncmp(s, "postgres://", 11) == 0)
                return 11;
        return 0;
}

SESSIOND_EXPORT int sessiond_conninfo_redact(const char *conninfo, char **ret) {
        struct spans h = {};
        size_t len, prefix, copied = 0, n = 0;
        char *out;

        if (!conninfo || !ret)
                return -EINVAL;
        len = strlen(conninfo);
        prefix = uri_prefix_length(conninfo);
        if (prefix > 0)
                redact_uri(&h, conninfo, prefix);
        else
                redact_keywords(&h, conninfo);
        /* At most "***" for each byte of the input. */
        out = h.oom ? NULL : malloc(len * strlen(MASK) + 1);
        if (!out) {
                free(h.items);
                return -ENOMEM;
        }
        if (h.n > 0)
                qsort(h.items, h.n, sizeof(*h.items), span_compare);
        for (size_t i = 0; i < h.n;) {
                size_t start = h.items[i].start, end = h.items[i].end;

                /* Overlapping or touching spans are one: "***", not "******". */
                for (i++; i < h.n && h.items[i].start <= end; i++)
                        if (h.items[i].end > end)
                                end = h.items[i].end;
                memcpy(out + n, conninfo + copied, start - copied);
                n += start - copied;
                memcpy(out + n, MASK, strlen(MASK));
                n += strlen(MASK);
                copied = end;
        }
        memcpy(out + n, conninfo + copied, len - copied);
        n += len - copied;
        out[n] = '\0';
        free(h.items);
        *ret = out;
        return 0;
}

/* Is the text s[0..len) found in value? */
static bool in_value(const char *value, const char *s, size_t len) {
        size_t n = strlen(value);

        for (size_t i = 0; len <= n && i <= n - len; i++)
                if (memcmp(value + i, s, len) == 0)
                        return true;
        return false;
}

/* libpq's message with each quoted piece of value as "***": for every '"',
 * the longest quoted text after it that is found in value (libpq quotes
 * whole tokens, which may hold quotes themselves). */
static char *mask_message(const char *message, const char *value) {
        size_t len = strlen(message);
        char *out = malloc(len * strlen(MASK) + 1);
        size_t n = 0;

        if (!out)
                return NULL;
        for (size_t i = 0; i < len;) {
                size_t close = 0;

                if (message[i] == '"')
                        for (size_t j = len; j > i + 3; j--) /* two characters at least: not "=" */
                                if (message[j - 1] == '"' && in_value(value, message + i + 1, j - 1 - (i + 1))) {
                                        close = j - 1;
                                        break;
                                }
                if (close) {
                        n += (size_t) sprintf(out + n, "\"%s\"", MASK);
                        i = close + 1;
                } else
                        out[n++] = message[i++];
        }
        out[n] = '\0';
        return out;
}

/* Does text share a run of SHARED_RUN_MAX characters with value? */
static bool shares_run(const char *text, const char *value) {
        size_t len = strlen(text);

        for (size_t i = 0; i + SHARED_RUN_MAX <= len; i++)
                if (in_value(value, text + i, SHARED_RUN_MAX))
                        return true;
        return false;
}

int conninfo_check(const char *conninfo, char **ret_reason) {
        PQconninfoOption *options;
        char *error = NULL, *reason;

        options = PQconninfoParse(conninfo, &error);
        if (options) {
                PQconninfoFree(options);
                return 0;
        }
        if (!error)
                return -ENOMEM;
        error[strcspn(error, "\n")] = '\0';
        reason = mask_message(error, conninfo);
        PQfreemem(error);
        if (!reason)
                return -ENOMEM;
        if (shares_run(reason, conninfo)) {
                free(reason);
                reason = strdup("libpq's reason is left out, it would quote the value");
                if (!reason)
                        return -ENOMEM;
        }
        if (ret_reason)
                *ret_reason = reason;
        else
                free(reason);
        return -EINVAL;
}
