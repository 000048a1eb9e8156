/*
 * jws: compact JWS decode, sign and verify.
 */
#include "core/jws.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ecdsa.h>

#include "core/b64url.h"
#include "core/jsonscan.h"
#include "core/sha256.h"
#include "core/sjson.h"

/* Reads decoded header bytes h[0..n) into j->alg, j->kid and j->typ, copied to strs (n bytes
 * at least: every string's decoded bytes and NUL fit in its quoted text). 0, or -1 with *why. */
typedef int (*header_reader)(struct jws *j, const char *h, size_t n, char *strs, const char **why);

static const char *copy_str(struct js_val v, char **strs)
{
    char *s = *strs;
    *strs += js_str(v, s, SIZE_MAX) + 1;
    return s;
}

static int header_scan(struct jws *j, const char *h, size_t n, char *strs, const char **why)
{
    struct js_doc d;
    int rc = -1;
    if (js_parse(&d, h, n) != 0 || js_type(d.root) != JS_OBJECT) {
        *why = "header is not a JSON object without duplicate members";
        goto out;
    }
    if (js_root_get(&d, "crit").p) {
        *why = "header has crit";
        goto out;
    }
    struct js_val alg = js_root_get(&d, "alg"), kid = js_root_get(&d, "kid");
    struct js_val typ = js_root_get(&d, "typ");
    if (js_type(alg) != JS_STRING || js_type(kid) != JS_STRING ||
        (typ.p && js_type(typ) != JS_STRING)) {
        *why = "header needs string alg and kid (and typ, if present, a string)";
        goto out;
    }
    j->alg = copy_str(alg, &strs);
    j->kid = copy_str(kid, &strs);
    j->typ = typ.p ? copy_str(typ, &strs) : NULL;
    rc = 0;
out:
    js_clear(&d);
    return rc;
}

static const char *copy_cstr(const char *v, char **strs)
{
    char *s = *strs;
    size_t n = strlen(v) + 1;
    memcpy(s, v, n);
    *strs += n;
    return s;
}

static int header_tree(struct jws *j, const char *h, size_t n, char *strs, const char **why)
{
    char *perr = NULL;
    json_t *header = sjson_parse(h, n, &perr);
    free(perr);
    int rc = -1;
    if (!header || !json_is_object(header)) {
        *why = "header is not a JSON object without duplicate members";
        goto out;
    }
    if (json_object_get(header, "crit")) {
        *why = "header has crit";
        goto out;
    }
    const char *alg = sjson_str(header, "alg"), *kid = sjson_str(header, "kid");
    json_t *typ = json_object_get(header, "typ");
    if (!alg || !kid || (typ && !json_is_string(typ))) {
        *why = "header needs string alg and kid (and typ, if present, a string)";
        goto out;
    }
    j->alg = copy_cstr(alg, &strs);
    j->kid = copy_cstr(kid, &strs);
    j->typ = typ ? copy_cstr(json_string_value(typ), &strs) : NULL;
    rc = 0;
out:
    json_decref(header);
    return rc;
}

static int decode(const char *tok, size_t len, size_t max_len, struct jws *out, const char **why,
                  header_reader header)
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

    /* One allocation: the decoded header, its strings, the payload and the signature. */
    size_t hmax = B64URL_DEC_MAX(hlen) + 1;
    out->buf = xmalloc(2 * hmax + B64URL_DEC_MAX(plen) + 1 + B64URL_DEC_MAX(slen));
    long hn = b64url_decode(tok, hlen, (unsigned char *)out->buf);
    if (hn < 0) {
        *why = "header is not base64url";
        goto fail;
    }
    if (header(out, out->buf, (size_t)hn, out->buf + hmax, why) != 0)
        goto fail;

    out->payload = (unsigned char *)out->buf + 2 * hmax;
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

int jws_decode(const char *tok, size_t len, size_t max_len, struct jws *out, const char **why)
{
    return decode(tok, len, max_len, out, why, header_scan);
}

int jws_decode_tree(const char *tok, size_t len, size_t max_len, struct jws *out, const char **why)
{
    return decode(tok, len, max_len, out, why, header_tree);
}

void jws_clear(struct jws *j)
{
    free(j->buf);
    memset(j, 0, sizeof(*j));
}

int jws_check(const struct jws *j, const struct jwk *key)
{
    if (strcmp(j->alg, jwk_alg_name(key->alg)) != 0)
        return -1;
    return jws_verify_raw(key, (const unsigned char *)j->input, j->input_len, j->sig, j->sig_len);
}

/* One 32-byte unsigned big-endian integer as a minimal DER INTEGER: at most 35 bytes. */
static size_t der_int(const unsigned char *v, unsigned char *out)
{
    size_t i = 0;
    while (i < 31 && v[i] == 0)
        i++;
    size_t pad = v[i] >> 7, n = 32 - i;
    out[0] = 0x02;
    out[1] = (unsigned char)(pad + n);
    out[2] = 0;
    memcpy(out + 2 + pad, v + i, n);
    return 2 + pad + n;
}

/* r||s → DER SEQUENCE {r, s}, which is what OpenSSL verifies, written here rather than through
 * ECDSA_SIG and BIGNUMs: the same bytes as i2d_ECDSA_SIG() without its five allocations. */
static size_t es256_der(const unsigned char *sig, unsigned char der[72])
{
    size_t n = der_int(sig, der + 2);
    n += der_int(sig + 32, der + 2 + n);
    der[0] = 0x30;
    der[1] = (unsigned char)n; /* at most 70: the short form */
    return 2 + n;
}

/*
 * ES256 verification contexts, per thread and key. EVP_DigestVerifyInit fetches the algorithm
 * and sets a context up on every call, ~3 us or 7% of a verification; EVP_PKEY_verify may be
 * called again and again on a context set up once (EVP_PKEY_verify(3)), with the SHA-256 of the
 * signing input. A cached context holds a reference to its key: while a slot names a key, no
 * other key can be at that address, so the pointer identifies it. Two ways per set: the two keys
 * of a priced request (the wallet's and the merchant's) never evict each other.
 */
#define VCTX_SETS  8 /* the set is the top 3 bits of a multiplicative hash */
#define VCTX_SLOTS (2 * VCTX_SETS)
_Static_assert(VCTX_SETS == 8, "es256_ctx() takes 3 bits of the hash");

struct vctx_cache {
    EVP_PKEY *pkey[VCTX_SLOTS];
    EVP_PKEY_CTX *ctx[VCTX_SLOTS];
    unsigned char recent[VCTX_SETS]; /* the way of each set used last */
};

static pthread_once_t vctx_once = PTHREAD_ONCE_INIT;
static pthread_key_t vctx_key;

static void vctx_free(void *arg)
{
    struct vctx_cache *c = arg;
    for (size_t i = 0; i < VCTX_SLOTS; i++)
        EVP_PKEY_CTX_free(c->ctx[i]);
    free(c);
}

static void vctx_init(void)
{
    if (pthread_key_create(&vctx_key, vctx_free) != 0)
        abort();
}

/* This thread's verification context for an ES256 key, or NULL (out of memory). */
static EVP_PKEY_CTX *es256_ctx(EVP_PKEY *pkey)
{
    pthread_once(&vctx_once, vctx_init);
    struct vctx_cache *c = pthread_getspecific(vctx_key);
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return NULL;
        if (pthread_setspecific(vctx_key, c) != 0) {
            free(c);
            return NULL;
        }
    }
    size_t set = (size_t)(((uintptr_t)pkey >> 4) * 0x9E3779B97F4A7C15ULL >> 61); /* < 8 */
    for (unsigned way = 0; way < 2; way++)
        if (c->pkey[2 * set + way] == pkey) {
            c->recent[set] = (unsigned char)way;
            return c->ctx[2 * set + way];
        }
    unsigned way = 1u - c->recent[set]; /* the other one goes */
    size_t i = 2 * set + way;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pkey, NULL);
    if (!ctx || EVP_PKEY_verify_init(ctx) != 1 ||
        EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) != 1) {
        EVP_PKEY_CTX_free(ctx);
        return NULL;
    }
    EVP_PKEY_CTX_free(c->ctx[i]);
    c->pkey[i] = pkey;
    c->ctx[i] = ctx;
    c->recent[set] = (unsigned char)way;
    return ctx;
}

int jws_verify_raw(const struct jwk *key, const unsigned char *msg, size_t len,
                   const unsigned char *sig, size_t sig_len)
{
    if (sig_len != JWS_SIG_LEN)
        return -1;
    if (key->alg == JWK_ES256) {
        unsigned char der[72], md[32];
        size_t der_len = es256_der(sig, der);
        EVP_PKEY_CTX *ctx = es256_ctx(key->pkey);
        if (!ctx)
            return -1;
        sha256(msg, len, md);
        return EVP_PKEY_verify(ctx, der, der_len, md, sizeof(md)) == 1 ? 0 : -1;
    }
    int ret = -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key->pkey) == 1 &&
        EVP_DigestVerify(ctx, sig, sig_len, msg, len) == 1)
        ret = 0;
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
