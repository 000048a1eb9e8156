/*
 * upstream: per-worker keep-alive pools of evhttp client connections, one pool per upstream
 * host:port. A request takes an idle connection (or opens one) and gives it back when its answer
 * is complete; evhttp keeps the socket open between requests and notices when the merchant closes
 * an idle one. Pools belong to one worker thread and are never shared.
 */
#ifndef GATEWAY_UPSTREAM_H
#define GATEWAY_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>

struct upconn {
    struct evhttp_connection *evcon;
    bool busy;
    bool reused; /* has carried a request before: it may have been closed under us */
};

struct upstream_pools;

/** New empty pools for a worker's base; connect/read timeouts of timeout_ms. */
struct upstream_pools *upstream_pools_new(struct event_base *base);
/** Close every connection; NULL is a no-op. */
void upstream_pools_free(struct upstream_pools *p);
/**
 * An idle connection to host:port (fresh: always a new one), marked busy, with timeout_ms for
 * connecting and for each read. Never NULL.
 */
struct upconn *upstream_acquire(struct upstream_pools *p, const char *host, int port,
                                int64_t timeout_ms, bool fresh);
/** Give c back; keep=false after an error (evhttp has reset it: the next use reconnects). */
void upstream_release(struct upstream_pools *p, struct upconn *c, bool keep);

#endif
