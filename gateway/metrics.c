/*
 * metrics: Prometheus rendering of the gateway's counters.
 */
#include "gateway/metrics.h"

#include <string.h>

void metrics_init(struct metrics *m)
{
    atomic_init(&m->requests, 0);
    atomic_init(&m->upstream_bytes, 0);
    for (int i = 0; i < CODE__COUNT; i++)
        atomic_init(&m->decisions[i], 0);
    for (int i = 0; i < MS__COUNT; i++)
        for (int j = 0; j < 2; j++)
            atomic_init(&m->by_surface[i][j], 0);
    atomic_init(&m->mcp_open, 0);
    hist_init(&m->check_us, HIST_US_BOUNDS, HIST_US_NBOUNDS);
    hist_init(&m->upstream_us, HIST_US_BOUNDS, HIST_US_NBOUNDS);
}

static const char *const surface_names[MS__COUNT] = {"proxy", "authzen", "forward_auth", "mcp"};

enum metrics_surface metrics_surface(const char *surface)
{
    for (int i = 1; surface && i < MS__COUNT; i++)
        if (strcmp(surface, surface_names[i]) == 0)
            return (enum metrics_surface)i;
    return MS_PROXY;
}

static void render_state(const struct state_counts *sc, struct sb *b)
{
    sb_printf(b,
              "# HELP mandate_state_entries Entries held in memory, by table.\n"
              "# TYPE mandate_state_entries gauge\n"
              "mandate_state_entries{table=\"jtis\"} %zu\n"
              "mandate_state_entries{table=\"rate_buckets\"} %zu\n"
              "mandate_state_entries{table=\"revocations\"} %zu\n"
              "mandate_state_entries{table=\"ledger\"} %zu\n"
              "# HELP mandate_state_lock_max_seconds Longest hold of the admission lock.\n"
              "# TYPE mandate_state_lock_max_seconds gauge\n"
              "mandate_state_lock_max_seconds %.6f\n",
              sc->jtis, sc->buckets, sc->revocations, sc->ledger, (double)sc->lock_max_us / 1e6);
    hist_render(sc->lock_us, "mandate_state_lock_seconds",
                "Time the admission lock was held per admission.", 1e6, b);
}

void metrics_render(struct metrics *m, struct writer_stats *ws, const struct state_counts *sc,
                    struct sb *b)
{
    render_state(sc, b);
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
    sb_puts(b, "# HELP mandate_decisions_by_surface_total Decisions by the surface they came "
               "through (SPEC §8).\n# TYPE mandate_decisions_by_surface_total counter\n");
    for (int i = 0; i < MS__COUNT; i++)
        for (int j = 0; j < 2; j++)
            sb_printf(b,
                      "mandate_decisions_by_surface_total{surface=\"%s\",decision=\"%s\"} %llu\n",
                      surface_names[i], j ? "deny" : "allow",
                      (unsigned long long)atomic_load(&m->by_surface[i][j]));
    sb_printf(b,
              "# HELP mandate_flood_pauses_total Next requests of connections over their client's "
              "denial budget read later (SPEC §5 floods).\n"
              "# TYPE mandate_flood_pauses_total counter\nmandate_flood_pauses_total %llu\n",
              (unsigned long long)atomic_load(&m->flood_pauses));
    sb_printf(b,
              "# HELP mandate_writes_total Outputs of plain connections written at the end of a "
              "loop pass, by whether the socket took all (through) or the rest waited for it to "
              "be writable (backlog).\n# TYPE mandate_writes_total counter\n"
              "mandate_writes_total{way=\"through\"} %llu\nmandate_writes_total{way=\"backlog\"} "
              "%llu\n",
              (unsigned long long)atomic_load(&m->flush.through),
              (unsigned long long)atomic_load(&m->flush.backlog));
    sb_printf(b,
              "# HELP mandate_mcp_open_total MCP requests of open methods, forwarded without a "
              "mandate or a decision.\n# TYPE mandate_mcp_open_total counter\n"
              "mandate_mcp_open_total %llu\n",
              (unsigned long long)atomic_load(&m->mcp_open));
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
    const struct {
        const char *name, *help;
        _Atomic uint64_t *v;
    } counters[] = {
        {"mandate_audit_entries_total", "Entries committed.", &ws->entries},
        {"mandate_audit_batches_total", "Transactions of entries committed.", &ws->batches},
        {"mandate_audit_led_batches_total",
         "Of those, committed by the worker that brought an allow (the writer was idle).",
         &ws->led},
        {"mandate_audit_writer_wakeups_total",
         "Times the idle audit writer thread was woken (a thread hop).", &ws->wakeups},
        {"mandate_audit_wal_copies_total", "WAL copies into the database by the checkpointer.",
         &ws->wal_checkpoints},
        {"mandate_audit_wal_writer_copies_total",
         "WAL copies the writer finished itself, the WAL past its bound.", &ws->wal_restarts},
        {"mandate_audit_commit_failures_total", "Audit transactions rolled back.", &ws->failures},
        {"mandate_audit_retried_batches_total", "Failed batches retried item by item.",
         &ws->retried},
        {"mandate_audit_dropped_entries_total",
         "Entries nobody waited for that were never written (each also logged).", &ws->dropped},
        {"mandate_audit_queue_full_total", "Submissions refused because the queue was full.",
         &ws->queue_full},
        {"mandate_audit_checkpoint_failures_total", "Checkpoints not signed or not stored.",
         &ws->checkpoint_failures},
    };
    for (size_t i = 0; i < ARRAY_LEN(counters); i++)
        sb_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", counters[i].name,
                  counters[i].help, counters[i].name, counters[i].name,
                  (unsigned long long)atomic_load(counters[i].v));
}
