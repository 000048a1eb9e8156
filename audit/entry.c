/*
 * entry: canonical entry encoding. A small encoder of its own rather than json_dumps(): it
 * refuses floats and non-ASCII keys outright, escapes every non-ASCII character, and lets the
 * fields be encoded on the submitting thread and sealed (prev, seq, v) by the writer. One
 * encoder, two ways in: the builder's calls from C values (the gateway's per-request entries,
 * no tree to allocate), and entry_body_encode(), which walks a jansson tree through the same
 * calls (the rare kinds), so that the two cannot differ in bytes or in what they refuse.
 */
#include "audit/entry.h"

#include <stdlib.h>
#include <string.h>

/* Room for most entries in one allocation (an outcome takes ~160 bytes, a decision with one
 * mandate ~390), without holding much more than they need while they wait in the writer's
 * queue; a priced decision (~600, two mandates) grows it once. */
#define ENTRY_INITIAL_CAP 512

static const char hex[] = "0123456789abcdef";

/* The length of the well-formed UTF-8 sequence at s (n bytes left), its code point in *cp; 0 if
 * there is none. RFC 3629 (no overlongs, no surrogates, nothing past U+10FFFF): exactly what
 * jansson's json_string() accepts, so that a string refused as a tree is refused here too. */
static size_t utf8_seq(const unsigned char *s, size_t n, unsigned *cp)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, *cp = c & 0x1fu;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, *cp = c & 0x0fu, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, *cp = c & 0x07u, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (len > n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if (i > 1 && (s[i] < 0x80 || s[i] > 0xbf))
            return 0;
        *cp = *cp << 6 | (s[i] & 0x3fu);
    }
    return len;
}

static void put_u(struct sb *b, unsigned u)
{
    char e[6] = {'\\', 'u', hex[u >> 12], hex[(u >> 8) & 15], hex[(u >> 4) & 15], hex[u & 15]};
    sb_putn(b, e, 6);
}

/* Are all 8 bytes of x printable ASCII other than '"' and '\\' (copied as they are)? Word-wide
 * byte tests: a byte below 0x20, one at or above 0x7f, one equal to '"' or to '\\' each sets
 * its high bit in the corresponding term (the usual has-less / has-zero tricks). */
static bool plain8(const char *s)
{
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    uint64_t x;
    memcpy(&x, s, 8);
    uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
    uint64_t below = (x - ones * 0x20) & ~x;
    uint64_t above = (x + ones) | x;
    uint64_t is_quote = (quote - ones) & ~quote, is_backslash = (backslash - ones) & ~backslash;
    return ((below | above | is_quote | is_backslash) & high) == 0;
}

/* A JSON string with everything outside printable ASCII escaped (\uXXXX, surrogate pairs above
 * the BMP). NULL, or why s is refused: it is not UTF-8. */
static const char *put_string(struct sb *b, const char *s, size_t n)
{
    sb_putn(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n;) {
        if (n - i >= 8 && plain8(s + i)) {
            i += 8;
            continue;
        }
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            i++;
            continue;
        }
        sb_putn(b, s + run, i - run);
        unsigned cp = c;
        size_t len = c < 0x80 ? 1 : utf8_seq((const unsigned char *)s + i, n - i, &cp);
        if (!len)
            return "entry strings must be UTF-8";
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sb_putn(b, esc, 2);
        } else if (cp > 0xffff) {
            put_u(b, 0xd800 + ((cp - 0x10000) >> 10));
            put_u(b, 0xdc00 + ((cp - 0x10000) & 0x3ff));
        } else {
            put_u(b, cp);
        }
        i += len;
        run = i;
    }
    sb_putn(b, s + run, n - run);
    sb_putn(b, "\"", 1);
    return NULL;
}

static const char *ascii_key(const char *k)
{
    for (const char *p = k; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            return "entry keys must be printable ASCII";
    return NULL;
}

static const char *top_key(const char *k)
{
    const char *why = ascii_key(k);
    if (why)
        return why;
    if (strcmp(k, "v") >= 0 || strcmp(k, "prev") == 0 || strcmp(k, "seq") == 0)
        return "v, seq and prev are the writer's, and every key must sort before v";
    return NULL;
}

/* --- the builder ---------------------------------------------------------------------------- */

void entry_builder_init(struct entry_builder *eb)
{
    memset(eb, 0, sizeof(*eb));
    /* sized up front rather than grown from nothing by sb_putn: one allocation, not ten */
    eb->b.buf = xmalloc(ENTRY_INITIAL_CAP);
    eb->b.buf[0] = '\0';
    eb->b.cap = ENTRY_INITIAL_CAP;
    eb->at_prev = eb->at_seq = SIZE_MAX;
}

/* Begin a member of the innermost container (its comma and key, checked); false when the entry
 * is refused, now or before. */
static bool member(struct entry_builder *eb, const char *key)
{
    if (eb->why)
        return false;
    if (eb->depth == ENTRY_MAX_DEPTH) {
        eb->why = "nested too deeply";
        return false;
    }
    if (eb->level[eb->depth].array != !key)
        abort(); /* a key in an array, or none in an object: a programming error, not input */
    if (eb->depth && eb->level[eb->depth].any)
        sb_putn(&eb->b, ",", 1);
    eb->level[eb->depth].any = true;
    if (!key)
        return true;
    const char *last = eb->level[eb->depth].last;
    eb->why = eb->depth ? ascii_key(key) : top_key(key);
    if (!eb->why && last && strcmp(last, key) >= 0)
        eb->why = "entry keys must be given in ascending order";
    if (eb->why)
        return false;
    eb->level[eb->depth].last = key;
    if (!eb->depth) {
        /* "prev" and "seq" go where they sort: before the first top-level key after them. */
        if (eb->at_prev == SIZE_MAX && strcmp(key, "prev") > 0)
            eb->at_prev = eb->b.len;
        if (eb->at_seq == SIZE_MAX && strcmp(key, "seq") > 0)
            eb->at_seq = eb->b.len;
    }
    eb->why = put_string(&eb->b, key, strlen(key)); /* printable ASCII: never refused */
    sb_putn(&eb->b, ":", 1);
    return true;
}

/* After a member's value: each top-level field ends with a comma (struct entry_body). */
static void ended(struct entry_builder *eb)
{
    if (!eb->depth)
        sb_putn(&eb->b, ",", 1);
}

static void put_str(struct entry_builder *eb, const char *key, const char *s, size_t n)
{
    if (member(eb, key) && !(eb->why = put_string(&eb->b, s, n)))
        ended(eb);
}

void entry_put_str(struct entry_builder *eb, const char *key, const char *s)
{
    put_str(eb, key, s, strlen(s));
}

void entry_put_int(struct entry_builder *eb, const char *key, int64_t v)
{
    if (!member(eb, key))
        return;
    sb_int(&eb->b, (long long)v);
    ended(eb);
}

void entry_put_money(struct entry_builder *eb, const char *key, const struct money *m)
{
    entry_open_object(eb, key);
    entry_put_str(eb, "currency", m->currency);
    entry_put_int(eb, "value", m->value);
    entry_close(eb);
}

static void open_container(struct entry_builder *eb, const char *key, bool array)
{
    if (!member(eb, key))
        return;
    sb_putn(&eb->b, array ? "[" : "{", 1);
    eb->depth++;
    eb->level[eb->depth].last = NULL;
    eb->level[eb->depth].array = array;
    eb->level[eb->depth].any = false;
}

void entry_open_object(struct entry_builder *eb, const char *key)
{
    open_container(eb, key, false);
}

void entry_open_array(struct entry_builder *eb, const char *key)
{
    open_container(eb, key, true);
}

void entry_close(struct entry_builder *eb)
{
    if (eb->why)
        return;
    if (!eb->depth)
        abort(); /* nothing open: a programming error */
    sb_putn(&eb->b, eb->level[eb->depth].array ? "]" : "}", 1);
    eb->depth--;
    ended(eb);
}

int entry_builder_finish(struct entry_builder *eb, struct entry_body *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    *why = eb->why;
    if (eb->why) {
        sb_clear(&eb->b);
        return -1;
    }
    if (eb->depth)
        abort(); /* a container left open: a programming error */
    out->text = eb->b.buf;
    out->len = eb->b.len;
    out->at_prev = eb->at_prev == SIZE_MAX ? eb->b.len : eb->at_prev;
    out->at_seq = eb->at_seq == SIZE_MAX ? eb->b.len : eb->at_seq;
    eb->b = (struct sb){0};
    return 0;
}

/* --- a jansson tree through the builder ----------------------------------------------------- */

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void put_tree(struct entry_builder *eb, const char *key, const json_t *v);

/* obj's members, in the order of their keys. */
static void put_members(struct entry_builder *eb, const json_t *obj)
{
    size_t n = json_object_size(obj), i = 0;
    const char **keys = xmalloc((n ? n : 1) * sizeof(char *));
    const char *k;
    json_t *m;
    json_object_foreach((json_t *)obj, k, m)
    {
        keys[i++] = k;
    }
    qsort(keys, n, sizeof(char *), cmp_key);
    for (i = 0; i < n && !eb->why; i++)
        put_tree(eb, keys[i], json_object_get(obj, keys[i]));
    free(keys);
}

static void put_literal(struct entry_builder *eb, const char *key, const char *text)
{
    if (!member(eb, key))
        return;
    sb_puts(&eb->b, text);
    ended(eb);
}

static void put_tree(struct entry_builder *eb, const char *key, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        entry_open_object(eb, key);
        put_members(eb, v);
        entry_close(eb);
        return;
    case JSON_ARRAY:
        entry_open_array(eb, key);
        for (size_t i = 0; i < json_array_size(v) && !eb->why; i++)
            put_tree(eb, NULL, json_array_get(v, i));
        entry_close(eb);
        return;
    case JSON_STRING:
        put_str(eb, key, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        entry_put_int(eb, key, json_integer_value(v));
        return;
    case JSON_TRUE:
        put_literal(eb, key, "true");
        return;
    case JSON_FALSE:
        put_literal(eb, key, "false");
        return;
    case JSON_NULL:
        put_literal(eb, key, "null");
        return;
    case JSON_REAL:
        if (member(eb, key))
            eb->why = "floats are not allowed in entries";
        return;
    }
}

int entry_body_encode(const json_t *obj, struct entry_body *out, const char **why)
{
    struct entry_builder eb;
    entry_builder_init(&eb);
    if (json_is_object(obj))
        put_members(&eb, obj);
    else
        eb.why = "an entry is a JSON object";
    return entry_builder_finish(&eb, out, why);
}

char *entry_seal(const struct entry_body *e, uint64_t seq, const char prev_hex[65], size_t *len)
{
    /* The body and what the writer adds (at most 109 bytes with the NUL): one allocation, not
     * three reallocations as the buffer grows. */
    struct sb b = {xmalloc(e->len + 128), 0, e->len + 128};
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
