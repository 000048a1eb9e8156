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
    sqlite3_busy_timeout(d->db, 5000);
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

int wdb_push(struct wdb *d, const char *gateway, const char *kind, const char *value,
             const char *status, int attempts)
{
    sqlite3_stmt *s = prep(d, "INSERT INTO pushes(gateway, kind, value, status, attempts, ts_ms) "
                              "VALUES(?,?,?,?,?,?) ON CONFLICT(gateway, kind, value) DO UPDATE "
                              "SET status = excluded.status, attempts = excluded.attempts, "
                              "ts_ms = excluded.ts_ms");
    if (!s)
        return -1;
    text(s, 1, gateway);
    text(s, 2, kind);
    text(s, 3, value);
    text(s, 4, status);
    sqlite3_bind_int(s, 5, attempts);
    sqlite3_bind_int64(s, 6, now_ms());
    return done(d, s);
}

void wdb_each_pending_push(struct wdb *d,
                           void (*fn)(void *arg, const char *gateway, const char *kind,
                                      const char *value, int attempts),
                           void *arg)
{
    sqlite3_stmt *s =
        prep(d, "SELECT gateway, kind, value, attempts FROM pushes WHERE status = 'pending'");
    while (s && sqlite3_step(s) == SQLITE_ROW)
        fn(arg, (const char *)sqlite3_column_text(s, 0), (const char *)sqlite3_column_text(s, 1),
           (const char *)sqlite3_column_text(s, 2), sqlite3_column_int(s, 3));
    sqlite3_finalize(s);
}
