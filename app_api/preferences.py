"""What a user's profile decides: current consents, and whether a moment falls in their quiet hours.

Quiet hours are wall-clock times in the user's IANA timezone, so they follow daylight-saving
changes: 22:00-07:00 in Europe/Berlin is 21:00-06:00 UTC in winter and 20:00-05:00 UTC in summer.
A window whose end is before its start wraps past midnight.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from app_api.tables import Consent, Profile
from oo.tables import User


class Purpose(StrEnum):
    """What a consent is for."""

    llm_tips = "llm_tips"
    analytics = "analytics"
    notifications = "notifications"


def valid_timezone(name: str) -> str:
    """``name`` if it is an IANA timezone; ValueError otherwise.

    Examples
    --------
    >>> valid_timezone("Europe/Berlin")
    'Europe/Berlin'
    """
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"{name!r} is not an IANA timezone")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name!r} is not an IANA timezone") from None
    return name


def in_quiet_hours(at: datetime, tz: str, start: str | None, end: str | None) -> bool:
    """Whether the instant ``at`` is within ``start``-``end`` ("HH:MM") in timezone ``tz``.

    Examples
    --------
    >>> from datetime import UTC
    >>> winter = datetime(2026, 1, 15, 21, 30, tzinfo=UTC)  # 22:30 in Berlin (UTC+1)
    >>> summer = datetime(2026, 7, 15, 21, 30, tzinfo=UTC)  # 23:30 in Berlin (UTC+2)
    >>> [in_quiet_hours(t, "Europe/Berlin", "22:00", "07:00") for t in (winter, summer)]
    [True, True]
    >>> in_quiet_hours(datetime(2026, 7, 15, 4, 30, tzinfo=UTC), "Europe/Berlin", "22:00", "07:00")  # 06:30
    True
    >>> in_quiet_hours(datetime(2026, 1, 15, 6, 30, tzinfo=UTC), "Europe/Berlin", "22:00", "07:00")  # 07:30
    False
    """
    if not start or not end or start == end:
        return False
    local = at.astimezone(ZoneInfo(tz)).time().replace(tzinfo=None)
    lo, hi = time.fromisoformat(start), time.fromisoformat(end)
    if lo < hi:
        return lo <= local < hi
    return local >= lo or local < hi


def current_consents(session: Session, user_id: str) -> dict[Purpose, bool]:
    """Each purpose's current state (the newest change; withdrawn when never given)."""
    rows = session.execute(
        select(Consent.purpose, Consent.granted).where(Consent.user_id == user_id).order_by(Consent.at, Consent.id)
    ).all()
    state = dict.fromkeys(Purpose, False)
    for purpose, granted in rows:
        if purpose in Purpose.__members__:
            state[Purpose(purpose)] = granted
    return state


def profile_of(session: Session, user_id: str) -> Profile:
    """The user's profile row (a default one, not yet added, when they never set it)."""
    return session.get(Profile, user_id) or Profile(user_id=user_id, tip_kinds=[], channels=[])


@dataclass(frozen=True)
class TipSettings:
    """What deciding a user's next tip needs from the app database."""

    timezone: str
    quiet_start: str | None
    quiet_end: str | None
    tip_kinds: list[str]
    llm_consent: bool


_NEWEST_LLM_CONSENT = (
    select(Consent.granted)
    .where(Consent.user_id == User.id, Consent.purpose == Purpose.llm_tips.value)
    .order_by(Consent.at.desc(), Consent.id.desc())
    .limit(1)
    .scalar_subquery()
)
TIP_SETTINGS = (
    select(User.timezone, Profile.quiet_start, Profile.quiet_end, Profile.tip_kinds, _NEWEST_LLM_CONSENT)
    .select_from(User)
    .outerjoin(Profile, Profile.user_id == User.id)
    .where(User.id == bindparam("user_id"))
)
"""One statement, built once: the user's timezone, profile and newest ``llm_tips`` consent."""


def tip_settings(conn: Connection, user_id: str) -> TipSettings | None:
    """The user's :class:`TipSettings` in one statement (``None``: no such user). The same answers
    as the user row, :func:`profile_of` and :func:`current_consents` (the newest change of the
    consent by time, then by insertion; withdrawn when never given), for the tips hot path."""
    row = conn.execute(TIP_SETTINGS, {"user_id": user_id}).first()
    if row is None:
        return None
    timezone, quiet_start, quiet_end, kinds, consent = row
    return TipSettings(timezone, quiet_start, quiet_end, list(kinds or []), bool(consent))
