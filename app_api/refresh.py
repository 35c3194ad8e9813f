"""Refresh tokens that rotate on every use, in families, with reuse detection (RFC 9700 §4.14.2).

A login starts a family. Each refresh consumes the presented token (``used_at``) and issues its
successor in the same family. Presenting a consumed token again means it leaked (or a client
replayed it): the whole family is revoked, so the attacker's and the user's sessions both end.
Only SHA-256 digests are stored; the token itself (256 random bits) is shown once, to the client.
A token unused for ``refresh_idle_ttl_s`` expires, and a family ends ``refresh_max_ttl_s`` after
its login whatever happens.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app_api.tables import RefreshToken, aware
from oo.settings import AuthSettings


class RefreshRefused(ValueError):
    """A refresh token that is unknown, expired or revoked."""


class RefreshReused(RefreshRefused):
    """A refresh token presented after it was rotated: its family has been revoked."""


def digest(token: str) -> str:
    """The stored form of a refresh token."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue(session: Session, user_id: str, now: datetime, family: RefreshToken | None = None) -> str:
    """A new refresh token for ``user_id``: the first of a new family, or ``family``'s next one."""
    token = secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            id=str(uuid.uuid4()),
            user_id=user_id,
            family_id=family.family_id if family else str(uuid.uuid4()),
            token_hash=digest(token),
            family_started_at=family.family_started_at if family else now,
            created_at=now,
        )
    )
    return token


def revoke_family(session: Session, family_id: str, now: datetime) -> None:
    """Revoke every token of a family."""
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def _find(session: Session, token: str) -> RefreshToken | None:
    return session.execute(
        select(RefreshToken).where(RefreshToken.token_hash == digest(token)).with_for_update()
    ).scalar_one_or_none()


def rotate(session: Session, token: str, now: datetime, settings: AuthSettings) -> tuple[str, str]:
    """Consume ``token`` and return ``(user_id, successor)``.

    Raises :class:`RefreshReused` (after revoking the family; the caller commits) when ``token``
    was already used, :class:`RefreshRefused` when it is unknown, revoked or expired.
    """
    row = _find(session, token)
    if row is None:
        raise RefreshRefused("unknown refresh token")
    if row.revoked_at is not None:
        raise RefreshRefused("the refresh token has been revoked")
    if row.used_at is not None:
        revoke_family(session, row.family_id, now)
        raise RefreshReused("the refresh token was already used; its sessions are revoked")
    if now - aware(row.created_at) > timedelta(seconds=settings.refresh_idle_ttl_s):
        raise RefreshRefused("the refresh token expired from inactivity")
    if now - aware(row.family_started_at) > timedelta(seconds=settings.refresh_max_ttl_s):
        raise RefreshRefused("the session is too old; log in again")
    # Conditional update: of two concurrent refreshes with the same token only one wins.
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    won = getattr(result, "rowcount", 0)
    if won != 1:
        revoke_family(session, row.family_id, now)
        raise RefreshReused("the refresh token was already used; its sessions are revoked")
    return row.user_id, issue(session, row.user_id, now, family=row)


def revoke(session: Session, token: str, now: datetime) -> bool:
    """Log out: revoke ``token``'s family. False when the token is unknown."""
    row = _find(session, token)
    if row is None:
        return False
    revoke_family(session, row.family_id, now)
    return True
