/*
 * merkle: RFC 6962 (Certificate Transparency) hashing. Leaves are SHA-256(0x00 || entry), nodes
 * SHA-256(0x01 || left || right). A frontier keeps the roots of the perfect subtrees on the right
 * edge of the tree, so appending and computing the root each cost O(log n) hashes and O(log n)
 * memory. Inclusion proofs are computed from leaf hashes (mandate-audit has them all anyway).
 */
#ifndef AUDIT_MERKLE_H
#define AUDIT_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#define MERKLE_MAX_HEIGHT 64

struct merkle_frontier {
    uint64_t size;
    unsigned char node[MERKLE_MAX_HEIGHT][32]; /* node[h]: a perfect subtree of 2^h leaves */
};

/** SHA-256(0x00 || data). */
void merkle_leaf_hash(const unsigned char *data, size_t len, unsigned char out[32]);
/** SHA-256(0x01 || left || right). */
void merkle_node_hash(const unsigned char *left, const unsigned char *right, unsigned char out[32]);
/**
 * Append one leaf hash. The roots of the perfect subtrees this completes are written to done
 * (when not NULL; room for MERKLE_MAX_HEIGHT): done[j] is the node at level j + 1 with index
 * (new size >> (j + 1)) - 1. Returns how many.
 */
int merkle_append(struct merkle_frontier *f, const unsigned char leaf[32],
                  unsigned char (*done)[32]);
/** The root of the tree so far (SHA-256 of the empty string for an empty tree). */
void merkle_root(const struct merkle_frontier *f, unsigned char out[32]);
/** The largest power of two strictly below n (n > 1): where RFC 6962 splits a tree of n leaves. */
uint64_t merkle_split(uint64_t n);
/** Where subtree roots come from: the root of leaves [start, start + size) into out; 0 or -1. */
typedef int (*merkle_range_fn)(void *arg, uint64_t start, uint64_t size, unsigned char out[32]);
/**
 * The RFC 6962 PATH of leaf m in the tree of the first n leaves, with subtree roots from range
 * (an array of leaves, or the store's saved subtrees). Returns its length, or -1 if range failed.
 */
int merkle_path(uint64_t m, uint64_t n, merkle_range_fn range, void *arg,
                unsigned char (*proof)[32]);
/** Root of the first n leaves of leaves[] (RFC 6962 MTH), recursively. */
void merkle_root_of(const unsigned char (*leaves)[32], uint64_t n, unsigned char out[32]);
/**
 * The inclusion proof of leaf m in the tree of the first n leaves (RFC 6962 PATH); writes up to
 * MERKLE_MAX_HEIGHT hashes to proof and returns their count.
 */
size_t merkle_inclusion_proof(const unsigned char (*leaves)[32], uint64_t n, uint64_t m,
                              unsigned char (*proof)[32]);
/** Check an inclusion proof of leaf (index m, tree size n) against root: 1 valid, 0 not. */
int merkle_verify_inclusion(const unsigned char leaf[32], uint64_t m, uint64_t n,
                            const unsigned char (*proof)[32], size_t len,
                            const unsigned char root[32]);

#endif
