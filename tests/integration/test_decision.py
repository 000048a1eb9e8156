"""The decision listener (SPEC §8) through the real gateway: OpenID AuthZEN evaluations and
forward-auth, on the same enforcement core as proxied requests (same codes, same consumption of
uses, carts and spend, same durable audit entry), and a real nginx (Debian's) in front of the
stub merchant with auth_request to our forward-auth endpoint."""
import http.client
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import (ADMIN_TOKEN, Proc, binary, free_port, run, sha256_hex, wait_for,
                      wait_port, write_json)
from test_pop import Agent

DECISION_TOKEN = "decision-token-for-tests"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def with_decision(g, **over):
    g.decision_port = free_port()
    g.conf["decision"] = {"listen": f"127.0.0.1:{g.decision_port}",
                          "token_sha256": sha256_hex(DECISION_TOKEN), **over}
    write_json(g.config_path, g.conf)
    g.start()
    wait_port(g.decision_port, g.gw.p)
    return g


@pytest.fixture
def dg(gateway):
    return with_decision(gateway)


def post(g, path, body, token=DECISION_TOKEN, raw=None, headers=None):
    h = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        h["Authorization"] = "Bearer " + token
    data = raw if raw is not None else json.dumps(body)
    return g.request("POST", path, headers=h, body=data, port=g.decision_port)


def evaluation(g, mandate, method="GET", path="/lux/search", action="search",
               agent="agent-planner", merchant="lux-hotels", cart=None):
    props = {"mandate": mandate}
    if cart:
        props["cart"] = cart
    return {"subject": {"type": "agent", "id": agent, "properties": props},
            "action": {"name": action},
            "resource": {"type": "route", "id": merchant,
                         "properties": {"method": method, "path": path}}}


def evaluate(g, mandate, **kw):
    st, h, js, _ = post(g, "/access/v1/evaluation", evaluation(g, mandate, **kw))
    assert st == 200, js
    assert h["x-request-id"] == js["context"]["request_id"]
    return js


def decided(js, code):
    assert js["decision"] is (code == "ok"), js
    assert js["context"]["code"] == code, js
    assert re.fullmatch(r"[0-9a-f]{24}", js["context"]["request_id"])
    if code == "ok":
        assert re.fullmatch(r"\d+:[0-9a-f]{64}", js["context"]["receipt"])
    else:
        assert "receipt" not in js["context"]


def entries(g):
    """The audit log's entries, parsed (the gateway may be running: SQLite reads a snapshot)."""
    c = sqlite3.connect(os.path.join(g.d, "gateway.db"))
    try:
        rows = c.execute("SELECT entry FROM entries ORDER BY seq").fetchall()
    finally:
        c.close()
    return [json.loads(bytes(e) if not isinstance(e, str) else e) for (e,) in rows]


def surfaced(g, surface, n):
    """The decision entries of surface, once there are n of them (denials are written without
    the answer waiting for them)."""
    return wait_for(lambda: (lambda es: es if len(es) >= n else None)(
        [e for e in entries(g) if e.get("surface") == surface]), what=f"{n} {surface} entries")


def verify(g):
    args = [binary("mandate-audit"), "verify", "--db", os.path.join(g.d, "gateway.db"),
            "--checkpoint-key", os.path.join(g.d, "checkpoint.pub.pem"),
            "--jwks", "wallet-1=" + os.path.join(g.d, "wallet-1.jwks.json"),
            "--jwks", "lux-hotels=" + os.path.join(g.d, "lux-hotels.jwks.json"), "--json"]
    r = run(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(binary("mandate-audit"), "replay", "--db", os.path.join(g.d, "gateway.db"),
            "--jwks", "wallet-1=" + os.path.join(g.d, "wallet-1.jwks.json"),
            "--jwks", "lux-hotels=" + os.path.join(g.d, "lux-hotels.jwks.json"))
    assert r.returncode == 0, r.stdout + r.stderr


# --- AuthZEN -------------------------------------------------------------------------------------

def test_authzen_allow_then_used(dg):
    tok = dg.mint()
    js = evaluate(dg, tok)
    decided(js, "ok")
    decided(evaluate(dg, tok), "mandate_used")
    # Nothing reached the merchant: a decision is only a decision.
    assert dg.barrier() == []
    es = surfaced(dg, "authzen", 2)
    assert [(e["surface"], e["decision"], e["code"]) for e in es] == [
        ("authzen", "allow", "ok"), ("authzen", "deny", "mandate_used")]
    seq, leaf = js["context"]["receipt"].split(":")
    assert es[0]["seq"] == int(seq) and es[0]["request_id"] == js["context"]["request_id"]
    assert es[0]["agent"] == "agent-planner" and es[0]["action"] == "search"


def test_authzen_uses_across_evaluations_in_order(dg):
    tok = dg.mint(uses=2)
    other = dg.mint(action="get_booking")
    st, _, js, _ = post(dg, "/access/v1/evaluations", {"evaluations": [
        evaluation(dg, tok), evaluation(dg, "x.y.z"), evaluation(dg, tok),
        evaluation(dg, other, path="/lux/bookings/7", action="get_booking"),
        evaluation(dg, tok)]})
    assert st == 200, js
    got = [e["context"]["code"] for e in js["evaluations"]]
    assert got == ["ok", "mandate_malformed", "ok", "ok", "mandate_used"]
    for e, code in zip(js["evaluations"], got):
        decided(e, code)
    ids = [e["context"]["request_id"] for e in js["evaluations"]]
    assert len(set(ids)) == 5
    logged = [e["request_id"] for e in surfaced(dg, "authzen", 5)]
    assert logged == ids  # written in the order asked


@pytest.mark.parametrize("case,code", [
    ("no_route", "route_not_found"),
    ("other_merchant", "route_not_found"),
    ("wrong_action_name", "mandate_wrong_action"),
    ("wrong_agent", "mandate_malformed"),
    ("mandate_for_other_action", "mandate_wrong_action"),
    ("expired", "mandate_expired"),
    ("bad_signature", "mandate_bad_signature"),
    ("unknown_key", "mandate_unknown_key"),
    ("other_audience", "mandate_wrong_merchant"),
    ("payment_on_unpriced", "mandate_wrong_type"),
    ("intent_on_priced", "payment_required"),
    ("cnf", "signature_missing"),
    ("revoked", "mandate_revoked"),
])
def test_authzen_denials(dg, case, code):
    kw, tok = {}, None
    if case == "no_route":
        kw["path"] = "/nowhere"
    elif case == "other_merchant":
        kw["merchant"] = "other-shop"
    elif case == "wrong_action_name":
        kw["action"] = "book_room"
    elif case == "wrong_agent":
        kw["agent"] = "agent-other"
    elif case == "mandate_for_other_action":
        tok = dg.mint(action="quote_room")
    elif case == "expired":
        tok = dg.mint(iat=int(time.time()) - 120, exp=int(time.time()) - 60)
    elif case == "bad_signature":
        t = dg.mint()
        tok = t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB")
    elif case == "unknown_key":
        tok = dg.mint(kid="nope")
    elif case == "other_audience":
        tok = dg.mint(aud="other-shop")
    elif case == "payment_on_unpriced":
        tok = dg.pay(dg.cart(), action="search")
    elif case == "intent_on_priced":
        tok = dg.mint(action="book_room")
        kw.update(method="POST", path="/lux/book", action="book_room")
    elif case == "cnf":
        tok = dg.mint(cnf={"jwk": Agent().jwk})
    elif case == "revoked":
        tok = dg.mint()
        assert dg.admin("POST", "/admin/revocations", {"agent": "agent-planner"})[0] == 201
    decided(evaluate(dg, tok or dg.mint(), **kw), code)
    es = surfaced(dg, "authzen", 1)
    assert [(e["decision"], e["code"]) for e in es] == [("deny", code)]


def test_authzen_priced_commits_spend(dg):
    cart = dg.cart(total=18000)
    pay = dg.pay(cart)
    js = evaluate(dg, pay, method="POST", path="/lux/book", action="book_room", cart=cart)
    decided(js, "ok")
    decided(evaluate(dg, dg.pay(cart), method="POST", path="/lux/book", action="book_room",
                     cart=cart), "cart_used")
    es = [e for e in entries(dg) if e.get("surface") == "authzen"]
    assert es[0]["amount"] == {"value": 18000, "currency": "EUR"}
    assert len(es[0]["mandates"]) == 2
    c = sqlite3.connect(os.path.join(dg.d, "gateway.db"))
    rows = c.execute("SELECT request_id, amount, status FROM spend").fetchall()
    c.close()
    assert rows == [(js["context"]["request_id"], 18000, 1)]  # 1: committed, no outcome to come
    # Spend counts against the cap like a proxied payment's: 18000 + 35000 > 50000.
    cart2 = dg.cart(total=35000)
    st, _, body, _ = dg.book(dg.pay(cart2), cart2)
    assert (st, body["error"]) == (403, "spend_cap_exceeded")


def test_authzen_concurrent_priced_exactly_the_ones_that_fit(dg):
    carts = [dg.cart(total=10000) for _ in range(30)]
    pays = [dg.pay(c, cap=50000) for c in carts]
    results = [None] * 30

    def one(i):
        results[i] = evaluate(dg, pays[i], method="POST", path="/lux/book", action="book_room",
                              cart=carts[i])
    threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(r["context"]["code"] for r in results)
    assert codes.count("ok") == 5, codes
    assert codes.count("spend_cap_exceeded") == 25, codes


@pytest.mark.parametrize("body,member", [
    ("", "body"),
    ("{", "body"),
    ("[]", "body"),
    ('{"a":1,"a":2}', "body"),
    (json.dumps({"action": {"name": "search"}}), "subject"),
    ("subject.properties", "subject.properties.mandate"),
    ("subject.type", "subject.type"),
    ("action.name", "action.name"),
    ("resource.properties.path", "resource.properties.path"),
    ("dot", "resource.properties.path"),
    ("slash", "resource.properties.path"),
    ("method", "resource.properties.method"),
    ("batch", "evaluations[1].action"),
    ("empty_batch", "evaluations"),
])
def test_authzen_bad_requests(dg, body, member):
    tok = dg.mint()
    path = "/access/v1/evaluation"
    ev = evaluation(dg, tok)
    if body == "subject.properties":
        del ev["subject"]["properties"]["mandate"]
    elif body == "subject.type":
        ev["subject"]["type"] = "user"
    elif body == "action.name":
        ev["action"]["name"] = 7
    elif body == "resource.properties.path":
        del ev["resource"]["properties"]["path"]
    elif body == "dot":
        ev["resource"]["properties"]["path"] = "/lux/x/../search"
    elif body == "slash":
        ev["resource"]["properties"]["path"] = "/lux%2Fsearch"
    elif body == "method":
        ev["resource"]["properties"]["method"] = "GE T"
    elif body == "batch":
        path = "/access/v1/evaluations"
        bad = evaluation(dg, tok)
        del bad["action"]
        ev = {"evaluations": [evaluation(dg, tok), bad]}
    elif body == "empty_batch":
        path = "/access/v1/evaluations"
        ev = {"evaluations": []}
    raw = body if body.startswith(("{", "[")) or body == "" else json.dumps(ev)
    st, _, js, _ = post(dg, path, None, raw=raw)
    assert st == 400, js
    assert js["error"] == "bad_request" and js["message"].startswith(member), js
    # Nothing was decided or consumed: the mandate still works once.
    decided(evaluate(dg, tok), "ok")
    assert [e["code"] for e in entries(dg) if e.get("surface")] == ["ok"]


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_authzen_needs_the_token(dg, token):
    tok = dg.mint()
    h = {"Authorization": "Bearer " + token} if token is not None else {}
    st, hs, js, _ = dg.request("POST", "/access/v1/evaluation", headers=h,
                               body=json.dumps(evaluation(dg, tok)), port=dg.decision_port)
    assert (st, js["error"]) == (401, "unauthorized")
    decided(evaluate(dg, tok), "ok")  # nothing was consumed
    # The proxy listener's Mandate scheme is no token here either.
    st, _, js, _ = dg.request("POST", "/access/v1/evaluation", tok,
                              body=json.dumps(evaluation(dg, tok)), port=dg.decision_port)
    assert (st, js["error"]) == (401, "unauthorized")


def test_listener_other_paths(dg):
    st, h, js, _ = dg.request("GET", "/access/v1/evaluation", port=dg.decision_port,
                              headers={"Authorization": "Bearer " + DECISION_TOKEN})
    assert st == 405 and h["allow"] == "POST"
    st, _, js, _ = dg.request("GET", "/lux/search", dg.mint(), port=dg.decision_port)
    assert st == 404
    st, _, js, _ = dg.request("GET", "/forward-authx/lux/search", dg.mint(),
                              port=dg.decision_port)
    assert st == 404
    # Keep-alive: several answers on one connection.
    conn = http.client.HTTPConnection("127.0.0.1", dg.decision_port, timeout=5)
    for _ in range(3):
        conn.request("POST", "/access/v1/evaluation", body=json.dumps(evaluation(dg, dg.mint())),
                     headers={"Authorization": "Bearer " + DECISION_TOKEN})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["decision"] is True
    conn.close()


def test_authzen_chunked_body(dg):
    tok = dg.mint()
    body = json.dumps(evaluation(dg, tok)).encode()
    conn = http.client.HTTPConnection("127.0.0.1", dg.decision_port, timeout=5)
    conn.request("POST", "/access/v1/evaluation", body=iter([body[:10], body[10:]]),
                 headers={"Authorization": "Bearer " + DECISION_TOKEN,
                          "Transfer-Encoding": "chunked"}, encode_chunked=True)
    r = conn.getresponse()
    js = json.loads(r.read())
    conn.close()
    assert r.status == 200
    decided(js, "ok")


def test_authzen_body_too_large(dg):
    big = json.dumps({"evaluations": [], "pad": "x" * 5000})
    st, _, js, _ = post(dg, "/access/v1/evaluations", None, raw=big)
    assert (st, js["error"]) == (413, "body_too_large")


# --- forward-auth --------------------------------------------------------------------------------

def fa(g, headers, path="/forward-auth", method="GET", token=None):
    return g.request(method, path, token, headers=headers, port=g.decision_port)


def mandate_headers(h):
    return {k: v for k, v in h.items() if k.startswith("mandate-")}


def test_forward_auth_nginx_style(dg):
    tok = dg.mint()
    st, h, body, raw = fa(dg, {"X-Original-Method": "GET", "X-Original-URI": "/lux/search?q=1",
                               "X-Original-Host": "shop.example"}, token=tok)
    assert st == 200 and raw == b"", raw
    assert h["mandate-principal"] == "alice" and h["mandate-agent"] == "agent-planner"
    assert h["mandate-action"] == "search" and "mandate-amount" not in h
    assert re.fullmatch(r"\d+:[0-9a-f]{64}", h["mandate-receipt"])
    assert re.fullmatch(r"[0-9a-f]{24}", h["x-request-id"])
    # Used up: the proxy gets the §2.2 denial, status and body (and the body again in a header).
    st, h, body, _ = fa(dg, {"X-Original-Method": "GET", "X-Original-URI": "/lux/search"},
                        token=tok)
    assert (st, body["error"]) == (403, "mandate_used")
    assert body["request_id"] == h["x-request-id"]
    assert json.loads(h["mandate-denial"]) == body
    st, h, body, _ = fa(dg, {"X-Original-Method": "GET", "X-Original-URI": "/lux/search"})
    assert (st, body["error"]) == (401, "mandate_missing")
    assert h["www-authenticate"] == 'Mandate error="mandate_missing"'
    es = surfaced(dg, "forward_auth", 3)
    assert [e["code"] for e in es] == ["ok", "mandate_used", "mandate_missing"]
    assert dg.barrier() == []


def test_forward_auth_traefik_style(dg):
    tok = dg.mint(action="get_booking")
    st, h, _, raw = fa(dg, {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/lux/bookings/9",
                            "X-Forwarded-Host": "shop.example", "X-Forwarded-Proto": "https"},
                       token=tok)
    assert st == 200 and h["mandate-action"] == "get_booking"
    # The method is the original's, not the auth request's own.
    st, _, body, _ = fa(dg, {"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/lux/bookings/9"},
                        token=dg.mint(action="get_booking"))
    assert (st, body["error"]) == (404, "route_not_found")
    # X-Original-* (nginx) comes first.
    st, h, _, _ = fa(dg, {"X-Original-Method": "GET", "X-Original-URI": "/lux/search",
                          "X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/lux/book"},
                     token=dg.mint())
    assert st == 200 and h["mandate-action"] == "search"


def test_forward_auth_envoy_style_priced(dg):
    cart = dg.cart(total=18000)
    pay = dg.pay(cart)
    st, h, _, raw = fa(dg, {"Mandate-Cart": cart}, path="/forward-auth/lux/book?x=1",
                       method="POST", token=pay)
    assert st == 200, raw
    assert h["mandate-amount"] == "18000 EUR" and h["mandate-action"] == "book_room"
    assert h["mandate-cart-id"] and h["mandate-payment-id"]
    c = sqlite3.connect(os.path.join(dg.d, "gateway.db"))
    rows = c.execute("SELECT request_id, amount, status FROM spend").fetchall()
    c.close()
    assert rows == [(h["x-request-id"], 18000, 1)]
    st, _, body, _ = fa(dg, {"Mandate-Cart": cart}, path="/forward-auth/lux/book",
                        method="POST", token=dg.pay(cart))
    assert (st, body["error"]) == (403, "cart_used")
    st, _, body, _ = fa(dg, {}, path="/forward-auth/lux/book", method="POST", token=dg.mint(
        action="book_room"))
    assert (st, body["error"]) == (402, "payment_required")


@pytest.mark.parametrize("uri", ["/lux/x/../search", "/lux/%2e%2e/lux/search", "/lux%2Fsearch",
                                 "/lux/search#x", "http://shop/lux/search", "lux/search",
                                 "/lux/se arch"])
def test_forward_auth_refuses_unsafe_original_uri(dg, uri):
    tok = dg.mint()
    st, _, body, _ = fa(dg, {"X-Original-Method": "GET", "X-Original-URI": uri}, token=tok)
    assert (st, body["error"]) == (400, "bad_request"), body
    assert fa(dg, {"X-Original-Method": "GET", "X-Original-URI": "/lux/search"},
              token=tok)[0] == 200  # nothing consumed


def test_forward_auth_incomplete_original(dg):
    tok = dg.mint()
    st, _, body, _ = fa(dg, {"X-Original-URI": "/lux/search"}, token=tok)
    assert (st, body["error"]) == (400, "bad_request")
    st, _, body, _ = fa(dg, {}, token=tok)  # /forward-auth itself names nothing
    assert (st, body["error"]) == (400, "bad_request")


def test_forward_auth_proof_of_possession(dg):
    agent = Agent()
    tok = dg.mint(cnf={"jwk": agent.jwk}, uses=5)
    base = {"Authorization": "Mandate " + tok}
    sig = agent.headers("GET", "shop.example", "/lux/search", "q=1", base)
    st, h, body, _ = fa(dg, {**sig, "X-Original-Method": "GET",
                             "X-Original-URI": "/lux/search?q=1",
                             "X-Original-Host": "shop.example"}, token=tok)
    assert st == 200, body
    # The same signature again: replayed.
    st, _, body, _ = fa(dg, {**sig, "X-Original-Method": "GET",
                             "X-Original-URI": "/lux/search?q=1",
                             "X-Original-Host": "shop.example"}, token=tok)
    assert (st, body["error"]) == (401, "signature_replayed")
    # Signed for another path than the original's.
    sig = agent.headers("GET", "shop.example", "/lux/search", "q=1", base)
    st, _, body, _ = fa(dg, {**sig, "X-Original-Method": "GET",
                             "X-Original-URI": "/lux/search?q=2",
                             "X-Original-Host": "shop.example"}, token=tok)
    assert (st, body["error"]) == (401, "signature_invalid")
    # A covered content-digest cannot be checked here.
    sig = agent.headers("POST", "shop.example", "/lux/quote", "", base, body='{"n":1}')
    st, _, body, _ = fa(dg, {**sig, "X-Original-Method": "POST", "X-Original-URI": "/lux/quote",
                             "X-Original-Host": "shop.example"},
                        token=dg.mint(cnf={"jwk": agent.jwk}, action="quote_room"))
    assert (st, body["error"]) == (401, "signature_invalid")
    # No signature at all.
    st, _, body, _ = fa(dg, {"X-Original-Method": "GET", "X-Original-URI": "/lux/search"},
                        token=tok)
    assert (st, body["error"]) == (401, "signature_missing")


def test_decisions_verify_in_the_audit_log(dg):
    tok = dg.mint(uses=3)
    decided(evaluate(dg, tok), "ok")
    assert fa(dg, {"X-Original-Method": "GET", "X-Original-URI": "/lux/search"},
              token=tok)[0] == 200
    assert dg.request("GET", "/lux/search", tok)[0] == 200
    decided(evaluate(dg, tok), "mandate_used")
    cart = dg.cart(total=12000)
    decided(evaluate(dg, dg.pay(cart), method="POST", path="/lux/book", action="book_room",
                     cart=cart), "ok")
    cart = dg.cart(total=13000)
    assert fa(dg, {"Mandate-Cart": cart}, path="/forward-auth/lux/book", method="POST",
              token=dg.pay(cart))[0] == 200
    surfaced(dg, "forward_auth", 2)
    es = [e for e in entries(dg) if e.get("kind") == "decision"]
    assert [e.get("surface", "proxy") for e in es] == [
        "authzen", "forward_auth", "proxy", "authzen", "authzen", "forward_auth"]
    assert dg.gw.stop() == 0
    verify(dg)


def test_decision_listener_over_tls(gateway, tmp_path):
    key, cert = str(tmp_path / "d.key"), str(tmp_path / "d.crt")
    r = run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1")
    assert r.returncode == 0, r.stderr
    g = with_decision(gateway, tls={"cert_file": cert, "key_file": key})
    import ssl
    ctx = ssl.create_default_context(cafile=cert)
    conn = http.client.HTTPSConnection("127.0.0.1", g.decision_port, context=ctx, timeout=5)
    conn.request("POST", "/access/v1/evaluation", body=json.dumps(evaluation(g, g.mint())),
                 headers={"Authorization": "Bearer " + DECISION_TOKEN})
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["decision"] is True
    conn.close()
    assert g.request("GET", "/lux/search", g.mint())[0] == 200  # the proxy stays plain


def test_decision_config_errors(tmp_path):
    from conftest import Gateway
    g = Gateway(str(tmp_path), [])
    g.conf["decision"] = {"listen": "nowhere", "token_sha256": "zz", "extra": 1}
    write_json(g.config_path, g.conf)
    r = run(binary("mandate-gateway"), "--check-config", "--config", g.config_path)
    assert r.returncode == 1
    assert "decision.listen" in r.stderr and "decision.token_sha256" in r.stderr
    assert "decision.extra" in r.stderr or "extra" in r.stderr
    g.conf["decision"] = {"listen": g.conf["listen"], "token_sha256": sha256_hex("t")}
    write_json(g.config_path, g.conf)
    r = run(binary("mandate-gateway"), "--check-config", "--config", g.config_path)
    assert r.returncode == 1 and "decision.listen" in r.stderr, r.stderr
    g.conf["decision"]["listen"] = f"127.0.0.1:{free_port()}"
    write_json(g.config_path, g.conf)
    r = run(binary("mandate-gateway"), "--check-config", "--config", g.config_path)
    assert r.returncode == 0, r.stderr


def test_decision_not_reloadable(dg):
    dg.conf["decision"]["token_sha256"] = sha256_hex("another")
    write_json(dg.config_path, dg.conf)
    dg.gw.send(signal.SIGHUP)
    wait_for(lambda: "decision.token_sha256 changed" in dg.gw.output(), what="reload warning")
    decided(evaluate(dg, dg.mint()), "ok")  # the running token stays in force


# --- nginx in front of the merchant, with auth_request to forward-auth --------------------------

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture
def nginx(dg, tmp_path, procs):
    """Debian's nginx with examples/nginx/mandate-forward-auth.conf, on a free port, in front of
    the stub merchant, asking the gateway's decision listener."""
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx is not installed")
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    port = free_port()
    with open(os.path.join(ROOT, "examples", "nginx", "mandate-forward-auth.conf")) as f:
        site = f.read()
    site = (site.replace("listen 8080;", f"listen 127.0.0.1:{port};")
                .replace("127.0.0.1:9000", f"127.0.0.1:{dg.up_port}")
                .replace("127.0.0.1:9902", f"127.0.0.1:{dg.decision_port}"))
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{site}
}}
""")
    p = Proc([NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
             str(prefix / "nginx.out"))
    procs.append(p)
    wait_port(port, p.p)
    dg.nginx_port = port
    return dg


def test_nginx_auth_request(nginx):
    g = nginx
    tok = g.mint()
    st, h, js, _ = g.request("GET", "/lux/search?q=1", tok, port=g.nginx_port,
                             headers={"Mandate-Agent": "spoofed", "X-Request-Id": "spoofed"})
    assert st == 200, js
    got = g.received()[-1]
    hs = {k.lower(): v for k, v in got["headers"]}
    assert got["path"] == "/lux/search?q=1"
    assert hs["mandate-principal"] == "alice" and hs["mandate-agent"] == "agent-planner"
    assert hs["mandate-action"] == "search" and "mandate-amount" not in hs
    assert re.fullmatch(r"\d+:[0-9a-f]{64}", hs["mandate-receipt"])
    assert re.fullmatch(r"[0-9a-f]{24}", hs["x-request-id"])
    assert "authorization" not in hs  # the token stays with nginx and us
    es = [e for e in entries(g) if e.get("surface") == "forward_auth"]
    assert es[-1]["request_id"] == hs["x-request-id"] and es[-1]["code"] == "ok"
    n = len(g.received())
    # Denied: used up, no mandate, a priced route without payment; none reaches the merchant,
    # and the client gets our status and body.
    for method, path, token, status, code in [
            ("GET", "/lux/search", tok, 403, "mandate_used"),
            ("GET", "/lux/search", None, 401, "mandate_missing"),
            ("POST", "/lux/book", g.mint(action="book_room"), 402, "payment_required"),
            ("GET", "/nowhere", g.mint(), 404, "route_not_found"),
            ("GET", "/lux/x/../search", g.mint(), 400, "bad_request")]:
        st, h, js, raw = g.request(method, path, token, port=g.nginx_port,
                                   body="{}" if method == "POST" else None)
        assert (st, js and js["error"]) == (status, code), (path, st, raw)
        assert js["request_id"] == h["x-request-id"]
        if status == 401:
            assert h["www-authenticate"] == f'Mandate error="{code}"'
    # Priced, with a cart: the amount goes upstream.
    cart = g.cart(total=18000)
    st, h, js, _ = g.request("POST", "/lux/book", g.pay(cart), port=g.nginx_port, body="{}",
                             headers={"Mandate-Cart": cart})
    assert st == 200, js
    got = g.received()[-1]
    hs = {k.lower(): v for k, v in got["headers"]}
    assert hs["mandate-amount"] == "18000 EUR" and "mandate-cart" not in hs
    assert got["body"] == "{}"
    assert len(g.received()) == n + 1
    assert g.gw.stop() == 0
    verify(g)


def test_client_leaves_or_breaks_the_body(dg):
    import socket
    from conftest import raw
    auth = f"Authorization: Bearer {DECISION_TOKEN}\r\n".encode()
    # Gone half-way through the body: nothing decided, the listener goes on.
    with socket.create_connection(("127.0.0.1", dg.decision_port), timeout=5) as s:
        s.sendall(b"POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\n" + auth +
                  b"Content-Length: 100\r\n\r\n{\"subject\":")
        time.sleep(0.1)
    # A malformed chunk: 400, and the connection is closed.
    out = raw(dg.decision_port, b"POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\n" + auth +
              b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert out.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in out
    # A pipelined second request after a complete one is answered in turn.
    body = json.dumps(evaluation(dg, dg.mint(uses=2))).encode()
    req = (b"POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\n" + auth +
           b"Content-Length: %d\r\n\r\n" % len(body) + body)
    with socket.create_connection(("127.0.0.1", dg.decision_port), timeout=5) as s:
        s.sendall(req + req)
        got = b""
        while got.count(b'"decision":true') < 2:
            b = s.recv(65536)
            assert b, got
            got += b
    decided(evaluate(dg, dg.mint()), "ok")
    assert [e["code"] for e in surfaced(dg, "authzen", 3)] == ["ok", "ok", "ok"]


def test_authzen_batch_defaults_and_options(dg):
    """AuthZEN 1.0 batches: top-level subject/action/resource stand in for missing ones; only
    the execute_all semantic is offered."""
    tok = dg.mint(uses=2)
    ev = evaluation(dg, tok)
    other = evaluation(dg, dg.mint(action="get_booking"), path="/lux/bookings/1",
                       action="get_booking")
    st, _, js, _ = post(dg, "/access/v1/evaluations", {
        "subject": ev["subject"], "action": ev["action"], "resource": ev["resource"],
        "options": {"evaluations_semantic": "execute_all"},
        "evaluations": [{}, other, {"action": {"name": "quote_room"}}, {}]})
    assert st == 200, js
    assert [e["context"]["code"] for e in js["evaluations"]] == [
        "ok", "ok", "mandate_wrong_action", "ok"]
    st, _, js, _ = post(dg, "/access/v1/evaluations", {
        "options": {"evaluations_semantic": "deny_on_first_deny"}, "evaluations": [ev]})
    assert (st, js["error"]) == (400, "bad_request")
    assert js["message"].startswith("options.evaluations_semantic")
    st, _, js, _ = post(dg, "/access/v1/evaluations", {
        "action": {"name": "search"}, "evaluations": [{"resource": ev["resource"]}]})
    assert (st, js["error"]) == (400, "bad_request")
    assert js["message"].startswith("evaluations[0].subject")
    st, _, js, _ = post(dg, "/access/v1/evaluations", {
        "subject": {"type": "agent"}, "evaluations": [{"resource": ev["resource"],
                                                       "action": ev["action"]}]})
    assert (st, js["message"][:10]) == (400, "subject.id")
