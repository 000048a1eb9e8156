/*
 * proxy: one request's way through a worker (DESIGN.md): HTTP checks, route, enforce, state,
 * audit commit, forward, stream the answer back, outcome. Every denial is answered with SPEC
 * §2.2's JSON body and written to the audit log; an allow is forwarded only after its entry and
 * the jti it consumed are durable.
 */
#ifndef GATEWAY_PROXY_H
#define GATEWAY_PROXY_H

struct worker;

/** Install the request handler and HTTP limits on w's evhttp. */
void proxy_setup(struct worker *w);

#endif
