/*
 * upstream: keep-alive connection pools for the proxy's upstream requests.
 */
#include "gateway/upstream.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define UPSTREAM_MAX_CONNS 512 /* per upstream per worker; beyond, requests queue on one */

struct pool {
    char *host;
    int port;
    struct upconn **v;
    size_t n;
    size_t rr;
};

struct upstream_pools {
    struct event_base *base;
    struct pool *v;
    size_t n;
};

struct upstream_pools *upstream_pools_new(struct event_base *base)
{
    struct upstream_pools *p = xcalloc(1, sizeof(*p));
    p->base = base;
    return p;
}

void upstream_pools_free(struct upstream_pools *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++) {
        for (size_t j = 0; j < p->v[i].n; j++) {
            evhttp_connection_free(p->v[i].v[j]->evcon);
            free(p->v[i].v[j]);
        }
        free(p->v[i].v);
        free(p->v[i].host);
    }
    free(p->v);
    free(p);
}

static struct pool *pool_for(struct upstream_pools *p, const char *host, int port)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->v[i].port == port && strcmp(p->v[i].host, host) == 0)
            return &p->v[i];
    p->v = xrealloc(p->v, (p->n + 1) * sizeof(*p->v));
    struct pool *pl = &p->v[p->n++];
    memset(pl, 0, sizeof(*pl));
    pl->host = xstrdup(host);
    pl->port = port;
    return pl;
}

static struct upconn *open_conn(struct upstream_pools *p, struct pool *pl)
{
    struct upconn *c = xcalloc(1, sizeof(*c));
    c->evcon = evhttp_connection_base_new(p->base, NULL, pl->host, (unsigned short)pl->port);
    if (!c->evcon)
        abort(); /* allocation only */
    evhttp_connection_set_retries(c->evcon, 0);
    pl->v = xrealloc(pl->v, (pl->n + 1) * sizeof(*pl->v));
    pl->v[pl->n++] = c;
    return c;
}

struct upconn *upstream_acquire(struct upstream_pools *p, const char *host, int port,
                                int64_t timeout_ms, bool fresh)
{
    struct pool *pl = pool_for(p, host, port);
    struct upconn *c = NULL;
    for (size_t i = 0; !fresh && i < pl->n && !c; i++)
        if (!pl->v[i]->busy)
            c = pl->v[i];
    if (!c && pl->n < UPSTREAM_MAX_CONNS)
        c = open_conn(p, pl);
    if (!c) /* at the cap: evhttp queues the request on a busy connection */
        c = pl->v[pl->rr++ % pl->n];
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evhttp_connection_set_timeout_tv(c->evcon, &tv);
    c->busy = true;
    return c;
}

void upstream_release(struct upstream_pools *p, struct upconn *c, bool keep)
{
    (void)p;
    c->busy = false;
    c->reused = keep;
}
