"""Sign-in with Google through the OIDC boundary, against the local fake provider: discovery,
JWKS, the authorization-code flow with PKCE and state, and what must be refused."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app_api.services import Services
from oo.fakes.oidc import FakeOidc, serve_in_thread
from tests.app_api.conftest import Account, Clock

REDIRECT = "http://127.0.0.1:8000/v1/auth/google/callback"


@pytest.fixture
def provider(services: Services, clock: Clock) -> Iterator[FakeOidc]:
    with serve_in_thread(FakeOidc(clock=lambda: clock.now.timestamp())) as world:
        services.settings = services.settings.model_copy(
            update={
                "auth": services.settings.auth.model_copy(
                    update={
                        "google_client_id": "fake-google-client",
                        "google_client_secret": SecretStr("fake-google-secret"),
                        "google_metadata_url": f"{world.issuer}/.well-known/openid-configuration",
                        "google_redirect_uri": REDIRECT,
                    }
                )
            }
        )
        yield world


def sign_in(client: TestClient, tamper: dict[str, str] | None = None) -> httpx.Response:
    """What a browser does: start, follow the provider's redirect, land on the callback."""
    start = client.get("/v1/auth/google/start").json()["authorization_url"]
    query = parse_qs(urlparse(start).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"] and query["nonce"] and query["state"]
    redirect = httpx.get(start, follow_redirects=False)
    assert redirect.status_code == 302, redirect.text
    back = {k: v[0] for k, v in parse_qs(urlparse(redirect.headers["location"]).query).items()}
    assert back["state"] == query["state"][0]
    return client.get("/v1/auth/google/callback", params=back | (tamper or {}))


def test_google_sign_in_creates_an_account_and_signs_it_in(client: TestClient, provider: FakeOidc) -> None:
    provider.login_as("g-123", "Dana@Example.org")
    r = sign_in(client)
    assert r.status_code == 200, r.text
    me = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}).json()
    assert me["email"] == "dana@example.org"
    again = sign_in(client)  # the same Google account is the same oO user
    me2 = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {again.json()['access_token']}"}).json()
    assert me2["id"] == me["id"]


def test_a_verified_google_email_links_the_existing_account(
    client: TestClient, provider: FakeOidc, alice: Account
) -> None:
    provider.login_as("g-alice", alice.email, email_verified=True)
    r = sign_in(client)
    me = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}).json()
    assert me["id"] == alice.id


def test_an_unverified_email_does_not_take_over_an_account(
    client: TestClient, provider: FakeOidc, alice: Account
) -> None:
    provider.login_as("g-mallory", alice.email, email_verified=False)
    r = sign_in(client)
    me = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}).json()
    assert me["id"] != alice.id and me["email"] is None


def test_a_forged_or_replayed_state_is_refused(client: TestClient, provider: FakeOidc) -> None:
    provider.login_as("g-1", "e@example.org")
    assert sign_in(client, tamper={"state": "forged-state"}).status_code == 400
    start = client.get("/v1/auth/google/start").json()["authorization_url"]
    back = parse_qs(urlparse(httpx.get(start).headers["location"]).query)
    params = {k: v[0] for k, v in back.items()}
    assert client.get("/v1/auth/google/callback", params=params).status_code == 200
    assert client.get("/v1/auth/google/callback", params=params).status_code == 400  # state and code used once


def test_a_sign_in_that_took_too_long_is_refused(
    client: TestClient, services: Services, clock: Clock, provider: FakeOidc
) -> None:
    provider.login_as("g-1", "e@example.org")
    start = client.get("/v1/auth/google/start").json()["authorization_url"]
    back = parse_qs(urlparse(httpx.get(start).headers["location"]).query)
    clock.advance(seconds=services.settings.auth.oidc_state_ttl_s + 1)
    late = client.get("/v1/auth/google/callback", params={k: v[0] for k, v in back.items()})
    assert late.status_code == 400 and late.headers["content-type"] == "application/problem+json"


def test_a_wrong_code_or_a_token_from_another_key_is_refused(client: TestClient, provider: FakeOidc) -> None:
    provider.login_as("g-1", "e@example.org")
    assert sign_in(client, tamper={"code": "not-a-code"}).status_code == 400
    from joserfc.jwk import RSAKey

    provider.key = RSAKey.generate_key(2048, parameters={"kid": "fake-1", "alg": "RS256"})  # rotated at the provider
    # The app refetches the JWKS once on a failure, so a rotation works ...
    assert sign_in(client).status_code == 200
    # ... but an ID token signed with a key the provider does not publish is refused.
    published = provider.jwks()
    provider.key = RSAKey.generate_key(2048, parameters={"kid": "fake-1", "alg": "RS256"})
    provider.jwks = lambda: published  # type: ignore[method-assign]
    r = sign_in(client)
    assert r.status_code == 400 and "did not verify" in r.json()["detail"]


def test_google_sign_in_off_when_not_configured(client: TestClient) -> None:
    assert client.get("/v1/auth/google/start").status_code == 404
