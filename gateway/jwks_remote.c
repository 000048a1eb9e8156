/*
 * jwks_remote: the fetcher of remote key sets (see the header for the contract).
 */
#include "gateway/jwks_remote.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "core/cfg.h"
#include "core/log.h"
#include "core/sjson.h"
#include "core/util.h"
#include "gateway/config.h"
#include "gateway/http_parse.h"
#include "gateway/tls.h"

#define HEAD_MAX    16384
#define HEADERS_MAX 100

/* --- pure parts ----------------------------------------------------------------------------- */

static bool loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

int jwks_uri_parse(const char *uri, struct jwks_uri *out, char **err)
{
    memset(out, 0, sizeof(*out));
    for (const char *p = uri; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            *err = xstrdup("whitespace or a control byte in the URI");
            return -1;
        }
    const char *rest;
    if (strncasecmp(uri, "https://", 8) == 0) {
        out->tls = true;
        rest = uri + 8;
    } else if (strncasecmp(uri, "http://", 7) == 0) {
        rest = uri + 7;
    } else {
        *err = xstrdup("expected an https:// URI (or http:// to a loopback address)");
        return -1;
    }
    if (strchr(uri, '#')) {
        *err = xstrdup("a fragment (#) has no place in a jwks_uri");
        return -1;
    }
    size_t alen = strcspn(rest, "/?");
    char *auth = xstrndup(rest, alen);
    const char *target = rest + alen;
    int rc = -1;
    if (strchr(auth, '@')) {
        *err = xstrdup("user information (@) is not allowed in a jwks_uri");
        goto out;
    }
    char *colon = auth[0] == '[' ? strstr(auth, "]:") : strrchr(auth, ':');
    if (auth[0] == '[' && colon)
        colon++;
    int port = out->tls ? 443 : 80;
    char *host;
    if (colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (colon[1] == '\0' || *end || p < 1 || p > 65535) {
            *err = xstrdup("the port is not a number from 1 to 65535");
            goto out;
        }
        port = (int)p;
        *colon = '\0';
    }
    if (auth[0] == '[') {
        size_t n = strlen(auth);
        struct in6_addr a6;
        if (n < 3 || auth[n - 1] != ']') {
            *err = xstrdup("an IPv6 address must be in brackets");
            goto out;
        }
        host = xstrndup(auth + 1, n - 2);
        if (inet_pton(AF_INET6, host, &a6) != 1) {
            free(host);
            *err = xstrdup("not an IPv6 address in brackets");
            goto out;
        }
    } else {
        if (!auth[0] || strchr(auth, '[') || strchr(auth, ']')) {
            *err = xstrdup("no host");
            goto out;
        }
        host = xstrdup(auth);
    }
    if (!out->tls && !loopback(host)) {
        free(host);
        *err = xstrdup("http:// is allowed only to a loopback address (127.0.0.0/8 or [::1]); "
                       "use https://");
        goto out;
    }
    out->host = host;
    out->port = port;
    bool v6 = strchr(host, ':') != NULL;
    if (port == (out->tls ? 443 : 80))
        out->hostport = v6 ? xasprintf("[%s]", host) : xstrdup(host);
    else
        out->hostport = v6 ? xasprintf("[%s]:%d", host, port) : xasprintf("%s:%d", host, port);
    out->target = *target == '?' ? xasprintf("/%s", target) : xstrdup(*target ? target : "/");
    rc = 0;
out:
    free(auth);
    return rc;
}

void jwks_uri_clear(struct jwks_uri *u)
{
    free(u->host);
    free(u->hostport);
    free(u->target);
    memset(u, 0, sizeof(*u));
}

static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

int64_t jwks_max_age(const char *const *v, const size_t *len, size_t n)
{
    int64_t age = -1;
    bool no_cache = false;
    for (size_t k = 0; k < n; k++) {
        const char *p = v[k], *end = v[k] + len[k];
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *name = p;
            while (p < end && is_tchar(*p))
                p++;
            size_t nl = (size_t)(p - name);
            const char *val = NULL;
            size_t vl = 0;
            bool quoted = false;
            if (p < end && *p == '=') {
                p++;
                if (p < end && *p == '"') {
                    quoted = true;
                    val = ++p;
                    while (p < end && *p != '"')
                        p += (*p == '\\' && p + 1 < end) ? 2 : 1;
                    vl = (size_t)(p - val);
                    if (p < end)
                        p++;
                } else {
                    val = p;
                    while (p < end && is_tchar(*p))
                        p++;
                    vl = (size_t)(p - val);
                }
            }
            (void)quoted;
            if ((nl == 8 && strncasecmp(name, "no-store", 8) == 0) ||
                (nl == 8 && strncasecmp(name, "no-cache", 8) == 0)) {
                no_cache = true;
            } else if (nl == 7 && strncasecmp(name, "max-age", 7) == 0 && age < 0) {
                /* A value that is not all digits makes the answer stale (RFC 9111 §4.2.1). */
                int64_t x = vl ? 0 : -1;
                for (size_t i = 0; i < vl && x >= 0; i++) {
                    if (val[i] < '0' || val[i] > '9')
                        x = 0, i = vl;
                    else if ((x = x * 10 + (val[i] - '0')) > JWKS_REMOTE_MAX_AGE_S)
                        x = JWKS_REMOTE_MAX_AGE_S;
                }
                age = x < 0 ? 0 : x;
            }
            /* Skip anything else up to the next comma (a malformed directive included). */
            while (p < end && *p != ',')
                p++;
        }
    }
    if (no_cache)
        age = 0;
    if (age < 0)
        return JWKS_REMOTE_DEFAULT_AGE_S;
    if (age < JWKS_REMOTE_MIN_AGE_S)
        return JWKS_REMOTE_MIN_AGE_S;
    return age > JWKS_REMOTE_MAX_AGE_S ? JWKS_REMOTE_MAX_AGE_S : age;
}

/* --- the fetcher ---------------------------------------------------------------------------- */

struct src {
    struct jwks_remote *r;
    const char *kind; /* static: "issuer", "merchant" */
    char *id;
    struct jwks_remote_slot *slot; /* in the rings last given */
    struct jwks_uri u;
    struct tls_client *tls; /* https: the system store or jwks_ca_file */
    struct event *timer;    /* the next scheduled fetch */
    struct event *deadline; /* the fetch in flight must end by then */
    struct bufferevent *bev;
    bool head_done;
    int status;
    enum hp_body_kind body_kind;
    int64_t clen;
    struct hp_chunked dec;
    struct evbuffer *body;
    int64_t max_age;
    int retry_s;         /* the wait before the next retry after a failure */
    int64_t last_kid_ms; /* when the last unknown-kid refetch began; -1: never */
    bool limit_logged;   /* "rate-limited" said once for the current 30 s window */
    bool kid_fetch;      /* the fetch in flight answers an unknown kid */
};

struct jwks_remote {
    struct event_base *base;
    struct evdns_base *dns; /* made at the first fetch by name */
    struct jwks_remote_opts opts;
    struct event *kick; /* activated by workers through keyring_miss */
    struct src **v;
    size_t n;
};

static const struct hp_limits head_limits = {.max_header_bytes = HEAD_MAX,
                                             .max_headers = HEADERS_MAX};

static void schedule(struct src *s, int64_t secs)
{
    struct timeval tv = {(time_t)secs, 0};
    event_add(s->timer, &tv);
}

static void end_fetch(struct src *s)
{
    if (s->bev)
        bufferevent_free(s->bev);
    s->bev = NULL;
    evtimer_del(s->deadline);
    if (s->body)
        evbuffer_free(s->body);
    s->body = NULL;
    s->kid_fetch = false;
}

static void fetch_failed(struct src *s, const char *fmt, ...) PRINTF(2, 3);
static void fetch_failed(struct src *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *why = xvasprintf(fmt, ap);
    va_end(ap);
    end_fetch(s);
    int wait = s->retry_s ? s->retry_s : 1;
    s->retry_s = wait * 2 > JWKS_REMOTE_RETRY_MAX_S ? JWKS_REMOTE_RETRY_MAX_S : wait * 2;
    if (keyring_remote_current(s->slot))
        log_warn("jwks %s %s: fetching %s failed: %s; keeping the last good set, retrying in %d s",
                 s->kind, s->id, s->slot->uri, why, wait);
    else
        log_error("jwks %s %s: fetching %s failed: %s; no keys yet (its mandates get 503), "
                  "retrying in %d s",
                  s->kind, s->id, s->slot->uri, why, wait);
    free(why);
    schedule(s, wait);
}

static void fetch_done(struct src *s)
{
    size_t len = evbuffer_get_length(s->body);
    const char *p = (const char *)evbuffer_pullup(s->body, -1);
    char *err = NULL;
    json_t *doc = sjson_parse(p ? p : "", len, &err);
    struct jwks *set = doc ? jwks_from_json(doc, &err) : NULL;
    json_decref(doc);
    if (!set) {
        fetch_failed(s, "not a valid JWKS: %s", err ? err : "?");
        free(err);
        return;
    }
    bool kid = s->kid_fetch;
    end_fetch(s);
    s->retry_s = 0;
    const struct jwks *cur = keyring_remote_current(s->slot);
    if (cur && jwks_equal(cur, set)) {
        log_debug("jwks %s %s: %s unchanged, next fetch in %lld s", s->kind, s->id, s->slot->uri,
                  (long long)s->max_age);
        jwks_free(set);
    } else {
        log_info("jwks %s %s: %zu key%s from %s%s, next fetch in %lld s", s->kind, s->id, set->n,
                 set->n == 1 ? "" : "s", s->slot->uri, kid ? " (refetched for an unknown kid)" : "",
                 (long long)s->max_age);
        if (s->r->opts.on_new) /* before a reader can see it */
            s->r->opts.on_new(s->r->opts.arg, s->kind, s->id, s->slot, set);
        keyring_remote_install(s->slot, set);
    }
    schedule(s, s->max_age);
}

/* The head at the start of in, when it is complete: 1 parsed (and drained), 0 more bytes needed,
 * -1 failed (already reported). */
static int read_head(struct src *s, struct evbuffer *in)
{
    for (;;) {
        size_t have = evbuffer_get_length(in);
        if (have == 0)
            return 0;
        size_t look = have > HEAD_MAX + 1 ? HEAD_MAX + 1 : have;
        const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
        struct hp_header hdrs[HEADERS_MAX];
        struct hp_response resp = {.headers = hdrs};
        int n = hp_parse_response(buf, look, &head_limits, false, &resp);
        if (n == 0)
            return 0;
        if (n < 0) {
            fetch_failed(s, "bad answer: %s", hp_error_str((enum hp_error) - n));
            return -1;
        }
        if (resp.status >= 100 && resp.status < 200) {
            evbuffer_drain(in, (size_t)n);
            continue;
        }
        if (resp.status != 200) {
            fetch_failed(s, "HTTP %d", resp.status);
            return -1;
        }
        const char *vals[HEADERS_MAX];
        size_t lens[HEADERS_MAX], nv = 0;
        for (size_t i = 0; i < resp.n_headers; i++)
            if (hp_str_ieq(resp.headers[i].name, "cache-control")) {
                vals[nv] = resp.headers[i].value.p;
                lens[nv++] = resp.headers[i].value.n;
            }
        s->max_age = jwks_max_age(vals, lens, nv);
        s->body_kind = resp.body;
        s->clen = resp.content_length;
        if (resp.body == HP_BODY_LENGTH && resp.content_length > JWKS_REMOTE_MAX_BYTES) {
            fetch_failed(s, "the answer is over %d bytes (Content-Length %lld)",
                         JWKS_REMOTE_MAX_BYTES, (long long)resp.content_length);
            return -1;
        }
        hp_chunked_init(&s->dec, JWKS_REMOTE_MAX_BYTES, &head_limits);
        evbuffer_drain(in, (size_t)n);
        s->head_done = true;
        return 1;
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct src *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (!s->head_done && read_head(s, in) <= 0)
        return;
    switch (s->body_kind) {
    case HP_BODY_LENGTH: {
        size_t want = (size_t)s->clen - evbuffer_get_length(s->body);
        evbuffer_remove_buffer(in, s->body, want);
        if ((int64_t)evbuffer_get_length(s->body) == s->clen)
            fetch_done(s);
        return;
    }
    case HP_BODY_CHUNKED:
        while (evbuffer_get_length(in)) {
            size_t len = evbuffer_get_contiguous_space(in), used = 0;
            const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
            struct hp_str data = {0};
            int rc = hp_chunked_feed(&s->dec, p, len, &used, &data);
            if (rc == HP_CHUNK_DATA)
                evbuffer_add(s->body, data.p, data.n);
            evbuffer_drain(in, used);
            if (rc == HP_CHUNK_DONE) {
                fetch_done(s);
                return;
            }
            if (rc < 0) {
                if (-rc == HP_BODY_TOO_LARGE)
                    fetch_failed(s, "the answer is over %d bytes", JWKS_REMOTE_MAX_BYTES);
                else
                    fetch_failed(s, "bad chunked body: %s", hp_error_str((enum hp_error) - rc));
                return;
            }
        }
        return;
    case HP_BODY_UNTIL_CLOSE:
        evbuffer_add_buffer(s->body, in);
        if (evbuffer_get_length(s->body) > JWKS_REMOTE_MAX_BYTES)
            fetch_failed(s, "the answer is over %d bytes", JWKS_REMOTE_MAX_BYTES);
        return;
    case HP_BODY_NONE:
        fetch_failed(s, "an answer without a body");
        return;
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct src *s = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (what & BEV_EVENT_EOF) {
        on_read(bev, arg); /* whatever is still buffered */
        if (!s->bev)
            return;
        if (s->head_done && s->body_kind == HP_BODY_UNTIL_CLOSE)
            fetch_done(s);
        else
            fetch_failed(s, "the connection closed before the answer ended");
        return;
    }
    int dns = bufferevent_socket_get_dns_error(bev);
    if (dns) {
        fetch_failed(s, "cannot resolve %s: %s", s->u.host, evutil_gai_strerror(dns));
        return;
    }
    if (s->u.tls) {
        char buf[160];
        const char *why = tls_verify_error(bufferevent_openssl_get_ssl(bev));
        unsigned long e = bufferevent_get_openssl_error(bev);
        if (why || e) {
            fetch_failed(s, "TLS: %s", why ? why : tls_error_string(e, buf, sizeof(buf)));
            return;
        }
    }
    int err = EVUTIL_SOCKET_ERROR();
    fetch_failed(s, "%s", err ? evutil_socket_error_to_string(err) : "connection failed");
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct src *s = arg;
    fetch_failed(s, "not complete within %d ms", JWKS_REMOTE_TIMEOUT_MS);
}

static void start_fetch(struct src *s)
{
    if (s->bev)
        return;
    evtimer_del(s->timer);
    s->head_done = false;
    s->body = evbuffer_new();
    int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
    if (s->u.tls) {
        SSL *ssl = tls_client_ssl(s->tls, s->u.host);
        s->bev = ssl ? bufferevent_openssl_socket_new(s->r->base, -1, ssl,
                                                      BUFFEREVENT_SSL_CONNECTING, opts)
                     : NULL;
        if (s->bev)
            bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
    } else {
        s->bev = bufferevent_socket_new(s->r->base, -1, opts);
    }
    if (!s->bev) {
        fetch_failed(s, "cannot make a connection");
        return;
    }
    struct in6_addr a;
    if (!s->r->dns && inet_pton(AF_INET, s->u.host, &a) != 1 &&
        inet_pton(AF_INET6, s->u.host, &a) != 1) {
        s->r->dns = evdns_base_new(s->r->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                                   EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!s->r->dns)
            s->r->dns = evdns_base_new(s->r->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    }
    struct timeval tv = {JWKS_REMOTE_TIMEOUT_MS / 1000, (JWKS_REMOTE_TIMEOUT_MS % 1000) * 1000};
    event_add(s->deadline, &tv);
    bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    evbuffer_add_printf(bufferevent_get_output(s->bev),
                        "GET %s HTTP/1.1\r\nHost: %s\r\n"
                        "Accept: application/jwk-set+json, application/json\r\n"
                        "User-Agent: %s\r\nConnection: close\r\n\r\n",
                        s->u.target, s->u.hostport,
                        s->r->opts.user_agent ? s->r->opts.user_agent : "mandate");
    log_debug("jwks %s %s: fetching %s", s->kind, s->id, s->slot->uri);
    /* Callbacks are deferred: a failure at once is reported from the loop, never from here. */
    if (bufferevent_socket_connect_hostname(s->bev, s->r->dns, AF_UNSPEC, s->u.host, s->u.port) !=
        0)
        log_debug("jwks %s %s: connect failed at once", s->kind, s->id);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_fetch(arg);
}

/* A worker met an unknown kid in some of our slots. */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct jwks_remote *r = arg;
    int64_t now = mono_us() / 1000;
    for (size_t i = 0; i < r->n; i++) {
        struct src *s = r->v[i];
        if (!atomic_exchange(&s->slot->wanted, false) || s->bev)
            continue; /* not asked, or a fetch in flight will answer it */
        if (s->last_kid_ms >= 0 && now - s->last_kid_ms < JWKS_REMOTE_KID_EVERY_S * 1000) {
            if (!s->limit_logged)
                log_info("jwks %s %s: unknown kid: not refetching %s before %lld s (at most "
                         "once per %d s)",
                         s->kind, s->id, s->slot->uri,
                         (long long)(s->last_kid_ms + JWKS_REMOTE_KID_EVERY_S * 1000 - now + 999) /
                             1000,
                         JWKS_REMOTE_KID_EVERY_S);
            s->limit_logged = true;
            continue;
        }
        s->last_kid_ms = now;
        s->limit_logged = false;
        log_info("jwks %s %s: unknown kid: refetching %s", s->kind, s->id, s->slot->uri);
        start_fetch(s);
        s->kid_fetch = s->bev != NULL;
    }
}

static void wake(void *arg)
{
    struct jwks_remote *r = arg;
    event_active(r->kick, EV_TIMEOUT, 0);
}

static void src_free(struct src *s)
{
    end_fetch(s);
    event_free(s->timer);
    event_free(s->deadline);
    tls_client_free(s->tls);
    jwks_uri_clear(&s->u);
    free(s->id);
    free(s);
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void attach(struct jwks_remote *r, struct src *s, struct jwks_remote_slot *slot)
{
    s->slot = slot;
    slot->notify = wake;
    atomic_store_explicit(&slot->notify_arg, r, memory_order_release);
}

/* The sources of the rings' remote slots, reusing those of old[0..nold) (taken ones set to
 * NULL). */
static void adopt(struct jwks_remote *r, const struct jwks_remote_ring *rings, size_t nrings,
                  struct src **old, size_t nold)
{
    for (size_t k = 0; k < nrings; k++)
        for (size_t i = 0; i < rings[k].ring->n; i++) {
            const struct keyring_entry *e = &rings[k].ring->v[i];
            const char *kind = rings[k].kind;
            if (!e->remote)
                continue;
            struct src *s = NULL;
            for (size_t j = 0; j < nold && !s; j++)
                if (old[j] && strcmp(old[j]->kind, kind) == 0 &&
                    strcmp(old[j]->id, e->issuer) == 0 &&
                    strcmp(old[j]->slot->uri, e->remote->uri) == 0 &&
                    same_str(old[j]->slot->ca_file, e->remote->ca_file)) {
                    s = old[j];
                    old[j] = NULL;
                }
            if (s) {
                const struct jwks *cur = keyring_remote_current(s->slot);
                if (cur)
                    keyring_remote_install(e->remote, jwks_dup(cur));
                attach(r, s, e->remote);
            } else {
                char *err = NULL;
                s = xcalloc(1, sizeof(*s));
                s->r = r;
                s->kind = kind;
                s->id = xstrdup(e->issuer);
                s->last_kid_ms = -1;
                s->max_age = JWKS_REMOTE_DEFAULT_AGE_S;
                s->timer = evtimer_new(r->base, on_timer, s);
                s->deadline = evtimer_new(r->base, on_deadline, s);
                attach(r, s, e->remote);
                /* The configuration checked both already; a failure here is reported per fetch. */
                if (jwks_uri_parse(e->remote->uri, &s->u, &err) != 0 ||
                    (s->u.tls && !(s->tls = tls_client_new(e->remote->ca_file, &err)))) {
                    log_error("jwks %s %s: %s", kind, s->id, err);
                    free(err);
                    atomic_store(&e->remote->notify_arg, NULL);
                    src_free(s);
                    continue;
                }
                schedule(s, 0); /* from the loop */
            }
            r->v = xrealloc(r->v, (r->n + 1) * sizeof(*r->v));
            r->v[r->n++] = s;
        }
}

struct jwks_remote *jwks_remote_start(struct event_base *base, const struct jwks_remote_ring *rings,
                                      size_t n, const struct jwks_remote_opts *opts)
{
    struct jwks_remote *r = xcalloc(1, sizeof(*r));
    r->base = base;
    if (opts)
        r->opts = *opts;
    r->kick = event_new(base, -1, 0, on_kick, r);
    adopt(r, rings, n, NULL, 0);
    return r;
}

void jwks_remote_reload(struct jwks_remote *r, const struct jwks_remote_ring *rings, size_t n)
{
    struct src **old = r->v;
    size_t nold = r->n;
    r->v = NULL;
    r->n = 0;
    adopt(r, rings, n, old, nold);
    for (size_t j = 0; j < nold; j++)
        if (old[j]) {
            atomic_store(&old[j]->slot->notify_arg, NULL);
            src_free(old[j]);
        }
    free(old);
}

void jwks_remote_free(struct jwks_remote *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        atomic_store(&r->v[i]->slot->notify_arg, NULL);
        src_free(r->v[i]);
    }
    free(r->v);
    event_free(r->kick);
    if (r->dns)
        evdns_base_free(r->dns, 0);
    free(r);
}

size_t jwks_remote_config_rings(struct config *conf, struct jwks_remote_ring out[2])
{
    out[0] = (struct jwks_remote_ring){"issuer", &conf->issuers};
    out[1] = (struct jwks_remote_ring){"merchant", &conf->merchant_keys};
    return 2;
}

/* --- the request path and readiness --------------------------------------------------------- */

enum code jwks_remote_unknown_key(const struct keyring *ring, const char *iss)
{
    return keyring_miss(ring, iss) == KEYRING_MISS_NO_KEYS ? CODE_UNAVAILABLE
                                                           : CODE_MANDATE_UNKNOWN_KEY;
}

char *jwks_remote_missing_in(const struct jwks_remote_ring *rings, size_t n)
{
    struct sb b = {0};
    for (size_t k = 0; k < n; k++)
        for (size_t i = 0; i < rings[k].ring->n; i++) {
            const struct keyring_entry *e = &rings[k].ring->v[i];
            if (e->remote && !keyring_remote_current(e->remote))
                sb_printf(&b, "%s%s %s", b.len ? ", " : "no keys fetched yet for ", rings[k].kind,
                          e->issuer);
        }
    return b.len ? b.buf : NULL;
}

char *jwks_remote_missing(const struct config *conf)
{
    struct jwks_remote_ring rings[2];
    size_t n = jwks_remote_config_rings((struct config *)conf, rings);
    return jwks_remote_missing_in(rings, n);
}

bool jwks_remote_ready(const struct config *conf)
{
    char *m = jwks_remote_missing(conf);
    free(m);
    return m == NULL;
}

/* --- configuration -------------------------------------------------------------------------- */

/* jwks_uri (and jwks_ca_file) inside obj at path: added to ring under id with no keys yet. */
static void load_uri(struct cfg *c, const char *path, const json_t *obj, const char *id,
                     struct keyring *ring)
{
    char p[CFG_PATH_MAX];
    const char *uri = cfg_string(c, path, obj, "jwks_uri", true, NULL);
    char *ca =
        json_object_get(obj, "jwks_ca_file") ? cfg_file(c, path, obj, "jwks_ca_file", true) : NULL;
    struct jwks_uri u;
    char *err = NULL;
    bool ok = uri != NULL;
    if (uri && jwks_uri_parse(uri, &u, &err) != 0) {
        cfg_join(p, path, "jwks_uri");
        cfg_error(c, p, "%s", err);
        free(err);
        ok = false;
    } else if (uri) {
        if (ca && !u.tls) {
            cfg_join(p, path, "jwks_ca_file");
            cfg_error(c, p, "only for an https:// jwks_uri");
            ok = false;
        } else if (u.tls) {
            struct tls_client *t = tls_client_new(ca, &err);
            if (!t) {
                cfg_join(p, path, ca ? "jwks_ca_file" : "jwks_uri");
                cfg_error(c, p, "%s", err);
                free(err);
                ok = false;
            }
            tls_client_free(t);
        }
        jwks_uri_clear(&u);
    }
    if (ok && id)
        keyring_add_remote(ring, id, uri, ca);
    free(ca);
}

void jwks_remote_load_config(struct cfg *c, const char *path, const json_t *obj, const char *id,
                             struct keyring *ring)
{
    if (json_object_get(obj, "jwks_uri") && json_object_get(obj, "jwks_file")) {
        cfg_error(c, path, "jwks_file and jwks_uri: expected one of them, not both");
        return;
    }
    if (json_object_get(obj, "jwks_uri")) {
        load_uri(c, path, obj, id, ring);
        return;
    }
    if (json_object_get(obj, "jwks_ca_file")) {
        char p[CFG_PATH_MAX];
        cfg_join(p, path, "jwks_ca_file");
        cfg_error(c, p, "only with jwks_uri");
    }
    char *file = cfg_file(c, path, obj, "jwks_file", true);
    if (!file)
        return;
    char *err = NULL;
    struct jwks *set = jwks_load_file(file, &err);
    if (!set) {
        char p[CFG_PATH_MAX];
        cfg_join(p, path, "jwks_file");
        cfg_error(c, p, "%s", err);
        free(err);
    } else if (id) {
        keyring_add(ring, id, set);
    } else {
        jwks_free(set);
    }
    free(file);
}
