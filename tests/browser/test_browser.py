"""The browser fixture works: a page served on loopback is opened and a button clicked in Chromium."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytestmark = pytest.mark.slow

PAGE = b"""<!doctype html>
<html><head><title>oO browser check</title></head>
<body>
  <p id="state">not clicked</p>
  <button id="go" onclick="fetch('/clicked', {method: 'POST'}).then(r => r.text())
      .then(t => { document.getElementById('state').textContent = t; })">Click me</button>
</body></html>
"""


@pytest.fixture
def site() -> Iterator[tuple[str, list[str]]]:
    """A tiny site on a free loopback port; it records the POSTs it receives."""
    posts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(PAGE)

        def do_POST(self) -> None:
            posts.append(self.path)
            body = f"clicked {len(posts)} time(s)".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", posts
    finally:
        server.shutdown()
        server.server_close()


def test_chromium_opens_a_local_page_and_a_click_reaches_the_server(page: Any, site: tuple[str, list[str]]) -> None:
    from playwright.sync_api import expect

    url, posts = site
    page.goto(url)
    expect(page).to_have_title("oO browser check")
    expect(page.locator("#state")).to_have_text("not clicked")
    page.get_by_role("button", name="Click me").click()
    expect(page.locator("#state")).to_have_text("clicked 1 time(s)")
    page.get_by_role("button", name="Click me").click()
    expect(page.locator("#state")).to_have_text("clicked 2 time(s)")
    assert posts == ["/clicked", "/clicked"]
