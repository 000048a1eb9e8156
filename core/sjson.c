/*
 * sjson: strict parsing and small accessors over jansson.
 */
#include "core/sjson.h"

#include <stdlib.h>
#include <string.h>

static int depth_ok(const json_t *v, int depth)
{
    if (depth > SJSON_MAX_DEPTH)
        return 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *m;
        json_object_foreach((json_t *)v, k, m)
        {
            if (!depth_ok(m, depth + 1))
                return 0;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m)
        {
            if (!depth_ok(m, depth + 1))
                return 0;
        }
    }
    return 1;
}

json_t *sjson_parse(const char *buf, size_t len, char **err)
{
    /* jansson 2.14 skips a NUL byte after a number or literal ("[1\0]"): no JSON text has one. */
    const char *nul = memchr(buf, '\0', len);
    if (nul) {
        *err = xasprintf("invalid JSON: a NUL byte at offset %zu", (size_t)(nul - buf));
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        *err = xasprintf("invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!depth_ok(v, 1)) {
        json_decref(v);
        *err = xasprintf("JSON nested deeper than %d levels", SJSON_MAX_DEPTH);
        return NULL;
    }
    return v;
}

json_t *sjson_load_file(const char *path, size_t max, char **err)
{
    size_t len;
    char *buf = file_read(path, max, &len, err);
    if (!buf)
        return NULL;
    char *perr = NULL;
    json_t *v = sjson_parse(buf, len, &perr);
    free(buf);
    if (!v) {
        *err = xasprintf("%s: %s", path, perr);
        free(perr);
    }
    return v;
}

const char *sjson_str(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int sjson_int(const json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        return -1;
    *out = json_integer_value(v);
    return 0;
}

char *sjson_dump(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (!s)
        abort(); /* only fails on allocation */
    return s;
}

void sjson_set(json_t *obj, const char *key, json_t *v)
{
    if (json_object_set_new(obj, key, v) != 0)
        abort();
}

void sjson_append(json_t *arr, json_t *v)
{
    if (json_array_append_new(arr, v) != 0)
        abort();
}

json_t *sjson_text(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    char *t = xstrdup(s);
    for (char *p = t; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(t);
    free(t);
    if (!j)
        abort(); /* ASCII without NUL is always a valid string: out of memory */
    return j;
}
