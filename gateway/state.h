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
#include "core/mandate.h"

struct state;

enum revoke_kind { REVOKE_JTI, REVOKE_AGENT, REVOKE_PRINCIPAL, REVOKE_KID };

/** A new empty state with the rate limit (tokens per second per agent, bucket size). */
struct state *state_new(double rate, double burst);
/** Free; NULL is a no-op. */
void state_free(struct state *st);
/** Change the rate limit (SIGHUP). */
void state_set_rate(struct state *st, double rate, double burst);

/** "jti", "agent", "principal", "kid"; parse returns -1 for anything else. */
const char *revoke_kind_name(enum revoke_kind k);
int revoke_kind_parse(const char *s, enum revoke_kind *out) MUST_CHECK;

/** Remember that (iss, jti), valid until exp, was used `used` times (start-up). */
void state_load_jti(struct state *st, const char *iss, const char *jti, int64_t exp, int64_t used);
/** Add a revocation; 1 if new, 0 if it was already there. */
int state_revoke(struct state *st, enum revoke_kind kind, const char *value);
/** Every revocation as a new JSON array of {"kind": value}. */
json_t *state_revocations(struct state *st);

/**
 * Check m against revocations, its uses and its agent's rate bucket, and consume one use and one
 * token if all pass. Returns CODE_OK (and *used, the new use count), CODE_MANDATE_REVOKED,
 * CODE_MANDATE_USED or CODE_RATE_LIMITED (and *retry_after_s).
 */
enum code state_admit(struct state *st, const struct mandate *m, int64_t now_us, int64_t *used,
                      int64_t *retry_after_s);
/** Give back the use state_admit() took (the commit failed; nothing was forwarded). */
void state_undo(struct state *st, const struct mandate *m);
/** Is any of m's jti, agent, principal or kid revoked? */
int state_is_revoked(struct state *st, const struct mandate *m);

#endif
