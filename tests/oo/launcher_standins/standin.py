"""A stand-in service for the launcher's tests: ``standin.py NAME PORT MODE PIDFILE``.

Modes: ``ok`` serves ``/healthz`` at once; ``slow`` after a second; ``never`` prints an error and
never listens; ``exit`` prints and exits with code 3; ``stubborn`` serves but ignores SIGTERM.
Every request is printed as one line, so the launcher's log streaming can be seen.
"""

import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

name, port, mode, pidfile = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
pidfile.write_text(str(__import__("os").getpid()))
print(f"{name}: starting in mode {mode}", flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"{name}: request {self.path}", flush=True)


if mode == "exit":
    print(f"{name}: boom, cannot start", flush=True)
    sys.exit(3)
if mode == "never":
    print(f"{name}: cannot open config /etc/standin.conf", flush=True)
    for _ in range(600):
        time.sleep(0.1)
    sys.exit(1)
if mode == "slow":
    time.sleep(1.0)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, lambda *a: print(f"{name}: ignoring SIGTERM", flush=True))
server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print(f"{name}: listening on {port}", flush=True)
server.serve_forever()
