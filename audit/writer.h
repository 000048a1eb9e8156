/*
 * writer: the one thread that owns the store while the gateway serves. Workers submit entries
 * with the state changes they carry (a consumed jti, a revocation); the writer appends everything
 * queued in one transaction (group commit), signs checkpoints, and only after COMMIT returns hands
 * each item back to the worker that submitted it, through that worker's mailbox: one
 * event_active() per worker per batch. It never touches a socket.
 *
 * Failures stay small: when a batch's transaction fails it is rolled back (the Merkle frontier,
 * last leaf and seq with it) and its items are retried one transaction each, so that only an item
 * the store refuses fails; a checkpoint is stored in its own transaction after the entries, so
 * that it never fails them. An item nobody waits for that cannot be written is counted (dropped)
 * and logged. The queue is bounded (max_queue) and the free space under the database watched
 * (writer_disk_low), so that the gateway can refuse allows before the disk is full.
 *
 * Leader and follower: when no batch is being committed, a worker that submits an item it waits
 * for and has nothing else to do (its mailbox's may_lead) commits the queue itself, on its own
 * thread: at one request at a time an allow then costs no thread hop and no wake-up either way.
 * While a batch is being committed, items queue for the writer thread, so that under load
 * batches still form.
 *
 * Commits never copy the WAL into the database (SQLite's automatic checkpoint, ~10 ms inside a
 * COMMIT every 4 MB): a checkpointer thread with its own connection does, woken by the writer's
 * WAL hook as the WAL grows (PASSIVE: it never waits for the writer). The WAL starts over when
 * a transaction begins with all of it copied; if sustained load never allows that and it passes
 * 64 MB (wal_max_bytes), the writer copies the rest itself between two transactions. At stop it
 * is emptied.
 */
#ifndef AUDIT_WRITER_H
#define AUDIT_WRITER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>

#include "audit/entry.h"
#include "audit/store.h"
#include "core/hist.h"
#include "core/jwk.h"

enum writer_op_kind { WOP_JTI, WOP_REVOKE, WOP_SPEND };
enum spend_status { SPEND_RESERVED, SPEND_COMMITTED, SPEND_RELEASED, SPEND_UNKNOWN };
/** "reserved", "committed", "released", "unknown": the outcome entry's `spend` (SPEC §4). */
const char *spend_status_name(enum spend_status s);

/* A state change committed with the entry. */
struct writer_op {
    enum writer_op_kind kind;
    char a[136]; /* JTI: issuer; REVOKE: kind; SPEND: request id */
    char b[304]; /* JTI: jti; REVOKE: value; SPEND: ledger key */
    int64_t x;   /* JTI: exp; SPEND: amount */
    int64_t y;   /* JTI: uses so far; SPEND: enum spend_status */
};
#define WRITER_MAX_OPS 3

struct writer_item;

/* A key set the gateway uses, stored with the entry (store_put_keyset): all owned. */
struct writer_keyset {
    char *owner;
    char *jwks; /* canonical public JWKS text */
    char sha[65];
};

/** Where finished items go: a worker's queue plus the event that wakes it. */
struct writer_mailbox {
    pthread_mutex_t mu;
    struct writer_item *head, *tail;
    struct event *ev;
    /* Set by the mailbox's own thread before it submits: it has nothing else to do, so an item it
     * waits for may be committed on it when no batch is in progress (the leader). Read by
     * writer_submit() on that same thread only. */
    bool may_lead;
    struct event *poke; /* writer_submit_lazy(): wakes the writer a linger later, if need be */
};

struct writer_item {
    struct writer_item *next;
    struct entry_body body; /* the entry's fields, encoded by writer_item_new[_built]() */
    bool bad;               /* not to be written: unencodable, or refused by the store */
    bool settles;  /* records a change memory already made (a spend outcome): never refused for a
                      full queue */
    uint8_t tries; /* transactions it was part of that failed as a whole */
    char *jws[2];  /* owned: mandate texts to store beside the entry (or NULL) */
    char jws_sha[2][65]; /* their hex SHA-256 */
    struct writer_op ops[WRITER_MAX_OPS];
    int nops;
    struct writer_keyset *keysets; /* owned (writer_item_add_keyset); NULL on the hot path */
    size_t nkeysets;
    struct writer_mailbox *mb; /* NULL: nobody waits; the writer frees the item */
    void (*done)(struct writer_item *it);
    void *arg;
    /* results, valid in done() */
    bool ok;
    uint64_t seq;
    unsigned char leaf[32];
};

struct writer_stats {
    struct hist batch_size; /* entries per transaction */
    struct hist commit_us;  /* BEGIN..COMMIT */
    _Atomic uint64_t entries, batches;
    _Atomic uint64_t led;        /* batches committed by a submitting worker (the leader) */
    _Atomic uint64_t wakeups;    /* times the idle writer thread was woken (a thread hop) */
    _Atomic uint64_t failures;   /* transactions rolled back (a batch, a retried item) */
    _Atomic uint64_t retried;    /* batches that failed and were retried item by item */
    _Atomic uint64_t dropped;    /* entries nobody waits for that were never written (logged) */
    _Atomic uint64_t queue_full; /* submissions refused because the queue was full */
    _Atomic uint64_t checkpoint_failures; /* checkpoints not signed or not stored (retried) */
    /* The WAL, copied into the database by the checkpointer thread, off the commit path: */
    struct hist wal_copy_us;          /* one copy by the checkpointer (wal_checkpoint(PASSIVE)) */
    struct hist wal_restart_us;       /* the rest copied by the writer, before a transaction */
    _Atomic uint64_t wal_checkpoints; /* copies by the checkpointer */
    _Atomic uint64_t wal_restarts;    /* copies the writer finished itself, past wal_max_bytes */
    _Atomic uint64_t wal_bytes;       /* the WAL's size after the last commit */
    _Atomic uint64_t wal_bytes_max;   /* and its largest */
};

#define WRITER_DEFAULT_MAX_QUEUE      65536
#define WRITER_DEFAULT_MIN_FREE_BYTES (256LL << 20)

/** How to start the writer. The writer copies or references what it keeps. */
struct writer_opts {
    const struct jwk *key;    /* signs checkpoints: the writer takes its own reference */
    const char *origin;       /* the checkpoints' origin line: copied */
    int64_t checkpoint_every; /* a checkpoint at least every this many entries */
    size_t max_queue;         /* writer_submit refuses beyond this many queued items (0: default) */
    int64_t min_free_bytes;   /* writer_disk_low below this many free bytes (<= 0: never) */
    const char *db_path;      /* the database, whose directory is watched (NULL: not watched) */
    int64_t wal_max_bytes;    /* past this the writer copies the WAL itself (<= 0: 64 MB) */
    int64_t keep_jti_s;       /* snapshots keep the jtis that expired less than this long ago */
    uint64_t snap_every; /* a snapshot of the used jtis every this many entries (0: SNAP_EVERY) */
};

struct writer;

/**
 * Start the writer thread over st (takes ownership), continuing the tree in f after last_leaf.
 * o->key signs checkpoints under o->origin every o->checkpoint_every entries, every 2 s while
 * entries arrive, and at stop. Nothing in o is borrowed beyond this call (a configuration that a
 * reload frees can be the source). NULL if the thread cannot start (st is then still the
 * caller's).
 */
struct writer *writer_start(struct store *st, const struct merkle_frontier *f,
                            const unsigned char last_leaf[32],
                            const struct writer_opts *o) MUST_CHECK;
/**
 * Queue an item. Thread-safe; never blocks on the disk. Returns true when the writer took
 * ownership: it then commits the item and delivers it (or frees it when it->mb is NULL). Returns
 * false when max_queue items are already queued or the writer is stopping: the item is NOT
 * taken, the caller still owns it (and frees it; an allow answers 503 having consumed nothing).
 * Refusals are counted in queue_full; refused items nobody waits for also in dropped, with one
 * log line a second at most.
 */
bool writer_submit(struct writer *w, struct writer_item *it) MUST_CHECK;
/**
 * writer_submit() for an item nobody waits for, on the thread of mb's loop: when nothing else is
 * queued for the writer thread, it is not woken. The item waits for the next batch (a worker's
 * allow that leads it, at one request at a time), and if none has come a linger later (2 ms), a
 * timer on mb's loop wakes the writer thread. An outcome then costs no thread hop.
 */
bool writer_submit_lazy(struct writer *w, struct writer_item *it,
                        struct writer_mailbox *mb) MUST_CHECK;
/**
 * Commit everything queued, store a final checkpoint, join the thread (and the checkpointer's),
 * copy the WAL into the database, close the store and free the writer. Every item the writer took
 * has been delivered to its mailbox (or freed) before this returns, and no mailbox is touched
 * after: call it while the mailboxes are still alive, then clear them (writer_mailbox_clear frees
 * what nobody drained). No writer_submit may start after writer_stop has been called.
 */
void writer_stop(struct writer *w);
/** The newest checkpoint note (a copy the caller frees), or NULL. */
char *writer_checkpoint(struct writer *w);
/** The writer's counters and histograms. */
struct writer_stats *writer_stats(struct writer *w);
/**
 * Whether free space under the database's directory was below min_free_bytes at the last look
 * (the writer looks at start and then at most once a second). One atomic load: any thread.
 */
bool writer_disk_low(struct writer *w);

/**
 * A new item for entry, encoded now on the calling thread (takes ownership of entry): for the
 * rare kinds (configuration, revocation, summaries); per-request entries use the builder.
 */
struct writer_item *writer_item_new(json_t *entry);
/**
 * A new item for the entry built in eb, finished now (entry_builder_finish releases eb). A
 * refused entry is logged and the item marked bad, as writer_item_new() does.
 */
struct writer_item *writer_item_new_built(struct entry_builder *eb);
/** Attach a mandate text to store beside the entry. */
void writer_item_add_jws(struct writer_item *it, const char *jws, const unsigned char sha[32]);
/** Add a state change (at most WRITER_MAX_OPS). */
void writer_item_op(struct writer_item *it, enum writer_op_kind kind, const char *a, const char *b,
                    int64_t x, int64_t y);
/**
 * Store a key set as owner's with the entry, once per (sha_hex, owner): jwks is its canonical
 * public text (jwks_canonical_public; the item takes ownership), sha_hex that text's SHA-256.
 */
void writer_item_add_keyset(struct writer_item *it, const char *owner, char *jwks,
                            const char sha_hex[65]);
/** Free an item; NULL is a no-op. */
void writer_item_free(struct writer_item *it);

/** Set up mb to wake base with cb(fd, what, arg) when items arrive. */
void writer_mailbox_init(struct writer_mailbox *mb, struct event_base *base, event_callback_fn cb,
                         void *arg);
/** Take every finished item from mb (call from its event callback) and run done() on each. */
void writer_mailbox_drain(struct writer_mailbox *mb);
/**
 * Release the mailbox: its event, and any finished items still in it, which are freed WITHOUT
 * calling their done() (their arg, e.g. a request, belongs to the caller, who frees it on its
 * own). Call after writer_stop, or when the writer can no longer deliver to mb.
 */
void writer_mailbox_clear(struct writer_mailbox *mb);

#endif
