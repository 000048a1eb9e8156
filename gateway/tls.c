/*
 * tls: builds SSL_CTXs once and hands out SSLs. Files are read into memory by us, not by
 * OpenSSL's *_file helpers, so that every failure names the file and says what was wrong with it,
 * the key is never read through a password prompt (OpenSSL's default callback asks the terminal),
 * and the key's bytes are wiped from our buffer once parsed.
 */
#include "gateway/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#define TLS_PEM_MAX (1024 * 1024)

/* ALPN wire format: length-prefixed protocol names. */
static const unsigned char alpn_http11[] = "\x08http/1.1";
#define ALPN_HTTP11_LEN (sizeof(alpn_http11) - 1)

/*
 * TLS 1.2 suites: forward-secret AEAD only (Mozilla "intermediate"). TLS 1.3 keeps OpenSSL's
 * defaults, which are all AEAD.
 */
static const char tls12_ciphers[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

struct tls_server {
    atomic_long refs;
    SSL_CTX *ctx;
};

struct tls_client {
    SSL_CTX *ctx;
};

static atomic_long servers_live;

const char *tls_error_string(unsigned long e, char *buf, size_t cap)
{
    if (cap == 0)
        return buf;
    if (e == 0) {
        e = ERR_peek_last_error();
        ERR_clear_error();
    }
    if (e == 0) {
        snprintf(buf, cap, "no OpenSSL error");
        return buf;
    }
    /* bufferevent_openssl also queues SSL_get_error()'s result (a small number) as an error. */
    if (e == SSL_ERROR_SSL) {
        snprintf(buf, cap, "TLS protocol error");
        return buf;
    }
    if (e == SSL_ERROR_SYSCALL) {
        snprintf(buf, cap, "connection closed or I/O error during TLS");
        return buf;
    }
    /* "certificate verify failed" reads better in a log than "error:0A000086:SSL routines::". */
    const char *reason = ERR_reason_error_string(e);
    if (reason)
        snprintf(buf, cap, "%s", reason);
    else
        ERR_error_string_n(e, buf, cap);
    return buf;
}

int tls_error_is_unexpected_eof(unsigned long e)
{
    return ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

const char *tls_verify_error(const SSL *ssl)
{
    long v = SSL_get_verify_result(ssl);
    return v == X509_V_OK ? NULL : X509_verify_cert_error_string(v);
}

/* A password callback that refuses: an encrypted key fails instead of prompting on a terminal. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

/* Read path (what it is for the message) into memory; NULL with *err "<path>: cannot read <what>".
 */
static char *slurp(const char *path, const char *what, size_t *len, char **err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err = xasprintf("%s: cannot read %s: %s", path, what, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
        if (n > TLS_PEM_MAX) {
            *err = xasprintf("%s: cannot read %s: larger than %d bytes", path, what, TLS_PEM_MAX);
            goto fail;
        }
        if (n == cap) {
            /* Grow by hand so that no stale copy of a key is left behind in freed memory. */
            char *bigger = xmalloc(cap * 2);
            memcpy(bigger, buf, n);
            OPENSSL_cleanse(buf, cap);
            free(buf);
            buf = bigger;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        *err = xasprintf("%s: cannot read %s: %s", path, what, strerror(errno));
        goto fail;
    }
    fclose(f);
    *len = n;
    return buf;
fail:
    fclose(f);
    OPENSSL_cleanse(buf, cap);
    free(buf);
    return NULL;
}

static void wipe_free(char *buf, size_t len)
{
    if (!buf)
        return;
    OPENSSL_cleanse(buf, len);
    free(buf);
}

/* True when the error left by the last PEM read just means "no more PEM blocks". */
static int pem_at_end(void)
{
    unsigned long e = ERR_peek_last_error();
    return ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

/* Leaf then chain from cert_file into ctx. */
static int load_chain(SSL_CTX *ctx, const char *cert_file, char **err)
{
    int ret = -1;
    char why[256];
    size_t len;
    BIO *bio = NULL;
    X509 *x = NULL;
    char *pem = slurp(cert_file, "certificate", &len, err);
    if (!pem)
        return -1;
    bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) {
        *err = xasprintf("%s: cannot read certificate: out of memory", cert_file);
        goto out;
    }
    ERR_clear_error();
    x = PEM_read_bio_X509_AUX(bio, NULL, no_password, NULL);
    if (!x) {
        *err = xasprintf("%s: cannot read certificate: %s", cert_file,
                         pem_at_end() ? "no PEM certificate in the file"
                                      : tls_error_string(0, why, sizeof(why)));
        goto out;
    }
    if (SSL_CTX_use_certificate(ctx, x) != 1) {
        /* E.g. an RSA key below the security level's 2048 bits. */
        *err = xasprintf("%s: certificate refused: %s", cert_file,
                         tls_error_string(0, why, sizeof(why)));
        goto out;
    }
    X509_free(x);
    x = NULL;
    for (int i = 1;; i++) {
        ERR_clear_error();
        x = PEM_read_bio_X509(bio, NULL, no_password, NULL);
        if (!x) {
            if (pem_at_end())
                break;
            *err = xasprintf("%s: cannot read certificate %d of the chain: %s", cert_file, i + 1,
                             tls_error_string(0, why, sizeof(why)));
            goto out;
        }
        if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
            *err = xasprintf("%s: chain certificate %d refused: %s", cert_file, i + 1,
                             tls_error_string(0, why, sizeof(why)));
            goto out;
        }
        x = NULL; /* the context owns it now */
    }
    ERR_clear_error();
    ret = 0;
out:
    X509_free(x);
    BIO_free(bio);
    free(pem);
    return ret;
}

static int load_key(SSL_CTX *ctx, const char *key_file, const char *cert_file, char **err)
{
    int ret = -1;
    char why[256];
    size_t len;
    BIO *bio = NULL;
    EVP_PKEY *key = NULL;
    char *pem = slurp(key_file, "private key", &len, err);
    if (!pem)
        return -1;
    bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) {
        *err = xasprintf("%s: cannot read private key: out of memory", key_file);
        goto out;
    }
    ERR_clear_error();
    key = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
    if (!key) {
        /* OpenSSL's reasons never quote the key, so they are safe to show. */
        *err = xasprintf("%s: cannot read private key: %s", key_file,
                         pem_at_end() ? "no PEM private key in the file (an encrypted key is "
                                        "not supported)"
                                      : tls_error_string(0, why, sizeof(why)));
        goto out;
    }
    /*
     * Check against the leaf ourselves: SSL_CTX_use_PrivateKey only compares keys of the same
     * type (an EC key with an RSA certificate would be stored beside it, unchecked).
     */
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    if (!leaf || X509_check_private_key(leaf, key) != 1) {
        ERR_clear_error();
        *err =
            xasprintf("%s: private key does not match the certificate in %s", key_file, cert_file);
        goto out;
    }
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        *err = xasprintf("%s: private key refused: %s", key_file,
                         tls_error_string(0, why, sizeof(why)));
        goto out;
    }
    ret = 0;
out:
    EVP_PKEY_free(key);
    BIO_free(bio);
    wipe_free(pem, len);
    return ret;
}

/* Trust the CA certificates of ca_file in ctx; names them to clients when for_clients. */
static int load_cas(SSL_CTX *ctx, const char *ca_file, int for_clients, char **err)
{
    int ret = -1;
    char why[256];
    size_t len;
    BIO *bio = NULL;
    STACK_OF(X509_INFO) *infos = NULL;
    STACK_OF(X509_NAME) *names = NULL;
    char *pem = slurp(ca_file, "CA file", &len, err);
    if (!pem)
        return -1;
    bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) {
        *err = xasprintf("%s: cannot read CA file: out of memory", ca_file);
        goto out;
    }
    ERR_clear_error();
    infos = PEM_X509_INFO_read_bio(bio, NULL, no_password, NULL);
    if (!infos) {
        *err = xasprintf("%s: cannot read CA file: %s", ca_file,
                         tls_error_string(0, why, sizeof(why)));
        goto out;
    }
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    names = sk_X509_NAME_new_null();
    if (!names) {
        *err = xasprintf("%s: cannot read CA file: out of memory", ca_file);
        goto out;
    }
    int n = 0;
    for (int i = 0; i < sk_X509_INFO_num(infos); i++) {
        X509 *x = sk_X509_INFO_value(infos, i)->x509;
        if (!x)
            continue;
        if (X509_STORE_add_cert(store, x) != 1) {
            *err = xasprintf("%s: CA certificate %d refused: %s", ca_file, n + 1,
                             tls_error_string(0, why, sizeof(why)));
            goto out;
        }
        X509_NAME *name = X509_NAME_dup(X509_get_subject_name(x));
        if (!name || !sk_X509_NAME_push(names, name)) {
            X509_NAME_free(name);
            *err = xasprintf("%s: cannot read CA file: out of memory", ca_file);
            goto out;
        }
        n++;
    }
    if (n == 0) {
        *err = xasprintf("%s: cannot read CA file: no PEM certificate in the file", ca_file);
        goto out;
    }
    if (for_clients) {
        SSL_CTX_set_client_CA_list(ctx, names); /* takes ownership */
        names = NULL;
    }
    ret = 0;
out:
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    BIO_free(bio);
    free(pem);
    return ret;
}

/* Settings common to both sides. */
static int ctx_common(SSL_CTX *ctx, int min_version)
{
    /*
     * No renegotiation (a client-triggered CPU cost and a history of bugs), no compression
     * (CRIME); OpenSSL 3 defaults to the latter but we say so.
     */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    /* Idle keep-alive connections then hold no 34 KB read/write buffers. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return SSL_CTX_set_min_proto_version(ctx, min_version) == 1 &&
                   SSL_CTX_set_cipher_list(ctx, tls12_ciphers) == 1
               ? 0
               : -1;
}

/* A client offering ALPN must offer http/1.1 (SPEC §5) or http/1.0 (curl --http1.0 offers only
 * that, and the listener speaks it): anything else (h2 alone) is refused at the handshake. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char ours[] = "\x08http/1.1\x08http/1.0";
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

struct tls_server *tls_server_new(const char *cert_file, const char *key_file,
                                  const char *client_ca_file, const char *min_version, char **err)
{
    static const unsigned char sid_ctx[] = "mandate-gateway";
    char why[256];
    int version;
    SSL_CTX *ctx = NULL;

    if (!min_version || strcmp(min_version, "1.2") == 0) {
        version = TLS1_2_VERSION;
    } else if (strcmp(min_version, "1.3") == 0) {
        version = TLS1_3_VERSION;
    } else {
        *err = xasprintf("min_version \"%s\": expected \"1.2\" or \"1.3\"", min_version);
        return NULL;
    }
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || ctx_common(ctx, version) != 0) {
        *err = xasprintf("cannot create a TLS context: %s", tls_error_string(0, why, sizeof(why)));
        goto fail;
    }
    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    /*
     * Our cipher order, not the client's: the list above is already best first.
     * IGNORE_UNEXPECTED_EOF: a client that closes TCP without close_notify (most do) reads as
     * a plain EOF. OpenSSL 3 otherwise reports "unexpected eof while reading", which libevent
     * 2.1 turns into BEV_EVENT_ERROR even with allow_dirty_shutdown. Safe here because a
     * request is never delimited by the close: HTTP framing detects truncation. Upstream
     * contexts do not set it (a response body may be read until close).
     */
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
    /*
     * Session tickets stay on (OpenSSL's default): SSL_CTX_new draws random ticket keys for each
     * context, so a reload, which builds a new context, rotates them. The session id context is
     * required for resumption once client certificates are verified, harmless otherwise.
     */
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);

    if (load_chain(ctx, cert_file, err) != 0 || load_key(ctx, key_file, cert_file, err) != 0)
        goto fail;
    if (client_ca_file) {
        if (load_cas(ctx, client_ca_file, 1, err) != 0)
            goto fail;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }

    struct tls_server *t = xcalloc(1, sizeof(*t));
    atomic_init(&t->refs, 1);
    t->ctx = ctx;
    atomic_fetch_add(&servers_live, 1);
    return t;
fail:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

struct tls_server *tls_server_ref(struct tls_server *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void tls_server_unref(struct tls_server *t)
{
    if (!t)
        return;
    /* acq_rel: the thread that frees must see every other thread's use of t finished. */
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
    atomic_fetch_sub(&servers_live, 1);
}

long tls_server_live(void)
{
    return atomic_load(&servers_live);
}

SSL *tls_server_ssl(struct tls_server *t)
{
    SSL *ssl = SSL_new(t->ctx);
    if (ssl)
        SSL_set_accept_state(ssl);
    return ssl;
}

struct tls_client *tls_client_new(const char *ca_file, char **err)
{
    char why[256];
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || ctx_common(ctx, TLS1_2_VERSION) != 0) {
        *err = xasprintf("cannot create a TLS context: %s", tls_error_string(0, why, sizeof(why)));
        goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* Note the inverted convention: 0 is success here. */
    if (SSL_CTX_set_alpn_protos(ctx, alpn_http11, ALPN_HTTP11_LEN) != 0) {
        *err = xasprintf("cannot set ALPN: %s", tls_error_string(0, why, sizeof(why)));
        goto fail;
    }
    if (ca_file) {
        if (load_cas(ctx, ca_file, 0, err) != 0)
            goto fail;
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        *err = xasprintf("cannot load the system trust store: %s",
                         tls_error_string(0, why, sizeof(why)));
        goto fail;
    }
    struct tls_client *t = xcalloc(1, sizeof(*t));
    t->ctx = ctx;
    return t;
fail:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

void tls_client_free(struct tls_client *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

SSL *tls_client_ssl(struct tls_client *t, const char *host)
{
    char ip[INET6_ADDRSTRLEN + 1];
    unsigned char bin[sizeof(struct in6_addr)];
    size_t n = host ? strlen(host) : 0;
    if (n == 0)
        return NULL;
    /* "[::1]" as it appears in a URL. */
    const char *lit = host;
    if (host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(ip)) {
        memcpy(ip, host + 1, n - 2);
        ip[n - 2] = '\0';
        lit = ip;
    }
    int is_ip = inet_pton(AF_INET, lit, bin) == 1 || inet_pton(AF_INET6, lit, bin) == 1;
    if (lit != host && !is_ip)
        return NULL;

    SSL *ssl = SSL_new(t->ctx);
    if (!ssl)
        return NULL;
    SSL_set_connect_state(ssl);
    if (is_ip) {
        /* No SNI: RFC 6066 forbids IP literals in server_name. */
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), lit) != 1)
            goto fail;
    } else {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1)
            goto fail;
    }
    return ssl;
fail:
    SSL_free(ssl);
    ERR_clear_error();
    return NULL;
}

int tls_peer_subject(SSL *ssl, char *out, size_t cap)
{
    int ret = -1;
    if (cap == 0)
        return -1;
    out[0] = '\0';
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (!peer)
        return 0;
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio)
        return -1;
    char *text;
    if (X509_NAME_print_ex(bio, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) < 0)
        goto out;
    long len = BIO_get_mem_data(bio, &text);
    if (len < 0 || (size_t)len >= cap)
        goto out;
    memcpy(out, text, (size_t)len);
    out[len] = '\0';
    ret = 0;
out:
    BIO_free(bio);
    return ret;
}
