"""Split any batch into valid records and quarantined rows, each with its reasons.

Two lines of defence, both derived from the contract: pydantic parses each row (malformed JSON,
missing, unknown or mistyped fields, impossible dates), then the contract's Great Expectations
suite checks the parsed batch as a frame. Nothing is dropped silently: every input row comes out
either valid or quarantined with its raw payload.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from data_contracts.quarantine import QuarantinedRow

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Split(Generic[M]):
    """The outcome of validating a batch."""

    valid: list[M] = field(default_factory=list)
    quarantined: list[QuarantinedRow] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """``{"valid": n, "quarantined": m}``."""
        return {"valid": len(self.valid), "quarantined": len(self.quarantined)}


def _raw_text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    if isinstance(raw, str):
        return raw
    return json.dumps(raw, sort_keys=True, default=str)


def reasons_of(error: ValidationError) -> list[str]:
    """One readable reason per pydantic error: ``"field.path: message (input ...)"``."""
    out = []
    for e in error.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "<row>"
        shown = repr(e.get("input"))
        out.append(f"{loc}: {e['msg']} (input {shown[:80]})")
    return out


def quarantine(
    dataset: str,
    model: type[BaseModel],
    raw: Any,
    reasons: list[str],
    *,
    source: str | None = None,
    now: datetime | None = None,
) -> QuarantinedRow:
    """A quarantined row for ``raw`` (a dict, JSON text or bytes) with its reasons."""
    text = _raw_text(raw)
    return QuarantinedRow(
        dataset=dataset,
        contract=model.__name__,
        row_hash=hashlib.sha256(text.encode()).hexdigest(),
        raw=text,
        reasons=reasons,
        source=source,
        quarantined_at=now or datetime.now(UTC),
    )


def split(
    model: type[M],
    rows: Iterable[Mapping[str, Any] | str | bytes],
    *,
    dataset: str,
    extra: Mapping[str, Any] | None = None,
    source: str | None = None,
    suite: bool = True,
    now: datetime | None = None,
) -> Split[M]:
    """Validate ``rows`` against ``model``; every row ends up valid or quarantined.

    Parameters
    ----------
    model
        The contract.
    rows
        Dicts, or JSON text / bytes as received (malformed JSON is quarantined too).
    dataset
        The lake dataset the rows are headed for; named in each quarantined row.
    extra
        Fields merged into every row before validation (e.g. ``user_id``, ``synced_at``).
    suite
        Also run the contract's Great Expectations suite over the parsed batch.

    Examples
    --------
    >>> from data_contracts import ReactionEvent
    >>> good = {"event_id": "00000000-0000-0000-0000-000000000001",
    ...         "decision_id": "00000000-0000-0000-0000-000000000002", "user_id": "u1",
    ...         "candidate_id": "task:1", "reaction": "done", "occurred_at": "2026-01-01T00:00:00Z"}
    >>> out = split(ReactionEvent, [good, "{not json", {**good, "reaction": "meh"}],
    ...             dataset="reactions", suite=False)
    >>> out.counts
    {'valid': 1, 'quarantined': 2}
    >>> out.quarantined[1].reasons[0][:9]
    'reaction:'
    """
    stamp = now or datetime.now(UTC)
    valid: list[M] = []
    raws: list[Any] = []
    bad: list[QuarantinedRow] = []
    for raw in rows:
        try:
            payload = json.loads(raw) if isinstance(raw, str | bytes) else raw
        except ValueError as exc:
            bad.append(quarantine(dataset, model, raw, [f"<row>: malformed JSON ({exc})"], source=source, now=stamp))
            continue
        if not isinstance(payload, Mapping):
            bad.append(
                quarantine(
                    dataset,
                    model,
                    raw,
                    [f"<row>: expected an object, got {type(payload).__name__}"],
                    source=source,
                    now=stamp,
                )
            )
            continue
        try:
            valid.append(model.model_validate({**payload, **(extra or {})}))
            raws.append(raw)
        except ValidationError as exc:
            bad.append(quarantine(dataset, model, raw, reasons_of(exc), source=source, now=stamp))
    if suite and valid:
        from data_contracts.arrow import to_table
        from data_contracts.expectations import failing_rows

        failures = failing_rows(model, to_table(model, valid).to_pandas())
        if failures:
            keep = []
            for i, record in enumerate(valid):
                if i in failures:
                    bad.append(quarantine(dataset, model, raws[i], failures[i], source=source, now=stamp))
                else:
                    keep.append(record)
            valid = keep
    return Split(valid=valid, quarantined=bad)
