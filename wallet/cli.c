/*
 * cli: approvals from the terminal, over the wallet's HTTP API; and sign-cart, which signs a cart
 * mandate (SPEC §1.2) for a merchant with no JOSE code of its own.
 */
#include "wallet/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "core/jws.h"
#include "core/sjson.h"
#include "wallet/config.h"

struct call {
    int status;
    char *body;
    struct event_base *base;
};

static void on_done(struct evhttp_request *req, void *arg)
{
    struct call *c = arg;
    if (req) {
        c->status = evhttp_request_get_response_code(req);
        struct evbuffer *b = evhttp_request_get_input_buffer(req);
        c->body = xstrndup((char *)evbuffer_pullup(b, -1), evbuffer_get_length(b));
    }
    /* Leave now: the kept-alive connection would hold the loop until its timeout. */
    event_base_loopexit(c->base, NULL);
}

/* One blocking HTTP call to the wallet, with the admin token. */
static int call(const char *host, int port, enum evhttp_cmd_type cmd, const char *path,
                const char *token, struct call *c)
{
    struct event_base *base = event_base_new();
    struct evhttp_connection *evcon =
        evhttp_connection_base_new(base, NULL, host, (unsigned short)port);
    evhttp_connection_set_timeout(evcon, 10);
    struct evhttp_request *req = evhttp_request_new(on_done, c);
    char auth[512];
    snprintf(auth, sizeof(auth), "Bearer %s", token);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Authorization", auth);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", host);
    memset(c, 0, sizeof(*c));
    c->base = base;
    if (evhttp_make_request(evcon, req, cmd, path) == 0)
        event_base_dispatch(base);
    evhttp_connection_free(evcon);
    event_base_free(base);
    return c->status ? 0 : -1;
}

/* A string member to print, "?" when the wallet did not give it. */
static const char *str_or(const json_t *o, const char *key)
{
    const char *s = sjson_str(o, key);
    return s ? s : "?";
}

static char *read_token(const char *file)
{
    const char *env = getenv("MANDATE_WALLET_ADMIN_TOKEN");
    if (!file)
        return env ? xstrdup(env) : NULL;
    char *err = NULL;
    size_t len;
    char *t = file_read(file, 4096, &len, &err);
    if (!t) {
        fprintf(stderr, "mandate-wallet: %s\n", err);
        free(err);
        return NULL;
    }
    while (len && (t[len - 1] == '\n' || t[len - 1] == '\r'))
        t[--len] = '\0';
    return t;
}

/* One line per pending approval, then one per item of its cart, as the wallet describes them. */
static void print_approvals(const char *body)
{
    char *err = NULL;
    json_t *doc = sjson_parse(body, strlen(body), &err);
    free(err);
    json_t *arr = json_object_get(doc, "approvals");
    printf("%-34s %-16s %-12s %-12s %-16s %-12s %s\n", "ID", "AGENT", "PRINCIPAL", "MERCHANT",
           "AMOUNT", "ACTION", "EXPIRES (UTC)");
    size_t i;
    json_t *a;
    json_array_foreach(arr, i, a)
    {
        char when[32] = "?";
        int64_t exp = 0;
        if (sjson_int(a, "expires_at", &exp) == 0) {
            time_t t = (time_t)exp;
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
        }
        printf("%-34s %-16s %-12s %-12s %-16s %-12s %s\n", str_or(a, "id"), str_or(a, "agent"),
               str_or(a, "principal"), str_or(a, "merchant"), str_or(a, "amount"),
               str_or(a, "action"), when);
        size_t j;
        json_t *it;
        json_array_foreach(json_object_get(a, "items"), j, it)
        {
            int64_t qty = 0;
            if (sjson_int(it, "qty", &qty) != 0)
                continue;
            printf("    %lld x %s at %s\n", (long long)qty, str_or(it, "sku"), str_or(it, "unit"));
        }
    }
    if (i == 0)
        printf("(no pending approvals)\n");
    json_decref(doc);
}

int cli_main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, 0, 'c'},
                                         {"admin-token-file", required_argument, 0, 't'},
                                         {0, 0, 0, 0}};
    const char *cmd = argv[0], *config = NULL, *token_file = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'c')
            config = optarg;
        else if (c == 't')
            token_file = optarg;
        else
            return 1;
    }
    bool listing = strcmp(cmd, "approvals") == 0;
    const char *id = optind < argc ? argv[optind] : NULL;
    if (!config || (listing ? id != NULL : !id || optind + 1 != argc)) {
        fprintf(stderr, "usage: mandate-wallet approvals|approve ID|deny ID --config FILE "
                        "[--admin-token-file FILE]\n");
        return 1;
    }
    struct cfg cf;
    struct wallet_config *w = wallet_config_load(config, &cf);
    cfg_print_errors(&cf);
    cfg_clear(&cf);
    char *token = w ? read_token(token_file) : NULL;
    if (!w || !token) {
        if (w && !token)
            fprintf(stderr, "mandate-wallet: no admin token (--admin-token-file or "
                            "$MANDATE_WALLET_ADMIN_TOKEN)\n");
        wallet_config_free(w);
        return 1;
    }
    char path[160];
    if (listing)
        snprintf(path, sizeof(path), "/v1/approvals");
    else
        snprintf(path, sizeof(path), "/v1/approvals/%.64s/%s", id, cmd);
    struct call r;
    int rc = 2;
    if (call(w->listen_host, w->listen_port, listing ? EVHTTP_REQ_GET : EVHTTP_REQ_POST, path,
             token, &r) != 0) {
        fprintf(stderr, "mandate-wallet: cannot reach the wallet at %s:%d\n", w->listen_host,
                w->listen_port);
    } else if (r.status != 200) {
        fprintf(stderr, "mandate-wallet: %d %s", r.status, r.body ? r.body : "\n");
        rc = 1;
    } else {
        if (listing)
            print_approvals(r.body);
        else
            printf("%s: %s\n", id, strcmp(cmd, "approve") == 0 ? "approved" : "denied");
        rc = 0;
    }
    free(r.body);
    free(token);
    wallet_config_free(w);
    return rc;
}

#define CART_TTL_DEFAULT 600
#define CART_TTL_MAX     86400 /* a price lock of a day at most */
#define CART_ITEMS_MAX   (1 << 20)

static int sign_cart_usage(void)
{
    fprintf(stderr, "usage: mandate-wallet sign-cart --key KEY.pem --kid KID --merchant M "
                    "--principal P --action A --items ITEMS.json [--ttl SECONDS] [--intent JTI]\n");
    return 1;
}

/*
 * The items file ([{"sku", "qty", "unit": money}, ...], non-empty) checked and added up into
 * total, as the gateway will add it up: one currency, integer amounts, no overflow. A new array,
 * or NULL with the reason printed.
 */
static json_t *load_items(const char *path, struct money *total)
{
    char *err = NULL;
    size_t len;
    char *text = file_read(path, CART_ITEMS_MAX, &len, &err);
    json_t *doc = text ? sjson_parse(text, len, &err) : NULL;
    free(text);
    if (!doc) {
        fprintf(stderr, "mandate-wallet: %s: %s\n", path, err ? err : "unreadable");
        free(err);
        return NULL;
    }
    const char *why = NULL;
    size_t i;
    json_t *it;
    if (!json_is_array(doc) || json_array_size(doc) == 0)
        why = "expected a non-empty array of {\"sku\", \"qty\", \"unit\"}";
    json_array_foreach(doc, i, it)
    {
        if (why)
            break;
        struct money unit, line;
        int64_t qty;
        const char *mwhy;
        if (!json_is_object(it) || json_object_size(it) != 3 || !sjson_str(it, "sku") ||
            !*sjson_str(it, "sku") || sjson_int(it, "qty", &qty) != 0 || qty < 1) {
            why = "each item is {\"sku\": string, \"qty\": integer >= 1, \"unit\": money}";
        } else if (money_from_json(json_object_get(it, "unit"), false, &unit, &mwhy) != 0) {
            why = mwhy;
        } else if (money_mul(qty, &unit, &line) != 0 ||
                   (i > 0 && money_add(total, &line, total) != 0)) {
            why = "the items overflow or mix currencies";
        } else if (i == 0) {
            *total = line;
        }
        if (why)
            fprintf(stderr, "mandate-wallet: %s: [%zu]: %s\n", path, i, why);
    }
    if (why) {
        if (i == 0 && json_array_size(doc) == 0)
            fprintf(stderr, "mandate-wallet: %s: %s\n", path, why);
        json_decref(doc);
        return NULL;
    }
    return doc;
}

int cli_sign_cart(int argc, char **argv)
{
    static const struct option opts[] = {{"key", required_argument, 0, 'k'},
                                         {"kid", required_argument, 0, 'i'},
                                         {"merchant", required_argument, 0, 'm'},
                                         {"principal", required_argument, 0, 'p'},
                                         {"action", required_argument, 0, 'a'},
                                         {"items", required_argument, 0, 'I'},
                                         {"ttl", required_argument, 0, 't'},
                                         {"intent", required_argument, 0, 'n'},
                                         {0, 0, 0, 0}};
    const char *key = NULL, *kid = NULL, *merchant = NULL, *principal = NULL, *action = NULL,
               *items = NULL, *ttl_s = NULL, *intent = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        const char **dst = c == 'k'   ? &key
                           : c == 'i' ? &kid
                           : c == 'm' ? &merchant
                           : c == 'p' ? &principal
                           : c == 'a' ? &action
                           : c == 'I' ? &items
                           : c == 't' ? &ttl_s
                           : c == 'n' ? &intent
                                      : NULL;
        if (!dst)
            return sign_cart_usage();
        *dst = optarg;
    }
    if (!key || !kid || !merchant || !principal || !action || !items || optind != argc)
        return sign_cart_usage();
    long long ttl = CART_TTL_DEFAULT;
    char *end = NULL;
    if (ttl_s && ((ttl = strtoll(ttl_s, &end, 10)) < 1 || ttl > CART_TTL_MAX || *end || !*ttl_s ||
                  strspn(ttl_s, "0123456789") != strlen(ttl_s))) {
        fprintf(stderr, "mandate-wallet: --ttl %s: expected 1..%d seconds\n", ttl_s, CART_TTL_MAX);
        return 1;
    }
    const char *ids[] = {kid, merchant, principal, action, intent};
    for (size_t i = 0; i < ARRAY_LEN(ids); i++)
        if (ids[i] && (!*ids[i] || strlen(ids[i]) > MANDATE_ID_MAX)) {
            fprintf(stderr, "mandate-wallet: %s: expected 1..%d characters\n", ids[i],
                    MANDATE_ID_MAX);
            return 1;
        }
    struct money total;
    json_t *arr = load_items(items, &total);
    if (!arr)
        return 1;
    struct jwk k;
    char *err = NULL;
    if (jwk_load_private(key, kid, &k, &err) != 0) {
        fprintf(stderr, "mandate-wallet: %s\n", err ? err : key);
        free(err);
        json_decref(arr);
        return 1;
    }
    unsigned char r[16];
    char jti[33];
    int rc = 1;
    if (RAND_bytes(r, sizeof(r)) != 1) {
        fprintf(stderr, "mandate-wallet: no random bytes for the cart id\n");
    } else {
        hex_encode(r, sizeof(r), jti);
        int64_t now = (int64_t)time(NULL);
        json_t *claims =
            json_pack("{ss ss ss sI sI ss so so}", "iss", merchant, "sub", principal, "jti", jti,
                      "iat", (json_int_t)now, "exp", (json_int_t)(now + ttl), "action", action,
                      "items", arr, "total", money_to_json(&total));
        arr = NULL;
        if (intent)
            sjson_set(claims, "intent", json_string(intent));
        char *payload = sjson_dump(claims);
        char *tok = jws_sign(&k, "cart-mandate+jwt", payload, strlen(payload));
        if (tok) {
            puts(tok);
            rc = 0;
        } else {
            fprintf(stderr, "mandate-wallet: %s: cannot sign with this key\n", key);
        }
        free(tok);
        free(payload);
        json_decref(claims);
    }
    json_decref(arr);
    jwk_clear(&k);
    return rc;
}
