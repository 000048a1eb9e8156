"""The three programs' command lines: --help, --version, keygen, --check-config."""
import json
import os
import stat

from jwcrypto import jwk, jws

from conftest import binary, keygen, run, write_json

PROGRAMS = ["mandate-gateway", "mandate-wallet", "mandate-audit"]


def test_help_and_version():
    for p in PROGRAMS:
        r = run(binary(p), "--version")
        assert r.returncode == 0 and r.stdout.startswith(p + " ")
        r = run(binary(p), "--help")
        assert r.returncode == 0 and "usage:" in r.stdout


def test_bad_flag_exits_1():
    for p in PROGRAMS:
        assert run(binary(p), "--no-such-flag").returncode == 1


def test_keygen_both_algorithms_outside_jose_accepts(tmp_path):
    for alg, crv in (("ES256", "P-256"), ("EdDSA", "Ed25519")):
        pem, jwks_path, pub = keygen(str(tmp_path), f"k-{alg}", alg, kid=f"kid-{alg}")
        assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600
        with open(jwks_path) as f:
            doc = json.load(f)
        assert "d" not in doc["keys"][0]
        keyset = jwk.JWKSet.from_json(json.dumps(doc))
        pub_key = keyset.get_key(f"kid-{alg}")
        assert pub_key is not None and pub_key.get("crv") == crv
        # The private PEM signs in jwcrypto, and the JWKS key verifies it there too.
        with open(pem, "rb") as f:
            priv = jwk.JWK.from_pem(f.read())
        tok = jws.JWS(b"hello")
        tok.add_signature(priv, alg, protected=json.dumps({"alg": alg, "kid": f"kid-{alg}"}))
        check = jws.JWS()
        check.deserialize(tok.serialize(compact=True))
        check.verify(pub_key)
        assert check.payload == b"hello"


def test_keygen_refuses_overwrite_and_bad_args(tmp_path):
    d = str(tmp_path)
    keygen(d, "k1")
    r = run(binary("mandate-wallet"), "keygen", "--alg", "ES256", "--kid", "k1",
            "--out", os.path.join(d, "k1.pem"), "--jwks", os.path.join(d, "other.json"))
    assert r.returncode == 1 and "k1.pem" in r.stderr
    r = run(binary("mandate-wallet"), "keygen", "--alg", "RS256", "--kid", "k",
            "--out", os.path.join(d, "x.pem"), "--jwks", os.path.join(d, "x.json"))
    assert r.returncode == 1 and "--alg" in r.stderr


def gateway_config(d, **over):
    if not os.path.exists(os.path.join(d, "wallet-1.pem")):
        keygen(d, "wallet-1")
        keygen(d, "checkpoint", "EdDSA")
    conf = {
        "listen": "127.0.0.1:18999", "database": "gateway.db",
        "audit": {"checkpoint_key": "checkpoint.pem"},
        "issuers": [{"id": "wallet-1", "jwks_file": "wallet-1.jwks.json"}],
        "merchants": [{"id": "lux-hotels", "upstream": "http://127.0.0.1:9000", "routes": [
            {"method": "GET", "path": "/lux/search", "action": "search"}]}],
    }
    conf.update(over)
    return write_json(os.path.join(d, "gateway.json"), conf)


def test_gateway_check_config_ok_and_errors(tmp_path):
    d = str(tmp_path)
    path = gateway_config(d)
    r = run(binary("mandate-gateway"), "--check-config", "--config", path)
    assert r.returncode == 0, r.stderr
    path = gateway_config(d, workers="many", limits={"max_ttl_s": 0, "bogus": 1})
    r = run(binary("mandate-gateway"), "--check-config", "--config", path)
    assert r.returncode == 1
    assert "gateway.json: workers: expected an integer" in r.stderr
    assert "gateway.json: limits.max_ttl_s: expected an integer from 1 to 86400" in r.stderr
    assert "gateway.json: limits.bogus: unknown key" in r.stderr


def test_gateway_missing_config_file(tmp_path):
    r = run(binary("mandate-gateway"), "--check-config", "--config", str(tmp_path / "none.json"))
    assert r.returncode == 1 and "none.json" in r.stderr
