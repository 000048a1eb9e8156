/*
 * httpguard: the wallet's evhttp server with what libevent 2.1's evhttp lacks (issue 10): a cap on
 * open connections and a deadline for the whole request. evhttp's own timeout restarts at every
 * read, so a client sending a byte every few seconds kept a connection forever, and nothing bounded
 * how many connections it held.
 *
 * - max_connections: at the cap the listener stops accepting; new connections wait in the
 *   kernel's backlog and are served as soon as one closes (the wallet's agents are its own: they
 *   wait rather than fail). accept() failing for lack of descriptors pauses the listener briefly,
 *   logged at most once a second, instead of spinning.
 * - header_timeout_ms: from accept, and again from the end of each answer, the next request must
 *   have arrived whole within it. evhttp hands a request over only once its body is read, so the
 *   deadline covers the body too (64 KiB at most at the wallet). A connection that sent part of a
 *   request gets 408 request_timeout and is closed; one that sent nothing is closed silently.
 *
 * It works through evhttp's public API: each connection's bufferevent is made here (bevcb), and
 * evhttp's connection object is taken from that bufferevent's callback argument once evhttp has
 * set it up (the same turn of the loop, before any of its input is read).
 */
#ifndef WALLET_HTTPGUARD_H
#define WALLET_HTTPGUARD_H

#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>

struct httpguard_limits {
    int64_t max_connections;
    int64_t header_timeout_ms;
};

struct httpguard;

/** A new evhttp server on base under lim. */
struct httpguard *httpguard_new(struct event_base *base, const struct httpguard_limits *lim);
/** Its evhttp, for the caller's settings (sizes, timeout, methods); not to be freed. */
struct evhttp *httpguard_http(struct httpguard *g);
/** Every request goes to cb (use this, not evhttp_set_gencb: the guard must see each request). */
void httpguard_set_gencb(struct httpguard *g, void (*cb)(struct evhttp_request *, void *),
                         void *arg);
/** Listen on host:port; 0 or -1. */
int httpguard_bind(struct httpguard *g, const char *host, int port);
/** Close the listener and every connection, then free; NULL is a no-op. */
void httpguard_free(struct httpguard *g);

#endif
