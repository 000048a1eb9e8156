/*
 * jws: JWS Compact Serialization (RFC 7515) for ES256 and EdDSA with OpenSSL EVP.
 * Decoding is strict and says nothing about trust: jws_check() verifies the signature against a
 * key chosen by the caller, and the header's alg is only compared with that key's pinned
 * algorithm, never used to choose one. ES256 signatures are raw r||s (64 bytes) on the wire and
 * converted to DER only for OpenSSL. Claims are mandate.c's business, not this module's.
 */
#ifndef CORE_JWS_H
#define CORE_JWS_H

#include <stddef.h>

#include <jansson.h>

#include "core/jwk.h"
#include "core/util.h"

#define JWS_SIG_LEN 64 /* both ES256 (r||s) and Ed25519 */

/** A decoded, not yet verified, compact JWS. Clear with jws_clear(). */
struct jws {
    char *buf;              /* owned: everything below that is not the token's */
    const char *alg;        /* in buf, decoded */
    const char *kid;        /* in buf, decoded */
    const char *typ;        /* in buf, decoded; NULL when absent */
    unsigned char *payload; /* in buf: decoded bytes, NUL-terminated for convenience */
    size_t payload_len;
    unsigned char *sig; /* in buf */
    size_t sig_len;
    const char *input; /* "header.payload", borrowed from the token */
    size_t input_len;
};

/**
 * Split and decode tok (len bytes, at most max_len). Returns 0, or -1 with *why when the token is
 * malformed: not three segments, bad base64url, header not a JSON object, duplicate members,
 * `crit` present, `alg` or `kid` missing. A signature of the wrong length is not malformed: it
 * fails jws_check(). The header is read by core/jsonscan (no tree, one allocation in all).
 */
int jws_decode(const char *tok, size_t len, size_t max_len, struct jws *out,
               const char **why) MUST_CHECK;
/**
 * jws_decode() with the header read by sjson_parse() into a jansson tree, as it was before the
 * scanner: the reference that tests and tests/fuzz/fuzz_claims_diff.c hold jws_decode() to.
 */
int jws_decode_tree(const char *tok, size_t len, size_t max_len, struct jws *out,
                    const char **why) MUST_CHECK;
/** Verify j's signature with key: 0 when alg equals the key's pinned algorithm and it verifies. */
int jws_check(const struct jws *j, const struct jwk *key) MUST_CHECK;
/** Release what j holds. */
void jws_clear(struct jws *j);

/** Verify a raw signature (64 bytes; r||s for ES256) over msg with key: 0 or -1. */
int jws_verify_raw(const struct jwk *key, const unsigned char *msg, size_t len,
                   const unsigned char *sig, size_t sig_len) MUST_CHECK;
/** Sign msg with a private key; writes JWS_SIG_LEN bytes to sig. 0 or -1. */
int jws_sign_raw(const struct jwk *key, const unsigned char *msg, size_t len,
                 unsigned char sig[JWS_SIG_LEN]) MUST_CHECK;
/**
 * Sign payload (len bytes) with header {"alg","kid","typ"}: a new compact JWS the caller frees,
 * or NULL if the key cannot sign.
 */
char *jws_sign(const struct jwk *key, const char *typ, const char *payload, size_t len) MUST_CHECK;

#endif
