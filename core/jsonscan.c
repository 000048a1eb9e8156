/*
 * jsonscan: strict JSON checked in one pass, read in place.
 *
 * The checker follows jansson 2.14's lexer (src/load.c) rule for rule, since the result must be
 * the same as sjson_parse()'s for every input: a number is an integer unless it has a fraction or
 * an exponent; "-", "01", "1.", "1e" are invalid; integers are strtoll()'s range; a real is
 * refused only when strtod() would overflow to HUGE_VAL; strings refuse control bytes below 0x20
 * and \u0000, and a \u escape of a surrogate must be a high one followed by a \u low one.
 */
#include "core/jsonscan.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sjson.h"

#define FNV_OFFSET      2166136261u
#define FNV_PRIME       16777619u
#define JS_PAIRWISE_MAX 16

struct scan {
    const unsigned char *p, *end;
    struct js_doc *d;
};

static bool is_ws(unsigned c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(unsigned c)
{
    return c >= '0' && c <= '9';
}

static void skip_ws(struct scan *s)
{
    while (s->p < s->end && is_ws(*s->p))
        s->p++;
}

/* The length of the UTF-8 sequence at p (2 to 4), or 0 when it is not one jansson's
 * utf8_check_first() and utf8_check_full() accept: overlong, surrogate, above U+10FFFF, cut. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned u = p[0];
    size_t n = u >= 0xC2 && u <= 0xDF   ? 2
               : u >= 0xE0 && u <= 0xEF ? 3
               : u >= 0xF0 && u <= 0xF4 ? 4
                                        : 0;
    if (n == 0 || (size_t)(end - p) < n)
        return 0;
    uint32_t v = u & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
    for (size_t i = 1; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    static const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || v < least[n])
        return 0;
    return n;
}

static int hex4(const unsigned char *p, const unsigned char *end, uint32_t *out)
{
    if (end - p < 4)
        return -1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        int d = is_digit(c)            ? (int)(c - '0')
                : c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10)
                : c >= 'A' && c <= 'F' ? (int)(c - 'A' + 10)
                                       : -1;
        if (d < 0)
            return -1;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 0;
}

static size_t utf8_put(uint32_t cp, unsigned char out[4])
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The escape at *pp (its backslash) decoded into out: its length (1 to 4), *pp moved past it;
 * 0 when it is invalid, a lone or unpaired surrogate, or \u0000. */
static size_t escape(const unsigned char **pp, const unsigned char *end, unsigned char out[4])
{
    const unsigned char *p = *pp + 1;
    if (p == end)
        return 0;
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *e = *p ? strchr(from, *p) : NULL;
    if (e) {
        out[0] = (unsigned char)to[e - from];
        *pp = p + 1;
        return 1;
    }
    uint32_t cp, lo;
    if (*p != 'u' || hex4(p + 1, end, &cp) != 0 || cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
        return 0;
    p += 5;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (end - p < 2 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &lo) != 0 ||
            lo < 0xDC00 || lo > 0xDFFF)
            return 0;
        cp = ((cp - 0xD800) << 10) + (lo - 0xDC00) + 0x10000;
        p += 6;
    }
    *pp = p;
    return utf8_put(cp, out);
}

/* Check the string at s->p (its opening quote) and step past it. For a key, k gets its raw span,
 * and the hash and length of its decoded bytes. */
static int string(struct scan *s, struct js_member *k)
{
    const unsigned char *p = s->p + 1, *end = s->end;
    uint32_t h = FNV_OFFSET;
    size_t dlen = 0;
    bool esc = false;
    for (;;) {
        if (!k) /* a value's plain ASCII needs neither decoding nor hashing */
            while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
                p++;
        if (p == end)
            return -1;
        unsigned c = *p;
        if (c == '"')
            break;
        unsigned char buf[4];
        const unsigned char *bytes = p;
        size_t n;
        if (c < 0x20) {
            return -1;
        } else if (c == '\\') {
            n = escape(&p, end, buf);
            bytes = buf;
            esc = true;
        } else {
            n = c < 0x80 ? 1 : utf8_len(p, end);
            p += n;
        }
        if (n == 0)
            return -1;
        if (k) {
            for (size_t i = 0; i < n; i++)
                h = (h ^ bytes[i]) * FNV_PRIME;
            dlen += n;
        }
    }
    if (k) {
        k->key.p = (const char *)s->p + 1;
        k->key.n = (size_t)(p - s->p - 1);
        k->hash = h;
        k->key_dlen = dlen;
        k->key_esc = esc;
    }
    s->p = p + 1;
    return 0;
}

/* Does the number whose significant digits start at first (not '0'; '.' is skipped) and end at
 * end, and whose leading digit stands for 10^(lead - 1), overflow a double in strtod()? Only a
 * lead of exactly 309 is close: DBL_MAX is 1.797...e308. */
static bool overflows(const unsigned char *first, const unsigned char *end, int64_t lead)
{
    if (lead != 309)
        return lead > 309;
    /* The rounding boundary near DBL_MAX has 309 significant digits: the first 400 and a sticky
     * 1 for any non-zero rest round exactly as the whole number does. */
    char buf[420];
    size_t n = 0;
    bool rest = false;
    for (const unsigned char *p = first; p < end; p++) {
        if (*p == '.')
            continue;
        if (n < 400)
            buf[n++] = (char)*p;
        else if (*p != '0')
            rest = true;
    }
    if (rest)
        buf[n++] = '1';
    snprintf(buf + n, sizeof(buf) - n, "e%d", 309 - (int)n);
    errno = 0;
    double v = strtod(buf, NULL);
    return v == HUGE_VAL && errno == ERANGE;
}

/* An exponent's digits after 'e', saturated far beyond any double's range. */
static int64_t exponent(const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *p = *pp;
    int64_t sign = 1, e = 0;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    for (; p < end && is_digit(*p); p++)
        if (e < 1000000000)
            e = e * 10 + (*p - '0');
    *pp = p;
    return sign * e;
}

/* The integer at [p, end) (optional '-', digits) within strtoll()'s range? */
static bool int_fits(const unsigned char *p, const unsigned char *end)
{
    bool neg = *p == '-';
    uint64_t v = 0;
    for (p += neg; p < end; p++) {
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    return v <= (uint64_t)INT64_MAX + neg;
}

static int number(struct scan *s)
{
    const unsigned char *start = s->p, *end = s->end;
    const unsigned char *p = start + (*start == '-');
    const unsigned char *digits = p;
    if (p == end || !is_digit(*p))
        return -1;
    if (*p == '0') {
        if (++p < end && is_digit(*p))
            return -1;
    } else {
        while (p < end && is_digit(*p))
            p++;
    }
    int64_t lead = p - digits; /* the decimal point's place among the digits */
    if (p == end || (*p != '.' && *p != 'e' && *p != 'E')) {
        if (!int_fits(start, p))
            return -1;
        s->p = p;
        return 0;
    }
    if (*p == '.') {
        if (++p == end || !is_digit(*p))
            return -1;
        while (p < end && is_digit(*p))
            p++;
    }
    const unsigned char *mant_end = p;
    int64_t e = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        const unsigned char *ed = p < end && (*p == '+' || *p == '-') ? p + 1 : p;
        if (ed == end || !is_digit(*ed))
            return -1;
        e = exponent(&p, end);
    }
    const unsigned char *first = digits;
    for (; first < mant_end && (*first == '0' || *first == '.'); first++)
        lead -= *first == '0';
    if (first < mant_end && overflows(first, mant_end, lead + e))
        return -1;
    s->p = p;
    return 0;
}

static int literal(struct scan *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

/* An iterator over the decoded bytes of a checked string's raw span [p, end). */
struct iter {
    const unsigned char *p, *end;
    unsigned char buf[4];
    size_t n, i;
};

static int iter_next(struct iter *it)
{
    if (it->i < it->n)
        return it->buf[it->i++];
    if (it->p == it->end)
        return -1;
    if (*it->p != '\\')
        return *it->p++;
    it->n = escape(&it->p, it->end, it->buf);
    it->i = 1;
    return it->buf[0];
}

static struct iter iter_of(struct js_val raw)
{
    return (struct iter){.p = (const unsigned char *)raw.p,
                         .end = (const unsigned char *)raw.p + raw.n};
}

/* Order of keys by hash, decoded length, then decoded bytes: equal keys compare 0. */
static int key_cmp(const struct js_member *a, const struct js_member *b)
{
    if (a->hash != b->hash)
        return a->hash < b->hash ? -1 : 1;
    if (a->key_dlen != b->key_dlen)
        return a->key_dlen < b->key_dlen ? -1 : 1;
    if (!a->key_esc && !b->key_esc)
        return memcmp(a->key.p, b->key.p, a->key_dlen);
    struct iter x = iter_of(a->key), y = iter_of(b->key);
    for (;;) {
        int c = iter_next(&x), e = iter_next(&y);
        if (c != e)
            return c < e ? -1 : 1;
        if (c < 0)
            return 0;
    }
}

static int member_cmp(const void *a, const void *b)
{
    return key_cmp(a, b);
}

/* Are two of the n members at m the same key? Few are compared pairwise as they come; more are
 * sorted once the object is read, so that no object costs quadratic time (jansson hashes). */
static bool has_duplicate(struct js_member *m, size_t n)
{
    if (n <= JS_PAIRWISE_MAX) {
        for (size_t i = 0; i + 1 < n; i++)
            if (key_cmp(&m[i], &m[n - 1]) == 0)
                return true;
        return false;
    }
    qsort(m, n, sizeof(*m), member_cmp);
    for (size_t i = 0; i + 1 < n; i++)
        if (key_cmp(&m[i], &m[i + 1]) == 0)
            return true;
    return false;
}

static void push(struct js_doc *d, const struct js_member *m)
{
    if (d->n == d->cap) {
        d->cap *= 2;
        if (d->m == d->inline_m)
            d->m = memcpy(xmalloc(d->cap * sizeof(*d->m)), d->inline_m, sizeof(d->inline_m));
        else
            d->m = xrealloc(d->m, d->cap * sizeof(*d->m));
    }
    d->m[d->n++] = *m;
}

static int value(struct scan *s, int depth);

/* The members of the object being read sit on top of d's member stack, from base: a duplicate
 * is looked for among them, and they are popped at the end, except the top-level object's. */
static int object(struct scan *s, int depth)
{
    struct js_doc *d = s->d;
    size_t base = d->n;
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        struct js_member m;
        if (s->p == s->end || *s->p != '"' || string(s, &m) != 0)
            return -1;
        skip_ws(s);
        if (s->p == s->end || *s->p != ':')
            return -1;
        s->p++;
        skip_ws(s);
        m.val.p = (const char *)s->p;
        if (value(s, depth + 1) != 0)
            return -1;
        m.val.n = (size_t)((const char *)s->p - m.val.p);
        push(d, &m);
        if (d->n - base <= JS_PAIRWISE_MAX && has_duplicate(d->m + base, d->n - base))
            return -1;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            skip_ws(s);
            continue;
        }
        if (s->p == s->end || *s->p != '}')
            return -1;
        s->p++;
        if (d->n - base > JS_PAIRWISE_MAX && has_duplicate(d->m + base, d->n - base))
            return -1;
        if (depth > 1)
            d->n = base;
        return 0;
    }
}

static int array(struct scan *s, int depth)
{
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 0;
    }
    for (;;) {
        if (value(s, depth + 1) != 0)
            return -1;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            skip_ws(s);
            continue;
        }
        if (s->p == s->end || *s->p != ']')
            return -1;
        s->p++;
        return 0;
    }
}

static int value(struct scan *s, int depth)
{
    if (depth > SJSON_MAX_DEPTH || s->p == s->end)
        return -1;
    switch (*s->p) {
    case '{':
        return object(s, depth);
    case '[':
        return array(s, depth);
    case '"':
        return string(s, NULL);
    case 't':
        return literal(s, "true", 4);
    case 'f':
        return literal(s, "false", 5);
    case 'n':
        return literal(s, "null", 4);
    default:
        return number(s);
    }
}

int js_parse(struct js_doc *d, const char *buf, size_t len)
{
    d->m = d->inline_m;
    d->n = 0;
    d->cap = JS_INLINE_MEMBERS;
    d->root = (struct js_val){NULL, 0};
    struct scan s = {(const unsigned char *)buf, (const unsigned char *)buf + len, d};
    skip_ws(&s);
    /* jansson without JSON_DECODE_ANY: an object or an array. */
    if (s.p == s.end || (*s.p != '{' && *s.p != '['))
        return -1;
    const char *start = (const char *)s.p;
    if (value(&s, 1) != 0)
        return -1;
    d->root = (struct js_val){start, (size_t)((const char *)s.p - start)};
    skip_ws(&s);
    if (s.p != s.end) {
        d->root = (struct js_val){NULL, 0};
        return -1;
    }
    return 0;
}

void js_clear(struct js_doc *d)
{
    if (d->m != d->inline_m)
        free(d->m);
    d->m = d->inline_m;
    d->n = 0;
}

enum js_type js_type(struct js_val v)
{
    if (!v.p)
        return JS_NONE;
    switch (v.p[0]) {
    case '{':
        return JS_OBJECT;
    case '[':
        return JS_ARRAY;
    case '"':
        return JS_STRING;
    case 't':
        return JS_TRUE;
    case 'f':
        return JS_FALSE;
    case 'n':
        return JS_NULL;
    default:
        for (size_t i = 0; i < v.n; i++)
            if (v.p[i] == '.' || v.p[i] == 'e' || v.p[i] == 'E')
                return JS_REAL;
        return JS_INT;
    }
}

/* Is the raw key (escaped when esc) key, of n bytes? */
static bool key_is(struct js_val raw, bool esc, const char *key, size_t n)
{
    if (!esc)
        return raw.n == n && memcmp(raw.p, key, n) == 0;
    struct iter it = iter_of(raw);
    for (size_t i = 0; i < n; i++)
        if (iter_next(&it) != (unsigned char)key[i])
            return false;
    return iter_next(&it) < 0;
}

struct js_val js_root_get(const struct js_doc *d, const char *key)
{
    size_t n = strlen(key);
    for (size_t i = 0; i < d->n; i++)
        if (d->m[i].key_dlen == n && key_is(d->m[i].key, d->m[i].key_esc, key, n))
            return d->m[i].val;
    return (struct js_val){NULL, 0};
}

/* In a checked document: the end of the string whose opening quote is at p. */
static const char *string_end(const char *p, bool *esc)
{
    for (p++; *p != '"'; p++)
        if (*p == '\\') {
            p++;
            *esc = true;
        }
    return p + 1;
}

/* In a checked document: the end of the value at p. */
static const char *value_end(const char *p, const char *end)
{
    bool esc;
    if (*p == '"')
        return string_end(p, &esc);
    if (*p != '{' && *p != '[') {
        while (p < end && *p != ',' && *p != '}' && *p != ']' && !is_ws((unsigned char)*p))
            p++;
        return p;
    }
    int depth = 0;
    do {
        if (*p == '"') {
            p = string_end(p, &esc);
            continue;
        }
        if (*p == '{' || *p == '[')
            depth++;
        else if (*p == '}' || *p == ']')
            depth--;
        p++;
    } while (depth > 0);
    return p;
}

static const char *ws_end(const char *p, const char *end)
{
    while (p < end && is_ws((unsigned char)*p))
        p++;
    return p;
}

/* Step from p (after '{' or '[', or after a member or element) to the start of the next key or
 * element, or return NULL at the closing bracket. */
static const char *next_item(const char *p, const char *end)
{
    p = ws_end(p, end);
    if (*p == ',')
        p = ws_end(p + 1, end);
    return *p == '}' || *p == ']' ? NULL : p;
}

struct js_val js_get(struct js_val obj, const char *key)
{
    if (js_type(obj) != JS_OBJECT)
        return (struct js_val){NULL, 0};
    size_t n = strlen(key);
    const char *end = obj.p + obj.n;
    for (const char *p = next_item(obj.p + 1, end); p; p = next_item(p, end)) {
        bool esc = false;
        const char *kend = string_end(p, &esc);
        struct js_val raw = {p + 1, (size_t)(kend - p - 2)};
        const char *v = ws_end(ws_end(kend, end) + 1, end);
        p = value_end(v, end);
        if (key_is(raw, esc, key, n))
            return (struct js_val){v, (size_t)(p - v)};
    }
    return (struct js_val){NULL, 0};
}

size_t js_size(struct js_val v)
{
    enum js_type t = js_type(v);
    if (t != JS_OBJECT && t != JS_ARRAY)
        return 0;
    size_t n = 0;
    const char *end = v.p + v.n;
    for (const char *p = next_item(v.p + 1, end); p; p = next_item(p, end)) {
        if (t == JS_OBJECT) {
            bool esc;
            p = ws_end(ws_end(string_end(p, &esc), end) + 1, end);
        }
        p = value_end(p, end);
        n++;
    }
    return n;
}

bool js_next(struct js_val arr, struct js_val *it)
{
    if (js_type(arr) != JS_ARRAY)
        return false;
    const char *end = arr.p + arr.n;
    const char *p = next_item(it->p ? it->p + it->n : arr.p + 1, end);
    if (!p)
        return false;
    *it = (struct js_val){p, (size_t)(value_end(p, end) - p)};
    return true;
}

int js_int(struct js_val v, int64_t *out)
{
    if (js_type(v) != JS_INT)
        return -1;
    const char *p = v.p;
    bool neg = *p == '-';
    uint64_t u = 0;
    for (p += neg; p < v.p + v.n; p++)
        u = u * 10 + (uint64_t)(*p - '0');
    /* js_parse() kept u within 2^63 when negative and INT64_MAX otherwise. */
    *out = neg ? (int64_t)(0 - u) : (int64_t)u;
    return 0;
}

size_t js_str(struct js_val v, char *dst, size_t cap)
{
    if (js_type(v) != JS_STRING) {
        dst[0] = '\0';
        return 0;
    }
    const unsigned char *p = (const unsigned char *)v.p + 1, *end = p + v.n - 2;
    size_t n = 0;
    while (p < end) {
        unsigned char buf[4];
        const unsigned char *bytes = p;
        size_t k = 1;
        if (*p == '\\') {
            k = escape(&p, end, buf);
            bytes = buf;
        } else {
            p++;
        }
        for (size_t i = 0; i < k; i++, n++)
            if (n + 1 < cap)
                dst[n] = (char)bytes[i];
    }
    dst[n + 1 < cap ? n : cap - 1] = '\0';
    return n;
}
