/*
 * store: schema, prepared statements and reads of the audit/state database.
 */
#include "audit/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "audit/walbuf.h"
#include "core/log.h"

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    /* An entry's leaf hash is SHA-256(0x00 || entry): computed where it is needed, never stored
     * (32 bytes of 300 on every row). Logs written before this have a third column, "leaf BLOB
     * NOT NULL", which is kept filled in them (store_has_column) and checked by verify. `uses`:
     * the used-jti records of the mandates the entry used (audit/snap.h), else NULL; logs from
     * before it get the column when a gateway opens them. */
    "CREATE TABLE IF NOT EXISTS entries(seq INTEGER PRIMARY KEY, entry BLOB NOT NULL, uses BLOB);"
    /* The mandate texts allows introduce (SPEC §4), appended: a table keyed by their hashes took
     * a random page per text. Older logs keep theirs in mandates(sha256 PRIMARY KEY, jws);
     * store_mandate_text reads both. */
    "CREATE TABLE IF NOT EXISTS texts(id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL,"
    " jws TEXT NOT NULL);"
    /* The used jtis as of seq (audit/snap.h). Older logs have a used_jtis table instead, until
     * their first snapshot replaces it with this empty view: a gateway from before, which would
     * read and write only the table, then refuses to open the log ("cannot modify used_jtis
     * because it is a view") instead of forgetting every use recorded since. */
    "CREATE TABLE IF NOT EXISTS snapshots(seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL,"
    " horizon INTEGER NOT NULL, uses BLOB NOT NULL);"
    "CREATE VIEW IF NOT EXISTS used_jtis(iss, jti, exp, used) AS SELECT NULL, NULL, NULL, NULL"
    " WHERE 0;"
    "CREATE TABLE IF NOT EXISTS revocations(kind TEXT NOT NULL, value TEXT NOT NULL,"
    " ts_ms INTEGER NOT NULL, PRIMARY KEY(kind, value));"
    "CREATE TABLE IF NOT EXISTS checkpoints(size INTEGER PRIMARY KEY, note TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS spend(request_id TEXT PRIMARY KEY, key TEXT NOT NULL,"
    " amount INTEGER NOT NULL, status INTEGER NOT NULL);"
    /* WITHOUT ROWID: the key is the row, with no rowid and no second B-tree for the key (older
     * logs have both; the statements are the same). */
    "CREATE TABLE IF NOT EXISTS nodes(level INTEGER NOT NULL, idx INTEGER NOT NULL,"
    " hash BLOB NOT NULL, PRIMARY KEY(level, idx)) WITHOUT ROWID;"
    /* The key sets the gateway used, so that old mandates can be verified after a rotation. One
     * row per (set, owner): two owners may share a set. */
    "CREATE TABLE IF NOT EXISTS keysets(sha256 TEXT NOT NULL, owner TEXT NOT NULL,"
    " jwks TEXT NOT NULL, first_seen_ms INTEGER NOT NULL, PRIMARY KEY(sha256, owner));";

/* How long the first statements of an open keep retrying a busy database. */
#define STORE_BUSY_MS 5000

/*
 * Run sql, retrying while the database is busy, for at most STORE_BUSY_MS. Opening a copy of a
 * crashed gateway's database means recovering its WAL: the connection that does it holds a lock
 * meanwhile, and the others get SQLITE_BUSY_RECOVERY (or SQLITE_BUSY) from their first statement,
 * not always after the busy handler has waited. What follows finds the schema read and waits in
 * the busy handler as usual.
 */
static int exec_retry(sqlite3 *db, const char *sql, char **msg)
{
    int64_t deadline = mono_us() + STORE_BUSY_MS * 1000LL;
    long delay_us = 1000;
    for (;;) {
        int rc = sqlite3_exec(db, sql, NULL, NULL, msg);
        if ((rc & 0xff) != SQLITE_BUSY || mono_us() >= deadline)
            return rc;
        sqlite3_free(*msg);
        *msg = NULL;
        struct timespec ts = {0, delay_us * 1000};
        nanosleep(&ts, NULL);
        if (delay_us < 50000)
            delay_us *= 2;
    }
}

sqlite3 *store_open_evidence(const char *path, char **err)
{
    sqlite3 *db = NULL;
    char *msg = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        *err = xasprintf("%s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
        goto fail;
    }
    /* The database is evidence, maybe hostile: its schema runs no functions with side effects. */
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    sqlite3_busy_timeout(db, STORE_BUSY_MS);
    if (exec_retry(db, "SELECT 1 FROM entries LIMIT 1", &msg) != SQLITE_OK) {
        *err = xasprintf("%s: %s", path, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        goto fail;
    }
    return db;
fail:
    sqlite3_close(db);
    return NULL;
}

static int prepare(struct store *st, const char *sql, sqlite3_stmt **out)
{
    return sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL) == SQLITE_OK
               ? 0
               : -1;
}

/* PRAGMA synchronous: 2 is FULL. */
static int synchronous(sqlite3 *db)
{
    sqlite3_stmt *s;
    int v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA synchronous", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return v;
}

/*
 * One writer per database: two gateways appending to one log would each extend their own chain
 * from the same seq. An flock on the database file itself (independent of SQLite's fcntl locks
 * on Linux), held until store_close; the kernel drops it when the process dies. The descriptor
 * is closed only after SQLite's last one: closing any descriptor of the file drops the process's
 * fcntl locks. -1 with *err when another process holds it.
 */
static int lock_writer(const char *path, char **err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        *err = xasprintf("%s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        *err =
            errno == EWOULDBLOCK
                ? xasprintf("%s: in use by another writer (a mandate-gateway running on it?)", path)
                : xasprintf("%s: flock: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* The gateway's statements (STORE_CREATE: the schema is the current one). */
static int prepare_writes(struct store *st)
{
    return prepare(st,
                   st->leaf_column ? "INSERT INTO entries(seq, entry, uses, leaf) VALUES(?,?,?,?)"
                                   : "INSERT INTO entries(seq, entry, uses) VALUES(?,?,?)",
                   &st->ins_entry) ||
           prepare(st, "INSERT INTO texts(sha256, jws) VALUES(?,?)", &st->ins_text) ||
           prepare(st, "INSERT INTO snapshots(seq, ts_ms, horizon, uses) VALUES(?,?,?,?)",
                   &st->ins_snapshot) ||
           prepare(st, "DELETE FROM snapshots WHERE seq < ?", &st->del_snapshots) ||
           prepare(st, "INSERT OR IGNORE INTO revocations(kind, value, ts_ms) VALUES(?,?,?)",
                   &st->ins_revocation) ||
           prepare(st, "INSERT OR REPLACE INTO checkpoints(size, note) VALUES(?,?)",
                   &st->ins_checkpoint) ||
           prepare(st,
                   "INSERT INTO spend(request_id, key, amount, status) VALUES(?,?,?,?) "
                   "ON CONFLICT(request_id) DO UPDATE SET status = excluded.status",
                   &st->put_spend) ||
           prepare(st, "INSERT OR REPLACE INTO nodes(level, idx, hash) VALUES(?,?,?)",
                   &st->ins_node) ||
           prepare(st,
                   "INSERT OR IGNORE INTO keysets(sha256, owner, jwks, first_seen_ms) "
                   "VALUES(?,?,?,?)",
                   &st->ins_keyset) ||
           /* Prepared once: every batch runs them, and sqlite3_exec would parse them each time. */
           prepare(st, "BEGIN IMMEDIATE", &st->begin) || prepare(st, "COMMIT", &st->commit) ||
           prepare(st, "ROLLBACK", &st->rollback);
}

struct store *store_open(const char *path, enum store_mode mode, char **err)
{
    struct store *st = xcalloc(1, sizeof(*st));
    st->lock_fd = -1;
    if (mode == STORE_CREATE && (st->lock_fd = lock_writer(path, err)) < 0) {
        free(st);
        return NULL;
    }
    int flags =
        SQLITE_OPEN_NOMUTEX | (mode == STORE_READONLY ? SQLITE_OPEN_READONLY
                                                      : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    /* The gateway's own connection (synchronous=FULL, below): one write per WAL flush. */
    const char *vfs = mode == STORE_CREATE && walbuf_register() == 0 ? WALBUF_VFS : NULL;
    if (sqlite3_open_v2(path, &st->db, flags, vfs) != SQLITE_OK) {
        *err = xasprintf("%s: %s", path, st->db ? sqlite3_errmsg(st->db) : "cannot open");
        goto fail;
    }
    /* Before any statement: every one of them may find the database locked for a moment. */
    sqlite3_busy_timeout(st->db, STORE_BUSY_MS);
    char *msg = NULL;
    /* The first statement reads the schema (and, for the gateway, creates it). */
    const char *first = mode == STORE_CREATE ? schema : "SELECT count(*) FROM sqlite_master";
    if (exec_retry(st->db, first, &msg) != SQLITE_OK) {
        *err = xasprintf("%s: %s", path, msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        goto fail;
    }
    if (vfs && synchronous(st->db) != 2) {
        /* walbuf.h: only a commit synced before it is published may have its frames gathered. */
        *err = xasprintf("%s: the WAL needs synchronous=FULL here", path);
        goto fail;
    }
    if (mode == STORE_CREATE && !store_has_column(st->db, "uses") &&
        exec_retry(st->db, "ALTER TABLE entries ADD COLUMN uses BLOB", &msg) != SQLITE_OK) {
        *err = xasprintf("%s: %s", path, msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        goto fail;
    }
    st->leaf_column = store_has_column(st->db, "leaf");
    if (prepare(st, "SELECT hash FROM nodes WHERE level = ? AND idx = ?", &st->get_node) ||
        prepare(st, "SELECT entry FROM entries WHERE seq = ?", &st->get_entry) ||
        (mode == STORE_CREATE && prepare_writes(st))) {
        *err = xasprintf("%s: %s", path, sqlite3_errmsg(st->db));
        goto fail;
    }
    return st;
fail:
    store_close(st);
    return NULL;
}

sqlite3 *store_db(struct store *st)
{
    return st->db;
}

void store_close(struct store *st)
{
    if (!st)
        return;
    sqlite3_finalize(st->ins_entry);
    sqlite3_finalize(st->ins_text);
    sqlite3_finalize(st->ins_snapshot);
    sqlite3_finalize(st->del_snapshots);
    sqlite3_finalize(st->ins_revocation);
    sqlite3_finalize(st->ins_checkpoint);
    sqlite3_finalize(st->put_spend);
    sqlite3_finalize(st->ins_node);
    sqlite3_finalize(st->get_node);
    sqlite3_finalize(st->get_entry);
    sqlite3_finalize(st->ins_keyset);
    sqlite3_finalize(st->begin);
    sqlite3_finalize(st->commit);
    sqlite3_finalize(st->rollback);
    sqlite3_close(st->db);
    if (st->lock_fd >= 0)
        close(st->lock_fd); /* after SQLite's own descriptors: see lock_writer */
    free(st);
}

/* Run one of the prepared transaction statements; log a failure with its SQL. */
static int run(struct store *st, sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        log_error("sqlite: %s: %s", sqlite3_sql(s), sqlite3_errmsg(st->db));
        return -1;
    }
    return 0;
}

int store_begin(struct store *st)
{
    return run(st, st->begin);
}

int store_commit(struct store *st)
{
    return run(st, st->commit);
}

void store_rollback(struct store *st)
{
    if (!sqlite3_get_autocommit(st->db))
        (void)run(st, st->rollback);
}

/* Step a bound statement to completion and reset it. */
static int step(struct store *st, sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_DONE) {
        log_error("sqlite: %s", sqlite3_errmsg(st->db));
        return -1;
    }
    return 0;
}

int store_append(struct store *st, uint64_t seq, const char *bytes, size_t len, const void *uses,
                 size_t uses_len, const unsigned char leaf[32])
{
    sqlite3_bind_int64(st->ins_entry, 1, (sqlite3_int64)seq);
    sqlite3_bind_blob(st->ins_entry, 2, bytes, (int)len, SQLITE_STATIC);
    if (uses_len)
        sqlite3_bind_blob(st->ins_entry, 3, uses, (int)uses_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st->ins_entry, 3);
    if (st->leaf_column)
        sqlite3_bind_blob(st->ins_entry, 4, leaf, 32, SQLITE_STATIC);
    return step(st, st->ins_entry);
}

int store_append_entry(struct store *st, struct merkle_frontier *f, unsigned char last_leaf[32],
                       const struct entry_body *body, const void *uses, size_t uses_len,
                       unsigned char leaf[32])
{
    char prev[65];
    hex_encode(last_leaf, 32, prev);
    size_t len;
    char *bytes = entry_seal(body, f->size, prev, &len);
    merkle_leaf_hash((unsigned char *)bytes, len, leaf);
    int rc = store_append(st, f->size, bytes, len, uses, uses_len, leaf);
    free(bytes);
    if (rc != 0)
        return -1;
    memcpy(last_leaf, leaf, 32);
    unsigned char done[MERKLE_MAX_HEIGHT][32];
    int k = merkle_append(f, leaf, done);
    /* Subtree roots, so that roots and proofs later cost O(log n) reads. */
    for (int j = STORE_NODE_MIN_LEVEL - 1; j < k; j++)
        if (store_put_node(st, j + 1, (f->size >> (j + 1)) - 1, done[j]) != 0)
            return -1;
    return 0;
}

int store_put_mandate(struct store *st, const char *sha_hex, const char *jws)
{
    sqlite3_bind_text(st->ins_text, 1, sha_hex, -1, SQLITE_STATIC);
    sqlite3_bind_text(st->ins_text, 2, jws, -1, SQLITE_STATIC);
    return step(st, st->ins_text);
}

int store_put_snapshot(struct store *st, uint64_t seq, int64_t horizon, const void *uses,
                       size_t len)
{
    bool own = sqlite3_get_autocommit(st->db); /* else in the caller's transaction */
    if (own && store_begin(st) != 0)
        return -1;
    sqlite3_bind_int64(st->ins_snapshot, 1, (sqlite3_int64)seq);
    sqlite3_bind_int64(st->ins_snapshot, 2, now_ms());
    sqlite3_bind_int64(st->ins_snapshot, 3, horizon);
    sqlite3_bind_blob64(st->ins_snapshot, 4, len ? uses : "", len, SQLITE_STATIC);
    int rc = step(st, st->ins_snapshot);
    if (rc == 0) {
        sqlite3_bind_int64(st->del_snapshots, 1, (sqlite3_int64)seq);
        rc = step(st, st->del_snapshots);
    }
    /* A log from before: the snapshot holds what its used_jtis table held (see the schema). */
    if (rc == 0 && store_has_table(st->db, "used_jtis") &&
        sqlite3_exec(st->db,
                     "DROP TABLE used_jtis; CREATE VIEW used_jtis(iss, jti, exp, used) AS "
                     "SELECT NULL, NULL, NULL, NULL WHERE 0",
                     NULL, NULL, NULL) != SQLITE_OK) {
        log_error("sqlite: replacing used_jtis: %s", sqlite3_errmsg(st->db));
        rc = -1;
    }
    if (!own)
        return rc;
    if (rc == 0 && store_commit(st) == 0)
        return 0;
    store_rollback(st);
    return -1;
}

uint64_t store_snapshot_seq(struct store *st)
{
    sqlite3_stmt *s;
    uint64_t seq = 0;
    if (sqlite3_prepare_v2(st->db, "SELECT MAX(seq) FROM snapshots", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        seq = (uint64_t)sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return seq;
}

int store_put_revocation(struct store *st, const char *kind, const char *value, int64_t ts_ms)
{
    sqlite3_bind_text(st->ins_revocation, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st->ins_revocation, 2, value, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st->ins_revocation, 3, ts_ms);
    return step(st, st->ins_revocation);
}

int store_put_spend(struct store *st, const char *request_id, const char *key, int64_t amount,
                    int status)
{
    sqlite3_bind_text(st->put_spend, 1, request_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st->put_spend, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st->put_spend, 3, amount);
    sqlite3_bind_int(st->put_spend, 4, status);
    return step(st, st->put_spend);
}

int store_each_spend(struct store *st, void (*fn)(void *arg, const char *key, int64_t amount),
                     void *arg)
{
    sqlite3_stmt *s;
    /* 2 is SPEND_RELEASED (audit/writer.h): everything else counts against the cap. */
    if (sqlite3_prepare_v2(st->db,
                           "SELECT key, SUM(amount) FROM spend WHERE status != 2 GROUP BY key", -1,
                           &s, NULL) != SQLITE_OK)
        return -1;
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW)
        fn(arg, (const char *)sqlite3_column_text(s, 0), sqlite3_column_int64(s, 1));
    sqlite3_finalize(s);
    return r == SQLITE_DONE ? 0 : -1;
}

int store_get_spend(struct store *st, const char *request_id, int *status)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT status FROM spend WHERE request_id = ?", -1, &s, NULL) !=
        SQLITE_OK)
        return -1;
    sqlite3_bind_text(s, 1, request_id, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW)
        *status = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return r == SQLITE_ROW ? 0 : r == SQLITE_DONE ? 1 : -1;
}

int store_put_checkpoint(struct store *st, uint64_t size, const char *note)
{
    sqlite3_bind_int64(st->ins_checkpoint, 1, (sqlite3_int64)size);
    sqlite3_bind_text(st->ins_checkpoint, 2, note, -1, SQLITE_STATIC);
    return step(st, st->ins_checkpoint);
}

int store_put_node(struct store *st, int level, uint64_t index, const unsigned char hash[32])
{
    sqlite3_bind_int(st->ins_node, 1, level);
    sqlite3_bind_int64(st->ins_node, 2, (sqlite3_int64)index);
    sqlite3_bind_blob(st->ins_node, 3, hash, 32, SQLITE_STATIC);
    return step(st, st->ins_node);
}

bool store_has_column(sqlite3 *db, const char *column)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info('entries') WHERE name = ?", -1, &s,
                           NULL) != SQLITE_OK)
        return false;
    sqlite3_bind_text(s, 1, column, -1, SQLITE_STATIC);
    bool has = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    return has;
}

bool store_has_table(sqlite3 *db, const char *name)
{
    sqlite3_stmt *s;
    bool has = false;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", -1,
                           &s, NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        has = sqlite3_step(s) == SQLITE_ROW;
    }
    sqlite3_finalize(s);
    return has;
}

/* The leaf hash of the entry in column col of s's current row. */
static void column_leaf(sqlite3_stmt *s, int col, unsigned char out[32])
{
    merkle_leaf_hash(sqlite3_column_blob(s, col), (size_t)sqlite3_column_bytes(s, col), out);
}

/* A perfect subtree's root: a leaf (hashed from its entry) at level 0, a stored node above. */
static int perfect(struct store *st, int level, uint64_t index, unsigned char out[32])
{
    if (level > 0 && level < STORE_NODE_MIN_LEVEL) {
        unsigned char l[32], r[32];
        if (perfect(st, level - 1, 2 * index, l) || perfect(st, level - 1, 2 * index + 1, r))
            return -1;
        merkle_node_hash(l, r, out);
        return 0;
    }
    sqlite3_stmt *s = level ? st->get_node : st->get_entry;
    if (level)
        sqlite3_bind_int(s, 1, level);
    sqlite3_bind_int64(s, level ? 2 : 1, (sqlite3_int64)index);
    int rc = -1;
    if (sqlite3_step(s) == SQLITE_ROW && (!level || sqlite3_column_bytes(s, 0) == 32)) {
        if (level)
            memcpy(out, sqlite3_column_blob(s, 0), 32);
        else
            column_leaf(s, 0, out);
        rc = 0;
    }
    sqlite3_reset(s);
    return rc;
}

int store_range_root(struct store *st, uint64_t start, uint64_t size, unsigned char out[32])
{
    if (size == 0)
        return -1;
    int level = __builtin_ctzll(size);
    if (size == (1ULL << level) && start % size == 0)
        return perfect(st, level, start >> level, out);
    uint64_t k = merkle_split(size);
    unsigned char l[32], r[32];
    if (store_range_root(st, start, k, l) || store_range_root(st, start + k, size - k, r))
        return -1;
    merkle_node_hash(l, r, out);
    return 0;
}

static int range_cb(void *arg, uint64_t start, uint64_t size, unsigned char out[32])
{
    return store_range_root(arg, start, size, out);
}

int store_inclusion_proof(struct store *st, uint64_t m, uint64_t n, unsigned char (*proof)[32])
{
    return merkle_path(m, n, range_cb, st, proof);
}

/* The slow way, for logs written before subtree roots were stored: every leaf in order. */
static int tail_from_leaves(struct store *st, struct merkle_frontier *f,
                            unsigned char last_leaf[32], char **err)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT seq, entry FROM entries ORDER BY seq", -1, &s, NULL) !=
        SQLITE_OK) {
        *err = xstrdup(sqlite3_errmsg(st->db));
        return -1;
    }
    int rc = 0, r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        if ((uint64_t)sqlite3_column_int64(s, 0) != f->size) {
            *err = xasprintf("entry %llu: sequence gap; run mandate-audit verify",
                             (unsigned long long)f->size);
            rc = -1;
            break;
        }
        column_leaf(s, 1, last_leaf);
        merkle_append(f, last_leaf, NULL);
    }
    if (rc == 0 && r != SQLITE_DONE) {
        *err = xstrdup(sqlite3_errmsg(st->db));
        rc = -1;
    }
    sqlite3_finalize(s);
    return rc;
}

int store_tail(struct store *st, struct merkle_frontier *f, unsigned char last_leaf[32], char **err)
{
    memset(f, 0, sizeof(*f));
    memset(last_leaf, 0, 32);
    sqlite3_stmt *s;
    uint64_t n = 0;
    /* Both ends of the rowid B-tree: O(log n), where COUNT(*) read the whole log (4 s for 10M
     * entries). A gap in the middle is what mandate-audit verify names ("deleted"). */
    if (sqlite3_prepare_v2(st->db,
                           /* one min() or max() per SELECT, or SQLite scans the table */
                           "SELECT (SELECT MIN(seq) FROM entries), (SELECT MAX(seq) FROM entries)",
                           -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW) {
        *err = xstrdup(sqlite3_errmsg(st->db));
        sqlite3_finalize(s);
        return -1;
    }
    bool empty = sqlite3_column_type(s, 0) == SQLITE_NULL;
    n = empty ? 0 : (uint64_t)sqlite3_column_int64(s, 1) + 1;
    bool dense = empty || sqlite3_column_int64(s, 0) == 0;
    sqlite3_finalize(s);
    if (!dense) {
        *err = xasprintf("the entries do not start at seq 0; run mandate-audit verify");
        return -1;
    }
    /* The frontier is the perfect subtrees of n's set bits, largest (leftmost) first. */
    uint64_t offset = 0;
    for (int h = MERKLE_MAX_HEIGHT - 1; h >= 0 && n; h--) {
        if (!((n >> h) & 1))
            continue;
        if (perfect(st, h, offset >> h, f->node[h]) != 0) {
            memset(f, 0, sizeof(*f));
            return tail_from_leaves(st, f, last_leaf, err);
        }
        offset += 1ULL << h;
    }
    f->size = n;
    if (n && perfect(st, 0, n - 1, last_leaf) != 0) {
        *err = xstrdup("cannot read the last leaf");
        return -1;
    }
    return 0;
}

char *store_last_checkpoint(struct store *st)
{
    sqlite3_stmt *s;
    char *note = NULL;
    if (sqlite3_prepare_v2(st->db, "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1", -1,
                           &s, NULL) != SQLITE_OK)
        return NULL;
    if (sqlite3_step(s) == SQLITE_ROW)
        note = xstrdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return note;
}

/* The first row of sql (bound to sha) as a string, or NULL; *ok false if sql cannot run. */
static char *text_of(sqlite3 *db, const char *sql, const char *sha, bool *ok)
{
    sqlite3_stmt *s;
    char *t = NULL;
    *ok = sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK;
    if (!*ok)
        return NULL;
    sqlite3_bind_text(s, 1, sha, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
        t = xstrdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return t;
}

char *store_mandate_text(sqlite3 *db, const char *sha)
{
    /* texts is appended, not keyed by hash: indexed in a temporary table, brought up to date
     * (the rows past the last indexed id) when a text is not found in it. */
    static const char by_index[] = "SELECT t.jws FROM temp.text_ix i JOIN main.texts t ON t.id = "
                                   "i.id WHERE i.sha256 = ? ORDER BY i.id LIMIT 1";
    static const char more[] =
        "CREATE TEMP TABLE IF NOT EXISTS text_ix(id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL);"
        "CREATE INDEX IF NOT EXISTS temp.text_ix_sha ON text_ix(sha256);"
        "INSERT INTO temp.text_ix SELECT id, sha256 FROM main.texts"
        " WHERE id > (SELECT COALESCE(MAX(id), 0) FROM temp.text_ix)";
    bool ok;
    char *t = text_of(db, by_index, sha, &ok);
    if (!t) /* a log of the older layout keeps its texts by hash */
        t = text_of(db, "SELECT jws FROM main.mandates WHERE sha256 = ?", sha, &ok);
    if (!t && sqlite3_exec(db, more, NULL, NULL, NULL) == SQLITE_OK)
        t = text_of(db, by_index, sha, &ok);
    return t;
}

int store_each_revocation(struct store *st,
                          void (*fn)(void *arg, const char *kind, const char *value, int64_t ts_ms),
                          void *arg)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT kind, value, ts_ms FROM revocations ORDER BY ts_ms", -1,
                           &s, NULL) != SQLITE_OK)
        return -1;
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW)
        fn(arg, (const char *)sqlite3_column_text(s, 0), (const char *)sqlite3_column_text(s, 1),
           sqlite3_column_int64(s, 2));
    sqlite3_finalize(s);
    return r == SQLITE_DONE ? 0 : -1;
}

int store_put_keyset(struct store *st, const char *sha_hex, const char *owner, const char *jwks,
                     int64_t first_seen_ms)
{
    if (!st->ins_keyset)
        return -1; /* opened read-only */
    sqlite3_bind_text(st->ins_keyset, 1, sha_hex, -1, SQLITE_STATIC);
    sqlite3_bind_text(st->ins_keyset, 2, owner, -1, SQLITE_STATIC);
    sqlite3_bind_text(st->ins_keyset, 3, jwks, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st->ins_keyset, 4, first_seen_ms);
    return step(st, st->ins_keyset);
}
