"""The wallet (SPEC §3) with the gateway and the demo merchant: minting under policy, the
approval flow, revocation pushed to the gateway, its JWKS checked by an outside JOSE library,
and its database recording every mint and refusal."""
import http.server
import json
import os
import signal
import socket
import sqlite3
import threading
import time

from jwcrypto import jwk, jws

from conftest import (WALLET_ADMIN, Proc, Stack, binary, free_port, run, wait_port,
                      write_json)


def test_intent_minted_and_forwarded(stack):
    tok = stack.intent("search", uses=2, ttl_s=120)
    st, _, body, _ = stack.request("GET", "/lux/search", tok)
    assert st == 200 and body["rooms"]
    assert stack.request("GET", "/lux/search", tok)[0] == 200
    assert stack.request("GET", "/lux/search", tok)[2]["error"] == "mandate_used"


def test_search_quote_pay_book(stack):
    assert stack.request("GET", "/lux/search", stack.intent("search"))[0] == 200
    cart = stack.quote("standard", 1)  # 9,000 EUR: under approval_above
    st, _, body, _ = stack.w("POST", "/v1/mandates/payment", {"cart": cart})
    assert st == 201, body
    st, _, booked, _ = stack.book(body["mandate"], cart)
    assert st == 201 and booked["amount"] == "9000 EUR"


def test_bad_agent_token(stack):
    st, _, body, _ = stack.w("POST", "/v1/mandates/intent",
                             {"merchant": "lux-hotels", "action": "search"}, token="nope")
    assert (st, body["error"]) == (401, "unauthorized")
    assert stack.w("POST", "/v1/mandates/intent", {}, token=None)[0] == 401


def test_policy_denied(stack):
    for body in ({"merchant": "evil-shop", "action": "search"},
                 {"merchant": "lux-hotels", "action": "cancel_everything"},
                 {"merchant": "lux-hotels", "action": "search", "ttl_s": 301}):
        st, _, out, _ = stack.w("POST", "/v1/mandates/intent", body)
        assert (st, out["error"]) == (403, "policy_denied"), (body, out)


def test_over_max_per_payment(stack):
    cart = stack.cart(total=25000)
    st, _, body, _ = stack.w("POST", "/v1/mandates/payment", {"cart": cart})
    assert (st, body["error"]) == (403, "over_max_per_payment")
    st, _, body, _ = stack.w("POST", "/v1/mandates/payment",
                             {"cart": stack.cart(total=100, sub="bob")})
    assert (st, body["error"]) == (422, "cart_invalid")
    forged = stack.cart(total=100, key=stack.key, kid="w1")
    st, _, body, _ = stack.w("POST", "/v1/mandates/payment", {"cart": forged})
    assert (st, body["error"]) == (422, "cart_invalid")


def cli(stack, *args):
    return run(binary("mandate-wallet"), *args, "--config", stack.wallet_path,
               "--admin-token-file", os.path.join(stack.d, "wallet-admin.token"))


def test_approval_flow(stack):
    cart = stack.quote("deluxe", 1)  # 18,000 EUR: above approval_above (15,000)
    st, _, body, _ = stack.w("POST", "/v1/mandates/payment", {"cart": cart})
    assert st == 202 and body["status"] == "pending"
    aid = body["approval_id"]
    assert stack.w("GET", f"/v1/approvals/{aid}")[2] == {"status": "pending"}
    # An agent cannot approve its own payment.
    assert stack.w("POST", f"/v1/approvals/{aid}/approve")[0] == 401
    r = cli(stack, "approvals")
    assert r.returncode == 0 and aid in r.stdout and "180.00 EUR" in r.stdout
    r = cli(stack, "approve", aid)
    assert r.returncode == 0, r.stderr
    st, _, body, _ = stack.w("GET", f"/v1/approvals/{aid}")
    assert body["status"] == "approved" and body["mandate"]
    st, _, booked, _ = stack.book(body["mandate"], cart)
    assert st == 201 and booked["amount"] == "18000 EUR"


def test_deny_leaves_nothing(stack):
    cart = stack.quote("deluxe", 1)
    aid = stack.w("POST", "/v1/mandates/payment", {"cart": cart})[2]["approval_id"]
    st, _, body, _ = stack.w("POST", f"/v1/approvals/{aid}/deny", token=WALLET_ADMIN)
    assert (st, body["status"]) == (200, "denied")
    assert stack.w("GET", f"/v1/approvals/{aid}")[2] == {"status": "denied"}
    assert stack.w("POST", f"/v1/approvals/{aid}/approve", token=WALLET_ADMIN)[0] == 409
    assert "mandate" not in stack.w("GET", f"/v1/approvals/{aid}")[2]


def test_revoke_agent_reaches_gateway_fast(stack):
    still_valid = stack.intent("search", uses=5, ttl_s=300)
    assert stack.request("GET", "/lux/search", still_valid)[0] == 200
    t0 = time.monotonic()
    st, _, body, _ = stack.w("POST", "/v1/revocations", {"agent": "agent-planner"},
                             token=WALLET_ADMIN)
    assert st == 201, body
    while True:
        st, _, body, _ = stack.request("GET", "/lux/search", still_valid)
        if st == 403:
            break
        assert time.monotonic() - t0 < 1.0, "the gateway still allows a revoked agent"
    took = time.monotonic() - t0
    assert body["error"] == "mandate_revoked"
    assert took < 0.1, f"revocation took {took * 1000:.0f} ms to reach the gateway"
    st, _, body, _ = stack.w("POST", "/v1/mandates/intent",
                             {"merchant": "lux-hotels", "action": "search"})
    assert (st, body["error"]) == (403, "agent_revoked")
    # The gateway acts on a revocation before its answer reaches the wallet: wait for the ack.
    c = sqlite3.connect(os.path.join(stack.d, "wallet.db"))
    deadline = time.monotonic() + 3
    while c.execute("SELECT status FROM pushes").fetchall() != [("acknowledged",)]:
        assert time.monotonic() < deadline, "the wallet never recorded the gateway's ack"
        time.sleep(0.02)


def test_jwks_verifies_mandates_outside(stack):
    st, _, doc, _ = stack.w("GET", "/.well-known/jwks.json", token=None)
    assert st == 200
    keys = jwk.JWKSet.from_json(json.dumps(doc))
    tok = stack.intent("search")
    check = jws.JWS()
    check.deserialize(tok)
    check.verify(keys.get_key("w1"))
    claims = json.loads(check.payload)
    assert claims["sub"] == "alice" and claims["act"] == {"sub": "agent-planner"}
    assert check.jose_header["typ"] == "intent-mandate+jwt"


def test_database_records_every_mint_and_refusal(stack):
    stack.intent("search")
    stack.w("POST", "/v1/mandates/intent", {"merchant": "evil-shop", "action": "search"})
    stack.w("POST", "/v1/mandates/payment", {"cart": stack.cart(total=25000)})
    c = sqlite3.connect(os.path.join(stack.d, "wallet.db"))
    rows = c.execute("SELECT kind, decision, code, agent, principal, merchant, detail "
                     "FROM events ORDER BY id").fetchall()
    assert ("intent", "minted", None, "agent-planner", "alice", "lux-hotels", None) in rows
    assert any(r[:3] == ("intent", "refused", "policy_denied") and r[5] == "evil-shop"
               for r in rows)
    assert any(r[:3] == ("payment", "refused", "over_max_per_payment") and r[6] for r in rows)


def test_key_rotation_publishes_old_keys(tmp_path, procs):
    """A rotated wallet signs with the new key and still publishes the old one."""
    from conftest import Stack, keygen, write_json
    s = Stack(str(tmp_path), procs)
    keygen(s.d, "wallet-new", kid="w2")
    os.rename(os.path.join(s.d, "wallet-1.jwks.json"), os.path.join(s.d, "previous.jwks.json"))
    s.wallet_conf["signing_key"] = {"kid": "w2", "alg": "ES256", "file": "wallet-new.pem",
                                    "previous_jwks_file": "previous.jwks.json"}
    write_json(s.wallet_path, s.wallet_conf)
    # The gateway trusts both keys of wallet-1 while mandates signed by the old one live.
    with open(os.path.join(s.d, "previous.jwks.json")) as f:
        old = json.load(f)["keys"]
    with open(os.path.join(s.d, "wallet-new.jwks.json")) as f:
        new = json.load(f)["keys"]
    write_json(os.path.join(s.d, "wallet-1.jwks.json"), {"keys": new + old})
    s.start()
    st, _, doc, _ = s.w("GET", "/.well-known/jwks.json", token=None)
    assert [k["kid"] for k in doc["keys"]] == ["w2", "w1"]
    tok = s.intent("search")
    assert json.loads(__import__("base64").urlsafe_b64decode(tok.split(".")[0] + "=="))["kid"] \
        == "w2"
    assert s.request("GET", "/lux/search", tok)[0] == 200
    assert s.request("GET", "/lux/search", s.mint())[0] == 200  # an old-key mandate still verifies


def test_pending_approval_expires_with_the_price_lock(stack):
    cart = stack.cart(total=18000, exp=int(time.time()) + 2)  # a 2-second price lock
    aid = stack.w("POST", "/v1/mandates/payment", {"cart": cart})[2]["approval_id"]
    assert stack.w("GET", f"/v1/approvals/{aid}")[2] == {"status": "pending"}
    time.sleep(3.1)  # whole seconds: the lock ends at the start of second exp
    assert stack.w("GET", f"/v1/approvals/{aid}")[2] == {"status": "expired"}
    st, _, body, _ = stack.w("POST", f"/v1/approvals/{aid}/approve", token=WALLET_ADMIN)
    assert st == 409 and "mandate" not in stack.w("GET", f"/v1/approvals/{aid}")[2]


# --- review fixes: admin_url, durable pushes, mint only what is recorded, routing, messages ---

class Recorder:
    """A stand-in gateway admin API on 127.0.0.1:port that records every request it gets (with
    its arrival time in .times) and acknowledges revocations with 201, as the gateway does, after
    answering the first `fail` requests with 503."""

    def __init__(self, port, fail=0):
        seen = self.requests = []
        times = self.times = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                times.append(time.monotonic())
                seen.append((self.path, self.headers.get("Authorization"),
                             json.loads(self.rfile.read(n) or b"null")))
                self.send_response(503 if len(seen) <= fail else 201)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            assert time.monotonic() < deadline, f"{len(self.requests)} pushes after {timeout}s"
            time.sleep(0.02)
        return self.requests

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def stack_with_dead_gateway(tmp_path, procs):
    """A stack whose wallet also pushes to a second gateway admin port where nothing listens."""
    s = Stack(str(tmp_path), procs)
    s.dead_port = free_port()
    s.wallet_conf["gateways"].append({"admin_url": f"http://127.0.0.1:{s.dead_port}",
                                      "token_file": "gateway-admin.token"})
    write_json(s.wallet_path, s.wallet_conf)
    return s.start()


def pushes(stack):
    c = sqlite3.connect(os.path.join(stack.d, "wallet.db"))
    try:
        return c.execute("SELECT gateway, kind, value, status, attempts FROM pushes "
                         "ORDER BY gateway").fetchall()
    finally:
        c.close()


def test_admin_url_must_be_host_and_port_only(tmp_path, procs):
    s = Stack(str(tmp_path), procs)
    for url in ("http://127.0.0.1:9901/", "http://127.0.0.1:9901/admin", "http://127.0.0.1",
                "http://127.0.0.1:0", "http://127.0.0.1:65536", "http://:9901",
                "http://127.0.0.1:+99", "https://127.0.0.1:9901", "http://a b:9901",
                "http://127.0.0.1:9901?x", "http://user@127.0.0.1:9901"):
        s.wallet_conf["gateways"][0]["admin_url"] = url
        write_json(s.wallet_path, s.wallet_conf)
        r = run(binary("mandate-wallet"), "--config", s.wallet_path, "--check-config")
        assert r.returncode == 1, (url, r.stdout)
        assert "wallet.json: gateways[0].admin_url: " in r.stderr, (url, r.stderr)
    for url in ("http://127.0.0.1:9901", "http://[::1]:9901", "http://gw-1.example.com:65535"):
        s.wallet_conf["gateways"][0]["admin_url"] = url
        write_json(s.wallet_path, s.wallet_conf)
        r = run(binary("mandate-wallet"), "--config", s.wallet_path, "--check-config")
        assert r.returncode == 0, (url, r.stderr)


def test_push_retried_until_the_gateway_listens(tmp_path, procs):
    s = stack_with_dead_gateway(tmp_path, procs)
    st, _, body, _ = s.w("POST", "/v1/revocations", {"jti": "j-1"}, token=WALLET_ADMIN)
    assert st == 201, body
    dead = f"http://127.0.0.1:{s.dead_port}"
    # Refused at least twice (the first try and a retry) before anything listens there.
    deadline = time.monotonic() + 5
    while not any(p[0] == dead and p[4] >= 2 for p in pushes(s)):
        assert time.monotonic() < deadline, pushes(s)
        time.sleep(0.05)
    rec = Recorder(s.dead_port)
    try:
        got = rec.wait_for(1, timeout=35)  # the backoff is capped at 30 s
        assert got[0] == ("/admin/revocations", "Bearer admin-token-for-tests", {"jti": "j-1"})
        deadline = time.monotonic() + 3
        while [p[3] for p in pushes(s)] != ["acknowledged", "acknowledged"]:
            assert time.monotonic() < deadline, pushes(s)
            time.sleep(0.02)
    finally:
        rec.close()


def test_push_backoff_is_per_gateway_and_doubles(tmp_path, procs):
    """A gateway that fails is retried after 0.5 s, then 1 s, 2 s...: whichever revocation is
    next, one attempt at a time, not one backoff per revocation."""
    s = Stack(str(tmp_path), procs)
    port = free_port()
    s.wallet_conf["gateways"] = [{"admin_url": f"http://127.0.0.1:{port}",
                                  "token_file": "gateway-admin.token"}]
    write_json(s.wallet_path, s.wallet_conf)
    rec = Recorder(port, fail=3)
    try:
        s.start()
        for jti in ("j-a", "j-b"):
            assert s.w("POST", "/v1/revocations", {"jti": jti}, token=WALLET_ADMIN)[0] == 201
        got = rec.wait_for(5, timeout=15)  # 0 + 0.5 + 1 + 2 s of backoff, then both
        gaps = [b - a for a, b in zip(rec.times, rec.times[1:])]
        for i, want in enumerate((0.5, 1.0, 2.0)):
            assert want * 0.8 <= gaps[i] <= want + 1.0, (i, gaps)
        assert sorted(r[2]["jti"] for r in got[3:]) == ["j-a", "j-b"]
        assert gaps[3] < 0.5, gaps  # an acknowledgement sends the next one at once
    finally:
        rec.close()


def test_pending_push_survives_a_restart(tmp_path, procs):
    s = stack_with_dead_gateway(tmp_path, procs)
    assert s.w("POST", "/v1/revocations", {"agent": "agent-planner"},
               token=WALLET_ADMIN)[0] == 201
    dead = f"http://127.0.0.1:{s.dead_port}"
    assert (dead, "agent", "agent-planner", "pending") in [p[:4] for p in pushes(s)]
    assert s.wallet.stop(signal.SIGTERM) == 0
    rec = Recorder(s.dead_port)
    try:
        s.wallet = Proc([binary("mandate-wallet"), "--config", s.wallet_path],
                        os.path.join(s.d, "wallet.log"))
        procs.append(s.wallet)
        wait_port(s.wallet_port, s.wallet.p)
        got = rec.wait_for(1, timeout=5)
        assert got[0][2] == {"agent": "agent-planner"}
        deadline = time.monotonic() + 3
        while (dead, "agent", "agent-planner", "acknowledged") not in [p[:4] for p in pushes(s)]:
            assert time.monotonic() < deadline, pushes(s)
            time.sleep(0.02)
    finally:
        rec.close()


def test_revocation_and_its_pushes_commit_together(tmp_path, procs):
    """A revocation that cannot record its pushes is not recorded either (and says so)."""
    s = stack_with_dead_gateway(tmp_path, procs)
    s.wallet.expect_error(r"disk full|could not record|cannot roll back")
    c = sqlite3.connect(os.path.join(s.d, "wallet.db"))
    c.execute("CREATE TRIGGER no_push BEFORE INSERT ON pushes "
              "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    c.commit()
    st, _, body, _ = s.w("POST", "/v1/revocations", {"jti": "j-2"}, token=WALLET_ADMIN)
    assert st == 503 and body["error"] == "unavailable", body
    assert c.execute("SELECT * FROM revocations").fetchall() == []
    c.execute("DROP TRIGGER no_push")
    c.commit()
    assert s.w("POST", "/v1/revocations", {"jti": "j-2"}, token=WALLET_ADMIN)[0] == 201
    assert c.execute("SELECT kind, value FROM revocations").fetchall() == [("jti", "j-2")]
    assert sorted(r[0] for r in c.execute("SELECT gateway FROM pushes WHERE value = 'j-2'")) \
        == sorted(g["admin_url"] for g in s.wallet_conf["gateways"])
    c.close()


def test_unrecorded_mint_is_not_handed_out(stack):
    stack.wallet.expect_error(r"database is locked|could not record")
    cart, big = stack.quote("standard", 1), stack.quote("deluxe", 1)
    aid = stack.w("POST", "/v1/mandates/payment", {"cart": big})[2]["approval_id"]
    c = sqlite3.connect(os.path.join(stack.d, "wallet.db"), isolation_level=None, timeout=5)
    c.execute("BEGIN EXCLUSIVE")  # the wallet can read (WAL) but not write
    try:
        for path, body, token in (
                ("/v1/mandates/intent", {"merchant": "lux-hotels", "action": "search"}, None),
                ("/v1/mandates/payment", {"cart": cart}, None),
                ("/v1/mandates/payment", {"cart": big}, None),  # would wait for approval
                (f"/v1/approvals/{aid}/approve", None, WALLET_ADMIN)):
            st, _, out, data = stack.w("POST", path, body, **({"token": token} if token else {}))
            assert st in (500, 503) and out["error"] == "unavailable", (path, st, data)
            assert out["message"].endswith(".") and "mandate" not in out, out
            assert b"eyJ" not in data and "approval_id" not in out, data
    finally:
        c.execute("ROLLBACK")
        c.close()
    assert stack.w("GET", f"/v1/approvals/{aid}")[2] == {"status": "pending"}
    assert stack.w("POST", "/v1/mandates/payment", {"cart": cart})[0] == 201
    c = sqlite3.connect(os.path.join(stack.d, "wallet.db"))
    minted = c.execute("SELECT kind FROM events WHERE decision = 'minted' ORDER BY id").fetchall()
    c.close()
    assert minted == [("intent",), ("intent",), ("payment",)]  # two quotes' intents, one payment


def test_approvals_routes_are_exact(stack):
    aid = stack.w("POST", "/v1/mandates/payment",
                  {"cart": stack.quote("deluxe", 1)})[2]["approval_id"]
    for path in (f"/v1/approvals/{aid}/approve/deny", f"/v1/approvals/{aid}/deny/approve",
                 f"/v1/approvals/{aid}/approvex", f"/v1/approvals/{aid}//approve",
                 f"/v1/approvalsX/{aid}/approve", f"/v1/approvals/{aid}/approve/",
                 "/v1/approvals//approve"):
        st, _, body, _ = stack.w("POST", path, token=WALLET_ADMIN)
        assert (st, body["error"]) == (404, "not_found"), (path, st, body)
    for path in (f"/v1/approvals/{aid}/", f"/v1/approvals/{aid}/x", f"/v1/approvalsX/{aid}"):
        st, _, body, _ = stack.w("GET", path)
        assert (st, body["error"]) == (404, "not_found"), (path, st, body)
    assert stack.w("GET", f"/v1/approvals/{aid}")[2] == {"status": "pending"}
    st, _, body, _ = stack.w("POST", f"/v1/approvals/{aid}/deny", token=WALLET_ADMIN)
    assert (st, body["status"]) == (200, "denied")


def test_approvals_list_shows_what_is_asked(stack):
    aid = stack.w("POST", "/v1/mandates/payment",
                  {"cart": stack.quote("deluxe", 1)})[2]["approval_id"]
    st, _, body, _ = stack.w("GET", "/v1/approvals", token=WALLET_ADMIN)
    assert st == 200
    (a,) = body["approvals"]
    assert (a["id"], a["agent"], a["principal"], a["merchant"], a["action"], a["amount"]) == \
        (aid, "agent-planner", "alice", "lux-hotels", "book_room", "180.00 EUR")
    assert a["items"] == [{"sku": "deluxe", "qty": 1, "unit": "180.00 EUR"}]
    r = cli(stack, "approvals")
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith(aid))
    assert "alice" in line and "180.00 EUR" in line and "18000" not in r.stdout
    assert "1 x deluxe at 180.00 EUR" in r.stdout


def test_cart_refusal_message_is_a_sentence(stack):
    forged = stack.cart(total=100, key=stack.key, kid="lux1")  # the wrong key under lux1
    st, _, body, _ = stack.w("POST", "/v1/mandates/payment", {"cart": forged})
    assert (st, body["error"]) == (422, "cart_invalid")
    assert body["message"] == "The cart's signature does not verify with the merchant's key."
    st, _, body, _ = stack.w("POST", "/v1/mandates/payment",
                             {"cart": stack.cart(total=100, sub="bob")})
    assert (st, body["message"]) == (422, "The cart is for another principal.")


def test_listener_drops_an_unfinished_request_head(stack):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", stack.wallet_port), timeout=20) as c:
        c.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        got = b""
        while True:  # until the wallet closes (it may first answer 408)
            b = c.recv(4096)
            if not b:
                break
            got += b
    took = time.monotonic() - t0
    assert b"200 OK" not in got
    assert took < 8, f"the wallet kept a half-sent request head open for {took:.1f} s"


# --- issue 15: sign-cart for merchants, GET /v1/spend for agents, the gateway's /admin/spend ---

def sign_cart(stack, items, *extra):
    path = os.path.join(stack.d, "items.json")
    write_json(path, items)
    return run(binary("mandate-wallet"), "sign-cart", "--key",
               os.path.join(stack.d, "lux-hotels.pem"), "--kid", "lux1", "--merchant",
               "lux-hotels", "--principal", "alice", "--action", "book_room", "--items", path,
               *extra)


def test_sign_cart_is_paid_through_the_gateway(stack):
    intent_jti = "i-" + "a" * 20
    r = sign_cart(stack, [{"sku": "standard", "qty": 2, "unit": {"value": 4000, "currency": "EUR"}},
                          {"sku": "breakfast", "qty": 1, "unit": {"value": 500,
                                                                  "currency": "EUR"}}],
                  "--ttl", "600", "--intent", intent_jti)
    assert r.returncode == 0, r.stderr
    cart = r.stdout.strip()
    # An outside JOSE implementation checks the signature with the merchant's published key.
    with open(os.path.join(stack.d, "lux-hotels.jwks.json")) as f:
        key = jwk.JWKSet.from_json(f.read()).get_key("lux1")
    t = jws.JWS()
    t.deserialize(cart)
    t.verify(key)
    assert json.loads(t.objects["protected"])["typ"] == "cart-mandate+jwt"
    c = json.loads(t.payload)
    assert c["iss"] == "lux-hotels" and c["sub"] == "alice" and c["action"] == "book_room"
    assert c["total"] == {"value": 8500, "currency": "EUR"} and c["intent"] == intent_jti
    assert c["exp"] - c["iat"] == 600 and len(c["jti"]) == 32
    st, _, body, _ = stack.w("POST", "/v1/mandates/payment", {"cart": cart})
    assert st == 201, body
    st, h, booked, _ = stack.book(body["mandate"], cart)
    assert st == 201 and booked["amount"] == "8500 EUR"


def test_sign_cart_refuses_what_the_gateway_would(stack):
    eur = {"value": 100, "currency": "EUR"}
    for items in ([], [{"sku": "a", "qty": 0, "unit": eur}],
                  [{"sku": "a", "qty": 1, "unit": {"value": 1.5, "currency": "EUR"}}],
                  [{"sku": "a", "qty": 1, "unit": eur},
                   {"sku": "b", "qty": 1, "unit": {"value": 1, "currency": "USD"}}],
                  [{"sku": "a", "qty": 2, "unit": {"value": 2 ** 62, "currency": "EUR"}}],
                  {"sku": "a"}):
        r = sign_cart(stack, items)
        assert r.returncode == 1 and r.stdout == "" and "items.json" in r.stderr, (items, r)
    for bad in (["--ttl", "0"], ["--ttl", "86401"], ["--ttl", "10s"], ["--kid"]):
        r = sign_cart(stack, [{"sku": "a", "qty": 1, "unit": eur}], *bad)
        assert r.returncode == 1 and r.stdout == "", bad


def spend(stack, token=None):
    from conftest import AGENT_TOKEN
    st, _, body, _ = stack.w("GET", "/v1/spend", token=token or AGENT_TOKEN)
    assert st == 200, body
    return body


def test_spend_shows_cap_minted_and_what_the_gateway_counts(stack):
    b = spend(stack)
    assert b["principal"] == "alice" and b["cap"] == {"value": 50000, "currency": "EUR",
                                                      "period": "day"}
    assert b["period"] == time.strftime("d%Y-%m-%d", time.gmtime())
    assert b["minted"] == {"value": 0, "currency": "EUR"}
    assert b["gateways"] == [{"admin_url": f"http://127.0.0.1:{stack.admin_port}",
                              "spent": {"value": 0, "currency": "EUR"}}]
    assert b["remaining"]["value"] == 50000 and b["remaining_basis"] == "gateways"

    cart = stack.quote("standard", 1)  # 9,000 EUR
    st, _, pay, _ = stack.w("POST", "/v1/mandates/payment", {"cart": cart})
    assert st == 201, pay
    b = spend(stack)  # minted, not yet spent
    assert b["minted"]["value"] == 9000 and b["gateways"][0]["spent"]["value"] == 0
    assert b["remaining"]["value"] == 50000
    assert stack.book(pay["mandate"], cart)[0] == 201
    b = spend(stack)
    assert b["gateways"][0]["spent"]["value"] == 9000 and b["remaining"]["value"] == 41000

    # The gateway's side: the admin token is required, and the principal.
    st, _, g, _ = stack.admin("GET", "/admin/spend?principal=alice")
    assert st == 200 and g["principal"] == "alice"
    assert g["spend"] == [{"issuer": "wallet-1", "currency": "EUR", "period": b["period"],
                           "spent": {"value": 9000, "currency": "EUR"}}]
    assert stack.admin("GET", "/admin/spend?principal=bob")[2]["spend"] == []
    assert stack.admin("GET", "/admin/spend")[0] == 400
    assert stack.admin("GET", "/admin/spend?principal=alice", token=None)[0] == 401
    assert stack.w("GET", "/v1/spend", token="not-an-agent")[0] == 401
    assert stack.w("GET", "/v1/spend", token=WALLET_ADMIN)[0] == 401


def test_spend_without_an_answering_gateway_counts_what_was_minted(tmp_path, procs):
    s = stack_with_dead_gateway(tmp_path, procs)
    cart = s.quote("standard", 1)
    st, _, pay, _ = s.w("POST", "/v1/mandates/payment", {"cart": cart})
    assert st == 201, pay
    b = spend(s)
    live, dead = b["gateways"]
    assert live["spent"]["value"] == 0
    assert dead == {"admin_url": f"http://127.0.0.1:{s.dead_port}",
                    "error": "unreachable or timed out"}
    assert b["remaining"]["value"] == 50000 and b["remaining_basis"] == "gateways"
    s.gw.stop()  # now no gateway answers: the wallet counts its own mints
    b = spend(s)
    assert all("error" in g for g in b["gateways"])
    assert b["remaining"] == {"value": 41000, "currency": "EUR"}
    assert b["remaining_basis"] == "minted"
