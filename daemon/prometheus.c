/* The Prometheus text exposition format: see prometheus.h.
 *
 * The rules of the format that matter here: metric names match
 * [a-zA-Z_:][a-zA-Z0-9_:]*, label names the same without ':' (anything
 * else becomes '_'); HELP text escapes backslash and newline, label values
 * also the double quote; values are integers, floats printed so that they
 * read back exactly (%.17g), NaN, +Inf or -Inf. The samples of one name
 * must follow each other, so a name seen again later in the list is
 * gathered under its first HELP and TYPE.
 */
#include "prometheus.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static void put_name(FILE *f, const char *s, bool label) {
        for (size_t i = 0; s[i]; i++) {
                char c = s[i];
                bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':') ||
                          (i > 0 && c >= '0' && c <= '9');

                fputc(ok ? c : '_', f);
        }
}

static void put_escaped(FILE *f, const char *s, bool quote) {
        for (; *s; s++) {
                if (*s == '\\')
                        fputs("\\\\", f);
                else if (*s == '\n')
                        fputs("\\n", f);
                else if (quote && *s == '"')
                        fputs("\\\"", f);
                else
                        fputc(*s, f);
        }
}

static void put_value(FILE *f, json_t *v) {
        double d;

        switch (json_typeof(v)) {
        case JSON_INTEGER:
                fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                return;
        case JSON_REAL:
                d = json_real_value(v);
                if (isnan(d))
                        fputs("NaN", f);
                else if (isinf(d))
                        fputs(d > 0 ? "+Inf" : "-Inf", f);
                else
                        fprintf(f, "%.17g", d);
                return;
        case JSON_TRUE:
                fputc('1', f);
                return;
        case JSON_FALSE:
                fputc('0', f);
                return;
        default:
                fputs("NaN", f);
                return;
        }
}

static void put_labels(FILE *f, json_t *labels) {
        const char *key;
        json_t *v;
        bool first = true;

        if (!json_is_object(labels) || json_object_size(labels) == 0)
                return;
        fputc('{', f);
        json_object_foreach(labels, key, v) {
                char *text = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

                if (!first)
                        fputc(',', f);
                first = false;
                put_name(f, key, true);
                fputs("=\"", f);
                put_escaped(f, json_is_string(v) ? json_string_value(v) : text ? text : "", true);
                fputc('"', f);
                free(text);
        }
        fputc('}', f);
}

static void put_sample(FILE *f, json_t *m) {
        fputs("sessiond_", f);
        put_name(f, json_string_value(json_object_get(m, "name")), false);
        put_labels(f, json_object_get(m, "labels"));
        fputc(' ', f);
        put_value(f, json_object_get(m, "value"));
        fputc('\n', f);
}

static const char *metric_name(json_t *m) {
        const char *name = json_string_value(json_object_get(m, "name"));

        return name && *name ? name : NULL;
}

int prometheus_write(json_t *metrics, FILE *f) {
        size_t n = json_array_size(metrics);
        bool *done;

        if (!json_is_array(metrics))
                return -EINVAL;
        done = calloc(n ? n : 1, sizeof *done);
        if (!done)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_t *m = json_array_get(metrics, i);
                const char *name = metric_name(m);
                const char *type = json_string_value(json_object_get(m, "type"));
                const char *help = json_string_value(json_object_get(m, "help"));

                if (done[i] || !name)
                        continue;
                if (!type || (strcmp(type, "counter") != 0 && strcmp(type, "gauge") != 0))
                        type = "untyped";
                fputs("# HELP sessiond_", f);
                put_name(f, name, false);
                fputc(' ', f);
                put_escaped(f, help ? help : name, false);
                fputs("\n# TYPE sessiond_", f);
                put_name(f, name, false);
                fprintf(f, " %s\n", type);
                for (size_t j = i; j < n; j++) {
                        json_t *o = json_array_get(metrics, j);
                        const char *oname = metric_name(o);

                        if (!done[j] && oname && strcmp(oname, name) == 0) {
                                put_sample(f, o);
                                done[j] = true;
                        }
                }
        }
        free(done);
        return ferror(f) ? -EIO : 0;
}

int prometheus_render(json_t *metrics, char **ret, size_t *ret_len) {
        char *text = NULL;
        size_t len = 0;
        FILE *f;
        int r;

        assert(ret && ret_len);
        f = open_memstream(&text, &len);
        if (!f)
                return -ENOMEM;
        r = prometheus_write(metrics, f);
        if (fclose(f) != 0 && r == 0)
                r = -ENOMEM;
        if (r < 0) {
                free(text);
                return r;
        }
        *ret = text;
        *ret_len = len;
        return 0;
}
