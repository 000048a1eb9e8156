/*
 * accesslog: one JSON line per proxied request on standard error, fixed fields, one write().
 */
#ifndef GATEWAY_ACCESSLOG_H
#define GATEWAY_ACCESSLOG_H

#include <stdint.h>

struct access {
    const char *request_id, *method, *path, *route, *merchant, *action, *principal, *agent;
    const char *decision, *code;
    const char *tls_client; /* the client certificate's subject, "" without one */
    int status;
    uint64_t bytes;
    int64_t check_us, upstream_us;
};

/** Write one access line. */
void accesslog_write(const struct access *a);

#endif
