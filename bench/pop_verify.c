/*
 * pop_verify: the cost of a proof-of-possession check (SPEC §7) on one core, next to a mandate
 * verification (build/bench/jws_verify): httpsig_verify of a request signed as an agent signs it
 * (the gateway's required components, a mandate-sized Authorization), for Ed25519 and P-256, the
 * key parsed once (the gateway caches agent keys per worker). Prints checks/s and µs per check.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/httpsig.h"
#include "core/jwk.h"

struct fields {
    const char *authorization, *input, *signature;
};

static size_t field(void *ctx, const char *name, const char **vals, size_t max)
{
    const struct fields *f = ctx;
    const char *v = strcmp(name, "authorization") == 0     ? f->authorization
                    : strcmp(name, "signature-input") == 0 ? f->input
                    : strcmp(name, "signature") == 0       ? f->signature
                                                           : NULL;
    if (!v || max == 0)
        return 0;
    vals[0] = v;
    return 1;
}

static double run(const struct jwk *k, double seconds)
{
    static const char *const comps[] = {"@method", "@authority", "@path", "@query",
                                        "authorization"};
    char auth[700] = "Mandate ";
    memset(auth + 8, 'A', 600); /* about the size of an ES256 intent mandate */
    struct fields f = {auth, NULL, NULL};
    struct httpsig_msg msg = {.method = "GET",
                              .authority = "127.0.0.1:8080",
                              .path = "/lux/search",
                              .query = "q=rome",
                              .field = field,
                              .ctx = &f};
    char nonce[33], *input, *sig, *err;
    httpsig_nonce(nonce);
    int64_t now = now_s();
    struct httpsig_sign_params p = {.components = comps,
                                    .n_components = 5,
                                    .created = now,
                                    .expires = now + 30,
                                    .nonce = nonce,
                                    .keyid = k->kid};
    if (httpsig_sign(&msg, "mandate", k, &p, &input, &sig, &err) != 0)
        abort();
    f.input = input;
    f.signature = sig;
    struct httpsig_policy pol = {.required = comps,
                                 .n_required = 5,
                                 .need = HTTPSIG_NEED_ALL,
                                 .keyid = k->kid,
                                 .max_window_s = 60,
                                 .skew_s = 5};
    long n = 0;
    int64_t start = mono_us(), end = start + (int64_t)(seconds * 1e6), t;
    do {
        for (int i = 0; i < 50; i++, n++) {
            struct httpsig_result res;
            if (httpsig_verify(&msg, "mandate", k, &pol, now_s(), &res) != HTTPSIG_OK)
                abort();
        }
        t = mono_us();
    } while (t < end);
    free(input);
    free(sig);
    return (double)n / ((double)(t - start) / 1e6);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    static const enum jwk_alg algs[] = {JWK_EDDSA, JWK_ES256};
    for (size_t a = 0; a < 2; a++) {
        struct jwk k;
        if (jwk_generate(algs[a], "agent", &k) != 0)
            abort();
        double rate = run(&k, seconds);
        printf("%-6s PoP check (RFC 9421 verify): %8.0f /s  %6.1f us each\n", jwk_alg_name(algs[a]),
               rate, 1e6 / rate);
        jwk_clear(&k);
    }
    return 0;
}
