/*
 * cli: approvals from the terminal, over the wallet's HTTP API.
 */
#include "wallet/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

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
