/*
 * mint_tokens: write N intent mandates, one per line, for load tests.
 *   mint_tokens KEY.pem KID N USES [TTL_S]
 * Claims: iss wallet-1, sub alice, agent bench-agent, aud bench-shop, action echo.
 */
#include <stdio.h>
#include <stdlib.h>

#include <openssl/rand.h>

#include "core/jwk.h"
#include "core/mandate.h"
#include "core/sjson.h"

int main(int argc, char **argv)
{
    if (argc < 5) {
        fputs("usage: mint_tokens KEY.pem KID N USES [TTL_S]\n", stderr);
        return 1;
    }
    struct jwk k;
    char *err = NULL;
    if (jwk_load_private(argv[1], argv[2], &k, &err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    long n = atol(argv[3]);
    long long uses = atoll(argv[4]), ttl = argc > 5 ? atoll(argv[5]) : 3600;
    int64_t now = now_s();
    for (long i = 0; i < n; i++) {
        unsigned char r[12];
        char jti[25];
        if (RAND_bytes(r, sizeof(r)) != 1)
            return 1;
        hex_encode(r, sizeof(r), jti);
        json_t *c = json_pack("{ss ss s{ss} ss ss sI sI ss sI}", "iss", "wallet-1", "sub", "alice",
                              "act", "sub", "bench-agent", "aud", "bench-shop", "action", "echo",
                              "iat", (json_int_t)now, "exp", (json_int_t)(now + ttl), "jti", jti,
                              "uses", (json_int_t)uses);
        char *tok = mandate_sign(&k, MANDATE_INTENT, c);
        json_decref(c);
        if (!tok)
            return 1;
        puts(tok);
        free(tok);
    }
    jwk_clear(&k);
    return 0;
}
