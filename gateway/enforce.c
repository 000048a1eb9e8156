/*
 * enforce: mandate checks for a routed request, in SPEC's fixed order.
 */
#include "gateway/enforce.h"

#include <string.h>
#include <strings.h>

#include "core/sha256.h"
#include "gateway/jwks_remote.h"

/* The cart checks of SPEC §2.1 step 3 for a priced route, after the payment mandate verified. */
static enum code check_cart(const struct config *conf, const struct route *route, const char *cart,
                            int64_t now, struct verdict *v)
{
    if (!cart)
        return CODE_PAYMENT_REQUIRED;
    while (*cart == ' ')
        cart++;
    v->cart_token = cart;
    v->cart_len = strlen(cart);
    while (v->cart_len && cart[v->cart_len - 1] == ' ')
        v->cart_len--;
    enum code rc = mandate_verify(cart, v->cart_len, MANDATE_CART, &conf->merchant_keys,
                                  &conf->mandate_limits, now, &v->cart);
    if (rc == CODE_MANDATE_UNKNOWN_KEY &&
        jwks_remote_unknown_key(&conf->merchant_keys, v->cart.iss) == CODE_UNAVAILABLE)
        return CODE_UNAVAILABLE; /* the merchant's remote keys were never fetched (SPEC §7) */
    if (rc == CODE_MANDATE_EXPIRED)
        return CODE_CART_EXPIRED;
    if (rc != CODE_OK || strcmp(v->cart.iss, route->merchant->id) != 0)
        return CODE_CART_INVALID; /* not a cart validly signed by this route's merchant */
    if (strcmp(v->cart.action, route->action) != 0 || strcmp(v->cart.sub, v->m.sub) != 0)
        return CODE_CART_MISMATCH;
    char hash[44];
    mandate_hash_b64(&v->cart, hash); /* the verified cart's own SHA-256, not a second hash */
    if (strcmp(hash, v->m.cart_hash) != 0)
        return CODE_CART_MISMATCH;
    if (!money_equal(&v->m.total, &v->cart.total))
        return CODE_AMOUNT_MISMATCH;
    /* A cap in another currency cannot be checked against this total: refuse. */
    if (strcmp(v->m.cap.currency, v->m.total.currency) != 0)
        return CODE_SPEND_CAP_EXCEEDED;
    v->has_cart = true;
    return CODE_OK;
}

/* The token after "Mandate " (scheme case-insensitive, RFC 9110 §11.1), or NULL. */
static const char *mandate_token(const char *authorization, size_t *len)
{
    if (!authorization || strncasecmp(authorization, "Mandate ", 8) != 0)
        return NULL;
    const char *t = authorization + 8;
    while (*t == ' ')
        t++;
    size_t n = strlen(t);
    while (n && t[n - 1] == ' ')
        n--;
    *len = n;
    return n ? t : NULL;
}

/* mandate_verify() through the cache: a hit skips everything but the time checks. */
static enum code verify_cached(const struct config *conf, unsigned accept, int64_t now,
                               struct vcache *cache, struct verdict *v)
{
    if (!cache || v->token_len > conf->mandate_limits.max_bytes)
        return mandate_verify(v->token, v->token_len, accept, &conf->issuers, &conf->mandate_limits,
                              now, &v->m);
    unsigned char key[32];
    sha256(v->token, v->token_len, key);
    struct vcache_slot *s = &cache->v[(key[0] | key[1] << 8) % VCACHE_SLOTS];
    if (s->used && memcmp(s->key, key, 32) == 0 && (accept & s->m.typ)) {
        v->m = s->m;
        return mandate_check_time(&v->m, &conf->mandate_limits, now);
    }
    enum code rc = mandate_verify_hashed(v->token, v->token_len, key, accept, &conf->issuers,
                                         &conf->mandate_limits, now, &v->m);
    if (rc == CODE_OK && v->m.uses > 1) {
        memcpy(s->key, key, 32);
        s->m = v->m;
        s->used = true;
    }
    return rc;
}

enum code enforce(const struct config *conf, const struct route *route, const char *authorization,
                  const char *cart, int64_t now, struct vcache *cache, struct verdict *v)
{
    memset(v, 0, sizeof(*v));
    v->token = mandate_token(authorization, &v->token_len);
    if (!v->token)
        return v->code = CODE_MANDATE_MISSING;
    unsigned accept = route->priced ? MANDATE_PAYMENT : MANDATE_INTENT;
    v->code = verify_cached(conf, accept, now, cache, v);
    if (v->code == CODE_MANDATE_UNKNOWN_KEY) /* 503 while the issuer's remote keys never came */
        v->code = jwks_remote_unknown_key(&conf->issuers, v->m.iss);
    if (route->priced && v->code == CODE_MANDATE_WRONG_TYPE && v->m.typ == MANDATE_INTENT)
        return v->code = CODE_PAYMENT_REQUIRED;
    if (v->code != CODE_OK)
        return v->code;
    if (strcmp(v->m.aud, route->merchant->id) != 0)
        return v->code = CODE_MANDATE_WRONG_MERCHANT;
    if (strcmp(v->m.action, route->action) != 0)
        return v->code = CODE_MANDATE_WRONG_ACTION;
    if (route->priced)
        return v->code = check_cart(conf, route, cart, now, v);
    return CODE_OK;
}
