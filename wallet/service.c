/*
 * service: the wallet's HTTP API (SPEC §3) on one libevent loop: agents mint intent and payment
 * mandates under their principal's policy; payments above approval_above wait for a person;
 * revocations stop minting at once and are pushed to every gateway until acknowledged; an agent
 * can ask what its principal may still spend (GET /v1/spend), which asks the gateways too.
 */
#include "wallet/service.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/rand.h>

#include "core/b64url.h"
#include "core/http.h"
#include "core/log.h"
#include "core/sjson.h"
#include "core/sha256.h"
#include "gateway/jwks_remote.h"
#include "wallet/db.h"
#include "wallet/httpguard.h"
#include "wallet/mint.h"
#include "wallet/policy.h"

#define MAX_BODY            65536
#define PUSH_FIRST_DELAY_MS 500   /* after a gateway's first failure */
#define PUSH_MAX_DELAY_MS   30000 /* the backoff doubles up to this */
#define PUSH_TIMEOUT_S      5     /* for one push to connect and be answered */
#define HTTP_TIMEOUT_S      5     /* a client silent between reads, or idle in keep-alive */
#define APPROVAL_ID_MAX     64
#define SPEND_TIMEOUT_S     2 /* how long GET /v1/spend waits for each gateway */

/*
 * The pushes to one gateway: the pending rows of the database are the queue, sent one at a time,
 * least recently tried first. A failure delays the gateway's next attempt (whichever revocation
 * it is) by a backoff that doubles from PUSH_FIRST_DELAY_MS to PUSH_MAX_DELAY_MS; a success
 * resets it. Nothing is kept only in memory: after a restart the rows are sent again.
 */
struct pusher {
    struct wallet *wl;
    const struct gateway_target *g;
    struct evhttp_connection *evcon;
    struct event *timer;
    int64_t delay_ms; /* 0 while the gateway answers */
    bool in_flight;
    char kind[WDB_KIND_MAX + 1], value[WDB_VALUE_MAX + 1]; /* the push in flight */
};

struct wallet {
    struct wallet_config *w;
    struct wdb *db;
    struct event_base *base;
    struct httpguard *guard;  /* evhttp with a connection cap and a request deadline */
    struct pusher *pushers;   /* one per configured gateway */
    struct jwks_remote *jwks; /* the merchants' remote key sets (SPEC §7), on base */
};

static void error(struct evhttp_request *req, enum code code, int status, const char *msg)
{
    http_reply_json(req, status ? status : code_status(code),
                    json_pack("{ss ss}", "error", code_name(code), "message", msg));
}

/* Nothing is handed out that the database does not hold: the one answer when it cannot. */
static void unrecorded(struct evhttp_request *req)
{
    error(req, CODE_UNAVAILABLE, 503,
          "The wallet cannot write to its database now, so it hands nothing out; try again.");
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

/* Write one line of the mint log; 0, or -1 when the database would not take it. */
static int record(struct wallet *wl, const struct agent *a, const char *kind, const char *merchant,
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
    int rc = wdb_event(wl->db, &e);
    if (rc != 0)
        log_error("wallet db: could not record a %s %s", kind, decision);
    log_info("%s %s: agent=%s merchant=%s action=%s%s%s", kind, decision, a ? a->id : "-",
             merchant ? merchant : "-", action ? action : "-", detail ? " why=" : "",
             detail ? detail : "");
    return rc;
}

static void refuse(struct wallet *wl, struct evhttp_request *req, const struct agent *a,
                   const char *kind, const char *merchant, const char *action, enum code code,
                   int status, const char *why, const struct money *amount)
{
    /* A refusal hands nothing out: it is answered even when it cannot be recorded. */
    (void)record(wl, a, kind, merchant, action, NULL, "refused", code, why, amount);
    error(req, code, status, why);
}

/* Record a mint, then answer with the mandate; if the record fails the mandate is dropped. */
static void minted_reply(struct wallet *wl, struct evhttp_request *req, const struct agent *a,
                         const char *kind, const char *merchant, const char *action,
                         const struct money *amount, struct minted *m)
{
    if (record(wl, a, kind, merchant, action, m->jti, "minted", CODE_OK, NULL, amount) != 0) {
        unrecorded(req);
    } else {
        http_reply_json(req, 201,
                        json_pack("{ss ss sI}", "mandate", m->mandate, "jti", m->jti, "expires_at",
                                  (json_int_t)m->expires_at));
    }
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
        error(req, CODE_BAD_REQUEST, 400, why);
        return;
    }
    if (json_object_get(b, "max_amount")) {
        if (money_from_json(json_object_get(b, "max_amount"), false, &max, &why) != 0) {
            json_decref(b);
            error(req, CODE_BAD_REQUEST, 400, why);
            return;
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
        if (mint_intent(wl->w, a, merchant, action, ttl, uses, maxp, now_s(), &m) != 0)
            error(req, CODE_UNAVAILABLE, 500, "The wallet cannot sign now.");
        else
            minted_reply(wl, req, a, "intent", merchant, action, maxp, &m);
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

/* Why a cart did not verify, in a sentence for the agent's developer (the 422's message). */
static const char *cart_refusal(enum code rc)
{
    switch (rc) {
    case CODE_MANDATE_WRONG_TYPE:
        return "The cart is not a cart mandate (its typ is not cart-mandate+jwt).";
    case CODE_MANDATE_UNKNOWN_KEY:
        return "The cart is signed with a key the wallet does not know for that merchant.";
    case CODE_MANDATE_BAD_SIGNATURE:
        return "The cart's signature does not verify with the merchant's key.";
    case CODE_MANDATE_EXPIRED:
        return "The cart's price lock has expired.";
    case CODE_MANDATE_NOT_YET_VALID:
        return "The cart is not valid yet (its iat or nbf is in the future).";
    case CODE_MANDATE_TTL_TOO_LONG:
        return "The cart's lifetime is longer than the wallet's max_ttl_s.";
    default:
        return "The cart is not a well-formed signed cart mandate.";
    }
}

/* The cart must be a merchant's, for this agent's principal, within an intent's max_amount. */
static enum code check_cart(struct wallet *wl, const struct agent *a, const char *cart,
                            struct mandate *c, const char **why)
{
    struct mandate_limits lim = {16384, 5, wl->w->max_ttl_s};
    enum code rc =
        mandate_verify(cart, strlen(cart), MANDATE_CART, &wl->w->merchant_keys, &lim, now_s(), c);
    if (rc == CODE_MANDATE_UNKNOWN_KEY &&
        jwks_remote_unknown_key(&wl->w->merchant_keys, c->iss) == CODE_UNAVAILABLE) {
        /* The merchant's remote keys were never fetched: the cart cannot be checked now. */
        *why = "The wallet has no keys for this merchant yet (its jwks_uri has not been fetched); "
               "try again later.";
        return CODE_UNAVAILABLE;
    }
    if (rc != CODE_OK) {
        *why = cart_refusal(rc);
        return CODE_CART_INVALID;
    }
    if (strcmp(c->sub, a->principal->id) != 0) {
        *why = "The cart is for another principal.";
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

/* A pending approval and its line in the mint log, both or neither. */
static int hold_for_approval(struct wallet *wl, const struct agent *a, const struct mandate *c,
                             const char *cart, const char id[33])
{
    if (wdb_begin(wl->db) != 0)
        return -1;
    if (wdb_approval_new(wl->db, id, a->id, cart, c->exp) != 0 ||
        record(wl, a, "payment", c->iss, c->action, c->jti, "pending", CODE_OK, id, &c->total) !=
            0 ||
        wdb_commit(wl->db) != 0) {
        wdb_rollback(wl->db);
        return -1;
    }
    return 0;
}

static void post_payment(struct wallet *wl, struct evhttp_request *req, const struct agent *a)
{
    json_t *b = http_body_json(req, MAX_BODY);
    const char *cart = b ? sjson_str(b, "cart") : NULL;
    if (!cart) {
        json_decref(b);
        error(req, CODE_BAD_REQUEST, 400, "expected {\"cart\": \"<cart mandate>\"}");
        return;
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
        if (hold_for_approval(wl, a, &c, cart, id) != 0)
            unrecorded(req);
        else
            http_reply_json(req, 202, json_pack("{ss ss}", "approval_id", id, "status", "pending"));
    } else {
        struct minted m;
        if (mint_payment(wl->w, a, &c, cart, now_s(), &m) != 0)
            error(req, CODE_UNAVAILABLE, 500, "The wallet cannot sign now.");
        else
            minted_reply(wl, req, a, "payment", c.iss, c.action, &c.total, &m);
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
        error(req, CODE_NOT_FOUND, 404, "no such approval for this agent");
        return;
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

/* The decision and its line in the mint log, both or neither. */
static int set_decision(struct wallet *wl, const struct agent *a, const char *id,
                        const char *status, const struct mandate *c, const struct minted *m)
{
    if (wdb_begin(wl->db) != 0)
        return -1;
    int rc = wdb_approval_set(wl->db, id, status, m ? m->mandate : NULL);
    if (rc == 0 && m)
        rc = record(wl, a, "payment", c->iss, c->action, m->jti, "minted", CODE_OK, id, &c->total);
    else if (rc == 0)
        rc = record(wl, a, "approval", NULL, NULL, NULL, status, CODE_OK, id, NULL);
    if (rc != 0 || wdb_commit(wl->db) != 0) {
        wdb_rollback(wl->db);
        return -1;
    }
    return 0;
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
    enum code cc = CODE_OK;
    if (strcmp(ap.status, "pending") != 0) {
        error(req, CODE_BAD_REQUEST, 409, "already decided");
    } else if (now_s() >= ap.expires_at) {
        if (wdb_approval_set(wl->db, id, "expired", NULL) != 0)
            log_error("wallet db: cannot expire approval %s", id);
        error(req, CODE_BAD_REQUEST, 409, "the cart's price lock has expired");
    } else if (!approve) {
        if (set_decision(wl, a, id, "denied", NULL, NULL) != 0)
            unrecorded(req);
        else
            http_reply_json(req, 200, json_pack("{ss}", "status", "denied"));
    } else if (!a || wdb_revoked(wl->db, "agent", a->id) ||
               (cc = check_cart(wl, a, ap.cart, &c, &why)) != CODE_OK) {
        if (cc == CODE_UNAVAILABLE) /* the merchant's remote keys never came: not a refusal */
            error(req, CODE_UNAVAILABLE, 503, why);
        else
            error(req, CODE_POLICY_DENIED, 409, "the agent or the cart is no longer valid");
    } else {
        struct minted m;
        if (mint_payment(wl->w, a, &c, ap.cart, now_s(), &m) != 0) {
            error(req, CODE_UNAVAILABLE, 500, "The wallet cannot sign now.");
        } else {
            if (set_decision(wl, a, id, "approved", &c, &m) != 0)
                unrecorded(req);
            else
                http_reply_json(req, 200, json_pack("{ss}", "status", "approved"));
            free(m.mandate);
        }
    }
    free(ap.cart);
    free(ap.mandate);
}

/* Digits after the decimal point of a currency's major unit (ISO 4217); 2 unless listed. */
static int minor_digits(const char *currency)
{
    static const char zero[] =
        "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF";
    static const char three[] = "BHD IQD JOD KWD LYD OMR TND";
    if (strlen(currency) != 3)
        return 2;
    if (strstr(zero, currency))
        return 0;
    return strstr(three, currency) ? 3 : 2;
}

/* "180.00 EUR" for {18000, EUR}: what a person reads, from minor units without floats. */
static void major_units(const struct money *m, char *buf, size_t n)
{
    int digits = minor_digits(m->currency);
    int64_t scale = digits == 0 ? 1 : digits == 2 ? 100 : 1000;
    if (digits == 0)
        snprintf(buf, n, "%lld %s", (long long)m->value, m->currency);
    else
        snprintf(buf, n, "%lld.%0*lld %s", (long long)(m->value / scale), digits,
                 (long long)(m->value % scale), m->currency);
}

/* A money member of obj in major units, or NULL when it is not money. */
static json_t *major_json(const json_t *obj, const char *key)
{
    struct money m;
    const char *why;
    char buf[48];
    if (money_from_json(json_object_get(obj, key), false, &m, &why) != 0)
        return NULL;
    major_units(&m, buf, sizeof(buf));
    return json_string(buf);
}

/*
 * What a person deciding needs to see of a pending approval, from its cart's claims: the
 * principal, the merchant and action, the total and each item in major units. The cart's
 * signature was verified when the approval was made; here it is only read.
 */
static void describe_cart(json_t *ap)
{
    const char *cart = sjson_str(ap, "cart");
    const char *d1 = cart ? strchr(cart, '.') : NULL, *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d2)
        return;
    unsigned char *buf = xmalloc((size_t)(d2 - d1));
    long n = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), buf);
    char *err = NULL;
    json_t *c = n > 0 ? sjson_parse((char *)buf, (size_t)n, &err) : NULL;
    free(err);
    free(buf);
    if (!c)
        return;
    static const char *const copied[][2] = {
        {"sub", "principal"}, {"iss", "merchant"}, {"action", "action"}};
    for (size_t i = 0; i < ARRAY_LEN(copied); i++)
        if (sjson_str(c, copied[i][0]))
            sjson_set(ap, copied[i][1], json_string(sjson_str(c, copied[i][0])));
    json_t *v = major_json(c, "total");
    if (v)
        sjson_set(ap, "amount", v);
    json_t *items = json_array();
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(c, "items"), i, it)
    {
        int64_t qty = 0;
        json_t *unit = major_json(it, "unit");
        if (!sjson_str(it, "sku") || sjson_int(it, "qty", &qty) != 0 || !unit) {
            json_decref(unit);
            continue;
        }
        sjson_append(items, json_pack("{ss sI so}", "sku", sjson_str(it, "sku"), "qty",
                                      (json_int_t)qty, "unit", unit));
    }
    sjson_set(ap, "items", items);
    json_decref(c);
}

/* GET /v1/approvals: the pending approvals, each described for the person who decides. */
static void list_approvals(struct wallet *wl, struct evhttp_request *req)
{
    json_t *arr = wdb_approvals_pending(wl->db, now_s());
    size_t i;
    json_t *ap;
    json_array_foreach(arr, i, ap)
    {
        describe_cart(ap);
    }
    http_reply_json(req, 200, json_pack("{so}", "approvals", arr));
}

/*
 * GET /v1/spend: the agent's principal's cap, what this wallet minted in payment mandates in the
 * cap's current period, and what each configured gateway reports as spent there (GET
 * /admin/spend?principal=P, the amount under this wallet's id, the cap's currency and period).
 * "remaining" is the cap less the gateways' total when at least one answered (each gateway keeps
 * its own ledger), else less what was minted (an upper bound of what can have been spent through
 * this wallet). The answer waits for every gateway, at most SPEND_TIMEOUT_S.
 */
struct spend_query {
    struct wallet *wl;
    struct evhttp_request *req;
    const struct principal *p;
    char period[16];
    int64_t minted;
    size_t pending;
    json_t *gateways; /* one object per configured gateway, in order */
};

/* When the period "d2026-11-22", "w2026-11-16", "m2026-11" or "total" began, in Unix seconds. */
static int64_t period_start(const char *period)
{
    struct tm tm = {0};
    if ((period[0] == 'd' || period[0] == 'w') &&
        sscanf(period + 1, "%4d-%2d-%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday) == 3) {
    } else if (period[0] == 'm' && sscanf(period + 1, "%4d-%2d", &tm.tm_year, &tm.tm_mon) == 2) {
        tm.tm_mday = 1;
    } else {
        return 0;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

static void spend_answer(struct spend_query *q)
{
    const struct principal *p = q->p;
    int64_t spent = 0;
    bool any = false;
    size_t i;
    json_t *g;
    json_array_foreach(q->gateways, i, g)
    {
        int64_t v;
        if (sjson_int(json_object_get(g, "spent"), "value", &v) == 0) {
            spent += v;
            any = true;
        }
    }
    if (!any)
        spent = q->minted;
    struct money cap = p->spend_cap, minted = cap, remaining = cap;
    minted.value = q->minted;
    remaining.value = cap.value > spent ? cap.value - spent : 0;
    json_t *c = money_to_json(&cap);
    sjson_set(c, "period", json_string(cap_period_name(p->cap_period)));
    http_reply_json(q->req, 200,
                    json_pack("{ss so ss so so so ss}", "principal", p->id, "cap", c, "period",
                              q->period, "minted", money_to_json(&minted), "gateways", q->gateways,
                              "remaining", money_to_json(&remaining), "remaining_basis",
                              any ? "gateways" : "minted"));
    free(q);
}

struct spend_call {
    struct spend_query *q;
    json_t *slot;                    /* borrowed from q->gateways */
    struct evhttp_connection *evcon; /* owned: freed once its callback has returned */
};

/* evhttp still uses a connection while it runs the request's callback: free it just after. */
static void free_evcon(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evhttp_connection_free(arg);
}

/* One gateway's answer: the row for this wallet, the cap's currency and period, or zero. */
static void spend_done(struct evhttp_request *resp, void *arg)
{
    struct spend_call *call = arg;
    struct spend_query *q = call->q;
    int status = resp ? evhttp_request_get_response_code(resp) : 0;
    json_t *doc = NULL;
    if (status == 200) {
        struct evbuffer *b = evhttp_request_get_input_buffer(resp);
        char *err = NULL;
        doc = sjson_parse((const char *)evbuffer_pullup(b, -1), evbuffer_get_length(b), &err);
        free(err);
    }
    json_t *rows = json_object_get(doc, "spend");
    if (!json_is_array(rows)) {
        sjson_set(call->slot, "error",
                  json_string(status ? "unexpected answer" : "unreachable or timed out"));
        if (status)
            sjson_set(call->slot, "status", json_integer(status));
    } else {
        struct money got = q->p->spend_cap;
        got.value = 0;
        size_t i;
        json_t *r;
        json_array_foreach(rows, i, r)
        {
            const char *iss = sjson_str(r, "issuer"), *cur = sjson_str(r, "currency"),
                       *per = sjson_str(r, "period");
            int64_t v;
            if (iss && cur && per && strcmp(iss, q->wl->w->id) == 0 &&
                strcmp(cur, got.currency) == 0 && strcmp(per, q->period) == 0 &&
                sjson_int(json_object_get(r, "spent"), "value", &v) == 0)
                got.value = v;
        }
        sjson_set(call->slot, "spent", money_to_json(&got));
    }
    json_decref(doc);
    if (call->evcon)
        event_base_once(q->wl->base, -1, EV_TIMEOUT, free_evcon, call->evcon,
                        &(struct timeval){0, 0});
    free(call);
    if (--q->pending == 0)
        spend_answer(q);
}

static void get_spend(struct wallet *wl, struct evhttp_request *req, const struct agent *a)
{
    struct spend_query *q = xcalloc(1, sizeof(*q));
    q->wl = wl;
    q->req = req;
    q->p = a->principal;
    int64_t now = (int64_t)time(NULL);
    cap_period_at(q->p->cap_period, now, q->period);
    if (wdb_minted_since(wl->db, q->p->id, q->p->spend_cap.currency, period_start(q->period) * 1000,
                         &q->minted) != 0) {
        free(q);
        error(req, CODE_UNAVAILABLE, 503, "The wallet cannot read its database now.");
        return;
    }
    q->gateways = json_array();
    char *who = evhttp_encode_uri(q->p->id);
    char path[600];
    snprintf(path, sizeof(path), "/admin/spend?principal=%s", who);
    free(who);
    q->pending = 1; /* held until every call is made, so that none can answer first */
    for (size_t i = 0; i < wl->w->ngateways; i++) {
        const struct gateway_target *g = &wl->w->gateways[i];
        struct spend_call *call = xcalloc(1, sizeof(*call));
        call->q = q;
        call->slot = json_pack("{ss}", "admin_url", g->admin_url);
        sjson_append(q->gateways, call->slot);
        struct evhttp_connection *evcon =
            evhttp_connection_base_new(wl->base, NULL, g->host, (unsigned short)g->port);
        evhttp_connection_set_timeout(evcon, SPEND_TIMEOUT_S);
        struct evhttp_request *r = evhttp_request_new(spend_done, call);
        struct evkeyvalq *h = evhttp_request_get_output_headers(r);
        char auth[600];
        snprintf(auth, sizeof(auth), "Bearer %s", g->token ? g->token : "");
        evhttp_add_header(h, "Authorization", auth);
        evhttp_add_header(h, "Host", g->admin_url + strlen("http://"));
        q->pending++;
        /* On failure evhttp has freed r without calling spend_done. */
        if (evhttp_make_request(evcon, r, EVHTTP_REQ_GET, path) != 0) {
            evhttp_connection_free(evcon);
            spend_done(NULL, call);
            continue;
        }
        call->evcon = evcon;
    }
    if (--q->pending == 0)
        spend_answer(q);
}

static void push_kick(struct pusher *p);

static void push_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    push_kick(arg);
}

/* Wait for the gateway's next attempt: double the delay, from PUSH_FIRST_DELAY_MS to the cap. */
static void push_backoff(struct pusher *p)
{
    p->delay_ms = p->delay_ms ? p->delay_ms * 2 : PUSH_FIRST_DELAY_MS;
    if (p->delay_ms > PUSH_MAX_DELAY_MS)
        p->delay_ms = PUSH_MAX_DELAY_MS;
    struct timeval tv = {p->delay_ms / 1000, (p->delay_ms % 1000) * 1000};
    event_add(p->timer, &tv);
}

/* The gateway's answer (or its absence): record the attempt, then the next push or a backoff. */
static void push_result(struct pusher *p, int status)
{
    bool ok = status == 201;
    p->in_flight = false;
    if (wdb_push_tried(p->wl->db, p->g->admin_url, p->kind, p->value, ok) != 0)
        log_error("wallet db: cannot record a push to %s", p->g->admin_url);
    if (!ok) {
        push_backoff(p);
        log_warn("revocation push to %s failed (status %d), retry in %lld ms", p->g->admin_url,
                 status, (long long)p->delay_ms);
        return;
    }
    log_info("revocation %s %s acknowledged by %s", p->kind, p->value, p->g->admin_url);
    p->delay_ms = 0;
    /* The next push goes through the timer too: a request may not be made on a connection from
     * inside that connection's callback. */
    struct timeval now = {0, 0};
    event_add(p->timer, &now);
}

static void push_done(struct evhttp_request *resp, void *arg)
{
    push_result(arg, resp ? evhttp_request_get_response_code(resp) : 0);
}

/* Send the gateway's next pending push, unless one is in flight or the gateway is backing off. */
static void push_kick(struct pusher *p)
{
    if (p->in_flight || evtimer_pending(p->timer, NULL))
        return;
    int found = wdb_push_next(p->wl->db, p->g->admin_url, p->kind, p->value);
    if (found < 0) /* the database cannot say: ask again later */
        push_backoff(p);
    if (found <= 0)
        return;
    if (!p->evcon) {
        p->evcon =
            evhttp_connection_base_new(p->wl->base, NULL, p->g->host, (unsigned short)p->g->port);
        evhttp_connection_set_timeout(p->evcon, PUSH_TIMEOUT_S);
    }
    struct evhttp_request *req = evhttp_request_new(push_done, p);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char auth[600];
    snprintf(auth, sizeof(auth), "Bearer %s", p->g->token ? p->g->token : "");
    evhttp_add_header(h, "Authorization", auth);
    evhttp_add_header(h, "Host", p->g->admin_url + strlen("http://"));
    evhttp_add_header(h, "Content-Type", "application/json");
    json_t *body = json_pack("{ss}", p->kind, p->value);
    char *s = sjson_dump(body);
    json_decref(body);
    evbuffer_add(evhttp_request_get_output_buffer(req), s, strlen(s));
    free(s);
    p->in_flight = true;
    /* On failure evhttp has freed req without calling push_done. */
    if (evhttp_make_request(p->evcon, req, EVHTTP_REQ_POST, "/admin/revocations") != 0)
        push_result(p, 0);
}

/* The revocation, a pending push per gateway and its line in the mint log: all or nothing. */
static int record_revocation(struct wallet *wl, const char *kind, const char *value)
{
    if (wdb_begin(wl->db) != 0)
        return -1;
    int rc = wdb_revoke(wl->db, kind, value);
    for (size_t i = 0; rc == 0 && i < wl->w->ngateways; i++)
        rc = wdb_push_add(wl->db, wl->w->gateways[i].admin_url, kind, value);
    if (rc == 0)
        rc = record(wl, strcmp(kind, "agent") == 0 ? agent_by_id(wl, value) : NULL, "revocation",
                    NULL, NULL, strcmp(kind, "jti") == 0 ? value : NULL, "revoked", CODE_OK, value,
                    NULL);
    if (rc != 0 || wdb_commit(wl->db) != 0) {
        wdb_rollback(wl->db);
        return -1;
    }
    return 0;
}

static void post_revocation(struct wallet *wl, struct evhttp_request *req)
{
    json_t *b = http_body_json(req, MAX_BODY);
    const char *kind = b && json_object_get(b, "agent") ? "agent" : "jti";
    const char *value = b ? sjson_str(b, kind) : NULL;
    if (!value || json_object_size(b) != 1 || !*value || strlen(value) > WDB_VALUE_MAX) {
        json_decref(b);
        error(req, CODE_BAD_REQUEST, 400, "expected {\"agent\": id} or {\"jti\": id}");
        return;
    }
    if (record_revocation(wl, kind, value) != 0) {
        json_decref(b);
        error(req, CODE_UNAVAILABLE, 503,
              "The wallet cannot record the revocation now; nothing was revoked.");
        return;
    }
    for (size_t i = 0; i < wl->w->ngateways; i++)
        push_kick(&wl->pushers[i]);
    http_reply_json(req, 201, json_pack("{ss ss}", "status", "revoked", kind, value));
    json_decref(b);
}

enum route {
    ROUTE_NONE,
    ROUTE_HEALTH,
    ROUTE_READY,
    ROUTE_JWKS,
    ROUTE_INTENT,
    ROUTE_PAYMENT,
    ROUTE_REVOKE,
    ROUTE_APPROVALS,
    ROUTE_APPROVAL,
    ROUTE_APPROVE,
    ROUTE_DENY,
    ROUTE_SPEND,
};

/*
 * The route of (cmd, path), by exact path segments: /v1/approvals/{id} with {id} one non-empty
 * segment, optionally followed by exactly /approve or /deny; anything else is ROUTE_NONE.
 */
static enum route route(enum evhttp_cmd_type cmd, const char *path, char id[APPROVAL_ID_MAX + 1])
{
    static const struct {
        enum evhttp_cmd_type cmd;
        const char *path;
        enum route r;
    } fixed[] = {
        {EVHTTP_REQ_GET, "/livez", ROUTE_HEALTH},
        {EVHTTP_REQ_GET, "/readyz", ROUTE_READY},
        {EVHTTP_REQ_GET, "/.well-known/jwks.json", ROUTE_JWKS},
        {EVHTTP_REQ_POST, "/v1/mandates/intent", ROUTE_INTENT},
        {EVHTTP_REQ_POST, "/v1/mandates/payment", ROUTE_PAYMENT},
        {EVHTTP_REQ_POST, "/v1/revocations", ROUTE_REVOKE},
        {EVHTTP_REQ_GET, "/v1/approvals", ROUTE_APPROVALS},
        {EVHTTP_REQ_GET, "/v1/spend", ROUTE_SPEND},
    };
    for (size_t i = 0; i < ARRAY_LEN(fixed); i++)
        if (strcmp(path, fixed[i].path) == 0)
            return cmd == fixed[i].cmd ? fixed[i].r : ROUTE_NONE;
    static const char prefix[] = "/v1/approvals/";
    if (strncmp(path, prefix, strlen(prefix)) != 0)
        return ROUTE_NONE;
    const char *seg = path + strlen(prefix);
    size_t n = strcspn(seg, "/");
    if (n == 0 || n > APPROVAL_ID_MAX)
        return ROUTE_NONE;
    memcpy(id, seg, n);
    id[n] = '\0';
    const char *rest = seg + n;
    if (*rest == '\0')
        return cmd == EVHTTP_REQ_GET ? ROUTE_APPROVAL : ROUTE_NONE;
    if (cmd != EVHTTP_REQ_POST)
        return ROUTE_NONE;
    if (strcmp(rest, "/approve") == 0)
        return ROUTE_APPROVE;
    return strcmp(rest, "/deny") == 0 ? ROUTE_DENY : ROUTE_NONE;
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct wallet *wl = arg;
    const char *uri = evhttp_request_get_uri(req);
    size_t n = strcspn(uri, "?");
    char path[256], id[APPROVAL_ID_MAX + 1];
    snprintf(path, sizeof(path), "%.*s", (int)(n < 255 ? n : 255), uri);
    /* The route first: an unknown path is 404 whoever asks. */
    enum route r = n < 255 ? route(evhttp_request_get_command(req), path, id) : ROUTE_NONE;
    const struct agent *a = NULL;
    switch (r) {
    case ROUTE_NONE:
        error(req, CODE_NOT_FOUND, 404, "no such endpoint");
        return;
    case ROUTE_HEALTH:
        http_reply_json(req, 200, json_pack("{ss}", "status", "ok"));
        return;
    case ROUTE_READY: {
        /* Not ready while a merchant's remote key set was never fetched (SPEC §7): name them. */
        struct jwks_remote_ring ring = {"merchant", &wl->w->merchant_keys};
        char *missing = jwks_remote_missing_in(&ring, 1);
        if (missing)
            error(req, CODE_UNAVAILABLE, 503, missing);
        else
            http_reply_json(req, 200, json_pack("{ss}", "status", "ok"));
        free(missing);
        return;
    }
    case ROUTE_JWKS:
        http_reply_json(req, 200, jwks_to_json(wl->w->published));
        return;
    case ROUTE_REVOKE:
    case ROUTE_APPROVALS:
    case ROUTE_APPROVE:
    case ROUTE_DENY:
        if (!admin_auth(wl, req)) {
            error(req, CODE_UNAUTHORIZED, 401, "the principal's admin token is required");
            return;
        }
        break;
    case ROUTE_INTENT:
    case ROUTE_PAYMENT:
    case ROUTE_APPROVAL:
    case ROUTE_SPEND:
        if (!(a = agent_auth(wl, req))) {
            error(req, CODE_UNAUTHORIZED, 401, "a valid agent bearer token is required");
            return;
        }
        break;
    }
    switch (r) {
    case ROUTE_REVOKE:
        post_revocation(wl, req);
        break;
    case ROUTE_APPROVALS:
        list_approvals(wl, req);
        break;
    case ROUTE_APPROVE:
    case ROUTE_DENY:
        decide(wl, req, id, r == ROUTE_APPROVE);
        break;
    case ROUTE_INTENT:
        post_intent(wl, req, a);
        break;
    case ROUTE_PAYMENT:
        post_payment(wl, req, a);
        break;
    case ROUTE_APPROVAL:
        get_approval(wl, req, a, id);
        break;
    case ROUTE_SPEND:
        get_spend(wl, req, a);
        break;
    default:
        break;
    }
}

static void on_term(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopexit(arg, NULL);
}

/* SIGHUP: the wallet reads its configuration once, at start; say so instead of dying. */
static void on_hup(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    log_warn("SIGHUP: the wallet reads its configuration at start only; restart it to apply "
             "changes");
}

int service_run(struct wallet_config *w)
{
    signal(SIGPIPE, SIG_IGN);
    struct wallet wl = {w, NULL, NULL, NULL, NULL, NULL};
    char *err = NULL;
    int rc = 2;
    wl.db = wdb_open(w->database, &err);
    if (!wl.db) {
        log_error("%s", err);
        free(err);
        wallet_config_free(w);
        return 2;
    }
    log_route_libevent();
    wl.base = event_base_new();
    wl.guard = httpguard_new(wl.base,
                             &(struct httpguard_limits){w->max_connections, w->header_timeout_ms});
    struct evhttp *http = httpguard_http(wl.guard);
    evhttp_set_max_body_size(http, MAX_BODY);
    evhttp_set_max_headers_size(http, 16384);
    /* evhttp's timeout restarts at every read: it closes a silent client early; the guard's
     * deadline bounds one that trickles bytes (libevent 2.1 has neither a cap nor a deadline). */
    evhttp_set_timeout(http, HTTP_TIMEOUT_S);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    httpguard_set_gencb(wl.guard, handle, &wl);
    wl.pushers = xcalloc(w->ngateways + 1, sizeof(struct pusher));
    for (size_t i = 0; i < w->ngateways; i++) {
        wl.pushers[i].wl = &wl;
        wl.pushers[i].g = &w->gateways[i];
        wl.pushers[i].timer = evtimer_new(wl.base, push_timer, &wl.pushers[i]);
    }
    struct event *term = evsignal_new(wl.base, SIGTERM, on_term, wl.base);
    struct event *intr = evsignal_new(wl.base, SIGINT, on_term, wl.base);
    struct event *hup = evsignal_new(wl.base, SIGHUP, on_hup, NULL);
    event_add(term, NULL);
    event_add(intr, NULL);
    event_add(hup, NULL);
    /* The merchants' remote key sets: fetched on this loop, never blocking it. */
    struct jwks_remote_ring ring = {"merchant", &w->merchant_keys};
    wl.jwks = jwks_remote_start(wl.base, &ring, 1,
                                &(struct jwks_remote_opts){.user_agent = "mandate-wallet"});
    if (httpguard_bind(wl.guard, w->listen_host, w->listen_port) != 0) {
        log_error("listen: cannot listen on %s:%d", w->listen_host, w->listen_port);
    } else {
        /* What an earlier run left pending goes out now. */
        for (size_t i = 0; i < w->ngateways; i++)
            push_kick(&wl.pushers[i]);
        log_info("wallet %s listening on %s:%d", w->id, w->listen_host, w->listen_port);
        event_base_dispatch(wl.base);
        rc = 0;
    }
    /* Pushes still pending stay in the database and resume at the next start. */
    for (size_t i = 0; i < w->ngateways; i++) {
        if (wl.pushers[i].evcon)
            evhttp_connection_free(wl.pushers[i].evcon);
        event_free(wl.pushers[i].timer);
    }
    free(wl.pushers);
    jwks_remote_free(wl.jwks);
    event_free(term);
    event_free(intr);
    event_free(hup);
    httpguard_free(wl.guard);
    event_base_free(wl.base);
    wdb_close(wl.db);
    wallet_config_free(w);
    return rc;
}
