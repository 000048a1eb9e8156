/*
 * server: the gateway process. It owns the shared pieces (configuration, state, audit writer,
 * metrics), starts one worker thread per `workers` (each its own event loop and listener on the
 * same port with SO_REUSEPORT), runs the admin listener and signals on the main thread, reloads
 * on SIGHUP and drains on SIGTERM.
 */
#ifndef GATEWAY_SERVER_H
#define GATEWAY_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "audit/writer.h"
#include "gateway/config.h"
#include "gateway/flood.h"
#include "gateway/metrics.h"
#include "gateway/state.h"

struct worker;
struct backend;

struct server {
    pthread_mutex_t conf_mu;
    struct config *conf;       /* current configuration; guarded by conf_mu */
    _Atomic uint64_t conf_gen; /* bumped on every successful reload */
    struct state *state;
    struct backend *backend; /* where uses, carts, spend and revocations are kept (SPEC §6) */
    struct writer *writer;
    struct flood *flood; /* per-client denial budget (SPEC §5) */
    struct metrics metrics;
    struct worker **workers;
    int nworkers;
    _Atomic bool draining;
    struct event_base *base; /* main thread: signals, admin listener */
};

/** Serve conf (takes ownership) until SIGTERM; returns the exit status. */
int server_run(struct config *conf);
/** A reference to the current configuration (release with config_unref). */
struct config *server_config(struct server *s);

#endif
