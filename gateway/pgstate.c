/*
 * pgstate: the postgres backend (see pgstate.h and backend.h).
 */
#include "gateway/pgstate.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "core/log.h"
#include "gateway/pgconn.h"

#define SCHEMA_VERSION    1
#define MIGRATE_LOCK      0x6d616e6461746531LL /* "mandate1": one advisory lock for migrations */
#define POLL_MS           1000                 /* revocation poll and health check */
#define PRUNE_EVERY_S     60
#define PGSTATE_RETRY_MAX 1024 /* settles and releases waiting for the connection, per worker */

/* Version 1. mg_admit checks and consumes in one statement: a use of (iss, jti), then for a
 * payment the cart (paid once) and the amount against the cap; a failing step raises, which
 * rolls the whole statement back. SQLSTATE MG002: cart paid, MG003: cap exceeded. */
static const char schema_v1[] =
    "CREATE TABLE mg_jti(iss text NOT NULL, jti text NOT NULL, exp bigint NOT NULL,"
    " used integer NOT NULL, PRIMARY KEY (iss, jti));"
    "CREATE INDEX mg_jti_exp ON mg_jti(exp);"
    "CREATE TABLE mg_cart(iss text NOT NULL, jti text NOT NULL, exp bigint NOT NULL,"
    " node text NOT NULL, request_id text NOT NULL, PRIMARY KEY (iss, jti));"
    "CREATE INDEX mg_cart_exp ON mg_cart(exp);"
    "CREATE TABLE mg_spend(key text PRIMARY KEY, spent bigint NOT NULL,"
    " period_end bigint NOT NULL);"
    "CREATE TABLE mg_reservation(node text NOT NULL, request_id text NOT NULL,"
    " key text NOT NULL, amount bigint NOT NULL, status text NOT NULL CHECK (status IN"
    " ('reserved', 'committed', 'released', 'unknown')), iss text NOT NULL, jti text NOT NULL,"
    " cart_iss text NOT NULL, cart_jti text NOT NULL, created timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (node, request_id));"
    "CREATE INDEX mg_reservation_open ON mg_reservation(node) WHERE status = 'reserved';"
    "CREATE TABLE mg_revocation(id bigserial PRIMARY KEY, kind text NOT NULL,"
    " value text NOT NULL, node text NOT NULL, created timestamptz NOT NULL DEFAULT now(),"
    " UNIQUE (kind, value));"
    "CREATE FUNCTION mg_revocation_notify() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN PERFORM pg_notify('mg_revocation', NEW.id::text); RETURN NEW; END $$;"
    "CREATE TRIGGER mg_revocation_notify AFTER INSERT ON mg_revocation"
    " FOR EACH ROW EXECUTE FUNCTION mg_revocation_notify();"
    "CREATE FUNCTION mg_admit(p_node text, p_rid text, p_iss text, p_jti text, p_exp bigint,"
    " p_uses integer, p_cart_iss text, p_cart_jti text, p_cart_exp bigint, p_key text,"
    " p_amount bigint, p_cap bigint, p_period_end bigint) RETURNS integer LANGUAGE plpgsql AS $$"
    " DECLARE n integer;"
    " BEGIN"
    "  INSERT INTO mg_jti AS j VALUES (p_iss, p_jti, p_exp, 1) ON CONFLICT (iss, jti)"
    "   DO UPDATE SET used = j.used + 1 WHERE j.used < p_uses RETURNING used INTO n;"
    "  IF n IS NULL OR p_cart_jti IS NULL THEN RETURN coalesce(n, 0); END IF;"
    "  INSERT INTO mg_cart VALUES (p_cart_iss, p_cart_jti, p_cart_exp, p_node, p_rid)"
    "   ON CONFLICT DO NOTHING;"
    "  IF NOT FOUND THEN RAISE EXCEPTION 'cart already paid' USING ERRCODE = 'MG002'; END IF;"
    "  IF p_amount > p_cap THEN RAISE EXCEPTION 'over the cap' USING ERRCODE = 'MG003'; END IF;"
    "  INSERT INTO mg_spend AS s VALUES (p_key, p_amount, p_period_end) ON CONFLICT (key)"
    "   DO UPDATE SET spent = s.spent + p_amount WHERE s.spent + p_amount <= p_cap;"
    "  IF NOT FOUND THEN RAISE EXCEPTION 'over the cap' USING ERRCODE = 'MG003'; END IF;"
    "  INSERT INTO mg_reservation(node, request_id, key, amount, status, iss, jti, cart_iss,"
    "   cart_jti) VALUES (p_node, p_rid, p_key, p_amount, 'reserved', p_iss, p_jti, p_cart_iss,"
    "   p_cart_jti);"
    "  RETURN n;"
    " END $$;"
    /* The outcome of a forwarded payment: only a release gives the amount back. */
    "CREATE FUNCTION mg_settle(p_node text, p_rid text, p_status text) RETURNS void"
    " LANGUAGE plpgsql AS $$ DECLARE r mg_reservation;"
    " BEGIN"
    "  UPDATE mg_reservation SET status = p_status WHERE node = p_node AND request_id = p_rid"
    "   AND status = 'reserved' RETURNING * INTO r;"
    "  IF FOUND AND p_status = 'released' THEN"
    "   UPDATE mg_spend SET spent = spent - r.amount WHERE key = r.key; END IF;"
    " END $$;"
    /* A payment never forwarded: the amount, the cart and the use all come back. Idempotent. */
    "CREATE FUNCTION mg_unadmit(p_node text, p_rid text) RETURNS boolean LANGUAGE plpgsql AS $$"
    " DECLARE r mg_reservation;"
    " BEGIN"
    "  UPDATE mg_reservation SET status = 'released' WHERE node = p_node AND request_id = p_rid"
    "   AND status = 'reserved' RETURNING * INTO r;"
    "  IF NOT FOUND THEN RETURN false; END IF;"
    "  UPDATE mg_spend SET spent = spent - r.amount WHERE key = r.key;"
    "  DELETE FROM mg_cart WHERE iss = r.cart_iss AND jti = r.cart_jti AND node = p_node"
    "   AND request_id = p_rid;"
    "  UPDATE mg_jti SET used = used - 1 WHERE iss = r.iss AND jti = r.jti AND used > 0;"
    "  RETURN true;"
    " END $$;";

/* The workers' statements (pgconn prepares them on every connection). */
enum { S_ADMIT, S_SETTLE, S_UNADMIT, S_UNUSE, S_REVOKE, S_SPEND };
static const struct pgconn_stmt stmts[] = {
    [S_ADMIT] = {"SELECT mg_admit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)", 13},
    [S_SETTLE] = {"SELECT mg_settle($1, $2, $3)", 3},
    [S_UNADMIT] = {"SELECT mg_unadmit($1, $2)", 2},
    [S_UNUSE] = {"UPDATE mg_jti SET used = used - 1 WHERE iss = $1 AND jti = $2 AND used > 0", 2},
    [S_REVOKE] = {"INSERT INTO mg_revocation(kind, value, node) VALUES ($1, $2, $3)"
                  " ON CONFLICT DO NOTHING",
                  3},
    [S_SPEND] = {"SELECT key, spent FROM mg_spend WHERE split_part(key, '|', 2) = $1"
                 " AND period_end > $2 ORDER BY key",
                 2},
};

struct pg_backend {
    struct backend b;
    char *dsn, *node;
    int64_t retain_s; /* a jti row is kept until exp + retain_s */
    void (*learned)(void *arg, enum revoke_kind kind, const char *value);
    void *arg;
    PGconn *ctl;         /* the control thread's */
    int64_t last_rev_id; /* the newest revocation applied */
    _Atomic bool ready;  /* the control connection is up: admissions may go */
    _Atomic bool stop;
    int wake[2]; /* a byte here stops the control thread */
    pthread_t thread;
};

/* An undo or settle that waits for the connection. */
struct retry {
    int stmt;
    char rid[33];
    const char *status;
};

struct pg_conn {
    struct backend_conn bc;
    struct pgconn *pool[PGSTATE_POOL];
    bool closing; /* being freed: answers that come now are not retried */
    struct retry retries[PGSTATE_RETRY_MAX];
    size_t nretries;
    struct event *retry_ev;
};

struct admit_call {
    struct pg_conn *c;
    struct admit *a;
    char rid[33];
    backend_done_fn done;
    void *arg;
};

/* --- blocking helpers (start-up and the control thread) ------------------------------------ */

static void on_notice(void *arg, const char *msg)
{
    (void)arg;
    log_debug("postgres notice: %.*s", (int)strcspn(msg, "\n"), msg);
}

/* A result that must have status want, else its error in *err. */
static PGresult *expect(PGconn *c, PGresult *r, ExecStatusType want, char **err)
{
    if (r && PQresultStatus(r) == want)
        return r;
    const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(c);
    *err = xasprintf("%.*s", (int)strcspn(m, "\n"), m);
    PQclear(r);
    return NULL;
}

static int exec_ok(PGconn *c, const char *sql, char **err)
{
    PGresult *r = expect(c, PQexec(c, sql), PGRES_COMMAND_OK, err);
    PQclear(r);
    return r ? 0 : -1;
}

static PGconn *connect_blocking(const struct pg_backend *pb, char **err)
{
    char app[96];
    snprintf(app, sizeof(app), "mandate-gateway %s", pb->node);
    /* The DSN comes last: what it sets wins over these defaults. */
    const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {"5", app, pb->dsn, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        const char *m = c ? PQerrorMessage(c) : "out of memory";
        *err = xasprintf("%.*s", (int)strcspn(m, "\n"), m);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, on_notice, NULL);
    return c;
}

/* Create or migrate the schema; nodes starting together queue on one advisory lock. */
static int migrate(PGconn *c, char **err)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%lld)", (long long)MIGRATE_LOCK);
    if (exec_ok(c, "BEGIN", err) != 0)
        return -1;
    PGresult *r = expect(c, PQexec(c, sql), PGRES_TUPLES_OK, err);
    PQclear(r);
    if (!r || exec_ok(c, "CREATE TABLE IF NOT EXISTS mg_schema_version(version integer NOT NULL)",
                      err) != 0)
        goto fail;
    r = expect(c, PQexec(c, "SELECT coalesce(max(version), 0) FROM mg_schema_version"),
               PGRES_TUPLES_OK, err);
    if (!r)
        goto fail;
    int version = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (version > SCHEMA_VERSION) {
        *err = xasprintf("the database's schema is version %d, newer than this gateway's (%d)",
                         version, SCHEMA_VERSION);
        goto fail;
    }
    if (version < 1 && (exec_ok(c, schema_v1, err) != 0 ||
                        exec_ok(c, "INSERT INTO mg_schema_version VALUES (1)", err) != 0))
        goto fail;
    if (version < SCHEMA_VERSION)
        log_info("state: PostgreSQL schema migrated from version %d to %d", version,
                 SCHEMA_VERSION);
    return exec_ok(c, "COMMIT", err);
fail:
    PQclear(PQexec(c, "ROLLBACK"));
    return -1;
}

/* Hold the node's name for this session: a second live node of that name cannot. */
static int lock_node(const struct pg_backend *pb, PGconn *c, char **err)
{
    const char *p[] = {pb->node};
    PGresult *r = expect(c,
                         PQexecParams(c,
                                      "SELECT pg_try_advisory_lock(hashtextextended("
                                      "'mandate-gateway node ' || $1, 0))",
                                      1, NULL, p, NULL, NULL, 0),
                         PGRES_TUPLES_OK, err);
    if (!r)
        return -1;
    bool got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!got)
        *err = xasprintf("node %s is already running (another gateway holds its name)", pb->node);
    return got ? 0 : -1;
}

static PGresult *exec_params(PGconn *c, const char *sql, int n, const char *const *p)
{
    return PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
}

/*
 * This node's reservations still marked reserved were left by its previous run. Its own log
 * says what happened: no allow entry, never forwarded (all given back); an outcome, settle as
 * it says; an allow without an outcome, forwarded with no known answer (unknown: still counts).
 */
static int recover_from(struct pg_backend *pb, PGconn *c, struct store *log, char **err)
{
    const char *p[] = {pb->node};
    PGresult *r = expect(c,
                         exec_params(c,
                                     "SELECT request_id FROM mg_reservation"
                                     " WHERE node = $1 AND status = 'reserved'",
                                     1, p),
                         PGRES_TUPLES_OK, err);
    if (!r)
        return -1;
    int released = 0, settled = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *rid = PQgetvalue(r, i, 0);
        int status, found = store_get_spend(log, rid, &status);
        if (found < 0) {
            *err = xasprintf("cannot read this node's log: %s", sqlite3_errmsg(store_db(log)));
            PQclear(r);
            return -1;
        }
        const char *sp[] = {pb->node, rid,
                            found == 1 || status == SPEND_RESERVED ? "unknown"
                                                                   : spend_status_name(status)};
        PGresult *q = found == 1 ? exec_params(c, "SELECT mg_unadmit($1, $2)", 2, sp)
                                 : exec_params(c, "SELECT mg_settle($1, $2, $3)", 3, sp);
        if (!(q = expect(c, q, PGRES_TUPLES_OK, err))) {
            PQclear(r);
            return -1;
        }
        PQclear(q);
        if (found == 1)
            released++;
        else
            settled++;
    }
    PQclear(r);
    if (released || settled)
        log_info("state: released %d reservations this node never forwarded, settled %d from "
                 "its log",
                 released, settled);
    return 0;
}

/* The same, from this node's log opened read-only beside the writer. */
static int recover(struct pg_backend *pb, PGconn *c, const char *db_path, char **err)
{
    struct store *log = store_open(db_path, STORE_READONLY, err);
    if (!log)
        return -1;
    int rc = recover_from(pb, c, log, err);
    store_close(log);
    return rc;
}

/* Apply every revocation newer than the last one applied. */
static int catch_up(struct pg_backend *pb, PGconn *c, char **err)
{
    char after[24];
    snprintf(after, sizeof(after), "%" PRId64, pb->last_rev_id);
    const char *p[] = {after};
    PGresult *r = expect(c,
                         exec_params(c,
                                     "SELECT id, kind, value FROM mg_revocation WHERE id > $1"
                                     " ORDER BY id",
                                     1, p),
                         PGRES_TUPLES_OK, err);
    if (!r)
        return -1;
    for (int i = 0; i < PQntuples(r); i++) {
        enum revoke_kind k;
        pb->last_rev_id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        if (revoke_kind_parse(PQgetvalue(r, i, 1), &k) == 0)
            pb->learned(pb->arg, k, PQgetvalue(r, i, 2));
    }
    PQclear(r);
    return 0;
}

/* Rows no admission can need any more; every node does it, each delete is harmless twice. */
static void prune(struct pg_backend *pb, PGconn *c)
{
    char before[24], ended[24];
    int64_t now_unix_s = now_s();
    snprintf(before, sizeof(before), "%" PRId64, now_unix_s - pb->retain_s);
    snprintf(ended, sizeof(ended), "%" PRId64, now_unix_s - 86400);
    const char *p1[] = {before}, *p2[] = {ended};
    PQclear(exec_params(c, "DELETE FROM mg_jti WHERE exp < $1", 1, p1));
    PQclear(exec_params(c, "DELETE FROM mg_cart WHERE exp < $1", 1, p1));
    PQclear(exec_params(c, "DELETE FROM mg_spend WHERE period_end < $1", 1, p2));
    PQclear(PQexec(c, "DELETE FROM mg_reservation WHERE status <> 'reserved'"
                      " AND created < now() - interval '7 days'"));
}

/* A control connection ready to listen: the node's name held, revocations caught up. */
static PGconn *control_connect(struct pg_backend *pb, char **err)
{
    PGconn *c = connect_blocking(pb, err);
    if (!c)
        return NULL;
    if (lock_node(pb, c, err) != 0 || exec_ok(c, "LISTEN mg_revocation", err) != 0 ||
        catch_up(pb, c, err) != 0) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* --- the control thread --------------------------------------------------------------------- */

/* Wait up to ms for the control socket (fd, or -1) or the stop byte; true when stopping. */
static bool wait_for(struct pg_backend *pb, int fd, int ms)
{
    struct pollfd pf[2] = {{pb->wake[0], POLLIN, 0}, {fd, POLLIN, 0}};
    poll(pf, fd >= 0 ? 2 : 1, ms);
    return atomic_load(&pb->stop);
}

/* Listen while the connection lasts; false when it broke. */
static bool serve(struct pg_backend *pb)
{
    int64_t next_prune_mono_us = mono_us() + PRUNE_EVERY_S * 1000000LL;
    char *err = NULL;
    while (!wait_for(pb, PQsocket(pb->ctl), POLL_MS)) {
        if (!PQconsumeInput(pb->ctl)) {
            err = xstrdup(PQerrorMessage(pb->ctl));
            break;
        }
        PGnotify *n;
        while ((n = PQnotifies(pb->ctl)))
            PQfreemem(n);
        /* Each wake-up (a notification or the poll interval) reads what is new: a notification
         * lost in a reconnect is still found, and a dead server is noticed within a second. */
        if (catch_up(pb, pb->ctl, &err) != 0)
            break;
        if (mono_us() > next_prune_mono_us) {
            prune(pb, pb->ctl);
            next_prune_mono_us = mono_us() + PRUNE_EVERY_S * 1000000LL;
        }
    }
    if (!err)
        return true; /* stopping */
    atomic_store(&pb->ready, false);
    log_warn("state: PostgreSQL unavailable: %.*s", (int)strcspn(err, "\n"), err);
    free(err);
    PQfinish(pb->ctl);
    pb->ctl = NULL;
    return false;
}

static void *control_main(void *arg)
{
    struct pg_backend *pb = arg;
    int backoff_ms = PGCONN_BACKOFF_MIN_MS;
    while (!atomic_load(&pb->stop)) {
        if (pb->ctl) {
            atomic_store(&pb->ready, true);
            backoff_ms = PGCONN_BACKOFF_MIN_MS;
            if (serve(pb))
                break;
            continue;
        }
        if (wait_for(pb, -1, backoff_ms))
            break;
        backoff_ms =
            backoff_ms * 2 > PGCONN_BACKOFF_MAX_MS ? PGCONN_BACKOFF_MAX_MS : backoff_ms * 2;
        char *err = NULL;
        if ((pb->ctl = control_connect(pb, &err)))
            log_info("state: PostgreSQL connection restored");
        else
            log_debug("state: reconnect: %s", err);
        free(err);
    }
    return NULL;
}

/* --- the workers' side ---------------------------------------------------------------------- */

static struct pg_backend *pgb(struct backend *b)
{
    return (struct pg_backend *)b;
}

/* The pool's connection with the fewest queries in flight (PostgreSQL commits the transactions of
 * different connections with shared WAL flushes; one connection's commit one after another). */
static struct pgconn *pick(struct pg_conn *c)
{
    struct pgconn *best = NULL;
    for (size_t i = 0; i < PGSTATE_POOL; i++)
        if (pgconn_up(c->pool[i]) && (!best || pgconn_pending(c->pool[i]) < pgconn_pending(best)))
            best = c->pool[i];
    return best ? best : c->pool[0];
}

static void queue_retry(struct pg_conn *c, int stmt, const char *rid, const char *status)
{
    if (c->nretries == PGSTATE_RETRY_MAX) {
        log_warn("state: too many settlements waiting for PostgreSQL: request %s stays "
                 "reserved until this node restarts",
                 rid);
        return;
    }
    struct retry *r = &c->retries[c->nretries++];
    r->stmt = stmt;
    snprintf(r->rid, sizeof(r->rid), "%s", rid);
    r->status = status;
}

size_t pgstate_waiting(const struct backend_conn *bc)
{
    return ((const struct pg_conn *)bc)->nretries;
}

struct settle_call {
    struct pg_conn *c;
    struct retry r;
};

/* Both are idempotent (they act on a reservation still marked reserved): one lost with its
 * connection is sent again. One PostgreSQL refuses would be refused again: logged, and left to
 * the restart's recovery. */
static void on_settled(void *arg, const PGresult *res)
{
    struct settle_call *call = arg;
    if (!res && !call->c->closing)
        queue_retry(call->c, call->r.stmt, call->r.rid, call->r.status);
    else if (res && PQresultStatus(res) != PGRES_TUPLES_OK)
        log_warn("state: settling request %s: %.*s", call->r.rid,
                 (int)strcspn(PQresultErrorMessage(res), "\n"), PQresultErrorMessage(res));
    free(call);
}

/* Send a settle or unadmit; queued for later when it cannot go now. */
static void send_settle(struct pg_conn *c, int stmt, const char *rid, const char *status)
{
    const char *p[] = {pgb(c->bc.b)->node, rid, status};
    struct settle_call *call = xcalloc(1, sizeof(*call));
    call->c = c;
    call->r.stmt = stmt;
    snprintf(call->r.rid, sizeof(call->r.rid), "%s", rid);
    call->r.status = status;
    if (pgconn_send(pick(c), stmt, p, on_settled, call) != 0) {
        free(call);
        queue_retry(c, stmt, rid, status);
    }
}

static void on_retry_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pg_conn *c = arg;
    if (!c->nretries || !pgconn_up(pick(c)))
        return;
    size_t n = c->nretries;
    struct retry *v = xcalloc(n, sizeof(*v));
    memcpy(v, c->retries, n * sizeof(*v));
    c->nretries = 0;
    for (size_t i = 0; i < n; i++)
        send_settle(c, v[i].stmt, v[i].rid, v[i].status);
    free(v);
}

static struct backend_conn *pg_conn_new(struct backend *b, struct event_base *base)
{
    struct pg_conn *c = xcalloc(1, sizeof(*c));
    char name[96];
    snprintf(name, sizeof(name), "mandate-gateway %s", pgb(b)->node);
    c->bc.b = b;
    for (size_t i = 0; i < PGSTATE_POOL; i++)
        c->pool[i] = pgconn_new(base, pgb(b)->dsn, stmts, ARRAY_LEN(stmts), name);
    c->retry_ev = event_new(base, -1, EV_PERSIST, on_retry_tick, c);
    event_add(c->retry_ev, &(struct timeval){1, 0});
    return &c->bc;
}

static void pg_conn_free(struct backend_conn *bc)
{
    struct pg_conn *c = (struct pg_conn *)bc;
    c->closing = true;
    for (size_t i = 0; i < PGSTATE_POOL; i++)
        pgconn_free(c->pool[i]); /* pending admissions get state_unavailable */
    if (c->nretries)
        log_warn("state: %zu settlements not sent before stopping: they are settled at the next "
                 "start",
                 c->nretries);
    event_free(c->retry_ev);
    free(c);
}

static void on_admitted(void *arg, const PGresult *res)
{
    struct admit_call *call = arg;
    struct admit *a = call->a;
    enum code code = CODE_STATE_UNAVAILABLE;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        a->used = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        code = a->used > 0 ? CODE_OK : CODE_MANDATE_USED;
    } else if (res && strcmp(pgconn_sqlstate(res), "MG002") == 0) {
        code = CODE_CART_USED;
    } else if (res && strcmp(pgconn_sqlstate(res), "MG003") == 0) {
        code = CODE_SPEND_CAP_EXCEEDED;
    } else if (res) {
        log_warn("state: admission of request %s: %.*s", call->rid,
                 (int)strcspn(PQresultErrorMessage(res), "\n"), PQresultErrorMessage(res));
    } else if (a->cart && !call->c->closing) {
        /* The connection broke: the payment may have been admitted. Nothing is forwarded, so
         * give it back once the connection returns (a no-op if it never was). */
        queue_retry(call->c, S_UNADMIT, call->rid, NULL);
    }
    call->done(call->arg, code);
    free(call);
}

static void pg_admit(struct backend_conn *bc, struct admit *a, const char *request_id,
                     int64_t now_mono_us, int64_t now_unix_s, backend_done_fn done, void *arg)
{
    struct pg_conn *c = (struct pg_conn *)bc;
    struct pg_backend *pb = pgb(bc->b);
    enum code code = state_admit(bc->b->st, a, now_mono_us, now_unix_s); /* revoked, rate */
    if (code == CODE_OK && !atomic_load(&pb->ready))
        code = CODE_STATE_UNAVAILABLE;
    if (code != CODE_OK) {
        done(arg, code);
        return;
    }
    const struct mandate *m = a->m, *cart = a->cart;
    char exp[24], uses[24], cexp[24], amount[24], cap[24], end[24];
    snprintf(exp, sizeof(exp), "%" PRId64, m->exp);
    snprintf(uses, sizeof(uses), "%" PRId64, m->uses);
    snprintf(cexp, sizeof(cexp), "%" PRId64, cart ? cart->exp : 0);
    snprintf(amount, sizeof(amount), "%" PRId64, a->amount);
    snprintf(cap, sizeof(cap), "%" PRId64, a->cap);
    int64_t period_end = cart ? cap_key_end(a->spend_key) : 0;
    snprintf(end, sizeof(end), "%" PRId64, period_end);
    const char *p[] = {pb->node,
                       request_id,
                       m->iss,
                       m->jti,
                       exp,
                       uses,
                       cart ? cart->iss : NULL,
                       cart ? cart->jti : NULL,
                       cart ? cexp : NULL,
                       cart ? a->spend_key : NULL,
                       amount,
                       cap,
                       end};
    struct admit_call *call = xcalloc(1, sizeof(*call));
    call->c = c;
    call->a = a;
    snprintf(call->rid, sizeof(call->rid), "%s", request_id);
    call->done = done;
    call->arg = arg;
    if (pgconn_send(pick(c), S_ADMIT, p, on_admitted, call) != 0) {
        free(call);
        done(arg, CODE_STATE_UNAVAILABLE);
    }
}

static void on_unused(void *arg, const PGresult *res)
{
    (void)arg;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_warn("state: a use given back may stay spent: %s",
                 res ? pgconn_sqlstate(res) : "PostgreSQL unavailable");
}

static void pg_undo(struct backend_conn *bc, const struct admit *a, const char *request_id)
{
    struct pg_conn *c = (struct pg_conn *)bc;
    if (a->cart) {
        send_settle(c, S_UNADMIT, request_id, NULL);
        return;
    }
    /* An intent mandate's use has no reservation to make its undo idempotent: send it once,
     * and if it cannot go the use stays spent (fail closed). */
    const char *p[] = {a->m->iss, a->m->jti};
    if (pgconn_send(pick(c), S_UNUSE, p, on_unused, NULL) != 0)
        log_warn("state: request %s: a use of jti %s stays spent (PostgreSQL unavailable)",
                 request_id, a->m->jti);
}

static void pg_settle(struct backend_conn *bc, const struct admit *a, const char *request_id,
                      enum spend_status spend)
{
    if (a->cart && spend != SPEND_RESERVED)
        send_settle((struct pg_conn *)bc, S_SETTLE, request_id, spend_status_name(spend));
}

struct revoke_call {
    struct backend *b;
    enum revoke_kind kind;
    char *value;
    backend_done_fn done;
    void *arg;
};

static void on_revoked(void *arg, const PGresult *res)
{
    struct revoke_call *call = arg;
    enum code code = CODE_STATE_UNAVAILABLE;
    if (res && PQresultStatus(res) == PGRES_COMMAND_OK) {
        state_revoke(call->b->st, call->kind, call->value); /* here at once; others by NOTIFY */
        code = CODE_OK;
    } else if (res) {
        log_warn("state: revocation: %.*s", (int)strcspn(PQresultErrorMessage(res), "\n"),
                 PQresultErrorMessage(res));
    }
    call->done(call->arg, code);
    free(call->value);
    free(call);
}

static void pg_revoke(struct backend_conn *bc, enum revoke_kind kind, const char *value,
                      backend_done_fn done, void *arg)
{
    struct pg_conn *c = (struct pg_conn *)bc;
    struct revoke_call *call = xcalloc(1, sizeof(*call));
    *call = (struct revoke_call){bc->b, kind, xstrdup(value), done, arg};
    const char *p[] = {revoke_kind_name(kind), value, pgb(bc->b)->node};
    if (!atomic_load(&pgb(bc->b)->ready) ||
        pgconn_send(pick(c), S_REVOKE, p, on_revoked, call) != 0)
        on_revoked(call, NULL);
}

struct spend_call {
    backend_spend_fn done;
    void *arg;
};

static void on_spend(void *arg, const PGresult *res)
{
    struct spend_call *call = arg;
    json_t *rows = NULL;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK) {
        rows = json_array();
        for (int i = 0; i < PQntuples(res); i++)
            state_spend_row(rows, PQgetvalue(res, i, 0), strtoll(PQgetvalue(res, i, 1), NULL, 10));
    }
    call->done(call->arg, rows);
    json_decref(rows);
    free(call);
}

static void pg_spend(struct backend_conn *bc, const char *principal, int64_t now_unix_s,
                     backend_spend_fn done, void *arg)
{
    struct pg_conn *c = (struct pg_conn *)bc;
    char now[24];
    snprintf(now, sizeof(now), "%" PRId64, now_unix_s);
    const char *p[] = {principal, now};
    struct spend_call *call = xcalloc(1, sizeof(*call));
    *call = (struct spend_call){done, arg};
    if (pgconn_send(pick(c), S_SPEND, p, on_spend, call) != 0)
        on_spend(call, NULL);
}

static bool pg_ready(struct backend *b)
{
    return atomic_load(&pgb(b)->ready);
}

static void pg_free(struct backend *b)
{
    struct pg_backend *pb = pgb(b);
    atomic_store(&pb->stop, true);
    if (write(pb->wake[1], "x", 1) < 0)
        log_warn("state: cannot wake the control thread: %s", strerror(errno));
    pthread_join(pb->thread, NULL);
    PQfinish(pb->ctl);
    close(pb->wake[0]);
    close(pb->wake[1]);
    free(pb->dsn);
    free(pb->node);
    free(pb);
}

static const struct backend_ops pg_ops = {
    .name = "postgres",
    .conn_new = pg_conn_new,
    .conn_free = pg_conn_free,
    .admit = pg_admit,
    .undo = pg_undo,
    .settle = pg_settle,
    .revoke = pg_revoke,
    .spend = pg_spend,
    .ready = pg_ready,
    .free = pg_free,
};

struct backend *pgstate_new(struct state *st, const struct pgstate_opts *o, char **err)
{
    struct pg_backend *pb = xcalloc(1, sizeof(*pb));
    pb->b.ops = &pg_ops;
    pb->b.st = st;
    pb->dsn = xstrdup(o->dsn);
    pb->node = xstrdup(o->node);
    pb->retain_s = state_retain_s(st);
    pb->learned = o->learned;
    pb->arg = o->arg;
    PGconn *c = connect_blocking(pb, err);
    if (!c || migrate(c, err) != 0 || lock_node(pb, c, err) != 0 ||
        recover(pb, c, o->db_path, err) != 0 || exec_ok(c, "LISTEN mg_revocation", err) != 0 ||
        catch_up(pb, c, err) != 0) {
        PQfinish(c);
        free(pb->dsn);
        free(pb->node);
        free(pb);
        return NULL;
    }
    if (pipe(pb->wake) != 0)
        abort();
    state_set_node_only(st);
    pb->ctl = c;
    atomic_store(&pb->ready, true);
    if (pthread_create(&pb->thread, NULL, control_main, pb) != 0)
        abort();
    return &pb->b;
}
