"""Dependencies as types: ``SessionDep``, ``CurrentUser``, ``ServicesDep``, ``SettingsDep``, ``Now``.

Routes declare what they need by annotation; tests swap any of it with
``app.dependency_overrides``. Authentication is a dependency: a route that takes
``CurrentUser`` refuses a request without a valid, unexpired access token of a user that
still exists (401 with ``WWW-Authenticate: Bearer``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app_api.security import InvalidToken, decode_access_token
from app_api.services import Services
from oo.settings import Settings
from oo.tables import User


def get_services(request: Request) -> Services:
    """The app's :class:`Services`."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings_dep(services: ServicesDep) -> Settings:
    """The app's settings."""
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_now(services: ServicesDep) -> datetime:
    """The app's clock, read once per request."""
    return services.clock()


Now = Annotated[datetime, Depends(get_now)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """A database session for one request; routes commit what they change, the rest rolls back."""
    with Session(services.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

bearer = HTTPBearer(auto_error=False, description="an access token from /v1/auth/login or /v1/auth/refresh")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def get_current_user(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    session: SessionDep,
    settings: SettingsDep,
    now: Now,
) -> User:
    """The user named by a valid access token."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("an access token is required")
    try:
        user_id = decode_access_token(credentials.credentials, settings.auth, now)
    except InvalidToken as exc:
        raise _unauthorized(str(exc)) from None
    user = session.get(User, user_id)
    session.commit()  # end the read: no pooled connection is held while the route waits for a worker thread
    if user is None:
        raise _unauthorized("the token's user no longer exists")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
