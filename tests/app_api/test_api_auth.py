"""Auth: register and log in with argon2 passwords, short-lived access tokens, refresh tokens that
rotate, reuse detection that revokes the family, logout, idle expiry, login rate limiting."""

from __future__ import annotations

import logging

import jwt
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app_api.services import Services
from app_api.tables import RefreshToken
from oo.settings import DEV_AUTH_SECRET, Settings
from oo.tables import User
from tests.app_api.conftest import PASSWORD, Account, Clock, register


def refresh(client: TestClient, token: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/auth/refresh", json={"refresh_token": token})


def test_register_stores_an_argon2_hash_and_never_the_password(
    client: TestClient, services: Services, alice: Account
) -> None:
    with Session(services.engine) as s:
        user = s.execute(select(User).where(User.email == "alice@example.org")).scalar_one()
        assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
        assert PASSWORD not in user.password_hash
        stored = s.execute(select(RefreshToken.token_hash)).scalars().all()
    assert alice.tokens["refresh_token"] not in stored  # only its digest is kept
    assert (
        client.post("/v1/auth/register", json={"email": "ALICE@example.org", "password": PASSWORD}).status_code == 409
    )


def test_login_with_the_right_password_only(client: TestClient, alice: Account) -> None:
    ok = client.post("/v1/auth/login", json={"email": alice.email, "password": PASSWORD})
    assert ok.status_code == 200 and ok.json()["token_type"] == "bearer"
    bad = client.post("/v1/auth/login", json={"email": alice.email, "password": PASSWORD + "!"})
    unknown = client.post("/v1/auth/login", json={"email": "nobody@example.org", "password": PASSWORD})
    assert bad.status_code == unknown.status_code == 401
    assert bad.json()["detail"] == unknown.json()["detail"]  # no account enumeration


def test_access_tokens_are_short_lived_and_checked(client: TestClient, clock: Clock, alice: Account) -> None:
    assert client.get("/v1/auth/me", headers=alice.auth).json()["email"] == alice.email
    assert client.get("/v1/auth/me").status_code == 401
    forged = jwt.encode({"sub": alice.id, "typ": "access"}, "another-key-of-at-least-32-bytes!!", algorithm="HS256")
    r = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    clock.advance(seconds=alice.tokens["expires_in"] + 1)
    assert client.get("/v1/auth/me", headers=alice.auth).status_code == 401


def test_a_verified_token_is_refused_once_the_signing_key_changes(
    client: TestClient, services: Services, alice: Account
) -> None:
    """Verified tokens are cached by their text (tips and feedback pay for the signature once),
    with the key that verified them: a rotated key refuses the token at once."""
    assert client.get("/v1/auth/me", headers=alice.auth).status_code == 200  # verified, cached
    auth = services.settings.auth.model_copy(update={"secret_key": SecretStr("a-rotated-key-of-at-least-32-bytes!!")})
    services.settings = services.settings.model_copy(update={"auth": auth})
    assert client.get("/v1/auth/me", headers=alice.auth).status_code == 401


def test_refresh_rotates_and_reuse_revokes_the_family(client: TestClient, alice: Account) -> None:
    first = alice.tokens["refresh_token"]
    r1 = refresh(client, first)
    assert r1.status_code == 200
    second = r1.json()["refresh_token"]
    assert second != first
    # An attacker replays the spent token: refused, and the whole family is revoked ...
    replay = refresh(client, first)
    assert replay.status_code == 401 and "already used" in replay.json()["detail"]
    # ... so the legitimate successor stops working too.
    assert refresh(client, second).status_code == 401
    # A new login starts a new family that works.
    fresh = client.post("/v1/auth/login", json={"email": alice.email, "password": PASSWORD}).json()
    assert refresh(client, fresh["refresh_token"]).status_code == 200


def test_logout_revokes_and_only_the_owner_can(client: TestClient, alice: Account, bob: Account) -> None:
    # Bob cannot log Alice out with her token.
    r = client.post("/v1/auth/logout", json={"refresh_token": alice.tokens["refresh_token"]}, headers=bob.auth)
    assert r.status_code == 204
    assert refresh(client, alice.tokens["refresh_token"]).status_code == 200
    pair = client.post("/v1/auth/login", json={"email": alice.email, "password": PASSWORD}).json()
    r = client.post("/v1/auth/logout", json={"refresh_token": pair["refresh_token"]}, headers=alice.auth)
    assert r.status_code == 204
    assert refresh(client, pair["refresh_token"]).status_code == 401


def test_inactive_refresh_tokens_expire(client: TestClient, clock: Clock, services: Services, alice: Account) -> None:
    idle = services.settings.auth.refresh_idle_ttl_s
    clock.advance(seconds=idle - 60)
    r = refresh(client, alice.tokens["refresh_token"])
    assert r.status_code == 200  # used in time: rotated, and the clock restarts
    clock.advance(seconds=idle - 60)
    r = refresh(client, r.json()["refresh_token"])
    assert r.status_code == 200
    clock.advance(seconds=idle + 1)
    late = refresh(client, r.json()["refresh_token"])
    assert late.status_code == 401 and "inactivity" in late.json()["detail"]


def test_login_is_rate_limited_per_email(client: TestClient, clock: Clock, services: Services, alice: Account) -> None:
    limit = services.settings.auth.login_max_failures
    for _ in range(limit):
        assert client.post("/v1/auth/login", json={"email": alice.email, "password": "wrong"}).status_code == 401
    blocked = client.post("/v1/auth/login", json={"email": alice.email, "password": PASSWORD})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    clock.advance(seconds=services.settings.auth.login_window_s + 1)
    assert client.post("/v1/auth/login", json={"email": alice.email, "password": PASSWORD}).status_code == 200


def test_login_is_rate_limited_per_address(client: TestClient, services: Services, alice: Account) -> None:
    limit = services.settings.auth.login_max_failures
    for i in range(limit):  # one failure each for many emails, all from this client's address
        wrong = {"email": f"x{i}@example.org", "password": "wrong"}
        assert client.post("/v1/auth/login", json=wrong).status_code == 401
    blocked = client.post("/v1/auth/login", json={"email": alice.email, "password": PASSWORD})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0


def test_no_password_or_token_in_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        acct = register(client, "carol@example.org")
        client.post("/v1/auth/login", json={"email": acct.email, "password": "wrong-password-x"})
        refresh(client, acct.tokens["refresh_token"])
        refresh(client, acct.tokens["refresh_token"])  # reuse: logged as a warning
    text = caplog.text
    for secret in (PASSWORD, "wrong-password-x", acct.tokens["refresh_token"], acct.tokens["access_token"]):
        assert secret not in text


def test_the_default_secret_key_is_refused_outside_local(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet

    monkeypatch.setenv("OO_ENV", "prod")
    monkeypatch.setenv("OO_VAULT__KEYS", f'["{Fernet.generate_key().decode()}"]')
    monkeypatch.setenv("OO_TODOIST__CLIENT_SECRET", "a-real-secret")
    with pytest.raises(ValidationError, match="OO_AUTH__SECRET_KEY is the dev default"):
        Settings()
    monkeypatch.setenv("OO_AUTH__SECRET_KEY", "short")
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings()
    monkeypatch.setenv("OO_AUTH__SECRET_KEY", "x" * 40)
    assert Settings().auth.secret_key.get_secret_value() != DEV_AUTH_SECRET
