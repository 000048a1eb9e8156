/*
 * service: the wallet's HTTP API (SPEC §3) on one libevent loop: agents mint intent and payment
 * mandates under their principal's policy; payments above approval_above wait for a person;
 * revocations stop minting at once and are pushed to every gateway until acknowledged.
 */
#include "wallet/service.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/rand.h>

#include "core/http.h"
#include "core/log.h"
#include "core/sjson.h"
#include "core/sha256.h"
#include "wallet/db.h"
#include "wallet/mint.h"
#include "wallet/policy.h"

#define MAX_BODY          65536
#define PUSH_MAX_DELAY_MS 5000

struct push;

struct wallet {
    struct wallet_config *w;
    struct wdb *db;
    struct event_base *base;
    struct evhttp *http;
    struct push *pushes; /* in flight or waiting to retry */
};

/* A revocation on its way to one gateway, retried with backoff until it is acknowledged. */
struct push {
    struct wallet *wl;
    const struct gateway_target *g;
    char kind[16], value[MANDATE_ID_MAX + 1];
    int attempts;
    struct event *timer;
    struct evhttp_connection *evcon;
    struct push *next;
};

static void push_free(struct push *p)
{
    for (struct push **pp = &p->wl->pushes; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    if (p->evcon)
        evhttp_connection_free(p->evcon);
    event_free(p->timer);
    free(p);
}

/* Free a push outside of its connection's callback, which may not free the connection. */
static void push_free_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    push_free(arg);
}

static void error(struct evhttp_request *req, enum code code, int status, const char *msg)
{
    http_reply_json(req, status ? status : code_status(code),
                    json_pack("{ss ss}", "error", code_name(code), "message", msg));
}

/* The agent whose token this is; every agent is compared, in constant time. */
static const struct agent *agent_auth(struct wallet *wl, struct evhttp_request *req)
{
    unsigned char h[32];
    if (http_bearer_sha256(req, h) != 0)
        return NULL;
    const struct agent *found = NULL;
    for (size_t i = 0; i < wl->w->nagents; i++)
        if (ct_equal(h, wl->w->agents[i].token_sha256, 32))
            found = &wl->w->agents[i];
    return found;
}

static bool admin_auth(struct wallet *wl, struct evhttp_request *req)
{
    unsigned char h[32];
    return http_bearer_sha256(req, h) == 0 && ct_equal(h, wl->w->admin_token_sha256, 32);
}

static void record(struct wallet *wl, const struct agent *a, const char *kind, const char *merchant,
                   const char *action, const char *jti, const char *decision, enum code code,
                   const char *detail, const struct money *amount)
{
    struct wdb_event e = {a ? a->id : NULL,
                          a ? a->principal->id : NULL,
                          kind,
                          merchant,
                          action,
                          jti,
                          decision,
                          code == CODE_OK ? NULL : code_name(code),
                          detail,
                          amount};
    if (wdb_event(wl->db, &e) != 0)
        log_error("wallet db: could not record a %s %s", kind, decision);
    log_info("%s %s: agent=%s merchant=%s action=%s%s%s", kind, decision, a ? a->id : "-",
             merchant ? merchant : "-", action ? action : "-", detail ? " why=" : "",
             detail ? detail : "");
}

static void refuse(struct wallet *wl, struct evhttp_request *req, const struct agent *a,
                   const char *kind, const char *merchant, const char *action, enum code code,
                   int status, const char *why, const struct money *amount)
{
    record(wl, a, kind, merchant, action, NULL, "refused", code, why, amount);
    error(req, code, status, why);
}

static void minted_reply(struct evhttp_request *req, int status, struct minted *m)
{
    http_reply_json(req, status,
                    json_pack("{ss ss sI}", "mandate", m->mandate, "jti", m->jti, "expires_at",
                              (json_int_t)m->expires_at));
    free(m->mandate);
}

static void post_intent(struct wallet *wl, struct evhttp_request *req, const struct agent *a)
{
    json_t *b = http_body_json(req, MAX_BODY);
    const char *merchant = b ? sjson_str(b, "merchant") : NULL;
    const char *action = b ? sjson_str(b, "action") : NULL;
    int64_t ttl = wl->w->default_ttl_s, uses = 1;
    struct money max, *maxp = NULL;
    const char *why = "expected {\"merchant\", \"action\", \"ttl_s\"?, \"uses\"?, \"max_amount\"?}";
    enum code code = CODE_POLICY_DENIED;
    if (!merchant || !action || strlen(merchant) > MANDATE_ID_MAX ||
        strlen(action) > MANDATE_ID_MAX ||
        (json_object_get(b, "ttl_s") && sjson_int(b, "ttl_s", &ttl) != 0) ||
        (json_object_get(b, "uses") && sjson_int(b, "uses", &uses) != 0)) {
        json_decref(b);
        {
            error(req, CODE_BAD_REQUEST, 400, why);
            return;
        }
    }
    if (json_object_get(b, "max_amount")) {
        if (money_from_json(json_object_get(b, "max_amount"), false, &max, &why) != 0) {
            json_decref(b);
            {
                error(req, CODE_BAD_REQUEST, 400, why);
                return;
            }
        }
        maxp = &max;
    }
    if (wdb_revoked(wl->db, "agent", a->id)) {
        refuse(wl, req, a, "intent", merchant, action, CODE_AGENT_REVOKED, 0,
               "the agent is revoked", maxp);
    } else if ((code = policy_intent(wl->w, a->principal, merchant, action, ttl, uses, &why)) !=
               CODE_OK) {
        refuse(wl, req, a, "intent", merchant, action, code, 0, why, maxp);
    } else {
        struct minted m;
        if (mint_intent(wl->w, a, merchant, action, ttl, uses, maxp, now_s(), &m) != 0) {
            error(req, CODE_UNAVAILABLE, 500, "cannot sign");
        } else {
            record(wl, a, "intent", merchant, action, m.jti, "minted", CODE_OK, NULL, maxp);
            minted_reply(req, 201, &m);
        }
    }
    json_decref(b);
}

static void new_id(char out[33])
{
    unsigned char r[16];
    if (RAND_bytes(r, sizeof(r)) != 1)
        abort();
    hex_encode(r, sizeof(r), out);
}

/* The cart must be a merchant's, for this agent's principal, within an intent's max_amount. */
static enum code check_cart(struct wallet *wl, const struct agent *a, const char *cart,
                            struct mandate *c, const char **why)
{
    struct mandate_limits lim = {16384, 5, wl->w->max_ttl_s};
    enum code rc =
        mandate_verify(cart, strlen(cart), MANDATE_CART, &wl->w->merchant_keys, &lim, now_s(), c);
    if (rc != CODE_OK) {
        *why = code_name(rc);
        return CODE_CART_INVALID;
    }
    if (strcmp(c->sub, a->principal->id) != 0) {
        *why = "the cart is for another principal";
        return CODE_CART_INVALID;
    }
    struct money max;
    if (c->intent[0] && wdb_intent_max(wl->db, c->intent, &max) &&
        (strcmp(max.currency, c->total.currency) != 0 || c->total.value > max.value)) {
        *why = "the cart total is over its intent's max_amount";
        return CODE_POLICY_DENIED;
    }
    return CODE_OK;
}

static void post_payment(struct wallet *wl, struct evhttp_request *req, const struct agent *a)
{
    json_t *b = http_body_json(req, MAX_BODY);
    const char *cart = b ? sjson_str(b, "cart") : NULL;
    if (!cart) {
        json_decref(b);
        {
            error(req, CODE_BAD_REQUEST, 400, "expected {\"cart\": \"<cart mandate>\"}");
            return;
        }
    }
    struct mandate c;
    const char *why = NULL;
    bool approval;
    enum code code;
    if (wdb_revoked(wl->db, "agent", a->id)) {
        refuse(wl, req, a, "payment", NULL, NULL, CODE_AGENT_REVOKED, 0, "the agent is revoked",
               NULL);
    } else if ((code = check_cart(wl, a, cart, &c, &why)) != CODE_OK) {
        refuse(wl, req, a, "payment", NULL, NULL, code, code == CODE_CART_INVALID ? 422 : 0, why,
               NULL);
    } else if ((code = policy_payment(a->principal, &c, &approval, &why)) != CODE_OK) {
        refuse(wl, req, a, "payment", c.iss, c.action, code, 0, why, &c.total);
    } else if (approval) {
        char id[33];
        new_id(id);
        if (wdb_approval_new(wl->db, id, a->id, cart, c.exp) != 0) {
            error(req, CODE_UNAVAILABLE, 503, "cannot record the approval");
        } else {
            record(wl, a, "payment", c.iss, c.action, c.jti, "pending", CODE_OK, id, &c.total);
            http_reply_json(req, 202, json_pack("{ss ss}", "approval_id", id, "status", "pending"));
        }
    } else {
        struct minted m;
        if (mint_payment(wl->w, a, &c, cart, now_s(), &m) != 0) {
            error(req, CODE_UNAVAILABLE, 500, "cannot sign");
        } else {
            record(wl, a, "payment", c.iss, c.action, m.jti, "minted", CODE_OK, NULL, &c.total);
            minted_reply(req, 201, &m);
        }
    }
    json_decref(b);
}

static const struct agent *agent_by_id(struct wallet *wl, const char *id)
{
    for (size_t i = 0; i < wl->w->nagents; i++)
        if (strcmp(wl->w->agents[i].id, id) == 0)
            return &wl->w->agents[i];
    return NULL;
}

/* GET /v1/approvals/{id} for the agent that asked; expired pending approvals read as such. */
static void get_approval(struct wallet *wl, struct evhttp_request *req, const struct agent *a,
                         const char *id)
{
    struct wdb_approval ap;
    if (!wdb_approval_get(wl->db, id, &ap) || strcmp(ap.agent, a->id) != 0) {
        free(ap.cart);
        free(ap.mandate);
        {
            error(req, CODE_NOT_FOUND, 404, "no such approval for this agent");
            return;
        }
    }
    if (strcmp(ap.status, "pending") == 0 && now_s() >= ap.expires_at)
        snprintf(ap.status, sizeof(ap.status), "expired");
    json_t *o = json_pack("{ss}", "status", ap.status);
    if (ap.mandate)
        sjson_set(o, "mandate", json_string(ap.mandate));
    http_reply_json(req, 200, o);
    free(ap.cart);
    free(ap.mandate);
}

/* POST /v1/approvals/{id}/approve|deny: the principal's decision. */
static void decide(struct wallet *wl, struct evhttp_request *req, const char *id, bool approve)
{
    struct wdb_approval ap;
    if (!wdb_approval_get(wl->db, id, &ap)) {
        error(req, CODE_NOT_FOUND, 404, "no such approval");
        return;
    }
    const struct agent *a = agent_by_id(wl, ap.agent);
    struct mandate c;
    const char *why;
    if (strcmp(ap.status, "pending") != 0) {
        error(req, CODE_BAD_REQUEST, 409, "already decided");
    } else if (now_s() >= ap.expires_at) {
        if (wdb_approval_set(wl->db, id, "expired", NULL) != 0)
            log_error("wallet db: cannot expire approval %s", id);
        error(req, CODE_BAD_REQUEST, 409, "the cart's price lock has expired");
    } else if (!approve) {
        if (wdb_approval_set(wl->db, id, "denied", NULL) != 0)
            error(req, CODE_UNAVAILABLE, 503, "cannot record the decision");
        else {
            record(wl, a, "approval", NULL, NULL, NULL, "denied", CODE_OK, id, NULL);
            http_reply_json(req, 200, json_pack("{ss}", "status", "denied"));
        }
    } else if (!a || wdb_revoked(wl->db, "agent", a->id) ||
               check_cart(wl, a, ap.cart, &c, &why) != CODE_OK) {
        error(req, CODE_POLICY_DENIED, 409, "the agent or the cart is no longer valid");
    } else {
        struct minted m;
        if (mint_payment(wl->w, a, &c, ap.cart, now_s(), &m) != 0 ||
            wdb_approval_set(wl->db, id, "approved", m.mandate) != 0) {
            free(m.mandate);
            error(req, CODE_UNAVAILABLE, 503, "cannot mint or record");
        } else {
            record(wl, a, "payment", c.iss, c.action, m.jti, "minted", CODE_OK, id, &c.total);
            free(m.mandate);
            http_reply_json(req, 200, json_pack("{ss}", "status", "approved"));
        }
    }
    free(ap.cart);
    free(ap.mandate);
}

static void push_send(struct push *p);

static void push_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    push_send(arg);
}

static void push_done(struct evhttp_request *resp, void *arg)
{
    struct push *p = arg;
    int status = resp ? evhttp_request_get_response_code(resp) : 0;
    bool ok = status == 201;
    if (wdb_push(p->wl->db, p->g->admin_url, p->kind, p->value, ok ? "acknowledged" : "pending",
                 p->attempts) != 0)
        log_error("wallet db: cannot record a push");
    if (ok) {
        log_info("revocation %s %s acknowledged by %s", p->kind, p->value, p->g->admin_url);
        struct timeval now = {0, 0};
        event_base_once(p->wl->base, -1, EV_TIMEOUT, push_free_later, p, &now);
        return;
    }
    int64_t ms = 100LL << (p->attempts < 6 ? p->attempts : 6);
    if (ms > PUSH_MAX_DELAY_MS)
        ms = PUSH_MAX_DELAY_MS;
    log_warn("revocation push to %s failed (status %d), retry in %lld ms", p->g->admin_url, status,
             (long long)ms);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(p->timer, &tv);
}

static void push_send(struct push *p)
{
    p->attempts++;
    if (!p->evcon) {
        char *host = NULL;
        int port = 0;
        if (hostport_parse(p->g->admin_url + 7, &host, &port) != 0) {
            log_error("gateway %s: bad admin_url", p->g->admin_url);
            return;
        }
        p->evcon = evhttp_connection_base_new(p->wl->base, NULL, host, (unsigned short)port);
        evhttp_connection_set_timeout(p->evcon, 5);
        free(host);
    }
    struct evhttp_request *req = evhttp_request_new(push_done, p);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char auth[600], hostport[300];
    snprintf(auth, sizeof(auth), "Bearer %s", p->g->token ? p->g->token : "");
    snprintf(hostport, sizeof(hostport), "%s", p->g->admin_url + 7);
    evhttp_add_header(h, "Authorization", auth);
    evhttp_add_header(h, "Host", hostport);
    evhttp_add_header(h, "Content-Type", "application/json");
    json_t *body = json_pack("{ss}", p->kind, p->value);
    char *s = sjson_dump(body);
    json_decref(body);
    evbuffer_add(evhttp_request_get_output_buffer(req), s, strlen(s));
    free(s);
    if (evhttp_make_request(p->evcon, req, EVHTTP_REQ_POST, "/admin/revocations") != 0)
        push_done(NULL, p);
}

static void push_start(struct wallet *wl, const struct gateway_target *g, const char *kind,
                       const char *value, int attempts)
{
    struct push *p = xcalloc(1, sizeof(*p));
    p->wl = wl;
    p->g = g;
    p->attempts = attempts;
    snprintf(p->kind, sizeof(p->kind), "%s", kind);
    snprintf(p->value, sizeof(p->value), "%s", value);
    p->timer = evtimer_new(wl->base, push_retry, p);
    p->next = wl->pushes;
    wl->pushes = p;
    if (wdb_push(wl->db, g->admin_url, kind, value, "pending", attempts) != 0)
        log_error("wallet db: cannot record a push");
    push_send(p);
}

static void resume_push(void *arg, const char *gateway, const char *kind, const char *value,
                        int attempts)
{
    struct wallet *wl = arg;
    for (size_t i = 0; i < wl->w->ngateways; i++)
        if (strcmp(wl->w->gateways[i].admin_url, gateway) == 0)
            push_start(wl, &wl->w->gateways[i], kind, value, attempts);
}

static void post_revocation(struct wallet *wl, struct evhttp_request *req)
{
    json_t *b = http_body_json(req, MAX_BODY);
    const char *kind = b && json_object_get(b, "agent") ? "agent" : "jti";
    const char *value = b ? sjson_str(b, kind) : NULL;
    if (!value || json_object_size(b) != 1 || !*value || strlen(value) > MANDATE_ID_MAX) {
        json_decref(b);
        {
            error(req, CODE_BAD_REQUEST, 400, "expected {\"agent\": id} or {\"jti\": id}");
            return;
        }
    }
    if (wdb_revoke(wl->db, kind, value) != 0) {
        json_decref(b);
        {
            error(req, CODE_UNAVAILABLE, 503, "cannot record the revocation");
            return;
        }
    }
    record(wl, strcmp(kind, "agent") == 0 ? agent_by_id(wl, value) : NULL, "revocation", NULL, NULL,
           strcmp(kind, "jti") == 0 ? value : NULL, "revoked", CODE_OK, value, NULL);
    for (size_t i = 0; i < wl->w->ngateways; i++)
        push_start(wl, &wl->w->gateways[i], kind, value, 0);
    http_reply_json(req, 201, json_pack("{ss ss}", "status", "revoked", kind, value));
    json_decref(b);
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct wallet *wl = arg;
    const char *uri = evhttp_request_get_uri(req);
    size_t n = strcspn(uri, "?");
    char path[256];
    snprintf(path, sizeof(path), "%.*s", (int)(n < 255 ? n : 255), uri);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool get = cmd == EVHTTP_REQ_GET, post = cmd == EVHTTP_REQ_POST;
    if (get && (strcmp(path, "/livez") == 0 || strcmp(path, "/readyz") == 0)) {
        http_reply_json(req, 200, json_pack("{ss}", "status", "ok"));
        return;
    }
    if (get && strcmp(path, "/.well-known/jwks.json") == 0) {
        http_reply_json(req, 200, jwks_to_json(wl->w->published));
        return;
    }
    const char *ap = "/v1/approvals/";
    size_t apl = strlen(ap);
    if (strncmp(path, ap, apl) == 0 && post &&
        (strstr(path + apl, "/approve") || strstr(path + apl, "/deny"))) {
        if (!admin_auth(wl, req)) {
            error(req, CODE_UNAUTHORIZED, 401, "the principal's admin token is required");
            return;
        }
        char id[64];
        snprintf(id, sizeof(id), "%.*s", (int)strcspn(path + apl, "/"), path + apl);
        {
            decide(wl, req, id, strstr(path + apl, "/approve") != NULL);
            return;
        }
    }
    if (post && strcmp(path, "/v1/revocations") == 0) {
        if (!admin_auth(wl, req)) {
            error(req, CODE_UNAUTHORIZED, 401, "the principal's admin token is required");
            return;
        }
        {
            post_revocation(wl, req);
            return;
        }
    }
    if (get && strcmp(path, "/v1/approvals") == 0) {
        if (!admin_auth(wl, req)) {
            error(req, CODE_UNAUTHORIZED, 401, "the principal's admin token is required");
            return;
        }
        {
            http_reply_json(req, 200,
                            json_pack("{so}", "approvals", wdb_approvals_pending(wl->db, now_s())));
            return;
        }
    }
    const struct agent *a = agent_auth(wl, req);
    if (!a) {
        error(req, CODE_UNAUTHORIZED, 401, "a valid agent bearer token is required");
        return;
    }
    if (post && strcmp(path, "/v1/mandates/intent") == 0) {
        post_intent(wl, req, a);
        return;
    }
    if (post && strcmp(path, "/v1/mandates/payment") == 0) {
        post_payment(wl, req, a);
        return;
    }
    if (get && strncmp(path, ap, apl) == 0 && !strchr(path + apl, '/')) {
        get_approval(wl, req, a, path + apl);
        return;
    }
    error(req, CODE_NOT_FOUND, 404, "no such endpoint");
}

static void on_term(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopexit(arg, NULL);
}

int service_run(struct wallet_config *w)
{
    signal(SIGPIPE, SIG_IGN);
    struct wallet wl = {w, NULL, NULL, NULL, NULL};
    char *err = NULL;
    int rc = 2;
    wl.db = wdb_open(w->database, &err);
    if (!wl.db) {
        log_error("%s", err);
        free(err);
        wallet_config_free(w);
        return 2;
    }
    wl.base = event_base_new();
    wl.http = evhttp_new(wl.base);
    evhttp_set_max_body_size(wl.http, MAX_BODY);
    evhttp_set_max_headers_size(wl.http, 16384);
    evhttp_set_timeout(wl.http, 30);
    evhttp_set_allowed_methods(wl.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    evhttp_set_gencb(wl.http, handle, &wl);
    struct event *term = evsignal_new(wl.base, SIGTERM, on_term, wl.base);
    struct event *intr = evsignal_new(wl.base, SIGINT, on_term, wl.base);
    event_add(term, NULL);
    event_add(intr, NULL);
    if (!evhttp_bind_socket_with_handle(wl.http, w->listen_host, (ev_uint16_t)w->listen_port)) {
        log_error("listen: cannot listen on %s:%d", w->listen_host, w->listen_port);
    } else {
        wdb_each_pending_push(wl.db, resume_push, &wl);
        log_info("wallet %s listening on %s:%d", w->id, w->listen_host, w->listen_port);
        event_base_dispatch(wl.base);
        rc = 0;
    }
    while (wl.pushes) /* still pending: they resume from the database at the next start */
        push_free(wl.pushes);
    event_free(term);
    event_free(intr);
    evhttp_free(wl.http);
    event_base_free(wl.base);
    wdb_close(wl.db);
    wallet_config_free(w);
    return rc;
}
