"""The end-user page: one HTML document and its static script and style, served by the app API.

``GET /`` is the page; ``GET /page/{name}`` its assets. No build step and nothing from a CDN: the
page is plain HTML, its behaviour is :file:`static/app.js` (vanilla JS calling the ``/v1`` routes
with ``fetch``), its look :file:`static/page.css`.

The app's edge (:class:`app_api.edge.SecurityHeaders`) gives every answer ``default-src 'none'``,
which would block the page's own script and style; it keeps a policy a response already carries,
so the page sends its own: scripts, styles and ``fetch`` from this origin only, no inline script,
no framing, no forms posting anywhere (the script sends every request). The access and refresh
tokens live in the script's memory only: nothing is written to cookies or web storage, so a reload
signs the user out.

The assets are a fixed allow-list read once at import (a handful of small files; no path from the
request ever reaches the file system), with their content types set explicitly.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

STATIC = Path(__file__).with_name("static")

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""The page's content security policy (stricter than the API's in nothing but what the page needs)."""

MEDIA_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
ASSETS: dict[str, bytes] = {name: (STATIC / name).read_bytes() for name in MEDIA_TYPES}
INDEX: bytes = (STATIC / "index.html").read_bytes()

router = APIRouter(tags=["page"], include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def index() -> Response:
    """The page."""
    return HTMLResponse(INDEX, headers={"Content-Security-Policy": PAGE_CSP})


@router.get("/page/{name}")
def asset(name: str) -> Response:
    """One of the page's static assets (404 for anything else)."""
    body = ASSETS.get(name)
    if body is None:
        raise HTTPException(404, "no such asset")
    return Response(body, media_type=MEDIA_TYPES[name], headers={"Content-Security-Policy": PAGE_CSP})
