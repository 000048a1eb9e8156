/*
 * code: the one enum of decision and error codes. Names are SPEC §2.2's codes (and the
 * wallet's of §3) verbatim; code_name() gives the wire name, code_status() the HTTP status.
 */
#ifndef CORE_CODE_H
#define CORE_CODE_H

#define CODE_LIST(X)                                                                               \
    X(OK, "ok", 200)                                                                               \
    X(BAD_REQUEST, "bad_request", 400)                                                             \
    X(MANDATE_MISSING, "mandate_missing", 401)                                                     \
    X(MANDATE_MALFORMED, "mandate_malformed", 401)                                                 \
    X(MANDATE_BAD_SIGNATURE, "mandate_bad_signature", 401)                                         \
    X(MANDATE_UNKNOWN_KEY, "mandate_unknown_key", 401)                                             \
    X(MANDATE_EXPIRED, "mandate_expired", 401)                                                     \
    X(MANDATE_NOT_YET_VALID, "mandate_not_yet_valid", 401)                                         \
    X(MANDATE_TTL_TOO_LONG, "mandate_ttl_too_long", 401)                                           \
    X(MANDATE_WRONG_TYPE, "mandate_wrong_type", 401)                                               \
    X(PAYMENT_REQUIRED, "payment_required", 402)                                                   \
    X(MANDATE_WRONG_MERCHANT, "mandate_wrong_merchant", 403)                                       \
    X(MANDATE_WRONG_ACTION, "mandate_wrong_action", 403)                                           \
    X(MANDATE_USED, "mandate_used", 403)                                                           \
    X(MANDATE_REVOKED, "mandate_revoked", 403)                                                     \
    X(CART_INVALID, "cart_invalid", 403)                                                           \
    X(CART_EXPIRED, "cart_expired", 403)                                                           \
    X(CART_MISMATCH, "cart_mismatch", 403)                                                         \
    X(CART_USED, "cart_used", 403)                                                                 \
    X(AMOUNT_MISMATCH, "amount_mismatch", 403)                                                     \
    X(SPEND_CAP_EXCEEDED, "spend_cap_exceeded", 403)                                               \
    X(ROUTE_NOT_FOUND, "route_not_found", 404)                                                     \
    X(BODY_TOO_LARGE, "body_too_large", 413)                                                       \
    X(HEADERS_TOO_LARGE, "headers_too_large", 431)                                                 \
    X(RATE_LIMITED, "rate_limited", 429)                                                           \
    X(UPSTREAM_UNAVAILABLE, "upstream_unavailable", 502)                                           \
    X(UNAVAILABLE, "unavailable", 503)                                                             \
    X(UPSTREAM_TIMEOUT, "upstream_timeout", 504)                                                   \
    X(UNAUTHORIZED, "unauthorized", 401)                                                           \
    X(POLICY_DENIED, "policy_denied", 403)                                                         \
    X(AGENT_REVOKED, "agent_revoked", 403)                                                         \
    X(OVER_MAX_PER_PAYMENT, "over_max_per_payment", 403)                                           \
    X(NOT_FOUND, "not_found", 404)

enum code {
#define CODE_ENUM(name, str, status) CODE_##name,
    CODE_LIST(CODE_ENUM)
#undef CODE_ENUM
        CODE__COUNT
};

/** The wire name of a code, e.g. "mandate_expired". */
const char *code_name(enum code c);
/** The HTTP status that carries a code. */
int code_status(enum code c);

#endif
