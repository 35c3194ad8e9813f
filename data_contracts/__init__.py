"""Pydantic models of every record that crosses a boundary, and what is derived from them.

Imports nothing of oO's. Arrow schemas (:mod:`data_contracts.arrow`), JSON Schema files
(:mod:`data_contracts.export`) and Great Expectations suites (:mod:`data_contracts.expectations`)
are derived from these models and never typed out again.
"""

from data_contracts.base import Record
from data_contracts.decisions import (
    Activation,
    CandidateKind,
    Decision,
    ShadowPick,
    TipCandidate,
    TipScore,
)
from data_contracts.events import Reaction, ReactionEvent, RewardEvent
from data_contracts.features import CandidateFeatures, UserContext
from data_contracts.notifications import Channel, DeliveryStatus, NotificationDelivery
from data_contracts.quarantine import DeadLetter, QuarantinedRow
from data_contracts.todoist import (
    TodoistCompletion,
    TodoistProject,
    TodoistRawPayload,
    TodoistSyncTrigger,
    TodoistTask,
)
from data_contracts.training import FeatureSkew, TrainingExample

CONTRACTS: tuple[type[Record], ...] = (
    TodoistTask,
    TodoistProject,
    TodoistCompletion,
    TodoistRawPayload,
    TodoistSyncTrigger,
    ReactionEvent,
    RewardEvent,
    Decision,
    TipScore,
    Activation,
    NotificationDelivery,
    QuarantinedRow,
    DeadLetter,
    TrainingExample,
    FeatureSkew,
)
"""Every record type with a JSON Schema file and a lake dataset."""

__all__ = [
    "Activation",
    "FeatureSkew",
    "CandidateFeatures",
    "TrainingExample",
    "UserContext",
    "CONTRACTS",
    "CandidateKind",
    "Channel",
    "DeadLetter",
    "Decision",
    "DeliveryStatus",
    "NotificationDelivery",
    "QuarantinedRow",
    "Reaction",
    "ReactionEvent",
    "Record",
    "RewardEvent",
    "ShadowPick",
    "TipCandidate",
    "TipScore",
    "TodoistCompletion",
    "TodoistProject",
    "TodoistRawPayload",
    "TodoistSyncTrigger",
    "TodoistTask",
]
