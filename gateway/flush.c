/*
 * flush: write-through of plain TCP connections' output (flush.h says why).
 */
#include "gateway/flush.h"

#include <stdlib.h>

#include "core/util.h"

struct flusher {
    struct event *ev; /* active while links are pending; runs after the pass's callbacks */
    struct flush_link *head;
    struct flush_stats *stats;
};

static void unlink_pending(struct flush_link *l)
{
    struct flusher *fl = l->fl;
    *(l->prev ? &l->prev->next : &fl->head) = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->prev = l->next = NULL;
    l->pending = false;
}

/* Output written: tell the owner as the bufferevent would (its write callback runs whenever the
 * output drains to the low watermark, 0). The callback may free the connection. */
static void drained(struct bufferevent *bev)
{
    bufferevent_data_cb writecb;
    void *arg;
    bufferevent_getcb(bev, NULL, &writecb, NULL, &arg);
    if (writecb)
        writecb(bev, arg);
}

static void flush_one(struct flusher *fl, struct flush_link *l)
{
    struct bufferevent *bev = l->bev;
    struct evbuffer *out = bufferevent_get_output(bev);
    if (evbuffer_get_length(out) == 0)
        return;
    /* A socket bufferevent freezes its output's front so that only it drains it: so do we. */
    evbuffer_unfreeze(out, 1);
    (void)evbuffer_write(out, bufferevent_getfd(bev));
    evbuffer_freeze(out, 1);
    if (evbuffer_get_length(out) == 0) {
        atomic_fetch_add_explicit(&fl->stats->through, 1, memory_order_relaxed);
        drained(bev);
        return;
    }
    atomic_fetch_add_explicit(&fl->stats->backlog, 1, memory_order_relaxed);
    /* The socket took less than everything, or failed (EAGAIN, still connecting, reset): the
     * bufferevent writes the rest, with its timeout and its error reporting, until its output
     * is empty (flush_drained). */
    l->armed = true;
    bufferevent_enable(bev, EV_WRITE);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct flusher *fl = arg;
    while (fl->head) {
        struct flush_link *l = fl->head;
        unlink_pending(l);
        flush_one(fl, l); /* may free l's connection: l is not touched after */
    }
}

/* Bytes were added to an attached output: write them at the end of this pass. */
static void on_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    struct flush_link *l = arg;
    if (!info->n_added || l->pending || l->armed)
        return;
    struct flusher *fl = l->fl;
    l->pending = true;
    l->prev = NULL;
    l->next = fl->head;
    if (fl->head)
        fl->head->prev = l;
    fl->head = l;
    event_active(fl->ev, EV_TIMEOUT, 0);
}

struct flusher *flusher_new(struct event_base *base, struct flush_stats *stats)
{
    struct flusher *fl = xcalloc(1, sizeof(*fl));
    fl->stats = stats;
    fl->ev = event_new(base, -1, 0, on_flush, fl);
    return fl;
}

void flusher_free(struct flusher *fl)
{
    if (!fl)
        return;
    event_free(fl->ev);
    free(fl);
}

void flush_attach(struct flush_link *l, struct flusher *fl, struct bufferevent *bev)
{
    l->fl = fl;
    l->bev = bev;
    l->cb = evbuffer_add_cb(bufferevent_get_output(bev), on_added, l);
    bufferevent_disable(bev, EV_WRITE); /* a new bufferevent has it enabled */
}

void flush_detach(struct flush_link *l)
{
    if (!l->fl)
        return;
    if (l->pending)
        unlink_pending(l);
    evbuffer_remove_cb_entry(bufferevent_get_output(l->bev), l->cb);
    l->fl = NULL;
}

void flush_drained(struct flush_link *l)
{
    /* The bufferevent removed its EPOLLOUT when the output emptied: disabling is a flag. */
    if (l->armed && evbuffer_get_length(bufferevent_get_output(l->bev)) == 0) {
        l->armed = false;
        bufferevent_disable(l->bev, EV_WRITE);
    }
}

short flush_write_events(const struct flush_link *l)
{
    return l->fl && !l->armed ? 0 : EV_WRITE;
}
