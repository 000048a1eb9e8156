"""The gateway from outside (SPEC §2): the real binary in front of a stub merchant on loopback.
Every denial asserts its status, its code and that the merchant received nothing."""
import json
import os
import re
import signal
import socket
import threading
import time

import pytest

from conftest import (ADMIN_TOKEN, Proc, binary, free_port, keygen, raw, read_jsonl, run,
                      wait_for, wait_port, write_json)
from jwcrypto import jwk


def deny(g, status, code, method, path, token=None, barrier=True, **kw):
    """barrier=False where no allowed request can pass (upstream down, the whole key revoked)."""
    before = len(g.received())
    st, headers, body, _ = g.request(method, path, token, **kw)
    assert (st, body and body.get("error")) == (status, code), (st, body)
    assert body["request_id"] == headers["x-request-id"] and len(body["request_id"]) == 24
    assert body["message"]
    if status == 401:
        assert headers["www-authenticate"] == f'Mandate error="{code}"'
    if barrier:
        assert len(g.barrier()) == before, "the merchant received a denied request"
    return headers


@pytest.fixture
def g(gateway):
    return gateway.start()


def test_allow_forwards_with_mandate_headers(g):
    tok = g.mint()
    st, h, body, _ = g.request("GET", "/lux/search?q=rome&n=2", tok)
    assert st == 200 and body["path"] == "/lux/search?q=rome&n=2"
    got = g.received()[-1]
    hs = {k.lower(): v for k, v in got["headers"]}
    assert hs["mandate-principal"] == "alice"
    assert hs["mandate-agent"] == "agent-planner"
    assert hs["mandate-action"] == "search"
    assert hs["mandate-intent-id"] == claims(tok)["jti"]
    assert hs["x-request-id"] == h["x-request-id"]
    assert hs["mandate-receipt"] == h["mandate-receipt"]
    assert re.fullmatch(r"\d+:[0-9a-f]{64}", h["mandate-receipt"])
    assert hs["forwarded"].startswith('for="127.0.0.1:')
    assert "authorization" not in hs


def claims(tok):
    return json.loads(__import__("base64").urlsafe_b64decode(tok.split(".")[1] + "=="))


def test_priced_allow_names_its_payment_and_cart(g):
    """The merchant learns which payment and cart were used (Mandate-Payment-Id, -Cart-Id)."""
    c = g.cart(total=1000)
    pay = g.pay(c)
    st, _, body, _ = g.request("PUT", "/drop/names", pay, headers={"Mandate-Cart": c}, body="{}")
    hs = {k.lower(): v for k, v in g.received()[-1]["headers"]}
    assert hs["mandate-payment-id"] == claims(pay)["jti"]
    assert hs["mandate-cart-id"] == claims(c)["jti"]
    assert hs["mandate-amount"] == "1000 EUR"


def test_every_unpriced_denial_code(g):
    m = g.mint
    now = int(time.time())
    deny(g, 401, "mandate_missing", "GET", "/lux/search")
    deny(g, 401, "mandate_missing", "GET", "/lux/search",
         headers={"Authorization": "Bearer " + m()})
    deny(g, 401, "mandate_malformed", "GET", "/lux/search", "not.a-token")
    tok = m()
    deny(g, 401, "mandate_bad_signature", "GET", "/lux/search", tok[:-6] + "AAAAAA")
    deny(g, 401, "mandate_unknown_key", "GET", "/lux/search", m(kid="k9"))
    deny(g, 401, "mandate_expired", "GET", "/lux/search", m(iat=now - 100, exp=now - 30))
    deny(g, 401, "mandate_not_yet_valid", "GET", "/lux/search", m(nbf=now + 60))
    deny(g, 401, "mandate_ttl_too_long", "GET", "/lux/search", m(exp=now + 3600))
    pay = m(typ="payment-mandate+jwt", cart="A" * 43,
            total={"value": 100, "currency": "EUR"},
            cap={"value": 1000, "currency": "EUR", "period": "day"})
    deny(g, 401, "mandate_wrong_type", "GET", "/lux/search", pay)
    cart = m(typ="cart-mandate+jwt", iss="lux-hotels", act=None, aud=None,
             items=[{"sku": "r", "qty": 1, "unit": {"value": 1, "currency": "EUR"}}],
             total={"value": 1, "currency": "EUR"})
    deny(g, 401, "mandate_wrong_type", "GET", "/lux/search", cart)
    deny(g, 402, "payment_required", "POST", "/lux/book", m(action="book_room"), body="{}")
    deny(g, 403, "mandate_wrong_merchant", "GET", "/lux/search", m(aud="other-shop"))
    deny(g, 403, "mandate_wrong_action", "GET", "/lux/search", m(action="book_room"))
    deny(g, 404, "route_not_found", "GET", "/nowhere", m())
    deny(g, 404, "route_not_found", "DELETE", "/lux/search", m())
    once = m()
    assert g.request("GET", "/lux/search", once)[0] == 200
    deny(g, 403, "mandate_used", "GET", "/lux/search", once)


def test_rate_limit(gateway):
    gateway.conf["rate_limit"] = {"per_agent_per_s": 1, "burst": 2}
    write_json(gateway.config_path, gateway.conf)
    g = gateway.start()
    tok = g.mint(uses=10)
    assert g.request("GET", "/lux/search", tok)[0] == 200
    assert g.request("GET", "/lux/search", tok)[0] == 200
    h = deny(g, 429, "rate_limited", "GET", "/lux/search", tok)
    assert int(h["retry-after"]) >= 1


def test_spoofed_and_hop_by_hop_headers_stripped(g):
    st, h, _, _ = g.request("GET", "/lux/search", g.mint(), headers={
        "Mandate-Principal": "mallory", "Mandate-Amount": "1 EUR", "X-Request-Id": "mine",
        "Forwarded": "for=evil", "Connection": "X-Drop-Me", "X-Drop-Me": "1",
        "Keep-Alive": "timeout=5", "X-Kept": "yes"})
    assert st == 200
    hs = {}
    for k, v in g.received()[-1]["headers"]:
        hs.setdefault(k.lower(), []).append(v)
    assert hs["mandate-principal"] == ["alice"]
    assert "mandate-amount" not in hs
    assert hs["x-request-id"] == [h["x-request-id"]] and h["x-request-id"] != "mine"
    assert hs["forwarded"][0].startswith('for="127.0.0.1')
    assert "x-drop-me" not in hs and "keep-alive" not in hs
    assert hs["x-kept"] == ["yes"]
    # The merchant's Connection-named response header does not reach the client either.
    assert "x-secret-hop" not in h


def bad_request_raw(g, head):
    """Refused by our parser with SPEC's JSON body; it reaches no merchant."""
    before = len(g.received())
    out = raw(g.port, head)
    assert out.startswith(b"HTTP/1.1 400"), out[:200]
    assert b'"error":"bad_request"' in out, out
    assert len(g.barrier()) == before


def test_cl_te_and_duplicate_cl_rejected(g):
    tok = g.mint(action="quote_room").encode()
    auth = b"Authorization: Mandate " + tok + b"\r\n"
    bad_request_raw(g, b"POST /lux/quote HTTP/1.1\r\nHost: x\r\n" + auth +
                    b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    bad_request_raw(g, b"POST /lux/quote HTTP/1.1\r\nHost: x\r\n" + auth +
                    b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}")
    bad_request_raw(g, b"GET /lux/search HTTP/1.1\r\nHost: x\r\n" + auth +
                    b"Bad Header: 1\r\n\r\n")
    bad_request_raw(g, b"GET /lux/bookings/../search HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")


def test_body_and_header_limits(g):
    deny(g, 413, "body_too_large", "POST", "/lux/quote", g.mint(action="quote_room"),
         body="x" * 5000)
    deny(g, 431, "headers_too_large", "GET", "/lux/search", g.mint(),
         headers={"X-Big": "y" * 5000})
    deny(g, 431, "headers_too_large", "GET", "/lux/search", g.mint(),
         headers={f"X-H{i}": "1" for i in range(120)})
    # A chunked body over the limit is refused too. It streams after the allow, so the merchant may
    # have seen the head, but never the whole body: its connection is cut at the limit (SPEC §5).
    before = len(g.received())
    tok = g.mint(action="quote_room").encode()
    body = b"".join(b"1000\r\n" + b"z" * 4096 + b"\r\n" for _ in range(2)) + b"0\r\n\r\n"
    out = raw(g.port, b"POST /lux/quote HTTP/1.1\r\nHost: x\r\nAuthorization: Mandate " + tok +
              b"\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert out.startswith(b"HTTP/1.1 413") and b"body_too_large" in out
    assert all("z" * 4096 not in r["body"] for r in g.received()[before:])


def test_upstream_down_502(gateway):
    g = gateway.start(upstream=False)
    deny(g, 502, "upstream_unavailable", "GET", "/lux/search", g.mint(), barrier=False)


def test_hanging_upstream_504_within_timeout(g):
    t = time.monotonic()
    st, h, body, _ = g.request("GET", "/slow/x", g.mint())
    took = time.monotonic() - t
    assert (st, body["error"]) == (504, "upstream_timeout")
    assert 1.4 <= took < 4.0, took


def test_upstream_500_passes_through(g):
    st, h, body, _ = g.request("GET", "/status/500", g.mint())
    assert st == 500 and body == {"ok": False, "path": "/status/500"}
    assert "mandate-receipt" in h


def test_used_jti_refused_after_restart(g):
    tok = g.mint()
    assert g.request("GET", "/lux/search", tok)[0] == 200
    assert g.gw.stop() == 0
    g.start()
    deny(g, 403, "mandate_used", "GET", "/lux/search", tok)


def test_concurrent_uses_exactly_ten(g):
    tok = g.mint(uses=10)
    results = []

    def one():
        results.append(g.request("GET", "/lux/search", tok)[0])

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results).count(200) == 10 and results.count(403) == 40
    assert len(g.received()) == 10


def test_more_requests_in_flight_than_pooled_blocks(gateway):
    """One worker with 100 requests in flight, past the 64 idle request blocks it keeps, a
    quarter with heads too large for a pooled block, twice (the second round reuses the first's
    blocks): every request reaches the merchant with its own path and headers and gets its own
    answer. The stop reads the log: under ASan a block left in the pool would be a leak."""
    gateway.conf["workers"] = 1
    gateway.conf["limits"]["max_header_bytes"] = 8192
    gateway.conf["limits"]["upstream_timeout_ms"] = 20000  # the stub answers 100 at once slowly
    write_json(gateway.config_path, gateway.conf)
    g = gateway.start()
    tok = g.mint(uses=1000)
    for rnd in range(2):
        results = {}

        def one(i):
            pad = "p" * (3600 if i % 4 == 0 else 8)  # a head over the pooled block's room
            st, _, body, _ = g.request("GET", f"/delay/200?r={rnd}&i={i}", tok, timeout=30,
                                       headers={"X-Pad": pad, "X-Trace": f"{rnd}-{i}"})
            results[i] = (st, body and body.get("path"))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == {i: (200, f"/delay/200?r={rnd}&i={i}") for i in range(100)}
    seen = {}
    for r in g.received():
        h = dict(r.get("headers") or [])
        if "X-Trace" in h:
            seen[h["X-Trace"]] = (r["path"], len(h.get("X-Pad", "")))
    assert seen == {f"{rnd}-{i}": (f"/delay/200?r={rnd}&i={i}", 3600 if i % 4 == 0 else 8)
                    for rnd in range(2) for i in range(100)}


@pytest.mark.parametrize("kind", ["jti", "agent", "principal", "kid"])
def test_revocation(g, kind):
    tok = g.mint(uses=5)
    assert g.request("GET", "/lux/search", tok)[0] == 200
    value = {"jti": None, "agent": "agent-planner", "principal": "alice", "kid": "w1"}[kind]
    if value is None:
        payload = json.loads(__import__("base64").urlsafe_b64decode(
            tok.split(".")[1] + "=="))
        value = payload["jti"]
    assert g.admin("POST", "/admin/revocations", {kind: value}, token="wrong")[0] == 401
    assert g.admin("POST", "/admin/revocations", {kind: value}, token=None)[0] == 401
    st, _, body, _ = g.admin("POST", "/admin/revocations", {kind: value})
    assert st == 201, body
    deny(g, 403, "mandate_revoked", "GET", "/lux/search", tok, barrier=kind != "kid")
    st, _, body, _ = g.admin("GET", "/admin/revocations")
    assert {kind: value} in body["revocations"]
    # Durable: still revoked after a restart.
    g.gw.stop()
    g.start()
    deny(g, 403, "mandate_revoked", "GET", "/lux/search", tok, barrier=kind != "kid")
    if kind != "jti":
        deny(g, 403, "mandate_revoked", "GET", "/lux/search", g.mint(), barrier=kind != "kid")


def test_admin_health_metrics_checkpoint(g):
    assert g.admin("GET", "/livez", token=None)[0] == 200
    assert g.admin("GET", "/readyz", token=None)[0] == 200
    g.request("GET", "/lux/search", g.mint())
    g.request("GET", "/nowhere", g.mint())
    st, _, _, text = g.admin("GET", "/metrics", token=None)
    text = text.decode()
    assert 'mandate_decisions_total{code="ok"} 1' in text
    assert 'mandate_decisions_total{code="route_not_found"} 1' in text
    assert "mandate_check_seconds_bucket" in text and "mandate_upstream_seconds_count 1" in text
    assert "mandate_audit_batch_entries_bucket" in text
    assert g.admin("GET", "/admin/checkpoint", token=None)[0] == 401
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        st, h, _, note = g.admin("GET", "/admin/checkpoint")
        if st == 200:
            break
        time.sleep(0.2)
    assert st == 200 and note.decode().startswith("test.example/audit\n")


def test_sighup_bad_file_keeps_serving_good_file_applies(g):
    with open(g.config_path) as f:
        good = f.read()
    with open(g.config_path, "w") as f:
        f.write('{"listen": broken')
    g.gw.expect_error(r'"msg":"reload')
    g.gw.send(signal.SIGHUP)
    wait_for(lambda: "reload failed" in g.gw.output())
    assert g.request("GET", "/lux/search", g.mint())[0] == 200
    # A good file with a new route takes effect without a restart.
    conf = json.loads(good)
    conf["merchants"][0]["routes"].append({"method": "GET", "path": "/lux/new",
                                           "action": "search"})
    write_json(g.config_path, conf)
    g.gw.send(signal.SIGHUP)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if g.request("GET", "/lux/new", g.mint())[0] == 200:
            break
        time.sleep(0.1)
    else:
        pytest.fail("reload did not apply")


def test_sigterm_drains_in_flight(g):
    out = {}

    def slow():
        try:
            out["r"] = g.request("GET", "/delay/800", g.mint())
        except Exception as e:  # reported below
            out["r"] = (repr(e),)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    g.gw.send(signal.SIGTERM)
    t.join(10)
    assert out["r"][0] == 200
    assert g.gw.wait(10) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", g.port), timeout=1).close()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


@pytest.mark.skipif("ASAN_OPTIONS" in os.environ,
                    reason="ASan's quarantine and shadow memory make RSS meaningless")
def test_streaming_slow_client_bounded_memory(g):
    size = 50 * 1024 * 1024
    tok = g.mint()
    # Warm up: one small request so pools and buffers exist before we measure.
    g.request("GET", "/lux/search", g.mint())
    base = rss_kb(g.gw.pid)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(f"GET /big/{size} HTTP/1.1\r\nHost: x\r\nAuthorization: Mandate {tok}\r\n\r\n"
              .encode())
    got, peak, t0 = 0, base, time.monotonic()
    while True:
        b = s.recv(256 * 1024)
        if not b:
            break
        got += len(b)
        if got > size:
            break
        peak = max(peak, rss_kb(g.gw.pid))
        if got < 8 * 1024 * 1024:
            time.sleep(0.01)  # slow reader for the first part
    s.close()
    assert got >= size
    assert peak - base < 8 * 1024, f"RSS grew by {peak - base} KiB"


def writes(g):
    text = g.admin("GET", "/metrics")[3].decode()
    return {way: int(v) for way, v in re.findall(r'^mandate_writes_total\{way="(\w+)"\} (\d+)$',
                                                text, re.M)}


def read_answer(s, buf):
    """One Content-Length framed answer from s (after buf): (status, body, rest)."""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, buf = buf.partition(b"\r\n\r\n")
    n = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
    while len(buf) < n:
        chunk = s.recv(1 << 20)
        assert chunk, "closed before the body's end"
        buf += chunk
    return int(head.split()[1]), buf[:n], buf[n:]


def test_write_through_falls_back_for_a_slow_reader_and_comes_back(g):
    """Answers are written straight to the socket at the end of a loop pass; an answer the
    socket cannot take whole (a reader that does not read) is finished by the bufferevent, byte
    for byte, and the connection's next answer is written straight through again."""
    size = 8 * 1024 * 1024
    tok = g.mint(uses=3)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    before = writes(g)
    s.sendall(f"GET /big/{size} HTTP/1.1\r\nHost: x\r\nAuthorization: Mandate {tok}\r\n\r\n"
              .encode())
    deadline = time.monotonic() + 20
    while writes(g)["backlog"] == before["backlog"] and time.monotonic() < deadline:
        time.sleep(0.02)  # not reading: the socket fills and the rest waits for the bufferevent
    assert writes(g)["backlog"] > before["backlog"]
    status, body, rest = read_answer(s, b"")
    assert (status, len(body), rest) == (200, size, b"")
    through = writes(g)["through"]
    s.sendall(f"GET /lux/search HTTP/1.1\r\nHost: x\r\nAuthorization: Mandate {tok}\r\n\r\n"
              .encode())
    status, body, rest = read_answer(s, b"")
    assert status == 200 and rest == b""
    # The request to the merchant and the answer to the client: both through again.
    assert writes(g)["through"] - through >= 2
    s.close()


def test_pooled_upstream_connection_pauses_resumes_and_times_out(g):
    """A pooled connection to the merchant is read by the gateway's own reader (no FIONREAD per
    read): its reading still pauses behind a client that does not read and resumes when it
    does, the connection is pooled again after, and a request it carries still times out."""
    size = 8 * 1024 * 1024
    tok = g.mint(uses=4)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)

    def send(path):
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Mandate {tok}\r\n\r\n"
                  .encode())

    send("/lux/search?first")  # one worker serves this connection: its pool gets a connection
    assert read_answer(s, b"")[0] == 200
    before = writes(g)
    send(f"/big/{size}")
    deadline = time.monotonic() + 20
    while writes(g)["backlog"] == before["backlog"] and time.monotonic() < deadline:
        time.sleep(0.02)  # not reading: the gateway's output fills and the merchant is paused
    assert writes(g)["backlog"] > before["backlog"]
    status, body, rest = read_answer(s, b"")
    assert (status, len(body), rest) == (200, size, b"")
    send("/lux/search?again")
    assert read_answer(s, b"")[0] == 200
    t = time.monotonic()
    send("/slow/pooled")
    status, body, _ = read_answer(s, b"")
    assert status == 504 and json.loads(body)["error"] == "upstream_timeout"
    assert 1.4 <= time.monotonic() - t < 4.0
    peers = {h["path"]: h["peer"] for h in read_jsonl(g.record + ".heads")}
    assert (peers["/lux/search?first"] == peers[f"/big/{size}"] == peers["/lux/search?again"] ==
            peers["/slow/pooled"])
    s.close()


def test_client_that_stops_reading_is_dropped_on_a_kept_alive_connection(g):
    """A client that reads nothing of an answer for 30 s is dropped, also on the second request
    of a connection (the end of the first answer used to clear the write timeout with the read
    timeout, so that such a client held its connection and the merchant's for good)."""
    size = 64 * 1024 * 1024
    tok = g.mint(uses=2)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=60)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(f"GET /lux/search HTTP/1.1\r\nHost: x\r\nAuthorization: Mandate {tok}\r\n\r\n"
              .encode())
    status, _, rest = read_answer(s, b"")
    assert status == 200 and rest == b""
    s.sendall(f"GET /big/{size} HTTP/1.1\r\nHost: x\r\nAuthorization: Mandate {tok}\r\n\r\n"
              .encode())
    # Not reading: the access line of the big answer comes when the gateway gives up on it.
    line = wait_for(lambda: re.search(rf'"path":"/big/{size}".*', g.gw.output()), timeout=45,
                    what="the slow client's answer cut")
    sent = int(re.search(r'"bytes":(\d+)', line.group(0)).group(1))
    assert sent < size
    got = 0
    try:
        while (b := s.recv(1 << 20)):
            got += len(b)
    except ConnectionResetError:
        pass
    assert got < size
    s.close()


def test_second_gateway_on_the_same_database_is_refused(g):
    """One writer per database: a second gateway given the running one's database (another
    listener, the same file) exits with status 2 and says so, and the first goes on serving."""
    conf = json.loads(json.dumps(g.conf))
    conf["listen"] = f"127.0.0.1:{free_port()}"
    conf["admin"]["listen"] = f"127.0.0.1:{free_port()}"
    path = os.path.join(g.d, "twin.json")
    with open(path, "w") as f:
        json.dump(conf, f)
    twin = Proc([binary("mandate-gateway"), "--config", path], os.path.join(g.d, "twin.log"))
    twin.expect_error("in use by another writer")
    g.procs.append(twin)
    assert twin.wait(10) == 2
    assert re.search(r"gateway\.db: in use by another writer", twin.output()), twin.output()
    assert g.request("GET", "/lux/search", g.mint())[0] == 200


def test_commit_failure_is_503_and_forwards_nothing(g):
    """If the audit commit fails, the allow is not forwarded: 503 unavailable, and the mandate's
    use is given back. Another connection holding the write lock past SQLite's 5 s busy timeout
    makes the writer's transaction fail."""
    import sqlite3
    g.gw.expect_error(r"sqlite: |\"msg\":\"audit|database is locked")
    tok = g.mint(uses=2)
    assert g.request("GET", "/lux/search", tok)[0] == 200
    lock = sqlite3.connect(os.path.join(g.d, "gateway.db"), timeout=1, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        before = len(g.received())
        st, _, body, _ = g.request("GET", "/lux/search", tok, timeout=20)
        assert (st, body["error"]) == (503, "unavailable")
        assert len(g.received()) == before
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    # The use that failed to commit was given back: the second use still works.
    assert g.request("GET", "/lux/search", tok)[0] == 200
    assert g.request("GET", "/lux/search", tok)[0] == 403


def test_sign_cart_route(gateway):
    """A merchant that only returns JSON: the gateway signs the cart of a sign_cart route's 2xx
    answer with merchants[].cart_key, and that cart pays on the priced route."""
    from jwcrypto import jws as _jws
    m = gateway.conf["merchants"][0]
    m["cart_key"] = {"file": "lux-hotels.pem", "kid": "lux1"}
    m["routes"].insert(0, {"method": "POST", "path": "/quotecart", "action": "quote_room",
                           "sign_cart": True})
    write_json(gateway.config_path, gateway.conf)
    g = gateway.start()
    st, _, body, _ = g.request("POST", "/quotecart", g.mint(action="quote_room"), body="{}")
    assert st == 200 and body["note"] == "kept", body
    cart = body["cart"]
    t = _jws.JWS()
    t.deserialize(cart)
    t.verify(g.merchant_key)  # signed with the merchant's key held by the gateway
    claims = json.loads(t.payload)
    assert claims["iss"] == "lux-hotels" and claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 600 and claims["total"]["value"] == 18000
    st, _, body, _ = g.book(g.pay(cart), cart)
    assert st == 200, body


def test_sign_cart_needs_cart_key(gateway):
    gateway.conf["merchants"][0]["routes"][0]["sign_cart"] = True
    write_json(gateway.config_path, gateway.conf)
    r = run(binary("mandate-gateway"), "--check-config", "--config", gateway.config_path)
    assert r.returncode == 1
    assert "merchants[0].routes[0].sign_cart: needs the merchant's cart_key" in r.stderr
