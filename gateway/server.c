/*
 * server: start-up (state from the database, writer, workers, admin), signals and shutdown.
 */
#include "gateway/server.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "audit/snap.h"
#include "audit/store.h"
#include "core/log.h"
#include "core/sha256.h"
#include "core/sjson.h"
#include "gateway/accesslog.h"
#include "gateway/admin.h"
#include "gateway/backend.h"
#include "gateway/pgstate.h"
#include "gateway/jwks_remote.h"
#include "gateway/worker.h"

/* Remote key sets (SPEC §7): fetched on the main thread's base. One server per process. */
static struct jwks_remote *jwks_fetcher;

struct config *server_config(struct server *s)
{
    pthread_mutex_lock(&s->conf_mu);
    struct config *c = config_ref(s->conf);
    pthread_mutex_unlock(&s->conf_mu);
    return c;
}

/* The used jtis: the log's newest snapshot and the entries after it (audit/snap.h). */
static int load_jtis(struct state *state, struct store *st, int64_t keep_from, char **err)
{
    struct snap sn;
    int64_t t0 = mono_us();
    if (snap_load(store_db(st), keep_from, &sn, err) != 0)
        return -1;
    state_reserve_jtis(state, sn.n);
    for (size_t i = 0; i < sn.n; i++) {
        char iss[SNAP_MAX_ID + 1], jti[SNAP_MAX_ID + 1];
        memcpy(iss, sn.v[i].iss, sn.v[i].iss_len);
        iss[sn.v[i].iss_len] = '\0';
        memcpy(jti, sn.v[i].jti, sn.v[i].jti_len);
        jti[sn.v[i].jti_len] = '\0';
        state_load_jti(state, iss, jti, sn.v[i].exp, sn.v[i].used);
    }
    state_set_horizon(state, sn.horizon);
    log_info("database: %zu used jtis from the snapshot at %llu and %zu entries after it, in "
             "%lld ms",
             sn.n, (unsigned long long)sn.base_seq, sn.tail, (long long)(mono_us() - t0) / 1000);
    snap_free(&sn);
    return 0;
}

static void load_revocation(void *arg, const char *kind, const char *value, int64_t ts_ms)
{
    (void)ts_ms;
    enum revoke_kind k;
    if (revoke_kind_parse(kind, &k) == 0)
        state_revoke(arg, k, value);
}

static void load_spend(void *arg, const char *key, int64_t amount)
{
    state_load_spend(arg, key, amount);
}

/* Open the database, rebuild the in-memory state and start the writer. With a shared backend,
 * uses and spend are not this node's to load: only its revocations are. */
static int open_store(struct server *s, const struct config *conf)
{
    char *err = NULL;
    struct store *st = store_open(conf->database, STORE_CREATE, &err);
    struct merkle_frontier tree;
    unsigned char last[32];
    bool local = conf->state_backend == STATE_LOCAL;
    if (!st || store_tail(st, &tree, last, &err) != 0 ||
        (local &&
         load_jtis(s->state, st, now_s() - conf->mandate_limits.clock_skew_s, &err) != 0) ||
        store_each_revocation(st, load_revocation, s->state) != 0 ||
        (local && store_each_spend(st, load_spend, s->state) != 0)) {
        log_error("database: %s", err ? err : "cannot read state");
        free(err);
        store_close(st);
        return -1;
    }
    log_info("database %s: %llu entries", conf->database, (unsigned long long)tree.size);
    s->writer = writer_start(st, &tree, last,
                             &(struct writer_opts){.key = &conf->checkpoint_key,
                                                   .origin = conf->audit_origin,
                                                   .checkpoint_every = conf->checkpoint_every,
                                                   .max_queue = (size_t)conf->max_queue,
                                                   .min_free_bytes = conf->min_free_bytes,
                                                   .db_path = conf->database,
                                                   .keep_jti_s = state_retain_s(s->state),
                                                   .snap_every = (uint64_t)conf->snapshot_every});
    if (!s->writer) {
        store_close(st);
        return -1;
    }
    return 0;
}

/* A revocation entry (with its row in this node's revocations table), nobody waiting. */
static void submit_revocation(struct server *s, enum revoke_kind kind, const char *value)
{
    const char *k = revoke_kind_name(kind);
    json_t *e = json_pack("{sI ss ss s{ss}}", "ts_ms", (json_int_t)now_ms(), "kind", "revocation",
                          "request_id", "", "revoke", k, value);
    struct writer_item *it = writer_item_new(e);
    writer_item_op(it, WOP_REVOKE, k, value, 0, 0);
    if (!writer_submit(s->writer, it))
        writer_item_free(it);
}

/* Another node stored a revocation (SPEC §6): in effect here now, and in this node's log. */
static void on_learned_revocation(void *arg, enum revoke_kind kind, const char *value)
{
    struct server *s = arg;
    if (state_revoke(s->state, kind, value) == 1) {
        log_info("revoked %s %s (shared state)", revoke_kind_name(kind), value);
        submit_revocation(s, kind, value);
    }
}

/* The backend of conf's "state"; with postgres, only once the writer runs: recovery reads this
 * node's log and revocations learned at start are written to it. */
static int open_backend(struct server *s, const struct config *conf)
{
    if (conf->state_backend == STATE_LOCAL) {
        s->backend = backend_local_new(s->state);
        return 0;
    }
    char *err = NULL;
    s->backend = pgstate_new(s->state,
                             &(struct pgstate_opts){.dsn = conf->state_dsn,
                                                    .node = conf->state_node,
                                                    .db_path = conf->database,
                                                    .learned = on_learned_revocation,
                                                    .arg = s},
                             &err);
    if (!s->backend) {
        log_error("state: PostgreSQL: %s", err);
        free(err);
        return -1;
    }
    log_info("state: shared on PostgreSQL as node %s", conf->state_node);
    return 0;
}

/* A key set of the configuration: whose, its canonical public text and that text's SHA-256. */
struct keyset_ref {
    const char *owner;
    char *text;
    char sha[65];
};

/* By owner, then SHA-256: the same sets give the same config entry. */
static int cmp_keyset_ref(const void *a, const void *b)
{
    const struct keyset_ref *x = a, *y = b;
    int c = strcmp(x->owner, y->owner);
    return c ? c : strcmp(x->sha, y->sha);
}

/*
 * The config entry (SPEC §4), with every key set of conf (issuers and merchants; a remote set as
 * currently fetched) stored beside it and listed in it as {"owner","sha256"}: an auditor can
 * verify old mandates after a rotation, and a set written into the database later is not one the
 * log vouches for. With slot and next: next stands for slot's current set (a remote set the
 * fetcher is about to install: the entry is queued before any decision can use it).
 */
static void submit_config_entry(struct server *s, const struct config *conf,
                                const struct jwks_remote_slot *slot, const struct jwks *next)
{
    char sha[65];
    hex_encode(conf->sha256, 32, sha);
    const struct keyring *rings[] = {&conf->issuers, &conf->merchant_keys};
    size_t n = 0;
    struct keyset_ref *v = xcalloc(conf->issuers.n + conf->merchant_keys.n + 1, sizeof(*v));
    for (size_t r = 0; r < 2; r++)
        for (size_t i = 0; i < rings[r]->n; i++) {
            const struct jwks *set = slot && rings[r]->v[i].remote == slot
                                         ? next
                                         : keyring_get(rings[r], rings[r]->v[i].issuer);
            if (!set)
                continue; /* a remote set not fetched yet */
            unsigned char h[32];
            v[n].owner = rings[r]->v[i].issuer;
            v[n].text = jwks_canonical_public(set);
            sha256(v[n].text, strlen(v[n].text), h);
            hex_encode(h, 32, v[n].sha);
            n++;
        }
    qsort(v, n, sizeof(*v), cmp_keyset_ref);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        sjson_append(list, json_pack("{ss ss}", "owner", v[i].owner, "sha256", v[i].sha));
    json_t *e = json_pack("{sI ss ss ss so}", "ts_ms", (json_int_t)now_ms(), "kind", "config",
                          "request_id", "", "config_sha256", sha, "keysets", list);
    if (conf->state_node)
        sjson_set(e, "node", json_string(conf->state_node));
    struct writer_item *it = writer_item_new(e);
    for (size_t i = 0; i < n; i++)
        writer_item_add_keyset(it, v[i].owner, v[i].text, v[i].sha); /* takes the text */
    free(v);
    if (!writer_submit(s->writer, it))
        writer_item_free(it);
}

/*
 * The fetcher got a new remote set between reloads (its first included): a config entry with the
 * same config_sha256, listing every set with the new one, so that `mandate-audit verify` without
 * --jwks can check the mandates signed with a rotated remote key. Main thread, like a reload, so
 * s->conf is the configuration whose ring holds slot.
 */
static void on_new_keyset(void *arg, const char *kind, const char *owner,
                          const struct jwks_remote_slot *slot, const struct jwks *next)
{
    struct server *s = arg;
    log_info("audit: storing the new key set of %s %s", kind, owner);
    struct config *conf = server_config(s);
    submit_config_entry(s, conf, slot, next);
    config_unref(conf);
}

/* One denial_summary entry (SPEC §5); nobody waits for it. */
static void submit_summary(const struct flood_summary *fs, void *arg)
{
    struct server *s = arg;
    json_t *codes = json_object();
    for (int c = 0; c < CODE__COUNT; c++)
        if (fs->codes[c])
            sjson_set(codes, code_name((enum code)c), json_integer(fs->codes[c]));
    json_t *e = json_pack("{sI ss ss ss sI so}", "ts_ms", (json_int_t)fs->unix_s * 1000, "kind",
                          "denial_summary", "request_id", "", "client", fs->client, "count",
                          (json_int_t)fs->count, "codes", codes);
    struct writer_item *it = writer_item_new(e);
    if (!writer_submit(s->writer, it))
        writer_item_free(it); /* counted and logged by the writer */
    accesslog_summary(fs->client, fs->unix_s, fs->count, fs->codes);
}

static void on_flood_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server *s = arg;
    flood_flush(s->flood, now_s(), submit_summary, s);
}

static void on_sighup(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server *s = arg;
    struct config *old = server_config(s);
    struct cfg c;
    struct config *conf = config_load(old->path, &c);
    for (size_t i = 0; i < c.nerrors; i++)
        log_error("reload: %s", c.errors[i]);
    cfg_clear(&c);
    if (!conf) {
        log_error("reload failed: keeping the running configuration");
        config_unref(old);
        return;
    }
    config_reload_check(old, conf);
    struct jwks_remote_ring rings[2];
    size_t nrings = jwks_remote_config_rings(conf, rings);
    jwks_remote_reload(jwks_fetcher, rings, nrings); /* before the workers can see conf */
    log_min_level = conf->log_level;
    state_set_rate(s->state, conf->rate_per_s, conf->rate_burst);
    flood_set_rate(s->flood, conf->denials_per_s);
    /* Queued before the workers can see conf: its key sets are in the log before any decision
     * made with them. */
    submit_config_entry(s, conf, NULL, NULL);
    pthread_mutex_lock(&s->conf_mu);
    struct config *prev = s->conf;
    s->conf = conf;
    atomic_fetch_add(&s->conf_gen, 1);
    pthread_mutex_unlock(&s->conf_mu);
    config_unref(prev);
    log_info("reloaded %s", conf->path);
    config_unref(old);
}

static void on_sigterm(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server *s = arg;
    log_info("draining: no new connections, finishing requests in flight");
    atomic_store(&s->draining, true);
    event_base_loopexit(s->base, NULL);
}

/* As many descriptors as the hard limit allows: connections are bounded by max_connections and
 * the accept back-off, not by a soft limit someone forgot to raise. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            log_warn("cannot raise the descriptor limit: %s", strerror(errno));
    }
}

int server_run(struct config *conf)
{
    int rc = 2;
    signal(SIGPIPE, SIG_IGN);
    /* Buffers of a megabyte or more (the used-jti snapshot's, built every snapshot_every
     * entries) are mapped and given back when freed: glibc's adaptive threshold would keep them
     * in a thread's heap, which then only grows. Nothing on the request path is this large. */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    raise_nofile();
    log_route_libevent();
    log_min_level = conf->log_level;
    if (evthread_use_pthreads() != 0)
        abort();
    struct server *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->conf_mu, NULL);
    s->conf = conf;
    metrics_init(&s->metrics);
    s->state = state_new(conf->rate_per_s, conf->rate_burst, conf->mandate_limits.clock_skew_s);
    s->flood = flood_new(conf->denials_per_s);
    s->base = event_base_new();
    struct admin *admin = NULL;
    struct event *hup = evsignal_new(s->base, SIGHUP, on_sighup, s);
    struct event *term = evsignal_new(s->base, SIGTERM, on_sigterm, s);
    struct event *intr = evsignal_new(s->base, SIGINT, on_sigterm, s);
    event_add(hup, NULL);
    event_add(term, NULL);
    event_add(intr, NULL);
    struct event *tick = event_new(s->base, -1, EV_PERSIST, on_flood_tick, s);
    event_add(tick, &(struct timeval){1, 0});
    if (open_store(s, conf) != 0)
        goto out;
    submit_config_entry(s, conf, NULL, NULL);
    if (open_backend(s, conf) != 0)
        goto out;
    struct jwks_remote_ring rings[2];
    size_t nrings = jwks_remote_config_rings(conf, rings);
    jwks_fetcher =
        jwks_remote_start(s->base, rings, nrings,
                          &(struct jwks_remote_opts){
                              .user_agent = "mandate-gateway", .on_new = on_new_keyset, .arg = s});

    char *err = NULL;
    if (conf->has_admin && !(admin = admin_start(s, conf, &err))) {
        log_error("%s", err);
        free(err);
        goto out;
    }
    s->workers = xcalloc((size_t)conf->workers, sizeof(*s->workers));
    for (int i = 0; i < conf->workers; i++) {
        s->workers[i] = worker_new(s, i, &err);
        if (!s->workers[i]) {
            log_error("%s", err);
            free(err);
            goto out;
        }
        s->nworkers++;
    }
    for (int i = 0; i < s->nworkers; i++)
        if (worker_start(s->workers[i]) != 0) {
            log_error("cannot start worker threads");
            goto out;
        }
    log_info("listening on %s:%d with %d workers", conf->listen_host, conf->listen_port,
             s->nworkers);
    event_base_dispatch(s->base);
    rc = 0;

out:
    for (int i = 0; i < s->nworkers; i++)
        worker_stop(s->workers[i]);
    for (int i = 0; i < s->nworkers; i++)
        worker_join(s->workers[i]);
    if (s->writer) {
        flood_flush(s->flood, INT64_MAX, submit_summary, s); /* pending counts (SPEC §5) */
        /* Commits what is queued, signs a final checkpoint and delivers every item: only then
         * may the workers' mailboxes go (a drain that hit its deadline leaves items in flight). */
        writer_stop(s->writer);
    }
    for (int i = 0; i < s->nworkers; i++)
        worker_free(s->workers[i]);
    jwks_remote_free(jwks_fetcher); /* the workers could wake it until they were joined */
    jwks_fetcher = NULL;
    admin_free(admin);
    backend_free(s->backend); /* after every connection of it (workers, admin) */
    free(s->workers);
    event_free(hup);
    event_free(term);
    event_free(intr);
    event_free(tick);
    event_base_free(s->base);
    flood_free(s->flood);
    state_free(s->state);
    config_unref(s->conf);
    pthread_mutex_destroy(&s->conf_mu);
    free(s);
    if (rc == 0)
        log_info("stopped");
    return rc;
}
