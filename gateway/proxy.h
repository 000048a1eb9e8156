/*
 * proxy: one request's way through a worker (DESIGN.md, SPEC §2.1 and §5): route, enforce,
 * state, audit commit, then (only then) the body is read and streamed to the merchant, the answer
 * streamed back, and the outcome written. Every denial is answered with SPEC §2.2's JSON body and
 * written to the audit log (framing errors and floods: counted, summarised); an allow is forwarded
 * only after its entry and the jti it consumed are durable. conn.c hands it complete heads and
 * tells it about the client's socket; upstream.c lends it merchant connections.
 */
#ifndef GATEWAY_PROXY_H
#define GATEWAY_PROXY_H

#include <stddef.h>

#include "core/code.h"
#include "gateway/http_parse.h"

struct worker;
struct conn;
struct request;

/** A head of head_len bytes is complete at the start of c's input: serve it. */
void proxy_begin(struct conn *c, size_t head_len);
/** c's input has new bytes while r is served (the body, or the next pipelined head). */
void proxy_client_readable(struct request *r);
/** c's output was flushed while r is served (backpressure: resume reading the merchant). */
void proxy_client_drained(struct request *r);
/** The client left: cancel r's upstream side and finish it; r must not use its conn again. */
void proxy_client_gone(struct request *r);

/** A parse target with w's scratch header array sized for lim (conn.c's head parses). */
struct hp_request *proxy_scratch_request(struct worker *w, const struct hp_limits *lim);
/** A new request id (32 hex digits), unique across workers and restarts. */
void proxy_new_request_id(struct worker *w, char id[33]);
/** Count a framing or size error answered by conn.c (metrics and the access log, no audit). */
void proxy_count_framing(struct conn *c, enum code code, const char *request_id);

#endif
