/*
 * route: first-match routing over exact and prefix paths.
 */
#include "gateway/route.h"

#include <stdlib.h>
#include <string.h>

#include "gateway/mcp.h"

void route_add(struct route_table *t, const char *method, const char *path, const char *action,
               bool priced, const struct merchant *m)
{
    t->v = xrealloc(t->v, (t->n + 1) * sizeof(*t->v));
    struct route *r = &t->v[t->n++];
    size_t len = strlen(path);
    r->method = xstrdup(method);
    r->path = xstrdup(path);
    r->prefix_len = len >= 2 && strcmp(path + len - 2, "/*") == 0 ? len - 1 : 0;
    r->action = xstrdup(action);
    r->priced = priced;
    r->sign_cart = false;
    r->merchant = m;
    r->mcp = NULL;
}

static bool matches(const struct route *r, const char *path, size_t len)
{
    if (r->prefix_len)
        return len > r->prefix_len && memcmp(path, r->path, r->prefix_len) == 0;
    return len == strlen(r->path) && memcmp(path, r->path, len) == 0;
}

/* Does a (earlier) cover every path b matches? */
static bool covers(const struct route *a, const struct route *b)
{
    if (strcmp(a->method, b->method) != 0)
        return false;
    if (!b->prefix_len)
        return matches(a, b->path, strlen(b->path));
    /* b is a prefix route: a covers it only if a is a prefix route of a shorter or equal prefix. */
    return a->prefix_len && a->prefix_len <= b->prefix_len &&
           memcmp(a->path, b->path, a->prefix_len) == 0;
}

long route_unreachable(const struct route_table *t, size_t *by)
{
    for (size_t j = 0; j < t->n; j++)
        for (size_t i = 0; i < j; i++)
            if (covers(&t->v[i], &t->v[j])) {
                *by = i;
                return (long)j;
            }
    return -1;
}

const struct route *route_match(const struct route_table *t, const char *method, const char *path,
                                size_t path_len)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->v[i].method, method) == 0 && matches(&t->v[i], path, path_len))
            return &t->v[i];
    return NULL;
}

void route_clear(struct route_table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].method);
        free(t->v[i].path);
        free(t->v[i].action);
        mcp_free(t->v[i].mcp);
    }
    free(t->v);
    t->v = NULL;
    t->n = 0;
}
