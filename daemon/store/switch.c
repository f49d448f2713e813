/* The platform-switch window, shared by the backends that decide a switch
 * in C (SQLite, on its writer) and by the engine of one daemon
 * (engine/platform.c); PostgreSQL decides the same in SQL (Q_SWITCH in
 * postgres.c), and the store suite's case holds both to one answer.
 *
 * The history is a JSON array of the Unix seconds of a session's recent
 * switches. Only the hour before now counts; the times are sorted, since
 * daemons whose clocks differ a little append out of order, and the
 * oldest of the hour tells when a refused switch fits: with max in the
 * hour already, the (size - max)-th oldest must leave first (more than one
 * when the limit was lowered). Anything that is not an integer counts as
 * no switch.
 */
#include "store.h"

#include <errno.h>
#include <stdlib.h>

#include <jansson.h>

static int time_cmp(const void *a, const void *b) {
        int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;

        return (x > y) - (x < y);
}

/* The times of the hour before now, sorted: *times (malloc'ed), *n. */
static int window_times(const char *history, int64_t now, int64_t **times, size_t *n) {
        json_t *all = history ? json_loads(history, 0, NULL) : NULL, *t;
        size_t i;

        *n = 0;
        *times = malloc((json_array_size(all) + 1) * sizeof **times);
        if (!*times) {
                json_decref(all);
                return -ENOMEM;
        }
        json_array_foreach(all, i, t)
                if (json_is_integer(t) && json_integer_value(t) > now - 3600)
                        (*times)[(*n)++] = json_integer_value(t);
        json_decref(all);
        qsort(*times, *n, sizeof **times, time_cmp);
        return 0;
}

int store_switch_window(const char *history, int64_t now, int64_t max, bool *fits, char **next, int64_t *retry_at) {
        int64_t *times;
        json_t *kept;
        size_t n;
        int r = window_times(history, now, &times, &n);

        if (r < 0)
                return r;
        *fits = (int64_t) n < max;
        if (!*fits) {
                size_t k = n - (size_t) (max > 0 ? max : 0);

                *retry_at = (k < n ? times[k] : now) + 3600;
                free(times);
                return 0;
        }
        times[n++] = now;
        kept = json_array();
        for (size_t i = 0; kept && i < n; i++)
                if (json_array_append_new(kept, json_integer(times[i])) < 0) {
                        json_decref(kept);
                        kept = NULL;
                }
        free(times);
        *next = kept ? json_dumps(kept, JSON_COMPACT) : NULL;
        json_decref(kept);
        return *next ? 0 : -ENOMEM;
}

char *store_switch_audit_detail(const char *from, const char *to) {
        json_t *o = json_pack("{s:s?, s:s}", "from", from && *from ? from : NULL, "to", to);
        char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;

        json_decref(o);
        return text;
}
