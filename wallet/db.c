/*
 * db: the wallet's database.
 */
#include "wallet/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/sjson.h"

struct wdb {
    sqlite3 *db;
};

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    "CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL,"
    " agent TEXT, principal TEXT, kind TEXT NOT NULL, merchant TEXT, action TEXT, jti TEXT,"
    " decision TEXT NOT NULL, code TEXT, detail TEXT, amount INTEGER, currency TEXT);"
    "CREATE INDEX IF NOT EXISTS events_jti ON events(jti);"
    "CREATE TABLE IF NOT EXISTS approvals(id TEXT PRIMARY KEY, agent TEXT NOT NULL,"
    " cart TEXT NOT NULL, status TEXT NOT NULL, mandate TEXT, expires_at INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS revocations(kind TEXT NOT NULL, value TEXT NOT NULL,"
    " ts_ms INTEGER NOT NULL, PRIMARY KEY(kind, value));"
    "CREATE TABLE IF NOT EXISTS pushes(gateway TEXT NOT NULL, kind TEXT NOT NULL,"
    " value TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,"
    " ts_ms INTEGER NOT NULL, PRIMARY KEY(gateway, kind, value));";

struct wdb *wdb_open(const char *path, char **err)
{
    struct wdb *d = xcalloc(1, sizeof(*d));
    char *msg = NULL;
    if (sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(d->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        *err = xasprintf("%s: %s", path, msg ? msg : sqlite3_errmsg(d->db));
        sqlite3_free(msg);
        wdb_close(d);
        return NULL;
    }
    /* The wallet is one event loop: a lock held by another process stalls every request, so
     * give up after a second and answer 503 rather than hold them all for longer. */
    sqlite3_busy_timeout(d->db, WDB_BUSY_MS);
    return d;
}

void wdb_close(struct wdb *d)
{
    if (!d)
        return;
    sqlite3_close(d->db);
    free(d);
}

/* Prepare sql; a failure is logged and gives NULL. */
static sqlite3_stmt *prep(struct wdb *d, const char *sql)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(d->db, sql, -1, &s, NULL) != SQLITE_OK)
        log_error("wallet db: %s", sqlite3_errmsg(d->db));
    return s;
}

static int done(struct wdb *d, sqlite3_stmt *s)
{
    int rc = s ? sqlite3_step(s) : SQLITE_ERROR;
    if (rc != SQLITE_DONE)
        log_error("wallet db: %s", sqlite3_errmsg(d->db));
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
}

static int exec(struct wdb *d, const char *sql)
{
    if (sqlite3_exec(d->db, sql, NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    log_error("wallet db: %s", sqlite3_errmsg(d->db));
    return -1;
}

/* IMMEDIATE: take the write lock now, so that a busy database fails here and not at COMMIT. */
int wdb_begin(struct wdb *d)
{
    return exec(d, "BEGIN IMMEDIATE");
}

int wdb_commit(struct wdb *d)
{
    return exec(d, "COMMIT");
}

void wdb_rollback(struct wdb *d)
{
    if (!sqlite3_get_autocommit(d->db) && exec(d, "ROLLBACK") != 0)
        log_error("wallet db: cannot roll back");
}

int wdb_event(struct wdb *d, const struct wdb_event *e)
{
    sqlite3_stmt *s = prep(d, "INSERT INTO events(ts_ms, agent, principal, kind, merchant, "
                              "action, jti, decision, code, detail, amount, currency) "
                              "VALUES(?,?,?,?,?,?,?,?,?,?,?,?)");
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, now_ms());
    const char *v[] = {e->agent, e->principal, e->kind, e->merchant, e->action,
                       e->jti,   e->decision,  e->code, e->detail};
    for (int i = 0; i < 9; i++)
        text(s, i + 2, v[i]);
    if (e->amount) {
        sqlite3_bind_int64(s, 11, e->amount->value);
        text(s, 12, e->amount->currency);
    }
    return done(d, s);
}

int wdb_intent_max(struct wdb *d, const char *jti, struct money *out)
{
    sqlite3_stmt *s = prep(d, "SELECT amount, currency FROM events WHERE jti = ? AND "
                              "kind = 'intent' AND decision = 'minted' AND amount IS NOT NULL");
    if (!s)
        return 0;
    text(s, 1, jti);
    int found = sqlite3_step(s) == SQLITE_ROW;
    if (found) {
        out->value = sqlite3_column_int64(s, 0);
        snprintf(out->currency, sizeof(out->currency), "%s", sqlite3_column_text(s, 1));
    }
    sqlite3_finalize(s);
    return found;
}

int wdb_minted_since(struct wdb *d, const char *principal, const char *currency, int64_t since_ms,
                     int64_t *out)
{
    sqlite3_stmt *s = prep(d, "SELECT COALESCE(SUM(amount), 0) FROM events WHERE principal = ? "
                              "AND kind = 'payment' AND decision = 'minted' AND currency = ? "
                              "AND ts_ms >= ?");
    if (!s)
        return -1;
    text(s, 1, principal);
    text(s, 2, currency);
    sqlite3_bind_int64(s, 3, since_ms);
    int rc = sqlite3_step(s) == SQLITE_ROW ? 0 : -1;
    if (rc == 0)
        *out = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return rc;
}

int wdb_approval_new(struct wdb *d, const char *id, const char *agent, const char *cart,
                     int64_t expires_at)
{
    sqlite3_stmt *s = prep(d, "INSERT INTO approvals(id, agent, cart, status, expires_at, "
                              "created_ms) VALUES(?,?,?,'pending',?,?)");
    if (!s)
        return -1;
    text(s, 1, id);
    text(s, 2, agent);
    text(s, 3, cart);
    sqlite3_bind_int64(s, 4, expires_at);
    sqlite3_bind_int64(s, 5, now_ms());
    return done(d, s);
}

int wdb_approval_get(struct wdb *d, const char *id, struct wdb_approval *out)
{
    memset(out, 0, sizeof(*out));
    sqlite3_stmt *s =
        prep(d, "SELECT id, agent, cart, status, mandate, expires_at FROM approvals WHERE id = ?");
    if (!s)
        return 0;
    text(s, 1, id);
    int found = sqlite3_step(s) == SQLITE_ROW;
    if (found) {
        snprintf(out->id, sizeof(out->id), "%s", sqlite3_column_text(s, 0));
        snprintf(out->agent, sizeof(out->agent), "%s", sqlite3_column_text(s, 1));
        out->cart = xstrdup((const char *)sqlite3_column_text(s, 2));
        snprintf(out->status, sizeof(out->status), "%s", sqlite3_column_text(s, 3));
        out->mandate = xstrdup((const char *)sqlite3_column_text(s, 4));
        out->expires_at = sqlite3_column_int64(s, 5);
    }
    sqlite3_finalize(s);
    return found;
}

int wdb_approval_set(struct wdb *d, const char *id, const char *status, const char *mandate)
{
    sqlite3_stmt *s = prep(d, "UPDATE approvals SET status = ?, mandate = ? WHERE id = ?");
    if (!s)
        return -1;
    text(s, 1, status);
    text(s, 2, mandate);
    text(s, 3, id);
    return done(d, s);
}

json_t *wdb_approvals_pending(struct wdb *d, int64_t now)
{
    json_t *arr = json_array();
    sqlite3_stmt *s = prep(d, "SELECT id, agent, cart, expires_at FROM approvals WHERE "
                              "status = 'pending' AND expires_at >= ? ORDER BY created_ms");
    if (!s)
        return arr;
    sqlite3_bind_int64(s, 1, now);
    while (sqlite3_step(s) == SQLITE_ROW)
        sjson_append(arr, json_pack("{ss ss ss sI}", "id", sqlite3_column_text(s, 0), "agent",
                                    sqlite3_column_text(s, 1), "cart", sqlite3_column_text(s, 2),
                                    "expires_at", (json_int_t)sqlite3_column_int64(s, 3)));
    sqlite3_finalize(s);
    return arr;
}

int wdb_revoke(struct wdb *d, const char *kind, const char *value)
{
    sqlite3_stmt *s =
        prep(d, "INSERT OR IGNORE INTO revocations(kind, value, ts_ms) VALUES(?,?,?)");
    if (!s)
        return -1;
    text(s, 1, kind);
    text(s, 2, value);
    sqlite3_bind_int64(s, 3, now_ms());
    return done(d, s);
}

bool wdb_revoked(struct wdb *d, const char *kind, const char *value)
{
    sqlite3_stmt *s = prep(d, "SELECT 1 FROM revocations WHERE kind = ? AND value = ?");
    if (!s)
        return true; /* cannot tell: refuse to mint */
    text(s, 1, kind);
    text(s, 2, value);
    bool r = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    return r;
}

int wdb_push_add(struct wdb *d, const char *gateway, const char *kind, const char *value)
{
    /* Revoking again pushes again: a gateway may have lost what it was told. */
    sqlite3_stmt *s = prep(d, "INSERT INTO pushes(gateway, kind, value, status, attempts, ts_ms) "
                              "VALUES(?,?,?,'pending',0,?) ON CONFLICT(gateway, kind, value) "
                              "DO UPDATE SET status = 'pending', attempts = 0, "
                              "ts_ms = excluded.ts_ms");
    if (!s)
        return -1;
    text(s, 1, gateway);
    text(s, 2, kind);
    text(s, 3, value);
    sqlite3_bind_int64(s, 4, now_ms());
    return done(d, s);
}

int wdb_push_next(struct wdb *d, const char *gateway, char kind[WDB_KIND_MAX + 1],
                  char value[WDB_VALUE_MAX + 1])
{
    /* Least recently tried first: one push the gateway keeps refusing does not block the rest. */
    sqlite3_stmt *s = prep(d, "SELECT kind, value FROM pushes WHERE gateway = ? AND "
                              "status = 'pending' ORDER BY ts_ms, rowid LIMIT 1");
    if (!s)
        return -1;
    text(s, 1, gateway);
    int rc = sqlite3_step(s), found = 0;
    if (rc == SQLITE_ROW) {
        snprintf(kind, WDB_KIND_MAX + 1, "%s", sqlite3_column_text(s, 0));
        snprintf(value, WDB_VALUE_MAX + 1, "%s", sqlite3_column_text(s, 1));
        found = 1;
    } else if (rc != SQLITE_DONE) {
        log_error("wallet db: %s", sqlite3_errmsg(d->db));
        found = -1;
    }
    sqlite3_finalize(s);
    return found;
}

int wdb_push_tried(struct wdb *d, const char *gateway, const char *kind, const char *value,
                   bool acknowledged)
{
    sqlite3_stmt *s = prep(d, "UPDATE pushes SET status = ?, attempts = attempts + 1, ts_ms = ? "
                              "WHERE gateway = ? AND kind = ? AND value = ?");
    if (!s)
        return -1;
    text(s, 1, acknowledged ? "acknowledged" : "pending");
    sqlite3_bind_int64(s, 2, now_ms());
    text(s, 3, gateway);
    text(s, 4, kind);
    text(s, 5, value);
    return done(d, s);
}
