"""Training sets: logged decisions joined with their rewards and with point-in-time features.

A decision becomes a :class:`~data_contracts.TrainingExample` once its reward window has closed:

- its reward is that of the **first** reward event for it inside the window
  (``decided_at <= occurred_at <= decided_at + window``) that is not flagged ``late``; a second
  reward for the same decision (the same reaction sent twice, or a change of mind) counts once;
- with no reward in the window it gets the configured **default reward**, ``rewarded = False``;
- late rewards are never in a training row;
- its context and candidate features are what the offline store says was true **as of**
  ``decided_at`` (Feast's point-in-time join over the feature tables), never later values.

Rows already in the lake's ``training_examples`` are not rebuilt (the lake deduplicates by
``decision_id`` anyway), so running it again adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from data_contracts import CandidateFeatures, Decision, Reaction, RewardEvent, TrainingExample, UserContext
from data_contracts.arrow import from_table
from models.features.online import NO_TASK, features_dict, llm_tip_features, records_from_row
from models.features.skew import compare
from oo.lake import Lake
from oo.settings import RewardSettings

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = ["Reward", "build_training_examples", "historical_features", "join_rewards", "pending_decisions"]


@dataclass(frozen=True)
class Reward:
    """The outcome of one decision."""

    reaction: Reaction | None
    rewarded: bool
    reward: float


def join_rewards(
    decisions: Sequence[Decision], rewards: Sequence[RewardEvent], settings: RewardSettings
) -> dict[UUID, Reward]:
    """Each decision's reward: the first in-window, non-late reward, else the default.

    Examples
    --------
    >>> from datetime import UTC
    >>> from uuid import UUID
    >>> from data_contracts import TipCandidate
    >>> c = TipCandidate(candidate_id="c", content="x", kind="llm_tip", source="s")
    >>> d = Decision(decision_id=UUID(int=1), user_id="u", decided_at=datetime(2026, 5, 1, tzinfo=UTC),
    ...              candidates=[c], ranked_ids=["c"], chosen_id="c", propensity=1.0, policy="p", policy_version="1")
    >>> late = RewardEvent(event_id=UUID(int=9), decision_id=d.decision_id, user_id="u", reaction="done",
    ...                    reward=1.0, occurred_at=d.decided_at + timedelta(days=3))
    >>> join_rewards([d], [late], RewardSettings(window_hours=24, default_reward=0.0))[d.decision_id]
    Reward(reaction=None, rewarded=False, reward=0.0)
    """
    window = timedelta(hours=settings.window_hours)
    by_decision: dict[UUID, list[RewardEvent]] = {}
    for r in rewards:
        by_decision.setdefault(r.decision_id, []).append(r)
    out: dict[UUID, Reward] = {}
    for d in decisions:
        eligible = [
            r
            for r in by_decision.get(d.decision_id, [])
            if not r.late and d.decided_at <= r.occurred_at <= d.decided_at + window
        ]
        if eligible:
            first = min(eligible, key=lambda r: (r.occurred_at, str(r.event_id)))
            out[d.decision_id] = Reward(first.reaction, True, first.reward)
        else:
            out[d.decision_id] = Reward(None, False, settings.default_reward)
    return out


def historical_features(
    store: FeatureStore, decisions: Sequence[Decision], timezones: Mapping[str, str] | None = None
) -> dict[tuple[UUID, str], tuple[UserContext, CandidateFeatures]]:
    """Point-in-time features of every (decision, candidate) as of the decision's time.

    One Feast ``get_historical_features`` call over the feature service ``tip_policy_v1``; the
    request-time features see the decision's own time and the user's timezone.
    """
    import pandas as pd

    from models.features.online import SERVICE

    rows: list[dict[str, Any]] = []
    for d in decisions:
        tz = (timezones or {}).get(d.user_id, "UTC")
        for c in d.candidates:
            rows.append(
                {
                    "row_key": f"{d.decision_id}|{c.candidate_id}",
                    "user_id": d.user_id,
                    "task_id": c.task_id or NO_TASK,
                    "event_timestamp": pd.Timestamp(d.decided_at),
                    "now_ts": d.decided_at.timestamp(),
                    "tz": tz,
                }
            )
    if not rows:
        return {}
    entity_df = pd.DataFrame(rows)
    service = store.get_feature_service(SERVICE)
    frame = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    kinds = {f"{d.decision_id}|{c.candidate_id}": c for d in decisions for c in d.candidates}
    out: dict[tuple[UUID, str], tuple[UserContext, CandidateFeatures]] = {}
    for record in frame.to_dict(orient="records"):
        decision_id, candidate_id = str(record["row_key"]).split("|", 1)
        ctx, cand = records_from_row({str(k): v for k, v in record.items()})
        if kinds[record["row_key"]].task_id is None:  # an LLM tip: not a task
            cand = llm_tip_features()
        out[(UUID(decision_id), candidate_id)] = (ctx, cand)
    return out


def pending_decisions(lake: Lake, as_of: datetime, window: timedelta) -> list[Decision]:
    """Decisions whose reward window closed by ``as_of`` and that have no training row yet."""
    done = set(lake.read("training_examples", columns=["decision_id"]).column("decision_id").to_pylist())
    table = lake.read("decisions", "decided_at <= ?", [as_of - window])
    return [d for d in from_table(Decision, table) if str(d.decision_id) not in done]


def build_training_examples(
    lake: Lake,
    store: FeatureStore,
    as_of: datetime,
    settings: RewardSettings,
    timezones: Mapping[str, str] | None = None,
    write: bool = True,
) -> list[TrainingExample]:
    """Training rows for every decision whose reward window closed by ``as_of``; written to the
    lake's ``training_examples`` (and their train/serve skew to ``feature_skew``) unless ``write``
    is false."""
    window = timedelta(hours=settings.window_hours)
    decisions = pending_decisions(lake, as_of, window)
    if not decisions:
        return []
    ids = [str(d.decision_id) for d in decisions]
    rewards = from_table(RewardEvent, lake.read("rewards", "list_contains(?, decision_id)", [ids]))
    outcome = join_rewards(decisions, rewards, settings)
    features = historical_features(store, decisions, timezones)
    examples = []
    for d in decisions:
        ctx = features[(d.decision_id, d.candidates[0].candidate_id)][0]
        candidates = [
            c.model_copy(update={"features": features_dict(features[(d.decision_id, c.candidate_id)][1])})
            for c in d.candidates
        ]
        r = outcome[d.decision_id]
        examples.append(
            TrainingExample(
                decision_id=d.decision_id,
                user_id=d.user_id,
                decided_at=d.decided_at,
                candidates=candidates,
                chosen_id=d.chosen_id,
                propensity=d.propensity,
                policy=d.policy,
                policy_version=d.policy_version,
                context=features_dict(ctx),
                reaction=r.reaction,
                rewarded=r.rewarded,
                reward=r.reward,
            )
        )
    if write:
        lake.write("training_examples", examples)
        # the same point-in-time features measure train/serve skew; training logs it to MLflow
        lake.write("feature_skew", compare(decisions, features).records(as_of))
    return examples
