/*
 * metrics: Prometheus rendering of the gateway's counters.
 */
#include "gateway/metrics.h"

void metrics_init(struct metrics *m)
{
    atomic_init(&m->requests, 0);
    atomic_init(&m->upstream_bytes, 0);
    for (int i = 0; i < CODE__COUNT; i++)
        atomic_init(&m->decisions[i], 0);
    hist_init(&m->check_us, HIST_US_BOUNDS, HIST_US_NBOUNDS);
    hist_init(&m->upstream_us, HIST_US_BOUNDS, HIST_US_NBOUNDS);
}

void metrics_render(struct metrics *m, struct writer_stats *ws, struct sb *b)
{
    sb_printf(b,
              "# HELP mandate_requests_total Requests received on the proxy listener.\n"
              "# TYPE mandate_requests_total counter\nmandate_requests_total %llu\n",
              (unsigned long long)atomic_load(&m->requests));
    sb_puts(b, "# HELP mandate_decisions_total Decisions by code (ok is an allow).\n"
               "# TYPE mandate_decisions_total counter\n");
    for (int i = 0; i < CODE__COUNT; i++) {
        uint64_t n = atomic_load(&m->decisions[i]);
        if (n)
            sb_printf(b, "mandate_decisions_total{code=\"%s\"} %llu\n", code_name((enum code)i),
                      (unsigned long long)n);
    }
    sb_printf(b,
              "# HELP mandate_upstream_response_bytes_total Response bytes streamed back.\n"
              "# TYPE mandate_upstream_response_bytes_total counter\n"
              "mandate_upstream_response_bytes_total %llu\n",
              (unsigned long long)atomic_load(&m->upstream_bytes));
    hist_render(&m->check_us, "mandate_check_seconds",
                "Time from request to decision (routing, mandate checks, state).", 1e6, b);
    hist_render(&m->upstream_us, "mandate_upstream_seconds",
                "Time from forwarding to the end of the upstream response.", 1e6, b);
    hist_render(&ws->batch_size, "mandate_audit_batch_entries",
                "Entries per audit transaction (group commit).", 1, b);
    hist_render(&ws->commit_us, "mandate_audit_commit_seconds",
                "Audit transaction time, BEGIN to COMMIT.", 1e6, b);
    sb_printf(b,
              "# HELP mandate_audit_entries_total Entries committed.\n"
              "# TYPE mandate_audit_entries_total counter\nmandate_audit_entries_total %llu\n"
              "# HELP mandate_audit_commit_failures_total Failed audit transactions.\n"
              "# TYPE mandate_audit_commit_failures_total counter\n"
              "mandate_audit_commit_failures_total %llu\n",
              (unsigned long long)atomic_load(&ws->entries),
              (unsigned long long)atomic_load(&ws->failures));
}
