/*
 * Interop with libjwt 1.10, an independent JOSE implementation used here as an oracle only
 * (it is not safe as our verifier: see README). Both directions for ES256: our tokens verify
 * under libjwt, with the algorithm checked after decoding, and libjwt's verify under core/.
 * libjwt 1.10 only knows typ "JWT" (it refuses any other typ when decoding and overwrites it when
 * encoding), so the tokens crossing over carry typ "JWT": the signature encoding, base64url and
 * JSON are what is being checked, and core/'s mandate layer must then refuse typ "JWT".
 */
#include "testkit.h"

#include <jwt.h>
#include <openssl/pem.h>

#define NOW 1800000000

static char *pem_of(EVP_PKEY *pkey, int private)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_true(private ? PEM_write_bio_PKCS8PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL)
                        : PEM_write_bio_PUBKEY(bio, pkey));
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *out = xstrndup(data, (size_t)n);
    BIO_free(bio);
    return out;
}

static const char claims[] =
    "{\"iss\":\"wallet-1\",\"sub\":\"alice\",\"act\":{\"sub\":\"agent-planner\"},"
    "\"aud\":\"lux-hotels\",\"action\":\"search\",\"iat\":1800000000,\"exp\":1800000060,"
    "\"jti\":\"interop-0123456789ab\"}";

static void test_ours_verify_under_libjwt(void **state)
{
    (void)state;
    struct jwk k;
    assert_int_equal(jwk_generate(JWK_ES256, "k1", &k), 0);
    char *tok = jws_sign(&k, "JWT", claims, strlen(claims));
    assert_non_null(tok);
    char *pub = pem_of(k.pkey, 0);
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_decode(&jwt, tok, (unsigned char *)pub, (int)strlen(pub)), 0);
    /* libjwt takes alg from the header; the oracle's answer counts only if it is ES256. */
    assert_int_equal(jwt_get_alg(jwt), JWT_ALG_ES256);
    assert_string_equal(jwt_get_grant(jwt, "sub"), "alice");
    assert_string_equal(jwt_get_header(jwt, "kid"), "k1");
    jwt_free(jwt);

    /* And a tampered one of ours is refused by libjwt too. */
    tok[strlen(tok) - 5] = tok[strlen(tok) - 5] == 'A' ? 'B' : 'A';
    jwt = NULL;
    assert_int_not_equal(jwt_decode(&jwt, tok, (unsigned char *)pub, (int)strlen(pub)), 0);
    jwt_free(jwt);
    free(pub);
    free(tok);
    jwk_clear(&k);
}

static void test_libjwt_verifies_under_ours(void **state)
{
    (void)state;
    struct jwk k;
    assert_int_equal(jwk_generate(JWK_ES256, "k1", &k), 0);
    char *priv = pem_of(k.pkey, 1);
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grants_json(jwt, claims), 0);
    assert_int_equal(jwt_add_header(jwt, "kid", "k1"), 0);
    assert_int_equal(jwt_set_alg(jwt, JWT_ALG_ES256, (unsigned char *)priv, (int)strlen(priv)), 0);
    char *tok = jwt_encode_str(jwt);
    assert_non_null(tok);

    struct keyring ring = {0};
    keyring_add(&ring, "wallet-1", tk_set_of(&k));
    struct mandate_limits lim = {8192, 5, 300};
    struct mandate m;
    struct jws j;
    const char *why;
    assert_int_equal(jws_decode(tok, strlen(tok), 8192, &j, &why), 0);
    assert_int_equal(jws_check(&j, &k), 0);
    assert_string_equal(j.typ, "JWT");
    json_t *c = sjson_parse((char *)j.payload, j.payload_len, (char **)&why);
    assert_non_null(c);
    assert_string_equal(sjson_str(c, "jti"), "interop-0123456789ab");
    json_decref(c);
    jws_clear(&j);
    /* A valid signature does not make a JWT a mandate. */
    assert_int_equal(mandate_verify(tok, strlen(tok), MANDATE_INTENT, &ring, &lim, NOW, &m),
                     CODE_MANDATE_WRONG_TYPE);

    keyring_clear(&ring);
    free(tok);
    jwt_free(jwt);
    free(priv);
    jwk_clear(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ours_verify_under_libjwt),
        cmocka_unit_test(test_libjwt_verifies_under_ours),
    };
    return cmocka_run_group_tests_name("interop_libjwt", tests, NULL, NULL);
}
