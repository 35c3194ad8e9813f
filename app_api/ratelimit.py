"""Login rate limiting: at most ``login_max_failures`` failed logins per email and per client
address within ``login_window_s``; over it, 429 with ``Retry-After`` until the oldest failure
leaves the window. Failures live in the app database, so every worker sees them; the keys are
hashes, not the email or address themselves.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app_api.tables import LoginFailure, aware
from oo.settings import AuthSettings


class TooManyAttempts(Exception):
    """Too many failed logins; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after} s")
        self.retry_after = retry_after


def keys(email: str, address: str | None) -> list[str]:
    """The rate-limit keys of a login attempt."""
    out = [hashlib.sha256(b"email\x00" + email.strip().lower().encode()).hexdigest()]
    if address:
        out.append(hashlib.sha256(b"addr\x00" + address.encode()).hexdigest())
    return out


def check(session: Session, attempt_keys: Sequence[str], now: datetime, settings: AuthSettings) -> None:
    """Raise :class:`TooManyAttempts` when any key is over its limit."""
    since = now - timedelta(seconds=settings.login_window_s)
    for key in attempt_keys:
        count, oldest = session.execute(
            select(func.count(), func.min(LoginFailure.at)).where(LoginFailure.key == key, LoginFailure.at > since)
        ).one()
        if count >= settings.login_max_failures:
            wait = (aware(oldest) + timedelta(seconds=settings.login_window_s) - now).total_seconds()
            raise TooManyAttempts(max(1, math.ceil(wait)))


def record_failure(session: Session, attempt_keys: Sequence[str], now: datetime, settings: AuthSettings) -> None:
    """Remember a failed login (and forget failures older than the window)."""
    session.execute(delete(LoginFailure).where(LoginFailure.at <= now - timedelta(seconds=settings.login_window_s)))
    session.add_all(LoginFailure(key=k, at=now) for k in attempt_keys)


def clear(session: Session, email_key: str) -> None:
    """Forget an email's failures after a successful login."""
    session.execute(delete(LoginFailure).where(LoginFailure.key == email_key))
