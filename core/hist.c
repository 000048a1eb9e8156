/*
 * hist: fixed-bucket histograms.
 */
#include "core/hist.h"

const uint64_t HIST_US_BOUNDS[] = {50,     100,     250,     500,     1000,     2500,
                                   5000,   10000,   25000,   50000,   100000,   250000,
                                   500000, 1000000, 2500000, 5000000, 10000000, 30000000};
const size_t HIST_US_NBOUNDS = sizeof(HIST_US_BOUNDS) / sizeof(HIST_US_BOUNDS[0]);

void hist_init(struct hist *h, const uint64_t *bounds, size_t n)
{
    h->bounds = bounds;
    h->n = n < HIST_MAX_BUCKETS ? n : HIST_MAX_BUCKETS;
    for (size_t i = 0; i <= HIST_MAX_BUCKETS; i++)
        atomic_init(&h->counts[i], 0);
    atomic_init(&h->sum, 0);
}

void hist_observe(struct hist *h, uint64_t v)
{
    size_t i = 0;
    while (i < h->n && v > h->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
}

void hist_render(const struct hist *h, const char *name, const char *help, double scale,
                 struct sb *b)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i <= h->n; i++) {
        cum += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if (i < h->n)
            sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, (double)h->bounds[i] / scale,
                      (unsigned long long)cum);
        else
            sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    sb_printf(b, "%s_sum %g\n%s_count %llu\n", name,
              (double)atomic_load_explicit(&h->sum, memory_order_relaxed) / scale, name,
              (unsigned long long)cum);
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    uint64_t total = 0, cum = 0;
    for (size_t i = 0; i <= h->n; i++)
        total += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    if (total == 0)
        return 0;
    for (size_t i = 0; i <= h->n; i++) {
        cum += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if ((double)cum >= q * (double)total)
            return i < h->n ? h->bounds[i] : UINT64_MAX;
    }
    return UINT64_MAX;
}
