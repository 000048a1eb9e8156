/*
 * audit/writer: it owns the checkpoint key and origin it signs with; its queue is bounded; it
 * reports low disk space; a failed batch fails only the item the store refuses (the others keep
 * their answers, denials and state changes) and a failed checkpoint fails no entry; writer_stop
 * delivers everything it took before returning, and writer_mailbox_clear frees what nobody
 * drained without running done(). Under a long burst the WAL is copied into the database by the
 * checkpointer, off the commit path, and stays bounded; a stopped writer leaves it empty. A
 * submitter that may lead commits on its own thread when the writer is idle.
 */
#include "testkit.h"

#include <sys/stat.h>

#include <event2/thread.h>

#include "audit/checkpoint.h"
#include "audit/snap.h"
#include "audit/verify.h"
#include "audit/writer.h"

#define ORIGIN "test.example/log"

struct fixture {
    char *dir, *path;
    struct jwk key;
    EVP_PKEY *pub; /* an independent copy of the public key, for verification */
    struct event_base *base;
    struct writer_mailbox mb;
    int done, ok, failed;
    uint64_t last_seq;
};

static void on_mailbox(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    writer_mailbox_drain(arg);
}

static int setup(void **state)
{
    struct fixture *fx = xcalloc(1, sizeof(*fx));
    fx->dir = tk_tmpdir();
    fx->path = xasprintf("%s/audit.db", fx->dir);
    assert_int_equal(jwk_generate(JWK_EDDSA, "cp", &fx->key), 0);
    /* Through its public JWK, so that the writer's reference is the only one left on the
     * private key once the test clears it. */
    json_t *pubj = jwk_to_json(&fx->key);
    struct jwk pub;
    char *err = NULL;
    assert_int_equal(jwk_from_json(pubj, &pub, &err), 0);
    json_decref(pubj);
    fx->pub = pub.pkey;
    fx->base = event_base_new();
    writer_mailbox_init(&fx->mb, fx->base, on_mailbox, &fx->mb);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    if (fx->mb.ev)
        writer_mailbox_clear(&fx->mb);
    event_base_free(fx->base);
    jwk_clear(&fx->key);
    EVP_PKEY_free(fx->pub);
    free(fx->path);
    tk_rmdir(fx->dir);
    free(fx);
    return 0;
}

/* Start a writer over fx's database; busy_ms > 0 shortens the store's busy timeout. */
static struct writer *start_busy(struct fixture *fx, const struct writer_opts *o, int busy_ms)
{
    char *err = NULL;
    struct store *st = store_open(fx->path, STORE_CREATE, &err);
    assert_non_null(st);
    if (busy_ms > 0)
        sqlite3_busy_timeout(store_db(st), busy_ms);
    struct merkle_frontier f;
    unsigned char last[32];
    assert_int_equal(store_tail(st, &f, last, &err), 0);
    struct writer *w = writer_start(st, &f, last, o);
    assert_non_null(w);
    return w;
}

static struct writer *start(struct fixture *fx, const struct writer_opts *o)
{
    return start_busy(fx, o, 0);
}

static void on_done(struct writer_item *it)
{
    struct fixture *fx = it->arg;
    fx->done++;
    if (it->ok) {
        fx->ok++;
        fx->last_seq = it->seq;
    } else {
        fx->failed++;
    }
    writer_item_free(it);
}

/* An entry (a config entry: the shape verify_log asks least of); with fx, one its submitter
 * waits for. */
static struct writer_item *item(struct fixture *fx, const char *request_id, const char *jti)
{
    struct writer_item *it =
        writer_item_new(json_pack("{sI ss ss ss}", "ts_ms", (json_int_t)1700000000000LL, "kind",
                                  "config", "request_id", request_id, "config_sha256", "00"));
    if (jti)
        writer_item_op(it, WOP_JTI, "w1", jti, 4000000000LL, 1);
    if (fx) {
        it->mb = &fx->mb;
        it->done = on_done;
        it->arg = fx;
    }
    return it;
}

/* Run the event loop until n items have come back (bounded: 10 s). */
static void wait_done(struct fixture *fx, int n)
{
    for (int i = 0; i < 10000 && fx->done < n; i++) {
        event_base_loop(fx->base, EVLOOP_NONBLOCK);
        if (fx->done < n)
            usleep(1000);
    }
    assert_int_equal(fx->done, n);
}

static int64_t count_rows(struct fixture *fx, const char *sql)
{
    char *err = NULL;
    struct store *st = store_open(fx->path, STORE_READONLY, &err);
    assert_non_null(st);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(store_db(st), sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    store_close(st);
    return n;
}

/* The whole log verifies: chain, tree, and every stored checkpoint against fx->pub. */
static void assert_log_intact(struct fixture *fx, uint64_t entries)
{
    char *err = NULL;
    struct store *st = store_open(fx->path, STORE_READONLY, &err);
    assert_non_null(st);
    struct verify_opts o = {.checkpoint_key = fx->pub};
    struct verify_report rep;
    assert_int_equal(verify_log(store_db(st), &o, &rep), 0);
    if (!rep.ok)
        fail_msg("log broken at %lld: %s %s", (long long)rep.bad_seq, rep.violation, rep.detail);
    assert_int_equal(rep.entries, entries);
    assert_true(rep.checkpoints >= 1);
    store_close(st);
}

/* SIGHUP frees the configuration that held the key and origin: the writer still signs with its
 * own (the old code borrowed them and signed from freed memory). */
static void test_owns_key_and_origin(void **state)
{
    struct fixture *fx = *state;
    char *origin = xstrdup(ORIGIN);
    struct writer *w = start(
        fx, &(struct writer_opts){.key = &fx->key, .origin = origin, .checkpoint_every = 1000});
    jwk_clear(&fx->key);
    memset(origin, 'Z', strlen(origin));
    free(origin);
    assert_true(writer_submit(w, item(NULL, "r1", NULL)));
    writer_stop(w);

    char *err = NULL;
    struct store *st = store_open(fx->path, STORE_READONLY, &err);
    assert_non_null(st);
    char *note = store_last_checkpoint(st);
    store_close(st);
    assert_non_null(note);
    uint64_t size;
    unsigned char root[32];
    char *got_origin = NULL;
    const char *why = NULL;
    assert_int_equal(checkpoint_verify(note, fx->pub, &size, root, &got_origin, &why), 0);
    assert_string_equal(got_origin, ORIGIN);
    assert_int_equal(size, 1);
    free(got_origin);
    free(note);
}

/* A huge watermark makes the disk low at once; a tiny one or none does not. */
static void test_disk_low(void **state)
{
    struct fixture *fx = *state;
    struct writer_opts o = {.key = &fx->key,
                            .origin = ORIGIN,
                            .checkpoint_every = 1000,
                            .db_path = fx->path,
                            .min_free_bytes = INT64_MAX};
    struct writer *w = start(fx, &o);
    assert_true(writer_disk_low(w));
    writer_stop(w);
    o.min_free_bytes = 1;
    w = start(fx, &o);
    assert_false(writer_disk_low(w));
    writer_stop(w);
    o.min_free_bytes = 0; /* no watermark */
    w = start(fx, &o);
    assert_false(writer_disk_low(w));
    writer_stop(w);
}

/* With the database locked by another connection the writer cannot commit: the queue fills up
 * to max_queue and the next item is refused and left to the caller; one nobody waits for is
 * counted as dropped. Everything accepted is committed once the lock goes. */
static void test_bounded_queue(void **state)
{
    struct fixture *fx = *state;
    char *err = NULL;
    struct store *st = store_open(fx->path, STORE_CREATE, &err);
    store_close(st);
    sqlite3 *lock;
    assert_int_equal(sqlite3_open(fx->path, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

    struct writer *w =
        start(fx, &(struct writer_opts){
                      .key = &fx->key, .origin = ORIGIN, .checkpoint_every = 1000, .max_queue = 2});
    int accepted = 0, orphans = 0;
    struct writer_item *refused = NULL;
    /* The writer holds at most one batch (<= 2 items) while 2 more queue up. */
    for (int i = 0; i < 5 && !refused; i++) {
        char id[16];
        snprintf(id, sizeof(id), "r%d", i);
        struct writer_item *it = item(fx, id, NULL);
        if (writer_submit(w, it))
            accepted++;
        else
            refused = it;
    }
    assert_non_null(refused);
    assert_in_range(accepted, 2, 4);
    assert_int_equal(atomic_load(&writer_stats(w)->queue_full), 1);
    assert_int_equal(atomic_load(&writer_stats(w)->dropped), 0);
    assert_null(refused->next);
    writer_item_free(refused); /* still ours: the writer must not have freed or queued it */

    /* The writer may have taken its first batch only now, leaving room for one or two. */
    struct writer_item *orphan = NULL;
    for (int i = 0; i < 3 && !orphan; i++) {
        struct writer_item *it = item(NULL, "orphan", NULL);
        if (writer_submit(w, it))
            orphans++;
        else
            orphan = it;
    }
    assert_non_null(orphan);
    writer_item_free(orphan);
    assert_in_range(accepted + orphans, 2, 4);
    assert_int_equal(atomic_load(&writer_stats(w)->queue_full), 2);
    assert_int_equal(atomic_load(&writer_stats(w)->dropped), 1);
    /* An outcome that settles a spend memory already released is never refused. */
    struct writer_item *settle = item(NULL, "settle", NULL);
    settle->settles = true;
    assert_true(writer_submit(w, settle));
    orphans++;

    assert_int_equal(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    wait_done(fx, accepted);
    assert_int_equal(fx->ok, accepted);
    writer_stop(w);
    assert_int_equal(count_rows(fx, "SELECT COUNT(*) FROM entries"), accepted + orphans);
}

/* One item the store refuses (a trigger stands for a constraint, a full disk on one row...)
 * shares a batch with an allow, a denial nobody waits for and a spend status: only it fails;
 * the others commit with a dense seq and an intact chain. The old code failed the whole batch. */
static void test_bad_item_fails_alone(void **state)
{
    struct fixture *fx = *state;
    char *err = NULL;
    struct store *st = store_open(fx->path, STORE_CREATE, &err);
    assert_int_equal(
        sqlite3_exec(
            store_db(st),
            "CREATE TRIGGER poison BEFORE INSERT ON entries WHEN "
            "CAST(NEW.uses AS TEXT) GLOB '*poison*' BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
            NULL, NULL, NULL),
        SQLITE_OK);
    store_close(st);
    /* Hold the write lock so that everything below queues up and lands in one batch. */
    sqlite3 *lock;
    assert_int_equal(sqlite3_open(fx->path, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    struct writer *w = start(
        fx, &(struct writer_opts){.key = &fx->key, .origin = ORIGIN, .checkpoint_every = 1000});
    assert_true(writer_submit(w, item(fx, "allow1", "j1")));
    assert_true(writer_submit(w, item(fx, "bad", "poison1")));
    assert_true(writer_submit(w, item(NULL, "deny1", NULL)));
    struct writer_item *spend = item(NULL, "outcome1", NULL);
    writer_item_op(spend, WOP_SPEND, "outcome1", "w1|cap", 500, SPEND_COMMITTED);
    assert_true(writer_submit(w, spend));
    assert_true(writer_submit(w, item(NULL, "deny-bad", "poison2")));
    assert_true(writer_submit(w, item(fx, "allow2", "j2")));
    assert_int_equal(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);

    wait_done(fx, 3);
    assert_int_equal(fx->ok, 2);
    assert_int_equal(fx->failed, 1);
    assert_int_equal(fx->last_seq, 3); /* allow1, deny1, outcome1, allow2: seq 0..3 */
    struct writer_stats *ws = writer_stats(w);
    writer_stop(w);
    (void)ws;
    assert_int_equal(count_rows(fx, "SELECT COUNT(*) FROM entries"), 4);
    assert_int_equal(count_rows(fx, "SELECT COUNT(*) FROM entries WHERE uses IS NOT NULL"), 2);
    assert_int_equal(count_rows(fx, "SELECT status FROM spend WHERE request_id = 'outcome1'"),
                     SPEND_COMMITTED);
    assert_int_equal(count_rows(fx, "SELECT COUNT(*) FROM entries WHERE CAST(entry AS TEXT) "
                                    "LIKE '%deny1%'"),
                     1);
    assert_log_intact(fx, 4);
}

/* The counters of a failed batch: one retried batch, one item dropped (nobody waited for it),
 * and a checkpoint that cannot be stored fails no entry. */
static void test_failure_counters_and_checkpoint(void **state)
{
    struct fixture *fx = *state;
    char *err = NULL;
    struct store *st = store_open(fx->path, STORE_CREATE, &err);
    assert_int_equal(
        sqlite3_exec(
            store_db(st),
            "CREATE TRIGGER poison BEFORE INSERT ON entries WHEN "
            "CAST(NEW.uses AS TEXT) GLOB '*poison*' BEGIN SELECT RAISE(ABORT, 'poisoned'); "
            "END; CREATE TRIGGER nocp BEFORE INSERT ON checkpoints BEGIN "
            "SELECT RAISE(ABORT, 'no checkpoints'); END",
            NULL, NULL, NULL),
        SQLITE_OK);
    store_close(st);
    sqlite3 *lock;
    assert_int_equal(sqlite3_open(fx->path, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    /* A checkpoint after every entry: with the old code every batch carried one and failed. */
    struct writer *w =
        start(fx, &(struct writer_opts){.key = &fx->key, .origin = ORIGIN, .checkpoint_every = 1});
    assert_true(writer_submit(w, item(fx, "a", "j1")));
    assert_true(writer_submit(w, item(NULL, "dropped", "poison1")));
    assert_true(writer_submit(w, item(fx, "b", "j2")));
    assert_int_equal(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    wait_done(fx, 2);
    assert_int_equal(fx->ok, 2);
    struct writer_stats *ws = writer_stats(w);
    /* The checkpoint is attempted after delivery, on the writer thread. */
    for (int i = 0; i < 5000 && atomic_load(&ws->checkpoint_failures) == 0; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&ws->dropped), 1);
    assert_int_equal(atomic_load(&ws->retried), 1);
    assert_true(atomic_load(&ws->checkpoint_failures) >= 1);
    assert_int_equal(atomic_load(&ws->entries), 2);
    assert_null(writer_checkpoint(w)); /* none was stored, so none is published */
    writer_stop(w);
    assert_int_equal(count_rows(fx, "SELECT COUNT(*) FROM entries"), 2);
    assert_int_equal(count_rows(fx, "SELECT COUNT(*) FROM checkpoints"), 0);
}

/* A transaction that fails as a whole (the database locked beyond the busy timeout): the allow is
 * answered at once with ok false (503), the denial nobody waits for goes back to the queue and is
 * written once the lock is gone. The old code dropped it. */
static void test_whole_failure_requeues_denials(void **state)
{
    struct fixture *fx = *state;
    char *err = NULL;
    store_close(store_open(fx->path, STORE_CREATE, &err));
    sqlite3 *lock;
    assert_int_equal(sqlite3_open(fx->path, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    struct writer *w = start_busy(
        fx, &(struct writer_opts){.key = &fx->key, .origin = ORIGIN, .checkpoint_every = 1000},
        300);
    assert_true(writer_submit(w, item(NULL, "deny1", NULL)));
    assert_true(writer_submit(w, item(fx, "allow1", "j1")));
    wait_done(fx, 1);
    assert_int_equal(fx->failed, 1);
    assert_int_equal(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    struct writer_stats *ws = writer_stats(w);
    for (int i = 0; i < 5000 && atomic_load(&ws->entries) == 0; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&ws->entries), 1);
    assert_int_equal(atomic_load(&ws->dropped), 0);
    assert_true(atomic_load(&ws->failures) >= 1);
    writer_stop(w);
    assert_int_equal(count_rows(fx, "SELECT COUNT(*) FROM entries WHERE CAST(entry AS TEXT) "
                                    "LIKE '%deny1%'"),
                     1);
    assert_int_equal(count_rows(fx, "SELECT COUNT(*) FROM entries WHERE uses IS NOT NULL"), 0);
}

/* writer_stop returns only after every item it took is in its mailbox, and never after that;
 * writer_mailbox_clear frees what nobody drained without calling done(). */
static void test_stop_delivers_and_clear_frees(void **state)
{
    struct fixture *fx = *state;
    struct writer *w = start(
        fx, &(struct writer_opts){.key = &fx->key, .origin = ORIGIN, .checkpoint_every = 1000});
    for (int i = 0; i < 50; i++) {
        char id[16];
        snprintf(id, sizeof(id), "r%d", i);
        assert_true(writer_submit(w, item(fx, id, NULL)));
    }
    writer_stop(w);
    /* Nothing drained yet: all 50 wait in the mailbox. */
    int n = 0;
    for (struct writer_item *it = fx->mb.head; it; it = it->next) {
        assert_true(it->ok);
        n++;
    }
    assert_int_equal(n, 50);
    writer_mailbox_clear(&fx->mb);
    assert_int_equal(fx->done, 0);
    assert_null(fx->mb.head);
    assert_null(fx->mb.ev);
    assert_int_equal(count_rows(fx, "SELECT COUNT(*) FROM entries"), 50);
    assert_log_intact(fx, 50);
}

/* Submit a 1 KB entry nobody waits for, with a jti of its own (a random page of used_jtis). */
static void submit_kb(struct writer *w, int n)
{
    static char pad[1025];
    memset(pad, 'p', 1024);
    char id[24];
    snprintf(id, sizeof(id), "j%d", n);
    struct writer_item *it =
        writer_item_new(json_pack("{sI ss ss ss ss}", "ts_ms", (json_int_t)1700000000000LL, "kind",
                                  "config", "request_id", id, "config_sha256", "00", "pad", pad));
    writer_item_op(it, WOP_JTI, "w1", id, 4000000000LL, 1);
    assert_true(writer_submit(w, it));
}

/* Keep the writer busy (at most 1000 entries queued, so it never waits for more) until done(ws)
 * or 60 s; then wait until it has committed them all. Returns the entries submitted so far. */
static int burst(struct writer *w, int n, bool (*done)(struct writer_stats *ws))
{
    struct writer_stats *ws = writer_stats(w);
    int64_t until = mono_us() + 60000000;
    while (!done(ws) && mono_us() < until) {
        if ((uint64_t)n - atomic_load(&ws->entries) < 1000)
            submit_kb(w, n++);
        else
            usleep(100);
    }
    for (int i = 0; i < 30000 && atomic_load(&ws->entries) < (uint64_t)n; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&ws->entries), n);
    return n;
}

static bool writer_copied(struct writer_stats *ws)
{
    return atomic_load(&ws->wal_restarts) > 0;
}

static bool wal_past_wake(struct writer_stats *ws)
{
    return atomic_load(&ws->wal_bytes) >= (5u << 20);
}

/*
 * Under a burst that never lets the writer pause, the checkpointer copies the WAL as it grows
 * (every megabyte past 4), and past wal_max_bytes (8 MB here, 64 MB by default) the writer copies
 * the rest itself so that the WAL starts over: it never grows far beyond. After a pause the
 * checkpointer copies what is left and the next transaction starts the WAL over. At stop the
 * WAL is emptied; the log is intact.
 */
static void test_wal_copied_off_the_commit_path(void **state)
{
    struct fixture *fx = *state;
    struct writer *w = start(fx, &(struct writer_opts){.key = &fx->key,
                                                       .origin = ORIGIN,
                                                       .checkpoint_every = 1000000,
                                                       .wal_max_bytes = 8 << 20});
    struct writer_stats *ws = writer_stats(w);
    int n = burst(w, 0, writer_copied);
    uint64_t copies = atomic_load(&ws->wal_checkpoints), max = atomic_load(&ws->wal_bytes_max);
    print_message("%d entries: %llu copies by the checkpointer, %llu by the writer, WAL at most "
                  "%llu bytes\n",
                  n, (unsigned long long)copies, (unsigned long long)atomic_load(&ws->wal_restarts),
                  (unsigned long long)max);
    assert_true(atomic_load(&ws->wal_restarts) >= 1);
    assert_true(copies >= 1);
    assert_true(max >= (8u << 20) && max < (12u << 20));

    /* Past the checkpointer's mark again, then a pause: after a second without entries the
     * checkpointer copies the rest, and the next entry starts the WAL over. */
    n = burst(w, n, wal_past_wake);
    /* A producer starved for a second (a loaded machine) lets the writer idle, the checkpointer
     * copy everything and the WAL start over short of the mark: burst again. */
    for (int i = 0; i < 2 && !wal_past_wake(ws); i++)
        n = burst(w, n, wal_past_wake);
    assert_true(wal_past_wake(ws));
    for (int i = 0; i < 5 && atomic_load(&ws->wal_bytes) >= (1u << 20); i++) {
        usleep(1500000);
        submit_kb(w, n++);
        for (int j = 0; j < 5000 && atomic_load(&ws->entries) < (uint64_t)n; j++)
            usleep(1000);
    }
    assert_true(atomic_load(&ws->wal_bytes) < (1u << 20));
    writer_stop(w);

    char *wal = xasprintf("%s-wal", fx->path);
    struct stat sb;
    assert_true(stat(wal, &sb) != 0 || sb.st_size == 0);
    free(wal);
    assert_log_intact(fx, (uint64_t)n);
}

/* Leader and follower: with the writer idle, an item whose submitter may lead is committed on
 * the submitting thread, before writer_submit returns, and is in its mailbox then; one that may
 * not lead goes to the writer thread. */
static void test_idle_writer_lets_the_submitter_commit(void **state)
{
    struct fixture *fx = *state;
    struct writer *w = start(
        fx, &(struct writer_opts){.key = &fx->key, .origin = ORIGIN, .checkpoint_every = 1000});
    struct writer_stats *ws = writer_stats(w);
    fx->mb.may_lead = true;
    assert_true(writer_submit(w, item(fx, "led", "j-led")));
    assert_non_null(fx->mb.head); /* committed and delivered already */
    assert_int_equal(atomic_load(&ws->led), 1);
    assert_int_equal(atomic_load(&ws->entries), 1);
    assert_int_equal(count_rows(fx, "SELECT COUNT(*) FROM entries WHERE uses IS NOT NULL"), 1);
    wait_done(fx, 1);
    fx->mb.may_lead = false;
    assert_true(writer_submit(w, item(fx, "followed", NULL)));
    wait_done(fx, 2);
    assert_int_equal(atomic_load(&ws->led), 1);
    assert_int_equal(fx->ok, 2);
    writer_stop(w);
    assert_log_intact(fx, 2);
}

/* An entry nobody waits for, submitted lazily: the writer thread is not woken for it. An allow
 * whose submitter leads takes it into its own batch (one transaction, no thread hop); alone, it
 * is committed once the submitter's loop runs its linger timer and wakes the writer. */
static void test_lazy_entries_need_no_thread_hop(void **state)
{
    struct fixture *fx = *state;
    struct writer *w = start(
        fx, &(struct writer_opts){.key = &fx->key, .origin = ORIGIN, .checkpoint_every = 1000});
    struct writer_stats *ws = writer_stats(w);
    assert_true(writer_submit_lazy(w, item(NULL, "outcome-1", NULL), &fx->mb));
    fx->mb.may_lead = true;
    assert_true(writer_submit(w, item(fx, "allow-2", "j-2")));
    assert_int_equal(atomic_load(&ws->led), 1);
    assert_int_equal(atomic_load(&ws->batches), 1);
    assert_int_equal(atomic_load(&ws->entries), 2);
    wait_done(fx, 1);
    fx->mb.may_lead = false;
    assert_int_equal(atomic_load(&ws->wakeups), 0);
    /* Alone: committed by the writer thread, woken by the timer on this loop (bounded: 10 s). */
    assert_true(writer_submit_lazy(w, item(NULL, "outcome-3", NULL), &fx->mb));
    for (int i = 0; i < 10000 && atomic_load(&ws->entries) < 3; i++) {
        event_base_loop(fx->base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
    assert_int_equal(atomic_load(&ws->entries), 3);
    assert_int_equal(atomic_load(&ws->led), 1);
    assert_int_equal(atomic_load(&ws->wakeups), 1);
    writer_stop(w);
    assert_log_intact(fx, 3);
}

/* Submitters that may lead, on four threads with loops of their own, beside entries nobody waits
 * for: every item is committed and delivered exactly once, the log stays one intact chain, and
 * batches are committed both by leaders and by the writer thread. */
struct submitter {
    struct fixture fx; /* its own loop and mailbox; only base, mb and the counters are used */
    struct writer *w;
    int n;
    int refused, unanswered; /* counted here, asserted by the test's own thread */
};

static void *submit_led(void *arg)
{
    struct submitter *s = arg;
    for (int i = 0; i < s->n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "t%p-%d", (void *)s, i);
        s->fx.mb.may_lead = true;
        s->refused += !writer_submit(s->w, item(&s->fx, id, id));
        s->refused += !writer_submit(s->w, item(NULL, "unawaited", NULL));
        /* Wait for the answer, as a request does, before the next. */
        for (int j = 0; j < 10000 && s->fx.done <= i; j++) {
            event_base_loop(s->fx.base, EVLOOP_NONBLOCK);
            if (s->fx.done <= i)
                usleep(100);
        }
        s->unanswered += s->fx.done != i + 1;
    }
    return NULL;
}

static void test_leaders_and_the_writer_thread_share_one_log(void **state)
{
    struct fixture *fx = *state;
    struct writer *w = start(
        fx, &(struct writer_opts){.key = &fx->key, .origin = ORIGIN, .checkpoint_every = 100});
    enum { THREADS = 4, EACH = 200 };
    struct submitter s[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        memset(&s[i], 0, sizeof(s[i]));
        s[i].w = w;
        s[i].n = EACH;
        s[i].fx.base = event_base_new();
        writer_mailbox_init(&s[i].fx.mb, s[i].fx.base, on_mailbox, &s[i].fx.mb);
        assert_int_equal(pthread_create(&t[i], NULL, submit_led, &s[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(s[i].refused + s[i].unanswered, 0);
        assert_int_equal(s[i].fx.ok, EACH);
        assert_int_equal(s[i].fx.failed, 0);
    }
    struct writer_stats *ws = writer_stats(w);
    uint64_t led = atomic_load(&ws->led), batches = atomic_load(&ws->batches);
    writer_stop(w); /* frees ws */
    assert_true(led > 0);
    assert_true(led < batches);
    for (int i = 0; i < THREADS; i++) {
        writer_mailbox_clear(&s[i].fx.mb);
        event_base_free(s[i].fx.base);
    }
    assert_int_equal(count_rows(fx, "SELECT COUNT(*) FROM entries WHERE uses IS NOT NULL"),
                     THREADS * EACH);
    assert_log_intact(fx, 2 * THREADS * EACH);
}

/* Snapshots: asked of the checkpointer every snap_every entries while the writer keeps going,
 * and one at stop, so that the used jtis at the end are the newest snapshot with no row after
 * it; a jti used across two snapshots keeps its largest count. */
static void test_snapshots_of_the_used_jtis(void **state)
{
    struct fixture *fx = *state;
    struct writer *w = start(fx, &(struct writer_opts){.key = &fx->key,
                                                       .origin = ORIGIN,
                                                       .checkpoint_every = 1000,
                                                       .keep_jti_s = 60,
                                                       .snap_every = 10});
    char *err = NULL;
    for (int i = 0; i < 200; i++) {
        char id[16];
        snprintf(id, sizeof(id), "j%d", i % 50);
        struct writer_item *it = item(fx, id, NULL);
        writer_item_op(it, WOP_JTI, "w1", id, 4000000000LL, i / 50 + 1);
        assert_true(writer_submit(w, it));
        wait_done(fx, i + 1);
    }
    /* Built beside the writer, stored by it: poll until one is there. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    int64_t snap_seq = 0;
    for (int i = 0; i < 5000 && snap_seq == 0; i++) {
        struct writer_item *it = item(NULL, "tick", NULL);
        assert_true(writer_submit(w, it));
        sqlite3_stmt *q;
        assert_int_equal(
            sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(seq), 0) FROM snapshots", -1, &q, NULL),
            SQLITE_OK);
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        snap_seq = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
        if (!snap_seq)
            usleep(1000);
    }
    assert_true(snap_seq >= 10);
    writer_stop(w);

    struct snap sn;
    assert_int_equal(snap_load(db, 0, &sn, &err), 0);
    assert_int_equal(sn.tail, 0); /* the snapshot at stop covers everything */
    assert_int_equal(sn.base_seq, sn.seq);
    assert_int_equal(sn.n, 50);
    for (size_t i = 0; i < sn.n; i++)
        assert_int_equal(sn.v[i].used, 4);
    snap_free(&sn);
    sqlite3_close(db);
    assert_int_equal(count_rows(fx, "SELECT COUNT(*) FROM snapshots"), 1);
}

int main(void)
{
    assert_int_equal(evthread_use_pthreads(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_owns_key_and_origin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_low, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshots_of_the_used_jtis, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounded_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_item_fails_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_counters_and_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whole_failure_requeues_denials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_delivers_and_clear_frees, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wal_copied_off_the_commit_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_writer_lets_the_submitter_commit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_lazy_entries_need_no_thread_hop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leaders_and_the_writer_thread_share_one_log, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
