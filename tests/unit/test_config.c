/*
 * Configuration loading: a good gateway.json and wallet.json load; every kind of mistake gives a
 * message naming the file and the JSON path; unreachable routes are refused at load time.
 */
#include "testkit.h"

#include "gateway/config.h"
#include "wallet/config.h"

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = tk_tmpdir();
    struct jwk k, e;
    char *err = NULL;
    assert_int_equal(jwk_generate(JWK_ES256, "w1", &k), 0);
    assert_int_equal(jwk_generate(JWK_EDDSA, "cp", &e), 0);
    char *p = xasprintf("%s/w.pem", dir), *q = xasprintf("%s/cp.pem", dir);
    assert_int_equal(jwk_write_private(&k, p, &err), 0);
    assert_int_equal(jwk_write_private(&e, q, &err), 0);
    struct jwks set = {&k, 1};
    json_t *doc = jwks_to_json(&set);
    char *js = sjson_dump(doc);
    json_decref(doc);
    free(tk_write(dir, "w.jwks.json", js));
    free(js);
    free(p);
    free(q);
    jwk_clear(&k);
    jwk_clear(&e);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tk_rmdir(dir);
    return 0;
}

#define GW_PREFIX                                                                                  \
    "{\"listen\":\"127.0.0.1:8080\",\"database\":\"g.db\",\"audit\":{\"checkpoint_key\":"          \
    "\"cp.pem\"},\"issuers\":[{\"id\":\"wallet-1\",\"jwks_file\":\"w.jwks.json\"}],"

/* Load text as gateway.json; returns the errors joined by newlines (caller frees) or NULL. */
static char *gw_errors(const char *text)
{
    char *path = tk_write(dir, "gateway.json", text);
    struct cfg c;
    struct config *conf = config_load(path, &c);
    char *out = NULL;
    if (!conf) {
        assert_true(c.nerrors > 0);
        out = xstrdup("");
        for (size_t i = 0; i < c.nerrors; i++) {
            char *n = xasprintf("%s%s\n", out, c.errors[i]);
            free(out);
            out = n;
        }
    } else {
        assert_int_equal(c.nerrors, 0);
    }
    config_free(conf);
    cfg_clear(&c);
    free(path);
    return out;
}

static void expect(const char *text, const char *needle)
{
    char *errs = gw_errors(text);
    if (!errs || !strstr(errs, needle))
        fail_msg("expected an error containing \"%s\", got: %s", needle, errs ? errs : "(none)");
    free(errs);
}

static void test_good_gateway_config(void **state)
{
    (void)state;
    char *errs = gw_errors(
        GW_PREFIX "\"merchants\":[{\"id\":\"lux\",\"upstream\":\"http://127.0.0.1:9000\","
                  "\"routes\":[{\"method\":\"GET\",\"path\":\"/lux/search\",\"action\":\"search\"},"
                  "{\"method\":\"GET\",\"path\":\"/lux/b/*\",\"action\":\"get\"}]}]}");
    assert_null(errs);
}

static void test_bad_method_names_path(void **state)
{
    (void)state;
    expect(GW_PREFIX "\"merchants\":[{\"id\":\"lux\",\"upstream\":\"http://127.0.0.1:9000\","
                     "\"routes\":[{\"method\":\"GET\",\"path\":\"/a\",\"action\":\"a\"},"
                     "{\"method\":\"GET\",\"path\":\"/b\",\"action\":\"b\"},"
                     "{\"method\":\"FETCH\",\"path\":\"/c\",\"action\":\"c\"}]}]}",
           "gateway.json: merchants[0].routes[2].method: expected one of GET, HEAD, POST, PUT, "
           "PATCH, DELETE");
}

static void test_unknown_key(void **state)
{
    (void)state;
    expect(GW_PREFIX "\"merchants\":[], \"limits\":{\"max_body\":5}}",
           "limits.max_body: unknown key");
}

static void test_wrong_type(void **state)
{
    (void)state;
    expect(GW_PREFIX "\"merchants\":[], \"workers\":\"two\"}", "workers: expected an integer");
}

static void test_missing_required(void **state)
{
    (void)state;
    expect("{\"listen\":\"127.0.0.1:1\",\"audit\":{\"checkpoint_key\":\"cp.pem\"},\"issuers\":[],"
           "\"merchants\":[]}",
           "gateway.json: database: required");
}

static void test_missing_file(void **state)
{
    (void)state;
    expect("{\"listen\":\"127.0.0.1:1\",\"database\":\"x.db\",\"audit\":{\"checkpoint_key\":"
           "\"cp.pem\"},\"issuers\":[{\"id\":\"w\",\"jwks_file\":\"nope.json\"}],\"merchants\":[]}",
           "issuers[0].jwks_file: ");
}

static void test_bad_key_file(void **state)
{
    (void)state;
    free(tk_write(dir, "bad.jwks.json",
                  "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"kid\":\"x\"}]}"));
    expect("{\"listen\":\"127.0.0.1:1\",\"database\":\"x.db\",\"audit\":{\"checkpoint_key\":"
           "\"cp.pem\"},\"issuers\":[{\"id\":\"w\",\"jwks_file\":\"bad.jwks.json\"}],"
           "\"merchants\":[]}",
           "keys[0].crv: expected P-256");
}

static void test_checkpoint_key_must_be_ed25519(void **state)
{
    (void)state;
    expect("{\"listen\":\"127.0.0.1:1\",\"database\":\"x.db\",\"audit\":{\"checkpoint_key\":"
           "\"w.pem\"},\"issuers\":[],\"merchants\":[]}",
           "audit.checkpoint_key: ");
}

static void test_unreachable_route(void **state)
{
    (void)state;
    expect(GW_PREFIX "\"merchants\":[{\"id\":\"lux\",\"upstream\":\"http://127.0.0.1:9000\","
                     "\"routes\":[{\"method\":\"GET\",\"path\":\"/lux/*\",\"action\":\"a\"},"
                     "{\"method\":\"GET\",\"path\":\"/lux/b/*\",\"action\":\"b\"}]}]}",
           "merchants[0].routes[1]: route GET /lux/b/* can never match: merchants[0].routes[0] "
           "(GET /lux/*) comes first");
}

static void test_priced_route_needs_merchant_keys(void **state)
{
    (void)state;
    expect(GW_PREFIX "\"merchants\":[{\"id\":\"lux\",\"upstream\":\"http://127.0.0.1:9000\","
                     "\"routes\":[{\"method\":\"POST\",\"path\":\"/book\",\"action\":\"b\","
                     "\"priced\":true}]}]}",
           "gateway.json: merchants[0].jwks_file: required: priced routes need");
}

static void test_not_json(void **state)
{
    (void)state;
    expect("{\"listen\": ", "gateway.json: invalid JSON at line 1");
}

static void test_duplicate_key(void **state)
{
    (void)state;
    expect(GW_PREFIX "\"merchants\":[], \"workers\":1, \"workers\":2}", "duplicate");
}

static void test_wallet_errors(void **state)
{
    (void)state;
    char *path = tk_write(
        dir, "wallet.json",
        "{\"id\":\"wallet-1\",\"listen\":\"127.0.0.1:8700\",\"database\":\"w.db\","
        "\"signing_key\":{\"kid\":\"w1\",\"alg\":\"EdDSA\",\"file\":\"w.pem\"},"
        "\"admin\":{\"token_sha256\":\"abc\"},"
        "\"principals\":[{\"id\":\"alice\",\"spend_cap\":{\"value\":1.5,\"currency\":\"EUR\","
        "\"period\":\"day\"},\"allow\":[]}],"
        "\"agents\":[{\"id\":\"a\",\"principal\":\"bob\",\"token_sha256\":\""
        "0000000000000000000000000000000000000000000000000000000000000000\"}]}");
    struct cfg c;
    struct wallet_config *w = wallet_config_load(path, &c);
    assert_null(w);
    const char *want[] = {"wallet.json: signing_key.alg: ", "admin.token_sha256: expected 64 hex",
                          "principals[0].spend_cap: amount value is not an integer",
                          "agents[0].principal: no principal \"bob\""};
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        int found = 0;
        for (size_t j = 0; j < c.nerrors; j++)
            found |= strstr(c.errors[j], want[i]) != NULL;
        if (!found)
            fail_msg("missing error \"%s\"", want[i]);
    }
    cfg_clear(&c);
    free(path);
}

/* Load a wallet.json whose gateways have these admin_urls; the errors joined (caller frees). */
static char *wallet_gateway_errors(const char *const urls[], size_t n)
{
    char *gws = xstrdup("");
    for (size_t i = 0; i < n; i++) {
        char *g = xasprintf("%s%s{\"admin_url\":\"%s\",\"token_file\":\"w.jwks.json\"}", gws,
                            i ? "," : "", urls[i]);
        free(gws);
        gws = g;
    }
    char *text = xasprintf(
        "{\"id\":\"wallet-1\",\"listen\":\"127.0.0.1:8700\",\"database\":\"w.db\","
        "\"signing_key\":{\"kid\":\"w1\",\"alg\":\"ES256\",\"file\":\"w.pem\"},"
        "\"admin\":{\"token_sha256\":\""
        "0000000000000000000000000000000000000000000000000000000000000000\"},"
        "\"principals\":[{\"id\":\"alice\",\"spend_cap\":{\"value\":100,\"currency\":\"EUR\","
        "\"period\":\"day\"},\"allow\":[]}],"
        "\"agents\":[{\"id\":\"a\",\"principal\":\"alice\",\"token_sha256\":\""
        "0000000000000000000000000000000000000000000000000000000000000000\"}],"
        "\"gateways\":[%s]}",
        gws);
    char *path = tk_write(dir, "wallet.json", text);
    struct cfg c;
    struct wallet_config *w = wallet_config_load(path, &c);
    char *out = xstrdup("");
    for (size_t i = 0; i < c.nerrors; i++) {
        char *e = xasprintf("%s%s\n", out, c.errors[i]);
        free(out);
        out = e;
    }
    if (w) {
        assert_int_equal(c.nerrors, 0);
        for (size_t i = 0; i < n; i++)
            assert_true(w->gateways[i].port > 0 && w->gateways[i].host[0]);
    }
    wallet_config_free(w);
    cfg_clear(&c);
    free(path);
    free(text);
    free(gws);
    return out;
}

static void test_wallet_admin_url_is_host_and_port(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "http://127.0.0.1:9901/",  "http://127.0.0.1:9901/admin",
        "http://127.0.0.1",        "http://127.0.0.1:0",
        "http://127.0.0.1:65536",  "http://:9901",
        "https://127.0.0.1:9901",  "http://127.0.0.1:+99",
        "http://a_b:9901",         "http://user@gw:9901",
        "http://[::1:9901",        "http://[1.2.3.4]:9901",
        "http://300.1.1.1:9901",   "http://-gw:9901",
        "http://gw..example:9901", "http://127.0.0.1:9901?x",
        "http://127.0.0.1:009901",
    };
    char *errs = wallet_gateway_errors(bad, ARRAY_LEN(bad));
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        char *want = xasprintf("wallet.json: gateways[%zu].admin_url: ", i);
        if (!strstr(errs, want))
            fail_msg("no error for %s; got:\n%s", bad[i], errs);
        free(want);
    }
    assert_non_null(strstr(errs, "gateways[0].admin_url: nothing may follow the port"));
    free(errs);
    static const char *const good[] = {"http://127.0.0.1:9901", "http://[::1]:1",
                                       "http://gw-1.example.com:65535", "http://localhost:80"};
    errs = wallet_gateway_errors(good, ARRAY_LEN(good));
    assert_string_equal(errs, "");
    free(errs);
}

/* ---- agents[].jwk (SPEC §7) ---- */

/* Load a wallet.json whose one agent has "jwk": jwk (JSON text); *w gets the loaded config (or
 * NULL) and the errors joined come back (caller frees both). */
static char *wallet_agent_jwk(const char *jwk, struct wallet_config **w)
{
    char *text = xasprintf(
        "{\"id\":\"wallet-1\",\"listen\":\"127.0.0.1:8700\",\"database\":\"w.db\","
        "\"signing_key\":{\"kid\":\"w1\",\"alg\":\"ES256\",\"file\":\"w.pem\"},"
        "\"admin\":{\"token_sha256\":\""
        "0000000000000000000000000000000000000000000000000000000000000000\"},"
        "\"principals\":[{\"id\":\"alice\",\"spend_cap\":{\"value\":100,\"currency\":\"EUR\","
        "\"period\":\"day\"},\"allow\":[]}],"
        "\"agents\":[{\"id\":\"a\",\"principal\":\"alice\",\"token_sha256\":\""
        "0000000000000000000000000000000000000000000000000000000000000000\",\"jwk\":%s}]}",
        jwk);
    char *path = tk_write(dir, "wallet.json", text);
    struct cfg c;
    *w = wallet_config_load(path, &c);
    char *out = xstrdup("");
    for (size_t i = 0; i < c.nerrors; i++) {
        char *e = xasprintf("%s%s\n", out, c.errors[i]);
        free(out);
        out = e;
    }
    cfg_clear(&c);
    free(path);
    free(text);
    return out;
}

/* The public JWK of a new key of alg as keygen writes it (kid, alg, use included), edited by
 * setting member to value (JSON text; NULL: remove it). Caller frees. */
static char *agent_jwk_text(enum jwk_alg alg, const char *member, const char *value,
                            json_t **canonical, char thumb[HTTPSIG_THUMBPRINT_LEN + 1])
{
    struct jwk k;
    assert_int_equal(jwk_generate(alg, "agent-1", &k), 0);
    json_t *o = jwk_to_json(&k);
    if (canonical) {
        *canonical = json_deep_copy(o);
        json_object_del(*canonical, "kid");
        json_object_del(*canonical, "alg");
        json_object_del(*canonical, "use");
    }
    if (thumb)
        httpsig_thumbprint(&k, thumb);
    if (member && value) {
        json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        sjson_set(o, member, v);
    } else if (member) {
        json_object_del(o, member);
    }
    char *s = sjson_dump(o);
    json_decref(o);
    jwk_clear(&k);
    return s;
}

static void test_wallet_agent_jwk_good(void **state)
{
    (void)state;
    static const enum jwk_alg algs[] = {JWK_ES256, JWK_EDDSA};
    for (size_t i = 0; i < ARRAY_LEN(algs); i++) {
        json_t *canon;
        char thumb[HTTPSIG_THUMBPRINT_LEN + 1];
        char *text = agent_jwk_text(algs[i], NULL, NULL, &canon, thumb);
        struct wallet_config *w;
        char *errs = wallet_agent_jwk(text, &w);
        assert_string_equal(errs, "");
        assert_non_null(w);
        /* Exactly kty, crv, x (and y): kid, alg and use are dropped. */
        assert_non_null(w->agents[0].cnf_jwk);
        assert_true(json_equal(w->agents[0].cnf_jwk, canon));
        assert_int_equal(json_object_size(w->agents[0].cnf_jwk), algs[i] == JWK_ES256 ? 4 : 3);
        assert_string_equal(w->agents[0].cnf_thumbprint, thumb);
        wallet_config_free(w);
        json_decref(canon);
        free(errs);
        free(text);
    }
}

static void test_wallet_agent_jwk_errors(void **state)
{
    (void)state;
    static const struct {
        enum jwk_alg alg;
        const char *member, *value, *want;
    } cases[] = {
        {JWK_ES256, "d", "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"",
         "wallet.json: agents[0].jwk.d: a private key member"},
        {JWK_EDDSA, "d", "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"",
         "wallet.json: agents[0].jwk.d: a private key member"},
        {JWK_ES256, "kty", "\"RSA\"", "wallet.json: agents[0].jwk.kty: expected EC or OKP"},
        {JWK_ES256, "crv", "\"P-384\"", "wallet.json: agents[0].jwk.crv: expected P-256"},
        {JWK_EDDSA, "crv", "\"X25519\"", "wallet.json: agents[0].jwk.crv: expected Ed25519"},
        {JWK_ES256, "crv", NULL, "wallet.json: agents[0].jwk.crv: "},
        {JWK_ES256, "y", NULL, "wallet.json: agents[0].jwk.y: "},
        {JWK_ES256, "x", "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"",
         "wallet.json: agents[0].jwk.x: "},
        {JWK_EDDSA, "x", "\"AAAA\"", "wallet.json: agents[0].jwk.x: "},
        {JWK_ES256, "alg", "\"EdDSA\"", "wallet.json: agents[0].jwk.alg: "},
        {JWK_ES256, "x5c", "[]", "wallet.json: agents[0].jwk.x5c: unknown key"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char *text = agent_jwk_text(cases[i].alg, cases[i].member, cases[i].value, NULL, NULL);
        struct wallet_config *w;
        char *errs = wallet_agent_jwk(text, &w);
        if (w || !strstr(errs, cases[i].want))
            fail_msg("case %zu (%s): expected \"%s\", got: %s", i, text, cases[i].want, errs);
        free(errs);
        free(text);
    }
    /* A real RSA JWK, and things that are not objects. */
    static const struct {
        const char *jwk, *want;
    } raw[] = {
        {"{\"kty\":\"RSA\",\"n\":\"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1Wl"
         "UzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5"
         "qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4e"
         "TlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlM"
         "kEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw\",\"e\":\"AQAB\"}",
         "wallet.json: agents[0].jwk.kty: expected EC or OKP"},
        {"\"eyJrdHkiOiJFQyJ9\"", "wallet.json: agents[0].jwk: expected an object"},
        {"[]", "wallet.json: agents[0].jwk: expected an object"},
        {"null", "wallet.json: agents[0].jwk: expected an object"},
    };
    for (size_t i = 0; i < ARRAY_LEN(raw); i++) {
        struct wallet_config *w;
        char *errs = wallet_agent_jwk(raw[i].jwk, &w);
        if (w || !strstr(errs, raw[i].want))
            fail_msg("raw case %zu: expected \"%s\", got: %s", i, raw[i].want, errs);
        free(errs);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_gateway_config),
        cmocka_unit_test(test_bad_method_names_path),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_bad_key_file),
        cmocka_unit_test(test_checkpoint_key_must_be_ed25519),
        cmocka_unit_test(test_unreachable_route),
        cmocka_unit_test(test_priced_route_needs_merchant_keys),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_wallet_errors),
        cmocka_unit_test(test_wallet_admin_url_is_host_and_port),
        cmocka_unit_test(test_wallet_agent_jwk_good),
        cmocka_unit_test(test_wallet_agent_jwk_errors),
    };
    return cmocka_run_group_tests_name("config", tests, setup, teardown);
}
