"""The base of every record that crosses a boundary.

Each contract says which fields form its natural key (the lake deduplicates on them and the
bus deduplicates on the event id) and which timestamp partitions it by date.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    """A frozen, versioned record.

    Examples
    --------
    >>> from datetime import date
    >>> class Ping(Record):
    ...     key_fields = ("ping_id",)
    ...     partition_field = "at"
    ...     ping_id: str
    ...     at: date
    >>> Ping(ping_id="a", at=date(2026, 1, 2)).natural_key
    ('a',)
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    key_fields: ClassVar[tuple[str, ...]] = ()
    """Fields that identify one record; writing the same key twice keeps one row."""
    partition_field: ClassVar[str | None] = None
    """Timestamp or date field whose date names the lake partition."""

    @property
    def natural_key(self) -> tuple[Any, ...]:
        """The values of :attr:`key_fields`."""
        return tuple(getattr(self, f) for f in self.key_fields)
