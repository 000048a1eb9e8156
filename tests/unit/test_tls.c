/*
 * Unit tests for gateway/tls: handshakes between our client and server contexts over an in-memory
 * BIO pair (no network), with certificates made at run time by the openssl command line (P-256
 * keys in a temporary directory; no key is committed).
 */
#include "testkit.h"

#include <pthread.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "gateway/tls.h"

static char *dir;

/* A file name in the temporary directory (static buffer, one at a time per expression). */
static const char *path_of(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
    return buf[i];
}

static void sh(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd = xvasprintf(fmt, ap);
    va_end(ap);
    char *full = xasprintf("cd '%s' && { %s; } >/dev/null 2>&1 </dev/null", dir, cmd);
    if (system(full) != 0) {
        fprintf(stderr, "failed: %s\n", cmd);
        abort();
    }
    free(full);
    free(cmd);
}

#define KEYGEN "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256"

static int setup(void **state)
{
    (void)state;
    dir = tk_tmpdir();
    free(tk_write(dir, "server.ext",
                  "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                  "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"));
    free(tk_write(dir, "client.ext", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n"));
    free(tk_write(dir, "garbage.pem", "this is not PEM\n"));
    /* -config /dev/null: no extensions from the system's openssl.cnf, only ours. */
    const char *ca_ext = "-addext basicConstraints=critical,CA:TRUE "
                         "-addext keyUsage=critical,keyCertSign,cRLSign";
    sh(KEYGEN " -out ca.key && openssl req -config /dev/null -x509 -new -key ca.key -days 2 "
              "-subj '/CN=Test CA' %s -out ca.pem",
       ca_ext);
    sh(KEYGEN " -out other.key && openssl req -config /dev/null -x509 -new -key other.key -days 2 "
              "-subj '/CN=Other CA' %s -out other.pem",
       ca_ext);
    sh(KEYGEN " -out server.key && openssl req -config /dev/null -new -key server.key "
              "-subj '/CN=gateway' -out server.csr && openssl x509 -req -in server.csr "
              "-CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext "
              "-out server.pem");
    sh(KEYGEN " -out client.key && openssl req -config /dev/null -new -key client.key "
              "-subj '/C=FR/O=Agents, Inc/CN=agent-7' -out client.csr && openssl x509 -req "
              "-in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
              "-extfile client.ext -out client.pem");
    /* A chain file: leaf then CA, as a cert_file often is. */
    sh("cat server.pem ca.pem > chain.pem");
    sh("openssl pkey -in server.key -aes128 -passout pass:secret -out encrypted.key");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tk_rmdir(dir);
    return 0;
}

/* 1 done, -1 failed, 0 still waiting. */
static int step(SSL *ssl)
{
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 1;
    int e = SSL_get_error(ssl, r);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

struct hs {
    SSL *c, *s;
    int client, server; /* 1 ok, -1 failed */
};

/*
 * Handshake c with s over a BIO pair. In TLS 1.3 a client finishes before the server has judged
 * its certificate, so after both sides stop we let the client read once: a refusal arrives as an
 * alert, and counts as the client failing too.
 */
static struct hs handshake(SSL *c, SSL *s)
{
    struct hs h = {c, s, 0, 0};
    BIO *bc, *bs;
    assert_int_equal(BIO_new_bio_pair(&bc, 0, &bs, 0), 1);
    SSL_set_bio(c, bc, bc);
    SSL_set_bio(s, bs, bs);
    for (int i = 0; i < 50 && (h.client == 0 || h.server == 0); i++) {
        if (h.client == 0)
            h.client = step(c);
        if (h.server == 0)
            h.server = step(s);
        if (h.client < 0 || h.server < 0)
            break;
    }
    /* Let the failing side's alert reach the other one. */
    if (h.client < 0 && h.server == 0)
        h.server = step(s) < 0 ? -1 : 0;
    if (h.server < 0 && h.client >= 0) {
        char b;
        int r = SSL_read(c, &b, 1);
        if (r <= 0 && SSL_get_error(c, r) != SSL_ERROR_WANT_READ)
            h.client = -1;
    }
    ERR_clear_error();
    return h;
}

static void hs_free(struct hs *h)
{
    SSL_free(h->c);
    SSL_free(h->s);
}

static struct tls_server *server(const char *ca, const char *min)
{
    char *err = NULL;
    struct tls_server *t =
        tls_server_new(path_of("chain.pem"), path_of("server.key"), ca, min, &err);
    if (!t)
        fail_msg("tls_server_new: %s", err);
    return t;
}

static struct tls_client *client(const char *ca)
{
    char *err = NULL;
    struct tls_client *t = tls_client_new(ca, &err);
    if (!t)
        fail_msg("tls_client_new: %s", err);
    return t;
}

static struct hs connect_to(struct tls_server *ts, struct tls_client *tc, const char *host)
{
    SSL *c = tls_client_ssl(tc, host);
    SSL *s = tls_server_ssl(ts);
    assert_non_null(c);
    assert_non_null(s);
    return handshake(c, s);
}

static void test_right_ca(void **state)
{
    (void)state;
    struct tls_server *ts = server(NULL, NULL);
    struct tls_client *tc = client(path_of("ca.pem"));

    struct hs h = connect_to(ts, tc, "127.0.0.1");
    assert_int_equal(h.client, 1);
    assert_int_equal(h.server, 1);
    assert_int_equal(SSL_version(h.c), TLS1_3_VERSION);
    assert_null(tls_verify_error(h.c));
    /* An IP literal is not sent as SNI. */
    assert_null(SSL_get_servername(h.s, TLSEXT_NAMETYPE_host_name));
    char subj[256];
    assert_int_equal(tls_peer_subject(h.s, subj, sizeof(subj)), 0);
    assert_string_equal(subj, ""); /* no client certificate asked for */

    /*
     * TCP closed without close_notify: the server reads a plain EOF, the upstream client an
     * error it can recognise (a body read until the close would be truncated).
     */
    char b;
    assert_int_equal(BIO_shutdown_wr(SSL_get_wbio(h.c)), 1);
    assert_int_equal(BIO_shutdown_wr(SSL_get_wbio(h.s)), 1);
    int r = SSL_read(h.s, &b, 1);
    assert_int_equal(SSL_get_error(h.s, r), SSL_ERROR_ZERO_RETURN);
    r = SSL_read(h.c, &b, 1);
    assert_int_equal(SSL_get_error(h.c, r), SSL_ERROR_SSL);
    /* The alert the client then tries to send may queue "broken pipe" after it. */
    int eof = 0;
    for (unsigned long e; (e = ERR_get_error());)
        eof |= tls_error_is_unexpected_eof(e);
    assert_true(eof);
    hs_free(&h);

    h = connect_to(ts, tc, "localhost");
    assert_int_equal(h.client, 1);
    assert_int_equal(h.server, 1);
    assert_string_equal(SSL_get_servername(h.s, TLSEXT_NAMETYPE_host_name), "localhost");
    hs_free(&h);

    tls_client_free(tc);
    tls_server_unref(ts);
}

static void test_wrong_ca(void **state)
{
    (void)state;
    struct tls_server *ts = server(NULL, NULL);
    struct tls_client *tc = client(path_of("other.pem"));
    struct hs h = connect_to(ts, tc, "localhost");
    assert_int_equal(h.client, -1);
    assert_int_equal(h.server, -1);
    /* "self-signed certificate in certificate chain": chain.pem carries the real CA. */
    assert_non_null(tls_verify_error(h.c));
    hs_free(&h);
    tls_client_free(tc);
    tls_server_unref(ts);
}

static void test_wrong_host(void **state)
{
    (void)state;
    struct tls_server *ts = server(NULL, NULL);
    struct tls_client *tc = client(path_of("ca.pem"));
    const char *bad[] = {"example.com", "127.0.0.2", "::1", "[::1]", "gateway"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        struct hs h = connect_to(ts, tc, bad[i]);
        if (h.client != -1)
            fail_msg("%s: handshake succeeded", bad[i]);
        assert_non_null(tls_verify_error(h.c));
        hs_free(&h);
    }
    assert_null(tls_client_ssl(tc, ""));
    assert_null(tls_client_ssl(tc, "[localhost]"));
    tls_client_free(tc);
    tls_server_unref(ts);
}

static void test_min_version(void **state)
{
    (void)state;
    struct tls_client *tc = client(path_of("ca.pem"));

    struct tls_server *ts = server(NULL, "1.3");
    SSL *c = tls_client_ssl(tc, "localhost");
    assert_int_equal(SSL_set_max_proto_version(c, TLS1_2_VERSION), 1);
    struct hs h = handshake(c, tls_server_ssl(ts));
    assert_int_equal(h.server, -1);
    assert_int_equal(h.client, -1);
    hs_free(&h);
    tls_server_unref(ts);

    /* The default minimum, 1.2, lets it in (and ALPN works over 1.2 too). */
    ts = server(NULL, "1.2");
    c = tls_client_ssl(tc, "localhost");
    assert_int_equal(SSL_set_max_proto_version(c, TLS1_2_VERSION), 1);
    h = handshake(c, tls_server_ssl(ts));
    assert_int_equal(h.server, 1);
    assert_int_equal(h.client, 1);
    assert_int_equal(SSL_version(h.s), TLS1_2_VERSION);
    const unsigned char *p;
    unsigned int n;
    SSL_get0_alpn_selected(h.s, &p, &n);
    assert_int_equal(n, 8);
    assert_memory_equal(p, "http/1.1", 8);
    hs_free(&h);
    tls_server_unref(ts);

    tls_client_free(tc);
}

static void test_client_cert(void **state)
{
    (void)state;
    struct tls_server *ts = server(path_of("ca.pem"), NULL);
    struct tls_client *tc = client(path_of("ca.pem"));

    struct hs h = connect_to(ts, tc, "localhost");
    assert_int_equal(h.server, -1);
    assert_int_equal(h.client, -1);
    hs_free(&h);

    SSL *c = tls_client_ssl(tc, "localhost");
    assert_int_equal(SSL_use_certificate_file(c, path_of("client.pem"), SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_use_PrivateKey_file(c, path_of("client.key"), SSL_FILETYPE_PEM), 1);
    h = handshake(c, tls_server_ssl(ts));
    assert_int_equal(h.server, 1);
    assert_int_equal(h.client, 1);
    char subj[256];
    assert_int_equal(tls_peer_subject(h.s, subj, sizeof(subj)), 0);
    assert_string_equal(subj, "CN=agent-7,O=Agents\\, Inc,C=FR");
    char small[8];
    assert_int_equal(tls_peer_subject(h.s, small, sizeof(small)), -1);
    assert_string_equal(small, "");
    hs_free(&h);

    /* A certificate from another CA is refused. */
    c = tls_client_ssl(tc, "localhost");
    assert_int_equal(SSL_use_certificate_file(c, path_of("other.pem"), SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_use_PrivateKey_file(c, path_of("other.key"), SSL_FILETYPE_PEM), 1);
    h = handshake(c, tls_server_ssl(ts));
    assert_int_equal(h.server, -1);
    hs_free(&h);

    tls_client_free(tc);
    tls_server_unref(ts);
}

static void test_alpn(void **state)
{
    (void)state;
    struct tls_server *ts = server(NULL, NULL);
    struct tls_client *tc = client(path_of("ca.pem"));
    const unsigned char *p;
    unsigned int n;

    struct hs h = connect_to(ts, tc, "localhost");
    assert_int_equal(h.client, 1);
    SSL_get0_alpn_selected(h.c, &p, &n);
    assert_int_equal(n, 8);
    assert_memory_equal(p, "http/1.1", 8);
    hs_free(&h);

    /* h2 and http/1.1 offered: http/1.1. */
    SSL *c = tls_client_ssl(tc, "localhost");
    assert_int_equal(SSL_set_alpn_protos(c, (const unsigned char *)"\x02h2\x08http/1.1", 12), 0);
    h = handshake(c, tls_server_ssl(ts));
    assert_int_equal(h.client, 1);
    SSL_get0_alpn_selected(h.c, &p, &n);
    assert_memory_equal(p, "http/1.1", 8);
    hs_free(&h);

    /* Only h2 offered: refused. */
    c = tls_client_ssl(tc, "localhost");
    assert_int_equal(SSL_set_alpn_protos(c, (const unsigned char *)"\x02h2", 3), 0);
    h = handshake(c, tls_server_ssl(ts));
    assert_int_equal(h.server, -1);
    assert_int_equal(h.client, -1);
    hs_free(&h);

    /* No ALPN at all (curl --no-alpn, old clients): fine, nothing selected. */
    c = tls_client_ssl(tc, "localhost");
    assert_int_equal(SSL_set_alpn_protos(c, NULL, 0), 0);
    h = handshake(c, tls_server_ssl(ts));
    assert_int_equal(h.server, 1);
    SSL_get0_alpn_selected(h.s, &p, &n);
    assert_int_equal(n, 0);
    hs_free(&h);

    tls_client_free(tc);
    tls_server_unref(ts);
}

/*
 * Handshake (with the client certificate when subj is not NULL: the subject the server saw goes
 * there), read the TLS 1.3 tickets, return the client's session.
 */
static SSL_SESSION *session_from(struct tls_server *ts, struct tls_client *tc, SSL_SESSION *reuse,
                                 int *reused, char subj[256])
{
    SSL *c = tls_client_ssl(tc, "localhost");
    if (reuse)
        assert_int_equal(SSL_set_session(c, reuse), 1);
    if (subj) {
        assert_int_equal(SSL_use_certificate_file(c, path_of("client.pem"), SSL_FILETYPE_PEM), 1);
        assert_int_equal(SSL_use_PrivateKey_file(c, path_of("client.key"), SSL_FILETYPE_PEM), 1);
    }
    struct hs h = handshake(c, tls_server_ssl(ts));
    assert_int_equal(h.client, 1);
    assert_int_equal(h.server, 1);
    char b;
    assert_true(SSL_read(c, &b, 1) <= 0); /* processes NewSessionTicket */
    *reused = SSL_session_reused(h.s);
    if (subj)
        assert_int_equal(tls_peer_subject(h.s, subj, 256), 0);
    /*
     * A connection freed without a close_notify marks its session "bad": not resumable. So
     * shut down cleanly, as a bufferevent should (see the report on SSL_shutdown).
     */
    SSL_shutdown(c);
    SSL_shutdown(h.s);
    SSL_SESSION *sess = SSL_get1_session(c);
    hs_free(&h);
    return sess;
}

static void test_tickets(void **state)
{
    (void)state;
    struct tls_server *ts = server(NULL, NULL);
    struct tls_client *tc = client(path_of("ca.pem"));
    int reused;
    SSL_SESSION *sess = session_from(ts, tc, NULL, &reused, NULL);
    assert_false(reused);
    assert_true(SSL_SESSION_is_resumable(sess));
    SSL_SESSION *again = session_from(ts, tc, sess, &reused, NULL);
    assert_true(reused);
    SSL_SESSION_free(again);

    /* A reload builds a new context: new ticket keys, so the old ticket is not accepted. */
    struct tls_server *reloaded = server(NULL, NULL);
    again = session_from(reloaded, tc, sess, &reused, NULL);
    assert_false(reused);
    SSL_SESSION_free(again);
    SSL_SESSION_free(sess);
    tls_server_unref(reloaded);
    tls_server_unref(ts);

    /* A resumed session still knows the client certificate, for the access log. */
    ts = server(path_of("ca.pem"), NULL);
    char subj[256];
    sess = session_from(ts, tc, NULL, &reused, subj);
    assert_false(reused);
    again = session_from(ts, tc, sess, &reused, subj);
    assert_true(reused);
    assert_string_equal(subj, "CN=agent-7,O=Agents\\, Inc,C=FR");
    SSL_SESSION_free(again);
    SSL_SESSION_free(sess);
    tls_server_unref(ts);
    tls_client_free(tc);
}

static void expect_error(const char *cert, const char *key, const char *ca, const char *min,
                         const char *want1, const char *want2)
{
    char *err = NULL;
    struct tls_server *t = tls_server_new(cert, key, ca, min, &err);
    assert_null(t);
    assert_non_null(err);
    if (!strstr(err, want1) || (want2 && !strstr(err, want2)))
        fail_msg("error \"%s\" lacks \"%s\" or \"%s\"", err, want1, want2 ? want2 : "");
    free(err);
}

static void test_errors(void **state)
{
    (void)state;
    char *cert = xstrdup(path_of("chain.pem")), *key = xstrdup(path_of("server.key"));
    char *missing = xstrdup(path_of("missing.pem")), *garbage = xstrdup(path_of("garbage.pem"));

    char *want = xasprintf("%s: cannot read certificate: No such file or directory", missing);
    expect_error(missing, key, NULL, NULL, want, NULL);
    free(want);
    want = xasprintf("%s: cannot read certificate: no PEM certificate", garbage);
    expect_error(garbage, key, NULL, NULL, want, NULL);
    free(want);
    want = xasprintf("%s: cannot read private key: No such file", missing);
    expect_error(cert, missing, NULL, NULL, want, NULL);
    free(want);
    /* A key file without a key, and an encrypted key: refused, never a password prompt. */
    want = xasprintf("%s: cannot read private key", cert);
    expect_error(cert, cert, NULL, NULL, want, NULL);
    free(want);
    expect_error(cert, path_of("encrypted.key"), NULL, NULL,
                 "encrypted.key: cannot read private key", NULL);
    want = xasprintf("%s: private key does not match the certificate in %s", path_of("client.key"),
                     cert);
    expect_error(cert, path_of("client.key"), NULL, NULL, want, NULL);
    free(want);
    want = xasprintf("%s: cannot read CA file: No such file", missing);
    expect_error(cert, key, missing, NULL, want, NULL);
    free(want);
    want = xasprintf("%s: cannot read CA file: no PEM certificate", garbage);
    expect_error(cert, key, garbage, NULL, want, NULL);
    free(want);
    expect_error(cert, key, NULL, "1.1", "min_version \"1.1\"", "expected \"1.2\" or \"1.3\"");
    expect_error(cert, key, NULL, "", "min_version \"\"", NULL);

    char *err = NULL;
    assert_null(tls_client_new(missing, &err));
    want = xasprintf("%s: cannot read CA file: No such file", missing);
    assert_non_null(strstr(err, want));
    free(want);
    free(err);

    /* The system store loads. */
    err = NULL;
    struct tls_client *tc = tls_client_new(NULL, &err);
    assert_non_null(tc);
    tls_client_free(tc);

    /* A failed handshake's reason, then an empty queue. */
    char buf[128];
    assert_string_equal(tls_error_string(0, buf, sizeof(buf)), "no OpenSSL error");
    ERR_raise(ERR_LIB_SSL, SSL_R_CERTIFICATE_VERIFY_FAILED);
    assert_string_equal(tls_error_string(0, buf, sizeof(buf)), "certificate verify failed");
    assert_int_equal(ERR_peek_error(), 0);
    assert_string_equal(tls_error_string(SSL_ERROR_SYSCALL, buf, sizeof(buf)),
                        "connection closed or I/O error during TLS");
    assert_true(
        tls_error_is_unexpected_eof(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_UNEXPECTED_EOF_WHILE_READING)));
    assert_false(
        tls_error_is_unexpected_eof(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_CERTIFICATE_VERIFY_FAILED)));

    free(cert);
    free(key);
    free(missing);
    free(garbage);
}

static void *ref_storm(void *arg)
{
    struct tls_server *t = arg;
    for (int i = 0; i < 100000; i++) {
        tls_server_ref(t);
        tls_server_unref(t);
    }
    return NULL;
}

static void test_refcount(void **state)
{
    (void)state;
    long before = tls_server_live();
    struct tls_server *ts = server(NULL, NULL);
    assert_int_equal(tls_server_live(), before + 1);
    struct tls_client *tc = client(path_of("ca.pem"));

    /* A connection takes a reference; then a reload drops the listener's. */
    struct tls_server *conn = tls_server_ref(ts);
    SSL *s = tls_server_ssl(conn);
    tls_server_unref(ts);
    assert_int_equal(tls_server_live(), before + 1);
    struct hs h = handshake(tls_client_ssl(tc, "localhost"), s);
    assert_int_equal(h.server, 1);
    hs_free(&h);
    tls_server_unref(conn); /* the last connection ends */
    assert_int_equal(tls_server_live(), before);
    tls_server_unref(NULL);

    /* Worker threads taking and dropping references at once. */
    ts = server(NULL, NULL);
    pthread_t th[4];
    for (size_t i = 0; i < ARRAY_LEN(th); i++)
        assert_int_equal(pthread_create(&th[i], NULL, ref_storm, ts), 0);
    for (size_t i = 0; i < ARRAY_LEN(th); i++)
        pthread_join(th[i], NULL);
    assert_int_equal(tls_server_live(), before + 1);
    tls_server_unref(ts);
    assert_int_equal(tls_server_live(), before);
    tls_client_free(tc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_right_ca),    cmocka_unit_test(test_wrong_ca),
        cmocka_unit_test(test_wrong_host),  cmocka_unit_test(test_min_version),
        cmocka_unit_test(test_client_cert), cmocka_unit_test(test_alpn),
        cmocka_unit_test(test_tickets),     cmocka_unit_test(test_errors),
        cmocka_unit_test(test_refcount),
    };
    return cmocka_run_group_tests_name("tls", tests, setup, teardown);
}
