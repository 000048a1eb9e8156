"""Remote key sets (SPEC §7, last bullet): an issuer's keys fetched from its `jwks_uri` by the
gateway. A local key server (http.server on 127.0.0.1, in this process) counts fetches and can
rotate keys, go down, answer oversize or too slowly."""
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import Gateway, free_port, keygen, wait_for, write_json
from jwcrypto import jwk


class KeyServer:
    """Serves /jwks.json: mode "ok" (the current set, max-age=3600), "oversize" (a 70 KiB answer),
    "slow" (the current set after 3 s). Counts every GET of /jwks.json; stop() and start() take it
    down and up again on the same port."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.fetches = 0
        self.mode = "ok"
        self.keys = []
        self.srv = None
        self.lock = threading.Lock()

    def set_keys(self, *jwks_paths):
        keys = []
        for p in jwks_paths:
            with open(p) as f:
                keys += json.load(f)["keys"]
        self.keys = keys

    def start(self):
        ks = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path != "/jwks.json":
                    self.send_error(404)
                    return
                with ks.lock:
                    ks.fetches += 1
                    mode = ks.mode
                body = json.dumps({"keys": ks.keys}).encode()
                if mode == "oversize":
                    # Still a valid JWKS, padded past 64 KiB with an unknown member.
                    body = json.dumps({"keys": ks.keys, "pad": "x" * 70000}).encode()
                if mode == "slow":
                    time.sleep(3)
                self.send_response(200)
                self.send_header("Content-Type", "application/jwk-set+json")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None

    def count(self):
        with self.lock:
            return self.fetches

    @property
    def uri(self):
        return f"http://127.0.0.1:{self.port}/jwks.json"


@pytest.fixture
def keyserver():
    ks = KeyServer()
    yield ks
    ks.stop()


def remote_gateway(d, procs, ks):
    """The conftest gateway with its issuer's keys at ks's jwks_uri instead of a file."""
    g = Gateway(d, procs)
    g.conf["issuers"] = [{"id": "wallet-1", "jwks_uri": ks.uri}]
    write_json(g.config_path, g.conf)
    ks.set_keys(os.path.join(d, "wallet-1.jwks.json"))
    # A second wallet key (kid w2) for rotations, published only when a test says so.
    keygen(d, "wallet-2", kid="w2")
    with open(os.path.join(d, "wallet-2.pem"), "rb") as f:
        g.key2 = jwk.JWK.from_pem(f.read())
    g.jwks2 = os.path.join(d, "wallet-2.jwks.json")
    return g


def readyz(g):
    st, _, _, data = g.request("GET", "/readyz", port=g.admin_port)
    return st, data.decode()


def log_has(g, text):
    return text in g.gw.output()


def status_code(g, token):
    st, _, body, _ = g.request("GET", "/lux/search", token)
    return st, body and body.get("error")


def stays(cond, seconds=1.5):
    """Poll cond() for a bounded time; fail as soon as it is false."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert cond()
        time.sleep(0.05)


@pytest.fixture
def started(tmp_path, procs, keyserver):
    keyserver.start()
    g = remote_gateway(str(tmp_path), procs, keyserver).start()
    wait_for(lambda: readyz(g)[0] == 200, what="the first key set")
    assert keyserver.count() == 1
    assert status_code(g, g.mint()) == (200, None)
    return g


def test_rotation_is_picked_up_with_exactly_one_refetch(started, keyserver):
    g = started
    keyserver.set_keys(g.jwks2)  # the issuer rotates: w1 is gone, w2 is new
    # The request that meets the new kid is refused at once and triggers the refetch.
    assert status_code(g, g.mint(key=g.key2, kid="w2")) == (401, "mandate_unknown_key")
    wait_for(lambda: keyserver.count() == 2, what="the refetch")
    wait_for(lambda: status_code(g, g.mint(key=g.key2, kid="w2")) == (200, None),
             what="the new key in use")
    assert keyserver.count() == 2
    # The new set replaced the old one: w1 is unknown now.
    assert status_code(g, g.mint()) == (401, "mandate_unknown_key")
    assert log_has(g, "refetched for an unknown kid")


def test_second_unknown_kid_within_30s_does_not_refetch(started, keyserver):
    g = started
    keyserver.set_keys(os.path.join(g.d, "wallet-1.jwks.json"), g.jwks2)  # w2 is added
    assert status_code(g, g.mint(key=g.key2, kid="w2")) == (401, "mandate_unknown_key")
    wait_for(lambda: status_code(g, g.mint(key=g.key2, kid="w2")) == (200, None),
             what="the first unknown-kid refetch")
    assert keyserver.count() == 2
    # Another unknown kid within 30 s: refused, not refetched, and the fetcher says why.
    assert status_code(g, g.mint(key=g.key2, kid="w3")) == (401, "mandate_unknown_key")
    wait_for(lambda: log_has(g, "unknown kid: not refetching"), what="the rate limit logged")
    stays(lambda: keyserver.count() == 2)
    assert status_code(g, g.mint()) == (200, None)


def test_server_down_keeps_the_last_set(started, keyserver):
    g = started
    keyserver.stop()
    g.gw.expect_error("never")  # a set is kept: failures are warnings, not errors
    assert status_code(g, g.mint(key=g.key2, kid="w2")) == (401, "mandate_unknown_key")
    wait_for(lambda: log_has(g, "failed: Connection refused; keeping the last good set"),
             what="the failed refetch logged")
    assert status_code(g, g.mint()) == (200, None)
    assert readyz(g)[0] == 200


def test_oversize_answer_is_refused_and_the_last_set_kept(started, keyserver):
    g = started
    keyserver.set_keys(g.jwks2)
    keyserver.mode = "oversize"
    assert status_code(g, g.mint(key=g.key2, kid="w2")) == (401, "mandate_unknown_key")
    wait_for(lambda: log_has(g, "the answer is over 65536 bytes"), what="the refusal logged")
    assert keyserver.count() >= 2
    assert status_code(g, g.mint()) == (200, None)
    assert status_code(g, g.mint(key=g.key2, kid="w2")) == (401, "mandate_unknown_key")


def test_slow_answer_is_refused_and_the_last_set_kept(started, keyserver):
    g = started
    keyserver.set_keys(g.jwks2)
    keyserver.mode = "slow"
    t0 = time.monotonic()
    assert status_code(g, g.mint(key=g.key2, kid="w2")) == (401, "mandate_unknown_key")
    assert time.monotonic() - t0 < 1.0, "the request waited for the fetch"
    wait_for(lambda: log_has(g, "not complete within 2000 ms"), timeout=6,
             what="the timeout logged")
    assert status_code(g, g.mint()) == (200, None)
    assert status_code(g, g.mint(key=g.key2, kid="w2")) == (401, "mandate_unknown_key")


def test_start_with_the_server_down_then_recovery(tmp_path, procs, keyserver):
    g = remote_gateway(str(tmp_path), procs, keyserver).start()
    g.gw.expect_error(r"jwks issuer wallet-1: fetching .* failed: .*no keys yet")
    wait_for(lambda: log_has(g, "no keys yet"), what="the failed first fetch logged")
    st, text = readyz(g)
    assert st == 503 and text == "no keys fetched yet for issuer wallet-1\n", text
    assert status_code(g, g.mint())[0] != 200
    keyserver.start()
    wait_for(lambda: readyz(g)[0] == 200, timeout=15, what="recovery")
    assert keyserver.count() >= 1
    assert status_code(g, g.mint()) == (200, None)


def test_reload_keeps_fetched_sets(started, keyserver):
    """SIGHUP: a set already fetched carries over to the new configuration (no 503 window, no
    refetch), even with the key server down."""
    import signal
    g = started
    keyserver.stop()
    g.gw.send(signal.SIGHUP)
    wait_for(lambda: log_has(g, "reloaded "), what="the reload")
    assert readyz(g)[0] == 200
    assert status_code(g, g.mint()) == (200, None)
    stays(lambda: not log_has(g, "failed"), 0.5)


def test_issuer_without_keys_gets_503_unavailable(tmp_path, procs, keyserver):
    g = remote_gateway(str(tmp_path), procs, keyserver).start()
    g.gw.expect_error(r"jwks issuer wallet-1: fetching .* failed: .*no keys yet")
    wait_for(lambda: log_has(g, "no keys yet"), what="the failed first fetch logged")
    # SPEC §7: until the first set is fetched, the issuer's mandates get 503 unavailable.
    assert status_code(g, g.mint()) == (503, "unavailable")


def test_config_refuses_plain_http_to_a_remote_host(tmp_path, procs):
    from conftest import binary, run
    g = Gateway(str(tmp_path), procs)
    for uri, why in [("http://192.0.2.1/jwks.json", "loopback"),
                     ("ftp://127.0.0.1/jwks.json", "https://"),
                     ("https://user@keys.example/jwks.json", "user information"),
                     ("https://keys.example:0/jwks.json", "port")]:
        g.conf["issuers"] = [{"id": "wallet-1", "jwks_uri": uri}]
        write_json(g.config_path, g.conf)
        r = run(binary("mandate-gateway"), "--config", g.config_path, "--check-config")
        assert r.returncode != 0 and "issuers[0].jwks_uri" in r.stderr and why in r.stderr, \
            (uri, r.stderr)
    g.conf["issuers"] = [{"id": "wallet-1", "jwks_uri": "http://127.0.0.1:9/jwks.json",
                          "jwks_file": "wallet-1.jwks.json"}]
    write_json(g.config_path, g.conf)
    r = run(binary("mandate-gateway"), "--config", g.config_path, "--check-config")
    assert r.returncode != 0 and "not both" in r.stderr, r.stderr


def test_rotated_remote_set_is_stored_for_the_auditor(started, keyserver):
    """A remote set fetched between reloads (the first one, then a rotation) goes into the log's
    key-set evidence: a config entry listing it, queued before any decision can use it, so that
    `mandate-audit verify` without --jwks checks the mandates signed with the rotated key."""
    import sqlite3
    from conftest import binary, run
    g = started
    keyserver.set_keys(g.jwks2)
    assert status_code(g, g.mint(key=g.key2, kid="w2")) == (401, "mandate_unknown_key")
    wait_for(lambda: status_code(g, g.mint(key=g.key2, kid="w2")) == (200, None),
             what="the rotated key in use")
    assert log_has(g, "storing the new key set of issuer wallet-1")
    assert g.gw.stop() == 0
    db = os.path.join(g.d, "gateway.db")
    c = sqlite3.connect(db)
    rows = c.execute("SELECT owner, jwks FROM keysets WHERE owner = 'wallet-1'").fetchall()
    cfg = [json.loads(e) for (e,) in c.execute("SELECT entry FROM entries ORDER BY seq")]
    c.close()
    assert sorted(json.loads(j)["keys"][0]["kid"] for _, j in rows) == ["w1", "w2"], rows
    cfg = [e for e in cfg if e["kind"] == "config"]
    # At start (no remote set yet), at the first fetch, at the rotation: one config_sha256.
    assert len(cfg) == 3 and len({e["config_sha256"] for e in cfg}) == 1, cfg
    assert [sorted(k["owner"] for k in e["keysets"]) for e in cfg] == \
        [["lux-hotels"], ["lux-hotels", "wallet-1"], ["lux-hotels", "wallet-1"]], cfg
    r = run(binary("mandate-audit"), "verify", "--db", db, "--checkpoint-key",
            os.path.join(g.d, "checkpoint.pub.pem"), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["allows"] == 2, rep
    assert rep["mandates_checked_stored"] == 2 and rep["mandates_unchecked"] == 0, rep
    assert rep["checked_with_stored_keysets"] == ["wallet-1"], rep
