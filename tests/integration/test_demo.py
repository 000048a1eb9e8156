"""make demo's script, end to end: it must tell the whole story and exit 0."""
import os
import re
import subprocess

from conftest import BUILD, ROOT


def test_demo_runs(tmp_path):
    env = dict(os.environ, BUILD=os.path.relpath(BUILD, ROOT))
    r = subprocess.run([os.path.join(ROOT, "examples", "demo.sh")], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for line in ("ALLOW 201, booking", "DENY 403 mandate_used", "DENY 401 mandate_bad_signature",
                 "DENY 403 spend_cap_exceeded", "270.00 EUR seen by the merchant",
                 "DENY 403 mandate_revoked", "DENY 403 agent_revoked", "verify: intact",
                 "replay: intact", "DENY 401 signature_missing", "DENY 401 signature_invalid",
                 "demo: ok"):
        assert line in out, out


def test_cluster_demo_runs():
    """make cluster-demo: two gateways on a throwaway PostgreSQL hold a cap and a revocation
    across both, and the server is gone when the script ends."""
    env = dict(os.environ, BUILD=os.path.relpath(BUILD, ROOT))
    r = subprocess.run([os.path.join(ROOT, "examples", "cluster-demo.sh")], capture_output=True,
                       text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    race = re.search(r"one on each node: gw-a (.*), gw-b (.*)", out)
    assert race and sorted(race.groups()) == ["ALLOW 201", "DENY 403 spend_cap_exceeded"], out
    for line in ("DENY 403 mandate_used", "DENY 403 cart_used",
                 "360.00 EUR seen by the merchant (2 bookings)",
                 "DENY 403 mandate_revoked", "gw-a: verify: intact", "gw-b: verify: intact",
                 "cluster-demo: ok"):
        assert line in out, out
    # The logs replayed together (set -e: a violation would have stopped the script).
    assert "\nreplay: " in out, out
    pgdir = re.search(r"PostgreSQL postgresql://\S+ \(in (\S+)\)", out).group(1)
    assert not os.path.exists(pgdir), "the throwaway PostgreSQL was left behind"
