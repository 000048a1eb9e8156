/*
 * jwks_remote: remote key sets (`jwks_uri`, SPEC §7) for issuers and merchants.
 *
 * The fetcher runs on one event base: the gateway's main thread's (admin listener, signals), never
 * a worker's; the wallet's one loop. It serves keyrings (struct jwks_remote_ring), not a program's
 * configuration, so that both programs use it (mandate-wallet links libgateway.a for it):
 * each fetch is a non-blocking HTTP/1.1 GET on a bufferevent (plain, to a loopback address only,
 * or TLS verified against the system store or `jwks_ca_file`), with the name resolved by evdns.
 * An answer must be a 200 with a valid JWKS of at most 64 KiB, complete within 2 s of the start;
 * anything else is an error that keeps the last good set. The head is parsed by http_parse
 * (hp_parse_response, the chunked decoder): there is no second HTTP parser.
 *
 * Schedule: every set is fetched at start; after a success, again after its Cache-Control max-age
 * (bounded to 60 s .. 24 h, 1 h when absent); after a failure, again after 1, 2, 4 .. 60 s. A
 * worker that meets an unknown kid calls keyring_miss (through jwks_remote_unknown_key): the slot
 * is flagged and the fetcher woken (event_active, thread-safe); the fetcher refetches at once
 * unless it already refetched that set for an unknown kid in the last 30 s (the start-up fetch
 * and scheduled refreshes do not count) or a fetch is in flight. The request itself does not wait:
 * it gets mandate_unknown_key, and a retry after the refetch finds the key.
 *
 * Sets live in the keyrings (core/jwk.h: an atomic pointer per slot, every set kept until the
 * ring is cleared). A reload hands the fetcher the new rings: slots with the same kind, owner, uri
 * and CA file are seeded with the current set and keep their schedule, so a SIGHUP never makes a
 * known issuer unavailable. A new set is announced (jwks_remote_opts.on_new) before it is
 * installed: the gateway stores it in the audit log as key-set evidence.
 */
#ifndef GATEWAY_JWKS_REMOTE_H
#define GATEWAY_JWKS_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/code.h"
#include "core/jwk.h"

struct cfg;
struct event_base;
struct config;
struct jwks_remote;

#define JWKS_REMOTE_MAX_BYTES     (64 * 1024) /* a larger answer is an error */
#define JWKS_REMOTE_TIMEOUT_MS    2000        /* a fetch not complete by then is an error */
#define JWKS_REMOTE_MIN_AGE_S     60
#define JWKS_REMOTE_MAX_AGE_S     86400
#define JWKS_REMOTE_DEFAULT_AGE_S 3600
#define JWKS_REMOTE_KID_EVERY_S   30 /* at most one unknown-kid refetch per set per this */
#define JWKS_REMOTE_RETRY_MAX_S   60 /* the longest wait before retrying a failed fetch */

/** A parsed jwks_uri. */
struct jwks_uri {
    bool tls;       /* https:// */
    char *host;     /* without brackets */
    int port;       /* 443 or 80 when absent */
    char *hostport; /* for the Host header: host, [v6] and :port when not the default */
    char *target;   /* path and query, "/" when absent */
};

/**
 * Parse uri: "https://host[:port][/path[?query]]", or "http://" to a loopback address literal
 * (127.0.0.0/8 or ::1) only. No user info, no fragment, no whitespace or control bytes. Returns 0,
 * or -1 with *err (caller frees) saying why.
 */
int jwks_uri_parse(const char *uri, struct jwks_uri *out, char **err) MUST_CHECK;
/** Free what jwks_uri_parse allocated. */
void jwks_uri_clear(struct jwks_uri *u);

/**
 * The refresh delay in seconds from the Cache-Control field values v[0..n) (every Cache-Control
 * line of the answer): max-age (RFC 9111 §5.2.2.1, a token or quoted digits, case-insensitive;
 * the first one wins) bounded to [JWKS_REMOTE_MIN_AGE_S, JWKS_REMOTE_MAX_AGE_S]; no-store and
 * no-cache count as 0 (so the minimum); JWKS_REMOTE_DEFAULT_AGE_S when there is no max-age.
 */
int64_t jwks_max_age(const char *const *v, const size_t *len, size_t n);

/** A keyring the fetcher serves, and what its owners are called in logs and /readyz. */
struct jwks_remote_ring {
    const char *kind; /* "issuer", "merchant": static */
    struct keyring *ring;
};

/**
 * A fetched set that differs from the slot's current one (its first set included) is about to
 * be installed: called on the fetcher's base, before any reader can see next (the gateway logs
 * the set as audit evidence before a decision can be made with it). slot is the ring's slot of
 * owner; next is owned by the fetcher.
 */
typedef void jwks_remote_new_set_fn(void *arg, const char *kind, const char *owner,
                                    const struct jwks_remote_slot *slot, const struct jwks *next);

struct jwks_remote_opts {
    const char *user_agent;         /* the User-Agent of each fetch; NULL: "mandate" */
    jwks_remote_new_set_fn *on_new; /* NULL: nobody is told */
    void *arg;
};

/**
 * Start fetching every remote set of rings[0..n) on base (the gateway's main thread, before the
 * workers start; the wallet's one loop). The rings (and their slots) must stay alive until the
 * next jwks_remote_reload or jwks_remote_free; the fetcher keeps no pointer to rings itself.
 * opts is copied (NULL: none). Never NULL (with no remote sets it does nothing).
 */
struct jwks_remote *jwks_remote_start(struct event_base *base, const struct jwks_remote_ring *rings,
                                      size_t n, const struct jwks_remote_opts *opts);
/**
 * A reload: call on the fetcher's thread with the new rings BEFORE any reader can use them.
 * Slots with the same kind, owner, uri and CA file are seeded with their current set and keep
 * their schedule (no callback: the set is not new); new ones are fetched now. After this the
 * previous rings may be freed.
 */
void jwks_remote_reload(struct jwks_remote *r, const struct jwks_remote_ring *rings, size_t n);
/** Stop (after the workers are joined: they may still wake the fetcher until then). NULL: no-op. */
void jwks_remote_free(struct jwks_remote *r);

/** The gateway's two rings: {"issuer", &conf->issuers}, {"merchant", &conf->merchant_keys}. */
size_t jwks_remote_config_rings(struct config *conf, struct jwks_remote_ring out[2]);

/**
 * The request path, any thread: mandate_verify (or the cart check) returned
 * CODE_MANDATE_UNKNOWN_KEY for a token issued by iss, looked up in ring (&conf->issuers or
 * &conf->merchant_keys). Returns CODE_UNAVAILABLE (503) when iss has a remote set not fetched yet,
 * else CODE_MANDATE_UNKNOWN_KEY, having asked for a refetch when iss's set is remote.
 */
enum code jwks_remote_unknown_key(const struct keyring *ring, const char *iss);
/**
 * For /readyz: NULL when every remote set of rings[0..n) has keys, else a new string naming those
 * without, e.g. "no keys fetched yet for issuer wallet-1, merchant lux-hotels" (caller frees).
 */
char *jwks_remote_missing_in(const struct jwks_remote_ring *rings, size_t n);
/** jwks_remote_missing_in for the gateway's configuration (issuers, then merchants). */
char *jwks_remote_missing(const struct config *conf);
/** Is every remote set of conf fetched? */
bool jwks_remote_ready(const struct config *conf);

/**
 * A key set inside obj at path for owner id (SPEC §7), the configuration rule both programs
 * share: exactly one of `jwks_file` (loaded now) and `jwks_uri` (parsed now, added to ring as a
 * remote slot with no keys yet), `jwks_ca_file` only with an https:// jwks_uri (loaded now, so
 * that --check-config proves it). Errors go to c naming their path; nothing is added on error or
 * when id is NULL.
 */
void jwks_remote_load_config(struct cfg *c, const char *path, const json_t *obj, const char *id,
                             struct keyring *ring);

#endif
