"""Dispute evidence that includes the keys: the gateway stores every key set it used in the log
(SHA-256, owner, first seen) and lists them in its config entries, so that `mandate-audit verify`
re-verifies old mandates after the issuer rotated its keys without --jwks; a stored set that was
altered or swapped is reported; with --jwks the given file is used as before."""
import json
import os
import shutil
import signal
import sqlite3

import pytest

from conftest import Gateway, binary, keygen, run, wait_for, _jwk


def audit(g, db, *extra, cmd="verify", json_out=True):
    args = [binary("mandate-audit"), cmd, "--db", db]
    if cmd == "verify":
        args += ["--checkpoint-key", os.path.join(g.d, "checkpoint.pub.pem")]
    args += list(extra) + (["--json"] if json_out else [])
    r = run(*args)
    if not json_out:
        return r.returncode, r.stdout
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else r.stderr


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    """A log across a key rotation: an allow with kid w1 (and a paid one with the merchant's
    key), the issuer's JWKS file replaced by a new key w2 and SIGHUP, an allow with w2."""
    from conftest import Proc  # noqa: F401
    procs = []
    d = str(tmp_path_factory.mktemp("keysets"))
    g = Gateway(d, procs)
    g.start()
    try:
        st, _, body, _ = g.request("GET", "/lux/search", g.mint())
        assert st == 200, body
        cart = g.cart(total=12000)
        st, _, body, _ = g.book(g.pay(cart), cart)
        assert st == 200, body
        old_jwks = os.path.join(d, "wallet-1.old.jwks.json")
        shutil.copy(os.path.join(d, "wallet-1.jwks.json"), old_jwks)
        _, new_jwks, _ = keygen(d, "wallet-1-new", kid="w2")
        with open(os.path.join(d, "wallet-1-new.pem"), "rb") as f:
            new_key = _jwk.JWK.from_pem(f.read())
        shutil.copy(new_jwks, os.path.join(d, "wallet-1.jwks.json"))
        g.gw.send(signal.SIGHUP)
        wait_for(lambda: "reloaded" in g.gw.output(), what="reload")
        st, _, body, _ = g.request("GET", "/lux/search", g.mint(key=new_key, kid="w2"))
        assert st == 200, body
        # The old key is gone from the gateway: its mandates are refused now.
        assert g.request("GET", "/lux/search", g.mint())[0] != 200
        assert g.gw.stop() == 0
    finally:
        for p in procs:
            p.stop()
        for p in procs:
            assert not p.problems(), p.problems()
    return g, os.path.join(d, "gateway.db"), old_jwks, new_jwks


def copy(db, tmp_path, name):
    out = str(tmp_path / name)
    shutil.copy(db, out)
    return out


def keysets(db):
    c = sqlite3.connect(db)
    r = c.execute("SELECT sha256, owner, jwks, first_seen_ms FROM keysets "
                  "ORDER BY first_seen_ms, owner").fetchall()
    c.close()
    return r


def config_entries(db):
    c = sqlite3.connect(db)
    r = [(s, json.loads(e)) for s, e in c.execute("SELECT seq, entry FROM entries ORDER BY seq")]
    c.close()
    return [(s, e) for s, e in r if e["kind"] == "config"]


def test_every_key_set_is_stored_once_and_listed(rotated):
    g, db, _, _ = rotated
    rows = keysets(db)
    # wallet-1 before and after the rotation, lux-hotels once (the reload kept its set).
    assert sorted(o for _, o, _, _ in rows) == ["lux-hotels", "wallet-1", "wallet-1"], rows
    kids = {json.loads(j)["keys"][0]["kid"] for _, o, j, _ in rows if o == "wallet-1"}
    assert kids == {"w1", "w2"}
    for sha, _, text, _ in rows:
        assert json.loads(text)["keys"] and '"d"' not in text
        import hashlib
        assert hashlib.sha256(text.encode()).hexdigest() == sha
    cfg = config_entries(db)
    assert len(cfg) == 2 and cfg[0][0] == 0
    listed = [{(k["owner"], k["sha256"]) for k in e["keysets"]} for _, e in cfg]
    assert listed[0] | listed[1] == {(o, s) for s, o, _, _ in rows}
    assert listed[0] != listed[1] and len(listed[0]) == len(listed[1]) == 2


def test_verify_without_jwks_uses_stored_sets(rotated):
    g, db, _, _ = rotated
    rc, rep = audit(g, db)
    assert rc == 0 and rep["ok"], rep
    assert rep["allows"] == 3 and rep["mandates_checked"] == 4, rep
    assert rep["mandates_unchecked"] == 0 and rep["mandates_checked_stored"] == 4, rep
    assert sorted(rep["checked_with_stored_keysets"]) == ["lux-hotels", "wallet-1"], rep
    assert rep["keysets_stored"] == 3
    rc, out = audit(g, db, json_out=False)
    assert rc == 0 and "checked with the key sets stored in the log" in out, out
    line = [l for l in out.splitlines() if "stored in the log" in l][0]
    assert "wallet-1" in line and "lux-hotels" in line, out
    rc, rep = audit(g, db, cmd="replay")
    assert rc == 0 and rep["mandates_checked_stored"] == 4, rep


def test_tampered_stored_set_is_reported(rotated, tmp_path):
    g, db0, _, _ = rotated
    db = copy(db0, tmp_path, "tampered.db")
    rows = keysets(db)
    sha_w1 = [s for s, o, j, _ in rows if o == "wallet-1" and '"w1"' in j][0]
    other = [j for s, o, j, _ in rows if o == "wallet-1" and '"w2"' in j][0]
    c = sqlite3.connect(db)
    c.execute("UPDATE keysets SET jwks = ? WHERE sha256 = ? AND owner = 'wallet-1'",
              (other, sha_w1))
    c.commit()
    c.close()
    rc, rep = audit(g, db)
    assert rc == 1 and rep["violation"] == "key set altered" and rep["bad_seq"] == 0, rep
    assert sha_w1[:16] in rep["detail"], rep
    rc, out = audit(g, db, json_out=False)
    assert rc == 1 and "key set altered" in out, out


def test_swapped_stored_set_is_reported(rotated, tmp_path):
    """Text and sha256 both replaced (an attacker's key that hashes right): the config entry
    no longer finds the set it listed."""
    g, db0, _, _ = rotated
    db = copy(db0, tmp_path, "swapped.db")
    _, forged, _ = keygen(str(tmp_path), "forger", kid="w1")
    with open(forged) as f:
        doc = json.load(f)
    import hashlib
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    sha = hashlib.sha256(text.encode()).hexdigest()
    c = sqlite3.connect(db)
    c.execute("UPDATE keysets SET jwks = ?, sha256 = ? WHERE owner = 'wallet-1' AND jwks LIKE ?",
              (text, sha, '%"w1"%'))
    c.commit()
    c.close()
    rc, rep = audit(g, db)
    assert rc == 1 and rep["violation"] == "key set missing" and rep["bad_seq"] == 0, rep


def test_unlisted_rows(rotated, tmp_path):
    """A row written into the database afterwards (listed by no config entry) is not used to
    verify anything, and is still reported when it does not hash to its sha256."""
    g, db0, _, _ = rotated
    db = copy(db0, tmp_path, "unlisted.db")
    _, forged, _ = keygen(str(tmp_path), "forger", kid="w9")
    with open(forged) as f:
        text = json.dumps(json.load(f), separators=(",", ":"), sort_keys=True)
    import hashlib
    c = sqlite3.connect(db)
    c.execute("INSERT INTO keysets VALUES(?, 'wallet-1', ?, 1)",
              (hashlib.sha256(text.encode()).hexdigest(), text))
    c.execute("INSERT INTO keysets VALUES(?, 'nobody', ?, 1)", ("00" * 32, text))
    c.commit()
    c.close()
    rc, rep = audit(g, db)
    assert rc == 1 and rep["violation"] == "key set altered" and rep["bad_seq"] == -1, rep
    assert "no entry lists it" in rep["detail"], rep
    c = sqlite3.connect(db)
    c.execute("DELETE FROM keysets WHERE owner = 'nobody'")
    c.commit()
    c.close()
    rc, rep = audit(g, db)
    assert rc == 0 and rep["keysets_stored"] == 4 and rep["mandates_checked_stored"] == 4, rep


def test_jwks_given_is_used_as_before(rotated, tmp_path):
    g, db, old_jwks, new_jwks = rotated
    # Only the new key for wallet-1: the first allow (kid w1) does not verify, whatever is stored.
    rc, rep = audit(g, db, "--jwks", "wallet-1=" + new_jwks)
    assert rc == 1 and rep["violation"] == "bad mandate signature" and rep["bad_seq"] >= 1, rep
    # Both keys in one file: verified with it; only the merchant with its stored set.
    with open(old_jwks) as f:
        a = json.load(f)
    with open(new_jwks) as f:
        b = json.load(f)
    both = str(tmp_path / "both.jwks.json")
    with open(both, "w") as f:
        json.dump({"keys": a["keys"] + b["keys"]}, f)
    rc, rep = audit(g, db, "--jwks", "wallet-1=" + both)
    assert rc == 0 and rep["mandates_checked"] == 4, rep
    assert rep["checked_with_stored_keysets"] == ["lux-hotels"], rep
    assert rep["mandates_checked_stored"] == 1, rep
    rc, out = audit(g, db, "--jwks", "wallet-1=" + both, "--jwks",
                    "lux-hotels=" + os.path.join(g.d, "lux-hotels.jwks.json"), json_out=False)
    assert rc == 0 and "stored in the log" not in out, out
