/*
 * tls: the OpenSSL contexts of SPEC §5. A server context per listener (certificate chain, key,
 * optional required client certificate, minimum version, ALPN http/1.1 only, session tickets
 * with keys fresh to each context) and a client context for https upstreams (trust store or CA
 * file, peer and host name verification always on). It hands out SSL objects; it does no I/O and
 * knows nothing of libevent: the connection code wraps each SSL in a bufferevent_openssl.
 *
 * Contexts are immutable once built, so worker threads share them without locks. A reload builds
 * a new server context and drops the old one; connections that hold a reference keep it alive.
 */
#ifndef GATEWAY_TLS_H
#define GATEWAY_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "core/util.h"

struct tls_server;
struct tls_client;

/**
 * A server context with the PEM certificate chain in cert_file (leaf first) and the unencrypted
 * PEM private key in key_file; with client_ca_file (not NULL), a client certificate signed by one
 * of its CAs is required. min_version is "1.2" (also when NULL) or "1.3". On failure returns NULL
 * and sets *err (caller frees) to "<file>: <what>", e.g. "/etc/gw/cert.pem: cannot read
 * certificate: No such file or directory", or "min_version \"1.1\": expected \"1.2\" or \"1.3\"".
 * The result holds one reference. Blocks on file reads.
 */
struct tls_server *tls_server_new(const char *cert_file, const char *key_file,
                                  const char *client_ca_file, const char *min_version,
                                  char **err) MUST_CHECK;
/** Take another reference (thread-safe); returns t. */
struct tls_server *tls_server_ref(struct tls_server *t);
/** Drop a reference (thread-safe); the last one frees. NULL is a no-op. */
void tls_server_unref(struct tls_server *t);
/**
 * A new SSL in accept state for an accepted connection; the caller owns it (SSL_free, or a
 * bufferevent_openssl with BEV_OPT_CLOSE_ON_FREE). The SSL keeps the OpenSSL context alive by
 * itself, but connections should still hold a tls_server reference. NULL on failure.
 */
SSL *tls_server_ssl(struct tls_server *t) MUST_CHECK;
/** How many server contexts are alive in the process (for tests and metrics after a reload). */
long tls_server_live(void);

/**
 * A client context for https upstreams: trusts the system store when ca_file is NULL, else only
 * the PEM certificates in ca_file. Peer verification always on, TLS 1.2 minimum, ALPN http/1.1
 * offered. NULL with *err ("<file>: <what>", caller frees) on failure.
 */
struct tls_client *tls_client_new(const char *ca_file, char **err) MUST_CHECK;
/** Free; SSLs made from it stay valid. NULL is a no-op. */
void tls_client_free(struct tls_client *t);
/**
 * A new SSL in connect state to host (a DNS name, or an IPv4 or IPv6 literal, with or without
 * brackets). A name is sent as SNI and must match a DNS SAN of the certificate (no partial
 * wildcards); an IP literal is sent without SNI and must match an IP SAN. Caller owns the SSL.
 * NULL on failure (also for an empty host).
 */
SSL *tls_client_ssl(struct tls_client *t, const char *host) MUST_CHECK;

/**
 * The peer certificate's subject as an RFC 2253 string (XN_FLAG_RFC2253: bytes outside ASCII and
 * controls escaped) into out; "" when there is no peer certificate. Returns 0, or -1 when it does
 * not fit in cap bytes (out is then "").
 */
int tls_peer_subject(SSL *ssl, char *out, size_t cap) MUST_CHECK;
/**
 * Text of OpenSSL error e into buf and returns buf. With e == 0, the last error queued on this
 * thread, clearing the queue ("no OpenSSL error" when it is empty). For a bufferevent_openssl's
 * BEV_EVENT_ERROR pass the first bufferevent_get_openssl_error(bev): it pops the most recent
 * error first; the last one it pops is SSL_get_error()'s code, which this also names.
 */
const char *tls_error_string(unsigned long e, char *buf, size_t cap);
/**
 * True when e says the peer closed TCP without a TLS close_notify. Server contexts already report
 * that as a plain EOF; on an upstream it is BEV_EVENT_ERROR with this error, which means a
 * truncated body when the body was to be read until the close, and is harmless otherwise.
 */
int tls_error_is_unexpected_eof(unsigned long e);
/**
 * Why the peer's certificate was refused (e.g. "hostname mismatch", "unable to get local issuer
 * certificate"), or NULL when it was not: for the log line of a failed upstream handshake.
 */
const char *tls_verify_error(const SSL *ssl);

#endif
