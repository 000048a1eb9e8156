/*
 * proxy: the request lifecycle of the mandate-enforcing reverse proxy.
 */
#include "gateway/proxy.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/rand.h>

#include "core/http.h"
#include "core/log.h"
#include "core/sjson.h"
#include "gateway/accesslog.h"
#include "gateway/enforce.h"
#include "gateway/worker.h"

#define MAX_HEADERS       100
#define CLIENT_HIGH_WATER (256 * 1024) /* pause the upstream above this much unsent to a client */
#define CLIENT_TIMEOUT_S  30           /* reading a request, writing a response */

struct request {
    struct worker *w;
    struct evhttp_request *req; /* the client's; NULL once its connection is gone */
    struct evhttp_connection *client;
    struct config *conf;
    char id[33];
    char method[8];
    char *path;
    const struct route *route;
    struct verdict v;
    struct admit admit;
    enum code code;
    int status;
    uint64_t bytes;
    int64_t start_us, check_us, up_start_us, up_us;
    char receipt[90];
    /* upstream */
    struct upconn *uc;
    struct evhttp_request *up;
    struct evbuffer_cb_entry *sent_cb; /* watches the upstream output for written bytes */
    enum evhttp_request_error up_err;
    bool up_errored, headers_sent, paused, retried;
    bool sent; /* some byte of the request left for the merchant: it may have acted on it */
};

static const char *method_name(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    default:
        return "OTHER";
    }
}

/* SPEC §5: only an unpriced GET or HEAD is sent again, and only when its pooled connection was
 * found closed before any byte of it was written: the merchant cannot have acted on it. */
static bool retryable(const struct request *r)
{
    enum evhttp_cmd_type t = evhttp_request_get_command(r->req);
    return !r->route->priced && !r->sent && (t == EVHTTP_REQ_GET || t == EVHTTP_REQ_HEAD);
}

/* RFC 9110 §7.6.1 hop-by-hop fields, never forwarded either way. */
static bool hop_by_hop(const char *name)
{
    static const char *const hop[] = {"Connection",
                                      "Keep-Alive",
                                      "Proxy-Connection",
                                      "Proxy-Authenticate",
                                      "Proxy-Authorization",
                                      "TE",
                                      "Trailer",
                                      "Transfer-Encoding",
                                      "Upgrade"};
    for (size_t i = 0; i < ARRAY_LEN(hop); i++)
        if (strcasecmp(name, hop[i]) == 0)
            return true;
    return false;
}

/* Is name listed in any Connection header of hs (comma-separated tokens)? */
static bool connection_named(struct evkeyvalq *hs, const char *name)
{
    size_t nl = strlen(name);
    for (struct evkeyval *h = hs->tqh_first; h; h = h->next.tqe_next) {
        if (strcasecmp(h->key, "Connection") != 0)
            continue;
        const char *p = h->value;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            const char *e = p;
            while (*e && *e != ',' && *e != ' ' && *e != '\t')
                e++;
            if ((size_t)(e - p) == nl && strncasecmp(p, name, nl) == 0)
                return true;
            p = e;
        }
    }
    return false;
}

static bool tchar_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

static void request_free(struct request *r)
{
    if (r->client)
        evhttp_connection_set_closecb(r->client, NULL, NULL);
    r->w->inflight--;
    config_unref(r->conf);
    free(r->path);
    free(r);
}

/* The client went away: forget its request object (evhttp frees it after this returns). */
static void on_client_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct request *r = arg;
    r->req = NULL;
    r->client = NULL;
    if (r->paused && r->uc) {
        /* Nobody will drain what is buffered for it: let the upstream finish into the void. */
        r->paused = false;
        bufferevent_enable(evhttp_connection_get_bufferevent(r->uc->evcon), EV_READ);
    }
}

/* The final reply was written out: the drain no longer waits for it. */
static void on_flushed(struct evhttp_request *req, void *arg)
{
    struct worker *w = arg;
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), NULL, NULL);
    w->unflushed--;
}

/* The client's connection closed before the final reply was written out (evhttp then never
 * calls on_flushed): the drain must not wait for it either. */
static void on_unflushed_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct worker *w = arg;
    w->unflushed--;
}

/* The final reply is being handed to evhttp: the drain waits until it is written out or the
 * connection is gone, whichever comes first (exactly one of the two callbacks runs). */
static void last_reply(struct request *r)
{
    evhttp_connection_set_closecb(r->client, on_unflushed_close, r->w);
    r->client = NULL;
    r->w->unflushed++;
    evhttp_request_set_on_complete_cb(r->req, on_flushed, r->w);
}

static void log_access(struct request *r, const char *decision)
{
    const struct mandate *m = &r->v.m;
    struct access a = {r->id,
                       r->method,
                       r->path,
                       r->route ? r->route->path : "",
                       r->route ? r->route->merchant->id : "",
                       r->route ? r->route->action : "",
                       m->sub,
                       m->agent,
                       decision,
                       code_name(r->code),
                       r->status,
                       r->bytes,
                       r->check_us,
                       r->up_us};
    accesslog_write(&a);
}

/* The decision entry (SPEC §4) for r; mandates listed when the token parsed. */
static json_t *decision_entry(struct request *r)
{
    const struct mandate *m = &r->v.m;
    json_t *e = json_pack("{sI ss ss ss ss ss ss ss ss}", "ts_ms", (json_int_t)now_ms(), "kind",
                          "decision", "request_id", r->id, "principal", m->sub, "agent", m->agent,
                          "merchant", r->route ? r->route->merchant->id : "", "action",
                          r->route ? r->route->action : "", "decision",
                          r->code == CODE_OK ? "allow" : "deny", "code", code_name(r->code));
    json_t *ms = json_array();
    if (m->jti[0] && m->iss[0]) {
        char sha[65];
        hex_encode(m->sha256, 32, sha);
        sjson_append(ms, json_pack("{ss ss ss ss ss}", "typ", mandate_typ_name(m->typ), "iss",
                                   m->iss, "kid", m->kid, "jti", m->jti, "sha256", sha));
    }
    if (r->v.has_cart) {
        const struct mandate *c = &r->v.cart;
        char sha[65];
        hex_encode(c->sha256, 32, sha);
        sjson_append(ms, json_pack("{ss ss ss ss ss}", "typ", mandate_typ_name(c->typ), "iss",
                                   c->iss, "kid", c->kid, "jti", c->jti, "sha256", sha));
        sjson_set(e, "amount", money_to_json(&c->total));
    }
    sjson_set(e, "mandates", ms);
    return e;
}

static void count(struct request *r)
{
    atomic_fetch_add_explicit(&r->w->srv->metrics.decisions[r->code], 1, memory_order_relaxed);
}

/* Answer with SPEC §2.2's JSON body; no audit, no metrics. */
static void send_error(struct request *r, enum code code, int64_t retry_after)
{
    r->status = code_status(code);
    if (!r->req)
        return;
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->req);
    evhttp_add_header(out, "X-Request-Id", r->id);
    char buf[64];
    if (code_status(code) == 401) {
        snprintf(buf, sizeof(buf), "Mandate error=\"%s\"", code_name(code));
        evhttp_add_header(out, "WWW-Authenticate", buf);
    }
    if (code == CODE_RATE_LIMITED) {
        snprintf(buf, sizeof(buf), "%lld", (long long)(retry_after > 0 ? retry_after : 1));
        evhttp_add_header(out, "Retry-After", buf);
    }
    json_t *body = json_pack("{ss ss ss}", "error", code_name(code), "message", code_message(code),
                             "request_id", r->id);
    last_reply(r);
    r->bytes = http_reply_json(r->req, r->status, body);
    r->req = NULL;
}

/* Framing and size errors carry no mandate to account for: counted, not audited (SPEC §5). */
static bool framing_error(enum code code)
{
    return code == CODE_BAD_REQUEST || code == CODE_BODY_TOO_LARGE ||
           code == CODE_HEADERS_TOO_LARGE;
}

/* Write the denial's entry, unless the client's denial budget for this second is spent or the
 * disk is low: then it only counts towards the client's denial_summary (SPEC §5). */
static void audit_denial(struct request *r, enum code code)
{
    struct server *srv = r->w->srv;
    char *peer = NULL;
    ev_uint16_t port = 0;
    if (r->client)
        evhttp_connection_get_peer(r->client, &peer, &port);
    if (!flood_denial(srv->flood, peer ? peer : "unknown", code, now_s(),
                      writer_disk_low(srv->writer)))
        return;
    struct writer_item *it = writer_item_new(decision_entry(r));
    if (!writer_submit(srv->writer, it))
        writer_item_free(it); /* the writer counts and logs what it drops */
}

/* A denial: answered at once (denials need not wait for the disk), audited, counted, logged. */
static void deny(struct request *r, enum code code, int64_t retry_after)
{
    r->code = code;
    r->check_us = mono_us() - r->start_us;
    hist_observe(&r->w->srv->metrics.check_us, (uint64_t)r->check_us);
    if (log_min_level <= LOG_DEBUG && r->v.m.kid[0]) {
        char ref[96];
        mandate_ref(&r->v.m, ref, sizeof(ref));
        log_write(LOG_DEBUG, r->id, "deny %s: mandate %s", code_name(code), ref);
    }
    if (!framing_error(code))
        audit_denial(r, code);
    count(r);
    send_error(r, code, retry_after);
    log_access(r, "deny");
    request_free(r);
}

/* Path checks before routing: no dot segments and no encoded separators, so that what we route
 * on is what the merchant will see. */
static bool path_ok(const char *p)
{
    if (p[0] != '/')
        return false;
    for (const char *s = p; *s; s++) {
        if (*s == '%' && (strncasecmp(s, "%2e", 3) == 0 || strncasecmp(s, "%2f", 3) == 0 ||
                          strncasecmp(s, "%5c", 3) == 0 || strncasecmp(s, "%00", 3) == 0))
            return false;
        if (*s == '\\')
            return false;
        if (*s == '/' && s[1] == '.' &&
            (s[2] == '/' || s[2] == '\0' || (s[2] == '.' && (s[3] == '/' || s[3] == '\0'))))
            return false;
    }
    return true;
}

/* Header-level checks evhttp does not make (SPEC §2.2 400/413/431). */
static enum code check_http(struct request *r)
{
    struct evhttp_request *req = r->req;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    size_t n = 0, bytes = strlen(evhttp_request_get_uri(req)) + 16;
    int cl = 0, te = 0;
    for (struct evkeyval *h = in->tqh_first; h; h = h->next.tqe_next) {
        n++;
        bytes += strlen(h->key) + strlen(h->value) + 4;
        if (!tchar_name(h->key))
            return CODE_BAD_REQUEST;
        if (strcasecmp(h->key, "Content-Length") == 0) {
            cl++;
            for (const char *p = h->value; *p; p++)
                if (!isdigit((unsigned char)*p))
                    return CODE_BAD_REQUEST;
        }
        if (strcasecmp(h->key, "Transfer-Encoding") == 0)
            te++;
    }
    if (n > MAX_HEADERS || bytes > (size_t)r->conf->max_header_bytes)
        return CODE_HEADERS_TOO_LARGE;
    if (cl > 1 || (cl && te))
        return CODE_BAD_REQUEST;
    if (evbuffer_get_length(evhttp_request_get_input_buffer(req)) > (size_t)r->conf->max_body_bytes)
        return CODE_BODY_TOO_LARGE;
    if (!path_ok(r->path))
        return CODE_BAD_REQUEST;
    return CODE_OK;
}

static void forward(struct request *r);
static void settle(struct request *r, const char *result, enum spend_status spend);

/* After the jti is durable (or the commit failed): forward, or answer 503. */
static void on_durable(struct writer_item *it)
{
    struct request *r = it->arg;
    bool ok = it->ok;
    if (ok)
        snprintf(r->receipt, sizeof(r->receipt), "%llu:", (unsigned long long)it->seq);
    if (ok)
        hex_encode(it->leaf, 32, r->receipt + strlen(r->receipt));
    writer_item_free(it);
    if (!ok) {
        /* Nothing was forwarded: give back what was consumed and say the store failed. */
        state_undo(r->w->srv->state, &r->admit);
        r->code = CODE_UNAVAILABLE;
        count(r);
        send_error(r, CODE_UNAVAILABLE, 0);
        log_access(r, "deny");
        request_free(r);
        return;
    }
    if (!r->req) {
        /* The client left while we waited: nothing is forwarded, the use stays consumed and a
         * reservation is released (no payment can have happened). */
        r->status = 499;
        settle(r, "not_forwarded", SPEND_RELEASED);
        log_access(r, "allow");
        request_free(r);
        return;
    }
    forward(r);
}

/* The outcome entry; on a priced route it also settles the reservation (SPEC §2.1 step 6). */
static void settle(struct request *r, const char *result, enum spend_status spend)
{
    json_t *e = json_pack("{sI ss ss ss si sI sI}", "ts_ms", (json_int_t)now_ms(), "kind",
                          "outcome", "request_id", r->id, "result", result, "status", r->status,
                          "bytes", (json_int_t)r->bytes, "upstream_us", (json_int_t)r->up_us);
    static const char *const names[] = {"reserved", "committed", "released", "unknown"};
    if (r->admit.cart)
        sjson_set(e, "spend", json_string(names[spend]));
    struct writer_item *it = writer_item_new(e);
    if (r->admit.cart) {
        if (spend == SPEND_RELEASED)
            state_release(r->w->srv->state, r->admit.spend_key, r->admit.amount);
        writer_item_op(it, WOP_SPEND, r->id, r->admit.spend_key, r->admit.amount, spend);
        it->settles = true;
    }
    if (!writer_submit(r->w->srv->writer, it))
        writer_item_free(it);
}

static void finish(struct request *r, const char *result)
{
    r->up_us = mono_us() - r->up_start_us;
    hist_observe(&r->w->srv->metrics.upstream_us, (uint64_t)r->up_us);
    atomic_fetch_add_explicit(&r->w->srv->metrics.upstream_bytes, r->bytes, memory_order_relaxed);
    /* 2xx: paid. A 4xx/5xx answer: not paid. No answer to a request that was sent: nobody knows,
     * so it keeps counting (SPEC §2.1 step 6). Never sent (refused, failed to start): released. */
    bool ok = strcmp(result, "ok") == 0;
    enum spend_status spend = !ok && r->sent                        ? SPEND_UNKNOWN
                              : !ok                                 ? SPEND_RELEASED
                              : r->status >= 200 && r->status < 300 ? SPEND_COMMITTED
                                                                    : SPEND_RELEASED;
    settle(r, result, spend);
    log_access(r, "allow");
    request_free(r);
}

static void resume_upstream(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct request *r = arg;
    if (r->paused && r->uc) {
        r->paused = false;
        bufferevent_enable(evhttp_connection_get_bufferevent(r->uc->evcon), EV_READ);
    }
}

static int on_up_headers(struct evhttp_request *up, void *arg)
{
    struct request *r = arg;
    r->status = evhttp_request_get_response_code(up);
    if (!r->req)
        return 0; /* client gone: read and discard the answer, then reuse the connection */
    struct evkeyvalq *in = evhttp_request_get_input_headers(up);
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->req);
    bool conn = evhttp_find_header(in, "Connection") != NULL; /* no Connection: no scan */
    for (struct evkeyval *h = in->tqh_first; h; h = h->next.tqe_next) {
        if (hop_by_hop(h->key) || (conn && connection_named(in, h->key)) ||
            strcasecmp(h->key, "Mandate-Receipt") == 0 || strcasecmp(h->key, "X-Request-Id") == 0)
            continue;
        evhttp_add_header(out, h->key, h->value);
    }
    evhttp_add_header(out, "Mandate-Receipt", r->receipt);
    evhttp_add_header(out, "X-Request-Id", r->id);
    evhttp_send_reply_start(r->req, r->status, evhttp_request_get_response_code_line(up));
    r->headers_sent = true;
    return 0;
}

static void on_up_chunk(struct evhttp_request *up, void *arg)
{
    struct request *r = arg;
    struct evbuffer *buf = evhttp_request_get_input_buffer(up);
    size_t n = evbuffer_get_length(buf);
    r->bytes += n;
    if (!r->req) {
        evbuffer_drain(buf, n);
        return;
    }
    evhttp_send_reply_chunk_with_cb(r->req, buf, resume_upstream, r);
    /* Backpressure: a slow client must not make us buffer the whole response. */
    struct bufferevent *cb = evhttp_connection_get_bufferevent(r->client);
    if (evbuffer_get_length(bufferevent_get_output(cb)) > CLIENT_HIGH_WATER && !r->paused) {
        r->paused = true;
        bufferevent_disable(evhttp_connection_get_bufferevent(r->uc->evcon), EV_READ);
    }
}

static void on_up_error(enum evhttp_request_error err, void *arg)
{
    struct request *r = arg;
    r->up_err = err;
    r->up_errored = true;
}

/* Bytes left the upstream output buffer: the request (or part of it) went out. */
static void on_up_written(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    if (info->n_deleted)
        ((struct request *)arg)->sent = true;
}

static void unwatch_sent(struct request *r)
{
    if (r->sent_cb)
        evbuffer_remove_cb_entry(
            bufferevent_get_output(evhttp_connection_get_bufferevent(r->uc->evcon)), r->sent_cb);
    r->sent_cb = NULL;
}

static void on_up_done(struct evhttp_request *up, void *arg)
{
    struct request *r = arg;
    bool failed = !up || evhttp_request_get_response_code(up) == 0 || r->up_errored;
    r->up = NULL;
    unwatch_sent(r);
    if (!failed) {
        upstream_release(r->w->pools, r->uc, true);
        r->uc = NULL;
        if (r->req) {
            last_reply(r);
            evhttp_send_reply_end(r->req);
            r->req = NULL;
        }
        finish(r, "ok");
        return;
    }
    bool reused = r->uc->reused;
    upstream_release(r->w->pools, r->uc, false);
    r->uc = NULL;
    /* A pooled connection that was closed under us before any answer: once, on a new one. */
    if (!r->headers_sent && r->bytes == 0 && reused && !r->retried && r->req &&
        (!r->up_errored || r->up_err == EVREQ_HTTP_EOF) && retryable(r)) {
        r->retried = true;
        forward(r);
        return;
    }
    bool timeout = r->up_errored && r->up_err == EVREQ_HTTP_TIMEOUT;
    if (!r->headers_sent) {
        send_error(r, timeout ? CODE_UPSTREAM_TIMEOUT : CODE_UPSTREAM_UNAVAILABLE, 0);
    } else if (r->req) {
        /* Mid-body failure: the only honest signal left is to cut the connection. */
        struct evhttp_connection *c = r->client;
        evhttp_connection_set_closecb(c, NULL, NULL);
        r->client = NULL;
        r->req = NULL;
        evhttp_connection_free(c);
    }
    finish(r, timeout ? "timeout" : "error");
}

static void add_forward_headers(struct request *r, struct evkeyvalq *out)
{
    const struct mandate *m = &r->v.m;
    const struct merchant *mc = r->route->merchant;
    evhttp_add_header(out, "Host", mc->upstream_hostport);
    evhttp_add_header(out, "Mandate-Principal", m->sub);
    evhttp_add_header(out, "Mandate-Agent", m->agent);
    evhttp_add_header(out, "Mandate-Action", r->route->action);
    if (r->v.has_cart) {
        char amount[40];
        money_format(&r->v.cart.total, amount, sizeof(amount));
        evhttp_add_header(out, "Mandate-Amount", amount);
    }
    evhttp_add_header(out, "Mandate-Receipt", r->receipt);
    evhttp_add_header(out, "X-Request-Id", r->id);
    char *peer = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(r->client, &peer, &port);
    const char *host = evhttp_find_header(evhttp_request_get_input_headers(r->req), "Host");
    char fwd[512];
    snprintf(fwd, sizeof(fwd), "for=\"%s%s%s:%u\";proto=http%s%s%s",
             peer && strchr(peer, ':') ? "[" : "", peer ? peer : "unknown",
             peer && strchr(peer, ':') ? "]" : "", port, host ? ";host=\"" : "",
             host && strlen(host) < 200 && !strpbrk(host, "\"\\") ? host : "", host ? "\"" : "");
    evhttp_add_header(out, "Forwarded", fwd);
    evhttp_add_header(out, "Connection", "keep-alive");
}

static void forward(struct request *r)
{
    const struct merchant *mc = r->route->merchant;
    if (!r->up_start_us)
        r->up_start_us = mono_us();
    r->uc = upstream_acquire(r->w->pools, mc->upstream_host, mc->upstream_port,
                             r->conf->upstream_timeout_ms, r->retried);
    r->up_errored = false;
    r->up = evhttp_request_new(on_up_done, r);
    evhttp_request_set_header_cb(r->up, on_up_headers);
    evhttp_request_set_chunked_cb(r->up, on_up_chunk);
    evhttp_request_set_error_cb(r->up, on_up_error);
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->req);
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->up);
    bool conn = evhttp_find_header(in, "Connection") != NULL; /* no Connection: no scan */
    for (struct evkeyval *h = in->tqh_first; h; h = h->next.tqe_next) {
        if (hop_by_hop(h->key) || (conn && connection_named(in, h->key)) ||
            strcasecmp(h->key, "Authorization") == 0 || strncasecmp(h->key, "Mandate-", 8) == 0 ||
            strcasecmp(h->key, "X-Request-Id") == 0 || strcasecmp(h->key, "Forwarded") == 0 ||
            strcasecmp(h->key, "Host") == 0 || strcasecmp(h->key, "Content-Length") == 0)
            continue;
        evhttp_add_header(out, h->key, h->value);
    }
    add_forward_headers(r, out);
    struct evbuffer *body = evhttp_request_get_input_buffer(r->req);
    size_t len = evbuffer_get_length(body);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(r->req);
    if (len || cmd == EVHTTP_REQ_POST || cmd == EVHTTP_REQ_PUT || cmd == EVHTTP_REQ_PATCH) {
        char cl[24];
        snprintf(cl, sizeof(cl), "%zu", len);
        evhttp_add_header(out, "Content-Length", cl);
        /* Copy, not move: a retry needs the body again. */
        evbuffer_add(evhttp_request_get_output_buffer(r->up), evbuffer_pullup(body, -1), len);
    }
    struct evbuffer *upout =
        bufferevent_get_output(evhttp_connection_get_bufferevent(r->uc->evcon));
    r->sent_cb = evbuffer_add_cb(upout, on_up_written, r);
    if (evhttp_make_request(r->uc->evcon, r->up, cmd, evhttp_request_get_uri(r->req)) != 0) {
        unwatch_sent(r);
        /* evhttp has freed r->up and will not call back */
        r->up = NULL;
        upstream_release(r->w->pools, r->uc, false);
        r->uc = NULL;
        send_error(r, CODE_UPSTREAM_UNAVAILABLE, 0);
        finish(r, "error");
    }
}

static void new_request_id(char out[33])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1)
        abort();
    hex_encode(b, sizeof(b), out);
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct worker *w = arg;
    struct request *r = xcalloc(1, sizeof(*r));
    r->w = w;
    r->req = req;
    r->client = evhttp_request_get_connection(req);
    r->start_us = mono_us();
    r->conf = config_ref(worker_config(w));
    w->inflight++;
    atomic_fetch_add_explicit(&w->srv->metrics.requests, 1, memory_order_relaxed);
    new_request_id(r->id);
    snprintf(r->method, sizeof(r->method), "%s", method_name(evhttp_request_get_command(req)));
    const char *uri = evhttp_request_get_uri(req);
    r->path = xstrndup(uri, strcspn(uri, "?#"));
    evhttp_connection_set_closecb(r->client, on_client_close, r);

    if (atomic_load(&w->srv->draining)) {
        deny(r, CODE_UNAVAILABLE, 0);
        return;
    }
    enum code code = check_http(r);
    if (code != CODE_OK) {
        deny(r, code, 0);
        return;
    }
    r->route = route_match(&r->conf->routes, r->method, r->path, strlen(r->path));
    if (!r->route) {
        deny(r, CODE_ROUTE_NOT_FOUND, 0);
        return;
    }
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    code = enforce(r->conf, r->route, evhttp_find_header(in, "Authorization"),
                   evhttp_find_header(in, "Mandate-Cart"), now_s(), w->vcache, &r->v);
    if (code != CODE_OK) {
        deny(r, code, 0);
        return;
    }
    struct admit *a = &r->admit;
    a->m = &r->v.m;
    if (r->v.has_cart) {
        const struct mandate *p = &r->v.m;
        a->cart = &r->v.cart;
        a->amount = p->total.value;
        a->cap = p->cap.value;
        cap_key(p->iss, p->sub, &p->cap, p->cap_period, now_s(), a->spend_key);
    }
    /* Below the free-space watermark no allow is taken: the log must never end mid-entry. */
    if (writer_disk_low(w->srv->writer)) {
        deny(r, CODE_UNAVAILABLE, 0);
        return;
    }
    code = state_admit(w->srv->state, a, r->start_us, now_s());
    if (code != CODE_OK) {
        deny(r, code, a->retry_after_s);
        return;
    }

    /* Allow: the entry and the consumed jti commit before a byte goes upstream. */
    r->code = CODE_OK;
    r->check_us = mono_us() - r->start_us;
    hist_observe(&w->srv->metrics.check_us, (uint64_t)r->check_us);
    count(r);
    struct writer_item *it = writer_item_new(decision_entry(r));
    char *tok = xstrndup(r->v.token, r->v.token_len);
    writer_item_add_jws(it, tok, r->v.m.sha256);
    free(tok);
    writer_item_op(it, WOP_JTI, r->v.m.iss, r->v.m.jti, r->v.m.exp, a->used);
    if (a->cart) {
        tok = xstrndup(r->v.cart_token, r->v.cart_len);
        writer_item_add_jws(it, tok, r->v.cart.sha256);
        free(tok);
        writer_item_op(it, WOP_JTI, a->cart->iss, a->cart->jti, a->cart->exp, 1);
        writer_item_op(it, WOP_SPEND, r->id, a->spend_key, a->amount, SPEND_RESERVED);
    }
    it->mb = &w->mb;
    it->done = on_durable;
    it->arg = r;
    if (!writer_submit(w->srv->writer, it)) {
        it->ok = false;
        on_durable(it);
    }
}

void proxy_setup(struct worker *w)
{
    struct config *c = w->conf;
    evhttp_set_gencb(w->http, handle, w);
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH |
                                            EVHTTP_REQ_OPTIONS);
    /* evhttp's own limits sit above ours, so that most oversize requests reach check_http() and
     * get SPEC's JSON answer; beyond them evhttp answers (or drops) by itself. */
    evhttp_set_max_headers_size(w->http, c->max_header_bytes * 4);
    evhttp_set_max_body_size(w->http, c->max_body_bytes * 2 + 4096);
    evhttp_set_timeout(w->http, CLIENT_TIMEOUT_S);
}
