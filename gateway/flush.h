/*
 * flush: write-through of plain TCP connections' output, without EPOLLOUT churn.
 *
 * A bufferevent with writing enabled registers EPOLLOUT when its output gets data and removes it
 * once the output is written: two epoll_ctl per answer and per forwarded request, four per proxied
 * request, a quarter of the gateway's system calls. A connection attached here keeps writing
 * disabled instead: what is added to its output is written (one writev) by the worker's flusher
 * at the end of the loop pass, when everything the pass had to say is there, and the
 * bufferevent's write callback is called as the bufferevent would have. Only when the socket does
 * not take everything (a slow reader, a connection still connecting, an error) is writing
 * enabled: the bufferevent then writes the rest, keeps its write timeout and reports errors as
 * before, and its write callback hands the connection back (flush_drained) once the output is
 * empty. TLS connections are not attached (their bytes go through OpenSSL's records).
 */
#ifndef GATEWAY_FLUSH_H
#define GATEWAY_FLUSH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

struct flusher;

/** Counted by every worker's flusher. */
struct flush_stats {
    _Atomic uint64_t through; /* outputs the socket took whole */
    _Atomic uint64_t backlog; /* outputs it did not: the bufferevent wrote the rest */
};

/** Embedded in a connection; zeroed means not attached. */
struct flush_link {
    struct flusher *fl;
    struct bufferevent *bev;
    struct evbuffer_cb_entry *cb;
    struct flush_link *prev, *next; /* in fl's pending list while pending */
    bool pending;
    bool armed; /* writing enabled: the bufferevent writes, as without write-through */
};

/** A worker's flusher, on its loop, counting into stats. */
struct flusher *flusher_new(struct event_base *base, struct flush_stats *stats);
/** Free; every link must have been detached. */
void flusher_free(struct flusher *fl);
/**
 * Write bev's output through fl from now on: call before anything is written and before
 * writing is enabled (enable EV_READ only; flush_enable_write is for when writing is wanted).
 */
void flush_attach(struct flush_link *l, struct flusher *fl, struct bufferevent *bev);
/** Before the bufferevent is freed. A link never attached is ignored. */
void flush_detach(struct flush_link *l);
/** From the bufferevent's write callback: when writing was enabled and the output is empty,
 * disable it again and write through. */
void flush_drained(struct flush_link *l);
/** The events to enable for writing: none when attached and not armed, else EV_WRITE. */
short flush_write_events(const struct flush_link *l);

#endif
