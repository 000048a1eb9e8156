/*
 * config: gateway.json, read with core/cfg's path-naming getters.
 */
#include "gateway/config.h"

#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/util.h>
#include <libpq-fe.h>

#include "audit/snap.h"
#include "core/log.h"
#include "core/sha256.h"
#include "gateway/jwks_remote.h"
#include "gateway/mcp.h"
#include "gateway/tls.h"

static const char *const top_keys[] = {"listen", "workers",    "database", "admin",     "audit",
                                       "limits", "rate_limit", "issuers",  "merchants", "log_level",
                                       "tls",    "decision",   "state",    NULL};
static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", NULL};

/* host:port to a socket address, once at load (the request path never resolves a name). */
static int resolve(const char *host, int port, struct sockaddr_storage *out, int *len)
{
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    char ps[8];
    snprintf(ps, sizeof(ps), "%d", port);
    if (evutil_getaddrinfo(host, ps, &hints, &ai) != 0)
        return -1;
    memcpy(out, ai->ai_addr, ai->ai_addrlen);
    *len = (int)ai->ai_addrlen;
    evutil_freeaddrinfo(ai);
    return 0;
}

/* A "tls" object inside obj at path: the listener's certificate, key, optional client CA and
 * minimum version, loaded now so that --check-config proves they load and match. */
static struct tls_server *load_tls(struct cfg *c, const char *path, const json_t *obj)
{
    static const char *const keys[] = {"cert_file", "key_file", "client_ca_file", "min_version",
                                       NULL};
    static const char *const versions[] = {"1.2", "1.3", NULL};
    json_t *t = cfg_object(c, path, obj, "tls", false);
    if (!t)
        return NULL;
    char p[CFG_PATH_MAX];
    cfg_join(p, path, "tls");
    cfg_keys(c, p, t, keys);
    char *cert = cfg_file(c, p, t, "cert_file", true);
    char *key = cfg_file(c, p, t, "key_file", true);
    char *ca =
        json_object_get(t, "client_ca_file") ? cfg_file(c, p, t, "client_ca_file", true) : NULL;
    int v = cfg_enum(c, p, t, "min_version", false, versions, 0);
    struct tls_server *ts = NULL;
    char *err = NULL;
    if (cert && key && v >= 0 && !(ts = tls_server_new(cert, key, ca, versions[v], &err))) {
        cfg_error(c, p, "%s", err);
        free(err);
    }
    free(cert);
    free(key);
    free(ca);
    return ts;
}

static void load_admin(struct cfg *c, const json_t *root, struct config *conf)
{
    static const char *const keys[] = {"listen", "token_sha256", "tls", NULL};
    json_t *a = cfg_object(c, "", root, "admin", false);
    if (!a)
        return;
    cfg_keys(c, "admin", a, keys);
    conf->has_admin =
        cfg_listen(c, "admin", a, "listen", true, &conf->admin_host, &conf->admin_port) == 0;
    cfg_sha256(c, "admin", a, "token_sha256", conf->admin_token_sha256);
    conf->admin_tls = load_tls(c, "admin", a);
}

/* "decision": the listener of the decision APIs (SPEC §8): AuthZEN and forward-auth. */
static void load_decision(struct cfg *c, const json_t *root, struct config *conf)
{
    static const char *const keys[] = {"listen", "token_sha256", "tls", NULL};
    json_t *d = cfg_object(c, "", root, "decision", false);
    if (!d)
        return;
    cfg_keys(c, "decision", d, keys);
    conf->has_decision = cfg_listen(c, "decision", d, "listen", true, &conf->decision_host,
                                    &conf->decision_port) == 0;
    /* Bound with SO_REUSEPORT like the proxy's listener: on a port of another listener the
     * kernel would share connections between the two, so refuse it. */
    if (conf->has_decision && ((conf->listen_host && conf->decision_port == conf->listen_port) ||
                               (conf->has_admin && conf->decision_port == conf->admin_port)))
        cfg_error(c, "decision.listen", "port %d is taken by %s", conf->decision_port,
                  conf->decision_port == conf->listen_port ? "listen" : "admin.listen");
    cfg_sha256(c, "decision", d, "token_sha256", conf->decision_token_sha256);
    conf->decision_tls = load_tls(c, "decision", d);
}

static void load_audit(struct cfg *c, const json_t *root, struct config *conf)
{
    static const char *const keys[] = {
        "origin",        "checkpoint_key", "checkpoint_every", "max_queue",
        "denials_per_s", "min_free_bytes", "snapshot_every",   NULL};
    json_t *a = cfg_object(c, "", root, "audit", true);
    json_t *empty = json_object();
    if (!a)
        a = empty;
    cfg_keys(c, "audit", a, keys);
    conf->audit_origin = xstrdup(cfg_string(c, "audit", a, "origin", false, "mandate-gateway"));
    conf->checkpoint_every = cfg_int(c, "audit", a, "checkpoint_every", false, 1000, 1, 1000000);
    conf->max_queue = cfg_int(c, "audit", a, "max_queue", false, 65536, 16, 1 << 24);
    conf->snapshot_every =
        cfg_int(c, "audit", a, "snapshot_every", false, SNAP_EVERY, 16, (int64_t)1 << 32);
    conf->denials_per_s = cfg_int(c, "audit", a, "denials_per_s", false, 50, 1, 1000000);
    conf->min_free_bytes =
        cfg_int(c, "audit", a, "min_free_bytes", false, 256 << 20, 0, (int64_t)1 << 50);
    char *key = cfg_file(c, "audit", a, "checkpoint_key", true);
    char *err = NULL;
    if (key && jwk_load_private(key, "checkpoint", &conf->checkpoint_key, &err) != 0) {
        cfg_error(c, "audit.checkpoint_key", "%s", err);
        free(err);
    } else if (key && conf->checkpoint_key.alg != JWK_EDDSA) {
        cfg_error(c, "audit.checkpoint_key", "%s: expected an Ed25519 key", key);
    }
    free(key);
    json_decref(empty);
}

/* A node name (SPEC §6): 1–64 of [A-Za-z0-9_.-]. */
static bool node_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("_.-", s[i]))
            return false;
    return true;
}

/* "state" (SPEC §6): where uses, carts, spend and revocations are kept. The DSN's syntax is
 * checked here, without connecting: --check-config must not need the database. */
static void load_state(struct cfg *c, const json_t *root, struct config *conf)
{
    static const char *const keys[] = {"backend", "dsn", "node", NULL};
    static const char *const backends[] = {"local", "postgres", NULL};
    json_t *s = cfg_object(c, "", root, "state", false);
    if (!s)
        return;
    cfg_keys(c, "state", s, keys);
    conf->state_backend = cfg_enum(c, "state", s, "backend", false, backends, STATE_LOCAL);
    bool pg = conf->state_backend == STATE_POSTGRES;
    if (!pg) {
        if (json_object_get(s, "dsn") || json_object_get(s, "node"))
            cfg_error(c, "state", "dsn and node apply only to the postgres backend");
        return;
    }
    const char *dsn = cfg_string(c, "state", s, "dsn", true, NULL);
    const char *node = cfg_string(c, "state", s, "node", true, NULL);
    char *why = NULL;
    PQconninfoOption *opts = dsn ? PQconninfoParse(dsn, &why) : NULL;
    if (dsn && !opts)
        cfg_error(c, "state.dsn", "not a PostgreSQL connection string: %s",
                  why ? strtok(why, "\n") : "out of memory");
    PQconninfoFree(opts);
    PQfreemem(why);
    if (node && !node_name_ok(node))
        cfg_error(c, "state.node", "expected 1 to 64 of A-Z a-z 0-9 _ . -");
    conf->state_dsn = dsn ? xstrdup(dsn) : NULL;
    conf->state_node = node ? xstrdup(node) : NULL;
}

static void load_limits(struct cfg *c, const json_t *root, struct config *conf)
{
    static const char *const keys[] = {
        "max_body_bytes",  "max_header_bytes", "max_headers",         "max_mandate_bytes",
        "clock_skew_s",    "max_ttl_s",        "upstream_timeout_ms", "header_timeout_ms",
        "idle_timeout_ms", "body_timeout_ms",  "max_connections",     NULL};
    json_t *empty = json_object();
    json_t *l = cfg_object(c, "", root, "limits", false);
    if (!l)
        l = empty;
    cfg_keys(c, "limits", l, keys);
    conf->max_body_bytes = cfg_int(c, "limits", l, "max_body_bytes", false, 1048576, 0, 1 << 30);
    conf->max_header_bytes =
        cfg_int(c, "limits", l, "max_header_bytes", false, 16384, 1024, 1 << 20);
    conf->mandate_limits.max_bytes =
        (size_t)cfg_int(c, "limits", l, "max_mandate_bytes", false, 8192, 256, 1 << 20);
    conf->mandate_limits.clock_skew_s = cfg_int(c, "limits", l, "clock_skew_s", false, 5, 0, 300);
    conf->mandate_limits.max_ttl_s = cfg_int(c, "limits", l, "max_ttl_s", false, 300, 1, 86400);
    conf->upstream_timeout_ms =
        cfg_int(c, "limits", l, "upstream_timeout_ms", false, 15000, 1, 3600000);
    conf->max_headers = cfg_int(c, "limits", l, "max_headers", false, 100, 8, 10000);
    conf->header_timeout_ms =
        cfg_int(c, "limits", l, "header_timeout_ms", false, 10000, 1, 3600000);
    conf->idle_timeout_ms = cfg_int(c, "limits", l, "idle_timeout_ms", false, 60000, 1, 3600000);
    conf->body_timeout_ms = cfg_int(c, "limits", l, "body_timeout_ms", false, 30000, 1, 3600000);
    conf->max_connections = cfg_int(c, "limits", l, "max_connections", false, 10000, 1, 1000000);
    json_t *r = cfg_object(c, "", root, "rate_limit", false);
    static const char *const rkeys[] = {"per_agent_per_s", "burst", NULL};
    if (!r)
        r = empty;
    cfg_keys(c, "rate_limit", r, rkeys);
    conf->rate_per_s =
        (double)cfg_int(c, "rate_limit", r, "per_agent_per_s", false, 100, 1, 1000000);
    conf->rate_burst = (double)cfg_int(c, "rate_limit", r, "burst", false, 200, 1, 1000000);
    json_decref(empty);
}

static void load_issuers(struct cfg *c, const json_t *root, struct config *conf)
{
    static const char *const keys[] = {"id", "jwks_file", "jwks_uri", "jwks_ca_file", NULL};
    json_t *arr = cfg_array(c, "", root, "issuers", true);
    size_t i;
    json_t *it;
    json_array_foreach(arr, i, it)
    {
        char p[CFG_PATH_MAX];
        cfg_index(p, "issuers", i);
        if (!json_is_object(it)) {
            cfg_error(c, p, "expected an object");
            continue;
        }
        cfg_keys(c, p, it, keys);
        const char *id = cfg_string(c, p, it, "id", true, NULL);
        if (id && keyring_get(&conf->issuers, id))
            cfg_error(c, p, "duplicate issuer id \"%s\"", id);
        jwks_remote_load_config(c, p, it, id, &conf->issuers);
    }
}

/* "http://host:port" or "https://host:port" (an optional final "/"), resolved now: the request
 * path never waits for a name lookup. */
static int parse_upstream(const char *s, struct merchant *m)
{
    bool tls = strncmp(s, "https://", 8) == 0;
    if (!tls && strncmp(s, "http://", 7) != 0)
        return -1;
    const char *hp = s + (tls ? 8 : 7);
    size_t n = strlen(hp);
    if (n && hp[n - 1] == '/')
        n--;
    char *tmp = xstrndup(hp, n);
    int rc = strchr(tmp, '/') ? -1 : hostport_parse(tmp, &m->upstream_host, &m->upstream_port);
    if (rc == 0 &&
        resolve(m->upstream_host, m->upstream_port, &m->upstream_addr, &m->upstream_addrlen) != 0)
        rc = -1;
    if (rc == 0) {
        m->upstream_hostport = tmp;
        m->upstream_tls = tls;
    } else {
        free(tmp);
    }
    return rc;
}

/* "mcp": {"tools": {"<name>": {"action", "priced"?}}, "open_methods"?: [...]} (SPEC §8): the
 * route's tools, each with a route of its own action for the decision core. */
static struct mcp *load_mcp(struct cfg *c, const char *p, const json_t *mcp,
                            const struct route *route)
{
    static const char *const keys[] = {"tools", "open_methods", NULL};
    static const char *const tkeys[] = {"action", "priced", NULL};
    char mp[CFG_PATH_MAX];
    cfg_join(mp, p, "mcp");
    if (!json_is_object(mcp)) {
        cfg_error(c, mp, "expected an object");
        return NULL;
    }
    cfg_keys(c, mp, mcp, keys);
    struct mcp *m = mcp_new();
    json_t *tools = cfg_object(c, mp, mcp, "tools", true);
    char tp[CFG_PATH_MAX];
    cfg_join(tp, mp, "tools");
    const char *name;
    json_t *t;
    json_object_foreach(tools, name, t)
    {
        char np[CFG_PATH_MAX];
        cfg_join(np, tp, name);
        if (!json_is_object(t)) {
            cfg_error(c, np, "expected an object");
            continue;
        }
        cfg_keys(c, np, t, tkeys);
        const char *action = cfg_string(c, np, t, "action", true, NULL);
        bool priced = cfg_bool(c, np, t, "priced", false);
        if (!name[0])
            cfg_error(c, np, "a tool needs a name");
        else if (action)
            mcp_add_tool(m, name, action, priced, route);
    }
    json_t *open = json_object_get(mcp, "open_methods");
    if (!open) {
        mcp_default_open(m);
    } else {
        char op[CFG_PATH_MAX];
        cfg_join(op, mp, "open_methods");
        json_t *arr = cfg_array(c, mp, mcp, "open_methods", false);
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v)
        {
            char ip[CFG_PATH_MAX];
            cfg_index(ip, op, i);
            const char *s = json_string_value(v);
            if (!s || !s[0] || strcmp(s, "tools/call") == 0 ||
                (strchr(s, '*') &&
                 (strlen(s) < 2 || strchr(s, '*') != s + strlen(s) - 1 || s[strlen(s) - 2] != '/')))
                cfg_error(c, ip,
                          "expected a JSON-RPC method name other than tools/call (a wildcard "
                          "only as a final \"/*\")");
            else
                mcp_add_open(m, s);
        }
    }
    return m;
}

static void load_routes(struct cfg *c, const char *mpath, const json_t *mobj,
                        const struct merchant *m, struct config *conf)
{
    static const char *const keys[] = {"method",    "path", "action", "priced",
                                       "sign_cart", "mcp",  NULL};
    char rpath[CFG_PATH_MAX];
    cfg_join(rpath, mpath, "routes");
    json_t *arr = cfg_array(c, mpath, mobj, "routes", true);
    size_t i;
    json_t *r;
    json_array_foreach(arr, i, r)
    {
        char p[CFG_PATH_MAX];
        cfg_index(p, rpath, i);
        if (!json_is_object(r)) {
            cfg_error(c, p, "expected an object");
            continue;
        }
        cfg_keys(c, p, r, keys);
        int meth = cfg_enum(c, p, r, "method", true, methods, -1);
        const char *path = cfg_string(c, p, r, "path", true, NULL);
        const json_t *mcp = json_object_get(r, "mcp");
        const char *action = cfg_string(c, p, r, "action", !mcp, NULL);
        bool priced = cfg_bool(c, p, r, "priced", false);
        if (mcp) {
            /* An MCP route takes its actions from its tools (SPEC §8). */
            static const char *const own[] = {"action", "priced", "sign_cart"};
            for (size_t k = 0; k < ARRAY_LEN(own); k++)
                if (json_object_get(r, own[k])) {
                    char pp[CFG_PATH_MAX];
                    cfg_join(pp, p, own[k]);
                    cfg_error(c, pp, "not allowed on an MCP route (its tools name the actions)");
                }
            if (meth >= 0 && strcmp(methods[meth], "POST") != 0) {
                char pp[CFG_PATH_MAX];
                cfg_join(pp, p, "method");
                cfg_error(c, pp, "an MCP route takes POST");
            }
            action = "";
            priced = false;
        }
        if (path && path[0] != '/') {
            char pp[CFG_PATH_MAX];
            cfg_join(pp, p, "path");
            cfg_error(c, pp, "expected a path beginning with /");
        } else if (path && strchr(path, '*') &&
                   (strlen(path) < 2 || strcmp(path + strlen(path) - 2, "/*") != 0 ||
                    strchr(path, '*') != path + strlen(path) - 1)) {
            char pp[CFG_PATH_MAX];
            cfg_join(pp, p, "path");
            cfg_error(c, pp, "a wildcard is allowed only as a final \"/*\"");
        }
        bool sign_cart = cfg_bool(c, p, r, "sign_cart", false);
        if (sign_cart && !m->has_cart_key) {
            char pp[CFG_PATH_MAX];
            cfg_join(pp, p, "sign_cart");
            cfg_error(c, pp, "needs the merchant's cart_key");
        }
        if (meth >= 0 && path && action) {
            route_add(&conf->routes, methods[meth], path, action, priced, m);
            struct route *rt = &conf->routes.v[conf->routes.n - 1];
            rt->sign_cart = sign_cart && !mcp;
            if (mcp)
                rt->mcp = load_mcp(c, p, mcp, rt);
        }
    }
}

/* "cart_key": {"file", "kid"}: the merchant's key the gateway signs carts with (sign_cart routes);
 * its public half belongs in the merchant's key set, which checks the carts at payment. */
static void load_cart_key(struct cfg *c, const char *path, const json_t *obj, struct merchant *m)
{
    static const char *const keys[] = {"file", "kid", NULL};
    m->cart_ttl_s = cfg_int(c, path, obj, "cart_ttl_s", false, 600, 1, 86400 * 30);
    json_t *k = cfg_object(c, path, obj, "cart_key", false);
    if (!k)
        return;
    char p[CFG_PATH_MAX];
    cfg_join(p, path, "cart_key");
    cfg_keys(c, p, k, keys);
    char *file = cfg_file(c, p, k, "file", true);
    const char *kid = cfg_string(c, p, k, "kid", true, NULL);
    char *err = NULL;
    if (file && kid) {
        if (jwk_load_private(file, kid, &m->cart_key, &err) == 0) {
            m->has_cart_key = true;
        } else {
            cfg_error(c, p, "%s", err);
            free(err);
        }
    }
    free(file);
}

static void load_merchants(struct cfg *c, const json_t *root, struct config *conf)
{
    static const char *const keys[] = {
        "id",          "upstream", "upstream_ca_file", "jwks_file", "jwks_uri", "jwks_ca_file",
        "require_pop", "cart_key", "cart_ttl_s",       "routes",    NULL};
    json_t *arr = cfg_array(c, "", root, "merchants", true);
    conf->merchants = xcalloc(json_array_size(arr) + 1, sizeof(struct merchant));
    size_t i;
    json_t *it;
    json_array_foreach(arr, i, it)
    {
        char p[CFG_PATH_MAX];
        cfg_index(p, "merchants", i);
        if (!json_is_object(it)) {
            cfg_error(c, p, "expected an object");
            continue;
        }
        cfg_keys(c, p, it, keys);
        struct merchant *m = &conf->merchants[conf->nmerchants++];
        m->id = xstrdup(cfg_string(c, p, it, "id", true, ""));
        for (size_t j = 0; j + 1 < conf->nmerchants; j++)
            if (*m->id && strcmp(conf->merchants[j].id, m->id) == 0)
                cfg_error(c, p, "duplicate merchant id \"%s\"", m->id);
        m->require_pop = cfg_bool(c, p, it, "require_pop", false);
        load_cart_key(c, p, it, m);
        const char *up = cfg_string(c, p, it, "upstream", true, NULL);
        if (up && parse_upstream(up, m) != 0) {
            char pp[CFG_PATH_MAX];
            cfg_join(pp, p, "upstream");
            cfg_error(c, pp,
                      "expected http://host:port or https://host:port (a name that resolves)");
        }
        char *ca = json_object_get(it, "upstream_ca_file")
                       ? cfg_file(c, p, it, "upstream_ca_file", true)
                       : NULL;
        char *err = NULL;
        if (m->upstream_tls && !(m->upstream_tls_ctx = tls_client_new(ca, &err))) {
            char pp[CFG_PATH_MAX];
            cfg_join(pp, p, ca ? "upstream_ca_file" : "upstream");
            cfg_error(c, pp, "%s", err);
            free(err);
        }
        free(ca);
        bool has_keys = json_object_get(it, "jwks_file") || json_object_get(it, "jwks_uri");
        if (has_keys || json_object_get(it, "jwks_ca_file"))
            jwks_remote_load_config(c, p, it, m->id, &conf->merchant_keys);
        size_t first = conf->routes.n;
        load_routes(c, p, it, m, conf);
        for (size_t r = first; r < conf->routes.n; r++)
            if ((conf->routes.v[r].priced || mcp_priced(conf->routes.v[r].mcp)) && !has_keys) {
                char pp[CFG_PATH_MAX];
                cfg_join(pp, p, "jwks_file");
                cfg_error(c, pp,
                          "required: priced routes need the merchant's keys to check carts "
                          "(jwks_file or jwks_uri)");
                break;
            }
    }
}

/* The JSON path of the k-th route of the table: merchants[i].routes[j]. */
static void route_json_path(const struct config *conf, size_t k, char out[CFG_PATH_MAX])
{
    const struct merchant *m = conf->routes.v[k].merchant;
    size_t j = 0;
    for (size_t i = 0; i < k; i++)
        j += conf->routes.v[i].merchant == m;
    char mp[CFG_PATH_MAX], rp[CFG_PATH_MAX];
    cfg_index(mp, "merchants", (size_t)(m - conf->merchants));
    cfg_join(rp, mp, "routes");
    cfg_index(out, rp, j);
}

static void check_routes(struct cfg *c, const struct config *conf)
{
    size_t by;
    long j = route_unreachable(&conf->routes, &by);
    if (j >= 0) {
        char at[CFG_PATH_MAX], first[CFG_PATH_MAX];
        route_json_path(conf, (size_t)j, at);
        route_json_path(conf, by, first);
        cfg_error(c, at, "route %s %s can never match: %s (%s %s) comes first",
                  conf->routes.v[j].method, conf->routes.v[j].path, first,
                  conf->routes.v[by].method, conf->routes.v[by].path);
    }
}

struct config *config_load(const char *path, struct cfg *c)
{
    if (cfg_open(c, path) != 0)
        return NULL;
    struct config *conf = xcalloc(1, sizeof(*conf));
    const json_t *root = c->root;
    conf->path = xstrdup(path);
    atomic_init(&conf->refs, 1);
    char *raw = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    sha256(raw, strlen(raw), conf->sha256);
    free(raw);

    cfg_keys(c, "", root, top_keys);
    cfg_listen(c, "", root, "listen", true, &conf->listen_host, &conf->listen_port);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    conf->workers = (int)cfg_int(c, "", root, "workers", false, cores > 0 ? cores : 1, 1, 256);
    char *db = cfg_file(c, "", root, "database", true);
    conf->database = db;
    const char *lvl = cfg_string(c, "", root, "log_level", false, NULL);
    enum log_level level = LOG_INFO;
    if (lvl && log_level_parse(lvl, &level) != 0)
        cfg_error(c, "log_level", "expected one of debug, info, warn, error");
    conf->log_level = (int)level;
    conf->tls = load_tls(c, "", root);
    load_admin(c, root, conf);
    load_decision(c, root, conf);
    load_audit(c, root, conf);
    load_limits(c, root, conf);
    load_state(c, root, conf);
    load_issuers(c, root, conf);
    load_merchants(c, root, conf);
    check_routes(c, conf);
    if (c->nerrors) {
        config_free(conf);
        return NULL;
    }
    return conf;
}

void config_free(struct config *conf)
{
    if (!conf)
        return;
    free(conf->path);
    free(conf->listen_host);
    free(conf->database);
    free(conf->admin_host);
    free(conf->decision_host);
    free(conf->audit_origin);
    free(conf->state_dsn);
    free(conf->state_node);
    jwk_clear(&conf->checkpoint_key);
    tls_server_unref(conf->tls);
    tls_server_unref(conf->admin_tls);
    tls_server_unref(conf->decision_tls);
    keyring_clear(&conf->issuers);
    keyring_clear(&conf->merchant_keys);
    for (size_t i = 0; i < conf->nmerchants; i++) {
        free(conf->merchants[i].id);
        free(conf->merchants[i].upstream_host);
        free(conf->merchants[i].upstream_hostport);
        tls_client_free(conf->merchants[i].upstream_tls_ctx);
        jwk_clear(&conf->merchants[i].cart_key);
    }
    free(conf->merchants);
    route_clear(&conf->routes);
    free(conf);
}

struct config *config_ref(struct config *conf)
{
    atomic_fetch_add(&conf->refs, 1);
    return conf;
}

void config_unref(struct config *conf)
{
    if (conf && atomic_fetch_sub(&conf->refs, 1) == 1)
        config_free(conf);
}

/*
 * Every key of gateway.json and whether SIGHUP applies it. What is not reloadable is bound at
 * start (sockets, threads, the database and its writer, which owns its copy of the checkpoint
 * key and origin); a reload that changes it logs the key and keeps the running value until the
 * next restart. Reloadable keys need no comparison (CK_NONE): the new configuration simply
 * replaces the old one for every request begun after the swap.
 */
enum ck_type { CK_STR, CK_INT, CK_I64, CK_KEY, CK_LISTEN, CK_SHA256, CK_NONE };

struct config_key {
    const char *path;
    bool reloadable;
    enum ck_type type;
    size_t off, off2; /* CK_LISTEN: host and port */
};

#define CK(path, rel, type, field)                                                                 \
    {                                                                                              \
        path, rel, type, offsetof(struct config, field), 0                                         \
    }
static const struct config_key config_keys[] = {
    {"listen", false, CK_LISTEN, offsetof(struct config, listen_host),
     offsetof(struct config, listen_port)},
    CK("workers", false, CK_INT, workers),
    CK("database", false, CK_STR, database),
    CK("log_level", true, CK_INT, log_level),
    {"admin.listen", false, CK_LISTEN, offsetof(struct config, admin_host),
     offsetof(struct config, admin_port)},
    CK("admin.token_sha256", true, CK_NONE, admin_token_sha256),
    CK("audit.origin", false, CK_STR, audit_origin),
    CK("audit.checkpoint_key", false, CK_KEY, checkpoint_key),
    CK("audit.checkpoint_every", false, CK_I64, checkpoint_every),
    CK("audit.max_queue", false, CK_I64, max_queue),
    CK("audit.snapshot_every", false, CK_I64, snapshot_every),
    CK("audit.denials_per_s", true, CK_NONE, denials_per_s),
    CK("audit.min_free_bytes", false, CK_I64, min_free_bytes),
    CK("limits.max_connections", false, CK_I64, max_connections),
    CK("limits", true, CK_NONE, max_body_bytes),
    CK("tls", true, CK_NONE, tls),
    CK("admin.tls", false, CK_NONE, admin_tls),
    {"decision.listen", false, CK_LISTEN, offsetof(struct config, decision_host),
     offsetof(struct config, decision_port)},
    CK("decision.token_sha256", false, CK_SHA256, decision_token_sha256),
    CK("decision.tls", false, CK_NONE, decision_tls),
    CK("rate_limit", true, CK_NONE, rate_per_s),
    CK("state.backend", false, CK_INT, state_backend),
    CK("state.dsn", false, CK_STR, state_dsn),
    CK("state.node", false, CK_STR, state_node),
    CK("issuers", true, CK_NONE, issuers),
    CK("merchants", true, CK_NONE, merchants),
};

static bool key_differs(const struct config_key *k, const struct config *a, const struct config *b)
{
    const char *pa = (const char *)a + k->off, *pb = (const char *)b + k->off;
    switch (k->type) {
    case CK_STR: {
        const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;
        return (sa == NULL) != (sb == NULL) || (sa && strcmp(sa, sb) != 0);
    }
    case CK_INT:
        return *(const int *)pa != *(const int *)pb;
    case CK_I64:
        return *(const int64_t *)pa != *(const int64_t *)pb;
    case CK_KEY:
        return EVP_PKEY_eq(((const struct jwk *)pa)->pkey, ((const struct jwk *)pb)->pkey) != 1;
    case CK_LISTEN: {
        const char *ha = *(char *const *)pa, *hb = *(char *const *)pb;
        return (ha == NULL) != (hb == NULL) || (ha && strcmp(ha, hb) != 0) ||
               *(const int *)((const char *)a + k->off2) !=
                   *(const int *)((const char *)b + k->off2);
    }
    case CK_SHA256:
        return memcmp(pa, pb, 32) != 0;
    case CK_NONE:
        return false;
    }
    return false;
}

int config_reload_check(const struct config *running, const struct config *next)
{
    int n = 0;
    for (size_t i = 0; i < ARRAY_LEN(config_keys); i++) {
        const struct config_key *k = &config_keys[i];
        if (!k->reloadable && key_differs(k, running, next)) {
            log_warn("reload: %s changed: it takes effect at the next restart; the running "
                     "value stays in force",
                     k->path);
            n++;
        }
    }
    return n;
}
