/*
 * worker: one thread, one event loop, one listener on the shared port (SO_REUSEPORT), its
 * own upstream pools and its own mailbox for the audit writer's answers. Everything a request
 * touches on the worker happens on this thread.
 */
#ifndef GATEWAY_WORKER_H
#define GATEWAY_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "audit/writer.h"
#include "core/log.h"
#include "gateway/enforce.h"
#include "gateway/http_parse.h"
#include "gateway/server.h"
#include "gateway/upstream.h"

/* Agent keys of cnf claims (SPEC §7), by thumbprint, parsed once: a direct-mapped cache. */
#define WORKER_POP_SLOTS 64
/* Idle request blocks a worker keeps for its next requests (proxy.c's request_new): past it, a
 * finished request's block is freed. */
#define WORKER_REQUEST_POOL 64

/*
 * Event priorities of a worker's loop. Everything runs at WORKER_PRIO_NORMAL, libevent's default
 * with three levels (nothing uses HIGH: it makes NORMAL the middle one), but the connections
 * whose client is over its denial budget (a flood, SPEC §5): theirs run only when nothing else is
 * ready, at most WORKER_LOW_PER_PASS callbacks before the loop looks for other work again, so that
 * a flood delays an honest client by a few callbacks, not by a pass over every flooding
 * connection.
 */
enum { WORKER_PRIO_HIGH, WORKER_PRIO_NORMAL, WORKER_PRIO_LOW, WORKER_PRIOS };
#define WORKER_LOW_PER_PASS 4

struct pop_slot {
    bool used;
    struct jwk key; /* kid = the thumbprint */
};

struct worker {
    int id;
    struct server *srv;
    pthread_t thread;
    struct event_base *base;
    struct evconnlistener *lst;
    struct evconnlistener *dlst; /* the decision listener (SPEC §8), or NULL */
    /* the decision listener's TLS and token, from the configuration at start (not reloadable) */
    struct tls_server *decision_tls;
    unsigned char decision_token_sha256[32];
    struct writer_mailbox mb;
    struct backend_conn *bc; /* this worker's connection to the state backend */
    struct upstream_pools *pools;
    struct flusher *flusher; /* writes plain connections' output at the end of a pass */
    struct config *conf;     /* this worker's reference to the current configuration */
    struct vcache *vcache;   /* verified mandates under conf */
    uint64_t conf_gen;
    int inflight;              /* requests begun and not finished; only this thread touches it */
    int unflushed;             /* connections flushing their last answer before they close */
    struct conn *conns;        /* every open client connection of this worker */
    struct hp_request scratch; /* conn.c's head parses, before a request owns a copy */
    struct hp_header *scratch_headers;
    void *request_pool[WORKER_REQUEST_POOL]; /* idle request blocks (proxy.c), at most the bound */
    int request_pool_n;
    size_t scratch_cap;
    struct pop_slot pop[WORKER_POP_SLOTS];
    uint64_t id_prefix, id_counter; /* request ids (proxy_new_request_id): prefix, counter */
    struct sb alog;                 /* access lines not yet written */
    struct sb head;                 /* an HTTP head being built, then added to its output whole */
    struct event *alog_ev;          /* writes them out every ACCESSLOG_FLUSH_MS */
    bool started;
    struct event *stop_ev, *drain_ev;
    struct event *resume_ev; /* re-enables accepting after a pause for lack of descriptors */
    int64_t drain_deadline_us;
};

/**
 * Create worker id: its base, listeners (the proxy's and the decision listener when configured;
 * bound now, so errors show at start) and server.
 */
struct worker *worker_new(struct server *s, int id, char **err) MUST_CHECK;
/** Start its thread. */
int worker_start(struct worker *w) MUST_CHECK;
/** Ask it (from any thread) to stop accepting, finish in-flight requests and exit its loop. */
void worker_stop(struct worker *w);
/** Wait for its thread, if it was started (after worker_stop). */
void worker_join(struct worker *w);
/**
 * Free it (after worker_join). Call only once nothing can deliver to its mailbox any more, i.e.
 * after writer_stop(): items of requests cut off by the drain deadline may still be queued there.
 */
void worker_free(struct worker *w);
/** The configuration for a new request on w (picks up a reload); borrowed until the next call. */
struct config *worker_config(struct worker *w);

#endif
