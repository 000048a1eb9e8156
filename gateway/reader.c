/*
 * reader: reads of plain TCP sockets into a bufferevent's input, without FIONREAD.
 */
#include "gateway/reader.h"

#include <errno.h>
#include <unistd.h>

#include <event2/buffer.h>

#define READ_CHUNK 16384 /* at most this much per read, as the bufferevent's default */

/* Pending exactly when reading is wanted and the input is under its bound. */
static void schedule(struct reader *r)
{
    size_t len = evbuffer_get_length(bufferevent_get_input(r->bev));
    if (r->on && !(r->high && len >= r->high))
        event_add(r->ev, r->timed ? &r->timeout : NULL);
    else
        event_del(r->ev);
}

/* Report what ended reading to the bufferevent's event callback, as the bufferevent would. */
static void report(struct reader *r, short what)
{
    bufferevent_event_cb eventcb;
    void *arg;
    r->on = false;
    event_del(r->ev);
    bufferevent_getcb(r->bev, NULL, NULL, &eventcb, &arg);
    if (eventcb)
        eventcb(r->bev, BEV_EVENT_READING | what, arg); /* may free r */
}

/*
 * Read at most want bytes of fd into in: the count, 0 at EOF, -1 with *err set. Read on the stack
 * and copied: reserving the space in the input would allocate READ_CHUNK bytes for every answer
 * of a few hundred.
 */
static ssize_t read_into(struct evbuffer *in, evutil_socket_t fd, size_t want, int *err)
{
    char buf[READ_CHUNK];
    ssize_t n = read(fd, buf, want);
    if (n < 0) {
        *err = errno;
        return -1;
    }
    evbuffer_unfreeze(in, 0); /* the bufferevent lets only itself add to its input */
    int rc = evbuffer_add(in, buf, (size_t)n);
    evbuffer_freeze(in, 0);
    if (rc != 0) {
        *err = ENOMEM;
        return -1;
    }
    return n;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct reader *r = arg;
    if (what & EV_TIMEOUT) {
        report(r, BEV_EVENT_TIMEOUT);
        return;
    }
    struct evbuffer *in = bufferevent_get_input(r->bev);
    size_t len = evbuffer_get_length(in), want = READ_CHUNK;
    if (r->high)
        want = len >= r->high ? 0 : r->high - len < want ? r->high - len : want;
    if (want == 0) {
        event_del(r->ev);
        return;
    }
    int err = 0;
    ssize_t n = read_into(in, fd, want, &err);
    if (n < 0 && (err == EAGAIN || err == EINTR))
        return;
    if (n <= 0) {
        report(r, n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR);
        return;
    }
    if (r->high && evbuffer_get_length(in) >= r->high)
        event_del(r->ev); /* level-triggered: not again until the input drains */
    bufferevent_data_cb readcb;
    void *cbarg;
    bufferevent_getcb(r->bev, &readcb, NULL, NULL, &cbarg);
    if (readcb)
        readcb(r->bev, cbarg); /* may free r */
}

/* The input drained (a head or body taken): read again if reading paused at the bound. */
static void on_input_drained(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct reader *r = arg;
    if (info->n_deleted && r->on && r->high && evbuffer_get_length(buf) < r->high &&
        !event_pending(r->ev, EV_READ, NULL))
        schedule(r);
}

void reader_init(struct reader *r, struct bufferevent *bev)
{
    *r = (struct reader){.bev = bev};
}

void reader_attach(struct reader *r)
{
    bufferevent_disable(r->bev, EV_READ);
    r->ev = event_new(bufferevent_get_base(r->bev), bufferevent_getfd(r->bev), EV_READ | EV_PERSIST,
                      on_readable, r);
    r->cb = evbuffer_add_cb(bufferevent_get_input(r->bev), on_input_drained, r);
    r->on = r->timed = false;
    r->high = 0;
}

void reader_detach(struct reader *r)
{
    if (!r->ev)
        return;
    event_free(r->ev);
    evbuffer_remove_cb_entry(bufferevent_get_input(r->bev), r->cb);
    r->ev = NULL;
}

void reader_enable(struct reader *r)
{
    if (!r->ev) {
        bufferevent_enable(r->bev, EV_READ);
        return;
    }
    r->on = true;
    schedule(r);
}

void reader_disable(struct reader *r)
{
    if (!r->ev) {
        bufferevent_disable(r->bev, EV_READ);
        return;
    }
    r->on = false;
    event_del(r->ev);
}

void reader_set_high(struct reader *r, size_t high)
{
    if (!r->ev) {
        bufferevent_setwatermark(r->bev, EV_READ, 0, high);
        return;
    }
    r->high = high;
    if (r->on)
        schedule(r);
}

void reader_set_timeouts(struct reader *r, const struct timeval *rt, const struct timeval *wt)
{
    bufferevent_set_timeouts(r->bev, r->ev ? NULL : rt, wt);
    if (!r->ev)
        return;
    if (!rt && r->timed &&
        event_pending(r->ev, EV_READ | EV_TIMEOUT, NULL) == (EV_READ | EV_TIMEOUT)) {
        /* libevent keeps a persistent event's timeout through event_add(ev, NULL) and re-arms
         * it after every read: event_remove_timer forgets it and leaves the read pending (no
         * epoll_ctl, where deleting and adding the event again costs two per request). */
        event_remove_timer(r->ev);
    } else if (!rt && r->timed) {
        /* Not waiting on both: reading off, or the timeout already fired and its callback is
         * queued in this loop pass (event_remove_timer would leave it to be reported). The
         * timeout is kept through event_del as well: the event starts afresh. */
        int prio = event_get_priority(r->ev);
        event_del(r->ev);
        event_assign(r->ev, event_get_base(r->ev), event_get_fd(r->ev), EV_READ | EV_PERSIST,
                     on_readable, r);
        event_priority_set(r->ev, prio);
    }
    r->timed = rt != NULL;
    if (rt)
        r->timeout = *rt;
    if (r->on)
        schedule(r);
}

void reader_set_priority(struct reader *r, int prio)
{
    bufferevent_priority_set(r->bev, prio);
    if (r->ev)
        event_priority_set(r->ev, prio); /* refused only while queued to run: next time then */
}
