"""Train candidate policies from logged decisions and evaluate each off-policy on held-out logs.

The training set is the feature store's ``TrainingExample`` rows (a decision joined with its
reward and point-in-time features). The latest ``holdout_fraction`` of decisions (by
``decided_at``) is held out; every candidate policy of a small grid is warm-started on the rest
(one ``learn_one`` per logged decision, on the shown candidate and its reward), then frozen and
evaluated with IPS, SNIPS and DR on the held-out decisions. The reward model of DR is
cross-fitted on the held-out logs once and shared by every candidate, so their estimates
compare.

Examples
--------
>>> from models.policies import UniformRandom
>>> from models.simulation import Simulator
>>> examples = Simulator(n_users=5, seed=2).log(UniformRandom(seed=2), 300)
>>> outcome = train_candidates(examples, grid=[CandidateSpec("epsilon_greedy", 0.1, 0.1)], n_bootstrap=50)
>>> best = outcome.best
>>> best.spec.explorer, best.report.dr.n, best.report.dr.low <= best.report.dr.value <= best.report.dr.high
('epsilon_greedy', 90, True)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from data_contracts import TrainingExample
from models.evaluation import LoggedDecision, OffPolicyReport, evaluate_policy, fit_reward_model
from models.policies.base import Policy
from models.policies.explore import BootstrapThompson, EpsilonGreedy, Softmax, default_model

log = logging.getLogger(__name__)

Explorer = Literal["epsilon_greedy", "softmax", "bootstrap_thompson"]


class NotEnoughExamples(ValueError):
    """Too few training examples to train and hold out."""


@dataclass(frozen=True)
class CandidateSpec:
    """One point of the grid: an explorer, its scorer's learning rate and its exploration knob.

    ``knob`` is epsilon (epsilon-greedy), the temperature (softmax) or the number of members
    (bootstrap Thompson).
    """

    explorer: Explorer
    learning_rate: float
    knob: float
    floor: float = 0.01

    @property
    def name(self) -> str:
        """A short, stable name for the run."""
        return f"{self.explorer}-lr{self.learning_rate:g}-k{self.knob:g}"

    def build(self, seed: int = 0, version: str = "dev") -> Policy:
        """A fresh policy for this spec."""
        common: dict[str, Any] = {
            "model": default_model(self.learning_rate),
            "floor": self.floor,
            "seed": seed,
            "version": version,
        }
        if self.explorer == "epsilon_greedy":
            return EpsilonGreedy(epsilon=self.knob, **common)
        if self.explorer == "softmax":
            return Softmax(temperature=self.knob, **common)
        return BootstrapThompson(n_members=int(self.knob), **common)


DEFAULT_GRID: tuple[CandidateSpec, ...] = (
    CandidateSpec("epsilon_greedy", 0.1, 0.02),
    CandidateSpec("epsilon_greedy", 0.2, 0.05),
    CandidateSpec("softmax", 0.1, 0.02),
    CandidateSpec("softmax", 0.2, 0.05),
    CandidateSpec("bootstrap_thompson", 0.1, 5),
)
"""The small grid trained on every run."""


@dataclass(frozen=True)
class TrainedCandidate:
    """A warm-started policy and its off-policy report on the held-out logs."""

    spec: CandidateSpec
    policy: Policy
    report: OffPolicyReport
    n_train: int


@dataclass(frozen=True)
class TrainingOutcome:
    """Every candidate (best DR first) and the held-out logs they were evaluated on."""

    candidates: list[TrainedCandidate]
    holdout: list[LoggedDecision]
    q: list[dict[str, float]]
    """The cross-fitted reward model's predictions on ``holdout`` (shared by every estimate)."""

    @property
    def best(self) -> TrainedCandidate:
        """The candidate with the highest DR estimate."""
        return self.candidates[0]


def to_logged(example: TrainingExample) -> LoggedDecision:
    """A training example as a logged decision for the estimators."""
    return LoggedDecision(
        context=example.context,
        candidates=example.candidates,
        chosen_id=example.chosen_id,
        propensity=example.propensity,
        reward=example.reward,
    )


def split(
    examples: Sequence[TrainingExample], holdout_fraction: float
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Oldest decisions for training, the latest ``holdout_fraction`` for evaluation."""
    ordered = sorted(examples, key=lambda e: (e.decided_at, str(e.decision_id)))
    n_test = max(1, round(len(ordered) * holdout_fraction))
    if len(ordered) - n_test < 1:
        raise NotEnoughExamples(f"{len(ordered)} examples cannot be split {1 - holdout_fraction:.0%} / train")
    return ordered[:-n_test], ordered[-n_test:]


def warm_start(policy: Policy, examples: Sequence[TrainingExample], epochs: int = 1) -> Policy:
    """Teach ``policy`` every logged decision (the shown candidate and its reward), in time order."""
    for _ in range(epochs):
        for e in examples:
            chosen = next(c for c in e.candidates if c.candidate_id == e.chosen_id)
            policy.learn_one(e.context, chosen, e.reward)
    return policy


def train_candidates(
    examples: Sequence[TrainingExample],
    grid: Sequence[CandidateSpec] = DEFAULT_GRID,
    holdout_fraction: float = 0.3,
    min_examples: int = 10,
    n_bootstrap: int = 300,
    seed: int = 0,
) -> TrainingOutcome:
    """Warm-start each grid point on the older examples; evaluate each on the held-out ones."""
    if len(examples) < min_examples:
        raise NotEnoughExamples(f"{len(examples)} training examples; at least {min_examples} needed")
    train, test = split(examples, holdout_fraction)
    holdout = [to_logged(e) for e in test]
    q = fit_reward_model(holdout, seed=seed)
    trained = []
    for spec in grid:
        policy = warm_start(spec.build(seed=seed), train)
        report = evaluate_policy(policy, holdout, q=q, n_bootstrap=n_bootstrap, seed=seed)
        log.info("trained %s: DR %.4f [%.4f, %.4f]", spec.name, report.dr.value, report.dr.low, report.dr.high)
        trained.append(TrainedCandidate(spec=spec, policy=policy, report=report, n_train=len(train)))
    trained.sort(key=lambda t: -t.report.dr.value)
    return TrainingOutcome(candidates=trained, holdout=holdout, q=q)


def read_training_examples(start: datetime, end: datetime, lake: Any = None) -> list[TrainingExample]:
    """The lake's training examples decided in ``[start, end)``."""
    from data_contracts.arrow import from_table
    from oo.lake import get_lake

    lake = lake or get_lake()
    table = lake.read("training_examples", where="decided_at >= ? AND decided_at < ?", params=[start, end])
    return from_table(TrainingExample, table)


def read_skew(start: datetime, end: datetime, lake: Any = None) -> dict[str, float]:
    """Train/serve mismatch rate per feature over the feature-pipeline runs in ``[start, end)``."""
    from data_contracts import FeatureSkew
    from data_contracts.arrow import from_table
    from models.features.skew import aggregate
    from oo.lake import get_lake

    lake = lake or get_lake()
    table = lake.read("feature_skew", where="as_of >= ? AND as_of < ?", params=[start, end])
    return aggregate(from_table(FeatureSkew, table))


def train_and_register(interval_end: datetime, settings: Any = None, lake: Any = None) -> dict[str, Any]:
    """The ``policy_training`` task: read the window ending at ``interval_end``, train, log, gate.

    Idempotent over its interval: a second call for the same ``interval_end`` finds the runs
    already logged and returns their summary without training again.
    """
    from models.registry import Registry
    from oo.settings import get_settings

    settings = settings or get_settings()
    cfg = settings.training
    registry = Registry(settings)
    interval_key = interval_end.isoformat()
    done = registry.summary_for_interval(interval_key)
    if done is not None:
        log.info("interval %s already trained; nothing to do", interval_key)
        return done
    start = interval_end - timedelta(days=cfg.window_days)
    examples = read_training_examples(start, interval_end, lake)
    if len(examples) < cfg.min_examples:
        log.warning(
            "%d training examples in [%s, %s): fewer than %d, nothing trained",
            len(examples),
            start,
            interval_end,
            cfg.min_examples,
        )
        return {"interval_end": interval_key, "examples": len(examples), "trained": 0, "promoted": False}
    skew = read_skew(start, interval_end, lake)
    outcome = train_candidates(
        examples,
        holdout_fraction=cfg.holdout_fraction,
        min_examples=cfg.min_examples,
        n_bootstrap=cfg.n_bootstrap,
        seed=cfg.seed,
    )
    return registry.register_outcome(outcome, interval_key=interval_key, n_examples=len(examples), skew=skew)
