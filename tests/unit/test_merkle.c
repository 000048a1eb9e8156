/*
 * audit/merkle against RFC 6962's test vectors (the eight leaves used by Certificate
 * Transparency's reference implementations), frontier roots at every size, and inclusion proofs.
 */
#include "testkit.h"

#include "audit/merkle.h"

static const char *const leaves_hex[] = {"",
                                         "00",
                                         "10",
                                         "2021",
                                         "3031",
                                         "40414243",
                                         "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f"};

static const char *const roots_hex[] = {
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};

static unsigned char leaves[8][32];

static int setup(void **state)
{
    (void)state;
    for (int i = 0; i < 8; i++) {
        unsigned char buf[16];
        size_t n = strlen(leaves_hex[i]) / 2;
        assert_int_equal(hex_decode(leaves_hex[i], buf, n), 0);
        merkle_leaf_hash(buf, n, leaves[i]);
    }
    return 0;
}

static void test_empty_tree(void **state)
{
    (void)state;
    struct merkle_frontier f = {0};
    unsigned char root[32];
    char hex[65];
    merkle_root(&f, root);
    hex_encode(root, 32, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_roots_every_size(void **state)
{
    (void)state;
    struct merkle_frontier f = {0};
    for (int n = 1; n <= 8; n++) {
        merkle_append(&f, leaves[n - 1], NULL);
        unsigned char a[32], b[32];
        char hex[65];
        merkle_root(&f, a);
        merkle_root_of((const unsigned char(*)[32])leaves, (uint64_t)n, b);
        hex_encode(a, 32, hex);
        assert_string_equal(hex, roots_hex[n - 1]);
        assert_memory_equal(a, b, 32);
    }
}

static void test_inclusion_vector(void **state)
{
    (void)state;
    /* RFC 6962 test data: the path of leaf 0 in the tree of 8. */
    static const char *const want[] = {
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"};
    unsigned char proof[MERKLE_MAX_HEIGHT][32];
    size_t len = merkle_inclusion_proof((const unsigned char(*)[32])leaves, 8, 0, proof);
    assert_int_equal(len, 3);
    for (size_t i = 0; i < len; i++) {
        char hex[65];
        hex_encode(proof[i], 32, hex);
        assert_string_equal(hex, want[i]);
    }
}

static void test_inclusion_all(void **state)
{
    (void)state;
    for (uint64_t n = 1; n <= 8; n++) {
        unsigned char root[32];
        merkle_root_of((const unsigned char(*)[32])leaves, n, root);
        for (uint64_t m = 0; m < n; m++) {
            unsigned char proof[MERKLE_MAX_HEIGHT][32];
            size_t len = merkle_inclusion_proof((const unsigned char(*)[32])leaves, n, m, proof);
            assert_true(merkle_verify_inclusion(leaves[m], m, n, (const unsigned char(*)[32])proof,
                                                len, root));
            /* Another leaf, or another root, must fail. */
            unsigned char bad_root[32];
            memcpy(bad_root, root, 32);
            bad_root[5] ^= 1;
            assert_false(merkle_verify_inclusion(leaves[m], m, n, (const unsigned char(*)[32])proof,
                                                 len, bad_root));
            if (n > 1)
                assert_false(merkle_verify_inclusion(leaves[(m + 1) % n], m, n,
                                                     (const unsigned char(*)[32])proof, len, root));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_tree),
        cmocka_unit_test(test_roots_every_size),
        cmocka_unit_test(test_inclusion_vector),
        cmocka_unit_test(test_inclusion_all),
    };
    return cmocka_run_group_tests_name("merkle", tests, setup, NULL);
}
