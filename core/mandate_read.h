/*
 * mandate_read: how mandate_verify() reads a token's header and claims, private to core/mandate.c
 * and core/mandate_tree.c. mandate.c reads them with core/jsonscan, in place; mandate_tree.c with
 * jansson trees, as every mandate was read before the scanner. Both go through the one
 * mandate_verify_with(), so the order of the checks and the codes are shared, and the
 * differential fuzz target can hold the two readers to the same results.
 */
#ifndef CORE_MANDATE_READ_H
#define CORE_MANDATE_READ_H

#include "core/jsonscan.h"
#include "core/jws.h"
#include "core/mandate.h"

/* Times are seconds after 1970 and before 2^40 (year 36812): every difference of two fits an
 * int64_t, so no time check can overflow, and 0 or a negative time is never accepted. */
#define MANDATE_TIME_MAX ((int64_t)1 << 40)

/* One token being read: its JWS and, as the reader keeps them, its claims. */
struct mandate_claims {
    struct jws jws;
    struct js_doc doc; /* the scanner's */
    json_t *tree;      /* the reference's */
};

struct mandate_reader {
    /* Decode tok into c->jws and check its payload: 0 when the token is well formed and the
     * payload a strict JSON object; c is then closed by close() whatever open() returned. */
    int (*open)(struct mandate_claims *c, const char *tok, size_t len, size_t max_len);
    /* The claims of m->typ into m (before the signature is checked): 0, or -1 when malformed. */
    int (*claims)(const struct mandate_claims *c, struct mandate *m);
    /* cnf, read only once the signature has verified: 0, or -1 when malformed. */
    int (*cnf)(const struct mandate_claims *c, struct mandate *m);
    /* A cart's items add up to total. */
    bool (*cart_sum_ok)(const struct mandate_claims *c, const struct money *total);
    void (*close)(struct mandate_claims *c);
};

/** mandate_verify() with reader r; sha, when not NULL, is SHA-256 of tok, not computed again. */
enum code mandate_verify_with(const struct mandate_reader *r, const char *tok, size_t len,
                              const unsigned char *sha, unsigned accept, const struct keyring *kr,
                              const struct mandate_limits *lim, int64_t now, struct mandate *out);

/** A jti of 16 to MANDATE_JTI_MAX characters of [A-Za-z0-9_-]. */
bool mandate_jti_ok(const char *s);
/** The key of a cnf.jwk object into m: its canonical text and thumbprint. 0, or -1. */
int mandate_cnf_key(const json_t *jwk, struct mandate *m) MUST_CHECK;

#endif
