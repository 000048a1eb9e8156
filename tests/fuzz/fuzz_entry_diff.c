/*
 * libFuzzer target: audit/entry's builder against the same fields as a jansson tree. The input
 * is a program of builder calls, run on an entry_builder and mirrored in a tree; then
 *  - when the calls break a rule the tree cannot show (keys not ascending in an object) or give
 *    jansson a string it refuses (not UTF-8), the builder must refuse the entry;
 *  - else the builder and entry_body_encode() of the tree both refuse it (a writer's key, a
 *    non-ASCII key, nesting past ENTRY_MAX_DEPTH) or give the same bytes and places of "prev"
 *    and "seq", and the sealed entry, read back by jansson, is the tree plus prev, seq and v.
 * Calls, one byte each and then their operands (a missing operand byte reads as 0):
 *   op % 6 == 0  string: key byte, length byte, that many bytes (a NUL byte ends the string)
 *             1  integer: key byte, 8 bytes (little-endian)
 *             2  money: key byte, 3 currency bytes, 8 value bytes
 *             3  open an object: key byte        4  open an array: key byte
 *             5  close the innermost container (ignored when none is open)
 * A key byte chooses from keys[] (sorted; the index grows with the byte), ignored in an array.
 * Containers still open at the end are closed.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "audit/entry.h"
#include "core/sjson.h"

#define MAX_OPEN 24 /* past ENTRY_MAX_DEPTH on purpose */

/* In strcmp order, so that ascending key bytes give ascending keys. */
static const char *const keys[] = {"",           "\x01",       "a",    "amount",   "b\"\\",
                                   "cl\xc3\xa9", "currency",   "kind", "mandates", "prev",
                                   "principal",  "request_id", "seq",  "surface",  "ts_ms",
                                   "v",          "value",      "zz"};

struct input {
    const uint8_t *p;
    size_t n;
};

static uint8_t byte(struct input *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static int64_t int64(struct input *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)byte(in) << (8 * i);
    return (int64_t)v;
}

/* The run so far: the tree's containers (borrowed from the tree; NULL once it is abandoned),
 * and each level's kind and last key (for the ascending rule). */
struct run {
    struct entry_builder eb;
    json_t *root, *open[MAX_OPEN + 1];
    bool array[MAX_OPEN + 1];
    const char *last[MAX_OPEN + 1];
    int depth;
    bool must_refuse; /* a refusal only the builder can see: the tree stops here */
};

/* The key of a member of the innermost container (NULL in an array); whether the tree goes on. */
static bool member_key(struct run *r, uint8_t b, const char **key)
{
    *key = r->array[r->depth] ? NULL : keys[b % (sizeof(keys) / sizeof(keys[0]))];
    if (*key && r->last[r->depth] && strcmp(r->last[r->depth], *key) >= 0)
        r->must_refuse = true;
    if (*key)
        r->last[r->depth] = *key;
    return !r->must_refuse;
}

/* v (taken) as the member key of the innermost container; NULL v: jansson refused a string. */
static void add(struct run *r, const char *key, json_t *v)
{
    if (!v) {
        r->must_refuse = true;
        return;
    }
    json_t *c = r->open[r->depth];
    if (key ? json_object_set_new(c, key, v) : json_array_append_new(c, v))
        abort();
}

static void open_container(struct run *r, const char *key, bool tree, bool array)
{
    if (array)
        entry_open_array(&r->eb, key);
    else
        entry_open_object(&r->eb, key);
    json_t *c = NULL;
    if (tree) {
        c = array ? json_array() : json_object();
        add(r, key, c);
    }
    r->depth++;
    r->open[r->depth] = c;
    r->array[r->depth] = array;
    r->last[r->depth] = NULL;
}

static void step(struct run *r, struct input *in)
{
    uint8_t op = byte(in) % 6;
    if (op == 5) {
        if (r->depth) {
            entry_close(&r->eb);
            r->depth--;
        }
        return;
    }
    if ((op == 3 || op == 4) && r->depth == MAX_OPEN) {
        byte(in);
        return;
    }
    const char *key;
    bool tree = member_key(r, byte(in), &key);
    if (op == 0) {
        char s[256];
        size_t n = byte(in);
        for (size_t i = 0; i < n; i++)
            s[i] = (char)byte(in);
        s[n] = '\0';
        entry_put_str(&r->eb, key, s);
        if (tree)
            add(r, key, json_string(s));
    } else if (op == 1) {
        int64_t v = int64(in);
        entry_put_int(&r->eb, key, v);
        if (tree)
            add(r, key, json_integer(v));
    } else if (op == 2) {
        struct money m = {0};
        for (int i = 0; i < 3; i++)
            m.currency[i] = (char)byte(in);
        m.value = int64(in);
        entry_put_money(&r->eb, key, &m);
        if (tree)
            add(r, key, money_to_json(&m));
    } else {
        open_container(r, key, tree, op == 4);
    }
}

/* Accepted by both: the same body; sealed, it reads back as the tree. */
static void same_body(const struct entry_body *a, json_t *tree)
{
    struct entry_body b;
    const char *why;
    if (entry_body_encode(tree, &b, &why) != 0)
        abort();
    if (a->len != b.len || memcmp(a->text, b.text, a->len) != 0 || a->at_prev != b.at_prev ||
        a->at_seq != b.at_seq)
        abort();
    entry_body_clear(&b);
    static const char prev[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    size_t len;
    char *s = entry_seal(a, 9, prev, &len), *err = NULL;
    json_t *back = sjson_parse(s, len, &err);
    if (!back)
        abort();
    json_object_set_new(tree, "prev", json_string(prev));
    json_object_set_new(tree, "seq", json_integer(9));
    json_object_set_new(tree, "v", json_integer(1));
    if (!json_equal(back, tree))
        abort();
    json_decref(back);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    static struct run r;
    memset(&r, 0, sizeof(r));
    entry_builder_init(&r.eb);
    r.root = r.open[0] = json_object();
    while (in.n)
        step(&r, &in);
    for (; r.depth; r.depth--)
        entry_close(&r.eb);
    struct entry_body a;
    const char *why;
    int rc = entry_builder_finish(&r.eb, &a, &why);
    if (r.must_refuse) {
        if (rc == 0)
            abort();
    } else if (rc == 0) {
        same_body(&a, r.root);
    } else {
        struct entry_body b;
        if (entry_body_encode(r.root, &b, &why) == 0)
            abort();
    }
    entry_body_clear(&a);
    json_decref(r.root);
    return 0;
}
