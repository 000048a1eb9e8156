/*
 * pgconn: see pgconn.h. States: down (waiting to retry), connecting (PQconnectPoll driven by the
 * socket), up (pipeline mode; every query, prepares included, is followed by a sync, and the
 * FIFO of pending callbacks follows the order of the syncs).
 */
#include "gateway/pgconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define CONNECT_TIMEOUT_MS 5000
#define TICK_MS            250

enum pc_state { PC_DOWN, PC_CONNECTING, PC_UP };

struct pending {
    pgconn_fn fn; /* NULL: one of our own prepares */
    void *arg;
    PGresult *res; /* the query's result, kept until its sync arrives */
};

struct pgconn {
    struct event_base *base;
    char *dsn, *name;
    const struct pgconn_stmt *stmts;
    size_t nstmts;
    PGconn *conn;
    enum pc_state st;
    int64_t since_us; /* mono_us() when connecting began */
    int backoff_ms;   /* the next retry's delay */
    bool broken;      /* the connection must be dropped (deferred to fail_ev) ... */
    char why[256];    /* ... for this reason */
    struct event *io_rd, *io_wr, *connect_ev;
    struct event *retry_ev, *tick_ev, *fail_ev;
    struct pending *q; /* ring of cap */
    size_t head, n, cap;
    bool logged_down;    /* one warning per outage, not one per retry */
    int64_t progress_us; /* mono_us() of the last answer, or of a send to an idle connection */
};

static void start_connect(struct pgconn *pc);

/* PostgreSQL's notices ("relation exists, skipping") are ours to log, never raw stderr. */
static void on_notice(void *arg, const char *msg)
{
    (void)arg;
    log_debug("postgres notice: %.*s", (int)strcspn(msg, "\n"), msg);
}

const char *pgconn_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

size_t pgconn_pending(const struct pgconn *pc)
{
    return pc->n;
}

bool pgconn_up(const struct pgconn *pc)
{
    return pc->st == PC_UP && !pc->broken;
}

static void free_events(struct pgconn *pc)
{
    struct event **evs[] = {&pc->io_rd, &pc->io_wr, &pc->connect_ev};
    for (size_t i = 0; i < ARRAY_LEN(evs); i++)
        if (*evs[i]) {
            event_free(*evs[i]);
            *evs[i] = NULL;
        }
}

/* Drop the connection: every pending callback gets NULL; retry after the backoff. */
static void fail(struct pgconn *pc, const char *why)
{
    if (!pc->logged_down)
        log_warn("%s: PostgreSQL unavailable: %.*s", pc->name, (int)strcspn(why, "\n"), why);
    pc->logged_down = true;
    free_events(pc);
    PQfinish(pc->conn);
    pc->conn = NULL;
    pc->st = PC_DOWN;
    pc->broken = false;
    while (pc->n) {
        struct pending p = pc->q[pc->head];
        pc->head = (pc->head + 1) % pc->cap;
        pc->n--;
        PQclear(p.res);
        if (p.fn)
            p.fn(p.arg, NULL);
    }
    struct timeval tv = {pc->backoff_ms / 1000, (pc->backoff_ms % 1000) * 1000};
    event_add(pc->retry_ev, &tv);
    pc->backoff_ms =
        pc->backoff_ms * 2 > PGCONN_BACKOFF_MAX_MS ? PGCONN_BACKOFF_MAX_MS : pc->backoff_ms * 2;
}

/* Drop it from the loop, not from inside a caller's send. */
static void break_later(struct pgconn *pc, const char *why)
{
    if (!pc->broken) {
        pc->broken = true;
        snprintf(pc->why, sizeof(pc->why), "%s", why); /* why may die with the result */
        event_active(pc->fail_ev, 0, 0);
    }
}

static void flush(struct pgconn *pc)
{
    int r = PQflush(pc->conn);
    if (r < 0)
        break_later(pc, PQerrorMessage(pc->conn));
    else if (r > 0)
        event_add(pc->io_wr, NULL);
}

static void push(struct pgconn *pc, pgconn_fn fn, void *arg)
{
    if (pc->n == 0)
        pc->progress_us = mono_us();
    pc->q[(pc->head + pc->n) % pc->cap] = (struct pending){fn, arg, NULL};
    pc->n++;
}

/* The head query's sync arrived: hand its result over. */
static void deliver(struct pgconn *pc)
{
    pc->progress_us = mono_us();
    struct pending p = pc->q[pc->head];
    pc->head = (pc->head + 1) % pc->cap;
    pc->n--;
    if (p.fn) {
        p.fn(p.arg, p.res);
    } else if (!p.res || PQresultStatus(p.res) != PGRES_COMMAND_OK) {
        break_later(pc, p.res ? PQresultErrorMessage(p.res) : "no answer to a prepare");
    }
    PQclear(p.res);
}

/* Take every complete result libpq has read. */
static void drain(struct pgconn *pc)
{
    while (pc->n && pc->conn && !pc->broken && !PQisBusy(pc->conn)) {
        PGresult *r = PQgetResult(pc->conn);
        if (!r)
            continue; /* the end of one query's results; its sync comes next */
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            deliver(pc);
        } else if (pc->q[pc->head].res) {
            PQclear(r); /* one result per statement is all we keep */
        } else {
            pc->q[pc->head].res = r;
        }
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pgconn *pc = arg;
    if (!PQconsumeInput(pc->conn)) {
        fail(pc, PQerrorMessage(pc->conn));
        return;
    }
    drain(pc);
    if (pc->conn && !pc->broken && PQstatus(pc->conn) == CONNECTION_BAD)
        fail(pc, PQerrorMessage(pc->conn));
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush(arg);
}

static void on_fail(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pgconn *pc = arg;
    if (pc->broken)
        fail(pc, pc->why);
}

/* Connected: pipeline mode, our statements prepared ahead of any query. */
static void connected(struct pgconn *pc)
{
    free_events(pc);
    evutil_socket_t fd = PQsocket(pc->conn);
    pc->io_rd = event_new(pc->base, fd, EV_READ | EV_PERSIST, on_read, pc);
    pc->io_wr = event_new(pc->base, fd, EV_WRITE, on_write, pc);
    event_add(pc->io_rd, NULL);
    if (!PQenterPipelineMode(pc->conn)) {
        fail(pc, PQerrorMessage(pc->conn));
        return;
    }
    for (size_t i = 0; i < pc->nstmts; i++) {
        char name[24];
        snprintf(name, sizeof(name), "s%zu", i);
        if (!PQsendPrepare(pc->conn, name, pc->stmts[i].sql, pc->stmts[i].nparams, NULL) ||
            !PQpipelineSync(pc->conn)) {
            fail(pc, PQerrorMessage(pc->conn));
            return;
        }
        push(pc, NULL, NULL);
    }
    pc->st = PC_UP;
    pc->backoff_ms = PGCONN_BACKOFF_MIN_MS;
    if (pc->logged_down)
        log_info("%s: PostgreSQL connection restored", pc->name);
    pc->logged_down = false;
    flush(pc);
}

static void on_connect_io(evutil_socket_t fd, short what, void *arg);

/* One step of PQconnectPoll, then wait for what it asks for. */
static void connect_step(struct pgconn *pc, PostgresPollingStatusType ps)
{
    if (ps == PGRES_POLLING_OK) {
        connected(pc);
        return;
    }
    if (ps == PGRES_POLLING_FAILED) {
        fail(pc, PQerrorMessage(pc->conn));
        return;
    }
    if (pc->connect_ev)
        event_free(pc->connect_ev);
    /* The socket can change between steps (another address, SSL retry): watch the current. */
    pc->connect_ev = event_new(pc->base, PQsocket(pc->conn),
                               ps == PGRES_POLLING_READING ? EV_READ : EV_WRITE, on_connect_io, pc);
    event_add(pc->connect_ev, NULL);
}

static void on_connect_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pgconn *pc = arg;
    connect_step(pc, PQconnectPoll(pc->conn));
}

/* libpq's parameters: these defaults, then the DSN (expanded), whose own settings win. */
#define CONNECT_PARAMS(pc)                                                                         \
    (const char *[]){"connect_timeout", "application_name", "dbname", NULL},                       \
        (const char *[]){"5", (pc)->name, (pc)->dsn, NULL}, 1

static void start_connect(struct pgconn *pc)
{
    pc->conn = PQconnectStartParams(CONNECT_PARAMS(pc));
    if (!pc->conn || PQstatus(pc->conn) == CONNECTION_BAD) {
        fail(pc, pc->conn ? PQerrorMessage(pc->conn) : "out of memory");
        return;
    }
    PQsetNoticeProcessor(pc->conn, on_notice, NULL);
    if (PQsetnonblocking(pc->conn, 1) != 0) {
        fail(pc, PQerrorMessage(pc->conn));
        return;
    }
    pc->st = PC_CONNECTING;
    pc->since_us = mono_us();
    connect_step(pc, PGRES_POLLING_WRITING); /* libpq: begin as if it had asked to write */
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_connect(arg);
}

/* A connect or an answer that takes too long means a dead peer nobody told us about. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pgconn *pc = arg;
    int64_t now_mono = mono_us();
    if (pc->st == PC_CONNECTING && now_mono - pc->since_us > CONNECT_TIMEOUT_MS * 1000LL)
        fail(pc, "connection timed out");
    else if (pc->st == PC_UP && pc->n &&
             now_mono - pc->progress_us > PGCONN_QUERY_TIMEOUT_MS * 1000LL)
        fail(pc, "no answer in time");
}

struct pgconn *pgconn_new(struct event_base *base, const char *dsn, const struct pgconn_stmt *stmts,
                          size_t nstmts, const char *name)
{
    struct pgconn *pc = xcalloc(1, sizeof(*pc));
    pc->base = base;
    pc->dsn = xstrdup(dsn);
    pc->name = xstrdup(name);
    pc->stmts = stmts;
    pc->nstmts = nstmts;
    pc->cap = PGCONN_MAX_PENDING + nstmts;
    pc->q = xcalloc(pc->cap, sizeof(*pc->q));
    pc->backoff_ms = PGCONN_BACKOFF_MIN_MS;
    pc->retry_ev = evtimer_new(base, on_retry, pc);
    pc->fail_ev = event_new(base, -1, 0, on_fail, pc);
    pc->tick_ev = event_new(base, -1, EV_PERSIST, on_tick, pc);
    event_add(pc->tick_ev, &(struct timeval){0, TICK_MS * 1000});
    /* The first connection is made before the loop serves anything, so that the first
     * requests find it up; later ones are made in the background. */
    pc->conn = PQconnectdbParams(CONNECT_PARAMS(pc));
    if (pc->conn && PQstatus(pc->conn) == CONNECTION_OK) {
        PQsetNoticeProcessor(pc->conn, on_notice, NULL);
        if (PQsetnonblocking(pc->conn, 1) == 0)
            connected(pc);
        else
            fail(pc, PQerrorMessage(pc->conn));
    } else {
        fail(pc, pc->conn ? PQerrorMessage(pc->conn) : "out of memory");
    }
    return pc;
}

void pgconn_free(struct pgconn *pc)
{
    if (!pc)
        return;
    pc->logged_down = true; /* closing on purpose: nothing to warn about */
    fail(pc, "closed");
    event_free(pc->retry_ev);
    event_free(pc->fail_ev);
    event_free(pc->tick_ev);
    free(pc->q);
    free(pc->dsn);
    free(pc->name);
    free(pc);
}

int pgconn_send(struct pgconn *pc, int stmt, const char *const *params, pgconn_fn fn, void *arg)
{
    if (!pgconn_up(pc) || pc->n >= pc->cap || stmt < 0 || (size_t)stmt >= pc->nstmts)
        return -1;
    char name[16];
    snprintf(name, sizeof(name), "s%d", stmt);
    if (!PQsendQueryPrepared(pc->conn, name, pc->stmts[stmt].nparams, params, NULL, NULL, 0) ||
        !PQpipelineSync(pc->conn)) {
        break_later(pc, PQerrorMessage(pc->conn));
        return -1;
    }
    push(pc, fn, arg);
    flush(pc);
    return 0;
}
