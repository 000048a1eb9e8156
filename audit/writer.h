/*
 * writer: the one thread that owns the store while the gateway serves. Workers submit entries
 * with the state changes they carry (a consumed jti, a revocation); the writer appends everything
 * queued in one transaction (group commit), signs checkpoints, and only after COMMIT returns hands
 * each item back to the worker that submitted it, through that worker's mailbox: one
 * event_active() per worker per batch. It never touches a socket.
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

/** Where finished items go: a worker's queue plus the event that wakes it. */
struct writer_mailbox {
    pthread_mutex_t mu;
    struct writer_item *head, *tail;
    struct event *ev;
};

struct writer_item {
    struct writer_item *next;
    struct entry_body body; /* the entry's fields, encoded by writer_item_new() */
    bool bad;               /* they could not be encoded: the writer fails the item */
    char *jws[2];           /* owned: mandate texts to store beside the entry (or NULL) */
    char jws_sha[2][65];    /* their hex SHA-256 */
    struct writer_op ops[WRITER_MAX_OPS];
    int nops;
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
    _Atomic uint64_t entries, batches, failures;
};

struct writer;

/**
 * Start the writer thread over st (takes ownership), continuing the tree in f after last_leaf.
 * key signs checkpoints under origin every `every` entries, every 2 s while entries arrive, and
 * at stop. key and origin are borrowed and must outlive the writer.
 */
struct writer *writer_start(struct store *st, const struct merkle_frontier *f,
                            const unsigned char last_leaf[32], const struct jwk *key,
                            const char *origin, int64_t every) MUST_CHECK;
/** Queue an item (takes ownership). Thread-safe; never blocks on the disk. */
void writer_submit(struct writer *w, struct writer_item *it);
/** Commit what is queued, write a final checkpoint, join the thread and close the store. */
void writer_stop(struct writer *w);
/** The newest checkpoint note (a copy the caller frees), or NULL. */
char *writer_checkpoint(struct writer *w);
/** The writer's counters and histograms. */
struct writer_stats *writer_stats(struct writer *w);

/** A new item for entry, encoded now on the calling thread (takes ownership of entry). */
struct writer_item *writer_item_new(json_t *entry);
/** Attach a mandate text to store beside the entry. */
void writer_item_add_jws(struct writer_item *it, const char *jws, const unsigned char sha[32]);
/** Add a state change (at most WRITER_MAX_OPS). */
void writer_item_op(struct writer_item *it, enum writer_op_kind kind, const char *a, const char *b,
                    int64_t x, int64_t y);
/** Free an item; NULL is a no-op. */
void writer_item_free(struct writer_item *it);

/** Set up mb to wake base with cb(fd, what, arg) when items arrive. */
void writer_mailbox_init(struct writer_mailbox *mb, struct event_base *base, event_callback_fn cb,
                         void *arg);
/** Take every finished item from mb (call from its event callback) and run done() on each. */
void writer_mailbox_drain(struct writer_mailbox *mb);
/** Release the mailbox's event. */
void writer_mailbox_clear(struct writer_mailbox *mb);

#endif
