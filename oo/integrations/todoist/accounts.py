"""The app database side of the Todoist sync: connected users, their encrypted tokens and cursors."""

from __future__ import annotations

from datetime import UTC
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr
from sqlalchemy import Engine, select

from oo.integrations.todoist.fetch import _Cursor
from oo.settings import TodoistSettings
from oo.tables import Integration, User, utcnow
from oo.vault import Vault

PROVIDER = "todoist"


# -- the app database side -------------------------------------------------------------------------
class DemoBindingError(ValueError):
    """A demo user's token would leave the fake server it belongs to."""


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (where the fake Todoist servers run).

    Examples
    --------
    >>> is_loopback("http://127.0.0.1:8765/api/v1/"), is_loopback("https://api.todoist.com/api/v1/")
    (True, False)
    """
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def connect_user(
    engine: Engine,
    vault: Vault,
    user_id: str,
    token: SecretStr,
    email: str | None = None,
    *,
    demo_base_url: str | None = None,
) -> None:
    """Store ``user_id``'s Todoist token (encrypted) and make the integration active, ready for a
    full sync.

    With ``demo_base_url`` the user is a demo user and the token belongs to the fake server at
    that (loopback) URL: syncs send it there and nowhere else, and :func:`connected_users` leaves
    the user out of scheduled runs. Connecting without it makes the user a real one again.
    """
    from oo.db import session_scope

    if demo_base_url is not None and not is_loopback(demo_base_url):
        raise DemoBindingError(f"a demo user's token may only go to a local fake server, not {demo_base_url}")
    with session_scope(engine) as s:
        user = s.get(User, user_id)
        if user is None:
            user = User(id=user_id, email=email)
            s.add(user)
        user.is_demo = demo_base_url is not None
        integration = s.execute(
            select(Integration).where(Integration.user_id == user_id, Integration.provider == PROVIDER)
        ).scalar_one_or_none()
        if integration is None:
            integration = Integration(user_id=user_id, provider=PROVIDER)
            s.add(integration)
        integration.token_ciphertext = vault.encrypt(token)
        integration.status = "active"
        integration.cursor = None
        integration.last_error = None
        integration.api_base_url = demo_base_url


def connected_users(engine: Engine, *, include_demo: bool = False) -> list[str]:
    """Users whose Todoist integration is active, sorted; demo users only with ``include_demo``
    (scheduled runs and ``make todoist-sync`` never sync them)."""
    from oo.db import session_scope

    with session_scope(engine) as s:
        q = (
            select(Integration.user_id)
            .join(User, User.id == Integration.user_id)
            .where(Integration.provider == PROVIDER, Integration.status == "active")
        )
        if not include_demo:
            q = q.where(User.is_demo.is_(False))
        return sorted(s.execute(q).scalars())


def bound_settings(settings: TodoistSettings, state: _Cursor) -> TodoistSettings:
    """The Todoist settings one user's sync may use: the integration's own API when it is bound
    to one, else the configured one. A demo user's token goes to its loopback fake server only;
    without one it goes nowhere (:class:`DemoBindingError`)."""
    if state.demo and (state.base_url is None or not is_loopback(state.base_url)):
        raise DemoBindingError(
            f"{state.user_id} is a demo user bound to {state.base_url or 'no fake server'}; "
            "its token is not sent to any other API"
        )
    if state.base_url is None:
        return settings
    return settings.model_copy(update={"base_url": state.base_url})


def _load(engine: Engine, vault: Vault, user_id: str) -> _Cursor | None:
    from oo.db import session_scope

    with session_scope(engine) as s:
        row = s.execute(
            select(Integration).where(Integration.user_id == user_id, Integration.provider == PROVIDER)
        ).scalar_one_or_none()
        if row is None or row.status != "active" or row.token_ciphertext is None:
            return None
        last = row.last_synced_at
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=UTC)  # SQLite drops the offset
        user = s.get(User, user_id)
        return _Cursor(
            user_id,
            vault.decrypt(row.token_ciphertext),
            row.cursor,
            last,
            base_url=row.api_base_url,
            demo=bool(user is not None and user.is_demo),
        )


def _record(engine: Engine, user_id: str, **values: Any) -> None:
    from oo.db import session_scope

    with session_scope(engine) as s:
        row = s.execute(
            select(Integration).where(Integration.user_id == user_id, Integration.provider == PROVIDER)
        ).scalar_one()
        for k, v in values.items():
            setattr(row, k, v)
        row.updated_at = utcnow()
