"""Dependencies as types: ``SessionDep``, ``CurrentUser``, ``ServicesDep``, ``SettingsDep``, ``Now``.

Routes declare what they need by annotation; tests swap any of it with
``app.dependency_overrides``. Authentication is a dependency: a route that takes
``CurrentUser`` refuses a request without a valid, unexpired access token of a user that
still exists (401 with ``WWW-Authenticate: Bearer``). The two hot routes (tips/next and
feedback) take ``TokenUserId`` instead: the token is checked on the event loop, and the route
checks the user's existence in the same worker-thread call as the rest of its reads (one thread
hop and one statement fewer per request, the same answers).

Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in its
thread pool, a hop that costs more than these functions do. Creating a ``Session`` does no I/O
either (it connects on first use); closing one that still holds a connection (a rollback and
the pool's reset) is sent to the thread pool, closing one that does not is done in place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app_api.security import InvalidToken, decode_access_token
from app_api.services import Services
from oo.settings import Settings
from oo.tables import User


async def get_services(request: Request) -> Services:
    """The app's :class:`Services`."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings_dep(services: ServicesDep) -> Settings:
    """The app's settings."""
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


SIMULATED_TIME_HEADER = "X-OO-Simulated-Time"
"""With ``OO_APP__SIMULATED_CLOCK`` (local only, for ``oo simulate``): the request's time, ISO 8601
with an offset. Without the setting the header is ignored."""


async def get_now(request: Request, services: ServicesDep) -> datetime:
    """The app's clock, read once per request (a simulation's header when the setting allows it)."""
    given = request.headers.get(SIMULATED_TIME_HEADER)
    if given is None or not services.settings.app.simulated_clock:
        return services.clock()
    try:
        at = datetime.fromisoformat(given)
    except ValueError:
        raise HTTPException(400, f"{SIMULATED_TIME_HEADER} must be an ISO 8601 time with an offset") from None
    if at.tzinfo is None:
        raise HTTPException(400, f"{SIMULATED_TIME_HEADER} must be an ISO 8601 time with an offset")
    return at


Now = Annotated[datetime, Depends(get_now)]


async def get_session(services: ServicesDep) -> AsyncIterator[Session]:
    """A database session for one request; routes commit what they change, the rest rolls back."""
    session = Session(services.engine, expire_on_commit=False)
    try:
        yield session
    finally:
        # Closed here, on the event loop, never through a worker thread: a session still in a
        # transaction holds a pooled connection, and waiting for a thread to close it while every
        # worker thread waits for a connection is a deadlock (seen under load: the app stopped
        # answering). The close is a rollback and a return to the pool, and it runs even when the
        # request was cancelled (a client that gave up).
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]

bearer = HTTPBearer(auto_error=False, description="an access token from /v1/auth/login or /v1/auth/refresh")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def token_user_id(credentials: HTTPAuthorizationCredentials | None, settings: Settings, now: datetime) -> str:
    """The user id a valid access token names (no database read: the caller still checks that the
    user exists, :data:`USER_GONE`); 401 otherwise. Cheap enough for the event loop: a token's
    signature is checked once and cached (:func:`app_api.security.decode_access_token`)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("an access token is required")
    try:
        return decode_access_token(credentials.credentials, settings.auth, now)
    except InvalidToken as exc:
        raise _unauthorized(str(exc)) from None


async def get_token_user_id(credentials: Credentials, settings: SettingsDep, now: Now) -> str:
    """The user id of a valid access token, checked on the event loop (no thread hop); the route
    that takes it checks that the user still exists (:func:`user_gone`) in its own database call."""
    return token_user_id(credentials, settings, now)


TokenUserId = Annotated[str, Depends(get_token_user_id)]


USER_GONE = "the token's user no longer exists"


def user_gone() -> HTTPException:
    """The 401 of a valid token whose user was deleted."""
    return _unauthorized(USER_GONE)


def get_current_user(credentials: Credentials, session: SessionDep, settings: SettingsDep, now: Now) -> User:
    """The user named by a valid access token."""
    user_id = token_user_id(credentials, settings, now)
    user = session.get(User, user_id)
    # End the read: the connection goes back to the pool instead of being held while the route
    # waits for a worker thread (under a burst, held connections would exhaust the pool).
    session.commit()
    if user is None:
        raise user_gone()
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
