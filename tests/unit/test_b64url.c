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

/* The decoder as it was, a character at a time: the reference for the four-at-a-time one. */
static long reference_decode(const unsigned char *in, size_t n, unsigned char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if (n % 4 == 1)
        return -1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = in[i] ? strchr(abc, in[i]) : NULL;
        if (!p)
            return -1;
        acc = (acc << 6 | (unsigned)(p - abc)) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return acc & ((1u << bits) - 1) ? -1 : (long)o;
}

static void same_as_reference(const unsigned char *in, size_t n)
{
    unsigned char want[64], got[64];
    long w = reference_decode(in, n, want), g = b64url_decode((const char *)in, n, got);
    assert_int_equal(g, w);
    if (w > 0)
        assert_memory_equal(got, want, (size_t)w);
}

/* Every string of up to three characters from the alphabet and a few outsiders, then random
 * strings of up to 40 (mostly valid ones), decode as the reference decodes them. */
static void test_decode_as_reference(void **state)
{
    (void)state;
    static const unsigned char set[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ .\x80\xff";
    size_t k = sizeof(set); /* the NUL too */
    unsigned char in[40];
    for (size_t a = 0; a < k; a++) {
        in[0] = set[a];
        same_as_reference(in, 1);
        for (size_t b = 0; b < k; b++) {
            in[1] = set[b];
            same_as_reference(in, 2);
            for (size_t c = 0; c < k; c++) {
                in[2] = set[c];
                same_as_reference(in, 3);
            }
        }
    }
    srand(7);
    for (int round = 0; round < 200000; round++) {
        size_t n = (size_t)rand() % sizeof(in);
        for (size_t i = 0; i < n; i++)
            in[i] = rand() % 50 ? set[rand() % 64] : set[rand() % k];
        same_as_reference(in, n);
    }
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
        cmocka_unit_test(test_decode_as_reference),
        cmocka_unit_test(test_standard_padded),
    };
    return cmocka_run_group_tests_name("b64url", tests, NULL, NULL);
}
