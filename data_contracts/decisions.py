"""Tip candidates, the decisions that rank them, and the per-candidate scores they log."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Self
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from data_contracts.base import Record

MAX_CANDIDATES = 200
"""A rank request with more candidates than this is refused."""


class CandidateKind(StrEnum):
    """Where a tip comes from."""

    todoist_task = "todoist_task"
    llm_tip = "llm_tip"


class TipCandidate(BaseModel):
    """One thing oO could suggest next.

    Examples
    --------
    >>> c = TipCandidate(candidate_id="task:42", content="Call mum", kind="todoist_task",
    ...                  source="todoist", features={"priority": 4.0})
    >>> c.kind is CandidateKind.todoist_task
    True
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1] = 1
    candidate_id: str = Field(min_length=1)
    content: str = Field(min_length=1)
    kind: CandidateKind
    source: str = Field(min_length=1, description="todoist, or the LLM provider alias")
    task_id: str | None = None
    llm_model: str | None = None
    prompt_version: str | None = None
    features: dict[str, float] = {}


class ShadowPick(BaseModel):
    """What a shadow policy would have chosen for the same decision."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    policy: str
    policy_version: str
    chosen_id: str
    propensity: float = Field(gt=0.0, le=1.0)


class Decision(Record):
    """One ranking served to a user, logged before the answer leaves the service.

    Without ``propensity`` (the probability with which the policy chose ``chosen_id``) no
    off-policy evaluation is possible, so it is required and strictly positive.
    """

    key_fields = ("decision_id",)
    partition_field = "decided_at"

    schema_version: Literal[1] = 1
    decision_id: UUID
    user_id: str = Field(min_length=1)
    decided_at: AwareDatetime
    candidates: list[TipCandidate] = Field(min_length=1, max_length=MAX_CANDIDATES)
    ranked_ids: list[str] = Field(min_length=1)
    chosen_id: str
    propensity: float = Field(gt=0.0, le=1.0)
    policy: str
    policy_version: str
    shadow: list[ShadowPick] = []
    features: dict[str, float] = Field(default={}, description="context features the policy saw")
    defer_activation: bool = Field(
        default=False, description="learned from only once an `Activation` says the user saw it"
    )

    @model_validator(mode="after")
    def _chosen_is_a_candidate(self) -> Self:
        ids = {c.candidate_id for c in self.candidates}
        if self.chosen_id not in ids:
            raise ValueError(f"chosen_id {self.chosen_id!r} is not among the candidates")
        if set(self.ranked_ids) != ids or len(self.ranked_ids) != len(ids):
            raise ValueError("ranked_ids must be a permutation of the candidate ids")
        return self


class TipScore(Record):
    """One row per (decision, candidate, policy): what each policy thought of each candidate."""

    key_fields = ("decision_id", "candidate_id", "policy")
    partition_field = "decided_at"

    schema_version: Literal[1] = 1
    decision_id: UUID
    user_id: str = Field(min_length=1)
    decided_at: AwareDatetime
    candidate_id: str
    kind: CandidateKind
    policy: str
    policy_version: str
    score: float
    probability: float = Field(ge=0.0, le=1.0)
    features: dict[str, float] = {}
    latency_ms: float = Field(ge=0.0)
    prompt_version: str | None = None
    llm_model: str | None = None


class Activation(Record):
    """A deferred decision's tip reached the user: its reward may now be learned from.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from uuid import UUID
    >>> Activation(decision_id=UUID(int=1), user_id="u1", activated_at=datetime(2026, 5, 1, tzinfo=UTC)).natural_key
    (UUID('00000000-0000-0000-0000-000000000001'),)
    """

    key_fields = ("decision_id",)
    partition_field = "activated_at"

    schema_version: Literal[1] = 1
    decision_id: UUID
    user_id: str = Field(min_length=1)
    activated_at: AwareDatetime
