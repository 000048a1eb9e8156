"""make demo's script, end to end: it must tell the whole story and exit 0."""
import os
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
