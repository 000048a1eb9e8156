"""A stub merchant for the integration tests: records every request it receives (one JSON line
per request in the file given as argv[2]) and answers by path:
  /slow/...          never answers (until killed)
  /delay/<ms>        answers after ms milliseconds
  /big/<n>           streams n bytes (Content-Length framed, written in 64 KiB pieces)
  /status/<code>     answers with that status and a JSON body
  /close/...         answers, then closes the connection
  /drop/...          reads the request, then closes the connection without answering
  anything else      200 {"ok": true, "path": ...}
Usage: stub_upstream.py PORT RECORD_FILE"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
RECORD = sys.argv[2]
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with lock, open(RECORD, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path,
                                "headers": [[k, v] for k, v in self.headers.items()],
                                "body": body.decode(errors="replace")}) + "\n")
        if self.path.startswith("/slow"):
            time.sleep(3600)
        if self.path.startswith("/drop"):
            self.close_connection = True  # read the request, then close without an answer
            return
        if self.path.startswith("/delay/"):
            time.sleep(int(self.path.split("/")[2]) / 1000)
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


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
