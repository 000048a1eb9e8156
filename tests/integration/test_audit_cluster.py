"""mandate-audit replay over several nodes' logs (SPEC §6): two gateways with the default local
backend, each with its own database, in front of one stub merchant. Their state is not shared, so
each lets through what only the pair together should not: a single-use mandate once on each
node, one cart paid on each, a cap exceeded only in sum. Each log alone replays clean; replayed
together they name the rule, the node's log, the seq and the request id of the allow that broke
it."""
import base64
import json
import os
import shutil
import sqlite3

import pytest

from conftest import Gateway, binary, run, wait_for, write_json


def make_pair(tmp_path, procs, routes=()):
    """Gateways a and b: the same wallet, merchant and checkpoint keys, the same stub merchant,
    their own database and origin each. routes: extra routes for both."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Gateway(str(tmp_path / "a"), procs), Gateway(str(tmp_path / "b"), procs)
    # b signs and checks with a's keys, and forwards to a's stub merchant.
    b.key, b.merchant_key = a.key, a.merchant_key
    b.up_port, b.record = a.up_port, a.record
    for g, node in ((a, "a"), (b, "b")):
        g.conf["audit"]["origin"] = f"{node}.test/audit"
        g.conf["audit"]["checkpoint_key"] = os.path.join(a.d, "checkpoint.pem")
        g.conf["issuers"][0]["jwks_file"] = os.path.join(a.d, "wallet-1.jwks.json")
        m = g.conf["merchants"][0]
        m["jwks_file"] = os.path.join(a.d, "lux-hotels.jwks.json")
        m["upstream"] = f"http://127.0.0.1:{a.up_port}"
        m["routes"] = list(routes) + m["routes"]
        write_json(g.config_path, g.conf)
    a.start()
    b.upstream = a.upstream
    b.start()
    return a, b


@pytest.fixture
def pair(tmp_path, procs):
    return make_pair(tmp_path, procs)


def db(g):
    return os.path.join(g.d, "gateway.db")


def replay(a, *dbs, json_out=False, extra=()):
    """mandate-audit replay over dbs, with the checkpoint key and both key sets."""
    args = [binary("mandate-audit"), "replay"]
    for d in dbs:
        args += ["--db", d]
    args += ["--checkpoint-key", os.path.join(a.d, "checkpoint.pub.pem"),
             "--jwks", "wallet-1=" + os.path.join(a.d, "wallet-1.jwks.json"),
             "--jwks", "lux-hotels=" + os.path.join(a.d, "lux-hotels.jwks.json"), *extra]
    if json_out:
        args.append("--json")
    r = run(*args)
    return r.returncode, (json.loads(r.stdout) if json_out and r.stdout.strip() else r.stdout), r


def stop(*gs):
    """Stop the gateways (each signs a final checkpoint), so that their logs are complete."""
    for g in gs:
        assert g.gw.stop() == 0


def alone_clean(a, b):
    for g in (a, b):
        rc, out, r = replay(a, db(g))
        assert rc == 0, r.stdout + r.stderr


def test_single_use_mandate_once_on_each_node(pair):
    a, b = pair
    tok = a.mint(uses=1)
    jti = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "=="))["jti"]
    st_a, h_a, _, _ = a.request("GET", "/lux/search", tok)
    st_b, h_b, _, _ = b.request("GET", "/lux/search", tok)
    assert (st_a, st_b) == (200, 200)  # local state: each node allows it once
    stop(a, b)
    alone_clean(a, b)

    rc, out, r = replay(a, db(a), db(b))
    assert rc == 1, r.stdout + r.stderr
    line = [l for l in out.splitlines() if "VIOLATION" in l]
    assert len(line) == 1, out
    assert "reused jti" in line[0] and jti in line[0] and db(b) in line[0], out
    assert h_b["x-request-id"] in line[0] and "b.test/audit" in line[0], out
    assert "1 broken rule" in out

    rc, rep, _ = replay(a, db(a), db(b), json_out=True)
    assert rc == 1 and not rep["ok"] and rep["replayed"]
    [v] = rep["violations"]
    assert (v["violation"], v["db"], v["origin"]) == ("reused jti", db(b), "b.test/audit")
    assert v["request_id"] == h_b["x-request-id"] and jti in v["detail"]
    assert v["first"]["db"] == db(a)
    # The allow on a is the first of that jti in a's log: its seq is named as the first.
    assert v["first"]["seq"] == int(h_a["mandate-receipt"].split(":")[0])
    assert v["seq"] == int(h_b["mandate-receipt"].split(":")[0])


def test_one_cart_paid_on_both_nodes(pair):
    a, b = pair
    cart = a.cart(total=18000)
    # Two payment mandates for the one cart: only the cart is reused.
    st_a = a.book(a.pay(cart), cart)[0]
    st_b, h_b, _, _ = b.book(a.pay(cart), cart)
    assert (st_a, st_b) == (200, 200)
    stop(a, b)
    alone_clean(a, b)
    rc, rep, r = replay(a, db(a), db(b), json_out=True)
    assert rc == 1, r.stdout + r.stderr
    assert [(v["violation"], v["db"], v["request_id"]) for v in rep["violations"]] == \
        [("reused cart", db(b), h_b["x-request-id"])], rep


def test_cap_exceeded_only_in_sum(pair):
    a, b = pair
    c1, c2 = a.cart(total=18000), a.cart(total=18000)
    assert a.book(a.pay(c1, cap=30000), c1)[0] == 200
    st, h_b, _, _ = b.book(a.pay(c2, cap=30000), c2)
    assert st == 200  # b alone has spent 18000 of 30000
    stop(a, b)
    alone_clean(a, b)
    rc, rep, r = replay(a, db(a), db(b), json_out=True)
    assert rc == 1, r.stdout + r.stderr
    [v] = rep["violations"]
    assert (v["violation"], v["db"], v["request_id"]) == ("cap exceeded", db(b),
                                                         h_b["x-request-id"]), rep
    assert "36000 spent, cap 30000" in v["detail"]


def test_released_spend_counts_on_no_node(tmp_path, procs):
    """A payment the merchant refused (5xx) released its reservation on node a: the same spend
    on node b later fits the cap, across the two logs as on one gateway."""
    a, b = make_pair(tmp_path, procs, routes=[
        {"method": "POST", "path": "/status/*", "action": "book_room", "priced": True}])
    c1, c2 = a.cart(total=18000), a.cart(total=18000)
    st, _, _, _ = a.request("POST", "/status/500", a.pay(c1, cap=30000),
                            headers={"Mandate-Cart": c1}, body="{}")
    assert st == 500
    assert b.book(a.pay(c2, cap=30000), c2)[0] == 200
    stop(a, b)
    rc, out, r = replay(a, db(a), db(b))
    assert rc == 0, r.stdout + r.stderr
    assert "no broken rule" in out


def test_clean_pair(pair):
    a, b = pair
    for g in (a, b):
        assert g.request("GET", "/lux/search", a.mint(uses=2))[0] == 200
        c = a.cart(total=10000)
        assert g.book(a.pay(c), c)[0] == 200
    stop(a, b)
    rc, out, r = replay(a, db(a), db(b))
    assert rc == 0, r.stdout + r.stderr
    assert f"replay: {db(a)} (origin a.test/audit): intact" in out
    assert f"replay: {db(b)} (origin b.test/audit): intact" in out
    assert "2 logs replayed together: 4 allows, no broken rule" in out
    rc, rep, _ = replay(a, db(a), db(b), json_out=True)
    assert rc == 0 and rep["ok"] and rep["replayed"] and rep["violations"] == []
    assert [(l["db"], l["origin"], l["ok"], l["allows"]) for l in rep["logs"]] == \
        [(db(a), "a.test/audit", True, 2), (db(b), "b.test/audit", True, 2)]
    assert rep["allows"] == 4


def test_held_checkpoints_go_to_their_log(pair, tmp_path):
    """Each held checkpoint is checked against the log whose origin it names; one that names no
    log's origin is refused, and so is a --origin that is not one per --db."""
    a, b = pair
    assert a.request("GET", "/lux/search", a.mint())[0] == 200
    assert b.request("GET", "/lux/search", a.mint())[0] == 200
    held = []
    for g in (b, a):
        # The writer signs one within a few seconds of the entries (404 until then).
        st, _, _, note = wait_for(lambda: (r := g.admin("GET", "/admin/checkpoint"))[0] == 200
                                  and r, timeout=10, what="a signed checkpoint")
        held.append(os.path.join(g.d, "held.checkpoint"))
        with open(held[-1], "wb") as f:
            f.write(note)
    stop(a, b)
    extra = ["--checkpoint", held[0], "--checkpoint", held[1]]
    rc, out, r = replay(a, db(a), db(b), extra=extra)
    assert rc == 0, r.stdout + r.stderr
    rc, out, r = replay(a, db(a), db(b), extra=[*extra, "--origin", "a.test/audit",
                                                "--origin", "b.test/audit"])
    assert rc == 0, r.stdout + r.stderr
    # Named the other way round, each log's checkpoints are for the other origin.
    rc, out, r = replay(a, db(a), db(b), extra=["--origin", "b.test/audit",
                                                "--origin", "a.test/audit"])
    assert rc == 1 and "wrong origin" in out, r.stdout + r.stderr
    rc, out, r = replay(a, db(a), db(b), extra=["--origin", "a.test/audit"])
    assert rc == 1 and "once per --db" in r.stderr
    other = str(tmp_path / "other.checkpoint")
    with open(held[0], "rb") as f, open(other, "wb") as o:
        o.write(f.read().replace(b"b.test/audit", b"c.test/audit", 1))
    rc, out, r = replay(a, db(a), db(b), extra=["--checkpoint", other])
    assert rc == 1 and "none of the logs" in r.stderr, r.stdout + r.stderr


def test_a_log_not_intact_is_not_replayed(pair, tmp_path):
    a, b = pair
    tok = a.mint(uses=1)
    assert a.request("GET", "/lux/search", tok)[0] == 200
    assert b.request("GET", "/lux/search", tok)[0] == 200
    stop(a, b)
    bad = str(tmp_path / "b-copy.db")
    shutil.copy(db(b), bad)
    c = sqlite3.connect(bad)
    c.execute("DELETE FROM entries WHERE seq = (SELECT MAX(seq) FROM entries)")
    c.commit()
    c.close()
    rc, rep, r = replay(a, db(a), bad, json_out=True)
    assert rc == 1, r.stdout + r.stderr
    assert not rep["replayed"] and rep["violations"] == []
    assert [l["ok"] for l in rep["logs"]] == [True, False]
    rc, out, r = replay(a, db(a), bad)
    assert rc == 1 and "not replayed together" in out and f"replay: {bad}" in out


def test_several_db_only_for_replay_and_a_missing_one(pair, tmp_path):
    a, b = pair
    stop(a, b)
    r = run(binary("mandate-audit"), "verify", "--db", db(a), "--db", db(b),
            "--checkpoint-key", os.path.join(a.d, "checkpoint.pub.pem"))
    assert r.returncode == 1 and "only replay takes several --db" in r.stderr
    rc, out, r = replay(a, db(a), str(tmp_path / "missing.db"))
    assert rc == 2, r.stdout + r.stderr


def test_a_nodes_state_behind_its_log(pair):
    """Replayed together, each node's used jtis are still checked against its own entries: a
    snapshot that lost its uses is named in that node's report, and the exit status is 1."""
    a, b = pair
    tok = a.mint(uses=3)
    for g in (a, b, a):
        assert g.request("GET", "/lux/search", tok)[0] == 200
    stop(a, b)
    rc, out, r = replay(a, db(a), db(b))
    assert rc == 0, r.stdout + r.stderr
    c = sqlite3.connect(db(b))
    c.execute("UPDATE snapshots SET uses = x''")
    c.commit()
    c.close()
    rc, out, r = replay(a, db(a), db(b))
    assert rc == 1, r.stdout + r.stderr
    assert "state behind the log" in out and "unknown to the state" in out, out
    assert "3 allows, no broken rule; 1 log with a violation above" in out, out
    rc, rep, _ = replay(a, db(a), db(b), json_out=True)
    assert rc == 1 and not rep["ok"] and rep["violations"] == []
    assert [l["ok"] for l in rep["logs"]] == [True, False]
    assert rep["logs"][1]["violation"] == "state behind the log"
