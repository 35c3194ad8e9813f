"""The app database side of the Todoist sync: connected users, their encrypted tokens and cursors."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine, select

from oo.integrations.todoist.fetch import _Cursor
from oo.tables import Integration, User, utcnow
from oo.vault import Vault

PROVIDER = "todoist"


# -- the app database side -------------------------------------------------------------------------
def connect_user(engine: Engine, vault: Vault, user_id: str, token: SecretStr, email: str | None = None) -> None:
    """Store ``user_id``'s Todoist token (encrypted) and make the integration active, ready for a
    full sync."""
    from oo.db import session_scope

    with session_scope(engine) as s:
        if s.get(User, user_id) is None:
            s.add(User(id=user_id, email=email))
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


def connected_users(engine: Engine) -> list[str]:
    """Users whose Todoist integration is active, sorted."""
    from oo.db import session_scope

    with session_scope(engine) as s:
        q = select(Integration.user_id).where(Integration.provider == PROVIDER, Integration.status == "active")
        return sorted(s.execute(q).scalars())


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
        return _Cursor(user_id, vault.decrypt(row.token_ciphertext), row.cursor, last)


def _record(engine: Engine, user_id: str, **values: Any) -> None:
    from oo.db import session_scope

    with session_scope(engine) as s:
        row = s.execute(
            select(Integration).where(Integration.user_id == user_id, Integration.provider == PROVIDER)
        ).scalar_one()
        for k, v in values.items():
            setattr(row, k, v)
        row.updated_at = utcnow()
