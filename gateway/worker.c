/*
 * worker: thread, event loop, listener and drain of one proxy worker.
 */
#include "gateway/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "core/log.h"
#include "gateway/accesslog.h"
#include "gateway/backend.h"
#include "gateway/conn.h"
#include "gateway/proxy.h"
#include "gateway/tls.h"

#define DRAIN_TIMEOUT_US (10 * 1000000)
#define ACCEPT_PAUSE_MS  100 /* out of descriptors: how long accepting pauses */

static void on_mailbox(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    writer_mailbox_drain(&w->mb);
}

/* Poll until in-flight requests are done (or the drain deadline passes), then leave the loop. */
static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if ((w->inflight == 0 && w->unflushed == 0) || mono_us() > w->drain_deadline_us) {
        if (w->inflight || w->unflushed)
            log_warn("worker %d: %d requests still in flight at the drain deadline", w->id,
                     w->inflight + w->unflushed);
        event_base_loopexit(w->base, NULL);
        return;
    }
    struct timeval tv = {0, 20000};
    event_add(w->drain_ev, &tv);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    evconnlistener_disable(w->lst);
    if (w->dlst)
        evconnlistener_disable(w->dlst);
    conn_drain_all(w);
    w->drain_deadline_us = mono_us() + DRAIN_TIMEOUT_US;
    on_drain(-1, 0, w);
}

static void on_alog_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    accesslog_flush(&((struct worker *)arg)->alog);
}

static void on_resume_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if (!atomic_load(&w->srv->draining)) {
        evconnlistener_enable(w->lst);
        if (w->dlst)
            evconnlistener_enable(w->dlst);
    }
}

/* accept() failed. Out of descriptors (EMFILE/ENFILE), the pending connection stays in the
 * backlog and the listener would wake again at once: pause accepting instead of spinning, and
 * say so at most once a second for the whole process. */
static void on_accept(struct evconnlistener *lst, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)lst;
    conn_accept(arg, fd, sa, salen, false);
}

static void on_accept_decision(struct evconnlistener *lst, evutil_socket_t fd, struct sockaddr *sa,
                               int salen, void *arg)
{
    (void)lst;
    conn_accept(arg, fd, sa, salen, true);
}

static void on_accept_error(struct evconnlistener *lst, void *arg)
{
    struct worker *w = arg;
    int err = EVUTIL_SOCKET_ERROR();
    /* Per UTC second, the clock of the log lines' timestamps. */
    static _Atomic int64_t logged_unix_s;
    int64_t now_unix_s = now_s(), last = atomic_load(&logged_unix_s);
    if (now_unix_s != last && atomic_compare_exchange_strong(&logged_unix_s, &last, now_unix_s))
        log_warn("accept: %s; pausing new connections for %d ms", strerror(err), ACCEPT_PAUSE_MS);
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        evconnlistener_disable(lst);
        struct timeval pause = {0, ACCEPT_PAUSE_MS * 1000};
        evtimer_add(w->resume_ev, &pause);
    }
}

static struct evconnlistener *listen_on(struct worker *w, const char *host, int port,
                                        evconnlistener_cb cb, char **err)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char spec[300];
    snprintf(spec, sizeof(spec), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    memset(&ss, 0, sizeof(ss));
    if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &len) != 0) {
        *err = xasprintf("listen: %s: not a numeric address", spec);
        return NULL;
    }
    struct evconnlistener *l = evconnlistener_new_bind(
        w->base, cb, w,
        LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
        1024, (struct sockaddr *)&ss, len);
    if (!l)
        *err = xasprintf("listen: %s: %s", spec, strerror(errno));
    return l;
}

struct worker *worker_new(struct server *s, int id, char **err)
{
    struct worker *w = xcalloc(1, sizeof(*w));
    w->id = id;
    w->srv = s;
    w->conf = server_config(s);
    w->conf_gen = atomic_load(&s->conf_gen);
    /* The changelist folds bufferevent enable/disable calls into the next epoll_wait instead of
     * an epoll_ctl each (several per proxied request). Safe here: no descriptor is dup()ed. */
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    event_config_set_max_dispatch_interval(ec, NULL, WORKER_LOW_PER_PASS, WORKER_PRIO_LOW);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!w->base || event_base_priority_init(w->base, WORKER_PRIOS) != 0)
        abort();
    w->lst = listen_on(w, w->conf->listen_host, w->conf->listen_port, on_accept, err);
    if (w->lst && w->conf->has_decision &&
        !(w->dlst = listen_on(w, w->conf->decision_host, w->conf->decision_port, on_accept_decision,
                              err))) {
        evconnlistener_free(w->lst);
        w->lst = NULL;
    }
    if (!w->lst) {
        event_base_free(w->base);
        config_unref(w->conf);
        free(w);
        return NULL;
    }
    evconnlistener_set_error_cb(w->lst, on_accept_error);
    if (w->dlst) {
        evconnlistener_set_error_cb(w->dlst, on_accept_error);
        if (w->conf->decision_tls)
            w->decision_tls = tls_server_ref(w->conf->decision_tls);
        memcpy(w->decision_token_sha256, w->conf->decision_token_sha256, 32);
    }
    w->flusher = flusher_new(w->base, &s->metrics.flush);
    w->pools = upstream_pools_new(w->base, w->flusher);
    w->bc = backend_conn_new(s->backend, w->base);
    w->vcache = xcalloc(1, sizeof(*w->vcache));
    writer_mailbox_init(&w->mb, w->base, on_mailbox, w);
    w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
    w->drain_ev = evtimer_new(w->base, on_drain, w);
    w->resume_ev = evtimer_new(w->base, on_resume_accept, w);
    w->alog_ev = event_new(w->base, -1, EV_PERSIST, on_alog_tick, w);
    struct timeval tick = {0, ACCESSLOG_FLUSH_MS * 1000};
    event_add(w->alog_ev, &tick);
    return w;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

int worker_start(struct worker *w)
{
    if (pthread_create(&w->thread, NULL, run, w) != 0)
        return -1;
    w->started = true;
    return 0;
}

void worker_stop(struct worker *w)
{
    event_active(w->stop_ev, 0, 0);
}

void worker_join(struct worker *w)
{
    if (w->started)
        pthread_join(w->thread, NULL);
    w->started = false;
}

void worker_free(struct worker *w)
{
    backend_conn_free(w->bc); /* admissions still waiting end as state_unavailable */
    conn_free_all(w);         /* requests cut off by the drain deadline end as client_gone */
    evconnlistener_free(w->lst);
    if (w->dlst)
        evconnlistener_free(w->dlst);
    tls_server_unref(w->decision_tls);
    upstream_pools_free(w->pools);
    flusher_free(w->flusher); /* after every connection it writes for */
    writer_mailbox_clear(&w->mb);
    event_free(w->stop_ev);
    event_free(w->drain_ev);
    event_free(w->resume_ev);
    event_free(w->alog_ev);
    accesslog_flush(&w->alog);
    sb_clear(&w->alog);
    sb_clear(&w->head);
    event_base_free(w->base);
    config_unref(w->conf);
    free(w->vcache);
    free(w->scratch_headers);
    for (int i = 0; i < w->request_pool_n; i++)
        free(w->request_pool[i]);
    for (size_t i = 0; i < WORKER_POP_SLOTS; i++)
        if (w->pop[i].used)
            jwk_clear(&w->pop[i].key);
    free(w);
}

struct config *worker_config(struct worker *w)
{
    uint64_t gen = atomic_load(&w->srv->conf_gen);
    if (gen != w->conf_gen) {
        config_unref(w->conf);
        w->conf = server_config(w->srv);
        w->conf_gen = gen;
        memset(w->vcache, 0, sizeof(*w->vcache)); /* the keys may have changed */
    }
    return w->conf;
}
