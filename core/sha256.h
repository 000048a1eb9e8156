/*
 * sha256: SHA-256 for hot paths. OpenSSL 3's one-shot SHA256() fetches the algorithm and
 * allocates a context on every call; here the algorithm is fetched once per process and each
 * thread reuses one context.
 */
#ifndef CORE_SHA256_H
#define CORE_SHA256_H

#include <stddef.h>

/** out = SHA-256(a || b); b may be NULL with blen 0. */
void sha256_2(const void *a, size_t alen, const void *b, size_t blen, unsigned char out[32]);
/** out = SHA-256(data). */
void sha256(const void *data, size_t len, unsigned char out[32]);

#endif
