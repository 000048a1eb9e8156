/*
 * verify: offline verification of the audit log. Verify and replay run the same integrity checks
 * (check_log): the order of the entries, their chain, the signed checkpoints and how much of the
 * log they cover, and every entry against its kind and, for an allow, against its mandates.
 * Replay (audit/replay.c) then walks the entries again (verify_walk_next) to re-derive state from
 * entries that are known to be the gateway's own; its rules are not here.
 */
#include "audit/verify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/checkpoint.h"
#include "audit/merkle.h"
#include "audit/replay.h"
#include "audit/store.h"
#include "core/b64url.h"
#include "core/jws.h"
#include "core/money.h"
#include "core/sha256.h"
#include "core/sjson.h"

struct row {
    int64_t seq;
    char *bytes;
    size_t len;
    unsigned char leaf[32]; /* the stored leaf column, in a log of the older layout */
    bool leaf_ok;           /* it was 32 bytes */
};

static void violation(struct verify_report *rep, int64_t seq, const char *kind, const char *fmt,
                      ...) PRINTF(4, 5);

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

/* Every entry; *leaves tells whether the log is of the older layout that stored leaf hashes. */
static int load_rows(sqlite3 *db, struct row **out, size_t *n, bool *leaves)
{
    sqlite3_stmt *s;
    *out = NULL;
    *n = 0;
    *leaves = store_has_column(db, "leaf");
    if (sqlite3_prepare_v2(db,
                           *leaves ? "SELECT seq, entry, leaf FROM entries ORDER BY seq"
                                   : "SELECT seq, entry, NULL FROM entries ORDER BY seq",
                           -1, &s, NULL) != SQLITE_OK)
        return -1;
    size_t cap = 1024;
    struct row *v = xmalloc(cap * sizeof(*v));
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap)
            v = xrealloc(v, (cap *= 2) * sizeof(*v));
        struct row *w = &v[(*n)++];
        w->seq = sqlite3_column_int64(s, 0);
        /* The stored bytes as they are: a NUL inside is the entry's business (it will not
         * parse), not a reason to hash fewer bytes than were stored. */
        const void *b = sqlite3_column_blob(s, 1);
        w->len = (size_t)sqlite3_column_bytes(s, 1);
        w->bytes = xmalloc(w->len + 1);
        if (w->len)
            memcpy(w->bytes, b, w->len);
        w->bytes[w->len] = '\0';
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

static json_t *parse_row(const struct row *r)
{
    char *err = NULL;
    json_t *e = sjson_parse(r->bytes, r->len, &err);
    free(err);
    return e;
}

static int64_t field_seq(const struct row *r)
{
    json_t *e = parse_row(r);
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

/* Whether entry i's prev is the leaf hash of entry i - 1 (64 zeros for entry 0). */
static bool linked(const struct row *v, size_t i, const unsigned char (*leaves)[32])
{
    static const unsigned char zero[32];
    char want[65];
    hex_encode(i ? leaves[i - 1] : zero, 32, want);
    json_t *e = parse_row(&v[i]);
    const char *p = e ? sjson_str(e, "prev") : NULL;
    bool ok = p && strcmp(p, want) == 0;
    json_decref(e);
    return ok;
}

/*
 * Leaf hashes and the prev chain. In a log of the older layout each entry is first checked
 * against its stored leaf. Otherwise the chain itself says which entry changed: when entry i's
 * prev is not entry i - 1's leaf but entry i + 1's prev is still entry i's, entry i is as written
 * and entry i - 1 was altered; when both links break, entry i was rewritten (its prev with it).
 */
static void check_chain(const struct row *v, size_t n, bool stored_leaves,
                        unsigned char (*leaves)[32], struct verify_report *rep)
{
    for (size_t i = 0; i < n; i++)
        merkle_leaf_hash((const unsigned char *)v[i].bytes, v[i].len, leaves[i]);
    for (size_t i = 0; i < n; i++) {
        if (stored_leaves && (!v[i].leaf_ok || memcmp(leaves[i], v[i].leaf, 32) != 0)) {
            violation(rep, (int64_t)i, "altered", "entry %zu does not hash to its stored leaf", i);
            return;
        }
        if (linked(v, i, (const unsigned char(*)[32])leaves))
            continue;
        if (!stored_leaves && i > 0 && i + 1 < n &&
            linked(v, i + 1, (const unsigned char(*)[32])leaves))
            violation(rep, (int64_t)i - 1, "altered",
                      "entry %zu does not hash to the prev that entry %zu holds", i - 1, i);
        else
            violation(rep, (int64_t)i, "chain break", "entry %zu's prev is not entry %zu's leaf", i,
                      i - 1);
        return;
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

static void add_cp(struct cp **v, size_t *n, const char *note, const char *source,
                   const struct verify_opts *o, struct verify_report *rep, uint64_t entries)
{
    struct cp c = {0, {0}, source};
    const char *why;
    char *origin = NULL;
    if (checkpoint_verify(note ? note : "", o->checkpoint_key, &c.size, c.root, &origin, &why) !=
        0) {
        violation(rep, (int64_t)entries, "bad checkpoint signature", "%s: %s", source, why);
        return;
    }
    /* The key may sign for several logs (one per node of a cluster): the origin says which. */
    if (o->origin && strcmp(origin, o->origin) != 0) {
        violation(rep, c.size ? (int64_t)c.size - 1 : 0, "wrong origin",
                  "a %s of %llu entries is for origin \"%.80s\", not \"%.80s\"", source,
                  (unsigned long long)c.size, origin, o->origin);
        free(origin);
        return;
    }
    free(origin);
    *v = xrealloc(*v, (*n + 1) * sizeof(**v));
    (*v)[(*n)++] = c;
}

/*
 * Every checkpoint (stored and held): signature, origin, size within the log, root. Sets
 * rep->covered to the largest verified size; *stored receives the number of stored rows.
 */
static void check_checkpoints(sqlite3 *db, const struct verify_opts *o,
                              const unsigned char (*leaves)[32], uint64_t n, uint64_t *stored,
                              struct verify_report *rep)
{
    struct cp *v = NULL;
    size_t nv = 0;
    sqlite3_stmt *s;
    *stored = 0;
    if (sqlite3_prepare_v2(db, "SELECT note FROM checkpoints ORDER BY size", -1, &s, NULL) ==
        SQLITE_OK) {
        while (sqlite3_step(s) == SQLITE_ROW && rep->ok) {
            (*stored)++;
            add_cp(&v, &nv, (const char *)sqlite3_column_text(s, 0), "stored checkpoint", o, rep,
                   n);
        }
        sqlite3_finalize(s);
    }
    for (size_t i = 0; i < o->nheld && rep->ok; i++)
        add_cp(&v, &nv, o->held[i], "held checkpoint", o, rep, n);
    if (!rep->ok) {
        free(v);
        return;
    }
    if (nv)
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
            violation(rep, v[i].size ? (int64_t)v[i].size - 1 : 0, "root mismatch",
                      "the first %llu entries do not have the root the %s signed",
                      (unsigned long long)v[i].size, v[i].source);
        rep->checkpoints++;
        rep->covered = v[i].size;
    }
    free(v);
}

/* Whether enough of the log is under a signed checkpoint (enum verify_require). */
static void check_coverage(const struct verify_opts *o, uint64_t n, uint64_t stored,
                           struct verify_report *rep)
{
    bool all = o->require == VERIFY_REQUIRE_ALL ||
               (o->require == VERIFY_REQUIRE_AUTO && (n > 1 || stored > 0));
    if (!all || rep->covered >= n)
        return;
    if (rep->covered == 0)
        violation(rep, 0, "not checkpointed",
                  "no signed checkpoint covers any of the %llu entries (%llu stored): checkpoints "
                  "were removed, or the log was not written by a gateway that signs them",
                  (unsigned long long)n, (unsigned long long)stored);
    else
        violation(rep, (int64_t)rep->covered, "not checkpointed",
                  "entries %llu to %llu are under no signed checkpoint",
                  (unsigned long long)rep->covered, (unsigned long long)n - 1);
}

/* --- one entry: its members, and an allow against its mandates ------------------------------ */

enum entry_kind { K_DECISION, K_OUTCOME, K_REVOCATION, K_CONFIG, K_DENIAL_SUMMARY };
static const char *const entry_kinds[] = {"decision", "outcome", "revocation", "config",
                                          "denial_summary"};
static const char *const revoke_kinds[] = {"jti", "agent", "principal", "kid"};
static const char *const mandate_fields[] = {"typ", "iss", "kid", "jti", "sha256"};

static bool has_strs(const json_t *o, const char *const *keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!sjson_str(o, keys[i]))
            return false;
    return true;
}

/* A decision's members; NULL, or what is missing. */
static const char *decision_shape(const json_t *e)
{
    static const char *const strs[] = {"principal", "agent", "merchant", "action", "code"};
    if (!has_strs(e, strs, ARRAY_LEN(strs)))
        return "a decision without principal, agent, merchant, action or code";
    const char *d = sjson_str(e, "decision"), *code = sjson_str(e, "code");
    if (!d || (strcmp(d, "allow") != 0 && strcmp(d, "deny") != 0))
        return "a decision that is neither allow nor deny";
    /* The gateway writes code "ok" for an allow and the reason for a denial, nothing else. */
    if ((strcmp(d, "allow") == 0) != (strcmp(code, "ok") == 0))
        return "a decision whose code contradicts it";
    json_t *ms = json_object_get(e, "mandates"), *md;
    size_t i;
    if (!json_is_array(ms))
        return "a decision without a mandates list";
    json_array_foreach(
        ms, i, md) if (!has_strs(md, mandate_fields,
                                 ARRAY_LEN(mandate_fields))) return "a listed mandate without typ, "
                                                                    "iss, kid, jti or sha256";
    struct money m;
    const char *why;
    json_t *amount = json_object_get(e, "amount");
    if (amount && money_from_json(amount, false, &m, &why) != 0)
        return "a decision whose amount is not money";
    return NULL;
}

/* A denial_summary (SPEC §5): the client, and a count that its codes add up to. */
static const char *summary_shape(const json_t *e)
{
    const char *client = sjson_str(e, "client");
    int64_t count, sum = 0, n;
    json_t *codes = json_object_get(e, "codes"), *c;
    const char *code;
    if (!client || !*client || sjson_int(e, "count", &count) != 0 || count < 1 ||
        !json_is_object(codes) || json_object_size(codes) == 0)
        return "a denial_summary without client, count or codes";
    json_object_foreach(codes, code, c)
    {
        if (!json_is_integer(c) || (n = json_integer_value(c)) < 1 || n > count - sum)
            return "a denial_summary whose codes do not add up to its count";
        sum += n;
    }
    return sum == count ? NULL : "a denial_summary whose codes do not add up to its count";
}

/* A config entry: config_sha256, and the key sets it lists (optional: older logs have none). */
static const char *config_shape(const json_t *e)
{
    if (!sjson_str(e, "config_sha256"))
        return "a config entry without config_sha256";
    json_t *list = json_object_get(e, "keysets"), *ref;
    size_t i;
    if (list && !json_is_array(list))
        return "a config entry whose keysets is not a list";
    for (i = 0; i < json_array_size(list); i++) {
        ref = json_array_get(list, i);
        if (!sjson_str(ref, "owner") || !sjson_str(ref, "sha256"))
            return "a config entry listing a key set without owner or sha256";
    }
    return NULL;
}

/* The members every entry has and those of its kind (SPEC §4, §5): NULL, or what is wrong. */
static const char *entry_shape(const json_t *e, int *kind)
{
    int64_t v, x;
    *kind = -1;
    if (!json_is_object(e))
        return "not a JSON object";
    if (sjson_int(e, "v", &v) != 0 || v != 1)
        return "not a version 1 entry";
    if (sjson_int(e, "seq", &x) != 0 || x < 0 || sjson_int(e, "ts_ms", &x) != 0 || x < 0 ||
        !sjson_str(e, "prev") || !sjson_str(e, "request_id"))
        return "an entry without seq, prev, ts_ms or request_id";
    *kind = name_index(sjson_str(e, "kind"), entry_kinds, ARRAY_LEN(entry_kinds));
    json_t *rv;
    switch (*kind) {
    case K_DECISION:
        return decision_shape(e);
    case K_OUTCOME:
        return sjson_str(e, "result") && sjson_int(e, "status", &x) == 0
                   ? NULL
                   : "an outcome without result or status";
    case K_REVOCATION:
        rv = json_object_get(e, "revoke");
        if (json_object_size(rv) != 1 ||
            name_index(json_object_iter_key(json_object_iter(rv)), revoke_kinds,
                       ARRAY_LEN(revoke_kinds)) < 0 ||
            !json_is_string(json_object_iter_value(json_object_iter(rv))))
            return "a revocation that does not name one jti, agent, principal or kid";
        return NULL;
    case K_CONFIG:
        return config_shape(e);
    case K_DENIAL_SUMMARY:
        return summary_shape(e);
    default:
        return "an entry of no known kind";
    }
}

static bool str_eq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* --- key sets stored in the log ------------------------------------------------------------ */

/* The keysets table, read once; which rows config entries list, and which owners were used. */
struct keystore {
    struct stored_set {
        char *owner;
        char sha[65];       /* as stored (truncated to 64 hex digits) */
        bool intact;        /* the text hashes to sha */
        struct jwks *set;   /* parsed text, or NULL */
        int64_t listed_seq; /* the first config entry that lists it, or -1 */
    } * v;
    size_t n;
    char *used; /* owners whose mandates were checked with stored sets: "a,b" */
};

/* Read every stored key set; 0, or -1 when the table exists but cannot be read. */
static int keystore_load(sqlite3 *db, struct keystore *ks)
{
    sqlite3_stmt *s;
    memset(ks, 0, sizeof(*ks));
    /* A log written before key sets were stored has no such table: nothing stored. */
    if (sqlite3_prepare_v2(db,
                           "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'keysets'",
                           -1, &s, NULL) != SQLITE_OK)
        return -1;
    bool exists = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    if (!exists)
        return 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT sha256, owner, jwks FROM keysets ORDER BY owner, first_seen_ms",
                           -1, &s, NULL) != SQLITE_OK)
        return -1;
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        const char *sha = (const char *)sqlite3_column_text(s, 0);
        const char *owner = (const char *)sqlite3_column_text(s, 1);
        const char *text = (const char *)sqlite3_column_text(s, 2);
        ks->v = xrealloc(ks->v, (ks->n + 1) * sizeof(*ks->v));
        struct stored_set *k = &ks->v[ks->n++];
        memset(k, 0, sizeof(*k));
        k->owner = xstrdup(owner ? owner : "");
        snprintf(k->sha, sizeof(k->sha), "%s", sha ? sha : "");
        k->listed_seq = -1;
        if (text) {
            unsigned char h[32];
            char hex[65];
            size_t len = (size_t)sqlite3_column_bytes(s, 2);
            sha256(text, len, h);
            hex_encode(h, 32, hex);
            k->intact = sha && strcmp(hex, sha) == 0;
            char *err = NULL;
            json_t *doc = k->intact ? sjson_parse(text, len, &err) : NULL;
            if (doc)
                k->set = jwks_from_json(doc, &err);
            json_decref(doc);
            free(err);
        }
    }
    sqlite3_finalize(s);
    return r == SQLITE_DONE ? 0 : -1;
}

static void keystore_clear(struct keystore *ks)
{
    for (size_t i = 0; i < ks->n; i++) {
        free(ks->v[i].owner);
        jwks_free(ks->v[i].set);
    }
    free(ks->v);
    free(ks->used);
    memset(ks, 0, sizeof(*ks));
}

static struct stored_set *keystore_find(struct keystore *ks, const char *owner, const char *sha)
{
    for (size_t i = 0; i < ks->n; i++)
        if (strcmp(ks->v[i].owner, owner) == 0 && strcmp(ks->v[i].sha, sha) == 0)
            return &ks->v[i];
    return NULL;
}

/* A config entry's list of key sets: each stored, intact, and from now on usable. */
static void keystore_listed(struct keystore *ks, int64_t seq, const json_t *e,
                            struct verify_report *rep)
{
    json_t *list = json_object_get(e, "keysets"), *ref;
    size_t i;
    json_array_foreach(list, i, ref)
    {
        const char *owner = sjson_str(ref, "owner"), *sha = sjson_str(ref, "sha256");
        struct stored_set *k = keystore_find(ks, owner, sha);
        if (!k) {
            violation(rep, seq, "key set missing",
                      "the key set %.16s… of %.80s that the config entry lists is not stored", sha,
                      owner);
            return;
        }
        if (!k->intact) {
            violation(rep, seq, "key set altered",
                      "the stored key set %.16s… of %.80s does not hash to its sha256", sha, owner);
            return;
        }
        if (!k->set) {
            violation(rep, seq, "key set altered",
                      "the stored key set %.16s… of %.80s is not a key set", sha, owner);
            return;
        }
        if (k->listed_seq < 0)
            k->listed_seq = seq;
    }
}

/* After every entry: a stored row that no entry lists must still hash to its sha256. */
static void keystore_unlisted(const struct keystore *ks, struct verify_report *rep)
{
    for (size_t i = 0; i < ks->n && rep->ok; i++)
        if (!ks->v[i].intact)
            violation(rep, -1, "key set altered",
                      "the stored key set %.16s… of %.80s does not hash to its sha256 (no entry "
                      "lists it)",
                      ks->v[i].sha, ks->v[i].owner);
}

static void keystore_note_owner(struct keystore *ks, const char *owner)
{
    size_t len = strlen(owner);
    for (const char *p = ks->used; p && *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && memcmp(p, owner, n) == 0)
            return;
        p = end ? end + 1 : p + n;
    }
    char *next = ks->used ? xasprintf("%s,%s", ks->used, owner) : xstrdup(owner);
    free(ks->used);
    ks->used = next;
}

/*
 * A mandate of iss, for which no key set was given, against the stored sets of iss listed at or
 * before seq. Returns false when there are none (the mandate is not checked).
 */
static bool check_stored(struct keystore *ks, int64_t seq, const char *iss, const struct jws *j,
                         struct verify_report *rep)
{
    bool any_set = false, any_kid = false;
    for (size_t i = 0; i < ks->n; i++) {
        const struct stored_set *k = &ks->v[i];
        if (!k->set || k->listed_seq < 0 || k->listed_seq > seq || strcmp(k->owner, iss) != 0)
            continue;
        any_set = true;
        const struct jwk *key = jwks_find(k->set, j->kid);
        if (!key)
            continue;
        any_kid = true;
        if (jws_check(j, key) == 0) {
            rep->mandates_checked++;
            rep->mandates_checked_stored++;
            keystore_note_owner(ks, iss);
            return true;
        }
    }
    if (!any_set)
        return false;
    if (any_kid)
        violation(rep, seq, "bad mandate signature",
                  "an allowed mandate of %.80s does not verify with the key sets stored in the log",
                  iss);
    else
        violation(rep, seq, "bad mandate signature",
                  "an allowed mandate of %.80s names kid %.64s, which no key set of it stored in "
                  "the log has",
                  iss, j->kid ? j->kid : "");
    return true;
}

/*
 * One listed mandate of an allow: its text is stored, hashes to its sha256, and is the token the
 * entry lists (typ, kid, iss, jti); with a key set for its issuer, its signature verifies.
 * *claims receives its payload (caller decrefs), NULL after a violation.
 */
static void check_mandate(sqlite3 *db, const struct verify_opts *o, struct keystore *ks,
                          int64_t seq, const json_t *md, json_t **claims, struct verify_report *rep)
{
    const char *sha = sjson_str(md, "sha256"), *iss = sjson_str(md, "iss");
    char *text = sha ? store_mandate_text(db, sha) : NULL;
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
    json_t *c = sjson_parse((char *)j.payload, j.payload_len, &err);
    free(err);
    if (!json_is_object(c) || !str_eq(j.typ, sjson_str(md, "typ")) ||
        !str_eq(j.kid, sjson_str(md, "kid")) || !str_eq(sjson_str(c, "iss"), iss) ||
        !str_eq(sjson_str(c, "jti"), sjson_str(md, "jti"))) {
        violation(rep, seq, "mandate mismatch",
                  "the stored mandate %.16s… is not the typ, kid, iss and jti the entry lists",
                  sha);
        json_decref(c);
        jws_clear(&j);
        free(text);
        return;
    }
    const struct jwks *set = keyring_get(o->keys, iss);
    if (!set) {
        if (!ks || !check_stored(ks, seq, iss, &j, rep))
            rep->mandates_unchecked++;
    } else {
        const struct jwk *k = jwks_find(set, j.kid);
        if (!k || jws_check(&j, k) != 0)
            violation(rep, seq, "bad mandate signature", "an allowed mandate of %s does not verify",
                      iss);
        else
            rep->mandates_checked++;
    }
    *claims = c;
    jws_clear(&j);
    free(text);
}

/* Entry member ek equals claim ck of c (both strings), or a violation naming ek. */
static bool bound(const json_t *e, const char *ek, const json_t *c, const char *ck, int64_t seq,
                  const char *what, struct verify_report *rep)
{
    if (str_eq(sjson_str(e, ek), sjson_str(c, ck)))
        return true;
    violation(rep, seq, "mandate mismatch", "the entry's %s is not the %s's %s", ek, what, ck);
    return false;
}

static bool money_member_eq(const json_t *a, const json_t *b)
{
    struct money x, y;
    const char *why;
    return money_from_json(a, false, &x, &why) == 0 && money_from_json(b, false, &y, &why) == 0 &&
           money_equal(&x, &y);
}

/*
 * An allow against what was signed: an intent mandate alone, or a payment mandate and its cart
 * with the amount; each stored and listed as it is (check_mandate); the principal, agent,
 * merchant, action and amount the entry names are the claims'. The signatures themselves are
 * checked in check_mandate when a key set is given. claims[0] (the Authorization mandate) and
 * claims[1] (the cart) receive the payloads.
 */
static void check_allow(sqlite3 *db, const struct verify_opts *o, struct keystore *ks, int64_t seq,
                        const json_t *e, json_t *claims[2], struct verify_report *rep)
{
    json_t *ms = json_object_get(e, "mandates");
    size_t n = json_array_size(ms);
    const char *t0 = sjson_str(json_array_get(ms, 0), "typ");
    const char *t1 = sjson_str(json_array_get(ms, 1), "typ");
    bool paid = str_eq(t0, "payment-mandate+jwt"), amount = json_object_get(e, "amount") != NULL;
    if (n == 0) {
        violation(rep, seq, "mandate missing", "an allow that lists no mandate");
        return;
    }
    if (amount && !(paid && n == 2 && str_eq(t1, "cart-mandate+jwt"))) {
        violation(rep, seq, "mandate missing",
                  "a priced allow must list a payment mandate and its cart");
        return;
    }
    if (paid ? !amount || n != 2 || !str_eq(t1, "cart-mandate+jwt")
             : n != 1 || !str_eq(t0, "intent-mandate+jwt")) {
        violation(rep, seq, "malformed entry",
                  "an allow must list an intent mandate, or a payment mandate, its cart and an "
                  "amount");
        return;
    }
    for (size_t k = 0; k < n && rep->ok; k++)
        check_mandate(db, o, ks, seq, json_array_get(ms, k), &claims[k], rep);
    if (!rep->ok)
        return;
    const json_t *m = claims[0], *act = json_object_get(m, "act"), *cart = claims[1];
    if (!bound(e, "principal", m, "sub", seq, "mandate", rep) ||
        !str_eq(sjson_str(e, "agent"), sjson_str(act, "sub")) ||
        !bound(e, "merchant", m, "aud", seq, "mandate", rep) ||
        !bound(e, "action", m, "action", seq, "mandate", rep)) {
        violation(rep, seq, "mandate mismatch", "the entry's agent is not the mandate's act.sub");
        return;
    }
    if (!paid)
        return;
    /* The listed sha256 is the cart's (check_mandate compared it with the stored text), and the
     * payment's `cart` claim is the same digest in base64url. */
    unsigned char h[32];
    char cart_hash[44];
    if (hex_decode(sjson_str(json_array_get(ms, 1), "sha256"), h, 32) != 0) {
        violation(rep, seq, "malformed entry", "a cart's sha256 is not hex");
        return;
    }
    b64url_encode(h, 32, cart_hash);
    if (!str_eq(sjson_str(m, "cart"), cart_hash))
        violation(rep, seq, "mandate mismatch", "the payment mandate is for another cart");
    else if (bound(e, "merchant", cart, "iss", seq, "cart", rep) &&
             bound(e, "principal", cart, "sub", seq, "cart", rep) &&
             bound(e, "action", cart, "action", seq, "cart", rep) &&
             !money_member_eq(json_object_get(e, "amount"), json_object_get(cart, "total")))
        violation(rep, seq, "mandate mismatch", "the entry's amount is not the cart's total");
    else if (rep->ok &&
             !money_member_eq(json_object_get(m, "total"), json_object_get(cart, "total")))
        violation(rep, seq, "mandate mismatch", "the payment mandate's total is not the cart's");
}

/* One parsed entry: its shape, a config entry's key sets (with ks), and an allow's mandates
 * (claims as in check_allow). */
static void check_entry(sqlite3 *db, const struct verify_opts *o, struct keystore *ks, int64_t seq,
                        const json_t *e, json_t *claims[2], struct verify_report *rep)
{
    int kind;
    const char *why = e ? entry_shape(e, &kind) : "not JSON";
    if (why) {
        violation(rep, seq, "malformed entry", "%s", why);
        return;
    }
    if (kind == K_CONFIG && ks)
        keystore_listed(ks, seq, e, rep);
    if (kind == K_DECISION && strcmp(sjson_str(e, "decision"), "allow") == 0) {
        rep->allows++;
        check_allow(db, o, ks, seq, e, claims, rep);
    }
}

/* Checks every entry. */
static void each_entry(sqlite3 *db, const struct row *v, size_t n, const struct verify_opts *o,
                       struct keystore *ks, struct verify_report *rep)
{
    for (size_t i = 0; i < n && rep->ok; i++) {
        json_t *e = parse_row(&v[i]);
        json_t *claims[2] = {NULL, NULL};
        check_entry(db, o, ks, (int64_t)i, e, claims, rep);
        json_decref(claims[0]);
        json_decref(claims[1]);
        json_decref(e);
    }
}

int verify_entry(sqlite3 *db, const struct verify_opts *o, int64_t seq, const char *bytes,
                 size_t len, struct verify_report *rep)
{
    struct row r = {seq, (char *)bytes, len, {0}, false};
    json_t *e = parse_row(&r);
    json_t *claims[2] = {NULL, NULL};
    check_entry(db, o, NULL, seq, e, claims, rep);
    json_decref(claims[0]);
    json_decref(claims[1]);
    json_decref(e);
    return rep->ok ? 0 : -1;
}

/* A fresh report and every row of the log; -1 if the log cannot be read. */
static int begin(sqlite3 *db, struct verify_report *rep, struct row **v, size_t *n,
                 bool *stored_leaves)
{
    memset(rep, 0, sizeof(*rep));
    rep->ok = true;
    rep->bad_seq = -1;
    if (load_rows(db, v, n, stored_leaves) != 0) {
        free_rows(*v, *n);
        return -1;
    }
    rep->entries = *n;
    return 0;
}

/*
 * The integrity checks verify and replay share, in the order that names the most precise
 * violation first: the sequence, the chain, the signed checkpoints, every entry, and last how
 * much of the log the checkpoints cover (a rewritten log without checkpoints shows there).
 */
static void check_log(sqlite3 *db, const struct verify_opts *o, struct keystore *ks,
                      const struct row *v, size_t n, bool stored_leaves, struct verify_report *rep)
{
    unsigned char(*leaves)[32] = xcalloc(n + 1, 32);
    uint64_t stored = 0;
    check_order(v, n, rep);
    if (rep->ok)
        check_chain(v, n, stored_leaves, leaves, rep);
    rep->checkpoints_checked = o->checkpoint_key != NULL;
    if (rep->ok && rep->checkpoints_checked)
        check_checkpoints(db, o, (const unsigned char(*)[32])leaves, n, &stored, rep);
    if (rep->ok)
        each_entry(db, v, n, o, ks, rep);
    if (rep->ok)
        keystore_unlisted(ks, rep);
    if (rep->ok && rep->checkpoints_checked)
        check_coverage(o, n, stored, rep);
    free(leaves);
}

/* The stored key sets, for the owners without a key set given. -1 when they cannot be read. */
static int begin_keys(sqlite3 *db, struct keystore *ks, struct verify_report *rep, struct row *v,
                      size_t n)
{
    if (keystore_load(db, ks) != 0) {
        keystore_clear(ks);
        free_rows(v, n);
        return -1;
    }
    rep->keysets_stored = ks->n;
    return 0;
}

struct verify_walk {
    sqlite3 *db;
    const struct verify_opts *o;
    struct keystore ks; /* kept: the second walk checks the mandates with the same sets */
    struct row *v;
    size_t n, next;
    bool stored_leaves;        /* a log of the older layout, with each entry's leaf hash stored */
    json_t *entry, *claims[2]; /* the step handed out last */
};

int verify_walk_open(sqlite3 *db, const struct verify_opts *o, struct verify_report *rep,
                     struct verify_walk **out)
{
    struct verify_walk *w = xcalloc(1, sizeof(*w));
    *out = NULL;
    if (begin(db, rep, &w->v, &w->n, &w->stored_leaves) != 0 ||
        begin_keys(db, &w->ks, rep, w->v, w->n) != 0) {
        free(w);
        return -1;
    }
    w->db = db;
    w->o = o;
    check_log(db, o, &w->ks, w->v, w->n, w->stored_leaves, rep);
    /* A second walk checks the same mandates with the same sets: the owners are known now. */
    snprintf(rep->stored_owners, sizeof(rep->stored_owners), "%s", w->ks.used ? w->ks.used : "");
    *out = w;
    return 0;
}

static void release_step(struct verify_walk *w)
{
    json_decref(w->claims[0]);
    json_decref(w->claims[1]);
    json_decref(w->entry);
    w->claims[0] = w->claims[1] = w->entry = NULL;
}

bool verify_walk_next(struct verify_walk *w, struct verify_report *rep, struct verify_step *st)
{
    release_step(w);
    if (w->next >= w->n)
        return false;
    size_t i = w->next++;
    w->entry = parse_row(&w->v[i]);
    check_entry(w->db, w->o, &w->ks, (int64_t)i, w->entry, w->claims, rep);
    st->seq = (int64_t)i;
    st->entry = w->entry;
    st->claims[0] = w->claims[0];
    st->claims[1] = w->claims[1];
    return true;
}

void verify_walk_free(struct verify_walk *w)
{
    if (!w)
        return;
    release_step(w);
    keystore_clear(&w->ks);
    free_rows(w->v, w->n);
    free(w);
}

int verify_log(sqlite3 *db, const struct verify_opts *o, struct verify_report *rep)
{
    struct verify_walk *w;
    if (verify_walk_open(db, o, rep, &w) != 0)
        return -1;
    verify_walk_free(w);
    return 0;
}

int verify_file(const char *path, const struct verify_opts *o, bool replay,
                struct verify_report *rep, char **err)
{
    sqlite3 *db = NULL;
    int rc = 2;
    *err = NULL;
    if (!(db = store_open_evidence(path, err)))
        goto out;
    if ((replay ? replay_log(db, o, rep) : verify_log(db, o, rep)) != 0) {
        *err = xasprintf("%s: cannot read the log: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    rc = rep->ok ? 0 : 1;
out:
    sqlite3_close(db);
    return rc;
}

json_t *verify_report_json(const struct verify_report *rep)
{
    json_t *o =
        json_pack("{sb sI sI sI sI sI sI sb}", "ok", rep->ok, "entries", (json_int_t)rep->entries,
                  "checkpoints", (json_int_t)rep->checkpoints, "allows", (json_int_t)rep->allows,
                  "mandates_checked", (json_int_t)rep->mandates_checked, "mandates_unchecked",
                  (json_int_t)rep->mandates_unchecked, "covered", (json_int_t)rep->covered,
                  "checkpoints_checked", rep->checkpoints_checked);
    /* The owners whose mandates were "checked with the key sets stored in the log". */
    json_t *owners = json_array();
    for (const char *p = rep->stored_owners; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        sjson_append(owners, json_stringn(p, len));
        p = end ? end + 1 : p + len;
    }
    sjson_set(o, "checked_with_stored_keysets", owners);
    sjson_set(o, "keysets_stored", json_integer((json_int_t)rep->keysets_stored));
    sjson_set(o, "mandates_checked_stored", json_integer((json_int_t)rep->mandates_checked_stored));
    if (!rep->ok) {
        sjson_set(o, "bad_seq", json_integer(rep->bad_seq));
        sjson_set(o, "violation", sjson_text(rep->violation));
        sjson_set(o, "detail", sjson_text(rep->detail));
    }
    return o;
}
