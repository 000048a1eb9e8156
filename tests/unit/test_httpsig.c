/*
 * Unit tests for core/httpsig: RFC 9421 Appendix B signature bases and signatures (B.2.1, B.2.3,
 * B.2.5 by their bases, B.2.4 ECDSA and B.2.6 Ed25519 by verifying the RFC's own signatures),
 * RFC 9530's Content-Digest examples, RFC 7638 thumbprints (cross-checked with Python jwcrypto),
 * the RFC 8941 parser's serialisation and refusals, sign→verify round trips for both algorithms
 * and every way SPEC §7 says a signature is missing or invalid.
 */
#include "testkit.h"

#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "core/httpsig.h"

/* ---- a message made of a few header lines ---- */

struct hdr {
    const char *name, *value;
};

struct tmsg {
    struct httpsig_msg m;
    struct hdr h[16];
    size_t n;
};

static size_t tfield(void *ctx, const char *name, const char **vals, size_t max)
{
    struct tmsg *t = ctx;
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++)
        if (strcasecmp(t->h[i].name, name) == 0) {
            if (n < max)
                vals[n] = t->h[i].value;
            n++;
        }
    return n;
}

static void add(struct tmsg *t, const char *name, const char *value)
{
    assert_true(t->n < ARRAY_LEN(t->h));
    t->h[t->n].name = name;
    t->h[t->n].value = value;
    t->n++;
}

/* Replace the value of name (or add it). */
static void set(struct tmsg *t, const char *name, const char *value)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcasecmp(t->h[i].name, name) == 0) {
            t->h[i].value = value;
            return;
        }
    add(t, name, value);
}

#define DIGEST_HELLO_512                                                                           \
    "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJ" \
    "wew==:"
#define DIGEST_GOOD_DOG_512                                                                        \
    "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGg" \
    "fLQ==:"

/* RFC 9421 Appendix B.2's test-request: POST /foo?param=Value&Pet=dog. */
static void test_request(struct tmsg *t)
{
    memset(t, 0, sizeof(*t));
    t->m = (struct httpsig_msg){.method = "POST",
                                .scheme = "https",
                                .authority = "example.com",
                                .path = "/foo",
                                .query = "param=Value&Pet=dog",
                                .field = tfield,
                                .ctx = t};
    add(t, "Host", "example.com");
    add(t, "Date", "Tue, 20 Apr 2021 02:07:55 GMT");
    add(t, "Content-Type", "application/json");
    add(t, "Content-Digest", DIGEST_HELLO_512);
    add(t, "Content-Length", "18");
}

/* RFC 9421 Appendix B.2's test-response: 200 with {"message": "good dog"}. */
static void test_response(struct tmsg *t)
{
    memset(t, 0, sizeof(*t));
    t->m = (struct httpsig_msg){.status = 200, .field = tfield, .ctx = t};
    add(t, "Date", "Tue, 20 Apr 2021 02:07:56 GMT");
    add(t, "Content-Type", "application/json");
    add(t, "Content-Digest", DIGEST_GOOD_DOG_512);
    add(t, "Content-Length", "23");
}

/* ---- RFC 9421 B.1.3 and B.1.4 test keys ---- */

static const char ED25519_PRIVATE_PEM[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n"
    "-----END PRIVATE KEY-----\n";
static const char ED25519_JWK[] =
    "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs\"}";
static const char P256_JWK[] = "{\"kty\":\"EC\",\"crv\":\"P-256\","
                               "\"x\":\"qIVYZVLCrPZHGHjP17CTW0_-D9Lfw0EkjqF7xB4FivA\","
                               "\"y\":\"Mc4nN9LTDOBhfoUeg8Ye9WedFRhnZXZJA12Qp0zZ6F0\"}";
/* /usr/bin/python3 -c 'from jwcrypto import jwk; print(jwk.JWK(**{...}).thumbprint())' */
static const char ED25519_THUMBPRINT[] = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";
static const char P256_THUMBPRINT[] = "ydQXMtvbsOsZyFir-Y7A8t7fKEM1gbKPvyFkdpu4fvI";

static void cnf_key(const char *json, struct jwk *out)
{
    char *err = NULL;
    json_t *j = sjson_parse(json, strlen(json), &err);
    assert_non_null(j);
    if (httpsig_jwk_from_cnf(j, out, &err) != 0)
        fail_msg("cnf: %s", err);
    json_decref(j);
}

static void private_key(const char *pem, const char *kid, struct jwk *out)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    memset(out, 0, sizeof(*out));
    out->pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    assert_non_null(out->pkey);
    out->alg = EVP_PKEY_is_a(out->pkey, "ED25519") ? JWK_EDDSA : JWK_ES256;
    strcpy(out->kid, kid);
}

static char *base_of(struct tmsg *t, const char *label)
{
    size_t len;
    char *err = NULL;
    char *b = httpsig_base(&t->m, label, &len, &err);
    if (!b)
        fail_msg("base: %s", err);
    assert_int_equal(strlen(b), len);
    return b;
}

/* ---- RFC 9421 Appendix B ---- */

#define B26_INPUT                                                                                  \
    "sig-b26=(\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" "                     \
    "\"content-length\");created=1618884473;keyid=\"test-key-ed25519\""
#define B26_SIGNATURE                                                                              \
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBK" \
    "RCw==:"

static void test_b26_ed25519_base_and_verify(void **state)
{
    (void)state;
    struct tmsg t;
    test_request(&t);
    add(&t, "Signature-Input", B26_INPUT);
    add(&t, "Signature", B26_SIGNATURE);
    char *b = base_of(&t, "sig-b26");
    assert_string_equal(b, "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n"
                           "\"@method\": POST\n"
                           "\"@path\": /foo\n"
                           "\"@authority\": example.com\n"
                           "\"content-type\": application/json\n"
                           "\"content-length\": 18\n"
                           "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" "
                           "\"content-type\" \"content-length\");created=1618884473;keyid=\"test-"
                           "key-ed25519\"");
    free(b);

    struct jwk pub;
    cnf_key(ED25519_JWK, &pub);
    struct httpsig_policy p = {.need = HTTPSIG_NEED_CREATED | HTTPSIG_NEED_KEYID,
                               .keyid = "test-key-ed25519",
                               .max_window_s = 60,
                               .skew_s = 5};
    struct httpsig_result r;
    assert_int_equal(httpsig_verify(&t.m, "sig-b26", &pub, &p, 1618884473, &r), HTTPSIG_OK);
    assert_string_equal(r.reason, "");
    assert_int_equal(r.created, 1618884473);
    assert_int_equal(r.expires, -1);
    assert_string_equal(r.keyid, "test-key-ed25519");
    assert_false(r.covers_digest);

    /* One byte of a covered field changed: the RFC's signature no longer verifies. */
    set(&t, "Content-Length", "19");
    assert_int_equal(httpsig_verify(&t.m, "sig-b26", &pub, &p, 1618884473, &r), HTTPSIG_INVALID);
    assert_non_null(strstr(r.reason, "does not verify"));
    jwk_clear(&pub);
}

/* Ed25519 is deterministic: signing B.2.6 again must give the RFC's fields byte for byte. */
static void test_b26_ed25519_sign_reproduces_rfc(void **state)
{
    (void)state;
    struct tmsg t;
    test_request(&t);
    struct jwk priv;
    private_key(ED25519_PRIVATE_PEM, "test-key-ed25519", &priv);
    static const char *const comps[] = {"date",       "@method",      "@path",
                                        "@authority", "content-type", "content-length"};
    struct httpsig_sign_params sp = {.components = comps,
                                     .n_components = ARRAY_LEN(comps),
                                     .created = 1618884473,
                                     .expires = -1,
                                     .keyid = "test-key-ed25519"};
    char *in = NULL, *sig = NULL, *err = NULL;
    if (httpsig_sign(&t.m, "sig-b26", &priv, &sp, &in, &sig, &err) != 0)
        fail_msg("sign: %s", err);
    assert_string_equal(in, B26_INPUT);
    assert_string_equal(sig, B26_SIGNATURE);
    free(in);
    free(sig);
    jwk_clear(&priv);
}

static void test_b24_ecdsa_p256_verify(void **state)
{
    (void)state;
    struct tmsg t;
    test_response(&t);
    add(&t, "Signature-Input",
        "sig-b24=(\"@status\" \"content-type\" \"content-digest\" \"content-length\")"
        ";created=1618884473;keyid=\"test-key-ecc-p256\"");
    add(&t, "Signature",
        "sig-b24=:wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NKocgPquLgyahnzDnDAUy5eCdlYUEkLIj+3"
        "2oiasw==:");
    char *b = base_of(&t, "sig-b24");
    assert_string_equal(b,
                        "\"@status\": 200\n"
                        "\"content-type\": application/json\n"
                        "\"content-digest\": " DIGEST_GOOD_DOG_512 "\n"
                        "\"content-length\": 23\n"
                        "\"@signature-params\": (\"@status\" \"content-type\" \"content-digest\" "
                        "\"content-length\");created=1618884473;keyid=\"test-key-ecc-p256\"");
    free(b);
    struct jwk pub;
    cnf_key(P256_JWK, &pub);
    struct httpsig_policy p = {.need = HTTPSIG_NEED_CREATED | HTTPSIG_NEED_KEYID,
                               .keyid = "test-key-ecc-p256",
                               .max_window_s = 60};
    struct httpsig_result r;
    assert_int_equal(httpsig_verify(&t.m, "sig-b24", &pub, &p, 1618884473, &r), HTTPSIG_OK);
    assert_true(r.covers_digest);
    /* The same signature under another key type is refused: the key decides the algorithm. */
    struct jwk ed;
    cnf_key(ED25519_JWK, &ed);
    assert_int_equal(httpsig_verify(&t.m, "sig-b24", &ed, &p, 1618884473, &r), HTTPSIG_INVALID);
    jwk_clear(&ed);
    jwk_clear(&pub);
}

static void test_b21_b23_bases(void **state)
{
    (void)state;
    struct tmsg t;
    test_request(&t);
    add(&t, "Signature-Input",
        "sig-b21=();created=1618884473;keyid=\"test-key-rsa-pss\";nonce=\"b3k2pp5k7z-50gnwp."
        "yemd\"");
    add(&t, "Signature-Input",
        "sig-b23=(\"date\" \"@method\" \"@path\" \"@query\" \"@authority\" \"content-type\" "
        "\"content-digest\" \"content-length\");created=1618884473;keyid=\"test-key-rsa-pss\"");
    char *b = base_of(&t, "sig-b21");
    assert_string_equal(b, "\"@signature-params\": ();created=1618884473;keyid=\"test-key-rsa-"
                           "pss\";nonce=\"b3k2pp5k7z-50gnwp.yemd\"");
    free(b);
    b = base_of(&t, "sig-b23");
    assert_string_equal(b, "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n"
                           "\"@method\": POST\n"
                           "\"@path\": /foo\n"
                           "\"@query\": ?param=Value&Pet=dog\n"
                           "\"@authority\": example.com\n"
                           "\"content-type\": application/json\n"
                           "\"content-digest\": " DIGEST_HELLO_512 "\n"
                           "\"content-length\": 18\n"
                           "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@query\" "
                           "\"@authority\" \"content-type\" \"content-digest\" \"content-length\")"
                           ";created=1618884473;keyid=\"test-key-rsa-pss\"");
    free(b);
}

/* B.2.5 signs with HMAC-SHA256, which is deterministic: the RFC's MAC over our base proves the
 * base byte for byte without copying it from anywhere. */
static void test_b25_base_by_hmac(void **state)
{
    (void)state;
    struct tmsg t;
    test_request(&t);
    add(&t, "Signature-Input",
        "sig-b25=(\"date\" \"@authority\" \"content-type\")"
        ";created=1618884473;keyid=\"test-shared-secret\"");
    static const char secret_b64[] = "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJ"
                                     "PBtbmHhIDi6pcl8jsasjlTMtDQ==";
    unsigned char secret[64], mac[32];
    assert_int_equal(
        EVP_DecodeBlock(secret, (const unsigned char *)secret_b64, (int)strlen(secret_b64)),
        66); /* 64 bytes and two of padding */
    char *b = base_of(&t, "sig-b25");
    unsigned int maclen = 0;
    assert_non_null(HMAC(EVP_sha256(), secret, 64, (unsigned char *)b, strlen(b), mac, &maclen));
    unsigned char out[64];
    int n = EVP_EncodeBlock(out, mac, (int)maclen);
    assert_int_equal(n, 44);
    assert_string_equal((char *)out, "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=");
    free(b);
}

/* ---- derived components ---- */

static char *one_component(struct tmsg *t, const char *name)
{
    char *in = xasprintf("s=(\"%s\")", name);
    set(t, "Signature-Input", in);
    size_t len;
    char *err = NULL;
    char *b = httpsig_base(&t->m, "s", &len, &err);
    free(in);
    if (!b)
        return err; /* prefixed so the caller can tell */
    char *nl = strchr(b, '\n');
    assert_non_null(nl);
    *nl = '\0';
    return b;
}

static void expect_line(struct tmsg *t, const char *name, const char *line)
{
    char *got = one_component(t, name);
    assert_string_equal(got, line);
    free(got);
}

static void test_derived_components(void **state)
{
    (void)state;
    struct tmsg t;
    test_request(&t);
    t.m.authority = "Example.COM:443";
    expect_line(&t, "@authority", "\"@authority\": example.com");
    t.m.authority = "Example.COM:8443";
    expect_line(&t, "@authority", "\"@authority\": example.com:8443");
    t.m.scheme = "http";
    t.m.authority = "shop.example:80";
    expect_line(&t, "@authority", "\"@authority\": shop.example");
    t.m.authority = "shop.example:443"; /* not the default for http */
    expect_line(&t, "@authority", "\"@authority\": shop.example:443");
    t.m.authority = "[::1]:8080";
    expect_line(&t, "@authority", "\"@authority\": [::1]:8080");
    expect_line(&t, "@target-uri", "\"@target-uri\": http://[::1]:8080/foo?param=Value&Pet=dog");
    expect_line(&t, "@request-target", "\"@request-target\": /foo?param=Value&Pet=dog");
    expect_line(&t, "@scheme", "\"@scheme\": http");
    t.m.query = NULL;
    expect_line(&t, "@query", "\"@query\": ?");
    t.m.query = "";
    expect_line(&t, "@query", "\"@query\": ?");
    t.m.path = "";
    expect_line(&t, "@path", "\"@path\": /");
    /* Multiple lines of a field are trimmed and joined with ", ". */
    add(&t, "X-Multi", "  a, b ");
    add(&t, "x-multi", "\tc");
    add(&t, "X-Empty", "");
    expect_line(&t, "x-multi", "\"x-multi\": a, b, c");
    expect_line(&t, "x-empty", "\"x-empty\": ");

    /* What cannot be built is an error that names the component. */
    static const char *const bad[] = {"x-absent", "Content-Type", "@status", "@unknown",
                                      "@signature-params"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        char *err = one_component(&t, bad[i]);
        if (!strstr(err, bad[i]))
            fail_msg("%s: %s", bad[i], err);
        free(err);
    }
    t.m.authority = "a b";
    char *err = one_component(&t, "@authority");
    assert_non_null(strstr(err, "host"));
    free(err);
    add(&t, "X-Nl", "a\r\nX-Forged: 1");
    err = one_component(&t, "x-nl");
    assert_non_null(strstr(err, "control"));
    free(err);
}

/* ---- RFC 8941 ---- */

static void sf_roundtrip(const char *in, const char *want)
{
    struct httpsig_sf_dict d;
    const char *why = NULL;
    if (httpsig_sf_parse_dict(in, strlen(in), &d, &why) != 0)
        fail_msg("%s: %s", in, why);
    char *out = httpsig_sf_dict_serialize(&d);
    assert_string_equal(out, want);
    free(out);
    httpsig_sf_dict_clear(&d);
}

static void test_sf_parse_and_serialise(void **state)
{
    (void)state;
    sf_roundtrip("a=1, b=?0;x, c=(1.50 \"s\\\"q\\\\\" tok/x:y :AQID:);p=-3",
                 "a=1, b=?0;x, c=(1.5 \"s\\\"q\\\\\" tok/x:y :AQID:);p=-3");
    sf_roundtrip("  a=()  ,\tb ", "a=(), b");
    sf_roundtrip("a=(  1   2  );k=?1;z=?0", "a=(1 2);k;z=?0");
    sf_roundtrip("a=-999999999999999, b=999999999999.999, c=0.0", "a=-999999999999999, "
                                                                  "b=999999999999.999, c=0.0");
    sf_roundtrip("*a=:YQ==:, b=:YWI=:, c=::", "*a=:YQ==:, b=:YWI=:, c=::");
    sf_roundtrip("", "");

    struct httpsig_sf_dict d;
    const char *why;
    const char *in = "sig1=(\"@method\" \"x\";bs);created=5;keyid=\"k\"";
    assert_int_equal(httpsig_sf_parse_dict(in, strlen(in), &d, &why), 0);
    const struct httpsig_sf_member *m = httpsig_sf_get(&d, "sig1");
    assert_non_null(m);
    assert_true(m->inner);
    assert_int_equal(m->ni, 2);
    assert_int_equal(m->item.np, 2);
    assert_int_equal(d.params[m->item.p0].v.num, 5);
    char *s = httpsig_sf_inner_list(&d, m);
    assert_string_equal(s, "(\"@method\" \"x\";bs);created=5;keyid=\"k\"");
    free(s);
    assert_null(httpsig_sf_get(&d, "sig2"));
    httpsig_sf_dict_clear(&d);
}

static void test_sf_refusals(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "A=1",                /* keys are lower case */
        "a=1,",               /* trailing comma */
        "a=1,,b=2",           /* empty member */
        "a=1 b=2",            /* no comma */
        "a=1, a=2",           /* duplicate key: refused, not overwritten */
        "a=1;p;p=2",          /* duplicate parameter */
        "a=1234567890123456", /* 16 digits */
        "a=1234567890123.5",  /* 13 integer digits in a decimal */
        "a=1.2345",           /* 4 fractional digits */
        "a=1.",               /* decimal without a fraction */
        "a=-",                /* sign alone */
        "a=\"unterminated",
        "a=\"bad \\n escape\"",
        "a=\"tab\there\"",
        "a=\"\xc3\xa9\"", /* non-ASCII in a string */
        "a=:YQ:",         /* no padding */
        "a=:YR==:",       /* non-zero pad bits */
        "a=:Y-_=:",       /* base64url alphabet */
        "a=:YQ=A:",       /* a character after padding */
        "a=:YQ==YQ==:",   /* padding in the middle */
        "a=:YQ==",        /* unterminated byte sequence */
        "a=?2",           /* not a boolean */
        "a=(1 2",         /* unterminated inner list */
        "a=(1,2)",        /* commas in an inner list */
        "a=((1))",        /* nested inner list */
        "a=(1)(2)",       /* junk after an inner list */
        "a=1;",           /* parameter without a key */
        "a=1;P=2",        /* upper-case parameter key */
        "a=@",            /* not an item */
        "a=1\x00",        /* NUL */
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        struct httpsig_sf_dict d;
        const char *why = NULL;
        size_t len = i == ARRAY_LEN(bad) - 1 ? 4 : strlen(bad[i]);
        if (httpsig_sf_parse_dict(bad[i], len, &d, &why) == 0)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(why);
        assert_null(d.arena);
    }
    /* Bounds: 17 members, 33 items in a list, an over-long field. */
    char buf[HTTPSIG_SF_MAX_INPUT + 2];
    size_t n = 0;
    for (int i = 0; i < 17; i++)
        n += (size_t)sprintf(buf + n, "%sk%d=1", i ? ", " : "", i);
    struct httpsig_sf_dict d;
    const char *why;
    assert_int_equal(httpsig_sf_parse_dict(buf, n, &d, &why), -1);
    n = (size_t)sprintf(buf, "a=(");
    for (int i = 0; i < 33; i++)
        n += (size_t)sprintf(buf + n, "%d ", i);
    buf[n - 1] = ')';
    assert_int_equal(httpsig_sf_parse_dict(buf, n, &d, &why), -1);
    memset(buf, 'a', sizeof(buf));
    assert_int_equal(httpsig_sf_parse_dict(buf, HTTPSIG_SF_MAX_INPUT + 1, &d, &why), -1);
    assert_int_equal(httpsig_sf_parse_dict(buf, HTTPSIG_SF_MAX_KEY, &d, &why), 0);
    httpsig_sf_dict_clear(&d);
    assert_int_equal(httpsig_sf_parse_dict(buf, HTTPSIG_SF_MAX_KEY + 1, &d, &why), -1);
}

/* ---- RFC 9530 ---- */

static void test_content_digest(void **state)
{
    (void)state;
    static const char body[] = "{\"hello\": \"world\"}";
    char *v = httpsig_digest_value(HTTPSIG_SHA256, body, strlen(body));
    assert_string_equal(v, "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:");
    free(v);
    v = httpsig_digest_value(HTTPSIG_SHA512, body, strlen(body));
    assert_string_equal(v, DIGEST_HELLO_512);
    free(v);

    static const char *const good[] = {
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
        DIGEST_HELLO_512,
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, " DIGEST_HELLO_512,
        "unixsum=:AQ==:, sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
    };
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        struct httpsig_digest d;
        const char *why = NULL;
        assert_int_equal(httpsig_digest_begin(&d, good[i], strlen(good[i]), &why), 0);
        /* In pieces, as a body streams in. */
        httpsig_digest_update(&d, body, 5);
        httpsig_digest_update(&d, body + 5, 0);
        httpsig_digest_update(&d, body + 5, strlen(body) - 5);
        assert_int_equal(httpsig_digest_end(&d), 0);
        /* One byte more and it no longer matches. */
        assert_int_equal(httpsig_digest_begin(&d, good[i], strlen(good[i]), &why), 0);
        httpsig_digest_update(&d, body, strlen(body));
        httpsig_digest_update(&d, "\n", 1);
        assert_int_equal(httpsig_digest_end(&d), -1);
        /* Abandoned halfway: clearing frees everything (ASan would say otherwise). */
        assert_int_equal(httpsig_digest_begin(&d, good[i], strlen(good[i]), &why), 0);
        httpsig_digest_clear(&d);
        httpsig_digest_clear(&d);
    }
    /* sha-512 matches but sha-256 does not: every named digest must match. */
    const char *mixed = "sha-256=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:, " DIGEST_HELLO_512;
    struct httpsig_digest d;
    const char *why;
    assert_int_equal(httpsig_digest_begin(&d, mixed, strlen(mixed), &why), 0);
    httpsig_digest_update(&d, body, strlen(body));
    assert_int_equal(httpsig_digest_end(&d), -1);

    static const char *const bad[] = {
        "",                                                     /* nothing */
        "md5=:AAAAAAAAAAAAAAAAAAAAAA==:",                       /* nothing we know */
        "sha-256=:AAAA:",                                       /* wrong length */
        "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=", /* not a byte sequence */
        "sha-256=(:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:)",
        "SHA-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", /* keys are lower case */
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:,",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        why = NULL;
        if (httpsig_digest_begin(&d, bad[i], strlen(bad[i]), &why) == 0)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(why);
    }
}

/* ---- RFC 7638 and cnf ---- */

static void test_thumbprints(void **state)
{
    (void)state;
    struct jwk k;
    char tp[HTTPSIG_THUMBPRINT_LEN + 1];
    cnf_key(P256_JWK, &k);
    httpsig_thumbprint(&k, tp);
    assert_string_equal(tp, P256_THUMBPRINT);
    assert_string_equal(k.kid, P256_THUMBPRINT);
    jwk_clear(&k);
    cnf_key(ED25519_JWK, &k);
    assert_string_equal(k.kid, ED25519_THUMBPRINT);
    jwk_clear(&k);
    /* A kid, alg or use in the object changes nothing: only the required members count. */
    cnf_key("{\"kid\":\"mine\",\"alg\":\"EdDSA\",\"use\":\"sig\",\"kty\":\"OKP\",\"crv\":"
            "\"Ed25519\",\"x\":\"JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs\"}",
            &k);
    assert_string_equal(k.kid, ED25519_THUMBPRINT);
    /* The thumbprint of a parsed private key is its public key's. */
    struct jwk priv;
    private_key(ED25519_PRIVATE_PEM, "x", &priv);
    httpsig_thumbprint(&priv, tp);
    assert_string_equal(tp, ED25519_THUMBPRINT);
    jwk_clear(&priv);
    jwk_clear(&k);

    static const char *const bad[] = {
        "[]",
        "{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}",
        "{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"}",
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"JrQLj5P_89iXES9-vFgrIy29clF9CC_"
        "oPPsw3c5D0bs\","
        "\"d\":\"n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU\"}",
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"qIVYZVLCrPZHGHjP17CTW0_-D9Lfw0EkjqF7xB4FivA\","
        "\"y\":\"Nc4nN9LTDOBhfoUeg8Ye9WedFRhnZXZJA12Qp0zZ6F0\"}", /* not on the curve */
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        char *err = NULL;
        json_t *j = sjson_parse(bad[i], strlen(bad[i]), &err);
        assert_non_null(j);
        if (httpsig_jwk_from_cnf(j, &k, &err) == 0)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(err);
        free(err);
        json_decref(j);
    }
}

/* ---- SPEC §7: round trips and refusals ---- */

#define NOW 1800000000

static const char *const SPEC_COMPONENTS[] = {"@method", "@authority", "@path", "@query",
                                              "authorization"};

struct fixture {
    struct tmsg t;
    struct jwk priv, pub;
    struct httpsig_policy pol;
    char *in, *sig;
};

/* A GET signed as SPEC §7 says, and the policy that checks it. */
static void fixture(struct fixture *f, enum jwk_alg alg)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(jwk_generate(alg, "agent", &f->priv), 0);
    json_t *j = jwk_to_json(&f->priv);
    char *err = NULL;
    if (httpsig_jwk_from_cnf(j, &f->pub, &err) != 0)
        fail_msg("cnf: %s", err);
    json_decref(j);
    f->t.m = (struct httpsig_msg){.method = "GET",
                                  .scheme = "http",
                                  .authority = "127.0.0.1:8080",
                                  .path = "/v1/items",
                                  .query = "q=1",
                                  .field = tfield,
                                  .ctx = &f->t};
    add(&f->t, "Authorization", "Mandate eyJ.eyJ.sig");
    f->pol = (struct httpsig_policy){.required = SPEC_COMPONENTS,
                                     .n_required = ARRAY_LEN(SPEC_COMPONENTS),
                                     .need = HTTPSIG_NEED_ALL,
                                     .max_window_s = 60,
                                     .skew_s = 5};
}

static void sign(struct fixture *f, const struct httpsig_sign_params *sp)
{
    char *err = NULL;
    free(f->in);
    free(f->sig);
    if (httpsig_sign(&f->t.m, "mandate", &f->priv, sp, &f->in, &f->sig, &err) != 0)
        fail_msg("sign: %s", err);
    set(&f->t, "Signature-Input", f->in);
    set(&f->t, "Signature", f->sig);
}

static struct httpsig_sign_params spec_params(const struct fixture *f)
{
    return (struct httpsig_sign_params){.components = SPEC_COMPONENTS,
                                        .n_components = ARRAY_LEN(SPEC_COMPONENTS),
                                        .created = NOW,
                                        .expires = NOW + 30,
                                        .nonce = "bm9uY2Utbm9uY2Utbm9uY2U",
                                        .keyid = f->pub.kid};
}

static void fixture_clear(struct fixture *f)
{
    jwk_clear(&f->priv);
    jwk_clear(&f->pub);
    free(f->in);
    free(f->sig);
}

static enum httpsig_status check(struct fixture *f, struct httpsig_result *r)
{
    return httpsig_verify(&f->t.m, "mandate", &f->pub, &f->pol, NOW, r);
}

static void round_trip(enum jwk_alg alg)
{
    struct fixture f;
    fixture(&f, alg);
    struct httpsig_sign_params sp = spec_params(&f);
    sp.alg = httpsig_alg_name(&f.pub);
    sign(&f, &sp);
    struct httpsig_result r;
    assert_int_equal(check(&f, &r), HTTPSIG_OK);
    assert_int_equal(r.created, NOW);
    assert_int_equal(r.expires, NOW + 30);
    assert_string_equal(r.nonce, "bm9uY2Utbm9uY2Utbm9uY2U");
    assert_string_equal(r.keyid, f.pub.kid);
    assert_false(r.covers_digest);

    /* With a body: content-digest covered, the caller is told to check it. */
    static const char *const with_digest[] = {"@method", "@authority",    "@path",
                                              "@query",  "authorization", "content-digest"};
    char *cd = httpsig_digest_value(HTTPSIG_SHA256, "{}", 2);
    add(&f.t, "Content-Digest", cd);
    sp.components = with_digest;
    sp.n_components = ARRAY_LEN(with_digest);
    char nonce[33];
    httpsig_nonce(nonce);
    assert_int_equal(strlen(nonce), 32);
    sp.nonce = nonce;
    sign(&f, &sp);
    assert_int_equal(check(&f, &r), HTTPSIG_OK);
    assert_true(r.covers_digest);
    assert_string_equal(r.nonce, nonce);
    free(cd);
    fixture_clear(&f);
}

static void test_round_trip_ed25519(void **state)
{
    (void)state;
    round_trip(JWK_EDDSA);
}

static void test_round_trip_p256(void **state)
{
    (void)state;
    round_trip(JWK_ES256);
}

/* Sign with sp (after edit), verify, and expect want with reason containing needle. */
static void refuse(enum jwk_alg alg, void (*edit)(struct fixture *, struct httpsig_sign_params *),
                   enum httpsig_status want, const char *needle)
{
    struct fixture f;
    fixture(&f, alg);
    struct httpsig_sign_params sp = spec_params(&f);
    sign(&f, &sp);
    struct httpsig_result r;
    assert_int_equal(check(&f, &r), HTTPSIG_OK); /* the unedited request passes */
    edit(&f, &sp);
    enum httpsig_status got = check(&f, &r);
    if (got != want || !strstr(r.reason, needle))
        fail_msg("status %d, reason \"%s\"; wanted %d with \"%s\"", got, r.reason, want, needle);
    fixture_clear(&f);
}

static void e_no_label(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    f->t.n = 1; /* only Authorization is left */
}

static void e_other_label(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    char *err = NULL, *in, *sig;
    assert_int_equal(httpsig_sign(&f->t.m, "other", &f->priv, sp, &in, &sig, &err), 0);
    set(&f->t, "Signature-Input", in);
    set(&f->t, "Signature", sig);
    free(f->in);
    free(f->sig);
    f->in = in;
    f->sig = sig;
}

static void e_input_only(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    set(&f->t, "Signature", "other=:AAAA:");
}

static void e_no_authorization(struct fixture *f, struct httpsig_sign_params *sp)
{
    static const char *const c[] = {"@method", "@authority", "@path", "@query"};
    sp->components = c;
    sp->n_components = ARRAY_LEN(c);
    sign(f, sp);
}

static void e_component_absent(struct fixture *f, struct httpsig_sign_params *sp)
{
    static const char *const c[] = {"@method", "@authority",    "@path",
                                    "@query",  "authorization", "mandate-cart"};
    add(&f->t, "Mandate-Cart", "cart");
    sp->components = c;
    sp->n_components = ARRAY_LEN(c);
    sign(f, sp);
    f->t.n--; /* the cart header is gone in transit */
}

static void e_duplicate_component(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    char *in = xasprintf("mandate=(\"@method\" \"@authority\" \"@path\" \"@query\" "
                         "\"authorization\" \"@path\");created=%d;expires=%d;nonce="
                         "\"bm9uY2Utbm9uY2Utbm9uY2U\";keyid=\"%s\"",
                         NOW, NOW + 30, f->pub.kid);
    free(f->in);
    f->in = in;
    set(&f->t, "Signature-Input", in);
}

static void e_created_future(struct fixture *f, struct httpsig_sign_params *sp)
{
    sp->created = NOW + 6;
    sp->expires = NOW + 30;
    sign(f, sp);
}

static void e_expired(struct fixture *f, struct httpsig_sign_params *sp)
{
    sp->created = NOW - 40;
    sp->expires = NOW - 6;
    sign(f, sp);
}

static void e_window(struct fixture *f, struct httpsig_sign_params *sp)
{
    sp->expires = NOW + 61;
    sign(f, sp);
}

static void e_backwards(struct fixture *f, struct httpsig_sign_params *sp)
{
    sp->expires = NOW - 1;
    sign(f, sp);
}

static void e_no_expires(struct fixture *f, struct httpsig_sign_params *sp)
{
    sp->expires = -1;
    sign(f, sp);
}

static void e_no_created(struct fixture *f, struct httpsig_sign_params *sp)
{
    sp->created = -1;
    sign(f, sp);
}

static void e_no_nonce(struct fixture *f, struct httpsig_sign_params *sp)
{
    sp->nonce = NULL;
    sign(f, sp);
}

static void e_short_nonce(struct fixture *f, struct httpsig_sign_params *sp)
{
    sp->nonce = "bm9uY2Utbm9uY2U"; /* 15 */
    sign(f, sp);
}

static void e_nonce_alphabet(struct fixture *f, struct httpsig_sign_params *sp)
{
    sp->nonce = "bm9uY2Utbm9uY2U+bm9uY2U=";
    sign(f, sp);
}

static void e_no_keyid(struct fixture *f, struct httpsig_sign_params *sp)
{
    sp->keyid = NULL;
    sign(f, sp);
}

static void e_wrong_keyid(struct fixture *f, struct httpsig_sign_params *sp)
{
    sp->keyid = P256_THUMBPRINT;
    sign(f, sp);
}

static void e_wrong_alg(struct fixture *f, struct httpsig_sign_params *sp)
{
    sp->alg = f->pub.alg == JWK_EDDSA ? "ecdsa-p256-sha256" : "ed25519";
    sign(f, sp);
}

static void e_rsa_alg(struct fixture *f, struct httpsig_sign_params *sp)
{
    sp->alg = "rsa-pss-sha512";
    sign(f, sp);
}

static void e_tampered_path(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    f->t.m.path = "/v1/items/2";
}

static void e_tampered_authz(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    set(&f->t, "Authorization", "Mandate eyJ.eyJ.other");
}

static void e_tampered_params(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    /* Same signature, a later expiry: @signature-params is covered too. */
    char *p = strstr(f->in, ";expires=");
    assert_non_null(p);
    p[strlen(";expires=") + 9] = '9';
}

static void e_other_key(struct fixture *f, struct httpsig_sign_params *sp)
{
    jwk_clear(&f->priv);
    assert_int_equal(jwk_generate(f->pub.alg, "agent", &f->priv), 0);
    sign(f, sp);
}

static void e_malformed_input(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    set(&f->t, "Signature-Input", "mandate=(\"@method\" \"@path\";created=1");
}

static void e_malformed_sig(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    f->sig[strlen(f->sig) - 1] = '\0'; /* drop the closing ':' */
}

static void e_short_sig(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    set(&f->t, "Signature", "mandate=:AAAA:");
}

static void e_sig_not_bytes(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    set(&f->t, "Signature", "mandate=\"AAAA\"");
}

static void e_input_item(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    set(&f->t, "Signature-Input", "mandate=\"@method\"");
}

static void e_created_string(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    char *in = xasprintf("mandate=(\"@method\" \"@authority\" \"@path\" \"@query\" "
                         "\"authorization\");created=\"%d\";expires=%d;nonce="
                         "\"bm9uY2Utbm9uY2Utbm9uY2U\";keyid=\"%s\"",
                         NOW, NOW + 30, f->pub.kid);
    free(f->in);
    f->in = in;
    set(&f->t, "Signature-Input", in);
}

static void e_component_param(struct fixture *f, struct httpsig_sign_params *sp)
{
    (void)sp;
    char *in = xasprintf("mandate=(\"@method\" \"@authority\" \"@path\" \"@query\" "
                         "\"authorization\";sf);created=%d;expires=%d;nonce="
                         "\"bm9uY2Utbm9uY2Utbm9uY2U\";keyid=\"%s\"",
                         NOW, NOW + 30, f->pub.kid);
    free(f->in);
    f->in = in;
    set(&f->t, "Signature-Input", in);
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        void (*edit)(struct fixture *, struct httpsig_sign_params *);
        enum httpsig_status want;
        const char *reason;
    } cases[] = {
        {e_no_label, HTTPSIG_MISSING, "no signature labelled"},
        {e_other_label, HTTPSIG_MISSING, "no signature labelled"},
        {e_input_only, HTTPSIG_INVALID, "is in signature-input only"},
        {e_no_authorization, HTTPSIG_INVALID, "\"authorization\" is not covered"},
        {e_component_absent, HTTPSIG_INVALID, "\"mandate-cart\": not in the message"},
        {e_duplicate_component, HTTPSIG_INVALID, "\"@path\" is listed twice"},
        {e_created_future, HTTPSIG_INVALID, "created is in the future"},
        {e_expired, HTTPSIG_INVALID, "expired"},
        {e_window, HTTPSIG_INVALID, "exceeds 60 s"},
        {e_backwards, HTTPSIG_INVALID, "expires is before created"},
        {e_no_expires, HTTPSIG_INVALID, "parameter expires is missing"},
        {e_no_created, HTTPSIG_INVALID, "parameter created is missing"},
        {e_no_nonce, HTTPSIG_INVALID, "parameter nonce is missing"},
        {e_short_nonce, HTTPSIG_INVALID, "nonce is not 16 to 64"},
        {e_nonce_alphabet, HTTPSIG_INVALID, "nonce is not 16 to 64"},
        {e_no_keyid, HTTPSIG_INVALID, "parameter keyid is missing"},
        {e_wrong_keyid, HTTPSIG_INVALID, "keyid does not name the key"},
        {e_wrong_alg, HTTPSIG_INVALID, "does not match the key"},
        {e_rsa_alg, HTTPSIG_INVALID, "does not match the key"},
        {e_tampered_path, HTTPSIG_INVALID, "does not verify"},
        {e_tampered_authz, HTTPSIG_INVALID, "does not verify"},
        {e_tampered_params, HTTPSIG_INVALID, "does not verify"},
        {e_other_key, HTTPSIG_INVALID, "does not verify"},
        {e_malformed_input, HTTPSIG_INVALID, "signature-input: "},
        {e_malformed_sig, HTTPSIG_INVALID, "signature: unterminated byte sequence"},
        {e_short_sig, HTTPSIG_INVALID, "does not verify"},
        {e_sig_not_bytes, HTTPSIG_INVALID, "is not a byte sequence"},
        {e_input_item, HTTPSIG_INVALID, "is not an inner list"},
        {e_created_string, HTTPSIG_INVALID, "parameter created has the wrong type"},
        {e_component_param, HTTPSIG_INVALID, "parameters are not supported"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        refuse(JWK_EDDSA, cases[i].edit, cases[i].want, cases[i].reason);
        refuse(JWK_ES256, cases[i].edit, cases[i].want, cases[i].reason);
    }
}

/* Skew: created up to skew in the future and expires up to skew in the past still pass. */
static void test_skew_edges(void **state)
{
    (void)state;
    struct fixture f;
    fixture(&f, JWK_EDDSA);
    struct httpsig_sign_params sp = spec_params(&f);
    struct httpsig_result r;
    sp.created = NOW + 5;
    sp.expires = NOW + 65;
    sign(&f, &sp);
    assert_int_equal(check(&f, &r), HTTPSIG_OK);
    sp.created = NOW - 65;
    sp.expires = NOW - 5;
    sign(&f, &sp);
    assert_int_equal(check(&f, &r), HTTPSIG_OK);
    /* The label found among others, over two field lines. */
    char *in = xasprintf("a=();created=1, %s", f.in);
    set(&f.t, "Signature-Input", in);
    add(&f.t, "Signature", "a=::");
    assert_int_equal(check(&f, &r), HTTPSIG_OK);
    free(in);
    fixture_clear(&f);
}

static void test_sign_refusals(void **state)
{
    (void)state;
    struct fixture f;
    fixture(&f, JWK_ES256);
    struct httpsig_sign_params sp = spec_params(&f);
    char *in = NULL, *sig = NULL, *err = NULL;
    static const char *const absent[] = {"@method", "x-absent"};
    sp.components = absent;
    sp.n_components = 2;
    assert_int_equal(httpsig_sign(&f.t.m, "mandate", &f.priv, &sp, &in, &sig, &err), -1);
    assert_non_null(strstr(err, "x-absent"));
    free(err);
    sp = spec_params(&f);
    assert_int_equal(httpsig_sign(&f.t.m, "Bad Label", &f.priv, &sp, &in, &sig, &err), -1);
    free(err);
    /* A public key cannot sign. */
    assert_int_equal(httpsig_sign(&f.t.m, "mandate", &f.pub, &sp, &in, &sig, &err), -1);
    free(err);
    assert_null(in);
    assert_null(sig);
    fixture_clear(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b26_ed25519_base_and_verify),
        cmocka_unit_test(test_b26_ed25519_sign_reproduces_rfc),
        cmocka_unit_test(test_b24_ecdsa_p256_verify),
        cmocka_unit_test(test_b21_b23_bases),
        cmocka_unit_test(test_b25_base_by_hmac),
        cmocka_unit_test(test_derived_components),
        cmocka_unit_test(test_sf_parse_and_serialise),
        cmocka_unit_test(test_sf_refusals),
        cmocka_unit_test(test_content_digest),
        cmocka_unit_test(test_thumbprints),
        cmocka_unit_test(test_round_trip_ed25519),
        cmocka_unit_test(test_round_trip_p256),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_skew_edges),
        cmocka_unit_test(test_sign_refusals),
    };
    return cmocka_run_group_tests_name("httpsig", tests, NULL, NULL);
}
