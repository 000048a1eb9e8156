/*
 * policy: what a principal allows its agents (SPEC §3), as pure functions of the configuration
 * and the request: merchant and action allow-lists, ttl and uses bounds, the per-payment maximum,
 * a payment that alone exceeds the cap, and whether a human must approve. The cumulative cap is
 * the gateway's: only it knows what was spent.
 */
#ifndef WALLET_POLICY_H
#define WALLET_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "core/code.h"
#include "core/mandate.h"
#include "wallet/config.h"

#define POLICY_MAX_USES 1000

/** May p's agents act on (merchant, action)? */
bool policy_allows(const struct principal *p, const char *merchant, const char *action);
/**
 * An intent for (merchant, action, ttl_s, uses): CODE_OK or CODE_POLICY_DENIED with *why.
 */
enum code policy_intent(const struct wallet_config *w, const struct principal *p,
                        const char *merchant, const char *action, int64_t ttl_s, int64_t uses,
                        const char **why);
/**
 * A payment for a verified cart: CODE_OK, CODE_POLICY_DENIED, CODE_OVER_MAX_PER_PAYMENT or
 * CODE_SPEND_CAP_EXCEEDED, with *why. *needs_approval says whether a person must approve it.
 */
enum code policy_payment(const struct principal *p, const struct mandate *cart,
                         bool *needs_approval, const char **why);

#endif
