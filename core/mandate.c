/*
 * mandate: claim parsing and validation of intent, cart and payment mandates.
 */
#include "core/mandate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/b64url.h"
#include "core/httpsig.h"
#include "core/jws.h"
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

static int jti_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 16 || n > MANDATE_JTI_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int get_money(const json_t *c, const char *key, struct money *out)
{
    const char *why;
    return money_from_json(json_object_get(c, key), false, out, &why);
}

/* Times are seconds after 1970 and before 2^40 (year 36812): every difference of two fits an
 * int64_t, so no time check can overflow, and 0 or a negative time is never accepted. */
#define MANDATE_TIME_MAX ((int64_t)1 << 40)

static int get_time(const json_t *c, const char *key, int64_t *out)
{
    return sjson_int(c, key, out) || *out <= 0 || *out >= MANDATE_TIME_MAX ? -1 : 0;
}

/* Claims shared by every type: iss, sub, jti, iat, exp, nbf?, action. */
static int common_claims(const json_t *c, struct mandate *m)
{
    if (get_id(c, "iss", m->iss, sizeof(m->iss)) || get_id(c, "sub", m->sub, sizeof(m->sub)) ||
        get_id(c, "action", m->action, sizeof(m->action)) ||
        get_id(c, "jti", m->jti, sizeof(m->jti)) || !jti_ok(m->jti) ||
        get_time(c, "iat", &m->iat) || get_time(c, "exp", &m->exp))
        return -1;
    if (json_object_get(c, "nbf") && get_time(c, "nbf", &m->nbf))
        return -1;
    return 0;
}

/* Intent and payment mandates: act.sub and aud. */
/* cnf: {"jwk": <public EC P-256 or OKP Ed25519 key>} (SPEC §7); anything else is malformed. */
static int cnf_claim(const json_t *c, struct mandate *m)
{
    json_t *cnf = json_object_get(c, "cnf");
    if (!cnf)
        return 0;
    json_t *jwk = json_object_get(cnf, "jwk");
    if (!json_is_object(cnf) || json_object_size(cnf) != 1 || !json_is_object(jwk))
        return -1;
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

static int cart_sum_ok(const json_t *c, const struct money *total)
{
    struct money sum = {0, ""};
    memcpy(sum.currency, total->currency, 4);
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(c, "items"), i, it)
    {
        struct money unit, line;
        int64_t qty;
        if (get_money(it, "unit", &unit) || sjson_int(it, "qty", &qty) ||
            money_mul(qty, &unit, &line) || money_add(&sum, &line, &sum))
            return 0;
    }
    return money_equal(&sum, total);
}

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

enum code mandate_verify(const char *tok, size_t len, unsigned accept, const struct keyring *kr,
                         const struct mandate_limits *lim, int64_t now, struct mandate *out)
{
    memset(out, 0, sizeof(*out));
    struct jws j;
    const char *why;
    json_t *claims = NULL;
    enum code rc = CODE_MANDATE_MALFORMED;

    if (jws_decode(tok, len, lim->max_bytes, &j, &why) != 0)
        return CODE_MANDATE_MALFORMED;
    if (!j.typ || strlen(j.kid) > JWK_KID_MAX)
        goto out;
    char *perr = NULL;
    claims = sjson_parse((char *)j.payload, j.payload_len, &perr);
    free(perr);
    if (!claims || !json_is_object(claims))
        goto out;
    if (typ_parse(j.typ, &out->typ) != 0) {
        rc = CODE_MANDATE_WRONG_TYPE;
        goto out;
    }
    strcpy(out->kid, j.kid);
    int bad = common_claims(claims, out);
    if (!bad && out->typ == MANDATE_INTENT)
        bad = agent_claims(claims, out) || intent_claims(claims, out);
    else if (!bad && out->typ == MANDATE_PAYMENT)
        bad = agent_claims(claims, out) || payment_claims(claims, out);
    else if (!bad)
        bad = cart_claims(claims, out);
    if (bad)
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
    if (jws_check(&j, key) != 0) {
        rc = CODE_MANDATE_BAD_SIGNATURE;
        goto out;
    }
    /* After the signature: parsing a key costs, and only the issuer's claims deserve it. */
    if (out->typ != MANDATE_CART && cnf_claim(claims, out) != 0)
        goto out;
    /* From here on the claims are the issuer's: keep them even when the times are wrong. */
    sha256(tok, len, out->sha256);
    rc = mandate_check_time(out, lim, now);
    if (rc == CODE_OK && out->typ == MANDATE_CART && !cart_sum_ok(claims, &out->total))
        rc = CODE_CART_INVALID;
    json_decref(claims);
    jws_clear(&j);
    return rc;
out:
    /* Nothing unsigned may pass for a claim (in an audit entry, a log line): keep only typ, and
     * for an unknown key the issuer named, so the caller can tell "no keys fetched yet for this
     * issuer" (SPEC §7: 503) from a key that does not exist. */
    {
        enum mandate_typ typ = out->typ;
        char iss[sizeof(out->iss)];
        memcpy(iss, out->iss, sizeof(iss));
        memset(out, 0, sizeof(*out));
        out->typ = typ;
        if (rc == CODE_MANDATE_UNKNOWN_KEY)
            memcpy(out->iss, iss, sizeof(iss));
    }
    json_decref(claims);
    jws_clear(&j);
    return rc;
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

void mandate_ref(const struct mandate *m, char *buf, size_t n)
{
    char hex[65];
    hex_encode(m->sha256, 32, hex);
    snprintf(buf, n, "kid=%s sha=%.12s", m->kid, hex);
}
