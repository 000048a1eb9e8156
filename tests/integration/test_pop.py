"""Proof of possession (SPEC §7) through the real gateway: a mandate carrying cnf.jwk needs an RFC
9421 signature by that key, made here by an independent signer (Python's `cryptography`, the
signature base built from the RFC's rules), and every refusal of SPEC §7 is its own test."""
import base64
import hashlib
import json
import secrets
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from conftest import write_json


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Agent:
    """An agent key (Ed25519 or P-256), its public JWK, thumbprint and an RFC 9421 signer."""

    def __init__(self, kind="ed25519"):
        self.kind = kind
        if kind == "ed25519":
            self.priv = ed25519.Ed25519PrivateKey.generate()
            raw = self.priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            self.jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw)}
            members = '{"crv":"Ed25519","kty":"OKP","x":"%s"}' % self.jwk["x"]
        else:
            self.priv = ec.generate_private_key(ec.SECP256R1())
            n = self.priv.public_key().public_numbers()
            x, y = b64u(n.x.to_bytes(32, "big")), b64u(n.y.to_bytes(32, "big"))
            self.jwk = {"kty": "EC", "crv": "P-256", "x": x, "y": y}
            members = '{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}' % (x, y)
        self.thumb = b64u(hashlib.sha256(members.encode()).digest())

    def alg(self):
        return "ed25519" if self.kind == "ed25519" else "ecdsa-p256-sha256"

    def sign_bytes(self, data):
        if self.kind == "ed25519":
            return self.priv.sign(data)
        r, s = decode_dss_signature(self.priv.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def headers(self, method, authority, path, query, headers, body=None, components=None,
                created=None, expires=None, nonce=None, keyid=None, alg=None, label="mandate"):
        """Signature-Input and Signature (and Content-Digest for a body) per SPEC §7."""
        h = {k.lower(): v for k, v in headers.items()}
        out = {}
        if body:
            out["Content-Digest"] = "sha-256=:%s:" % base64.b64encode(
                hashlib.sha256(body.encode()).digest()).decode()
            h["content-digest"] = out["Content-Digest"]
        if components is None:
            components = ["@method", "@authority", "@path", "@query", "authorization"]
            if "mandate-cart" in h:
                components.append("mandate-cart")
            if body:
                components.append("content-digest")
        now = int(time.time())
        created = now if created is None else created
        expires = created + 30 if expires is None else expires
        nonce = nonce or b64u(secrets.token_bytes(24))
        params = "(%s);created=%d;expires=%d;nonce=\"%s\";keyid=\"%s\"" % (
            " ".join('"%s"' % c for c in components), created, expires, nonce,
            keyid or self.thumb)
        if alg:
            params += ';alg="%s"' % alg
        lines = []
        for c in components:
            v = {"@method": method, "@authority": authority, "@path": path,
                 "@query": "?" + (query or "")}.get(c, h.get(c))
            lines.append('"%s": %s' % (c, v))
        lines.append('"@signature-params": ' + params)
        sig = self.sign_bytes("\n".join(lines).encode())
        out["Signature-Input"] = "%s=%s" % (label, params)
        out["Signature"] = "%s=:%s:" % (label, base64.b64encode(sig).decode())
        return out


@pytest.fixture
def pop(gateway):
    gateway.conf["merchants"][0]["routes"] += [
        {"method": "POST", "path": "/pop/*", "action": "search"},
        {"method": "POST", "path": "/lux/search", "action": "search"}]
    write_json(gateway.config_path, gateway.conf)
    return gateway.start()


def call(g, agent, method="GET", path="/lux/search", query="q=1", body=None, tamper=None, tok=None,
         **sign):
    """A signed request with a mandate bound to agent's key; tamper(dict) may alter it after."""
    tok = tok or g.mint(cnf={"jwk": agent.jwk}, uses=10)
    hs = {"Authorization": "Mandate " + tok}
    hs.update(agent.headers(method, "127.0.0.1:%d" % g.port, path, query, hs, body, **sign))
    req = {"method": method, "path": path + ("?" + query if query else ""), "headers": hs,
           "body": body}
    if tamper:
        tamper(req)
    st, h, js, _ = g.request(req["method"], req["path"], headers=req["headers"], body=req["body"])
    return st, js, req


@pytest.mark.parametrize("kind", ["ed25519", "p256"])
def test_signed_request_allowed(pop, kind):
    agent = Agent(kind)
    st, js, _ = call(pop, agent)
    assert st == 200, js
    st, js, _ = call(pop, agent, method="POST", path="/pop/x", query="", body='{"n":1}')
    assert st == 200, js
    got = pop.received()[-1]
    assert got["body"] == '{"n":1}'
    names = {k.lower() for k, _ in got["headers"]}
    assert {"signature", "signature-input", "content-digest"} <= names  # forwarded unchanged


def deny(g, agent, code, **kw):
    before = len(g.received())
    st, js, _ = call(g, agent, **kw)
    assert (st, js and js["error"]) == (401, code), js
    assert len(g.barrier()) == before


def test_no_signature(pop):
    agent = Agent()
    tok = pop.mint(cnf={"jwk": agent.jwk})
    st, _, js, _ = pop.request("GET", "/lux/search", tok)
    assert (st, js["error"]) == (401, "signature_missing")


def test_another_label_is_missing(pop):
    deny(pop, Agent(), "signature_missing", label="other")


def test_wrong_key(pop):
    agent, thief = Agent(), Agent()
    tok = pop.mint(cnf={"jwk": agent.jwk})

    def resign(req):
        req["headers"].update(thief.headers("GET", "127.0.0.1:%d" % pop.port, "/lux/search",
                                            "q=1", req["headers"], keyid=agent.thumb))
    deny(pop, agent, "signature_invalid", tok=tok, tamper=resign)


@pytest.mark.parametrize("what", ["method", "path", "query", "authorization", "body"])
def test_tampered(pop, what):
    agent = Agent("p256")
    other = pop.mint(cnf={"jwk": agent.jwk}, uses=10)
    kw = {"method": "POST", "path": "/pop/a", "query": ""} if what in ("path", "body") else {}
    if what == "body":
        kw["body"] = '{"n":1}'

    def tamper(req):
        if what == "method":
            req["method"] = "POST"
        elif what == "path":
            req["path"] = "/pop/b"
        elif what == "query":
            req["path"] = "/lux/search?q=2"
        elif what == "authorization":
            req["headers"]["Authorization"] = "Mandate " + other
        else:
            req["body"] = '{"n":2}'
    deny(pop, agent, "signature_invalid", tamper=tamper, **kw)


def test_stale_created_and_long_expires(pop):
    agent = Agent()
    now = int(time.time())
    deny(pop, agent, "signature_invalid", created=now + 120, expires=now + 150)
    deny(pop, agent, "signature_invalid", created=now - 100, expires=now - 70)
    deny(pop, agent, "signature_invalid", created=now, expires=now + 61)


def test_replayed_nonce(pop):
    agent = Agent()
    nonce = b64u(secrets.token_bytes(24))
    st, js, _ = call(pop, agent, nonce=nonce)
    assert st == 200, js
    deny(pop, agent, "signature_replayed", nonce=nonce)


def test_stolen_mandate_replayed_by_another_process(pop):
    """The mandate and even a whole signed request copied: the signature cannot be made again
    without the key, and the copied one is refused as a replay."""
    agent = Agent()
    st, js, req = call(pop, agent)
    assert st == 200, js
    before = len(pop.received())
    st, _, js, _ = pop.request(req["method"], req["path"], headers=req["headers"])
    assert (st, js["error"]) == (401, "signature_replayed")
    bare = {"Authorization": req["headers"]["Authorization"]}
    st, _, js, _ = pop.request("GET", "/lux/search?q=1", headers=bare)
    assert (st, js["error"]) == (401, "signature_missing")
    assert len(pop.barrier()) == before


def test_wrong_keyid_and_alg(pop):
    agent = Agent()
    deny(pop, agent, "signature_invalid", keyid="A" * 43)
    deny(pop, agent, "signature_invalid", alg="ecdsa-p256-sha256")
    st, js, _ = call(pop, agent, alg="ed25519")
    assert st == 200, js


def test_missing_component(pop):
    deny(pop, Agent(), "signature_invalid",
         components=["@method", "@authority", "@path", "authorization"])


def test_require_pop(gateway):
    gateway.conf["merchants"][0]["require_pop"] = True
    write_json(gateway.config_path, gateway.conf)
    g = gateway.start()
    st, _, js, _ = g.request("GET", "/lux/search", g.mint())
    assert (st, js["error"]) == (401, "signature_missing")
    st, js, _ = call(g, Agent())
    assert st == 200, js


def test_bad_cnf_is_malformed(pop):
    for cnf in ({"jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}, {"jwk": "x"},
                {"jwk": Agent().jwk, "extra": 1}):
        st, _, js, _ = pop.request("GET", "/lux/search", pop.mint(cnf=cnf))
        assert (st, js["error"]) == (401, "mandate_malformed"), cnf


def test_client_leaving_during_a_signed_body_writes_nothing(pop):
    """A PoP request whose covered body is still being read when the client leaves was never
    decided: no decision, no outcome in the log (the old code wrote an outcome for it)."""
    import socket
    agent = Agent()
    tok = pop.mint(cnf={"jwk": agent.jwk}, uses=10)
    body = '{"n":1}'
    hs = {"Authorization": "Mandate " + tok}
    hs.update(agent.headers("POST", "127.0.0.1:%d" % pop.port, "/pop/x", None, hs, body))
    head = "POST /pop/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 100\r\n" % pop.port
    head += "".join("%s: %s\r\n" % kv for kv in hs.items()) + "\r\n"
    s = socket.create_connection(("127.0.0.1", pop.port))
    s.sendall(head.encode() + body.encode())  # 7 of the 100 bytes announced
    from conftest import wait_for
    s.close()
    wait_for(lambda: '"status":499' in pop.gw.output(), what="the request's end")
    assert pop.gw.stop() == 0
    import os
    from conftest import binary, run
    r = run(binary("mandate-audit"), "export", "--db", os.path.join(pop.d, "gateway.db"))
    kinds = [json.loads(l)["kind"] for l in r.stdout.splitlines()]
    assert "outcome" not in kinds and "decision" not in kinds, kinds
