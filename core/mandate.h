/*
 * mandate: the three token types of SPEC §1 (intent, cart, payment). mandate_verify() turns a
 * compact JWS into checked claims or into exactly one code of SPEC §1's table, in table order:
 * malformed, wrong type, unknown key, bad signature, expired, not yet valid, ttl too long. The
 * signature is verified before any claim is used for a decision. It knows nothing of routes,
 * revocations or spend: those are the gateway's.
 */
#ifndef CORE_MANDATE_H
#define CORE_MANDATE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "core/code.h"
#include "core/jwk.h"
#include "core/money.h"
#include "core/util.h"

/* Bit flags, so a caller can accept more than one type. */
enum mandate_typ { MANDATE_INTENT = 1, MANDATE_CART = 2, MANDATE_PAYMENT = 4 };
enum cap_period { CAP_DAY, CAP_WEEK, CAP_MONTH, CAP_TOTAL };

#define MANDATE_ID_MAX    128
#define MANDATE_CNF_MAX   384 /* bytes of a cnf.jwk as compact JSON (a P-256 key takes ~120) */
#define MANDATE_JTI_MAX   64
#define MANDATE_MAX_ITEMS 100

struct mandate_limits {
    size_t max_bytes;     /* limits.max_mandate_bytes */
    int64_t clock_skew_s; /* limits.clock_skew_s */
    int64_t max_ttl_s;    /* limits.max_ttl_s */
};

struct mandate {
    enum mandate_typ typ; /* set as soon as the header is read, even on later errors */
    char kid[JWK_KID_MAX + 1];
    char iss[MANDATE_ID_MAX + 1];
    char sub[MANDATE_ID_MAX + 1];   /* principal */
    char agent[MANDATE_ID_MAX + 1]; /* act.sub; empty for carts */
    char aud[MANDATE_ID_MAX + 1];   /* merchant; empty for carts */
    char action[MANDATE_ID_MAX + 1];
    char jti[MANDATE_JTI_MAX + 1];
    char intent[MANDATE_JTI_MAX + 1]; /* cart: the intent it was quoted under, or empty */
    char cart_hash[44];               /* payment: base64url SHA-256 of the cart JWS */
    int64_t iat, exp, nbf;            /* nbf is 0 when absent */
    int64_t uses;                     /* intent: default 1; others 1 */
    bool has_max_amount;
    struct money max_amount; /* intent, optional */
    struct money total;      /* cart, payment */
    struct money cap;        /* payment */
    enum cap_period cap_period;
    unsigned char sha256[32]; /* of the token text */
    /* SPEC §7 proof of possession: the agent's public key (RFC 7800 cnf.jwk), as canonical
     * compact JSON, and its RFC 7638 thumbprint (the keyid a request signature must name). */
    bool has_cnf;
    char cnf_jwk[MANDATE_CNF_MAX + 1];
    char cnf_thumb[44];
};

/** "intent-mandate+jwt" etc. */
const char *mandate_typ_name(enum mandate_typ t);
/** "day", "week", "month", "total". */
const char *cap_period_name(enum cap_period p);
/** Parse a cap period name; -1 if unknown. */
int cap_period_parse(const char *s, enum cap_period *out) MUST_CHECK;

#define CAP_KEY_MAX (2 * MANDATE_ID_MAX + 32)

/** The period a moment falls in: "d2026-11-22", "w2026-11-16" (its Monday), "m2026-11", "total". */
void cap_period_at(enum cap_period p, int64_t now_s, char out[16]);
/**
 * Where a payment counts: "issuer|principal|currency|period at now_s". The gateway's ledger and
 * mandate-audit replay use the same keys.
 */
void cap_key(const char *iss, const char *principal, const struct money *cap, enum cap_period p,
             int64_t now_s, char out[CAP_KEY_MAX]);
/**
 * When the period of a cap_key() key ends, in Unix seconds: INT64_MAX for "total" and for a key
 * that is not cap_key()'s (it is then never considered over).
 */
int64_t cap_key_end(const char *key);

/**
 * Verify tok (len bytes) as one of the types in accept, with keys from kr found by (iss, kid),
 * at time now. Returns CODE_OK and fills out, or the first applicable code of SPEC §1.
 * out->typ is valid whenever the return is not CODE_MANDATE_MALFORMED; the other fields only
 * once the signature has verified (the time checks may still fail), and are zeroed otherwise, so
 * that nothing unsigned is ever taken for a claim; with CODE_MANDATE_UNKNOWN_KEY out->iss names
 * the (unverified) issuer whose key set had no such kid, to look that key set up again.
 */
enum code mandate_verify(const char *tok, size_t len, unsigned accept, const struct keyring *kr,
                         const struct mandate_limits *lim, int64_t now, struct mandate *out);
/**
 * mandate_verify() for a caller that has already hashed tok (a cache key): sha is SHA-256 of the
 * len bytes of tok and becomes out->sha256, so the token is hashed once per request.
 */
enum code mandate_verify_hashed(const char *tok, size_t len, const unsigned char sha[32],
                                unsigned accept, const struct keyring *kr,
                                const struct mandate_limits *lim, int64_t now, struct mandate *out);
/**
 * mandate_verify() with the header and claims read through jansson trees, as before the scanner
 * (core/mandate_tree.c): the reference that tests and tests/fuzz/fuzz_claims_diff.c hold
 * mandate_verify() to, code for code and field for field. Not for the request path.
 */
enum code mandate_verify_tree(const char *tok, size_t len, unsigned accept,
                              const struct keyring *kr, const struct mandate_limits *lim,
                              int64_t now, struct mandate *out);

/**
 * The time checks alone (expired, not yet valid, ttl too long) of an already verified mandate at
 * now: for a caller that cached a verification.
 */
enum code mandate_check_time(const struct mandate *m, const struct mandate_limits *lim,
                             int64_t now);

/** Sign claims as a mandate of typ with key: a new compact JWS, or NULL. */
char *mandate_sign(const struct jwk *key, enum mandate_typ typ, const json_t *claims) MUST_CHECK;

/** base64url(SHA-256(tok)) into out (44 bytes), as a payment mandate's `cart` claim. */
void mandate_cart_hash(const char *tok, size_t len, char out[44]);
/**
 * base64url of m->sha256 into out (44 bytes): for a cart that verified, mandate_cart_hash() of
 * its token without hashing the token a second time.
 */
void mandate_hash_b64(const struct mandate *m, char out[44]);

/** "kid=<kid> sha=<first 12 hex of SHA-256>" for logs: a token is never logged whole. */
void mandate_ref(const struct mandate *m, char *buf, size_t n);

#endif
