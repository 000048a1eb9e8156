/*
 * route: the routing table of SPEC §2.1 step 1, compiled once at load. A request's method and
 * path (query excluded) select the first matching route; a configured path ending in "/ *" (slash,
 * star) is a prefix. Unreachable routes (shadowed by an earlier one) are refused at load time.
 */
#ifndef GATEWAY_ROUTE_H
#define GATEWAY_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/util.h"

struct merchant;
struct mcp;

struct route {
    char *method;
    char *path;        /* as configured */
    size_t prefix_len; /* "/x/" + star: strlen("/x/"); 0 for exact */
    char *action;
    bool priced;
    bool sign_cart;                  /* the gateway signs the cart of a 2xx answer (cart_key) */
    const struct merchant *merchant; /* borrowed from the configuration */
    struct mcp *mcp; /* an MCP route's tools and open methods (SPEC §8), owned; or NULL */
};

struct route_table {
    struct route *v;
    size_t n;
};

/** Append a route (strings copied). */
void route_add(struct route_table *t, const char *method, const char *path, const char *action,
               bool priced, const struct merchant *m);
/**
 * Check the table for routes that can never match because an earlier one covers them. Returns
 * the index of the first unreachable route and writes the index of the one that shadows it to
 * *by, or -1 when every route is reachable.
 */
long route_unreachable(const struct route_table *t, size_t *by);
/** The first route for method and path (path without query), or NULL. */
const struct route *route_match(const struct route_table *t, const char *method, const char *path,
                                size_t path_len);
/** Free the table's routes (the table is embedded). */
void route_clear(struct route_table *t);

#endif
