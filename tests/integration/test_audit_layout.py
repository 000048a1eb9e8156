"""The audit log's layout on disk. A new log stores each entry alone (no leaf hash beside it): the
tools recompute the leaf hashes, and verify still names an altered entry from the chain. A log
of the older layout (entries(seq, entry, leaf), subtree roots from level 3 up, nodes with a
rowid) is verified with its stored leaves checked, proved from, and appended to by a restarted
gateway in that same layout: no old log is rewritten."""
import csv
import hashlib
import io
import json
import os
import shutil
import sqlite3

from conftest import binary, run


def leaf(b):
    return hashlib.sha256(b"\x00" + b).digest()


def mth(leaves):
    """RFC 6962 Merkle tree hash of leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def verify(g, db):
    r = run(binary("mandate-audit"), "verify", "--db", db, "--checkpoint-key",
            os.path.join(g.d, "checkpoint.pub.pem"),
            "--jwks", "wallet-1=" + os.path.join(g.d, "wallet-1.jwks.json"), "--json")
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else r.stderr


def traffic(g, n):
    for _ in range(n):
        assert g.request("GET", "/lux/search", g.mint())[0] == 200
        assert g.request("GET", "/lux/search", "garbage")[0] == 401


def columns(db):
    c = sqlite3.connect(db)
    cols = [r[1] for r in c.execute("PRAGMA table_info(entries)")]
    c.close()
    return cols


def to_older_layout(db):
    """What a gateway of the older layout would have written for the same entries."""
    c = sqlite3.connect(db)
    rows = c.execute("SELECT seq, entry FROM entries ORDER BY seq").fetchall()
    leaves = [leaf(e) for _, e in rows]
    c.executescript("""
        DROP TABLE entries;
        CREATE TABLE entries(seq INTEGER PRIMARY KEY, entry BLOB NOT NULL, leaf BLOB NOT NULL);
        DROP TABLE nodes;
        CREATE TABLE nodes(level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
                           PRIMARY KEY(level, idx));
        CREATE TABLE mandates(sha256 TEXT PRIMARY KEY, jws TEXT NOT NULL);
        INSERT OR IGNORE INTO mandates SELECT sha256, jws FROM texts;
        DROP TABLE texts;""")
    c.executemany("INSERT INTO entries VALUES(?,?,?)",
                  [(s, e, l) for (s, e), l in zip(rows, leaves)])
    level = 3
    while (1 << level) <= len(leaves):
        w = 1 << level
        c.executemany("INSERT INTO nodes VALUES(?,?,?)",
                      [(level, i, mth(leaves[i * w:(i + 1) * w])) for i in range(len(leaves) // w)])
        level += 1
    c.commit()
    c.close()


def test_new_log_stores_no_leaf(gateway, tmp_path):
    """The leaf hash is not stored; prove and the CSV receipt recompute it, and an entry altered
    in place is named from the chain (the next entry's prev no longer matches it)."""
    g = gateway.start()
    traffic(g, 12)
    assert g.gw.stop() == 0
    db = os.path.join(g.d, "gateway.db")
    assert columns(db) == ["seq", "entry", "uses"]  # uses: audit/snap.h
    c = sqlite3.connect(db)
    entries = [e for (e,) in c.execute("SELECT entry FROM entries ORDER BY seq")]
    c.close()
    leaves = [leaf(e) for e in entries]
    assert verify(g, db)[0] == 0
    r = run(binary("mandate-audit"), "prove", "--db", db, "--seq", "9", "--size",
            str(len(leaves)))
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert bytes.fromhex(p["leaf"]) == leaves[9] and bytes.fromhex(p["root"]) == mth(leaves)
    r = run(binary("mandate-audit"), "export", "--db", db, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(r.stdout, newline="")))
    assert [row["receipt"] for row in rows] == [f"{i}:{l.hex()}" for i, l in enumerate(leaves)]

    altered = str(tmp_path / "altered.db")
    shutil.copy(db, altered)
    c = sqlite3.connect(altered)
    e = bytearray(entries[4])
    i = e.index(b'"ts_ms":') + 9
    e[i] = ord("1") if e[i] != ord("1") else ord("2")
    c.execute("UPDATE entries SET entry = ? WHERE seq = 4", (bytes(e),))
    c.commit()
    c.close()
    rc, rep = verify(g, altered)
    assert rc == 1 and rep["bad_seq"] == 4 and rep["violation"] == "altered", rep


def test_older_layout_verified_and_appended(gateway, tmp_path):
    g = gateway.start()
    traffic(g, 10)
    assert g.gw.stop() == 0
    db = os.path.join(g.d, "gateway.db")
    to_older_layout(db)
    assert columns(db) == ["seq", "entry", "leaf"]
    rc, rep = verify(g, db)
    assert rc == 0, rep
    old = rep["entries"]

    # A restarted gateway appends to it in the same layout, plus the uses of each entry.
    g.start()
    traffic(g, 10)
    assert g.gw.stop() == 0
    assert columns(db) == ["seq", "entry", "leaf", "uses"]
    c = sqlite3.connect(db)
    rows = c.execute("SELECT seq, entry, leaf FROM entries ORDER BY seq").fetchall()
    c.close()
    assert len(rows) > old + 20
    assert all(l == leaf(e) for _, e, l in rows)
    rc, rep = verify(g, db)
    assert rc == 0 and rep["entries"] == len(rows), rep
    # Mandate texts from both tables: the older one's and those appended since.
    assert rep["mandates_checked"] >= 20 and rep["mandates_unchecked"] == 0, rep
    leaves = [l for _, _, l in rows]
    for seq in (3, old + 5):
        r = run(binary("mandate-audit"), "prove", "--db", db, "--seq", str(seq), "--size",
                str(len(leaves)))
        assert r.returncode == 0, r.stderr
        assert bytes.fromhex(json.loads(r.stdout)["root"]) == mth(leaves)

    # Its stored leaves are still checked: one that does not match its entry is an alteration.
    bad = str(tmp_path / "bad-leaf.db")
    shutil.copy(db, bad)
    c = sqlite3.connect(bad)
    c.execute("UPDATE entries SET leaf = ? WHERE seq = 6", (b"\x00" * 32,))
    c.commit()
    c.close()
    rc, rep = verify(g, bad)
    assert rc == 1 and rep["bad_seq"] == 6 and rep["violation"] == "altered", rep
