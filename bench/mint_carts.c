/*
 * mint_carts: write N priced requests' tokens for load tests, one "PAYMENT<TAB>CART" per line:
 * a cart signed by the merchant's key and a payment mandate from the wallet's key bound to it.
 *   mint_carts WALLET.pem WKID MERCHANT.pem MKID N [TTL_S] [PRINCIPALS]
 * Cart: iss bench-shop, one item of 1.00 EUR, action book. Payment: iss wallet-1, agent
 * bench-agent, aud bench-shop, action book, cap 10^12 EUR cents a day (never reached by a
 * benchmark). The principal is p<i % PRINCIPALS> (default 1: every payment counts against the
 * same cap, as one busy principal would).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "core/jwk.h"
#include "core/mandate.h"
#include "core/sjson.h"

#define AMOUNT 100
#define CAP    1000000000000LL

static int random_jti(char out[25])
{
    unsigned char r[12];
    if (RAND_bytes(r, sizeof(r)) != 1)
        return -1;
    hex_encode(r, sizeof(r), out);
    return 0;
}

static char *sign(const struct jwk *k, enum mandate_typ typ, json_t *claims)
{
    char *tok = mandate_sign(k, typ, claims);
    json_decref(claims);
    return tok;
}

/* {"value": AMOUNT, "currency": "EUR"} */
static json_t *amount(void)
{
    return json_pack("{si ss}", "value", AMOUNT, "currency", "EUR");
}

static char *mint_cart(const struct jwk *merchant, const char *sub, const char *jti, int64_t now,
                       int64_t ttl)
{
    json_t *item = json_pack("{ss si so}", "sku", "bench", "qty", 1, "unit", amount());
    return sign(merchant, MANDATE_CART,
                json_pack("{ss ss ss sI sI ss s[o] so}", "iss", "bench-shop", "sub", sub, "jti",
                          jti, "iat", (json_int_t)now, "exp", (json_int_t)(now + ttl), "action",
                          "book", "items", item, "total", amount()));
}

static char *mint_payment(const struct jwk *wallet, const char *sub, const char *jti,
                          const char *cart_hash, int64_t now, int64_t ttl)
{
    json_t *cap =
        json_pack("{sI ss ss}", "value", (json_int_t)CAP, "currency", "EUR", "period", "day");
    return sign(wallet, MANDATE_PAYMENT,
                json_pack("{ss ss s{ss} ss ss sI sI ss ss so so}", "iss", "wallet-1", "sub", sub,
                          "act", "sub", "bench-agent", "aud", "bench-shop", "action", "book", "iat",
                          (json_int_t)now, "exp", (json_int_t)(now + ttl), "jti", jti, "cart",
                          cart_hash, "total", amount(), "cap", cap));
}

/* One cart and the payment mandate for it, printed on one line. */
static int mint_one(const struct jwk *wallet, const struct jwk *merchant, const char *sub,
                    int64_t now, int64_t ttl)
{
    char jti[25], pjti[25], hash[44];
    if (random_jti(jti) != 0 || random_jti(pjti) != 0)
        return -1;
    char *cart = mint_cart(merchant, sub, jti, now, ttl);
    if (!cart)
        return -1;
    mandate_cart_hash(cart, strlen(cart), hash);
    char *pay = mint_payment(wallet, sub, pjti, hash, now, ttl);
    if (pay)
        printf("%s\t%s\n", pay, cart);
    free(pay);
    free(cart);
    return pay ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fputs("usage: mint_carts WALLET.pem WKID MERCHANT.pem MKID N [TTL_S] [PRINCIPALS]\n",
              stderr);
        return 1;
    }
    struct jwk wallet, merchant;
    char *err = NULL;
    if (jwk_load_private(argv[1], argv[2], &wallet, &err) != 0 ||
        jwk_load_private(argv[3], argv[4], &merchant, &err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    long n = atol(argv[5]);
    long long ttl = argc > 6 ? atoll(argv[6]) : 3600;
    long principals = argc > 7 ? atol(argv[7]) : 1;
    if (principals < 1)
        principals = 1;
    int64_t now = now_s();
    for (long i = 0; i < n; i++) {
        char sub[32];
        snprintf(sub, sizeof(sub), "p%ld", i % principals);
        if (mint_one(&wallet, &merchant, sub, now, ttl) != 0)
            return 1;
    }
    jwk_clear(&wallet);
    jwk_clear(&merchant);
    return 0;
}
