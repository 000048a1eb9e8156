"""The used jtis live in the log (each allow's row records its uses) and in snapshots of them:
a restart after kill -9 between a snapshot and the rows after it refuses every use the log
records, replay checks what a restart would load against the entries, and a log written before
snapshots keeps its used jtis."""
import os
import re
import secrets
import signal
import sqlite3
import time

from conftest import binary, run, wait_for, write_json


LOADED = r"(\d+) used jtis from the snapshot at (\d+) and (\d+) entries after it"


def outcome(r):
    return r[0], (r[2] or {}).get("error")


def snapshots(g):
    c = sqlite3.connect(os.path.join(g.d, "gateway.db"))
    try:
        return c.execute("SELECT COALESCE(MAX(seq), 0) FROM snapshots").fetchone()[0]
    finally:
        c.close()


def replay(g):
    r = run(binary("mandate-audit"), "replay", "--db", os.path.join(g.d, "gateway.db"),
            "--jwks", "wallet-1=" + os.path.join(g.d, "wallet-1.jwks.json"), "--json")
    return r.returncode, r.stdout


def test_kill9_between_snapshot_and_tail(gateway):
    """Uses before a snapshot, a snapshot, uses after it, kill -9: the restarted gateway loads
    the snapshot and the rows after it, and refuses every use either of them records."""
    g = gateway
    g.conf["audit"]["snapshot_every"] = 40
    write_json(g.config_path, g.conf)
    g.start()
    multi = g.mint(uses=4)
    assert outcome(g.request("GET", "/lux/search", multi)) == (200, None)
    before = [g.mint() for _ in range(20)]
    for t in before:
        assert outcome(g.request("GET", "/lux/search", t)) == (200, None)
    # The snapshot is built beside the writer and stored with a later batch: poll for it.
    wait_for(lambda: snapshots(g) > 0 or g.request("GET", "/lux/search", g.mint())[0] != 200,
             timeout=10, what="a snapshot")
    assert snapshots(g) > 0
    taken = snapshots(g)
    after = [g.mint() for _ in range(3)]
    for t in after:
        assert outcome(g.request("GET", "/lux/search", t)) == (200, None)
    assert outcome(g.request("GET", "/lux/search", multi)) == (200, None)
    assert snapshots(g) == taken  # rows after it: the next is 40 entries later
    g.gw.stop(signal.SIGKILL)

    g.start()
    loads = wait_for(lambda: len(re.findall(LOADED, g.gw.output())) == 2 and
                     re.findall(LOADED, g.gw.output()), what="the second start's load line")
    assert int(loads[1][1]) == taken and int(loads[1][2]) >= 4, loads
    for t in before + after:
        assert outcome(g.request("GET", "/lux/search", t)) == (403, "mandate_used")
    got = [outcome(g.request("GET", "/lux/search", multi)) for _ in range(3)]
    assert got == [(200, None), (200, None), (403, "mandate_used")], got
    assert g.gw.stop() == 0
    rc, out = replay(g)
    assert rc == 0, out


def test_replay_finds_a_state_behind_the_log(gateway):
    """A snapshot that lost a use, or a row that records fewer uses than the entries show, is
    what a restart would trust: replay names it."""
    g = gateway.start()
    multi = g.mint(uses=5)
    for _ in range(3):
        assert outcome(g.request("GET", "/lux/search", multi)) == (200, None)
    assert g.gw.stop() == 0  # a snapshot at stop
    rc, out = replay(g)
    assert rc == 0, out
    db = os.path.join(g.d, "gateway.db")
    c = sqlite3.connect(db)
    blob = c.execute("SELECT uses FROM snapshots").fetchone()[0]
    c.execute("UPDATE snapshots SET uses = x''")
    c.commit()
    rc, out = replay(g)
    assert rc == 1 and "state behind the log" in out and "unknown to the state" in out, out
    # The snapshot back, and its count of the mandate lowered from 3 to 2.
    assert blob.endswith(b"\x03")
    c.execute("UPDATE snapshots SET uses = ?", (blob[:-1] + b"\x02",))
    c.commit()
    c.close()
    rc, out = replay(g)
    assert rc == 1 and "the state says 2 uses, the entries 3" in out, out
    # And what a restart loads is what the snapshot says: the lost use is usable again. Replay
    # is how an auditor sees that before it happens.
    g.start()
    got = [outcome(g.request("GET", "/lux/search", multi)) for _ in range(4)]
    assert got == [(200, None)] * 3 + [(403, "mandate_used")], got
    assert g.gw.stop() == 0


def test_log_from_before_snapshots_keeps_its_used_jtis(gateway):
    """A log written before the uses column: its used_jtis table is the state until the first
    snapshot, and the gateway that opens it goes on from there."""
    g = gateway.start()
    assert g.gw.stop() == 0
    db = os.path.join(g.d, "gateway.db")
    c = sqlite3.connect(db)
    c.executescript("""
        DROP VIEW used_jtis;
        CREATE TABLE used_jtis(iss TEXT NOT NULL, jti TEXT NOT NULL, exp INTEGER NOT NULL,
                               used INTEGER NOT NULL, PRIMARY KEY(iss, jti));
        DELETE FROM snapshots;
        ALTER TABLE entries DROP COLUMN uses;
    """)
    jti = "old-" + secrets.token_hex(12)
    tok = g.mint(uses=3, jti=jti)
    c.execute("INSERT INTO used_jtis VALUES('wallet-1', ?, ?, 2)", (jti, int(time.time()) + 3600))
    c.commit()
    c.close()
    g.start()
    got = [outcome(g.request("GET", "/lux/search", tok)) for _ in range(2)]
    assert got == [(200, None), (403, "mandate_used")], got
    assert g.gw.stop() == 0
    c = sqlite3.connect(db)
    assert c.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 1
    # Its first snapshot took the table's place: a gateway from before cannot open the log now
    # (it would write and read only the table, and forget every use since).
    assert c.execute("SELECT type FROM sqlite_master WHERE name = 'used_jtis'").fetchone() == \
        ("view",)
    c.close()


def test_a_larger_skew_after_a_restart_does_not_revive_a_dropped_jti(gateway):
    """A snapshot drops the jtis whose mandates expired more than the clock skew (+2 s) ago. A
    start with a larger skew would accept such a mandate again: the snapshot's horizon makes it
    refuse every mandate expiring before what the snapshot still knows."""
    g = gateway
    g.conf["limits"]["clock_skew_s"] = 0
    write_json(g.config_path, g.conf)
    g.start()
    exp = int(time.time()) + 2
    tok = g.mint(exp=exp)
    assert outcome(g.request("GET", "/lux/search", tok)) == (200, None)
    wait_for(lambda: time.time() > exp + 4, timeout=10, what="the mandate long expired")
    assert outcome(g.request("GET", "/lux/search", tok)) == (401, "mandate_expired")
    assert g.gw.stop() == 0  # its snapshot drops the jti
    g.conf["limits"]["clock_skew_s"] = 60
    write_json(g.config_path, g.conf)
    g.start()
    assert outcome(g.request("GET", "/lux/search", tok)) == (401, "mandate_expired")
    fresh = g.mint(exp=exp)  # as old, never used: refused too, the price of the horizon
    assert outcome(g.request("GET", "/lux/search", fresh)) == (401, "mandate_expired")
    assert outcome(g.request("GET", "/lux/search", g.mint())) == (200, None)
    assert g.gw.stop() == 0
    rc, out = replay(g)
    assert rc == 0, out
