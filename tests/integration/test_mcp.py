"""MCP routes (SPEC §8) through the real gateway: the JSON-RPC body is read before the checks,
open methods go through without a mandate or a decision entry, tools/call is decided with the
tool's action (the same decision core as any proxied request), and denials are JSON-RPC errors
carrying the request's id and SPEC §2.2's body."""
import json
import os
import re
import sqlite3

import pytest

from conftest import Gateway, binary, run, wait_for, write_json

MCP_ROUTE = {"method": "POST", "path": "/mcp",
             "mcp": {"tools": {"search_rooms": {"action": "search"},
                               "book_room": {"action": "book_room", "priced": True}}}}


def mcp_gateway(tmp_path, procs, merchant="stub"):
    g = Gateway(str(tmp_path), procs, merchant=merchant)
    g.conf["merchants"][0]["routes"].insert(0, MCP_ROUTE)
    write_json(g.config_path, g.conf)
    return g.start()


@pytest.fixture
def mg(tmp_path, procs):
    return mcp_gateway(tmp_path, procs)


def rpc(method, params=None, id=1):
    m = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        m["id"] = id
    if params is not None:
        m["params"] = params
    return m


def call(g, msg, token=None, headers=None, raw=None):
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    h.update(headers or {})
    body = raw if raw is not None else json.dumps(msg)
    return g.request("POST", "/mcp", token, headers=h, body=body)


def rpc_error(resp, status, rpc_code, code, id):
    st, h, js, _ = resp
    assert st == status, resp
    assert js["jsonrpc"] == "2.0" and js["id"] == id, js
    assert js["error"]["code"] == rpc_code, js
    assert js["error"]["message"]
    data = js["error"]["data"]
    assert data["error"] == code and data["message"]
    assert data["request_id"] == h["x-request-id"]
    return data


def entries(g):
    c = sqlite3.connect(os.path.join(g.d, "gateway.db"))
    try:
        rows = c.execute("SELECT entry FROM entries ORDER BY seq").fetchall()
    finally:
        c.close()
    return [json.loads(bytes(e) if not isinstance(e, str) else e) for (e,) in rows]


def decisions(g):
    return [e for e in entries(g) if e.get("kind") == "decision"]


def headers_of(rec):
    return {k.lower(): v for k, v in rec["headers"]}


def metrics(g):
    return g.admin("GET", "/metrics")[3].decode()


def test_open_methods_need_no_mandate_and_leave_no_decision(mg):
    for msg in (rpc("initialize", {"protocolVersion": "2025-06-18"}), rpc("tools/list"),
                rpc("ping"), rpc("notifications/initialized", id=None)):
        st, h, js, _ = call(mg, msg, headers={"Mcp-Method": msg["method"]})
        assert st == 200, (msg, js)
        assert "mandate-receipt" not in h and re.fullmatch(r"[0-9a-f]{24}", h["x-request-id"])
    got = mg.received()
    assert [json.loads(r["body"])["method"] for r in got] == [
        "initialize", "tools/list", "ping", "notifications/initialized"]
    for r in got:
        hs = headers_of(r)
        assert not [k for k in hs if k.startswith("mandate-")], hs
    mg.barrier()
    assert not [e for e in decisions(mg) if e.get("surface") == "mcp"]
    assert "mandate_mcp_open_total 4" in metrics(mg)


def test_tools_call_listed_tool_is_decided_with_its_action(mg):
    tok = mg.mint(action="search")
    msg = rpc("tools/call", {"name": "search_rooms", "arguments": {"city": "Paris"}}, id="a-1")
    body = json.dumps(msg)
    st, h, js, _ = call(mg, msg, tok, raw=body,
                        headers={"Mcp-Method": "tools/call", "Mcp-Name": "search_rooms",
                                 "Mandate-Spoof": "x"})
    assert st == 200, js
    assert re.fullmatch(r"\d+:[0-9a-f]{64}", h["mandate-receipt"])
    (rec,) = mg.received()
    assert rec["body"] == body  # unchanged
    hs = headers_of(rec)
    assert "authorization" not in hs and "mandate-spoof" not in hs
    assert hs["mandate-action"] == "search" and hs["mandate-agent"] == "agent-planner"
    assert hs["mandate-receipt"] == h["mandate-receipt"] and hs["mcp-name"] == "search_rooms"
    assert tok not in json.dumps(rec)
    es = [e for e in decisions(mg) if e.get("surface") == "mcp"]
    assert [(e["action"], e["decision"]) for e in es] == [("search", "allow")]
    assert es[0]["request_id"] == h["x-request-id"]
    # The mandate is used up: the same one again is denied, as a JSON-RPC error.
    rpc_error(call(mg, rpc("tools/call", {"name": "search_rooms"}, id=7), tok), 403, -32001,
              "mandate_used", 7)
    # A mandate for another action than the tool's.
    rpc_error(call(mg, rpc("tools/call", {"name": "search_rooms"}, id=8),
                   mg.mint(action="book_room")), 403, -32001, "mandate_wrong_action", 8)
    # No mandate at all: 401 with WWW-Authenticate.
    resp = call(mg, rpc("tools/call", {"name": "search_rooms"}, id=9))
    rpc_error(resp, 401, -32001, "mandate_missing", 9)
    assert resp[1]["www-authenticate"] == 'Mandate error="mandate_missing"'
    out = metrics(mg)
    assert 'mandate_decisions_by_surface_total{surface="mcp",decision="allow"} 1' in out
    assert 'mandate_decisions_by_surface_total{surface="mcp",decision="deny"} 3' in out
    mg.gw.stop()
    lines = [json.loads(l) for l in mg.gw.output().splitlines()
             if '"type":"access"' in l]
    mine = [l for l in lines if l["request_id"] == h["x-request-id"]]
    assert mine and mine[0]["surface"] == "mcp" and mine[0]["action"] == "search"


def test_unlisted_tool_and_other_methods_are_not_allowed(mg):
    tok = mg.mint(action="search")
    data = rpc_error(call(mg, rpc("tools/call", {"name": "delete_everything"}, id=42), tok),
                     403, -32001, "tool_not_allowed", 42)
    rpc_error(call(mg, rpc("resources/read", {"uri": "file:///etc/passwd"}, id="r"), tok),
              403, -32001, "tool_not_allowed", "r")
    assert mg.barrier() == []
    es = wait_for(lambda: [e for e in decisions(mg) if e.get("code") == "tool_not_allowed"]
                  if len([e for e in decisions(mg) if e.get("code") == "tool_not_allowed"]) == 2
                  else None, what="two tool_not_allowed entries")
    assert es[0]["request_id"] == data["request_id"] and es[0]["surface"] == "mcp"


def test_header_body_mismatch_is_400_32020(mg):
    tok = mg.mint(action="search")
    msg = rpc("tools/call", {"name": "search_rooms"}, id=3)
    rpc_error(call(mg, msg, tok, headers={"Mcp-Name": "book_room"}), 400, -32020,
              "bad_request", 3)
    rpc_error(call(mg, msg, tok, headers={"Mcp-Method": "tools/list"}), 400, -32020,
              "bad_request", 3)
    rpc_error(call(mg, rpc("tools/list", id=4), tok, headers={"Mcp-Method": "tools/call"}),
              400, -32020, "bad_request", 4)
    assert mg.barrier() == []
    # The mandate was not consumed by the refusals.
    assert call(mg, msg, tok, headers={"Mcp-Name": "search_rooms"})[0] == 200


def test_batches(mg):
    tok = mg.mint(action="search")
    batch = [rpc("tools/list", id=1), rpc("tools/call", {"name": "search_rooms"}, id=2)]
    rpc_error(call(mg, batch, tok), 400, -32600, "bad_request", None)
    rpc_error(call(mg, [], tok), 400, -32600, "bad_request", None)
    assert mg.barrier() == []
    ok = json.dumps([rpc("ping", id=1), rpc("notifications/initialized", id=None)])
    st, h, _, _ = call(mg, None, raw=ok)
    assert st == 200
    assert [r["body"] for r in mg.received() if r["path"] == "/mcp"] == [ok]


def test_unparsable_and_invalid_bodies(mg):
    tok = mg.mint(action="search")
    rpc_error(call(mg, None, tok, raw='{"jsonrpc": "2.0", "id": 5, "method": '), 400, -32700,
              "bad_request", None)
    rpc_error(call(mg, None, tok, raw='{"id": 1, "id": 2, "method": "ping", "jsonrpc": "2.0"}'),
              400, -32700, "bad_request", None)  # strict loader: duplicate member
    rpc_error(call(mg, {"id": 6, "method": "ping"}, tok), 400, -32600, "bad_request", 6)
    rpc_error(call(mg, rpc("tools/call", {}, id=7), tok), 400, -32600, "bad_request", 7)
    # An empty body, and one over max_body_bytes (Content-Length, then chunked).
    rpc_error(call(mg, None, tok, raw=""), 400, -32700, "bad_request", None)
    big = json.dumps(rpc("ping", {"pad": "x" * 5000}))
    resp = call(mg, None, tok, raw=big)
    rpc_error(resp, 413, -32001, "body_too_large", None)
    resp = mg.request("POST", "/mcp", tok, headers={"Content-Type": "application/json"},
                      body=iter([big[:3000].encode(), big[3000:].encode()]))
    rpc_error(resp, 413, -32001, "body_too_large", None)
    assert mg.barrier() == []


def test_priced_tool_with_payment_mandate_and_cart(mg):
    cart = mg.cart(total=18000)
    pay = mg.pay(cart)
    msg = rpc("tools/call", {"name": "book_room", "arguments": {"sku": "deluxe"}}, id=11)
    # An intent mandate on the priced tool: 402.
    rpc_error(call(mg, msg, mg.mint(action="book_room")), 402, -32001, "payment_required", 11)
    st, h, js, _ = call(mg, msg, pay, headers={"Mandate-Cart": cart})
    assert st == 200, js
    (rec,) = [r for r in mg.received() if r["path"] == "/mcp"]
    hs = headers_of(rec)
    assert hs["mandate-amount"] == "18000 EUR" and hs["mandate-action"] == "book_room"
    assert "mandate-cart" not in hs and hs["mandate-cart-id"]
    assert cart not in hs.get("mandate-cart", "") and pay not in json.dumps(rec)
    rid = h["x-request-id"]
    es = wait_for(lambda: [e for e in entries(mg) if e.get("request_id") == rid
                           and e["kind"] == "outcome"], what="outcome entry")
    assert es[0]["spend"] == "committed"
    (d,) = [e for e in decisions(mg) if e["request_id"] == rid]
    assert d["surface"] == "mcp" and d["amount"] == {"value": 18000, "currency": "EUR"}
    # The cart is paid: again is cart_used, as a JSON-RPC error.
    rpc_error(call(mg, msg, mg.pay(cart), headers={"Mandate-Cart": cart}), 403, -32001,
              "cart_used", 11)


def test_the_audit_log_verifies(mg):
    call(mg, rpc("tools/call", {"name": "search_rooms"}, id=1), mg.mint(action="search"))
    call(mg, rpc("tools/call", {"name": "nope"}, id=2), mg.mint(action="search"))
    mg.barrier()
    wait_for(lambda: len([e for e in decisions(mg) if e.get("surface") == "mcp"]) == 2,
             what="two mcp entries")
    mg.gw.stop()
    r = run(binary("mandate-audit"), "verify", "--db", os.path.join(mg.d, "gateway.db"),
            "--checkpoint-key", os.path.join(mg.d, "checkpoint.pub.pem"),
            "--jwks", "wallet-1=" + os.path.join(mg.d, "wallet-1.jwks.json"),
            "--jwks", "lux-hotels=" + os.path.join(mg.d, "lux-hotels.jwks.json"), "--json")
    assert r.returncode == 0, r.stdout + r.stderr


def test_config_errors(tmp_path, procs):
    g = Gateway(str(tmp_path), procs)
    routes = g.conf["merchants"][0]["routes"]
    routes.insert(0, {"method": "POST", "path": "/mcp", "action": "search",
                      "mcp": {"tools": {"t": {"action": "search", "pricd": True}},
                              "open_methods": ["tools/call", "ping", "a*"]}})
    routes.insert(1, {"method": "GET", "path": "/mcp2", "mcp": {}})
    write_json(g.config_path, g.conf)
    r = run(binary("mandate-gateway"), "--check-config", "--config", g.config_path)
    assert r.returncode == 1
    out = r.stdout + r.stderr
    for want in ("merchants[0].routes[0].action", "merchants[0].routes[0].mcp.tools.t.pricd",
                 "merchants[0].routes[0].mcp.open_methods[0]",
                 "merchants[0].routes[0].mcp.open_methods[2]",
                 "merchants[0].routes[1].method", "merchants[0].routes[1].mcp.tools"):
        assert want in out, (want, out)
    routes[0] = MCP_ROUTE
    del routes[1]
    write_json(g.config_path, g.conf)
    r = run(binary("mandate-gateway"), "--check-config", "--config", g.config_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_demo_merchant_mcp_end_to_end(tmp_path, procs):
    g = mcp_gateway(tmp_path, procs, merchant="lux")
    st, _, js, _ = call(g, rpc("initialize", {"protocolVersion": "2025-06-18"}))
    assert st == 200 and js["result"]["serverInfo"]["name"] == "lux-hotels", js
    st, _, _, _ = call(g, rpc("notifications/initialized", id=None))
    assert st == 202
    st, _, js, _ = call(g, rpc("tools/list", id=2))
    assert st == 200
    assert sorted(t["name"] for t in js["result"]["tools"]) == ["book_room", "search_rooms"]
    st, h, js, _ = call(g, rpc("tools/call", {"name": "search_rooms"}, id=3),
                        g.mint(action="search"), headers={"Mcp-Name": "search_rooms"})
    assert st == 200 and js["id"] == 3, js
    assert "rooms" in json.loads(js["result"]["content"][0]["text"])
    # Quote over REST (the merchant signs the cart), pay and book over MCP.
    st, _, q, _ = g.request("POST", "/lux/quote", g.mint(action="quote_room"),
                            body=json.dumps({"sku": "deluxe", "nights": 1}))
    assert st == 201, q
    cart = q["cart"]
    msg = rpc("tools/call", {"name": "book_room", "arguments": {"sku": "deluxe"}}, id=4)
    # Without the gateway's Mandate-Amount (straight to the merchant) it refuses.
    st, _, js, _ = g.request("POST", "/mcp", body=json.dumps(msg), port=g.up_port)
    assert st == 403 and js["error"]["code"] == -32001
    st, h, js, _ = call(g, msg, g.pay(cart), headers={"Mandate-Cart": cart})
    assert st == 200, js
    booked = json.loads(js["result"]["content"][0]["text"])
    assert booked["amount"] == "18000 EUR" and booked["principal"] == "alice"
    assert g.bookings() == 1
    rpc_error(call(g, rpc("tools/call", {"name": "cancel_all"}, id=5), g.mint()), 403, -32001,
              "tool_not_allowed", 5)


def test_proof_of_possession_covers_the_held_body(mg):
    from test_pop import Agent
    agent = Agent()
    body = json.dumps(rpc("tools/call", {"name": "search_rooms", "arguments": {"n": 1}}, id=21))

    def signed(tok, send_body):
        hs = {"Authorization": "Mandate " + tok, "Content-Type": "application/json"}
        hs.update(agent.headers("POST", "127.0.0.1:%d" % mg.port, "/mcp", "", hs, body))
        return mg.request("POST", "/mcp", headers=hs, body=send_body)

    tok = mg.mint(action="search", cnf={"jwk": agent.jwk}, uses=5)
    st, _, js, _ = signed(tok, body)
    assert st == 200, js
    # The same signature's digest over another body (other arguments) does not match.
    other = body.replace('"n": 1', '"n": 2')
    assert other != body
    rpc_error(signed(tok, other), 401, -32001, "signature_invalid", 21)
    # Unsigned with a cnf mandate.
    rpc_error(call(mg, json.loads(body), tok), 401, -32001, "signature_missing", 21)
    assert [r["body"] for r in mg.barrier() if r["path"] == "/mcp"] == [body]


def test_keep_alive_after_a_json_rpc_denial(mg):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", mg.port, timeout=10)
    for i, name in enumerate(("nope", "search_rooms")):
        conn.request("POST", "/mcp", body=json.dumps(rpc("tools/call", {"name": name}, id=i)),
                     headers={"Authorization": "Mandate " + mg.mint(action="search"),
                              "Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        assert r.status == (403, 200)[i]
    conn.close()


def test_other_surfaces_cannot_decide_an_mcp_route(tmp_path, procs):
    from test_decision import decided, evaluate, with_decision
    g = Gateway(str(tmp_path), procs)
    g.conf["merchants"][0]["routes"].insert(0, MCP_ROUTE)
    with_decision(g)
    decided(evaluate(g, g.mint(action="search"), method="POST", path="/mcp", action="search"),
            "tool_not_allowed")
