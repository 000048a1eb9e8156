/*
 * verify: offline verification and replay of the audit log.
 */
#include "audit/verify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/checkpoint.h"
#include "audit/merkle.h"
#include "core/jws.h"
#include "core/mandate.h"
#include "core/money.h"
#include "core/sjson.h"
#include "core/sha256.h"

struct row {
    int64_t seq;
    char *bytes;
    size_t len;
    unsigned char leaf[32];
    bool leaf_ok; /* the stored leaf column was 32 bytes */
};

static void violation(struct verify_report *rep, int64_t seq, const char *kind, const char *fmt,
                      ...)
{
    if (!rep->ok)
        return; /* the first one counts */
    rep->ok = false;
    rep->bad_seq = seq;
    rep->violation = kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->detail, sizeof(rep->detail), fmt, ap);
    va_end(ap);
}

static int load_rows(sqlite3 *db, struct row **out, size_t *n)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "SELECT seq, entry, leaf FROM entries ORDER BY seq", -1, &s, NULL) !=
        SQLITE_OK)
        return -1;
    size_t cap = 1024;
    struct row *v = xmalloc(cap * sizeof(*v));
    *n = 0;
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap)
            v = xrealloc(v, (cap *= 2) * sizeof(*v));
        struct row *w = &v[(*n)++];
        w->seq = sqlite3_column_int64(s, 0);
        w->len = (size_t)sqlite3_column_bytes(s, 1);
        w->bytes = xstrndup(sqlite3_column_blob(s, 1) ? sqlite3_column_blob(s, 1) : "", w->len);
        w->leaf_ok = sqlite3_column_bytes(s, 2) == 32;
        if (w->leaf_ok)
            memcpy(w->leaf, sqlite3_column_blob(s, 2), 32);
    }
    sqlite3_finalize(s);
    *out = v;
    return r == SQLITE_DONE ? 0 : -1;
}

static void free_rows(struct row *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].bytes);
    free(v);
}

static int64_t field_seq(const struct row *r)
{
    char *err = NULL;
    json_t *e = sjson_parse(r->bytes, r->len, &err);
    free(err);
    int64_t seq = -1;
    if (e && sjson_int(e, "seq", &seq) != 0)
        seq = -1;
    json_decref(e);
    return seq;
}

/* Where the sequence of entries is broken, and how: a gap, a shift or a swap. */
static void check_order(const struct row *v, size_t n, struct verify_report *rep)
{
    for (size_t i = 0; i < n && rep->ok; i++) {
        if (v[i].seq != (int64_t)i) {
            violation(rep, (int64_t)i, "deleted", "entry %zu is missing (next stored is %lld)", i,
                      (long long)v[i].seq);
            return;
        }
        int64_t f = field_seq(&v[i]);
        if (f == (int64_t)i)
            continue;
        if (f < 0)
            violation(rep, (int64_t)i, "altered", "entry %zu is not a valid entry", i);
        else if (f == (int64_t)i + 1 && i + 1 < n && field_seq(&v[i + 1]) == (int64_t)i)
            violation(rep, (int64_t)i, "reordered", "entries %zu and %zu are swapped", i, i + 1);
        else if (f == (int64_t)i - 1)
            violation(rep, (int64_t)i - 1, "inserted",
                      "entry %zu was not written by the gateway: later entries are shifted", i - 1);
        else if (f == (int64_t)i + 1)
            violation(rep, (int64_t)i, "deleted", "entry %zu was removed and later ones renumbered",
                      i);
        else if (f > (int64_t)i)
            violation(rep, (int64_t)i, "reordered", "entry stored at %zu says seq %lld", i,
                      (long long)f);
        else
            violation(rep, (int64_t)i, "inserted", "entry stored at %zu says seq %lld", i,
                      (long long)f);
    }
}

/* Leaf hashes and the prev chain. */
static void check_chain(const struct row *v, size_t n, unsigned char (*leaves)[32],
                        struct verify_report *rep)
{
    unsigned char prev[32] = {0};
    for (size_t i = 0; i < n && rep->ok; i++) {
        merkle_leaf_hash((const unsigned char *)v[i].bytes, v[i].len, leaves[i]);
        if (!v[i].leaf_ok || memcmp(leaves[i], v[i].leaf, 32) != 0) {
            violation(rep, (int64_t)i, "altered", "entry %zu does not hash to its stored leaf", i);
            return;
        }
        char *err = NULL;
        json_t *e = sjson_parse(v[i].bytes, v[i].len, &err);
        free(err);
        const char *p = e ? sjson_str(e, "prev") : NULL;
        char want[65];
        hex_encode(prev, 32, want);
        if (!p || strcmp(p, want) != 0)
            violation(rep, (int64_t)i, "chain break", "entry %zu's prev is not entry %zu's leaf", i,
                      i - 1);
        json_decref(e);
        memcpy(prev, leaves[i], 32);
    }
}

struct cp {
    uint64_t size;
    unsigned char root[32];
    const char *source;
};

static int cmp_cp(const void *a, const void *b)
{
    const struct cp *x = a, *y = b;
    return x->size < y->size ? -1 : x->size > y->size;
}

static void add_cp(struct cp **v, size_t *n, const char *note, const char *source, EVP_PKEY *key,
                   struct verify_report *rep, uint64_t entries)
{
    struct cp c = {0, {0}, source};
    const char *why;
    if (checkpoint_verify(note, key, &c.size, c.root, NULL, &why) != 0) {
        violation(rep, (int64_t)entries, "bad checkpoint signature", "%s: %s", source, why);
        return;
    }
    *v = xrealloc(*v, (*n + 1) * sizeof(**v));
    (*v)[(*n)++] = c;
}

/* Every checkpoint (stored and held): signature, size within the log, root. */
static void check_checkpoints(sqlite3 *db, const struct verify_opts *o,
                              const unsigned char (*leaves)[32], uint64_t n,
                              struct verify_report *rep)
{
    struct cp *v = NULL;
    size_t nv = 0;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "SELECT note FROM checkpoints ORDER BY size", -1, &s, NULL) ==
        SQLITE_OK) {
        while (sqlite3_step(s) == SQLITE_ROW && rep->ok)
            add_cp(&v, &nv, (const char *)sqlite3_column_text(s, 0), "stored checkpoint",
                   o->checkpoint_key, rep, n);
        sqlite3_finalize(s);
    }
    for (size_t i = 0; i < o->nheld && rep->ok; i++)
        add_cp(&v, &nv, o->held[i], "held checkpoint", o->checkpoint_key, rep, n);
    if (!rep->ok) {
        free(v);
        return;
    }
    qsort(v, nv, sizeof(*v), cmp_cp);
    /* Two signed views of the same size that differ: the log forked, whatever the entries say. */
    for (size_t i = 1; i < nv && rep->ok; i++)
        if (v[i].size == v[i - 1].size && memcmp(v[i].root, v[i - 1].root, 32) != 0)
            violation(rep, (int64_t)v[i].size - 1, "conflicting checkpoints",
                      "two signed checkpoints of size %llu with different roots",
                      (unsigned long long)v[i].size);
    struct merkle_frontier f = {0};
    for (size_t i = 0; i < nv && rep->ok; i++) {
        if (v[i].size > n) {
            violation(rep, (int64_t)n, "truncated below a held checkpoint",
                      "a %s covers %llu entries; the log has %llu", v[i].source,
                      (unsigned long long)v[i].size, (unsigned long long)n);
            break;
        }
        while (f.size < v[i].size)
            merkle_append(&f, leaves[f.size], NULL);
        unsigned char root[32];
        merkle_root(&f, root);
        if (memcmp(root, v[i].root, 32) != 0)
            violation(rep, (int64_t)v[i].size - 1, "root mismatch",
                      "the first %llu entries do not have the root the %s signed",
                      (unsigned long long)v[i].size, v[i].source);
        rep->checkpoints++;
    }
    free(v);
}

static char *mandate_text(sqlite3 *db, const char *sha)
{
    sqlite3_stmt *s;
    char *t = NULL;
    if (sqlite3_prepare_v2(db, "SELECT jws FROM mandates WHERE sha256 = ?", -1, &s, NULL) !=
        SQLITE_OK)
        return NULL;
    sqlite3_bind_text(s, 1, sha, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW)
        t = xstrdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return t;
}

/*
 * One listed mandate of an allow: its text is stored and hashes to its sha256; with a key set
 * for its issuer, its signature verifies. *claims receives its payload (caller decrefs).
 */
static void check_mandate(sqlite3 *db, const struct verify_opts *o, int64_t seq, const json_t *md,
                          json_t **claims, struct verify_report *rep)
{
    const char *sha = sjson_str(md, "sha256"), *iss = sjson_str(md, "iss");
    char *text = sha ? mandate_text(db, sha) : NULL;
    *claims = NULL;
    if (!text) {
        violation(rep, seq, "mandate missing", "the JWS of an allowed mandate is not stored");
        return;
    }
    unsigned char h[32];
    char hex[65];
    sha256(text, strlen(text), h);
    hex_encode(h, 32, hex);
    struct jws j;
    const char *why;
    if (strcmp(hex, sha) != 0 || jws_decode(text, strlen(text), 1 << 20, &j, &why) != 0) {
        violation(rep, seq, "altered", "a stored mandate does not match its hash");
        free(text);
        return;
    }
    char *err = NULL;
    *claims = sjson_parse((char *)j.payload, j.payload_len, &err);
    free(err);
    const struct jwks *set = iss ? keyring_get(o->keys, iss) : NULL;
    if (!set) {
        rep->mandates_unchecked++;
    } else {
        const struct jwk *k = jwks_find(set, j.kid);
        if (!k || jws_check(&j, k) != 0)
            violation(rep, seq, "bad mandate signature", "an allowed mandate of %s does not verify",
                      iss);
        else
            rep->mandates_checked++;
    }
    jws_clear(&j);
    free(text);
}

/* Calls fn for every entry, with the claims of an allow's mandates (the Authorization mandate
 * first, then the cart), each checked by check_mandate(); NULL claims for other entries. */
static void each_entry(sqlite3 *db, const struct row *v, size_t n, const struct verify_opts *o,
                       struct verify_report *rep,
                       void (*fn)(void *arg, int64_t seq, const json_t *entry, json_t *claims[2],
                                  struct verify_report *rep),
                       void *arg)
{
    for (size_t i = 0; i < n && rep->ok; i++) {
        char *err = NULL;
        json_t *e = sjson_parse(v[i].bytes, v[i].len, &err);
        free(err);
        const char *kind = e ? sjson_str(e, "kind") : NULL;
        const char *dec = e ? sjson_str(e, "decision") : NULL;
        json_t *claims[2] = {NULL, NULL};
        if (kind && strcmp(kind, "decision") == 0 && dec && strcmp(dec, "allow") == 0) {
            rep->allows++;
            size_t k;
            json_t *md;
            json_array_foreach(json_object_get(e, "mandates"), k, md)
            {
                json_t *c;
                check_mandate(db, o, (int64_t)i, md, &c, rep);
                if (k < 2)
                    claims[k] = c;
                else
                    json_decref(c);
            }
        }
        if (e && rep->ok && fn)
            fn(arg, (int64_t)i, e, claims, rep);
        json_decref(claims[0]);
        json_decref(claims[1]);
        json_decref(e);
    }
}

/* A fresh report and every row of the log; -1 if the log cannot be read. */
static int begin(sqlite3 *db, struct verify_report *rep, struct row **v, size_t *n)
{
    memset(rep, 0, sizeof(*rep));
    rep->ok = true;
    rep->bad_seq = -1;
    if (load_rows(db, v, n) != 0)
        return -1;
    rep->entries = *n;
    return 0;
}

int verify_log(sqlite3 *db, const struct verify_opts *o, struct verify_report *rep)
{
    struct row *v;
    size_t n;
    if (begin(db, rep, &v, &n) != 0)
        return -1;
    unsigned char(*leaves)[32] = xcalloc(n + 1, 32);
    check_order(v, n, rep);
    if (rep->ok)
        check_chain(v, n, leaves, rep);
    if (rep->ok)
        check_checkpoints(db, o, (const unsigned char(*)[32])leaves, n, rep);
    if (rep->ok)
        each_entry(db, v, n, o, rep, NULL, NULL);
    free(leaves);
    free_rows(v, n);
    return 0;
}

/* Replay state: counts by key (uses per issuer and jti; spend per ledger key; the reservation
 * of each request). Linear lists are plenty for an offline tool over test-sized logs. */
struct tally {
    struct used {
        char *key;
        int64_t count;
    } * v;
    size_t n;
};

struct replay {
    struct tally uses, spend, reserved;
    int64_t skew_s;
};

static int64_t *tally_at(struct tally *t, const char *key)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->v[i].key, key) == 0)
            return &t->v[i].count;
    t->v = xrealloc(t->v, (t->n + 1) * sizeof(*t->v));
    t->v[t->n] = (struct used){xstrdup(key), 0};
    return &t->v[t->n++].count;
}

static void tally_clear(struct tally *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].key);
    free(t->v);
}

/* The cart: paid once. The payment: its spend, in its cap period, within its cap. */
static void replay_priced(struct replay *rp, int64_t seq, const json_t *entry, const json_t *pay,
                          const json_t *cart, struct verify_report *rep)
{
    const char *ciss = sjson_str(cart, "iss"), *cjti = sjson_str(cart, "jti");
    char *ckey = xasprintf("%s\n%s", ciss ? ciss : "", cjti ? cjti : "");
    int64_t *paid = tally_at(&rp->uses, ckey);
    free(ckey);
    if (++*paid > 1) {
        violation(rep, seq, "reused cart", "cart %s paid %lld times", cjti ? cjti : "?",
                  (long long)*paid);
        return;
    }
    struct money total, cap;
    const char *why, *iss = sjson_str(pay, "iss"), *sub = sjson_str(pay, "sub");
    enum cap_period period;
    json_t *capj = json_object_get(pay, "cap");
    int64_t ts;
    if (!iss || !sub || money_from_json(json_object_get(pay, "total"), false, &total, &why) ||
        money_from_json(capj, true, &cap, &why) ||
        cap_period_parse(sjson_str(capj, "period"), &period) || sjson_int(entry, "ts_ms", &ts)) {
        violation(rep, seq, "malformed allow", "a priced allow without total or cap");
        return;
    }
    char key[CAP_KEY_MAX];
    cap_key(iss, sub, &cap, period, ts / 1000, key);
    int64_t *spent = tally_at(&rp->spend, key);
    *spent += total.value;
    if (*spent > cap.value) {
        violation(rep, seq, "cap exceeded", "%s: %lld spent, cap %lld", key, (long long)*spent,
                  (long long)cap.value);
        return;
    }
    char *rkey = xasprintf("%s\n%s", sjson_str(entry, "request_id"), key);
    *tally_at(&rp->reserved, rkey) = total.value;
    free(rkey);
}

/* A released reservation stops counting. */
static void replay_outcome(struct replay *rp, const json_t *entry)
{
    const char *spend = sjson_str(entry, "spend"), *id = sjson_str(entry, "request_id");
    if (!spend || !id || strcmp(spend, "released") != 0)
        return;
    size_t idl = strlen(id);
    for (size_t i = 0; i < rp->reserved.n; i++) {
        struct used *u = &rp->reserved.v[i];
        if (strncmp(u->key, id, idl) == 0 && u->key[idl] == '\n') {
            *tally_at(&rp->spend, u->key + idl + 1) -= u->count;
            u->count = 0;
        }
    }
}

static void replay_entry(void *arg, int64_t seq, const json_t *entry, json_t *claims[2],
                         struct verify_report *rep)
{
    struct replay *rp = arg;
    const char *kind = sjson_str(entry, "kind");
    if (kind && strcmp(kind, "outcome") == 0)
        replay_outcome(rp, entry);
    if (!claims[0])
        return;
    const char *iss = sjson_str(claims[0], "iss"), *jti = sjson_str(claims[0], "jti");
    int64_t uses = 1, exp = 0, ts = 0;
    if (sjson_int(claims[0], "uses", &uses) != 0)
        uses = 1;
    if (!iss || !jti || sjson_int(claims[0], "exp", &exp) || sjson_int(entry, "ts_ms", &ts)) {
        violation(rep, seq, "malformed allow", "an allow without issuer, jti, exp or time");
        return;
    }
    if (exp + rp->skew_s < ts / 1000) {
        violation(rep, seq, "expired mandate", "allowed %lld s after its mandate expired",
                  (long long)(ts / 1000 - exp));
        return;
    }
    char *key = xasprintf("%s\n%s", iss, jti);
    int64_t *count = tally_at(&rp->uses, key);
    free(key);
    if (++*count > uses)
        violation(rep, seq, "reused jti", "jti %s allowed %lld times; it allows %lld", jti,
                  (long long)*count, (long long)uses);
    else if (claims[1])
        replay_priced(rp, seq, entry, claims[0], claims[1], rep);
}

int replay_log(sqlite3 *db, const struct verify_opts *o, struct verify_report *rep)
{
    struct row *v;
    size_t n;
    if (begin(db, rep, &v, &n) != 0)
        return -1;
    struct replay rp = {{0}, {0}, {0}, o->skew_s};
    each_entry(db, v, n, o, rep, replay_entry, &rp);
    tally_clear(&rp.uses);
    tally_clear(&rp.spend);
    tally_clear(&rp.reserved);
    free_rows(v, n);
    return 0;
}

json_t *verify_report_json(const struct verify_report *rep)
{
    json_t *o =
        json_pack("{sb sI sI sI sI sI}", "ok", rep->ok, "entries", (json_int_t)rep->entries,
                  "checkpoints", (json_int_t)rep->checkpoints, "allows", (json_int_t)rep->allows,
                  "mandates_checked", (json_int_t)rep->mandates_checked, "mandates_unchecked",
                  (json_int_t)rep->mandates_unchecked);
    if (!rep->ok) {
        sjson_set(o, "bad_seq", json_integer(rep->bad_seq));
        sjson_set(o, "violation", json_string(rep->violation));
        sjson_set(o, "detail", json_string(rep->detail));
    }
    return o;
}
