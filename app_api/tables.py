"""The app API's own tables (SQLAlchemy 2, typed), on the shared declarative base of ``oo.tables``.

Every table here is created by the Alembic chain in ``oo/migrations`` (revision 0003), and every
row that concerns a user references ``users.id`` with ``ON DELETE CASCADE`` except the audit log,
which holds no personal data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from oo.tables import Base, utcnow


def aware(at: datetime) -> datetime:
    """``at`` with UTC attached when the database dropped the offset (SQLite does)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _user_fk() -> Any:
    return ForeignKey("users.id", ondelete="CASCADE")


WEBHOOK_URL_MAX = 2048
"""The longest webhook URL ``profiles`` holds (pydantic's ``HttpUrl`` alone allows 2,083)."""


class Profile(Base):
    """A user's preferences: quiet hours (local wall-clock times), tip kinds, channels."""

    __tablename__ = "profiles"
    user_id: Mapped[str] = mapped_column(_user_fk(), primary_key=True)
    quiet_start: Mapped[str | None] = mapped_column(String(5))
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    tip_kinds: Mapped[list[str]] = mapped_column(JSON, default=list)
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)
    webhook_url: Mapped[str | None] = mapped_column(String(WEBHOOK_URL_MAX))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Consent(Base):
    """One change of one consent: given (``granted``) or withdrawn, and when. The newest row per
    purpose is the current state; older rows are the history."""

    __tablename__ = "consents"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(_user_fk(), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RefreshToken(Base):
    """A refresh token, stored as its SHA-256 only, in a family that starts at a login.

    Using a token rotates it (``used_at`` set, a successor issued in the same family); presenting
    a used token again revokes the whole family (RFC 9700 §4.14.2).
    """

    __tablename__ = "refresh_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(_user_fk(), index=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginFailure(Base):
    """A failed login, keyed by a hash of the email or of the client address (not the value)."""

    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class ServedDecision(Base):
    """A decision the app showed (or notified) a user: what reactions are checked against."""

    __tablename__ = "served_decisions"
    decision_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(_user_fk(), index=True)
    candidate_id: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(32))
    content: Mapped[str] = mapped_column(Text)
    via: Mapped[str] = mapped_column(String(16))
    served_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Reaction(Base):
    """A user's reaction to a served decision; ``reaction_id`` is the idempotency key."""

    __tablename__ = "reactions"
    reaction_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("served_decisions.decision_id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(_user_fk(), index=True)
    reaction: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxMessage(Base):
    """A message to deliver (serving's reward, the bus) written in the transaction that caused
    it; the relay delivers it until acknowledged. ``message_id`` is its idempotency key.
    ``status``: ``pending``, ``delivered``, or ``dead`` (refused as invalid; retrying cannot help)."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(80), unique=True)
    destination: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(_user_fk(), index=True)
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    last_error: Mapped[str | None] = mapped_column(Text)


class Delivery(Base):
    """A notification of one tip to one user on one channel, with its latest status."""

    __tablename__ = "deliveries"
    delivery_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(_user_fk(), index=True)
    decision_id: Mapped[str] = mapped_column(String(36))
    candidate_id: Mapped[str] = mapped_column(String(256))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)


class AuthState(Base):
    """An authorization flow in progress (Google sign-in, connecting Todoist): its ``state``, and
    for sign-in the PKCE verifier and nonce; for connecting, the user who started it. Used once."""

    __tablename__ = "auth_states"
    state: Mapped[str] = mapped_column(String(128), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(_user_fk(), index=True)
    code_verifier: Mapped[str | None] = mapped_column(String(128))
    nonce: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """Something done to the data as a whole (an account erased), without personal data."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
