/*
 * audit/store: the database of a gateway that crashed (a WAL file still to recover) opens every
 * time when several tools and the restarted gateway open it at once. Leaf hashes are not stored but
 * recomputed from the entries, and a log of the older layout, which stored them, keeps being read
 * and written as it is.
 */
#include "testkit.h"

#include <sys/wait.h>

#include "audit/store.h"
#include "audit/walbuf.h"
#include "core/jwk.h"
#include "core/sha256.h"

static void copy_file(const char *from, const char *to)
{
    size_t len;
    char *err = NULL;
    char *buf = file_read(from, 64 << 20, &len, &err);
    assert_non_null(buf);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    free(buf);
}

static off_t file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseeko(f, 0, SEEK_END);
    off_t n = ftello(f);
    fclose(f);
    return n;
}

/* A child: wait for the start signal, open path in mode, read the tail; exit 0 on success. */
static void opener(const char *path, enum store_mode mode, int go)
{
    char c;
    if (read(go, &c, 1) != 1)
        _exit(3);
    char *err = NULL;
    struct store *st = store_open(path, mode, &err);
    if (!st) {
        fprintf(stderr, "open %s: %s\n", mode == STORE_READONLY ? "ro" : "rw", err);
        _exit(1);
    }
    struct merkle_frontier f;
    unsigned char last[32];
    int rc = store_tail(st, &f, last, &err);
    if (rc != 0 || f.size != 40) {
        fprintf(stderr, "tail: %s, size %llu\n", rc ? err : "ok", (unsigned long long)f.size);
        _exit(2);
    }
    store_close(st);
    _exit(0);
}

/*
 * The copy of a crashed gateway's database: db and a non-empty -wal, no -shm. Three read-only
 * tools and the restarted gateway open it at the same moment, 20 times over: every open succeeds
 * and sees every committed entry.
 */
static void test_open_crashed_copy_concurrently(void **state)
{
    (void)state;
    char *dir = tk_tmpdir();
    char *src = xasprintf("%s/live.db", dir);
    char *src_wal = xasprintf("%s/live.db-wal", dir);
    char *err = NULL;
    struct store *live = store_open(src, STORE_CREATE, &err);
    assert_non_null(live);
    assert_int_equal(sqlite3_exec(store_db(live), "PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL),
                     SQLITE_OK);
    struct merkle_frontier f = {0};
    for (uint64_t i = 0; i < 40; i++) {
        char bytes[32];
        unsigned char leaf[32];
        int n = snprintf(bytes, sizeof(bytes), "{\"seq\":%llu}", (unsigned long long)i);
        merkle_leaf_hash((const unsigned char *)bytes, (size_t)n, leaf);
        assert_int_equal(store_begin(live), 0);
        assert_int_equal(store_append(live, i, bytes, (size_t)n, NULL, 0, leaf), 0);
        unsigned char done[MERKLE_MAX_HEIGHT][32];
        int k = merkle_append(&f, leaf, done);
        for (int j = STORE_NODE_MIN_LEVEL - 1; j < k; j++)
            assert_int_equal(store_put_node(live, j + 1, (f.size >> (j + 1)) - 1, done[j]), 0);
        assert_int_equal(store_commit(live), 0);
    }
    assert_true(file_size(src_wal) > 0);

    int failures = 0;
    for (int round = 0; round < 20; round++) {
        char *db = xasprintf("%s/copy%d.db", dir, round);
        char *wal = xasprintf("%s-wal", db);
        /* Copied while the gateway still holds it open, as a crash leaves it. */
        copy_file(src, db);
        copy_file(src_wal, wal);
        int go[2];
        assert_int_equal(pipe(go), 0);
        pid_t pids[4];
        for (int i = 0; i < 4; i++) {
            pids[i] = fork();
            assert_true(pids[i] >= 0);
            if (pids[i] == 0) {
                close(go[1]);
                opener(db, i == 3 ? STORE_CREATE : STORE_READONLY, go[0]);
            }
        }
        close(go[0]);
        assert_int_equal(write(go[1], "gggg", 4), 4);
        close(go[1]);
        for (int i = 0; i < 4; i++) {
            int status;
            assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                failures++;
        }
        free(db);
        free(wal);
    }
    assert_int_equal(failures, 0);
    store_close(live);
    free(src);
    free(src_wal);
    tk_rmdir(dir);
}

static int64_t keyset_rows(sqlite3 *db, const char *where, int64_t *first_seen)
{
    char *sql = xasprintf("SELECT COUNT(*), MIN(first_seen_ms) FROM keysets WHERE %s", where);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(q, 0);
    if (first_seen)
        *first_seen = sqlite3_column_int64(q, 1);
    sqlite3_finalize(q);
    free(sql);
    return n;
}

/* A key set stored twice is one row that keeps the time it was first seen; the same set for
 * another owner is a row of its own; a database made before the table existed gets it at open;
 * the canonical text does not depend on the order of the keys and holds no private member. */
static void test_keyset_stored_once(void **state)
{
    (void)state;
    char *dir = tk_tmpdir();
    char *path = xasprintf("%s/k.db", dir);
    char *err = NULL;
    sqlite3 *old;
    assert_int_equal(sqlite3_open(path, &old), SQLITE_OK);
    assert_int_equal(sqlite3_exec(old,
                                  "CREATE TABLE entries(seq INTEGER PRIMARY KEY, entry BLOB NOT "
                                  "NULL, leaf BLOB NOT NULL)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(old);

    struct jwk a, b;
    assert_int_equal(jwk_generate(JWK_ES256, "k-a", &a), 0);
    assert_int_equal(jwk_generate(JWK_EDDSA, "k-b", &b), 0);
    struct jwks ab = {(struct jwk[]){a, b}, 2}, ba = {(struct jwk[]){b, a}, 2};
    char *t1 = jwks_canonical_public(&ab), *t2 = jwks_canonical_public(&ba);
    assert_string_equal(t1, t2);
    assert_null(strstr(t1, "\"d\""));
    assert_non_null(strstr(t1, "\"kid\":\"k-a\""));
    unsigned char h[32];
    char sha[65];
    sha256(t1, strlen(t1), h);
    hex_encode(h, 32, sha);

    struct store *st = store_open(path, STORE_CREATE, &err);
    assert_non_null(st);
    assert_int_equal(store_put_keyset(st, sha, "wallet-1", t1, 1000), 0);
    assert_int_equal(store_put_keyset(st, sha, "wallet-1", t2, 2000), 0);
    assert_int_equal(store_put_keyset(st, sha, "lux-hotels", t1, 3000), 0);
    int64_t first = 0;
    char *where = xasprintf("sha256 = '%s' AND owner = 'wallet-1'", sha);
    assert_int_equal(keyset_rows(store_db(st), where, &first), 1);
    assert_int_equal(first, 1000);
    assert_int_equal(keyset_rows(store_db(st), "1", NULL), 2);
    store_close(st);

    /* Read-only (mandate-audit): never written. */
    st = store_open(path, STORE_READONLY, &err);
    assert_non_null(st);
    assert_int_equal(store_put_keyset(st, sha, "other", t1, 4000), -1);
    assert_int_equal(keyset_rows(store_db(st), "1", NULL), 2);
    store_close(st);

    free(where);
    free(t1);
    free(t2);
    jwk_clear(&a);
    jwk_clear(&b);
    free(path);
    tk_rmdir(dir);
}

/* An entry of about the size of a denial, for seq. */
static int entry_text(uint64_t seq, char *buf, size_t size)
{
    return snprintf(buf, size, "{\"kind\":\"decision\",\"pad\":\"%0240d\",\"seq\":%llu}", 0,
                    (unsigned long long)seq);
}

/* Append entries f->size .. n-1 with their subtree roots, as the writer does; leaves[i] is the
 * leaf hash of entry i. With legacy_sql, by plain SQL into a log of the older layout: the leaf
 * stored beside the entry and subtree roots from level 3 up. */
static void append_entries(sqlite3 *legacy_sql, struct store *st, struct merkle_frontier *f,
                           uint64_t n, unsigned char (*leaves)[32])
{
    sqlite3 *db = legacy_sql ? legacy_sql : store_db(st);
    assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    while (f->size < n) {
        char bytes[512];
        uint64_t seq = f->size;
        int len = entry_text(seq, bytes, sizeof(bytes));
        merkle_leaf_hash((const unsigned char *)bytes, (size_t)len, leaves[seq]);
        unsigned char done[MERKLE_MAX_HEIGHT][32];
        int k = merkle_append(f, leaves[seq], done);
        if (!legacy_sql) {
            assert_int_equal(store_append(st, seq, bytes, (size_t)len, NULL, 0, leaves[seq]), 0);
            for (int j = STORE_NODE_MIN_LEVEL - 1; j < k; j++)
                assert_int_equal(store_put_node(st, j + 1, (f->size >> (j + 1)) - 1, done[j]), 0);
            continue;
        }
        sqlite3_stmt *s;
        assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO entries VALUES(?,?,?)", -1, &s, NULL),
                         SQLITE_OK);
        sqlite3_bind_int64(s, 1, (sqlite3_int64)seq);
        sqlite3_bind_blob(s, 2, bytes, len, SQLITE_STATIC);
        sqlite3_bind_blob(s, 3, leaves[seq], 32, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(s), SQLITE_DONE);
        sqlite3_finalize(s);
        for (int j = 2; j < k; j++) {
            assert_int_equal(
                sqlite3_prepare_v2(db, "INSERT INTO nodes VALUES(?,?,?)", -1, &s, NULL), SQLITE_OK);
            sqlite3_bind_int(s, 1, j + 1);
            sqlite3_bind_int64(s, 2, (sqlite3_int64)((f->size >> (j + 1)) - 1));
            sqlite3_bind_blob(s, 3, done[j], 32, SQLITE_STATIC);
            assert_int_equal(sqlite3_step(s), SQLITE_DONE);
            sqlite3_finalize(s);
        }
    }
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
}

/* Every leaf, root, proof and the tail read back from st agree with the tree of leaves. */
static void assert_tree(struct store *st, const unsigned char (*leaves)[32], uint64_t n)
{
    unsigned char got[32], want[32];
    for (uint64_t m = 0; m < n; m++) {
        assert_int_equal(store_range_root(st, m, 1, got), 0);
        assert_memory_equal(got, leaves[m], 32);
    }
    merkle_root_of(leaves, n, want);
    assert_int_equal(store_range_root(st, 0, n, got), 0);
    assert_memory_equal(got, want, 32);
    for (uint64_t m = 0; m < n; m += 37) {
        unsigned char proof[MERKLE_MAX_HEIGHT][32];
        int len = store_inclusion_proof(st, m, n, proof);
        assert_true(len > 0);
        assert_true(merkle_verify_inclusion(leaves[m], m, n, (const unsigned char(*)[32])proof,
                                            (size_t)len, want));
    }
    struct merkle_frontier f;
    char *err = NULL;
    assert_int_equal(store_tail(st, &f, got, &err), 0);
    assert_int_equal(f.size, n);
    assert_memory_equal(got, leaves[n - 1], 32);
    merkle_root(&f, got);
    assert_memory_equal(got, want, 32);
}

static int64_t count(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

/* A new log stores the entry alone (seq, entry) and subtree roots from level 6 up; every leaf,
 * root, proof and the tail are recomputed from the entries. */
static void test_leaf_hashes_recomputed(void **state)
{
    (void)state;
    char *dir = tk_tmpdir();
    char *path = xasprintf("%s/new.db", dir);
    char *err = NULL;
    struct store *st = store_open(path, STORE_CREATE, &err);
    assert_non_null(st);
    assert_false(store_has_column(store_db(st), "leaf"));
    assert_int_equal(count(store_db(st), "SELECT COUNT(*) FROM pragma_table_info('entries')"), 3);
    static unsigned char leaves[300][32];
    struct merkle_frontier f = {0};
    append_entries(NULL, st, &f, 300, leaves);
    /* 300 = 256 + 32 + 8 + 4: four roots at level 6, two at 7, one at 8. */
    assert_int_equal(count(store_db(st), "SELECT COUNT(*) FROM nodes"), 7);
    assert_tree(st, (const unsigned char(*)[32])leaves, 300);
    store_close(st);

    st = store_open(path, STORE_READONLY, &err);
    assert_non_null(st);
    assert_tree(st, (const unsigned char(*)[32])leaves, 300);
    store_close(st);
    free(path);
    tk_rmdir(dir);
}

/*
 * A log written before leaf hashes were dropped (entries(seq, entry, leaf NOT NULL), subtree
 * roots from level 3 up, nodes with a rowid) opens as it is, is appended to with the leaf column
 * filled, and reads back the same tree: no rewrite of old logs.
 */
static void test_older_layout_kept(void **state)
{
    (void)state;
    char *dir = tk_tmpdir();
    char *path = xasprintf("%s/old.db", dir);
    char *err = NULL;
    sqlite3 *old;
    assert_int_equal(sqlite3_open(path, &old), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(old,
                     "PRAGMA journal_mode=WAL;"
                     "CREATE TABLE entries(seq INTEGER PRIMARY KEY, entry BLOB NOT NULL,"
                     " leaf BLOB NOT NULL);"
                     "CREATE TABLE nodes(level INTEGER NOT NULL, idx INTEGER NOT NULL,"
                     " hash BLOB NOT NULL, PRIMARY KEY(level, idx));",
                     NULL, NULL, NULL),
        SQLITE_OK);
    static unsigned char leaves[300][32];
    struct merkle_frontier f = {0};
    append_entries(old, NULL, &f, 200, leaves);
    sqlite3_close(old);

    struct store *st = store_open(path, STORE_CREATE, &err);
    assert_non_null(st);
    assert_true(store_has_column(store_db(st), "leaf"));
    assert_tree(st, (const unsigned char(*)[32])leaves, 200);
    append_entries(NULL, st, &f, 300, leaves);
    assert_tree(st, (const unsigned char(*)[32])leaves, 300);
    /* The rows it appended carry their leaf hash like the old ones. */
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(store_db(st), "SELECT seq, leaf FROM entries ORDER BY seq",
                                        -1, &s, NULL),
                     SQLITE_OK);
    int rows = 0;
    while (sqlite3_step(s) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(s, 0);
        assert_int_equal(seq, rows);
        assert_int_equal(sqlite3_column_bytes(s, 1), 32);
        assert_memory_equal(sqlite3_column_blob(s, 1), leaves[seq], 32);
        rows++;
    }
    sqlite3_finalize(s);
    assert_int_equal(rows, 300);
    store_close(st);
    free(path);
    tk_rmdir(dir);
}

/* The entries another connection (the default VFS, read-only) sees. */
static int64_t count_entries(const char *path)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    int64_t n = count(db, "SELECT count(*) FROM entries");
    sqlite3_close(db);
    return n;
}

static void append_many(struct store *st, uint64_t from, int n, size_t size)
{
    char *bytes = xmalloc(size);
    memset(bytes, 'e', size);
    unsigned char leaf[32] = {0};
    assert_int_equal(store_begin(st), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(store_append(st, from + (uint64_t)i, bytes, size, NULL, 0, leaf), 0);
    assert_int_equal(store_commit(st), 0);
    free(bytes);
}

/* The gateway's connection (walbuf.h): a commit's WAL frames reach the file in one write, or in
 * pieces of at most 128 KiB for a large one, and another connection sees every committed entry
 * while the writer's is open, and after it closed. */
static void test_wal_writes_gathered(void **state)
{
    (void)state;
    char *dir = tk_tmpdir();
    char *path = xasprintf("%s/g.db", dir);
    char *err = NULL;
    struct store *st = store_open(path, STORE_CREATE, &err);
    assert_non_null(st);
    uint64_t asked0, written0, asked, written;
    walbuf_counts(&asked0, &written0);
    append_many(st, 0, 20, 300);
    walbuf_counts(&asked, &written);
    assert_true(asked - asked0 >= 4); /* two frames at least, each a header and a page */
    assert_int_equal(written - written0, 1);
    assert_int_equal(count_entries(path), 20);

    walbuf_counts(&asked0, &written0);
    append_many(st, 20, 1000, 1000); /* ~1 MB of pages: more than one piece */
    walbuf_counts(&asked, &written);
    print_message("1000 entries: %llu WAL writes asked, %llu made\n",
                  (unsigned long long)(asked - asked0), (unsigned long long)(written - written0));
    assert_true(written - written0 >= 8 && written - written0 <= 12);
    assert_true(asked - asked0 > 400);
    assert_int_equal(count_entries(path), 1020);
    store_close(st);

    st = store_open(path, STORE_READONLY, &err);
    assert_non_null(st);
    store_close(st);
    assert_int_equal(count_entries(path), 1020);
    free(path);
    tk_rmdir(dir);
}

/* store_tail takes the log's size from the ends of the rowid B-tree (not a COUNT(*) that reads
 * the whole log), and refuses a log that does not start at seq 0. */
static void test_tail_from_the_ends(void **state)
{
    (void)state;
    char *dir = tk_tmpdir();
    char *path = xasprintf("%s/t.db", dir);
    char *err = NULL;
    struct store *st = store_open(path, STORE_CREATE, &err);
    assert_non_null(st);
    struct merkle_frontier f;
    unsigned char last[32];
    assert_int_equal(store_tail(st, &f, last, &err), 0);
    assert_int_equal(f.size, 0);
    unsigned char leaf[32];
    for (uint64_t i = 0; i < 100; i++) {
        char e[32];
        int n = snprintf(e, sizeof(e), "{\"seq\":%llu}", (unsigned long long)i);
        merkle_leaf_hash((unsigned char *)e, (size_t)n, leaf);
        assert_int_equal(store_append(st, i, e, (size_t)n, NULL, 0, leaf), 0);
    }
    assert_int_equal(store_tail(st, &f, last, &err), 0);
    assert_int_equal(f.size, 100);
    assert_memory_equal(last, leaf, 32);
    assert_int_equal(
        sqlite3_exec(store_db(st), "DELETE FROM entries WHERE seq = 0", NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_equal(store_tail(st, &f, last, &err), -1);
    assert_string_equal(err, "the entries do not start at seq 0; run mandate-audit verify");
    free(err);
    store_close(st);
    free(path);
    tk_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_crashed_copy_concurrently),
        cmocka_unit_test(test_keyset_stored_once),
        cmocka_unit_test(test_leaf_hashes_recomputed),
        cmocka_unit_test(test_older_layout_kept),
        cmocka_unit_test(test_wal_writes_gathered),
        cmocka_unit_test(test_tail_from_the_ends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
