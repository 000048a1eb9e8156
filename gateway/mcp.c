/*
 * mcp: JSON-RPC classification of MCP requests and the tool → action mapping.
 */
#include "gateway/mcp.h"

#include <stdlib.h>
#include <string.h>

#include "core/sjson.h"

struct mcp *mcp_new(void)
{
    return xcalloc(1, sizeof(struct mcp));
}

void mcp_add_open(struct mcp *m, const char *method)
{
    m->open = xrealloc(m->open, (m->n_open + 1) * sizeof(*m->open));
    m->open[m->n_open++] = xstrdup(method);
}

void mcp_default_open(struct mcp *m)
{
    static const char *const def[] = {"initialize", "ping", "tools/list", "notifications/*"};
    for (size_t i = 0; i < ARRAY_LEN(def); i++)
        mcp_add_open(m, def[i]);
}

void mcp_add_tool(struct mcp *m, const char *name, const char *action, bool priced,
                  const struct route *route)
{
    m->tools = xrealloc(m->tools, (m->n_tools + 1) * sizeof(*m->tools));
    struct mcp_tool *t = &m->tools[m->n_tools++];
    memset(t, 0, sizeof(*t));
    t->name = xstrdup(name);
    t->route.method = xstrdup(route->method);
    t->route.path = xstrdup(route->path);
    t->route.prefix_len = route->prefix_len;
    t->route.action = xstrdup(action);
    t->route.priced = priced;
    t->route.merchant = route->merchant;
}

void mcp_free(struct mcp *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_tools; i++) {
        free(m->tools[i].name);
        free(m->tools[i].route.method);
        free(m->tools[i].route.path);
        free(m->tools[i].route.action);
    }
    for (size_t i = 0; i < m->n_open; i++)
        free(m->open[i]);
    free(m->tools);
    free(m->open);
    free(m);
}

const struct mcp_tool *mcp_tool(const struct mcp *m, const char *name)
{
    for (size_t i = 0; name && i < m->n_tools; i++)
        if (strcmp(m->tools[i].name, name) == 0)
            return &m->tools[i];
    return NULL;
}

bool mcp_is_open(const struct mcp *m, const char *method)
{
    if (!method)
        return false;
    for (size_t i = 0; i < m->n_open; i++) {
        const char *o = m->open[i];
        size_t n = strlen(o);
        if (n >= 2 && strcmp(o + n - 2, "/*") == 0) {
            if (strncmp(method, o, n - 1) == 0)
                return true;
        } else if (strcmp(method, o) == 0) {
            return true;
        }
    }
    return false;
}

bool mcp_priced(const struct mcp *m)
{
    for (size_t i = 0; m && i < m->n_tools; i++)
        if (m->tools[i].route.priced)
            return true;
    return false;
}

static void deny(struct mcp_call *out, enum code code, int rpc_code)
{
    out->verdict = MCP_DENY;
    out->code = code;
    out->rpc_code = rpc_code;
}

/* A JSON-RPC 2.0 request object's method, or NULL when it is not one. */
static const char *rpc_method(const json_t *o)
{
    if (!json_is_object(o))
        return NULL;
    const char *v = sjson_str(o, "jsonrpc");
    if (!v || strcmp(v, "2.0") != 0)
        return NULL;
    return sjson_str(o, "method");
}

void mcp_classify(const struct mcp *m, const char *body, size_t len, const char *hdr_method,
                  const char *hdr_name, struct mcp_call *out)
{
    memset(out, 0, sizeof(*out));
    char *err = NULL;
    json_t *root = sjson_parse(body, len, &err);
    free(err);
    if (!root) {
        out->id = xstrdup("null");
        deny(out, CODE_BAD_REQUEST, MCP_ERR_PARSE);
        return;
    }
    if (json_is_array(root)) {
        out->id = xstrdup("null");
        size_t i, n = json_array_size(root);
        json_t *el;
        bool all_open = n > 0;
        json_array_foreach(root, i, el)
        {
            if (!mcp_is_open(m, rpc_method(el)))
                all_open = false;
        }
        if (all_open)
            out->verdict = MCP_OPEN;
        else
            deny(out, CODE_BAD_REQUEST, MCP_ERR_INVALID);
        json_decref(root);
        return;
    }
    json_t *id = json_is_object(root) ? json_object_get(root, "id") : NULL;
    out->id = id && (json_is_string(id) || json_is_integer(id) || json_is_real(id))
                  ? sjson_dump(id)
                  : xstrdup("null");
    const char *method = rpc_method(root);
    if (!method) {
        deny(out, CODE_BAD_REQUEST, MCP_ERR_INVALID);
        json_decref(root);
        return;
    }
    snprintf(out->method, sizeof(out->method), "%s", method);
    if (hdr_method && strcmp(hdr_method, method) != 0) {
        deny(out, CODE_BAD_REQUEST, MCP_ERR_HEADER);
    } else if (strcmp(method, "tools/call") == 0) {
        json_t *params = json_object_get(root, "params");
        const char *name = json_is_object(params) ? sjson_str(params, "name") : NULL;
        if (!name)
            deny(out, CODE_BAD_REQUEST, MCP_ERR_INVALID);
        else if (hdr_name && strcmp(hdr_name, name) != 0)
            deny(out, CODE_BAD_REQUEST, MCP_ERR_HEADER);
        else if (!(out->tool = mcp_tool(m, name)))
            deny(out, CODE_TOOL_NOT_ALLOWED, MCP_ERR_DENIED);
        else
            out->verdict = MCP_TOOL;
    } else if (mcp_is_open(m, method)) {
        out->verdict = MCP_OPEN;
    } else {
        deny(out, CODE_TOOL_NOT_ALLOWED, MCP_ERR_DENIED);
    }
    json_decref(root);
}

char *mcp_error_body(const char *id, int rpc_code, enum code code, const char *request_id)
{
    json_t *data = json_pack("{ss ss ss}", "error", code_name(code), "message", code_message(code),
                             "request_id", request_id);
    const char *msg = rpc_code == MCP_ERR_PARSE     ? "the body is not JSON"
                      : rpc_code == MCP_ERR_INVALID ? "not an acceptable JSON-RPC request"
                      : rpc_code == MCP_ERR_HEADER
                          ? "the Mcp-Method or Mcp-Name header differs from the body"
                          : code_message(code);
    json_t *err = json_pack("{si ss so}", "code", rpc_code, "message", msg, "data", data);
    json_error_t je;
    json_t *idv = json_loads(id, JSON_DECODE_ANY, &je);
    json_t *o =
        json_pack("{ss so so}", "jsonrpc", "2.0", "id", idv ? idv : json_null(), "error", err);
    char *s = sjson_dump(o);
    json_decref(o);
    return s;
}
