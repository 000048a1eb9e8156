/*
 * Unit tests for core/mandate (and core/jws beneath it): every rejection of SPEC §1, each
 * asserting the exact code, plus round trips for both algorithms and all three types.
 */
#include "testkit.h"

#include <openssl/hmac.h>
#include <openssl/pem.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intent_es256_round_trip),
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
    };
    return cmocka_run_group_tests_name("mandate", tests, setup, teardown);
}
