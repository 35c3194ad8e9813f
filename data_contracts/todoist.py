"""Todoist API v1 records: tasks (items) and projects, as oO stores them.

Field names follow API v1 (``checked``, ``added_at``, ``child_order``, ``responsible_uid``...), not
the SDK's renamed attributes. ``extra="ignore"`` is deliberate on the API-facing sub-objects only:
Todoist adds fields over time; the raw JSON of every task is kept beside the model anyway.

Where Todoist's types are known the fields are strict: pydantic's lax mode would read ``true`` as
priority 1 or ``"false"`` as a boolean, so integers and booleans must arrive as JSON integers and
booleans, and timestamps as RFC 3339 text. A due date's ``timezone`` must be an IANA zone
(checked with :mod:`zoneinfo`) and may only accompany a fixed UTC date-time (``...Z``).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from data_contracts.base import Record

_DUE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?Z?)?$")


def _timestamp_text(value: Any) -> Any:
    """Refuse numbers where an RFC 3339 timestamp belongs (lax mode reads them as Unix time)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("a timestamp must be RFC 3339 text, not a number")
    return value


def iana_zone(value: str | None) -> str | None:
    """``value`` when it names an IANA time zone :mod:`zoneinfo` knows (``None`` passes).

    Examples
    --------
    >>> iana_zone("Europe/Lisbon")
    'Europe/Lisbon'
    >>> iana_zone("Mars/Olympus_Mons")
    Traceback (most recent call last):
    ...
    ValueError: 'Mars/Olympus_Mons' is not an IANA time zone
    """
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone") from None
    return value


class Due(BaseModel):
    """A task's due date: ``date`` is ``YYYY-MM-DD``, floating ``...THH:MM:SS`` or UTC ``...Z``.

    Examples
    --------
    >>> Due(date="2026-03-01T09:00:00Z", timezone="Europe/Lisbon", is_recurring=False).has_time
    True
    >>> Due(date="2026-03-01").has_time
    False
    >>> Due(date="2026-03-01T09:00:00", timezone="Europe/Lisbon")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for Due
    ...
    """

    model_config = ConfigDict(frozen=True, extra="ignore")
    date: str
    timezone: str | None = None
    string: str | None = None
    lang: str | None = None
    is_recurring: bool = Field(default=False, strict=True)

    @field_validator("timezone")
    @classmethod
    def _iana(cls, v: str | None) -> str | None:
        return iana_zone(v)

    @model_validator(mode="after")
    def _zone_only_with_utc_time(self) -> Due:
        if self.timezone is not None and not self.date.endswith("Z"):
            kind = "a floating date-time" if self.has_time else "a date without a time"
            raise ValueError(f"due.timezone {self.timezone!r} set on {kind} ({self.date!r}); only ...Z dates carry one")
        return self

    @field_validator("date")
    @classmethod
    def _date_format(cls, v: str) -> str:
        if not _DUE_DATE.match(v):
            raise ValueError(f"due.date {v!r} is not YYYY-MM-DD[THH:MM:SS[Z]]")
        datetime.fromisoformat(v.replace("Z", "+00:00"))  # raises on impossible dates
        return v

    @property
    def has_time(self) -> bool:
        """Whether the due date carries a time of day."""
        return "T" in self.date


class Deadline(BaseModel):
    """A task's deadline (a date, no time)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    date: date
    lang: str | None = None


class Duration(BaseModel):
    """How long a task is expected to take."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    amount: int = Field(gt=0, strict=True)
    unit: Literal["minute", "day"]


class TodoistTask(Record):
    """One Todoist task (an "item") as seen by one user's sync at ``synced_at``.

    Examples
    --------
    >>> from datetime import UTC
    >>> t = TodoistTask(user_id="u1", id="6X7rM8997g3RQmvh", project_id="p1", content="Call mum",
    ...                 priority=4, added_at=datetime(2026, 1, 1, tzinfo=UTC),
    ...                 synced_at=datetime(2026, 1, 2, tzinfo=UTC))
    >>> t.natural_key[:2]
    ('u1', '6X7rM8997g3RQmvh')
    """

    key_fields = ("user_id", "id", "synced_at")
    partition_field = "synced_at"

    schema_version: Literal[1] = 1
    user_id: str = Field(min_length=1, description="oO's user id (not Todoist's)")
    id: str = Field(min_length=1)
    project_id: str = Field(min_length=1)
    section_id: str | None = None
    parent_id: str | None = None
    content: str = Field(min_length=1)
    description: str = ""
    labels: list[str] = []
    priority: int = Field(ge=1, le=4, strict=True, description="4 = very urgent (p1 in the app), 1 = normal")
    due: Due | None = None
    deadline: Deadline | None = None
    duration: Duration | None = None
    child_order: int = Field(default=0, strict=True)
    day_order: int | None = Field(default=None, strict=True)
    checked: bool = Field(default=False, strict=True)
    is_deleted: bool = Field(default=False, strict=True)
    added_at: AwareDatetime
    updated_at: AwareDatetime | None = None
    completed_at: AwareDatetime | None = None
    synced_at: AwareDatetime = Field(description="when oO observed this state")

    _timestamps = field_validator("added_at", "updated_at", "completed_at", "synced_at", mode="before")(_timestamp_text)


class TodoistProject(Record):
    """One Todoist project as seen by one user's sync."""

    key_fields = ("user_id", "id", "synced_at")
    partition_field = "synced_at"

    schema_version: Literal[1] = 1
    user_id: str = Field(min_length=1)
    id: str = Field(min_length=1)
    name: str
    parent_id: str | None = None
    color: str | None = None
    is_archived: bool = Field(default=False, strict=True)
    is_deleted: bool = Field(default=False, strict=True)
    is_favorite: bool = Field(default=False, strict=True)
    is_inbox_project: bool = Field(default=False, strict=True)
    child_order: int = Field(default=0, strict=True)
    synced_at: AwareDatetime

    _timestamps = field_validator("synced_at", mode="before")(_timestamp_text)


class TodoistCompletion(Record):
    """One completion of a task (a recurring task completes many times)."""

    key_fields = ("user_id", "task_id", "completed_at")
    partition_field = "completed_at"

    schema_version: Literal[1] = 1
    user_id: str = Field(min_length=1)
    task_id: str = Field(min_length=1)
    project_id: str | None = None
    content: str = ""
    completed_at: AwareDatetime
    is_recurring: bool = Field(default=False, strict=True)

    _timestamps = field_validator("completed_at", mode="before")(_timestamp_text)


class TodoistRawPayload(Record):
    """One object exactly as the Todoist API sent it (the SDK and the contracts drop fields).

    ``resource`` is the API's name for the list it came in (``items``, ``projects``,
    ``completed``, ``archived_projects``); ``object_id`` is ``None`` when the payload had no
    readable id (malformed input is kept too).

    Examples
    --------
    >>> from datetime import UTC
    >>> p = TodoistRawPayload(user_id="u1", resource="items", object_id="t1", payload_hash="ab",
    ...                       payload='{"id": "t1"}', synced_at=datetime(2026, 1, 2, tzinfo=UTC))
    >>> p.natural_key
    ('u1', 'items', 'ab')
    """

    key_fields = ("user_id", "resource", "payload_hash")
    partition_field = "synced_at"

    schema_version: Literal[1] = 1
    user_id: str = Field(min_length=1)
    resource: str = Field(min_length=1)
    object_id: str | None = None
    payload_hash: str = Field(min_length=1, description="sha256 of payload; the same payload twice is one row")
    payload: str = Field(description="the JSON text as received")
    synced_at: AwareDatetime


class TodoistSyncTrigger(Record):
    """A request to sync one user now, raised by a verified Todoist webhook (a notification only:
    the sync itself reads the API)."""

    key_fields = ("delivery_id",)
    partition_field = "received_at"

    schema_version: Literal[1] = 1
    delivery_id: str = Field(min_length=1, description="X-Todoist-Delivery-ID (reused on redelivery)")
    user_id: str = Field(min_length=1, description="oO's user id")
    todoist_user_id: str = Field(min_length=1)
    event_name: str = Field(min_length=1)
    triggered_at: AwareDatetime | None = None
    received_at: AwareDatetime
