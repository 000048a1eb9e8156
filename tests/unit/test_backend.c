/*
 * The state backend contract (gateway/backend.h), one suite run against both implementations:
 * local, and postgres on the throwaway server tests/run.sh starts (MG_TEST_PG_DSN; without it
 * the postgres group is skipped). Each test uses fresh jtis, principals and cart ids, so the
 * postgres runs can share one database.
 */
#include "testkit.h"

#include <stdlib.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <libpq-fe.h>

#include "audit/store.h"
#include "gateway/backend.h"
#include "gateway/pgconn.h"
#include "gateway/pgstate.h"

struct fixture {
    struct event_base *base;
    struct state *st;
    struct backend *b;
    struct backend_conn *bc;
    char db[64];
    int learned;
};

static unsigned serial;

/* A name unique to this run and call: the postgres database outlives a test. */
static void unique(char *out, size_t n, const char *what)
{
    snprintf(out, n, "%s-%d-%u", what, (int)getpid(), ++serial);
}

static struct mandate mk(const char *sub, int64_t uses)
{
    struct mandate m;
    memset(&m, 0, sizeof(m));
    snprintf(m.iss, sizeof(m.iss), "wallet-1");
    snprintf(m.sub, sizeof(m.sub), "%s", sub);
    snprintf(m.agent, sizeof(m.agent), "agent-a");
    snprintf(m.kid, sizeof(m.kid), "w1");
    unique(m.jti, sizeof(m.jti), "jti");
    m.exp = now_s() + 60;
    m.uses = uses;
    return m;
}

static struct mandate mk_cart(void)
{
    struct mandate c = mk("alice", 1);
    snprintf(c.iss, sizeof(c.iss), "lux-hotels");
    return c;
}

static void on_learned(void *arg, enum revoke_kind kind, const char *value)
{
    struct fixture *f = arg;
    state_revoke(f->st, kind, value);
    f->learned++;
}

static int setup(void **state, bool pg)
{
    const char *dsn = getenv("MG_TEST_PG_DSN");
    if (pg && !dsn)
        return -1;
    struct fixture *f = xcalloc(1, sizeof(*f));
    f->base = event_base_new();
    f->st = state_new(1000, 1000, 5);
    if (pg) {
        snprintf(f->db, sizeof(f->db), "/tmp/test_backend.%d.db", (int)getpid());
        char *err = NULL;
        struct store *log = store_open(f->db, STORE_CREATE, &err); /* recovery reads it */
        assert_non_null(log);
        store_close(log);
        char node[32];
        unique(node, sizeof(node), "node");
        f->b = pgstate_new(
            f->st,
            &(struct pgstate_opts){
                .dsn = dsn, .node = node, .db_path = f->db, .learned = on_learned, .arg = f},
            &err);
        if (!f->b)
            fail_msg("pgstate_new: %s", err);
    } else {
        f->b = backend_local_new(f->st);
    }
    f->bc = backend_conn_new(f->b, f->base);
    *state = f;
    return 0;
}

static int setup_local(void **state)
{
    return setup(state, false);
}

static int setup_pg(void **state)
{
    if (!getenv("MG_TEST_PG_DSN")) {
        *state = NULL;
        return 0;
    }
    return setup(state, true);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (!f)
        return 0;
    backend_conn_free(f->bc);
    backend_free(f->b);
    state_free(f->st);
    event_base_free(f->base);
    if (f->db[0]) {
        unlink(f->db);
        char side[80];
        snprintf(side, sizeof(side), "%s-wal", f->db);
        unlink(side);
        snprintf(side, sizeof(side), "%s-shm", f->db);
        unlink(side);
    }
    free(f);
    return 0;
}

#define SKIP_WITHOUT_PG(f)                                                                         \
    do {                                                                                           \
        if (!(f))                                                                                  \
            skip();                                                                                \
    } while (0)

struct answer {
    bool got;
    enum code code;
};

static void on_done(void *arg, enum code code)
{
    struct answer *ans = arg;
    ans->got = true;
    ans->code = code;
}

/* Run the loop until the answer comes (bounded: 10 s). */
static enum code wait_answer(struct fixture *f, struct answer *ans)
{
    int64_t deadline_mono_us = mono_us() + 10 * 1000000LL;
    while (!ans->got && mono_us() < deadline_mono_us)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_true(ans->got);
    return ans->code;
}

static enum code admit(struct fixture *f, struct admit *a, const char *rid)
{
    struct answer ans = {0};
    backend_admit(f->bc, a, rid, mono_us(), now_s(), on_done, &ans);
    return wait_answer(f, &ans);
}

/*
 * An admission that becomes possible once a settlement or undo sent just before it took effect:
 * those are sent, not awaited (backend.h), and may go on another connection of the pool. Tried
 * again (a new request id each time) until it passes, for at most 5 s.
 */
static enum code admit_soon(struct fixture *f, struct admit *a)
{
    int64_t deadline_mono_us = mono_us() + 5 * 1000000LL;
    enum code code;
    do {
        char rid[32];
        unique(rid, sizeof(rid), "rid");
        code = admit(f, a, rid);
    } while (code != CODE_OK && mono_us() < deadline_mono_us);
    return code;
}

/* A payment of amount for m against a cap of cap per day, with a new cart unless one is given. */
static struct admit pay(const struct mandate *m, const struct mandate *cart, int64_t amount,
                        int64_t cap)
{
    struct admit a = {.m = m, .cart = cart, .amount = amount, .cap = cap};
    struct money c = {.value = cap};
    snprintf(c.currency, sizeof(c.currency), "EUR");
    cap_key(m->iss, m->sub, &c, CAP_DAY, now_s(), a.spend_key);
    return a;
}

static void test_uses(void **state)
{
    struct fixture *f = *state;
    SKIP_WITHOUT_PG(f);
    struct mandate m = mk("alice", 3);
    struct admit a = {.m = &m};
    char rid[32];
    for (int i = 1; i <= 3; i++) {
        unique(rid, sizeof(rid), "rid");
        assert_int_equal(admit(f, &a, rid), CODE_OK);
        assert_int_equal(a.used, i);
    }
    assert_int_equal(admit(f, &a, "rid-x"), CODE_MANDATE_USED);
}

static void test_cart_paid_once(void **state)
{
    struct fixture *f = *state;
    SKIP_WITHOUT_PG(f);
    char who[32];
    unique(who, sizeof(who), "principal");
    struct mandate p1 = mk(who, 1), p2 = mk(who, 1), cart = mk_cart();
    struct admit a1 = pay(&p1, &cart, 100, 10000), a2 = pay(&p2, &cart, 100, 10000);
    assert_int_equal(admit(f, &a1, "r1"), CODE_OK);
    assert_int_equal(admit(f, &a2, "r2"), CODE_CART_USED);
    /* The refused payment consumed nothing: its mandate is still good for another cart. */
    struct mandate cart2 = mk_cart();
    struct admit a3 = pay(&p2, &cart2, 100, 10000);
    char rid[32];
    unique(rid, sizeof(rid), "rid");
    assert_int_equal(admit(f, &a3, rid), CODE_OK);
}

struct spent {
    bool done;
    size_t rows;
    int64_t value;
};

static void on_spend(void *arg, json_t *rows)
{
    struct spent *s = arg;
    s->done = true;
    s->rows = rows ? json_array_size(rows) : 0;
    json_t *spent = s->rows ? json_object_get(json_array_get(rows, 0), "spent") : NULL;
    s->value = spent ? json_integer_value(json_object_get(spent, "value")) : -1;
}

static void test_cap_release_and_unknown(void **state)
{
    struct fixture *f = *state;
    SKIP_WITHOUT_PG(f);
    char who[32], rid[3][32];
    unique(who, sizeof(who), "principal");
    struct mandate m[4], c[4];
    struct admit a[4];
    for (int i = 0; i < 4; i++) {
        m[i] = mk(who, 1);
        c[i] = mk_cart();
        a[i] = pay(&m[i], &c[i], 4000, 10000);
    }
    for (int i = 0; i < 3; i++)
        unique(rid[i], sizeof(rid[i]), "rid");
    assert_int_equal(admit(f, &a[0], rid[0]), CODE_OK);
    assert_int_equal(admit(f, &a[1], rid[1]), CODE_OK);
    assert_int_equal(admit(f, &a[2], rid[2]), CODE_SPEND_CAP_EXCEEDED);
    /* unknown keeps counting; released gives the amount back (the cart stays paid). */
    backend_settle(f->bc, &a[0], rid[0], SPEND_UNKNOWN);
    backend_settle(f->bc, &a[1], rid[1], SPEND_RELEASED);
    char r3[32];
    unique(r3, sizeof(r3), "rid");
    assert_int_equal(admit_soon(f, &a[2]), CODE_OK);
    unique(r3, sizeof(r3), "rid");
    assert_int_equal(admit(f, &a[3], r3), CODE_SPEND_CAP_EXCEEDED);
    /* The admin API's view: 4000 unknown + 4000 reserved in today's period. */
    struct spent got = {0};
    backend_spend(f->bc, who, now_s(), on_spend, &got);
    int64_t deadline_mono_us = mono_us() + 10 * 1000000LL;
    while (!got.done && mono_us() < deadline_mono_us)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_true(got.done);
    assert_int_equal(got.rows, 1);
    assert_int_equal(got.value, 8000);
}

static void test_undo_gives_everything_back(void **state)
{
    struct fixture *f = *state;
    SKIP_WITHOUT_PG(f);
    char who[32], rid[32];
    unique(who, sizeof(who), "principal");
    unique(rid, sizeof(rid), "rid");
    struct mandate m = mk(who, 1), cart = mk_cart();
    struct admit a = pay(&m, &cart, 10000, 10000);
    assert_int_equal(admit(f, &a, rid), CODE_OK);
    backend_undo(f->bc, &a, rid);
    assert_int_equal(admit_soon(f, &a), CODE_OK); /* the use, the cart and the whole cap */
    struct mandate i = mk(who, 1);
    struct admit u = {.m = &i};
    unique(rid, sizeof(rid), "rid");
    assert_int_equal(admit(f, &u, rid), CODE_OK);
    backend_undo(f->bc, &u, rid);
    assert_int_equal(admit_soon(f, &u), CODE_OK);
}

static void test_revoke(void **state)
{
    struct fixture *f = *state;
    SKIP_WITHOUT_PG(f);
    char agent[32];
    unique(agent, sizeof(agent), "agent");
    struct mandate m = mk("alice", 5);
    snprintf(m.agent, sizeof(m.agent), "%s", agent);
    struct admit a = {.m = &m};
    assert_int_equal(admit(f, &a, "r"), CODE_OK);
    struct answer ans = {0};
    backend_revoke(f->bc, REVOKE_AGENT, agent, on_done, &ans);
    assert_int_equal(wait_answer(f, &ans), CODE_OK);
    assert_int_equal(admit(f, &a, "r2"), CODE_MANDATE_REVOKED);
    assert_true(backend_ready(f->b));
}

/* SQL on the test's database, one value back ("" when no row). */
static char *sql1(const char *q, const char *param)
{
    PGconn *c = PQconnectdb(getenv("MG_TEST_PG_DSN"));
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    const char *p[] = {param};
    PGresult *r = PQexecParams(c, q, param ? 1 : 0, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    char *v = xstrdup(PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    PQfinish(c);
    return v;
}

static void assert_status(const char *rid, const char *want)
{
    char *got = sql1("SELECT status FROM mg_reservation WHERE request_id = $1", rid);
    assert_string_equal(got, want);
    free(got);
}

/*
 * A node that stops with payments admitted in PostgreSQL finds them at its next start: the one
 * its log has no allow for was never forwarded (all of it given back: the cart can be paid
 * again), the one its log settled is settled the same way, the one allowed without an outcome
 * becomes unknown.
 */
static void test_restart_recovery(void **state)
{
    struct fixture *f = *state;
    SKIP_WITHOUT_PG(f);
    char who[32], rid[3][32];
    unique(who, sizeof(who), "principal");
    struct mandate m[3], c[3];
    struct admit a[3];
    for (int i = 0; i < 3; i++) {
        m[i] = mk(who, 1);
        c[i] = mk_cart();
        a[i] = pay(&m[i], &c[i], 1000, 10000);
        unique(rid[i], sizeof(rid[i]), "rid");
        assert_int_equal(admit(f, &a[i], rid[i]), CODE_OK);
    }
    /* The log: no allow for rid[0]; rid[1] allowed and released; rid[2] allowed, no outcome. */
    char *err = NULL;
    struct store *log = store_open(f->db, STORE_CREATE, &err);
    assert_non_null(log);
    assert_int_equal(store_put_spend(log, rid[1], a[1].spend_key, 1000, SPEND_RELEASED), 0);
    assert_int_equal(store_put_spend(log, rid[2], a[2].spend_key, 1000, SPEND_RESERVED), 0);
    store_close(log);
    /* Stop (the reservations stay reserved) and start again as the same node. */
    char *node = sql1("SELECT node FROM mg_reservation WHERE request_id = $1", rid[0]);
    backend_conn_free(f->bc);
    backend_free(f->b);
    f->b = pgstate_new(f->st,
                       &(struct pgstate_opts){.dsn = getenv("MG_TEST_PG_DSN"),
                                              .node = node,
                                              .db_path = f->db,
                                              .learned = on_learned,
                                              .arg = f},
                       &err);
    free(node);
    if (!f->b)
        fail_msg("pgstate_new: %s", err);
    f->bc = backend_conn_new(f->b, f->base);
    assert_status(rid[0], "released");
    assert_status(rid[1], "released");
    assert_status(rid[2], "unknown");
    char *spent = sql1("SELECT spent FROM mg_spend WHERE key = $1", a[0].spend_key);
    assert_string_equal(spent, "1000"); /* only the unknown one still counts */
    free(spent);
    /* rid[0]'s cart and its mandate's use came back; rid[1]'s cart was paid on a forward. */
    char r[32];
    unique(r, sizeof(r), "rid");
    assert_int_equal(admit(f, &a[0], r), CODE_OK);
    struct mandate again = mk(who, 1);
    struct admit b = pay(&again, &c[1], 1000, 10000);
    unique(r, sizeof(r), "rid");
    assert_int_equal(admit(f, &b, r), CODE_CART_USED);
}

static void on_row(void *arg, const PGresult *res)
{
    int *n = arg;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK)
        (*n)++;
}

/* A connection holds at most PGCONN_MAX_PENDING queries in flight; the next is refused at once
 * (its caller fails closed) and every accepted one is answered. */
static void test_pgconn_pending_bound(void **state)
{
    struct fixture *f = *state;
    SKIP_WITHOUT_PG(f);
    static const struct pgconn_stmt one[] = {{"SELECT $1::int", 1}};
    struct pgconn *pc = pgconn_new(f->base, getenv("MG_TEST_PG_DSN"), one, 1, "test");
    assert_true(pgconn_up(pc));
    int answered = 0;
    const char *p[] = {"7"};
    for (int i = 0; i < PGCONN_MAX_PENDING; i++)
        assert_int_equal(pgconn_send(pc, 0, p, on_row, &answered), 0);
    assert_int_equal(pgconn_send(pc, 0, p, on_row, &answered), -1);
    int64_t deadline_mono_us = mono_us() + 20 * 1000000LL;
    while (answered < PGCONN_MAX_PENDING && mono_us() < deadline_mono_us)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_int_equal(answered, PGCONN_MAX_PENDING);
    assert_int_equal(pgconn_send(pc, 0, p, on_row, &answered), 0); /* room again */
    pgconn_free(pc);
}

/* Settlements that cannot go wait for the connection, at most PGSTATE_RETRY_MAX of them, and
 * are sent once it is back. */
static void test_settlements_wait_bounded(void **state)
{
    struct fixture *f = *state;
    SKIP_WITHOUT_PG(f);
    char who[32], rid[32];
    unique(who, sizeof(who), "principal");
    struct mandate m = mk(who, 1), cart = mk_cart();
    struct admit a = pay(&m, &cart, 100, 1000000);
    unique(rid, sizeof(rid), "rid");
    assert_int_equal(admit(f, &a, rid), CODE_OK);
    /* Cut this node's connections from the server side and keep them out: the database refuses
     * connections until a connection to another database of the server lets them back in. */
    const char *keys[] = {"dbname", "dbname", NULL};
    const char *vals[] = {getenv("MG_TEST_PG_DSN"), "postgres", NULL};
    PGconn *held = PQconnectdbParams(keys, vals, 1);
    assert_int_equal(PQstatus(held), CONNECTION_OK);
    char *db = sql1("SELECT current_database()", NULL);
    char *node = sql1("SELECT node FROM mg_reservation WHERE request_id = $1", rid);
    char *q = xasprintf("ALTER DATABASE \"%s\" ALLOW_CONNECTIONS false;"
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = 'mandate-gateway %s'",
                        db, node);
    PGresult *r = PQexec(held, q);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    free(q);
    free(node);
    /* Settlements sent meanwhile wait, those on a connection not yet seen to fail included. */
    int64_t deadline_mono_us = mono_us() + 10 * 1000000LL;
    while (pgstate_waiting(f->bc) < PGSTATE_RETRY_MAX && mono_us() < deadline_mono_us) {
        backend_settle(f->bc, &a, rid, SPEND_COMMITTED);
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    }
    for (int i = 0; i < 10; i++)
        backend_settle(f->bc, &a, rid, SPEND_COMMITTED);
    assert_int_equal(pgstate_waiting(f->bc), PGSTATE_RETRY_MAX);
    struct answer ans = {0};
    struct admit probe = {.m = &m};
    backend_admit(f->bc, &probe, "probe", mono_us(), now_s(), on_done, &ans);
    assert_int_equal(wait_answer(f, &ans), CODE_STATE_UNAVAILABLE);
    q = xasprintf("ALTER DATABASE \"%s\" ALLOW_CONNECTIONS true", db);
    r = PQexec(held, q);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    free(q);
    free(db);
    PQfinish(held);
    /* Back: the waiting ones go (the first settles rid, the others find nothing to do). */
    deadline_mono_us = mono_us() + 15 * 1000000LL;
    while (pgstate_waiting(f->bc) && mono_us() < deadline_mono_us)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_int_equal(pgstate_waiting(f->bc), 0);
    deadline_mono_us = mono_us() + 15 * 1000000LL;
    char *st = NULL;
    do {
        free(st);
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        st = sql1("SELECT status FROM mg_reservation WHERE request_id = $1", rid);
    } while (strcmp(st, "committed") != 0 && mono_us() < deadline_mono_us);
    assert_string_equal(st, "committed");
    free(st);
}

#define BOTH(t)                                                                                    \
    cmocka_unit_test_setup_teardown(t, setup_local, teardown),                                     \
        cmocka_unit_test_setup_teardown(t, setup_pg, teardown)

int main(void)
{
    if (evthread_use_pthreads() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        BOTH(test_uses),
        BOTH(test_cart_paid_once),
        BOTH(test_cap_release_and_unknown),
        BOTH(test_undo_gives_everything_back),
        BOTH(test_revoke),
        cmocka_unit_test_setup_teardown(test_restart_recovery, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_pgconn_pending_bound, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_settlements_wait_bounded, setup_pg, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
