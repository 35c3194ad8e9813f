"""What users do with a tip, and the reward the learner gets for it."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, Field

from data_contracts.base import Record


class Reaction(StrEnum):
    """A user's reaction to a tip."""

    done = "done"
    snooze = "snooze"
    dismiss = "dismiss"


class ReactionEvent(Record):
    """A user's reaction to the tip chosen by a decision.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from uuid import UUID
    >>> e = ReactionEvent(event_id=UUID(int=1), decision_id=UUID(int=2), user_id="u1",
    ...                   candidate_id="task:42", reaction="done",
    ...                   occurred_at=datetime(2026, 5, 1, 8, tzinfo=UTC))
    >>> e.reaction is Reaction.done
    True
    """

    key_fields = ("event_id",)
    partition_field = "occurred_at"

    schema_version: Literal[1] = 1
    event_id: UUID
    decision_id: UUID
    user_id: str = Field(min_length=1)
    candidate_id: str = Field(min_length=1)
    reaction: Reaction
    occurred_at: AwareDatetime


class RewardEvent(Record):
    """A reaction turned into a reward for the decision it answers.

    ``late`` rewards (outside the reward window) are logged but never learned from.
    """

    key_fields = ("event_id",)
    partition_field = "occurred_at"

    schema_version: Literal[1] = 1
    event_id: UUID
    decision_id: UUID
    user_id: str = Field(min_length=1)
    reaction: Reaction
    reward: float = Field(ge=0.0, le=1.0)
    occurred_at: AwareDatetime
    late: bool = False
