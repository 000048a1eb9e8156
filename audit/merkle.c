/*
 * merkle: RFC 6962 Merkle tree hashing, frontier, and inclusion proofs.
 */
#include "audit/merkle.h"

#include <stdlib.h>
#include <string.h>
#include "core/sha256.h"

void merkle_leaf_hash(const unsigned char *data, size_t len, unsigned char out[32])
{
    static const unsigned char zero = 0;
    sha256_2(&zero, 1, data, len, out);
}

void merkle_node_hash(const unsigned char *left, const unsigned char *right, unsigned char out[32])
{
    unsigned char buf[65];
    buf[0] = 1;
    memcpy(buf + 1, left, 32);
    memcpy(buf + 33, right, 32);
    sha256(buf, sizeof(buf), out);
}

int merkle_append(struct merkle_frontier *f, const unsigned char leaf[32],
                  unsigned char (*done)[32])
{
    unsigned char cur[32];
    memcpy(cur, leaf, 32);
    /* Carry like binary addition: each set low bit of size is a subtree to merge with. */
    int h = 0;
    for (uint64_t s = f->size; s & 1; s >>= 1, h++) {
        merkle_node_hash(f->node[h], cur, cur);
        if (done)
            memcpy(done[h], cur, 32);
    }
    memcpy(f->node[h], cur, 32);
    f->size++;
    return h;
}

void merkle_root(const struct merkle_frontier *f, unsigned char out[32])
{
    if (f->size == 0) {
        sha256("", 0, out);
        return;
    }
    /* Fold the subtrees from the smallest (rightmost) to the largest. */
    int have = 0;
    unsigned char acc[32];
    for (int h = 0; h < MERKLE_MAX_HEIGHT; h++) {
        if (!((f->size >> h) & 1))
            continue;
        if (!have) {
            memcpy(acc, f->node[h], 32);
            have = 1;
        } else {
            merkle_node_hash(f->node[h], acc, acc);
        }
    }
    memcpy(out, acc, 32);
}

uint64_t merkle_split(uint64_t n)
{
    uint64_t k = 1;
    while (k << 1 < n)
        k <<= 1;
    return k;
}

void merkle_root_of(const unsigned char (*leaves)[32], uint64_t n, unsigned char out[32])
{
    if (n == 0) {
        sha256("", 0, out);
    } else if (n == 1) {
        memcpy(out, leaves[0], 32);
    } else {
        uint64_t k = merkle_split(n);
        unsigned char l[32], r[32];
        merkle_root_of(leaves, k, l);
        merkle_root_of(leaves + k, n - k, r);
        merkle_node_hash(l, r, out);
    }
}

static int path(uint64_t m, uint64_t start, uint64_t size, merkle_range_fn range, void *arg,
                unsigned char (*proof)[32])
{
    if (size <= 1)
        return 0;
    uint64_t k = merkle_split(size);
    int len = m < k ? path(m, start, k, range, arg, proof)
                    : path(m - k, start + k, size - k, range, arg, proof);
    if (len < 0 || (m < k ? range(arg, start + k, size - k, proof[len])
                          : range(arg, start, k, proof[len])) != 0)
        return -1;
    return len + 1;
}

int merkle_path(uint64_t m, uint64_t n, merkle_range_fn range, void *arg,
                unsigned char (*proof)[32])
{
    return m < n ? path(m, 0, n, range, arg, proof) : -1;
}

static int array_range(void *arg, uint64_t start, uint64_t size, unsigned char out[32])
{
    merkle_root_of((const unsigned char(*)[32])arg + start, size, out);
    return 0;
}

size_t merkle_inclusion_proof(const unsigned char (*leaves)[32], uint64_t n, uint64_t m,
                              unsigned char (*proof)[32])
{
    int len = merkle_path(m, n, array_range, (void *)leaves, proof);
    return len > 0 ? (size_t)len : 0;
}

int merkle_verify_inclusion(const unsigned char leaf[32], uint64_t m, uint64_t n,
                            const unsigned char (*proof)[32], size_t len,
                            const unsigned char root[32])
{
    /* RFC 9162 §2.1.3.2 */
    if (m >= n)
        return 0;
    uint64_t fn = m, sn = n - 1;
    unsigned char r[32];
    memcpy(r, leaf, 32);
    for (size_t i = 0; i < len; i++) {
        if (sn == 0)
            return 0;
        if ((fn & 1) || fn == sn) {
            merkle_node_hash(proof[i], r, r);
            if (!(fn & 1))
                while (fn && !(fn & 1)) {
                    fn >>= 1;
                    sn >>= 1;
                }
        } else {
            merkle_node_hash(r, proof[i], r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && memcmp(r, root, 32) == 0;
}
