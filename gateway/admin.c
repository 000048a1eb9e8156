/*
 * admin: health, metrics, revocations and checkpoints over HTTP.
 */
#include "gateway/admin.h"

#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/pem.h>

#include "core/http.h"
#include "core/log.h"
#include "core/sjson.h"
#include "gateway/backend.h"
#include "gateway/jwks_remote.h"
#include "gateway/tls.h"

#define ADMIN_MAX_BODY 4096

struct admin {
    struct server *srv;
    struct evhttp *http;
    struct writer_mailbox mb;
    struct backend_conn *bc; /* revocations go through the state backend */
    struct tls_server *tls;  /* admin.tls, or NULL: plain HTTP */
};

/* A revocation on its way: stored by the backend, then written to this node's log. */
struct revocation {
    struct admin *a;
    struct evhttp_request *req;
    enum revoke_kind kind;
    char value[MANDATE_ID_MAX + 1];
};

/* evhttp makes each connection's bufferevent here: TLS when admin.tls is set. */
static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
    struct admin *a = arg;
    SSL *ssl = tls_server_ssl(a->tls);
    return ssl ? bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE)
               : NULL;
}

static void reply_error(struct evhttp_request *req, int status, const char *code, const char *msg)
{
    http_reply_json(req, status, json_pack("{ss ss}", "error", code, "message", msg));
}

static bool authorized(struct admin *a, struct evhttp_request *req)
{
    unsigned char got[32];
    if (http_bearer_sha256(req, got) != 0)
        return false;
    struct config *conf = server_config(a->srv);
    bool ok = ct_equal(got, conf->admin_token_sha256, 32);
    config_unref(conf);
    return ok;
}

static void on_revocation_durable(struct writer_item *it)
{
    struct evhttp_request *req = it->arg;
    if (it->ok)
        http_reply_json(req, 201, json_pack("{ss}", "status", "revoked"));
    else
        reply_error(req, 503, "unavailable", "the revocation is in effect but not yet durable");
    writer_item_free(it);
}

static void on_revocation_stored(void *arg, enum code code)
{
    struct revocation *rv = arg;
    struct admin *a = rv->a;
    const char *key = revoke_kind_name(rv->kind);
    if (code != CODE_OK) {
        log_warn("revocation of %s %s refused: %s", key, rv->value, code_name(code));
        reply_error(rv->req, code_status(code), code_name(code), code_message(code));
        free(rv);
        return;
    }
    /* In effect for the next request at once; the answer waits until it is durable. */
    log_info("revoked %s %s", key, rv->value);
    json_t *e = json_pack("{sI ss ss s{ss}}", "ts_ms", (json_int_t)now_ms(), "kind", "revocation",
                          "request_id", "", "revoke", key, rv->value);
    struct writer_item *it = writer_item_new(e);
    writer_item_op(it, WOP_REVOKE, key, rv->value, 0, 0);
    it->mb = &a->mb;
    it->done = on_revocation_durable;
    it->arg = rv->req;
    free(rv);
    if (!writer_submit(a->srv->writer, it)) {
        it->ok = false;
        on_revocation_durable(it);
    }
}

static void post_revocation(struct admin *a, struct evhttp_request *req)
{
    json_t *body = http_body_json(req, ADMIN_MAX_BODY);
    enum revoke_kind kind;
    const char *key =
        body && json_object_size(body) == 1 ? json_object_iter_key(json_object_iter(body)) : NULL;
    json_t *value = key ? json_object_get(body, key) : NULL;
    if (!key || revoke_kind_parse(key, &kind) != 0 || !json_is_string(value) ||
        json_string_length(value) == 0 || json_string_length(value) > MANDATE_ID_MAX) {
        json_decref(body);
        reply_error(req, 400, "bad_request",
                    "expected {\"jti\"|\"agent\"|\"principal\"|\"kid\": \"<id>\"}");
        return;
    }
    struct revocation *rv = xcalloc(1, sizeof(*rv));
    rv->a = a;
    rv->req = req;
    rv->kind = kind;
    memcpy(rv->value, json_string_value(value), json_string_length(value));
    json_decref(body);
    backend_revoke(a->bc, kind, rv->value, on_revocation_stored, rv);
}

/*
 * GET /admin/spend?principal=P: what P has spent in every cap period still running, as the
 * gateway's ledger counts it (reservations, settled and unknown amounts), for a wallet to show
 * an agent its remaining budget.
 */
struct spend_query {
    struct evhttp_request *req;
    char principal[MANDATE_ID_MAX + 1];
};

static void on_spend(void *arg, json_t *rows)
{
    struct spend_query *q = arg;
    if (rows)
        http_reply_json(q->req, 200,
                        json_pack("{ss sO}", "principal", q->principal, "spend", rows));
    else
        reply_error(q->req, 503, code_name(CODE_STATE_UNAVAILABLE),
                    code_message(CODE_STATE_UNAVAILABLE));
    free(q);
}

static void get_spend(struct admin *a, struct evhttp_request *req)
{
    struct evkeyvalq q;
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    const char *p = NULL;
    TAILQ_INIT(&q);
    if (query && evhttp_parse_query_str(query, &q) == 0)
        p = evhttp_find_header(&q, "principal");
    if (!p || !*p || strlen(p) > MANDATE_ID_MAX) {
        reply_error(req, 400, "bad_request", "expected ?principal=<id>");
    } else {
        struct spend_query *sq = xcalloc(1, sizeof(*sq));
        sq->req = req;
        memcpy(sq->principal, p, strlen(p));
        backend_spend(a->bc, sq->principal, (int64_t)time(NULL), on_spend, sq);
    }
    evhttp_clear_headers(&q);
}

/* GET /.well-known/mandate-log-key: the checkpoint key's public half, SubjectPublicKeyInfo PEM,
 * the file `mandate-audit verify --checkpoint-key` takes. */
static void get_log_key(struct admin *a, struct evhttp_request *req)
{
    struct config *conf = server_config(a->srv);
    BIO *b = BIO_new(BIO_s_mem());
    char *pem = NULL;
    long n = 0;
    if (b && conf->checkpoint_key.pkey && PEM_write_bio_PUBKEY(b, conf->checkpoint_key.pkey) == 1)
        n = BIO_get_mem_data(b, &pem);
    if (n > 0) {
        char *text = xstrndup(pem, (size_t)n);
        http_reply(req, 200, "application/x-pem-file", text);
        free(text);
    } else {
        reply_error(req, 500, "internal", "cannot encode the checkpoint key");
    }
    BIO_free(b);
    config_unref(conf);
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    const char *uri = evhttp_request_get_uri(req);
    size_t plen = strcspn(uri, "?");
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
#define IS(p) (plen == strlen(p) && strncmp(uri, p, plen) == 0)
    if (IS("/livez") && cmd == EVHTTP_REQ_GET) {
        http_reply(req, 200, "text/plain", "ok\n");
        return;
    }
    if (IS("/readyz") && cmd == EVHTTP_REQ_GET) {
        if (atomic_load(&a->srv->draining))
            http_reply(req, 503, "text/plain", "draining\n");
        else if (writer_disk_low(a->srv->writer))
            http_reply(req, 503, "text/plain", "low disk space under the database\n");
        else if (!backend_ready(a->srv->backend))
            http_reply(req, 503, "text/plain", "shared state (PostgreSQL) unavailable\n");
        else {
            /* Remote key sets (SPEC §7): name the issuers whose first set is not fetched yet. */
            struct config *conf = server_config(a->srv);
            char *missing = jwks_remote_missing(conf);
            config_unref(conf);
            if (missing) {
                char *text = xasprintf("%s\n", missing);
                http_reply(req, 503, "text/plain", text);
                free(text);
                free(missing);
            } else {
                http_reply(req, 200, "text/plain", "ready\n");
            }
        }
        return;
    }
    if (IS("/metrics") && cmd == EVHTTP_REQ_GET) {
        struct sb b = {0};
        struct state_counts sc;
        state_counts(a->srv->state, &sc);
        metrics_render(&a->srv->metrics, writer_stats(a->srv->writer), &sc, &b);
        sb_printf(&b,
                  "# HELP mandate_state_ready Whether the state backend can take admissions.\n"
                  "# TYPE mandate_state_ready gauge\n"
                  "mandate_state_ready{backend=\"%s\"} %d\n",
                  backend_name(a->srv->backend), backend_ready(a->srv->backend));
        http_reply(req, 200, "text/plain; version=0.0.4", b.buf);
        sb_clear(&b);
        return;
    }
    if (IS("/.well-known/mandate-log-key") && cmd == EVHTTP_REQ_GET) {
        get_log_key(a, req);
        return;
    }
    if (!authorized(a, req)) {
        reply_error(req, 401, "unauthorized", "admin bearer token required");
        return;
    }
    if (IS("/admin/revocations") && cmd == EVHTTP_REQ_POST) {
        post_revocation(a, req);
        return;
    }
    if (IS("/admin/revocations") && cmd == EVHTTP_REQ_GET) {
        http_reply_json(req, 200,
                        json_pack("{so}", "revocations", state_revocations(a->srv->state)));
        return;
    }
    if (IS("/admin/spend") && cmd == EVHTTP_REQ_GET) {
        get_spend(a, req);
        return;
    }
    if (IS("/admin/checkpoint") && cmd == EVHTTP_REQ_GET) {
        char *note = writer_checkpoint(a->srv->writer);
        if (note)
            http_reply(req, 200, "text/plain; charset=utf-8", note);
        else
            reply_error(req, 404, "not_found", "no checkpoint yet");
        free(note);
        return;
    }
#undef IS
    reply_error(req, 404, "not_found", "no such admin endpoint");
}

static void on_mailbox(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct admin *a = arg;
    writer_mailbox_drain(&a->mb);
}

struct admin *admin_start(struct server *s, const struct config *conf, char **err)
{
    struct admin *a = xcalloc(1, sizeof(*a));
    a->srv = s;
    a->http = evhttp_new(s->base);
    evhttp_set_max_body_size(a->http, ADMIN_MAX_BODY);
    evhttp_set_max_headers_size(a->http, 16384);
    evhttp_set_timeout(a->http, 10);
    evhttp_set_gencb(a->http, handle, a);
    if (conf->admin_tls) {
        a->tls = tls_server_ref(conf->admin_tls);
        evhttp_set_bevcb(a->http, make_bev, a);
    }
    if (!evhttp_bind_socket_with_handle(a->http, conf->admin_host, (ev_uint16_t)conf->admin_port)) {
        *err =
            xasprintf("admin.listen: cannot listen on %s:%d", conf->admin_host, conf->admin_port);
        evhttp_free(a->http);
        tls_server_unref(a->tls);
        free(a);
        return NULL;
    }
    writer_mailbox_init(&a->mb, s->base, on_mailbox, a);
    a->bc = backend_conn_new(s->backend, s->base);
    return a;
}

void admin_free(struct admin *a)
{
    if (!a)
        return;
    backend_conn_free(a->bc); /* a revocation still on its way is answered 503 */
    evhttp_free(a->http);
    writer_mailbox_clear(&a->mb);
    tls_server_unref(a->tls);
    free(a);
}
