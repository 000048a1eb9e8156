/*
 * jwk: signing keys. Public keys come from JWKS files (RFC 7517), private keys from PKCS#8 PEM.
 * Each key is parsed once into an EVP_PKEY and its algorithm is pinned at load: an EC P-256 key
 * is ES256 and an Ed25519 key is EdDSA, whatever a token's header claims later. Loaded keys are
 * read-only and safe to share between threads.
 */
#ifndef CORE_JWK_H
#define CORE_JWK_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "core/util.h"

enum jwk_alg { JWK_ES256, JWK_EDDSA };

#define JWK_KID_MAX 64

struct jwk {
    char kid[JWK_KID_MAX + 1];
    enum jwk_alg alg;
    EVP_PKEY *pkey; /* owned */
};

/** A key set: the keys of one issuer (a wallet or a merchant). */
struct jwks {
    struct jwk *keys;
    size_t n;
};

/** Issuer id → key set, as configured. */
struct keyring {
    struct keyring_entry {
        char *issuer;
        struct jwks *jwks;
    } * v;
    size_t n;
};

/** "ES256" or "EdDSA". */
const char *jwk_alg_name(enum jwk_alg alg);
/** Parse "ES256"/"EdDSA"; -1 for anything else. */
int jwk_alg_parse(const char *s, enum jwk_alg *out) MUST_CHECK;

/**
 * Parse one public JWK object into out (EC P-256 or OKP Ed25519, point validated).
 * On failure returns -1 and sets *err to a message naming the member (caller frees).
 */
int jwk_from_json(const json_t *obj, struct jwk *out, char **err) MUST_CHECK;
/** The public JWK of k as a new JSON object ({"kty",...,"kid","alg","use"}). */
json_t *jwk_to_json(const struct jwk *k);
/** Release the key material of k (embedded object; k itself is not freed). */
void jwk_clear(struct jwk *k);

/** Parse a JWKS document; NULL with *err naming the JSON path, e.g. "keys[1].crv: ...". */
struct jwks *jwks_from_json(const json_t *doc, char **err) MUST_CHECK;
/** Load a JWKS file; errors are prefixed with the file name. */
struct jwks *jwks_load_file(const char *path, char **err) MUST_CHECK;
/** The key with this kid, or NULL. */
const struct jwk *jwks_find(const struct jwks *set, const char *kid);
/** The whole set as a new JWKS JSON document. */
json_t *jwks_to_json(const struct jwks *set);
/** Free a key set; NULL is a no-op. */
void jwks_free(struct jwks *set);

/** Add issuer → set to the ring, taking ownership of set. */
void keyring_add(struct keyring *kr, const char *issuer, struct jwks *set);
/** The key for (issuer, kid), or NULL. */
const struct jwk *keyring_find(const struct keyring *kr, const char *issuer, const char *kid);
/** The key set of issuer, or NULL. */
const struct jwks *keyring_get(const struct keyring *kr, const char *issuer);
/** Free everything the ring holds (the ring itself is embedded). */
void keyring_clear(struct keyring *kr);

/** Generate a new private key of alg with kid. */
int jwk_generate(enum jwk_alg alg, const char *kid, struct jwk *out) MUST_CHECK;
/** Load a PKCS#8 PEM private key; the algorithm follows from the key type. */
int jwk_load_private(const char *path, const char *kid, struct jwk *out, char **err) MUST_CHECK;
/** Write k's private key as PKCS#8 PEM, created with mode 0600 (refuses to overwrite). */
int jwk_write_private(const struct jwk *k, const char *path, char **err) MUST_CHECK;
/** Write k's public key as SubjectPublicKeyInfo PEM. */
int jwk_write_public_pem(const struct jwk *k, const char *path, char **err) MUST_CHECK;

#endif
