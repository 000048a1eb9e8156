/*
 * config: wallet.json, read with core/cfg's path-naming getters.
 */
#include "wallet/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/sjson.h"
#include "gateway/jwks_remote.h"

static const char *const top_keys[] = {"id",         "listen",        "database",  "signing_key",
                                       "admin",      "default_ttl_s", "max_ttl_s", "merchants",
                                       "principals", "agents",        "gateways",  "limits",
                                       NULL};

static void money_member(struct cfg *c, const char *path, const json_t *obj, const char *key,
                         bool required, bool *has, struct money *out, enum cap_period *period)
{
    char p[CFG_PATH_MAX];
    cfg_join(p, path, key);
    json_t *v = cfg_object(c, path, obj, key, required);
    if (!v)
        return;
    static const char *const mkeys[] = {"value", "currency", NULL};
    static const char *const ckeys[] = {"value", "currency", "period", NULL};
    cfg_keys(c, p, v, period ? ckeys : mkeys);
    const char *why;
    if (money_from_json(v, period != NULL, out, &why) != 0) {
        cfg_error(c, p, "%s", why);
        return;
    }
    if (period) {
        static const char *const periods[] = {"day", "week", "month", "total", NULL};
        *period = (enum cap_period)cfg_enum(c, p, v, "period", true, periods, CAP_DAY);
    }
    if (has)
        *has = true;
}

/*
 * The published key set: the signing key first, then the keys it replaced (previous_jwks_file),
 * which stay published until the mandates they signed have expired. Rotation: make a new key,
 * move the old public key into previous_jwks_file, point signing_key at the new one.
 */
static void publish(struct cfg *c, const json_t *k, struct wallet_config *w)
{
    char *prev = cfg_file(c, "signing_key", k, "previous_jwks_file", false);
    char *err = NULL;
    struct jwks *old = prev ? jwks_load_file(prev, &err) : NULL;
    if (prev && !old) {
        cfg_error(c, "signing_key.previous_jwks_file", "%s", err);
        free(err);
    }
    size_t n = 1 + (old ? old->n : 0);
    w->published = xcalloc(1, sizeof(*w->published));
    w->published->keys = xcalloc(n, sizeof(struct jwk));
    w->published->keys[0] = w->signing_key;
    if (!EVP_PKEY_up_ref(w->signing_key.pkey))
        abort();
    w->published->n = 1;
    for (size_t i = 0; old && i < old->n; i++) {
        if (jwks_find(w->published, old->keys[i].kid)) {
            cfg_error(c, "signing_key.previous_jwks_file", "%s: kid \"%s\" is already in use", prev,
                      old->keys[i].kid);
            continue;
        }
        w->published->keys[w->published->n++] = old->keys[i];
        old->keys[i].pkey = NULL; /* moved */
    }
    jwks_free(old);
    free(prev);
}

static void load_key(struct cfg *c, const json_t *root, struct wallet_config *w)
{
    static const char *const keys[] = {"kid", "alg", "file", "previous_jwks_file", NULL};
    json_t *k = cfg_object(c, "", root, "signing_key", true);
    if (!k)
        return;
    cfg_keys(c, "signing_key", k, keys);
    const char *kid = cfg_string(c, "signing_key", k, "kid", true, NULL);
    static const char *const algs[] = {"ES256", "EdDSA", NULL};
    int alg = cfg_enum(c, "signing_key", k, "alg", false, algs, 0);
    char *file = cfg_file(c, "signing_key", k, "file", true);
    char *err = NULL;
    if (kid && file) {
        if (jwk_load_private(file, kid, &w->signing_key, &err) != 0) {
            cfg_error(c, "signing_key.file", "%s", err);
            free(err);
        } else if ((int)w->signing_key.alg != alg) {
            cfg_error(c, "signing_key.alg", "%s holds an %s key", file,
                      jwk_alg_name(w->signing_key.alg));
        } else {
            publish(c, k, w);
        }
    }
    free(file);
}

/* Each merchant's key set, which checks its carts: `jwks_file`, or `jwks_uri` (+ `jwks_ca_file`)
 * fetched by the service (SPEC §7), with the gateway's rules. */
static void load_merchants(struct cfg *c, const json_t *root, struct wallet_config *w)
{
    static const char *const keys[] = {"id", "jwks_file", "jwks_uri", "jwks_ca_file", NULL};
    json_t *arr = cfg_array(c, "", root, "merchants", false);
    size_t i;
    json_t *m;
    json_array_foreach(arr, i, m)
    {
        char p[CFG_PATH_MAX];
        cfg_index(p, "merchants", i);
        cfg_keys(c, p, m, keys);
        const char *id = cfg_string(c, p, m, "id", true, NULL);
        if (id &&
            (keyring_get(&w->merchant_keys, id) || keyring_remote_slot(&w->merchant_keys, id))) {
            char pp[CFG_PATH_MAX];
            cfg_join(pp, p, "id");
            cfg_error(c, pp, "merchant \"%s\" is listed twice", id);
            id = NULL;
        }
        jwks_remote_load_config(c, p, m, id, &w->merchant_keys);
    }
}

static void load_allow(struct cfg *c, const char *path, const json_t *obj, struct principal *pr)
{
    static const char *const keys[] = {"merchant", "actions", NULL};
    json_t *arr = cfg_array(c, path, obj, "allow", true);
    char apath[CFG_PATH_MAX];
    cfg_join(apath, path, "allow");
    pr->allow = xcalloc(json_array_size(arr) + 1, sizeof(struct allow));
    size_t i;
    json_t *a;
    json_array_foreach(arr, i, a)
    {
        char p[CFG_PATH_MAX];
        cfg_index(p, apath, i);
        cfg_keys(c, p, a, keys);
        struct allow *al = &pr->allow[pr->nallow++];
        al->merchant = xstrdup(cfg_string(c, p, a, "merchant", true, ""));
        json_t *acts = cfg_array(c, p, a, "actions", true);
        al->actions = xcalloc(json_array_size(acts) + 1, sizeof(char *));
        size_t j;
        json_t *s;
        json_array_foreach(acts, j, s)
        {
            if (!json_is_string(s)) {
                char pp[CFG_PATH_MAX], q[CFG_PATH_MAX];
                cfg_join(pp, p, "actions");
                cfg_index(q, pp, j);
                cfg_error(c, q, "expected a string");
                continue;
            }
            al->actions[al->nactions++] = xstrdup(json_string_value(s));
        }
    }
}

static void load_principals(struct cfg *c, const json_t *root, struct wallet_config *w)
{
    static const char *const keys[] = {"id",    "spend_cap", "max_per_payment", "approval_above",
                                       "allow", NULL};
    json_t *arr = cfg_array(c, "", root, "principals", true);
    w->principals = xcalloc(json_array_size(arr) + 1, sizeof(struct principal));
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        char p[CFG_PATH_MAX];
        cfg_index(p, "principals", i);
        cfg_keys(c, p, o, keys);
        struct principal *pr = &w->principals[w->nprincipals++];
        pr->id = xstrdup(cfg_string(c, p, o, "id", true, ""));
        money_member(c, p, o, "spend_cap", true, NULL, &pr->spend_cap, &pr->cap_period);
        money_member(c, p, o, "max_per_payment", false, &pr->has_max_per_payment,
                     &pr->max_per_payment, NULL);
        money_member(c, p, o, "approval_above", false, &pr->has_approval_above, &pr->approval_above,
                     NULL);
        load_allow(c, p, o, pr);
    }
}

/*
 * An agent's "jwk" (SPEC §7): its public key, EC P-256 or OKP Ed25519. A private member is an
 * error of its own (the agent's private key never belongs in the wallet's configuration); the
 * members keygen writes (kid, alg, use) are accepted and dropped from the canonical form.
 */
static void load_agent_jwk(struct cfg *c, const char *path, const json_t *o, struct agent *a)
{
    static const char *const keys[] = {"kty", "crv",     "x",   "y", "kid", "alg",
                                       "use", "key_ops", "d",   "p", "q",   "dp",
                                       "dq",  "qi",      "oth", "k", NULL};
    static const char *const private[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k", NULL};
    if (!json_object_get(o, "jwk"))
        return;
    json_t *j = cfg_object(c, path, o, "jwk", false);
    if (!j)
        return;
    char jp[CFG_PATH_MAX];
    cfg_join(jp, path, "jwk");
    cfg_keys(c, jp, j, keys);
    bool priv = false;
    for (size_t i = 0; private[i]; i++)
        if (json_object_get(j, private[i])) {
            char pp[CFG_PATH_MAX];
            cfg_join(pp, jp, private[i]);
            cfg_error(c, pp,
                      "a private key member: give the agent's public key only (the "
                      "private key stays with the agent)");
            priv = true;
        }
    if (priv)
        return;
    struct jwk k;
    char *err = NULL;
    if (httpsig_jwk_from_cnf(j, &k, &err) != 0) {
        /* err names the member first ("crv: expected P-256 for kty EC"): make it a path. */
        size_t n = strcspn(err, ": ");
        char pp[CFG_PATH_MAX];
        if (n > 0 && n < 16 && strncmp(err + n, ": ", 2) == 0) {
            char member[16];
            memcpy(member, err, n);
            member[n] = '\0';
            cfg_join(pp, jp, member);
            cfg_error(c, pp, "%s", err + n + 2);
        } else {
            cfg_error(c, jp, "%s", err);
        }
        free(err);
        return;
    }
    json_t *full = jwk_to_json(&k);
    a->cnf_jwk = json_object();
    static const char *const canon[] = {"kty", "crv", "x", "y", NULL};
    for (size_t i = 0; canon[i]; i++) {
        json_t *v = json_object_get(full, canon[i]);
        if (v)
            sjson_set(a->cnf_jwk, canon[i], json_incref(v));
    }
    json_decref(full);
    httpsig_thumbprint(&k, a->cnf_thumbprint);
    jwk_clear(&k);
}

static void load_agents(struct cfg *c, const json_t *root, struct wallet_config *w)
{
    static const char *const keys[] = {"id", "principal", "token_sha256", "jwk", NULL};
    json_t *arr = cfg_array(c, "", root, "agents", true);
    w->agents = xcalloc(json_array_size(arr) + 1, sizeof(struct agent));
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        char p[CFG_PATH_MAX];
        cfg_index(p, "agents", i);
        cfg_keys(c, p, o, keys);
        struct agent *a = &w->agents[w->nagents++];
        a->id = xstrdup(cfg_string(c, p, o, "id", true, ""));
        const char *pid = cfg_string(c, p, o, "principal", true, NULL);
        for (size_t j = 0; pid && j < w->nprincipals; j++)
            if (strcmp(w->principals[j].id, pid) == 0)
                a->principal = &w->principals[j];
        if (pid && !a->principal) {
            char pp[CFG_PATH_MAX];
            cfg_join(pp, p, "principal");
            cfg_error(c, pp, "no principal \"%s\" in principals", pid);
        }
        cfg_sha256(c, p, o, "token_sha256", a->token_sha256);
        load_agent_jwk(c, p, o, a);
    }
}

/* A DNS name: dot-separated labels of letters, digits and inner hyphens, at most 253 bytes. */
static bool dns_name(const char *s, size_t n)
{
    if (n == 0 || n > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
        } else if (isalnum(ch) || (ch == '-' && label > 0)) {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0 && s[n - 1] != '-';
}

/*
 * admin_url is "http://host:port" and nothing more: the wallet adds the path (/admin/revocations)
 * itself, so a trailing slash or a path would be dropped or doubled at every push; better to say
 * so at --check-config than to push somewhere else. host is an IPv4 address, a bracketed IPv6
 * address or a DNS name; port is 1-65535 in plain digits. Returns NULL or why not.
 */
static const char *admin_url_parse(const char *url, char **host, int *port)
{
    static const char expect[] = "expected http://host:port (an IP address or a name, a port "
                                 "1-65535, nothing after the port)";
    if (strncmp(url, "http://", 7) != 0)
        return expect;
    const char *h = url + 7, *end, *colon;
    char ip[INET6_ADDRSTRLEN + 1];
    unsigned char addr[16];
    if (*h == '[') {
        end = strchr(h, ']');
        size_t n = end ? (size_t)(end - h - 1) : 0;
        if (!end || n == 0 || n >= sizeof(ip))
            return expect;
        memcpy(ip, h + 1, n);
        ip[n] = '\0';
        if (inet_pton(AF_INET6, ip, addr) != 1)
            return "the host in brackets is not an IPv6 address";
        colon = end + 1;
        h++;
    } else {
        colon = h + strcspn(h, ":/?#@");
        end = colon;
        size_t n = (size_t)(end - h);
        bool dotted = n > 0 && strspn(h, "0123456789.") == n;
        if (n < sizeof(ip)) {
            memcpy(ip, h, n);
            ip[n] = '\0';
        }
        if (*colon == '@')
            return "no user information is allowed before the host";
        if (dotted ? n >= sizeof(ip) || inet_pton(AF_INET, ip, addr) != 1 : !dns_name(h, n))
            return expect;
    }
    if (*colon != ':')
        return "the port is missing";
    size_t digits = strspn(colon + 1, "0123456789");
    if (colon[1 + digits] != '\0')
        return digits ? "nothing may follow the port: the wallet adds /admin/revocations itself"
                      : expect;
    long p = digits && digits <= 5 ? strtol(colon + 1, NULL, 10) : 0;
    if (p < 1 || p > 65535)
        return "the port must be 1-65535";
    *host = xstrndup(h, (size_t)(end - h));
    *port = (int)p;
    return NULL;
}

static void load_gateways(struct cfg *c, const json_t *root, struct wallet_config *w)
{
    static const char *const keys[] = {"admin_url", "token_file", NULL};
    json_t *arr = cfg_array(c, "", root, "gateways", false);
    w->gateways = xcalloc(json_array_size(arr) + 1, sizeof(struct gateway_target));
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        char p[CFG_PATH_MAX];
        cfg_index(p, "gateways", i);
        cfg_keys(c, p, o, keys);
        struct gateway_target *g = &w->gateways[w->ngateways++];
        const char *url = cfg_string(c, p, o, "admin_url", true, NULL);
        const char *why = url ? admin_url_parse(url, &g->host, &g->port) : NULL;
        if (why) {
            char pp[CFG_PATH_MAX];
            cfg_join(pp, p, "admin_url");
            cfg_error(c, pp, "%s: \"%s\"", why, url);
        }
        g->admin_url = xstrdup(url);
        char *file = cfg_file(c, p, o, "token_file", true);
        char *err = NULL;
        size_t len;
        if (file && !(g->token = file_read(file, 4096, &len, &err))) {
            char pp[CFG_PATH_MAX];
            cfg_join(pp, p, "token_file");
            cfg_error(c, pp, "%s", err);
            free(err);
        }
        while (g->token && len && (g->token[len - 1] == '\n' || g->token[len - 1] == '\r'))
            g->token[--len] = '\0';
        free(file);
    }
}

/* The listener's limits (wallet/httpguard), named and bounded as the gateway's (SPEC §5). */
static void load_limits(struct cfg *c, const json_t *root, struct wallet_config *w)
{
    static const char *const keys[] = {"max_connections", "header_timeout_ms", NULL};
    json_t *l = cfg_object(c, "", root, "limits", false);
    cfg_keys(c, "limits", l, keys);
    w->max_connections = cfg_int(c, "limits", l, "max_connections", false, 512, 1, 1000000);
    w->header_timeout_ms = cfg_int(c, "limits", l, "header_timeout_ms", false, 10000, 1, 3600000);
}

struct wallet_config *wallet_config_load(const char *path, struct cfg *c)
{
    if (cfg_open(c, path) != 0)
        return NULL;
    struct wallet_config *w = xcalloc(1, sizeof(*w));
    const json_t *root = c->root;
    cfg_keys(c, "", root, top_keys);
    w->id = xstrdup(cfg_string(c, "", root, "id", true, ""));
    cfg_listen(c, "", root, "listen", true, &w->listen_host, &w->listen_port);
    w->database = cfg_file(c, "", root, "database", true);
    load_key(c, root, w);
    json_t *admin = cfg_object(c, "", root, "admin", true);
    if (admin) {
        static const char *const akeys[] = {"token_sha256", NULL};
        cfg_keys(c, "admin", admin, akeys);
        cfg_sha256(c, "admin", admin, "token_sha256", w->admin_token_sha256);
    }
    w->max_ttl_s = cfg_int(c, "", root, "max_ttl_s", false, 300, 1, 86400);
    w->default_ttl_s = cfg_int(c, "", root, "default_ttl_s", false, 60, 1, w->max_ttl_s);
    load_merchants(c, root, w);
    load_principals(c, root, w);
    load_agents(c, root, w);
    load_gateways(c, root, w);
    load_limits(c, root, w);
    if (c->nerrors) {
        wallet_config_free(w);
        return NULL;
    }
    return w;
}

void wallet_config_free(struct wallet_config *w)
{
    if (!w)
        return;
    free(w->id);
    free(w->listen_host);
    free(w->database);
    jwk_clear(&w->signing_key);
    jwks_free(w->published);
    keyring_clear(&w->merchant_keys);
    for (size_t i = 0; i < w->nprincipals; i++) {
        struct principal *pr = &w->principals[i];
        for (size_t j = 0; j < pr->nallow; j++) {
            for (size_t k = 0; k < pr->allow[j].nactions; k++)
                free(pr->allow[j].actions[k]);
            free(pr->allow[j].actions);
            free(pr->allow[j].merchant);
        }
        free(pr->allow);
        free(pr->id);
    }
    free(w->principals);
    for (size_t i = 0; i < w->nagents; i++) {
        free(w->agents[i].id);
        json_decref(w->agents[i].cnf_jwk);
    }
    free(w->agents);
    for (size_t i = 0; i < w->ngateways; i++) {
        free(w->gateways[i].admin_url);
        free(w->gateways[i].host);
        free(w->gateways[i].token);
    }
    free(w->gateways);
    free(w);
}
