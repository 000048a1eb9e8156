/*
 * proxy: the request lifecycle of the mandate-enforcing reverse proxy.
 *
 * One struct request per request, one allocation holding it, a copy of its head (the parsed
 * slices point into it) and its header array. The client's body is read only after the allow is
 * durable, and streamed: Content-Length bodies are moved as they are, chunked bodies decoded and
 * re-chunked (extensions and trailers dropped). The merchant's answer is parsed strictly, interim
 * 1xx answers relayed, and its body streamed back with the same framing rules. Backpressure both
 * ways: a side whose output passes HIGH_WATER stops the other side's reads until it is flushed.
 */
#include "gateway/proxy.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/rand.h>

#include "audit/entry.h"
#include "core/httpsig.h"
#include "core/log.h"
#include "core/sjson.h"
#include "gateway/accesslog.h"
#include "gateway/backend.h"
#include "gateway/conn.h"
#include "gateway/enforce.h"
#include "gateway/mcp.h"
#include "gateway/tls.h"
#include "gateway/upstream.h"
#include "gateway/worker.h"

#define HIGH_WATER (256 * 1024) /* pause the sending side above this much unsent */

enum body_kind { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE };

struct request {
    struct decision d; /* what was decided (the id, route, verdict, admission, receipt) */
    struct worker *w;
    struct conn *c; /* NULL once the client is gone */
    struct config *conf;
    char method[16];
    char *path; /* NUL-terminated copy of the raw path */
    char *head; /* the request head as received (hp's slices point here) */
    struct hp_request hp;
    int status;
    uint64_t bytes;
    int64_t up_start_us, up_us;
    char tls_client[256]; /* the client certificate's subject, for the access log */
    /* the client's body */
    enum body_kind body;
    int64_t body_left; /* BODY_LENGTH: bytes still to read */
    struct hp_chunked body_dec;
    bool body_reading, body_done;
    struct evbuffer *held; /* a PoP body read before the decision (SPEC §7), or NULL; its
                              Content-Digest check is d.digest */
    /* the merchant */
    struct upconn *uc;
    struct evbuffer_cb_entry *sent_cb;
    bool sent;         /* a byte of the request left for the merchant */
    bool retried;      /* sent once more on a new connection (SPEC §5) */
    bool resp_started; /* a byte of the answer arrived */
    bool head_sent;    /* the answer's head went to the client */
    struct hp_response resp;
    enum body_kind resp_body;
    int64_t resp_left;
    struct hp_chunked resp_dec;
    bool rechunk;     /* the client gets the body chunked (it came chunked or close-delimited) */
    bool client_keep; /* the client connection stays open after this answer */
    bool up_paused;   /* the merchant's reads wait for the client to drain */
    struct evbuffer *collect, *collect_head; /* sign_cart: the answer, held to sign its cart */
    /* an MCP route (SPEC §8): its body is held and classified before the checks */
    const struct route *mcp_route;
    bool mcp_classified; /* the held body was classified */
    bool mcp_open;       /* an open method: forwarded without a mandate or a decision entry */
    char *rpc_id;        /* the JSON-RPC id of denials ("null" when NULL) */
    int rpc_code;        /* the JSON-RPC error code of a denial */
    bool pooled;         /* a REQUEST_BLOCK block: back to the worker's pool when done */
};

/* A request block from the worker's pool holds the struct and a head of ~3 KiB with its headers
 * and path (most heads); a larger head gets a block of its own size, freed when done. */
#define REQUEST_BLOCK 8192
_Static_assert(sizeof(struct request) + 3072 <= REQUEST_BLOCK, "room for a head in a pooled block");

static void forward(struct request *r);
static void finish(struct request *r, const char *result);
static void cut_client(struct request *r);
static void start_body(struct request *r);
static void count(struct worker *w, enum code code);
static void log_access(struct request *r, const char *decision);

/* --- ids, counting, logging --------------------------------------------------------------- */

void proxy_new_request_id(struct worker *w, char id[33])
{
    /* 24 hex digits: a random 64-bit prefix and a 32-bit counter. Unique across workers and
     * restarts (the prefix is drawn when the worker starts, and again whenever the counter wraps),
     * no RAND_bytes (nor its getpid) per request, and 8 bytes shorter in every entry than a
     * 128-bit id: the per-client denial budget's entries fill 13 to a database page, not 12. */
    static const char hex[] = "0123456789abcdef";
    if ((uint32_t)w->id_counter == 0 &&
        RAND_bytes((unsigned char *)&w->id_prefix, sizeof(w->id_prefix)) != 1)
        abort();
    uint64_t prefix = w->id_prefix;
    uint32_t n = (uint32_t)w->id_counter++;
    for (int j = 0; j < 16; j++)
        id[j] = hex[(prefix >> (60 - 4 * j)) & 15];
    for (int j = 0; j < 8; j++)
        id[16 + j] = hex[(n >> (28 - 4 * j)) & 15];
    id[24] = '\0';
}

struct hp_request *proxy_scratch_request(struct worker *w, const struct hp_limits *lim)
{
    if (w->scratch_cap < lim->max_headers) {
        free(w->scratch_headers);
        w->scratch_headers = xcalloc(lim->max_headers, sizeof(struct hp_header));
        w->scratch_cap = lim->max_headers;
    }
    w->scratch.headers = w->scratch_headers;
    return &w->scratch;
}

static void count(struct worker *w, enum code code)
{
    atomic_fetch_add_explicit(&w->srv->metrics.decisions[code], 1, memory_order_relaxed);
}

/* A decision of the core, by the surface it came through (SPEC §8). */
static void count_surface(const struct decision *d, bool allow)
{
    atomic_fetch_add_explicit(&d->w->srv->metrics.by_surface[metrics_surface(d->surface)][!allow],
                              1, memory_order_relaxed);
}

static void log_access(struct request *r, const char *decision)
{
    if (r->d.summarised)
        return; /* in the client's access_summary line (server.c) */
    const struct mandate *m = &r->d.v.m;
    struct access a = {r->d.id,
                       r->method,
                       r->path,
                       r->d.route ? r->d.route->path : "",
                       r->d.route ? r->d.route->merchant->id : "",
                       r->d.route ? r->d.route->action : "",
                       m->sub,
                       m->agent,
                       decision,
                       code_name(r->d.code),
                       r->tls_client,
                       r->status,
                       r->bytes,
                       r->d.check_us,
                       r->up_us,
                       r->d.surface};
    accesslog_write(&r->w->alog, &a);
}

void proxy_count_framing(struct conn *c, enum code code, const char *request_id)
{
    atomic_fetch_add_explicit(&c->w->srv->metrics.requests, 1, memory_order_relaxed);
    count(c->w, code);
    struct access a = {
        request_id,        "", "", "", "",  "", "", "", "deny", code_name(code), c->tls_client,
        code_status(code), 0,  0,  0,  NULL};
    accesslog_write(&c->w->alog, &a);
}

/* --- audit entries -------------------------------------------------------------------------- */

/* One of the mandates a decision entry lists. */
static void put_mandate(struct entry_builder *eb, const struct mandate *m)
{
    char sha[65];
    hex_encode(m->sha256, 32, sha);
    entry_open_object(eb, NULL);
    entry_put_str(eb, "iss", m->iss);
    entry_put_str(eb, "jti", m->jti);
    entry_put_str(eb, "kid", m->kid);
    entry_put_str(eb, "sha256", sha);
    entry_put_str(eb, "typ", mandate_typ_name(m->typ));
    entry_close(eb);
}

/* Fields in key order: the builder refuses any other (test_entry holds these to the tree). */
void decision_entry(const struct decision *d, int64_t ts_ms, struct entry_builder *eb)
{
    const struct mandate *m = &d->v.m;
    entry_builder_init(eb);
    entry_put_str(eb, "action", d->route ? d->route->action : "");
    entry_put_str(eb, "agent", m->agent);
    if (d->v.has_cart)
        entry_put_money(eb, "amount", &d->v.cart.total);
    entry_put_str(eb, "code", code_name(d->code));
    entry_put_str(eb, "decision", d->code == CODE_OK ? "allow" : "deny");
    entry_put_str(eb, "kind", "decision");
    entry_open_array(eb, "mandates");
    if (m->jti[0] && m->iss[0])
        put_mandate(eb, m);
    if (d->v.has_cart)
        put_mandate(eb, &d->v.cart);
    entry_close(eb);
    entry_put_str(eb, "merchant", d->route ? d->route->merchant->id : "");
    entry_put_str(eb, "principal", m->sub);
    entry_put_str(eb, "request_id", d->id);
    if (d->surface)
        entry_put_str(eb, "surface", d->surface);
    entry_put_int(eb, "ts_ms", ts_ms);
}

void proxy_outcome_entry(struct entry_builder *eb, int64_t ts_ms, const char *request_id,
                         const char *result, int status, uint64_t bytes, int64_t upstream_us,
                         const char *spend)
{
    entry_builder_init(eb);
    entry_put_int(eb, "bytes", (int64_t)bytes);
    entry_put_str(eb, "kind", "outcome");
    entry_put_str(eb, "request_id", request_id);
    entry_put_str(eb, "result", result);
    if (spend)
        entry_put_str(eb, "spend", spend);
    entry_put_int(eb, "status", status);
    entry_put_int(eb, "ts_ms", ts_ms);
    entry_put_int(eb, "upstream_us", upstream_us);
}

/* The decision's entry as of now, encoded. */
static struct writer_item *decision_item(const struct decision *d)
{
    struct entry_builder eb;
    decision_entry(d, now_ms(), &eb);
    return writer_item_new_built(&eb);
}

/* Write the denial's entry, unless the client's denial budget for this second is spent or the
 * disk is low: then it only counts towards the client's denial_summary (SPEC §5). */
static void audit_denial(struct decision *d)
{
    struct server *srv = d->w->srv;
    if (!flood_denial(srv->flood, d->peer[0] ? d->peer : "unknown", d->code, now_s(),
                      writer_disk_low(srv->writer))) {
        d->summarised = true;
        return;
    }
    struct writer_item *it = decision_item(d);
    if (!writer_submit_lazy(srv->writer, it, &d->w->mb))
        writer_item_free(it); /* the writer counts and logs what it drops */
}

/* The outcome entry; on a priced route it also settles the reservation (SPEC §2.1 step 6). */
static void settle(struct request *r, const char *result, enum spend_status spend)
{
    struct entry_builder eb;
    proxy_outcome_entry(&eb, now_ms(), r->d.id, result, r->status, r->bytes, r->up_us,
                        r->d.admit.cart ? spend_status_name(spend) : NULL);
    struct writer_item *it = writer_item_new_built(&eb);
    if (r->d.admit.cart) {
        backend_settle(r->w->bc, &r->d.admit, r->d.id, spend);
        writer_item_op(it, WOP_SPEND, r->d.id, r->d.admit.spend_key, r->d.admit.amount, spend);
        it->settles = true;
    }
    if (!writer_submit_lazy(r->w->srv->writer, it, &r->w->mb))
        writer_item_free(it);
}

/* --- the request object --------------------------------------------------------------------- */

static void request_free(struct request *r)
{
    if (r->c)
        r->c->req = NULL;
    if (r->held)
        evbuffer_free(r->held);
    if (r->collect)
        evbuffer_free(r->collect);
    if (r->collect_head)
        evbuffer_free(r->collect_head);
    httpsig_digest_clear(&r->d.digest);
    free(r->rpc_id);
    r->w->inflight--;
    config_unref(r->conf);
    struct worker *w = r->w;
    if (r->pooled && w->request_pool_n < WORKER_REQUEST_POOL)
        w->request_pool[w->request_pool_n++] = r;
    else
        free(r);
}

/* A zeroed request with room for n more bytes after it: from the worker's pool when it fits. */
static struct request *request_new(struct worker *w, size_t n)
{
    bool pooled = sizeof(struct request) + n <= REQUEST_BLOCK;
    struct request *r = !pooled                 ? xmalloc(sizeof(*r) + n)
                        : w->request_pool_n > 0 ? w->request_pool[--w->request_pool_n]
                                                : xmalloc(REQUEST_BLOCK);
    memset(r, 0, sizeof(*r)); /* only the struct: what follows is written whole by the caller */
    r->pooled = pooled;
    return r;
}

/* Is the client's body (if any) read to its end, so the connection can carry the next request? */
static bool body_consumed(const struct request *r)
{
    return r->body == BODY_NONE || r->body_done;
}

/* A denial on an MCP route: a JSON-RPC error with the request's id, SPEC §2.2's body as its
 * data, SPEC §2.2's status (SPEC §8). */
static void mcp_reply_error(struct request *r, struct conn *c, enum code code, const char *extra)
{
    char *body = mcp_error_body(r->rpc_id ? r->rpc_id : "null",
                                r->rpc_code ? r->rpc_code : MCP_ERR_DENIED, code, r->d.id);
    size_t n = strlen(body);
    bool keep = r->hp.keep_alive && body_consumed(r);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Cache-Control: no-store\r\nX-Request-Id: %s\r\n%sContent-Length: %zu\r\n"
                        "%s\r\n",
                        r->status, code_reason(r->status), r->d.id, extra, n,
                        !keep              ? "Connection: close\r\n"
                        : r->hp.minor == 0 ? "Connection: keep-alive\r\n"
                                           : "");
    evbuffer_add(out, body, n);
    free(body);
    r->bytes = n;
    conn_request_done(c, keep);
}

/* Answer with SPEC §2.2's JSON body (no audit, no metrics) and end r's use of the client. */
static void send_error(struct request *r, enum code code, int64_t retry_after)
{
    r->status = code_status(code);
    if (!r->c)
        return;
    char extra[128] = "";
    if (r->status == 401)
        snprintf(extra, sizeof(extra), "WWW-Authenticate: Mandate error=\"%s\"\r\n",
                 code_name(code));
    else if (code == CODE_RATE_LIMITED)
        snprintf(extra, sizeof(extra), "Retry-After: %lld\r\n",
                 (long long)(retry_after > 0 ? retry_after : 1));
    struct conn *c = r->c;
    r->c = NULL;
    c->req = NULL;
    if (r->mcp_route) {
        mcp_reply_error(r, c, code, extra);
        return;
    }
    /* A body we did not read stays unread: the connection cannot find the next request. */
    r->bytes = conn_reply_error(c, r->status, code_name(code), code_message(code), r->d.id, extra,
                                r->hp.keep_alive && body_consumed(r));
}

/* A denial of the proxy's own (before or outside the decision core's checks). */
static void deny(struct request *r, enum code code, int64_t retry_after)
{
    decision_deny(&r->d, code, retry_after);
}

/* A header's value as a NUL-terminated string inside r's head copy, or NULL. */
static const char *header(struct request *r, const char *name)
{
    struct hp_str v;
    if (!hp_header(&r->hp, name, &v))
        return NULL;
    ((char *)v.p)[v.n] = '\0'; /* the byte after a value is OWS or CR: never part of a slice */
    return v.p;
}

/* --- deciding (the core every surface shares) ----------------------------------------------- */

void decision_deny(struct decision *d, enum code code, int64_t retry_after)
{
    d->code = code;
    d->retry_after_s = retry_after;
    d->check_us = mono_us() - d->start_us;
    hist_observe(&d->w->srv->metrics.check_us, (uint64_t)d->check_us);
    if (log_min_level <= LOG_DEBUG && d->v.m.kid[0]) {
        char ref[96];
        mandate_ref(&d->v.m, ref, sizeof(ref));
        log_write(LOG_DEBUG, d->id, "deny %s: mandate %s", code_name(code), ref);
    }
    if (code != CODE_BODY_TOO_LARGE &&
        code != CODE_BAD_REQUEST) /* framing: no mandate to account */
        audit_denial(d);
    count(d->w, code);
    count_surface(d, false);
    d->done(d);
}

static void on_durable(struct writer_item *it);
static void on_admitted(void *arg, enum code code);

void decision_admit(struct decision *d)
{
    struct worker *w = d->w;
    struct admit *a = &d->admit;
    a->m = &d->v.m;
    if (d->v.has_cart) {
        const struct mandate *p = &d->v.m;
        a->cart = &d->v.cart;
        a->amount = p->total.value;
        a->cap = p->cap.value;
        cap_key(p->iss, p->sub, &p->cap, p->cap_period, now_s(), a->spend_key);
    }
    /* Below the free-space watermark no allow is taken: the log must never end mid-entry. */
    if (writer_disk_low(w->srv->writer)) {
        decision_deny(d, CODE_UNAVAILABLE, 0);
        return;
    }
    d->waiting_durable = true; /* the backend may answer later */
    backend_admit(w->bc, a, d->id, d->start_us, now_s(), on_admitted, d);
}

/* The backend's answer: deny, or write the allow's entry and wait until it is durable. */
static void on_admitted(void *arg, enum code code)
{
    struct decision *d = arg;
    struct worker *w = d->w;
    struct admit *a = &d->admit;
    d->waiting_durable = false;
    if (code != CODE_OK) {
        decision_deny(d, code, a->retry_after_s);
        return;
    }
    /* Allow: the entry and the consumed jti commit before a byte goes upstream. */
    d->code = CODE_OK;
    d->check_us = mono_us() - d->start_us;
    hist_observe(&w->srv->metrics.check_us, (uint64_t)d->check_us);
    count(w, CODE_OK);
    count_surface(d, true);
    struct writer_item *it = decision_item(d);
    char *tok = xstrndup(d->v.token, d->v.token_len);
    writer_item_add_jws(it, tok, d->v.m.sha256);
    free(tok);
    writer_item_op(it, WOP_JTI, d->v.m.iss, d->v.m.jti, d->v.m.exp, a->used);
    if (a->cart) {
        tok = xstrndup(d->v.cart_token, d->v.cart_len);
        writer_item_add_jws(it, tok, d->v.cart.sha256);
        free(tok);
        writer_item_op(it, WOP_JTI, a->cart->iss, a->cart->jti, a->cart->exp, 1);
        /* A decision surface's allow is paid as it is given: nothing reports an outcome. */
        writer_item_op(it, WOP_SPEND, d->id, a->spend_key, a->amount,
                       d->commit_spend ? SPEND_COMMITTED : SPEND_RESERVED);
    }
    it->mb = &w->mb;
    /* With nothing else in flight this worker may commit the allow itself when the writer is
     * idle (audit/writer.h: leader and follower): no thread hop at one request at a time. */
    w->mb.may_lead = w->inflight == 1;
    it->done = on_durable;
    it->arg = d;
    d->waiting_durable = true;
    if (!writer_submit(w->srv->writer, it)) {
        it->ok = false;
        on_durable(it);
    }
}

/* After the entry is durable (or the commit failed): done(), or a 503 having consumed nothing. */
static void on_durable(struct writer_item *it)
{
    struct decision *d = it->arg;
    bool ok = it->ok;
    d->waiting_durable = false;
    if (ok) {
        int n = snprintf(d->receipt, sizeof(d->receipt), "%llu:", (unsigned long long)it->seq);
        hex_encode(it->leaf, 32, d->receipt + n);
    }
    writer_item_free(it);
    if (!ok) {
        /* Nothing was forwarded: give back what was consumed and say the store failed. */
        backend_undo(d->w->bc, &d->admit, d->id);
        d->code = CODE_UNAVAILABLE;
        count(d->w, CODE_UNAVAILABLE);
    } else if (d->commit_spend && d->admit.cart) {
        /* A decision surface's allow is paid as it is given (its entry says committed). */
        backend_settle(d->w->bc, &d->admit, d->id, SPEND_COMMITTED);
    }
    d->done(d);
}

/* --- proof of possession (SPEC §7) --------------------------------------------------------- */

/* The agent key of a cnf claim, parsed once per worker (a P-256 point costs tens of µs). */
static const struct jwk *pop_key(struct worker *w, const struct mandate *m)
{
    struct pop_slot *slot = &w->pop[(unsigned char)m->cnf_thumb[0] % WORKER_POP_SLOTS];
    if (slot->used && strcmp(slot->key.kid, m->cnf_thumb) == 0)
        return &slot->key;
    json_t *jwk = json_loads(m->cnf_jwk, 0, NULL);
    struct jwk key;
    char *err = NULL;
    int rc = jwk ? httpsig_jwk_from_cnf(jwk, &key, &err) : -1;
    json_decref(jwk);
    free(err);
    if (rc != 0)
        return NULL; /* it parsed when the mandate was verified: not expected */
    if (slot->used)
        jwk_clear(&slot->key);
    slot->key = key;
    slot->used = true;
    return &slot->key;
}

/* Every value of header name (lower case) for the signature base, NUL-terminated in place. */
static size_t pop_field(void *ctx, const char *name, const char **vals, size_t max)
{
    struct hp_request *hp = ctx;
    size_t n = 0;
    for (size_t i = 0; hp && i < hp->n_headers && n < max; i++) {
        struct hp_header *h = &hp->headers[i];
        if (hp_str_ieq(h->name, name)) {
            ((char *)h->value.p)[h->value.n] = '\0';
            vals[n++] = h->value.p;
        }
    }
    return n;
}

/* Check the request's signature by the mandate's cnf key; on OK the nonce is consumed and, when
 * the body is covered, *hold says to read it and check its Content-Digest before going on. */
static enum code check_pop(struct decision *d, bool *hold)
{
    const struct mandate *m = &d->v.m;
    *hold = false;
    if (!m->has_cnf)
        return d->route->merchant->require_pop ? CODE_SIGNATURE_MISSING : CODE_OK;
    if (d->no_pop)
        return CODE_SIGNATURE_MISSING;
    const struct jwk *key = pop_key(d->w, m);
    if (!key)
        return CODE_SIGNATURE_INVALID;
    const char *required[7] = {"@method", "@authority", "@path", "@query", "authorization"};
    size_t n = 5;
    if (d->cart)
        required[n++] = "mandate-cart";
    if (d->has_body)
        required[n++] = "content-digest";
    if (d->query.p)
        ((char *)d->query.p)[d->query.n] = '\0'; /* the target's end: printed by length */
    struct httpsig_msg msg = {.method = d->method,
                              .scheme = d->https ? "https" : "http",
                              .authority = d->authority,
                              .path = d->path,
                              .query = d->query.p,
                              .field = pop_field,
                              .ctx = d->hp};
    struct httpsig_policy pol = {.required = required,
                                 .n_required = n,
                                 .need = HTTPSIG_NEED_ALL,
                                 .keyid = m->cnf_thumb,
                                 .max_window_s = 60,
                                 .skew_s = d->conf->mandate_limits.clock_skew_s};
    struct httpsig_result res;
    int64_t now_unix_s = now_s();
    enum httpsig_status st = httpsig_verify(&msg, "mandate", key, &pol, now_unix_s, &res);
    if (st != HTTPSIG_OK) {
        log_write(LOG_DEBUG, d->id, "request signature: %s", res.reason);
        return st == HTTPSIG_MISSING ? CODE_SIGNATURE_MISSING : CODE_SIGNATURE_INVALID;
    }
    if (!state_nonce(d->w->srv->state, res.keyid, res.nonce, res.expires, now_unix_s))
        return CODE_SIGNATURE_REPLAYED;
    if (res.covers_digest) {
        if (!d->hold) {
            log_write(LOG_DEBUG, d->id,
                      "request signature: a covered content-digest cannot be checked here");
            return CODE_SIGNATURE_INVALID;
        }
        struct hp_str cd;
        const char *why;
        if (!d->hp || !hp_header(d->hp, "content-digest", &cd) ||
            httpsig_digest_begin(&d->digest, cd.p, cd.n, &why) != 0)
            return CODE_SIGNATURE_INVALID;
        *hold = true;
    }
    return CODE_OK;
}

void decision_run(struct decision *d)
{
    if (!d->route)
        d->route = route_match(&d->conf->routes, d->method, d->path, d->path_n);
    if (!d->route) {
        decision_deny(d, CODE_ROUTE_NOT_FOUND, 0);
        return;
    }
    /* An MCP route's action is its tool's, named in the JSON-RPC body: the proxy decides on the
     * tool's route; a surface that routed here (AuthZEN, forward-auth) cannot know the tool. */
    if (d->route->mcp) {
        decision_deny(d, CODE_TOOL_NOT_ALLOWED, 0);
        return;
    }
    enum code code =
        enforce(d->conf, d->route, d->authorization, d->cart, now_s(), d->w->vcache, &d->v);
    if (code == CODE_OK && d->check)
        code = d->check(d);
    bool hold = false;
    if (code == CODE_OK)
        code = check_pop(d, &hold);
    if (code != CODE_OK) {
        decision_deny(d, code, 0);
        return;
    }
    if (hold) {
        d->hold(d);
        return;
    }
    decision_admit(d);
}

void proxy_header(struct sb *b, const char *name, size_t name_n, const char *value, size_t value_n)
{
    sb_putn(b, name, name_n);
    sb_putn(b, ": ", 2);
    sb_putn(b, value, value_n);
    sb_putn(b, "\r\n", 2);
}

void decision_mandate_headers(const struct decision *d, struct sb *b)
{
    const struct mandate *m = &d->v.m;
    proxy_header_str(b, "Mandate-Principal", m->sub);
    proxy_header_str(b, "Mandate-Agent", m->agent);
    proxy_header_str(b, "Mandate-Action", d->route->action);
    /* Which mandates these are, so the merchant can tie an order to its quote and its payment. */
    if (m->typ == MANDATE_INTENT)
        proxy_header_str(b, "Mandate-Intent-Id", m->jti);
    if (d->v.has_cart) {
        char amount[40];
        money_format(&d->v.cart.total, amount, sizeof(amount));
        proxy_header_str(b, "Mandate-Amount", amount);
        proxy_header_str(b, "Mandate-Payment-Id", m->jti);
        proxy_header_str(b, "Mandate-Cart-Id", d->v.cart.jti);
        if (d->v.cart.intent[0])
            proxy_header_str(b, "Mandate-Intent-Id", d->v.cart.intent);
    }
}

/* --- the proxy's side of a decision ---------------------------------------------------------- */

/* The decision is made: forward an allow, answer a denial. */
static void proxy_decided(struct decision *d)
{
    struct request *r = d->arg;
    if (r->c)
        conn_set_flooding(r->c, d->summarised);
    if (d->code != CODE_OK) {
        send_error(r, d->code, d->retry_after_s);
        log_access(r, "deny");
        request_free(r);
        return;
    }
    if (!r->c) {
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

/* A covered body is read whole (at most max_body_bytes) before the admission. */
static void proxy_hold(struct decision *d)
{
    struct request *r = d->arg;
    r->held = evbuffer_new();
    start_body(r);
}

/* A PoP body is read whole (at most max_body_bytes): its digest decides, then the admission. */
static void mcp_classify_held(struct request *r);

static void body_held(struct request *r)
{
    conn_read_timeout(r->c, NULL);
    if (r->mcp_route && !r->mcp_classified) {
        mcp_classify_held(r);
        return;
    }
    if (httpsig_digest_end(&r->d.digest) != 0) {
        log_write(LOG_DEBUG, r->d.id, "request signature: Content-Digest does not match the body");
        deny(r, CODE_SIGNATURE_INVALID, 0);
        return;
    }
    decision_admit(&r->d);
}

/* An MCP body was held before the checks: a covered Content-Digest is checked over it, then the
 * admission (the decision core's hold step). */
static void mcp_hold(struct decision *d)
{
    struct request *r = d->arg;
    size_t n = evbuffer_get_length(r->held);
    httpsig_digest_update(&d->digest, evbuffer_pullup(r->held, (ev_ssize_t)n), n);
    if (httpsig_digest_end(&d->digest) != 0) {
        log_write(LOG_DEBUG, d->id, "request signature: Content-Digest does not match the body");
        decision_deny(d, CODE_SIGNATURE_INVALID, 0);
        return;
    }
    decision_admit(d);
}

/* The JSON-RPC body of an MCP route is held: open methods go on without a mandate, a listed
 * tool is decided with its own action, anything else is denied (SPEC §8). */
static void mcp_classify_held(struct request *r)
{
    struct decision *d = &r->d;
    r->mcp_classified = true;
    size_t n = r->held ? evbuffer_get_length(r->held) : 0;
    const char *p = n ? (const char *)evbuffer_pullup(r->held, (ev_ssize_t)n) : "";
    struct mcp_call call;
    mcp_classify(r->mcp_route->mcp, p, n, header(r, "mcp-method"), header(r, "mcp-name"), &call);
    r->rpc_id = call.id;
    d->route = r->mcp_route;
    switch (call.verdict) {
    case MCP_DENY:
        r->rpc_code = call.rpc_code;
        deny(r, call.code, 0);
        return;
    case MCP_OPEN:
        r->mcp_open = true;
        d->code = CODE_OK;
        atomic_fetch_add_explicit(&r->w->srv->metrics.mcp_open, 1, memory_order_relaxed);
        if (!r->held)
            r->held = evbuffer_new();
        forward(r);
        return;
    case MCP_TOOL:
        d->route = &call.tool->route;
        d->hold = mcp_hold;
        decision_run(d);
        return;
    }
}

void proxy_begin(struct conn *c, const char *buf, size_t head_len)
{
    struct worker *w = c->w;
    struct config *conf = worker_config(w);
    struct hp_request *scratch = &w->scratch;
    size_t path_n = scratch->path.n, nh = scratch->n_headers;
    /* One block: the request, then its headers, head and path. */
    struct request *r = request_new(w, nh * sizeof(struct hp_header) + head_len + 1 + path_n + 1);
    r->hp.headers = (struct hp_header *)(r + 1);
    r->head = (char *)(r->hp.headers + nh);
    r->path = r->head + head_len + 1;
    memcpy(r->head, buf, head_len);
    r->head[head_len] = '\0';
    hp_request_move(scratch, buf, &r->hp, r->head); /* before the drain: buf is still the input */
    evbuffer_drain(bufferevent_get_input(c->bev), head_len);
    memcpy(r->path, r->hp.path.p, path_n);
    r->path[path_n] = '\0';
    size_t method_n =
        r->hp.method_str.n < sizeof(r->method) - 1 ? r->hp.method_str.n : sizeof(r->method) - 1;
    memcpy(r->method, r->hp.method_str.p, method_n); /* NUL-terminated by the memset */
    r->w = w;
    r->c = c;
    c->req = r;
    if (c->tls_client[0])
        memcpy(r->tls_client, c->tls_client, sizeof(r->tls_client));
    r->conf = config_ref(conf);
    r->d.start_us = mono_us();
    w->inflight++;
    atomic_fetch_add_explicit(&w->srv->metrics.requests, 1, memory_order_relaxed);
    proxy_new_request_id(w, r->d.id);
    r->body = r->hp.chunked ? BODY_CHUNKED : r->hp.content_length > 0 ? BODY_LENGTH : BODY_NONE;
    r->body_left = r->hp.content_length;
    struct decision *d = &r->d;
    d->w = w;
    d->conf = r->conf;
    d->method = r->method;
    d->path = r->path;
    d->path_n = path_n;
    d->query = r->hp.query;
    d->https = c->tls;
    d->hp = &r->hp;
    d->has_body = r->body != BODY_NONE;
    _Static_assert(sizeof(d->peer) == sizeof(c->peer), "the client address is copied whole");
    memcpy(d->peer, c->peer, sizeof(d->peer));
    d->hold = proxy_hold;
    d->done = proxy_decided;
    d->arg = r;

    const struct route *rt = route_match(&conf->routes, d->method, d->path, d->path_n);
    if (rt && rt->mcp) {
        r->mcp_route = rt;
        d->surface = "mcp";
    }
    if (atomic_load(&w->srv->draining)) {
        deny(r, CODE_UNAVAILABLE, 0);
        return;
    }
    /* SPEC §5: a declared body over the limit is refused before the mandate is looked at. */
    if (r->hp.content_length > conf->max_body_bytes) {
        deny(r, CODE_BODY_TOO_LARGE, 0);
        return;
    }
    d->authorization = header(r, "authorization");
    d->cart = header(r, "mandate-cart");
    d->authority = header(r, "host");
    if (r->mcp_route) {
        /* The tool is named in the body: it is read (at most max_body_bytes) before the checks. */
        if (r->body == BODY_NONE) {
            mcp_classify_held(r);
            return;
        }
        r->held = evbuffer_new();
        start_body(r);
        return;
    }
    decision_run(d);
}

/* --- the request to the merchant ------------------------------------------------------------ */

/* RFC 9110 §7.6.1 hop-by-hop fields, never forwarded either way, and the fields we set
 * ourselves (framing) or must never pass on. */
static bool hop_by_hop(struct hp_str name)
{
    static const char *const hop[] = {"connection",
                                      "keep-alive",
                                      "proxy-connection",
                                      "proxy-authenticate",
                                      "proxy-authorization",
                                      "te",
                                      "trailer",
                                      "transfer-encoding",
                                      "upgrade",
                                      "content-length"};
    for (size_t i = 0; i < ARRAY_LEN(hop); i++)
        if (hp_str_ieq(name, hop[i]))
            return true;
    return false;
}

/* Is name listed in a Connection header of h[0..n)? */
static bool connection_named(const struct hp_header *h, size_t n, struct hp_str name)
{
    struct hp_tokens it;
    struct hp_str tok;
    hp_tokens_init(&it, h, n, "connection");
    while (hp_tokens_next(&it, &tok))
        if (tok.n == name.n && strncasecmp(tok.p, name.p, name.n) == 0)
            return true;
    return false;
}

/* The client's headers that the merchant may see: no credentials, no spoofable Mandate-*,
 * X-Request-Id or Forwarded, no Host (the merchant's own goes instead), no Expect (we answer
 * 100-continue ourselves). */
static bool forwardable(const struct request *r, struct hp_str name)
{
    static const char *const ours[] = {"authorization", "x-request-id", "forwarded", "host",
                                       "expect"};
    if (hop_by_hop(name) || connection_named(r->hp.headers, r->hp.n_headers, name) ||
        (name.n >= 8 && strncasecmp(name.p, "mandate-", 8) == 0))
        return false;
    for (size_t i = 0; i < ARRAY_LEN(ours); i++)
        if (hp_str_ieq(name, ours[i]))
            return false;
    return true;
}

/* Forwarded: for="<peer>:<port>";proto=<scheme>[;host="<Host>"] (RFC 7239). */
static void forwarded_header(struct request *r, struct sb *b)
{
    struct hp_str host = r->hp.host;
    bool host_ok =
        host.p && host.n < 200 && !memchr(host.p, '"', host.n) && !memchr(host.p, '\\', host.n);
    bool v6 = strchr(r->c->peer, ':') != NULL;
    sb_puts(b, v6 ? "Forwarded: for=\"[" : "Forwarded: for=\"");
    sb_puts(b, r->c->peer);
    sb_puts(b, v6 ? "]:" : ":");
    sb_int(b, r->c->peer_port);
    sb_puts(b, r->c->tls ? "\";proto=https" : "\";proto=http");
    if (host_ok) {
        sb_puts(b, ";host=\"");
        sb_putn(b, host.p, host.n);
        sb_putn(b, "\"", 1);
    }
    sb_putn(b, "\r\n", 2);
}

/* A Content-Length header. */
static void length_header(struct sb *b, int64_t n)
{
    sb_puts(b, "Content-Length: ");
    sb_int(b, n);
    sb_putn(b, "\r\n", 2);
}

/* The head for the merchant, built whole and added to its output at once. */
static void write_request_head(struct request *r, struct evbuffer *out)
{
    const struct merchant *mc = r->d.route->merchant;
    struct sb *b = &r->w->head;
    sb_reset(b);
    sb_puts(b, r->method);
    sb_putn(b, " ", 1);
    sb_putn(b, r->hp.target.p, r->hp.target.n);
    sb_puts(b, " HTTP/1.1\r\n");
    proxy_header_str(b, "Host", mc->upstream_hostport);
    for (size_t i = 0; i < r->hp.n_headers; i++) {
        const struct hp_header *h = &r->hp.headers[i];
        if (forwardable(r, h->name))
            proxy_header(b, h->name.p, h->name.n, h->value.p, h->value.n);
    }
    if (!r->mcp_open) {
        decision_mandate_headers(&r->d, b);
        proxy_header_str(b, "Mandate-Receipt", r->d.receipt);
    }
    proxy_header_str(b, "X-Request-Id", r->d.id);
    forwarded_header(r, b);
    if (r->held)
        length_header(b, (int64_t)evbuffer_get_length(r->held));
    else if (r->body == BODY_LENGTH)
        length_header(b, r->hp.content_length);
    else if (r->body == BODY_CHUNKED)
        sb_puts(b, "Transfer-Encoding: chunked\r\n");
    else if (r->hp.method == HP_METHOD_POST || r->hp.method == HP_METHOD_PUT ||
             r->hp.method == HP_METHOD_PATCH)
        sb_puts(b, "Content-Length: 0\r\n");
    sb_putn(b, "\r\n", 2);
    evbuffer_add(out, b->buf, b->len);
}

/* Bytes left the merchant's output buffer: the request (or part of it) went out. */
static void on_up_written(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    if (info->n_deleted)
        ((struct request *)arg)->sent = true;
}

/* Give the merchant connection back (keep: it may carry another request) or close it. */
static void drop_upstream(struct request *r, bool keep)
{
    if (!r->uc)
        return;
    evbuffer_remove_cb_entry(bufferevent_get_output(r->uc->bev), r->sent_cb);
    upstream_release(r->uc, keep);
    r->uc = NULL;
}

/* Body bytes for their destination: the merchant (re-chunked when the body came chunked), or the
 * held buffer of a PoP request (plain, and hashed for its Content-Digest). */
static void body_data(struct request *r, struct evbuffer *out, const char *p, size_t n,
                      bool chunked)
{
    if (r->held) {
        httpsig_digest_update(&r->d.digest, p, n);
        evbuffer_add(out, p, n);
    } else if (chunked) {
        evbuffer_add_printf(out, "%zx\r\n", n);
        evbuffer_add(out, p, n);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_add(out, p, n);
    }
}

/* A malformed chunk: the merchant's connection (if any) is closed, so it never sees a complete
 * request (SPEC §5, outcome bad_body); a held body was never forwarded: a plain framing denial. */
static void bad_body(struct request *r, enum hp_error e)
{
    r->body_reading = false;
    if (r->held) {
        deny(r, hp_error_code(e), 0);
        return;
    }
    drop_upstream(r, false);
    if (r->head_sent) {
        cut_client(r); /* the merchant answered early; the client loses the rest */
    } else {
        r->status = hp_error_status(e);
        struct conn *c = r->c;
        r->c = NULL;
        c->req = NULL;
        r->bytes = conn_reply_error(c, r->status, code_name(hp_error_code(e)), hp_error_str(e),
                                    r->d.id, NULL, false);
    }
    finish(r, "bad_body");
}

/* Move what the client's input holds of its body to its destination (within the backpressure
 * bound when it is the merchant). */
static void pump_body(struct request *r)
{
    struct evbuffer *in = bufferevent_get_input(r->c->bev);
    struct evbuffer *out = r->held ? r->held : bufferevent_get_output(r->uc->bev);
    size_t bound = r->held ? SIZE_MAX : HIGH_WATER; /* a held body is bounded by max_body_bytes */
    while (!r->body_done && evbuffer_get_length(in) && evbuffer_get_length(out) < bound) {
        size_t avail = evbuffer_get_contiguous_space(in), used;
        const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)avail);
        if (r->body == BODY_LENGTH) {
            used = (int64_t)avail > r->body_left ? (size_t)r->body_left : avail;
            body_data(r, out, p, used, false);
            evbuffer_drain(in, used);
            r->body_left -= (int64_t)used;
            r->body_done = r->body_left == 0;
            continue;
        }
        struct hp_str data;
        int rc = hp_chunked_feed(&r->body_dec, p, avail, &used, &data);
        if (rc < 0) {
            evbuffer_drain(in, used);
            bad_body(r, (enum hp_error) - rc);
            return;
        }
        if (rc == HP_CHUNK_DATA && data.n)
            body_data(r, out, data.p, data.n, true);
        if (rc == HP_CHUNK_DONE) {
            if (!r->held)
                evbuffer_add(out, "0\r\n\r\n", 5);
            r->body_done = true;
        }
        evbuffer_drain(in, used);
    }
    if (r->body_done) {
        r->body_reading = false;
        /* The deadline is between body reads: the merchant's answer has its own. */
        conn_read_timeout(r->c, NULL);
        if (r->held && !r->uc)
            body_held(r);
        return;
    }
    /* Reads resume when the merchant's output drains (on_up_write). */
    if (evbuffer_get_length(out) >= bound)
        conn_read_disable(r->c);
}

/* Start reading the client's body: ours to answer Expect: 100-continue, now that the request may
 * go on; a body timeout between reads. */
static void start_body(struct request *r)
{
    if (r->body == BODY_CHUNKED)
        hp_chunked_init(
            &r->body_dec, (uint64_t)r->conf->max_body_bytes,
            &(struct hp_limits){(size_t)r->conf->max_header_bytes, (size_t)r->conf->max_headers});
    if (r->hp.expect_continue && r->hp.minor == 1 &&
        evbuffer_get_length(bufferevent_get_input(r->c->bev)) == 0)
        evbuffer_add(bufferevent_get_output(r->c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
    r->body_reading = true;
    struct timeval bt = {r->conf->body_timeout_ms / 1000, (r->conf->body_timeout_ms % 1000) * 1000};
    conn_read_timeout(r->c, &bt);
    pump_body(r);
}

static void on_up_read(struct bufferevent *bev, void *arg);
static void on_up_write(struct bufferevent *bev, void *arg);
static void on_up_event(struct bufferevent *bev, short what, void *arg);

static void forward(struct request *r)
{
    const struct merchant *mc = r->d.route->merchant;
    if (!r->up_start_us)
        r->up_start_us = mono_us();
    r->uc = upstream_acquire(r->w->pools, mc, r->conf->upstream_timeout_ms, r->retried, on_up_read,
                             on_up_write, on_up_event, r);
    if (!r->uc) {
        send_error(r, CODE_UPSTREAM_UNAVAILABLE, 0);
        finish(r, "error");
        return;
    }
    struct evbuffer *out = bufferevent_get_output(r->uc->bev);
    r->sent_cb = evbuffer_add_cb(out, on_up_written, r);
    write_request_head(r, out);
    if (r->held) {
        evbuffer_add_buffer(out, r->held); /* read and checked before the decision */
        return;
    }
    if (r->body != BODY_NONE && !r->body_done)
        start_body(r);
}

/* --- the merchant's answer ------------------------------------------------------------------ */

/* Response headers the client may see: not hop-by-hop, not Connection-named, and not ours. */
static bool passable(const struct request *r, struct hp_str name)
{
    return !hop_by_hop(name) && !connection_named(r->resp.headers, r->resp.n_headers, name) &&
           !hp_str_ieq(name, "mandate-receipt") && !hp_str_ieq(name, "x-request-id");
}

/* The end of a final answer's head: framing (the body's length when known), keep-alive, CRLF. */
static void end_response_head(struct request *r, struct sb *b, int64_t length)
{
    if (length >= 0)
        length_header(b, length);
    else if (r->rechunk)
        sb_puts(b, "Transfer-Encoding: chunked\r\n");
    if (!r->client_keep)
        sb_puts(b, "Connection: close\r\n");
    else if (r->hp.minor == 0) /* HTTP/1.0 closes unless told otherwise (RFC 9112 §9.3) */
        sb_puts(b, "Connection: keep-alive\r\n");
    sb_putn(b, "\r\n", 2);
}

/* Into the worker's head buffer (emptied first): the status line and the headers the client may
 * see (plus ours on a final answer), without framing or the final CRLF. */
static struct sb *write_response_lines(struct request *r, const struct hp_response *h, bool interim)
{
    struct sb *b = &r->w->head;
    sb_reset(b);
    sb_puts(b, "HTTP/1.1 ");
    sb_int(b, h->status);
    sb_putn(b, " ", 1);
    sb_putn(b, h->reason.p, h->reason.n);
    sb_putn(b, "\r\n", 2);
    for (size_t i = 0; i < h->n_headers; i++)
        if (passable(r, h->headers[i].name))
            proxy_header(b, h->headers[i].name.p, h->headers[i].name.n, h->headers[i].value.p,
                         h->headers[i].value.n);
    if (!interim && !r->mcp_open)
        proxy_header_str(b, "Mandate-Receipt", r->d.receipt);
    if (!interim)
        proxy_header_str(b, "X-Request-Id", r->d.id);
    return b;
}

/* --- carts signed for the merchant (sign_cart routes) --------------------------------------- */

#define SIGN_CART_MAX (64 * 1024) /* the largest quote answer whose cart the gateway signs */

/* Turn the merchant's {"cart": {claims}} into {"cart": "<cart JWS>"}, signed with its cart_key:
 * iss, iat, exp (cart_ttl_s) and jti are the gateway's; sub defaults to the principal. NULL when
 * the answer is not such an object. */
static char *sign_cart(struct request *r, struct evbuffer *body, const char **why)
{
    const struct merchant *mc = r->d.route->merchant;
    size_t n = evbuffer_get_length(body);
    char *perr = NULL;
    json_t *root = sjson_parse((const char *)evbuffer_pullup(body, (ev_ssize_t)n), n, &perr);
    free(perr);
    json_t *claims = json_object_get(root, "cart");
    char *out = NULL;
    if (!json_is_object(claims)) {
        *why = "the answer is not a JSON object with a \"cart\" object";
        goto done;
    }
    char jti[40] = "cart-";
    proxy_new_request_id(r->w, jti + 5);
    int64_t now = now_s();
    claims = json_deep_copy(claims);
    sjson_set(claims, "iss", json_string(mc->id));
    sjson_set(claims, "iat", json_integer(now));
    sjson_set(claims, "exp", json_integer(now + mc->cart_ttl_s));
    sjson_set(claims, "jti", json_string(jti));
    if (!json_object_get(claims, "sub"))
        sjson_set(claims, "sub", json_string(r->d.v.m.sub));
    char *jws = mandate_sign(&mc->cart_key, MANDATE_CART, claims);
    json_decref(claims);
    if (!jws) {
        *why = "the cart cannot be signed";
        goto done;
    }
    sjson_set(root, "cart", json_string(jws));
    free(jws);
    out = sjson_dump(root);
done:
    json_decref(root);
    return out;
}

/* The collected answer of a sign_cart route is complete: sign its cart and send it. */
static void send_signed_cart(struct request *r)
{
    struct evbuffer *out = bufferevent_get_output(r->c->bev);
    const char *why = NULL;
    char *body = sign_cart(r, r->collect, &why);
    if (!body) {
        log_write(LOG_WARN, r->d.id, "sign_cart %s: %s", r->d.route->merchant->id, why);
        evbuffer_free(r->collect_head);
        r->collect_head = NULL;
        r->status = 502;
        evbuffer_add_printf(out,
                            "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
                            "X-Request-Id: %s\r\n",
                            r->d.id);
        body = xasprintf("{\"error\":\"upstream_unavailable\",\"message\":\"%s\","
                         "\"request_id\":\"%s\"}",
                         "the merchant's answer holds no cart to sign", r->d.id);
    } else {
        evbuffer_add_buffer(out, r->collect_head);
    }
    size_t n = strlen(body);
    struct sb *b = &r->w->head;
    sb_reset(b);
    end_response_head(r, b, (int64_t)n);
    evbuffer_add(out, b->buf, b->len);
    evbuffer_add(out, body, n);
    r->bytes = n;
    free(body);
}

/* The upstream head is complete in buf[0..n): relay an interim answer, or start the final one. */
static void on_response_head(struct request *r, struct evbuffer *in, size_t n)
{
    struct evbuffer *out = bufferevent_get_output(r->c->bev);
    if (r->resp.status < 200) {
        /* 1xx (not 101): passed on to an HTTP/1.1 client, and the final answer awaited. Our own
         * 100 Continue already went out; the merchant's is not repeated. */
        if (r->resp.status != 100 && r->hp.minor == 1) {
            struct sb *b = write_response_lines(r, &r->resp, true);
            sb_putn(b, "\r\n", 2);
            evbuffer_add(out, b->buf, b->len);
        }
        evbuffer_drain(in, n);
        return;
    }
    r->status = r->resp.status;
    r->resp_body = r->resp.body == HP_BODY_LENGTH        ? BODY_LENGTH
                   : r->resp.body == HP_BODY_CHUNKED     ? BODY_CHUNKED
                   : r->resp.body == HP_BODY_UNTIL_CLOSE ? BODY_UNTIL_CLOSE
                                                         : BODY_NONE;
    r->resp_left = r->resp.content_length;
    bool streamed = r->resp_body == BODY_CHUNKED || r->resp_body == BODY_UNTIL_CLOSE;
    r->rechunk = streamed && r->hp.minor == 1;
    /* An HTTP/1.0 client learns where a streamed body ends only from the close. */
    r->client_keep = r->hp.keep_alive && body_consumed(r) && !(streamed && !r->rechunk);
    if (r->resp_body == BODY_CHUNKED)
        hp_chunked_init(
            &r->resp_dec, UINT64_MAX,
            &(struct hp_limits){(size_t)r->conf->max_header_bytes, (size_t)r->conf->max_headers});
    r->head_sent = true;
    if (r->d.route->sign_cart && r->status >= 200 && r->status < 300 && r->resp_body != BODY_NONE) {
        /* The body is the quote the gateway turns into a signed cart: collected, not relayed. */
        r->collect = evbuffer_new();
        r->collect_head = evbuffer_new();
        r->rechunk = false;
        struct sb *b = write_response_lines(r, &r->resp, false);
        evbuffer_add(r->collect_head, b->buf, b->len);
        evbuffer_drain(in, n);
        return;
    }
    struct sb *b = write_response_lines(r, &r->resp, false);
    end_response_head(r, b,
                      r->resp_body == BODY_LENGTH ||
                              (r->resp_body == BODY_NONE && r->resp.content_length >= 0)
                          ? r->resp.content_length
                          : -1);
    evbuffer_add(out, b->buf, b->len);
    evbuffer_drain(in, n);
}

/* Move the answer's body to the client; returns true when it is complete. */
static bool relay_body(struct request *r, struct evbuffer *in, struct evbuffer *out, int *err)
{
    while (evbuffer_get_length(in) && evbuffer_get_length(out) < HIGH_WATER) {
        if (r->resp_body == BODY_LENGTH || r->resp_body == BODY_UNTIL_CLOSE) {
            size_t n = evbuffer_get_length(in);
            if (r->resp_body == BODY_LENGTH && (int64_t)n > r->resp_left)
                n = (size_t)r->resp_left;
            r->bytes += n;
            if (r->rechunk)
                evbuffer_add_printf(out, "%zx\r\n", n);
            evbuffer_remove_buffer(in, out, n);
            if (r->rechunk)
                evbuffer_add(out, "\r\n", 2);
            if (r->resp_body == BODY_LENGTH && (r->resp_left -= (int64_t)n) == 0)
                return true;
            continue;
        }
        size_t avail = evbuffer_get_contiguous_space(in), used;
        const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)avail);
        struct hp_str data;
        int rc = hp_chunked_feed(&r->resp_dec, p, avail, &used, &data);
        if (rc < 0) {
            *err = rc;
            return false;
        }
        if (rc == HP_CHUNK_DATA && data.n) {
            r->bytes += data.n;
            evbuffer_add_printf(out, "%zx\r\n", data.n);
            evbuffer_add(out, data.p, data.n);
            evbuffer_add(out, "\r\n", 2);
        }
        evbuffer_drain(in, used);
        if (rc == HP_CHUNK_DONE)
            return true;
    }
    return r->resp_body == BODY_LENGTH && r->resp_left == 0;
}

/* The answer is complete: end the client's chunked body, hand both connections on. */
static void answer_done(struct request *r)
{
    if (r->collect)
        send_signed_cart(r);
    else if (r->rechunk)
        evbuffer_add(bufferevent_get_output(r->c->bev), "0\r\n\r\n", 5);
    /* The merchant may answer before it has read our whole request: then the connection cannot
     * carry another one. */
    bool up_keep = r->resp.keep_alive && r->resp_body != BODY_UNTIL_CLOSE && body_consumed(r);
    drop_upstream(r, up_keep);
    struct conn *c = r->c;
    r->c = NULL;
    c->req = NULL;
    conn_read_timeout(c, NULL);
    conn_request_done(c, r->client_keep);
    finish(r, "ok");
}

/* Cut the client off mid-answer: the only honest signal left (SPEC §2.1: never a false end). */
static void cut_client(struct request *r)
{
    struct conn *c = r->c;
    r->c = NULL;
    c->req = NULL;
    conn_cut(c);
}

/* Nothing usable came back: retry (SPEC §5), or answer 502/504, or cut the client off. */
static void upstream_failed(struct request *r, bool timeout)
{
    bool retry = !r->resp_started && !r->sent && r->uc->reused && !r->retried &&
                 !r->d.route->priced && r->body == BODY_NONE &&
                 (r->hp.method == HP_METHOD_GET || r->hp.method == HP_METHOD_HEAD);
    drop_upstream(r, false);
    if (retry) {
        r->retried = true;
        forward(r);
        return;
    }
    if (!r->head_sent)
        send_error(r, timeout ? CODE_UPSTREAM_TIMEOUT : CODE_UPSTREAM_UNAVAILABLE, 0);
    else if (r->c)
        cut_client(r);
    finish(r, timeout ? "timeout" : "error");
}

static void on_up_read(struct bufferevent *bev, void *arg)
{
    struct request *r = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    r->resp_started = r->resp_started || evbuffer_get_length(in) > 0;
    while (!r->head_sent && evbuffer_get_length(in)) {
        struct hp_limits lim = {(size_t)r->conf->max_header_bytes, (size_t)r->conf->max_headers};
        r->resp.headers = proxy_scratch_request(r->w, &lim)->headers;
        size_t n = evbuffer_get_length(in);
        if (n > lim.max_header_bytes + 1)
            n = lim.max_header_bytes + 1;
        int rc = hp_parse_response((const char *)evbuffer_pullup(in, (ev_ssize_t)n), n, &lim,
                                   r->hp.method == HP_METHOD_HEAD, &r->resp);
        if (rc == 0)
            return;
        if (rc < 0) {
            log_write(LOG_WARN, r->d.id, "upstream %s: %s", r->d.route->merchant->id,
                      hp_error_str((enum hp_error) - rc));
            upstream_failed(r, false);
            return;
        }
        on_response_head(r, in, (size_t)rc);
    }
    if (!r->head_sent)
        return;
    /* The response headers were copied out; nothing below reads r->resp's slices again. */
    int err = 0;
    struct evbuffer *out = r->collect ? r->collect : bufferevent_get_output(r->c->bev);
    if (r->resp_body == BODY_NONE || relay_body(r, in, out, &err)) {
        answer_done(r);
        return;
    }
    if (err) {
        log_write(LOG_WARN, r->d.id, "upstream %s: %s", r->d.route->merchant->id,
                  hp_error_str((enum hp_error) - err));
        upstream_failed(r, false);
        return;
    }
    if (r->collect && evbuffer_get_length(out) > SIGN_CART_MAX) {
        log_write(LOG_WARN, r->d.id, "sign_cart %s: the answer is over %d bytes",
                  r->d.route->merchant->id, SIGN_CART_MAX);
        r->head_sent = false; /* nothing went to the client yet: it gets a 502 */
        upstream_failed(r, false);
        return;
    }
    if (!r->collect && evbuffer_get_length(out) >= HIGH_WATER) {
        reader_disable(&r->uc->rd);
        r->up_paused = true;
    }
}

static void on_up_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct request *r = arg;
    if (r->uc)
        flush_drained(&r->uc->fl);
    if (r->body_reading && r->c) {
        conn_read_enable(r->c);
        pump_body(r);
    }
}

static void on_up_event(struct bufferevent *bev, short what, void *arg)
{
    struct request *r = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if ((what & BEV_EVENT_EOF) && r->head_sent && r->resp_body == BODY_UNTIL_CLOSE) {
        r->resp.keep_alive = false;
        answer_done(r);
        return;
    }
    if ((what & BEV_EVENT_ERROR) && r->d.route->merchant->upstream_tls && !r->resp_started) {
        char buf[160];
        const char *why = tls_verify_error(bufferevent_openssl_get_ssl(bev));
        unsigned long e = bufferevent_get_openssl_error(bev);
        log_write(LOG_WARN, r->d.id, "upstream %s: TLS: %s", r->d.route->merchant->id,
                  why ? why
                  : e ? tls_error_string(e, buf, sizeof(buf))
                      : "connection failed");
    }
    upstream_failed(r, (what & BEV_EVENT_TIMEOUT) != 0);
}

/* --- the client's side while the request is served ------------------------------------------ */

void proxy_client_readable(struct request *r)
{
    if (r->body_reading && (r->uc || r->held))
        pump_body(r);
    /* Otherwise: bytes of a pipelined request, parsed once this answer is done. */
}

void proxy_client_drained(struct request *r)
{
    if (r->up_paused && r->uc) {
        r->up_paused = false;
        reader_enable(&r->uc->rd);
        on_up_read(r->uc->bev, r);
    }
}

void proxy_client_gone(struct request *r)
{
    r->c = NULL;
    if (r->d.waiting_durable)
        return; /* on_durable settles it as not_forwarded */
    if (r->held && !r->uc) {
        /* It left while its signed body was read, before any decision: nothing was admitted,
         * nothing is written to the log or settled. */
        r->status = 499;
        log_access(r, "none");
        request_free(r);
        return;
    }
    drop_upstream(r, false);
    r->status = 499;
    finish(r, "client_gone");
}

/* --- the end -------------------------------------------------------------------------------- */

static void finish(struct request *r, const char *result)
{
    r->up_us = r->up_start_us ? mono_us() - r->up_start_us : 0;
    hist_observe(&r->w->srv->metrics.upstream_us, (uint64_t)r->up_us);
    atomic_fetch_add_explicit(&r->w->srv->metrics.upstream_bytes, r->bytes, memory_order_relaxed);
    /* 2xx: paid. A 4xx/5xx answer: not paid. No answer to a request that was sent: nobody knows,
     * so it keeps counting (SPEC §2.1 step 6). Never sent (refused, failed to start): released.
     * A body found malformed after forwarding began: the merchant never got a complete request,
     * so released, unless it had already answered 2xx (SPEC §5). */
    bool ok = strcmp(result, "ok") == 0, bad_body = strcmp(result, "bad_body") == 0;
    bool paid = r->status >= 200 && r->status < 300;
    enum spend_status spend = ok || bad_body ? (paid ? SPEND_COMMITTED : SPEND_RELEASED)
                              : r->sent      ? SPEND_UNKNOWN
                                             : SPEND_RELEASED;
    if (!r->mcp_open) /* an open MCP method has no decision, so no outcome */
        settle(r, result, spend);
    log_access(r, r->mcp_open ? "open" : "allow");
    request_free(r);
}
