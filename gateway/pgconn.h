/*
 * pgconn: one asynchronous PostgreSQL connection on a libevent loop, in libpq's pipeline mode.
 * Queries are prepared statements sent at once, each followed by a sync so that each is its own
 * transaction; their results come back in order, so a FIFO of callbacks matches them. Nothing
 * blocks the loop: connecting, sending and reading are driven by socket events.
 *
 * When the connection fails (or no answer comes for PGCONN_QUERY_TIMEOUT_MS while queries wait:
 * a long queue behind a slow commit is not a dead server) every pending callback gets NULL and the
 * connection is retried with a backoff from 100 ms doubling to 5 s (SPEC §6). While it is down,
 * pgconn_send() refuses at once: callers fail closed.
 */
#ifndef GATEWAY_PGCONN_H
#define GATEWAY_PGCONN_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "core/util.h"

#define PGCONN_MAX_PENDING      4096 /* queries in flight on one connection */
#define PGCONN_QUERY_TIMEOUT_MS 5000 /* an answer later than this: the connection is dead */
#define PGCONN_BACKOFF_MIN_MS   100
#define PGCONN_BACKOFF_MAX_MS   5000

struct pgconn;

/* A prepared statement: made on every (re)connect, named by its index. */
struct pgconn_stmt {
    const char *sql;
    int nparams;
};

/**
 * The answer to one query: res is its result (PGRES_TUPLES_OK, PGRES_COMMAND_OK or
 * PGRES_FATAL_ERROR; owned by pgconn, valid during the call), or NULL when the connection
 * failed or closed before it answered (the query may or may not have committed).
 */
typedef void (*pgconn_fn)(void *arg, const PGresult *res);

/**
 * A connection to dsn on base, with stmts (borrowed, static) prepared. The first connection is
 * made now, blocking (call it before base's loop serves requests); if it fails, and whenever
 * the connection is lost later, it is retried in the background. name is for log lines.
 */
struct pgconn *pgconn_new(struct event_base *base, const char *dsn, const struct pgconn_stmt *stmts,
                          size_t nstmts, const char *name);
/** Close; pending callbacks get NULL. NULL is a no-op. */
void pgconn_free(struct pgconn *pc);
/** Queries sent and not yet answered. */
size_t pgconn_pending(const struct pgconn *pc);
/** Connected, with its statements prepared or being prepared ahead of any query. */
bool pgconn_up(const struct pgconn *pc);
/**
 * Send statement stmt with params (text; NULL is SQL NULL). fn(arg, result) follows exactly once
 * unless this returns -1 (down, or PGCONN_MAX_PENDING queries in flight): then fn is never called.
 */
int pgconn_send(struct pgconn *pc, int stmt, const char *const *params, pgconn_fn fn,
                void *arg) MUST_CHECK;
/** The SQLSTATE of an error result ("" for none). */
const char *pgconn_sqlstate(const PGresult *res);

#endif
