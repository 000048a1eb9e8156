/*
 * decide: the decision listener (SPEC §8), for proxies and policy clients that do not send their
 * traffic through us. Two surfaces on one listener, both on proxy.c's decision core (the same
 * routing, mandate checks, proof of possession, atomic admission and durable audit entry as a
 * proxied request; only the answer differs):
 *
 *  - OpenID AuthZEN 1.0 Access Evaluation: POST /access/v1/evaluation and /access/v1/evaluations,
 *    behind the listener's bearer token; JSON in, {"decision", "context"} out;
 *  - forward-auth (nginx auth_request, Traefik ForwardAuth, Envoy ext_authz HTTP, Caddy
 *    forward_auth): any request to /forward-auth or below it describes the original request in
 *    its headers (or, for Envoy, in its path); 200 with the Mandate-* headers to pass upstream, or
 *    the §2.2 denial.
 *
 * An allowed priced decision's spend is committed at once: no outcome will be reported.
 * conn.c hands complete heads of the listener's connections to decide_begin().
 */
#ifndef GATEWAY_DECIDE_H
#define GATEWAY_DECIDE_H

#include <stddef.h>

struct conn;
struct decide_req;

/* The most evaluations one /access/v1/evaluations request may hold. */
#define DECIDE_MAX_EVALUATIONS 100

/** A head of head_len bytes is complete at buf, the start of c's input, and parsed into the
 * worker's scratch request (a decision connection): serve it. */
void decide_begin(struct conn *c, const char *buf, size_t head_len);
/** c's input has new bytes while q is served (its body). */
void decide_client_readable(struct decide_req *q);
/** The client left: q forgets its connection and ends once its decisions are made. */
void decide_client_gone(struct decide_req *q);

#endif
