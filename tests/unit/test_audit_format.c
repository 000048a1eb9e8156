/*
 * audit/entry and audit/checkpoint: entries are canonical (sorted, compact, ASCII, no floats);
 * checkpoints are C2SP signed notes that verify here and, over the same bytes, with
 * `openssl pkeyutl` (a second implementation), and fail when anything is changed.
 */
#include "testkit.h"

#include "audit/checkpoint.h"
#include "audit/entry.h"

#define PREV "00000000000000000000000000000000000000000000000000000000000000ff"

/* Encode obj's fields and seal them as entry seq 3 after PREV; NULL with *why if refused. */
static char *encode(json_t *obj, const char **why)
{
    struct entry_body body;
    char *s = NULL;
    size_t len;
    if (entry_body_encode(obj, &body, why) == 0) {
        s = entry_seal(&body, 3, PREV, &len);
        assert_int_equal(len, strlen(s));
        entry_body_clear(&body);
    }
    json_decref(obj);
    return s;
}

static void test_entry_canonical(void **state)
{
    (void)state;
    const char *why;
    char *s = encode(json_pack("{ss s{ss} si ss}", "kind", "décision", "amount", "currency", "EUR",
                               "a", 1, "ts_ms", "x"),
                     &why);
    assert_non_null(s);
    /* prev, seq and v land where they sort; nothing else moves. */
    assert_string_equal(s, "{\"a\":1,\"amount\":{\"currency\":\"EUR\"},\"kind\":\"d\\u00e9cision\","
                           "\"prev\":\"" PREV "\",\"seq\":3,\"ts_ms\":\"x\",\"v\":1}");
    free(s);
    s = encode(json_object(), &why);
    assert_string_equal(s, "{\"prev\":\"" PREV "\",\"seq\":3,\"v\":1}");
    free(s);
}

static void test_entry_escapes_all_non_ascii(void **state)
{
    (void)state;
    /* U+20AC (3 bytes), U+1F600 (4 bytes: a surrogate pair), a newline, a quote, a backslash */
    const char *why;
    char *s = encode(json_pack("{ss}", "s", "\xe2\x82\xac\xf0\x9f\x98\x80\n\"\\"), &why);
    assert_non_null(s);
    assert_string_equal(s, "{\"prev\":\"" PREV "\",\"s\":\"\\u20ac\\ud83d\\ude00\\u000a\\\"\\\\\","
                           "\"seq\":3,\"v\":1}");
    free(s);
}

static void test_entry_rejects_float(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_null(encode(json_pack("{s{sf}}", "amount", "value", 1.5), &why));
    assert_non_null(strstr(why, "float"));
}

static void test_entry_rejects_non_ascii_key(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_null(encode(json_pack("{si}", "cl\xc3\xa9", 1), &why));
    assert_non_null(strstr(why, "ASCII"));
}

static void test_entry_rejects_the_writers_keys(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_null(encode(json_pack("{si}", "seq", 1), &why));
    assert_null(encode(json_pack("{si}", "prev", 1), &why));
    assert_null(encode(json_pack("{si}", "zzz", 1), &why)); /* would sort after v */
}

static void test_checkpoint_round_trip_and_tamper(void **state)
{
    (void)state;
    struct jwk k;
    assert_int_equal(jwk_generate(JWK_EDDSA, "cp", &k), 0);
    unsigned char root[32];
    memset(root, 0xab, 32);
    char *note = checkpoint_sign(&k, "example.com/audit", 42, root);
    assert_non_null(note);
    assert_true(strncmp(note, "example.com/audit\n42\n", 21) == 0);
    assert_non_null(strstr(note, "\n\n\xe2\x80\x94 example.com/audit "));
    uint64_t size;
    unsigned char got[32];
    char *origin = NULL;
    const char *why;
    assert_int_equal(checkpoint_verify(note, k.pkey, &size, got, &origin, &why), 0);
    assert_int_equal(size, 42);
    assert_memory_equal(got, root, 32);
    assert_string_equal(origin, "example.com/audit");
    free(origin);
    /* Changing the size, or verifying with another key, must fail. */
    note[19] = '3';
    assert_int_equal(checkpoint_verify(note, k.pkey, &size, got, NULL, &why), -1);
    note[19] = '2';
    struct jwk other;
    assert_int_equal(jwk_generate(JWK_EDDSA, "cp", &other), 0);
    assert_int_equal(checkpoint_verify(note, other.pkey, &size, got, NULL, &why), -1);
    free(note);
    jwk_clear(&k);
    jwk_clear(&other);
}

static void test_checkpoint_verified_by_openssl(void **state)
{
    (void)state;
    char *dir = tk_tmpdir();
    struct jwk k;
    char *err = NULL;
    assert_int_equal(jwk_generate(JWK_EDDSA, "cp", &k), 0);
    char *pub = xasprintf("%s/cp.pub.pem", dir);
    assert_int_equal(jwk_write_public_pem(&k, pub, &err), 0);
    unsigned char root[32] = {1, 2, 3};
    char *note = checkpoint_sign(&k, "example.com/audit", 7, root);
    /* The signed text is everything up to the blank line; the signature is bytes 4..68 of the
     * base64 blob after the key name. */
    char *blank = strstr(note, "\n\n");
    char *body = xstrndup(note, (size_t)(blank - note) + 1);
    char *b64 = strrchr(note, ' ') + 1;
    unsigned char blob[80];
    int n = EVP_DecodeBlock(blob, (unsigned char *)b64, (int)(strchr(b64, '\n') - b64));
    assert_int_equal(n, 69); /* 68 bytes and one padding byte counted as zero */
    free(tk_write(dir, "body.txt", body));
    char *sig = xasprintf("%s/sig.bin", dir);
    FILE *f = fopen(sig, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(blob + 4, 1, 64, f), 64);
    fclose(f);
    free(sig);
    char *cmd = xasprintf("cd %s && openssl pkeyutl -verify -pubin -inkey cp.pub.pem -rawin "
                          "-in body.txt -sigfile sig.bin >/dev/null 2>&1",
                          dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    /* And openssl refuses it for a changed body. */
    body[0] = 'X';
    free(tk_write(dir, "body2.txt", body));
    cmd = xasprintf("cd %s && openssl pkeyutl -verify -pubin -inkey cp.pub.pem -rawin "
                    "-in body2.txt -sigfile sig.bin >/dev/null 2>&1",
                    dir);
    assert_int_not_equal(system(cmd), 0);
    free(cmd);
    free(body);
    free(note);
    free(pub);
    jwk_clear(&k);
    tk_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entry_canonical),
        cmocka_unit_test(test_entry_escapes_all_non_ascii),
        cmocka_unit_test(test_entry_rejects_float),
        cmocka_unit_test(test_entry_rejects_non_ascii_key),
        cmocka_unit_test(test_entry_rejects_the_writers_keys),
        cmocka_unit_test(test_checkpoint_round_trip_and_tamper),
        cmocka_unit_test(test_checkpoint_verified_by_openssl),
    };
    return cmocka_run_group_tests_name("audit_format", tests, NULL, NULL);
}
