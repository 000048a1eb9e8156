/*
 * libFuzzer target for core/httpsig: the RFC 8941 dictionary parser, Content-Digest and
 * httpsig_verify() with a fixed key. Nothing may crash or leak; in addition
 *  - a parsed dictionary serialises to text that parses again and serialises identically, and
 *    each inner list serialises to text that parses back as the same inner list;
 *  - verification never accepts (only this target holds the key, and it signs nothing);
 *  - a signature that does verify over the fuzzed fields stops verifying if the signed
 *    Authorization header changes.
 * The input is split at newlines: Signature-Input, Signature, Authorization, Content-Digest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/httpsig.h"

static struct jwk priv, pub;

static void setup(void)
{
    if (jwk_generate(JWK_EDDSA, "agent", &priv) != 0)
        abort();
    json_t *j = jwk_to_json(&priv);
    char *err = NULL;
    if (httpsig_jwk_from_cnf(j, &pub, &err) != 0)
        abort();
    json_decref(j);
}

struct fmsg {
    const char *name[4];
    char *value[4];
};

static size_t ffield(void *ctx, const char *name, const char **vals, size_t max)
{
    struct fmsg *f = ctx;
    size_t n = 0;
    for (int i = 0; i < 4; i++)
        if (f->value[i] && strcmp(f->name[i], name) == 0 && n < max)
            vals[n++] = f->value[i];
    return n;
}

/* Serialise, parse again, serialise again: the two texts must be equal. */
static void sf_roundtrip(const uint8_t *data, size_t size)
{
    struct httpsig_sf_dict d, d2;
    const char *why;
    if (httpsig_sf_parse_dict((const char *)data, size, &d, &why) != 0)
        return;
    char *s = httpsig_sf_dict_serialize(&d);
    /* Canonical text can be longer than the input ("a,b" becomes "a, b"): past the parser's
     * bound it may be refused, below it never. */
    if (httpsig_sf_parse_dict(s, strlen(s), &d2, &why) == 0) {
        char *s2 = httpsig_sf_dict_serialize(&d2);
        if (strcmp(s, s2) != 0 || d2.n != d.n)
            abort();
        free(s2);
        httpsig_sf_dict_clear(&d2);
    } else if (strlen(s) <= HTTPSIG_SF_MAX_INPUT) {
        abort(); /* our own output must parse */
    }
    for (size_t i = 0; i < d.n; i++) {
        if (!d.m[i].inner)
            continue;
        char *inner = httpsig_sf_inner_list(&d, &d.m[i]);
        size_t len = strlen(inner) + 2;
        char *text = malloc(len + 1);
        memcpy(text, "k=", 2);
        memcpy(text + 2, inner, len - 1);
        if (httpsig_sf_parse_dict(text, len, &d2, &why) == 0) {
            char *back = httpsig_sf_inner_list(&d2, &d2.m[0]);
            if (d2.n != 1 || !d2.m[0].inner || strcmp(back, inner) != 0)
                abort();
            free(back);
            httpsig_sf_dict_clear(&d2);
        } else if (len <= HTTPSIG_SF_MAX_INPUT) {
            abort();
        }
        free(text);
        free(inner);
    }
    free(s);
    httpsig_sf_dict_clear(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!pub.pkey)
        setup();
    sf_roundtrip(data, size);

    struct httpsig_digest dg;
    const char *why;
    if (httpsig_digest_begin(&dg, (const char *)data, size, &why) == 0) {
        httpsig_digest_update(&dg, data, size);
        int matched = httpsig_digest_end(&dg); /* either answer is fine; it must not crash */
        (void)matched;
    }

    /* The fields of a request, split at newlines (NUL-terminated copies). */
    struct fmsg f = {{"signature-input", "signature", "authorization", "content-digest"}, {0}};
    size_t start = 0;
    for (int i = 0; i < 4 && start <= size; i++) {
        const uint8_t *nl = memchr(data + start, '\n', size - start);
        size_t end = nl ? (size_t)(nl - data) : size;
        f.value[i] = strndup((const char *)data + start, end - start);
        start = end + 1;
        if (!nl)
            break;
    }
    struct httpsig_msg m = {.method = "POST",
                            .scheme = "https",
                            .authority = "Shop.Example:443",
                            .path = "/v1/pay",
                            .query = "x=1",
                            .field = ffield,
                            .ctx = &f};
    static const char *const required[] = {"@method", "@authority", "@path", "authorization"};
    struct httpsig_policy p = {.required = required,
                               .n_required = 4,
                               .need = HTTPSIG_NEED_ALL,
                               .max_window_s = 60,
                               .skew_s = 5};
    struct httpsig_result r;
    if (httpsig_verify(&m, "mandate", &pub, &p, 1800000000, &r) == HTTPSIG_OK)
        abort(); /* nobody but us holds the key */
    struct httpsig_policy lax = {.max_window_s = INT64_MAX / 2, .skew_s = 0};
    for (int i = 0; i < 2; i++) {
        const char *label = i ? "sig1" : "mandate";
        if (httpsig_verify(&m, label, &pub, &lax, 1800000000, &r) == HTTPSIG_OK)
            abort();
        size_t len;
        char *err = NULL;
        char *base = httpsig_base(&m, label, &len, &err);
        free(base);
        free(err);
    }

    /* Sign what the fuzzer's Signature-Input would cover, then change a covered byte. */
    static const char *const comps[] = {"@method", "@path", "authorization"};
    struct httpsig_sign_params sp = {.components = comps,
                                     .n_components = 3,
                                     .created = 1800000000,
                                     .expires = -1,
                                     .keyid = pub.kid,
                                     .tag = f.value[3]};
    char *in = NULL, *sig = NULL, *err = NULL;
    if (f.value[2] && httpsig_sign(&m, "mandate", &priv, &sp, &in, &sig, &err) == 0) {
        char *saved_in = f.value[0], *saved_sig = f.value[1];
        f.value[0] = in;
        f.value[1] = sig;
        if (httpsig_verify(&m, "mandate", &pub, &lax, 1800000000, &r) != HTTPSIG_OK)
            abort(); /* what we sign must verify */
        char *authz = f.value[2];
        size_t alen = strlen(authz);
        char *changed = malloc(alen + 2);
        memcpy(changed, authz, alen);
        changed[alen] = 'x';
        changed[alen + 1] = '\0';
        f.value[2] = changed;
        if (httpsig_verify(&m, "mandate", &pub, &lax, 1800000000, &r) == HTTPSIG_OK)
            abort();
        f.value[2] = authz;
        free(changed);
        f.value[0] = saved_in;
        f.value[1] = saved_sig;
        free(in);
        free(sig);
    }
    free(err);
    for (int i = 0; i < 4; i++)
        free(f.value[i]);
    return 0;
}
