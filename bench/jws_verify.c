/*
 * jws_verify: JWS verifications per second on one core, keys parsed once (as the gateway does),
 * for ES256 and EdDSA, both through jws_verify_raw (the signature alone) and mandate_verify (the
 * whole token: base64url, JSON, claims, signature, times). Compare with
 * `openssl speed -seconds 2 ecdsap256 ed25519` on the same machine.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jwk.h"
#include "core/jws.h"
#include "core/mandate.h"
#include "core/sjson.h"

static double run(const struct jwk *k, const char *tok, const struct keyring *ring, int whole,
                  double seconds)
{
    struct mandate_limits lim = {8192, 5, 300};
    struct jws j;
    const char *why;
    if (jws_decode(tok, strlen(tok), 8192, &j, &why) != 0)
        abort();
    long n = 0;
    int64_t start = mono_us(), end = start + (int64_t)(seconds * 1e6), t;
    do {
        for (int i = 0; i < 100; i++, n++) {
            struct mandate m;
            int ok = whole ? mandate_verify(tok, strlen(tok), MANDATE_INTENT, ring, &lim, now_s(),
                                            &m) == CODE_OK
                           : jws_check(&j, k) == 0;
            if (!ok)
                abort();
        }
        t = mono_us();
    } while (t < end);
    jws_clear(&j);
    return (double)n / ((double)(t - start) / 1e6);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    static const enum jwk_alg algs[] = {JWK_ES256, JWK_EDDSA};
    for (size_t a = 0; a < 2; a++) {
        struct jwk k;
        if (jwk_generate(algs[a], "k1", &k) != 0)
            abort();
        struct jwks *set = xcalloc(1, sizeof(*set));
        set->keys = xcalloc(1, sizeof(struct jwk));
        set->keys[0] = k;
        EVP_PKEY_up_ref(k.pkey);
        set->n = 1;
        struct keyring ring = {0};
        keyring_add(&ring, "wallet-1", set);
        int64_t now = now_s();
        json_t *c = json_pack("{ss ss s{ss} ss ss sI sI ss}", "iss", "wallet-1", "sub", "alice",
                              "act", "sub", "agent-planner", "aud", "lux-hotels", "action",
                              "search", "iat", (json_int_t)now, "exp", (json_int_t)now + 300, "jti",
                              "bench-0123456789abcdef");
        char *tok = mandate_sign(&k, MANDATE_INTENT, c);
        json_decref(c);
        printf("%-6s signature only: %9.0f verify/s   whole mandate: %9.0f verify/s\n",
               jwk_alg_name(algs[a]), run(&k, tok, &ring, 0, seconds),
               run(&k, tok, &ring, 1, seconds));
        free(tok);
        keyring_clear(&ring);
        jwk_clear(&k);
    }
    return 0;
}
