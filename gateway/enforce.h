/*
 * enforce: the pure part of the decision (SPEC §2.1 steps 2–3 that need no shared state): from
 * the route, the Authorization and Mandate-Cart headers, the configuration and the clock to a
 * verified mandate or one denial code. No I/O, no locks, no globals: the same function can answer
 * for the proxy, the admin API, tests and benches. Revocation, uses and rate are state.c's.
 */
#ifndef GATEWAY_ENFORCE_H
#define GATEWAY_ENFORCE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/code.h"
#include "core/mandate.h"
#include "gateway/config.h"
#include "gateway/route.h"

/*
 * A small direct-mapped cache of verified mandates by SHA-256 of the token, so that the calls of
 * a `uses > 1` mandate cost a hash, not a signature check (the time checks are redone every
 * time). One per worker, no locking; cleared whenever the configuration (and so the keys) change.
 */
#define VCACHE_SLOTS 1024
struct vcache {
    struct vcache_slot {
        unsigned char key[32];
        bool used;
        struct mandate m;
    } v[VCACHE_SLOTS];
};

struct verdict {
    enum code code;
    struct mandate m;  /* the Authorization mandate, when it parsed far enough */
    const char *token; /* borrowed from the header: the JWS text */
    size_t token_len;
    bool has_cart;          /* priced routes, once the cart verified */
    struct mandate cart;    /* the Mandate-Cart mandate */
    const char *cart_token; /* borrowed from the header */
    size_t cart_len;
};

/**
 * Check the request's mandate against route at time now. authorization and cart are the header
 * values or NULL; cache may be NULL. Returns v->code (CODE_OK when every check passes).
 */
enum code enforce(const struct config *conf, const struct route *route, const char *authorization,
                  const char *cart, int64_t now, struct vcache *cache, struct verdict *v);

#endif
