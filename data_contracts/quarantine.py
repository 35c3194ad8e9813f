"""Rows that broke their contract, kept with the reason so nothing is lost."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from data_contracts.base import Record


class QuarantinedRow(Record):
    """A row refused by validation: its raw payload and every reason it was refused.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> q = QuarantinedRow(dataset="todoist_tasks", contract="TodoistTask", row_hash="ab12",
    ...                    raw='{"id": 1}', reasons=["content: Field required"], source="u1",
    ...                    quarantined_at=datetime(2026, 1, 1, tzinfo=UTC))
    >>> q.natural_key
    ('todoist_tasks', 'u1', 'ab12')
    """

    key_fields = ("dataset", "source", "row_hash")
    partition_field = "quarantined_at"

    schema_version: Literal[1] = 1
    dataset: str
    contract: str
    row_hash: str = Field(description="sha256 of the raw payload; the same bad row from the same source is one row")
    raw: str = Field(description="the payload exactly as received (JSON text)")
    reasons: list[str] = Field(min_length=1)
    source: str | None = Field(default=None, description="where the row came from (for Todoist: oO's user id)")
    quarantined_at: AwareDatetime


class DeadLetter(Record):
    """A bus message a consumer could not process: malformed, or failed every delivery."""

    key_fields = ("topic", "consumer", "message_hash")
    partition_field = "dead_at"

    schema_version: Literal[1] = 1
    topic: str
    consumer: str
    message_hash: str
    raw: str = Field(description="the message body as received")
    reason: str
    deliveries: int = Field(ge=1)
    dead_at: AwareDatetime
