/*
 * reader: reads of plain TCP sockets into a bufferevent's input, without FIONREAD.
 *
 * libevent's bufferevent asks the socket how much it holds (ioctl FIONREAD) before every read: a
 * system call per read, one per request on each side of the proxy. A connection attached here
 * keeps the bufferevent's reading disabled and reads with an event of its own instead, with the
 * bufferevent's semantics the rest of the gateway relies on: into the bufferevent's input, at most
 * up to a high watermark (reading pauses there and resumes when the input drains), a timeout
 * between reads, and the bufferevent's own callbacks, whichever are set at the time
 * (bufferevent_getcb), called for data and for EOF, errors and timeouts as the bufferevent would.
 * Unlike the bufferevent's, they are called at once, not deferred: the reader touches nothing
 * after calling one, which may free the connection. TLS connections are not attached (OpenSSL
 * reads records): every function here then drives the bufferevent itself.
 */
#ifndef GATEWAY_READER_H
#define GATEWAY_READER_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

/** Embedded in a connection, set up with reader_init. */
struct reader {
    struct bufferevent *bev;
    struct event *ev;             /* on the socket, while attached; NULL: the bufferevent reads */
    struct evbuffer_cb_entry *cb; /* on the input: resumes reading below high */
    bool on;                      /* reading wanted */
    bool timed;                   /* ev carries timeout */
    size_t high;                  /* stop reading at this much input; 0: no bound */
    struct timeval timeout;       /* between reads, when timed */
};

/** r drives bev's reading, through the bufferevent until attached. */
void reader_init(struct reader *r, struct bufferevent *bev);
/**
 * Read the socket here from now on (the bufferevent's fd must be set; plain TCP only). Reading
 * starts disabled and unbounded, without a timeout: set them again after.
 */
void reader_attach(struct reader *r);
/** Before the bufferevent is freed; harmless when never attached. */
void reader_detach(struct reader *r);
/** Read when data comes, or not. */
void reader_enable(struct reader *r);
void reader_disable(struct reader *r);
/** Read no further ahead than high bytes of input (0: no bound). */
void reader_set_high(struct reader *r, size_t high);
/** The timeouts between reads (rt) and of writes (wt); NULL: none. */
void reader_set_timeouts(struct reader *r, const struct timeval *rt, const struct timeval *wt);
/** The read event's priority, beside the bufferevent's (bufferevent_priority_set). */
void reader_set_priority(struct reader *r, int prio);

#endif
