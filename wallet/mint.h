/*
 * mint: signing intent and payment mandates (SPEC §1.1, §1.3) with the wallet's cached key:
 * fresh random jtis, iat/exp from the clock, and for payments the cart's hash and total and the
 * principal's cap; both carry cnf.jwk (RFC 7800, SPEC §7) when the agent's entry has a jwk.
 * Policy has been checked before any of these is called.
 */
#ifndef WALLET_MINT_H
#define WALLET_MINT_H

#include <stdint.h>

#include "core/mandate.h"
#include "core/money.h"
#include "wallet/config.h"

struct minted {
    char *mandate; /* the JWS; caller frees */
    char jti[MANDATE_JTI_MAX + 1];
    int64_t expires_at;
};

/** An intent mandate for agent a; max_amount may be NULL. 0 or -1 (the key cannot sign). */
int mint_intent(const struct wallet_config *w, const struct agent *a, const char *merchant,
                const char *action, int64_t ttl_s, int64_t uses, const struct money *max_amount,
                int64_t now, struct minted *out) MUST_CHECK;
/** A payment mandate for agent a over the verified cart (its JWS text cart_jws). */
int mint_payment(const struct wallet_config *w, const struct agent *a, const struct mandate *cart,
                 const char *cart_jws, int64_t now, struct minted *out) MUST_CHECK;

#endif
