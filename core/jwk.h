/*
 * jwk: signing keys. Public keys come from JWKS files (RFC 7517), private keys from PKCS#8 PEM.
 * Each key is parsed once into an EVP_PKEY and its algorithm is pinned at load: an EC P-256 key
 * is ES256 and an Ed25519 key is EdDSA, whatever a token's header claims later. Loaded keys are
 * read-only and safe to share between threads.
 */
#ifndef CORE_JWK_H
#define CORE_JWK_H

#include <stdatomic.h>
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

/*
 * A remote key set (`jwks_uri`, SPEC §7). One thread (the gateway's fetcher) installs sets; any
 * thread reads the current one. Every set installed stays alive until the ring is cleared (sets
 * change rarely), so a reader that loaded the pointer may use it for as long as it holds the ring.
 */
#define KEYRING_REMOTE_RETIRED 16 /* replaced sets a remote slot keeps alive for late readers */

struct jwks_remote_slot {
    char *uri;
    char *ca_file;              /* NULL: the system trust store */
    _Atomic(struct jwks *) cur; /* NULL until the first set is installed */
    struct jwks **old;          /* sets installed before cur: installer's thread only */
    size_t nold;
    _Atomic bool wanted;        /* a reader met an unknown kid since the fetcher last looked */
    void (*notify)(void *arg);  /* the fetcher's wake-up, any thread; set before notify_arg */
    _Atomic(void *) notify_arg; /* NULL: nobody is fetching (yet) */
};

/** Issuer id → key set, as configured: a local set (jwks) or a remote one (remote). */
struct keyring {
    struct keyring_entry {
        char *issuer;
        struct jwks *jwks;               /* a local set, or NULL for a remote one */
        struct jwks_remote_slot *remote; /* a remote set, or NULL */
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
/** A copy of set sharing its keys (reference counted by OpenSSL); NULL for NULL. */
struct jwks *jwks_dup(const struct jwks *set);
/** Do a and b hold the same kids with the same algorithms and public keys? */
bool jwks_equal(const struct jwks *a, const struct jwks *b);

/** Add issuer → set to the ring, taking ownership of set. */
void keyring_add(struct keyring *kr, const char *issuer, struct jwks *set);
/**
 * Add issuer → a remote set at uri (verified against ca_file, or the system store when NULL),
 * with no keys yet; returns its slot, owned by the ring.
 */
struct jwks_remote_slot *keyring_add_remote(struct keyring *kr, const char *issuer, const char *uri,
                                            const char *ca_file);
/**
 * Make set the current set of slot (taking ownership); the previous one stays alive until the
 * ring is cleared or KEYRING_REMOTE_RETIRED newer ones replaced it. Only one thread may install
 * into a slot; readers may run concurrently.
 */
void keyring_remote_install(struct jwks_remote_slot *slot, struct jwks *set);
/** The current set of slot (NULL before the first), safe from any thread. */
const struct jwks *keyring_remote_current(const struct jwks_remote_slot *slot);
/** The remote slot of issuer, or NULL when issuer is unknown or its set is local. */
struct jwks_remote_slot *keyring_remote_slot(const struct keyring *kr, const char *issuer);

/** What a key lookup that found nothing means for issuer (keyring_miss). */
enum keyring_miss {
    KEYRING_MISS_LOCAL,   /* unknown issuer, or a local set: the key does not exist */
    KEYRING_MISS_NO_KEYS, /* a remote set not fetched yet: the issuer cannot be checked now */
    KEYRING_MISS_ASKED,   /* a remote set without that kid: a refetch was asked of the fetcher */
};
/**
 * After keyring_find found no key for (issuer, kid): classify the miss and, for a remote set
 * that has keys, flag the slot and wake its fetcher (which rate-limits refetches). Any thread.
 */
enum keyring_miss keyring_miss(const struct keyring *kr, const char *issuer);

/**
 * The key for (issuer, kid), or NULL (any thread, also while a remote set is swapped). A miss in
 * a remote set that has keys also does what keyring_miss does: it asks for a refetch.
 */
const struct jwk *keyring_find(const struct keyring *kr, const char *issuer, const char *kid);
/** The key set of issuer (a remote one's current set), or NULL. */
const struct jwks *keyring_get(const struct keyring *kr, const char *issuer);
/** Free everything the ring holds, every set a remote slot ever had included (no reader may
 * remain; the ring itself is embedded). */
void keyring_clear(struct keyring *kr);

/** Generate a new private key of alg with kid. */
int jwk_generate(enum jwk_alg alg, const char *kid, struct jwk *out) MUST_CHECK;
/** Load a PKCS#8 PEM private key; the algorithm follows from the key type. */
int jwk_load_private(const char *path, const char *kid, struct jwk *out, char **err) MUST_CHECK;
/** Write k's private key as PKCS#8 PEM, created with mode 0600 (refuses to overwrite). */
int jwk_write_private(const struct jwk *k, const char *path, char **err) MUST_CHECK;
/** Write k's public key as SubjectPublicKeyInfo PEM. */
int jwk_write_public_pem(const struct jwk *k, const char *path, char **err) MUST_CHECK;

/**
 * The public keys of set as canonical JWKS text (audit evidence, SPEC §4): {"keys":[...]}, compact,
 * members sorted, keys ordered by kid, public members only (never d). NULL or empty: {"keys":[]}.
 * A new string the caller frees; the same keys give the same bytes, so their SHA-256 names the set.
 */
char *jwks_canonical_public(const struct jwks *set);

#endif
