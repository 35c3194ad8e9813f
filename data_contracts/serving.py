"""The serving API's request and response bodies: the decision protocol over HTTP.

Names follow oO's decision protocol and, where the two overlap, Azure Personalizer's Rank /
Reward API (``event_id``, ``ranking`` with every candidate's probability, ``reward_action_id``,
``excluded_ids``, ``defer_activation``), so that a Personalizer-compatible surface is a thin
adapter. Serving (BentoML) takes and returns these; the app API's serving client sends and
reads them. They are bodies, not lake records: the decision itself is logged as
:class:`data_contracts.decisions.Decision`.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from data_contracts.decisions import MAX_CANDIDATES, CandidateKind, TipCandidate
from data_contracts.events import Reaction


class RankRequest(BaseModel):
    """Ask for one decision: the next tip for ``user_id``.

    Serving gathers the candidates itself (the user's open Todoist tasks and, with
    ``llm_consent``, LLM tips); ``candidates`` adds caller-supplied ones (at most
    :data:`MAX_CANDIDATES` in all). The same ``event_id`` with the same request chooses the same
    candidate.

    Examples
    --------
    >>> RankRequest(user_id="u1").defer_activation
    False
    >>> RankRequest(user_id="u1", candidates=[]).llm_consent
    False
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    user_id: str = Field(min_length=1, max_length=256)
    event_id: UUID | None = Field(default=None, description="the decision id; serving makes a UUID when absent")
    candidates: list[TipCandidate] = Field(default=[], max_length=MAX_CANDIDATES)
    excluded_ids: list[str] = Field(default=[], max_length=MAX_CANDIDATES, description="never chosen (probability 0)")
    defer_activation: bool = Field(default=False, description="learn only once `activate` says the user saw it")
    llm_consent: bool = Field(default=False, description="the user consented to LLM-written tips")
    context: dict[str, float] = Field(default={}, description="extra context features, added to the feature store's")
    include_todoist: bool = Field(default=True, description="add the user's open Todoist tasks to the candidates")
    decided_at: AwareDatetime | None = Field(
        default=None,
        description="the decision's time, for simulations only: refused unless serving runs with "
        "OO_SERVING__SIMULATED_CLOCK; absent: serving's clock",
    )


class RankedCandidate(BaseModel):
    """One candidate in a ranking, with the probability the policy gave it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str
    probability: float = Field(ge=0.0, le=1.0)
    kind: CandidateKind
    content: str


class RankResponse(BaseModel):
    """One decision: the ranking, the chosen candidate, and who chose it.

    ``reward_action_id`` is None only for an empty decision (no candidates), with ``reason``
    saying why.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_id: UUID
    user_id: str
    decided_at: AwareDatetime
    ranking: list[RankedCandidate]
    reward_action_id: str | None
    chosen: TipCandidate | None
    propensity: float | None = Field(default=None, gt=0.0, le=1.0)
    excluded_ids: list[str] = []
    policy: str
    policy_version: str
    defer_activation: bool = False
    reason: str | None = None


class RewardRequest(BaseModel):
    """A user's reaction to the candidate chosen by decision ``event_id``.

    ``reaction_id`` is the idempotency key: the same reaction sent twice is counted once.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_id: UUID = Field(description="the decision id")
    user_id: str = Field(min_length=1, max_length=256, description="must be the user the decision was made for")
    reaction: Reaction
    reaction_id: UUID
    occurred_at: AwareDatetime | None = None


class RewardResponse(BaseModel):
    """What became of a reward."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_id: UUID
    reward: float
    status: Literal["accepted", "duplicate", "late"]


class ActivateRequest(BaseModel):
    """The user saw a deferred decision's tip: its reward may now be learned from."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_id: UUID
    user_id: str = Field(min_length=1, max_length=256)


class UserRequest(BaseModel):
    """Names a user: the body of serving's privacy endpoints (``user_state``, ``forget``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    user_id: str = Field(min_length=1, max_length=256)


class UserStateResponse(BaseModel):
    """Everything serving holds about one user (for an export): decisions and rewards it keeps
    in memory or in its learner state, as plain JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    user_id: str
    state: dict[str, object] = {}


class ForgetResponse(BaseModel):
    """What serving removed of one user: how many items of its state held the user."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    user_id: str
    removed: int = Field(ge=0)
