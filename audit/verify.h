/*
 * verify: the auditor's checks over a database (SPEC §4), offline. verify_log() recomputes every
 * leaf hash, the prev chain and the Merkle roots of every checkpoint (stored or held by the
 * auditor), checks their signatures, and re-verifies the mandates of every allow; it stops at the
 * first violation and names its seq and kind. replay_log() re-derives the used jtis from the
 * entries alone and reports any allow that broke a rule.
 */
#ifndef AUDIT_VERIFY_H
#define AUDIT_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "audit/store.h"
#include "core/jwk.h"

struct verify_opts {
    EVP_PKEY *checkpoint_key; /* Ed25519 public key; NULL in replay */
    char **held;              /* checkpoint notes the auditor kept (texts) */
    size_t nheld;
    const struct keyring *keys; /* issuer or merchant id → JWKS */
    int64_t skew_s;
};

struct verify_report {
    bool ok;
    uint64_t entries, checkpoints, mandates_checked, mandates_unchecked, allows;
    int64_t bad_seq;       /* -1 when ok */
    const char *violation; /* "altered", "deleted", "inserted", "reordered", "chain break", ... */
    char detail[256];
};

/** Verify the log in db; fills rep. Returns 0 (rep->ok says intact or not) or -1 (cannot). */
int verify_log(sqlite3 *db, const struct verify_opts *o, struct verify_report *rep) MUST_CHECK;
/** Replay the log in db; fills rep (violation names the broken rule). 0 or -1. */
int replay_log(sqlite3 *db, const struct verify_opts *o, struct verify_report *rep) MUST_CHECK;
/** rep as a new JSON object. */
json_t *verify_report_json(const struct verify_report *rep);

#endif
