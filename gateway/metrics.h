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
#include "gateway/state.h"

struct metrics {
    _Atomic uint64_t requests;
    _Atomic uint64_t decisions[CODE__COUNT];
    _Atomic uint64_t upstream_bytes;
    struct hist check_us;    /* mandate checking: route to decision */
    struct hist upstream_us; /* request sent to response complete */
};

/** Zero m and set up its histograms. */
void metrics_init(struct metrics *m);
/** Append the Prometheus text of m, of the audit writer's stats and of the state to b. */
void metrics_render(struct metrics *m, struct writer_stats *ws, const struct state_counts *sc,
                    struct sb *b);

#endif
