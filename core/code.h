/*
 * code: the one enum of decision and error codes. Names are SPEC §2.2's codes (and the
 * wallet's of §3) verbatim; code_name() gives the wire name, code_status() the HTTP status.
 */
#ifndef CORE_CODE_H
#define CORE_CODE_H

#define CODE_LIST(X)                                                                               \
    X(OK, "ok", 200, "allowed")                                                                    \
    X(BAD_REQUEST, "bad_request", 400, "the HTTP request is malformed")                            \
    X(REQUEST_TIMEOUT, "request_timeout", 408, "the request head did not arrive in time")          \
    X(MANDATE_MISSING, "mandate_missing", 401, "an Authorization: Mandate header is required")     \
    X(MANDATE_MALFORMED, "mandate_malformed", 401, "the mandate is not a well-formed token")       \
    X(MANDATE_BAD_SIGNATURE, "mandate_bad_signature", 401,                                         \
      "the mandate's signature does not verify with its key")                                      \
    X(MANDATE_UNKNOWN_KEY, "mandate_unknown_key", 401,                                             \
      "no key is configured for the mandate's issuer and kid")                                     \
    X(MANDATE_EXPIRED, "mandate_expired", 401, "the mandate has expired")                          \
    X(MANDATE_NOT_YET_VALID, "mandate_not_yet_valid", 401, "the mandate is not valid yet")         \
    X(MANDATE_TTL_TOO_LONG, "mandate_ttl_too_long", 401,                                           \
      "the mandate's lifetime exceeds the maximum")                                                \
    X(MANDATE_WRONG_TYPE, "mandate_wrong_type", 401, "this token type is not accepted here")       \
    X(SIGNATURE_MISSING, "signature_missing", 401,                                                 \
      "this mandate needs an HTTP message signature by its agent's key")                           \
    X(SIGNATURE_INVALID, "signature_invalid", 401,                                                 \
      "the HTTP message signature does not verify or does not cover the request")                  \
    X(SIGNATURE_REPLAYED, "signature_replayed", 401,                                               \
      "this HTTP message signature was used before")                                               \
    X(PAYMENT_REQUIRED, "payment_required", 402, "this action needs a payment mandate and a cart") \
    X(MANDATE_WRONG_MERCHANT, "mandate_wrong_merchant", 403,                                       \
      "the mandate is for another merchant")                                                       \
    X(MANDATE_WRONG_ACTION, "mandate_wrong_action", 403, "the mandate is for another action")      \
    X(MANDATE_USED, "mandate_used", 403, "the mandate has been used up")                           \
    X(MANDATE_REVOKED, "mandate_revoked", 403,                                                     \
      "the mandate, its agent, principal or key has been revoked")                                 \
    X(CART_INVALID, "cart_invalid", 403, "the cart is not validly signed by the merchant")         \
    X(CART_EXPIRED, "cart_expired", 403, "the cart's price lock has expired")                      \
    X(CART_MISMATCH, "cart_mismatch", 403, "the cart does not match the payment mandate or route") \
    X(CART_USED, "cart_used", 403, "the cart has already been paid")                               \
    X(AMOUNT_MISMATCH, "amount_mismatch", 403, "the payment total differs from the cart total")    \
    X(SPEND_CAP_EXCEEDED, "spend_cap_exceeded", 403,                                               \
      "the principal's spend cap would be exceeded")                                               \
    X(TOOL_NOT_ALLOWED, "tool_not_allowed", 403, "this MCP tool or method is not allowed here")    \
    X(ROUTE_NOT_FOUND, "route_not_found", 404, "no route matches this method and path")            \
    X(BODY_TOO_LARGE, "body_too_large", 413, "the request body is too large")                      \
    X(HEADERS_TOO_LARGE, "headers_too_large", 431, "the request headers are too large")            \
    X(RATE_LIMITED, "rate_limited", 429, "the agent's rate limit is exceeded")                     \
    X(UPSTREAM_UNAVAILABLE, "upstream_unavailable", 502, "the merchant could not be reached")      \
    X(UNAVAILABLE, "unavailable", 503, "the gateway cannot take requests now")                     \
    X(STATE_UNAVAILABLE, "state_unavailable", 503,                                                 \
      "the shared state (PostgreSQL) cannot be reached")                                           \
    X(UPSTREAM_TIMEOUT, "upstream_timeout", 504, "the merchant did not answer in time")            \
    X(UNAUTHORIZED, "unauthorized", 401, "a valid bearer token is required")                       \
    X(POLICY_DENIED, "policy_denied", 403, "the principal's policy does not allow this")           \
    X(AGENT_REVOKED, "agent_revoked", 403, "the agent has been revoked")                           \
    X(OVER_MAX_PER_PAYMENT, "over_max_per_payment", 403,                                           \
      "the payment exceeds the per-payment maximum")                                               \
    X(NOT_FOUND, "not_found", 404, "not found")

enum code {
#define CODE_ENUM(name, str, status, msg) CODE_##name,
    CODE_LIST(CODE_ENUM)
#undef CODE_ENUM
        CODE__COUNT
};

/** The wire name of a code, e.g. "mandate_expired". */
const char *code_name(enum code c);
/** The HTTP status that carries a code. */
int code_status(enum code c);
/** A sentence for people, for the "message" of an error body. */
const char *code_message(enum code c);
/** The reason phrase of an HTTP status, e.g. "Not Found" ("Unknown" for one we never send). */
const char *code_reason(int status);

#endif
