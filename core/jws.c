/*
 * jws: compact JWS decode, sign and verify.
 */
#include "core/jws.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/ecdsa.h>

#include "core/b64url.h"
#include "core/sjson.h"

int jws_decode(const char *tok, size_t len, size_t max_len, struct jws *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (len > max_len) {
        *why = "token is too long";
        return -1;
    }
    const char *d1 = memchr(tok, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok))) {
        *why = "not three dot-separated segments";
        return -1;
    }
    size_t hlen = (size_t)(d1 - tok), plen = (size_t)(d2 - d1 - 1);
    size_t slen = len - (size_t)(d2 + 1 - tok);
    if (hlen == 0) {
        *why = "empty header";
        return -1;
    }

    unsigned char *hbuf = xmalloc(B64URL_DEC_MAX(hlen) + 1);
    long hn = b64url_decode(tok, hlen, hbuf);
    if (hn < 0) {
        free(hbuf);
        *why = "header is not base64url";
        return -1;
    }
    char *perr = NULL;
    out->header = sjson_parse((char *)hbuf, (size_t)hn, &perr);
    free(hbuf);
    if (!out->header || !json_is_object(out->header)) {
        free(perr);
        *why = "header is not a JSON object without duplicate members";
        goto fail;
    }
    if (json_object_get(out->header, "crit")) {
        *why = "header has crit";
        goto fail;
    }
    out->alg = sjson_str(out->header, "alg");
    out->kid = sjson_str(out->header, "kid");
    json_t *typ = json_object_get(out->header, "typ");
    if (!out->alg || !out->kid || (typ && !json_is_string(typ))) {
        *why = "header needs string alg and kid (and typ, if present, a string)";
        goto fail;
    }
    out->typ = json_string_value(typ);

    out->payload = xmalloc(B64URL_DEC_MAX(plen) + 1 + B64URL_DEC_MAX(slen));
    long pn = b64url_decode(d1 + 1, plen, out->payload);
    if (pn < 0) {
        *why = "payload is not base64url";
        goto fail;
    }
    out->payload_len = (size_t)pn;
    out->payload[pn] = '\0';
    out->sig = out->payload + pn + 1;
    long sn = b64url_decode(d2 + 1, slen, out->sig);
    if (sn < 0) {
        *why = "signature is not base64url";
        goto fail;
    }
    out->sig_len = (size_t)sn;
    out->input = tok;
    out->input_len = (size_t)(d2 - tok);
    return 0;
fail:
    jws_clear(out);
    return -1;
}

void jws_clear(struct jws *j)
{
    json_decref(j->header);
    free(j->payload);
    memset(j, 0, sizeof(*j));
}

int jws_check(const struct jws *j, const struct jwk *key)
{
    if (strcmp(j->alg, jwk_alg_name(key->alg)) != 0)
        return -1;
    return jws_verify_raw(key, (const unsigned char *)j->input, j->input_len, j->sig, j->sig_len);
}

/* r||s → DER, which is what OpenSSL verifies. */
static int es256_der(const unsigned char *sig, unsigned char **der, int *der_len)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return -1;
    }
    *der = NULL;
    *der_len = i2d_ECDSA_SIG(es, der);
    ECDSA_SIG_free(es);
    return *der_len > 0 ? 0 : -1;
}

int jws_verify_raw(const struct jwk *key, const unsigned char *msg, size_t len,
                   const unsigned char *sig, size_t sig_len)
{
    if (sig_len != JWS_SIG_LEN)
        return -1;
    int ret = -1;
    unsigned char *der = NULL;
    int der_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -1;
    if (key->alg == JWK_ES256) {
        if (es256_der(sig, &der, &der_len) != 0 ||
            EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key->pkey) != 1)
            goto out;
        if (EVP_DigestVerify(ctx, der, (size_t)der_len, msg, len) == 1)
            ret = 0;
    } else {
        if (EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key->pkey) != 1)
            goto out;
        if (EVP_DigestVerify(ctx, sig, sig_len, msg, len) == 1)
            ret = 0;
    }
out:
    OPENSSL_free(der);
    EVP_MD_CTX_free(ctx);
    return ret;
}

int jws_sign_raw(const struct jwk *key, const unsigned char *msg, size_t len,
                 unsigned char sig[JWS_SIG_LEN])
{
    int ret = -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char der[80];
    size_t der_len = sizeof(der);
    ECDSA_SIG *es = NULL;
    if (!ctx)
        return -1;
    if (key->alg == JWK_EDDSA) {
        size_t n = JWS_SIG_LEN;
        if (EVP_DigestSignInit(ctx, NULL, NULL, NULL, key->pkey) == 1 &&
            EVP_DigestSign(ctx, sig, &n, msg, len) == 1 && n == JWS_SIG_LEN)
            ret = 0;
        goto out;
    }
    if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key->pkey) != 1 ||
        EVP_DigestSign(ctx, der, &der_len, msg, len) != 1)
        goto out;
    const unsigned char *p = der;
    es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (!es || BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32) != 32 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32) != 32)
        goto out;
    ret = 0;
out:
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(ctx);
    return ret;
}

char *jws_sign(const struct jwk *key, const char *typ, const char *payload, size_t len)
{
    json_t *h = json_pack("{ssssss}", "alg", jwk_alg_name(key->alg), "kid", key->kid, "typ", typ);
    char *hs = sjson_dump(h);
    json_decref(h);
    size_t hl = strlen(hs);
    char *out = xmalloc(B64URL_ENC_LEN(hl) + B64URL_ENC_LEN(len) + B64URL_ENC_LEN(JWS_SIG_LEN));
    size_t n = b64url_encode((unsigned char *)hs, hl, out);
    free(hs);
    out[n++] = '.';
    n += b64url_encode((const unsigned char *)payload, len, out + n);
    unsigned char sig[JWS_SIG_LEN];
    if (jws_sign_raw(key, (unsigned char *)out, n, sig) != 0) {
        free(out);
        return NULL;
    }
    out[n++] = '.';
    b64url_encode(sig, JWS_SIG_LEN, out + n);
    return out;
}
