/*
 * upstream: per-worker keep-alive pools of bufferevent connections to merchants (plain or TLS),
 * one pool per upstream address. A request takes an idle connection (or opens one) and gives it
 * back when its answer was read completely and the merchant keeps it open. An idle connection is
 * watched: anything it says or a close makes the pool drop it, so a request is never written to a
 * connection the merchant already closed (that it could not be retried safely, SPEC §5). What goes
 * over a connection is proxy.c's; pools belong to one worker thread and are never shared.
 */
#ifndef GATEWAY_UPSTREAM_H
#define GATEWAY_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "gateway/flush.h"
#include "gateway/reader.h"

struct merchant;
struct upstream_pool;

struct upconn {
    struct upconn *next; /* the pool's idle list */
    struct upstream_pool *pool;
    struct bufferevent *bev;
    struct flush_link fl; /* plain TCP: its output is written through (flush.h) */
    struct reader rd;     /* its reading: enable and disable it here, not on bev */
    bool reused;          /* has carried a request before */
    bool plain;           /* no TLS: written through and read without FIONREAD once pooled */
};

struct upstream_pools;

/** New empty pools for a worker's base. */
struct upstream_pools *upstream_pools_new(struct event_base *base, struct flusher *fl);
/** Close every idle connection and free; NULL is a no-op. */
void upstream_pools_free(struct upstream_pools *p);
/**
 * A connection to m's upstream for one request: an idle one of the pool (fresh: always a new
 * one, connecting). Its callbacks are set to cb*(…, arg), reads enabled, and timeout_ms bounds
 * connecting and every read and write. NULL if no connection object can be made (TLS set-up).
 */
struct upconn *upstream_acquire(struct upstream_pools *p, const struct merchant *m,
                                int64_t timeout_ms, bool fresh, bufferevent_data_cb readcb,
                                bufferevent_data_cb writecb, bufferevent_event_cb eventcb,
                                void *arg);
/**
 * Give c back after a request: keep=true puts it in its pool's idle list (the answer was read
 * whole and the merchant keeps the connection open), keep=false closes it.
 */
void upstream_release(struct upconn *c, bool keep);

#endif
