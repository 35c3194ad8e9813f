"""The end-user page is served at ``/`` with its assets, their content types and its own strict
content security policy, and stays out of the API's OpenAPI document."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app_api.page import PAGE_CSP


def test_the_page_is_html_with_a_policy_allowing_its_own_script_and_style_only(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"] == PAGE_CSP
    assert "script-src 'self';" in PAGE_CSP and "'unsafe-inline'" not in PAGE_CSP
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert '<script src="/page/app.js" defer></script>' in r.text
    assert "<script>" not in r.text and " on" + "click=" not in r.text  # nothing inline for the CSP to block


def test_assets_have_their_content_types_and_anything_else_is_404(client: TestClient) -> None:
    js = client.get("/page/app.js")
    css = client.get("/page/page.css")
    assert (js.status_code, js.headers["content-type"]) == (200, "text/javascript; charset=utf-8")
    assert (css.status_code, css.headers["content-type"]) == (200, "text/css; charset=utf-8")
    assert client.get("/page/favicon.svg").headers["content-type"] == "image/svg+xml"
    assert "localStorage" not in js.text.replace("never in cookies or web storage", "")
    for name in ("index.html", "../__init__.py", "..%2F__init__.py", "missing.js"):
        r = client.get(f"/page/{name}")
        assert r.status_code == 404, name
        assert r.headers["content-type"] == "application/problem+json"


def test_the_page_is_not_part_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/page") for p in paths)
    assert "/v1/tips/next" in paths
