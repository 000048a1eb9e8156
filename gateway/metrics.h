/*
 * metrics: process-wide counters and histograms, updated lock-free from any worker and rendered
 * as Prometheus text on the admin listener's /metrics.
 */
#ifndef GATEWAY_METRICS_H
#define GATEWAY_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "audit/writer.h"
#include "core/code.h"
#include "core/hist.h"
#include "gateway/flush.h"
#include "gateway/state.h"

/* The surfaces a decision comes through (SPEC §8), for decisions by surface. */
enum metrics_surface { MS_PROXY, MS_AUTHZEN, MS_FORWARD_AUTH, MS_MCP, MS__COUNT };

struct metrics {
    _Atomic uint64_t requests;
    _Atomic uint64_t decisions[CODE__COUNT];
    _Atomic uint64_t by_surface[MS__COUNT][2]; /* [surface][0: allow, 1: deny] */
    _Atomic uint64_t mcp_open;                 /* MCP open methods forwarded without a decision */
    _Atomic uint64_t upstream_bytes;
    _Atomic uint64_t flood_pauses; /* reads of a flooding client's next request put off (conn.c) */
    struct flush_stats flush;      /* written through, or left to the bufferevent (flush.c) */
    struct hist check_us;          /* mandate checking: route to decision */
    struct hist upstream_us;       /* request sent to response complete */
};

/** Zero m and set up its histograms. */
void metrics_init(struct metrics *m);
/** The surface of a decision's "surface" member (NULL: the proxy). */
enum metrics_surface metrics_surface(const char *surface);
/** Append the Prometheus text of m, of the audit writer's stats and of the state to b. */
void metrics_render(struct metrics *m, struct writer_stats *ws, const struct state_counts *sc,
                    struct sb *b);

#endif
