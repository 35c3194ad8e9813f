"""Registration, login, token refresh with rotation, logout."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, EmailStr, Field
from sqlalchemy import func, select

from app_api import ratelimit, refresh
from app_api.deps import CurrentUser, Now, SessionDep, SettingsDep
from app_api.problems import openapi_responses
from app_api.security import create_access_token, hash_password, verify_password
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
