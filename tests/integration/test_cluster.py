"""Several gateways on one PostgreSQL (SPEC §6): two nodes with the same keys in front of one stub
merchant, each with its own audit log, sharing uses, carts, spend and revocations in a throwaway
PostgreSQL (pgserver.py). What one gateway guarantees holds across both: a mandate forwarded at
most `uses` times, a cart paid once, a cap never exceeded, a revocation applied everywhere within
1 s; PostgreSQL gone means 503 state_unavailable and nothing forwarded, and service comes back by
itself; a node killed under load leaves no forward without its allow entry and no overspend."""
import base64
import copy
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import Gateway, Proc, binary, free_port, run, wait_for, write_json
from pgserver import pg  # noqa: F401 (fixture)

NODES = ("gw-a", "gw-b")


def node_like(first, d):
    """Another gateway with first's keys, merchant and stub upstream (its record file too), its
    own ports, directory and audit database."""
    n = copy.copy(first)
    n.d = d
    n.port, n.admin_port = free_port(), free_port()
    n.conf = copy.deepcopy(first.conf)
    n.conf["listen"] = f"127.0.0.1:{n.port}"
    n.conf["admin"]["listen"] = f"127.0.0.1:{n.admin_port}"
    here = lambda name: os.path.join(first.d, name)  # noqa: E731
    n.conf["audit"]["checkpoint_key"] = here(first.conf["audit"]["checkpoint_key"])
    for part in n.conf["issuers"] + n.conf["merchants"]:
        part["jwks_file"] = here(part["jwks_file"])
    n.config_path = os.path.join(d, "gateway.json")
    n.gw = None
    return n


class Cluster:
    """Gateways named names on the PostgreSQL database dsn, in front of one stub merchant."""

    def __init__(self, d, procs, dsn, names=NODES):
        dirs = [os.path.join(d, name) for name in names]
        for x in dirs:
            os.makedirs(x)
        first = Gateway(dirs[0], procs)
        # A priced route whose answer the test picks (the stub's /status/<code>).
        first.conf["merchants"][0]["routes"].append(
            {"method": "POST", "path": "/status/*", "action": "book_room", "priced": True})
        self.nodes = [first] + [node_like(first, x) for x in dirs[1:]]
        self.dsn = dsn
        for n, name in zip(self.nodes, names):
            self.configure(n, name)

    def configure(self, n, name):
        n.name = name
        n.conf["state"] = {"backend": "postgres", "dsn": self.dsn, "node": name}
        n.conf["audit"]["origin"] = f"test.example/{name}/audit"
        write_json(n.config_path, n.conf)

    def start(self):
        first = self.nodes[0]
        first.start_upstream()
        for n in self.nodes:
            n.upstream = first.upstream
            start_node(n)
        return self


def ready(n):
    """Is the node's /readyz 200 (False while nothing listens yet)?"""
    try:
        return n.admin("GET", "/readyz")[0] == 200
    except OSError:
        return False


def start_node(n):
    n.start()
    wait_for(lambda: ready(n), 10, f"{n.name} ready")


@pytest.fixture
def cluster(tmp_path, procs, pg):  # noqa: F811 (pg is the fixture imported above)
    return Cluster(str(tmp_path), procs, pg.create_database("mg")).start()


def outcome(r):
    """(status, error code or None) of a request's answer."""
    st, _, body, _ = r
    return st, (body or {}).get("error")


def at_once(calls):
    """Run every call in its own thread, released together; their results in order (an
    exception stands for a connection that broke)."""
    results = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def one(i, call):
        start.wait()
        try:
            results[i] = call()
        except Exception as e:  # noqa: BLE001 (a killed node breaks its connections)
            results[i] = e

    threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def tagged(g, tag):
    """What the merchant received whose path carries tag."""
    return [r for r in g.received() if tag in r["path"]]


def header(rec, name):
    return next((v for k, v in rec["headers"] if k.lower() == name.lower()), None)


def db(n):
    return os.path.join(n.d, "gateway.db")


def entries(n):
    """The node's audit entries as stored: (bytes as text, parsed)."""
    r = run(binary("mandate-audit"), "export", "--db", db(n))
    assert r.returncode == 0, r.stderr
    return [(line, json.loads(line)) for line in r.stdout.splitlines() if line]


def jwks_args(first):
    return ["--jwks", "wallet-1=" + os.path.join(first.d, "wallet-1.jwks.json"),
            "--jwks", "lux-hotels=" + os.path.join(first.d, "lux-hotels.jwks.json")]


def multi_db_replay():
    """Does mandate-audit replay take several --db (SPEC §6)?"""
    usage = run(binary("mandate-audit"), "--help").stdout
    line = next((l for l in usage.splitlines() if "replay" in l), "")
    return line.count("--db") > 1


# --- consumption across nodes -------------------------------------------------------------------

def test_uses_counted_across_nodes(cluster):
    """A uses:5 mandate alternated over two nodes is forwarded exactly 5 times; so is one sent 20
    times at once over both."""
    a, b = cluster.nodes
    tok = a.mint(uses=5)
    got = [outcome(n.request("GET", "/lux/search?alt=1", tok)) for n in (a, b) * 5]
    assert got == [(200, None)] * 5 + [(403, "mandate_used")] * 5, got
    tok = a.mint(uses=5)
    got = at_once([lambda n=n: outcome(n.request("GET", "/lux/search?burst=1", tok))
                   for n in (a, b) * 10])
    assert got.count((200, None)) == 5 and got.count((403, "mandate_used")) == 15, got
    a.barrier()
    b.barrier()
    assert len(tagged(a, "alt=1")) == 5
    assert len(tagged(a, "burst=1")) == 5
    # Each node's own log says which node wrote it.
    for n in (a, b):
        assert [e.get("node") for _, e in entries(n) if e["kind"] == "config"] == [n.name]


def test_cart_paid_once_across_nodes(cluster):
    """A cart paid with two payment mandates at once, one on each node: one booking."""
    a, b = cluster.nodes
    for round_ in range(10):
        c = a.cart(total=1000)
        p1, p2 = a.pay(c), a.pay(c)
        got = at_once([lambda: outcome(a.book(p1, c, f"?cart={round_}")),
                       lambda: outcome(b.book(p2, c, f"?cart={round_}"))])
        assert sorted(got) == [(200, None), (403, "cart_used")], (round_, got)
    a.barrier()
    for round_ in range(10):
        assert len(tagged(a, f"cart={round_}")) == 1


def test_cap_exact_across_nodes(cluster):
    """Cap 10,000 EUR a day, 30 distinct 1,000 EUR carts paid at once over two nodes: exactly 10
    forwarded, 20 spend_cap_exceeded, whatever the interleaving; five times."""
    a, b = cluster.nodes
    for round_ in range(5):
        who = f"dora-{round_}"
        pairs = []
        for _ in range(30):
            c = a.cart(total=100000, sub=who)
            pairs.append((a.pay(c, cap=1000000, sub=who), c))
        got = at_once([lambda n=(a, b)[i % 2], p=p, c=c: outcome(n.book(p, c, f"?cap={round_}"))
                       for i, (p, c) in enumerate(pairs)])
        assert got.count((200, None)) == 10, (round_, got)
        assert got.count((403, "spend_cap_exceeded")) == 20, (round_, got)
    a.barrier()
    for round_ in range(5):
        assert len(tagged(a, f"cap={round_}")) == 10


def test_outcomes_settle_across_nodes(cluster):
    """A 500 on one node releases the reservation for the other; a broken upstream connection
    keeps it (unknown) for both."""
    a, b = cluster.nodes
    c1 = a.cart(total=15000, sub="erin")
    st, _, body, _ = a.request("POST", "/status/500", a.pay(c1, cap=20000, sub="erin"),
                               headers={"Mandate-Cart": c1}, body="{}")
    assert st == 500, body
    c2 = a.cart(total=15000, sub="erin")  # fits only because the first was released
    assert outcome(b.book(a.pay(c2, cap=20000, sub="erin"), c2)) == (200, None)
    c3 = a.cart(total=15000, sub="erin")
    assert outcome(a.book(a.pay(c3, cap=20000, sub="erin"), c3)) == (403, "spend_cap_exceeded")

    c4 = a.cart(total=15000, sub="fred")
    st, _, body, _ = b.request("PUT", "/drop/x", a.pay(c4, cap=20000, sub="fred"),
                               headers={"Mandate-Cart": c4}, body="{}")
    assert st == 502, body  # sent, then the connection broke: the spend is kept as unknown
    c5 = a.cart(total=15000, sub="fred")
    assert outcome(a.book(a.pay(c5, cap=20000, sub="fred"), c5)) == (403, "spend_cap_exceeded")


# --- revocations --------------------------------------------------------------------------------

def test_revocation_on_one_node_applies_on_the_other_within_1s(cluster):
    a, b = cluster.nodes
    agent = {"sub": "agent-rogue"}
    assert outcome(b.request("GET", "/lux/search", a.mint(act=agent))) == (200, None)
    st, _, body, _ = a.admin("POST", "/admin/revocations", {"agent": "agent-rogue"})
    assert st == 201, body
    t0 = time.monotonic()
    wait_for(lambda: outcome(b.request("GET", "/lux/search?after=1", a.mint(act=agent))) ==
             (403, "mandate_revoked"), 1.0, "revocation applied on gw-b")
    elapsed = time.monotonic() - t0
    assert outcome(a.request("GET", "/lux/search", a.mint(act=agent))) == (403, "mandate_revoked")
    assert outcome(b.request("GET", "/lux/search", a.mint())) == (200, None)  # another agent
    st, _, listed, _ = b.admin("GET", "/admin/revocations")
    assert st == 200 and "agent-rogue" in json.dumps(listed), listed
    # Each node writes the revocation into its own log.
    for n in (a, b):
        wait_for(lambda n=n: [e for _, e in entries(n) if e["kind"] == "revocation" and
                              "agent-rogue" in json.dumps(e)], 5, f"revocation entry on {n.name}")
    print(f"revocation applied on gw-b after {elapsed * 1000:.0f} ms")


# --- PostgreSQL unreachable ---------------------------------------------------------------------

def test_postgres_down_fails_closed_and_recovers(cluster, pg):  # noqa: F811
    a, b = cluster.nodes
    # A node that reconnects while the server recovers is told so (SQLSTATE 57P03).
    pg.expect_error(r" 57P03 FATAL: ")
    assert outcome(a.request("GET", "/lux/search", a.mint())) == (200, None)
    pg.stop_immediate()
    t0 = time.monotonic()
    for n in (a, b):
        wait_for(lambda n=n: n.admin("GET", "/readyz")[0] == 503, 2.0 - (time.monotonic() - t0),
                 f"{n.name} /readyz failing")
    assert 'mandate_state_ready{backend="postgres"} 0' in a.admin("GET", "/metrics")[3].decode()
    # Anything that passed the mandate checks needs the shared state: 503, nothing forwarded.
    st, h, body, _ = a.request("GET", "/lux/search?down=1", a.mint())
    assert (st, body["error"]) == (503, "state_unavailable"), body
    denied_id = body["request_id"]
    assert h.get("x-request-id") == denied_id
    c = a.cart(total=1000)
    assert outcome(b.book(a.pay(c), c, "?down=2")) == (503, "state_unavailable")
    # A request that fails its own checks is refused as always.
    old = int(time.time()) - 600
    assert outcome(a.request("GET", "/lux/search?down=3", a.mint(iat=old, exp=old + 60))) == \
        (401, "mandate_expired")
    st, _, body, _ = b.admin("POST", "/admin/revocations", {"agent": "agent-x"})
    assert (st, body["error"]) == (503, "state_unavailable"), body

    pg.start_again()
    t0 = time.monotonic()
    for n in (a, b):
        wait_for(lambda n=n: outcome(n.request("GET", "/lux/search?up=1", n.mint())) == (200, None),
                 10.0 - (time.monotonic() - t0), f"{n.name} serving again")
        assert n.admin("GET", "/readyz")[0] == 200
        assert 'mandate_state_ready{backend="postgres"} 1' in \
            n.admin("GET", "/metrics")[3].decode()
    assert outcome(b.book(a.pay(c), c, "?up=2")) == (200, None)  # the cart was not consumed
    a.barrier()
    assert not [r for r in a.received() if "down=" in r["path"]]
    a.gw.stop()
    denials = [e for _, e in entries(a) if e.get("request_id") == denied_id]
    assert [(e["decision"], e["code"]) for e in denials] == [("deny", "state_unavailable")]


# --- a node killed under load -------------------------------------------------------------------

def test_kill9_node_under_priced_load(cluster):
    """kill -9 of one node while both take payments, then restart it: the merchant got no more
    than the cap, each request it got has an allow entry in the log of the node that forwarded
    it (its receipt names that entry), and the logs replay together without a violation."""
    a, b = cluster.nodes
    who, cap, n_carts = "gina", 20 * 1000, 60
    work = []
    for i in range(n_carts):
        c = a.cart(total=1000, sub=who)
        work.append((a.pay(c, cap=cap, sub=who), c))
    lock = threading.Lock()
    answers = []

    def client(k):
        while True:
            with lock:
                if not work:
                    return
                p, c = work.pop()
                i = len(work)
            n = (a, b)[(i + k) % 2]
            try:
                answers.append(outcome(n.book(p, c, "?load=1")))
            except Exception as e:  # noqa: BLE001 (the killed node breaks its connections)
                answers.append(("broken", repr(e)))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(tagged(a, "load=1")) >= 6, 20, "payments under way")
    b.gw.stop(signal.SIGKILL)
    start_node(b)
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    a.barrier()
    b.barrier()
    got = tagged(a, "load=1")
    spent = sum(int(header(r, "Mandate-Amount").split()[0]) for r in got)
    assert spent <= cap, (spent, answers)
    assert answers.count((200, None)) <= len(got)
    assert len(got) >= 6

    a.gw.stop()
    b.gw.stop()
    allows = {}  # request_id -> the receipt its node gave: "<seq>:<leaf hash>"
    for n in (a, b):
        for line, e in entries(n):
            if e["kind"] == "decision" and e["decision"] == "allow":
                leaf = hashlib.sha256(b"\x00" + line.encode()).hexdigest()
                allows[e["request_id"]] = f"{e['seq']}:{leaf}"
    for r in got:
        rid = header(r, "X-Request-Id")
        assert allows.get(rid) == header(r, "Mandate-Receipt"), (rid, allows.get(rid))

    for n in (a, b):
        r = run(binary("mandate-audit"), "replay", "--db", db(n), *jwks_args(a))
        assert r.returncode == 0, r.stdout + r.stderr
    if not multi_db_replay():
        pytest.skip("mandate-audit replay takes one --db for now: the cross-node replay is not "
                    "checked (every other assertion of this test passed)")
    r = run(binary("mandate-audit"), "replay", "--db", db(a), "--db", db(b), *jwks_args(a))
    assert r.returncode == 0, r.stdout + r.stderr


# --- start, node names and configuration ----------------------------------------------------------

def test_nodes_starting_at_once_on_a_fresh_database(tmp_path, procs, pg):  # noqa: F811
    """Three nodes started together create the schema once between them (a race would leave an
    ERROR in PostgreSQL's log, which fails the test), and all serve one shared state."""
    c = Cluster(str(tmp_path), procs, pg.create_database("mg"), ("gw-a", "gw-b", "gw-c"))
    first = c.nodes[0]
    first.start_upstream()
    for n in c.nodes:
        n.upstream = first.upstream
        n.gw = Proc([binary("mandate-gateway"), "--config", n.config_path],
                    os.path.join(n.d, "gateway.log"))
        procs.append(n.gw)
    for n in c.nodes:
        wait_for(lambda n=n: n.gw.p.poll() is None and ready(n), 10, f"{n.name} ready")
    tok = first.mint(uses=2)
    got = [outcome(n.request("GET", "/lux/search", tok)) for n in c.nodes]
    assert got == [(200, None), (200, None), (403, "mandate_used")], got


def test_second_live_node_with_the_same_name_is_refused(tmp_path, procs, pg):  # noqa: F811
    c = Cluster(str(tmp_path), procs, pg.create_database("mg"))
    a, b = c.nodes
    c.configure(b, a.name)
    c.nodes = [a]
    c.start()
    twin = Proc([binary("mandate-gateway"), "--config", b.config_path],
                os.path.join(b.d, "gateway.log")).expect_error(a.name)
    procs.append(twin)
    assert twin.wait(10) == 2  # SPEC §2.4: cannot run (the name is taken), not a configuration error
    assert re.search(r"node.*gw-a|gw-a.*node", twin.output()), twin.output()
    assert outcome(a.request("GET", "/lux/search", a.mint())) == (200, None)


def test_check_config_state_dsn_syntax_only(gateway):
    """--check-config checks the DSN's syntax without connecting (nothing listens on port 1)."""
    def check(state):
        gateway.conf["state"] = state
        write_json(gateway.config_path, gateway.conf)
        return run(binary("mandate-gateway"), "--check-config", "--config", gateway.config_path)

    for dsn in ("postgresql://mg@127.0.0.1:1/mandates?connect_timeout=2",
                "host=127.0.0.1 port=1 dbname=mandates user=mg"):
        r = check({"backend": "postgres", "dsn": dsn, "node": "gw-a"})
        assert r.returncode == 0, r.stderr
    for dsn in ("postgresql://127.0.0.1/db?no_such_option=1", "host=127.0.0.1 port",
                "host=127.0.0.1 bogus=1"):
        r = check({"backend": "postgres", "dsn": dsn, "node": "gw-a"})
        assert r.returncode == 1 and "gateway.json: state.dsn: " in r.stderr, (dsn, r.stderr)
    r = check({"backend": "postgres", "dsn": "postgresql://127.0.0.1/db"})
    assert r.returncode == 1 and "state.node" in r.stderr, r.stderr
    r = check({"backend": "postgres", "dsn": "postgresql://127.0.0.1/db", "node": "gw a/1"})
    assert r.returncode == 1 and "state.node" in r.stderr, r.stderr
    r = check({"backend": "local"})
    assert r.returncode == 0, r.stderr


# --- a client that leaves while its admission waits ---------------------------------------------

def test_client_gone_while_admission_waits(cluster, pg):  # noqa: F811
    """The shared admission answers after the client left (its connection freed): the denial is
    still audited under the client's address and the node goes on (a use-after-free before)."""
    a, _ = cluster.nodes
    tok = a.mint(uses=1)
    assert outcome(a.request("GET", "/lux/search?first=1", tok)) == (200, None)
    jti = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "=="))["jti"]
    # A session holds the mandate's row: the next admission of it waits for the lock.
    holder = subprocess.Popen([os.path.join(pg.bin, "psql"), "-qAt", "-X",
                               "-v", "ON_ERROR_STOP=1", pg.dsn("mg")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        holder.stdin.write(f"BEGIN; SELECT 'locked' FROM mg_jti WHERE jti = '{jti}' FOR UPDATE;\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OSError):  # the client gives up and closes while the node waits
            a.request("GET", "/lux/search?second=1", tok, timeout=1)
        holder.stdin.write("ROLLBACK;\n")
        holder.stdin.close()
        assert holder.wait(10) == 0
    finally:
        if holder.poll() is None:
            holder.terminate()
            holder.wait(10)
    wait_for(lambda: [e for _, e in entries(a) if e.get("code") == "mandate_used"], 10,
             "the late denial in the log")
    assert outcome(a.request("GET", "/lux/search?third=1", a.mint())) == (200, None)
    assert not tagged(a, "second=1")
