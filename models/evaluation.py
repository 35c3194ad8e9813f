"""Off-policy evaluation: what would a policy have earned on decisions another policy logged?

Estimators over logged decisions ``(x, candidates, chosen a, propensity p, reward r)`` and the
target policy's probabilities ``pi(. | x)``:

- **IPS**: ``mean(w * r)`` with ``w = pi(a|x) / p``; unbiased, high variance.
- **SNIPS**: ``sum(w * r) / sum(w)``; self-normalised, slightly biased, much steadier.
- **DR** (doubly robust): ``mean(sum_b pi(b|x) q(x, b) + w * (r - q(x, a)))`` with a reward model
  ``q``; unbiased when either the propensities or ``q`` are right, and low variance when ``q``
  is good. :func:`fit_reward_model` cross-fits ``q`` on the logs (two folds) so that no decision
  is scored by a model that learned from it.
- **Replay** for deterministic policies: the mean reward of the decisions where the policy
  picks what was logged (unbiased under uniform logging only).

Every estimate comes with a percentile bootstrap interval over decisions.

Examples
--------
>>> from models.policies import UniformRandom
>>> from models.policies.base import Arm
>>> cands = [Arm("a", {}), Arm("b", {})]
>>> logs = [LoggedDecision({}, cands, "a" if i % 2 else "b", 0.5, float(i % 2)) for i in range(100)]
>>> target = [{"a": 1.0, "b": 0.0}] * 100
>>> round(ips(logs, target).value, 3), round(snips(logs, target).value, 3)
(1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.featurize import FloatArray
from models.policies.base import Candidate, Context, Policy
from models.policies.explore import EpsilonGreedy, default_model


class InvalidLog(ValueError):
    """A logged decision that cannot be evaluated (zero propensity, unknown chosen id, NaN reward)."""


@dataclass(frozen=True)
class LoggedDecision:
    """One logged decision with the reward it earned.

    Examples
    --------
    >>> from models.policies.base import Arm
    >>> LoggedDecision({}, [Arm("a", {})], "a", 0.0, 1.0)
    Traceback (most recent call last):
    ...
    models.evaluation.InvalidLog: propensity must be in (0, 1], got 0.0 (a propensity of zero cannot be reweighted)
    """

    context: Context
    candidates: Sequence[Candidate]
    chosen_id: str
    propensity: float
    reward: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.propensity) and 0.0 < self.propensity <= 1.0):
            raise InvalidLog(
                f"propensity must be in (0, 1], got {self.propensity} (a propensity of zero cannot be reweighted)"
            )
        if not math.isfinite(self.reward):
            raise InvalidLog(f"reward must be finite, got {self.reward}")
        if all(c.candidate_id != self.chosen_id for c in self.candidates):
            raise InvalidLog(f"chosen id {self.chosen_id!r} is not among the logged candidates")

    @property
    def chosen(self) -> Candidate:
        """The candidate that was shown."""
        return next(c for c in self.candidates if c.candidate_id == self.chosen_id)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a bootstrap confidence interval."""

    value: float
    low: float
    high: float
    n: int

    def covers(self, truth: float) -> bool:
        """Whether the interval contains ``truth``."""
        return self.low <= truth <= self.high


@dataclass(frozen=True)
class OffPolicyReport:
    """IPS, SNIPS and DR estimates of one policy on one set of logs."""

    ips: Estimate
    snips: Estimate
    dr: Estimate
    logged: float
    """The logging policy's own average reward on the same logs."""
    effective_sample_size: float
    """``(sum w)^2 / sum w^2``: how many decisions the estimate is really worth."""

    def metrics(self) -> dict[str, float]:
        """Flat metrics for a tracker: ``ips``, ``ips_low``, ``ips_high``, ... ``ess``."""
        out: dict[str, float] = {"logged_reward": self.logged, "ess": self.effective_sample_size}
        for name in ("ips", "snips", "dr"):
            e: Estimate = getattr(self, name)
            out.update({name: e.value, f"{name}_low": e.low, f"{name}_high": e.high})
        return out


def _bootstrap_indices(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))


def _interval(samples: FloatArray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _mean_estimate(terms: FloatArray, n_bootstrap: int, seed: int, level: float) -> Estimate:
    n = len(terms)
    if n == 0:
        raise InvalidLog("no logged decisions to evaluate")
    idx = _bootstrap_indices(n, n_bootstrap, seed)
    low, high = _interval(terms[idx].mean(axis=1), level)
    return Estimate(value=float(terms.mean()), low=low, high=high, n=n)


def _weights(logs: Sequence[LoggedDecision], target: Sequence[Mapping[str, float]]) -> tuple[FloatArray, FloatArray]:
    if len(logs) != len(target):
        raise ValueError(f"{len(logs)} logs but {len(target)} target distributions")
    w = np.asarray([t.get(d.chosen_id, 0.0) / d.propensity for d, t in zip(logs, target, strict=True)])
    r = np.asarray([d.reward for d in logs], dtype=np.float64)
    return w, r


def ips(
    logs: Sequence[LoggedDecision],
    target: Sequence[Mapping[str, float]],
    n_bootstrap: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """Inverse propensity scoring: ``mean(pi(a|x) / p * r)``."""
    w, r = _weights(logs, target)
    return _mean_estimate(w * r, n_bootstrap, seed, level)


def snips(
    logs: Sequence[LoggedDecision],
    target: Sequence[Mapping[str, float]],
    n_bootstrap: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """Self-normalised IPS: ``sum(w * r) / sum(w)`` (0 when no decision has weight)."""
    w, r = _weights(logs, target)
    if len(w) == 0:
        raise InvalidLog("no logged decisions to evaluate")

    def ratio(num: FloatArray, den: FloatArray) -> FloatArray:
        with np.errstate(invalid="ignore", divide="ignore"):
            out: FloatArray = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
        return out

    idx = _bootstrap_indices(len(w), n_bootstrap, seed)
    wr = w * r
    value = float(ratio(np.asarray(wr.sum()), np.asarray(w.sum())))
    low, high = _interval(ratio(wr[idx].sum(axis=1), w[idx].sum(axis=1)), level)
    return Estimate(value=value, low=low, high=high, n=len(w))


def doubly_robust(
    logs: Sequence[LoggedDecision],
    target: Sequence[Mapping[str, float]],
    q: Sequence[Mapping[str, float]],
    n_bootstrap: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """Doubly robust: the reward model's value under ``pi`` plus an IPS correction of its error.

    ``q[i]`` maps every candidate id of decision ``i`` to the predicted reward.
    """
    w, r = _weights(logs, target)
    if len(q) != len(logs):
        raise ValueError(f"{len(logs)} logs but {len(q)} reward predictions")
    direct = np.asarray([sum(p * qi.get(a, 0.0) for a, p in t.items()) for t, qi in zip(target, q, strict=True)])
    q_chosen = np.asarray([qi.get(d.chosen_id, 0.0) for d, qi in zip(logs, q, strict=True)])
    return _mean_estimate(direct + w * (r - q_chosen), n_bootstrap, seed, level)


def replay(
    logs: Sequence[LoggedDecision],
    picks: Sequence[str],
    n_bootstrap: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """Replay of a deterministic policy: mean reward where its pick equals the logged choice.

    Unbiased when the logging policy was uniform; ``n`` is the number of matched decisions.

    Examples
    --------
    >>> from models.policies.base import Arm
    >>> cands = [Arm("a", {}), Arm("b", {})]
    >>> logs = [LoggedDecision({}, cands, "ab"[i % 2], 0.5, float(i % 2)) for i in range(10)]
    >>> e = replay(logs, ["b"] * 10)
    >>> e.value, e.n
    (1.0, 5)
    """
    if len(picks) != len(logs):
        raise ValueError(f"{len(logs)} logs but {len(picks)} picks")
    matched = np.asarray([d.reward for d, a in zip(logs, picks, strict=True) if d.chosen_id == a], dtype=np.float64)
    if len(matched) == 0:
        raise InvalidLog("the policy never picks what was logged: replay has no matched decision")
    return _mean_estimate(matched, n_bootstrap, seed, level)


def target_distributions(policy: Policy, logs: Sequence[LoggedDecision]) -> list[dict[str, float]]:
    """The policy's probability of every logged candidate (draws no random number, learns nothing)."""
    return [policy.probabilities(d.context, d.candidates) for d in logs]


def fit_reward_model(
    logs: Sequence[LoggedDecision], learning_rate: float = 0.05, epochs: int = 2, seed: int = 0
) -> list[dict[str, float]]:
    """Cross-fitted reward predictions for every candidate of every decision (two folds).

    Each fold's decisions are scored by a River scorer trained on the other fold only.
    """
    n = len(logs)
    order = np.random.default_rng(seed).permutation(n)
    folds = [set(order[: n // 2].tolist()), set(order[n // 2 :].tolist())]
    out: list[dict[str, float]] = [{} for _ in range(n)]
    for k in (0, 1):
        scorer = EpsilonGreedy(model=default_model(learning_rate), epsilon=0.0, seed=seed)
        train = [i for i in range(n) if i not in folds[k]]
        for _ in range(epochs):
            for i in train:
                d = logs[i]
                scorer.learn_one(d.context, d.chosen, d.reward)
        for i in folds[k]:
            d = logs[i]
            scores = scorer.scores(d.context, d.candidates)
            out[i] = {c.candidate_id: min(1.0, max(0.0, s)) for c, s in zip(d.candidates, scores, strict=True)}
    return out


def evaluate_policy(
    policy: Policy,
    logs: Sequence[LoggedDecision],
    q: Sequence[Mapping[str, float]] | None = None,
    n_bootstrap: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> OffPolicyReport:
    """IPS, SNIPS and DR of ``policy`` on ``logs`` (``q`` defaults to :func:`fit_reward_model`)."""
    target = target_distributions(policy, logs)
    q = q if q is not None else fit_reward_model(logs, seed=seed)
    w, r = _weights(logs, target)
    ess = float(w.sum() ** 2 / (w**2).sum()) if (w**2).sum() > 0 else 0.0
    return OffPolicyReport(
        ips=ips(logs, target, n_bootstrap, seed, level),
        snips=snips(logs, target, n_bootstrap, seed, level),
        dr=doubly_robust(logs, target, q, n_bootstrap, seed, level),
        logged=float(r.mean()),
        effective_sample_size=ess,
    )
