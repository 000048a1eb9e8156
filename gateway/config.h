/*
 * config: the gateway's configuration (SPEC §2.4), loaded and validated in one pass. Every
 * error is collected with its JSON path; a configuration with any error is never used. A loaded
 * configuration is immutable and shared read-only by all workers; SIGHUP swaps in a new one.
 */
#ifndef GATEWAY_CONFIG_H
#define GATEWAY_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <sys/socket.h>

#include "core/cfg.h"
#include "core/jwk.h"
#include "core/mandate.h"
#include "gateway/route.h"

struct tls_server;
struct tls_client;

struct merchant {
    char *id;
    char *upstream_host;
    int upstream_port;
    char *upstream_hostport;               /* "host:port", for Host and Forwarded */
    struct sockaddr_storage upstream_addr; /* resolved at load */
    int upstream_addrlen;
    bool upstream_tls;                   /* https:// */
    struct tls_client *upstream_tls_ctx; /* with upstream_tls: CA file or the system store */
    bool require_pop;                    /* every mandate for it must carry cnf (SPEC §7) */
    bool has_cart_key;
    struct jwk cart_key; /* signs the carts of sign_cart routes */
    int64_t cart_ttl_s;  /* their price lock */
};

enum state_backend { STATE_LOCAL, STATE_POSTGRES };

struct config {
    _Atomic int refs; /* held by the server and by every request begun under it */
    char *path;
    unsigned char sha256[32]; /* of the canonical JSON (sorted, compact), for the config entry */
    char *listen_host;
    int listen_port;
    int workers;
    char *database;
    int log_level; /* enum log_level */
    bool has_admin;
    char *admin_host;
    int admin_port;
    unsigned char admin_token_sha256[32];
    bool has_decision; /* the decision listener (SPEC §8), bound at start */
    char *decision_host;
    int decision_port;
    unsigned char decision_token_sha256[32];
    char *audit_origin;
    struct jwk checkpoint_key;
    int64_t checkpoint_every;
    int64_t snapshot_every; /* a snapshot of the used jtis every this many entries */
    int64_t max_queue;      /* audit.max_queue: writer queue bound (SPEC §5) */
    int64_t denials_per_s;  /* audit.denials_per_s: individual denial entries per client address */
    int64_t min_free_bytes; /* audit.min_free_bytes: below it allows get 503 */
    int64_t max_body_bytes, max_header_bytes, max_headers, upstream_timeout_ms;
    int64_t header_timeout_ms, idle_timeout_ms, body_timeout_ms, max_connections;
    struct tls_server *tls;          /* the proxy listener's TLS, or NULL (plain HTTP) */
    struct tls_server *admin_tls;    /* the admin listener's */
    struct tls_server *decision_tls; /* the decision listener's */
    int state_backend;               /* enum state_backend (SPEC §6) */
    char *state_dsn, *state_node;    /* postgres only */
    struct mandate_limits mandate_limits;
    double rate_per_s, rate_burst;
    struct keyring issuers;
    struct keyring merchant_keys;
    struct merchant *merchants;
    size_t nmerchants;
    struct route_table routes;
};

/**
 * Load and validate path. Returns a new configuration, or NULL with every error in c->errors
 * (the caller owns c and clears it).
 */
struct config *config_load(const char *path, struct cfg *c) MUST_CHECK;
/** Free a configuration; NULL is a no-op. */
void config_free(struct config *conf);
/**
 * Log (warn) every key that differs between the running configuration and next but is bound at
 * start, so SIGHUP cannot apply it; returns how many. The reloadable keys are applied by swapping
 * in next; the others keep their running values until a restart.
 */
int config_reload_check(const struct config *running, const struct config *next);
/** Take a reference (any thread). */
struct config *config_ref(struct config *conf);
/** Drop a reference; the last one frees. NULL is a no-op. */
void config_unref(struct config *conf);

#endif
