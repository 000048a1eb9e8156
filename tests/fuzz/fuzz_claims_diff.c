/*
 * libFuzzer target: the scanner (core/jsonscan, mandate_verify()) against the jansson reference
 * (sjson_parse(), mandate_verify_tree()) on the same bytes. Two checks per input:
 *  - the JSON alone: js_parse() accepts exactly what sjson_parse() accepts, and every value
 *    read through js_get/js_next/js_int/js_str is the tree's;
 *  - a token made of it, really signed (Ed25519, a key only this target holds), so that the
 *    claims past the signature are compared too: the same code and the same struct mandate,
 *    field for field, from mandate_verify(), mandate_verify_tree() and mandate_verify_hashed().
 * Input: byte 0 chooses the accepted types (bits 0-2, 0 meaning all), the header (bit 3: raw,
 * else {"alg":"EdDSA","kid":"k1","typ":T} with T from bits 4-5) and whether to sign (bit 6: a
 * zero signature instead). A raw header's length is byte 1 and its bytes follow; the rest is
 * the payload.
 * One difference is allowed, the scanner being stricter: jansson 2.14 skips a NUL byte right
 * after a number or a literal (it empties its look-ahead), the scanner refuses any NUL byte.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/b64url.h"
#include "core/jsonscan.h"
#include "core/jws.h"
#include "core/mandate.h"
#include "core/sha256.h"
#include "core/sjson.h"

#define NOW 1800000000

static struct keyring ring;
static struct jwk key;

static void setup(void)
{
    if (jwk_generate(JWK_EDDSA, "k1", &key) != 0)
        abort();
    static const char *const issuers[] = {"wallet-1", "lux-hotels", "i"};
    for (size_t i = 0; i < ARRAY_LEN(issuers); i++) {
        struct jwks *set = xcalloc(1, sizeof(*set));
        set->keys = xcalloc(1, sizeof(struct jwk));
        set->keys[0] = key;
        if (EVP_PKEY_up_ref(key.pkey) != 1)
            abort();
        set->n = 1;
        keyring_add(&ring, issuers[i], set);
    }
}

/* The scanner's view of v is the tree t, recursively. */
static void same_value(const json_t *t, struct js_val v)
{
    switch (json_typeof(t)) {
    case JSON_OBJECT: {
        if (js_type(v) != JS_OBJECT || js_size(v) != json_object_size(t))
            abort();
        const char *k;
        json_t *m;
        json_object_foreach((json_t *)t, k, m) same_value(m, js_get(v, k));
        break;
    }
    case JSON_ARRAY: {
        if (js_type(v) != JS_ARRAY || js_size(v) != json_array_size(t))
            abort();
        size_t i = 0;
        for (struct js_val it = {NULL, 0}; js_next(v, &it); i++)
            same_value(json_array_get(t, i), it);
        if (i != json_array_size(t))
            abort();
        break;
    }
    case JSON_STRING: {
        size_t n = json_string_length(t);
        char *b = xmalloc(n + 1), cut[3];
        if (js_type(v) != JS_STRING || js_str(v, b, n + 1) != n ||
            memcmp(b, json_string_value(t), n + 1) != 0 || js_str(v, cut, sizeof(cut)) != n ||
            strncmp(cut, b, 2) != 0 || strlen(cut) != (n < 2 ? n : 2))
            abort();
        free(b);
        break;
    }
    case JSON_INTEGER: {
        int64_t x;
        if (js_int(v, &x) != 0 || x != json_integer_value(t))
            abort();
        break;
    }
    case JSON_REAL:
        if (js_type(v) != JS_REAL)
            abort();
        break;
    case JSON_TRUE:
        if (js_type(v) != JS_TRUE)
            abort();
        break;
    case JSON_FALSE:
        if (js_type(v) != JS_FALSE)
            abort();
        break;
    case JSON_NULL:
        if (js_type(v) != JS_NULL)
            abort();
        break;
    }
}

/* js_parse() and sjson_parse() agree on buf; returns whether it is a JSON object. */
static bool same_json(const char *buf, size_t len)
{
    char *err = NULL;
    json_t *t = sjson_parse(buf, len, &err);
    free(err);
    struct js_doc d;
    int rc = js_parse(&d, buf, len);
    if ((t != NULL) != (rc == 0) && !(t && memchr(buf, 0, len)))
        abort();
    if (t && rc == 0) {
        same_value(t, d.root);
        const char *k;
        json_t *m;
        if (json_is_object(t)) {
            if (d.n != json_object_size(t))
                abort();
            json_object_foreach(t, k, m)
            {
                struct js_val a = js_root_get(&d, k), b = js_get(d.root, k);
                if (a.p != b.p || a.n != b.n)
                    abort();
            }
        }
    }
    bool object = rc == 0 && js_type(d.root) == JS_OBJECT;
    js_clear(&d);
    json_decref(t);
    return object;
}

#define SAME(f) (memcmp(&a->f, &b->f, sizeof(a->f)) == 0)

static bool same_mandate(const struct mandate *a, const struct mandate *b)
{
    return SAME(typ) && SAME(kid) && SAME(iss) && SAME(sub) && SAME(agent) && SAME(aud) &&
           SAME(action) && SAME(jti) && SAME(intent) && SAME(cart_hash) && SAME(iat) && SAME(exp) &&
           SAME(nbf) && SAME(uses) && SAME(has_max_amount) && SAME(max_amount.value) &&
           SAME(max_amount.currency) && SAME(total.value) && SAME(total.currency) &&
           SAME(cap.value) && SAME(cap.currency) && SAME(cap_period) && SAME(sha256) &&
           SAME(has_cnf) && SAME(cnf_jwk) && SAME(cnf_thumb);
}

static bool is_zero_but_typ(const struct mandate *m)
{
    struct mandate z;
    memset(&z, 0, sizeof(z));
    z.typ = m->typ;
    return same_mandate(m, &z);
}

static char *token(const char *hdr, size_t hlen, const char *payload, size_t plen, bool sign)
{
    char *out = xmalloc(B64URL_ENC_LEN(hlen) + B64URL_ENC_LEN(plen) + B64URL_ENC_LEN(64) + 3);
    size_t n = b64url_encode((const unsigned char *)hdr, hlen, out);
    out[n++] = '.';
    n += b64url_encode((const unsigned char *)payload, plen, out + n);
    unsigned char sig[JWS_SIG_LEN] = {0};
    if (sign && jws_sign_raw(&key, (unsigned char *)out, n, sig) != 0)
        abort();
    out[n++] = '.';
    b64url_encode(sig, JWS_SIG_LEN, out + n);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ring.n)
        setup();
    if (size < 1)
        return 0;
    static const char *const typs[] = {"intent-mandate+jwt", "cart-mandate+jwt",
                                       "payment-mandate+jwt", "JWT"};
    unsigned flags = data[0], accept = flags & 7 ? flags & 7 : 7;
    const char *in = (const char *)data + 1;
    size_t left = size - 1, hlen;
    char std[96];
    const char *hdr = std;
    if (flags & 8) {
        if (left < 1 || (size_t)(unsigned char)in[0] > left - 1)
            return 0;
        hlen = (unsigned char)in[0];
        hdr = in + 1;
        in += 1 + hlen;
        left -= 1 + hlen;
        same_json(hdr, hlen);
    } else {
        hlen =
            (size_t)snprintf(std, sizeof(std), "{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"typ\":\"%s\"}",
                             typs[flags >> 4 & 3]);
    }
    bool object = same_json(in, left);

    /* Signing costs: only a payload that can get that far is signed. */
    char *tok = token(hdr, hlen, in, left, object && !(flags & 64));
    size_t n = strlen(tok);
    static const struct mandate_limits lim = {1 << 16, 5, 300};
    struct mandate ms, mt, mh;
    unsigned char sha[32];
    sha256(tok, n, sha);
    enum code cs = mandate_verify(tok, n, accept, &ring, &lim, NOW, &ms);
    enum code ct = mandate_verify_tree(tok, n, accept, &ring, &lim, NOW, &mt);
    enum code ch = mandate_verify_hashed(tok, n, sha, accept, &ring, &lim, NOW, &mh);
    bool nul = memchr(hdr, 0, hlen) || memchr(in, 0, left);
    if (!(cs == ct && same_mandate(&ms, &mt)) &&
        !(nul && cs == CODE_MANDATE_MALFORMED && is_zero_but_typ(&ms) && ms.typ == 0))
        abort();
    if (ch != cs || !same_mandate(&mh, &ms))
        abort();
    free(tok);
    return 0;
}
