/* The configuration object: creation at the defaults, storing values with
 * their origin, copying and freeing.
 *
 * A struct sessiond_config owns all of its strings, its origins[] (one per
 * row of sessiond_settings[]) and its custom settings. Values are reached
 * through the table's offsets, so this file needs no per-setting code.
 */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <inttypes.h>

#include "internal.h"

int config_store(struct sessiond_config *c, size_t idx, const union setting_value *v, enum sessiond_origin_kind kind,
                 const char *file, int line) {
        const struct sessiond_setting *s;
        void *p;
        int r;

        assert(idx < sessiond_settings_count);
        s = &sessiond_settings[idx];
        p = setting_ptr(c, s);

        switch (s->type) {
        case SESSIOND_TYPE_BOOL:
                *(bool *) p = v->b;
                break;
        case SESSIOND_TYPE_INT:
        case SESSIOND_TYPE_DURATION:
                *(int64_t *) p = v->i;
                break;
        case SESSIOND_TYPE_DOUBLE:
                *(double *) p = v->d;
                break;
        case SESSIOND_TYPE_ENVIRONMENT:
                *(enum sessiond_environment *) p = (enum sessiond_environment) v->e;
                break;
        case SESSIOND_TYPE_STRING: {
                char *copy = strdup(v->s);
                if (!copy)
                        return -ENOMEM;
                free(*(char **) p);
                *(char **) p = copy;
                break;
        }
        }
        r = origin_assign(&c->origins[idx], kind, file, line);
        return r;
}

int config_store_custom(struct sessiond_config *c, const char *name, const char *value, enum sessiond_origin_kind kind,
                        const char *file, int line) {
        _cleanup_free_ char *lower = strdup(name);
        _cleanup_free_ char *copy = strdup(value);
        struct sessiond_custom_setting *slot = NULL;
        int r;

        if (!lower || !copy)
                return -ENOMEM;
        for (char *p = lower; *p; p++)
                *p = (char) tolower((unsigned char) *p);

        for (size_t i = 0; i < c->n_custom; i++)
                if (strcmp(c->custom[i].name, lower) == 0)
                        slot = &c->custom[i];
        if (!slot) {
                struct sessiond_custom_setting *n = realloc(c->custom, (c->n_custom + 1) * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                c->custom = n;
                slot = &c->custom[c->n_custom++];
                *slot = (struct sessiond_custom_setting){.name = lower};
                lower = NULL;
        }
        r = origin_assign(&slot->origin, kind, file, line);
        if (r < 0)
                return r;
        free(slot->value);
        slot->value = copy;
        copy = NULL;
        return 0;
}

int config_new(struct sessiond_config **ret) {
        struct sessiond_config *c;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->origins = calloc(sessiond_settings_count, sizeof(*c->origins));
        if (!c->origins) {
                free(c);
                return -ENOMEM;
        }
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                union setting_value v;
                const char *problem;
                int r = setting_parse_text(&sessiond_settings[i], sessiond_settings[i].default_text, &v, &problem);
                /* The table's defaults are ours: a bad one is a bug. */
                assert(r == 0);
                if (r < 0 || config_store(c, i, &v, SESSIOND_ORIGIN_DEFAULT, NULL, 0) < 0) {
                        sessiond_config_free(c);
                        return r < 0 ? r : -ENOMEM;
                }
        }
        *ret = c;
        return 0;
}

SESSIOND_EXPORT int sessiond_config_new_defaults(struct sessiond_config **ret) {
        return config_new(ret);
}

SESSIOND_EXPORT void sessiond_config_free(struct sessiond_config *c) {
        if (!c)
                return;
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                if (sessiond_settings[i].type == SESSIOND_TYPE_STRING)
                        free(*(char **) setting_ptr(c, &sessiond_settings[i]));
                if (c->origins)
                        origin_clear(&c->origins[i]);
        }
        free(c->origins);
        for (size_t i = 0; i < c->n_custom; i++) {
                free(c->custom[i].name);
                free(c->custom[i].value);
                origin_clear(&c->custom[i].origin);
        }
        free(c->custom);
        free(c->config_file);
        free(c);
}

SESSIOND_EXPORT int sessiond_config_copy(const struct sessiond_config *c, struct sessiond_config **ret) {
        _cleanup_(sessiond_config_freep) struct sessiond_config *n = NULL;

        n = calloc(1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        /* Copy the plain values at once, then replace every pointer by a
         * copy of what it points to. */
        *n = *c;
        n->origins = NULL;
        n->custom = NULL;
        n->n_custom = 0;
        n->config_file = NULL;
        for (size_t i = 0; i < sessiond_settings_count; i++)
                if (sessiond_settings[i].type == SESSIOND_TYPE_STRING)
                        *(char **) setting_ptr(n, &sessiond_settings[i]) = NULL;

        n->origins = calloc(sessiond_settings_count, sizeof(*n->origins));
        if (!n->origins)
                return -ENOMEM;
        for (size_t i = 0; i < sessiond_settings_count; i++) {
                const struct sessiond_setting *s = &sessiond_settings[i];
                if (s->type == SESSIOND_TYPE_STRING) {
                        char *copy = strdup(*(char *const *) setting_cptr(c, s));
                        if (!copy)
                                return -ENOMEM;
                        *(char **) setting_ptr(n, s) = copy;
                }
                if (origin_assign(&n->origins[i], c->origins[i].kind, c->origins[i].file, c->origins[i].line) < 0)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < c->n_custom; i++) {
                const struct sessiond_custom_setting *cs = &c->custom[i];
                if (config_store_custom(n, cs->name, cs->value, cs->origin.kind, cs->origin.file, cs->origin.line) < 0)
                        return -ENOMEM;
        }
        if (c->config_file) {
                n->config_file = strdup(c->config_file);
                if (!n->config_file)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(n);
        return 0;
}

SESSIOND_EXPORT const char *sessiond_config_custom(const struct sessiond_config *c, const char *name, const char *def) {
        if (!c || !name)
                return def;
        for (size_t i = 0; i < c->n_custom; i++)
                if (strcasecmp(c->custom[i].name, name) == 0)
                        return c->custom[i].value;
        return def;
}

SESSIOND_EXPORT char *sessiond_config_value_to_string(const struct sessiond_config *c, size_t idx) {
        const struct sessiond_setting *s;
        const void *p;
        char *out = NULL;
        int r = -1;

        if (idx >= sessiond_settings_count)
                return NULL;
        s = &sessiond_settings[idx];
        p = setting_cptr(c, s);
        switch (s->type) {
        case SESSIOND_TYPE_BOOL:
                return strdup(*(const bool *) p ? "true" : "false");
        case SESSIOND_TYPE_INT:
        case SESSIOND_TYPE_DURATION:
                r = asprintf(&out, "%" PRId64, *(const int64_t *) p);
                break;
        case SESSIOND_TYPE_DOUBLE: {
                double d = *(const double *) p;
                /* "100.0" rather than "100": it reads back as a number with
                 * a fraction, like the guide writes it. */
                if (d < 1e15 && d > -1e15 && d == (double) (int64_t) d)
                        r = asprintf(&out, "%.1f", d);
                else {
                        /* The shortest form that reads back the same. */
                        r = asprintf(&out, "%.15g", d);
                        if (r >= 0 && strtod(out, NULL) != d) {
                                free(out);
                                r = asprintf(&out, "%.17g", d);
                        }
                }
                break;
        }
        case SESSIOND_TYPE_STRING:
                if (setting_is_conninfo(s))
                        return sessiond_conninfo_redact(*(char *const *) p, &out) < 0 ? NULL : out;
                return strdup(*(char *const *) p);
        case SESSIOND_TYPE_ENVIRONMENT:
                return strdup(sessiond_environment_to_string(*(const enum sessiond_environment *) p));
        }
        return r < 0 ? NULL : out;
}
