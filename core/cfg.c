/*
 * cfg: collecting, path-naming configuration getters.
 */
#include "core/cfg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sjson.h"

int cfg_open(struct cfg *c, const char *path)
{
    memset(c, 0, sizeof(*c));
    c->file = xstrdup(path);
    const char *slash = strrchr(path, '/');
    c->dir = slash ? xstrndup(path, (size_t)(slash - path + 1)) : xstrdup("");
    char *err = NULL;
    json_t *root = sjson_load_file(path, CFG_MAX_BYTES, &err);
    if (!root) {
        /* sjson already prefixes the file name */
        c->errors = xrealloc(c->errors, (c->nerrors + 1) * sizeof(char *));
        c->errors[c->nerrors++] = err;
        return -1;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        cfg_error(c, "", "expected a JSON object");
        return -1;
    }
    c->root = root;
    return 0;
}

void cfg_clear(struct cfg *c)
{
    for (size_t i = 0; i < c->nerrors; i++)
        free(c->errors[i]);
    free(c->errors);
    free(c->file);
    free(c->dir);
    json_decref(c->root);
    memset(c, 0, sizeof(*c));
}

size_t cfg_print_errors(const struct cfg *c)
{
    for (size_t i = 0; i < c->nerrors; i++)
        fprintf(stderr, "%s\n", c->errors[i]);
    return c->nerrors;
}

void cfg_error(struct cfg *c, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    c->errors = xrealloc(c->errors, (c->nerrors + 1) * sizeof(char *));
    c->errors[c->nerrors++] =
        *path ? xasprintf("%s: %s: %s", c->file, path, msg) : xasprintf("%s: %s", c->file, msg);
    free(msg);
}

void cfg_join(char *buf, const char *path, const char *key)
{
    snprintf(buf, CFG_PATH_MAX, "%s%s%s", path, *path ? "." : "", key);
}

void cfg_index(char *buf, const char *path, size_t i)
{
    snprintf(buf, CFG_PATH_MAX, "%s[%zu]", path, i);
}

void cfg_keys(struct cfg *c, const char *path, const json_t *obj, const char *const allowed[])
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], k) != 0)
            i++;
        if (!allowed[i]) {
            char p[CFG_PATH_MAX];
            cfg_join(p, path, k);
            cfg_error(c, p, "unknown key");
        }
    }
}

/* The member key of obj if present and of the wanted type; records errors otherwise. */
static json_t *member(struct cfg *c, const char *path, const json_t *obj, const char *key,
                      bool required, json_type type, const char *what)
{
    char p[CFG_PATH_MAX];
    cfg_join(p, path, key);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            cfg_error(c, p, "required, expected %s", what);
        return NULL;
    }
    bool ok = json_typeof(v) == type || (type == JSON_TRUE && json_is_boolean(v));
    if (!ok) {
        cfg_error(c, p, "expected %s", what);
        return NULL;
    }
    return v;
}

json_t *cfg_object(struct cfg *c, const char *path, const json_t *obj, const char *key,
                   bool required)
{
    return member(c, path, obj, key, required, JSON_OBJECT, "an object");
}

json_t *cfg_array(struct cfg *c, const char *path, const json_t *obj, const char *key,
                  bool required)
{
    return member(c, path, obj, key, required, JSON_ARRAY, "an array");
}

const char *cfg_string(struct cfg *c, const char *path, const json_t *obj, const char *key,
                       bool required, const char *dflt)
{
    json_t *v = member(c, path, obj, key, required, JSON_STRING, "a non-empty string");
    if (v && json_string_length(v) == 0) {
        char p[CFG_PATH_MAX];
        cfg_join(p, path, key);
        cfg_error(c, p, "expected a non-empty string");
        return dflt;
    }
    return v ? json_string_value(v) : dflt;
}

int64_t cfg_int(struct cfg *c, const char *path, const json_t *obj, const char *key, bool required,
                int64_t dflt, int64_t min, int64_t max)
{
    char what[96];
    snprintf(what, sizeof(what), "an integer from %lld to %lld", (long long)min, (long long)max);
    json_t *v = member(c, path, obj, key, required, JSON_INTEGER, what);
    if (!v)
        return dflt;
    int64_t n = json_integer_value(v);
    if (n < min || n > max) {
        char p[CFG_PATH_MAX];
        cfg_join(p, path, key);
        cfg_error(c, p, "expected %s", what);
        return dflt;
    }
    return n;
}

bool cfg_bool(struct cfg *c, const char *path, const json_t *obj, const char *key, bool dflt)
{
    json_t *v = member(c, path, obj, key, false, JSON_TRUE, "true or false");
    return v ? json_is_true(v) : dflt;
}

int cfg_enum(struct cfg *c, const char *path, const json_t *obj, const char *key, bool required,
             const char *const choices[], int dflt)
{
    char what[256] = "one of ";
    for (int i = 0; choices[i]; i++) {
        strncat(what, choices[i], sizeof(what) - strlen(what) - 3);
        if (choices[i + 1])
            strncat(what, ", ", sizeof(what) - strlen(what) - 1);
    }
    json_t *v = member(c, path, obj, key, required, JSON_STRING, what);
    if (!v)
        return dflt;
    for (int i = 0; choices[i]; i++)
        if (strcmp(choices[i], json_string_value(v)) == 0)
            return i;
    char p[CFG_PATH_MAX];
    cfg_join(p, path, key);
    cfg_error(c, p, "expected %s", what);
    return dflt;
}

char *cfg_file(struct cfg *c, const char *path, const json_t *obj, const char *key, bool required)
{
    const char *s = cfg_string(c, path, obj, key, required, NULL);
    if (!s)
        return NULL;
    return s[0] == '/' ? xstrdup(s) : xasprintf("%s%s", c->dir, s);
}

void cfg_sha256(struct cfg *c, const char *path, const json_t *obj, const char *key,
                unsigned char out[32])
{
    const char *s = cfg_string(c, path, obj, key, true, NULL);
    if (s && hex_decode(s, out, 32) != 0) {
        char p[CFG_PATH_MAX];
        cfg_join(p, path, key);
        cfg_error(c, p, "expected 64 hex digits (a SHA-256)");
    }
}

int hostport_parse(const char *s, char **host, int *port)
{
    const char *colon;
    size_t hl;
    const char *h = s;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':')
            return -1;
        h = s + 1;
        hl = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hl = (size_t)(colon - s);
    }
    char *endp;
    long p = strtol(colon + 1, &endp, 10);
    if (hl == 0 || colon[1] == '\0' || *endp || p < 0 || p > 65535)
        return -1;
    *host = xstrndup(h, hl);
    *port = (int)p;
    return 0;
}

int cfg_listen(struct cfg *c, const char *path, const json_t *obj, const char *key, bool required,
               char **host, int *port)
{
    const char *s = cfg_string(c, path, obj, key, required, NULL);
    if (!s)
        return -1;
    if (hostport_parse(s, host, port) != 0) {
        char p[CFG_PATH_MAX];
        cfg_join(p, path, key);
        cfg_error(c, p, "expected host:port, e.g. 127.0.0.1:8080");
        return -1;
    }
    return 0;
}
