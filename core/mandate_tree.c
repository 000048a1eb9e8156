/*
 * mandate_tree: the claims of a mandate read through jansson trees (sjson_parse() of the header
 * and payload, then lookups in the trees), as mandate_verify() read them before core/jsonscan.
 * Kept as the reference that the scanner is held to: tests/unit/test_mandate.c and
 * tests/fuzz/fuzz_claims_diff.c compare the two on the same tokens. Not on any request path.
 */
#include <stdlib.h>
#include <string.h>

#include "core/b64url.h"
#include "core/mandate_read.h"
#include "core/sjson.h"

/* Copy a required string claim of 1..cap-1 printable characters. */
static int get_id(const json_t *c, const char *key, char *dst, size_t cap)
{
    const char *s = sjson_str(c, key);
    if (!s)
        return -1;
    size_t n = strlen(s);
    if (n == 0 || n >= cap)
        return -1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return -1;
    memcpy(dst, s, n + 1);
    return 0;
}

static int get_money(const json_t *c, const char *key, struct money *out)
{
    const char *why;
    return money_from_json(json_object_get(c, key), false, out, &why);
}

static int get_time(const json_t *c, const char *key, int64_t *out)
{
    return sjson_int(c, key, out) || *out <= 0 || *out >= MANDATE_TIME_MAX ? -1 : 0;
}

/* Claims shared by every type: iss, sub, jti, iat, exp, nbf?, action. */
static int common_claims(const json_t *c, struct mandate *m)
{
    if (get_id(c, "iss", m->iss, sizeof(m->iss)) || get_id(c, "sub", m->sub, sizeof(m->sub)) ||
        get_id(c, "action", m->action, sizeof(m->action)) ||
        get_id(c, "jti", m->jti, sizeof(m->jti)) || !mandate_jti_ok(m->jti) ||
        get_time(c, "iat", &m->iat) || get_time(c, "exp", &m->exp))
        return -1;
    if (json_object_get(c, "nbf") && get_time(c, "nbf", &m->nbf))
        return -1;
    return 0;
}

/* Intent and payment mandates: act.sub and aud. */
static int agent_claims(const json_t *c, struct mandate *m)
{
    json_t *act = json_object_get(c, "act");
    if (!json_is_object(act) || get_id(act, "sub", m->agent, sizeof(m->agent)))
        return -1;
    return get_id(c, "aud", m->aud, sizeof(m->aud));
}

static int intent_claims(const json_t *c, struct mandate *m)
{
    m->uses = 1;
    if (json_object_get(c, "uses") && (sjson_int(c, "uses", &m->uses) || m->uses < 1))
        return -1;
    if (json_object_get(c, "max_amount")) {
        if (get_money(c, "max_amount", &m->max_amount))
            return -1;
        m->has_max_amount = true;
    }
    return 0;
}

static int payment_claims(const json_t *c, struct mandate *m)
{
    const char *cart = sjson_str(c, "cart");
    unsigned char h[B64URL_DEC_MAX(43)];
    if (!cart || strlen(cart) != 43 || b64url_decode(cart, 43, h) != 32)
        return -1;
    memcpy(m->cart_hash, cart, 44);
    if (get_money(c, "total", &m->total))
        return -1;
    json_t *cap = json_object_get(c, "cap");
    const char *why;
    if (money_from_json(cap, true, &m->cap, &why) || json_object_size(cap) != 3 ||
        cap_period_parse(sjson_str(cap, "period"), &m->cap_period))
        return -1;
    m->uses = 1;
    return 0;
}

/* Items are parsed here (structure); their sum is checked after the signature. */
static int cart_claims(const json_t *c, struct mandate *m)
{
    json_t *items = json_object_get(c, "items");
    if (!json_is_array(items) || json_array_size(items) == 0 ||
        json_array_size(items) > MANDATE_MAX_ITEMS || get_money(c, "total", &m->total))
        return -1;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        struct money unit;
        int64_t qty;
        char sku[MANDATE_ID_MAX + 1];
        if (!json_is_object(it) || get_id(it, "sku", sku, sizeof(sku)) ||
            sjson_int(it, "qty", &qty) || qty < 1 || get_money(it, "unit", &unit))
            return -1;
    }
    if (json_object_get(c, "intent") && get_id(c, "intent", m->intent, sizeof(m->intent)))
        return -1;
    m->uses = 1;
    return 0;
}

static int tree_open(struct mandate_claims *c, const char *tok, size_t len, size_t max_len)
{
    const char *why;
    c->tree = NULL;
    if (jws_decode_tree(tok, len, max_len, &c->jws, &why) != 0)
        return -1;
    char *perr = NULL;
    c->tree = sjson_parse((char *)c->jws.payload, c->jws.payload_len, &perr);
    free(perr);
    return json_is_object(c->tree) ? 0 : -1;
}

static int tree_claims(const struct mandate_claims *mc, struct mandate *m)
{
    const json_t *c = mc->tree;
    if (common_claims(c, m))
        return -1;
    if (m->typ == MANDATE_INTENT)
        return agent_claims(c, m) || intent_claims(c, m) ? -1 : 0;
    if (m->typ == MANDATE_PAYMENT)
        return agent_claims(c, m) || payment_claims(c, m) ? -1 : 0;
    return cart_claims(c, m);
}

/* cnf: {"jwk": <public EC P-256 or OKP Ed25519 key>} (SPEC §7); anything else is malformed. */
static int tree_cnf(const struct mandate_claims *mc, struct mandate *m)
{
    json_t *cnf = json_object_get(mc->tree, "cnf");
    if (!cnf)
        return 0;
    json_t *jwk = json_object_get(cnf, "jwk");
    if (!json_is_object(cnf) || json_object_size(cnf) != 1 || !json_is_object(jwk))
        return -1;
    return mandate_cnf_key(jwk, m);
}

static bool tree_cart_sum_ok(const struct mandate_claims *mc, const struct money *total)
{
    struct money sum = {0, ""};
    memcpy(sum.currency, total->currency, 4);
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(mc->tree, "items"), i, it)
    {
        struct money unit, line;
        int64_t qty;
        if (get_money(it, "unit", &unit) || sjson_int(it, "qty", &qty) ||
            money_mul(qty, &unit, &line) || money_add(&sum, &line, &sum))
            return false;
    }
    return money_equal(&sum, total);
}

static void tree_close(struct mandate_claims *c)
{
    json_decref(c->tree);
    jws_clear(&c->jws);
}

static const struct mandate_reader tree_reader = {tree_open, tree_claims, tree_cnf,
                                                  tree_cart_sum_ok, tree_close};

enum code mandate_verify_tree(const char *tok, size_t len, unsigned accept,
                              const struct keyring *kr, const struct mandate_limits *lim,
                              int64_t now, struct mandate *out)
{
    return mandate_verify_with(&tree_reader, tok, len, NULL, accept, kr, lim, now, out);
}
