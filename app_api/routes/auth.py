"""Registration, login, token refresh with rotation, logout."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, EmailStr, Field
from sqlalchemy import func, select

from app_api import ratelimit, refresh
from app_api.deps import CurrentUser, Now, ServicesDep, SessionDep, SettingsDep
from app_api.oidc import OidcProvider, SignInFailed
from app_api.problems import openapi_responses
from app_api.security import create_access_token, hash_password, verify_password
from app_api.tables import AuthState, aware
from oo.tables import User

log = logging.getLogger(__name__)

router = APIRouter(prefix="/auth", tags=["auth"])

Password = Annotated[str, Field(min_length=12, max_length=128, description="12 to 128 characters")]


class Register(BaseModel):
    """A new account."""

    model_config = ConfigDict(extra="forbid")
    email: EmailStr
    password: Password
    display_name: str | None = Field(default=None, max_length=200)


class Login(BaseModel):
    """Credentials."""

    model_config = ConfigDict(extra="forbid")
    email: EmailStr
    password: str = Field(min_length=1, max_length=128)


class RefreshBody(BaseModel):
    """A refresh token."""

    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=16, max_length=256)


class TokenPair(BaseModel):
    """An access token (short-lived) and a refresh token (rotates on every use)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str


class Account(BaseModel):
    """Who the caller is."""

    id: str
    email: str | None
    display_name: str | None


def token_pair(session: SessionDep, user_id: str, settings: SettingsDep, now: Now) -> TokenPair:
    """A fresh family: access and refresh tokens for ``user_id`` (the caller commits)."""
    access, ttl = create_access_token(user_id, settings.auth, now)
    return TokenPair(access_token=access, expires_in=ttl, refresh_token=refresh.issue(session, user_id, now))


@router.post("/register", status_code=201, responses=openapi_responses(409))
def register(body: Register, session: SessionDep, settings: SettingsDep, now: Now) -> TokenPair:
    """Create an account with email and password."""
    email = body.email.lower()
    if session.execute(select(func.count()).where(User.email == email)).scalar_one():
        raise HTTPException(409, "an account with this email exists")
    user = User(
        id=str(uuid.uuid4()),
        email=email,
        display_name=body.display_name,
        password_hash=hash_password(body.password),
        created_at=now,
    )
    session.add(user)
    session.flush()
    pair = token_pair(session, user.id, settings, now)
    session.commit()
    return pair


@router.post("/login", responses=openapi_responses(401, 429))
def login(body: Login, request: Request, session: SessionDep, settings: SettingsDep, now: Now) -> TokenPair:
    """Log in with email and password."""
    email = body.email.lower()
    keys = ratelimit.keys(email, request.client.host if request.client else None)
    try:
        ratelimit.check(session, keys, now, settings.auth)
    except ratelimit.TooManyAttempts as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    user = session.execute(select(User).where(User.email == email)).scalar_one_or_none()
    if not verify_password(body.password, user.password_hash if user else None) or user is None:
        ratelimit.record_failure(session, keys, now, settings.auth)
        session.commit()
        log.info("login refused")
        raise HTTPException(401, "wrong email or password", headers={"WWW-Authenticate": "Bearer"})
    ratelimit.clear(session, keys[0])
    pair = token_pair(session, user.id, settings, now)
    session.commit()
    return pair


@router.post("/refresh", responses=openapi_responses(401))
def refresh_tokens(body: RefreshBody, session: SessionDep, settings: SettingsDep, now: Now) -> TokenPair:
    """Exchange a refresh token for a new pair; the old refresh token is spent."""
    try:
        user_id, successor = refresh.rotate(session, body.refresh_token, now, settings.auth)
    except refresh.RefreshReused as exc:
        session.commit()  # the family's revocation
        log.warning("refresh token reuse detected; family revoked")
        raise HTTPException(401, str(exc)) from None
    except refresh.RefreshRefused as exc:
        raise HTTPException(401, str(exc)) from None
    access, ttl = create_access_token(user_id, settings.auth, now)
    session.commit()
    return TokenPair(access_token=access, expires_in=ttl, refresh_token=successor)


@router.post("/logout", status_code=204, responses=openapi_responses(401))
def logout(body: RefreshBody, user: CurrentUser, session: SessionDep, now: Now) -> None:
    """Revoke the session of a refresh token (its whole family)."""
    from app_api.tables import RefreshToken

    row = session.execute(
        select(RefreshToken.user_id).where(RefreshToken.token_hash == refresh.digest(body.refresh_token))
    ).scalar_one_or_none()
    if row is not None and row != user.id:  # someone else's token: say nothing about it
        return None
    refresh.revoke(session, body.refresh_token, now)
    session.commit()
    return None


@router.get("/me", responses=openapi_responses(401))
def me(user: CurrentUser) -> Account:
    """The account of the access token."""
    return Account(id=user.id, email=user.email, display_name=user.display_name)


class GoogleStart(BaseModel):
    """Where to send the user to sign in with Google."""

    authorization_url: str


def _google(services: ServicesDep) -> OidcProvider:
    provider = services.extra.get("google")
    if provider is None:
        try:
            provider = services.extra["google"] = OidcProvider(services.settings.auth, services.http)
        except SignInFailed:
            raise HTTPException(404, "Google sign-in is not configured") from None
    assert isinstance(provider, OidcProvider)
    return provider


@router.get("/google/start", responses=openapi_responses(404, 502))
def google_start(session: SessionDep, services: ServicesDep, now: Now) -> GoogleStart:
    """Start signing in with Google (authorization code with PKCE, state and nonce)."""
    try:
        started = _google(services).start()
    except SignInFailed as exc:
        raise HTTPException(502, str(exc)) from None
    session.add(
        AuthState(
            state=started.state,
            purpose="google",
            code_verifier=started.code_verifier,
            nonce=started.nonce,
            created_at=now,
        )
    )
    session.commit()
    return GoogleStart(authorization_url=started.url)


@router.get("/google/callback", responses=openapi_responses(400, 404, 502))
def google_callback(
    session: SessionDep,
    services: ServicesDep,
    now: Now,
    code: Annotated[str, Query(min_length=1, max_length=2048)],
    state: Annotated[str, Query(min_length=1, max_length=128)],
) -> TokenPair:
    """Finish signing in with Google: a token pair for the Google account's oO user."""
    provider = _google(services)
    pending = session.get(AuthState, state)
    if pending is None or pending.purpose != "google" or not pending.code_verifier or not pending.nonce:
        raise HTTPException(400, "unknown or used state")
    session.delete(pending)  # a state is used once, whatever happens next
    session.commit()
    if now - aware(pending.created_at) > timedelta(seconds=services.settings.auth.oidc_state_ttl_s):
        raise HTTPException(400, "the sign-in took too long; start again")
    try:
        who = provider.finish(code, pending.code_verifier, pending.nonce, now)
    except SignInFailed as exc:
        log.warning("google sign-in failed: %s", exc)
        raise HTTPException(400, str(exc)) from None
    subject = f"google:{who.subject}"
    user = session.execute(select(User).where(User.oidc_subject == subject)).scalar_one_or_none()
    if user is None and who.email and who.email_verified:
        # Link to an existing account only on an address the provider verified.
        user = session.execute(select(User).where(User.email == who.email.lower())).scalar_one_or_none()
        if user is not None:
            user.oidc_subject = subject
    if user is None:
        email = who.email.lower() if who.email and who.email_verified else None
        user = User(id=str(uuid.uuid4()), email=email, oidc_subject=subject, created_at=now)
        session.add(user)
        session.flush()
    pair = token_pair(session, user.id, services.settings, now)
    session.commit()
    return pair
