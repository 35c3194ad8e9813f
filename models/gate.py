"""The promotion gate: does the challenger beat the champion on decisions it was not chosen on?

Picking the best of several candidates on one set of logs and then testing it on the same logs
promotes noise (the winner's curse). So training splits its held-out decisions in time: the
earlier **selection slice** picks the challenger (:func:`choose`), the later **gate slice** gates
it (:func:`gate`). There the gate estimates the **paired difference** ``V(challenger) -
V(reference)``, where the reference is the champion or, with no champion (or one that cannot be
loaded), the logged policy itself (its on-policy average reward), with one bootstrap over the
same resamples for both terms, resampling whole users (:class:`models.evaluation.ClusterBootstrap`).

The challenger is promoted only when

1. the evidence suffices: the effective sample size of the importance weights (the smaller of
   challenger's and champion's) is at least ``min_ess`` and the slice holds at least ``min_users``
   users; otherwise the gate refuses with the reason **"not enough evidence"**;
2. the lower end of the two-sided ``level`` interval of the difference exceeds ``margin``.

At a true difference of 0 the second rule promotes with probability about ``(1 - level) / 2``
(1% at the default 98%; with a few tens of users the bootstrap is somewhat optimistic, which is
why the default is not 95%); ``tests/models/test_gate.py`` measures the false-promotion rate
(at most 5%) and the power (at least 80% at a stated margin and n) on the simulator over many
seeds.

This module is pure (no MLflow): :mod:`models.registry` loads the champion, calls :func:`gate`
and logs the evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

from models.evaluation import (
    ClusterBootstrap,
    FeatureFn,
    InvalidLog,
    LoggedDecision,
    dr_terms,
    fit_reward_model,
    group_codes,
    importance_weights,
)
from oo.settings import TrainingSettings

Metric = Literal["dr", "snips", "ips"]
NOT_ENOUGH_EVIDENCE = "not enough evidence"


@dataclass(frozen=True)
class PairedDifference:
    """``V(challenger) - V(reference)`` on one set of logs, with a paired cluster-bootstrap interval."""

    metric: Metric
    value: float
    low: float
    high: float
    challenger: float
    reference: float
    ess: float
    """The smaller effective sample size of the two policies' importance weights."""
    max_weight: float
    n_decisions: int
    n_users: int
    clip: float | None
    challenger_low: float = math.nan
    challenger_high: float = math.nan
    """The challenger's own estimate's interval (same resamples and level): what the gate slice,
    which chose nothing, says the challenger is worth."""


def _statistic(
    metric: Metric,
    logs: Sequence[LoggedDecision],
    target: Sequence[Mapping[str, float]],
    q: Sequence[Mapping[str, float]] | None,
    w: np.ndarray,
    r: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Numerator and denominator terms: the estimate is ``sum(num) / sum(den)``."""
    if metric == "snips":
        return w * r, w
    if metric == "ips":
        return w * r, np.ones_like(w)
    if q is None:
        raise ValueError("the DR difference needs reward predictions q")
    return dr_terms(logs, target, q, w), np.ones_like(w)


def corrected_interval(value: float, samples: np.ndarray, n_groups: int, level: float) -> tuple[float, float]:
    """``value +/- t(level, G - 1) * se``, ``se`` the bootstrap standard error with the ``G / (G - 1)``
    small-sample correction: with tens of users the plain percentile interval of a cluster bootstrap
    is too narrow (Cameron, Gelbach and Miller, 2008), and the gate measured it promoting a no-better
    challenger more often than its level says. Normal quantile when every decision is its own group."""
    from scipy import stats  # scikit-learn's own dependency

    g = max(n_groups, 2)
    se = float(np.std(samples, ddof=1)) * math.sqrt(g / (g - 1)) if len(samples) > 1 else math.inf
    quantile = float(stats.t.ppf((1.0 + level) / 2.0, df=g - 1))
    return value - quantile * se, value + quantile * se


def paired_difference(
    logs: Sequence[LoggedDecision],
    challenger: Sequence[Mapping[str, float]],
    reference: Sequence[Mapping[str, float]] | None = None,
    q: Sequence[Mapping[str, float]] | None = None,
    metric: Metric = "dr",
    n_bootstrap: int = 500,
    seed: int = 0,
    level: float = 0.95,
    clip: float | None = None,
) -> PairedDifference:
    """The difference of two target policies' estimates (``reference=None``: the logged policy).

    Both estimates are computed on every bootstrap resample of the same users, so the interval is
    the one of the difference, not of either value (see :func:`corrected_interval`).
    """
    boot = ClusterBootstrap(group_codes(logs), n_bootstrap, seed, level)
    r = np.asarray([d.reward for d in logs], dtype=np.float64)
    wc = importance_weights(logs, challenger, clip)
    stats = [_statistic(metric, logs, challenger, q, wc.w, r)]
    overlap = [wc.w]
    ess, max_weight = wc.ess, wc.max_weight
    if reference is None:  # the logger's own value, on-policy: mean reward
        stats.append((r, np.ones_like(r)))
    else:
        wr = importance_weights(logs, reference, clip)
        stats.append(_statistic(metric, logs, reference, q, wr.w, r))
        overlap.append(wr.w)
        ess, max_weight = min(ess, wr.ess), max(max_weight, wr.max_weight)
    values = [float(num.sum() / den.sum()) for num, den in stats]
    samples = boot.ratios(stats, overlap=overlap)
    low, high = corrected_interval(values[0] - values[1], samples[:, 0] - samples[:, 1], boot.n_groups, level)
    challenger_low, challenger_high = corrected_interval(values[0], samples[:, 0], boot.n_groups, level)
    return PairedDifference(
        metric=metric,
        value=values[0] - values[1],
        low=low,
        high=high,
        challenger=values[0],
        reference=values[1],
        challenger_low=challenger_low,
        challenger_high=challenger_high,
        ess=ess,
        max_weight=max_weight,
        n_decisions=len(logs),
        n_users=boot.n_groups,
        clip=clip,
    )


@dataclass(frozen=True)
class GateRule:
    """The gate's thresholds (``TrainingSettings.gate_*``)."""

    metric: Metric = "dr"
    margin: float = 0.0
    level: float = 0.98
    min_ess: float = 100.0
    min_users: int = 5
    n_bootstrap: int = 300
    seed: int = 0
    clip: float | None = None

    @classmethod
    def from_settings(cls, training: TrainingSettings) -> GateRule:
        """The rule of the training settings."""
        return cls(
            metric=training.gate_metric,
            margin=training.gate_margin,
            level=training.gate_level,
            min_ess=training.gate_min_ess,
            min_users=training.gate_min_users,
            n_bootstrap=training.n_bootstrap,
            seed=training.seed,
            clip=training.weight_clip,
        )


@dataclass(frozen=True)
class GateEvidence:
    """What the gate saw and decided; :meth:`tags` and :meth:`metrics` go to MLflow."""

    promoted: bool
    reason: str
    reference: str
    """``"champion v<N>"`` or ``"logged policy"``."""
    difference: PairedDifference | None
    rule: GateRule
    selection: tuple[datetime, datetime] | None = None
    gated: tuple[datetime, datetime] | None = None

    def tags(self) -> dict[str, str]:
        """``gate.*`` tags: decision, reason, reference, metric and the two slices' dates."""
        out = {
            "gate.decision": "promoted" if self.promoted else "refused",
            "gate.reason": self.reason,
            "gate.reference": self.reference,
            "gate.metric": self.rule.metric,
            "gate.weight_clip": str(self.rule.clip),
        }
        for name, span in (("selection", self.selection), ("slice", self.gated)):
            if span is not None:
                out[f"gate.{name}_start"], out[f"gate.{name}_end"] = span[0].isoformat(), span[1].isoformat()
        return out

    def metrics(self) -> dict[str, float]:
        """``gate_*`` metrics: the difference and its interval, ESS, users, decisions, thresholds."""
        out = {"gate_min_ess": float(self.rule.min_ess), "gate_margin": self.rule.margin, "gate_level": self.rule.level}
        d = self.difference
        if d is not None:
            out |= {
                "gate_difference": d.value,
                "gate_difference_low": d.low,
                "gate_difference_high": d.high,
                "gate_challenger": d.challenger,
                "gate_challenger_low": d.challenger_low,
                "gate_challenger_high": d.challenger_high,
                "gate_reference": d.reference,
                "gate_ess": d.ess,
                "gate_max_weight": d.max_weight,
                "gate_n_users": float(d.n_users),
                "gate_n_decisions": float(d.n_decisions),
            }
        return {k: v for k, v in out.items() if math.isfinite(v)}


def span(logs: Sequence[LoggedDecision]) -> tuple[datetime, datetime] | None:
    """First and last decision time of a slice (``None`` when the logs carry no times)."""
    times = [d.decided_at for d in logs if d.decided_at is not None]
    return (min(times), max(times)) if times else None


def split_slices(
    holdout: Sequence[LoggedDecision], gate_fraction: float
) -> tuple[list[LoggedDecision], list[LoggedDecision]]:
    """The held-out decisions in time order: the earlier part selects, the latest ``gate_fraction`` gates.

    Examples
    --------
    >>> from models.policies.base import Arm
    >>> logs = [LoggedDecision({}, [Arm("a", {})], "a", 1.0, 0.0) for _ in range(10)]
    >>> [len(s) for s in split_slices(logs, 0.3)]
    [7, 3]
    """
    if not 0.0 < gate_fraction < 1.0:
        raise ValueError(f"gate_fraction must be in (0, 1), got {gate_fraction}")
    if len(holdout) < 2:
        raise InvalidLog(f"{len(holdout)} held-out decision(s) cannot be split into a selection and a gate slice")
    order = sorted(range(len(holdout)), key=lambda i: (holdout[i].decided_at is None, holdout[i].decided_at or 0, i))
    ordered = [holdout[i] for i in order]
    n_gate = min(len(ordered) - 1, max(1, round(len(ordered) * gate_fraction)))
    return ordered[:-n_gate], ordered[-n_gate:]


def choose(estimates: Mapping[str, float]) -> str:
    """The name with the highest estimate on the selection slice (first of ties, in given order)."""
    if not estimates:
        raise ValueError("no candidate to choose from")
    return max(estimates, key=lambda k: estimates[k])


def decide(difference: PairedDifference, rule: GateRule, reference: str) -> tuple[bool, str]:
    """Promote or not, and why (the reason names the numbers it rests on)."""
    d = difference
    measured = (
        f"{d.metric} difference challenger - {reference} = {d.value:+.4f} "
        f"[{d.low:+.4f}, {d.high:+.4f}] ({rule.level:.0%}, {d.n_users} users, {d.n_decisions} decisions, "
        f"ESS {d.ess:.1f})"
    )
    if d.ess < rule.min_ess or d.n_users < rule.min_users:
        short = []
        if d.ess < rule.min_ess:
            short.append(f"effective sample size {d.ess:.1f} < {rule.min_ess:g}")
        if d.n_users < rule.min_users:
            short.append(f"{d.n_users} users < {rule.min_users}")
        return False, f"{NOT_ENOUGH_EVIDENCE}: {' and '.join(short)}; {measured}"
    if d.low > rule.margin:
        return True, f"promoted: lower bound {d.low:+.4f} > margin {rule.margin:g}; {measured}"
    return False, f"refused: lower bound {d.low:+.4f} <= margin {rule.margin:g}; {measured}"


def gate(
    logs: Sequence[LoggedDecision],
    challenger: Sequence[Mapping[str, float]],
    reference: Sequence[Mapping[str, float]] | None,
    rule: GateRule,
    features: FeatureFn | None = None,
    reference_name: str = "logged policy",
    selection: tuple[datetime, datetime] | None = None,
    q: Sequence[Mapping[str, float]] | None = None,
) -> GateEvidence:
    """Gate a challenger's target distributions on the gate slice ``logs`` against ``reference``.

    The DR reward model is cross-fitted on ``logs`` with ``features`` (the challenger's own
    ``features_one``) and shared by both terms of the difference, unless ``q`` is given. Too little
    overlap to estimate at all refuses with "not enough evidence" too.
    """
    try:
        if q is None and rule.metric == "dr":
            q = fit_reward_model(logs, features=features, seed=rule.seed)
        difference = paired_difference(
            logs,
            challenger,
            reference,
            q=q,
            metric=rule.metric,
            n_bootstrap=rule.n_bootstrap,
            seed=rule.seed,
            level=rule.level,
            clip=rule.clip,
        )
    except InvalidLog as exc:  # no overlap, in the sample or a resample: nothing to gate on
        return GateEvidence(
            promoted=False,
            reason=f"{NOT_ENOUGH_EVIDENCE}: {exc}",
            reference=reference_name,
            difference=None,
            rule=rule,
            selection=selection,
            gated=span(logs),
        )
    promoted, reason = decide(difference, rule, reference_name)
    return GateEvidence(
        promoted=promoted,
        reason=reason,
        reference=reference_name,
        difference=difference,
        rule=rule,
        selection=selection,
        gated=span(logs),
    )
