/* Issues and origins: how the configuration system reports.
 *
 * The library never logs. Everything that goes wrong while loading or
 * validating becomes an issue: a severity plus one complete sentence that
 * names the setting, the bad value and where that value came from. Callers
 * (sessiond at start and reload, `sessionctl config --validate`, the
 * Admin.Reload reply) print or send the list as it is, all issues at once.
 *
 * An origin is where a value came from; it is kept per setting so that a
 * message about a rule between two settings can say which file line or
 * variable to fix.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

SESSIOND_EXPORT void sessiond_issues_clear(struct sessiond_issues *issues) {
        if (!issues)
                return;
        for (size_t i = 0; i < issues->count; i++) {
                free(issues->items[i].setting);
                free(issues->items[i].message);
        }
        free(issues->items);
        *issues = (struct sessiond_issues){};
}

SESSIOND_EXPORT bool sessiond_issues_has_errors(const struct sessiond_issues *issues) {
        if (!issues)
                return false;
        for (size_t i = 0; i < issues->count; i++)
                if (issues->items[i].severity == SESSIOND_ERROR)
                        return true;
        return false;
}

/* Messages quote values as they were read, and are printed to terminals,
 * logged (where a newline would split a journal entry) and sent as JSON
 * (the Reload error reply, `sessionctl config --validate --json`), which
 * holds UTF-8 only: control characters and bytes that are not UTF-8 are
 * escaped (escape.c), so that the message is one clean line and still
 * shows what was wrong. */
static int message_escape(char **message) {
        char *out;

        if (sessiond_text_escape(NULL, 0, *message) == strlen(*message))
                return 0; /* nothing to escape */
        out = sessiond_text_escape_dup(*message);
        free(*message);
        *message = out;
        return out ? 0 : -ENOMEM;
}

SESSIOND_EXPORT int sessiond_issues_add(struct sessiond_issues *issues, enum sessiond_severity severity,
                                        const char *setting, const char *fmt, ...) {
        struct sessiond_issue issue = {.severity = severity};
        va_list ap;
        int r;

        if (!issues)
                return 0;
        if (issues->count == issues->allocated) {
                size_t n = issues->allocated ? issues->allocated * 2 : 8;
                struct sessiond_issue *items = realloc(issues->items, n * sizeof(*items));
                if (!items)
                        return -ENOMEM;
                issues->items = items;
                issues->allocated = n;
        }

        va_start(ap, fmt);
        r = vasprintf(&issue.message, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        r = message_escape(&issue.message);
        if (r < 0)
                return r;
        if (setting) {
                issue.setting = strdup(setting);
                if (!issue.setting) {
                        free(issue.message);
                        return -ENOMEM;
                }
        }
        issues->items[issues->count++] = issue;
        return 0;
}

SESSIOND_EXPORT const char *sessiond_severity_to_string(enum sessiond_severity s) {
        switch (s) {
        case SESSIOND_WARNING:
                return "warning";
        case SESSIOND_ERROR:
                return "error";
        }
        return "unknown";
}

int origin_assign(struct sessiond_origin *o, enum sessiond_origin_kind kind, const char *file, int line) {
        char *copy = NULL;

        if (file) {
                copy = strdup(file);
                if (!copy)
                        return -ENOMEM;
        }
        free(o->file);
        *o = (struct sessiond_origin){.kind = kind, .file = copy, .line = line};
        return 0;
}

void origin_clear(struct sessiond_origin *o) {
        free(o->file);
        *o = (struct sessiond_origin){};
}

SESSIOND_EXPORT char *sessiond_origin_to_string(const struct sessiond_origin *o) {
        char *s = NULL;
        int r = -1;

        switch (o->kind) {
        case SESSIOND_ORIGIN_DEFAULT:
                return strdup("default");
        case SESSIOND_ORIGIN_PROFILE:
                r = asprintf(&s, "profile %s", o->file ? o->file : "?");
                break;
        case SESSIOND_ORIGIN_FILE:
                if (o->line > 0)
                        r = asprintf(&s, "%s:%d", o->file ? o->file : "?", o->line);
                else
                        r = asprintf(&s, "%s", o->file ? o->file : "?");
                break;
        case SESSIOND_ORIGIN_ENV_FILE:
                if (o->line > 0)
                        r = asprintf(&s, "env file %s:%d", o->file ? o->file : "?", o->line);
                else
                        r = asprintf(&s, "env file %s", o->file ? o->file : "?");
                break;
        case SESSIOND_ORIGIN_ENVIRONMENT:
                return strdup("environment");
        }
        return r < 0 ? NULL : s;
}
