/*
 * Unit tests for remote key sets (SPEC §7): Cache-Control max-age parsing and its bounds, jwks_uri
 * parsing (https anywhere, http to loopback only), and the keyring's remote slots (swap, misses,
 * the wake-up of the fetcher), and the fetcher itself over a keyring against a local evhttp key
 * server: the first set and a rotation announced (on_new) before they are installed, a reload
 * seeding the new ring without a fetch or an announcement.
 */
#include "testkit.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "core/util.h"
#include "gateway/jwks_remote.h"

static int64_t age1(const char *v)
{
    size_t n = strlen(v);
    return jwks_max_age(&v, &n, 1);
}

static void test_max_age(void **state)
{
    (void)state;
    assert_int_equal(jwks_max_age(NULL, NULL, 0), JWKS_REMOTE_DEFAULT_AGE_S); /* no header */
    assert_int_equal(age1(""), 3600);
    assert_int_equal(age1("public"), 3600);
    assert_int_equal(age1("max-age=600"), 600);
    assert_int_equal(age1("public, max-age=600, must-revalidate"), 600);
    assert_int_equal(age1("MAX-AGE=600"), 600);
    assert_int_equal(age1("max-age=\"600\""), 600);
    /* Bounds: 60 s .. 24 h. */
    assert_int_equal(age1("max-age=0"), 60);
    assert_int_equal(age1("max-age=59"), 60);
    assert_int_equal(age1("max-age=60"), 60);
    assert_int_equal(age1("max-age=86400"), 86400);
    assert_int_equal(age1("max-age=86401"), 86400);
    assert_int_equal(age1("max-age=99999999999999999999999999"), 86400);
    /* Invalid values make the answer stale: the minimum, never the default. */
    assert_int_equal(age1("max-age=-5"), 60);
    assert_int_equal(age1("max-age=12a"), 60);
    assert_int_equal(age1("max-age="), 60);
    assert_int_equal(age1("max-age"), 60);
    /* no-store and no-cache: refetch as soon as allowed. */
    assert_int_equal(age1("no-store"), 60);
    assert_int_equal(age1("max-age=600, no-cache"), 60);
    /* Not max-age: s-maxage is for shared caches; a prefix is another directive. */
    assert_int_equal(age1("s-maxage=600"), 3600);
    assert_int_equal(age1("max-agex=600"), 3600);
    /* A quoted comma does not split directives; the first max-age wins. */
    assert_int_equal(age1("foo=\"a, max-age=5\", max-age=900"), 900);
    assert_int_equal(age1("max-age=900, max-age=100"), 900);
    /* Several Cache-Control lines count as one list. */
    const char *v[] = {"public", "max-age=1200"};
    size_t n[] = {6, 12};
    assert_int_equal(jwks_max_age(v, n, 2), 1200);
    /* Only len bytes are read. */
    const char *cut = "max-age=120000";
    size_t cn = 11;
    assert_int_equal(jwks_max_age(&cut, &cn, 1), 120);
}

static void uri_ok(const char *s, bool tls, const char *host, int port, const char *hostport,
                   const char *target)
{
    struct jwks_uri u;
    char *err = NULL;
    if (jwks_uri_parse(s, &u, &err) != 0)
        fail_msg("%s: %s", s, err);
    assert_int_equal(u.tls, tls);
    assert_string_equal(u.host, host);
    assert_int_equal(u.port, port);
    assert_string_equal(u.hostport, hostport);
    assert_string_equal(u.target, target);
    jwks_uri_clear(&u);
}

static void uri_bad(const char *s, const char *why)
{
    struct jwks_uri u;
    char *err = NULL;
    if (jwks_uri_parse(s, &u, &err) == 0)
        fail_msg("%s: accepted", s);
    if (!strstr(err, why))
        fail_msg("%s: \"%s\" does not say \"%s\"", s, err, why);
    free(err);
}

static void test_uri(void **state)
{
    (void)state;
    uri_ok("https://keys.example/.well-known/jwks.json", true, "keys.example", 443, "keys.example",
           "/.well-known/jwks.json");
    uri_ok("https://keys.example", true, "keys.example", 443, "keys.example", "/");
    uri_ok("https://keys.example:8443/a?b=c", true, "keys.example", 8443, "keys.example:8443",
           "/a?b=c");
    uri_ok("https://keys.example?x", true, "keys.example", 443, "keys.example", "/?x");
    uri_ok("https://[2001:db8::1]:444/k", true, "2001:db8::1", 444, "[2001:db8::1]:444", "/k");
    uri_ok("HTTPS://keys.example/k", true, "keys.example", 443, "keys.example", "/k");
    uri_ok("http://127.0.0.1:8080/jwks.json", false, "127.0.0.1", 8080, "127.0.0.1:8080",
           "/jwks.json");
    uri_ok("http://127.8.9.10/j", false, "127.8.9.10", 80, "127.8.9.10", "/j");
    uri_ok("http://[::1]:9/j", false, "::1", 9, "[::1]:9", "/j");

    uri_bad("http://keys.example/jwks.json", "loopback");
    uri_bad("http://localhost/jwks.json", "loopback"); /* a name could resolve anywhere */
    uri_bad("http://128.0.0.1/jwks.json", "loopback");
    uri_bad("http://[::2]/jwks.json", "loopback");
    uri_bad("ftp://127.0.0.1/jwks.json", "https://");
    uri_bad("keys.example/jwks.json", "https://");
    uri_bad("https://user:pw@keys.example/", "user information");
    uri_bad("https://keys.example/#frag", "fragment");
    uri_bad("https://keys.example/a b", "whitespace");
    uri_bad("https://keys.example/\x01", "control");
    uri_bad("https://keys.example:0/", "port");
    uri_bad("https://keys.example:65536/", "port");
    uri_bad("https://keys.example:/", "port");
    uri_bad("https://keys.example:8a/", "port");
    uri_bad("https:///jwks.json", "no host");
    uri_bad("https://[::1/", "bracket");
    uri_bad("https://[nothex]/", "IPv6");
}

static struct jwks *set_of_new_key(const char *kid, struct jwk *keep)
{
    assert_int_equal(jwk_generate(JWK_ES256, kid, keep), 0);
    return tk_set_of(keep);
}

static int woken;
static void wake(void *arg)
{
    (void)arg;
    woken++;
}

static void test_remote_slot(void **state)
{
    (void)state;
    struct keyring kr = {0};
    struct jwk k1, k2;
    keyring_add(&kr, "local", set_of_new_key("l1", &k1));
    struct jwks_remote_slot *s = keyring_add_remote(&kr, "remote", "https://k.example/j", NULL);
    assert_ptr_equal(keyring_remote_slot(&kr, "remote"), s);
    assert_null(keyring_remote_slot(&kr, "local"));
    assert_null(keyring_remote_slot(&kr, "nobody"));

    /* Before the first set: no keys, the issuer cannot be checked (503), nobody to wake. */
    assert_null(keyring_get(&kr, "remote"));
    assert_null(keyring_find(&kr, "remote", "r1"));
    assert_int_equal(keyring_miss(&kr, "remote"), KEYRING_MISS_NO_KEYS);
    assert_int_equal(keyring_miss(&kr, "local"), KEYRING_MISS_LOCAL);
    assert_int_equal(keyring_miss(&kr, "nobody"), KEYRING_MISS_LOCAL);
    assert_int_equal(jwks_remote_unknown_key(&kr, "remote"), CODE_UNAVAILABLE);
    assert_int_equal(jwks_remote_unknown_key(&kr, "local"), CODE_MANDATE_UNKNOWN_KEY);

    /* The fetcher attaches and installs a set. */
    s->notify = wake;
    atomic_store(&s->notify_arg, &kr);
    struct jwk r1;
    keyring_remote_install(s, set_of_new_key("r1", &r1));
    const struct jwks *first = keyring_get(&kr, "remote");
    assert_non_null(keyring_find(&kr, "remote", "r1"));
    assert_int_equal(woken, 0);

    /* A miss asks for a refetch, once until the fetcher looks. */
    assert_null(keyring_find(&kr, "remote", "r2"));
    assert_int_equal(woken, 1);
    assert_true(atomic_load(&s->wanted));
    assert_int_equal(keyring_miss(&kr, "remote"), KEYRING_MISS_ASKED);
    assert_int_equal(jwks_remote_unknown_key(&kr, "remote"), CODE_MANDATE_UNKNOWN_KEY);
    assert_int_equal(woken, 1);
    atomic_store(&s->wanted, false); /* the fetcher looked */
    assert_null(keyring_find(&kr, "remote", "r2"));
    assert_int_equal(woken, 2);
    /* A local miss wakes nobody. */
    assert_null(keyring_find(&kr, "local", "zz"));
    assert_int_equal(woken, 2);

    /* Rotation: the new set is current; the old one stays readable until the ring is cleared. */
    struct jwks *next = set_of_new_key("r2", &k2);
    keyring_remote_install(s, next);
    assert_ptr_equal(keyring_get(&kr, "remote"), next);
    assert_non_null(keyring_find(&kr, "remote", "r2"));
    assert_null(jwks_find(keyring_get(&kr, "remote"), "r1"));
    assert_non_null(jwks_find(first, "r1")); /* a reader's old pointer is still good */
    assert_int_equal(s->nold, 1);

    /* dup shares keys and compares equal; a different set does not. */
    struct jwks *d = jwks_dup(next);
    assert_true(jwks_equal(d, next));
    assert_false(jwks_equal(d, first));
    assert_true(jwks_equal(NULL, NULL));
    assert_false(jwks_equal(d, NULL));
    jwks_free(d);

    /* A key server that flaps between sets: the replaced ones kept alive stay bounded. */
    for (int i = 0; i < 3 * KEYRING_REMOTE_RETIRED; i++) {
        struct jwk kf;
        struct jwks *flap = set_of_new_key("rf", &kf);
        keyring_remote_install(s, flap);
        assert_ptr_equal(keyring_get(&kr, "remote"), flap);
        jwk_clear(&kf);
    }
    assert_int_equal(s->nold, KEYRING_REMOTE_RETIRED);

    jwk_clear(&k1);
    jwk_clear(&k2);
    jwk_clear(&r1);
    keyring_clear(&kr); /* frees the remote sets (ASan/valgrind check the rest) */
}

/* --- the fetcher against a local key server ------------------------------------------------ */

struct fx {
    struct event_base *base;
    char *body; /* what /jwks.json answers */
    int fetches;
    int announced;
    char kind[16], owner[16], kid[JWK_KID_MAX + 1];
    bool was_installed; /* the slot's current set at the announcement was already next */
};

static void serve(struct evhttp_request *req, void *arg)
{
    struct fx *f = arg;
    f->fetches++;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, f->body, strlen(f->body));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "max-age=3600");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void on_new(void *arg, const char *kind, const char *owner,
                   const struct jwks_remote_slot *slot, const struct jwks *next)
{
    struct fx *f = arg;
    f->announced++;
    snprintf(f->kind, sizeof(f->kind), "%s", kind);
    snprintf(f->owner, sizeof(f->owner), "%s", owner);
    snprintf(f->kid, sizeof(f->kid), "%s", next->keys[0].kid);
    f->was_installed = keyring_remote_current(slot) == next;
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
}

/* Run the loop until the merchant's current set has kid (bounded: 5 s). */
static void run_until_kid(struct fx *f, const struct keyring *kr, const char *kid)
{
    struct event *t = event_new(f->base, -1, EV_PERSIST, tick, NULL);
    event_add(t, &(struct timeval){0, 20000});
    int64_t end = mono_us() + 5000000;
    const struct jwks *cur;
    while (!((cur = keyring_get(kr, "m")) && jwks_find(cur, kid)) && mono_us() < end)
        event_base_loop(f->base, EVLOOP_ONCE);
    event_free(t);
    cur = keyring_get(kr, "m");
    if (!cur || !jwks_find(cur, kid))
        fail_msg("no set with kid %s within 5 s", kid);
}

static char *jwks_text(const char *kid, struct jwk *keep)
{
    struct jwks *set = set_of_new_key(kid, keep);
    json_t *doc = jwks_to_json(set);
    char *text = sjson_dump(doc);
    json_decref(doc);
    jwks_free(set);
    return text;
}

static void test_fetcher_over_a_keyring(void **state)
{
    (void)state;
    struct fx f = {0};
    f.base = event_base_new();
    struct evhttp *http = evhttp_new(f.base);
    evhttp_set_gencb(http, serve, &f);
    struct evhttp_bound_socket *h = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    assert_non_null(h);
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(h), (struct sockaddr *)&sa, &sl), 0);
    char *uri = xasprintf("http://127.0.0.1:%d/jwks.json", ntohs(sa.sin_port));

    struct jwk k1, k2;
    f.body = jwks_text("a1", &k1);
    struct keyring kr = {0};
    keyring_add_remote(&kr, "m", uri, NULL);
    struct jwks_remote_ring ring = {"merchant", &kr};
    char *missing = jwks_remote_missing_in(&ring, 1);
    assert_string_equal(missing, "no keys fetched yet for merchant m");
    free(missing);

    struct jwks_remote *r = jwks_remote_start(
        f.base, &ring, 1, &(struct jwks_remote_opts){.on_new = on_new, .arg = &f});
    run_until_kid(&f, &kr, "a1");
    assert_int_equal(f.fetches, 1);
    assert_int_equal(f.announced, 1); /* the first set is new too */
    assert_string_equal(f.kind, "merchant");
    assert_string_equal(f.owner, "m");
    assert_string_equal(f.kid, "a1");
    assert_false(f.was_installed); /* announced before a reader could see it */
    assert_null(jwks_remote_missing_in(&ring, 1));

    /* Rotation: an unknown kid wakes the fetcher, which refetches and announces the new set. */
    free(f.body);
    f.body = jwks_text("a2", &k2);
    assert_null(keyring_find(&kr, "m", "a2"));
    run_until_kid(&f, &kr, "a2");
    assert_int_equal(f.fetches, 2);
    assert_int_equal(f.announced, 2);
    assert_string_equal(f.kid, "a2");
    assert_false(f.was_installed);

    /* A reload to a new ring with the same slot: seeded, no fetch, nothing announced. */
    struct keyring kr2 = {0};
    keyring_add_remote(&kr2, "m", uri, NULL);
    struct jwks_remote_ring ring2 = {"merchant", &kr2};
    jwks_remote_reload(r, &ring2, 1);
    keyring_clear(&kr); /* the fetcher no longer holds the old ring */
    assert_non_null(keyring_find(&kr2, "m", "a2"));
    assert_null(jwks_remote_missing_in(&ring2, 1));
    assert_int_equal(event_base_loop(f.base, EVLOOP_NONBLOCK), 0);
    assert_int_equal(f.fetches, 2);
    assert_int_equal(f.announced, 2);

    jwks_remote_free(r);
    keyring_clear(&kr2);
    evhttp_free(http);
    event_base_free(f.base);
    free(f.body);
    free(uri);
    jwk_clear(&k1);
    jwk_clear(&k2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_max_age),
        cmocka_unit_test(test_uri),
        cmocka_unit_test(test_remote_slot),
        cmocka_unit_test(test_fetcher_over_a_keyring),
    };
    return cmocka_run_group_tests_name("jwks_remote", tests, NULL, NULL);
}
