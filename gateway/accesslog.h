/*
 * accesslog: one JSON line per proxied request on standard error, fixed fields (denials over a
 * client's budget: one access_summary line per address and second instead). Lines gather in
 * a per-worker buffer written with one write() when it fills, every ACCESSLOG_FLUSH_MS and at
 * shutdown: a syscall per batch, not per request.
 */
#ifndef GATEWAY_ACCESSLOG_H
#define GATEWAY_ACCESSLOG_H

#include <stdint.h>

#include "core/code.h"

struct access {
    const char *request_id, *method, *path, *route, *merchant, *action, *principal, *agent;
    const char *decision, *code;
    const char *tls_client; /* the client certificate's subject, "" without one */
    int status;
    uint64_t bytes;
    int64_t check_us, upstream_us;
    const char *surface; /* "authzen", "forward_auth", "mcp" (SPEC §8); NULL: a proxied request */
};

#define ACCESSLOG_FLUSH_BYTES (32 * 1024)
#define ACCESSLOG_FLUSH_MS    100

struct sb;
/** Append one access line to buf (a worker's), writing buf out once it holds FLUSH_BYTES. */
void accesslog_write(struct sb *buf, const struct access *a);
/** Write out what buf holds (its worker's timer, and at shutdown). */
void accesslog_flush(struct sb *buf);
/**
 * Write at once one `access_summary` line for the denials over a client's budget in the UTC
 * second unix_s (those have no access line of their own, as they have no audit entry: a flood
 * of garbage must not turn into megabytes of log a second either).
 */
void accesslog_summary(const char *client, int64_t unix_s, uint64_t count,
                       const uint32_t codes[CODE__COUNT]);

#endif
