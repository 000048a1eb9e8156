/*
 * httpguard: the connection cap and the request deadline around the wallet's evhttp.
 */
#include "wallet/httpguard.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "core/code.h"
#include "core/log.h"
#include "core/util.h"

#define ACCEPT_PAUSE_MS 100 /* after accept() found no descriptor free */

/* One accepted connection, from evhttp's bevcb to its close callback. */
struct wconn {
    struct httpguard *g;
    struct bufferevent *bev;         /* made here, owned by evhttp */
    struct evhttp_connection *evcon; /* evhttp's, once adopted */
    struct evbuffer_cb_entry *input_cb;
    struct event *deadline;
    evutil_socket_t fd;
    bool started; /* bytes of a request arrived since accept or the last answer */
};

struct httpguard {
    struct evhttp *http;
    struct httpguard_limits lim;
    struct evconnlistener *lst; /* evhttp's, once bound; NULL again while freeing */
    bool accepting;             /* lst is enabled as far as the cap goes */
    int64_t open;               /* connections accepted and not yet closed */
    int64_t logged_s;           /* when reaching the cap was last logged */
    struct wconn **byfd;        /* adopted connections by descriptor, to find a request's */
    size_t nbyfd;
    void (*cb)(struct evhttp_request *, void *);
    void *cbarg;
};

/* Accept while under the cap; at the cap new connections wait in the backlog. */
static void update_accepting(struct httpguard *g)
{
    bool want = g->open < g->lim.max_connections;
    if (!g->lst || want == g->accepting)
        return;
    g->accepting = want;
    if (want) {
        evconnlistener_enable(g->lst);
        return;
    }
    evconnlistener_disable(g->lst);
    int64_t now = now_s();
    if (now != g->logged_s) {
        g->logged_s = now;
        log_warn("max_connections (%lld) reached: new connections wait until one closes",
                 (long long)g->lim.max_connections);
    }
}

static void arm(struct wconn *wc)
{
    int64_t ms = wc->g->lim.header_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(wc->deadline, &tv);
}

static void forget(struct wconn *wc)
{
    struct httpguard *g = wc->g;
    event_free(wc->deadline);
    free(wc);
    g->open--;
    update_accepting(g);
}

static void on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct wconn *wc = arg;
    evbuffer_remove_cb_entry(bufferevent_get_input(wc->bev), wc->input_cb);
    wc->g->byfd[wc->fd] = NULL;
    forget(wc);
}

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    if (info->n_added)
        ((struct wconn *)arg)->started = true;
}

/* The connection is reading a request or waiting for one: evhttp is writing nothing, so the
 * answer goes straight to the socket, whose empty buffer takes these few bytes whole. */
static void send_timeout(evutil_socket_t fd)
{
    char body[160], msg[400];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"}\n",
                     code_name(CODE_REQUEST_TIMEOUT),
                     "The request did not arrive whole within header_timeout_ms.");
    int m = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
                     n, body);
    (void)send(fd, msg, (size_t)m, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wconn *wc = arg;
    if (wc->started)
        send_timeout(wc->fd);
    evhttp_connection_free(wc->evcon); /* on_close frees wc */
}

static void index_conn(struct httpguard *g, struct wconn *wc)
{
    size_t fd = (size_t)wc->fd;
    if (fd >= g->nbyfd) {
        size_t n = g->nbyfd ? g->nbyfd : 64;
        while (n <= fd)
            n *= 2;
        g->byfd = xrealloc(g->byfd, n * sizeof(*g->byfd));
        memset(g->byfd + g->nbyfd, 0, (n - g->nbyfd) * sizeof(*g->byfd));
        g->nbyfd = n;
    }
    g->byfd[fd] = wc;
}

/*
 * evhttp has made its connection object around wc->bev and set its callbacks, with the object as
 * their argument: take it, to hear of its close and to close it at the deadline. No input has
 * been read yet (this runs before the loop polls again). If evhttp gave the connection up (it
 * could not allocate), it freed the bufferevent, whose callbacks are then unset.
 */
static void adopt(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wconn *wc = arg;
    bufferevent_data_cb readcb;
    void *evcon;
    bufferevent_getcb(wc->bev, &readcb, NULL, NULL, &evcon);
    if (!readcb) {
        bufferevent_decref(wc->bev);
        forget(wc);
        return;
    }
    wc->evcon = evcon;
    wc->fd = bufferevent_getfd(wc->bev);
    index_conn(wc->g, wc);
    evhttp_connection_set_closecb(wc->evcon, on_close, wc);
    wc->input_cb = evbuffer_add_cb(bufferevent_get_input(wc->bev), on_input, wc);
    bufferevent_decref(wc->bev);
}

/* evhttp's bevcb: a connection was just accepted; evhttp wraps it in the bufferevent made here. */
static struct bufferevent *on_accept(struct event_base *base, void *arg)
{
    struct httpguard *g = arg;
    struct wconn *wc = xcalloc(1, sizeof(*wc));
    wc->g = g;
    wc->fd = -1;
    wc->bev = bufferevent_socket_new(base, -1, 0); /* the options evhttp's own would have */
    wc->deadline = evtimer_new(base, on_deadline, wc);
    if (!wc->bev || !wc->deadline)
        abort();
    bufferevent_incref(wc->bev); /* until adopt(), whatever evhttp does with it meanwhile */
    arm(wc);
    g->open++;
    update_accepting(g);
    /* With no delay this runs in the current turn of the loop, once evhttp's accept is done. */
    if (event_base_once(base, -1, EV_TIMEOUT, adopt, wc, NULL) != 0)
        abort();
    return wc->bev;
}

/* The request is read whole: no deadline while it is served, a new one from its answer on. */
static void on_answered(struct evhttp_request *req, void *arg)
{
    (void)req;
    struct wconn *wc = arg;
    wc->started = evbuffer_get_length(bufferevent_get_input(wc->bev)) > 0; /* pipelined */
    arm(wc);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct httpguard *g = arg;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evhttp_request_get_connection(req));
    evutil_socket_t fd = bufferevent_getfd(bev);
    struct wconn *wc = fd >= 0 && (size_t)fd < g->nbyfd ? g->byfd[fd] : NULL;
    if (wc) {
        evtimer_del(wc->deadline);
        evhttp_request_set_on_complete_cb(req, on_answered, wc);
    }
    g->cb(req, g->cbarg);
}

static void resume_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evconnlistener_enable(arg);
}

/*
 * accept() failed. Out of descriptors, the pending connection stays in the backlog and the
 * listener would wake again at once: pause instead of spinning, and say so at most once a second.
 * The callback's argument is evhttp's, not the guard's; none is needed: no connection is accepted
 * during the pause, so the cap cannot have been reached when it ends.
 */
static void on_accept_error(struct evconnlistener *lst, void *arg)
{
    (void)arg;
    static int64_t logged_s;
    int err = EVUTIL_SOCKET_ERROR();
    bool pause = err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
    int64_t now = now_s();
    if (now != logged_s) {
        logged_s = now;
        if (pause)
            log_warn("accept: %s; pausing new connections for %d ms", strerror(err),
                     ACCEPT_PAUSE_MS);
        else
            log_warn("accept: %s", strerror(err));
    }
    if (pause) {
        evconnlistener_disable(lst);
        struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
        event_base_once(evconnlistener_get_base(lst), -1, EV_TIMEOUT, resume_accept, lst, &tv);
    }
}

struct httpguard *httpguard_new(struct event_base *base, const struct httpguard_limits *lim)
{
    struct httpguard *g = xcalloc(1, sizeof(*g));
    g->lim = *lim;
    g->http = evhttp_new(base);
    if (!g->http)
        abort();
    evhttp_set_bevcb(g->http, on_accept, g);
    evhttp_set_gencb(g->http, on_request, g);
    return g;
}

struct evhttp *httpguard_http(struct httpguard *g)
{
    return g->http;
}

void httpguard_set_gencb(struct httpguard *g, void (*cb)(struct evhttp_request *, void *),
                         void *arg)
{
    g->cb = cb;
    g->cbarg = arg;
}

int httpguard_bind(struct httpguard *g, const char *host, int port)
{
    struct evhttp_bound_socket *b =
        evhttp_bind_socket_with_handle(g->http, host, (ev_uint16_t)port);
    if (!b)
        return -1;
    g->lst = evhttp_bound_socket_get_listener(b);
    g->accepting = true;
    evconnlistener_set_error_cb(g->lst, on_accept_error);
    return 0;
}

void httpguard_free(struct httpguard *g)
{
    if (!g)
        return;
    g->lst = NULL; /* evhttp_free frees the listener before it closes the connections */
    evhttp_free(g->http);
    free(g->byfd);
    free(g);
}
