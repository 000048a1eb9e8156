/*
 * writer: group commit of audit entries and state changes, and checkpoints. A batch that fails
 * is rolled back and its items retried one by one, so that one bad item fails alone; a
 * checkpoint is stored on its own after the entries it covers, so that it never fails them. The
 * queue is bounded, and the free space under the database is watched for the workers. The WAL is
 * copied into the database by a thread of its own, off the commit path.
 */
#include "audit/writer.h"

#include <errno.h>
#include <libgen.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "audit/checkpoint.h"
#include "audit/entry.h"
#include "audit/snap.h"
#include "core/log.h"

#define CHECKPOINT_INTERVAL_MS 2000
#define STORED_SLOTS           1024
#define LINGER_US              2000    /* how long entries nobody waits for may wait for company */
#define DISK_CHECK_US          1000000 /* statvfs at most this often */
#define DROP_REPORT_US         1000000 /* one summary line of dropped entries at most this often */
#define DROP_LINES_PER_REPORT  8       /* dropped entries logged whole between two summaries */
#define WRITER_MAX_ROUNDS                                                                          \
    8 /* a batch is tried at most this often, one refused item less each time */
#define WRITER_MAX_TRIES 3 /* transactions an unawaited item may see fail before it is dropped */
/*
 * The WAL: the checkpointer copies it into the database once it holds WAL_WAKE_BYTES, and again
 * after every WAL_STEP_BYTES more while it has not started over. Past wal_max_bytes (default
 * WAL_MAX_BYTES) the writer copies the rest itself between two transactions, so that the next
 * one starts it over.
 */
#define WAL_WAKE_BYTES (4LL << 20)
#define WAL_STEP_BYTES (1LL << 20)
#define WAL_MAX_BYTES  (64LL << 20)
#define WAL_WARN_US    60000000 /* "a reader holds the WAL" at most this often */
#define CK_BUSY_MS     1000     /* how long the checkpointer's statements wait for a lock */

static const uint64_t batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

/* A snapshot of the used jtis, built from a connection (audit/snap.h). */
struct built {
    struct sb bytes;
    uint64_t seq; /* covers entries [0, seq); 0: the build failed */
    int64_t horizon;
    size_t records;
};

struct writer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct writer_item *head, *tail;
    size_t queued, max_queue;
    int awaited;          /* queued items whose submitter waits for the commit */
    int64_t lazy_mono_us; /* CLOCK_MONOTONIC (mono_us) when the queue's first item came unwoken */
    bool busy; /* the store and the writer's own state are in use, by the writer thread or a
                  leader: whoever sets it (under mu) has them to itself until it clears it */
    bool stopping;
    bool started; /* the thread holds mu in its loop: writer_start returns once it is so */
    bool closed;  /* the thread took its last batch: submissions are refused; guarded by mu */
    struct store *st;
    struct merkle_frontier tree;
    unsigned char last_leaf[32];
    struct jwk key; /* our own reference: a reload frees the configuration's */
    char *origin;
    int64_t every;
    uint64_t checkpoint_size;
    int64_t checkpoint_ms;
    char *checkpoint; /* newest note; guarded by mu */
    /* Free space under the database: looked at by the writer thread, read by the workers. */
    char *db_dir;
    int64_t min_free_bytes;
    int64_t disk_check_mono_us; /* CLOCK_MONOTONIC (mono_us) of the last statvfs */
    _Atomic bool disk_low;
    /* Dropped entries are summed up in one line a second at most, from any thread. */
    _Atomic int64_t drop_report_mono_us; /* CLOCK_MONOTONIC (mono_us) of the last summary */
    _Atomic uint64_t drops_reported;
    int drop_lines;             /* writer thread: dropped entries logged whole this second */
    int64_t drop_lines_mono_us; /* CLOCK_MONOTONIC (mono_us) when drop_lines was reset */
    /* Mandate texts already committed, by the first 16 hex digits of their SHA-256, direct-mapped:
     * a multi-use mandate's text is stored once, not offered again on every call. */
    uint64_t stored[STORED_SLOTS];
    struct sb uses; /* writer thread: the used-jti records of the entry being appended */
    /* Snapshots of the used jtis (audit/snap.h): built by the checkpointer from its own
     * connection, stored by the writer between two batches. */
    uint64_t snap_seq;  /* writer thread: the newest stored covers [0, snap_seq) */
    uint64_t snap_next; /* writer thread: the tree size at which the next is asked for */
    uint64_t snap_every;
    int64_t keep_jti_s;
    bool snap_asked; /* writer thread: the checkpointer is building one */
    /* The checkpointer: a thread with its own connection that copies the WAL into the database
     * (PRAGMA wal_checkpoint(PASSIVE)) when the writer's WAL hook wakes it. */
    struct {
        pthread_t thread;
        sqlite3 *db; /* NULL: no checkpointer, SQLite's own checkpoints on commit */
        pthread_mutex_t mu;
        pthread_cond_t cond;
        bool wake, stop;      /* guarded by mu */
        bool snap_wanted;     /* guarded by mu: build a snapshot */
        _Atomic bool reading; /* the checkpointer's snapshot read holds a WAL read mark */
        bool snap_ready;      /* guarded by mu: snap is built, to be stored */
        struct built snap;
        pthread_mutex_t copy; /* held while the WAL is copied, by either thread */
        int wake_pages, step_pages, restart_pages;
        /* Writer thread (the WAL hook and the loop): */
        int pages;            /* in the WAL after the last commit */
        int woken_at;         /* pages when the checkpointer was last woken; 0 once it restarted */
        int restarted_at;     /* pages when the writer last copied the rest itself */
        bool restart_due;     /* the writer is to copy the rest before its next transaction */
        bool idle_woken;      /* woken since the last commit because the writer was idle */
        int64_t warn_mono_us; /* CLOCK_MONOTONIC (mono_us) of the last "a reader holds it" */
    } ck;
    int page_size;
    int64_t wal_max_bytes;
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

struct writer_item *writer_item_new_built(struct entry_builder *eb)
{
    struct writer_item *it = xcalloc(1, sizeof(*it));
    const char *why;
    if (entry_builder_finish(eb, &it->body, &why) != 0) {
        log_error("audit entry refused: %s", why);
        it->bad = true;
    }
    return it;
}

void writer_item_add_jws(struct writer_item *it, const char *jws, const unsigned char sha[32])
{
    int i = it->jws[0] ? 1 : 0;
    it->jws[i] = xstrdup(jws);
    hex_encode(sha, 32, it->jws_sha[i]);
}

/* snprintf's "%s" without its format parsing (twice on every allow) */
static void copy_bounded(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void writer_item_op(struct writer_item *it, enum writer_op_kind kind, const char *a, const char *b,
                    int64_t x, int64_t y)
{
    if (it->nops == WRITER_MAX_OPS)
        abort(); /* a programming error, not input */
    struct writer_op *op = &it->ops[it->nops++];
    op->kind = kind;
    copy_bounded(op->a, sizeof(op->a), a);
    copy_bounded(op->b, sizeof(op->b), b);
    op->x = x;
    op->y = y;
}

void writer_item_add_keyset(struct writer_item *it, const char *owner, char *jwks,
                            const char sha_hex[65])
{
    it->keysets = xrealloc(it->keysets, (it->nkeysets + 1) * sizeof(*it->keysets));
    struct writer_keyset *k = &it->keysets[it->nkeysets++];
    k->owner = xstrdup(owner);
    k->jwks = jwks;
    memcpy(k->sha, sha_hex, 64);
    k->sha[64] = '\0';
}

void writer_item_free(struct writer_item *it)
{
    if (!it)
        return;
    for (size_t i = 0; i < it->nkeysets; i++) {
        free(it->keysets[i].owner);
        free(it->keysets[i].jwks);
    }
    free(it->keysets);
    entry_body_clear(&it->body);
    free(it->jws[0]);
    free(it->jws[1]);
    free(it);
}

const char *spend_status_name(enum spend_status s)
{
    static const char *const names[] = {"reserved", "committed", "released", "unknown"};
    return names[s];
}

void writer_mailbox_init(struct writer_mailbox *mb, struct event_base *base, event_callback_fn cb,
                         void *arg)
{
    pthread_mutex_init(&mb->mu, NULL);
    mb->head = mb->tail = NULL;
    mb->ev = event_new(base, -1, 0, cb, arg);
    mb->may_lead = false;
    mb->poke = NULL;
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
    /* Delivered but never drained (the worker's loop had ended): their done() would reach into
     * requests that are being freed, so only the items go. */
    struct writer_item *it = mb->head;
    mb->head = mb->tail = NULL;
    while (it) {
        struct writer_item *next = it->next;
        writer_item_free(it);
        it = next;
    }
    event_free(mb->ev);
    mb->ev = NULL;
    if (mb->poke)
        event_free(mb->poke);
    mb->poke = NULL;
    pthread_mutex_destroy(&mb->mu);
}

/* Sum up the entries dropped since the last summary in one line: at most once a second, or now
 * when forced (at stop). */
static void report_drops(struct writer *w, bool force)
{
    uint64_t total = atomic_load(&w->stats.dropped);
    if (total == atomic_load(&w->drops_reported))
        return;
    int64_t now = mono_us();
    int64_t last = atomic_load(&w->drop_report_mono_us);
    if (!force && (now - last < DROP_REPORT_US ||
                   !atomic_compare_exchange_strong(&w->drop_report_mono_us, &last, now)))
        return;
    uint64_t before = atomic_exchange(&w->drops_reported, total);
    log_error("audit commit failed or queue full: %llu entries nobody waits for were dropped "
              "(%llu since start)",
              (unsigned long long)(total - before), (unsigned long long)total);
}

static void lead(struct writer *w);

/* Queue it (mu held): false, and mu released, when it is refused. */
static bool enqueue(struct writer *w, struct writer_item *it)
{
    it->next = NULL;
    /* An item that settles state memory already changed goes in even past the bound: dropping it
     * would make the database disagree with memory after a restart. There are at most as many as
     * allows in flight, which the bound itself limits. */
    bool full = w->queued >= w->max_queue && !it->settles;
    if (full || w->closed) {
        pthread_mutex_unlock(&w->mu);
        if (full)
            atomic_fetch_add(&w->stats.queue_full, 1);
        if (!it->mb) {
            atomic_fetch_add(&w->stats.dropped, 1);
            report_drops(w, false);
        }
        return false;
    }
    if (w->tail)
        w->tail->next = it;
    else
        w->head = it;
    w->tail = it;
    w->queued++;
    if (it->mb)
        w->awaited++;
    return true;
}

bool writer_submit(struct writer *w, struct writer_item *it)
{
    pthread_mutex_lock(&w->mu);
    if (!enqueue(w, it))
        return false;
    if (it->mb && it->mb->may_lead && !w->busy && !w->stopping) {
        lead(w); /* unlocks */
        return true;
    }
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    return true;
}

/* A worker's linger timer: the items it left unwoken are still queued. */
static void on_poke(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct writer *w = arg;
    pthread_mutex_lock(&w->mu);
    if (w->head && !w->busy)
        pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

bool writer_submit_lazy(struct writer *w, struct writer_item *it, struct writer_mailbox *mb)
{
    static const struct timeval linger_tv = {0, LINGER_US};
    if (!mb->poke && !(mb->poke = evtimer_new(event_get_base(mb->ev), on_poke, w)))
        return writer_submit(w, it);
    pthread_mutex_lock(&w->mu);
    bool first = w->head == NULL;
    if (!enqueue(w, it))
        return false;
    /* Anything else queued has woken the writer, or a batch in progress will be followed by
     * the next at once (release). */
    if (!first || w->busy || w->stopping) {
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->mu);
        return true;
    }
    w->lazy_mono_us = mono_us();
    pthread_mutex_unlock(&w->mu);
    if (!evtimer_pending(mb->poke, NULL)) /* not put off by every item: a linger at most */
        evtimer_add(mb->poke, &linger_tv);
    return true;
}

static uint64_t text_id(const char sha_hex[65])
{
    uint64_t id = 0; /* the first 16 digits of hex_encode's lower-case output */
    for (int i = 0; i < 16; i++)
        id = id << 4 | (uint64_t)(sha_hex[i] <= '9' ? sha_hex[i] - '0' : sha_hex[i] - 'a' + 10);
    return id;
}

/* After COMMIT only: a rolled-back text must be offered again. */
static void remember_texts(struct writer *w, const struct writer_item *from,
                           const struct writer_item *until)
{
    for (const struct writer_item *it = from; it != until; it = it->next)
        for (int i = 0; i < 2 && it->jws[i]; i++) {
            uint64_t id = text_id(it->jws_sha[i]);
            w->stored[id % STORED_SLOTS] = id;
        }
}

/* Append one item's entry and state change inside the open transaction. */
static int append(struct writer *w, struct writer_item *it)
{
    sb_reset(&w->uses);
    for (int i = 0; i < it->nops; i++)
        if (it->ops[i].kind == WOP_JTI)
            snap_put(&w->uses, it->ops[i].a, it->ops[i].b, it->ops[i].x, it->ops[i].y);
    it->seq = w->tree.size;
    int rc = store_append_entry(w->st, &w->tree, w->last_leaf, &it->body, w->uses.buf, w->uses.len,
                                it->leaf);
    for (int i = 0; rc == 0 && i < 2 && it->jws[i]; i++)
        if (w->stored[text_id(it->jws_sha[i]) % STORED_SLOTS] != text_id(it->jws_sha[i]))
            rc = store_put_mandate(w->st, it->jws_sha[i], it->jws[i]);
    for (int i = 0; rc == 0 && i < it->nops; i++) {
        const struct writer_op *op = &it->ops[i];
        if (op->kind == WOP_JTI)
            continue; /* in the row */
        if (op->kind == WOP_REVOKE)
            rc = store_put_revocation(w->st, op->a, op->b, now_ms());
        else
            rc = store_put_spend(w->st, op->a, op->b, op->x, (int)op->y);
    }
    for (size_t i = 0; rc == 0 && i < it->nkeysets; i++)
        rc = store_put_keyset(w->st, it->keysets[i].sha, it->keysets[i].owner, it->keysets[i].jwks,
                              now_ms());
    return rc == 0 ? 0 : -1; /* transact() rolls back the tree with the transaction */
}

static void publish_checkpoint(struct writer *w, char *note)
{
    pthread_mutex_lock(&w->mu);
    free(w->checkpoint);
    w->checkpoint = note;
    pthread_mutex_unlock(&w->mu);
}

static void wake_checkpointer(struct writer *w);

/* Build a snapshot of the used jtis from db (this thread's connection) into b (seq 0: failed). */
static void build_snapshot(struct writer *w, sqlite3 *db, struct built *b)
{
    struct snap sn;
    char *err = NULL;
    int64_t keep_from = now_s() - w->keep_jti_s;
    sb_reset(&b->bytes);
    b->seq = 0;
    if (snap_load(db, keep_from, &sn, &err) != 0) {
        log_error("audit: a snapshot of the used jtis: %s; tried again later", err);
        free(err);
        return;
    }
    snap_encode(&sn, &b->bytes);
    b->seq = sn.seq;
    /* What it dropped now, or what an older one dropped (a clock set back): never less. */
    b->horizon = sn.horizon > keep_from ? sn.horizon : keep_from;
    b->records = sn.n;
    snap_free(&sn);
}

/* A snapshot the checkpointer has built, taken into *b: true if there was one. */
static bool take_built(struct writer *w, struct built *b)
{
    if (!w->ck.db)
        return false;
    pthread_mutex_lock(&w->ck.mu);
    bool have = w->ck.snap_ready;
    if (have) {
        w->ck.snap_ready = false;
        *b = w->ck.snap; /* its buffer with it: the checkpointer starts a new one */
        memset(&w->ck.snap, 0, sizeof(w->ck.snap));
    }
    pthread_mutex_unlock(&w->ck.mu);
    return have;
}

/*
 * Store b if it covers more than the newest stored. The next is then due as many entries later
 * as b has records (snap_every at least): a snapshot rewrites every live jti, so what snapshots
 * cost per entry stays bounded however large the state grows.
 */
static void store_built(struct writer *w, const struct built *b)
{
    if (b->seq <= w->snap_seq)
        return;
    if (store_put_snapshot(w->st, b->seq, b->horizon, b->bytes.buf, b->bytes.len) != 0) {
        log_error("audit commit failed: the snapshot of the used jtis at %llu was not stored; "
                  "tried again later",
                  (unsigned long long)b->seq);
        return;
    }
    w->snap_seq = b->seq;
    w->snap_next = b->seq + (b->records > w->snap_every ? b->records : w->snap_every);
}

/*
 * Snapshots of the used jtis, so that a start reads a bounded tail of rows after the newest:
 * asked of the checkpointer when due and stored here once built (in a transaction of its own,
 * between two batches); at stop, the one built meanwhile stored, then a last one built here.
 * One that fails is asked again snap_every entries later: the rows after the older one still
 * say everything meanwhile.
 */
static void snapshot(struct writer *w, bool final)
{
    struct built b = {0};
    bool tried = take_built(w, &b);
    if (tried) {
        w->snap_asked = false;
        store_built(w, &b);
    }
    if ((final && w->tree.size > w->snap_seq) || (!w->ck.db && w->tree.size >= w->snap_next)) {
        tried = true;
        build_snapshot(w, store_db(w->st), &b);
        store_built(w, &b);
    }
    sb_clear(&b.bytes);
    if (tried && w->snap_next <= w->tree.size)
        w->snap_next = w->tree.size + w->snap_every; /* it failed: not again at once */
    if (!final && w->ck.db && !w->snap_asked && w->tree.size >= w->snap_next) {
        w->snap_asked = true;
        pthread_mutex_lock(&w->ck.mu);
        w->ck.snap_wanted = true;
        pthread_mutex_unlock(&w->ck.mu);
        wake_checkpointer(w);
    }
}

/*
 * A checkpoint when one is due and a snapshot of the used jtis, each in its own transaction
 * after the entries: neither can fail an entry. A checkpoint that cannot be signed or stored is
 * tried again with the next batch (or the next idle second). Snapshots (megabytes, maybe) only
 * on the writer thread: a worker that led the batch has connections waiting on its loop.
 */
static void housekeeping(struct writer *w, bool final, bool led)
{
    int64_t ms = now_ms();
    bool due = w->tree.size > w->checkpoint_size &&
               (final || w->tree.size - w->checkpoint_size >= (uint64_t)w->every ||
                ms - w->checkpoint_ms >= CHECKPOINT_INTERVAL_MS);
    if (due) {
        unsigned char root[32];
        merkle_root(&w->tree, root);
        char *note = checkpoint_sign(&w->key, w->origin, w->tree.size, root);
        bool signed_ok = note != NULL;
        if (note && store_put_checkpoint(w->st, w->tree.size, note) == 0) {
            publish_checkpoint(w, note);
            w->checkpoint_size = w->tree.size;
            w->checkpoint_ms = ms;
        } else {
            free(note);
            atomic_fetch_add(&w->stats.checkpoint_failures, 1);
            log_error("audit commit failed: the checkpoint of %llu entries was %s; the entries "
                      "are stored, the checkpoint is tried again",
                      (unsigned long long)w->tree.size, signed_ok ? "not stored" : "not signed");
        }
    }
    if (!led)
        snapshot(w, final);
}

/* Count and log an entry nobody waits for that could not be written. Writer thread. */
static void drop(struct writer *w, const struct writer_item *it)
{
    atomic_fetch_add(&w->stats.dropped, 1);
    if (w->drop_lines < DROP_LINES_PER_REPORT && it->body.text) {
        w->drop_lines++;
        /* The fields say what was lost (kind, request_id, decision): enough to reconcile. */
        size_t len = it->body.len && it->body.text[it->body.len - 1] == ',' ? it->body.len - 1
                                                                            : it->body.len;
        log_error("audit commit failed: entry dropped: {%.*s}", (int)(len > 512 ? 512 : len),
                  it->body.text);
    }
}

/* Hand each item back: to its mailbox, or freed (counted when it was not written). */
static void deliver(struct writer *w, struct writer_item *batch)
{
    struct writer_mailbox *woken[64];
    size_t nwoken = 0;
    while (batch) {
        struct writer_item *it = batch;
        batch = it->next;
        it->next = NULL;
        if (!it->mb) {
            if (!it->ok)
                drop(w, it);
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

static bool item_specific(int sqlite_rc)
{
    switch (sqlite_rc & 0xff) {
    case SQLITE_CONSTRAINT:
    case SQLITE_TOOBIG:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_ERROR:
        return true;
    default:
        return false;
    }
}

/*
 * One transaction for the items of batch not marked bad. 0 when it committed (their ok is set).
 * Otherwise it was rolled back, with the tree, last leaf and seq as they were before, and *culprit
 * is the item whose statements the store refused, or NULL when the transaction as a whole failed
 * (BEGIN or COMMIT: the database busy beyond the timeout, the disk full or failing).
 */
static int transact(struct writer *w, struct writer_item *batch, size_t *n,
                    struct writer_item **culprit)
{
    int64_t t0 = mono_us();
    struct merkle_frontier saved = w->tree;
    unsigned char saved_leaf[32];
    memcpy(saved_leaf, w->last_leaf, 32);
    *n = 0;
    *culprit = NULL;
    int rc = store_begin(w->st);
    for (struct writer_item *it = batch; rc == 0 && it; it = it->next)
        if (!it->bad) {
            rc = append(w, it);
            /* Only what this item's rows did is its fault (a constraint, a size); a full disk,
             * an I/O error or a lock fails whatever is written next just the same. */
            if (rc != 0 && item_specific(sqlite3_errcode(store_db(w->st))))
                *culprit = it;
            (*n)++;
        }
    if (rc == 0)
        rc = store_commit(w->st);
    if (rc != 0) {
        store_rollback(w->st);
        w->tree = saved;
        memcpy(w->last_leaf, saved_leaf, 32);
        atomic_fetch_add(&w->stats.failures, 1);
        return -1;
    }
    for (struct writer_item *it = batch; it; it = it->next)
        it->ok = !it->bad;
    remember_texts(w, batch, NULL);
    atomic_fetch_add(&w->stats.entries, *n);
    atomic_fetch_add(&w->stats.batches, 1);
    hist_observe(&w->stats.batch_size, *n);
    hist_observe(&w->stats.commit_us, (uint64_t)(mono_us() - t0));
    return 0;
}

/*
 * Put the items nobody waits for back at the head of the queue, for the next batch: a busy or
 * briefly failing database does not lose denials and outcomes. The others are answered now (their
 * requests cannot wait); items past WRITER_MAX_TRIES are dropped and counted. Returns what is left
 * to deliver.
 */
static struct writer_item *requeue(struct writer *w, struct writer_item *batch)
{
    struct writer_item *keep = NULL, **kt = &keep, *back = NULL, *last = NULL;
    size_t nback = 0;
    for (struct writer_item *it = batch, *next; it; it = next) {
        next = it->next;
        it->next = NULL;
        if (!it->mb && !it->bad && ++it->tries < WRITER_MAX_TRIES) {
            if (last)
                last->next = it;
            else
                back = it;
            last = it;
            nback++;
        } else {
            *kt = it;
            kt = &it->next;
        }
    }
    if (back) {
        pthread_mutex_lock(&w->mu);
        last->next = w->head;
        if (!w->head)
            w->tail = last;
        w->head = back;
        w->queued += nback;
        pthread_mutex_unlock(&w->mu);
    }
    return keep;
}

/*
 * Every queued item in one transaction (group commit). When the store refuses one item's
 * statements, the batch is tried again without it, so that only that item fails and the others
 * keep their answers and state changes (a denial, a spend status). When the transaction fails as
 * a whole, the items waited for fail and the others go back to the queue. Then housekeeping
 * (led: on the thread of a worker that leads, see lead()).
 */
static void commit_batch(struct writer *w, struct writer_item *batch, bool final, bool led)
{
    size_t n = 0;
    struct writer_item *culprit = NULL;
    for (int round = 0; round < WRITER_MAX_ROUNDS; round++) {
        bool any = false;
        for (struct writer_item *it = batch; it && !any; it = it->next)
            any = !it->bad;
        if (!any || transact(w, batch, &n, &culprit) == 0)
            break;
        if (!culprit) {
            log_error("audit commit failed: a transaction of %zu entries; the ones nobody waits "
                      "for are tried again",
                      n);
            batch = requeue(w, batch);
            break;
        }
        culprit->bad = true;
        if (round == 0)
            atomic_fetch_add(&w->stats.retried, 1);
        log_error("audit commit failed: the store refused an entry; %s",
                  round + 1 < WRITER_MAX_ROUNDS ? "the others are tried again without it"
                                                : "giving up on the batch");
    }
    deliver(w, batch);
    housekeeping(w, final, led);
}

/* Look at the free space under the database, at most once a second (or now when forced). */
static void watch_disk(struct writer *w, bool now)
{
    if (!w->db_dir)
        return;
    int64_t t = mono_us();
    if (!now && t - w->disk_check_mono_us < DISK_CHECK_US)
        return;
    w->disk_check_mono_us = t;
    struct statvfs sv;
    if (statvfs(w->db_dir, &sv) != 0)
        return; /* keep the last answer */
    int64_t free_bytes = (int64_t)sv.f_bavail * (int64_t)sv.f_frsize;
    bool low = w->min_free_bytes > 0 && free_bytes < w->min_free_bytes;
    if (atomic_exchange(&w->disk_low, low) != low) {
        if (low)
            log_error("audit: %lld bytes free under %s, below audit.min_free_bytes %lld",
                      (long long)free_bytes, w->db_dir, (long long)w->min_free_bytes);
        else
            log_info("audit: %lld bytes free under %s again", (long long)free_bytes, w->db_dir);
    }
}

/* What the writer thread does about once a second, whether entries arrive or not. */
static void periodic(struct writer *w)
{
    watch_disk(w, false);
    report_drops(w, false);
    int64_t t = mono_us();
    if (t - w->drop_lines_mono_us >= DROP_REPORT_US) {
        w->drop_lines = 0;
        w->drop_lines_mono_us = t;
    }
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
    /* From when the first of them came, if it came without waking the writer. */
    int64_t wait_us = LINGER_US;
    if (w->lazy_mono_us && (wait_us = w->lazy_mono_us + LINGER_US - mono_us()) <= 0)
        return;
    struct timespec until; /* pthread_cond_timedwait's clock */
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += wait_us / 1000000;
    until.tv_nsec += (wait_us % 1000000) * 1000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!w->awaited && !w->stopping && pthread_cond_timedwait(&w->cond, &w->mu, &until) == 0)
        ;
}

/* --- the WAL, copied into the database off the commit path ------------------------------------ */

/*
 * Copy the WAL into the database as far as it goes without waiting for anyone (PASSIVE), timed
 * in h. Returns the pages it could not copy (a reader still uses them, or the writer added them
 * meanwhile), or -1 when it did not run (an error is logged; the next wake tries again).
 */
static int copy_wal(struct writer *w, sqlite3 *db, struct hist *h)
{
    int log = 0, done = 0;
    int64_t t0 = mono_us();
    pthread_mutex_lock(&w->ck.copy);
    int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    pthread_mutex_unlock(&w->ck.copy);
    if ((rc & 0xff) == SQLITE_BUSY)
        return -1; /* a recovery, or another process's checkpoint: next time */
    if (rc != SQLITE_OK) {
        log_error("audit: copying the WAL into the database: %s", sqlite3_errstr(rc));
        return -1;
    }
    hist_observe(h, (uint64_t)(mono_us() - t0));
    return log - done;
}

static void *checkpointer(void *arg)
{
    struct writer *w = arg;
    pthread_mutex_lock(&w->ck.mu);
    for (;;) {
        while (!w->ck.wake && !w->ck.stop)
            pthread_cond_wait(&w->ck.cond, &w->ck.mu);
        if (w->ck.stop)
            break;
        w->ck.wake = false;
        bool snap = w->ck.snap_wanted;
        w->ck.snap_wanted = false;
        pthread_mutex_unlock(&w->ck.mu);
        if (copy_wal(w, w->ck.db, &w->stats.wal_copy_us) >= 0)
            atomic_fetch_add(&w->stats.wal_checkpoints, 1);
        struct built b = {0};
        atomic_store(&w->ck.reading, snap);
        if (snap)
            build_snapshot(w, w->ck.db, &b); /* failed: seq 0, and the writer asks again */
        atomic_store(&w->ck.reading, false);
        pthread_mutex_lock(&w->ck.mu);
        if (snap) {
            sb_clear(&w->ck.snap.bytes);
            w->ck.snap = b;
            w->ck.snap_ready = true;
        }
    }
    pthread_mutex_unlock(&w->ck.mu);
    return NULL;
}

static void wake_checkpointer(struct writer *w)
{
    pthread_mutex_lock(&w->ck.mu);
    w->ck.wake = true;
    pthread_cond_signal(&w->ck.cond);
    pthread_mutex_unlock(&w->ck.mu);
}

/*
 * After every commit, on the writer thread, with the pages in the WAL (sqlite3_wal_hook, which
 * replaces SQLite's own checkpoint that would copy them inside COMMIT): wake the checkpointer as
 * the WAL grows, and note when it has grown so far that the writer must finish the copy itself.
 */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)db;
    (void)name;
    struct writer *w = arg;
    uint64_t bytes = (uint64_t)pages * (uint64_t)w->page_size;
    atomic_store(&w->stats.wal_bytes, bytes);
    if (bytes > atomic_load(&w->stats.wal_bytes_max))
        atomic_store(&w->stats.wal_bytes_max, bytes);
    w->ck.pages = pages;
    w->ck.idle_woken = false;
    if (pages < w->ck.wake_pages) {
        w->ck.woken_at = w->ck.restarted_at = 0; /* the WAL started over */
        return SQLITE_OK;
    }
    if (pages >= w->ck.woken_at + w->ck.step_pages) {
        w->ck.woken_at = pages;
        wake_checkpointer(w);
    }
    if (pages >= w->ck.restart_pages && pages >= w->ck.restarted_at + w->ck.step_pages)
        w->ck.restart_due = true;
    return SQLITE_OK;
}

/*
 * The WAL only starts over (is written again from its beginning) when a transaction begins with
 * all of it copied. When the writer pauses, the checkpointer's copy gets there; under sustained
 * load it seldom does, copying beside a writer that keeps adding. Past wal_max_bytes the writer
 * copies the rest itself between two transactions, so that the next one starts the WAL over: one
 * short copy (what arrived since the checkpointer's last, and two syncs) per 64 MB, where
 * SQLite's own checkpoint copied everything inside a COMMIT every 4 MB.
 * Writer thread, no transaction open.
 */
static void restart_wal(struct writer *w)
{
    if (!w->ck.restart_due)
        return;
    w->ck.restart_due = false;
    w->ck.restarted_at = w->ck.pages;
    int left = copy_wal(w, store_db(w->st), &w->stats.wal_restart_us);
    if (left >= 0)
        atomic_fetch_add(&w->stats.wal_restarts, 1);
    int64_t t = mono_us();
    if (left > 0 && atomic_load(&w->ck.reading))
        return; /* our own snapshot read, some ms: tried again a WAL step later */
    if (left > 0 && t - w->ck.warn_mono_us >= WAL_WARN_US) {
        w->ck.warn_mono_us = t;
        log_warn("audit: %d pages of the WAL (%llu bytes) cannot be copied into the database: a "
                 "reader still uses them (a long mandate-audit run?); the WAL grows meanwhile",
                 left, (unsigned long long)atomic_load(&w->stats.wal_bytes));
    }
}

/*
 * Start the checkpointer on a connection of its own to the writer's database, and take the
 * checkpoints off the writer's commits. Without one (a temporary database, or it cannot start)
 * SQLite keeps checkpointing inside COMMIT, as it does by default.
 */
static void start_checkpointer(struct writer *w)
{
    sqlite3 *db = store_db(w->st), *ck = NULL;
    const char *path = sqlite3_db_filename(db, "main");
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        w->page_size = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    if (!path || !*path || w->page_size <= 0)
        return;
    w->ck.wake_pages = (int)(WAL_WAKE_BYTES / w->page_size);
    w->ck.step_pages = (int)(WAL_STEP_BYTES / w->page_size);
    w->ck.restart_pages = (int)(w->wal_max_bytes / w->page_size);
    /* synchronous=FULL (the default, said here): the copy is synced before the WAL may start
     * over, or a crash could lose committed entries. */
    if (sqlite3_open_v2(path, &ck, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(ck, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK) {
        log_warn("audit: no checkpointer (%s): the WAL is copied on the commit path",
                 ck ? sqlite3_errmsg(ck) : "cannot open the database");
        sqlite3_close(ck);
        return;
    }
    sqlite3_busy_timeout(ck, CK_BUSY_MS);
    w->ck.db = ck;
    if (pthread_create(&w->ck.thread, NULL, checkpointer, w) != 0) {
        log_warn("audit: no checkpointer (no thread): the WAL is copied on the commit path");
        sqlite3_close(ck);
        w->ck.db = NULL;
        return;
    }
    sqlite3_wal_hook(db, on_wal_commit, w);
}

/* Join the checkpointer, then copy the whole WAL into the database and empty it (TRUNCATE): a
 * stopped gateway leaves everything in the database file itself. */
static void stop_checkpointer(struct writer *w)
{
    if (w->ck.db) {
        pthread_mutex_lock(&w->ck.mu);
        w->ck.stop = true;
        pthread_cond_signal(&w->ck.cond);
        pthread_mutex_unlock(&w->ck.mu);
        pthread_join(w->ck.thread, NULL);
        sqlite3_close(w->ck.db);
        w->ck.db = NULL;
        sqlite3_wal_hook(store_db(w->st), NULL, NULL);
    }
    int rc =
        sqlite3_wal_checkpoint_v2(store_db(w->st), NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (rc != SQLITE_OK)
        log_warn("audit: the final copy of the WAL into the database: %s (the next start "
                 "recovers it)",
                 sqlite3_errmsg(store_db(w->st)));
}

/* Take the whole queue as the next batch, and the store with it. Called with mu held. */
static struct writer_item *take_batch(struct writer *w)
{
    struct writer_item *batch = w->head;
    w->head = w->tail = NULL;
    w->queued = 0;
    w->awaited = 0;
    w->lazy_mono_us = 0;
    w->busy = true;
    return batch;
}

/* Done with the store: let the writer thread have what queued meanwhile. Called with mu held. */
static void release(struct writer *w)
{
    w->busy = false;
    if (w->head || w->stopping)
        pthread_cond_signal(&w->cond);
}

/*
 * Commit the queue on the submitting worker's thread (leader and follower): called with mu held
 * when the store is not busy; returns with mu released. The items go to their mailboxes as from
 * the writer thread (event_active on the caller's own loop costs no wake-up).
 */
static void lead(struct writer *w)
{
    struct writer_item *batch = take_batch(w);
    pthread_mutex_unlock(&w->mu);
    atomic_fetch_add(&w->stats.led, 1);
    restart_wal(w);
    commit_batch(w, batch, false, true);
    periodic(w);
    pthread_mutex_lock(&w->mu);
    release(w);
    pthread_mutex_unlock(&w->mu);
}

static bool checkpoint_due(struct writer *w)
{
    return w->tree.size > w->checkpoint_size &&
           now_ms() - w->checkpoint_ms >= CHECKPOINT_INTERVAL_MS;
}

static void *run(void *arg)
{
    struct writer *w = arg;
    pthread_mutex_lock(&w->mu);
    w->started = true;
    pthread_cond_broadcast(&w->cond); /* writer_start's wait ends once this thread waits */
    for (;;) {
        while (w->busy || (!w->head && !w->stopping)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            int rc = pthread_cond_timedwait(&w->cond, &w->mu, &ts);
            if (rc == 0)
                atomic_fetch_add(&w->stats.wakeups, 1);
            if (rc == ETIMEDOUT && !w->busy) {
                /* Idle: the disk and the drop counts are still watched, and the checkpointer
                 * gets to copy what arrived during its last copy, so that the next transaction
                 * starts the WAL over. */
                w->busy = true;
                pthread_mutex_unlock(&w->mu);
                periodic(w);
                if (w->ck.db && w->ck.woken_at && !w->ck.idle_woken) {
                    w->ck.idle_woken = true;
                    wake_checkpointer(w);
                }
                pthread_mutex_lock(&w->mu);
                release(w);
            }
            if (!w->busy && !w->head && checkpoint_due(w))
                break;
        }
        linger(w);
        if (w->busy || (!w->head && !w->stopping && !checkpoint_due(w)))
            continue; /* a leader took the queue while it lingered */
        bool stop = w->stopping;
        struct writer_item *batch = take_batch(w);
        pthread_mutex_unlock(&w->mu);
        restart_wal(w);
        commit_batch(w, batch, stop, false);
        periodic(w);
        pthread_mutex_lock(&w->mu);
        release(w);
        if (stop && !w->head) {
            w->closed = true;
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* The directory that holds path: where its -wal and -journal files grow too. */
static char *dir_of(const char *path)
{
    char *copy = xstrdup(path);
    char *dir = xstrdup(dirname(copy));
    free(copy);
    return dir;
}

static void free_writer(struct writer *w)
{
    pthread_mutex_destroy(&w->ck.mu);
    pthread_cond_destroy(&w->ck.cond);
    pthread_mutex_destroy(&w->ck.copy);
    sb_clear(&w->ck.snap.bytes);
    sb_clear(&w->uses);
    free(w->checkpoint);
    jwk_clear(&w->key);
    free(w->origin);
    free(w->db_dir);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cond);
    free(w);
}

struct writer *writer_start(struct store *st, const struct merkle_frontier *f,
                            const unsigned char last_leaf[32], const struct writer_opts *o)
{
    struct writer *w = xcalloc(1, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    pthread_mutex_init(&w->ck.mu, NULL);
    pthread_cond_init(&w->ck.cond, NULL);
    pthread_mutex_init(&w->ck.copy, NULL);
    w->tree = *f;
    memcpy(w->last_leaf, last_leaf, 32);
    if (o->key && o->key->pkey) {
        /* Our own reference: SIGHUP frees the configuration that lent us the key. */
        if (EVP_PKEY_up_ref(o->key->pkey) != 1) {
            free_writer(w);
            return NULL;
        }
        w->key = *o->key;
    }
    w->origin = xstrdup(o->origin ? o->origin : "");
    w->every = o->checkpoint_every > 0 ? o->checkpoint_every : 1;
    w->max_queue = o->max_queue ? o->max_queue : WRITER_DEFAULT_MAX_QUEUE;
    w->min_free_bytes = o->min_free_bytes;
    w->wal_max_bytes = o->wal_max_bytes > 0 ? o->wal_max_bytes : WAL_MAX_BYTES;
    w->db_dir = o->db_path ? dir_of(o->db_path) : NULL;
    watch_disk(w, true); /* right from the start: the workers read it before the first second */
    w->checkpoint = store_last_checkpoint(st);
    w->snap_seq = store_snapshot_seq(st);
    w->snap_every = o->snap_every ? o->snap_every : SNAP_EVERY;
    w->snap_next = w->snap_seq + w->snap_every;
    w->keep_jti_s = o->keep_jti_s;
    w->checkpoint_size = w->tree.size; /* a restart re-signs only when new entries arrive */
    w->checkpoint_ms = now_ms();
    hist_init(&w->stats.batch_size, batch_bounds, sizeof(batch_bounds) / sizeof(batch_bounds[0]));
    hist_init(&w->stats.commit_us, HIST_US_BOUNDS, HIST_US_NBOUNDS);
    hist_init(&w->stats.wal_copy_us, HIST_US_BOUNDS, HIST_US_NBOUNDS);
    hist_init(&w->stats.wal_restart_us, HIST_US_BOUNDS, HIST_US_NBOUNDS);
    w->st = st;
    start_checkpointer(w);
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
        stop_checkpointer(w);
        free_writer(w);
        return NULL;
    }
    /* Until the thread waits in its loop, a first item could find it not yet waiting and be
     * taken without a wake-up: the counts would depend on when the thread got to run. */
    pthread_mutex_lock(&w->mu);
    while (!w->started)
        pthread_cond_wait(&w->cond, &w->mu);
    pthread_mutex_unlock(&w->mu);
    return w;
}

void writer_stop(struct writer *w)
{
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    /* The thread leaves only with an empty queue, after delivering its last batch, and refuses
     * submissions from then on: once joined, nothing it took is left and no mailbox is used. */
    pthread_join(w->thread, NULL);
    report_drops(w, true);
    stop_checkpointer(w);
    store_close(w->st);
    free_writer(w);
}

bool writer_disk_low(struct writer *w)
{
    return atomic_load(&w->disk_low);
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
