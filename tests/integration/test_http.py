"""The gateway's own HTTP/1.1 layer from outside (SPEC §5): strict heads (every ambiguity refused
with 400 and the connection closed, nothing more read, nothing forwarded), head deadline,
keep-alive and pipelining, 100-continue, interim 1xx answers, upstream framing errors, a client
that leaves mid-stream, body limits, the connection cap and TLS on both sides. Everything runs on
127.0.0.1; absence is proven with g.barrier() or a bounded poll, never a fixed sleep."""
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import http.client

import pytest

from conftest import (HERE, Gateway, Proc, binary, read_jsonl, run, wait_for, wait_port,
                      write_json)

# --- raw HTTP on a socket ----------------------------------------------------------------------


def parse_answers(data):
    """Split bytes into complete answers [(status, {lower name: value}, body, raw head)] and the
    bytes left over (an incomplete answer). 1xx answers have no body; a final answer is framed by
    Content-Length or chunked, or else runs to the end of data."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        h = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            h.setdefault(k.strip().lower().decode(), v.strip().decode(errors="replace"))
        if status < 200:
            out.append((status, h, b"", head))
            data = rest
            continue
        if "content-length" in h:
            n = int(h["content-length"])
            if len(rest) < n:
                break
            out.append((status, h, rest[:n], head))
            data = rest[n:]
        elif h.get("transfer-encoding", "").lower() == "chunked":
            body, p = b"", 0
            while True:
                e = rest.find(b"\r\n", p)
                if e < 0:
                    return out, data
                size = int(rest[p:e].split(b";")[0], 16)
                if size == 0:
                    end = rest.find(b"\r\n\r\n", e)
                    if end < 0:
                        return out, data
                    out.append((status, h, body, head))
                    data = rest[end + 4:]
                    break
                if len(rest) < e + 2 + size + 2:
                    return out, data
                body += rest[e + 2:e + 2 + size]
                p = e + 2 + size + 2
        else:
            out.append((status, h, rest, head))
            data = b""
    return out, data


class Client:
    """One raw connection to the gateway, with bounded reads."""

    def __init__(self, port, timeout=5):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def send(self, data):
        self.s.sendall(data)

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0 or self.eof:
            return False
        self.s.settimeout(left)
        try:
            b = self.s.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            b = b""
        if not b:
            self.eof = True
            return False
        self.buf += b
        return True

    def answers(self, n, timeout=5):
        """Wait (bounded) for n complete final answers; return every answer parsed so far."""
        deadline = time.monotonic() + timeout
        while True:
            got, _ = parse_answers(self.buf)
            if len([a for a in got if a[0] >= 200]) >= n:
                return got
            if not self._recv(deadline):
                raise AssertionError(f"{n} answers not received (eof={self.eof}): {self.buf[:600]!r}")

    def until_closed(self, timeout=5):
        """Read until the gateway closes (bounded); True when it did."""
        deadline = time.monotonic() + timeout
        while self._recv(deadline):
            pass
        return self.eof

    def until(self, marker, timeout=5):
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            if not self._recv(deadline):
                raise AssertionError(f"{marker!r} not received: {self.buf[:600]!r}")
        return self.buf

    def close(self):
        self.s.close()


def auth(tok):
    return b"Authorization: Mandate " + tok.encode() + b"\r\n"


def good_request(g, tag):
    return (b"GET /lux/search?pipelined=" + tag.encode() + b" HTTP/1.1\r\nHost: x\r\n" +
            auth(g.mint()) + b"\r\n")


def assert_json_denial(ans, status, code):
    st, h, body, head = ans
    js = json.loads(body)
    assert (st, js["error"]) == (status, code), (head, body)
    assert re.fullmatch(r"[0-9a-f]{24}", js["request_id"]) and js["request_id"] == h["x-request-id"]
    assert js["message"]
    return js


def check_procs(started):
    """The procs fixture's end-of-test checks, for a gateway shared by a module."""
    failures = []
    for p in reversed(started):
        killed = p.p.poll() is not None
        rc = p.stop()
        if p.ours and not killed and rc != 0:
            failures.append(f"{p.log_path}: exit status {rc} after SIGTERM")
        failures += [f"{p.log_path}: {line}" for line in p.problems()]
    assert not failures, "\n".join(failures[:20])


def add_routes(g, *routes):
    g.conf["merchants"][0]["routes"] += [dict(zip(("method", "path", "action", "priced"), r))
                                         for r in routes]
    g.conf["merchants"][0]["routes"] = [{k: v for k, v in r.items() if v is not None}
                                        for r in g.conf["merchants"][0]["routes"]]
    write_json(g.config_path, g.conf)


def entries(g):
    r = run(binary("mandate-audit"), "export", "--db", os.path.join(g.d, "gateway.db"))
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def access_lines(g):
    return [json.loads(l) for l in g.gw.output().splitlines() if '"type":"access"' in l]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One gateway for the many refusal cases (each still proves its own absence upstream)."""
    started = []
    g = Gateway(str(tmp_path_factory.mktemp("http")), started).start()
    yield g
    check_procs(started)


# --- 1. smuggling: every SPEC §5 refusal, with a valid request pipelined behind it ------------

G = b"GET /lux/search HTTP/1.1\r\nHost: x\r\n"
P = b"POST /lux/quote HTTP/1.1\r\nHost: x\r\n"
A = b"<AUTH>"      # replaced by a valid mandate's Authorization line (search)
AQ = b"<AUTHQ>"    # the same for quote_room

HEAD_CASES = {
    "obs_fold": G + b"X-A: 1\r\n  folded\r\n" + A + b"\r\n",
    "obs_fold_tab": G + b"X-A: 1\r\n\tfolded\r\n" + A + b"\r\n",
    "obs_fold_first_line": b"GET /lux/search HTTP/1.1\r\n Host: x\r\nHost: x\r\n" + A + b"\r\n",
    "bare_lf_request_line": b"GET /lux/search HTTP/1.1\nHost: x\r\n" + A + b"\r\n",
    "bare_lf_header": G + b"X-A: 1\n" + A + b"\r\n",
    "bare_lf_end": G + A + b"\n",
    "bare_cr_request_line": b"GET /lux/search HTTP/1.1\rHost: x\r\n" + A + b"\r\n",
    "bare_cr_header": G + b"X-A: 1\rX-B: 2\r\n" + A + b"\r\n",
    "bare_cr_end": G + A + b"\r\r\n",
    "nul_header_value": G + b"X-A: a\x00b\r\n" + A + b"\r\n",
    "ctl_header_value": G + b"X-A: a\x01b\r\n" + A + b"\r\n",
    "esc_header_value": G + b"X-A: a\x1b[31m\r\n" + A + b"\r\n",
    "del_header_value": G + b"X-A: a\x7fb\r\n" + A + b"\r\n",
    "nul_header_name": G + b"X-\x00A: 1\r\n" + A + b"\r\n",
    "nul_target": b"GET /lux/sea\x00rch HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "nul_query": b"GET /lux/search?q=\x00 HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "ctl_target": b"GET /lux/sea\x01rch HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "tab_target": b"GET /lux/search\t HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "del_target": b"GET /lux/search?\x7f HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "space_before_colon": G + b"X-A : 1\r\n" + A + b"\r\n",
    "space_before_colon_cl": P + AQ + b"Content-Length : 2\r\n\r\n{}",
    "name_non_token_at": G + b"X@A: 1\r\n" + A + b"\r\n",
    "name_non_token_paren": G + b"X(A): 1\r\n" + A + b"\r\n",
    "name_non_token_slash": G + b"X/A: 1\r\n" + A + b"\r\n",
    "name_empty": G + b": 1\r\n" + A + b"\r\n",
    "name_space_inside": G + b"Bad Header: 1\r\n" + A + b"\r\n",
    "name_high_byte": G + b"X-\xe9: 1\r\n" + A + b"\r\n",
    "no_colon": G + b"X-A 1\r\n" + A + b"\r\n",
    "cl_dup_different": P + AQ + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "cl_dup_equal": P + AQ + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    "cl_list": P + AQ + b"Content-Length: 2, 2\r\n\r\n{}",
    "cl_hex": P + AQ + b"Content-Length: 0x2\r\n\r\n{}",
    "cl_plus": P + AQ + b"Content-Length: +2\r\n\r\n{}",
    "cl_minus": P + AQ + b"Content-Length: -2\r\n\r\n{}",
    "cl_decimal_point": P + AQ + b"Content-Length: 2.0\r\n\r\n{}",
    "cl_empty": P + AQ + b"Content-Length: \r\n\r\n{}",
    "cl_inner_space": P + AQ + b"Content-Length: 1 2\r\n\r\n{}",
    "cl_20_digits": P + AQ + b"Content-Length: 00000000000000000002\r\n\r\n{}",
    "cl_20_digits_huge": P + AQ + b"Content-Length: 99999999999999999999\r\n\r\n{}",
    "cl_over_int64": P + AQ + b"Content-Length: 9300000000000000000\r\n\r\n{}",
    "te_gzip_chunked": P + AQ + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "te_chunked_chunked": P + AQ + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "te_two_headers": P + AQ + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
                            b"\r\n0\r\n\r\n",
    "te_identity": P + AQ + b"Transfer-Encoding: identity\r\n\r\n",
    "te_gzip": P + AQ + b"Transfer-Encoding: gzip\r\n\r\n",
    "te_chunked_junk": P + AQ + b"Transfer-Encoding: chunked x\r\n\r\n0\r\n\r\n",
    "te_chunked_param": P + AQ + b"Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
    "te_chunked_comma": P + AQ + b"Transfer-Encoding: chunked,\r\n\r\n0\r\n\r\n",
    "te_chunked_vtab": P + AQ + b"Transfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n",
    "te_on_http10": b"POST /lux/quote HTTP/1.0\r\n" + AQ +
                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_then_cl": P + AQ + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "cl_then_te": P + AQ + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "missing_host": b"GET /lux/search HTTP/1.1\r\n" + A + b"\r\n",
    "two_hosts_equal": G + b"Host: x\r\n" + A + b"\r\n",
    "two_hosts_different": G + b"Host: evil.example\r\n" + A + b"\r\n",
    "host_bad_chars": b"GET /lux/search HTTP/1.1\r\nHost: x y@z\r\n" + A + b"\r\n",
    "absolute_form": b"GET http://x/lux/search HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "asterisk_form": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "authority_form": b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "fragment": b"GET /lux/search#frag HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "fragment_in_query": b"GET /lux/search?q=1#frag HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "high_byte_path": b"GET /lux/sea\x80rch HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "high_byte_query": b"GET /lux/search?q=\xff HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "space_in_target": b"GET /lux/search x HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "dot_dot": b"GET /lux/../lux/search HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "dot": b"GET /lux/./search HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "dot_dot_end": b"GET /lux/search/.. HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "dot_dot_before_query": b"GET /lux/search/..?a HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "dot_dot_encoded": b"GET /lux/%2e%2E/lux/search HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "dot_dot_half_encoded": b"GET /lux/.%2e/lux/search HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "dot_encoded": b"GET /lux/%2E/search HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "dot_dot_semicolon": b"GET /lux/bookings/..;x/1 HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "encoded_slash": b"GET /lux/bookings/a%2Fb HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "encoded_slash_lower": b"GET /lux/bookings/a%2fb HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "encoded_backslash": b"GET /lux/bookings/a%5Cb HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "encoded_backslash_lower": b"GET /lux/bookings/a%5cb HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "raw_backslash": b"GET /lux/bookings/a\\b HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "undecodable_percent": b"GET /lux/bookings/%zz HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "truncated_percent": b"GET /lux/bookings/%2 HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "encoded_nul": b"GET /lux/bookings/a%00 HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "bad_version": b"GET /lux/search HTTP/1.2\r\nHost: x\r\n" + A + b"\r\n",
    "lowercase_version": b"GET /lux/search http/1.1\r\nHost: x\r\n" + A + b"\r\n",
    "http09": b"GET /lux/search\r\n\r\n",
    "double_space": b"GET  /lux/search HTTP/1.1\r\nHost: x\r\n" + A + b"\r\n",
}


def fill(g, raw_bytes):
    return (raw_bytes.replace(A, auth(g.mint()))
            .replace(AQ, auth(g.mint(action="quote_room"))))


@pytest.mark.parametrize("case", sorted(HEAD_CASES))
def test_ambiguous_head_refused_and_connection_closed(shared, case):
    """400 bad_request with a request id, then the connection closes: the valid request written
    right behind it in the same packet is never answered, and nothing reaches the merchant."""
    g = shared
    before = len(g.received())
    tag = os.urandom(6).hex()
    c = Client(g.port)
    c.send(fill(g, HEAD_CASES[case]) + good_request(g, tag))
    closed = c.until_closed(timeout=5)
    c.close()
    got, rest = parse_answers(c.buf)
    assert len(got) == 1 and not rest, c.buf[:1000]
    assert_json_denial(got[0], 400, "bad_request")
    assert got[0][1].get("connection", "").lower() == "close"
    assert closed, "the connection stayed open after a framing error"
    seen = g.barrier()
    assert len(seen) == before, seen[before:]
    assert not [r for r in g.received() if tag in r.get("path", "")]


# Chunked bodies are only read after the allow (the head is fine).
CHUNK_CASES = {
    "size_not_hex": b"zz\r\n{}\r\n0\r\n\r\n",
    "size_empty": b"\r\n{}\r\n0\r\n\r\n",
    "size_negative": b"-2\r\n{}\r\n0\r\n\r\n",
    "size_prefix_0x": b"0x2\r\n{}\r\n0\r\n\r\n",
    "size_overflow": b"1" + b"0" * 17 + b"\r\n{}\r\n0\r\n\r\n",
    "size_overflow_f": b"f" * 20 + b"\r\n{}\r\n0\r\n\r\n",
    "size_bare_lf": b"2\n{}\r\n0\r\n\r\n",
    "data_not_crlf": b"2\r\n{}XX\r\n0\r\n\r\n",
    "data_too_long": b"1\r\n{}\r\n0\r\n\r\n",
    "ext_no_name": b"2;=x\r\n{}\r\n0\r\n\r\n",
    "ext_bad_char": b"2;a@b\r\n{}\r\n0\r\n\r\n",
    "ext_unterminated_quote": b"2;a=\"b\r\n{}\r\n0\r\n\r\n",
    "ext_space_inside_value": b"2;a=b c\r\n{}\r\n0\r\n\r\n",
    "ext_ctl": b"2;a=\x01\r\n{}\r\n0\r\n\r\n",
    "trailer_obs_fold": b"2\r\n{}\r\n0\r\nX-T: 1\r\n folded\r\n\r\n",
    "trailer_bad_name": b"2\r\n{}\r\n0\r\nX T: 1\r\n\r\n",
    "last_chunk_bare_lf": b"2\r\n{}\r\n0\r\n\n",
}


@pytest.mark.parametrize("case", sorted(CHUNK_CASES))
def test_bad_chunked_body_aborts_upstream_request(shared, case):
    """A malformed chunked body is found after the allow: the merchant never gets a complete
    request, the client gets 400 (or just the close), and the request pipelined behind it is not
    answered."""
    g = shared
    tag = os.urandom(6).hex()
    c = Client(g.port)
    c.send(b"POST /lux/quote?chunk=" + tag.encode() + b" HTTP/1.1\r\nHost: x\r\n" +
           auth(g.mint(action="quote_room")) + b"Transfer-Encoding: chunked\r\n\r\n" +
           CHUNK_CASES[case] + good_request(g, tag))
    closed = c.until_closed(timeout=5)
    c.close()
    got, rest = parse_answers(c.buf)
    assert closed, "the connection stayed open after a bad chunk"
    assert len(got) <= 1 and not rest, c.buf[:1000]
    if got:  # 413 for an overflowing size: it is over max_body_bytes (4096) first
        st = got[0][0]
        assert st in (400, 413), got[0]
        assert_json_denial(got[0], st, "bad_request" if st == 400 else "body_too_large")
    g.barrier()
    assert not [r for r in g.received() if tag in r.get("path", "")], \
        "the merchant got a complete request"


def test_valid_chunked_body_is_forwarded_and_pipelining_goes_on(shared):
    """The control for the cases above: the same request with a good body (extension and trailer
    included) reaches the merchant whole, and the request behind it is answered too."""
    g = shared
    tag = os.urandom(6).hex()
    c = Client(g.port)
    c.send(b"POST /lux/quote?chunk=" + tag.encode() + b" HTTP/1.1\r\nHost: x\r\n" +
           auth(g.mint(action="quote_room")) + b"Transfer-Encoding: chunked\r\n\r\n" +
           b"1;a=b;c=\"d e\"\r\n{\r\n1\r\n}\r\n0\r\nX-T: 1\r\n\r\n" + good_request(g, tag))
    got = c.answers(2)
    c.close()
    assert [a[0] for a in got] == [200, 200]
    mine = [r for r in g.received() if tag in r.get("path", "")]
    assert [r["path"].split("?")[0] for r in mine] == ["/lux/quote", "/lux/search"]
    assert mine[0]["body"] == "{}"


# --- 2. head deadline ------------------------------------------------------------------------


def test_slow_head_gets_408_and_silent_connection_closed_silently(gateway):
    g = gateway
    g.conf["limits"]["header_timeout_ms"] = 1000
    write_json(g.config_path, g.conf)
    g.start()
    head = good_request(g, "slow")
    c = Client(g.port)
    t0 = time.monotonic()
    for i in range(len(head)):  # one byte every 200 ms, until the gateway answers
        try:
            c.send(head[i:i + 1])
        except OSError:
            break
        if c._recv(time.monotonic() + 0.2) or c.eof:
            break
    took = time.monotonic() - t0
    assert c.until_closed(timeout=5), "not closed after the 408"
    c.close()
    got, rest = parse_answers(c.buf)
    assert len(got) == 1 and not rest, c.buf
    assert_json_denial(got[0], 408, "request_timeout")
    assert 0.8 <= took < 3.0, took
    # Silence: closed without a word, after the deadline.
    c = Client(g.port)
    t0 = time.monotonic()
    assert c.until_closed(timeout=5)
    took = time.monotonic() - t0
    c.close()
    assert c.buf == b""
    assert 0.8 <= took < 3.0, took
    assert [r for r in g.received() if "slow" in r["path"]] == []


# --- 3. keep-alive and pipelining ------------------------------------------------------------


def test_pipelined_requests_answered_in_order(gateway):
    g = gateway.start()
    c = Client(g.port)
    c.send(b"GET /delay/300 HTTP/1.1\r\nHost: x\r\n" + auth(g.mint()) + b"\r\n" +
           b"GET /lux/search?n=2 HTTP/1.1\r\nHost: x\r\n" + auth(g.mint()) + b"\r\n")
    got = c.answers(2)
    assert [(a[0], json.loads(a[2])["path"]) for a in got] == \
        [(200, "/delay/300"), (200, "/lux/search?n=2")]
    ids = [a[1]["x-request-id"] for a in got]
    assert ids[0] != ids[1]
    rec = g.received()
    assert [r["path"] for r in rec] == ["/delay/300", "/lux/search?n=2"]
    assert [dict((k.lower(), v) for k, v in r["headers"])["x-request-id"] for r in rec] == ids
    # Still open: a third request on the same connection.
    c.send(b"GET /lux/search?n=3 HTTP/1.1\r\nHost: x\r\n" + auth(g.mint()) + b"\r\n")
    got = c.answers(3)
    assert json.loads(got[2][2])["path"] == "/lux/search?n=3"
    c.close()


def test_pipelined_burst_over_the_read_bound_is_answered_in_order(gateway):
    """The gateway reads no further ahead than one head can be (max_header_bytes + 1): 40
    pipelined requests in one send, twenty times that, pause its reading at the bound and resume it
    each time a head is taken; every one is answered, in order."""
    gateway.conf["limits"]["max_header_bytes"] = 2048
    write_json(gateway.config_path, gateway.conf)
    g = gateway.start()
    tok = g.mint(uses=40)
    c = Client(g.port)
    c.send(b"".join(b"GET /lux/search?i=%d HTTP/1.1\r\nHost: x\r\n" % i + auth(tok) +
                    b"X-Pad: " + b"p" * 200 + b"\r\n\r\n" for i in range(40)))
    got = c.answers(40, timeout=20)
    assert [json.loads(a[2])["path"] for a in got] == [f"/lux/search?i={i}" for i in range(40)]
    c.close()


def test_body_deadline_ends_with_the_body(gateway):
    """The deadline between body reads (body_timeout_ms, 0.5 s here) is over once the body is read:
    the kept-alive connection then waits for its next request as long as idle_timeout_ms (10 s
    here), and a GET on it is not held to the body's deadline either."""
    gateway.conf["limits"]["body_timeout_ms"] = 500
    gateway.conf["limits"]["idle_timeout_ms"] = 10000
    write_json(gateway.config_path, gateway.conf)
    g = gateway.start()
    tok = g.mint(uses=3)
    c = Client(g.port)
    body = b'{"room": "double"}'
    c.send(b"POST /lux/quote HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
           b"Content-Length: %d\r\n" % len(body) + auth(g.mint(action="quote_room")) +
           b"\r\n" + body)
    assert c.answers(1)[0][0] == 200
    time.sleep(1.5)  # idle past the body's deadline, well short of the idle timeout
    c.send(b"GET /delay/1000 HTTP/1.1\r\nHost: x\r\n" + auth(tok) + b"\r\n")
    got = c.answers(2, timeout=10)
    assert got[1][0] == 200 and json.loads(got[1][2])["path"] == "/delay/1000"
    c.close()


def test_body_deadline_not_applied_to_the_merchants_answer(gateway):
    """Once the body is read whole and forwarded, the merchant may take longer than
    body_timeout_ms (0.5 s here) to answer: the client's connection is not cut meanwhile."""
    gateway.conf["limits"]["body_timeout_ms"] = 500
    gateway.conf["merchants"][0]["routes"].append(
        {"method": "POST", "path": "/delay/*", "action": "search"})
    write_json(gateway.config_path, gateway.conf)
    g = gateway.start()
    c = Client(g.port)
    body = b'{"room": "double"}'
    c.send(b"POST /delay/1000 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
           b"Content-Length: %d\r\n" % len(body) + auth(g.mint()) + b"\r\n" + body)
    got = c.answers(1, timeout=10)
    assert got[0][0] == 200 and json.loads(got[0][2])["path"] == "/delay/1000", got
    c.close()


def test_http10_closed_after_answer_unless_keep_alive(gateway):
    g = gateway.start()
    c = Client(g.port)
    c.send(b"GET /lux/search?v=10 HTTP/1.0\r\n" + auth(g.mint()) + b"\r\n")
    got = c.answers(1)
    assert got[0][0] == 200
    assert c.until_closed(timeout=5), "HTTP/1.0 without keep-alive stayed open"
    c.close()
    c = Client(g.port)
    c.send(b"GET /lux/search?v=10ka1 HTTP/1.0\r\nConnection: keep-alive\r\n" + auth(g.mint()) +
           b"\r\n")
    assert c.answers(1)[0][0] == 200
    c.send(b"GET /lux/search?v=10ka2 HTTP/1.0\r\nConnection: keep-alive\r\n" + auth(g.mint()) +
           b"\r\n")
    got = c.answers(2)
    assert [json.loads(a[2])["path"] for a in got] == ["/lux/search?v=10ka1", "/lux/search?v=10ka2"]
    c.close()


def test_http10_keep_alive_answer_says_keep_alive(gateway):
    """RFC 9112 §9.3: an HTTP/1.0 client keeps the connection only when the answer says
    "Connection: keep-alive"."""
    g = gateway.start()
    c = Client(g.port)
    c.send(b"GET /lux/search HTTP/1.0\r\nConnection: keep-alive\r\n" + auth(g.mint()) + b"\r\n")
    got = c.answers(1)
    c.close()
    assert got[0][0] == 200
    assert got[0][1].get("connection", "").lower() == "keep-alive", got[0][3]


# --- 4. Expect: 100-continue -----------------------------------------------------------------


def test_expect_100_continue(gateway):
    g = gateway.start()
    body = b'{"sku":"deluxe"}'
    head = (b"POST /lux/quote HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n")
    c = Client(g.port)
    c.send(head + auth(g.mint(action="quote_room")) + b"\r\n")
    c.until(b"\r\n\r\n")
    assert c.buf == b"HTTP/1.1 100 Continue\r\n\r\n", c.buf
    c.send(body)
    got = c.answers(1)
    c.close()
    assert [a[0] for a in got] == [100, 200]
    assert json.loads(got[1][2])["path"] == "/lux/quote"
    rec = g.received()[-1]
    assert rec["body"] == body.decode()
    assert "expect" not in [k.lower() for k, _ in rec["headers"]]
    # An invalid mandate: the 401 without a 100, and the connection closed (the body is unread).
    before = len(g.received())
    c = Client(g.port)
    c.send(head + auth("not.a-token") + b"\r\n")
    assert c.until_closed(timeout=5), "the connection stayed open with an unread body"
    c.close()
    assert b"100 Continue" not in c.buf
    got, rest = parse_answers(c.buf)
    assert len(got) == 1 and not rest, c.buf
    assert_json_denial(got[0], 401, "mandate_malformed")
    assert got[0][1].get("connection", "").lower() == "close"
    assert len(g.barrier()) == before


# --- 5. interim 1xx answers from the merchant ------------------------------------------------


def test_early_hints_relayed_on_priced_route_and_spend_committed(gateway):
    g = gateway
    add_routes(g, ("PUT", "/early/*", "book_room", True))
    g.start()
    cart = g.cart(total=1000)
    c = Client(g.port)
    c.send(b"PUT /early/201 HTTP/1.1\r\nHost: x\r\n" + auth(g.pay(cart)) + b"Mandate-Cart: " +
           cart.encode() + b"\r\nContent-Length: 2\r\n\r\n{}")
    got = c.answers(1)
    c.close()
    assert [a[0] for a in got] == [103, 201], c.buf
    assert got[0][3].startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert got[0][1]["link"] == "</style.css>; rel=preload"
    assert "mandate-receipt" not in got[0][1]
    assert json.loads(got[1][2]) == {"ok": True, "path": "/early/201", "status": 201}
    rid = got[1][1]["x-request-id"]
    assert got[1][1]["mandate-receipt"]
    # The next clients, on new connections (and on the pooled merchant connections), get their
    # own answers.
    for i in range(6):
        st, h, body, _ = g.request("GET", f"/lux/search?after={i}", g.mint())
        assert (st, body) == (200, {"ok": True, "path": f"/lux/search?after={i}"})
    assert g.gw.stop() == 0
    outcomes = [e for e in entries(g) if e["kind"] == "outcome" and e["request_id"] == rid]
    assert [(e["status"], e.get("spend")) for e in outcomes] == [(201, "committed")], outcomes


# --- 6. upstream framing errors --------------------------------------------------------------


def test_upstream_duplicate_content_length_is_502_and_next_request_works(gateway):
    g = gateway
    add_routes(g, ("GET", "/dupcl", "search", None))
    g.start()
    for i in range(4):  # pooled merchant connections exist on every worker
        assert g.request("GET", f"/lux/search?warm={i}", g.mint())[0] == 200
    st, h, body, data = g.request("GET", "/dupcl", g.mint())
    assert (st, body and body["error"]) == (502, "upstream_unavailable"), data
    assert b"hello" not in data
    for i in range(4):
        st, _, body, _ = g.request("GET", f"/lux/search?next={i}", g.mint())
        assert (st, body["path"]) == (200, f"/lux/search?next={i}")


# --- 7. the client leaves mid-stream ---------------------------------------------------------


def test_client_gone_mid_stream_cancels_upstream(gateway):
    g = gateway
    add_routes(g, ("GET", "/endless/*", "search", None))
    g.start()
    c = Client(g.port)
    c.send(b"GET /endless/1 HTTP/1.1\r\nHost: x\r\n" + auth(g.mint()) + b"\r\n")
    deadline = time.monotonic() + 5
    while len(c.buf) < 16384:
        assert c._recv(deadline), "the stream stopped"
    assert c.buf.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in c.buf.lower()
    t0 = time.time()
    c.close()
    closed = wait_for(lambda: [r for r in g.received() if r.get("event") == "closed"],
                      timeout=2.0, what="the merchant's connection closed")
    assert closed[0]["path"] == "/endless/1" and closed[0]["t"] - t0 < 2.0
    assert g.gw.stop() == 0
    outcomes = [e for e in entries(g) if e["kind"] == "outcome"]
    assert [e["result"] for e in outcomes] == ["client_gone"], outcomes


# --- 8. body limits --------------------------------------------------------------------------


def test_declared_body_over_limit_is_413_before_the_mandate(gateway):
    g = gateway.start()
    before = len(g.received())
    for target in (b"/lux/quote", b"/nowhere"):
        c = Client(g.port)
        c.send(b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" +
               b"x" * 100)
        assert c.until_closed(timeout=5), "open with a body never read"
        c.close()
        got, rest = parse_answers(c.buf)
        assert len(got) == 1 and not rest, c.buf
        assert_json_denial(got[0], 413, "body_too_large")
    assert len(g.barrier()) == before


def test_chunked_body_over_limit(gateway):
    g = gateway.start()
    tag = os.urandom(6).hex()
    body = b"".join(b"800\r\n" + b"z" * 2048 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
    c = Client(g.port)
    c.send(b"POST /lux/quote?big=" + tag.encode() + b" HTTP/1.1\r\nHost: x\r\n" +
           auth(g.mint(action="quote_room")) + b"Transfer-Encoding: chunked\r\n\r\n")
    try:
        c.send(body + good_request(g, tag))
    except OSError:
        pass  # closed already
    closed = c.until_closed(timeout=5)
    c.close()
    assert closed
    got, rest = parse_answers(c.buf)
    assert len(got) <= 1, c.buf
    if got:
        assert_json_denial(got[0], 413, "body_too_large")
    g.barrier()
    assert not [r for r in g.received() if tag in r.get("path", "")]


# --- 9. the connection cap -------------------------------------------------------------------


def _alive(s, wait=0.3):
    """True when the gateway has not closed s within wait seconds."""
    s.settimeout(wait)
    try:
        return s.recv(1) != b""
    except socket.timeout:
        return True
    except ConnectionResetError:
        return False


def _ok(g):
    try:
        return g.request("GET", "/lux/search", g.mint(), timeout=2)[0] == 200
    except OSError:
        return False


def test_max_connections(gateway):
    g = gateway
    g.conf["limits"]["max_connections"] = 5
    write_json(g.config_path, g.conf)
    g.start()
    wait_for(lambda: _ok(g), what="service")
    held, tries = [], 0
    while len(held) < 5:  # a probe connection of the fixture may still count for a moment
        tries += 1
        assert tries < 50
        s = socket.create_connection(("127.0.0.1", g.port))
        if _alive(s):
            held.append(s)
        else:
            s.close()
    # Beyond the cap: closed at once, without a byte.
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 1.5 or n < 10:
        s = socket.create_connection(("127.0.0.1", g.port), timeout=3)
        t = time.monotonic()
        assert not _alive(s, 3), "a connection over the cap was kept"
        assert time.monotonic() - t < 1.0
        s.close()
        n += 1
    elapsed = time.monotonic() - t0
    lines = [l for l in g.gw.output().splitlines() if '"msg":"max_connections (5) reached' in l]
    # Once per second at most: the 1.5 s or more spent over the cap touch at most 3 seconds.
    assert 1 <= len(lines) <= int(elapsed) + 2, (lines, elapsed, n)
    secs = [json.loads(l)["ts"][:19] for l in lines]
    assert len(set(secs)) == len(secs), lines
    assert all(_alive(s, 0.05) for s in held), "a connection under the cap was closed"
    for s in held:
        s.close()
    wait_for(lambda: _ok(g), timeout=5, what="service after the idle connections closed")


# --- 10. TLS ---------------------------------------------------------------------------------


def openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1 (and localhost), a client certificate, and a
    second CA that signed none of them; all in d (the test's temporary directory)."""
    def ca(name, cn):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)

    def leaf(name, subj, ext):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext)
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                f"{name}.ext", cwd=d)

    ca("ca", "HTTP Test CA")
    ca("other-ca", "Other CA")
    leaf("server", "/CN=gateway.test",
         "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    leaf("client", "/O=Test Org/CN=agent-planner", "extendedKeyUsage=clientAuth\n")
    return {k: os.path.join(d, k) for k in ("ca.pem", "other-ca.pem", "server.pem",
                                            "server.key", "client.pem", "client.key")}


def https(g, path, ctx, token=None):
    conn = http.client.HTTPSConnection("127.0.0.1", g.port, timeout=5, context=ctx)
    h = {"Authorization": "Mandate " + token} if token else {}
    try:
        conn.request("GET", path, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def client_ctx(pki, cert=False, max_version=None):
    ctx = ssl.create_default_context(cafile=pki["ca.pem"])
    if cert:
        ctx.load_cert_chain(pki["client.pem"], pki["client.key"])
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def tls_gateway(gateway, **tls):
    g = gateway
    pki = make_pki(g.d)
    g.conf["tls"] = {"cert_file": "server.pem", "key_file": "server.key", **tls}
    write_json(g.config_path, g.conf)
    return g.start(), pki


def test_tls_listener(gateway):
    g, pki = tls_gateway(gateway)
    st, h, data = https(g, "/lux/search?tls=1", client_ctx(pki), g.mint())
    assert st == 200 and json.loads(data)["path"] == "/lux/search?tls=1"
    fwd = dict((k.lower(), v) for k, v in g.received()[-1]["headers"])["forwarded"]
    assert ";proto=https" in fwd
    # Plain HTTP on the TLS port gets no HTTP answer.
    c = Client(g.port)
    c.send(b"GET /lux/search HTTP/1.1\r\nHost: x\r\n" + auth(g.mint()) + b"\r\n")
    c.until_closed(timeout=5)
    c.close()
    assert not c.buf.startswith(b"HTTP/")
    assert len(g.received()) == 1


def test_tls_client_certificate_required(gateway):
    g, pki = tls_gateway(gateway, client_ca_file="ca.pem")
    with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
        https(g, "/lux/search?nocert=1", client_ctx(pki), g.mint())
    st, _, data = https(g, "/lux/search?cert=1", client_ctx(pki, cert=True), g.mint())
    assert st == 200
    assert [r["path"] for r in g.received()] == ["/lux/search?cert=1"]


def test_tls_client_subject_in_access_log(gateway):
    """SPEC §5: the client certificate's subject, RFC 2253, in the request's access line."""
    g, pki = tls_gateway(gateway, client_ca_file="ca.pem")
    st, h, _ = https(g, "/lux/search?cert=1", client_ctx(pki, cert=True), g.mint())
    assert st == 200
    line = wait_for(lambda: [a for a in access_lines(g)
                             if a.get("request_id") == h["x-request-id"]],
                    what="access line")[0]
    assert line.get("tls_client") == "CN=agent-planner,O=Test Org", line


def test_tls_min_version_13(gateway):
    g, pki = tls_gateway(gateway, min_version="1.3")
    with pytest.raises(ssl.SSLError):
        https(g, "/lux/search?v=12", client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2),
              g.mint())
    st, _, _ = https(g, "/lux/search?v=13", client_ctx(pki), g.mint())
    assert st == 200
    assert [r["path"] for r in g.received()] == ["/lux/search?v=13"]


def start_tls_upstream(g, pki):
    args = [sys.executable, os.path.join(HERE, "stub_upstream.py"), str(g.up_port), g.record,
            pki["server.pem"] + ":" + pki["server.key"]]
    g.upstream = Proc(args, os.path.join(g.d, "up.log"))
    g.procs.append(g.upstream)
    wait_port(g.up_port, g.upstream.p)


@pytest.mark.parametrize("ca", ["right", "wrong"])
def test_https_upstream(gateway, ca):
    g = gateway
    pki = make_pki(g.d)
    m = g.conf["merchants"][0]
    m["upstream"] = f"https://127.0.0.1:{g.up_port}"
    m["upstream_ca_file"] = "ca.pem" if ca == "right" else "other-ca.pem"
    write_json(g.config_path, g.conf)
    start_tls_upstream(g, pki)
    g.start()
    if ca == "right":
        for i in range(3):  # new, then pooled connections
            st, h, body, _ = g.request("GET", f"/lux/search?https={i}", g.mint())
            assert (st, body["path"]) == (200, f"/lux/search?https={i}")
        assert [r["path"] for r in g.received()] == [f"/lux/search?https={i}" for i in range(3)]
    else:
        g.gw.expect_error(r"(?i)verif|certificate|tls|ssl")
        st, h, body, _ = g.request("GET", "/lux/search?https=bad", g.mint())
        assert (st, body["error"]) == (502, "upstream_unavailable")
        assert g.received() == []


# --- more of SPEC §5 -------------------------------------------------------------------------


def test_upstream_101_is_502(gateway):
    """A 101 upgrade from the merchant is refused (502); the bytes after it never reach the
    client, and the next request works."""
    g = gateway
    add_routes(g, ("GET", "/switch", "search", None))
    g.start()
    st, h, body, data = g.request("GET", "/switch", g.mint())
    assert (st, body and body["error"]) == (502, "upstream_unavailable"), data
    # (data is the answer's body: its request id may well contain "101")
    assert b"raw bytes" not in data and not data.startswith(b"HTTP/")
    for i in range(4):
        st, _, body, _ = g.request("GET", f"/lux/search?next={i}", g.mint())
        assert (st, body["path"]) == (200, f"/lux/search?next={i}")


@pytest.mark.parametrize("when", [
    "before_head_sent",
    "after_head_seen"])
def test_bad_chunk_on_priced_route_releases_reservation(gateway, when):
    """SPEC §5: a body that turns out malformed after the allow aborts the upstream request (the
    merchant's connection is closed), the outcome says bad_body and the priced reservation is
    released (the merchant did not answer 2xx) - also when the head already reached it."""
    g = gateway.start()
    cart = g.cart(total=1000)
    tag = os.urandom(6).hex()
    c = Client(g.port)
    c.send(b"PUT /drop/" + tag.encode() + b" HTTP/1.1\r\nHost: x\r\n" + auth(g.pay(cart)) +
           b"Mandate-Cart: " + cart.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n" +
           (b"1\r\n{\r\n" if when == "after_head_seen" else b""))
    if when == "after_head_seen":
        wait_for(lambda: [r for r in read_jsonl(g.record + ".heads") if tag in r["path"]],
                 what="the head at the merchant")
    c.send(b"zz\r\n}\r\n0\r\n\r\n")
    assert c.until_closed(timeout=5)
    c.close()
    got, _ = parse_answers(c.buf)
    assert len(got) <= 1 and (not got or got[0][0] == 400), c.buf
    if when == "after_head_seen":
        wait_for(lambda: [r for r in read_jsonl(g.record + ".cut") if tag in r["path"]],
                 what="the merchant's connection cut mid-body")
    g.barrier()
    assert not [r for r in g.received() if tag in r.get("path", "")]
    assert g.gw.stop() == 0
    outcomes = [e for e in entries(g) if e["kind"] == "outcome" and "spend" in e]
    assert [(e["result"], e["spend"]) for e in outcomes] == [("bad_body", "released")], outcomes


def test_upstream_bad_chunk_cuts_the_client_off(gateway):
    """A merchant body with a bad chunk size after a good chunk: the client gets the head and the
    good chunk, then the close, never a final chunk (no false end)."""
    g = gateway
    add_routes(g, ("GET", "/badchunk", "search", None))
    g.start()
    c = Client(g.port)
    c.send(b"GET /badchunk HTTP/1.1\r\nHost: x\r\n" + auth(g.mint()) + b"\r\n")
    closed = c.until_closed(timeout=5)
    c.close()
    assert c.buf.startswith(b"HTTP/1.1 200 "), c.buf
    assert b"hello" in c.buf and b"world" not in c.buf
    assert not c.buf.endswith(b"0\r\n\r\n"), c.buf
    assert closed, "the client was not cut off"


def test_upstream_body_errors_never_end_the_answer_falsely(gateway):
    """A merchant connection closed short of its Content-Length cuts the client off after what
    came (no padding, no false end); a close-delimited body is passed on chunked and ended
    properly; the next requests work."""
    g = gateway
    add_routes(g, *[("GET", p, "search", None) for p in ("/short", "/untilclose")])
    g.start()
    c = Client(g.port)
    c.send(b"GET /short HTTP/1.1\r\nHost: x\r\n" + auth(g.mint()) + b"\r\n")
    assert c.until_closed(timeout=5)
    c.close()
    head, _, body = c.buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: 100" in head, c.buf
    assert body == b"0123456789"
    c = Client(g.port)
    c.send(b"GET /untilclose HTTP/1.1\r\nHost: x\r\n" + auth(g.mint()) + b"\r\n" +
           b"GET /lux/search?after=untilclose HTTP/1.1\r\nHost: x\r\n" + auth(g.mint()) + b"\r\n")
    got = c.answers(2)
    c.close()
    assert got[0][1].get("transfer-encoding") == "chunked"
    assert got[0][2] == b"all of it, until the close"
    assert json.loads(got[1][2])["path"] == "/lux/search?after=untilclose"
    for i in range(4):
        st, _, body, _ = g.request("GET", f"/lux/search?next={i}", g.mint())
        assert (st, body["path"]) == (200, f"/lux/search?next={i}")


def test_connection_close_ends_pipelining(gateway):
    """A request with "Connection: close" is the last one read: the request written behind it is
    neither answered nor forwarded."""
    g = gateway.start()
    c = Client(g.port)
    c.send(b"GET /lux/search?n=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth(g.mint()) +
           b"\r\n" + good_request(g, "behind-close"))
    assert c.until_closed(timeout=5)
    c.close()
    got, rest = parse_answers(c.buf)
    assert [a[0] for a in got] == [200] and not rest, c.buf
    assert got[0][1].get("connection", "").lower() == "close"
    assert [r["path"] for r in g.barrier()] == ["/lux/search?n=1"]
