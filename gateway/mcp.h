/*
 * mcp: the MCP side of a route (SPEC §8): which tools map to which actions, which JSON-RPC
 * methods are open, and the classification of a request body (JSON-RPC 2.0, parsed with the
 * strict loader) into "open", "a listed tool" or a denial with its JSON-RPC error code. Pure
 * functions: proxy.c reads the body and acts on the answer.
 */
#ifndef GATEWAY_MCP_H
#define GATEWAY_MCP_H

#include <stdbool.h>
#include <stddef.h>

#include "core/code.h"
#include "gateway/route.h"

#define MCP_ERR_DENIED  (-32001) /* a denial (error.data is SPEC §2.2's body) */
#define MCP_ERR_HEADER  (-32020) /* Mcp-Method / Mcp-Name disagree with the body */
#define MCP_ERR_INVALID (-32600) /* not a valid JSON-RPC request (or a refused batch) */
#define MCP_ERR_PARSE   (-32700) /* the body is not JSON */

struct mcp_tool {
    char *name;
    struct route route; /* the MCP route with this tool's action and priced flag: the decision
                           runs on it as on any route */
};

struct mcp {
    struct mcp_tool *tools;
    size_t n_tools;
    char **open; /* open methods; a trailing "/ *" (slash, star) matches a prefix */
    size_t n_open;
};

/** A new empty description (the default open methods are added by mcp_default_open()). */
struct mcp *mcp_new(void);
/** Add the default open methods: initialize, ping, tools/list, notifications/ *. */
void mcp_default_open(struct mcp *m);
void mcp_add_open(struct mcp *m, const char *method);
/** Add a tool; its route copies route's method, path and merchant (strings copied). */
void mcp_add_tool(struct mcp *m, const char *name, const char *action, bool priced,
                  const struct route *route);
void mcp_free(struct mcp *m);
const struct mcp_tool *mcp_tool(const struct mcp *m, const char *name);
bool mcp_is_open(const struct mcp *m, const char *method);
/** Has m (NULL: no) a priced tool? */
bool mcp_priced(const struct mcp *m);

enum mcp_verdict { MCP_OPEN, MCP_TOOL, MCP_DENY };

struct mcp_call {
    enum mcp_verdict verdict;
    const struct mcp_tool *tool; /* MCP_TOOL */
    enum code code;              /* MCP_DENY: the §2.2 code */
    int rpc_code;                /* MCP_DENY: the JSON-RPC error code */
    char *id;                    /* the request's id as JSON ("null" when none); caller frees */
    char method[64];             /* the JSON-RPC method (a single request), for the log */
};

/**
 * Classify a JSON-RPC body. hdr_method and hdr_name are the Mcp-Method and Mcp-Name header
 * values, or NULL when absent.
 */
void mcp_classify(const struct mcp *m, const char *body, size_t len, const char *hdr_method,
                  const char *hdr_name, struct mcp_call *out);
/** The JSON-RPC error response body for a denial (caller frees). */
char *mcp_error_body(const char *id, int rpc_code, enum code code, const char *request_id);

#endif
