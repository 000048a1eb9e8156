/* Unit tests for gateway/mcp: open methods (exact and "/ *" prefix), the tool → action mapping,
 * JSON-RPC classification (single, batch, header checks, ids) and the error body. */
#include "testkit.h"

#include "gateway/mcp.h"

static struct mcp *make(struct route *rt)
{
    memset(rt, 0, sizeof(*rt));
    rt->method = "POST";
    rt->path = "/mcp";
    struct mcp *m = mcp_new();
    mcp_default_open(m);
    mcp_add_tool(m, "search_rooms", "search", false, rt);
    mcp_add_tool(m, "book_room", "book_room", true, rt);
    return m;
}

static void classify(const struct mcp *m, const char *body, const char *hm, const char *hn,
                     struct mcp_call *out)
{
    mcp_classify(m, body, strlen(body), hm, hn, out);
}

static void test_open_and_tools(void **state)
{
    (void)state;
    struct route rt;
    struct mcp *m = make(&rt);
    assert_true(mcp_is_open(m, "initialize"));
    assert_true(mcp_is_open(m, "notifications/initialized"));
    assert_false(mcp_is_open(m, "notifications"));
    assert_false(mcp_is_open(m, "tools/call"));
    assert_false(mcp_is_open(m, "initialized"));
    assert_false(mcp_is_open(m, NULL));
    const struct mcp_tool *t = mcp_tool(m, "book_room");
    assert_non_null(t);
    assert_string_equal(t->route.action, "book_room");
    assert_true(t->route.priced);
    assert_string_equal(t->route.path, "/mcp");
    assert_false(mcp_tool(m, "search_rooms")->route.priced);
    assert_null(mcp_tool(m, "nope"));
    assert_true(mcp_priced(m));
    assert_false(mcp_priced(NULL));
    mcp_free(m);
}

static void test_classify(void **state)
{
    (void)state;
    struct route rt;
    struct mcp *m = make(&rt);
    struct mcp_call c;
    classify(m, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}", "tools/list", NULL, &c);
    assert_int_equal(c.verdict, MCP_OPEN);
    assert_string_equal(c.id, "1");
    free(c.id);
    classify(m,
             "{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"tools/call\",\"params\":{\"name\":"
             "\"book_room\"}}",
             "tools/call", "book_room", &c);
    assert_int_equal(c.verdict, MCP_TOOL);
    assert_string_equal(c.tool->name, "book_room");
    assert_string_equal(c.id, "\"x\"");
    free(c.id);
    /* Mcp-Name differs from params.name; Mcp-Method from method. */
    classify(m,
             "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":"
             "\"book_room\"}}",
             NULL, "search_rooms", &c);
    assert_int_equal(c.verdict, MCP_DENY);
    assert_int_equal(c.rpc_code, MCP_ERR_HEADER);
    assert_int_equal(c.code, CODE_BAD_REQUEST);
    free(c.id);
    classify(m, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}", "tools/list", NULL, &c);
    assert_int_equal(c.rpc_code, MCP_ERR_HEADER);
    free(c.id);
    /* Unlisted tool, other method: tool_not_allowed. */
    classify(m,
             "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":"
             "\"rm\"}}",
             NULL, NULL, &c);
    assert_int_equal(c.code, CODE_TOOL_NOT_ALLOWED);
    assert_int_equal(c.rpc_code, MCP_ERR_DENIED);
    free(c.id);
    classify(m, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"resources/read\"}", NULL, NULL, &c);
    assert_int_equal(c.code, CODE_TOOL_NOT_ALLOWED);
    free(c.id);
    /* Not JSON, duplicate members, not JSON-RPC. */
    classify(m, "{\"jsonrpc\":", NULL, NULL, &c);
    assert_int_equal(c.rpc_code, MCP_ERR_PARSE);
    assert_string_equal(c.id, "null");
    free(c.id);
    classify(m, "{\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"method\":\"x\"}", NULL, NULL, &c);
    assert_int_equal(c.rpc_code, MCP_ERR_PARSE);
    free(c.id);
    classify(m, "{\"jsonrpc\":\"1.0\",\"id\":4,\"method\":\"ping\"}", NULL, NULL, &c);
    assert_int_equal(c.rpc_code, MCP_ERR_INVALID);
    assert_string_equal(c.id, "4");
    free(c.id);
    classify(m, "{\"jsonrpc\":\"2.0\",\"id\":{\"a\":1},\"method\":\"ping\"}", NULL, NULL, &c);
    assert_string_equal(c.id, "null"); /* an object is no valid id */
    free(c.id);
    /* Batches: all open, or refused. */
    classify(m,
             "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"},{\"jsonrpc\":\"2.0\","
             "\"method\":\"notifications/initialized\"}]",
             NULL, NULL, &c);
    assert_int_equal(c.verdict, MCP_OPEN);
    free(c.id);
    classify(m,
             "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"},{\"jsonrpc\":\"2.0\","
             "\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"search_rooms\"}}]",
             NULL, NULL, &c);
    assert_int_equal(c.verdict, MCP_DENY);
    assert_int_equal(c.rpc_code, MCP_ERR_INVALID);
    free(c.id);
    classify(m, "[]", NULL, NULL, &c);
    assert_int_equal(c.rpc_code, MCP_ERR_INVALID);
    free(c.id);
    mcp_free(m);
}

static void test_error_body(void **state)
{
    (void)state;
    char *s = mcp_error_body("\"q-1\"", MCP_ERR_DENIED, CODE_TOOL_NOT_ALLOWED, "abc");
    char *err = NULL;
    json_t *js = sjson_parse(s, strlen(s), &err);
    assert_non_null(js);
    assert_string_equal(sjson_str(js, "jsonrpc"), "2.0");
    assert_string_equal(sjson_str(js, "id"), "q-1");
    json_t *e = json_object_get(js, "error");
    assert_int_equal(json_integer_value(json_object_get(e, "code")), -32001);
    json_t *data = json_object_get(e, "data");
    assert_string_equal(sjson_str(data, "error"), "tool_not_allowed");
    assert_string_equal(sjson_str(data, "request_id"), "abc");
    json_decref(js);
    free(s);
    s = mcp_error_body("null", MCP_ERR_PARSE, CODE_BAD_REQUEST, "abc");
    js = sjson_parse(s, strlen(s), &err);
    assert_true(json_is_null(json_object_get(js, "id")));
    json_decref(js);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_and_tools),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_error_body),
    };
    return cmocka_run_group_tests_name("mcp", tests, NULL, NULL);
}
