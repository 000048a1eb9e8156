/*
 * upstream: keep-alive connection pools for the proxy's upstream requests.
 */
#include "gateway/upstream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>

#include "core/log.h"
#include "core/util.h"
#include "gateway/config.h"
#include "gateway/tls.h"

#define UPSTREAM_MAX_IDLE 64 /* idle connections kept per upstream per worker */

struct upstream_pool {
    char *key; /* "https://host:port" or "http://host:port" */
    struct upconn *idle;
    size_t nidle;
    struct flusher *flusher; /* the worker's: pooled plain connections are written through */
};

struct upstream_pools {
    struct event_base *base;
    struct flusher *flusher;
    struct upstream_pool **v; /* each pool on its own: connections point to theirs */
    size_t n;
};

struct upstream_pools *upstream_pools_new(struct event_base *base, struct flusher *fl)
{
    struct upstream_pools *p = xcalloc(1, sizeof(*p));
    p->base = base;
    p->flusher = fl;
    return p;
}

static void conn_close(struct upconn *c)
{
    reader_detach(&c->rd);
    flush_detach(&c->fl);
    bufferevent_free(c->bev);
    free(c);
}

void upstream_pools_free(struct upstream_pools *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++) {
        for (struct upconn *c = p->v[i]->idle, *next; c; c = next) {
            next = c->next;
            conn_close(c);
        }
        free(p->v[i]->key);
        free(p->v[i]);
    }
    free(p->v);
    free(p);
}

static struct upstream_pool *pool_for(struct upstream_pools *p, const struct merchant *m)
{
    const char *scheme = m->upstream_tls ? "https://" : "http://";
    size_t n = strlen(scheme);
    for (size_t i = 0; i < p->n; i++) /* no key built per request: compare it in two parts */
        if (strncmp(p->v[i]->key, scheme, n) == 0 &&
            strcmp(p->v[i]->key + n, m->upstream_hostport) == 0)
            return p->v[i];
    /* Pools are few (one per upstream address) and live as long as the worker. */
    p->v = xrealloc(p->v, (p->n + 1) * sizeof(*p->v));
    struct upstream_pool *pl = p->v[p->n++] = xcalloc(1, sizeof(*pl));
    pl->key = xasprintf("%s%s", scheme, m->upstream_hostport);
    pl->flusher = p->flusher;
    return pl;
}

static void unlink_idle(struct upconn *c)
{
    struct upconn **pp = &c->pool->idle;
    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    c->pool->nidle--;
}

/* An idle connection said something or closed: it cannot carry a request any more. */
static void on_idle_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct upconn *c = arg;
    unlink_idle(c);
    conn_close(c);
}

static void on_idle_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    on_idle_read(bev, arg);
}

static struct upconn *open_conn(struct upstream_pools *p, struct upstream_pool *pl,
                                const struct merchant *m)
{
    struct upconn *c = xcalloc(1, sizeof(*c));
    c->pool = pl;
    int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
    if (m->upstream_tls) {
        SSL *ssl = tls_client_ssl(m->upstream_tls_ctx, m->upstream_host);
        if (!ssl) {
            free(c);
            return NULL;
        }
        c->bev = bufferevent_openssl_socket_new(p->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, opts);
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
        c->bev = bufferevent_socket_new(p->base, -1, opts);
    }
    if (!c->bev) {
        free(c);
        return NULL;
    }
    c->plain = !m->upstream_tls;
    reader_init(&c->rd, c->bev);
    /* A refused connection is reported through the event callback, never here. */
    if (bufferevent_socket_connect(c->bev, (const struct sockaddr *)&m->upstream_addr,
                                   m->upstream_addrlen) != 0) {
        log_debug("upstream %s: connect failed at once", pl->key);
    } else {
        int one = 1; /* a request's head and body go in separate writes: no Nagle delay */
        setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return c;
}

struct upconn *upstream_acquire(struct upstream_pools *p, const struct merchant *m,
                                int64_t timeout_ms, bool fresh, bufferevent_data_cb readcb,
                                bufferevent_data_cb writecb, bufferevent_event_cb eventcb,
                                void *arg)
{
    struct upstream_pool *pl = pool_for(p, m);
    struct upconn *c = fresh ? NULL : pl->idle;
    if (c)
        unlink_idle(c);
    else if (!(c = open_conn(p, pl, m)))
        return NULL;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    reader_set_timeouts(&c->rd, &tv, &tv);
    bufferevent_setcb(c->bev, readcb, writecb, eventcb, arg);
    reader_enable(&c->rd);
    if (flush_write_events(&c->fl))
        bufferevent_enable(c->bev, EV_WRITE);
    return c;
}

void upstream_release(struct upconn *c, bool keep)
{
    struct upstream_pool *pl = c->pool;
    /* Bytes still to go out (the merchant answered before the body was written) belong to the
     * request that is over: such a connection is not pooled. */
    if (!keep || pl->nidle >= UPSTREAM_MAX_IDLE ||
        evbuffer_get_length(bufferevent_get_input(c->bev)) != 0 ||
        evbuffer_get_length(bufferevent_get_output(c->bev)) != 0) {
        conn_close(c);
        return;
    }
    c->reused = true;
    /* Written through and read by the reader from its next request on (flush.h, reader.h). Not
     * before: until a connection is known to be up, a direct write or read would take its
     * connect error from the bufferevent, which reports it (it carried a whole exchange, so it
     * is up). */
    if (c->plain && !c->fl.fl) {
        flush_attach(&c->fl, pl->flusher, c->bev);
        reader_attach(&c->rd);
    }
    flush_drained(&c->fl);
    reader_set_timeouts(&c->rd, NULL, NULL);
    bufferevent_setcb(c->bev, on_idle_read, NULL, on_idle_event, c);
    reader_enable(&c->rd);
    c->next = pl->idle;
    pl->idle = c;
    pl->nidle++;
}
