/*
 * verify: the auditor's checks over a database (SPEC §4), offline. verify_log() recomputes every
 * leaf hash, the prev chain and the Merkle roots of every checkpoint (stored or held by the
 * auditor), checks their signatures and origin, checks every entry's members for its kind and
 * every allow against the mandates it lists (stored, hashing to their sha256, and signed for the
 * principal, agent, merchant, action and amount the entry names; their signatures too when a key
 * set is given, or else against the key sets stored in the log), and requires the log to be
 * covered by signed checkpoints; it stops at the first violation and names its seq and kind.
 *
 * Stored key sets: the gateway stores every key set of its configuration in the keysets table
 * (sha256 of the canonical text, owner, text) and lists them, {"owner","sha256"}, in the config
 * entry it writes at start and at each reload. A listed set must be stored and hash to its
 * sha256 ("key set missing", "key set altered" at the config entry's seq); a stored row that does
 * not hash to its sha256 is "key set altered" wherever it is (bad_seq -1 when no entry lists it).
 * For an owner without a set in keys, a mandate verifies if a set of that owner listed at or
 * before its entry has its kid and verifies it; none that has the kid, or none that verifies, is
 * "bad mandate signature". Owners with no listed set stay "not checked".
 *
 * A walk (verify_walk_open) runs the same checks and then hands the entries out again one by one,
 * each checked as verify_log() checked it, with its mandates' claims: replay (audit/replay.h)
 * re-derives the used jtis and the spend ledger from them.
 */
#ifndef AUDIT_VERIFY_H
#define AUDIT_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "audit/store.h"
#include "core/jwk.h"

/*
 * How much of the log must be under a signed checkpoint. Nothing in the database records that a
 * checkpoint was ever written (whoever can rewrite entries can empty the checkpoints and nodes
 * tables too), and a gateway that ran signs one every few seconds and at shutdown, so AUTO treats
 * any log of more than one entry, or with a stored checkpoint, as one that must be covered whole.
 */
enum verify_require {
    VERIFY_REQUIRE_AUTO, /* ALL, unless the log has at most one entry and no stored checkpoint */
    VERIFY_REQUIRE_ALL,  /* every entry under a verified checkpoint (--require-checkpoint) */
    VERIFY_REQUIRE_NONE, /* report the coverage only (--no-require-checkpoint: a live copy) */
};

struct verify_opts {
    EVP_PKEY *checkpoint_key; /* Ed25519 public key; NULL: checkpoints are not checked (replay) */
    char **held;              /* checkpoint notes the auditor kept (texts) */
    size_t nheld;
    const struct keyring *keys; /* issuer or merchant id → JWKS */
    int64_t skew_s;
    const char *origin; /* every checkpoint must name this origin; NULL: any */
    enum verify_require require;
};

struct verify_report {
    bool ok;
    uint64_t entries, checkpoints, mandates_checked, mandates_unchecked, allows;
    uint64_t covered;         /* entries [0, covered) are under a verified checkpoint */
    bool checkpoints_checked; /* false without a checkpoint key */
    int64_t bad_seq;          /* -1 when ok */
    const char *violation; /* "altered", "deleted", "inserted", "reordered", "chain break", ... */
    char detail[256];
    /* Key sets stored in the log (the keysets table), used for the owners without one given. */
    uint64_t keysets_stored;          /* rows */
    uint64_t mandates_checked_stored; /* of mandates_checked, with stored sets */
    char stored_owners[512];          /* those owners, comma-separated ("" when none) */
};

/** Verify the log in db; fills rep. Returns 0 (rep->ok says intact or not) or -1 (cannot). */
int verify_log(sqlite3 *db, const struct verify_opts *o, struct verify_report *rep) MUST_CHECK;

/* A log that verify_log()'s checks went through, held for a second walk over its entries. */
struct verify_walk;

/* One entry of a walk; everything in it belongs to the walk until its next step. */
struct verify_step {
    int64_t seq;
    const json_t *entry; /* parsed; NULL when it does not parse */
    /* An allow's mandates' payloads: the Authorization mandate, then the cart; NULL otherwise. */
    const json_t *claims[2];
};

/**
 * verify_log() on db, keeping the log for a walk: fills rep and *out (free it with
 * verify_walk_free; db and o are borrowed until then), whatever rep->ok says. Returns 0, or -1
 * when the log cannot be read (*out is NULL).
 */
int verify_walk_open(sqlite3 *db, const struct verify_opts *o, struct verify_report *rep,
                     struct verify_walk **out) MUST_CHECK;
/**
 * The next entry in seq order into *st, checked again as verify_log() checks it: a violation
 * goes to rep, which should be a copy of the report verify_walk_open() filled (the counts of the
 * second walk are not the log's). Returns false after the last entry.
 */
bool verify_walk_next(struct verify_walk *w, struct verify_report *rep, struct verify_step *st);
/** Release a walk; NULL is a no-op. */
void verify_walk_free(struct verify_walk *w);

/**
 * Open the database at path read-only (it is never written) and verify it, or replay it
 * (replay_log(), audit/replay.h) when replay is true. Returns the exit status of SPEC §4: 0
 * intact, 1 violation (rep says which), 2 cannot verify (*err says why; caller frees).
 */
int verify_file(const char *path, const struct verify_opts *o, bool replay,
                struct verify_report *rep, char **err) MUST_CHECK;
/**
 * The checks verify_log() makes of one entry once its place in the chain is known: its members
 * for its kind and, for an allow, the mandates it lists (looked up in db) against its own fields.
 * rep must have been zeroed with ok true; returns 0, or -1 with the violation in rep.
 */
int verify_entry(sqlite3 *db, const struct verify_opts *o, int64_t seq, const char *bytes,
                 size_t len, struct verify_report *rep) MUST_CHECK;
/** rep as a new JSON object. */
json_t *verify_report_json(const struct verify_report *rep);

#endif
