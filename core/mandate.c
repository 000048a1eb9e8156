/*
 * mandate: claim parsing and validation of intent, cart and payment mandates. The header and
 * claims are read in place by core/jsonscan, without a jansson tree (mandate_tree.c keeps the
 * tree reader as the reference the scanner is tested against).
 */
#include "core/mandate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/b64url.h"
#include "core/httpsig.h"
#include "core/jws.h"
#include "core/mandate_read.h"
#include "core/sjson.h"
#include "core/sha256.h"

static const char *const typ_names[] = {"intent-mandate+jwt", "cart-mandate+jwt",
                                        "payment-mandate+jwt"};
static const char *const period_names[] = {"day", "week", "month", "total"};

const char *mandate_typ_name(enum mandate_typ t)
{
    return t == MANDATE_INTENT ? typ_names[0] : t == MANDATE_CART ? typ_names[1] : typ_names[2];
}

const char *cap_period_name(enum cap_period p)
{
    return period_names[p];
}

int cap_period_parse(const char *s, enum cap_period *out)
{
    int i = name_index(s, period_names, ARRAY_LEN(period_names));
    if (i < 0)
        return -1;
    *out = (enum cap_period)i;
    return 0;
}

void cap_period_at(enum cap_period p, int64_t now_s, char out[16])
{
    time_t t = (time_t)now_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    switch (p) {
    case CAP_DAY:
        strftime(out, 16, "d%Y-%m-%d", &tm);
        break;
    case CAP_WEEK:
        /* tm_wday is 0 on Sunday; step back to Monday. */
        t -= (time_t)(((tm.tm_wday + 6) % 7) * 86400);
        gmtime_r(&t, &tm);
        strftime(out, 16, "w%Y-%m-%d", &tm);
        break;
    case CAP_MONTH:
        strftime(out, 16, "m%Y-%m", &tm);
        break;
    case CAP_TOTAL:
        snprintf(out, 16, "total");
        break;
    }
}

void cap_key(const char *iss, const char *principal, const struct money *cap, enum cap_period p,
             int64_t now_s, char out[CAP_KEY_MAX])
{
    char period[16];
    cap_period_at(p, now_s, period);
    snprintf(out, CAP_KEY_MAX, "%s|%s|%s|%s", iss, principal, cap->currency, period);
}

int64_t cap_key_end(const char *key)
{
    const char *p = strrchr(key, '|');
    struct tm tm = {0};
    char kind = p ? p[1] : 0;
    if ((kind == 'd' || kind == 'w') &&
        sscanf(p + 2, "%4d-%2d-%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday) == 3) {
        tm.tm_mday += kind == 'd' ? 1 : 7;
    } else if (kind == 'm' && sscanf(p + 2, "%4d-%2d", &tm.tm_year, &tm.tm_mon) == 2) {
        tm.tm_mday = 1;
        tm.tm_mon += 1;
    } else {
        return INT64_MAX;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm); /* timegm normalises the day or month past the end */
}

static int typ_parse(const char *s, enum mandate_typ *out)
{
    static const enum mandate_typ v[] = {MANDATE_INTENT, MANDATE_CART, MANDATE_PAYMENT};
    int i = name_index(s, typ_names, ARRAY_LEN(typ_names));
    if (i < 0)
        return -1;
    *out = v[i];
    return 0;
}

bool mandate_jti_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 16 || n > MANDATE_JTI_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

int mandate_cnf_key(const json_t *jwk, struct mandate *m)
{
    struct jwk key;
    char *err = NULL;
    if (httpsig_jwk_from_cnf(jwk, &key, &err) != 0) {
        free(err);
        return -1;
    }
    int thumb_ok = strlen(key.kid) == HTTPSIG_THUMBPRINT_LEN;
    if (thumb_ok)
        memcpy(m->cnf_thumb, key.kid, HTTPSIG_THUMBPRINT_LEN + 1);
    jwk_clear(&key);
    if (!thumb_ok)
        return -1;
    char *text = json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = text && strlen(text) <= MANDATE_CNF_MAX ? 0 : -1;
    if (rc == 0) {
        memcpy(m->cnf_jwk, text, strlen(text) + 1);
        m->has_cnf = true;
    }
    free(text);
    return rc;
}

/* The claims read in place by core/jsonscan: the same rules as mandate_tree.c's over jansson,
 * which the differential fuzz target holds these to. A member that is absent reads as JS_NONE. */

/* A string of 1..cap-1 printable characters into dst. */
static int id_of(struct js_val v, char *dst, size_t cap)
{
    if (js_type(v) != JS_STRING)
        return -1;
    size_t n = js_str(v, dst, cap);
    if (n == 0 || n >= cap)
        return -1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)dst[i] < 0x20 || dst[i] == 0x7f)
            return -1;
    return 0;
}

/* {"value": integer >= 0, "currency": three capitals}, other members only if allow_extra. */
static int money_of(struct js_val v, bool allow_extra, struct money *out)
{
    struct js_val value = js_get(v, "value"), cur = js_get(v, "currency");
    int64_t x;
    char c[4];
    if (js_int(value, &x) != 0 || x < 0 || js_type(cur) != JS_STRING || js_str(cur, c, 4) != 3)
        return -1;
    for (int i = 0; i < 3; i++)
        if (c[i] < 'A' || c[i] > 'Z')
            return -1;
    if (!allow_extra && js_size(v) != 2)
        return -1;
    out->value = x;
    memcpy(out->currency, c, 4);
    return 0;
}

static int time_of(struct js_val v, int64_t *out)
{
    return js_int(v, out) || *out <= 0 || *out >= MANDATE_TIME_MAX ? -1 : 0;
}

/* Claims shared by every type: iss, sub, jti, iat, exp, nbf?, action. */
static int common_claims(const struct js_doc *d, struct mandate *m)
{
    struct js_val nbf = js_root_get(d, "nbf");
    if (id_of(js_root_get(d, "iss"), m->iss, sizeof(m->iss)) ||
        id_of(js_root_get(d, "sub"), m->sub, sizeof(m->sub)) ||
        id_of(js_root_get(d, "action"), m->action, sizeof(m->action)) ||
        id_of(js_root_get(d, "jti"), m->jti, sizeof(m->jti)) || !mandate_jti_ok(m->jti) ||
        time_of(js_root_get(d, "iat"), &m->iat) || time_of(js_root_get(d, "exp"), &m->exp) ||
        (nbf.p && time_of(nbf, &m->nbf)))
        return -1;
    return 0;
}

/* Intent and payment mandates: act.sub and aud. */
static int agent_claims(const struct js_doc *d, struct mandate *m)
{
    if (id_of(js_get(js_root_get(d, "act"), "sub"), m->agent, sizeof(m->agent)))
        return -1;
    return id_of(js_root_get(d, "aud"), m->aud, sizeof(m->aud));
}

static int intent_claims(const struct js_doc *d, struct mandate *m)
{
    struct js_val uses = js_root_get(d, "uses"), max = js_root_get(d, "max_amount");
    m->uses = 1;
    if (uses.p && (js_int(uses, &m->uses) || m->uses < 1))
        return -1;
    if (max.p) {
        if (money_of(max, false, &m->max_amount))
            return -1;
        m->has_max_amount = true;
    }
    return 0;
}

static int payment_claims(const struct js_doc *d, struct mandate *m)
{
    struct js_val cart = js_root_get(d, "cart"), cap = js_root_get(d, "cap");
    char period[8];
    unsigned char h[B64URL_DEC_MAX(43)];
    if (js_type(cart) != JS_STRING || js_str(cart, m->cart_hash, sizeof(m->cart_hash)) != 43 ||
        b64url_decode(m->cart_hash, 43, h) != 32 ||
        money_of(js_root_get(d, "total"), false, &m->total) || money_of(cap, true, &m->cap) ||
        js_size(cap) != 3 || js_type(js_get(cap, "period")) != JS_STRING ||
        js_str(js_get(cap, "period"), period, sizeof(period)) >= sizeof(period) ||
        cap_period_parse(period, &m->cap_period))
        return -1;
    m->uses = 1;
    return 0;
}

/* Items are parsed here (structure); their sum is checked after the signature. */
static int cart_claims(const struct js_doc *d, struct mandate *m)
{
    struct js_val items = js_root_get(d, "items"), intent = js_root_get(d, "intent");
    size_t n = js_size(items);
    if (js_type(items) != JS_ARRAY || n == 0 || n > MANDATE_MAX_ITEMS ||
        money_of(js_root_get(d, "total"), false, &m->total))
        return -1;
    for (struct js_val it = {NULL, 0}; js_next(items, &it);) {
        struct money unit;
        int64_t qty;
        char sku[MANDATE_ID_MAX + 1];
        if (js_type(it) != JS_OBJECT || id_of(js_get(it, "sku"), sku, sizeof(sku)) ||
            js_int(js_get(it, "qty"), &qty) || qty < 1 ||
            money_of(js_get(it, "unit"), false, &unit))
            return -1;
    }
    if (intent.p && id_of(intent, m->intent, sizeof(m->intent)))
        return -1;
    m->uses = 1;
    return 0;
}

static int scan_open(struct mandate_claims *c, const char *tok, size_t len, size_t max_len)
{
    const char *why;
    c->doc.m = c->doc.inline_m; /* js_clear() is safe from here on */
    if (jws_decode(tok, len, max_len, &c->jws, &why) != 0 ||
        js_parse(&c->doc, (const char *)c->jws.payload, c->jws.payload_len) != 0)
        return -1;
    return js_type(c->doc.root) == JS_OBJECT ? 0 : -1;
}

static int scan_claims(const struct mandate_claims *c, struct mandate *m)
{
    if (common_claims(&c->doc, m))
        return -1;
    if (m->typ == MANDATE_INTENT)
        return agent_claims(&c->doc, m) || intent_claims(&c->doc, m) ? -1 : 0;
    if (m->typ == MANDATE_PAYMENT)
        return agent_claims(&c->doc, m) || payment_claims(&c->doc, m) ? -1 : 0;
    return cart_claims(&c->doc, m);
}

/* cnf: {"jwk": <public EC P-256 or OKP Ed25519 key>} (SPEC §7); anything else is malformed. The
 * key itself is parsed into a jansson tree: jwk_from_json() wants one, and building the key
 * costs far more than the tree. */
static int scan_cnf(const struct mandate_claims *c, struct mandate *m)
{
    struct js_val cnf = js_root_get(&c->doc, "cnf");
    if (!cnf.p)
        return 0;
    struct js_val jwk = js_get(cnf, "jwk");
    if (js_type(cnf) != JS_OBJECT || js_size(cnf) != 1 || js_type(jwk) != JS_OBJECT)
        return -1;
    char *err = NULL;
    json_t *tree = sjson_parse(jwk.p, jwk.n, &err);
    free(err);
    int rc = tree ? mandate_cnf_key(tree, m) : -1;
    json_decref(tree);
    return rc;
}

static bool scan_cart_sum_ok(const struct mandate_claims *c, const struct money *total)
{
    struct money sum = {0, ""};
    memcpy(sum.currency, total->currency, 4);
    for (struct js_val it = {NULL, 0}; js_next(js_root_get(&c->doc, "items"), &it);) {
        struct money unit, line;
        int64_t qty;
        if (money_of(js_get(it, "unit"), false, &unit) || js_int(js_get(it, "qty"), &qty) ||
            money_mul(qty, &unit, &line) || money_add(&sum, &line, &sum))
            return false;
    }
    return money_equal(&sum, total);
}

static void scan_close(struct mandate_claims *c)
{
    js_clear(&c->doc);
    jws_clear(&c->jws);
}

static const struct mandate_reader scan_reader = {scan_open, scan_claims, scan_cnf,
                                                  scan_cart_sum_ok, scan_close};

enum code mandate_check_time(const struct mandate *m, const struct mandate_limits *lim, int64_t now)
{
    if (m->exp < now - lim->clock_skew_s)
        return CODE_MANDATE_EXPIRED;
    if (m->iat > now + lim->clock_skew_s || (m->nbf && m->nbf > now + lim->clock_skew_s))
        return CODE_MANDATE_NOT_YET_VALID;
    if (m->typ != MANDATE_CART && m->exp - m->iat > lim->max_ttl_s)
        return CODE_MANDATE_TTL_TOO_LONG;
    return CODE_OK;
}

/* What the caller may see of a token that did not verify: nothing unsigned may pass for a claim
 * (in an audit entry, a log line). Keep only typ, and for an unknown key the issuer named, so the
 * caller can tell "no keys fetched yet for this issuer" (SPEC §7: 503) from a key that does not
 * exist. */
static void forget_unsigned(struct mandate *out, enum code rc)
{
    enum mandate_typ typ = out->typ;
    char iss[sizeof(out->iss)];
    memcpy(iss, out->iss, sizeof(iss));
    memset(out, 0, sizeof(*out));
    out->typ = typ;
    if (rc == CODE_MANDATE_UNKNOWN_KEY)
        memcpy(out->iss, iss, sizeof(iss));
}

enum code mandate_verify_with(const struct mandate_reader *r, const char *tok, size_t len,
                              const unsigned char *sha, unsigned accept, const struct keyring *kr,
                              const struct mandate_limits *lim, int64_t now, struct mandate *out)
{
    memset(out, 0, sizeof(*out));
    struct mandate_claims c;
    enum code rc = CODE_MANDATE_MALFORMED;
    if (r->open(&c, tok, len, lim->max_bytes) != 0 || !c.jws.typ || strlen(c.jws.kid) > JWK_KID_MAX)
        goto out;
    if (typ_parse(c.jws.typ, &out->typ) != 0) {
        rc = CODE_MANDATE_WRONG_TYPE;
        goto out;
    }
    strcpy(out->kid, c.jws.kid);
    if (r->claims(&c, out) != 0)
        goto out;
    if (!(accept & out->typ)) {
        rc = CODE_MANDATE_WRONG_TYPE;
        goto out;
    }
    const struct jwk *key = keyring_find(kr, out->iss, out->kid);
    if (!key) {
        rc = CODE_MANDATE_UNKNOWN_KEY;
        goto out;
    }
    if (jws_check(&c.jws, key) != 0) {
        rc = CODE_MANDATE_BAD_SIGNATURE;
        goto out;
    }
    /* After the signature: parsing a key costs, and only the issuer's claims deserve it. */
    if (out->typ != MANDATE_CART && r->cnf(&c, out) != 0)
        goto out;
    /* From here on the claims are the issuer's: keep them even when the times are wrong. */
    if (sha)
        memcpy(out->sha256, sha, 32);
    else
        sha256(tok, len, out->sha256);
    rc = mandate_check_time(out, lim, now);
    if (rc == CODE_OK && out->typ == MANDATE_CART && !r->cart_sum_ok(&c, &out->total))
        rc = CODE_CART_INVALID;
    r->close(&c);
    return rc;
out:
    forget_unsigned(out, rc);
    r->close(&c);
    return rc;
}

enum code mandate_verify(const char *tok, size_t len, unsigned accept, const struct keyring *kr,
                         const struct mandate_limits *lim, int64_t now, struct mandate *out)
{
    return mandate_verify_with(&scan_reader, tok, len, NULL, accept, kr, lim, now, out);
}

enum code mandate_verify_hashed(const char *tok, size_t len, const unsigned char sha[32],
                                unsigned accept, const struct keyring *kr,
                                const struct mandate_limits *lim, int64_t now, struct mandate *out)
{
    return mandate_verify_with(&scan_reader, tok, len, sha, accept, kr, lim, now, out);
}

char *mandate_sign(const struct jwk *key, enum mandate_typ typ, const json_t *claims)
{
    char *payload = sjson_dump(claims);
    char *tok = jws_sign(key, mandate_typ_name(typ), payload, strlen(payload));
    free(payload);
    return tok;
}

void mandate_cart_hash(const char *tok, size_t len, char out[44])
{
    unsigned char h[32];
    sha256(tok, len, h);
    b64url_encode(h, 32, out);
}

void mandate_hash_b64(const struct mandate *m, char out[44])
{
    b64url_encode(m->sha256, 32, out);
}

void mandate_ref(const struct mandate *m, char *buf, size_t n)
{
    char hex[65];
    hex_encode(m->sha256, 32, hex);
    snprintf(buf, n, "kid=%s sha=%.12s", m->kid, hex);
}
