/*
 * policy: the wallet's allow-lists and amount rules.
 */
#include "wallet/policy.h"

#include <string.h>

bool policy_allows(const struct principal *p, const char *merchant, const char *action)
{
    for (size_t i = 0; i < p->nallow; i++) {
        if (strcmp(p->allow[i].merchant, merchant) != 0)
            continue;
        for (size_t j = 0; j < p->allow[i].nactions; j++)
            if (strcmp(p->allow[i].actions[j], action) == 0)
                return true;
    }
    return false;
}

enum code policy_intent(const struct wallet_config *w, const struct principal *p,
                        const char *merchant, const char *action, int64_t ttl_s, int64_t uses,
                        const char **why)
{
    if (!policy_allows(p, merchant, action))
        *why = "the principal does not allow this merchant and action";
    else if (ttl_s < 1 || ttl_s > w->max_ttl_s)
        *why = "ttl_s is outside 1..max_ttl_s";
    else if (uses < 1 || uses > POLICY_MAX_USES)
        *why = "uses is outside 1..1000";
    else
        return CODE_OK;
    return CODE_POLICY_DENIED;
}

enum code policy_payment(const struct principal *p, const struct mandate *cart,
                         bool *needs_approval, const char **why)
{
    *needs_approval = false;
    const struct money *t = &cart->total;
    if (!policy_allows(p, cart->iss, cart->action)) {
        *why = "the principal does not allow this merchant and action";
        return CODE_POLICY_DENIED;
    }
    if (strcmp(t->currency, p->spend_cap.currency) != 0) {
        *why = "the cart is in another currency than the principal's cap";
        return CODE_POLICY_DENIED;
    }
    if (p->has_max_per_payment && t->value > p->max_per_payment.value) {
        *why = "the total is over the principal's per-payment maximum";
        return CODE_OVER_MAX_PER_PAYMENT;
    }
    if (t->value > p->spend_cap.value) {
        *why = "the total alone is over the principal's spend cap";
        return CODE_SPEND_CAP_EXCEEDED;
    }
    *needs_approval = p->has_approval_above && t->value > p->approval_above.value;
    return CODE_OK;
}
