/*
 * backend: where what a request consumes is checked and kept (SPEC §6): each mandate's uses,
 * paid carts, spend reservations and revocations. Two implementations behind these calls:
 *
 *   local     the in-memory state (gateway/state.c), made durable by the audit writer's SQLite
 *             transaction together with the decision's entry: the embedded default;
 *   postgres  one PostgreSQL database shared by every gateway of a cluster (gateway/pgstate.c);
 *             this node's rate buckets and signature nonces stay in struct state.
 *
 * The request path calls only these functions and cannot tell which runs. The contract:
 *
 *  - backend_admit() checks revocations and the agent's rate limit (this node), then checks and
 *    consumes the mandate's use, the cart and the spend in one atomic step (across all nodes for
 *    postgres), and calls done exactly once: CODE_OK, the first failing check's code, or
 *    CODE_STATE_UNAVAILABLE when the shared state cannot answer. Nothing is consumed unless done
 *    gets CODE_OK. done may run before backend_admit() returns (local) or later on the loop of
 *    the connection's event base (postgres); the caller keeps a and request_id alive until then.
 *  - After CODE_OK the caller commits its audit entry, then forwards. If the commit fails
 *    (nothing forwarded), backend_undo() gives everything back. After a priced forward,
 *    backend_settle() records the outcome: committed, released (the reservation only: the cart
 *    and the use were spent on a forward) or unknown (counts against the cap).
 *  - backend_spend() answers the admin API's spend query from where spend is kept.
 *  - backend_revoke() stores a revocation (every node applies it); done gets CODE_OK once it is
 *    stored and in effect on this node, or CODE_STATE_UNAVAILABLE.
 *  - Undo and settle never fail towards the caller: the postgres backend retries them after a
 *    reconnect (bounded), and a node releases its own unsettled reservations at restart. They
 *    are sent, not awaited: an admission made right after them may not see them yet.
 *  - A backend_conn belongs to one thread: every call on it is made on the thread running its
 *    event base. backend_ready() may be called from any thread.
 */
#ifndef GATEWAY_BACKEND_H
#define GATEWAY_BACKEND_H

#include <stdbool.h>

#include <event2/event.h>

#include "audit/writer.h"
#include "gateway/state.h"

struct backend;
struct backend_conn;

typedef void (*backend_done_fn)(void *arg, enum code code);
/* rows: state_spend()'s array (the callee keeps no reference), or NULL when unavailable. */
typedef void (*backend_spend_fn)(void *arg, json_t *rows);

struct backend_ops {
    const char *name;
    struct backend_conn *(*conn_new)(struct backend *b, struct event_base *base);
    void (*conn_free)(struct backend_conn *bc);
    void (*admit)(struct backend_conn *bc, struct admit *a, const char *request_id,
                  int64_t now_mono_us, int64_t now_unix_s, backend_done_fn done, void *arg);
    void (*undo)(struct backend_conn *bc, const struct admit *a, const char *request_id);
    void (*settle)(struct backend_conn *bc, const struct admit *a, const char *request_id,
                   enum spend_status spend);
    void (*revoke)(struct backend_conn *bc, enum revoke_kind kind, const char *value,
                   backend_done_fn done, void *arg);
    void (*spend)(struct backend_conn *bc, const char *principal, int64_t now_unix_s,
                  backend_spend_fn done, void *arg);
    bool (*ready)(struct backend *b);
    void (*free)(struct backend *b);
};

/* Implementations embed these first. */
struct backend {
    const struct backend_ops *ops;
    struct state *st; /* borrowed: outlives the backend */
};
struct backend_conn {
    struct backend *b;
};

/** The local backend over st (borrowed). */
struct backend *backend_local_new(struct state *st);

/** A connection for the thread running base (NULL for the local backend's callers is never
 * returned: every backend gives one). */
static inline struct backend_conn *backend_conn_new(struct backend *b, struct event_base *base)
{
    return b->ops->conn_new(b, base);
}
/** Free a connection: pending admissions get done(CODE_STATE_UNAVAILABLE). NULL is a no-op. */
static inline void backend_conn_free(struct backend_conn *bc)
{
    if (bc)
        bc->b->ops->conn_free(bc);
}
static inline void backend_admit(struct backend_conn *bc, struct admit *a, const char *request_id,
                                 int64_t now_mono_us, int64_t now_unix_s, backend_done_fn done,
                                 void *arg)
{
    bc->b->ops->admit(bc, a, request_id, now_mono_us, now_unix_s, done, arg);
}
static inline void backend_undo(struct backend_conn *bc, const struct admit *a,
                                const char *request_id)
{
    bc->b->ops->undo(bc, a, request_id);
}
static inline void backend_settle(struct backend_conn *bc, const struct admit *a,
                                  const char *request_id, enum spend_status spend)
{
    bc->b->ops->settle(bc, a, request_id, spend);
}
static inline void backend_revoke(struct backend_conn *bc, enum revoke_kind kind, const char *value,
                                  backend_done_fn done, void *arg)
{
    bc->b->ops->revoke(bc, kind, value, done, arg);
}
/** What principal has spent in every cap period still running (the admin API). */
static inline void backend_spend(struct backend_conn *bc, const char *principal, int64_t now_unix_s,
                                 backend_spend_fn done, void *arg)
{
    bc->b->ops->spend(bc, principal, now_unix_s, done, arg);
}
/** Can it take admissions now (/readyz)? */
static inline bool backend_ready(struct backend *b)
{
    return b->ops->ready(b);
}
static inline const char *backend_name(const struct backend *b)
{
    return b->ops->name;
}
/** Free; NULL is a no-op. Every connection must be freed first. */
static inline void backend_free(struct backend *b)
{
    if (b)
        b->ops->free(b);
}

#endif
