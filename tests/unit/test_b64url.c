/* Unit tests for core/b64url: canonical encoding and every way decoding must refuse. */
#include "testkit.h"

static long dec(const char *s, unsigned char *out)
{
    return b64url_decode(s, strlen(s), out);
}

static void test_rfc4648_vectors(void **state)
{
    (void)state;
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char out[32];
        unsigned char back[32];
        b64url_encode((const unsigned char *)plain[i], strlen(plain[i]), out);
        assert_string_equal(out, enc[i]);
        assert_int_equal(dec(enc[i], back), (long)strlen(plain[i]));
        assert_memory_equal(back, plain[i], strlen(plain[i]));
    }
}

static void test_url_alphabet(void **state)
{
    (void)state;
    unsigned char in[] = {0xfb, 0xff, 0xbf}, back[8];
    char out[8];
    b64url_encode(in, 3, out);
    assert_string_equal(out, "-_-_");
    assert_int_equal(dec("-_-_", back), 3);
    assert_memory_equal(back, in, 3);
}

static void test_rejects_padding(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(dec("Zg==", out), -1);
    assert_int_equal(dec("Zm8=", out), -1);
}

static void test_rejects_standard_alphabet(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(dec("+/+/", out), -1);
}

static void test_rejects_whitespace(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(dec("Zm9v Zg", out), -1);
    assert_int_equal(dec("Zm9v\n", out), -1);
}

static void test_rejects_bad_length(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(dec("Z", out), -1);
    assert_int_equal(dec("Zm9vY", out), -1);
}

static void test_rejects_noncanonical_trailing_bits(void **state)
{
    (void)state;
    unsigned char out[16];
    /* "Zh" decodes to 'f' too, but with non-zero leftover bits. */
    assert_int_equal(dec("Zg", out), 1);
    assert_int_equal(dec("Zh", out), -1);
    assert_int_equal(dec("Zm9", out), -1);
}

static void test_rejects_nul(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(b64url_decode("Zm\0v", 4, out), -1);
}

/* Standard padded base64: RFC 4648 §10 vectors, and every non-canonical form refused. */
static void test_standard_padded(void **state)
{
    (void)state;
    const char *vec[][2] = {{"", ""},
                            {"f", "Zg=="},
                            {"fo", "Zm8="},
                            {"foo", "Zm9v"},
                            {"foob", "Zm9vYg=="},
                            {"fooba", "Zm9vYmE="},
                            {"foobar", "Zm9vYmFy"}};
    unsigned char out[16];
    for (size_t i = 0; i < ARRAY_LEN(vec); i++) {
        long n = b64_decode(vec[i][1], strlen(vec[i][1]), out);
        assert_int_equal(n, (long)strlen(vec[i][0]));
        assert_memory_equal(out, vec[i][0], (size_t)n);
    }
    assert_int_equal(b64_decode("+/8=", 4, out), 2);
    const char *bad[] = {"Zg",       "Zg=",  "Zh==", "Zm9=", "Z===",  "Zg==Zg==",
                         "Zm8=Zm8=", "-_8=", "Zg= ", " Zg=", "Zm\n8="};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        assert_int_equal(b64_decode(bad[i], strlen(bad[i]), out), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_url_alphabet),
        cmocka_unit_test(test_rejects_padding),
        cmocka_unit_test(test_rejects_standard_alphabet),
        cmocka_unit_test(test_rejects_whitespace),
        cmocka_unit_test(test_rejects_bad_length),
        cmocka_unit_test(test_rejects_noncanonical_trailing_bits),
        cmocka_unit_test(test_rejects_nul),
        cmocka_unit_test(test_standard_padded),
    };
    return cmocka_run_group_tests_name("b64url", tests, NULL, NULL);
}
