/*
 * conn: client connections, heads, deadlines, keep-alive, the connection cap, the drain.
 */
#include "gateway/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>

#include "core/code.h"
#include "core/log.h"
#include "core/sjson.h"
#include "gateway/decide.h"
#include "gateway/proxy.h"
#include "gateway/tls.h"
#include "gateway/worker.h"

#define WRITE_TIMEOUT_S 30            /* a client that reads nothing for this long is dropped */
#define LINGER_MS       2000          /* after the last answer, how long unread input is eaten */
#define LINGER_BYTES    (1024 * 1024) /* and how much of it */
#define FLOOD_PAUSE_MS  100           /* a flooding client's next request is read this much later */

_Atomic int64_t conn_open_count;
_Atomic int64_t conn_decision_open_count;

static void on_read(struct bufferevent *bev, void *arg);
static void linger(struct conn *c);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);
static void read_next(struct conn *c);

void conn_read_enable(struct conn *c)
{
    reader_enable(&c->rd);
}

void conn_read_disable(struct conn *c)
{
    reader_disable(&c->rd);
}

static void arm(struct conn *c, int64_t ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

static void conn_free(struct conn *c)
{
    struct worker *w = c->w;
    if (c->state == CONN_CLOSING)
        w->unflushed--;
    *(c->prev ? &c->prev->next : &w->conns) = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->timer);
    reader_detach(&c->rd);
    flush_detach(&c->fl);
    bufferevent_free(c->bev); /* closes the socket (and frees the SSL) */
    atomic_fetch_sub(c->decision ? &conn_decision_open_count : &conn_open_count, 1);
    free(c);
}

/* Refuse to go on: nothing more is read; close once the output is flushed. */
static void close_after_flush(struct conn *c)
{
    if (c->state != CONN_CLOSING)
        c->w->unflushed++;
    c->state = CONN_CLOSING;
    c->req = NULL;
    conn_read_disable(c);
    evtimer_del(c->timer);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        linger(c);
}

/* Log a connection accepted over the cap at most once a second for the whole process. */
static void log_over_cap(int64_t max)
{
    /* Per UTC second, the clock of the log lines' timestamps. */
    static _Atomic int64_t logged_unix_s;
    int64_t now_unix_s = now_s(), last = atomic_load(&logged_unix_s);
    if (now_unix_s != last && atomic_compare_exchange_strong(&logged_unix_s, &last, now_unix_s))
        log_warn("max_connections (%lld) reached: closing new connections", (long long)max);
}

void conn_accept(struct worker *w, evutil_socket_t fd, const struct sockaddr *sa, int salen,
                 bool decision)
{
    (void)salen;
    struct config *conf = worker_config(w);
    _Atomic int64_t *open = decision ? &conn_decision_open_count : &conn_open_count;
    if (atomic_fetch_add(open, 1) >= conf->max_connections || atomic_load(&w->srv->draining)) {
        atomic_fetch_sub(open, 1);
        log_over_cap(conf->max_connections);
        evutil_closesocket(fd);
        return;
    }
    /* Answers leave in several writes (a TLS record each, an interim answer, chunks): without
     * TCP_NODELAY, Nagle holds the next one for the client's delayed ACK (40 ms per request). */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct conn *c = xcalloc(1, sizeof(*c));
    c->w = w;
    c->fresh = true;
    c->decision = decision;
    const void *addr = sa->sa_family == AF_INET6
                           ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                           : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
    if (!inet_ntop(sa->sa_family, addr, c->peer, sizeof(c->peer)))
        snprintf(c->peer, sizeof(c->peer), "unknown");
    c->peer_port = ntohs(sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                                   : ((const struct sockaddr_in *)sa)->sin_port);
    int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
    struct tls_server *tls = decision ? w->decision_tls : conf->tls;
    SSL *ssl = tls ? tls_server_ssl(tls) : NULL;
    if (ssl) {
        c->tls = true;
        c->bev = bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, opts);
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else if (tls) {
        log_error("TLS: cannot make a connection object");
        evutil_closesocket(fd);
        atomic_fetch_sub(open, 1);
        free(c);
        return;
    } else {
        c->bev = bufferevent_socket_new(w->base, fd, opts);
    }
    reader_init(&c->rd, c->bev);
    if (!ssl) {
        flush_attach(&c->fl, w->flusher, c->bev);
        reader_attach(&c->rd);
    }
    c->timer = evtimer_new(w->base, on_timer, c);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    conn_read_timeout(c, NULL);
    /* Never hold more unparsed input than one head can be: pipelined requests wait in the socket.
     */
    reader_set_high(&c->rd, (size_t)conf->max_header_bytes + 1);
    if (flush_write_events(&c->fl))
        bufferevent_enable(c->bev, EV_WRITE);
    conn_read_enable(c);
    arm(c, conf->header_timeout_ms);
}

size_t conn_reply_error(struct conn *c, int status, const char *code, const char *message,
                        const char *request_id, const char *extra_headers, bool keep_alive)
{
    json_t *body =
        json_pack("{ss ss ss}", "error", code, "message", message, "request_id", request_id);
    char *s = sjson_dump(body);
    json_decref(body);
    size_t n = strlen(s) + 1;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Cache-Control: no-store\r\nX-Request-Id: %s\r\n%sContent-Length: %zu\r\n"
                        "%s\r\n%s\n",
                        status, code_reason(status), request_id, extra_headers ? extra_headers : "",
                        n,
                        !keep_alive     ? "Connection: close\r\n"
                        : c->minor == 0 ? "Connection: keep-alive\r\n"
                                        : "",
                        s);
    free(s);
    conn_request_done(c, keep_alive);
    return n;
}

/* A head could not be parsed: 400/431 with a request id, counted, never audited (SPEC §5). */
static void framing_error(struct conn *c, enum hp_error e)
{
    char id[33];
    proxy_new_request_id(c->w, id);
    proxy_count_framing(c, hp_error_code(e), id);
    conn_reply_error(c, hp_error_status(e), code_name(hp_error_code(e)), hp_error_str(e), id, NULL,
                     false);
}

/* Parse the head buffered so far; hand a complete one to proxy.c. */
static void try_head(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return;
    struct config *conf = worker_config(c->w);
    if (!c->head_started) {
        c->head_started = true;
        if (!c->fresh) /* keep-alive: the head deadline starts with its first byte */
            arm(c, conf->header_timeout_ms);
    }
    /* A head can only end at an LF: against a client dribbling one byte at a time, parse only
     * when a new line end arrived (or the bound is passed), not on every byte. */
    size_t limit = (size_t)conf->max_header_bytes;
    if (len <= limit) {
        struct evbuffer_ptr pos;
        evbuffer_ptr_set(in, &pos, c->scanned, EVBUFFER_PTR_SET);
        if (evbuffer_search(in, "\n", 1, &pos).pos < 0) {
            c->scanned = len;
            return;
        }
    }
    size_t n = len < limit + 1 ? len : limit + 1;
    const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    struct hp_limits lim = {limit, (size_t)conf->max_headers};
    int rc = hp_parse_request(buf, n, &lim, proxy_scratch_request(c->w, &lim));
    if (rc == 0) {
        c->scanned = n;
        return;
    }
    if (rc < 0) {
        framing_error(c, (enum hp_error) - rc);
        return;
    }
    evtimer_del(c->timer);
    if (c->tls && !c->tls_client[0] &&
        tls_peer_subject(bufferevent_openssl_get_ssl(c->bev), c->tls_client,
                         sizeof(c->tls_client)) != 0)
        log_warn("TLS client certificate subject from %s is too long to log", c->peer);
    c->minor = c->w->scratch.minor;
    c->state = CONN_BUSY;
    c->fresh = false;
    c->head_started = false;
    c->scanned = 0;
    if (c->decision)
        decide_begin(c, buf, (size_t)rc);
    else
        proxy_begin(c, buf, (size_t)rc);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    if (c->lingering) {
        struct evbuffer *in = bufferevent_get_input(c->bev);
        c->lingered += evbuffer_get_length(in);
        evbuffer_drain(in, (size_t)-1);
        if (c->lingered > LINGER_BYTES)
            conn_free(c);
        return;
    }
    if (c->state == CONN_WAIT_HEAD)
        try_head(c);
    else if (c->state == CONN_BUSY && c->req && c->decision)
        decide_client_readable(c->req);
    else if (c->state == CONN_BUSY && c->req)
        proxy_client_readable(c->req);
}

/* The last answer is out. Closing a socket with unread input sends a reset, which can destroy
 * that answer before the client reads it (a denial of a request whose body we never read): so
 * half-close, eat what still comes for a moment, then close (nginx's lingering close). */
static void linger(struct conn *c)
{
    if (c->tls || c->cut) {
        conn_free(c);
        return;
    }
    c->lingering = true;
    evbuffer_drain(bufferevent_get_input(c->bev), (size_t)-1);
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    reader_set_high(&c->rd, 0);
    conn_read_enable(c);
    arm(c, LINGER_MS);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    flush_drained(&c->fl);
    /* Deferred callbacks may run after more output was queued: check it is really empty. */
    if (c->state == CONN_CLOSING && !c->lingering &&
        evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        linger(c);
    else if (c->state == CONN_BUSY && c->req && !c->decision)
        proxy_client_drained(c->req);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if ((what & BEV_EVENT_ERROR) && c->tls && c->fresh && !c->head_started) {
        char buf[160];
        unsigned long e = bufferevent_get_openssl_error(c->bev);
        if (e)
            log_info("TLS handshake from %s failed: %s", c->peer,
                     tls_error_string(e, buf, sizeof(buf)));
    }
    if (c->req && c->decision)
        decide_client_gone(c->req); /* the request forgets c */
    else if (c->req)
        proxy_client_gone(c->req); /* cancels the upstream side; the request forgets c */
    c->req = NULL;
    conn_free(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    if (c->lingering) {
        conn_free(c);
        return;
    }
    if (c->paused) {
        c->paused = false;
        read_next(c);
        return;
    }
    if (c->state != CONN_WAIT_HEAD)
        return;
    if (!c->head_started) {
        conn_free(c); /* silent or idle: closed without a word (SPEC §5) */
        return;
    }
    char id[33];
    proxy_new_request_id(c->w, id);
    proxy_count_framing(c, CODE_REQUEST_TIMEOUT, id);
    conn_reply_error(c, 408, code_name(CODE_REQUEST_TIMEOUT), code_message(CODE_REQUEST_TIMEOUT),
                     id, NULL, false);
}

/* Wait for the next request on a kept-alive connection. */
static void read_next(struct conn *c)
{
    conn_read_enable(c);
    arm(c, worker_config(c->w)->idle_timeout_ms);
    try_head(c); /* a pipelined request may be buffered already */
}

/* The priority of c's events (worker.h): low while its client floods. */
static int prio_of(const struct conn *c)
{
    return c->flooding ? WORKER_PRIO_LOW : WORKER_PRIO_NORMAL;
}

void conn_set_flooding(struct conn *c, bool flooding)
{
    if (c->flooding == flooding)
        return;
    c->flooding = flooding;
    int prio = prio_of(c);
    reader_set_priority(&c->rd, prio);
    event_priority_set(c->timer, prio);
}

void conn_read_timeout(struct conn *c, const struct timeval *rt)
{
    struct timeval wt = {WRITE_TIMEOUT_S, 0};
    reader_set_timeouts(&c->rd, rt, &wt);
}

void conn_request_done(struct conn *c, bool keep_alive)
{
    c->req = NULL;
    if (!keep_alive || atomic_load(&c->w->srv->draining)) {
        close_after_flush(c);
        return;
    }
    c->state = CONN_WAIT_HEAD;
    c->head_started = false;
    c->scanned = 0;
    if (c->flooding) {
        /* A client over its denial budget waits before its next request is read: a closed-loop
         * flood then costs a few requests a second per connection instead of a core. */
        c->paused = true;
        atomic_fetch_add_explicit(&c->w->srv->metrics.flood_pauses, 1, memory_order_relaxed);
        conn_read_disable(c);
        arm(c, FLOOD_PAUSE_MS);
        return;
    }
    read_next(c);
}

void conn_cut(struct conn *c)
{
    c->cut = true;
    close_after_flush(c);
}

void conn_drain_all(struct worker *w)
{
    for (struct conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != CONN_WAIT_HEAD || c->head_started)
            continue;
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
            conn_free(c);
        else
            conn_cut(c); /* its last answer is still going out: closed once it is */
    }
}

void conn_free_all(struct worker *w)
{
    while (w->conns) {
        struct conn *c = w->conns;
        if (c->req && c->decision)
            decide_client_gone(c->req);
        else if (c->req)
            proxy_client_gone(c->req);
        c->req = NULL;
        conn_free(c);
    }
}
