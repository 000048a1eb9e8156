/*
 * The public Wycheproof vectors (tests/vectors/wycheproof, Apache 2.0) against core/jws and
 * core/jwk: every valid ES256 (P1363, i.e. raw r||s) and Ed25519 signature must verify and every
 * invalid one must not; of the JWS and JWK files, the ES256 groups must give the expected result
 * and everything else (HS*, RS*, PS*, other curves, symmetric keys) must be refused. A missing
 * file fails the test rather than passing with nothing checked.
 */
#include "testkit.h"

#ifndef VECTORS
#define VECTORS "tests/vectors/wycheproof/"
#endif

static json_t *load(const char *name)
{
    char *path = xasprintf("%s%s", VECTORS, name);
    char *err = NULL;
    json_t *doc = sjson_load_file(path, 64 << 20, &err);
    if (!doc)
        fail_msg("cannot load %s: %s", path, err);
    free(path);
    return doc;
}

static size_t hexbytes(const char *hex, unsigned char **out)
{
    size_t n = strlen(hex) / 2;
    *out = xmalloc(n + 1);
    assert_int_equal(hex_decode(hex, *out, n), 0);
    return n;
}

/* The group's key as a JWK; some EC groups give only the coordinates in hex. */
static json_t *group_jwk(const json_t *g)
{
    json_t *jwk = json_object_get(g, "publicKeyJwk");
    if (jwk)
        return json_incref(jwk);
    json_t *pk = json_object_get(g, "publicKey");
    char *xy[2];
    const char *hex[2] = {sjson_str(pk, "wx"), sjson_str(pk, "wy")};
    for (int i = 0; i < 2; i++) {
        unsigned char *b;
        size_t n = hexbytes(hex[i], &b);
        assert_true(n >= 32);
        xy[i] = b64url_encode_new(b + n - 32, 32); /* drop a leading sign byte */
        free(b);
    }
    json_t *out = json_pack("{ss ss ss ss ss}", "kty", "EC", "crv", "P-256", "kid", "none", "x",
                            xy[0], "y", xy[1]);
    free(xy[0]);
    free(xy[1]);
    return out;
}

/* Raw signature vectors: {testGroups: [{publicKeyJwk, tests: [{msg, sig, result}]}]}. */
static void raw_vectors(const char *file, enum jwk_alg alg, size_t expect_total)
{
    json_t *doc = load(file);
    size_t total = 0, valid = 0, gi;
    json_t *g;
    json_array_foreach(json_object_get(doc, "testGroups"), gi, g)
    {
        struct jwk key;
        char *err = NULL;
        json_t *jwk = group_jwk(g);
        if (jwk_from_json(jwk, &key, &err) != 0)
            fail_msg("group %zu: key rejected: %s", gi, err);
        json_decref(jwk);
        assert_int_equal(key.alg, alg);
        size_t ti;
        json_t *t;
        json_array_foreach(json_object_get(g, "tests"), ti, t)
        {
            unsigned char *msg, *sig;
            size_t ml = hexbytes(sjson_str(t, "msg"), &msg);
            size_t sl = hexbytes(sjson_str(t, "sig"), &sig);
            int ok = jws_verify_raw(&key, msg, ml, sig, sl) == 0;
            int want = strcmp(sjson_str(t, "result"), "valid") == 0;
            if (ok != want)
                fail_msg("%s tcId %lld: got %s, want %s", file,
                         (long long)json_integer_value(json_object_get(t, "tcId")),
                         ok ? "valid" : "invalid", sjson_str(t, "result"));
            total++;
            valid += (size_t)want;
            free(msg);
            free(sig);
        }
        jwk_clear(&key);
    }
    assert_int_equal(total, expect_total);
    assert_true(valid > 0);
    json_decref(doc);
}

static void test_ecdsa_p256_p1363(void **state)
{
    (void)state;
    raw_vectors("ecdsa_secp256r1_sha256_p1363_test.json", JWK_ES256, 262);
}

static void test_ed25519(void **state)
{
    (void)state;
    raw_vectors("ed25519_test.json", JWK_EDDSA, 151);
}

/* The group's public key set: "public" (a JWK or a JWKS), else "private" with secrets removed. */
static struct jwks *group_keys(const json_t *g)
{
    json_t *k = json_object_get(g, "public");
    if (!k)
        k = json_object_get(g, "private");
    json_t *doc = json_object_get(k, "keys") ? json_deep_copy(k) : json_pack("{s[O]}", "keys", k);
    size_t i;
    json_t *key;
    json_array_foreach(json_object_get(doc, "keys"), i, key)
    {
        static const char *const secret[] = {"d", "p", "q", "dp", "dq", "qi", "k"};
        for (size_t s = 0; s < ARRAY_LEN(secret); s++)
            json_object_del(key, secret[s]);
    }
    char *err = NULL;
    struct jwks *set = jwks_from_json(doc, &err);
    free(err);
    json_decref(doc);
    return set;
}

static int jws_accepts(const struct jwks *set, const json_t *jws)
{
    if (!set || !json_is_string(jws))
        return 0; /* JSON serialization is not supported: refused */
    struct jws j;
    const char *why;
    const char *tok = json_string_value(jws);
    if (jws_decode(tok, strlen(tok), 1 << 20, &j, &why) != 0)
        return 0;
    const struct jwk *key = jwks_find(set, j.kid);
    int ok = key && jws_check(&j, key) == 0;
    jws_clear(&j);
    return ok;
}

static void token_vectors(const char *file, size_t expect_total, size_t expect_accepted)
{
    json_t *doc = load(file);
    size_t total = 0, accepted = 0, gi;
    json_t *g;
    json_array_foreach(json_object_get(doc, "testGroups"), gi, g)
    {
        struct jwks *set = group_keys(g);
        /* Only groups whose every key we support (ES256/EdDSA) may accept anything. */
        size_t ti;
        json_t *t;
        json_array_foreach(json_object_get(g, "tests"), ti, t)
        {
            int ok = jws_accepts(set, json_object_get(t, "jws"));
            int valid = strcmp(sjson_str(t, "result"), "valid") == 0;
            if (ok && !valid)
                fail_msg("%s tcId %lld (%s): accepted an invalid token", file,
                         (long long)json_integer_value(json_object_get(t, "tcId")),
                         sjson_str(g, "comment"));
            if (!ok && valid && set)
                fail_msg("%s tcId %lld (%s): refused a valid token with supported keys", file,
                         (long long)json_integer_value(json_object_get(t, "tcId")),
                         sjson_str(g, "comment"));
            total++;
            accepted += (size_t)ok;
        }
        jwks_free(set);
    }
    assert_int_equal(total, expect_total);
    assert_int_equal(accepted, expect_accepted);
    json_decref(doc);
}

static void test_json_web_signature(void **state)
{
    (void)state;
    /* The two valid ES256 tokens (tcId 18 and 378) and nothing else. */
    token_vectors("json_web_signature_test.json", 401, 2);
}

static void test_json_web_key(void **state)
{
    (void)state;
    token_vectors("json_web_key_test.json", 26, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ecdsa_p256_p1363),
        cmocka_unit_test(test_ed25519),
        cmocka_unit_test(test_json_web_signature),
        cmocka_unit_test(test_json_web_key),
    };
    return cmocka_run_group_tests_name("wycheproof", tests, NULL, NULL);
}
