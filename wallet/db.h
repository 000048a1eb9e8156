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

#include "core/mandate.h"
#include "core/money.h"
#include "core/util.h"

struct wdb;

#define WDB_BUSY_MS   1000           /* how long a write waits for another process's lock */
#define WDB_KIND_MAX  15             /* a revocation's kind: "agent" or "jti" */
#define WDB_VALUE_MAX MANDATE_ID_MAX /* a revocation's value */

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

/** Open (creating) the database at path; NULL with *err set (caller frees). */
struct wdb *wdb_open(const char *path, char **err) MUST_CHECK;
/** Close; NULL is a no-op. */
void wdb_close(struct wdb *d);
/** Append to the mint log. */
int wdb_event(struct wdb *d, const struct wdb_event *e) MUST_CHECK;
/** The max_amount this wallet put in intent jti, if any: 1 found, 0 none. */
int wdb_intent_max(struct wdb *d, const char *jti, struct money *out);
/**
 * The total of the payment mandates this wallet minted for principal in currency since since_ms
 * (events at or after it): 0 with *out set, or -1 when the database cannot say.
 */
int wdb_minted_since(struct wdb *d, const char *principal, const char *currency, int64_t since_ms,
                     int64_t *out) MUST_CHECK;
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
/** Record a revocation (kind "agent" or "jti"), with its pushes (wdb_push_add) in one transaction.
 */
int wdb_revoke(struct wdb *d, const char *kind, const char *value) MUST_CHECK;
/** Is (kind, value) revoked? */
bool wdb_revoked(struct wdb *d, const char *kind, const char *value);
/** Begin a transaction (taking the write lock now); 0 or -1. */
int wdb_begin(struct wdb *d) MUST_CHECK;
/** Commit it; 0 or -1 (then call wdb_rollback). */
int wdb_commit(struct wdb *d) MUST_CHECK;
/** Roll back the open transaction, if any. */
void wdb_rollback(struct wdb *d);
/**
 * A pending push of revocation (kind, value) to gateway (its admin_url); again pending if it was
 * pushed before. Call in the revocation's own transaction, so that neither is ever without the
 * other.
 */
int wdb_push_add(struct wdb *d, const char *gateway, const char *kind,
                 const char *value) MUST_CHECK;
/** The pending push to gateway tried least recently: 1 found, 0 none, -1 database error. */
int wdb_push_next(struct wdb *d, const char *gateway, char kind[WDB_KIND_MAX + 1],
                  char value[WDB_VALUE_MAX + 1]) MUST_CHECK;
/** Count an attempt at a push and record whether the gateway acknowledged it. */
int wdb_push_tried(struct wdb *d, const char *gateway, const char *kind, const char *value,
                   bool acknowledged) MUST_CHECK;

#endif
