"""A logged decision joined with its reward and its point-in-time features: one training row."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, Field

from data_contracts.base import Record
from data_contracts.decisions import TipCandidate
from data_contracts.events import Reaction


class TrainingExample(Record):
    """One decision as the policy saw it, with the reward it earned.

    ``context`` and each candidate's ``features`` hold the point-in-time-correct values as of
    ``decided_at`` (never values that changed later). ``reaction`` is ``None`` and
    ``rewarded`` is ``False`` when no reaction arrived within the reward window: ``reward`` is
    then the configured default. Late reactions are never in a training row.
    """

    key_fields = ("decision_id",)
    partition_field = "decided_at"

    schema_version: Literal[1] = 1
    decision_id: UUID
    user_id: str = Field(min_length=1)
    decided_at: AwareDatetime
    candidates: list[TipCandidate] = Field(min_length=1)
    chosen_id: str
    propensity: float = Field(gt=0.0, le=1.0)
    policy: str
    policy_version: str
    context: dict[str, float] = {}
    reaction: Reaction | None = None
    rewarded: bool
    reward: float = Field(ge=0.0, le=1.0)


class FeatureSkew(Record):
    """Train/serve skew of one feature over the decisions a feature-pipeline run joined.

    ``mismatched`` of ``compared`` logged values (what serving saw) differed from the
    point-in-time offline value for the same moment. Training sums these over its window and
    logs the rate per feature to MLflow.
    """

    key_fields = ("as_of", "feature")
    partition_field = "as_of"

    schema_version: Literal[1] = 1
    as_of: AwareDatetime
    feature: str = Field(min_length=1)
    compared: int = Field(ge=1)
    mismatched: int = Field(ge=0)
    rate: float = Field(ge=0.0, le=1.0)
