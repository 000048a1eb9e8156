/*
 * conn: one client connection of the proxy listener, on a libevent bufferevent (plain or TLS).
 * It owns the transport and the HTTP/1.1 framing around requests (SPEC §5): the head deadline,
 * the idle timeout, the strict head parse (gateway/http_parse), answers to framing errors (then
 * the connection is closed and nothing more is read), keep-alive and pipelining (one request at a
 * time: the next head is parsed only once the current answer is queued, so answers go out in
 * order), the gateway-wide connection cap and the drain. What a request means is proxy.c's.
 *
 * A connection is in one of four states: waiting for a head (reading), busy with a request
 * (proxy.c reads the body and writes the answer through c->bev), closing (the last answer is being
 * flushed) or gone. proxy.c learns that the client left through proxy_client_gone().
 */
#ifndef GATEWAY_CONN_H
#define GATEWAY_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "gateway/flush.h"
#include "gateway/http_parse.h"
#include "gateway/reader.h"

struct worker;
struct request;

enum conn_state { CONN_WAIT_HEAD, CONN_BUSY, CONN_CLOSING };

struct conn {
    struct conn *prev, *next; /* the worker's list of open connections */
    struct worker *w;
    struct bufferevent *bev;
    struct flush_link fl; /* plain TCP: its output is written through (flush.h) */
    struct reader rd;     /* plain TCP: read without FIONREAD (reader.h) */
    struct event *timer;  /* head deadline or idle timeout */
    enum conn_state state;
    bool fresh;        /* no request yet: a silent connection is closed silently */
    bool head_started; /* bytes of the next head have arrived */
    size_t scanned;    /* input bytes already searched for a line end */
    void *req;         /* the request being served (proxy.c's or decide.c's), or NULL */
    bool decision;     /* a connection of the decision listener (SPEC §8): decide.c serves */
    char peer[64];     /* client address, no port */
    int peer_port;
    char tls_client[256]; /* client certificate subject (RFC 2253), "" if none */
    bool tls;
    int minor;      /* HTTP/1.<minor> of the request being served */
    bool flooding;  /* its client is over its denial budget: low priority (worker.h) */
    bool paused;    /* flooding: the next head is read when the timer fires */
    bool cut;       /* closing after an answer that was cut short: no lingering */
    bool lingering; /* closing: the answer is out, unread input is being eaten */
    size_t lingered;
};

/**
 * Take an accepted socket on w: wrap it (TLS when the listener has it) and wait for a head. A
 * connection of the decision listener (decision) has its heads served by decide.c, its own TLS
 * and its own count against max_connections.
 */
void conn_accept(struct worker *w, evutil_socket_t fd, const struct sockaddr *sa, int salen,
                 bool decision);

/**
 * The request is answered (the whole answer is in c->bev's output). With keep_alive the next
 * head is read (pipelined bytes already buffered are parsed at once); otherwise the connection
 * closes once the output is flushed.
 */
void conn_request_done(struct conn *c, bool keep_alive);
/**
 * Set (rt) or clear (NULL) the timeout between reads from c's client; the write timeout (a
 * client that reads nothing of an answer for 30 s is dropped) always stays.
 */
void conn_read_timeout(struct conn *c, const struct timeval *rt);
/** Read from c's client (again), or stop reading. */
void conn_read_enable(struct conn *c);
void conn_read_disable(struct conn *c);

/** Run c's events at low priority while its client floods (its last denial was summarised). */
void conn_set_flooding(struct conn *c, bool flooding);

/**
 * Answer a request that cannot go on with SPEC §2.2's JSON body (request_id, status from code)
 * plus extra header lines (already CRLF-terminated, or NULL) and finish it; closes afterwards
 * unless keep_alive. Returns the body's length (for the access log).
 */
size_t conn_reply_error(struct conn *c, int status, const char *code, const char *message,
                        const char *request_id, const char *extra_headers, bool keep_alive);

/**
 * End an answer that cannot be completed (the merchant failed mid-body): what is queued is sent,
 * then the connection closes at once, so the client sees a short body, never a false end.
 */
void conn_cut(struct conn *c);
/** Close every idle connection of w and mark the busy ones to close after their answer. */
void conn_drain_all(struct worker *w);
/** Free every connection of w (at shutdown, after its loop has stopped). */
void conn_free_all(struct worker *w);

/** Connections open across the gateway (for the cap and /metrics). */
extern _Atomic int64_t conn_open_count;
/** Connections of the decision listener, capped separately (SPEC §5). */
extern _Atomic int64_t conn_decision_open_count;

#endif
