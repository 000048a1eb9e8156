"""Proof of possession, the wallet and agent side (SPEC §7): an agent entry's `jwk` is validated at
load with JSON-path errors; minted intent and payment mandates (approved ones included) carry
`cnf.jwk`, the configured public key in canonical form; and the example signer's headers verify
with an independent RFC 9421 implementation written here (signature base rebuilt per §2.5,
signatures checked with the `cryptography` package, thumbprints per RFC 7638, digests per
RFC 9530)."""
import base64
import hashlib
import json
import os
import re
import time

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from conftest import (AGENT_TOKEN, Proc, Stack, binary, keygen, run, sha256_hex, wait_port,
                      write_json)

SIGNER = "examples/agent/sign-request"


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64url_dec(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def payload(jws):
    return json.loads(b64url_dec(jws.split(".")[1]))


def public_jwk(jwks_path):
    """The key keygen wrote, as the operator would paste it (kid, alg, use included)."""
    with open(jwks_path) as f:
        return json.load(f)["keys"][0]


def canonical(jwk):
    return {k: jwk[k] for k in ("kty", "crv", "x", "y") if k in jwk}


def thumbprint(jwk):
    """RFC 7638 §3: the required members, sorted, no whitespace; SHA-256; base64url."""
    req = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("crv", "kty", "x")
    js = json.dumps({k: jwk[k] for k in req}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(js.encode()).digest())


# --- the wallet: agents[].jwk and cnf ------------------------------------------------------------

def start_wallet(stack):
    """Only the wallet of the stack (no gateway needed to mint; revocations are not used here)."""
    write_json(stack.wallet_path, stack.wallet_conf)
    stack.wallet = Proc([binary("mandate-wallet"), "--config", stack.wallet_path],
                        os.path.join(stack.d, "wallet.log"))
    stack.procs.append(stack.wallet)
    wait_port(stack.wallet_port, stack.wallet.p)
    return stack


@pytest.fixture
def wallet_stack(tmp_path, procs):
    return Stack(str(tmp_path), procs)


def check_config(stack):
    write_json(stack.wallet_path, stack.wallet_conf)
    return run(binary("mandate-wallet"), "--config", stack.wallet_path, "--check-config")


def test_bad_agent_jwk_refused_with_its_path(wallet_stack):
    s = wallet_stack
    _, jwks, _ = keygen(s.d, "agent-ec", "ES256")
    _, okp_jwks, _ = keygen(s.d, "agent-ed", "EdDSA")
    good, okp = public_jwk(jwks), public_jwk(okp_jwks)
    rsa = {"kty": "RSA", "e": "AQAB", "n": b64url(os.urandom(256))}
    cases = [
        (dict(good, d=b64url(os.urandom(32))), "agents[0].jwk.d: a private key member"),
        (dict(okp, d=b64url(os.urandom(32))), "agents[0].jwk.d: a private key member"),
        (rsa, "agents[0].jwk.kty: expected EC or OKP"),
        (dict(good, crv="P-384"), "agents[0].jwk.crv: expected P-256"),
        (dict(okp, crv="X25519"), "agents[0].jwk.crv: expected Ed25519"),
        (dict(good, x=okp["x"]), "agents[0].jwk.x: "),  # not a point on P-256 with that y
        (dict(okp, x="AAAA"), "agents[0].jwk.x: "),
        (good["x"], "agents[0].jwk: expected an object"),
        ([good], "agents[0].jwk: expected an object"),
    ]
    for jwk, want in cases:
        s.wallet_conf["agents"][0]["jwk"] = jwk
        r = check_config(s)
        assert r.returncode == 1 and "wallet.json: " + want in r.stderr, (jwk, r.stderr)
        # The wallet does not start with it either.
        r = run(binary("mandate-wallet"), "--config", s.wallet_path)
        assert r.returncode == 1 and want in r.stderr, r.stderr
    s.wallet_conf["agents"][0]["jwk"] = good
    r = check_config(s)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_minted_mandates_carry_cnf_jwk(wallet_stack, alg):
    s = wallet_stack
    pem, jwks, _ = keygen(s.d, "agent", alg, kid="agent-key-1")
    configured = public_jwk(jwks)
    assert {"kid", "alg", "use"} <= set(configured)
    s.wallet_conf["agents"][0]["jwk"] = configured
    other = "other-agent-token"
    s.wallet_conf["agents"].append({"id": "agent-bearer", "principal": "alice",
                                    "token_sha256": sha256_hex(other)})
    start_wallet(s)
    want = canonical(configured)
    # The signer derives the same public key from the private one.
    r = run(binary(SIGNER), "--key", pem, "--jwk", "--keyid")
    assert r.returncode == 0, r.stderr
    jwk_line, keyid = r.stdout.splitlines()
    assert json.loads(jwk_line) == want and keyid == thumbprint(want)

    # Intent: cnf.jwk is exactly the canonical public key (no kid, alg, use; no private member).
    claims = payload(s.intent("search"))
    assert claims["cnf"] == {"jwk": want}
    assert claims["act"] == {"sub": "agent-planner"}

    # Payment, minted at once (under approval_above).
    cart = s.cart(total=9000)
    st, _, body, _ = s.w("POST", "/v1/mandates/payment", {"cart": cart})
    assert st == 201, body
    assert payload(body["mandate"])["cnf"] == {"jwk": want}

    # Payment minted when alice approves (another code path: the approval).
    st, _, body, _ = s.w("POST", "/v1/mandates/payment", {"cart": s.cart(total=18000)})
    assert st == 202, body
    aid = body["approval_id"]
    r = run(binary("mandate-wallet"), "approve", aid, "--config", s.wallet_path,
            "--admin-token-file", os.path.join(s.d, "wallet-admin.token"))
    assert r.returncode == 0, r.stderr
    st, _, body, _ = s.w("GET", f"/v1/approvals/{aid}")
    assert body["status"] == "approved", body
    assert payload(body["mandate"])["cnf"] == {"jwk": want}

    # An agent without a jwk still gets bearer mandates.
    st, _, body, _ = s.w("POST", "/v1/mandates/intent",
                         {"merchant": "lux-hotels", "action": "search"}, token=other)
    assert st == 201, body
    assert "cnf" not in payload(body["mandate"])


# --- the example signer against an independent RFC 9421 verifier --------------------------------

SF_STRING = r'"(?:[^"\\]|\\[\\"])*"'


def parse_signature_input(value):
    """RFC 8941 Dictionary with one member, label=(inner list of strings);params. Returns the
    label, the component names, the params (ints or strings) and the serialised inner list."""
    m = re.fullmatch(r'([a-z*][a-z0-9_.*-]*)=(\((?:%s(?: %s)*)?\)((?:;[a-z*][a-z0-9_.*-]*=(?:-?\d+|%s))*))'
                     % (SF_STRING, SF_STRING, SF_STRING), value)
    assert m, value
    label, inner = m.group(1), m.group(2)
    comps = [json.loads(c) for c in re.findall(SF_STRING, inner[:inner.index(")") + 1])]
    params = {}
    for k, v in re.findall(r';([a-z*][a-z0-9_.*-]*)=(-?\d+|%s)' % SF_STRING, m.group(3)):
        assert k not in params, "duplicate parameter " + k
        params[k] = json.loads(v) if v.startswith('"') else int(v)
    # Re-serialise (RFC 8941 §4.1.1.1) rather than trust the text: it must be canonical.
    ser = "(" + " ".join('"%s"' % c for c in comps) + ")" + "".join(
        ";%s=%s" % (k, ('"%s"' % v) if isinstance(v, str) else v) for k, v in params.items())
    assert ser == inner, (ser, inner)
    return label, comps, params, ser


def signature_base(method, url, headers, comps, ser):
    """RFC 9421 §2.5 for a request to url with these header fields (name -> value)."""
    scheme, rest = url.split("://", 1)
    authority, _, target = rest.partition("/")
    path, q, query = ("/" + target).partition("?")
    host, _, port = authority.partition(":")
    authority = host.lower() + ("" if port in ("", {"http": "80", "https": "443"}[scheme])
                                else ":" + port)  # RFC 9110 §4.2.3 normalisation
    lower = {k.lower(): v.strip() for k, v in headers.items()}
    lines = []
    for c in comps:
        if c == "@method":
            v = method
        elif c == "@authority":
            v = authority
        elif c == "@path":
            v = path
        elif c == "@query":
            v = "?" + query  # "?" alone when there is none (§2.2.7)
        else:
            v = lower[c]
        lines.append('"%s": %s' % (c, v))
    lines.append('"@signature-params": ' + ser)
    return "\n".join(lines).encode()


def verify_raw(pem_path, sig, base):
    with open(pem_path, "rb") as f:
        pub = serialization.load_pem_private_key(f.read(), None).public_key()
    if isinstance(pub, ed25519.Ed25519PublicKey):
        assert len(sig) == 64
        pub.verify(sig, base)
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    assert len(sig) == 64  # raw r||s (RFC 9421 §3.3.4), not DER
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, base, ec.ECDSA(hashes.SHA256()))
    n = pub.public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64url(n.x.to_bytes(32, "big")),
            "y": b64url(n.y.to_bytes(32, "big"))}


def sign(pem, method, url, headers, body=None, body_file=None, *extra):
    args = [binary(SIGNER), "--key", pem, "--method", method, "--url", url]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    if body is not None:
        args += ["--data", body]
    if body_file is not None:
        args += ["--body", body_file]
    r = run(*args, *extra)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition(": ")
        assert k not in out
        out[k] = v
    return out


MANDATE = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
CART = "eyJhbGciOiJFUzI1NiJ9.eyJ0b3RhbCI6MX0.Y2FydA"


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_signer_output_verifies_independently(tmp_path, alg):
    d = str(tmp_path)
    pem, _, _ = keygen(d, "agent", alg)
    body = '{"sku": "deluxe",\n "nights": 2}\n'
    with open(os.path.join(d, "body.json"), "w") as f:
        f.write(body)
    cases = [  # method, url, headers, body, body_file, components that must be covered
        ("GET", "http://127.0.0.1:8080/lux/search", {"Authorization": "Mandate " + MANDATE},
         None, None, []),
        ("GET", "http://127.0.0.1:8080/lux/search?city=Luxembourg&n=2",
         {"Authorization": "Mandate " + MANDATE, "Accept": "application/json"}, None, None, []),
        ("POST", "http://127.0.0.1:8080/lux/book", {"Authorization": "Mandate " + MANDATE,
                                                    "Mandate-Cart": CART},
         "{}", None, ["mandate-cart", "content-digest"]),
        ("POST", "http://API.Example.com:80/lux/quote", {"authorization": " Mandate " + MANDATE},
         None, os.path.join(d, "body.json"), ["content-digest"]),
        ("PUT", "https://shop.example:8443/a%20b/c?", {"Authorization": "Mandate " + MANDATE},
         "", None, []),  # an empty body: no digest
    ]
    nonces = set()
    for method, url, headers, data, body_file, extra in cases:
        t0 = int(time.time())
        out = sign(pem, method, url, headers, data, body_file)
        t1 = int(time.time())
        sent = data if data is not None else (body if body_file else "")
        want_headers = {"Signature-Input", "Signature"} | ({"Content-Digest"} if sent else set())
        assert set(out) == want_headers, out
        hdrs = dict(headers)
        if sent:
            assert out["Content-Digest"] == "sha-256=:%s:" % base64.b64encode(
                hashlib.sha256(sent.encode()).digest()).decode()
            hdrs["Content-Digest"] = out["Content-Digest"]
        label, comps, params, ser = parse_signature_input(out["Signature-Input"])
        assert label == "mandate"
        assert comps == ["@method", "@authority", "@path", "@query", "authorization"] + extra
        assert t0 <= params["created"] <= t1
        assert 0 < params["expires"] - params["created"] <= 60
        assert re.fullmatch(r"[A-Za-z0-9_-]{16,64}", params["nonce"])
        assert params["nonce"] not in nonces
        nonces.add(params["nonce"])
        assert params["alg"] == {"ES256": "ecdsa-p256-sha256", "EdDSA": "ed25519"}[alg]
        m = re.fullmatch(r"mandate=:([A-Za-z0-9+/=]+):", out["Signature"])
        assert m, out["Signature"]
        sig = base64.b64decode(m.group(1), validate=True)
        base = signature_base(method, url, hdrs, comps, ser)
        pub = verify_raw(pem, sig, base)
        assert params["keyid"] == thumbprint(pub)
        # The check is not vacuous: any covered change breaks it.
        for tampered in (base.replace(b'"@method": ' + method.encode(), b'"@method": DELETE'),
                         base.replace(b"/lux/", b"/lux2/") if b"/lux/" in base else base + b"x",
                         base.replace(MANDATE.encode(), MANDATE[:-1].encode() + b"x")):
            assert tampered != base
            with pytest.raises(InvalidSignature):
                verify_raw(pem, sig, tampered)


def test_signer_window_and_created(tmp_path):
    pem, _, _ = keygen(str(tmp_path), "agent", "EdDSA")
    h = {"Authorization": "Mandate " + MANDATE}
    out = sign(pem, "GET", "http://127.0.0.1:1/x", h, None, None,
               "--created", "1700000000", "--expires-in", "10")
    _, comps, params, ser = parse_signature_input(out["Signature-Input"])
    assert (params["created"], params["expires"]) == (1700000000, 1700000010)
    sig = base64.b64decode(out["Signature"][len("mandate=:"):-1])
    verify_raw(pem, sig, signature_base("GET", "http://127.0.0.1:1/x", h, comps, ser))
    base = [binary(SIGNER), "--key", pem, "--method", "GET", "--url", "http://127.0.0.1:1/x"]
    for bad in (["--expires-in", "61"], ["--expires-in", "0"], []):  # [] : no Authorization
        r = run(*base, *bad, *([] if not bad else ["-H", "Authorization: Mandate x"]))
        assert r.returncode == 1 and r.stdout == "" and "sign-request:" in r.stderr, r
    for bad in (["-H", "Content-Digest: sha-256=:AA==:"], ["-H", "no colon"],
                ["--url", "ftp://x/"], ["--url", "http://u@h/"], ["--data", "a", "--body", pem]):
        r = run(*base, "-H", "Authorization: Mandate x", *bad)
        assert r.returncode == 1 and r.stdout == "", (bad, r)


# --- end to end: the wallet's cnf mandate, the signer, the gateway ------------------------------

def signed_request(stack, pem, method, path, token, headers=None, body=None):
    h = {"Authorization": "Mandate " + token, **(headers or {})}
    out = sign(pem, method, f"http://127.0.0.1:{stack.port}{path}", h, body) if pem else {}
    return stack.request(method, path, headers={**h, **out}, body=body)


def test_wallet_mandate_signed_by_agent_passes_the_gateway(tmp_path, procs):
    """Needs the gateway's SPEC §7 checks: the agent's signed requests pass, a copy of the mandate
    alone does not."""
    s = Stack(str(tmp_path), procs)
    pem, jwks, _ = keygen(s.d, "agent", "ES256")
    s.wallet_conf["agents"][0]["jwk"] = public_jwk(jwks)
    write_json(s.wallet_path, s.wallet_conf)
    s.start()
    tok = s.intent("search", uses=3)
    st, _, body, _ = signed_request(s, None, "GET", "/lux/search", tok)
    assert (st, body["error"]) == (401, "signature_missing")
    thief_pem, _, _ = keygen(s.d, "thief", "ES256")
    st, _, body, _ = signed_request(s, thief_pem, "GET", "/lux/search", tok)
    assert (st, body["error"]) == (401, "signature_invalid")
    st, _, body, _ = signed_request(s, pem, "GET", "/lux/search?city=lux", tok)
    assert st == 200 and body["rooms"], body
    # A body: covered by Content-Digest.
    st, _, body, _ = signed_request(s, pem, "POST", "/lux/quote", s.intent("quote_room"),
                                    {"Content-Type": "application/json"},
                                    json.dumps({"sku": "standard", "nights": 1}))
    assert st == 201, body
    cart = body["cart"]
    st, _, body, _ = s.w("POST", "/v1/mandates/payment", {"cart": cart})
    assert st == 201, body
    st, _, body, _ = signed_request(s, pem, "POST", "/lux/book", body["mandate"],
                                    {"Mandate-Cart": cart}, "{}")
    assert st == 201 and body["amount"] == "9000 EUR", body
