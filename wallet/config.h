/*
 * config: the wallet's configuration (SPEC §3), loaded and validated in one pass with every
 * error naming its JSON path. The signing key is parsed once here and reused for every mint.
 */
#ifndef WALLET_CONFIG_H
#define WALLET_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/cfg.h"
#include "core/httpsig.h"
#include "core/jwk.h"
#include "core/mandate.h"
#include "core/money.h"

struct allow {
    char *merchant;
    char **actions;
    size_t nactions;
};

struct principal {
    char *id;
    struct money spend_cap;
    enum cap_period cap_period;
    bool has_max_per_payment, has_approval_above;
    struct money max_per_payment;
    struct money approval_above;
    struct allow *allow;
    size_t nallow;
};

struct agent {
    char *id;
    const struct principal *principal; /* borrowed */
    unsigned char token_sha256[32];
    /*
     * The agent's public key (SPEC §7), from the entry's "jwk": NULL when it has none. Canonical:
     * exactly kty, crv, x (and y for EC), re-encoded from the validated key, so that what a
     * mandate's cnf.jwk carries never depends on how the operator wrote it (kid, alg, use).
     */
    json_t *cnf_jwk;
    char cnf_thumbprint[HTTPSIG_THUMBPRINT_LEN + 1]; /* RFC 7638: the keyid its signatures name */
};

struct gateway_target {
    char *admin_url; /* exactly "http://host:port", as validated at load */
    char *host;      /* from admin_url: an IP literal (without brackets) or a name */
    int port;        /* from admin_url: 1-65535 */
    char *token;     /* read from token_file, trailing newline removed */
};

struct wallet_config {
    char *id;
    char *listen_host;
    int listen_port;
    char *database;
    struct jwk signing_key;
    struct jwks *published; /* the public keys served at /.well-known/jwks.json */
    unsigned char admin_token_sha256[32];
    int64_t default_ttl_s, max_ttl_s;
    struct keyring merchant_keys;
    struct principal *principals;
    size_t nprincipals;
    struct agent *agents;
    size_t nagents;
    struct gateway_target *gateways;
    size_t ngateways;
    int64_t max_connections;   /* limits: open connections to the API at once */
    int64_t header_timeout_ms; /* limits: for a whole request, from accept or the last answer */
};

/** Load and validate path; NULL with the errors in c. */
struct wallet_config *wallet_config_load(const char *path, struct cfg *c) MUST_CHECK;
/** Free; NULL is a no-op. */
void wallet_config_free(struct wallet_config *w);

#endif
