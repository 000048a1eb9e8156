/*
 * libFuzzer target: mandate-audit reading a corrupted database. Each input is a whole SQLite file
 * (mutated from a small real log), written to a temporary file and put through verify_file(), the
 * path `mandate-audit verify` and `replay` take: the answer must be 0, 1 or 2 (intact, violation,
 * cannot verify), never a crash, a leak or a hang.
 *
 * Seed: databases are never committed, so LLVMFuzzerInitialize() builds one with the gateway's
 * own store, entry and checkpoint code (a config entry, allows with their mandates, a denial, a
 * paid booking, outcomes, a revocation, a denial_summary; two checkpoints, the stored subtree
 * roots, the allows' uses and a snapshot of them), checks that it verifies as intact, and writes it
 * as seed-real.db into the corpus directory (the first directory named on the command line). The
 * checkpoint key is derived from a fixed seed so that the corpus stays meaningful from run to run;
 * it signs nothing but these test logs.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "audit/checkpoint.h"
#include "audit/entry.h"
#include "audit/merkle.h"
#include "audit/snap.h"
#include "audit/store.h"
#include "audit/verify.h"
#include "core/mandate.h"
#include "core/sha256.h"
#include "core/sjson.h"

#define ORIGIN "fuzz.example/audit"
#define TS     1800000000000LL

static struct jwk cp_key;
static char dir[64], path[96];
static struct keyring keys;

static void must(int ok)
{
    if (!ok)
        abort();
}

struct log {
    struct store *st;
    struct merkle_frontier f;
    unsigned char prev[32];
};

/* Seal and store one entry as the writer does, with its subtree roots and the uses of the
 * mandates it used (NULL: none; emptied). */
static void add_used(struct log *l, json_t *obj, struct sb *uses)
{
    struct entry_body b;
    const char *why;
    must(entry_body_encode(obj, &b, &why) == 0);
    unsigned char leaf[32];
    must(store_append_entry(l->st, &l->f, l->prev, &b, uses ? uses->buf : NULL,
                            uses ? uses->len : 0, leaf) == 0);
    if (uses)
        sb_reset(uses);
    entry_body_clear(&b);
    json_decref(obj);
}

static void add(struct log *l, json_t *obj)
{
    add_used(l, obj, NULL);
}

static void checkpoint(struct log *l)
{
    unsigned char root[32];
    merkle_root(&l->f, root);
    char *note = checkpoint_sign(&cp_key, ORIGIN, l->f.size, root);
    must(note && store_put_checkpoint(l->st, l->f.size, note) == 0);
    free(note);
}

/* A mandate signed and stored; its listing for an entry's "mandates". */
static json_t *mandate(struct log *l, const struct jwk *k, const char *iss, enum mandate_typ typ,
                       json_t *claims, char **text)
{
    char *tok = mandate_sign(k, typ, claims);
    must(tok != NULL);
    unsigned char h[32];
    char hex[65];
    sha256(tok, strlen(tok), h);
    hex_encode(h, 32, hex);
    must(store_put_mandate(l->st, hex, tok) == 0);
    json_t *md = json_pack("{ss ss ss ss ss}", "typ", mandate_typ_name(typ), "iss", iss, "kid",
                           k->kid, "jti", sjson_str(claims, "jti"), "sha256", hex);
    json_decref(claims);
    if (text)
        *text = tok;
    else
        free(tok);
    return md;
}

static json_t *decision(const char *id, const char *action, const char *dec, const char *code,
                        json_t *mandates)
{
    return json_pack("{sI ss ss ss ss ss ss ss ss so}", "ts_ms", (json_int_t)TS, "kind", "decision",
                     "request_id", id, "principal", "alice", "agent", "agent-planner", "merchant",
                     "lux-hotels", "action", action, "decision", dec, "code", code, "mandates",
                     mandates);
}

static void build_seed(const char *file)
{
    char *err = NULL;
    struct log l = {0};
    must((l.st = store_open(file, STORE_CREATE, &err)) != NULL);
    struct jwk *w = &keys.v[0].jwks->keys[0], *m = &keys.v[1].jwks->keys[0];
    must(store_begin(l.st) == 0);
    add(&l, json_pack("{sI ss ss ss}", "ts_ms", (json_int_t)TS, "kind", "config", "request_id", "",
                      "config_sha256", "0123456789abcdef0123456789abcdef"));
    json_t *intent =
        mandate(&l, w, "wallet-1", MANDATE_INTENT,
                json_pack("{ss ss s{ss} ss ss sI sI ss sI}", "iss", "wallet-1", "sub", "alice",
                          "act", "sub", "agent-planner", "aud", "lux-hotels", "action", "search",
                          "iat", (json_int_t)(TS / 1000), "exp", (json_int_t)(TS / 1000 + 60),
                          "jti", "fuzz-intent-000001", "uses", (json_int_t)2),
                NULL);
    struct sb uses = {0};
    snap_put(&uses, "wallet-1", "fuzz-intent-000001", TS / 1000 + 60, 1);
    add_used(&l, decision("r-1", "search", "allow", "ok", json_pack("[O]", intent)), &uses);
    add(&l, json_pack("{sI ss ss ss si sI sI}", "ts_ms", (json_int_t)TS, "kind", "outcome",
                      "request_id", "r-1", "result", "ok", "status", 200, "bytes", (json_int_t)42,
                      "upstream_us", (json_int_t)900));
    add(&l, decision("r-2", "search", "deny", "mandate_expired", json_array()));
    checkpoint(&l);
    /* A snapshot of the uses so far: what replay checks, with the rows after it. */
    snap_put(&uses, "wallet-1", "fuzz-intent-000001", TS / 1000 + 60, 1);
    must(store_put_snapshot(l.st, l.f.size, TS / 1000 - 7, uses.buf, uses.len) == 0);
    sb_reset(&uses);
    char *cart_tok;
    json_t *cart =
        mandate(&l, m, "lux-hotels", MANDATE_CART,
                json_pack("{ss ss ss sI sI ss s[{ss si s{si ss}}] s{si ss}}", "iss", "lux-hotels",
                          "sub", "alice", "jti", "fuzz-cart-00000001", "iat",
                          (json_int_t)(TS / 1000), "exp", (json_int_t)(TS / 1000 + 600), "action",
                          "book_room", "items", "sku", "deluxe", "qty", 1, "unit", "value", 18000,
                          "currency", "EUR", "total", "value", 18000, "currency", "EUR"),
                &cart_tok);
    char hash[44];
    mandate_cart_hash(cart_tok, strlen(cart_tok), hash);
    free(cart_tok);
    json_t *pay = mandate(
        &l, w, "wallet-1", MANDATE_PAYMENT,
        json_pack("{ss ss s{ss} ss ss sI sI ss ss s{si ss} s{si ss ss}}", "iss", "wallet-1", "sub",
                  "alice", "act", "sub", "agent-planner", "aud", "lux-hotels", "action",
                  "book_room", "iat", (json_int_t)(TS / 1000), "exp", (json_int_t)(TS / 1000 + 60),
                  "jti", "fuzz-payment-00001", "cart", hash, "total", "value", 18000, "currency",
                  "EUR", "cap", "value", 50000, "currency", "EUR", "period", "day"),
        NULL);
    json_t *paid = decision("r-3", "book_room", "allow", "ok", json_pack("[oo]", pay, cart));
    sjson_set(paid, "amount", json_pack("{si ss}", "value", 18000, "currency", "EUR"));
    snap_put(&uses, "wallet-1", "fuzz-payment-00001", TS / 1000 + 60, 1);
    snap_put(&uses, "lux-hotels", "fuzz-cart-00000001", TS / 1000 + 600, 1);
    add_used(&l, paid, &uses);
    add(&l, json_pack("{sI ss ss ss si sI sI ss}", "ts_ms", (json_int_t)TS, "kind", "outcome",
                      "request_id", "r-3", "result", "ok", "status", 201, "bytes", (json_int_t)2,
                      "upstream_us", (json_int_t)700, "spend", "committed"));
    add(&l, json_pack("{sI ss ss s{ss}}", "ts_ms", (json_int_t)TS, "kind", "revocation",
                      "request_id", "", "revoke", "jti", "fuzz-intent-000002"));
    add(&l, json_pack("{sI ss ss ss si s{si si}}", "ts_ms", (json_int_t)TS, "kind",
                      "denial_summary", "request_id", "", "client", "10.0.0.7", "count", 57,
                      "codes", "mandate_missing", 50, "route_not_found", 7));
    snap_put(&uses, "wallet-1", "fuzz-intent-000001", TS / 1000 + 60, 2);
    add_used(&l, decision("r-4", "search", "allow", "ok", json_pack("[o]", intent)), &uses);
    sb_clear(&uses);
    checkpoint(&l);
    must(store_commit(l.st) == 0);
    /* Small pages and no WAL: a few kilobytes for the fuzzer to mutate. */
    must(sqlite3_exec(store_db(l.st), "PRAGMA journal_mode=DELETE; PRAGMA page_size=512; VACUUM",
                      NULL, NULL, NULL) == SQLITE_OK);
    store_close(l.st);
}

static struct verify_opts opts(void)
{
    return (struct verify_opts){.checkpoint_key = cp_key.pkey,
                                .keys = &keys,
                                .skew_s = 5,
                                .origin = ORIGIN,
                                .require = VERIFY_REQUIRE_AUTO};
}

static void clean(void)
{
    static const char *const ext[] = {"", "-wal", "-shm", "-journal"};
    char p[128];
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "%s%s", path, ext[i]);
        unlink(p);
    }
}

/* libFuzzer ends with exit(): the temporary directory goes with it. */
static void remove_dir(void)
{
    clean();
    rmdir(dir);
}

static void add_issuer(const char *id, const char *kid)
{
    struct jwks *set = xcalloc(1, sizeof(*set));
    set->keys = xcalloc(1, sizeof(struct jwk));
    must(jwk_generate(JWK_ES256, kid, &set->keys[0]) == 0);
    set->n = 1;
    keyring_add(&keys, id, set);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const unsigned char seed[32] = "mandate-audit fuzz target key..";
    cp_key.alg = JWK_EDDSA;
    snprintf(cp_key.kid, sizeof(cp_key.kid), "cp");
    must((cp_key.pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32)) != NULL);
    add_issuer("wallet-1", "w1");
    add_issuer("lux-hotels", "lux1");
    snprintf(dir, sizeof(dir), "%s/fuzz_auditdb.XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    must(mkdtemp(dir) != NULL);
    atexit(remove_dir);
    snprintf(path, sizeof(path), "%s/in.db", dir);
    char seedp[96];
    snprintf(seedp, sizeof(seedp), "%s/seed.db", dir);
    build_seed(seedp);
    /* The seed is a real, intact log: anything else means the target or verify is wrong. */
    struct verify_opts o = opts();
    struct verify_report rep;
    char *err = NULL;
    if (verify_file(seedp, &o, true, &rep, &err) != 0) {
        fprintf(stderr, "fuzz_auditdb: the seed does not verify: %s %s\n",
                err ? err : rep.violation, err ? "" : rep.detail);
        abort();
    }
    size_t len;
    char *bytes = file_read(seedp, 1 << 20, &len, &err);
    must(bytes != NULL);
    unlink(seedp);
    for (int i = 1; i < *argc; i++) {
        struct stat sb;
        const char *a = (*argv)[i];
        if (a[0] == '-' || stat(a, &sb) != 0 || !S_ISDIR(sb.st_mode))
            continue;
        char out[4096];
        snprintf(out, sizeof(out), "%s/seed-real.db", a);
        FILE *f = fopen(out, "wb");
        if (f) {
            fwrite(bytes, 1, len, f);
            fclose(f);
        }
        break; /* the first directory is the corpus libFuzzer writes; the others are inputs */
    }
    free(bytes);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    clean();
    FILE *f = fopen(path, "wb");
    must(f != NULL);
    must(fwrite(data, 1, size, f) == size);
    must(fclose(f) == 0);
    struct verify_opts o = opts();
    struct verify_report rep;
    char *err = NULL;
    /* replay runs every check verify makes, then the replay rules. */
    int rc = verify_file(path, &o, true, &rep, &err);
    free(err);
    if (rc < 0 || rc > 2)
        abort();
    clean();
    return 0;
}
