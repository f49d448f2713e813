/* Fuzz target: the env-file parser and editor (lib/config/envfile.c).
 *
 * The env file is edited by `sessionctl config --set-env` and read by the
 * daemon, and its promise is that an edit changes exactly the line it means
 * to and loses nothing else. So this target checks that promise as
 * properties, not only the absence of crashes:
 *  - parsing fails exactly when some line is malformed, with one error
 *    "PATH:LINE: ..." per malformed line;
 *  - an unedited file formats back to the very bytes it was parsed from, so
 *    parse(format(parse(x))) == parse(x);
 *  - get() answers the value of the last line that sets a key;
 *  - set() refuses bad keys and values with a newline, reports "no change"
 *    exactly when the value is already there, changes only the last line of
 *    its key (or appends one), and after any series of edits the formatted
 *    file parses back to the same keys and values;
 *  - a value quoted by sessiond_envfile_quote() reads back as itself.
 *
 * Input: the file, then optionally a line "%%" and edits, one KEY=VALUE a
 * line (split at the first '='; the key may be invalid on purpose).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "config/envfile-private.h" /* the lines of an env file, private to the library */
#include "fuzz.h"
#include "sessiond/envfile.h"

#define MAX_EDITS 32

static void assert_same_lines(const struct sessiond_envfile *a, const struct sessiond_envfile *b, bool same_text) {
        fuzz_assert(a->n_lines == b->n_lines);
        for (size_t i = 0; i < a->n_lines; i++) {
                const struct sessiond_envfile_line *x = &a->lines[i], *y = &b->lines[i];
                fuzz_assert(!x->key == !y->key);
                fuzz_assert(!x->value == !y->value);
                if (x->key)
                        fuzz_assert(strcmp(x->key, y->key) == 0 && strcmp(x->value, y->value) == 0);
                if (same_text)
                        fuzz_assert(strcmp(x->text, y->text) == 0);
        }
}

/* Counts lines that are not blank, not comments and not KEY=VALUE the way
 * the parser reads them, by asking the parser about each line alone. */
static size_t malformed_lines(const char *text, size_t len) {
        const char *p = text, *end = text + len;
        size_t bad = 0;

        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                const char *le = nl ? nl : end;
                struct sessiond_envfile *one = NULL;
                struct sessiond_issues is = {};

                if (sessiond_envfile_parse(NULL, p, (size_t) (le - p), &one, &is) < 0)
                        bad++;
                else
                        sessiond_envfile_free(one);
                sessiond_issues_clear(&is);
                if (!nl)
                        break;
                p = nl + 1;
        }
        return bad;
}

static void check_quote(const char *value) {
        struct sessiond_envfile *f = NULL;
        struct sessiond_issues is = {};
        char *q = sessiond_envfile_quote(value), *line = NULL;

        fuzz_assert(q);
        fuzz_assert(asprintf(&line, "K=%s", q) >= 0);
        fuzz_assert(sessiond_envfile_parse(NULL, line, strlen(line), &f, &is) == 0);
        fuzz_assert(f->n_lines == 1 && f->lines[0].key);
        fuzz_assert(strcmp(f->lines[0].value, value) == 0);
        sessiond_envfile_free(f);
        free(line);
        free(q);
}

/* One edit on f, checked against a copy of f before it. */
static void check_set(struct sessiond_envfile *f, const char *key, const char *value) {
        struct sessiond_envfile *before = NULL;
        struct sessiond_issues is = {};
        char *text_before, *text_after;
        size_t idx = 0, len = 0;
        const char *old;
        bool key_ok, had_old, unchanged;
        int r;

        text_before = sessiond_envfile_format(f, &len);
        fuzz_assert(text_before);
        fuzz_assert(sessiond_envfile_parse(NULL, text_before, len, &before, &is) == 0);

        key_ok = (*key == '_' || (*key >= 'A' && *key <= 'Z') || (*key >= 'a' && *key <= 'z')) &&
                 strspn(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == strlen(key);
        /* set() frees the old value: remember what it said. */
        old = sessiond_envfile_get(f, key, &idx);
        had_old = old != NULL;
        unchanged = old && strcmp(old, value) == 0;

        r = sessiond_envfile_set(f, key, value);
        text_after = sessiond_envfile_format(f, NULL);
        fuzz_assert(text_after);
        if (!key_ok || strchr(value, '\n')) {
                fuzz_assert(r == -EINVAL);
                fuzz_assert(strcmp(text_before, text_after) == 0);
        } else if (unchanged) {
                fuzz_assert(r == 0);
                fuzz_assert(strcmp(text_before, text_after) == 0);
        } else {
                fuzz_assert(r == 1);
                fuzz_assert(strcmp(sessiond_envfile_get(f, key, NULL), value) == 0);
                /* Only that line changed, or one was appended. */
                fuzz_assert(f->n_lines == before->n_lines + (had_old ? 0 : 1));
                for (size_t i = 0; i < before->n_lines; i++)
                        if (!had_old || i != idx)
                                fuzz_assert(strcmp(f->lines[i].text, before->lines[i].text) == 0);
                check_quote(value);
        }

        free(text_before);
        free(text_after);
        sessiond_envfile_free(before);
        sessiond_issues_clear(&is);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *text = (const char *) data, *end = text + size, *edits = NULL;
        struct sessiond_envfile *f = NULL, *g = NULL;
        struct sessiond_issues is = {};
        size_t len = size, flen = 0;
        char *formatted;
        int r;

        /* The file ends at a line "%%"; edits follow. */
        for (const char *line = text; line < end;) {
                const char *nl = memchr(line, '\n', (size_t) (end - line));
                const char *le = nl ? nl : end;
                if (le - line == 2 && line[0] == '%' && line[1] == '%') {
                        len = (size_t) (line - text);
                        edits = nl ? nl + 1 : end;
                        break;
                }
                if (!nl)
                        break;
                line = nl + 1;
        }

        r = sessiond_envfile_parse("fuzz.env", text, len, &f, &is);
        if (r < 0) {
                fuzz_assert(r == -EINVAL);
                fuzz_assert(sessiond_issues_has_errors(&is));
                /* A NUL refuses the whole file; otherwise one error a line. */
                if (!memchr(text, '\0', len))
                        fuzz_assert(is.count == malformed_lines(text, len));
                for (size_t i = 0; i < is.count; i++)
                        fuzz_assert(strncmp(is.items[i].message, "fuzz.env:", 9) == 0);
                sessiond_issues_clear(&is);
                return 0;
        }
        fuzz_assert(is.count == 0);

        /* Unedited: the same bytes, and the same meaning. */
        formatted = sessiond_envfile_format(f, &flen);
        fuzz_assert(formatted);
        fuzz_assert(flen == len && memcmp(formatted, text, len) == 0);
        fuzz_assert(sessiond_envfile_parse(NULL, formatted, flen, &g, &is) == 0);
        assert_same_lines(f, g, true);
        for (size_t i = 0; i < g->n_lines; i++)
                fuzz_assert(g->lines[i].lineno == (int) i + 1);
        sessiond_envfile_free(g);
        g = NULL;
        free(formatted);

        /* get(): the last line that sets a key. */
        for (size_t i = 0; i < f->n_lines; i++) {
                size_t idx = 0;
                const char *v;
                if (!f->lines[i].key)
                        continue;
                v = sessiond_envfile_get(f, f->lines[i].key, &idx);
                fuzz_assert(v == f->lines[idx].value);
                fuzz_assert(idx >= i && strcmp(f->lines[idx].key, f->lines[i].key) == 0);
                for (size_t j = idx + 1; j < f->n_lines; j++)
                        fuzz_assert(!f->lines[j].key || strcmp(f->lines[j].key, f->lines[i].key) != 0);
                check_quote(f->lines[i].value);
        }

        /* Edits, each checked; then the whole file still reads back. */
        if (edits) {
                char *copy = strndup(edits, (size_t) (end - edits));
                size_t n = 0;

                fuzz_assert(copy);
                for (char *save = NULL, *line = strtok_r(copy, "\n", &save); line && n < MAX_EDITS;
                     line = strtok_r(NULL, "\n", &save), n++) {
                        char *eq = strchr(line, '=');
                        const char *value = "";
                        if (eq) {
                                *eq = '\0';
                                value = eq + 1;
                        }
                        check_set(f, line, value);
                }
                free(copy);

                formatted = sessiond_envfile_format(f, &flen);
                fuzz_assert(formatted);
                fuzz_assert(sessiond_envfile_parse(NULL, formatted, flen, &g, &is) == 0);
                assert_same_lines(f, g, true);
                sessiond_envfile_free(g);
                free(formatted);
        }

        sessiond_envfile_free(f);
        sessiond_issues_clear(&is);
        return 0;
}
