/*
 * pgstate: the postgres backend (SPEC §6; the contract is gateway/backend.h). Uses, paid carts,
 * spend and revocations live in one PostgreSQL database shared by every node; each admission is
 * one statement (a PL/pgSQL function of conditional writes, no read-then-write), sent on the
 * worker's own pipelined connection (gateway/pgconn.h). A control thread holds one more,
 * blocking connection: it holds the node's name lock, LISTENs for revocations (with a poll every
 * second as the fallback and the health check behind /readyz) and prunes what has expired.
 *
 * At start, before any request: connect, create or migrate the schema (under an advisory lock,
 * so nodes starting together do not race), take the node's name (a second live node of the same
 * name is refused), release this node's reservations that its own log shows were never
 * forwarded (settle the others from the log's outcome, or as unknown), and load revocations.
 */
#ifndef GATEWAY_PGSTATE_H
#define GATEWAY_PGSTATE_H

#include "gateway/backend.h"

#define PGSTATE_RETRY_MAX 1024 /* settlements waiting for a connection, per backend_conn */
#define PGSTATE_POOL      4    /* PostgreSQL connections per backend_conn (worker, admin) */

struct pgstate_opts {
    const char *dsn, *node;
    const char *db_path; /* this node's audit database, read by the start-up recovery */
    /* A revocation another node stored (or this one, seen again): from the control thread. */
    void (*learned)(void *arg, enum revoke_kind kind, const char *value);
    void *arg;
};

/** Start the postgres backend over st (node-only from now on); NULL with *err (caller frees). */
struct backend *pgstate_new(struct state *st, const struct pgstate_opts *o, char **err) MUST_CHECK;

/**
 * How many settlements (outcomes, releases) on bc wait for its connection to come back: at most
 * PGSTATE_RETRY_MAX; beyond it they are logged and left to the restart's recovery.
 */
size_t pgstate_waiting(const struct backend_conn *bc);

#endif
