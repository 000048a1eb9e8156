/*
 * snap: the used jtis kept by the log itself. An entry that uses mandates carries their counts
 * in its row (the `uses` column: records, below); every audit.snapshot_every entries (or as
 * many as the last snapshot had records, if more: audit/writer.c) and at shutdown a snapshot row
 * folds them all as of a seq, with the horizon below which it dropped expired ones. The used jtis
 * at the log's end are the newest snapshot plus the records of the entries after it: what the
 * gateway loads at start-up, what the next snapshot is built from, and what replay checks against
 * the entries themselves. The hot path so writes only at the right edge of the entries table, where
 * a used_jtis table keyed by random jtis cost a page of its own per commit.
 *
 * A record: varint(len) iss, varint(len) jti, varint(zigzag(exp)), varint(used). Records are read
 * from files from outside (mandate-audit), so the decoder bounds everything (fuzz_snap).
 */
#ifndef AUDIT_SNAP_H
#define AUDIT_SNAP_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "core/log.h"
#include "core/util.h"

/* The default of audit.snapshot_every: about this many rows to read back at start-up beside
 * the snapshot itself. */
#define SNAP_EVERY 65536
/* The longest iss or jti a record holds (the writer's ops hold less). */
#define SNAP_MAX_ID 1024

struct snap_use {
    const char *iss, *jti; /* not NUL-terminated: into the buffer decoded */
    size_t iss_len, jti_len;
    int64_t exp; /* unix s */
    int64_t used;
};

/** Append one record to out. */
void snap_put(struct sb *out, const char *iss, const char *jti, int64_t exp, int64_t used);
/** The next record of [*p, end): 1 with *u (pointing into the buffer), 0 at the end, -1 if
 * malformed. */
int snap_next(const unsigned char **p, const unsigned char *end, struct snap_use *u) MUST_CHECK;

/* The used jtis folded: one record per (iss, jti), sorted, with the largest count recorded. */
struct snap {
    struct snap_use *v; /* after snap_fold: into raw */
    size_t n;
    struct sb raw;     /* the records as read, one after the other */
    uint64_t seq;      /* covers entries [0, seq) */
    uint64_t base_seq; /* the snapshot it started from; 0: none */
    /* The jtis of mandates that expire from here on (unix s) are all known: the fold dropped
     * older ones. A gateway refuses mandates that expire before it, whatever its clock skew
     * (a start with a larger skew, a clock set back). INT64_MIN: nothing was ever dropped. */
    int64_t horizon;
    size_t tail; /* entry rows with uses read after it */
};

/**
 * The used jtis as of the end of db's log, read in one transaction: the newest snapshot (in a log
 * from before snapshots, the used_jtis table) and the uses of the entries after it, without the
 * jtis that expired before keep_from (unix s). 0, or -1 with *err (caller frees), also for a
 * snapshot said to cover more entries than the log has.
 */
int snap_load(sqlite3 *db, int64_t keep_from, struct snap *out, char **err) MUST_CHECK;
/** Add the records of [buf, buf+len) to s (a copy), unfolded: 0, or -1 if malformed. */
int snap_add(struct snap *s, const void *buf, size_t len) MUST_CHECK;
/** Sort by (iss, jti), keep one record per jti with the largest count, drop exp < keep_from. */
void snap_fold(struct snap *s, int64_t keep_from);
/** The record of (iss, jti) in the folded s, or NULL. */
const struct snap_use *snap_find(const struct snap *s, const struct snap_use *key);
/** The folded records, encoded: a snapshot row's bytes. */
void snap_encode(const struct snap *s, struct sb *out);
void snap_free(struct snap *s);

#endif
