"""mandate-audit on databases made by real traffic through the real gateway: the untouched log
verifies; each kind of tampering gives exit 1 and names the right seq; a gateway killed with
SIGKILL mid-load leaves a log that verifies and covers every forwarded request."""
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import threading
import time

import pytest

from conftest import binary, run


def audit(g, db, *extra):
    args = [binary("mandate-audit"), "verify", "--db", db, "--checkpoint-key",
            os.path.join(g.d, "checkpoint.pub.pem"),
            "--jwks", "wallet-1=" + os.path.join(g.d, "wallet-1.jwks.json"), "--json", *extra]
    r = run(*args)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else r.stderr


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A log with allows, denials and outcomes, plus a checkpoint held from the middle."""
    from conftest import Gateway, Proc  # noqa: F401
    procs = []
    d = str(tmp_path_factory.mktemp("audit"))
    g = Gateway(d, procs)
    g.conf["audit"]["checkpoint_every"] = 5
    from conftest import write_json
    write_json(g.config_path, g.conf)
    g.start()
    for i in range(6):
        g.request("GET", "/lux/search", g.mint())
        g.request("GET", "/nowhere")
    st, _, _, note = g.admin("GET", "/admin/checkpoint")
    assert st == 200
    held = os.path.join(d, "held.checkpoint")
    with open(held, "wb") as f:
        f.write(note)
    held_size = int(note.split(b"\n")[1])
    for i in range(4):
        g.request("GET", "/lux/search", g.mint(uses=2))
    assert g.gw.stop() == 0
    for p in procs:
        p.stop()
    return g, os.path.join(d, "gateway.db"), held, held_size


def copy(logged, tmp_path, name):
    g, db, _, _ = logged
    out = str(tmp_path / name)
    shutil.copy(db, out)
    return out


def rows(db):
    """(seq, entry, leaf hash): the leaf is not stored, it is SHA-256(0x00 || entry)."""
    c = sqlite3.connect(db)
    r = [(s, e, leaf(e)) for s, e in c.execute("SELECT seq, entry FROM entries ORDER BY seq")]
    c.close()
    return r


def test_untouched_verifies(logged):
    g, db, held, _ = logged
    rc, rep = audit(g, db, "--checkpoint", held)
    assert rc == 0 and rep["ok"], rep
    assert rep["entries"] > 20 and rep["checkpoints"] >= 3
    assert rep["mandates_checked"] == rep["allows"] == 10
    r = run(binary("mandate-audit"), "replay", "--db", db)
    assert r.returncode == 0, r.stdout


def test_flip_one_byte(logged, tmp_path):
    db = copy(logged, tmp_path, "flip.db")
    seq, entry, _ = rows(db)[7]
    bad = bytearray(entry)
    i = bad.index(b'"ts_ms":') + 9
    bad[i] = ord("1") if bad[i] != ord("1") else ord("2")
    c = sqlite3.connect(db)
    c.execute("UPDATE entries SET entry = ? WHERE seq = ?", (bytes(bad), seq))
    c.commit()
    c.close()
    rc, rep = audit(logged[0], db)
    assert rc == 1 and rep["bad_seq"] == 7 and rep["violation"] == "altered", rep


def test_delete_middle(logged, tmp_path):
    db = copy(logged, tmp_path, "delete.db")
    c = sqlite3.connect(db)
    c.execute("DELETE FROM entries WHERE seq = 9")
    c.commit()
    c.close()
    rc, rep = audit(logged[0], db)
    assert rc == 1 and rep["bad_seq"] == 9 and rep["violation"] == "deleted", rep


def leaf(b):
    return hashlib.sha256(b"\x00" + b).digest()


def rewrite(db, seq, change):
    """Re-encode entry seq after change(entry dict)."""
    e = json.loads(dict((s, b) for s, b, _ in rows(db))[seq])
    change(e)
    b = json.dumps(e, separators=(",", ":"), sort_keys=True).encode()
    c = sqlite3.connect(db)
    c.execute("UPDATE entries SET entry = ? WHERE seq = ?", (b, seq))
    c.commit()
    c.close()


def test_insert_forged(logged, tmp_path):
    db = copy(logged, tmp_path, "insert.db")
    rs = rows(db)
    k = 5
    forged = json.loads(rs[k][1])
    forged.update({"seq": k, "prev": rs[k - 1][2].hex(), "principal": "mallory"})
    fb = json.dumps(forged, separators=(",", ":"), sort_keys=True).encode()
    c = sqlite3.connect(db)
    for seq, _, _ in reversed(rs[k:]):
        c.execute("UPDATE entries SET seq = seq + 1 WHERE seq = ?", (seq,))
    c.execute("INSERT INTO entries(seq, entry) VALUES(?,?)", (k, fb))
    c.commit()
    c.close()
    rc, rep = audit(logged[0], db)
    assert rc == 1 and rep["bad_seq"] == k and rep["violation"] == "inserted", rep


def test_swap_two(logged, tmp_path):
    db = copy(logged, tmp_path, "swap.db")
    rs = rows(db)
    c = sqlite3.connect(db)
    c.execute("UPDATE entries SET entry = ? WHERE seq = 11", (rs[12][1],))
    c.execute("UPDATE entries SET entry = ? WHERE seq = 12", (rs[11][1],))
    c.commit()
    c.close()
    rc, rep = audit(logged[0], db)
    assert rc == 1 and rep["bad_seq"] == 11 and rep["violation"] == "reordered", rep


def test_truncated_below_held_checkpoint(logged, tmp_path):
    """Cut back to an older checkpoint, newer ones dropped: only a held checkpoint shows it."""
    g, _, held, held_size = logged
    db = copy(logged, tmp_path, "trunc.db")
    c = sqlite3.connect(db)
    keep = c.execute("SELECT MAX(size) FROM checkpoints WHERE size < ?", (held_size,)).fetchone()[0]
    assert keep
    c.execute("DELETE FROM entries WHERE seq >= ?", (keep,))
    c.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))  # the forger drops these too
    c.commit()
    c.close()
    rc, rep = audit(g, db)  # without the held checkpoint the shorter log looks whole
    assert rc == 0 and rep["covered"] == rep["entries"] == keep, rep
    rc, rep = audit(g, db, "--checkpoint", held)
    assert rc == 1 and rep["bad_seq"] == keep, rep
    assert rep["violation"] == "truncated below a held checkpoint"


def test_truncated_between_checkpoints(logged, tmp_path):
    """Cut between two checkpoints, newer ones dropped: the tail is under no signature."""
    g, _, held, held_size = logged
    db = copy(logged, tmp_path, "trunc2.db")
    c = sqlite3.connect(db)
    sizes = [s for (s,) in c.execute("SELECT size FROM checkpoints ORDER BY size")]
    keep = held_size - 2
    while keep in sizes:
        keep -= 1
    c.execute("DELETE FROM entries WHERE seq >= ?", (keep,))
    c.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))
    c.commit()
    c.close()
    last = max(s for s in sizes if s < keep)
    rc, rep = audit(g, db)
    assert rc == 1 and rep["violation"] == "not checkpointed" and rep["bad_seq"] == last, rep
    assert rep["covered"] == last
    rc, rep = audit(g, db, "--no-require-checkpoint")  # reported, not a violation
    assert rc == 0 and rep["covered"] == last and rep["entries"] == keep, rep


def test_missing_database_exit_2(logged, tmp_path):
    rc, _ = audit(logged[0], str(tmp_path / "none.db"))
    assert rc == 2


def test_kill9_mid_load(gateway):
    g = gateway.start()
    stop = threading.Event()
    sent = []

    def client():
        while not stop.is_set():
            try:
                sent.append(g.request("GET", "/lux/search", g.mint(), timeout=3)[0])
            except Exception:  # the gateway is killed under these requests
                pass

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    g.gw.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(10)
    assert sent.count(200) > 20
    g.start()  # same database
    assert g.request("GET", "/lux/search", g.mint())[0] == 200
    assert g.gw.stop() == 0
    db = os.path.join(g.d, "gateway.db")
    rc, rep = audit(g, db)
    assert rc == 0, rep
    r = run(binary("mandate-audit"), "replay", "--db", db)
    assert r.returncode == 0, r.stdout
    # Every request the merchant received has an allow entry with its request id.
    c = sqlite3.connect(db)
    allowed = {json.loads(e)["request_id"] for (e,) in c.execute("SELECT entry FROM entries")
               if json.loads(e).get("decision") == "allow"}
    c.close()
    got = [dict((k.lower(), v) for k, v in r["headers"])["x-request-id"] for r in g.received()]
    assert got and set(got) <= allowed


def forge_checkpoint(g, size, root):
    """A validly signed note for (size, root): what a compromised gateway could show someone."""
    import base64
    from jwcrypto import jwk as J
    with open(os.path.join(g.d, "checkpoint.pem"), "rb") as f:
        key = J.JWK.from_pem(f.read())
    origin = g.conf["audit"]["origin"]
    body = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()
    pub = base64.urlsafe_b64decode(key.export_public(as_dict=True)["x"] + "==")
    key_id = hashlib.sha256(origin.encode() + b"\n\x01" + pub).digest()[:4]
    sig = key._get_private_key().sign(body)
    return body + b"\n\xe2\x80\x94 " + origin.encode() + b" " + \
        base64.b64encode(key_id + sig) + b"\n"


def test_conflicting_checkpoints(logged, tmp_path):
    g, db, held, held_size = logged
    forged = tmp_path / "forked.checkpoint"
    forged.write_bytes(forge_checkpoint(g, held_size, b"\x07" * 32))
    rc, rep = audit(g, db, "--checkpoint", held, "--checkpoint", str(forged))
    assert rc == 1 and rep["violation"] == "conflicting checkpoints", rep
    assert rep["bad_seq"] == held_size - 1
    # Alone, the forged one does not match the entries.
    rc, rep = audit(g, db, "--checkpoint", str(forged))
    assert rc == 1 and rep["violation"] in ("root mismatch", "conflicting checkpoints"), rep


def rfc9162_verify(leaf, m, n, proof, root):
    """RFC 9162 §2.1.3.2, independently of the C code."""
    fn, sn, r = m, n - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def test_prove_inclusion_from_stored_subtrees(logged):
    g, db, _, _ = logged
    leaves = [leaf for _, _, leaf in rows(db)]
    for seq in (0, 1, 5, len(leaves) - 1):
        r = run(binary("mandate-audit"), "prove", "--db", db, "--seq", str(seq),
                "--size", str(len(leaves)))
        assert r.returncode == 0, r.stderr
        p = json.loads(r.stdout)
        assert bytes.fromhex(p["leaf"]) == leaves[seq]
        assert rfc9162_verify(leaves[seq], seq, len(leaves),
                              [bytes.fromhex(x) for x in p["proof"]], bytes.fromhex(p["root"]))
    # Against the newest signed checkpoint by default, which it returns for checking.
    r = run(binary("mandate-audit"), "prove", "--db", db, "--seq", "2")
    p = json.loads(r.stdout)
    assert p["checkpoint"].split("\n")[1] == str(p["size"])
    import base64
    assert base64.b64decode(p["checkpoint"].split("\n")[2]) == bytes.fromhex(p["root"])
    assert run(binary("mandate-audit"), "prove", "--db", db, "--seq", "999999").returncode == 1


def test_chain_break(logged, tmp_path):
    db = copy(logged, tmp_path, "chain.db")
    rewrite(db, 6, lambda e: e.update(prev="00" * 32))
    rc, rep = audit(logged[0], db)
    assert rc == 1 and rep["bad_seq"] == 6 and rep["violation"] == "chain break", rep


def test_root_mismatch(logged, tmp_path):
    """The last entry rewritten with a consistent prev: only the signed root shows it."""
    db = copy(logged, tmp_path, "root.db")
    seq = rows(db)[-1][0]
    rewrite(db, seq, lambda e: e.update(ts_ms=e["ts_ms"] + 1))
    rc, rep = audit(logged[0], db)
    assert rc == 1 and rep["violation"] == "root mismatch" and rep["bad_seq"] == seq, rep


def test_bad_checkpoint_signature(logged, tmp_path):
    db = copy(logged, tmp_path, "badsig.db")
    c = sqlite3.connect(db)
    size, note = c.execute("SELECT size, note FROM checkpoints ORDER BY size LIMIT 1").fetchone()
    lines = note.split("\n")
    lines[1] = str(size + 1)  # claim a bigger tree under the old signature
    c.execute("UPDATE checkpoints SET note = ? WHERE size = ?", ("\n".join(lines), size))
    c.commit()
    c.close()
    rc, rep = audit(logged[0], db)
    assert rc == 1 and rep["violation"] == "bad checkpoint signature", rep


def test_export_and_show(logged):
    g, db, _, _ = logged
    stored = [e for _, e, _ in rows(db)]
    r = run(binary("mandate-audit"), "export", "--db", db)
    assert r.returncode == 0
    assert [l.encode() for l in r.stdout.splitlines()] == stored  # the bytes as stored
    r = run(binary("mandate-audit"), "export", "--db", db, "--since", "5")
    assert len(r.stdout.splitlines()) == len(stored) - 5
    r = run(binary("mandate-audit"), "show", "--db", db, "--principal", "alice")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[0].split()[:3] == ["SEQ", "TIME", "(UTC)"]
    assert len(lines) - 1 == sum(1 for e in stored if json.loads(e).get("principal") == "alice")
    assert all(" alice " in l for l in lines[1:])
    r = run(binary("mandate-audit"), "show", "--db", db, "--since", "2999-01-01")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1  # only the header


# --- a rewritten log without checkpoints; allows against their mandates --------------------------


def merkle_root(leaves):
    """RFC 6962 MTH over leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:])).digest()


def encode(e):
    return json.dumps(e, separators=(",", ":"), sort_keys=True).encode()


def rechain(db, start=0):
    """Recompute the prev of every entry from start on: what a forger with write access does."""
    rs = rows(db)
    c = sqlite3.connect(db)
    prev = rs[start - 1][2] if start else b"\x00" * 32
    for seq, entry, _ in rs[start:]:
        e = json.loads(entry)
        e["prev"] = prev.hex()
        b = encode(e)
        prev = leaf(b)
        c.execute("UPDATE entries SET entry = ? WHERE seq = ?", (b, seq))
    c.commit()
    c.close()


def drop_checkpoints(db):
    c = sqlite3.connect(db)
    c.execute("DELETE FROM checkpoints")
    c.execute("DELETE FROM nodes")
    c.commit()
    c.close()


def append(db, e):
    rs = rows(db)
    e.update(v=1, seq=len(rs), prev=rs[-1][2].hex())
    b = encode(e)
    c = sqlite3.connect(db)
    c.execute("INSERT INTO entries(seq, entry) VALUES(?,?)", (len(rs), b))
    c.commit()
    c.close()
    return len(rs)


def reseal(g, db):
    """Rechain the whole log and sign one checkpoint over it with the gateway's own key: the log
    a compromised (or buggy) gateway would write. Only the entries' own checks can catch it."""
    rechain(db)
    drop_checkpoints(db)
    leaves = [l for _, _, l in rows(db)]
    note = forge_checkpoint(g, len(leaves), merkle_root(leaves)).decode()
    c = sqlite3.connect(db)
    c.execute("INSERT INTO checkpoints(size, note) VALUES(?,?)", (len(leaves), note))
    c.commit()
    c.close()


def entries(db):
    return [json.loads(e) for _, e, _ in rows(db)]


def first(db, pred):
    return next(i for i, e in enumerate(entries(db)) if pred(e))


def is_allow(e):
    return e.get("decision") == "allow"


def test_reseal_helper_is_faithful(logged, tmp_path):
    """Resealing an untouched log changes nothing verify can see: the tests below rely on it."""
    db = copy(logged, tmp_path, "same.db")
    before = rows(db)
    reseal(logged[0], db)
    assert [r[:2] for r in rows(db)] == [r[:2] for r in before]
    rc, rep = audit(logged[0], db)
    assert rc == 0 and rep["checkpoints"] == 1 and rep["covered"] == rep["entries"], rep


def test_allow_turned_deny_without_checkpoints(logged, tmp_path):
    db = copy(logged, tmp_path, "deny.db")
    seq = first(db, is_allow)
    rewrite(db, seq, lambda e: e.update(decision="deny", code="mandate_revoked"))
    rechain(db, seq)
    drop_checkpoints(db)
    rc, rep = audit(logged[0], db)
    assert rc == 1 and rep["violation"] == "not checkpointed" and rep["bad_seq"] == 0, rep
    assert rep["covered"] == 0 and rep["checkpoints"] == 0
    # Told not to require them, verify reports that nothing is covered; the chain is consistent.
    rc, rep = audit(logged[0], db, "--no-require-checkpoint")
    assert rc == 0 and rep["covered"] == 0 < rep["entries"], rep


def test_forged_priced_allow_without_mandates(logged, tmp_path):
    db = copy(logged, tmp_path, "forged.db")
    drop_checkpoints(db)
    seq = append(db, {"ts_ms": entries(db)[-1]["ts_ms"] + 1, "kind": "decision",
                      "request_id": "forged", "principal": "alice", "agent": "agent-planner",
                      "merchant": "lux-hotels", "action": "book_room", "decision": "allow",
                      "code": "ok", "amount": {"value": 9999999900, "currency": "EUR"},
                      "mandates": []})
    for extra in ((), ("--no-require-checkpoint",)):
        rc, rep = audit(logged[0], db, *extra)
        assert rc == 1 and rep["violation"] == "mandate missing" and rep["bad_seq"] == seq, rep


@pytest.mark.parametrize("field,value", [("principal", "mallory"), ("agent", "agent-evil"),
                                         ("merchant", "other-shop"), ("action", "book_room")])
def test_allow_must_match_its_mandate(logged, tmp_path, field, value):
    db = copy(logged, tmp_path, f"bind-{field}.db")
    seq = first(db, is_allow)
    rewrite(db, seq, lambda e: e.update({field: value}))
    reseal(logged[0], db)
    rc, rep = audit(logged[0], db)
    assert rc == 1 and rep["violation"] == "mandate mismatch" and rep["bad_seq"] == seq, rep
    assert field in rep["detail"] or "act.sub" in rep["detail"]
    r = run(binary("mandate-audit"), "replay", "--db", db, "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["violation"] == "mandate mismatch"


def test_allow_listing_another_mandate(logged, tmp_path):
    """Two allows swap their mandate lists: each is stored and hashes right, but is not theirs."""
    db = copy(logged, tmp_path, "swapmd.db")
    es = entries(db)
    a, b = [i for i, e in enumerate(es) if is_allow(e)][:2]
    ma = es[a]["mandates"]
    ma[0]["jti"] = es[b]["mandates"][0]["jti"]
    rewrite(db, a, lambda e: e.update(mandates=ma))
    reseal(logged[0], db)
    rc, rep = audit(logged[0], db)
    assert rc == 1 and rep["violation"] == "mandate mismatch" and rep["bad_seq"] == a, rep


def test_origin(logged):
    g, db, held, _ = logged
    rc, rep = audit(g, db, "--origin", g.conf["audit"]["origin"], "--checkpoint", held)
    assert rc == 0, rep
    rc, rep = audit(g, db, "--origin", "other.example/audit")
    assert rc == 1 and rep["violation"] == "wrong origin", rep
    assert "other.example/audit" in rep["detail"]


def test_coverage_in_text_report(logged):
    g, db, _, _ = logged
    r = run(binary("mandate-audit"), "verify", "--db", db, "--checkpoint-key",
            os.path.join(g.d, "checkpoint.pub.pem"))
    n = len(rows(db))
    assert r.returncode == 0 and f"; {n} of {n} entries under a signed checkpoint" in r.stdout


def test_require_checkpoint_on_a_one_entry_log(logged, tmp_path):
    """A lone config entry (a gateway killed at once) passes by default, not when required."""
    db = copy(logged, tmp_path, "one.db")
    c = sqlite3.connect(db)
    c.execute("DELETE FROM entries WHERE seq > 0")
    c.commit()
    c.close()
    drop_checkpoints(db)
    rc, rep = audit(logged[0], db)
    assert rc == 0 and rep["covered"] == 0, rep
    rc, rep = audit(logged[0], db, "--require-checkpoint")
    assert rc == 1 and rep["violation"] == "not checkpointed", rep
    r = run(binary("mandate-audit"), "verify", "--db", db, "--checkpoint-key",
            os.path.join(logged[0].d, "checkpoint.pub.pem"), "--require-checkpoint",
            "--no-require-checkpoint")
    assert r.returncode == 1 and "conflict" in r.stderr


def summary(**over):
    e = {"ts_ms": 1800000000000, "kind": "denial_summary", "request_id": "",
         "client": "10.0.0.7", "count": 57, "codes": {"mandate_missing": 50, "route_not_found": 7}}
    e.update(over)
    return e


def test_denial_summary_accepted(logged, tmp_path):
    g = logged[0]
    db = copy(logged, tmp_path, "summary.db")
    seq = append(db, summary())
    reseal(g, db)
    rc, rep = audit(g, db)
    assert rc == 0, rep
    r = run(binary("mandate-audit"), "replay", "--db", db)
    assert r.returncode == 0, r.stdout
    r = run(binary("mandate-audit"), "show", "--db", db)
    line = [l for l in r.stdout.splitlines() if l.split()[0] == str(seq)]
    assert len(line) == 1 and "denial_summary" in line[0], r.stdout
    assert "57 denials from 10.0.0.7: mandate_missing=50,route_not_found=7" in line[0]


@pytest.mark.parametrize("bad", [
    summary(count=58),                        # codes do not add up
    summary(codes={}),
    summary(client=""),
    {**summary(), "kind": "denial_summary_v2"},  # no such kind
    {k: v for k, v in summary().items() if k != "request_id"},
])
def test_malformed_entries(logged, tmp_path, bad):
    g = logged[0]
    db = copy(logged, tmp_path, "bad.db")
    seq = append(db, dict(bad))
    reseal(g, db)
    rc, rep = audit(g, db)
    assert rc == 1 and rep["violation"] == "malformed entry" and rep["bad_seq"] == seq, rep


# --- priced allows, revocations and the readable table -------------------------------------------


@pytest.fixture(scope="module")
def priced(tmp_path_factory):
    """Two paid bookings (180.00 EUR and 25.50 EUR) and a revocation, through the real gateway."""
    from conftest import Gateway
    procs = []
    d = str(tmp_path_factory.mktemp("priced"))
    g = Gateway(d, procs)
    g.start()
    for total in (18000, 2550):
        cart = g.cart(total=total)
        st, _, body, _ = g.book(g.pay(cart), cart)
        assert st == 200, body
    st, _, _, _ = g.admin("POST", "/admin/revocations", {"jti": "t-revoked-for-the-audit"})
    assert st == 201
    assert g.gw.stop() == 0
    for p in procs:
        p.stop()
    return g, os.path.join(d, "gateway.db")


def paudit(g, db, *extra, cmd="verify"):
    args = [binary("mandate-audit"), cmd, "--db", db, "--jwks",
            "wallet-1=" + os.path.join(g.d, "wallet-1.jwks.json"), "--jwks",
            "lux-hotels=" + os.path.join(g.d, "lux-hotels.jwks.json"), "--json", *extra]
    if cmd == "verify":
        args += ["--checkpoint-key", os.path.join(g.d, "checkpoint.pub.pem")]
    r = run(*args)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else r.stderr


def is_paid(e):
    return is_allow(e) and "amount" in e


def test_priced_untouched(priced):
    g, db = priced
    rc, rep = paudit(g, db)
    assert rc == 0 and rep["allows"] == 2 and rep["mandates_checked"] == 4, rep
    rc, rep = paudit(g, db, cmd="replay")
    assert rc == 0, rep


def test_altered_amount_fails_replay_too(priced, tmp_path):
    """The amount of a paid allow changed in place: verify and replay both say so."""
    g, db0 = priced
    db = str(tmp_path / "amount.db")
    shutil.copy(db0, db)
    seq = first(db, is_paid)
    entry = dict((s, b) for s, b, _ in rows(db))[seq]
    c = sqlite3.connect(db)
    c.execute("UPDATE entries SET entry = ? WHERE seq = ?",
              (entry.replace(b'"value":18000', b'"value":1800'), seq))
    c.commit()
    c.close()
    for cmd in ("verify", "replay"):
        rc, rep = paudit(g, db, cmd=cmd)
        assert rc == 1 and rep["violation"] == "altered" and rep["bad_seq"] == seq, (cmd, rep)


def test_rewritten_amount_against_the_cart(priced, tmp_path):
    """The same change with the chain and checkpoint redone: the signed cart still says 180.00."""
    g, db0 = priced
    db = str(tmp_path / "amount2.db")
    shutil.copy(db0, db)
    seq = first(db, is_paid)
    rewrite(db, seq, lambda e: e.update(amount={"value": 1800, "currency": "EUR"}))
    reseal(g, db)
    for cmd in ("verify", "replay"):
        rc, rep = paudit(g, db, cmd=cmd)
        assert rc == 1 and rep["violation"] == "mandate mismatch", (cmd, rep)
        assert "amount" in rep["detail"] and rep["bad_seq"] == seq


def test_priced_allow_without_its_cart(priced, tmp_path):
    g, db0 = priced
    db = str(tmp_path / "nocart.db")
    shutil.copy(db0, db)
    seq = first(db, is_paid)
    rewrite(db, seq, lambda e: e.update(mandates=e["mandates"][:1]))
    reseal(g, db)
    rc, rep = paudit(g, db)
    assert rc == 1 and rep["violation"] == "mandate missing" and rep["bad_seq"] == seq, rep


def test_show_amounts_revocations_and_bad_since(priced):
    g, db = priced
    r = run(binary("mandate-audit"), "show", "--db", db)
    assert r.returncode == 0
    allows = [l for l in r.stdout.splitlines() if " allow " in l and "book_room" in l]
    assert len(allows) == 2, r.stdout
    assert " 180.00 EUR " in allows[0] and " 25.50 EUR " in allows[1]
    rev = [l for l in r.stdout.splitlines() if " revocation " in l]
    assert len(rev) == 1 and "revoked jti t-revoked-for-the-audit" in rev[0], r.stdout
    for bad in ("garbage", "2026-13-45", "12abc", "-5", ""):
        r = run(binary("mandate-audit"), "show", "--db", db, "--since", bad)
        assert r.returncode == 1 and "--since" in r.stderr and r.stdout == "", (bad, r)
    r = run(binary("mandate-audit"), "show", "--db", db, "--since", "1700000000")
    assert r.returncode == 0 and len(r.stdout.splitlines()) > 3
    r = run(binary("mandate-audit"), "export", "--db", db, "--since", "x")
    assert r.returncode == 1


def test_checkpoint_encoding_is_strict(logged, tmp_path):
    """One note, one text: a signature re-encoded with the unused low bits of its last base64
    group set, or a size written "+N", is not a checkpoint (the old parser took both)."""
    g, db0, _, _ = logged
    db = copy(logged, tmp_path, "malleable.db")
    c = sqlite3.connect(db)
    size, note = c.execute("SELECT size, note FROM checkpoints ORDER BY size LIMIT 1").fetchone()
    head, sig = note.rstrip("\n").rsplit(" ", 1)
    assert sig.endswith("=") and not sig.endswith("==")  # 68 bytes: 2 spare bits before the pad
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = sig[:-2] + alphabet[alphabet.index(sig[-2]) ^ 1] + "="
    import base64
    assert base64.b64decode(twin) == base64.b64decode(sig)  # same bytes, another text
    c.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (head + " " + twin + "\n", size))
    c.commit()
    c.close()
    rc, rep = audit(g, db)
    assert rc == 1 and rep["violation"] == "bad checkpoint signature", rep
    leaves = [l for _, _, l in rows(db0)][:size]
    plus = tmp_path / "plus.checkpoint"
    plus.write_bytes(forge_checkpoint(g, f"+{size}", merkle_root(leaves)))
    rc, rep = audit(g, db0, "--checkpoint", str(plus))
    assert rc == 1 and rep["violation"] == "bad checkpoint signature", rep


def test_tools_share_a_crashed_copy(gateway):
    """Several mandate-audit commands at once on a copy of a killed gateway's database (its WAL
    needs recovery) all open it: none fails with "database is locked"."""
    import subprocess
    g = gateway.start()
    for _ in range(20):
        assert g.request("GET", "/lux/search", g.mint())[0] == 200
    db = os.path.join(g.d, "gateway.db")
    assert os.path.getsize(db + "-wal") > 0
    g.gw.stop(signal.SIGKILL)
    for round_ in range(10):
        d = os.path.join(g.d, f"copy{round_}")
        os.mkdir(d)
        for ext in ("", "-wal"):
            shutil.copy(db + ext, os.path.join(d, "gateway.db" + ext))
        copy = os.path.join(d, "gateway.db")
        ps = [subprocess.Popen([binary("mandate-audit"), cmd, "--db", copy], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
              for cmd in ("export", "show", "export", "show")]
        for p in ps:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0 and "locked" not in err, err


# --- issue 15: export --format csv, check-receipt, the log key on the admin listener -----------

@pytest.fixture
def paid(gateway):
    """A log with a priced allow (180.00 EUR), its Mandate-Receipt, a denial, and the log key as
    the admin listener serves it; the gateway stopped (final checkpoint written)."""
    import urllib.request
    g = gateway.start()
    cart = g.cart(18000)
    st, h, _, _ = g.book(g.pay(cart), cart)
    assert st == 200, h
    assert g.request("GET", "/lux/search")[0] == 401
    url = f"http://127.0.0.1:{g.admin_port}/.well-known/mandate-log-key"
    with urllib.request.urlopen(url, timeout=5) as r:  # no admin token needed: a public key
        assert r.status == 200 and r.headers["Content-Type"] == "application/x-pem-file"
        key = r.read()
    assert g.gw.stop() == 0
    with open(os.path.join(g.d, "checkpoint.pub.pem"), "rb") as f:
        assert key == f.read()
    served = os.path.join(g.d, "served-log-key.pem")
    with open(served, "wb") as f:
        f.write(key)
    return g, os.path.join(g.d, "gateway.db"), h["mandate-receipt"], served


def test_export_csv(paid):
    import csv
    import io
    import re
    g, db, receipt, _ = paid
    r = subprocess_run(binary("mandate-audit"), "export", "--db", db, "--format", "csv")
    assert r.returncode == 0, r.stderr
    raw = r.stdout
    assert raw.endswith(b"\r\n") and raw.count(b"\r\n") == raw.count(b"\n")  # RFC 4180 CRLF
    table = list(csv.DictReader(io.StringIO(raw.decode(), newline="")))
    assert list(table[0]) == ["seq", "time", "kind", "decision", "code", "status", "principal",
                              "agent", "merchant", "action", "amount", "currency", "request_id",
                              "receipt"]
    assert [int(t["seq"]) for t in table] == list(range(len(table))) and len(rows(db)) == len(table)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", t["time"]) for t in table)
    allow = [t for t in table if t["decision"] == "allow" and t["action"] == "book_room"]
    assert len(allow) == 1 and allow[0]["receipt"] == receipt
    assert allow[0]["amount"] == "180.00" and allow[0]["currency"] == "EUR"
    assert allow[0]["principal"] == "alice" and allow[0]["code"] == "ok"
    outcome = [t for t in table if t["kind"] == "outcome"]
    assert outcome and outcome[0]["status"] == "200"
    assert any(t["code"] == "mandate_missing" and t["decision"] == "deny" for t in table)
    # --since and the JSON lines export still agree on what they hold.
    r2 = subprocess_run(binary("mandate-audit"), "export", "--db", db, "--format", "csv",
                        "--since", "2")
    assert r2.stdout.split(b"\r\n")[1].startswith(b"2,")
    jl = subprocess_run(binary("mandate-audit"), "export", "--db", db, "--format", "jsonl")
    assert jl.stdout.count(b"\n") == len(table)
    bad = subprocess_run(binary("mandate-audit"), "export", "--db", db, "--format", "xml")
    assert bad.returncode == 1 and b"xml" in bad.stderr


def test_csv_quotes_fields_that_need_it(paid, tmp_path):
    """An entry whose fields hold a comma, a quote and a newline (a denial summary's codes, or a
    principal named so) comes back from a CSV reader exactly."""
    import csv
    import io
    g, db, _, _ = paid
    out = str(tmp_path / "odd.db")
    shutil.copy(db, out)
    e = json.loads(rows(out)[-1][1])
    weird = 'acme, "west"\nbranch'
    e2 = {"v": 1, "seq": e["seq"] + 1, "prev": hashlib.sha256(b"\0" + rows(out)[-1][1]).hexdigest(),
          "ts_ms": e["ts_ms"], "kind": "decision", "request_id": "r", "principal": weird,
          "agent": "a", "merchant": "m", "action": "x", "decision": "deny",
          "code": "mandate_revoked", "mandates": []}
    b = json.dumps(e2, sort_keys=True, separators=(",", ":")).encode()
    c = sqlite3.connect(out)
    c.execute("INSERT INTO entries(seq, entry) VALUES(?,?)", (e2["seq"], b))
    c.commit()
    c.close()
    r = subprocess_run(binary("mandate-audit"), "export", "--db", out, "--format", "csv")
    last = list(csv.DictReader(io.StringIO(r.stdout.decode(), newline="")))[-1]
    assert last["principal"] == weird and last["seq"] == str(e2["seq"])


def subprocess_run(*args):
    import subprocess
    return subprocess.run(list(args), capture_output=True, timeout=60)


def test_check_receipt(paid, tmp_path):
    g, db, receipt, key = paid
    seq = receipt.split(":")[0]
    r = run(binary("mandate-audit"), "prove", "--db", db, "--seq", seq)
    assert r.returncode == 0, r.stderr
    proof = tmp_path / "proof.json"
    proof.write_text(r.stdout)
    note = tmp_path / "checkpoint.note"
    note.write_text(json.loads(r.stdout)["checkpoint"])

    def check(rcpt=receipt, checkpoint=str(note), pf=str(proof), pub=key, *extra):
        return run(binary("mandate-audit"), "check-receipt", "--checkpoint-key", pub,
                   "--checkpoint", checkpoint, "--proof", pf, "--receipt", rcpt, *extra)

    ok = check()
    assert ok.returncode == 0 and "included in the checkpoint of test.example/audit" in ok.stdout
    assert check(rcpt=receipt, pub=key).returncode == 0
    assert run(binary("mandate-audit"), "check-receipt", "--checkpoint-key", key, "--checkpoint",
               str(note), "--proof", str(proof), "--receipt", receipt, "--origin",
               "other.example/audit").returncode == 1
    # Another entry's hash, another seq, a proof for another entry: not included.
    other = rows(db)[0][2].hex()
    bad = check(rcpt=f"{seq}:{other}")
    assert bad.returncode == 1 and "NOT INCLUDED" in bad.stdout
    assert check(rcpt=f"0:{receipt.split(':')[1]}").returncode == 1
    p = json.loads(proof.read_text())
    p["proof"][0] = "00" * 32
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(p))
    assert check(pf=str(forged)).returncode == 1
    # A checkpoint signed by another key, or altered, proves nothing.
    from conftest import keygen
    _, _, other_pub = keygen(str(tmp_path), "other-cp", "EdDSA", kid="cp")
    assert check(pub=other_pub).returncode == 1
    lines = note.read_text().split("\n")
    lines[1] = str(int(lines[1]) + 1)
    altered = tmp_path / "altered.note"
    altered.write_text("\n".join(lines))
    assert check(checkpoint=str(altered)).returncode == 1
    # Bad input: exit 1 with a reason, or 2 when the proof file cannot be read as one.
    assert check(rcpt="12").returncode == 1
    assert check(rcpt="x:" + "0" * 64).returncode == 1
    (tmp_path / "junk.json").write_text("[]")
    assert check(pf=str(tmp_path / "junk.json")).returncode == 2
    assert run(binary("mandate-audit"), "check-receipt", "--receipt", receipt).returncode == 1
