"""Shipping: `make install` lays out programs, man pages, units and docs under DESTDIR; every
man page passes mandoc's lint (or renders with man -l); the installed systemd units pass
systemd-analyze verify when it is available; the repository stands alone (no ../shared links)."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import BUILD, ROOT

PAGES = ["mandate-audit.1", "mandate-gateway.json.5", "mandate-wallet.json.5",
         "mandate-gateway.8", "mandate-wallet.8"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dest = str(tmp_path_factory.mktemp("destdir"))
    r = subprocess.run(["make", "--no-print-directory", "-s", "-C", ROOT,
                        "BUILD=" + os.path.relpath(BUILD, ROOT), "DESTDIR=" + dest,
                        "PREFIX=/usr", "install"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


def test_install_layout(installed):
    files = sorted(os.path.relpath(os.path.join(d, f), installed)
                   for d, _, fs in os.walk(installed) for f in fs)
    for prog in ("mandate-gateway", "mandate-wallet", "mandate-audit"):
        p = os.path.join(installed, "usr/bin", prog)
        assert os.access(p, os.X_OK), files
        out = subprocess.run([p, "--version"], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0 and out.stdout.startswith(prog + " ")
    for page in PAGES:
        assert f"usr/share/man/man{page[-1]}/{page}" in files
    for unit in ("mandate-gateway.service", "mandate-wallet.service"):
        assert f"usr/lib/systemd/system/{unit}" in files
        with open(os.path.join(installed, "usr/lib/systemd/system", unit)) as f:
            text = f.read()
        # The unit names the installed binary, and the hardening the issue asks for.
        assert "@BINDIR@" not in text and "ExecStart=/usr/bin/mandate-" in text
        for line in ("ProtectSystem=strict", "NoNewPrivileges=yes", "StateDirectory=mandate-",
                     "User=mandate"):
            assert line in text, (unit, line)
    with open(os.path.join(installed, "usr/lib/systemd/system/mandate-gateway.service")) as f:
        assert "ExecReload=/bin/kill -HUP $MAINPID" in f.read()
    assert "usr/lib/sysusers.d/mandate.conf" in files
    assert "usr/share/doc/mandate-gateway/protocol.md" in files
    assert "usr/share/doc/mandate-gateway/LICENSE" in files


@pytest.mark.parametrize("page", PAGES)
def test_man_page_lint(page):
    path = os.path.join(ROOT, "man", page)
    if shutil.which("mandoc"):
        r = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", path],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    elif shutil.which("man"):
        r = subprocess.run(["man", "-l", "-Tutf8", path], capture_output=True, text=True,
                           timeout=30, env={**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"})
        assert r.returncode == 0 and r.stderr == "", r.stderr
    else:
        pytest.skip("neither mandoc nor man is installed: man pages not linted")
    # Whatever lints it, the page renders with its name and a synopsis or description.
    if shutil.which("man"):
        r = subprocess.run(["man", "-l", "-Tutf8", path], capture_output=True, text=True,
                           timeout=30, env={**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"})
        text = re.sub(".\b", "", r.stdout)  # no overstrike (bold, underline)
        name = page.rsplit(".", 1)[0]
        assert name in text and "DESCRIPTION" in text and "NAME" in text


def test_systemd_units_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed: units not verified")
    # Installed with PREFIX=tmp_path (no DESTDIR), so that the paths the units name exist here;
    # MANPATH lets verify find the Documentation= pages.
    prefix = str(tmp_path / "prefix")
    r = subprocess.run(["make", "--no-print-directory", "-s", "-C", ROOT,
                        "BUILD=" + os.path.relpath(BUILD, ROOT), "PREFIX=" + prefix, "install"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    unitdir = os.path.join(prefix, "lib/systemd/system")
    r = subprocess.run([tool, "verify", os.path.join(unitdir, "mandate-gateway.service"),
                        os.path.join(unitdir, "mandate-wallet.service")],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MANPATH": os.path.join(prefix, "share/man")})
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "mandate-" not in out, out
    # A unit that cannot work is caught: verify is not a no-op here.
    bad = tmp_path / "mandate-broken.service"
    bad.write_text("[Service]\nExecStart=relative/path\nProtectSystem=bogus\n")
    r = subprocess.run([tool, "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 or "mandate-broken" in r.stdout + r.stderr


def test_repository_stands_alone():
    """No file the repository ships points outside it to ../shared."""
    r = subprocess.run(["git", "-C", ROOT, "grep", "-l", "../shared", "--", "README.md", "docs",
                        "scripts", "bench", "config", "docker", "man", "dist", "examples"],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout.split() == [], r.stdout
