"""The features the tip policy reads: the user's context and each candidate's features.

These records are the contract between the feature store (Feast feature service
``tip_policy_v1``) and the policy: a test checks that the feature service lists exactly these
fields, so the two cannot drift apart. Every group carries a ``*_known`` flag: a user or task the
feature store has never seen gets the documented defaults with the flag at ``0.0``, so the policy
can tell a default from a real zero.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WINDOWS = (1, 7, 28)
"""Days over which reaction counters and rates are computed."""
HOUR_BUCKETS = ("night", "morning", "afternoon", "evening")
"""Hour-of-day buckets: 0-5, 6-11, 12-17, 18-23 in the user's timezone."""


class UserContext(BaseModel):
    """What the policy knows about the user at decision time (all numeric, defaults documented).

    Examples
    --------
    >>> UserContext().context_known, UserContext().hours_since_last_reaction
    (0.0, 720.0)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1] = 1
    context_known: float = Field(default=0.0, description="1.0 when the feature store knew this user")
    # reaction counters and rates, overall
    reactions_1d: float = 0.0
    reactions_7d: float = 0.0
    reactions_28d: float = 0.0
    done_rate_1d: float = 0.0
    done_rate_7d: float = 0.0
    done_rate_28d: float = 0.0
    snooze_rate_1d: float = 0.0
    snooze_rate_7d: float = 0.0
    snooze_rate_28d: float = 0.0
    dismiss_rate_1d: float = 0.0
    dismiss_rate_7d: float = 0.0
    dismiss_rate_28d: float = 0.0
    # by tip kind, over 28 days
    done_rate_28d_todoist_task: float = 0.0
    done_rate_28d_llm_tip: float = 0.0
    dismiss_rate_28d_todoist_task: float = 0.0
    dismiss_rate_28d_llm_tip: float = 0.0
    # by hour-of-day bucket, over 28 days
    done_rate_28d_night: float = 0.0
    done_rate_28d_morning: float = 0.0
    done_rate_28d_afternoon: float = 0.0
    done_rate_28d_evening: float = 0.0
    hours_since_last_reaction: float = Field(default=720.0, description="capped at 30 days")
    # rhythm from the completion history
    completions_per_day_28d: float = 0.0
    usual_active_hour: float = Field(default=12.0, ge=0.0, lt=24.0)
    weekend_share_28d: float = Field(default=2 / 7, ge=0.0, le=1.0)
    # computed at request time in the user's timezone
    hour_of_day: float = Field(default=12.0, ge=0.0, lt=24.0)
    weekday: float = Field(default=0.0, ge=0.0, le=6.0, description="Monday = 0")


class CandidateFeatures(BaseModel):
    """What the policy knows about one candidate (a Todoist task or an LLM tip).

    Examples
    --------
    >>> CandidateFeatures(priority=4.0).priority
    4.0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1] = 1
    task_known: float = Field(default=0.0, description="1.0 when the feature store knew this task")
    is_llm_tip: float = 0.0
    priority: float = Field(default=1.0, ge=1.0, le=4.0, description="4 = very urgent (p1 in the app)")
    age_days: float = 0.0
    has_due_date: float = 0.0
    has_due_time: float = 0.0
    is_recurring: float = 0.0
    has_deadline: float = 0.0
    days_to_deadline: float = Field(default=365.0, description="365 when there is no deadline")
    duration_minutes: float = Field(default=0.0, description="0 when unknown")
    label_count: float = 0.0
    content_length: float = 0.0
    times_snoozed: float = 0.0
    times_shown: float = 0.0
    # computed at request time
    hours_until_due: float = Field(default=720.0, description="capped at +-720 h; 720 when no due date")
    is_overdue: float = 0.0
