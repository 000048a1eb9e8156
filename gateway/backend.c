/*
 * backend: the local implementation, over the in-memory state. Durability is the audit writer's:
 * the consumed jti and the spend reservation are written in the decision's own transaction.
 */
#include "gateway/backend.h"

#include <stdlib.h>

#include "core/util.h"

static struct backend_conn *local_conn_new(struct backend *b, struct event_base *base)
{
    (void)base;
    struct backend_conn *bc = xcalloc(1, sizeof(*bc));
    bc->b = b;
    return bc;
}

static void local_conn_free(struct backend_conn *bc)
{
    free(bc);
}

static void local_admit(struct backend_conn *bc, struct admit *a, const char *request_id,
                        int64_t now_mono_us, int64_t now_unix_s, backend_done_fn done, void *arg)
{
    (void)request_id;
    done(arg, state_admit(bc->b->st, a, now_mono_us, now_unix_s));
}

static void local_undo(struct backend_conn *bc, const struct admit *a, const char *request_id)
{
    (void)request_id;
    state_undo(bc->b->st, a);
}

static void local_settle(struct backend_conn *bc, const struct admit *a, const char *request_id,
                         enum spend_status spend)
{
    (void)request_id;
    if (a->cart && spend == SPEND_RELEASED)
        state_release(bc->b->st, a->spend_key, a->amount);
}

static void local_revoke(struct backend_conn *bc, enum revoke_kind kind, const char *value,
                         backend_done_fn done, void *arg)
{
    state_revoke(bc->b->st, kind, value);
    done(arg, CODE_OK);
}

static void local_spend(struct backend_conn *bc, const char *principal, int64_t now_unix_s,
                        backend_spend_fn done, void *arg)
{
    json_t *rows = state_spend(bc->b->st, principal, now_unix_s);
    done(arg, rows);
    json_decref(rows);
}

static bool local_ready(struct backend *b)
{
    (void)b;
    return true;
}

static void local_free(struct backend *b)
{
    free(b);
}

static const struct backend_ops local_ops = {
    .name = "local",
    .conn_new = local_conn_new,
    .conn_free = local_conn_free,
    .admit = local_admit,
    .undo = local_undo,
    .settle = local_settle,
    .revoke = local_revoke,
    .spend = local_spend,
    .ready = local_ready,
    .free = local_free,
};

struct backend *backend_local_new(struct state *st)
{
    struct backend *b = xcalloc(1, sizeof(*b));
    b->ops = &local_ops;
    b->st = st;
    return b;
}
