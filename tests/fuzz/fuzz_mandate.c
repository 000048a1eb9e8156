/*
 * libFuzzer target: mandate_verify() on arbitrary bytes, for every type mask, with a real key
 * ring; plus the JSON, base64url and cart-hash parsers it sits on. Nothing may crash, leak or
 * accept: a random input must never verify.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/b64url.h"
#include "core/mandate.h"
#include "core/sjson.h"

static struct keyring ring;

static void setup(void)
{
    struct jwk k;
    if (jwk_generate(JWK_ES256, "k1", &k) != 0)
        abort();
    struct jwks *set = xcalloc(1, sizeof(*set));
    set->keys = xcalloc(1, sizeof(struct jwk));
    set->keys[0] = k;
    set->n = 1;
    keyring_add(&ring, "wallet-1", set);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ring.n)
        setup();
    static const struct mandate_limits lim = {8192, 5, 300};
    struct mandate m;
    for (unsigned mask = 1; mask <= 7; mask++)
        if (mandate_verify((const char *)data, size, mask, &ring, &lim, 1800000000, &m) == CODE_OK)
            abort(); /* nobody but us holds the key */
    char *err = NULL;
    json_t *v = sjson_parse((const char *)data, size, &err);
    free(err);
    json_decref(v);
    unsigned char *out = malloc(B64URL_DEC_MAX(size) + 1);
    long n = b64url_decode((const char *)data, size, out);
    if (n >= 0) {
        /* Canonical: re-encoding gives back the input exactly. */
        char *back = b64url_encode_new(out, (size_t)n);
        if (strlen(back) != size || memcmp(back, data, size) != 0)
            abort();
        free(back);
    }
    free(out);
    return 0;
}
