"""App database tables shared by more than one deployable (SQLAlchemy 2, typed).

The app API's own tables will join these; the ones here are needed below the deployables too:
users and their integrations (the Todoist sync DAG reads tokens and cursors) and the bus's
record of processed events (consumers deduplicate on it).
Every change here comes with an Alembic migration in ``oo/migrations/versions``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, LargeBinary, MetaData, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Timezone-aware now, for column defaults."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints the same on
    SQLite and PostgreSQL."""

    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    """A person using oO. ``is_demo`` marks the synthetic users of ``make run`` (their tokens are
    the fake server's and are never sent anywhere else)."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    oidc_subject: Mapped[str | None] = mapped_column(String(320), unique=True)
    integrations: Mapped[list[Integration]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class Integration(Base):
    """A user's connection to an outside service (Todoist), with its encrypted token.

    ``status`` is ``active``, ``needs_reauth`` (the service refused the token) or ``revoked``.
    ``cursor`` is the service's incremental-sync position (Todoist's ``sync_token``).
    ``external_id`` is the user's id at the service (webhooks name users by it).
    ``api_base_url``, when set, is the only API the token may be sent to (a demo user's fake
    server); unset means the configured one (``OO_TODOIST__BASE_URL``).
    """

    __tablename__ = "integrations"
    __table_args__ = (UniqueConstraint("user_id", "provider"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    token_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(32), default="active")
    cursor: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(64), index=True)
    last_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    api_base_url: Mapped[str | None] = mapped_column(String(300))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    user: Mapped[User] = relationship(back_populates="integrations")


DELIVERY_ID_MAX = 128
"""The longest ``X-Todoist-Delivery-ID`` a sync request holds (a longer one is refused)."""


class SyncRequest(Base):
    """A durable request to sync one user's Todoist (a verified webhook wrote it); the sync marks
    it processed once that user's sync ran, so a crash in between leaves it pending."""

    __tablename__ = "todoist_sync_requests"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(DELIVERY_ID_MAX), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    event_name: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)


class ProcessedEvent(Base):
    """An event a bus consumer has handled; redeliveries of it are skipped."""

    __tablename__ = "processed_events"
    consumer: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
