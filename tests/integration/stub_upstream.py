"""A stub merchant for the integration tests: records every request it receives (one JSON line
per request in the file given as argv[2]) and answers by path:
  /slow/...          never answers (until killed)
  /delay/<ms>        answers after ms milliseconds
  /big/<n>           streams n bytes (Content-Length framed, written in 64 KiB pieces)
  /status/<code>     answers with that status and a JSON body
  /close/...         answers, then closes the connection
  /quotecart         answers {"cart": {claims}} for the gateway to sign (sign_cart routes)
  /drop/...          reads the request, then closes the connection without answering
  /early/<code>      answers "103 Early Hints" (with a Link header), then <code> with a JSON body
  /dupcl             answers 200 with two different Content-Length headers
  /badchunk          answers 200 chunked: one good chunk, then a chunk size that is not hex
  /short             answers 200 with Content-Length 100 but sends 10 bytes, then closes
  /untilclose        answers 200 with neither Content-Length nor chunked, ends by closing
  /switch            answers "101 Switching Protocols"
  /endless/...       streams chunks (every 20 ms) until the client goes away, then records
                     {"event": "closed", "path": ...}
  anything else      200 {"ok": true, "path": ...}
A chunked request body is decoded; a request whose body does not arrive complete is not recorded
as a request: {"event": "incomplete", "path": ...} goes to RECORD_FILE + ".cut" instead. Every
request head is also noted, before its body is read, in RECORD_FILE + ".heads", with "peer": the
port of the connection that carried it.
Usage: stub_upstream.py PORT RECORD_FILE [CERT_FILE:KEY_FILE]  (the third argument: serve TLS)"""
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
RECORD = sys.argv[2]
TLS = sys.argv[3] if len(sys.argv) > 3 else None
lock = threading.Lock()


def record(obj, path=RECORD):
    with lock, open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


class Incomplete(Exception):
    pass


def read_exact(rfile, n):
    b = rfile.read(n)
    if len(b) != n:
        raise Incomplete()
    return b


def read_line(rfile):
    line = rfile.readline(65537)
    if not line.endswith(b"\r\n"):
        raise Incomplete()
    return line[:-2]


def read_chunked(rfile):
    body = b""
    while True:
        size = int(read_line(rfile).split(b";")[0], 16)
        if size == 0:
            while read_line(rfile):  # trailers, then the empty line
                pass
            return body
        body += read_exact(rfile, size)
        if read_exact(rfile, 2) != b"\r\n":
            raise Incomplete()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def handle_any(self):
        record({"method": self.command, "path": self.path, "peer": self.client_address[1]},
               RECORD + ".heads")
        try:
            if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
                body = read_chunked(self.rfile)
            else:
                n = int(self.headers.get("Content-Length") or 0)
                body = read_exact(self.rfile, n) if n else b""
        except (Incomplete, ValueError, OSError):
            record({"event": "incomplete", "method": self.command, "path": self.path},
                   RECORD + ".cut")
            self.close_connection = True
            return
        record({"method": self.command, "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body.decode(errors="replace")})
        if self.path.startswith("/quotecart"):
            # A merchant that leaves cart signing to the gateway (sign_cart routes).
            out = json.dumps({"cart": {"action": "book_room",
                                       "items": [{"sku": "deluxe", "qty": 2,
                                                  "unit": {"value": 9000, "currency": "EUR"}}],
                                       "total": {"value": 18000, "currency": "EUR"}},
                              "note": "kept"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if self.path.startswith("/early/"):
            self.send_response_only(103, "Early Hints")
            self.send_header("Link", "</style.css>; rel=preload")
            self.end_headers()
            self.wfile.flush()
            status = int(self.path.split("/")[2])
            out = json.dumps({"ok": True, "path": self.path, "status": status}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if self.path.startswith(("/badchunk", "/short", "/untilclose")):
            self.wfile.write({
                "/badchunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n",
                "/short": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
                "/untilclose": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
                               b"all of it, until the close",
            }[self.path.split("?")[0]])
            self.close_connection = True
            return
        if self.path.startswith("/switch"):
            self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n\r\nraw bytes after the switch")
            self.close_connection = True
            return
        if self.path.startswith("/dupcl"):
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 5\r\nContent-Length: 7\r\n\r\nhello!!")
            self.close_connection = True
            return
        if self.path.startswith("/endless"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.close_connection = True
            try:
                while True:
                    self.wfile.write(b"400\r\n" + b"e" * 1024 + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.02)
            except OSError:
                record({"event": "closed", "path": self.path, "t": time.time()})
            return
        if self.path.startswith("/slow"):
            time.sleep(3600)
        if self.path.startswith("/drop"):
            self.close_connection = True  # read the request, then close without an answer
            return
        if self.path.startswith("/delay/"):
            time.sleep(int(self.path.split("/")[2].split("?")[0]) / 1000)
        if self.path.startswith("/big/"):
            size = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            sent = 0
            while sent < size:
                part = chunk[: min(len(chunk), size - sent)]
                self.wfile.write(part)
                sent += len(part)
            return
        status = 200
        if self.path.startswith("/status/"):
            status = int(self.path.split("/")[2])
        out = json.dumps({"ok": status < 400, "path": self.path}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("Connection", "X-Secret-Hop")
        self.send_header("X-Secret-Hop", "must-not-reach-client")
        if self.path.startswith("/close"):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen()'s backlog: a burst of connections is not dropped (SYN retry)
    ctx = None

    def finish_request(self, request, client_address):
        if self.ctx is not None:  # the handshake happens in the connection's own thread
            try:
                tls = self.ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
            try:
                super().finish_request(tls, client_address)
            finally:
                tls.close()
            return
        super().finish_request(request, client_address)


srv = Server(("127.0.0.1", PORT), Handler)
if TLS:
    cert, key = TLS.split(":")
    Server.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    Server.ctx.load_cert_chain(cert, key)
srv.serve_forever()
