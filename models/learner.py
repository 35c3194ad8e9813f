"""The online learner: decides, remembers what it decided, and learns from rewards exactly once.

A reward names its decision by ``decision_id``. The learner keeps each pending decision (the
context and the chosen candidate, as the policy saw them) until its reward window closes, then
forgets it. A reward for a decision it never made (or already forgot) raises
:class:`UnknownDecision`; the same reward twice is learned once; a reward after the window is
reported late and not learned from. Nothing here does I/O: serving feeds it from the bus.

Examples
--------
>>> from datetime import UTC, datetime, timedelta
>>> from uuid import UUID
>>> from models.policies import EpsilonGreedy
>>> from models.policies.base import Arm
>>> learner = OnlineLearner(EpsilonGreedy(seed=0), window=timedelta(hours=24))
>>> at = datetime(2026, 1, 1, tzinfo=UTC)
>>> choice, shadow = learner.decide(UUID(int=1), {}, [Arm("a", {}), Arm("b", {})], at)
>>> learner.reward(UUID(int=1), 1.0, at + timedelta(hours=1)), learner.reward(UUID(int=1), 1.0, at)
('learned', 'duplicate')
>>> learner.reward(UUID(int=2), 1.0, at)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
models.learner.UnknownDecision: 'no pending decision 00000000-...-000000000002 (never made, or its window closed)'
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from data_contracts.decisions import ShadowPick
from models.policies.base import Candidate, Choice, Context, Policy, check_reward
from models.policies.shadow import shadow_picks

RewardStatus = Literal["learned", "duplicate", "late"]


class UnknownDecision(KeyError):
    """A reward for a decision this learner never made (or no longer remembers)."""


class DuplicateDecision(ValueError):
    """A second decision with an id already pending."""


@dataclass
class _Pending:
    context: Context
    chosen: Candidate
    decided_at: datetime
    rewarded: bool = False


class OnlineLearner:
    """A policy plus its pending decisions, learning from each decision's reward once.

    Parameters
    ----------
    policy
        The served policy; it learns from rewards.
    window
        How long after a decision its reward is still learned from.
    shadows
        Policies whose picks are recorded with every decision (they do not learn here).
    max_pending
        Pending decisions kept at most; the oldest are forgotten first.
    """

    def __init__(
        self,
        policy: Policy,
        window: timedelta,
        shadows: Sequence[Policy] = (),
        max_pending: int = 100_000,
    ) -> None:
        self.policy = policy
        self.window = window
        self.shadows = list(shadows)
        self.max_pending = max_pending
        self._pending: OrderedDict[UUID, _Pending] = OrderedDict()

    def decide(
        self, decision_id: UUID, x: Context, candidates: Sequence[Candidate], at: datetime
    ) -> tuple[Choice, list[ShadowPick]]:
        """Choose among ``candidates`` and remember the decision for its reward."""
        if decision_id in self._pending:
            raise DuplicateDecision(f"decision {decision_id} is already pending")
        choice = self.policy.choose(x, candidates)
        picks = shadow_picks(self.shadows, x, candidates)
        chosen = next(c for c in candidates if c.candidate_id == choice.chosen_id)
        self._pending[decision_id] = _Pending(context=dict(x), chosen=chosen, decided_at=at)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
        return choice, picks

    def reward(self, decision_id: UUID, reward: float, at: datetime) -> RewardStatus:
        """Learn ``reward`` for ``decision_id`` unless it is a duplicate or late."""
        value = check_reward(reward)
        pending = self._pending.get(decision_id)
        if pending is None:
            raise UnknownDecision(f"no pending decision {decision_id} (never made, or its window closed)")
        if pending.rewarded:
            return "duplicate"
        if at - pending.decided_at > self.window:
            return "late"
        self.policy.learn_one(pending.context, pending.chosen, value)
        pending.rewarded = True
        return "learned"

    def expire(self, now: datetime) -> int:
        """Forget decisions whose window has closed; how many were forgotten."""
        stale = [k for k, p in self._pending.items() if now - p.decided_at > self.window]
        for k in stale:
            del self._pending[k]
        return len(stale)

    @property
    def pending(self) -> int:
        """How many decisions are remembered."""
        return len(self._pending)
