"""The wallet's listener (issue 10): evhttp kept, with the gateway's connection cap and request
deadline added by wallet/httpguard (`limits.max_connections`, `limits.header_timeout_ms`). The
end-of-test check (conftest) also finds no error line in the wallet's log."""
import json
import os
import select
import socket
import time

from conftest import Proc, Stack, binary, run, wait_port, write_json

LIVEZ = b"GET /livez HTTP/1.1\r\nHost: wallet\r\n\r\n"


def start_wallet(d, procs, **limits):
    """The wallet alone (no gateway or merchant is needed to answer /livez), with these limits."""
    s = Stack(d, procs)
    s.wallet_conf["limits"] = limits
    write_json(s.wallet_path, s.wallet_conf)
    s.wallet = Proc([binary("mandate-wallet"), "--config", s.wallet_path],
                    os.path.join(d, "wallet.log"))
    procs.append(s.wallet)
    wait_port(s.wallet_port, s.wallet.p)
    return s


def answer(sock, timeout):
    """One whole answer read from sock (bounded), or b"" if the wallet closed first."""
    sock.settimeout(timeout)
    out = b""
    while b"\r\n\r\n" not in out:
        b = sock.recv(4096)
        if not b:
            return out
        out += b
    head, _, body = out.partition(b"\r\n\r\n")
    n = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < n:
        b = sock.recv(4096)
        if not b:
            break
        body += b
    return head + b"\r\n\r\n" + body


def livez(port):
    """A connection that got its answer and stays open (keep-alive): proof it was accepted."""
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.sendall(LIVEZ)
    assert answer(c, 5).startswith(b"HTTP/1.1 200"), "a connection under the cap not served"
    return c


def readable(sock, timeout):
    return bool(select.select([sock], [], [], timeout)[0])


def test_connections_over_the_cap_wait_until_one_closes(tmp_path, procs):
    # header_timeout_ms well past the test: only the cap is at work (evhttp's own 5 s idle timeout
    # would close the held connections, hence the short waits).
    s = start_wallet(str(tmp_path), procs, max_connections=4, header_timeout_ms=60000)
    held = [livez(s.wallet_port) for _ in range(4)]
    waiting = socket.create_connection(("127.0.0.1", s.wallet_port), timeout=5)  # the backlog's
    waiting.sendall(LIVEZ)
    assert not readable(waiting, 1.0), "a fifth connection was served with max_connections 4"
    assert "max_connections (4) reached" in s.wallet.output()
    held.pop().close()
    assert answer(waiting, 3).startswith(b"HTTP/1.1 200"), "the waiting connection not served"
    waiting.close()
    held.pop().close()
    livez(s.wallet_port).close()  # and a new one is served at once
    for c in held:
        c.close()


def dribble(sock, data, limit_s, step_s=0.5):
    """Send data one byte every step_s until the wallet closes the connection (or limit_s passes:
    then None); returns what it answered."""
    t0 = time.monotonic()
    got = b""
    for byte in data:
        if time.monotonic() - t0 > limit_s:
            return None
        if readable(sock, step_s):
            try:
                b = sock.recv(4096)
            except ConnectionResetError:
                return got
            if not b:
                return got
            got += b
            continue
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return got
    raise AssertionError("ran out of bytes to dribble")


def test_dribbled_head_gets_408_at_the_deadline_others_served(tmp_path, procs):
    s = start_wallet(str(tmp_path), procs, header_timeout_ms=1500)
    slow = socket.create_connection(("127.0.0.1", s.wallet_port), timeout=5)
    t0 = time.monotonic()
    slow.sendall(b"GET /livez HTTP/1.1\r\n")
    # Served meanwhile, on another connection, while the slow head is still arriving.
    with livez(s.wallet_port):
        pass
    got = dribble(slow, b"X-Slow: " + b"a" * 200, limit_s=4.0)
    took = time.monotonic() - t0
    assert got is not None, "a head dribbled a byte every 0.5 s kept its connection open"
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert json.loads(got.partition(b"\r\n\r\n")[2])["error"] == "request_timeout"
    assert 1.4 <= took < 1.5 + 1.0, f"closed after {took:.2f} s with header_timeout_ms 1500"
    slow.close()


def test_deadline_restarts_after_each_answer(tmp_path, procs):
    s = start_wallet(str(tmp_path), procs, header_timeout_ms=1500)
    with livez(s.wallet_port) as c:
        t0 = time.monotonic()
        got = dribble(c, b"GET /livez HTTP/1.1\r\nX-Slow: " + b"a" * 200, limit_s=4.0)
        took = time.monotonic() - t0
        assert got is not None, "a dribbled second request kept its connection open"
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
        assert took < 1.5 + 1.0, f"closed after {took:.2f} s with header_timeout_ms 1500"


def test_silent_connection_closed_without_an_answer(tmp_path, procs):
    s = start_wallet(str(tmp_path), procs, header_timeout_ms=1000)
    with socket.create_connection(("127.0.0.1", s.wallet_port), timeout=5) as c:
        t0 = time.monotonic()
        assert readable(c, 3.0), "a silent connection outlived header_timeout_ms"
        assert c.recv(4096) == b""
        assert time.monotonic() - t0 < 1.0 + 1.0


def test_limits_are_checked_by_path(tmp_path, procs):
    s = Stack(str(tmp_path), procs)

    def check(limits):
        s.wallet_conf["limits"] = limits
        write_json(s.wallet_path, s.wallet_conf)
        return run(binary("mandate-wallet"), "--config", s.wallet_path, "--check-config")

    assert check({"max_connections": 10, "header_timeout_ms": 500}).returncode == 0
    for limits, path in (({"max_connections": 0}, "limits.max_connections"),
                         ({"header_timeout_ms": "1s"}, "limits.header_timeout_ms"),
                         ({"idle_timeout_ms": 5}, "limits.idle_timeout_ms")):
        r = check(limits)
        assert r.returncode == 1 and f"wallet.json: {path}: " in r.stderr, (limits, r.stderr)
