/*
 * bench/bigdb DB N LIVE TAIL -- write a gateway database of N entries for measuring start-up
 * (bench/startup.sh): a config entry, then allows of ~300 bytes, each using a jti of its own and
 * recording it in its row as the gateway does, sealed, chained and with the Merkle subtree roots
 * the store keeps; a snapshot of the LIVE newest jtis (still valid) at N - TAIL, so that a start
 * reads the snapshot and TAIL rows after it. Written with the audit code itself, in
 * transactions of 10000 entries, synchronous=OFF (a bench fixture, not a log to keep).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "audit/entry.h"
#include "audit/merkle.h"
#include "audit/snap.h"
#include "audit/store.h"

static void must(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "bigdb: %s failed\n", what);
        exit(1);
    }
}

struct log {
    struct store *st;
    struct merkle_frontier f;
    unsigned char prev[32];
    struct sb uses;
};

static void add(struct log *l, json_t *obj)
{
    struct entry_body b;
    const char *why;
    must(entry_body_encode(obj, &b, &why) == 0, "entry_body_encode");
    unsigned char leaf[32];
    must(store_append_entry(l->st, &l->f, l->prev, &b, l->uses.buf, l->uses.len, leaf) == 0,
         "store_append_entry");
    sb_reset(&l->uses);
    entry_body_clear(&b);
    json_decref(obj);
}

static void jti_of(uint64_t i, char *out, size_t n)
{
    snprintf(out, n, "bench-%018llu", (unsigned long long)i);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: bigdb DB N LIVE TAIL\n");
        return 2;
    }
    uint64_t n = strtoull(argv[2], NULL, 10), live = strtoull(argv[3], NULL, 10),
             tail = strtoull(argv[4], NULL, 10);
    must(n > tail && n - tail >= live, "N > TAIL, N - TAIL >= LIVE");
    char *err = NULL;
    struct log l = {0};
    l.st = store_open(argv[1], STORE_CREATE, &err);
    must(l.st != NULL, err ? err : "store_open");
    must(sqlite3_exec(store_db(l.st), "PRAGMA synchronous=OFF", NULL, NULL, NULL) == SQLITE_OK,
         "pragma");
    int64_t now = now_s(), exp = now + 300, ts = now * 1000;
    must(store_begin(l.st) == 0, "begin");
    add(&l, json_pack("{sI ss ss ss}", "ts_ms", (json_int_t)ts, "kind", "config", "request_id", "",
                      "config_sha256", "0123456789abcdef0123456789abcdef"));
    for (uint64_t i = 1; i < n; i++) {
        char jti[32], id[32], sha[65];
        jti_of(i, jti, sizeof(jti));
        snprintf(id, sizeof(id), "%024llx", (unsigned long long)i);
        snprintf(sha, sizeof(sha), "%064llx", (unsigned long long)i * 2654435761u);
        snap_put(&l.uses, "wallet-1", jti, exp, 1);
        add(&l,
            json_pack("{sI ss ss ss ss ss ss ss ss s[{ss ss ss ss ss}]}", "ts_ms", (json_int_t)ts,
                      "kind", "decision", "request_id", id, "principal", "alice", "agent",
                      "agent-planner", "merchant", "lux-hotels", "action", "search", "decision",
                      "allow", "code", "ok", "mandates", "typ", "intent-mandate+jwt", "iss",
                      "wallet-1", "kid", "w1", "jti", jti, "sha256", sha));
        if (l.f.size == n - tail) {
            /* The snapshot a running gateway would have written here: the LIVE newest jtis. */
            struct sb snap = {0};
            for (uint64_t j = l.f.size - live; j < l.f.size; j++) {
                jti_of(j, jti, sizeof(jti));
                snap_put(&snap, "wallet-1", jti, exp, 1);
            }
            must(store_put_snapshot(l.st, l.f.size, now - 7, snap.buf, snap.len) == 0, "snapshot");
            sb_clear(&snap);
        }
        if (i % 10000 == 0) {
            must(store_commit(l.st) == 0 && store_begin(l.st) == 0, "commit");
            if (i % 1000000 == 0)
                fprintf(stderr, "bigdb: %llu entries\n", (unsigned long long)i);
        }
    }
    must(store_commit(l.st) == 0, "commit");
    sb_clear(&l.uses);
    store_close(l.st);
    printf("bigdb: %s: %llu entries, a snapshot of %llu jtis at %llu, %llu rows after it\n",
           argv[1], (unsigned long long)n, (unsigned long long)live, (unsigned long long)(n - tail),
           (unsigned long long)tail);
    return 0;
}
