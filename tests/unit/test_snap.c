/*
 * audit/snap: used-jti records round-trip and the decoder refuses every malformed one; the fold
 * keeps the largest count of a jti (two workers may record a mandate's counts out of admission
 * order) and drops the expired; a log's used jtis are its newest snapshot plus the rows after it,
 * or, in a log from before snapshots, its used_jtis table plus the rows.
 */
#include "testkit.h"

#include "audit/snap.h"
#include "audit/store.h"

#define FAR 4000000000LL

static void test_records_round_trip(void **state)
{
    (void)state;
    struct sb b = {0};
    snap_put(&b, "w1", "j1", FAR, 3);
    snap_put(&b, "wallet-2", "a-longer-jti", -5, 1);
    const unsigned char *p = (const unsigned char *)b.buf, *end = p + b.len;
    struct snap_use u;
    assert_int_equal(snap_next(&p, end, &u), 1);
    assert_int_equal(u.iss_len, 2);
    assert_memory_equal(u.iss, "w1", 2);
    assert_memory_equal(u.jti, "j1", 2);
    assert_int_equal(u.exp, FAR);
    assert_int_equal(u.used, 3);
    assert_int_equal(snap_next(&p, end, &u), 1);
    assert_int_equal(u.exp, -5);
    assert_memory_equal(u.jti, "a-longer-jti", 12);
    assert_int_equal(snap_next(&p, end, &u), 0);
    /* Every proper prefix of a record is malformed. */
    for (size_t n = 1; n < b.len; n++) {
        struct snap s = {0};
        size_t first = 2 + 1 + 2 + 1 + 5 + 1; /* the first record's length */
        int want = n == first ? 0 : -1;
        assert_int_equal(snap_add(&s, b.buf, n), want);
        snap_free(&s);
    }
    sb_clear(&b);
}

static void test_malformed_refused(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
    } bad[] = {
        {"\x00", 1},                 /* an empty iss */
        {"\x02w1\x00", 4},           /* an empty jti */
        {"\x02w1\x02j1\x02\x00", 8}, /* used 0 */
        {"\x82\x08", 2},             /* iss longer than SNAP_MAX_ID */
        {"\x7f"
         "abc",
         4}, /* longer than what is there */
        {"\x02w1\x02j1\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f\x01", 17}, /* varint past 64 bits */
        {"\x02w1\x02j1\x80", 7},                                          /* a varint cut short */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct snap s = {0};
        assert_int_equal(snap_add(&s, bad[i].bytes, bad[i].len), -1);
        assert_int_equal(s.raw.len, 0);
        snap_free(&s);
    }
}

static void test_fold_keeps_largest_and_drops_expired(void **state)
{
    (void)state;
    struct snap s = {0};
    struct sb b = {0};
    snap_put(&b, "w1", "j1", FAR, 3);
    snap_put(&b, "w1", "j0", 100, 1); /* expired by keep_from */
    snap_put(&b, "w1", "j1", FAR, 2); /* recorded after 3 by a slower worker */
    snap_put(&b, "w0", "j9", FAR, 1);
    assert_int_equal(snap_add(&s, b.buf, b.len), 0);
    snap_fold(&s, 1000);
    assert_int_equal(s.n, 2);
    assert_memory_equal(s.v[0].iss, "w0", 2); /* sorted */
    assert_memory_equal(s.v[1].jti, "j1", 2);
    assert_int_equal(s.v[1].used, 3);
    /* The encoded fold decodes to itself. */
    struct sb enc = {0};
    snap_encode(&s, &enc);
    struct snap t = {0};
    assert_int_equal(snap_add(&t, enc.buf, enc.len), 0);
    snap_fold(&t, 1000);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.v[1].used, 3);
    snap_free(&t);
    snap_free(&s);
    sb_clear(&enc);
    sb_clear(&b);
}

/* A snapshot (sorted) and a tail in log order that interleaves with it: merged, sorted, one
 * record per jti with the largest count; an unsorted "snapshot" (from outside) sorts all. */
static void test_fold_merges_a_tail_into_a_snapshot(void **state)
{
    (void)state;
    for (int unsorted = 0; unsorted < 2; unsorted++) {
        struct sb b = {0};
        char jti[16];
        for (int i = 0; i < 200; i += 2) {
            snprintf(jti, sizeof(jti), "j%03d", unsorted ? 198 - i : i);
            snap_put(&b, "w1", jti, FAR, 1);
        }
        for (int i = 199; i >= 0; i -= 3) { /* odd and even, new and known */
            snprintf(jti, sizeof(jti), "j%03d", i);
            snap_put(&b, "w1", jti, FAR, 2);
        }
        struct snap s = {0};
        assert_int_equal(snap_add(&s, b.buf, b.len), 0);
        snap_fold(&s, 0);
        for (size_t i = 1; i < s.n; i++)
            assert_true(memcmp(s.v[i - 1].jti, s.v[i].jti, 4) < 0);
        for (size_t i = 0; i < s.n; i++) {
            int k = atoi(s.v[i].jti + 1);
            assert_int_equal(s.v[i].used, (199 - k) % 3 == 0 ? 2 : 1);
            assert_ptr_equal(snap_find(&s, &s.v[i]), &s.v[i]);
        }
        assert_int_equal(s.n, 100 + 34); /* the evens, and the odds the tail adds */
        snap_free(&s);
        sb_clear(&b);
    }
}

/* Append entry seq (its bytes do not matter here) with the uses in b. */
static void append(struct store *st, uint64_t seq, struct sb *b)
{
    unsigned char leaf[32] = {0};
    assert_int_equal(store_append(st, seq, "{}", 2, b ? b->buf : NULL, b ? b->len : 0, leaf), 0);
    if (b)
        sb_reset(b);
}

static int64_t used_of(const struct snap *s, const char *jti)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].jti_len == strlen(jti) && memcmp(s->v[i].jti, jti, s->v[i].jti_len) == 0)
            return s->v[i].used;
    return 0;
}

static void test_snapshot_plus_tail(void **state)
{
    (void)state;
    char *dir = tk_tmpdir();
    char *path = xasprintf("%s/g.db", dir);
    char *err = NULL;
    struct store *st = store_open(path, STORE_CREATE, &err);
    assert_non_null(st);
    struct sb b = {0};
    snap_put(&b, "w1", "j1", FAR, 1);
    append(st, 0, &b);
    append(st, 1, NULL);
    snap_put(&b, "w1", "j1", FAR, 2);
    snap_put(&b, "w1", "cart", FAR, 1);
    append(st, 2, &b);

    struct snap s;
    assert_int_equal(snap_load(store_db(st), 0, &s, &err), 0);
    assert_int_equal(s.seq, 3);
    assert_int_equal(s.base_seq, 0);
    assert_int_equal(s.tail, 2);
    assert_int_equal(used_of(&s, "j1"), 2);
    assert_int_equal(used_of(&s, "cart"), 1);
    struct sb enc = {0};
    snap_encode(&s, &enc);
    snap_free(&s);
    assert_int_equal(store_put_snapshot(st, 3, 1000, enc.buf, enc.len), 0);
    sb_clear(&enc);
    assert_int_equal(store_snapshot_seq(st), 3);

    /* After it: the snapshot and only the rows from 3 on. A row before it that says more is not
     * read again (it is in the snapshot already). */
    snap_put(&b, "w1", "j1", FAR, 3);
    append(st, 3, &b);
    snap_put(&b, "w1", "j2", FAR, 1);
    append(st, 4, &b);
    assert_int_equal(snap_load(store_db(st), 0, &s, &err), 0);
    assert_int_equal(s.base_seq, 3);
    assert_int_equal(s.seq, 5);
    assert_int_equal(s.tail, 2);
    assert_int_equal(used_of(&s, "j1"), 3);
    assert_int_equal(used_of(&s, "j2"), 1);
    assert_int_equal(used_of(&s, "cart"), 1);
    snap_free(&s);

    /* A newer snapshot replaces the older one. */
    assert_int_equal(store_put_snapshot(st, 5, 2000, "", 0), 0);
    sqlite3_stmt *q;
    assert_int_equal(
        sqlite3_prepare_v2(store_db(st), "SELECT COUNT(*) FROM snapshots", -1, &q, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 1);
    sqlite3_finalize(q);

    /* A malformed row is named, not skipped. */
    assert_int_equal(sqlite3_exec(store_db(st),
                                  "INSERT INTO entries(seq, entry, uses) VALUES(5, '{}', x'00')",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(snap_load(store_db(st), 0, &s, &err), -1);
    assert_string_equal(err, "the uses recorded with entry 5 are malformed");
    free(err);
    sb_clear(&b);
    store_close(st);
    free(path);
    tk_rmdir(dir);
}

/* An empty snapshot (nothing in use) loads as empty, with its horizon; a log without one has
 * none (INT64_MIN); a snapshot said to cover more entries than the log has is refused: the rows
 * after it would be skipped. */
static void test_empty_snapshot_horizon_and_one_past_the_end(void **state)
{
    (void)state;
    char *dir = tk_tmpdir();
    char *path = xasprintf("%s/e.db", dir);
    char *err = NULL;
    struct store *st = store_open(path, STORE_CREATE, &err);
    assert_non_null(st);
    struct snap s;
    assert_int_equal(snap_load(store_db(st), 0, &s, &err), 0);
    assert_true(s.horizon == INT64_MIN);
    assert_int_equal(s.seq, 0);
    snap_free(&s);
    append(st, 0, NULL);
    append(st, 1, NULL);
    assert_int_equal(store_put_snapshot(st, 2, 1234, NULL, 0), 0);
    assert_int_equal(snap_load(store_db(st), 0, &s, &err), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.base_seq, 2);
    assert_int_equal(s.horizon, 1234);
    snap_free(&s);
    assert_int_equal(store_put_snapshot(st, 3, 1234, NULL, 0), 0);
    assert_int_equal(snap_load(store_db(st), 0, &s, &err), -1);
    assert_string_equal(err, "the snapshot at seq 3 is past the log's end (2 entries)");
    free(err);
    store_close(st);
    free(path);
    tk_rmdir(dir);
}

/* A log written before snapshots: used_jtis holds what its rows did not record. */
static void test_older_log_used_jtis_table(void **state)
{
    (void)state;
    char *dir = tk_tmpdir();
    char *path = xasprintf("%s/old.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL;"
                     "CREATE TABLE entries(seq INTEGER PRIMARY KEY, entry BLOB NOT NULL);"
                     "CREATE TABLE nodes(level INTEGER NOT NULL, idx INTEGER NOT NULL, hash "
                     "BLOB NOT NULL, PRIMARY KEY(level, idx));"
                     "CREATE TABLE used_jtis(iss TEXT NOT NULL, jti TEXT NOT NULL, exp INTEGER "
                     "NOT NULL, used INTEGER NOT NULL, PRIMARY KEY(iss, jti));"
                     "INSERT INTO entries VALUES(0, '{}');"
                     "INSERT INTO used_jtis VALUES('w1', 'old', 4000000000, 4);"
                     "INSERT INTO used_jtis VALUES('w1', 'gone', 10, 1);",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);

    char *err = NULL;
    struct snap s;
    struct store *st = store_open(path, STORE_READONLY, &err); /* no uses column yet */
    assert_non_null(st);
    assert_int_equal(snap_load(store_db(st), 1000, &s, &err), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(used_of(&s, "old"), 4);
    assert_int_equal(s.seq, 1);
    snap_free(&s);
    store_close(st);

    st = store_open(path, STORE_CREATE, &err); /* the gateway adds the column */
    assert_non_null(st);
    struct sb b = {0};
    snap_put(&b, "w1", "old", 4000000000LL, 5);
    append(st, 1, &b);
    assert_int_equal(snap_load(store_db(st), 1000, &s, &err), 0);
    assert_int_equal(used_of(&s, "old"), 5);
    assert_int_equal(s.seq, 2);
    assert_true(s.horizon > now_s() - 3700 && s.horizon <= now_s() - 3600);
    /* Its first snapshot takes the table's place: a view a gateway from before cannot write. */
    struct sb enc = {0};
    snap_encode(&s, &enc);
    snap_free(&s);
    assert_int_equal(store_put_snapshot(st, 2, now_s() - 7, enc.buf, enc.len), 0);
    sb_clear(&enc);
    assert_int_equal(sqlite3_exec(store_db(st),
                                  "INSERT INTO used_jtis(iss, jti, exp, used) VALUES('a','b',1,1)",
                                  NULL, NULL, NULL),
                     SQLITE_ERROR);
    assert_string_equal(sqlite3_errmsg(store_db(st)),
                        "cannot modify used_jtis because it is a view");
    assert_int_equal(snap_load(store_db(st), 1000, &s, &err), 0);
    assert_int_equal(used_of(&s, "old"), 5);
    snap_free(&s);
    sb_clear(&b);
    store_close(st);
    free(path);
    tk_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records_round_trip),
        cmocka_unit_test(test_malformed_refused),
        cmocka_unit_test(test_fold_keeps_largest_and_drops_expired),
        cmocka_unit_test(test_fold_merges_a_tail_into_a_snapshot),
        cmocka_unit_test(test_snapshot_plus_tail),
        cmocka_unit_test(test_empty_snapshot_horizon_and_one_past_the_end),
        cmocka_unit_test(test_older_log_used_jtis_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
