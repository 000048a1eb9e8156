/*
 * Unit tests for core/mandate (and core/jws beneath it): every rejection of SPEC §1, each
 * asserting the exact code, plus round trips for both algorithms and all three types.
 */
#include "testkit.h"

#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "core/sha256.h"

#define NOW 1800000000
#define JTI "jti-0123456789abcdef"

static struct jwk es, ed, other_es;
static struct keyring ring;
static const struct mandate_limits lim = {8192, 5, 300};

static int setup(void **state)
{
    (void)state;
    assert_int_equal(jwk_generate(JWK_ES256, "k1", &es), 0);
    assert_int_equal(jwk_generate(JWK_EDDSA, "e1", &ed), 0);
    assert_int_equal(jwk_generate(JWK_ES256, "k1", &other_es), 0);
    keyring_add(&ring, "wallet-1", tk_set_of(&es));
    keyring_add(&ring, "wallet-2", tk_set_of(&ed));
    keyring_add(&ring, "lux-hotels", tk_set_of(&es));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    keyring_clear(&ring);
    jwk_clear(&es);
    jwk_clear(&ed);
    jwk_clear(&other_es);
    return 0;
}

static json_t *intent(const char *iss)
{
    return json_pack("{ss ss s{ss} ss ss sI sI ss sI}", "iss", iss, "sub", "alice", "act", "sub",
                     "agent-planner", "aud", "lux-hotels", "action", "search", "iat",
                     (json_int_t)NOW, "exp", (json_int_t)NOW + 60, "jti", JTI, "uses",
                     (json_int_t)3);
}

static json_t *cart(json_int_t unit, json_int_t qty, json_int_t total)
{
    return json_pack("{ss ss ss sI sI ss s[{ss sI s{sI ss}}] s{sI ss}}", "iss", "lux-hotels", "sub",
                     "alice", "jti", "cart-0123456789abcdef", "iat", (json_int_t)NOW, "exp",
                     (json_int_t)NOW + 600, "action", "book_room", "items", "sku", "room-deluxe",
                     "qty", qty, "unit", "value", unit, "currency", "EUR", "total", "value", total,
                     "currency", "EUR");
}

static json_t *payment(const char *cart_tok)
{
    char h[44];
    mandate_cart_hash(cart_tok, strlen(cart_tok), h);
    return json_pack("{ss ss s{ss} ss ss sI sI ss ss s{sI ss} s{sI ss ss}}", "iss", "wallet-1",
                     "sub", "alice", "act", "sub", "agent-planner", "aud", "lux-hotels", "action",
                     "book_room", "iat", (json_int_t)NOW, "exp", (json_int_t)NOW + 60, "jti", JTI,
                     "cart", h, "total", "value", (json_int_t)18000, "currency", "EUR", "cap",
                     "value", (json_int_t)50000, "currency", "EUR", "period", "day");
}

/* Sign claims (stolen) as typ with key and verify as accept at NOW. */
static enum code run(const struct jwk *key, enum mandate_typ typ, json_t *claims, unsigned accept,
                     struct mandate *m)
{
    char *tok = mandate_sign(key, typ, claims);
    json_decref(claims);
    assert_non_null(tok);
    struct mandate tmp;
    enum code rc = mandate_verify(tok, strlen(tok), accept, &ring, &lim, NOW, m ? m : &tmp);
    free(tok);
    return rc;
}

static enum code run_raw(const struct jwk *key, const char *header, const char *payload)
{
    char *tok = tk_forge(key, header, payload);
    struct mandate m;
    enum code rc = mandate_verify(tok, strlen(tok), MANDATE_INTENT, &ring, &lim, NOW, &m);
    free(tok);
    return rc;
}

static enum code run_tok(const char *tok)
{
    struct mandate m;
    return mandate_verify(tok, strlen(tok), MANDATE_INTENT, &ring, &lim, NOW, &m);
}

static char *intent_payload(void)
{
    json_t *c = intent("wallet-1");
    char *s = sjson_dump(c);
    json_decref(c);
    return s;
}

static void test_intent_es256_round_trip(void **state)
{
    (void)state;
    struct mandate m;
    assert_int_equal(run(&es, MANDATE_INTENT, intent("wallet-1"), MANDATE_INTENT, &m), CODE_OK);
    assert_string_equal(m.sub, "alice");
    assert_string_equal(m.agent, "agent-planner");
    assert_string_equal(m.aud, "lux-hotels");
    assert_string_equal(m.action, "search");
    assert_string_equal(m.jti, JTI);
    assert_int_equal(m.uses, 3);
    assert_int_equal(m.typ, MANDATE_INTENT);
}

static void test_intent_eddsa_round_trip(void **state)
{
    (void)state;
    struct mandate m;
    assert_int_equal(run(&ed, MANDATE_INTENT, intent("wallet-2"), MANDATE_INTENT, &m), CODE_OK);
    assert_string_equal(m.kid, "e1");
}

static void test_cart_and_payment_round_trip(void **state)
{
    (void)state;
    json_t *c = cart(9000, 2, 18000);
    char *ctok = mandate_sign(&es, MANDATE_CART, c);
    json_decref(c);
    struct mandate cm, pm;
    assert_int_equal(mandate_verify(ctok, strlen(ctok), MANDATE_CART, &ring, &lim, NOW, &cm),
                     CODE_OK);
    assert_int_equal(cm.total.value, 18000);
    assert_int_equal(run(&es, MANDATE_PAYMENT, payment(ctok), MANDATE_PAYMENT, &pm), CODE_OK);
    char h[44];
    mandate_cart_hash(ctok, strlen(ctok), h);
    assert_string_equal(pm.cart_hash, h);
    assert_int_equal(pm.cap.value, 50000);
    assert_int_equal(pm.cap_period, CAP_DAY);
    free(ctok);
}

static void test_alg_none(void **state)
{
    (void)state;
    char *p = intent_payload();
    const char *hdr = "{\"alg\":\"none\",\"kid\":\"k1\",\"typ\":\"intent-mandate+jwt\"}";
    char *h = b64url_encode_new((const unsigned char *)hdr, strlen(hdr));
    char *b = b64url_encode_new((unsigned char *)p, strlen(p));
    char *tok = xasprintf("%s.%s.", h, b);
    assert_int_equal(run_tok(tok), CODE_MANDATE_BAD_SIGNATURE);
    free(p);
    free(h);
    free(b);
    free(tok);
}

static void test_hs256_with_public_key_as_secret(void **state)
{
    (void)state;
    /* The classic confusion: HMAC keyed with the verifier's public key PEM. */
    BIO *bio = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_PUBKEY(bio, es.pkey));
    char *pem;
    long pem_len = BIO_get_mem_data(bio, &pem);
    char *p = intent_payload();
    const char *hdr = "{\"alg\":\"HS256\",\"kid\":\"k1\",\"typ\":\"intent-mandate+jwt\"}";
    char *h = b64url_encode_new((const unsigned char *)hdr, strlen(hdr));
    char *b = b64url_encode_new((unsigned char *)p, strlen(p));
    char *input = xasprintf("%s.%s", h, b);
    unsigned char mac[32];
    unsigned int mac_len = 32;
    HMAC(EVP_sha256(), pem, (int)pem_len, (unsigned char *)input, strlen(input), mac, &mac_len);
    char *s = b64url_encode_new(mac, mac_len);
    char *tok = xasprintf("%s.%s", input, s);
    assert_int_equal(run_tok(tok), CODE_MANDATE_BAD_SIGNATURE);
    BIO_free(bio);
    free(p);
    free(h);
    free(b);
    free(input);
    free(s);
    free(tok);
}

static void test_eddsa_header_on_p256_key(void **state)
{
    (void)state;
    char *p = intent_payload();
    /* Signed by a real Ed25519 key, but kid k1 of wallet-1 is P-256: pinned alg wins. */
    assert_int_equal(
        run_raw(&ed, "{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"typ\":\"intent-mandate+jwt\"}", p),
        CODE_MANDATE_BAD_SIGNATURE);
    free(p);
}

static void test_unknown_kid(void **state)
{
    (void)state;
    char *p = intent_payload();
    assert_int_equal(
        run_raw(&es, "{\"alg\":\"ES256\",\"kid\":\"k9\",\"typ\":\"intent-mandate+jwt\"}", p),
        CODE_MANDATE_UNKNOWN_KEY);
    free(p);
}

static void test_unknown_issuer(void **state)
{
    (void)state;
    assert_int_equal(run(&es, MANDATE_INTENT, intent("wallet-9"), MANDATE_INTENT, NULL),
                     CODE_MANDATE_UNKNOWN_KEY);
}

static void test_wrong_key_same_kid(void **state)
{
    (void)state;
    assert_int_equal(run(&other_es, MANDATE_INTENT, intent("wallet-1"), MANDATE_INTENT, NULL),
                     CODE_MANDATE_BAD_SIGNATURE);
}

static void test_typ_swap(void **state)
{
    (void)state;
    /* A perfectly good payment mandate offered where an intent mandate is expected. */
    json_t *c = cart(9000, 2, 18000);
    char *ctok = mandate_sign(&es, MANDATE_CART, c);
    json_decref(c);
    struct mandate m;
    assert_int_equal(run(&es, MANDATE_PAYMENT, payment(ctok), MANDATE_INTENT, &m),
                     CODE_MANDATE_WRONG_TYPE);
    assert_int_equal(m.typ, MANDATE_PAYMENT);
    free(ctok);
}

static void test_unknown_typ(void **state)
{
    (void)state;
    char *p = intent_payload();
    assert_int_equal(run_raw(&es, "{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"JWT\"}", p),
                     CODE_MANDATE_WRONG_TYPE);
    free(p);
}

static void test_crit(void **state)
{
    (void)state;
    char *p = intent_payload();
    assert_int_equal(run_raw(&es,
                             "{\"alg\":\"ES256\",\"crit\":[\"exp\"],\"kid\":\"k1\","
                             "\"typ\":\"intent-mandate+jwt\"}",
                             p),
                     CODE_MANDATE_MALFORMED);
    free(p);
}

static void test_duplicate_member(void **state)
{
    (void)state;
    char *p = intent_payload();
    /* Insert a second "sub" at the front of the payload object. */
    char *dup = xasprintf("{\"sub\":\"mallory\",%s", p + 1);
    assert_int_equal(
        run_raw(&es, "{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"intent-mandate+jwt\"}", dup),
        CODE_MANDATE_MALFORMED);
    assert_int_equal(run_raw(&es,
                             "{\"alg\":\"ES256\",\"kid\":\"k1\",\"kid\":\"k1\","
                             "\"typ\":\"intent-mandate+jwt\"}",
                             p),
                     CODE_MANDATE_MALFORMED);
    free(p);
    free(dup);
}

static void test_missing_kid(void **state)
{
    (void)state;
    char *p = intent_payload();
    assert_int_equal(run_raw(&es, "{\"alg\":\"ES256\",\"typ\":\"intent-mandate+jwt\"}", p),
                     CODE_MANDATE_MALFORMED);
    free(p);
}

static void test_padding(void **state)
{
    (void)state;
    json_t *c = intent("wallet-1");
    char *tok = mandate_sign(&es, MANDATE_INTENT, c);
    json_decref(c);
    char *padded = xasprintf("%s==", tok);
    assert_int_equal(run_tok(tok), CODE_OK);
    assert_int_equal(run_tok(padded), CODE_MANDATE_MALFORMED);
    free(tok);
    free(padded);
}

static void test_not_three_segments(void **state)
{
    (void)state;
    assert_int_equal(run_tok("abc.def"), CODE_MANDATE_MALFORMED);
    assert_int_equal(run_tok("a.b.c.d"), CODE_MANDATE_MALFORMED);
    assert_int_equal(run_tok(""), CODE_MANDATE_MALFORMED);
}

static void test_oversize(void **state)
{
    (void)state;
    json_t *c = intent("wallet-1");
    char *pad = xmalloc(9000);
    memset(pad, 'x', 8999);
    pad[8999] = '\0';
    json_object_set_new(c, "note", json_string(pad));
    assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, NULL), CODE_MANDATE_MALFORMED);
    free(pad);
}

static void test_truncated_signature(void **state)
{
    (void)state;
    json_t *c = intent("wallet-1");
    char *tok = mandate_sign(&es, MANDATE_INTENT, c);
    json_decref(c);
    /* Keep the first 60 of the 64 signature bytes, canonically encoded. */
    char *d2 = strrchr(tok, '.');
    unsigned char sig[JWS_SIG_LEN];
    assert_int_equal(b64url_decode(d2 + 1, strlen(d2 + 1), sig), JWS_SIG_LEN);
    b64url_encode(sig, 60, d2 + 1);
    assert_int_equal(run_tok(tok), CODE_MANDATE_BAD_SIGNATURE);
    free(tok);
}

static void test_der_signature(void **state)
{
    (void)state;
    /* Sign with OpenSSL's native DER output: JWS requires raw r||s, so it must not verify. */
    char *p = intent_payload();
    const char *hdr = "{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"intent-mandate+jwt\"}";
    char *h = b64url_encode_new((const unsigned char *)hdr, strlen(hdr));
    char *b = b64url_encode_new((unsigned char *)p, strlen(p));
    char *input = xasprintf("%s.%s", h, b);
    unsigned char der[80];
    size_t der_len = sizeof(der);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, es.pkey), 1);
    assert_int_equal(EVP_DigestSign(ctx, der, &der_len, (unsigned char *)input, strlen(input)), 1);
    EVP_MD_CTX_free(ctx);
    char *s = b64url_encode_new(der, der_len);
    char *tok = xasprintf("%s.%s", input, s);
    assert_int_equal(run_tok(tok), CODE_MANDATE_BAD_SIGNATURE);
    free(p);
    free(h);
    free(b);
    free(input);
    free(s);
    free(tok);
}

static void test_tampered_payload(void **state)
{
    (void)state;
    json_t *c = intent("wallet-1");
    char *tok = mandate_sign(&es, MANDATE_INTENT, c);
    json_decref(c);
    json_t *evil = intent("wallet-1");
    json_object_set_new(evil, "aud", json_string("evil-shop"));
    char *p = sjson_dump(evil);
    char *b = b64url_encode_new((unsigned char *)p, strlen(p));
    char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    *d1 = '\0';
    char *forged = xasprintf("%s.%s%s", tok, b, d2);
    assert_int_equal(run_tok(forged), CODE_MANDATE_BAD_SIGNATURE);
    json_decref(evil);
    free(p);
    free(b);
    free(tok);
    free(forged);
}

static void test_expired(void **state)
{
    (void)state;
    json_t *c = intent("wallet-1");
    json_object_set_new(c, "iat", json_integer(NOW - 100));
    json_object_set_new(c, "exp", json_integer(NOW - 6));
    assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, NULL), CODE_MANDATE_EXPIRED);
    /* Within the 5 s skew it is still good. */
    c = intent("wallet-1");
    json_object_set_new(c, "iat", json_integer(NOW - 100));
    json_object_set_new(c, "exp", json_integer(NOW - 5));
    assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, NULL), CODE_OK);
}

static void test_not_yet_valid(void **state)
{
    (void)state;
    json_t *c = intent("wallet-1");
    json_object_set_new(c, "nbf", json_integer(NOW + 30));
    assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, NULL), CODE_MANDATE_NOT_YET_VALID);
    c = intent("wallet-1");
    json_object_set_new(c, "iat", json_integer(NOW + 30));
    json_object_set_new(c, "exp", json_integer(NOW + 90));
    assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, NULL), CODE_MANDATE_NOT_YET_VALID);
}

static void test_ttl_too_long(void **state)
{
    (void)state;
    json_t *c = intent("wallet-1");
    json_object_set_new(c, "exp", json_integer(NOW + 301));
    assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, NULL), CODE_MANDATE_TTL_TOO_LONG);
}

/* iat=INT64_MIN, exp=INT64_MAX made exp - iat overflow (UBSan abort); times outside (0, 2^40)
 * are malformed before any arithmetic. */
static void test_time_bounds(void **state)
{
    (void)state;
    const json_int_t bad[][2] = {
        {INT64_MIN, INT64_MAX}, {0, NOW + 60}, {NOW, (json_int_t)1 << 40}, {-1, NOW + 60}};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        json_t *c = intent("wallet-1");
        json_object_set_new(c, "iat", json_integer(bad[i][0]));
        json_object_set_new(c, "exp", json_integer(bad[i][1]));
        assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, NULL), CODE_MANDATE_MALFORMED);
    }
    json_t *c = intent("wallet-1");
    json_object_set_new(c, "nbf", json_integer(INT64_MIN));
    assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, NULL), CODE_MANDATE_MALFORMED);
}

static void test_cart_ttl_is_not_bounded(void **state)
{
    (void)state;
    json_t *c = cart(9000, 2, 18000);
    json_object_set_new(c, "exp", json_integer(NOW + 3600));
    assert_int_equal(run(&es, MANDATE_CART, c, MANDATE_CART, NULL), CODE_OK);
}

static void test_bad_jti(void **state)
{
    (void)state;
    static const char *const bad[] = {"short", "has space in it here", "slash/in/the/jti/value",
                                      "0123456789012345678901234567890123456789012345678901234567"
                                      "890123456"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        json_t *c = intent("wallet-1");
        json_object_set_new(c, "jti", json_string(bad[i]));
        assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, NULL), CODE_MANDATE_MALFORMED);
    }
}

static void test_cart_sum_mismatch(void **state)
{
    (void)state;
    assert_int_equal(run(&es, MANDATE_CART, cart(9000, 2, 17999), MANDATE_CART, NULL),
                     CODE_CART_INVALID);
}

static void test_cart_sum_overflow(void **state)
{
    (void)state;
    assert_int_equal(run(&es, MANDATE_CART, cart(INT64_MAX / 2 + 1, 2, 0), MANDATE_CART, NULL),
                     CODE_CART_INVALID);
}

static void test_float_amount(void **state)
{
    (void)state;
    json_t *c = intent("wallet-1");
    json_object_set_new(c, "max_amount", json_pack("{sfss}", "value", 180.5, "currency", "EUR"));
    assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, NULL), CODE_MANDATE_MALFORMED);
    /* 18000.0 is a float too, even though it is integral. */
    c = cart(9000, 2, 18000);
    json_object_set_new(c, "total", json_pack("{sfss}", "value", 18000.0, "currency", "EUR"));
    assert_int_equal(run(&es, MANDATE_CART, c, MANDATE_CART, NULL), CODE_MANDATE_MALFORMED);
}

static void test_claim_of_wrong_type(void **state)
{
    (void)state;
    json_t *c = intent("wallet-1");
    json_object_set_new(c, "exp", json_string("tomorrow"));
    assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, NULL), CODE_MANDATE_MALFORMED);
    c = intent("wallet-1");
    json_object_set_new(c, "uses", json_integer(0));
    assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, NULL), CODE_MANDATE_MALFORMED);
}

static void test_missing_claim(void **state)
{
    (void)state;
    json_t *c = intent("wallet-1");
    json_object_del(c, "act");
    assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, NULL), CODE_MANDATE_MALFORMED);
}

static void test_unsigned_claims_are_not_exposed(void **state)
{
    (void)state;
    /* A forgery's claims must not reach an audit entry as if they were the issuer's. */
    struct mandate m;
    assert_int_equal(run(&other_es, MANDATE_INTENT, intent("wallet-1"), MANDATE_INTENT, &m),
                     CODE_MANDATE_BAD_SIGNATURE);
    assert_string_equal(m.sub, "");
    assert_string_equal(m.jti, "");
    assert_int_equal(m.typ, MANDATE_INTENT);
    /* A genuine but expired mandate keeps them: they are signed. */
    json_t *c = intent("wallet-1");
    json_object_set_new(c, "iat", json_integer(NOW - 100));
    json_object_set_new(c, "exp", json_integer(NOW - 60));
    assert_int_equal(run(&es, MANDATE_INTENT, c, MANDATE_INTENT, &m), CODE_MANDATE_EXPIRED);
    assert_string_equal(m.sub, "alice");
}

static void test_payload_not_object(void **state)
{
    (void)state;
    assert_int_equal(
        run_raw(&es, "{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"intent-mandate+jwt\"}", "[1]"),
        CODE_MANDATE_MALFORMED);
}

/* ---- The scanner against the jansson reference (core/mandate_tree.c) ---- */

#define H_INTENT  "{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"intent-mandate+jwt\"}"
#define H_CART    "{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"cart-mandate+jwt\"}"
#define H_PAYMENT "{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"payment-mandate+jwt\"}"
/* An intent without its sub, which each case adds with whatever else it tries. */
#define I_HEAD                                                                                     \
    "{\"act\":{\"sub\":\"agent-planner\"},\"action\":\"search\",\"aud\":\"lux-hotels\","           \
    "\"exp\":1800000060,\"iat\":1800000000,\"iss\":\"wallet-1\",\"jti\":\"jti-0123456789abcdef\""
/* A payment without total and cap; the cart hash is canonical base64url of 32 bytes. */
#define P_HEAD                                                                                     \
    "{\"act\":{\"sub\":\"agent-planner\"},\"action\":\"book_room\",\"aud\":\"lux-hotels\","        \
    "\"cart\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\",\"exp\":1800000060,"                 \
    "\"iat\":1800000000,\"iss\":\"wallet-1\",\"jti\":\"jti-0123456789abcdef\",\"sub\":\"alice\""
#define P_TOTAL "\"total\":{\"value\":18000,\"currency\":\"EUR\"}"
/* A cart without items and total. */
#define C_HEAD                                                                                     \
    "{\"action\":\"book_room\",\"exp\":1800000600,\"iat\":1800000000,\"iss\":\"lux-hotels\","      \
    "\"jti\":\"cart-0123456789abcdef\",\"sub\":\"alice\""
#define C_ITEM "{\"sku\":\"room\",\"qty\":2,\"unit\":{\"value\":9000,\"currency\":\"EUR\"}}"

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

/* A token of header and payload (plen bytes, which may hold a NUL) signed by es. */
static char *forge_n(const char *header, const char *payload, size_t plen)
{
    char *h = b64url_encode_new((const unsigned char *)header, strlen(header));
    char *p = b64url_encode_new((const unsigned char *)payload, plen);
    char *input = xasprintf("%s.%s", h, p);
    unsigned char sig[JWS_SIG_LEN];
    assert_int_equal(jws_sign_raw(&es, (unsigned char *)input, strlen(input), sig), 0);
    char *s = b64url_encode_new(sig, sizeof(sig));
    char *tok = xasprintf("%s.%s", input, s);
    free(h);
    free(p);
    free(input);
    free(s);
    return tok;
}

/* mandate_verify() of the forged token, which the jansson reference must give too, code for code
 * and field for field (m may be NULL). */
static enum code both(const char *header, const char *payload, struct mandate *m)
{
    char *tok = forge_n(header, payload, strlen(payload));
    struct mandate scan, tree;
    enum code rc = mandate_verify(tok, strlen(tok), 7, &ring, &lim, NOW, &scan);
    assert_int_equal(mandate_verify_tree(tok, strlen(tok), 7, &ring, &lim, NOW, &tree), rc);
    assert_true(same_mandate(&scan, &tree));
    if (m)
        *m = scan;
    free(tok);
    return rc;
}

static void test_scan_json_rules(void **state)
{
    (void)state;
    static const struct {
        const char *payload;
        enum code rc;
    } cases[] = {
        {I_HEAD ",\"sub\":\"alice\"}", CODE_OK},
        {I_HEAD ",\"sub\":\"alice\",\"s\\u0075b\":\"bob\"}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"x\":{\"a\":1,\"\\u0061\":2}}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"x\":{\"a\":{\"a\":1},\"b\":{\"a\":1}}}", CODE_OK},
        {I_HEAD ",\"sub\":\"alice\",\"n\":9223372036854775807,\"m\":-9223372036854775808}",
         CODE_OK},
        {I_HEAD ",\"sub\":\"alice\",\"n\":9223372036854775808}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"n\":-9223372036854775809}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"n\":1.7976931348623157e308}", CODE_OK},
        {I_HEAD ",\"sub\":\"alice\",\"n\":1.7976931348623159e308}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"n\":-1e309}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"n\":1e-999}", CODE_OK},
        {I_HEAD ",\"sub\":\"alice\",\"n\":01}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"n\":1.}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"n\":[1,]}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"s\":\"\\ud83d\\ude00\\u00e9\\/\"}", CODE_OK},
        {I_HEAD ",\"sub\":\"alice\",\"s\":\"\\ud800\"}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"s\":\"\\udc00\\ud800\"}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"s\":\"\\u0000\"}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"s\":\"\xed\xa0\x80\"}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"s\":\"\xc0\xaf\"}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"s\":\"\t\"}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"s\":\"\x7f\"}", CODE_OK},
        {I_HEAD ",\"sub\":\"alice\"} x", CODE_MANDATE_MALFORMED},
        {" \r\n\t" I_HEAD ",\"sub\":\"alice\"} \n", CODE_OK},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        if (both(H_INTENT, cases[i].payload, NULL) != cases[i].rc)
            fail_msg("case %zu: %s", i, cases[i].payload);
    }
}

/* At most SJSON_MAX_DEPTH levels, counting the claims object as the first. */
static void test_scan_depth(void **state)
{
    (void)state;
    for (int levels = 30; levels <= 33; levels++) {
        char *open = xmalloc((size_t)levels + 1), *close = xmalloc((size_t)levels + 1);
        memset(open, '[', (size_t)levels - 1);
        memset(close, ']', (size_t)levels - 1);
        open[levels - 1] = close[levels - 1] = '\0';
        char *p = xasprintf(I_HEAD ",\"sub\":\"alice\",\"deep\":%s%s}", open, close);
        assert_int_equal(both(H_INTENT, p, NULL),
                         levels <= SJSON_MAX_DEPTH ? CODE_OK : CODE_MANDATE_MALFORMED);
        free(open);
        free(close);
        free(p);
    }
}

static void test_scan_claims(void **state)
{
    (void)state;
    struct mandate m;
    /* Escaped names and values read as what they decode to. */
    assert_int_equal(both(H_INTENT,
                          "{\"act\":{\"x\":[{\"sub\":1}],\"s\\u0075b\":\"agent-\\u00e9\"},"
                          "\"action\":\"search\",\"aud\":\"lux-hotels\",\"exp\":1800000060,"
                          "\"iat\":1800000000,\"i\\u0073s\":\"wallet\\u002d1\","
                          "\"jti\":\"jti-0123456789abcdef\",\"sub\":\"al\\ud83d\\ude00\"}",
                          &m),
                     CODE_OK);
    assert_string_equal(m.iss, "wallet-1");
    assert_string_equal(m.agent, "agent-\xc3\xa9");
    assert_string_equal(m.sub, "al\xf0\x9f\x98\x80");
    static const struct {
        const char *payload;
        enum code rc;
    } cases[] = {
        {I_HEAD ",\"sub\":\"a\\u0001\"}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"a\\u007f\"}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"\"}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":[\"alice\"]}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"uses\":1.0}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"uses\":9223372036854775807}", CODE_OK},
        {I_HEAD ",\"sub\":\"alice\",\"uses\":null}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"nbf\":null}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"nbf\":1800000000}", CODE_OK},
        {I_HEAD ",\"sub\":\"alice\",\"max_amount\":{\"value\":5,\"currency\":\"EU\\u0052\"}}",
         CODE_OK},
        {I_HEAD ",\"sub\":\"alice\",\"max_amount\":{\"value\":5,\"currency\":\"eur\"}}",
         CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"max_amount\":{\"value\":5,\"currency\":\"EURO\"}}",
         CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"max_amount\":{\"value\":-1,\"currency\":\"EUR\"}}",
         CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"max_amount\":{\"value\":5,\"currency\":\"EUR\",\"x\":0}}",
         CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"cnf\":null}", CODE_MANDATE_MALFORMED},
        {I_HEAD ",\"sub\":\"alice\",\"cnf\":{\"jwk\":{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                "\"x\":\"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA\"}}}",
         CODE_OK},
        {I_HEAD ",\"sub\":\"alice\",\"cnf\":{\"jwk\":{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                "\"x\":\"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA\"},\"x\":1}}",
         CODE_MANDATE_MALFORMED},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        if (both(H_INTENT, cases[i].payload, NULL) != cases[i].rc)
            fail_msg("case %zu: %s", i, cases[i].payload);
    }
}

/* An id of MANDATE_ID_MAX bytes once decoded fits, whatever its escaped length. */
static void test_scan_decoded_length(void **state)
{
    (void)state;
    for (size_t n = MANDATE_ID_MAX - 1; n <= MANDATE_ID_MAX + 1; n++) {
        char *sub = xmalloc(n * 6 + 1);
        for (size_t i = 0; i < n; i++)
            memcpy(sub + i * 6, "\\u0061", 6);
        sub[n * 6] = '\0';
        char *p = xasprintf(I_HEAD ",\"sub\":\"%s\"}", sub);
        struct mandate m;
        assert_int_equal(both(H_INTENT, p, &m),
                         n <= MANDATE_ID_MAX ? CODE_OK : CODE_MANDATE_MALFORMED);
        assert_int_equal(strlen(m.sub), n <= MANDATE_ID_MAX ? n : 0);
        free(sub);
        free(p);
    }
}

static void test_scan_payment_and_cart(void **state)
{
    (void)state;
    struct mandate m;
    assert_int_equal(
        both(H_PAYMENT,
             P_HEAD "," P_TOTAL
                    ",\"cap\":{\"value\":50000,\"currency\":\"EUR\",\"period\":\"w\\u0065ek\"}}",
             &m),
        CODE_OK);
    assert_int_equal(m.cap_period, CAP_WEEK);
    assert_string_equal(m.cart_hash, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
    static const struct {
        const char *header, *payload;
        enum code rc;
    } cases[] = {
        {H_PAYMENT,
         P_HEAD "," P_TOTAL ",\"cap\":{\"value\":50000,\"currency\":\"EUR\",\"period\":\"Day\"}}",
         CODE_MANDATE_MALFORMED},
        {H_PAYMENT,
         P_HEAD "," P_TOTAL ",\"cap\":{\"value\":50000,\"currency\":\"EUR\",\"period\":5}}",
         CODE_MANDATE_MALFORMED},
        {H_PAYMENT, P_HEAD "," P_TOTAL ",\"cap\":{\"value\":50000,\"currency\":\"EUR\",\"x\":1}}",
         CODE_MANDATE_MALFORMED},
        {H_PAYMENT,
         P_HEAD "," P_TOTAL ",\"cap\":{\"value\":50000,\"currency\":\"EUR\",\"period\":\"day\","
                "\"x\":1}}",
         CODE_MANDATE_MALFORMED},
        {H_PAYMENT, P_HEAD ",\"cap\":{\"value\":50000,\"currency\":\"EUR\",\"period\":\"day\"}}",
         CODE_MANDATE_MALFORMED},
        {H_CART, C_HEAD ",\"items\":[" C_ITEM "],\"total\":{\"value\":18000,\"currency\":\"EUR\"}}",
         CODE_OK},
        {H_CART,
         C_HEAD ",\"items\":[" C_ITEM "," C_ITEM
                "],\"total\":{\"value\":18000,\"currency\":\"EUR\"}}",
         CODE_CART_INVALID},
        {H_CART, C_HEAD ",\"items\":[],\"total\":{\"value\":0,\"currency\":\"EUR\"}}",
         CODE_MANDATE_MALFORMED},
        {H_CART,
         C_HEAD
         ",\"items\":[{\"sku\":\"r\",\"qty\":1.0,\"unit\":{\"value\":1,\"currency\":\"EUR\"}}],"
         "\"total\":{\"value\":1,\"currency\":\"EUR\"}}",
         CODE_MANDATE_MALFORMED},
        {H_CART,
         C_HEAD
         ",\"items\":[{\"sku\":\"r\",\"qty\":0,\"unit\":{\"value\":1,\"currency\":\"EUR\"}}],"
         "\"total\":{\"value\":0,\"currency\":\"EUR\"}}",
         CODE_MANDATE_MALFORMED},
        {H_CART,
         C_HEAD
         ",\"items\":[{\"sku\":\"r\",\"qty\":1,\"unit\":{\"value\":1,\"currency\":\"USD\"}}],"
         "\"total\":{\"value\":1,\"currency\":\"EUR\"}}",
         CODE_CART_INVALID},
        {H_CART,
         C_HEAD ",\"intent\":\"\",\"items\":[" C_ITEM "],\"total\":{\"value\":18000,\"currency\":"
                "\"EUR\"}}",
         CODE_MANDATE_MALFORMED},
        {H_CART,
         C_HEAD ",\"items\":[" C_ITEM ",7],\"total\":{\"value\":18000,\"currency\":\"EUR\"}}",
         CODE_MANDATE_MALFORMED},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        if (both(cases[i].header, cases[i].payload, NULL) != cases[i].rc)
            fail_msg("case %zu: %s", i, cases[i].payload);
    }
}

/* At most MANDATE_MAX_ITEMS items: the scanner counts them as the tree does. */
static void test_scan_item_count(void **state)
{
    (void)state;
    /* Short items, so that 100 stay under the 8192 bytes of lim. */
#define ITEM "{\"sku\":\"r\",\"qty\":1,\"unit\":{\"value\":1,\"currency\":\"EUR\"}}"
    for (int n = MANDATE_MAX_ITEMS; n <= MANDATE_MAX_ITEMS + 1; n++) {
        char *items = xstrdup(ITEM);
        for (int i = 1; i < n; i++) {
            char *more = xasprintf("%s," ITEM, items);
            free(items);
            items = more;
        }
        char *p = xasprintf(C_HEAD ",\"items\":[%s],\"total\":{\"value\":%d,\"currency\":\"EUR\"}}",
                            items, n);
        assert_int_equal(both(H_CART, p, NULL),
                         n <= MANDATE_MAX_ITEMS ? CODE_OK : CODE_MANDATE_MALFORMED);
        free(items);
        free(p);
    }
}

static void test_scan_header(void **state)
{
    (void)state;
    const char *p = I_HEAD ",\"sub\":\"alice\"}";
    struct mandate m;
    assert_int_equal(
        both("{\"alg\":\"ES\\u0032\\u00356\",\"kid\":\"k\\u0031\",\"typ\":\"intent-mandate+jwt\"}",
             p, &m),
        CODE_OK);
    assert_string_equal(m.kid, "k1");
    static const char *const bad[] = {
        "{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":null}",
        "{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"intent-mandate+jwt\",\"crit\":null}",
        "{\"alg\":1,\"kid\":\"k1\",\"typ\":\"intent-mandate+jwt\"}",
        "{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"intent-mandate+jwt\",\"x\":1e400}",
        "{\"alg\":\"ES256\",\"kid\":\"k1\",\"k\\u0069d\":\"k1\",\"typ\":\"intent-mandate+jwt\"}",
        "[\"ES256\"]",
        "{\"alg\":\"ES256\",\"kid\":\"k1\"}",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        if (both(bad[i], p, NULL) != CODE_MANDATE_MALFORMED)
            fail_msg("header %zu: %s", i, bad[i]);
}

/* jansson 2.14 skips a NUL byte right after a number or a literal (it empties its one-character
 * look-ahead); the scanner, like RFC 8259, refuses every NUL byte, and so does sjson_parse(),
 * which checks for one before jansson reads the text. */
static void test_scan_refuses_nul(void **state)
{
    (void)state;
    static const char p[] = I_HEAD ",\"sub\":\"alice\",\"n\":1\0}";
    char *tok = forge_n(H_INTENT, p, sizeof(p) - 1);
    struct mandate m;
    assert_int_equal(mandate_verify_tree(tok, strlen(tok), 7, &ring, &lim, NOW, &m),
                     CODE_MANDATE_MALFORMED);
    assert_int_equal(mandate_verify(tok, strlen(tok), 7, &ring, &lim, NOW, &m),
                     CODE_MANDATE_MALFORMED);
    free(tok);
}

/* mandate_verify_hashed() takes the caller's hash instead of computing it, and
 * mandate_hash_b64() of a verified cart is its payment's cart claim. */
static void test_hashed(void **state)
{
    (void)state;
    json_t *c = cart(9000, 2, 18000);
    char *ctok = mandate_sign(&es, MANDATE_CART, c);
    json_decref(c);
    unsigned char sha[32];
    sha256(ctok, strlen(ctok), sha);
    struct mandate a, b;
    assert_int_equal(mandate_verify(ctok, strlen(ctok), MANDATE_CART, &ring, &lim, NOW, &a),
                     CODE_OK);
    assert_int_equal(
        mandate_verify_hashed(ctok, strlen(ctok), sha, MANDATE_CART, &ring, &lim, NOW, &b),
        CODE_OK);
    assert_true(same_mandate(&a, &b));
    char h1[44], h2[44];
    mandate_cart_hash(ctok, strlen(ctok), h1);
    mandate_hash_b64(&b, h2);
    assert_string_equal(h1, h2);
    free(ctok);
}

/* ES256 verification contexts are cached per thread and key (core/jws.c): more keys than the
 * cache has slots, each verified twice round (every slot replaced meanwhile), and keys freed and
 * made again, each accepting its own signature and refusing the others'. */
static void test_es256_contexts_per_key(void **state)
{
    (void)state;
    enum { N = 40 };
    struct jwk k[N];
    unsigned char sig[N][JWS_SIG_LEN];
    const unsigned char msg[] = "header.payload";
    for (int i = 0; i < N; i++) {
        assert_int_equal(jwk_generate(JWK_ES256, "k", &k[i]), 0);
        assert_int_equal(jws_sign_raw(&k[i], msg, sizeof(msg) - 1, sig[i]), 0);
    }
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            int other = (i + 1) % N;
            assert_int_equal(jws_verify_raw(&k[i], msg, sizeof(msg) - 1, sig[i], JWS_SIG_LEN), 0);
            assert_int_equal(jws_verify_raw(&k[i], msg, sizeof(msg) - 1, sig[other], JWS_SIG_LEN),
                             -1);
            assert_int_equal(jws_verify_raw(&k[i], msg, sizeof(msg) - 2, sig[i], JWS_SIG_LEN), -1);
        }
        for (int i = 0; i < N; i += 2) { /* new keys, maybe where the freed ones were */
            jwk_clear(&k[i]);
            assert_int_equal(jwk_generate(JWK_ES256, "k", &k[i]), 0);
            assert_int_equal(jws_sign_raw(&k[i], msg, sizeof(msg) - 1, sig[i]), 0);
        }
    }
    for (int i = 0; i < N; i++)
        jwk_clear(&k[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intent_es256_round_trip),
        cmocka_unit_test(test_es256_contexts_per_key),
        cmocka_unit_test(test_intent_eddsa_round_trip),
        cmocka_unit_test(test_cart_and_payment_round_trip),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_hs256_with_public_key_as_secret),
        cmocka_unit_test(test_eddsa_header_on_p256_key),
        cmocka_unit_test(test_unknown_kid),
        cmocka_unit_test(test_unknown_issuer),
        cmocka_unit_test(test_wrong_key_same_kid),
        cmocka_unit_test(test_typ_swap),
        cmocka_unit_test(test_unknown_typ),
        cmocka_unit_test(test_crit),
        cmocka_unit_test(test_duplicate_member),
        cmocka_unit_test(test_missing_kid),
        cmocka_unit_test(test_padding),
        cmocka_unit_test(test_not_three_segments),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_truncated_signature),
        cmocka_unit_test(test_der_signature),
        cmocka_unit_test(test_tampered_payload),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_not_yet_valid),
        cmocka_unit_test(test_ttl_too_long),
        cmocka_unit_test(test_time_bounds),
        cmocka_unit_test(test_cart_ttl_is_not_bounded),
        cmocka_unit_test(test_bad_jti),
        cmocka_unit_test(test_cart_sum_mismatch),
        cmocka_unit_test(test_cart_sum_overflow),
        cmocka_unit_test(test_float_amount),
        cmocka_unit_test(test_claim_of_wrong_type),
        cmocka_unit_test(test_missing_claim),
        cmocka_unit_test(test_unsigned_claims_are_not_exposed),
        cmocka_unit_test(test_payload_not_object),
        cmocka_unit_test(test_scan_json_rules),
        cmocka_unit_test(test_scan_depth),
        cmocka_unit_test(test_scan_claims),
        cmocka_unit_test(test_scan_decoded_length),
        cmocka_unit_test(test_scan_payment_and_cart),
        cmocka_unit_test(test_scan_item_count),
        cmocka_unit_test(test_scan_header),
        cmocka_unit_test(test_scan_refuses_nul),
        cmocka_unit_test(test_hashed),
    };
    return cmocka_run_group_tests_name("mandate", tests, setup, teardown);
}
