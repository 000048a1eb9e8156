"""Shared fixtures for the integration tests: they start the real binaries from $BUILD on
127.0.0.1, on free ports, wait with bounded loops, and stop what they started by PID."""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))


def binary(name):
    path = os.path.join(BUILD, name)
    assert os.access(path, os.X_OK), f"{path} is not built"
    return path


def run(*args, **kw):
    """Run a program to completion (bounded) and return the CompletedProcess."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, **kw)


_ports_given = set()


def free_port():
    """A port below Linux's ephemeral range (32768+), so that no client connection's local port
    can take it between now and the server's bind, and never one this run handed out before
    (two picks for one gateway, made before either is bound, must not collide)."""
    import random
    while True:
        port = random.randrange(20000, 32000)
        if port in _ports_given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port


def keygen(d, name, alg="ES256", kid=None):
    """Write d/name.pem and d/name.jwks.json with mandate-wallet keygen; returns the paths."""
    pem, jwks, pub = (os.path.join(d, f"{name}{ext}") for ext in (".pem", ".jwks.json", ".pub.pem"))
    r = run(binary("mandate-wallet"), "keygen", "--alg", alg, "--kid", kid or name,
            "--out", pem, "--jwks", jwks, "--pub", pub)
    assert r.returncode == 0, r.stderr
    return pem, jwks, pub


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
    return path


def sha256_hex(s):
    return hashlib.sha256(s.encode()).hexdigest()


def read_jsonl(path):
    """The JSON lines of path; [] while it does not exist."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_for(cond, timeout=5.0, what="condition"):
    """Poll cond() until it is true (bounded); returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"{what} not met within {timeout}s")


def wait_port(port, proc=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listening on {port} after {timeout}s")


SANITIZER = re.compile(r"ERROR: (Address|Leak|Thread|UndefinedBehavior)Sanitizer|runtime error:|"
                       r"SUMMARY: \w+Sanitizer")


class Proc:
    """A started program; stop() signals it by PID and waits (bounded), then kills.

    Our own programs (under $BUILD) are checked when the test ends: stopped with SIGTERM, they must
    exit 0, every line of their output must be JSON, and it must hold no sanitizer report and no
    "level":"error" line other than those the test declared with expect_error(regex)."""

    def __init__(self, args, log_path, env=None, preexec_fn=None):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.ours = os.path.abspath(args[0]).startswith(BUILD + os.sep)
        self.allowed = []
        self.p = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=env,
                                  start_new_session=True, preexec_fn=preexec_fn)
        self.pid = self.p.pid

    def expect_error(self, pattern):
        """Declare that an error line matching pattern is expected from this process."""
        self.allowed.append(re.compile(pattern))
        return self

    def send(self, sig):
        if self.p.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout):
        return self.p.wait(timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.p.poll() is None:
            os.kill(self.pid, sig)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
        if not self.log.closed:
            self.log.close()
        return self.p.returncode

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def problems(self):
        """What the end-of-test check finds wrong in this process's output, as a list of lines."""
        if not self.ours:
            return []
        out = self.output()
        bad = [l for l in out.splitlines() if SANITIZER.search(l)]
        for line in out.splitlines():
            try:
                json.loads(line)
            except ValueError:
                if not SANITIZER.search(line):
                    bad.append("not a JSON line: " + line[:200])
            if '"level":"error"' in line and not any(a.search(line) for a in self.allowed):
                bad.append(line)
        return bad


@pytest.fixture
def procs():
    """Every Proc appended here is stopped with SIGTERM at the end of the test, whatever happened;
    then our programs' exit status and logs are checked (see Proc)."""
    started = []
    yield started
    failures = []
    for p in reversed(started):
        killed_by_test = p.p.poll() is not None
        rc = p.stop()
        if p.ours and not killed_by_test and rc != 0:
            failures.append(f"{p.log_path}: exit status {rc} after SIGTERM")
        failures += [f"{p.log_path}: {line}" for line in p.problems()]
    assert not failures, "\n".join(failures[:20])


# --- a gateway in front of the stub upstream, with a wallet key to mint mandates ---------------

from jwcrypto import jwk as _jwk, jws as _jws  # noqa: E402
import base64  # noqa: E402
import http.client  # noqa: E402
import secrets  # noqa: E402
import sys  # noqa: E402

ADMIN_TOKEN = "admin-token-for-tests"
HERE = os.path.dirname(os.path.abspath(__file__))


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Gateway:
    """Keys, configuration, the stub upstream and the gateway, all under one temporary dir."""

    def __init__(self, d, procs, merchant="stub", **limits):
        self.d = d
        self.procs = procs
        self.merchant = merchant
        self.port, self.admin_port, self.up_port = free_port(), free_port(), free_port()
        self.record = os.path.join(d, "upstream.jsonl")
        open(self.record, "w").close()
        keygen(d, "wallet-1", kid="w1")
        keygen(d, "checkpoint", "EdDSA", kid="cp")
        with open(os.path.join(d, "wallet-1.pem"), "rb") as f:
            self.key = _jwk.JWK.from_pem(f.read())
        self.conf = {
            "listen": f"127.0.0.1:{self.port}", "workers": 2, "database": "gateway.db",
            "admin": {"listen": f"127.0.0.1:{self.admin_port}",
                      "token_sha256": sha256_hex(ADMIN_TOKEN)},
            "audit": {"origin": "test.example/audit", "checkpoint_key": "checkpoint.pem",
                      "checkpoint_every": 100},
            "limits": {"max_body_bytes": 4096, "max_header_bytes": 4096,
                       "upstream_timeout_ms": 1500, **limits},
            "rate_limit": {"per_agent_per_s": 1000, "burst": 1000},
            "issuers": [{"id": "wallet-1", "jwks_file": "wallet-1.jwks.json"}],
            "merchants": [{"id": "lux-hotels", "upstream": f"http://127.0.0.1:{self.up_port}",
                           "routes": [
                               {"method": "GET", "path": "/lux/search", "action": "search"},
                               {"method": "POST", "path": "/lux/quote", "action": "quote_room"},
                               {"method": "POST", "path": "/lux/book", "action": "book_room",
                                "priced": True},
                               {"method": "GET", "path": "/lux/bookings/*",
                                "action": "get_booking"},
                               {"method": "GET", "path": "/slow/*", "action": "search"},
                               {"method": "GET", "path": "/delay/*", "action": "search"},
                               {"method": "GET", "path": "/big/*", "action": "search"},
                               {"method": "GET", "path": "/status/*", "action": "search"},
                               {"method": "GET", "path": "/drop/*", "action": "search"},
                               {"method": "PUT", "path": "/drop/*", "action": "book_room",
                                "priced": True},
                           ]}],
        }
        # The merchant's key: the gateway checks carts with it (priced routes need it).
        keygen(d, "lux-hotels", kid="lux1")
        with open(os.path.join(d, "lux-hotels.pem"), "rb") as f:
            self.merchant_key = _jwk.JWK.from_pem(f.read())
        self.conf["merchants"][0]["jwks_file"] = "lux-hotels.jwks.json"
        self.config_path = os.path.join(d, "gateway.json")
        write_json(self.config_path, self.conf)
        self.upstream = None
        self.gw = None

    def start_upstream(self):
        if self.merchant == "lux":
            args = [binary("examples/lux-hotels/lux-hotels"), "--listen",
                    f"127.0.0.1:{self.up_port}", "--key", os.path.join(self.d, "lux-hotels.pem"),
                    "--kid", "lux1"]
        else:
            args = [sys.executable, os.path.join(HERE, "stub_upstream.py"), str(self.up_port),
                    self.record]
        self.upstream = Proc(args, os.path.join(self.d, "up.log"))
        self.procs.append(self.upstream)
        wait_port(self.up_port, self.upstream.p)

    def start(self, upstream=True):
        if upstream and self.upstream is None:
            self.start_upstream()
        self.gw = Proc([binary("mandate-gateway"), "--config", self.config_path],
                       os.path.join(self.d, "gateway.log"))
        self.procs.append(self.gw)
        wait_port(self.port, self.gw.p)
        wait_port(self.admin_port, self.gw.p)
        return self

    def mint(self, typ="intent-mandate+jwt", key=None, kid="w1", alg="ES256", **claims):
        now = int(time.time())
        c = {"iss": "wallet-1", "sub": "alice", "act": {"sub": "agent-planner"},
             "aud": "lux-hotels", "action": "search", "iat": now, "exp": now + 60,
             "jti": "t-" + secrets.token_hex(12)}
        c.update(claims)
        c = {k: v for k, v in c.items() if v is not None}
        t = _jws.JWS(json.dumps(c).encode())
        t.add_signature(key or self.key, alg,
                        protected=json.dumps({"alg": alg, "kid": kid, "typ": typ}))
        return t.serialize(compact=True)

    def sign(self, claims, typ, key, kid):
        t = _jws.JWS(json.dumps(claims).encode())
        t.add_signature(key, "ES256", protected=json.dumps({"alg": "ES256", "kid": kid,
                                                            "typ": typ}))
        return t.serialize(compact=True)

    def cart(self, total=18000, sub="alice", key=None, kid="lux1", **over):
        """A cart signed by the merchant's key (or another), as /lux/quote would sign it."""
        now = int(time.time())
        c = {"iss": "lux-hotels", "sub": sub, "jti": "cart-" + secrets.token_hex(10),
             "iat": now, "exp": now + 600, "action": "book_room",
             "items": [{"sku": "deluxe", "qty": 1, "unit": {"value": total, "currency": "EUR"}}],
             "total": {"value": total, "currency": "EUR"}}
        c.update(over)
        return self.sign(c, "cart-mandate+jwt", key or self.merchant_key, kid)

    def pay(self, cart, cap=50000, period="day", **over):
        """A payment mandate from the wallet's key for cart, bound to its hash and total."""
        payload = json.loads(base64.urlsafe_b64decode(cart.split(".")[1] + "=="))
        claims = dict(typ="payment-mandate+jwt", sub=payload["sub"], action="book_room",
                      cart=b64url(hashlib.sha256(cart.encode()).digest()),
                      total=payload["total"],
                      cap={"value": cap, "currency": "EUR", "period": period})
        claims.update(over)
        return self.mint(**claims)

    def book(self, payment, cart, query=""):
        h = {"Mandate-Cart": cart} if cart else {}
        return self.request("POST", "/lux/book" + query, payment, headers=h, body="{}")

    def bookings(self):
        return self.request("GET", "/lux/_stats", port=self.up_port)[2]["bookings"]

    def request(self, method, path, token=None, headers=None, body=None, port=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Mandate " + token
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        try:
            js = json.loads(data)
        except ValueError:
            js = None
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), js, data

    def admin(self, method, path, body=None, token=ADMIN_TOKEN):
        h = {"Authorization": "Bearer " + token} if token else {}
        if body is not None:
            body = json.dumps(body)
            h["Content-Type"] = "application/json"
        return self.request(method, path, headers=h, body=body, port=self.admin_port)

    def barrier(self):
        """Prove that nothing else reaches the merchant: send one allowed request after whatever
        the test did, wait until the merchant has it, and return what it received before it."""
        tag = secrets.token_hex(8)
        tok = self.mint(sub="barrier-principal", act={"sub": "barrier-agent"})
        assert self.request("GET", "/lux/search?barrier=" + tag, tok)[0] == 200
        got = wait_for(lambda: [r for r in self.received()
                                if r.get("path", "").endswith("barrier=" + tag)] and
                       self.received(), what="barrier request at the merchant")
        return got[:-1] if got[-1].get("path", "").endswith(tag) else got

    def received(self):
        with open(self.record) as f:
            return [json.loads(line) for line in f if line.strip()]


@pytest.fixture
def gateway(tmp_path, procs):
    return Gateway(str(tmp_path), procs)


@pytest.fixture
def shop(tmp_path, procs):
    """The gateway in front of the demo merchant, lux-hotels."""
    return Gateway(str(tmp_path), procs, merchant="lux")


def raw(port, data, timeout=5):
    """Send raw bytes, return everything the server answers until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
                if b"\r\n\r\n" in out and b"Content-Length" in out:
                    head, _, body = out.partition(b"\r\n\r\n")
                    n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    if len(body) >= n:
                        break
        except socket.timeout:
            pass
    return out


# --- the whole stack: wallet, gateway, demo merchant --------------------------------------------

AGENT_TOKEN = "agent-planner-secret-token"
WALLET_ADMIN = "wallet-admin-token"


class Stack(Gateway):
    def __init__(self, d, procs):
        super().__init__(d, procs, merchant="lux")
        self.wallet_port = free_port()
        with open(os.path.join(d, "gateway-admin.token"), "w") as f:
            f.write(ADMIN_TOKEN + "\n")
        with open(os.path.join(d, "wallet-admin.token"), "w") as f:
            f.write(WALLET_ADMIN + "\n")
        self.wallet_conf = {
            "id": "wallet-1", "listen": f"127.0.0.1:{self.wallet_port}", "database": "wallet.db",
            "signing_key": {"kid": "w1", "alg": "ES256", "file": "wallet-1.pem"},
            "admin": {"token_sha256": sha256_hex(WALLET_ADMIN)},
            "default_ttl_s": 60, "max_ttl_s": 300,
            "merchants": [{"id": "lux-hotels", "jwks_file": "lux-hotels.jwks.json"}],
            "principals": [{
                "id": "alice",
                "spend_cap": {"value": 50000, "currency": "EUR", "period": "day"},
                "max_per_payment": {"value": 20000, "currency": "EUR"},
                "approval_above": {"value": 15000, "currency": "EUR"},
                "allow": [{"merchant": "lux-hotels",
                           "actions": ["search", "quote_room", "book_room", "get_booking"]}]}],
            "agents": [{"id": "agent-planner", "principal": "alice",
                        "token_sha256": sha256_hex(AGENT_TOKEN)}],
            "gateways": [{"admin_url": f"http://127.0.0.1:{self.admin_port}",
                          "token_file": "gateway-admin.token"}],
        }
        self.wallet_path = write_json(os.path.join(d, "wallet.json"), self.wallet_conf)
        self.wallet = None

    def start(self, upstream=True):
        super().start(upstream)
        self.wallet = Proc([binary("mandate-wallet"), "--config", self.wallet_path],
                           os.path.join(self.d, "wallet.log"))
        self.procs.append(self.wallet)
        wait_port(self.wallet_port, self.wallet.p)
        return self

    def w(self, method, path, body=None, token=AGENT_TOKEN):
        h = {"Authorization": "Bearer " + token} if token else {}
        return self.request(method, path, headers=h,
                            body=json.dumps(body) if body is not None else None,
                            port=self.wallet_port)

    def intent(self, action, **over):
        st, _, body, _ = self.w("POST", "/v1/mandates/intent",
                                {"merchant": "lux-hotels", "action": action, **over})
        assert st == 201, body
        return body["mandate"]

    def quote(self, sku="deluxe", nights=1):
        st, _, body, _ = self.request("POST", "/lux/quote", self.intent("quote_room"),
                                      body=json.dumps({"sku": sku, "nights": nights}))
        assert st == 201, body
        return body["cart"]


@pytest.fixture
def stack(tmp_path, procs):
    return Stack(str(tmp_path), procs).start()
