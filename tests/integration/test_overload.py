"""Overload, floods and failure (SPEC §5 "Overload and denial floods", issue 9): the per-client
denial budget and its denial_summary entries, the free-disk watermark, framing errors counted but
not audited, reload of keys bound at start, and a drain that is not held up by clients that left."""
import http.client
import json
import os
import re
import signal
import socket
import struct
import time

import pytest

from conftest import binary, run, wait_for, write_json


def entries(g):
    r = run(binary("mandate-audit"), "export", "--db", os.path.join(g.d, "gateway.db"))
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def verify(g):
    r = run(binary("mandate-audit"), "verify", "--db", os.path.join(g.d, "gateway.db"),
            "--checkpoint-key", os.path.join(g.d, "checkpoint.pub.pem"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_garbage_flood_is_summarised(gateway):
    """Beyond denials_per_s a client's denials are counted into one denial_summary entry per
    second; every denial is accounted for exactly once and the answers do not change."""
    gateway.conf["audit"]["denials_per_s"] = 5
    write_json(gateway.config_path, gateway.conf)
    g = gateway.start()
    n = 60
    for _ in range(n):
        st, _, body, _ = g.request("GET", "/lux/search", "garbage.token.here")
        assert (st, body["error"]) == (401, "mandate_malformed")
    assert g.gw.stop() == 0  # flushes pending summaries
    es = entries(g)
    individual = [e for e in es if e["kind"] == "decision" and e["decision"] == "deny"]
    summaries = [e for e in es if e["kind"] == "denial_summary"]
    assert summaries, "no denial_summary entry"
    seconds = {e["ts_ms"] // 1000 for e in summaries}
    assert len(individual) <= 5 * (len(seconds) + 1)
    assert len(individual) + sum(e["count"] for e in summaries) == n
    for e in summaries:
        assert e["client"] == "127.0.0.1" and e["ts_ms"] % 1000 == 0
        assert e["codes"] == {"mandate_malformed": e["count"]}
    # The access log follows the audit log: a line per individual denial, one access_summary line
    # per summary (a flood must not become megabytes of log a second either).
    lines = [json.loads(l) for l in g.gw.output().splitlines()]
    assert len([l for l in lines if l.get("type") == "access"]) == len(individual)
    logged = [l for l in lines if l.get("type") == "access_summary"]
    assert sorted((l["unix_s"] * 1000, l["count"], l["codes"]["mandate_malformed"], l["client"])
                  for l in logged) == \
        sorted((e["ts_ms"], e["count"], e["count"], e["client"]) for e in summaries)
    verify(g)


def pauses(g):
    st, _, _, text = g.admin("GET", "/metrics")
    assert st == 200
    return int(re.search(rb"^mandate_flood_pauses_total (\d+)$", text, re.M).group(1))


def test_flooding_connection_is_slowed_not_the_others(gateway):
    """A keep-alive connection whose denial was over its client's budget has its next request read
    100 ms later (and at low priority): a closed-loop flood costs a few requests a second, not a
    core. Its answers do not change; another connection's allow is served meanwhile, and an allow
    on the flooding connection ends its penalty."""
    gateway.conf["audit"]["denials_per_s"] = 1
    write_json(gateway.config_path, gateway.conf)
    g = gateway.start()
    flood = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)

    def send(token):
        flood.request("GET", "/lux/search", headers={"Authorization": "Mandate " + token})
        r = flood.getresponse()
        return r.status, json.loads(r.read()).get("error"), time.monotonic(), int(time.time())

    got = [send("garbage.x.y") for _ in range(10)]
    assert {(st, err) for st, err, _, _ in got} == {(401, "mandate_malformed")}
    # One denial a second is written alone; every other one puts off the next read. A gap follows
    # each of the first nine denials but those that were in their second's budget.
    seconds = {s for _, _, _, s in got}
    slow = sum(b[2] - a[2] >= 0.095 for a, b in zip(got, got[1:]))
    assert slow >= 9 - len(seconds), got
    assert pauses(g) in (slow, slow + 1)  # + 1: the tenth denial's pause, if it was summarised
    assert g.request("GET", "/lux/search", g.mint())[0] == 200  # another connection: not held
    assert send(g.mint())[0] == 200  # read after a pause (the last denial was summarised)
    before = pauses(g)
    assert send(g.mint())[0] == 200 and pauses(g) == before  # the allow ended the penalty
    flood.close()
    assert g.gw.stop() == 0


def test_low_disk_refuses_allows_and_readyz(gateway):
    """Below audit.min_free_bytes no allow is taken (503, nothing consumed or forwarded), readyz
    fails, and denials are only summarised."""
    gateway.conf["audit"]["min_free_bytes"] = 1 << 50
    write_json(gateway.config_path, gateway.conf)
    g = gateway.start()
    g.gw.expect_error(r"bytes free under .* below audit.min_free_bytes")
    tok = g.mint(uses=1)
    st, _, body, _ = g.request("GET", "/lux/search", tok)
    assert (st, body["error"]) == (503, "unavailable")
    assert g.received() == []
    st, _, _, text = g.admin("GET", "/readyz", token=None)
    assert st == 503 and b"disk" in text
    assert g.request("GET", "/lux/search", "garbage.token.here")[0] == 401
    assert g.gw.stop() == 0
    es = entries(g)
    assert not [e for e in es if e["kind"] == "decision"]
    assert sum(e["count"] for e in es if e["kind"] == "denial_summary") == 2


def test_framing_errors_are_counted_not_audited(g_started):
    g = g_started
    st, _, body, _ = g.request("GET", "/lux/search", g.mint(),
                               headers={"X-Big": "x" * 5000})
    assert (st, body["error"]) == (431, "headers_too_large")
    st, _, _, text = g.admin("GET", "/metrics")
    assert 'mandate_decisions_total{code="headers_too_large"} 1' in text.decode()
    assert g.gw.stop() == 0
    assert not [e for e in entries(g) if e["kind"] == "decision"]


@pytest.fixture
def g_started(gateway):
    return gateway.start()


def test_reload_logs_keys_bound_at_start_and_keeps_them(g_started):
    """SIGHUP applies what is reloadable; each key bound at start is logged and keeps its running
    value (the checkpoint origin and key stay the writer's own)."""
    g = g_started
    conf = json.loads(open(g.config_path).read())
    conf["workers"] = 3
    conf["audit"]["origin"] = "other.example/audit"
    conf["audit"]["checkpoint_every"] = 7
    conf["limits"]["max_body_bytes"] = 10
    write_json(g.config_path, conf)
    g.gw.send(signal.SIGHUP)
    wait_for(lambda: "reloaded" in g.gw.output(), what="reload")
    out = g.gw.output()
    for key in ("workers", "audit.origin", "audit.checkpoint_every"):
        assert f'"msg":"reload: {key} changed' in out, out
    assert '"msg":"reload: limits' not in out
    # limits applied: a body over the new bound is refused.
    st, _, body, _ = g.request("POST", "/lux/quote", g.mint(action="quote_room"), body="x" * 50)
    assert (st, body["error"]) == (413, "body_too_large")
    assert g.request("GET", "/lux/search", g.mint())[0] == 200
    assert g.gw.stop() == 0  # signs a final checkpoint with the writer's own key and origin
    verify(g)
    r = run(binary("mandate-audit"), "verify", "--db", os.path.join(g.d, "gateway.db"),
            "--checkpoint-key", os.path.join(g.d, "checkpoint.pub.pem"),
            "--origin", "test.example/audit")
    assert r.returncode == 0, r.stdout


def test_drain_not_held_by_clients_that_reset(g_started):
    """Clients that reset right after sending must not leave the drain waiting for replies that
    can never be written: SIGTERM then exits well before the 10 s drain deadline."""
    g = g_started
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", g.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(b"GET /lux/search HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()  # RST
    assert g.request("GET", "/lux/search", g.mint())[0] == 200
    t0 = time.monotonic()
    g.gw.send(signal.SIGTERM)
    assert g.gw.wait(9) == 0
    assert time.monotonic() - t0 < 5
    assert "still in flight at the drain deadline" not in g.gw.output()


def access_lines(g):
    return [json.loads(l) for l in g.gw.output().splitlines() if '"type":"access"' in l]


def test_access_log_counts_denial_bodies_and_framing_errors(g_started):
    """The access log's bytes count what a denial sent; a target with raw bytes over 0x7E is a
    framing error (SPEC §5), logged as a valid JSON line (the fixture fails the test on any line
    that is not) with its status and request id."""
    g = g_started
    st, _, _, data = g.request("GET", "/lux/search")
    assert st == 401
    out = raw_request(g.port, b"GET /lux/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out[:100]
    wait_for(lambda: len(access_lines(g)) >= 2, what="two access lines")
    # Each worker writes its own lines in batches: find them by code, not by position.
    by_code = {a["code"]: a for a in access_lines(g)}
    assert by_code["mandate_missing"]["bytes"] == len(data)
    assert by_code["bad_request"]["status"] == 400


def raw_request(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        return s.recv(65536)


def test_out_of_descriptors_backs_off_quietly(gateway):
    """At the descriptor limit the accept loop pauses instead of spinning and logging: idle
    connections past the limit cost a few log lines, and once they close service resumes."""
    import resource

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    g = gateway
    g.start_upstream()
    from conftest import Proc, binary as _b, wait_port
    g.gw = Proc([_b("mandate-gateway"), "--config", g.config_path],
                os.path.join(g.d, "gateway.log"), preexec_fn=low_limit)
    g.procs.append(g.gw)
    wait_port(g.port, g.gw.p)
    held = []
    for _ in range(100):
        try:
            held.append(socket.create_connection(("127.0.0.1", g.port), timeout=1))
        except OSError:
            break
    # Logged at most once a second: two lines prove a second or more spent at the limit.
    wait_for(lambda: g.gw.output().count("pausing new connections") >= 2, what="accept back-off")
    assert os.path.getsize(g.gw.log_path) < 100 * 1024
    for s in held:
        s.close()
    wait_for(lambda: _ok(g), timeout=10, what="service after the descriptors came back")


def _ok(g):
    try:
        return g.request("GET", "/lux/search", g.mint(), timeout=2)[0] == 200
    except OSError:
        return False


def test_priced_put_dropped_after_reading_is_delivered_once(g_started):
    """SPEC §5 retries: the merchant read the priced PUT and closed without answering. It may
    have acted on it, so it is never sent again: 502, delivered exactly once, spend unknown."""
    g = g_started
    for _ in range(6):  # every worker has a pooled (reused) connection to the merchant
        assert g.request("GET", "/lux/search", g.mint())[0] == 200
    before = len(g.received())
    c = g.cart(total=1000)
    st, _, body, _ = g.request("PUT", "/drop/1", g.pay(c), headers={"Mandate-Cart": c}, body="{}")
    assert (st, body["error"]) == (502, "upstream_unavailable"), body
    assert [r["path"] for r in g.barrier()[before:]] == ["/drop/1"]
    assert g.gw.stop() == 0
    outcomes = [e for e in entries(g) if e["kind"] == "outcome" and "spend" in e]
    assert [e["spend"] for e in outcomes] == ["unknown"]
