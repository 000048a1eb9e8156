/*
 * mint: mandate claims and signing.
 */
#include "wallet/mint.h"

#include <string.h>

#include <openssl/rand.h>

#include "core/sjson.h"

static int new_jti(char out[MANDATE_JTI_MAX + 1])
{
    unsigned char r[16];
    if (RAND_bytes(r, sizeof(r)) != 1)
        return -1;
    hex_encode(r, sizeof(r), out); /* 32 characters of [0-9a-f] */
    return 0;
}

/* Claims every wallet mandate has. */
static json_t *base_claims(const struct wallet_config *w, const struct agent *a,
                           const char *merchant, const char *action, int64_t now, int64_t exp,
                           const char *jti)
{
    json_t *c = json_pack("{ss ss s{ss} ss ss sI sI ss}", "iss", w->id, "sub", a->principal->id,
                          "act", "sub", a->id, "aud", merchant, "action", action, "iat",
                          (json_int_t)now, "exp", (json_int_t)exp, "jti", jti);
    /* RFC 7800 confirmation (SPEC §7): the mandate is only good with a request signed by the
     * agent's key, so a copy of it alone is worth nothing. */
    if (a->cnf_jwk) {
        json_t *cnf = json_object();
        sjson_set(cnf, "jwk", json_deep_copy(a->cnf_jwk));
        sjson_set(c, "cnf", cnf);
    }
    return c;
}

static int sign(const struct wallet_config *w, enum mandate_typ typ, json_t *claims,
                struct minted *out)
{
    out->mandate = mandate_sign(&w->signing_key, typ, claims);
    json_decref(claims);
    return out->mandate ? 0 : -1;
}

int mint_intent(const struct wallet_config *w, const struct agent *a, const char *merchant,
                const char *action, int64_t ttl_s, int64_t uses, const struct money *max_amount,
                int64_t now, struct minted *out)
{
    memset(out, 0, sizeof(*out));
    if (new_jti(out->jti) != 0)
        return -1;
    out->expires_at = now + ttl_s;
    json_t *c = base_claims(w, a, merchant, action, now, out->expires_at, out->jti);
    if (uses != 1)
        sjson_set(c, "uses", json_integer(uses));
    if (max_amount)
        sjson_set(c, "max_amount", money_to_json(max_amount));
    return sign(w, MANDATE_INTENT, c, out);
}

int mint_payment(const struct wallet_config *w, const struct agent *a, const struct mandate *cart,
                 const char *cart_jws, int64_t now, struct minted *out)
{
    memset(out, 0, sizeof(*out));
    if (new_jti(out->jti) != 0)
        return -1;
    /* Never outlive the price lock it pays for. */
    out->expires_at = now + w->default_ttl_s < cart->exp ? now + w->default_ttl_s : cart->exp;
    char hash[44];
    mandate_cart_hash(cart_jws, strlen(cart_jws), hash);
    const struct principal *p = a->principal;
    json_t *c = base_claims(w, a, cart->iss, cart->action, now, out->expires_at, out->jti);
    sjson_set(c, "cart", json_string(hash));
    sjson_set(c, "total", money_to_json(&cart->total));
    json_t *cap = money_to_json(&p->spend_cap);
    sjson_set(cap, "period", json_string(cap_period_name(p->cap_period)));
    sjson_set(c, "cap", cap);
    return sign(w, MANDATE_PAYMENT, c, out);
}
