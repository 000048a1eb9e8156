"""A throwaway PostgreSQL for one test (SPEC §6): Debian's server binaries, initdb into a fresh
directory under /tmp as the postgres user (initdb refuses root), 127.0.0.1 on a free port, its Unix
socket inside that directory, trust authentication, fsync off. Never a shared instance.

The server is a child of the test (stopped by PID) and looks like a conftest Proc to the `procs`
fixture, into which the `pg` fixture puts it first: it is stopped after every gateway of the test,
and its log is checked like theirs. A FATAL or PANIC line fails the test, and so does an ERROR
other than those of SQLSTATE class MG (the admission function raises them on purpose, e.g. for a
cart already paid), unless the test declared it with expect_error(regex)."""
import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import free_port


def pg_bin():
    """The newest Debian server binaries, or $PG_BIN."""
    if os.environ.get("PG_BIN"):
        return os.environ["PG_BIN"]
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]))
    assert found, "no PostgreSQL server binaries: scripts/deps.sh test installs postgresql"
    return os.path.dirname(found[-1])


# log_line_prefix puts the SQLSTATE right before the level: "2026-… UTC [123] MG001 ERROR:  …"
LOG_LINE = re.compile(r"\[\d+\] (\w{5}) (ERROR|FATAL|PANIC):")
_running = set()


@atexit.register
def _kill_leftovers():
    """A test run that dies must not leave a server behind."""
    for s in list(_running):
        s.p.kill()


class PgServer:
    def __init__(self, log_path):
        self.bin = pg_bin()
        self.log_path = log_path
        self.log = None
        self.dir = tempfile.mkdtemp(prefix="mg-pg-", dir="/tmp")
        os.chmod(self.dir, 0o711)  # the server runs as postgres in data/ below it
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.p = None
        self.ours = True  # for procs: its exit status and its log are checked
        self.allowed = []
        self.as_postgres = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self.as_postgres = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def _run_pg(self, *args):
        r = subprocess.run([os.path.join(self.bin, args[0]), *args[1:]], capture_output=True,
                           text=True, timeout=60, cwd=self.dir, **self.as_postgres)
        assert r.returncode == 0, f"{args[0]}: {r.stdout}{r.stderr}"
        return r.stdout

    def _initdb(self):
        self._run_pg("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                     "--locale=C.UTF-8", "--no-sync", "--no-instructions")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.dir}'\n"
                    "fsync = off\nfull_page_writes = off\n"
                    "log_line_prefix = '%m [%p] %e '\n")

    def start(self):
        """initdb (the first time) and start; returns once it accepts connections."""
        if not os.path.exists(self.data):
            self._initdb()
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen([os.path.join(self.bin, "postgres"), "-D", self.data],
                                  stdout=self.log, stderr=self.log, cwd=self.dir,
                                  start_new_session=True, **self.as_postgres)
        _running.add(self)
        # Ready when postmaster.pid (ours) says so, as pg_ctl -w checks: a probe connection
        # would be refused with a FATAL line while it starts.
        deadline = time.monotonic() + 30
        while self._status() != "ready":
            assert self.p.poll() is None, f"postgres exited with {self.p.returncode}: " \
                                          f"see {self.log_path}"
            assert time.monotonic() < deadline, f"postgres not ready after 30 s: {self.log_path}"
            time.sleep(0.02)
        return self

    def _status(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return None
        if len(lines) < 8 or lines[0] != str(self.p.pid):
            return None
        return lines[7].strip()

    def start_again(self):
        """Start the stopped server again, on the same port and data directory."""
        assert self.p is None or self.p.poll() is not None, "still running"
        return self.start()

    def dsn(self, db="postgres"):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, sql, db="postgres"):
        """Run sql with psql; returns its unaligned, tuples-only output."""
        r = subprocess.run([os.path.join(self.bin, "psql"), "-X", "-qAt", "-v", "ON_ERROR_STOP=1",
                            self.dsn(db), "-c", sql], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def create_database(self, name):
        """A fresh database on this server; returns its DSN."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def _wait(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait(timeout=5)
        finally:
            _running.discard(self)
            self.log.close()

    def stop_immediate(self):
        """`pg_ctl stop -m immediate`: every backend dies at once, as in a crash (recovery at the
        next start)."""
        self._run_pg("pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w", "-t", "20")
        self._wait(10)

    def stop(self, sig=None, timeout=20):
        """Fast shutdown (SIGINT, `pg_ctl stop -m fast`), bounded; then the data directory is
        removed. Returns the exit status. Called by procs at the end of the test."""
        rc = self.p.returncode
        if self.p.poll() is None:
            self._wait_clients_gone(10)
            os.kill(self.p.pid, signal.SIGINT)
            rc = self._wait(timeout)
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc

    def _wait_clients_gone(self, timeout):
        """Wait (bounded) until the backends of the clients that have exited are gone: a backend
        reads its client's goodbye a moment after the client exits, and one still there when the
        fast shutdown comes logs FATAL 57P01. One left after the timeout is a client that never
        disconnected, and its FATAL line fails the test as it should."""
        q = ("SELECT count(*) FROM pg_stat_activity "
             "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run([os.path.join(self.bin, "psql"), "-X", "-qAt", "-h", self.dir,
                                "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                                "-c", q], capture_output=True, text=True, timeout=30)
            if r.returncode != 0 or r.stdout.strip() == "0":
                return
            time.sleep(0.02)

    def expect_error(self, pattern):
        """Declare that an ERROR/FATAL line matching pattern may appear in the server's log."""
        self.allowed.append(re.compile(pattern))
        return self

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def problems(self):
        bad = []
        for line in self.output().splitlines():
            m = LOG_LINE.search(line)
            if not m or (m.group(2) == "ERROR" and m.group(1).startswith("MG")):
                continue
            if not any(a.search(line) for a in self.allowed):
                bad.append(line)
        return bad


@pytest.fixture
def pg(tmp_path, procs):
    """A running throwaway PostgreSQL. It goes first into procs, so that it is stopped after
    everything the test starts later (the gateways disconnect before it goes away)."""
    assert not procs, "request pg before starting anything"
    s = PgServer(os.path.join(str(tmp_path), "postgres.log")).start()
    procs.append(s)
    return s
