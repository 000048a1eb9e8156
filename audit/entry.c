/*
 * entry: canonical entry encoding. A small encoder of its own rather than json_dumps(): it
 * refuses floats and non-ASCII keys outright, escapes every non-ASCII character, and lets the
 * fields be encoded on the submitting thread and sealed (prev, seq, v) by the writer.
 */
#include "audit/entry.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define ENTRY_MAX_DEPTH 16

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A JSON string with everything outside printable ASCII escaped (\uXXXX, surrogate pairs above
 * the BMP). jansson has already checked that strings are valid UTF-8. */
static void put_string(struct sb *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sb_putn(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            i++;
            continue;
        }
        sb_putn(b, s + run, i - run);
        unsigned cp = c;
        size_t len = 1;
        if (c >= 0xf0 && i + 3 < n) {
            cp = (c & 0x07u) << 18 | ((unsigned char)s[i + 1] & 0x3fu) << 12 |
                 ((unsigned char)s[i + 2] & 0x3fu) << 6 | ((unsigned char)s[i + 3] & 0x3fu);
            len = 4;
        } else if (c >= 0xe0 && i + 2 < n) {
            cp = (c & 0x0fu) << 12 | ((unsigned char)s[i + 1] & 0x3fu) << 6 |
                 ((unsigned char)s[i + 2] & 0x3fu);
            len = 3;
        } else if (c >= 0xc0 && i + 1 < n) {
            cp = (c & 0x1fu) << 6 | ((unsigned char)s[i + 1] & 0x3fu);
            len = 2;
        }
        char esc[13];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_putn(b, esc, 2);
        } else if (cp > 0xffff) {
            unsigned hi = 0xd800 + ((cp - 0x10000) >> 10), lo = 0xdc00 + ((cp - 0x10000) & 0x3ff);
            snprintf(esc, sizeof(esc), "\\u%c%c%c%c\\u", hex[hi >> 12], hex[(hi >> 8) & 15],
                     hex[(hi >> 4) & 15], hex[hi & 15]);
            sb_putn(b, esc, 8);
            char tail[5] = {hex[lo >> 12], hex[(lo >> 8) & 15], hex[(lo >> 4) & 15], hex[lo & 15],
                            0};
            sb_putn(b, tail, 4);
        } else {
            char u[6] = {'\\',        'u', hex[cp >> 12], hex[(cp >> 8) & 15], hex[(cp >> 4) & 15],
                         hex[cp & 15]};
            sb_putn(b, u, 6);
        }
        i += len;
        run = i;
    }
    sb_putn(b, s + run, n - run);
    sb_putn(b, "\"", 1);
}

static const char *put_value(struct sb *b, const json_t *v, int depth);

static const char *ascii_key(const char *k)
{
    for (const char *p = k; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            return "entry keys must be printable ASCII";
    return NULL;
}

/* obj's keys, sorted, in a new array (caller frees); *why from check on the first bad key. */
static const char **sorted_keys(const json_t *obj, const char *(*check)(const char *),
                                const char **why)
{
    size_t n = json_object_size(obj), i = 0;
    const char **keys = xmalloc((n ? n : 1) * sizeof(char *));
    const char *k;
    json_t *m;
    json_object_foreach((json_t *)obj, k, m)
    {
        keys[i++] = k;
        if (!*why)
            *why = check(k);
    }
    qsort(keys, n, sizeof(char *), cmp_key);
    return keys;
}

static const char *put_object(struct sb *b, const json_t *v, int depth)
{
    size_t n = json_object_size(v), i;
    const char *why = NULL;
    const char **keys = sorted_keys(v, ascii_key, &why);
    sb_putn(b, "{", 1);
    for (i = 0; i < n && !why; i++) {
        if (i)
            sb_putn(b, ",", 1);
        put_string(b, keys[i], strlen(keys[i]));
        sb_putn(b, ":", 1);
        why = put_value(b, json_object_get(v, keys[i]), depth + 1);
    }
    sb_putn(b, "}", 1);
    free(keys);
    return why;
}

static const char *put_value(struct sb *b, const json_t *v, int depth)
{
    if (depth > ENTRY_MAX_DEPTH)
        return "nested too deeply";
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return put_object(b, v, depth);
    case JSON_ARRAY: {
        const char *why = NULL;
        sb_putn(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v) && !why; i++) {
            if (i)
                sb_putn(b, ",", 1);
            why = put_value(b, json_array_get(v, i), depth + 1);
        }
        sb_putn(b, "]", 1);
        return why;
    }
    case JSON_STRING:
        put_string(b, json_string_value(v), json_string_length(v));
        return NULL;
    case JSON_INTEGER:
        sb_int(b, (long long)json_integer_value(v));
        return NULL;
    case JSON_TRUE:
        sb_puts(b, "true");
        return NULL;
    case JSON_FALSE:
        sb_puts(b, "false");
        return NULL;
    case JSON_NULL:
        sb_puts(b, "null");
        return NULL;
    case JSON_REAL:
        return "floats are not allowed in entries";
    }
    return "unknown JSON type";
}

static const char *check_key(const char *k)
{
    const char *why = ascii_key(k);
    if (why)
        return why;
    if (strcmp(k, "v") >= 0 || strcmp(k, "prev") == 0 || strcmp(k, "seq") == 0)
        return "v, seq and prev are the writer's, and every key must sort before v";
    return NULL;
}

int entry_body_encode(const json_t *obj, struct entry_body *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(obj)) {
        *why = "an entry is a JSON object";
        return -1;
    }
    size_t n = json_object_size(obj), i;
    *why = NULL;
    const char **keys = sorted_keys(obj, check_key, why);
    struct sb b = {0};
    bool prev_set = false, seq_set = false;
    for (i = 0; i < n && !*why; i++) {
        if (!prev_set && strcmp(keys[i], "prev") > 0) {
            out->at_prev = b.len;
            prev_set = true;
        }
        if (!seq_set && strcmp(keys[i], "seq") > 0) {
            out->at_seq = b.len;
            seq_set = true;
        }
        put_string(&b, keys[i], strlen(keys[i]));
        sb_putn(&b, ":", 1);
        *why = put_value(&b, json_object_get(obj, keys[i]), 1);
        sb_putn(&b, ",", 1);
    }
    free(keys);
    if (*why) {
        sb_clear(&b);
        return -1;
    }
    if (!prev_set)
        out->at_prev = b.len;
    if (!seq_set)
        out->at_seq = b.len;
    out->text = b.buf ? b.buf : xstrdup("");
    out->len = b.len;
    return 0;
}

char *entry_seal(const struct entry_body *e, uint64_t seq, const char prev_hex[65], size_t *len)
{
    struct sb b = {0};
    sb_putn(&b, "{", 1);
    sb_putn(&b, e->text, e->at_prev);
    sb_puts(&b, "\"prev\":\"");
    sb_puts(&b, prev_hex);
    sb_puts(&b, "\",");
    sb_putn(&b, e->text + e->at_prev, e->at_seq - e->at_prev);
    sb_puts(&b, "\"seq\":");
    sb_int(&b, (long long)seq);
    sb_putn(&b, ",", 1);
    sb_putn(&b, e->text + e->at_seq, e->len - e->at_seq);
    sb_puts(&b, "\"v\":1}");
    *len = b.len;
    return b.buf;
}

void entry_body_clear(struct entry_body *b)
{
    free(b->text);
    memset(b, 0, sizeof(*b));
}
