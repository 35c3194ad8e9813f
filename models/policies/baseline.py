"""Policies that learn nothing: the rule-based default and uniform random.

:class:`RuleBased` is the default policy and the reference of apprentice mode: it picks the
most urgent task by Todoist priority, overdue state and due date, deterministically (its
propensity is 1 unless a floor is set).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from models.policies.base import Candidate, Context, Policy, argmax_shares


class RuleBased(Policy):
    """Priority first, then overdue, then the nearest due date; LLM tips last.

    The score is ``priority + 2 * is_overdue + urgency - 3 * is_llm_tip`` where ``urgency``
    grows from 0 (due in 3 days or more, or no due date) to 1 (due now). Ties go to the first
    candidate in input order.

    Examples
    --------
    >>> from data_contracts import TipCandidate
    >>> def task(i, **f):
    ...     return TipCandidate(candidate_id=i, content=i, kind="todoist_task", source="todoist", features=f)
    >>> cands = [task("low", priority=1.0), task("p1", priority=4.0),
    ...          task("late", priority=3.0, is_overdue=1.0, has_due_date=1.0, hours_until_due=-5.0)]
    >>> RuleBased().rank({}, cands)
    ['late', 'p1', 'low']
    >>> RuleBased().choose({}, cands).propensity
    1.0
    """

    name = "rule_based"

    def __init__(self, urgency_hours: float = 72.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.urgency_hours = urgency_hours

    def predict_one(self, x: Context, candidate: Candidate) -> float:
        """The rule score of ``candidate`` (context ignored)."""
        f = candidate.features

        def get(name: str, default: float) -> float:
            v = f.get(name, default)
            return v if math.isfinite(v) else default

        urgency = 0.0
        if get("has_due_date", 0.0) > 0.0:
            hours = get("hours_until_due", 720.0)
            urgency = min(1.0, max(0.0, 1.0 - hours / self.urgency_hours))
        return get("priority", 1.0) + 2.0 * get("is_overdue", 0.0) + urgency - 3.0 * get("is_llm_tip", 0.0)

    def learn_one(self, x: Context, candidate: Candidate, reward: float, propensity: float | None = None) -> None:
        """Rules learn nothing."""

    def _probabilities(self, x: Context, candidates: Sequence[Candidate], scores: list[float]) -> list[float]:
        shares = argmax_shares(scores)
        first = shares.index(max(shares))  # deterministic: the first of tied best
        return [1.0 if i == first else 0.0 for i in range(len(scores))]


class UniformRandom(Policy):
    """Every candidate with probability 1/K (a logging policy for unbiased replay).

    Examples
    --------
    >>> from data_contracts import TipCandidate
    >>> cands = [TipCandidate(candidate_id=str(i), content="x", kind="llm_tip", source="local")
    ...          for i in range(4)]
    >>> UniformRandom(seed=1).choose({}, cands).propensity
    0.25
    """

    name = "uniform_random"

    def predict_one(self, x: Context, candidate: Candidate) -> float:
        """Every candidate scores 0."""
        return 0.0

    def learn_one(self, x: Context, candidate: Candidate, reward: float, propensity: float | None = None) -> None:
        """Learns nothing."""

    def _probabilities(self, x: Context, candidates: Sequence[Candidate], scores: list[float]) -> list[float]:
        return [1.0 / len(candidates)] * len(candidates)
