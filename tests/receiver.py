"""A local HTTP receiver for tests: a server on a free loopback port that records what is POSTed
to it (a webhook, an OTLP collector) and answers with a settable status."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class PostReceiver:
    """Records ``parse(body)`` of every POST, under a lock, and answers ``status``; ``url`` is
    ``path`` on its port."""

    def __init__(self, path: str, parse: Callable[[bytes], Any]) -> None:
        self.status = 200
        self.bodies: list[Any] = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  # the http.server hook's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    receiver.bodies.append(parse(body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
