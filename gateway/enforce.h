/*
 * enforce: the pure part of the decision (SPEC §2.1 steps 2–3 that need no shared state): from
 * the route, the Authorization and Mandate-Cart headers, the configuration and the clock to a
 * verified mandate or one denial code. No I/O, no locks, no globals: the same function can answer
 * for the proxy, the admin API, tests and benches. Revocation, uses and rate are state.c's.
 */
#ifndef GATEWAY_ENFORCE_H
#define GATEWAY_ENFORCE_H

#include <stdint.h>

#include "core/code.h"
#include "core/mandate.h"
#include "gateway/config.h"
#include "gateway/route.h"

struct verdict {
    enum code code;
    struct mandate m;  /* the Authorization mandate, when it parsed far enough */
    const char *token; /* borrowed from the header: the JWS text */
    size_t token_len;
};

/**
 * Check the request's mandate against route at time now. authorization and cart are the header
 * values or NULL. Returns v->code (CODE_OK when every check passes).
 */
enum code enforce(const struct config *conf, const struct route *route, const char *authorization,
                  const char *cart, int64_t now, struct verdict *v);

#endif
