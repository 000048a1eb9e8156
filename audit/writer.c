/*
 * writer: group commit of audit entries and state changes, and checkpoints.
 */
#include "audit/writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/checkpoint.h"
#include "audit/entry.h"
#include "core/log.h"

#define CHECKPOINT_INTERVAL_MS 2000
#define PRUNE_INTERVAL_MS      60000
#define STORED_SLOTS           1024
#define LINGER_US              2000 /* how long entries nobody waits for may wait for company */

static const uint64_t batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

struct writer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct writer_item *head, *tail;
    int awaited; /* queued items whose submitter waits for the commit */
    bool stopping;
    struct store *st;
    struct merkle_frontier tree;
    unsigned char last_leaf[32];
    const struct jwk *key;
    const char *origin;
    int64_t every;
    uint64_t checkpoint_size;
    int64_t checkpoint_ms, prune_ms;
    char *checkpoint; /* newest note; guarded by mu */
    /* Mandate texts already committed, by the first 16 hex digits of their SHA-256, direct-mapped:
     * a multi-use mandate's text is stored once, not offered again on every call. */
    uint64_t stored[STORED_SLOTS];
    struct writer_stats stats;
};

struct writer_item *writer_item_new(json_t *entry)
{
    struct writer_item *it = xcalloc(1, sizeof(*it));
    const char *why;
    if (entry_body_encode(entry, &it->body, &why) != 0) {
        log_error("audit entry refused: %s", why);
        it->bad = true;
    }
    json_decref(entry);
    return it;
}

void writer_item_add_jws(struct writer_item *it, const char *jws, const unsigned char sha[32])
{
    int i = it->jws[0] ? 1 : 0;
    it->jws[i] = xstrdup(jws);
    hex_encode(sha, 32, it->jws_sha[i]);
}

void writer_item_op(struct writer_item *it, enum writer_op_kind kind, const char *a, const char *b,
                    int64_t x, int64_t y)
{
    if (it->nops == WRITER_MAX_OPS)
        abort(); /* a programming error, not input */
    struct writer_op *op = &it->ops[it->nops++];
    op->kind = kind;
    snprintf(op->a, sizeof(op->a), "%s", a);
    snprintf(op->b, sizeof(op->b), "%s", b);
    op->x = x;
    op->y = y;
}

void writer_item_free(struct writer_item *it)
{
    if (!it)
        return;
    entry_body_clear(&it->body);
    free(it->jws[0]);
    free(it->jws[1]);
    free(it);
}

void writer_mailbox_init(struct writer_mailbox *mb, struct event_base *base, event_callback_fn cb,
                         void *arg)
{
    pthread_mutex_init(&mb->mu, NULL);
    mb->head = mb->tail = NULL;
    mb->ev = event_new(base, -1, 0, cb, arg);
}

void writer_mailbox_drain(struct writer_mailbox *mb)
{
    pthread_mutex_lock(&mb->mu);
    struct writer_item *it = mb->head;
    mb->head = mb->tail = NULL;
    pthread_mutex_unlock(&mb->mu);
    while (it) {
        struct writer_item *next = it->next;
        it->done(it);
        it = next;
    }
}

void writer_mailbox_clear(struct writer_mailbox *mb)
{
    event_free(mb->ev);
    pthread_mutex_destroy(&mb->mu);
}

void writer_submit(struct writer *w, struct writer_item *it)
{
    it->next = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->tail)
        w->tail->next = it;
    else
        w->head = it;
    w->tail = it;
    if (it->mb)
        w->awaited++;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

static uint64_t text_id(const char sha_hex[65])
{
    char head[17];
    memcpy(head, sha_hex, 16);
    head[16] = '\0';
    return strtoull(head, NULL, 16);
}

/* After COMMIT only: a rolled-back text must be offered again. */
static void remember_texts(struct writer *w, const struct writer_item *batch)
{
    for (const struct writer_item *it = batch; it; it = it->next)
        for (int i = 0; i < 2 && it->jws[i]; i++) {
            uint64_t id = text_id(it->jws_sha[i]);
            w->stored[id % STORED_SLOTS] = id;
        }
}

/* Append one item's entry and state change inside the open transaction. */
static int append(struct writer *w, struct writer_item *it)
{
    char prev[65];
    hex_encode(w->last_leaf, 32, prev);
    if (it->bad)
        return -1;
    size_t len;
    char *bytes = entry_seal(&it->body, w->tree.size, prev, &len);
    merkle_leaf_hash((unsigned char *)bytes, len, it->leaf);
    int rc = store_append(w->st, w->tree.size, bytes, len, it->leaf);
    free(bytes);
    for (int i = 0; rc == 0 && i < 2 && it->jws[i]; i++)
        if (w->stored[text_id(it->jws_sha[i]) % STORED_SLOTS] != text_id(it->jws_sha[i]))
            rc = store_put_mandate(w->st, it->jws_sha[i], it->jws[i]);
    for (int i = 0; rc == 0 && i < it->nops; i++) {
        const struct writer_op *op = &it->ops[i];
        if (op->kind == WOP_JTI)
            rc = store_put_jti(w->st, op->a, op->b, op->x, op->y);
        else if (op->kind == WOP_REVOKE)
            rc = store_put_revocation(w->st, op->a, op->b, now_ms());
        else
            rc = store_put_spend(w->st, op->a, op->b, op->x, (int)op->y);
    }
    if (rc != 0)
        return -1;
    it->seq = w->tree.size;
    memcpy(w->last_leaf, it->leaf, 32);
    unsigned char done[MERKLE_MAX_HEIGHT][32];
    int k = merkle_append(&w->tree, it->leaf, done);
    /* Subtree roots, so that roots and proofs later cost O(log n) reads (one row per eight
     * entries on average). */
    for (int j = STORE_NODE_MIN_LEVEL - 1; j < k; j++)
        if (store_put_node(w->st, j + 1, (w->tree.size >> (j + 1)) - 1, done[j]) != 0)
            return -1;
    return 0;
}

/* Sign a checkpoint of the current tree and store it in the open transaction. */
static int checkpoint(struct writer *w, char **note)
{
    unsigned char root[32];
    merkle_root(&w->tree, root);
    *note = checkpoint_sign(w->key, w->origin, w->tree.size, root);
    if (!*note || store_put_checkpoint(w->st, w->tree.size, *note) != 0) {
        free(*note);
        *note = NULL;
        return -1;
    }
    return 0;
}

static void publish_checkpoint(struct writer *w, char *note)
{
    if (!note)
        return;
    pthread_mutex_lock(&w->mu);
    free(w->checkpoint);
    w->checkpoint = note;
    pthread_mutex_unlock(&w->mu);
    w->checkpoint_size = w->tree.size;
    w->checkpoint_ms = now_ms();
}

static void deliver(struct writer_item *batch, bool ok)
{
    struct writer_mailbox *woken[64];
    size_t nwoken = 0;
    while (batch) {
        struct writer_item *it = batch;
        batch = it->next;
        it->ok = ok;
        it->next = NULL;
        if (!it->mb) {
            writer_item_free(it);
            continue;
        }
        pthread_mutex_lock(&it->mb->mu);
        if (it->mb->tail)
            it->mb->tail->next = it;
        else
            it->mb->head = it;
        it->mb->tail = it;
        pthread_mutex_unlock(&it->mb->mu);
        size_t i = 0;
        while (i < nwoken && woken[i] != it->mb)
            i++;
        if (i == nwoken && nwoken < 64)
            woken[nwoken++] = it->mb;
        else if (i == nwoken)
            event_active(it->mb->ev, 0, 0);
    }
    for (size_t i = 0; i < nwoken; i++)
        event_active(woken[i]->ev, 0, 0);
}

/* One transaction: every queued item, plus a checkpoint when one is due. */
static void commit_batch(struct writer *w, struct writer_item *batch, bool final)
{
    int64_t t0 = mono_us();
    struct merkle_frontier saved = w->tree;
    unsigned char saved_leaf[32];
    memcpy(saved_leaf, w->last_leaf, 32);
    size_t n = 0;
    int rc = store_begin(w->st);
    for (struct writer_item *it = batch; rc == 0 && it; it = it->next, n++)
        rc = append(w, it);
    int64_t ms = now_ms();
    char *note = NULL;
    bool due = w->tree.size > w->checkpoint_size &&
               (final || w->tree.size - w->checkpoint_size >= (uint64_t)w->every ||
                ms - w->checkpoint_ms >= CHECKPOINT_INTERVAL_MS);
    if (rc == 0 && due)
        rc = checkpoint(w, &note);
    if (rc == 0 && ms - w->prune_ms >= PRUNE_INTERVAL_MS) {
        /* Used jtis only matter until their mandate expires (plus generous skew). */
        rc = store_prune_jtis(w->st, ms / 1000 - 3600);
        w->prune_ms = ms;
    }
    if (rc == 0)
        rc = store_commit(w->st);
    if (rc != 0) {
        store_rollback(w->st);
        w->tree = saved;
        memcpy(w->last_leaf, saved_leaf, 32);
        free(note);
        note = NULL;
        atomic_fetch_add(&w->stats.failures, 1);
        log_error("audit commit failed: %zu entries refused", n);
    } else {
        remember_texts(w, batch);
        publish_checkpoint(w, note);
        atomic_fetch_add(&w->stats.entries, n);
        atomic_fetch_add(&w->stats.batches, 1);
        if (n) {
            hist_observe(&w->stats.batch_size, n);
            hist_observe(&w->stats.commit_us, (uint64_t)(mono_us() - t0));
        }
    }
    deliver(batch, rc == 0);
}

/*
 * When only entries nobody waits for are queued (outcomes, denials), give them a moment: the
 * next allow usually follows within it and they share its fsync instead of costing one of their
 * own, which an allow arriving meanwhile would have to wait behind. Called with mu held.
 */
static void linger(struct writer *w)
{
    if (!w->head || w->awaited || w->stopping)
        return;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += LINGER_US * 1000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!w->awaited && !w->stopping && pthread_cond_timedwait(&w->cond, &w->mu, &until) == 0)
        ;
}

static void *run(void *arg)
{
    struct writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&w->cond, &w->mu, &ts);
            if (!w->head && w->tree.size > w->checkpoint_size &&
                now_ms() - w->checkpoint_ms >= CHECKPOINT_INTERVAL_MS)
                break;
        }
        linger(w);
        struct writer_item *batch = w->head;
        bool stop = w->stopping;
        w->head = w->tail = NULL;
        w->awaited = 0;
        pthread_mutex_unlock(&w->mu);
        commit_batch(w, batch, stop);
        pthread_mutex_lock(&w->mu);
        if (stop && !w->head)
            break;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

struct writer *writer_start(struct store *st, const struct merkle_frontier *f,
                            const unsigned char last_leaf[32], const struct jwk *key,
                            const char *origin, int64_t every)
{
    struct writer *w = xcalloc(1, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->st = st;
    w->tree = *f;
    memcpy(w->last_leaf, last_leaf, 32);
    w->key = key;
    w->origin = origin;
    w->every = every;
    w->checkpoint = store_last_checkpoint(st);
    w->checkpoint_size = w->tree.size; /* a restart re-signs only when new entries arrive */
    w->checkpoint_ms = now_ms();
    hist_init(&w->stats.batch_size, batch_bounds, sizeof(batch_bounds) / sizeof(batch_bounds[0]));
    hist_init(&w->stats.commit_us, HIST_US_BOUNDS, HIST_US_NBOUNDS);
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
        free(w->checkpoint);
        free(w);
        return NULL;
    }
    return w;
}

void writer_stop(struct writer *w)
{
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    store_close(w->st);
    free(w->checkpoint);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cond);
    free(w);
}

char *writer_checkpoint(struct writer *w)
{
    pthread_mutex_lock(&w->mu);
    char *s = xstrdup(w->checkpoint);
    pthread_mutex_unlock(&w->mu);
    return s;
}

struct writer_stats *writer_stats(struct writer *w)
{
    return &w->stats;
}
