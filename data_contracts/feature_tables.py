"""Rows of the feature tables the features DAG computes (DuckDB over the lake) and Feast reads.

Each row says what was true about one entity from ``event_timestamp`` on; ``created`` is when the
row was computed (Feast's tie-breaker). These models are the tables' contracts: the Feast feature
views take their schemas from them and the Great Expectations suite that gates materialization
is derived from them (:func:`data_contracts.expectations.failing_rows`).

Timestamps of due dates are Unix seconds. A due date without a timezone ("floating", or a bare
date) is stored as its wall-clock time read as if it were UTC, with ``due_floating = 1``; a bare
date is due at the end of that day.
"""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, create_model

from data_contracts.decisions import CandidateKind
from data_contracts.features import HOUR_BUCKETS, WINDOWS

REACTIONS = ("done", "snooze", "dismiss")
KINDS = tuple(k.value for k in CandidateKind)


class FeatureRow(BaseModel):
    """The timestamps every feature table row carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_timestamp: AwareDatetime
    created: AwareDatetime


_Flag = Field(ge=0.0, le=1.0)


class TaskAttributesRow(FeatureRow):
    """A task as one Todoist snapshot showed it (one row per snapshot, plus the latest state)."""

    task_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    project_id: str = Field(min_length=1)
    priority: float = Field(ge=1.0, le=4.0)
    added_ts: float
    has_due_date: float = _Flag
    has_due_time: float = _Flag
    is_recurring: float = _Flag
    due_ts: float | None = None
    due_floating: float = _Flag
    has_deadline: float = _Flag
    deadline_day: float | None = Field(default=None, description="days since 1970-01-01")
    duration_minutes: float = Field(ge=0.0)
    label_count: float = Field(ge=0.0)
    content_length: float = Field(ge=0.0)


class TaskEngagementRow(FeatureRow):
    """How often a task was shown (chosen by a decision) and snoozed, cumulatively."""

    task_id: str = Field(min_length=1)
    times_shown: float = Field(ge=0.0)
    times_snoozed: float = Field(ge=0.0)


def _reaction_fields() -> dict[str, Any]:
    count = (float, Field(ge=0.0))
    rate = (float, Field(ge=0.0, le=1.0))
    fields: dict[str, Any] = {"user_id": (str, Field(min_length=1))}
    for w in WINDOWS:
        fields[f"reactions_{w}d"] = count
        for r in REACTIONS:
            fields[f"{r}_{w}d"] = count
    for w in WINDOWS:
        for r in REACTIONS:
            fields[f"{r}_rate_{w}d"] = rate
    for group in (*KINDS, *HOUR_BUCKETS):
        fields[f"reactions_28d_{group}"] = count
        fields[f"done_28d_{group}"] = count
        fields[f"dismiss_28d_{group}"] = count
    for group in (*KINDS, *HOUR_BUCKETS):
        fields[f"done_rate_28d_{group}"] = rate
        fields[f"dismiss_rate_28d_{group}"] = rate
    fields["last_reaction_ts"] = (float, Field(description="Unix seconds of the latest reaction"))
    return fields


UserReactionsRow: type[FeatureRow] = create_model(  # written out by rule, not by hand: 60 fields
    "UserReactionsRow",
    __base__=FeatureRow,
    __doc__="A user's reaction counters and rates over 1, 7 and 28 days, as of ``event_timestamp``.",
    **_reaction_fields(),
)


class UserRhythmRow(FeatureRow):
    """A user's rhythm from the completion history of the 28 days before ``event_timestamp``."""

    user_id: str = Field(min_length=1)
    completions_per_day_28d: float = Field(ge=0.0)
    usual_active_hour: float = Field(ge=0.0, lt=24.0)
    weekend_share_28d: float = Field(ge=0.0, le=1.0)


FEATURE_TABLES: dict[str, type[FeatureRow]] = {
    "task_attributes": TaskAttributesRow,
    "task_engagement": TaskEngagementRow,
    "user_reactions": UserReactionsRow,
    "user_rhythm": UserRhythmRow,
}
"""Every feature table and the contract of its rows."""

KEYS = {"event_timestamp", "created", "task_id", "user_id"}


def feature_columns(table: str) -> list[str]:
    """The feature columns of ``table`` (everything but keys and timestamps), in order.

    Examples
    --------
    >>> feature_columns("task_engagement")
    ['times_shown', 'times_snoozed']
    """
    return [n for n in FEATURE_TABLES[table].model_fields if n not in KEYS]
