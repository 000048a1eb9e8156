/*
 * replay: re-derive from the entries alone what the gateway consumed (the uses of every jti, the
 * carts paid, the spend of every cap period, less what outcomes released) and report every allow
 * that broke a rule (SPEC §4): a jti used more than its `uses`, a cart paid twice, a cap
 * exceeded, an expired mandate allowed.
 *
 * replay_log() replays one log. replay_files() replays the logs of several nodes of a cluster
 * together (SPEC §6): each is verified on its own first, with its own stored key sets and its own
 * origin, and only if all are intact are their entries merged by ts_ms (ties by origin, then seq;
 * each log keeps its own order) and replayed as if one gateway had written them, so that a rule
 * broken only across nodes shows. Merging by time assumes the nodes' clocks agree: spend released
 * on one node and spent again on another within their skew may show as over the cap.
 *
 * Neither checks integrity itself (audit/verify.c does) nor writes anything.
 */
#ifndef AUDIT_REPLAY_H
#define AUDIT_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "audit/verify.h"

/**
 * verify_log(), then replay the log in db; fills rep (violation names the first broken rule, at
 * the seq of the allow that broke it). Returns 0, or -1 when the log cannot be read.
 */
int replay_log(sqlite3 *db, const struct verify_opts *o, struct verify_report *rep) MUST_CHECK;

/* A rule an allow broke, in the merged replay of several logs. */
struct replay_finding {
    size_t log;       /* index of the log (struct replay_report.logs) of the allow */
    int64_t seq;      /* its seq in that log */
    char *request_id; /* its request_id */
    const char *rule; /* "reused jti", "reused cart", "cap exceeded", "expired mandate", ... */
    char detail[256];
    /* The jti's or the cart's first allow (reused jti, reused cart); first_seq -1 otherwise. */
    size_t first_log;
    int64_t first_seq;
};

/* One log given to replay_files(). */
struct replay_source {
    const char *path;         /* borrowed */
    char *origin;             /* --origin, or that of its stored checkpoints; NULL: neither */
    struct verify_report rep; /* its own verification */
};

struct replay_report {
    bool ok;       /* every log intact and no rule broken */
    bool replayed; /* the logs were intact, so they were replayed together */
    uint64_t allows;
    struct replay_source *logs;
    size_t nlogs;
    struct replay_finding *found; /* every rule broken, in the merged order */
    size_t nfound;
};

/**
 * Verify each of the n logs at paths on its own with o (o->origin and o->held are not used:
 * origins[i], when origins is not NULL, is the origin log i's checkpoints must name, else that
 * of its first stored checkpoint; each held note goes to the log whose origin its own names),
 * then replay them together. Fills rr (release with replay_report_clear). Returns the exit
 * status of SPEC §4: 0 intact and no rule broken, 1 a violation in a log or a rule broken across
 * them (rr says which) or a held checkpoint that is no log's (*err), 2 a log that cannot be read
 * (*err). *err is the caller's to free.
 */
int replay_files(const char *const *paths, const char *const *origins, size_t n,
                 const struct verify_opts *o, struct replay_report *rr, char **err) MUST_CHECK;
/** Release what rr holds; a zeroed rr is fine. */
void replay_report_clear(struct replay_report *rr);
/** rr as a new JSON object: ok, replayed, allows, logs (each verify_report_json() with its db and
 * origin) and violations (db, origin, seq, request_id, violation, detail, first {db, seq}). */
json_t *replay_report_json(const struct replay_report *rr);

#endif
