/*
 * state: what the gateway must remember between requests, in memory, shared by all workers
 * under one short lock: how often each (issuer, jti) has been used, what is revoked, and each
 * agent's rate-limit bucket. state_admit() checks and consumes in one step, so of N concurrent
 * requests on a `uses: k` mandate exactly k pass. Durability is the writer's job: a consumption
 * is committed with its audit entry before the request is forwarded, and loaded back at start.
 */
#ifndef GATEWAY_STATE_H
#define GATEWAY_STATE_H

#include <stdint.h>

#include "core/code.h"
#include "core/hist.h"
#include "core/mandate.h"
#include "gateway/ledger.h"

struct state;

enum revoke_kind { REVOKE_JTI, REVOKE_AGENT, REVOKE_PRINCIPAL, REVOKE_KID };

/* A jti is remembered until its mandate has been expired for clock_skew_s + this: a verification
 * and its admission happen in one callback, microseconds apart, so 2 s leaves a wide margin while
 * keeping the table at about (ttl + skew + 2 s) × rate entries. */
#define STATE_GRACE_S 2

/**
 * A new empty state with the rate limit (tokens per second per agent, bucket size) and the
 * clock skew the mandate checks allow (how long after exp a jti must still be remembered).
 */
struct state *state_new(double rate, double burst, int64_t clock_skew_s);
/** Free; NULL is a no-op. */
void state_free(struct state *st);
/**
 * From now on state_admit() checks only what is this node's own (revocations, rate buckets):
 * uses, carts and spend are checked and kept by a shared backend (gateway/backend.h). Call
 * before any admission.
 */
void state_set_node_only(struct state *st);
/** How long after its exp a used jti must be remembered (clock skew + STATE_GRACE_S). */
int64_t state_retain_s(const struct state *st);
/** Change the rate limit (SIGHUP). */
void state_set_rate(struct state *st, double rate, double burst);

/** "jti", "agent", "principal", "kid"; parse returns -1 for anything else. */
const char *revoke_kind_name(enum revoke_kind k);
int revoke_kind_parse(const char *s, enum revoke_kind *out) MUST_CHECK;

/**
 * The used jtis known start from mandates expiring at horizon (unix s; the log's snapshot
 * dropped older ones, audit/snap.h): admissions refuse mandates and carts that expire before it
 * as expired, whatever the clock skew. Start-up, before any admission.
 */
void state_set_horizon(struct state *st, int64_t horizon);
/** Size the empty jti table for n jtis at once (start-up: no growth step by step). */
void state_reserve_jtis(struct state *st, size_t n);
/** Remember that (iss, jti), valid until exp, was used `used` times (start-up). */
void state_load_jti(struct state *st, const char *iss, const char *jti, int64_t exp, int64_t used);
/** Add a revocation; 1 if new, 0 if it was already there. */
int state_revoke(struct state *st, enum revoke_kind kind, const char *value);
/** Every revocation as a new JSON array of {"kind": value}. */
json_t *state_revocations(struct state *st);

/* What one request would consume; state_admit() fills the outputs. */
struct admit {
    const struct mandate *m;        /* the Authorization mandate */
    const struct mandate *cart;     /* priced routes: the cart (paid once), else NULL */
    char spend_key[LEDGER_KEY_MAX]; /* priced routes: where the amount counts */
    int64_t amount, cap;
    int64_t used;          /* out: m's use count after this one */
    int64_t retry_after_s; /* out: with CODE_RATE_LIMITED */
};

/**
 * Check a request against revocations (of the mandate and of its cart), its mandate's uses, its
 * cart, its agent's rate bucket and its principal's spend cap, and if all pass consume one use,
 * the cart, one token and the amount, all under one lock (node-only: revocations and the token).
 * Returns CODE_OK or the first failing check's code (nothing consumed). Also frees a bounded amount
 * of what has expired. now_mono_us (CLOCK_MONOTONIC) drives the rate buckets, now_unix_s (wall
 * clock) the jti and ledger expiry.
 */
enum code state_admit(struct state *st, struct admit *a, int64_t now_mono_us, int64_t now_unix_s);
/**
 * Remember a request signature's nonce for keyid until until_unix_s (SPEC §7). Returns 1 when it
 * is new (now remembered), 0 when it was seen before: a replay. Same expiry wheel as the jtis.
 */
int state_nonce(struct state *st, const char *keyid, const char *nonce, int64_t until_unix_s,
                int64_t now_unix_s);
/** Give back everything state_admit() took (the commit failed; nothing was forwarded). */
void state_undo(struct state *st, const struct admit *a);
/** Take back a reservation whose payment did not happen (4xx/5xx, or never forwarded). */
void state_release(struct state *st, const char *spend_key, int64_t amount);
/** Count amount under a ledger key (start-up). */
void state_load_spend(struct state *st, const char *key, int64_t amount);

/**
 * What principal has spent in every cap period still running at now_unix_s, as a new JSON array
 * of {"issuer", "currency", "period", "spent": money} (reserved, committed and unknown amounts
 * alike: what counts against the cap). For the admin API: it walks the whole ledger.
 */
json_t *state_spend(struct state *st, const char *principal, int64_t now_unix_s);
/** Append one such row to the JSON array arr for a ledger key (cap_key()'s) and its total. */
void state_spend_row(void *arr, const char *key, int64_t spent);

/* Sizes and the admission lock's hold times, for /metrics and tests. */
struct state_counts {
    size_t jtis, buckets, revocations, ledger;
    const struct hist *lock_us; /* time the admission lock was held, µs */
    uint64_t lock_max_us;
};
/** Fill out with the current sizes (lock_us stays owned by st). */
void state_counts(struct state *st, struct state_counts *out);

#endif
