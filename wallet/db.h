/*
 * db: the wallet's own SQLite database: every mint and refusal (who, what, when, why), the
 * approvals waiting for a person, revocations, and the pushes of revocations to gateways until
 * each is acknowledged. The wallet is one event loop; the database is used from it alone.
 */
#ifndef WALLET_DB_H
#define WALLET_DB_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

#include "core/money.h"
#include "core/util.h"

struct wdb;

/* One line of the mint log. */
struct wdb_event {
    const char *agent, *principal, *kind, *merchant, *action, *jti, *decision, *code, *detail;
    const struct money *amount; /* payments: the total; intents: max_amount; else NULL */
};

struct wdb_approval {
    char id[33], agent[129], status[16];
    char *cart;    /* the cart JWS (caller frees) */
    char *mandate; /* once approved (caller frees), else NULL */
    int64_t expires_at;
};

struct wdb *wdb_open(const char *path, char **err) MUST_CHECK;
void wdb_close(struct wdb *d);
/** Append to the mint log. */
int wdb_event(struct wdb *d, const struct wdb_event *e) MUST_CHECK;
/** The max_amount this wallet put in intent jti, if any: 1 found, 0 none. */
int wdb_intent_max(struct wdb *d, const char *jti, struct money *out);
/** A new pending approval. */
int wdb_approval_new(struct wdb *d, const char *id, const char *agent, const char *cart,
                     int64_t expires_at) MUST_CHECK;
/** Read approval id: 1 found, 0 not. */
int wdb_approval_get(struct wdb *d, const char *id, struct wdb_approval *out);
/** Set its status and (approved) mandate. */
int wdb_approval_set(struct wdb *d, const char *id, const char *status,
                     const char *mandate) MUST_CHECK;
/** Pending approvals as a new JSON array. */
json_t *wdb_approvals_pending(struct wdb *d, int64_t now);
/** Record a revocation (kind "agent" or "jti"). */
int wdb_revoke(struct wdb *d, const char *kind, const char *value) MUST_CHECK;
/** Is (kind, value) revoked? */
bool wdb_revoked(struct wdb *d, const char *kind, const char *value);
/** Record a push's state ("pending", "acknowledged") and attempts. */
int wdb_push(struct wdb *d, const char *gateway, const char *kind, const char *value,
             const char *status, int attempts) MUST_CHECK;
/** Call fn for every push not yet acknowledged. */
void wdb_each_pending_push(struct wdb *d,
                           void (*fn)(void *arg, const char *gateway, const char *kind,
                                      const char *value, int attempts),
                           void *arg);

#endif
