"""Notification deliveries: one row per attempt to tell a user about a tip."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, Field

from data_contracts.base import Record


class Channel(StrEnum):
    """How a notification reaches the user."""

    email = "email"
    push = "push"
    webhook = "webhook"


class DeliveryStatus(StrEnum):
    """Where a delivery stands."""

    queued = "queued"
    sent = "sent"
    failed = "failed"
    suppressed = "suppressed"


class NotificationDelivery(Record):
    """One delivery attempt of a notification."""

    key_fields = ("delivery_id", "attempt")
    partition_field = "created_at"

    schema_version: Literal[1] = 1
    delivery_id: UUID
    user_id: str = Field(min_length=1)
    decision_id: UUID | None = None
    channel: Channel
    status: DeliveryStatus
    attempt: int = Field(ge=1)
    created_at: AwareDatetime
    sent_at: AwareDatetime | None = None
    error: str | None = None
