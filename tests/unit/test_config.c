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
    };
    return cmocka_run_group_tests_name("config", tests, setup, teardown);
}
