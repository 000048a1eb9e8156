/*
 * proxy: one request's way through a worker (DESIGN.md, SPEC §2.1 and §5): route, enforce,
 * state, audit commit, then (only then) the body is read and streamed to the merchant, the answer
 * streamed back, and the outcome written. Every denial is answered with SPEC §2.2's JSON body and
 * written to the audit log (framing errors and floods: counted, summarised); an allow is forwarded
 * only after its entry and the jti it consumed are durable. conn.c hands it complete heads and
 * tells it about the client's socket; upstream.c lends it merchant connections.
 */
#ifndef GATEWAY_PROXY_H
#define GATEWAY_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/code.h"
#include "core/httpsig.h"
#include "gateway/enforce.h"
#include "gateway/http_parse.h"
#include "gateway/state.h"

struct worker;
struct conn;
struct request;
struct evbuffer;
struct entry_builder;

/*
 * The decision core, one for every surface (SPEC §2.1 steps 1–4, §7 and §8): the proxy, AuthZEN
 * and forward-auth fill in a struct decision with what the request says (explicit method, path,
 * credentials and signature inputs, not a proxied request) and call decision_run(). It routes,
 * checks the mandate (enforce), runs the surface's own check, checks proof of possession, admits
 * (state_admit: uses, cart, spend, rate, atomically) and commits the decision entry durably, then
 * calls done() exactly once: d->code is CODE_OK (d->receipt set) or the denial's code (already
 * audited and counted). Nothing of a surface's answer is written here.
 */
struct decision {
    /* inputs, set by the caller (borrowed: they must live until done() returns) */
    struct worker *w;
    struct config *conf; /* the configuration the decision is made under */
    const char *surface; /* "authzen", "forward_auth", "mcp"; NULL for a proxied request */
    char id[33];         /* the request id */
    const char *method;
    const char *path; /* NUL-terminated raw path, no query */
    size_t path_n;
    struct hp_str query;       /* the raw query (no '?'); the byte after it may be overwritten */
    const char *authority;     /* NUL-terminated, or NULL */
    bool https;                /* the scheme of the signature base */
    const char *authorization; /* the Authorization value, or NULL */
    const char *cart;          /* the Mandate-Cart value, or NULL */
    struct hp_request *hp;     /* header fields for signature components (values are
                                  NUL-terminated in place), or NULL */
    bool has_body;             /* the request has a body: content-digest must be covered */
    bool no_pop;               /* a mandate with cnf cannot be presented here: signature_missing */
    bool no_digest;            /* a covered content-digest cannot be checked: signature_invalid */
    bool commit_spend;         /* the spend is committed with the allow (no outcome will come) */
    char peer[64];             /* the client address, for the denial budget (a copy: the
                                  client may be gone when a late admission is denied) */
    bool summarised;           /* a denial over the client's budget: counted in its summary,
                                  neither an audit entry nor an access line of its own */
    int64_t start_us;          /* mono_us() when the request began */
    /* the surface's own checks after the mandate's (NULL: none); CODE_OK to go on */
    enum code (*check)(struct decision *d);
    /* a covered body must be read and its digest checked before admission (NULL: the surface
     * cannot: signature_invalid); it calls decision_admit() or decision_deny() afterwards */
    void (*hold)(struct decision *d);
    void (*done)(struct decision *d);
    void *arg; /* the caller's */
    /* results */
    const struct route *route; /* set by the caller to skip routing, else found here */
    struct verdict v;
    struct admit admit;
    enum code code;
    int64_t retry_after_s; /* with CODE_RATE_LIMITED */
    int64_t check_us;
    char receipt[90];             /* Mandate-Receipt of an allow */
    struct httpsig_digest digest; /* a held body's Content-Digest check (the caller clears it) */
    bool waiting_durable;         /* the allow is queued for commit: done() is still to come */
};

/** Decide d (see struct decision); done() is called exactly once, maybe before this returns. */
void decision_run(struct decision *d);
/** Admission and the durable entry (after a held body's digest checked out); then done(). */
void decision_admit(struct decision *d);
/** Deny d with code: audited (framing and size codes excepted) and counted; then done(). */
void decision_deny(struct decision *d, enum code code, int64_t retry_after);
/**
 * The Mandate-* header lines of an allow for the merchant (SPEC §2.1 step 5: Mandate-Principal,
 * -Agent, -Action, the mandates' ids, and Mandate-Amount on a priced route), CRLF-terminated;
 * Mandate-Receipt is not among them.
 */
void decision_mandate_headers(const struct decision *d, struct sb *b);
/** Append "name: value\r\n" to b. */
void proxy_header(struct sb *b, const char *name, size_t name_n, const char *value, size_t value_n);
/** The same from two C strings. */
static inline void proxy_header_str(struct sb *b, const char *name, const char *value)
{
    proxy_header(b, name, strlen(name), value, strlen(value));
}

/**
 * The decision entry (SPEC §4) of d at ts_ms, begun in eb for the caller to finish: the
 * mandates it listed when the token parsed, the amount on a priced route, the surface it came
 * through when it is not the proxy (SPEC §8).
 */
void decision_entry(const struct decision *d, int64_t ts_ms, struct entry_builder *eb);
/**
 * The outcome entry of request_id at ts_ms, begun in eb for the caller to finish: result, the
 * merchant's status, the bytes relayed, the upstream time, and spend (the reservation's fate; NULL
 * on an unpriced route).
 */
void proxy_outcome_entry(struct entry_builder *eb, int64_t ts_ms, const char *request_id,
                         const char *result, int status, uint64_t bytes, int64_t upstream_us,
                         const char *spend);

/** A head of head_len bytes is complete at buf, the start of c's input, and parsed into the
 * worker's scratch request: serve it. */
void proxy_begin(struct conn *c, const char *buf, size_t head_len);
/** c's input has new bytes while r is served (the body, or the next pipelined head). */
void proxy_client_readable(struct request *r);
/** c's output was flushed while r is served (backpressure: resume reading the merchant). */
void proxy_client_drained(struct request *r);
/** The client left: cancel r's upstream side and finish it; r must not use its conn again. */
void proxy_client_gone(struct request *r);

/** A parse target with w's scratch header array sized for lim (conn.c's head parses). */
struct hp_request *proxy_scratch_request(struct worker *w, const struct hp_limits *lim);
/** A new request id (32 hex digits), unique across workers and restarts. */
void proxy_new_request_id(struct worker *w, char id[33]);
/** Count a framing or size error answered by conn.c (metrics and the access log, no audit). */
void proxy_count_framing(struct conn *c, enum code code, const char *request_id);

#endif
