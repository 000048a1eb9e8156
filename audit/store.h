/*
 * store: the SQLite database that holds the audit log and the gateway's state (used jtis, in the
 * entries' rows and snapshots: audit/snap.h; revocations; spend), so that a decision and its entry
 * commit in one transaction (SPEC §4). WAL with synchronous=FULL: a commit that returned is on
 * disk. Only one thread uses a store at a time (the writer thread while serving; main at start-up;
 * mandate-audit offline).
 */
#ifndef AUDIT_STORE_H
#define AUDIT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "audit/entry.h"
#include "audit/merkle.h"
#include "core/util.h"

struct store {
    sqlite3 *db;
    sqlite3_stmt *ins_entry, *ins_text, *ins_snapshot, *del_snapshots, *ins_revocation,
        *ins_checkpoint, *put_spend;
    sqlite3_stmt *ins_node, *get_node, *get_entry;
    bool leaf_column;         /* a log of the older layout: entries(seq, entry, leaf) */
    sqlite3_stmt *ins_keyset; /* STORE_CREATE only */
    sqlite3_stmt *begin, *commit, *rollback; /* STORE_CREATE only: the writer's transactions */
    int lock_fd; /* STORE_CREATE: holds flock(LOCK_EX) on the database while open, else -1 */
};

enum store_mode { STORE_CREATE, STORE_READONLY };

/**
 * Open the database at path: STORE_CREATE creates it and its tables if needed (the gateway);
 * STORE_READONLY never writes (mandate-audit). NULL with *err (caller frees).
 */
struct store *store_open(const char *path, enum store_mode mode, char **err) MUST_CHECK;
/** The underlying connection (for read-only queries of mandate-audit). */
sqlite3 *store_db(struct store *st);
/**
 * Open a log to audit (mandate-audit): read-only, its schema untrusted, waiting out a busy or
 * recovering database (a copy of a crashed gateway's, opened by several tools at once) instead
 * of failing. NULL with *err (caller frees); close with sqlite3_close.
 */
sqlite3 *store_open_evidence(const char *path, char **err) MUST_CHECK;
/**
 * Whether db's entries table has column: "leaf" in the older layout, where every entry's leaf
 * hash was stored beside it (the current layout recomputes it from the entry); "uses" in logs
 * that record used jtis with their entries (audit/snap.h).
 */
bool store_has_column(sqlite3 *db, const char *column);
/** Whether db has a table of that name (one a layout added, or one it replaced). */
bool store_has_table(sqlite3 *db, const char *name);
/** Close; NULL is a no-op. */
void store_close(struct store *st);

/** BEGIN IMMEDIATE / COMMIT / ROLLBACK: 0 or -1. */
int store_begin(struct store *st) MUST_CHECK;
int store_commit(struct store *st) MUST_CHECK;
void store_rollback(struct store *st);

/**
 * Insert entry seq with its bytes and the used-jti records of the mandates it used (uses_len 0:
 * none). leaf is its leaf hash: stored only in a log of the older layout (store_has_column),
 * where the column must be filled; otherwise recomputed when read.
 */
int store_append(struct store *st, uint64_t seq, const char *bytes, size_t len, const void *uses,
                 size_t uses_len, const unsigned char leaf[32]) MUST_CHECK;
/**
 * Seal body as entry f->size after last_leaf (entry_seal), append it with its uses (uses_len 0:
 * none) and the subtree roots it completes, and advance f and last_leaf to it; *leaf receives
 * its leaf hash. On -1, f and last_leaf may have advanced: the caller rolls back both with the
 * transaction.
 */
int store_append_entry(struct store *st, struct merkle_frontier *f, unsigned char last_leaf[32],
                       const struct entry_body *body, const void *uses, size_t uses_len,
                       unsigned char leaf[32]) MUST_CHECK;
/** Append a mandate's JWS text with its hex SHA-256 (a text stored twice does no harm). */
int store_put_mandate(struct store *st, const char *sha_hex, const char *jws) MUST_CHECK;
/**
 * A mandate's JWS text by its hex SHA-256 (caller frees), or NULL. For the offline tools: the
 * first lookup on a connection indexes the texts in a temporary table.
 */
char *store_mandate_text(sqlite3 *db, const char *sha_hex);
/**
 * Store the snapshot of the used jtis as of seq with its horizon (audit/snap.h) and drop the
 * older ones, in a transaction of its own; in a log from before snapshots, its used_jtis table
 * goes with them (the snapshot holds what it held).
 */
int store_put_snapshot(struct store *st, uint64_t seq, int64_t horizon, const void *uses,
                       size_t len) MUST_CHECK;
/** The seq the newest snapshot covers up to, or 0. */
uint64_t store_snapshot_seq(struct store *st);
/** Record a revocation (kind is "jti", "agent", "principal" or "kid"). */
int store_put_revocation(struct store *st, const char *kind, const char *value,
                         int64_t ts_ms) MUST_CHECK;
/** Record or update the spend reservation of a request (status: enum spend_status). */
int store_put_spend(struct store *st, const char *request_id, const char *key, int64_t amount,
                    int status) MUST_CHECK;
/** Call fn with every ledger key and the amount that counts against it (all but released). */
int store_each_spend(struct store *st, void (*fn)(void *arg, const char *key, int64_t amount),
                     void *arg) MUST_CHECK;
/**
 * The spend status of request_id's reservation, written with its allow entry and updated by its
 * outcome: 0 with *status (enum spend_status), 1 when the log has no such allow, -1 on error.
 */
int store_get_spend(struct store *st, const char *request_id, int *status) MUST_CHECK;
/** Store a signed checkpoint note for tree size. */
int store_put_checkpoint(struct store *st, uint64_t size, const char *note) MUST_CHECK;

/* Subtree roots are stored from this level up (64 leaves): one row per 32 entries on average;
 * those below are recomputed from at most 64 entries, which costs the offline tools and the
 * start-up a few hundred microseconds and saves the log some 10 bytes per entry. (Logs written with
 * roots from level 3 up keep them; they are read from this level up, like any other log.) */
#define STORE_NODE_MIN_LEVEL 6

/**
 * Store the root of the perfect subtree at (level >= STORE_NODE_MIN_LEVEL, index): the leaves
 * [i·2^level, (i+1)·2^level).
 */
int store_put_node(struct store *st, int level, uint64_t index,
                   const unsigned char hash[32]) MUST_CHECK;
/** The root of leaves [start, start + size): O(log size) stored nodes. 0, or -1 if missing. */
int store_range_root(struct store *st, uint64_t start, uint64_t size,
                     unsigned char out[32]) MUST_CHECK;
/** RFC 6962 PATH of leaf m in the tree of the first n leaves; returns its length or -1. */
int store_inclusion_proof(struct store *st, uint64_t m, uint64_t n,
                          unsigned char (*proof)[32]) MUST_CHECK;
/**
 * The Merkle frontier and last leaf of the stored log, from O(log n) stored subtree roots (or,
 * for a log without them, from every leaf). 0 or -1.
 */
int store_tail(struct store *st, struct merkle_frontier *f, unsigned char last_leaf[32],
               char **err) MUST_CHECK;
/** The newest checkpoint note (caller frees), or NULL. */
char *store_last_checkpoint(struct store *st);

/**
 * Store a key set the gateway uses: its canonical public JWKS text (jwks_canonical_public), the
 * hex SHA-256 of that text, and whose it is (an issuer or merchant id). A set already stored for
 * that owner keeps its row, and so the time it was first seen.
 */
int store_put_keyset(struct store *st, const char *sha_hex, const char *owner, const char *jwks,
                     int64_t first_seen_ms) MUST_CHECK;

/** Call fn for every revocation. */
int store_each_revocation(struct store *st,
                          void (*fn)(void *arg, const char *kind, const char *value, int64_t ts_ms),
                          void *arg) MUST_CHECK;

#endif
