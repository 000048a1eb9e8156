/*
 * lux-hotels: the demo merchant behind the gateway, and what integrating takes.
 *
 *   GET  /lux/search          the rooms and their nightly prices
 *   POST /lux/quote           {"sku", "nights"[, "intent"]} -> {"cart": "<cart mandate>"}: a price
 *                             lock for 10 minutes, signed with our key, for Mandate-Principal
 *   POST /lux/book            books the paid cart: the gateway has checked the payment mandate,
 *                             the cart and the spend cap and tells us who paid what in
 *                             Mandate-Principal, Mandate-Agent, Mandate-Action, Mandate-Amount
 *   GET  /lux/bookings/{id}   one booking
 *   GET  /lux/_stats          (direct only, for tests) how many bookings
 *   POST /mcp                 a tiny MCP server (JSON-RPC over Streamable HTTP, JSON answers
 *                             only): initialize, ping, tools/list and tools/call of two tools,
 *                             search_rooms (free) and book_room (priced: like /lux/book it needs
 *                             the gateway's Mandate-Amount); the gateway maps each tool to an
 *                             action (SPEC §8)
 *
 * It trusts the Mandate-* headers because it listens where only the gateway can reach it (here:
 * loopback). `?simulate=500` and `?simulate=hang` on /lux/book make it fail, for outcome tests.
 *
 *   lux-hotels --listen 127.0.0.1:9000 --key lux-hotels.pem --kid lux1 [--id lux-hotels]
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/rand.h>

#include "core/cfg.h"
#include "core/http.h"
#include "core/jwk.h"
#include "core/log.h"
#include "core/mandate.h"
#include "core/sjson.h"

#define LOCK_S       600
#define MAX_BOOKINGS 100000

static const struct room {
    const char *sku, *name;
    int64_t nightly; /* EUR cents */
} rooms[] = {{"standard", "Standard double", 9000},
             {"deluxe", "Deluxe double", 18000},
             {"suite", "Lake suite", 45000}};

struct booking {
    char id[17];
    char principal[MANDATE_ID_MAX + 1];
    char agent[MANDATE_ID_MAX + 1];
    char amount[40];
    char receipt[90];
};

static struct jwk key;
static const char *merchant_id = "lux-hotels";
static struct booking *bookings;
static size_t nbookings;

static void error(struct evhttp_request *req, int status, const char *msg)
{
    http_reply_json(req, status, json_pack("{ss}", "error", msg));
}

static const char *header(struct evhttp_request *req, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(req), name);
}

static json_t *rooms_json(void);

static void search(struct evhttp_request *req)
{
    http_reply_json(req, 200, rooms_json());
}

static void random_id(char *out, size_t bytes)
{
    unsigned char b[32];
    if (RAND_bytes(b, (int)bytes) != 1)
        abort();
    hex_encode(b, bytes, out);
}

static void quote(struct evhttp_request *req)
{
    const char *principal = header(req, "Mandate-Principal");
    json_t *b = http_body_json(req, 65536);
    const char *sku = b ? sjson_str(b, "sku") : NULL;
    int64_t nights = 0;
    const struct room *room = NULL;
    for (size_t i = 0; sku && i < ARRAY_LEN(rooms); i++)
        if (strcmp(rooms[i].sku, sku) == 0)
            room = &rooms[i];
    if (!principal || !room || sjson_int(b, "nights", &nights) != 0 || nights < 1 || nights > 30) {
        json_decref(b);
        {
            error(req, 400, "expected {\"sku\": a room, \"nights\": 1..30} via the gateway");
            return;
        }
    }
    char jti[33];
    random_id(jti, 16);
    int64_t now = now_s();
    json_t *c =
        json_pack("{ss ss ss sI sI ss s[{ss sI s{sI ss}}] s{sI ss}}", "iss", merchant_id, "sub",
                  principal, "jti", jti, "iat", (json_int_t)now, "exp", (json_int_t)(now + LOCK_S),
                  "action", "book_room", "items", "sku", room->sku, "qty", (json_int_t)nights,
                  "unit", "value", (json_int_t)room->nightly, "currency", "EUR", "total", "value",
                  (json_int_t)(room->nightly * nights), "currency", "EUR");
    const char *intent = sjson_str(b, "intent");
    if (intent)
        sjson_set(c, "intent", json_string(intent));
    char *cart = mandate_sign(&key, MANDATE_CART, c);
    json_decref(c);
    json_decref(b);
    if (!cart) {
        error(req, 500, "cannot sign");
        return;
    }
    http_reply_json(req, 201,
                    json_pack("{ss sI}", "cart", cart, "expires_at", (json_int_t)(now + LOCK_S)));
    free(cart);
}

/* A booking for what the gateway vouches for in the Mandate-* headers, or NULL (*why set). */
static const struct booking *add_booking(struct evhttp_request *req, const char **why)
{
    const char *p = header(req, "Mandate-Principal"), *a = header(req, "Mandate-Agent"),
               *act = header(req, "Mandate-Action"), *amount = header(req, "Mandate-Amount"),
               *receipt = header(req, "Mandate-Receipt");
    if (!p || !a || !act || strcmp(act, "book_room") != 0 || !amount || !receipt) {
        *why = "not authorised by the gateway";
        return NULL;
    }
    if (nbookings == MAX_BOOKINGS) {
        *why = "fully booked";
        return NULL;
    }
    struct booking *bk = &bookings[nbookings++];
    random_id(bk->id, 8);
    snprintf(bk->principal, sizeof(bk->principal), "%s", p);
    snprintf(bk->agent, sizeof(bk->agent), "%s", a);
    snprintf(bk->amount, sizeof(bk->amount), "%s", amount);
    snprintf(bk->receipt, sizeof(bk->receipt), "%s", receipt);
    log_info("booked %s for %s by %s: %s (receipt %s)", bk->id, p, a, amount, receipt);
    return bk;
}

static json_t *rooms_json(void)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < ARRAY_LEN(rooms); i++)
        sjson_append(arr, json_pack("{ss ss s{sI ss}}", "sku", rooms[i].sku, "name", rooms[i].name,
                                    "nightly", "value", (json_int_t)rooms[i].nightly, "currency",
                                    "EUR"));
    return json_pack("{so}", "rooms", arr);
}

/* A tools/call result: the JSON value as text content (MCP's CallToolResult). */
static json_t *tool_result(json_t *v)
{
    char *text = sjson_dump(v);
    json_decref(v);
    json_t *r = json_pack("{s[{ss ss}] sb}", "content", "type", "text", "text", text, "isError", 0);
    free(text);
    return r;
}

/* One JSON-RPC message: its answer (NULL for a notification); *status for a refusal. */
static json_t *mcp_one(struct evhttp_request *req, const json_t *msg, int *status)
{
    const char *method = json_is_object(msg) ? sjson_str(msg, "method") : NULL;
    json_t *id = json_is_object(msg) ? json_object_get(msg, "id") : NULL;
    json_t *result = NULL;
    int code = -32601;
    const char *why = "method not found";
    if (!method) {
        code = -32600;
        why = "invalid request";
    } else if (strncmp(method, "notifications/", 14) == 0) {
        return NULL;
    } else if (strcmp(method, "initialize") == 0) {
        result = json_pack("{ss s{s{}} s{ss ss}}", "protocolVersion", "2025-06-18", "capabilities",
                           "tools", "serverInfo", "name", merchant_id, "version", "1");
    } else if (strcmp(method, "ping") == 0) {
        result = json_object();
    } else if (strcmp(method, "tools/list") == 0) {
        result =
            json_pack("{s[{ss ss s{ss s{s{ss}}}} {ss ss s{ss s{s{ss} s{ss}} s[s]}}]}", "tools",
                      "name", "search_rooms", "description", "The rooms and their nightly prices.",
                      "inputSchema", "type", "object", "properties", "city", "type", "string",
                      "name", "book_room", "description",
                      "Book the paid cart (needs a payment mandate and the cart from /lux/quote).",
                      "inputSchema", "type", "object", "properties", "sku", "type", "string",
                      "nights", "type", "integer", "required", "sku");
    } else if (strcmp(method, "tools/call") == 0) {
        json_t *params = json_object_get(msg, "params");
        const char *name = json_is_object(params) ? sjson_str(params, "name") : NULL;
        if (name && strcmp(name, "search_rooms") == 0) {
            result = tool_result(rooms_json());
        } else if (name && strcmp(name, "book_room") == 0) {
            const struct booking *bk = add_booking(req, &why);
            if (bk)
                result =
                    tool_result(json_pack("{ss ss ss ss}", "booking_id", bk->id, "principal",
                                          bk->principal, "agent", bk->agent, "amount", bk->amount));
            else {
                code = -32001;
                *status = 403;
            }
        } else {
            code = -32602;
            why = "unknown tool";
        }
    }
    json_t *out = json_pack("{ss sO}", "jsonrpc", "2.0", "id", id ? id : json_null());
    if (result)
        sjson_set(out, "result", result);
    else
        sjson_set(out, "error", json_pack("{si ss}", "code", code, "message", why));
    return out;
}

static void mcp(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    char *err = NULL;
    json_t *msg = n && n <= 65536
                      ? sjson_parse((const char *)evbuffer_pullup(in, (ev_ssize_t)n), n, &err)
                      : NULL;
    free(err);
    int status = 200;
    json_t *out;
    if (!msg) {
        out = json_pack("{ss sn s{si ss}}", "jsonrpc", "2.0", "id", "error", "code", -32700,
                        "message", "parse error");
        status = 400;
    } else if (json_is_array(msg)) {
        out = json_array();
        size_t i;
        json_t *el;
        json_array_foreach(msg, i, el)
        {
            json_t *one = mcp_one(req, el, &status);
            if (one)
                sjson_append(out, one);
        }
        if (!json_array_size(out)) {
            json_decref(out);
            out = NULL;
        }
    } else {
        out = mcp_one(req, msg, &status);
    }
    json_decref(msg);
    if (!out) { /* notifications only: accepted, no body */
        evhttp_send_reply(req, 202, "Accepted", NULL);
        return;
    }
    http_reply_json(req, status, out);
}

static void book(struct evhttp_request *req)
{
    const char *uri = evhttp_request_get_uri(req);
    if (strstr(uri, "simulate=500")) {
        error(req, 500, "simulated failure");
        return;
    }
    if (strstr(uri, "simulate=hang"))
        return; /* never answered: the gateway's upstream timeout fires */
    const char *why = NULL;
    const struct booking *bk = add_booking(req, &why);
    if (!bk) {
        error(req, strcmp(why, "fully booked") == 0 ? 503 : 403, why);
        return;
    }
    http_reply_json(req, 201,
                    json_pack("{ss ss ss ss}", "booking_id", bk->id, "principal", bk->principal,
                              "agent", bk->agent, "amount", bk->amount));
}

static void get_booking(struct evhttp_request *req, const char *id)
{
    for (size_t i = 0; i < nbookings; i++)
        if (strcmp(bookings[i].id, id) == 0) {
            http_reply_json(req, 200,
                            json_pack("{ss ss ss ss}", "booking_id", bookings[i].id, "principal",
                                      bookings[i].principal, "amount", bookings[i].amount,
                                      "receipt", bookings[i].receipt));
            return;
        }
    error(req, 404, "no such booking");
}

static void handle(struct evhttp_request *req, void *arg)
{
    (void)arg;
    const char *uri = evhttp_request_get_uri(req);
    size_t n = strcspn(uri, "?");
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
#define IS(p) (n == strlen(p) && strncmp(uri, p, n) == 0)
    if (cmd == EVHTTP_REQ_GET && IS("/lux/search")) {
        search(req);
        return;
    }
    if (cmd == EVHTTP_REQ_POST && IS("/lux/quote")) {
        quote(req);
        return;
    }
    if (cmd == EVHTTP_REQ_POST && IS("/lux/book")) {
        book(req);
        return;
    }
    if (cmd == EVHTTP_REQ_POST && IS("/mcp")) {
        mcp(req);
        return;
    }
    if (cmd == EVHTTP_REQ_GET && IS("/lux/_stats")) {
        http_reply_json(req, 200, json_pack("{sI}", "bookings", (json_int_t)nbookings));
        return;
    }
    if (cmd == EVHTTP_REQ_GET && n > 14 && strncmp(uri, "/lux/bookings/", 14) == 0) {
        char id[32];
        snprintf(id, sizeof(id), "%.*s", (int)(n - 14), uri + 14);
        {
            get_booking(req, id);
            return;
        }
    }
#undef IS
    error(req, 404, "no such endpoint");
}

static void on_term(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopexit(arg, NULL);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, 0, 'l'},
                                         {"key", required_argument, 0, 'k'},
                                         {"kid", required_argument, 0, 'i'},
                                         {"id", required_argument, 0, 'm'},
                                         {0, 0, 0, 0}};
    const char *listen = "127.0.0.1:9000", *keyfile = NULL, *kid = "lux1";
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen = optarg;
            break;
        case 'k':
            keyfile = optarg;
            break;
        case 'i':
            kid = optarg;
            break;
        case 'm':
            merchant_id = optarg;
            break;
        default:
            fputs("usage: lux-hotels --listen HOST:PORT --key KEY.pem --kid KID [--id ID]\n",
                  stderr);
            return 1;
        }
    }
    char *err = NULL, *host = NULL;
    int port;
    if (!keyfile || jwk_load_private(keyfile, kid, &key, &err) != 0 ||
        hostport_parse(listen, &host, &port) != 0) {
        fprintf(stderr, "lux-hotels: %s\n", err ? err : "need --key and a valid --listen");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    bookings = xcalloc(MAX_BOOKINGS, sizeof(*bookings));
    struct event_base *base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    evhttp_set_gencb(http, handle, NULL);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    if (!evhttp_bind_socket_with_handle(http, host, (ev_uint16_t)port)) {
        fprintf(stderr, "lux-hotels: cannot listen on %s\n", listen);
        return 2;
    }
    struct event *term = evsignal_new(base, SIGTERM, on_term, base);
    event_add(term, NULL);
    log_info("lux-hotels listening on %s", listen);
    event_base_dispatch(base);
    event_free(term);
    evhttp_free(http);
    event_base_free(base);
    jwk_clear(&key);
    free(bookings);
    free(host);
    return 0;
}
