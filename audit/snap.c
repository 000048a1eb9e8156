/*
 * snap: used-jti records, their snapshot and the fold that loads them (snap.h).
 */
#include "audit/snap.h"

#include <stdbool.h>

#include <stdlib.h>
#include <string.h>

#include "audit/store.h"

static void put_varint(struct sb *out, uint64_t v)
{
    char b[10];
    size_t n = 0;
    do {
        b[n++] = (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    sb_putn(out, b, n);
}

static int get_varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        unsigned char c = *(*p)++;
        *v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return shift == 63 && c > 1 ? -1 : 0;
    }
    return -1;
}

static void put_bytes(struct sb *out, const char *s)
{
    size_t n = strlen(s);
    put_varint(out, n);
    sb_putn(out, s, n);
}

static int get_bytes(const unsigned char **p, const unsigned char *end, const char **s, size_t *n)
{
    uint64_t len;
    if (get_varint(p, end, &len) != 0 || len == 0 || len > SNAP_MAX_ID ||
        len > (uint64_t)(end - *p))
        return -1;
    *s = (const char *)*p;
    *n = (size_t)len;
    *p += len;
    return 0;
}

void snap_put(struct sb *out, const char *iss, const char *jti, int64_t exp, int64_t used)
{
    put_bytes(out, iss);
    put_bytes(out, jti);
    /* zigzag: a negative exp (a forged or broken token's) costs no ten bytes */
    put_varint(out, ((uint64_t)exp << 1) ^ (uint64_t)(exp >> 63));
    put_varint(out, (uint64_t)used);
}

int snap_next(const unsigned char **p, const unsigned char *end, struct snap_use *u)
{
    if (*p == end)
        return 0;
    uint64_t zz, used;
    if (get_bytes(p, end, &u->iss, &u->iss_len) != 0 ||
        get_bytes(p, end, &u->jti, &u->jti_len) != 0 || get_varint(p, end, &zz) != 0 ||
        get_varint(p, end, &used) != 0 || used == 0 || used > INT64_MAX)
        return -1;
    u->exp = (int64_t)(zz >> 1) ^ -(int64_t)(zz & 1);
    u->used = (int64_t)used;
    return 1;
}

int snap_add(struct snap *s, const void *buf, size_t len)
{
    if (len == 0)
        return 0; /* an empty snapshot: SQLite gives NULL for its bytes */
    const unsigned char *p = buf, *end = p + len;
    struct snap_use u;
    int r;
    while ((r = snap_next(&p, end, &u)) == 1)
        ;
    if (r != 0)
        return -1;
    sb_putn(&s->raw, buf, len);
    return 0;
}

static int cmp_bytes(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an > bn) - (an < bn);
}

static int cmp_use(const void *x, const void *y)
{
    const struct snap_use *a = x, *b = y;
    int c = cmp_bytes(a->iss, a->iss_len, b->iss, b->iss_len);
    return c ? c : cmp_bytes(a->jti, a->jti_len, b->jti, b->jti_len);
}

/*
 * Sort v. The records usually are a snapshot (sorted, one per jti: snap_encode's) followed by a
 * tail of rows in log order: the sorted prefix is kept, only the rest is sorted, and the two are
 * merged, where a qsort of a million-jti snapshot cost most of a start-up.
 */
static void sort(struct snap_use *v, size_t n)
{
    size_t k = 1;
    while (k < n && cmp_use(&v[k - 1], &v[k]) < 0)
        k++;
    if (k >= n)
        return;
    qsort(v + k, n - k, sizeof(*v), cmp_use);
    if (cmp_use(&v[k - 1], &v[k]) <= 0)
        return;
    struct snap_use *m = xmalloc(n * sizeof(*v));
    size_t i = 0, j = k, o = 0;
    while (i < k && j < n)
        m[o++] = cmp_use(&v[j], &v[i]) < 0 ? v[j++] : v[i++];
    while (i < k)
        m[o++] = v[i++];
    while (j < n)
        m[o++] = v[j++];
    memcpy(v, m, n * sizeof(*v));
    free(m);
}

void snap_fold(struct snap *s, int64_t keep_from)
{
    free(s->v);
    s->v = NULL;
    s->n = 0;
    if (s->raw.len == 0)
        return;
    const unsigned char *start = (const unsigned char *)s->raw.buf, *end = start + s->raw.len;
    const unsigned char *p = start;
    struct snap_use u;
    size_t count = 0;
    while (snap_next(&p, end, &u) == 1) /* raw holds only what snap_add checked */
        count++;
    s->v = xmalloc(count * sizeof(*s->v)); /* counted first: no copies while it grows */
    for (p = start; snap_next(&p, end, &u) == 1;)
        s->v[s->n++] = u;
    sort(s->v, s->n);
    /* Counts of one mandate may be recorded out of admission order (two workers): the largest. */
    size_t out = 0;
    for (size_t i = 0; i < s->n;) {
        struct snap_use m = s->v[i];
        for (i++; i < s->n && cmp_use(&s->v[i], &m) == 0; i++) {
            if (s->v[i].used > m.used)
                m.used = s->v[i].used;
            if (s->v[i].exp > m.exp)
                m.exp = s->v[i].exp;
        }
        if (m.exp >= keep_from)
            s->v[out++] = m;
    }
    s->n = out;
}

const struct snap_use *snap_find(const struct snap *s, const struct snap_use *key)
{
    return s->n ? bsearch(key, s->v, s->n, sizeof(*s->v), cmp_use) : NULL;
}

void snap_encode(const struct snap *s, struct sb *out)
{
    for (size_t i = 0; i < s->n; i++) {
        const struct snap_use *u = &s->v[i];
        put_varint(out, u->iss_len);
        sb_putn(out, u->iss, u->iss_len);
        put_varint(out, u->jti_len);
        sb_putn(out, u->jti, u->jti_len);
        put_varint(out, ((uint64_t)u->exp << 1) ^ (uint64_t)(u->exp >> 63));
        put_varint(out, (uint64_t)u->used);
    }
}

void snap_free(struct snap *s)
{
    free(s->v);
    sb_clear(&s->raw);
    memset(s, 0, sizeof(*s));
}

/* --- reading them from a log ------------------------------------------------------------------ */

/* The newest snapshot into s (base_seq, horizon): 1, 0 when there is none, -1. */
static int read_snapshot(sqlite3 *db, struct snap *s, char **err)
{
    sqlite3_stmt *q;
    if (!store_has_table(db, "snapshots"))
        return 0;
    if (sqlite3_prepare_v2(db, "SELECT seq, uses, horizon FROM snapshots ORDER BY seq DESC LIMIT 1",
                           -1, &q, NULL) != SQLITE_OK)
        return -1;
    int r = sqlite3_step(q), rc = r == SQLITE_DONE ? 0 : -1;
    if (r == SQLITE_ROW) {
        sqlite3_int64 seq = sqlite3_column_int64(q, 0);
        const void *b = sqlite3_column_blob(q, 1);
        int n = sqlite3_column_bytes(q, 1);
        if (seq < 0 || snap_add(s, b, (size_t)n) != 0)
            *err = xasprintf("the snapshot at seq %lld is malformed", (long long)seq);
        else {
            s->base_seq = (uint64_t)seq;
            s->horizon = sqlite3_column_int64(q, 2);
            rc = 1;
        }
    }
    sqlite3_finalize(q);
    return rc;
}

/* A log from before snapshots: its used_jtis table is the base. */
static int read_legacy(sqlite3 *db, int64_t keep_from, struct snap *s)
{
    sqlite3_stmt *q;
    if (!store_has_table(db, "used_jtis"))
        return 0;
    /* The gateways that kept it deleted the jtis that expired an hour before they ran. */
    s->horizon = now_s() - 3600;
    if (sqlite3_prepare_v2(db, "SELECT iss, jti, exp, used FROM used_jtis WHERE exp >= ?", -1, &q,
                           NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(q, 1, keep_from);
    int r;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        const char *iss = (const char *)sqlite3_column_text(q, 0);
        const char *jti = (const char *)sqlite3_column_text(q, 1);
        int64_t used = sqlite3_column_int64(q, 3);
        if (iss && jti && *iss && *jti && strlen(iss) <= SNAP_MAX_ID &&
            strlen(jti) <= SNAP_MAX_ID && used > 0)
            snap_put(&s->raw, iss, jti, sqlite3_column_int64(q, 2), used);
    }
    sqlite3_finalize(q);
    return r == SQLITE_DONE ? 0 : -1;
}

/* The number of entries (MAX(seq) + 1: one end of the rowid B-tree), or -1. */
static int64_t log_size(sqlite3 *db)
{
    sqlite3_stmt *q;
    int64_t n = -1;
    if (sqlite3_prepare_v2(db, "SELECT MAX(seq) FROM entries", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        n = sqlite3_column_type(q, 0) == SQLITE_NULL ? 0 : sqlite3_column_int64(q, 0) + 1;
    sqlite3_finalize(q);
    return n;
}

/* The uses recorded by the entries from s->base_seq on; s->seq: the log's size. */
static int read_tail(sqlite3 *db, struct snap *s, char **err)
{
    int64_t n = log_size(db);
    if (n < 0)
        return -1;
    if (s->base_seq > (uint64_t)n) {
        /* Its rows would be skipped: every use after it forgotten. */
        *err = xasprintf("the snapshot at seq %llu is past the log's end (%lld entries)",
                         (unsigned long long)s->base_seq, (long long)n);
        return -1;
    }
    s->seq = (uint64_t)n;
    if (!store_has_column(db, "uses"))
        return 0; /* a log from before: no row records uses */
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, "SELECT seq, uses FROM entries WHERE seq >= ? AND uses IS NOT NULL",
                           -1, &q, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(q, 1, (sqlite3_int64)s->base_seq);
    int r;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        s->tail++;
        if (snap_add(s, sqlite3_column_blob(q, 1), (size_t)sqlite3_column_bytes(q, 1)) != 0) {
            *err = xasprintf("the uses recorded with entry %lld are malformed",
                             (long long)sqlite3_column_int64(q, 0));
            sqlite3_finalize(q);
            return -1;
        }
    }
    sqlite3_finalize(q);
    return r == SQLITE_DONE ? 0 : -1;
}

int snap_load(sqlite3 *db, int64_t keep_from, struct snap *out, char **err)
{
    memset(out, 0, sizeof(*out));
    out->horizon = INT64_MIN;
    *err = NULL;
    /* One read transaction: the snapshot and the tail after it are of the same log. */
    bool own = sqlite3_get_autocommit(db);
    if (own && sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        *err = xasprintf("%s", sqlite3_errmsg(db));
        return -1;
    }
    int rc = read_snapshot(db, out, err);
    if (rc == 0)
        rc = read_legacy(db, keep_from, out);
    if (rc >= 0)
        rc = read_tail(db, out, err);
    if (rc != 0 && !*err)
        *err = xasprintf("reading the used jtis: %s", sqlite3_errmsg(db));
    if (own)
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != 0) {
        snap_free(out);
        return -1;
    }
    snap_fold(out, keep_from);
    return 0;
}
