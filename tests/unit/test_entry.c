/*
 * audit/entry's builder, as the gateway uses it for every request: decision_entry() and
 * proxy_outcome_entry() (gateway/proxy.c), for thousands of random decisions and outcomes, give
 * the same body, the same places of "prev" and "seq" and the same refusals as the jansson tree
 * the gateway built before (json_pack, kept here as the reference) through entry_body_encode().
 * Strings hold quotes, backslashes, control bytes, UTF-8 of every length, bytes that are not
 * UTF-8, or nothing; integers reach the int64 extremes. What is accepted is also checked without
 * our encoder: the sealed entry is ASCII, parses back (jansson) to the tree plus prev, seq and v,
 * and lists every object's keys in order. And the builder refuses exactly the strings jansson
 * refuses, byte sequences of one to four bytes at every UTF-8 boundary.
 */
#include "testkit.h"

#include "audit/entry.h"
#include "core/money.h"
#include "gateway/config.h"
#include "gateway/proxy.h"
#include "gateway/route.h"
#include "gateway/worker.h"

#define PREV   "00000000000000000000000000000000000000000000000000000000000000ff"
#define ROUNDS 20000

/* xorshift64*: the same entries on every run, so that a failure can be replayed */
static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dULL;
}

static size_t below(size_t n)
{
    return (size_t)(rnd() % n);
}

static int64_t rnd_int(void)
{
    static const int64_t edges[] = {INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX};
    switch (below(3)) {
    case 0:
        return edges[below(ARRAY_LEN(edges))];
    case 1:
        return (int64_t)below(20000) - 10000;
    default:
        return (int64_t)rnd();
    }
}

/* UTF-8 of cp into out; its length. */
static size_t utf8(unsigned cp, char *out)
{
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* One piece of a random string into out (at most 4 bytes); its length. */
static size_t rnd_piece(char *out, bool poison)
{
    static const unsigned edges[] = {0x80,   0x7ff,  0x800,   0xd7ff,  0xe000,
                                     0xfffd, 0xffff, 0x10000, 0x10ffff};
    static const char *const bad[] = {
        "\x80",         "\xbf",         "\xc0\xaf",         "\xc1\xbf",
        "\xe0\x9f\xbf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf5",
        "\xff",         "\xe2\x82",     "\xf0\x9f\x98",     "\xc3"};
    if (poison) {
        const char *b = bad[below(ARRAY_LEN(bad))];
        memcpy(out, b, strlen(b));
        return strlen(b);
    }
    unsigned cp;
    switch (below(10)) {
    case 0:
        out[0] = below(2) ? '"' : '\\';
        return 1;
    case 1:
        out[0] = below(8) ? (char)(1 + below(0x1f)) : 0x7f;
        return 1;
    case 2:
        return utf8(edges[below(ARRAY_LEN(edges))], out);
    case 3:
        do
            cp = 0x80 + (unsigned)below(0x110000 - 0x80);
        while (cp >= 0xd800 && cp < 0xe000);
        return utf8(cp, out);
    default:
        out[0] = (char)(0x20 + below(0x5f));
        return 1;
    }
}

/* A random NUL-terminated string in buf (cap bytes): 1 in 30 empty, 1 in 20 as long as it can
 * be, 1 in 60 with a byte sequence that is not UTF-8 somewhere. */
static void rnd_str(char *buf, size_t cap)
{
    size_t n = 0, want = below(30) ? (below(20) ? below(24) : cap - 1) : 0;
    bool poison = below(60) == 0;
    size_t at = want ? below(want) : 0;
    while (n < want) {
        char piece[4];
        bool bad = poison && n >= at;
        size_t k = rnd_piece(piece, bad);
        if (n + k > cap - 1)
            break;
        memcpy(buf + n, piece, k);
        n += k;
        poison = poison && !bad;
    }
    buf[n] = '\0';
}

/* --- the reference: the entries as jansson trees, as the gateway built them before ---------- */

static json_t *tree_mandate(const struct mandate *m)
{
    char sha[65];
    hex_encode(m->sha256, 32, sha);
    return json_pack("{ss ss ss ss ss}", "typ", mandate_typ_name(m->typ), "iss", m->iss, "kid",
                     m->kid, "jti", m->jti, "sha256", sha);
}

/* NULL where jansson refuses a string (the gateway aborted in sjson_set then): as refused. */
static json_t *tree_decision(const struct decision *d, int64_t ts_ms)
{
    const struct mandate *m = &d->v.m;
    json_t *e = json_pack("{sI ss ss ss ss ss ss ss ss}", "ts_ms", (json_int_t)ts_ms, "kind",
                          "decision", "request_id", d->id, "principal", m->sub, "agent", m->agent,
                          "merchant", d->route ? d->route->merchant->id : "", "action",
                          d->route ? d->route->action : "", "decision",
                          d->code == CODE_OK ? "allow" : "deny", "code", code_name(d->code));
    json_t *ms = json_array();
    int bad = 0;
    if (m->jti[0] && m->iss[0])
        bad |= json_array_append_new(ms, tree_mandate(m));
    if (d->v.has_cart) {
        bad |= json_array_append_new(ms, tree_mandate(&d->v.cart));
        bad |= json_object_set_new(e, "amount", money_to_json(&d->v.cart.total));
    }
    bad |= json_object_set_new(e, "mandates", ms);
    if (d->surface)
        bad |= json_object_set_new(e, "surface", json_string(d->surface));
    if (bad) {
        json_decref(e);
        return NULL;
    }
    return e;
}

static json_t *tree_outcome(int64_t ts_ms, const char *id, const char *result, int status,
                            uint64_t bytes, int64_t up_us, const char *spend)
{
    json_t *e = json_pack("{sI ss ss ss si sI sI}", "ts_ms", (json_int_t)ts_ms, "kind", "outcome",
                          "request_id", id, "result", result, "status", status, "bytes",
                          (json_int_t)bytes, "upstream_us", (json_int_t)up_us);
    if (e && spend && json_object_set_new(e, "spend", json_string(spend)) != 0) {
        json_decref(e);
        return NULL;
    }
    return e;
}

/* --- comparing ------------------------------------------------------------------------------ */

/* Every object's keys in ascending order (jansson keeps them in the order it read them). */
static bool keys_sorted(const json_t *v)
{
    const char *k, *last = NULL;
    json_t *m;
    size_t i;
    if (json_is_array(v)) {
        json_array_foreach(v, i, m)
        {
            if (!keys_sorted(m))
                return false;
        }
        return true;
    }
    if (!json_is_object(v))
        return true;
    json_object_foreach((json_t *)v, k, m)
    {
        if ((last && strcmp(last, k) >= 0) || !keys_sorted(m))
            return false;
        last = k;
    }
    return true;
}

/* What we encoded, read back by jansson: the tree with prev, seq and v, keys in order, ASCII. */
static void check_readback(const struct entry_body *b, json_t *tree)
{
    size_t len;
    char *s = entry_seal(b, 42, PREV, &len);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            fail_msg("byte %zu of %s is not printable ASCII", i, s);
    char *err = NULL;
    json_t *back = sjson_parse(s, len, &err);
    if (!back)
        fail_msg("%s: %s", s, err);
    json_t *want = json_deep_copy(tree);
    json_object_set_new(want, "prev", json_string(PREV));
    json_object_set_new(want, "seq", json_integer(42));
    json_object_set_new(want, "v", json_integer(1));
    if (!json_equal(back, want) || !keys_sorted(back))
        fail_msg("%s does not read back as its tree", s);
    json_decref(want);
    json_decref(back);
    free(s);
}

/* The built entry against the tree's encoding (takes tree): same bytes and places, or both
 * refused. Returns whether it was accepted. */
static bool same_entry(struct entry_builder *eb, json_t *tree, const char *what, int round)
{
    struct entry_body a, b;
    const char *why_a, *why_b;
    int ra = entry_builder_finish(eb, &a, &why_a);
    int rb = entry_body_encode(tree, &b, &why_b);
    if (ra != rb)
        fail_msg("%s %d: builder %s, tree %s", what, round, ra ? why_a : a.text,
                 rb ? why_b : b.text);
    if (ra == 0) {
        if (a.len != b.len || memcmp(a.text, b.text, a.len) != 0)
            fail_msg("%s %d:\nbuilder %s\ntree    %s", what, round, a.text, b.text);
        assert_int_equal(a.at_prev, b.at_prev);
        assert_int_equal(a.at_seq, b.at_seq);
        check_readback(&a, tree);
        entry_body_clear(&a);
        entry_body_clear(&b);
    } else {
        assert_null(a.text); /* nothing to free on a refusal */
    }
    json_decref(tree);
    return ra == 0;
}

/* Both outcomes happen often enough to mean something. */
static void assert_mix(int accepted, int rounds)
{
    assert_true(accepted > rounds / 2);
    assert_true(accepted < rounds - rounds / 100);
}

/* --- the tests ------------------------------------------------------------------------------ */

static void rnd_mandate(struct mandate *m, enum mandate_typ typ)
{
    memset(m, 0, sizeof(*m));
    m->typ = typ;
    rnd_str(m->iss, sizeof(m->iss));
    rnd_str(m->kid, sizeof(m->kid));
    rnd_str(m->sub, sizeof(m->sub));
    rnd_str(m->agent, sizeof(m->agent));
    rnd_str(m->jti, sizeof(m->jti));
    for (size_t i = 0; i < sizeof(m->sha256); i++)
        m->sha256[i] = (unsigned char)rnd();
}

static void test_decision_entries(void **state)
{
    (void)state;
    static struct decision d;
    static char merchant_id[40], action[40], surface[40];
    struct merchant mc = {.id = merchant_id};
    struct route route = {.action = action, .merchant = &mc};
    int accepted = 0, listed[3] = {0};
    for (int i = 0; i < ROUNDS; i++) {
        memset(&d, 0, sizeof(d));
        rnd_mandate(&d.v.m, (enum mandate_typ)(1 << below(3)));
        if (below(4) == 0) /* a token that did not parse that far */
            d.v.m.jti[0] = '\0';
        d.v.has_cart = below(3) == 0;
        if (d.v.has_cart) {
            rnd_mandate(&d.v.cart, MANDATE_CART);
            d.v.cart.total.value = rnd_int();
            rnd_str(d.v.cart.total.currency, sizeof(d.v.cart.total.currency));
        }
        d.code = (enum code)below(CODE__COUNT + 1); /* one past the end: "unknown" */
        rnd_str(d.id, sizeof(d.id));
        rnd_str(merchant_id, sizeof(merchant_id));
        rnd_str(action, sizeof(action));
        d.route = below(4) ? &route : NULL;
        rnd_str(surface, sizeof(surface));
        d.surface = below(2) ? surface : NULL;
        int64_t ts = rnd_int();
        struct entry_builder eb;
        decision_entry(&d, ts, &eb);
        if (same_entry(&eb, tree_decision(&d, ts), "decision", i)) {
            accepted++;
            listed[(d.v.m.jti[0] && d.v.m.iss[0]) + d.v.has_cart]++;
        }
    }
    assert_mix(accepted, ROUNDS);
    assert_true(listed[0] > 100 && listed[1] > 100 && listed[2] > 100); /* 0, 1, 2 mandates */
}

static void test_outcome_entries(void **state)
{
    (void)state;
    static const char *const spends[] = {"reserved", "committed", "released", "unknown"};
    int accepted = 0;
    for (int i = 0; i < ROUNDS; i++) {
        char id[33], result[24], spend[24];
        rnd_str(id, sizeof(id));
        rnd_str(result, sizeof(result));
        rnd_str(spend, sizeof(spend));
        const char *sp = below(3) == 0 ? NULL : below(2) ? spends[below(4)] : spend;
        int status = below(4) ? (int)(100 + below(500)) : (int)rnd();
        uint64_t bytes = below(4) ? rnd() : (uint64_t)rnd_int();
        int64_t ts = rnd_int(), up_us = rnd_int();
        struct entry_builder eb;
        proxy_outcome_entry(&eb, ts, id, result, status, bytes, up_us, sp);
        accepted +=
            same_entry(&eb, tree_outcome(ts, id, result, status, bytes, up_us, sp), "outcome", i);
    }
    assert_mix(accepted, ROUNDS);
}

/* One string member s: the builder's verdict, which must be jansson's; s must read back. */
static void one_string(const char *s)
{
    struct entry_builder eb;
    entry_builder_init(&eb);
    entry_put_str(&eb, "s", s);
    json_t *j = json_string(s);
    struct entry_body b;
    const char *why;
    int r = entry_builder_finish(&eb, &b, &why);
    if ((r == 0) != (j != NULL)) {
        char hexs[16] = "";
        for (size_t i = 0; s[i] && i < 4; i++)
            sprintf(hexs + 3 * i, "%02x ", (unsigned char)s[i]);
        fail_msg("%s: builder %s, jansson %s", hexs, r ? "refuses" : "accepts",
                 j ? "accepts" : "refuses");
    }
    if (r == 0) {
        json_t *tree = json_pack("{so}", "s", j);
        check_readback(&b, tree);
        json_decref(tree);
        entry_body_clear(&b);
    }
}

static void test_utf8_as_jansson(void **state)
{
    (void)state;
    /* Every string of one and two bytes, then leads of three and four bytes with every byte
     * around the continuation range after them. */
    char s[5] = {0};
    for (unsigned a = 1; a < 256; a++) {
        s[0] = (char)a;
        s[1] = '\0';
        one_string(s);
        for (unsigned b = 1; b < 256; b++) {
            s[1] = (char)b;
            one_string(s);
        }
    }
    static const unsigned char tail[] = {0x7f, 0x80, 0xbf, 0xc0};
    for (unsigned a = 0xe0; a < 0x100; a++)
        for (unsigned b = 0x7f; b <= 0xc0; b++)
            for (size_t c = 0; c < sizeof(tail); c++) {
                s[0] = (char)a, s[1] = (char)b, s[2] = (char)tail[c], s[3] = '\0';
                one_string(s);
                for (size_t d = 0; d < sizeof(tail); d++) {
                    s[3] = (char)tail[d];
                    one_string(s);
                }
            }
}

/* Strings long enough for put_string's eight-byte steps: every byte value at every place of
 * a word, and after it (the byte-wise tail), in strings of 8 to 19 plain bytes. */
static void test_strings_word_wide(void **state)
{
    (void)state;
    char s[21];
    for (size_t len = 8; len < 20; len++)
        for (size_t at = 0; at < len; at++)
            for (unsigned a = 1; a < 256; a++) {
                memset(s, 'a' + (int)(len % 26), len);
                s[at] = (char)a;
                s[len] = '\0';
                one_string(s);
            }
}

/* The builder's own checks: what the tree path cannot get wrong (it sorts) is refused. */
static void test_builder_refusals(void **state)
{
    (void)state;
    struct entry_builder eb;
    struct entry_body b;
    const char *why;
    static const char *const orders[][2] = {{"b", "a"}, {"a", "a"}};
    for (size_t i = 0; i < ARRAY_LEN(orders); i++) {
        entry_builder_init(&eb);
        entry_put_int(&eb, orders[i][0], 1);
        entry_put_int(&eb, orders[i][1], 2);
        assert_int_equal(entry_builder_finish(&eb, &b, &why), -1);
        assert_non_null(strstr(why, "ascending"));
        entry_builder_init(&eb); /* nested objects too */
        entry_open_object(&eb, "o");
        entry_put_int(&eb, orders[i][0], 1);
        entry_put_int(&eb, orders[i][1], 2);
        entry_close(&eb);
        assert_int_equal(entry_builder_finish(&eb, &b, &why), -1);
    }
    /* The writer's keys, and keys after v, only at the top; and nesting as deep as the tree's. */
    static const char *const keys[] = {"prev", "seq", "v", "zz", "cl\xc3\xa9", "\x01"};
    for (size_t i = 0; i < ARRAY_LEN(keys); i++)
        for (int nested = 0; nested < 2; nested++) {
            entry_builder_init(&eb);
            if (nested)
                entry_open_object(&eb, "o");
            entry_put_int(&eb, keys[i], 1);
            if (nested)
                entry_close(&eb);
            json_t *t = json_pack("{si}", keys[i], 1);
            if (nested)
                t = json_pack("{so}", "o", t);
            same_entry(&eb, t, keys[i], nested);
        }
    for (int depth = ENTRY_MAX_DEPTH - 1; depth <= ENTRY_MAX_DEPTH + 1; depth++) {
        entry_builder_init(&eb);
        json_t *t = json_integer(7);
        for (int i = 0; i < depth; i++) {
            entry_open_array(&eb, i ? NULL : "a");
            t = json_pack("[o]", t);
        }
        entry_put_int(&eb, NULL, 7);
        for (int i = 0; i < depth; i++)
            entry_close(&eb);
        assert_int_equal(same_entry(&eb, json_pack("{so}", "a", t), "depth", depth),
                         depth < ENTRY_MAX_DEPTH);
    }
}

/* The request_id of every entry: 24 hex digits, distinct, and a fresh random prefix when the
 * 32-bit counter wraps (the same prefix and counter again would repeat ids). */
static void test_request_ids(void **state)
{
    (void)state;
    struct worker w = {0};
    char a[33], b[33];
    proxy_new_request_id(&w, a);
    proxy_new_request_id(&w, b);
    assert_int_equal(strlen(a), 24);
    assert_int_equal(strspn(a, "0123456789abcdef"), 24);
    assert_memory_equal(a, b, 16);
    assert_string_equal(a + 16, "00000000");
    assert_string_equal(b + 16, "00000001");
    w.id_counter = 0xffffffffULL;
    proxy_new_request_id(&w, a);
    assert_string_equal(a + 16, "ffffffff");
    assert_memory_equal(a, b, 16);
    proxy_new_request_id(&w, b);
    assert_string_equal(b + 16, "00000000");
    assert_memory_not_equal(a, b, 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decision_entries), cmocka_unit_test(test_outcome_entries),
        cmocka_unit_test(test_utf8_as_jansson),  cmocka_unit_test(test_strings_word_wide),
        cmocka_unit_test(test_builder_refusals), cmocka_unit_test(test_request_ids),
    };
    return cmocka_run_group_tests_name("entry", tests, NULL, NULL);
}
