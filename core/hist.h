/*
 * hist: a lock-free histogram with fixed upper bounds, rendered in Prometheus text format.
 * Observers on any thread; readers see a consistent-enough snapshot for monitoring.
 */
#ifndef CORE_HIST_H
#define CORE_HIST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/log.h"

#define HIST_MAX_BUCKETS 24

struct hist {
    const uint64_t *bounds; /* ascending upper bounds, inclusive */
    size_t n;
    _Atomic uint64_t counts[HIST_MAX_BUCKETS + 1]; /* last: +Inf */
    _Atomic uint64_t sum;
};

/** Microsecond buckets from 50 µs to 30 s. */
extern const uint64_t HIST_US_BOUNDS[];
extern const size_t HIST_US_NBOUNDS;

/** Initialise h with bounds (borrowed, static). */
void hist_init(struct hist *h, const uint64_t *bounds, size_t n);
/** Count one observation of v. */
void hist_observe(struct hist *h, uint64_t v);
/** Append "name_bucket{le=...} n" lines etc. to b; scale divides bounds and sum (1e6 for µs→s). */
void hist_render(const struct hist *h, const char *name, const char *help, double scale,
                 struct sb *b);
/** The value at quantile q (0..1) as the upper bound of its bucket. */
uint64_t hist_quantile(const struct hist *h, double q);

#endif
