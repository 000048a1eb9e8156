"""Shared fixtures for the integration tests: they start the real binaries from $BUILD on
127.0.0.1, on free ports, wait with bounded loops, and stop what they started by PID."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))


def binary(name):
    path = os.path.join(BUILD, name)
    assert os.access(path, os.X_OK), f"{path} is not built"
    return path


def run(*args, **kw):
    """Run a program to completion (bounded) and return the CompletedProcess."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(d, name, alg="ES256", kid=None):
    """Write d/name.pem and d/name.jwks.json with mandate-wallet keygen; returns the paths."""
    pem, jwks, pub = (os.path.join(d, f"{name}{ext}") for ext in (".pem", ".jwks.json", ".pub.pem"))
    r = run(binary("mandate-wallet"), "keygen", "--alg", alg, "--kid", kid or name,
            "--out", pem, "--jwks", jwks, "--pub", pub)
    assert r.returncode == 0, r.stderr
    return pem, jwks, pub


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
    return path


def sha256_hex(s):
    return hashlib.sha256(s.encode()).hexdigest()


def wait_port(port, proc=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listening on {port} after {timeout}s")


class Proc:
    """A started program; stop() signals it by PID and waits (bounded), then kills."""

    def __init__(self, args, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=env,
                                  start_new_session=True)
        self.pid = self.p.pid

    def send(self, sig):
        if self.p.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout):
        return self.p.wait(timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.p.poll() is None:
            os.kill(self.pid, sig)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
        self.log.close()
        return self.p.returncode

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


@pytest.fixture
def procs():
    """Every Proc appended here is stopped at the end of the test, whatever happened."""
    started = []
    yield started
    for p in reversed(started):
        p.stop(signal.SIGKILL)
