/*
 * decide: AuthZEN and forward-auth on the decision listener (SPEC §8), on proxy.c's decision core.
 *
 * One struct decide_req per HTTP request: a copy of its head (the parsed slices point into it),
 * its body (AuthZEN's JSON; read whole, at most max_body_bytes) and one struct eval per decision
 * it asks for (one for forward-auth and /evaluation, up to DECIDE_MAX_EVALUATIONS for
 * /evaluations). The evaluations of a batch are run in order, one after the other on this thread,
 * so each sees what the ones before it consumed; their entries commit together, and the answer
 * goes out once the last is durable.
 */
#include "gateway/decide.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "core/log.h"
#include "core/sha256.h"
#include "core/sjson.h"
#include "gateway/accesslog.h"
#include "gateway/conn.h"
#include "gateway/proxy.h"
#include "gateway/worker.h"

#define FORWARD_AUTH "/forward-auth"

enum surface { S_EVALUATION, S_EVALUATIONS, S_FORWARD_AUTH };

/* A request target checked as a proxied one would be (SPEC §5), and its pieces. */
struct target {
    char *line; /* "GET <target> HTTP/1.0\r\n\r\n", parsed: query points in here */
    char *path; /* NUL-terminated raw path */
    size_t path_n;
    struct hp_str query; /* p NULL without '?' */
};

/* One decision asked for. */
struct eval {
    struct decision d;
    struct decide_req *q;
    char method[16];
    struct target t;
    char *authorization;                   /* AuthZEN: "Mandate <subject.properties.mandate>" */
    const char *agent, *action, *merchant; /* AuthZEN: subject.id, action.name, resource.id */
};

struct decide_req {
    struct worker *w;
    struct conn *c; /* NULL once the client is gone */
    struct config *conf;
    enum surface surface;
    char id[33]; /* the HTTP request's own id (a batch, an error before any decision) */
    char *head;  /* the request head as received (hp's slices point here) */
    struct hp_request hp;
    char tls_client[256];
    char peer[64]; /* the client's address, for the denial budget */
    int64_t start_us;
    /* the body */
    struct evbuffer *body;
    int64_t body_left; /* Content-Length: bytes still to read */
    bool chunked;
    struct hp_chunked dec;
    bool body_done;
    json_t *json; /* the parsed body (evaluations' strings point into it) */
    /* the decisions */
    struct eval *ev;
    size_t n, remaining;
    bool launching;
    int status; /* of the answer, for the access log */
    uint64_t bytes;
};

static void decide_free(struct decide_req *q)
{
    if (q->c)
        q->c->req = NULL;
    for (size_t i = 0; i < q->n; i++) {
        struct eval *e = &q->ev[i];
        httpsig_digest_clear(&e->d.digest);
        free(e->authorization);
        free(e->t.line);
        free(e->t.path);
    }
    free(q->ev);
    json_decref(q->json);
    if (q->body)
        evbuffer_free(q->body);
    q->w->inflight--;
    config_unref(q->conf);
    free(q);
}

/* A header's value as a NUL-terminated string inside q's head copy, or NULL. */
static const char *header(struct decide_req *q, const char *name)
{
    struct hp_str v;
    if (!hp_header(&q->hp, name, &v))
        return NULL;
    ((char *)v.p)[v.n] = '\0'; /* the byte after a value is OWS or CR: never part of a slice */
    return v.p;
}

/* Hand the connection back after the answer now in its output. */
static void answered(struct decide_req *q)
{
    struct conn *c = q->c;
    q->c = NULL;
    c->req = NULL;
    conn_read_timeout(c, NULL);
    conn_request_done(c, q->hp.keep_alive && (q->body_done || !q->body));
}

/* An answer of q's own: status, extra header lines (CRLF-terminated, or NULL), a JSON body. */
static void reply(struct decide_req *q, int status, const char *request_id, const char *extra,
                  const char *json)
{
    bool keep = q->hp.keep_alive && (q->body_done || !q->body);
    size_t n = strlen(json) + 1;
    evbuffer_add_printf(bufferevent_get_output(q->c->bev),
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Cache-Control: no-store\r\nX-Request-Id: %s\r\n%sContent-Length: %zu\r\n"
                        "%s\r\n%s\n",
                        status, code_reason(status), request_id, extra ? extra : "", n,
                        !keep              ? "Connection: close\r\n"
                        : q->hp.minor == 0 ? "Connection: keep-alive\r\n"
                                           : "",
                        json);
    q->status = status;
    q->bytes = n;
    answered(q);
}

/* A refusal of the request itself (not a decision: counted and logged, never audited). */
static void refuse(struct decide_req *q, enum code code, int status, const char *message,
                   const char *extra)
{
    proxy_count_framing(q->c, code, q->id);
    char *denial = NULL;
    if (q->surface == S_FORWARD_AUTH && !extra) {
        /* The body again in a header, for proxies that drop an auth answer's body (nginx). */
        json_t *body = json_pack("{ss ss ss}", "error", code_name(code), "message", message,
                                 "request_id", q->id);
        char *s = sjson_dump(body);
        json_decref(body);
        extra = denial = xasprintf("Mandate-Denial: %s\r\n", s);
        free(s);
    }
    struct conn *c = q->c;
    q->c = NULL;
    c->req = NULL;
    conn_read_timeout(c, NULL);
    conn_reply_error(c, status, code_name(code), message, q->id, extra,
                     q->hp.keep_alive && (q->body_done || !q->body));
    free(denial);
    decide_free(q);
}

static void log_decision(struct decide_req *q, struct eval *e)
{
    const struct decision *d = &e->d;
    if (d->summarised)
        return; /* in the client's access_summary line (server.c) */
    const struct route *rt = d->route;
    struct access a = {d->id,
                       e->method,
                       e->t.path ? e->t.path : "",
                       rt ? rt->path : "",
                       rt ? rt->merchant->id : "",
                       rt ? rt->action : "",
                       d->v.m.sub,
                       d->v.m.agent,
                       d->code == CODE_OK ? "allow" : "deny",
                       code_name(d->code),
                       q->tls_client,
                       q->status,
                       q->bytes,
                       d->check_us,
                       0,
                       d->surface};
    accesslog_write(&q->w->alog, &a);
}

/* --- checking what the request names ---------------------------------------------------------- */

/* A method as a route names one: a token of at most 15 characters. */
static bool method_ok(const char *m, size_t n)
{
    if (n == 0 || n > 15)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((m[i] >= 'A' && m[i] <= 'Z') || (m[i] >= 'a' && m[i] <= 'z') ||
              (m[i] >= '0' && m[i] <= '9') || strchr("!#$%&'*+-.^_`|~", m[i])))
            return false;
    return true;
}

/*
 * Check a target (path and query) with the very rules of a proxied request's target
 * (gateway/http_parse: origin form, no dot segment, no encoded slash, ...), by parsing it as the
 * target of a request line. NULL when it passes (t filled), else why not.
 */
static const char *check_target(const struct config *conf, const char *s, size_t n,
                                struct target *t)
{
    if (n == 0 || s[0] != '/' || n > (size_t)conf->max_header_bytes)
        return "expected an origin-form path beginning with /";
    if (memchr(s, '\0', n))
        return hp_error_str(HP_BAD_TARGET);
    t->line = xasprintf("GET %.*s HTTP/1.0\r\n\r\n", (int)n, s);
    size_t len = strlen(t->line);
    struct hp_header h[1];
    struct hp_request r = {.headers = h};
    struct hp_limits lim = {len, 1};
    int rc = hp_parse_request(t->line, len, &lim, &r);
    if (rc != (int)len) {
        free(t->line);
        t->line = NULL;
        return rc < 0 ? hp_error_str((enum hp_error) - rc) : hp_error_str(HP_BAD_TARGET);
    }
    t->path = xstrndup(r.path.p, r.path.n);
    t->path_n = r.path.n;
    t->query = r.query;
    return NULL;
}

/* --- running the decisions ------------------------------------------------------------------- */

static void eval_done(struct decision *d);

/* The inputs every surface fills the same way. */
static void eval_init(struct decide_req *q, struct eval *e)
{
    struct decision *d = &e->d;
    e->q = q;
    d->w = q->w;
    d->conf = q->conf;
    d->commit_spend = true;
    memcpy(d->peer, q->peer, sizeof(d->peer));
    d->start_us = q->start_us;
    d->done = eval_done;
    d->arg = e;
    d->method = e->method;
    d->path = e->t.path;
    d->path_n = e->t.path_n;
    d->query = e->t.query;
}

/* AuthZEN's own checks, once the mandate verified (SPEC §8). */
static enum code authzen_check(struct decision *d)
{
    struct eval *e = d->arg;
    if (strcmp(e->action, d->route->action) != 0)
        return CODE_MANDATE_WRONG_ACTION;
    if (strcmp(e->agent, d->v.m.agent) != 0)
        return CODE_MANDATE_MALFORMED;
    return CODE_OK;
}

static void run_eval(struct decide_req *q, struct eval *e)
{
    struct decision *d = &e->d;
    proxy_new_request_id(q->w, d->id);
    if (atomic_load(&q->w->srv->draining)) {
        decision_deny(d, CODE_UNAVAILABLE, 0);
        return;
    }
    if (q->surface != S_FORWARD_AUTH) {
        /* The route is found by method and path, among the merchant's (resource.id). */
        const struct route *rt = route_match(&q->conf->routes, d->method, d->path, d->path_n);
        if (!rt || strcmp(rt->merchant->id, e->merchant) != 0) {
            decision_deny(d, CODE_ROUTE_NOT_FOUND, 0);
            return;
        }
        d->route = rt;
    }
    decision_run(d);
}

static void answer(struct decide_req *q);

/* One decision is made (denied at once, or allowed and durable). */
static void eval_done(struct decision *d)
{
    struct eval *e = d->arg;
    struct decide_req *q = e->q;
    if (--q->remaining == 0 && !q->launching)
        answer(q);
}

/* Run every evaluation in order; answer once the last is made. */
static void launch(struct decide_req *q)
{
    q->launching = true;
    q->remaining = q->n;
    for (size_t i = 0; i < q->n; i++)
        run_eval(q, &q->ev[i]);
    q->launching = false;
    if (q->remaining == 0)
        answer(q);
}

static json_t *evaluation_json(const struct eval *e)
{
    const struct decision *d = &e->d;
    json_t *ctx = json_pack("{ss ss}", "code", code_name(d->code), "request_id", d->id);
    if (d->code == CODE_OK)
        sjson_set(ctx, "receipt", json_string(d->receipt));
    return json_pack("{sb so}", "decision", d->code == CODE_OK, "context", ctx);
}

/* Forward-auth: 200 with the headers for the merchant, or the denial as the proxy gives it. */
static void answer_forward_auth(struct decide_req *q, struct eval *e)
{
    struct decision *d = &e->d;
    if (d->code != CODE_OK) {
        json_t *body = json_pack("{ss ss ss}", "error", code_name(d->code), "message",
                                 code_message(d->code), "request_id", d->id);
        char *s = sjson_dump(body);
        json_decref(body);
        /* The body again in a header, for proxies that drop an auth answer's body (nginx). */
        char *extra;
        if (code_status(d->code) == 401)
            extra = xasprintf("WWW-Authenticate: Mandate error=\"%s\"\r\nMandate-Denial: %s\r\n",
                              code_name(d->code), s);
        else if (d->code == CODE_RATE_LIMITED)
            extra = xasprintf("Retry-After: %lld\r\nMandate-Denial: %s\r\n",
                              (long long)(d->retry_after_s > 0 ? d->retry_after_s : 1), s);
        else
            extra = xasprintf("Mandate-Denial: %s\r\n", s);
        free(s);
        struct conn *c = q->c;
        q->c = NULL;
        c->req = NULL;
        q->status = code_status(d->code);
        conn_read_timeout(c, NULL);
        q->bytes = conn_reply_error(c, q->status, code_name(d->code), code_message(d->code), d->id,
                                    extra, q->hp.keep_alive && (q->body_done || !q->body));
        free(extra);
        return;
    }
    bool keep = q->hp.keep_alive && (q->body_done || !q->body);
    struct sb *b = &d->w->head;
    sb_reset(b);
    sb_puts(b, "HTTP/1.1 200 OK\r\n");
    decision_mandate_headers(d, b);
    proxy_header_str(b, "Mandate-Receipt", d->receipt);
    proxy_header_str(b, "X-Request-Id", d->id);
    sb_puts(b, "Cache-Control: no-store\r\nContent-Length: 0\r\n");
    sb_puts(b, !keep              ? "Connection: close\r\n\r\n"
               : q->hp.minor == 0 ? "Connection: keep-alive\r\n\r\n"
                                  : "\r\n");
    evbuffer_add(bufferevent_get_output(q->c->bev), b->buf, b->len);
    q->status = 200;
    q->bytes = 0;
    answered(q);
}

/* Every decision is made: answer (unless the client left), log, free. */
static void answer(struct decide_req *q)
{
    if (q->c) {
        if (q->surface == S_FORWARD_AUTH) {
            answer_forward_auth(q, &q->ev[0]);
        } else {
            json_t *body;
            const char *id = q->id;
            if (q->surface == S_EVALUATION) {
                body = evaluation_json(&q->ev[0]);
                id = q->ev[0].d.id;
            } else {
                json_t *arr = json_array();
                for (size_t i = 0; i < q->n; i++)
                    sjson_append(arr, evaluation_json(&q->ev[i]));
                body = json_pack("{so}", "evaluations", arr);
            }
            char *s = sjson_dump(body);
            json_decref(body);
            reply(q, 200, id, NULL, s);
            free(s);
        }
    } else {
        q->status = 499;
    }
    for (size_t i = 0; i < q->n; i++)
        log_decision(q, &q->ev[i]);
    decide_free(q);
}

/* --- AuthZEN --------------------------------------------------------------------------------- */

/* A string member of o, or NULL with msg naming it. */
static const char *member_str(const json_t *o, const char *prefix, const char *key, bool required,
                              char *msg, size_t cap, bool *bad)
{
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (required) {
            snprintf(msg, cap, "%s%s: required", prefix, key);
            *bad = true;
        }
        return NULL;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(msg, cap, "%s%s: expected a non-empty string", prefix, key);
        *bad = true;
        return NULL;
    }
    return json_string_value(v);
}

/* An object member of o, or NULL with msg naming it. */
static json_t *member_obj(const json_t *o, const char *prefix, const char *key, char *msg,
                          size_t cap, bool *bad)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_object(v)) {
        snprintf(msg, cap, "%s%s: %s", prefix, key, v ? "expected an object" : "required");
        *bad = true;
        return NULL;
    }
    return v;
}

/* Read one evaluation request (SPEC §8) into e; false with msg naming the bad member. */
static bool parse_evaluation(struct decide_req *q, const json_t *o, const json_t *defaults,
                             const char *at, struct eval *e, char *msg, size_t cap)
{
    bool bad = false;
    char p[96], p2[128];
    if (!json_is_object(o)) {
        snprintf(msg, cap, "%s: expected an object", *at ? at : "body");
        return false;
    }
    snprintf(p, sizeof(p), "%s%s", at, *at ? "." : "");
    /* A batch's top-level subject, action and resource stand in for those an evaluation leaves
     * out (AuthZEN 1.0 §7.1); the message then names the top-level member. */
    const char *ps = p, *pa = p, *pr = p;
    const json_t *osub = o, *oact = o, *ores = o;
    if (defaults && !json_object_get(o, "subject") && json_object_get(defaults, "subject"))
        osub = defaults, ps = "";
    if (defaults && !json_object_get(o, "action") && json_object_get(defaults, "action"))
        oact = defaults, pa = "";
    if (defaults && !json_object_get(o, "resource") && json_object_get(defaults, "resource"))
        ores = defaults, pr = "";
    json_t *subject = member_obj(osub, ps, "subject", msg, cap, &bad);
    json_t *action = bad ? NULL : member_obj(oact, pa, "action", msg, cap, &bad);
    json_t *resource = bad ? NULL : member_obj(ores, pr, "resource", msg, cap, &bad);
    if (bad)
        return false;
    snprintf(p2, sizeof(p2), "%ssubject.", ps);
    const char *type = member_str(subject, p2, "type", true, msg, cap, &bad);
    if (bad)
        return false;
    if (strcmp(type, "agent") != 0) {
        snprintf(msg, cap, "%stype: expected \"agent\"", p2);
        return false;
    }
    e->agent = member_str(subject, p2, "id", true, msg, cap, &bad);
    json_t *props = bad ? NULL : member_obj(subject, p2, "properties", msg, cap, &bad);
    if (bad)
        return false;
    snprintf(p2, sizeof(p2), "%ssubject.properties.", ps);
    const char *mandate = member_str(props, p2, "mandate", true, msg, cap, &bad);
    const char *cart = bad ? NULL : member_str(props, p2, "cart", false, msg, cap, &bad);
    if (bad)
        return false;
    snprintf(p2, sizeof(p2), "%saction.", pa);
    e->action = member_str(action, p2, "name", true, msg, cap, &bad);
    if (bad)
        return false;
    snprintf(p2, sizeof(p2), "%sresource.", pr);
    type = member_str(resource, p2, "type", true, msg, cap, &bad);
    if (bad)
        return false;
    if (strcmp(type, "route") != 0) {
        snprintf(msg, cap, "%stype: expected \"route\"", p2);
        return false;
    }
    e->merchant = member_str(resource, p2, "id", true, msg, cap, &bad);
    props = bad ? NULL : member_obj(resource, p2, "properties", msg, cap, &bad);
    if (bad)
        return false;
    snprintf(p2, sizeof(p2), "%sresource.properties.", pr);
    const char *method = member_str(props, p2, "method", true, msg, cap, &bad);
    const char *path = bad ? NULL : member_str(props, p2, "path", true, msg, cap, &bad);
    if (bad)
        return false;
    if (!method_ok(method, strlen(method))) {
        snprintf(msg, cap, "%smethod: expected an HTTP method", p2);
        return false;
    }
    snprintf(e->method, sizeof(e->method), "%s", method);
    const char *why = check_target(q->conf, path, strlen(path), &e->t);
    if (why) {
        snprintf(msg, cap, "%spath: %s", p2, why);
        return false;
    }
    e->authorization = xasprintf("Mandate %s", mandate);
    eval_init(q, e);
    struct decision *d = &e->d;
    d->surface = "authzen";
    d->authorization = e->authorization;
    d->cart = cart;
    d->no_pop = true; /* a signature over the agent's request cannot be presented here */
    d->check = authzen_check;
    return true;
}

/* The body is read: parse it, validate every evaluation, then decide them in order. */
static void authzen(struct decide_req *q)
{
    size_t n = evbuffer_get_length(q->body);
    char *err = NULL, msg[256];
    if (n == 0) {
        refuse(q, CODE_BAD_REQUEST, 400, "body: required (a JSON object)", NULL);
        return;
    }
    q->json = sjson_parse((const char *)evbuffer_pullup(q->body, (ev_ssize_t)n), n, &err);
    if (!q->json) {
        snprintf(msg, sizeof(msg), "body: %s", err ? err : "not JSON");
        free(err);
        refuse(q, CODE_BAD_REQUEST, 400, msg, NULL);
        return;
    }
    if (!json_is_object(q->json)) {
        refuse(q, CODE_BAD_REQUEST, 400, "body: expected an object", NULL);
        return;
    }
    if (q->surface == S_EVALUATION) {
        q->ev = xcalloc(1, sizeof(struct eval));
        q->n = 1;
        if (!parse_evaluation(q, q->json, NULL, "", &q->ev[0], msg, sizeof(msg))) {
            refuse(q, CODE_BAD_REQUEST, 400, msg, NULL);
            return;
        }
    } else {
        json_t *arr = json_object_get(q->json, "evaluations");
        if (!json_is_array(arr) || json_array_size(arr) == 0 ||
            json_array_size(arr) > DECIDE_MAX_EVALUATIONS) {
            if (!json_is_array(arr))
                snprintf(msg, sizeof(msg), "evaluations: %s",
                         arr ? "expected an array" : "required");
            else
                snprintf(msg, sizeof(msg), "evaluations: expected 1 to %d evaluations",
                         DECIDE_MAX_EVALUATIONS);
            refuse(q, CODE_BAD_REQUEST, 400, msg, NULL);
            return;
        }
        /* Every evaluation is run and answered (AuthZEN's execute_all): the other semantics
         * would stop half-way through a batch whose earlier evaluations consumed uses. */
        json_t *opts = json_object_get(q->json, "options"), *sem;
        if (opts &&
            (!json_is_object(opts) ||
             ((sem = json_object_get(opts, "evaluations_semantic")) &&
              (!json_is_string(sem) || strcmp(json_string_value(sem), "execute_all") != 0)))) {
            refuse(q, CODE_BAD_REQUEST, 400,
                   "options.evaluations_semantic: only \"execute_all\" is supported", NULL);
            return;
        }
        q->ev = xcalloc(json_array_size(arr), sizeof(struct eval));
        for (size_t i = 0; i < json_array_size(arr); i++) {
            char at[48];
            snprintf(at, sizeof(at), "evaluations[%zu]", i);
            q->n = i + 1;
            if (!parse_evaluation(q, json_array_get(arr, i), q->json, at, &q->ev[i], msg,
                                  sizeof(msg))) {
                refuse(q, CODE_BAD_REQUEST, 400, msg, NULL);
                return;
            }
        }
    }
    launch(q);
}

/* --- forward-auth ---------------------------------------------------------------------------- */

/* The original request from the proxy's headers (SPEC §8), then its decision. */
static void forward_auth(struct decide_req *q)
{
    q->ev = xcalloc(1, sizeof(struct eval));
    q->n = 1;
    struct eval *e = &q->ev[0];
    const char *method, *uri;
    char msg[256];
    size_t uri_n;
    if ((uri = header(q, "x-original-uri"))) {
        method = header(q, "x-original-method");
        if (!method) {
            refuse(q, CODE_BAD_REQUEST, 400, "X-Original-URI without X-Original-Method", NULL);
            return;
        }
        uri_n = strlen(uri);
    } else if ((uri = header(q, "x-forwarded-uri"))) {
        method = header(q, "x-forwarded-method");
        if (!method) {
            refuse(q, CODE_BAD_REQUEST, 400, "X-Forwarded-Uri without X-Forwarded-Method", NULL);
            return;
        }
        uri_n = strlen(uri);
    } else {
        /* Envoy's path_prefix: the original path follows ours. */
        method = NULL;
        uri = q->hp.target.p + strlen(FORWARD_AUTH);
        uri_n = q->hp.target.n - strlen(FORWARD_AUTH);
        if (uri_n == 0 || uri[0] != '/') {
            refuse(q, CODE_BAD_REQUEST, 400,
                   "no original request: X-Original-URI, X-Forwarded-Uri or a path below "
                   "/forward-auth",
                   NULL);
            return;
        }
    }
    if (method) {
        if (!method_ok(method, strlen(method))) {
            refuse(q, CODE_BAD_REQUEST, 400, "the original method is not an HTTP method", NULL);
            return;
        }
        snprintf(e->method, sizeof(e->method), "%s", method);
    } else {
        snprintf(e->method, sizeof(e->method), "%.*s", (int)q->hp.method_str.n, q->hp.method_str.p);
    }
    const char *why = check_target(q->conf, uri, uri_n, &e->t);
    if (why) {
        snprintf(msg, sizeof(msg), "the original URI: %s", why);
        refuse(q, CODE_BAD_REQUEST, 400, msg, NULL);
        return;
    }
    eval_init(q, e);
    struct decision *d = &e->d;
    d->surface = "forward_auth";
    d->authorization = header(q, "authorization");
    d->cart = header(q, "mandate-cart");
    d->authority = header(q, "x-original-host");
    if (!d->authority)
        d->authority = header(q, "x-forwarded-host");
    if (!d->authority)
        d->authority = header(q, "host");
    const char *proto = header(q, "x-forwarded-proto");
    d->https = proto ? strcasecmp(proto, "https") == 0 : q->c->tls;
    d->hp = &q->hp;
    /* The original body is not here: a signature must not cover its digest (hold is NULL, so a
     * covered content-digest is signature_invalid), and one that the proxy says exists must be
     * covered, so that it is refused too rather than passed unchecked. */
    d->has_body = header(q, "content-digest") || q->hp.content_length > 0 || q->hp.chunked;
    launch(q);
}

/* --- the request ----------------------------------------------------------------------------- */

/* The whole body is in q->body: go on with the surface. */
static void body_complete(struct decide_req *q)
{
    q->body_done = true;
    conn_read_timeout(q->c, NULL);
    if (q->surface == S_FORWARD_AUTH)
        forward_auth(q);
    else
        authzen(q);
}

/* Move what the client's input holds of the body into q->body. */
static void read_body(struct decide_req *q)
{
    struct evbuffer *in = bufferevent_get_input(q->c->bev);
    while (!q->body_done && evbuffer_get_length(in)) {
        if (!q->chunked) {
            size_t n = evbuffer_get_length(in);
            if ((int64_t)n > q->body_left)
                n = (size_t)q->body_left;
            evbuffer_remove_buffer(in, q->body, n);
            q->body_left -= (int64_t)n;
            if (q->body_left == 0)
                break;
            continue;
        }
        size_t avail = evbuffer_get_contiguous_space(in), used;
        const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)avail);
        struct hp_str data;
        int rc = hp_chunked_feed(&q->dec, p, avail, &used, &data);
        if (rc < 0) {
            evbuffer_drain(in, used);
            enum hp_error e = (enum hp_error) - rc;
            refuse(q, hp_error_code(e), hp_error_status(e), hp_error_str(e), NULL);
            return;
        }
        if (rc == HP_CHUNK_DATA && data.n)
            evbuffer_add(q->body, data.p, data.n);
        evbuffer_drain(in, used);
        if (rc == HP_CHUNK_DONE) {
            q->body_left = 0;
            break;
        }
    }
    if (q->body_left == 0)
        body_complete(q);
}

void decide_client_readable(struct decide_req *q)
{
    if (q->body && !q->body_done)
        read_body(q);
    /* Otherwise: bytes of a pipelined request, parsed once this answer is done. */
}

void decide_client_gone(struct decide_req *q)
{
    q->c = NULL;
    if (q->remaining == 0)
        decide_free(q); /* still reading the body: nothing was decided */
    /* else the last decision's done() answers nobody and frees q */
}

/* Is the raw path exactly p (case matters)? */
static bool path_is(struct hp_str path, const char *p)
{
    return path.n == strlen(p) && memcmp(path.p, p, path.n) == 0;
}

/* Is the bearer token's SHA-256 the listener's (constant time)? */
static bool authorized(struct decide_req *q)
{
    const char *a = header(q, "authorization");
    if (!a || strncasecmp(a, "Bearer ", 7) != 0)
        return false;
    a += 7;
    while (*a == ' ')
        a++;
    size_t n = strlen(a);
    while (n && a[n - 1] == ' ')
        n--;
    unsigned char got[32];
    sha256(a, n, got);
    return n > 0 && ct_equal(got, q->w->decision_token_sha256, 32);
}

void decide_begin(struct conn *c, const char *buf, size_t head_len)
{
    struct worker *w = c->w;
    struct config *conf = worker_config(w);
    size_t nh = w->scratch.n_headers;
    struct decide_req *q = xcalloc(1, sizeof(*q) + nh * sizeof(struct hp_header) + head_len + 1);
    q->hp.headers = (struct hp_header *)(q + 1);
    q->head = (char *)(q->hp.headers + nh);
    memcpy(q->head, buf, head_len);
    hp_request_move(&w->scratch, buf, &q->hp,
                    q->head); /* before the drain: buf is still the input */
    evbuffer_drain(bufferevent_get_input(c->bev), head_len);
    q->w = w;
    q->c = c;
    c->req = q;
    if (c->tls_client[0])
        memcpy(q->tls_client, c->tls_client, sizeof(q->tls_client));
    memcpy(q->peer, c->peer, sizeof(q->peer));
    q->conf = config_ref(conf);
    q->start_us = mono_us();
    w->inflight++;
    atomic_fetch_add_explicit(&w->srv->metrics.requests, 1, memory_order_relaxed);
    proxy_new_request_id(w, q->id);

    struct hp_str path = q->hp.path;
    size_t fa = strlen(FORWARD_AUTH);
    bool post = q->hp.method == HP_METHOD_POST;
    bool one = path_is(path, "/access/v1/evaluation"),
         many = path_is(path, "/access/v1/evaluations");
    q->body = evbuffer_new();
    q->chunked = q->hp.chunked;
    q->body_left = q->chunked ? 1 : q->hp.content_length > 0 ? q->hp.content_length : 0;
    q->body_done = q->body_left == 0;
    if (path.n >= fa && memcmp(path.p, FORWARD_AUTH, fa) == 0 &&
        (path.n == fa || path.p[fa] == '/')) {
        q->surface = S_FORWARD_AUTH;
    } else if ((one || many) && post) {
        q->surface = one ? S_EVALUATION : S_EVALUATIONS;
    } else if (one || many) {
        refuse(q, CODE_NOT_FOUND, 405, "only POST is allowed here", "Allow: POST\r\n");
        return;
    } else {
        refuse(q, CODE_NOT_FOUND, 404,
               "the decision listener serves /access/v1/evaluation(s) and /forward-auth", NULL);
        return;
    }
    if (q->surface != S_FORWARD_AUTH && !authorized(q)) {
        refuse(q, CODE_UNAUTHORIZED, 401, "the decision listener's bearer token is required",
               "WWW-Authenticate: Bearer\r\n");
        return;
    }
    /* The body (AuthZEN's JSON; a forward-auth request's is read and ignored) is bounded. */
    if (q->hp.content_length > conf->max_body_bytes) {
        refuse(q, CODE_BODY_TOO_LARGE, 413, code_message(CODE_BODY_TOO_LARGE), NULL);
        return;
    }
    if (q->body_done) {
        body_complete(q);
        return;
    }
    if (q->chunked)
        hp_chunked_init(&q->dec, (uint64_t)conf->max_body_bytes,
                        &(struct hp_limits){(size_t)conf->max_header_bytes, nh});
    if (q->hp.expect_continue && q->hp.minor == 1 &&
        evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
        evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
    struct timeval bt = {conf->body_timeout_ms / 1000, (conf->body_timeout_ms % 1000) * 1000};
    conn_read_timeout(c, &bt);
    read_body(q);
}
