"""The app's edge: versioned paths, problem+json for every error, security headers, CORS, body limit."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app_api.main import create_app
from app_api.services import Services

PROBLEM = "application/problem+json"


def test_healthz_answers_with_the_database(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok"}


def test_every_api_path_is_versioned(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths and all(p.startswith("/v1/") or p == "/healthz" for p in paths)


def test_unknown_paths_and_methods_are_problems(client: TestClient) -> None:
    r = client.get("/v1/nothing-here")
    assert (r.status_code, r.headers["content-type"], r.json()["title"]) == (404, PROBLEM, "Not Found")
    r = client.delete("/healthz")
    assert r.status_code == 405 and r.headers["content-type"] == PROBLEM


def test_validation_errors_are_problems_without_the_input(client: TestClient) -> None:
    r = client.post("/v1/auth/register", json={"email": "not-an-email", "password": "hunter2"})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == 422 and {tuple(e["loc"]) for e in body["errors"]} == {
        ("body", "email"),
        ("body", "password"),
    }
    assert "hunter2" not in r.text  # the offending value is never echoed


def test_malformed_json_is_a_4xx(client: TestClient) -> None:
    r = client.post("/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM


def test_security_headers_on_every_answer(client: TestClient) -> None:
    for r in (client.get("/healthz"), client.get("/v1/nothing-here")):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"


def test_hsts_outside_local_mode_only(client: TestClient, services: Services) -> None:
    assert "strict-transport-security" not in client.get("/healthz").headers  # local: plain http to 127.0.0.1
    services.settings = services.settings.model_copy(update={"env": "staging"})
    with TestClient(create_app(services)) as c:
        hsts = c.get("/healthz").headers["strict-transport-security"]
    assert "max-age=" in hsts and int(hsts.split("max-age=")[1].split(";")[0]) >= 31_536_000


def test_cors_allows_only_configured_origins(services: Services) -> None:
    services.settings = services.settings.model_copy(
        update={"app": services.settings.app.model_copy(update={"cors_origins": ["https://app.example.org"]})}
    )
    with TestClient(create_app(services)) as c:
        ok = c.options(
            "/v1/auth/login",
            headers={"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"},
        )
        bad = c.options(
            "/v1/auth/login", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
    assert ok.headers["access-control-allow-origin"] == "https://app.example.org"
    assert "access-control-allow-origin" not in bad.headers


def test_bodies_over_the_limit_are_refused(client: TestClient, services: Services) -> None:
    big = b'{"email": "a@example.org", "password": "' + b"x" * services.settings.app.max_body_bytes + b'"}'
    r = client.post("/v1/auth/login", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM

    def chunks():  # no Content-Length: counted while read
        yield big[:1000]
        yield big[1000:]

    r = client.post("/v1/auth/login", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_an_unexpected_error_is_a_problem_without_detail(services: Services) -> None:
    app = create_app(services)

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret-internal-state")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/v1/boom")
    assert r.status_code == 500 and r.headers["content-type"] == PROBLEM
    assert "secret-internal-state" not in r.text
