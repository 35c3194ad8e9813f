"""The online learner: remembers decisions, and learns from each decision's reward exactly once.

A reward names its decision by ``decision_id``. The learner keeps each pending decision (the
context and the chosen candidate, as the policy saw them) until its reward window closes. The
decision protocol's semantics (``../shared/ARCHITECTURE.md``, Personalizer's) hold here, the
same as in the batch training join:

- the first reward in the window is learned; the same reward again is a ``duplicate``; a reward
  after the window is ``late`` and not learned;
- a decision whose window closes unrewarded is learned with ``default_reward`` (when set);
- a deferred decision is learned from only once activated; one never activated is skipped;
- a reward (or an activation) may arrive before its decision (replicas and the bus do not keep
  order): :meth:`OnlineLearner.offer_reward` holds it for ``hold`` and applies it when the
  decision is :meth:`observed <OnlineLearner.observe>`.

Apprentice mode: a decision may carry ``would_pick``, what the learning policy would have chosen
while another (the rule baseline) served. :attr:`OnlineLearner.apprentice` compares the served
rewards with the learner's over the latest decisions.

Nothing here does I/O: serving feeds it from the event log and persists it.

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
>>> learner.offer_reward(UUID(int=3), 1.0, at)  # its decision may still arrive
'waiting'
>>> learner.observe(UUID(int=3), {}, Arm("a", {}), at)
['learned']
"""

from __future__ import annotations

import heapq
import pickle
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from data_contracts.decisions import ShadowPick
from models.policies.base import Arm, Candidate, Choice, Context, Policy, check_reward
from models.policies.shadow import shadow_picks

RewardStatus = Literal["learned", "duplicate", "late", "waiting", "deferred"]

PENDING_SLICE = 250
"""Pending decisions pickled per call when a learner is pickled (a checkpoint): the thread that
pickles hands the GIL over between two slices (a few milliseconds each), where one call over
100,000 pending decisions would hold it, and stall every other thread, for about two seconds."""


class UnknownDecision(KeyError):
    """A reward for a decision this learner never made (or no longer remembers)."""


class DuplicateDecision(ValueError):
    """A second decision with an id already pending."""


@dataclass(frozen=True)
class _Pending:
    """A decision waiting for its reward, as the learner works with it. Never changed in place (a
    change replaces the record), so that a :meth:`OnlineLearner.checkpoint_copy` can share the
    records with the live learner. Kept between calls as a :data:`_Packed` tuple."""

    context: Context
    chosen: Candidate
    decided_at: datetime
    rewarded: bool = False
    deferred: bool = False
    activated: bool = False
    held: tuple[float, datetime] | None = None  # a deferred decision's reward, until activation
    would_pick: str | None = None

    def packed(self) -> _Packed:
        """This record as the learner keeps it (see :data:`_Packed`)."""
        flags = self.rewarded | self.deferred << 1 | self.activated << 2
        context_names, context_values = _split(self.context)
        names, values = _split(self.chosen.features)
        chosen_id, at = self.chosen.candidate_id, self.decided_at
        return (at, context_names, context_values, chosen_id, names, values, flags, self.held, self.would_pick)

    @staticmethod
    def unpacked(t: _Packed) -> _Pending:
        """The record :meth:`packed` kept (the chosen candidate as an :class:`Arm`: its id and features)."""
        at, context_names, context_values, chosen_id, names, values, flags, held, would_pick = t
        return _Pending(
            dict(zip(context_names, context_values, strict=True)),
            Arm(chosen_id, dict(zip(names, values, strict=True))),
            at,
            bool(flags & 1),
            bool(flags & 2),
            bool(flags & 4),
            held,
            would_pick,
        )


_Names = tuple[str, ...]
_Packed = tuple[
    datetime, _Names, tuple[float, ...], str, _Names, tuple[float, ...], int, tuple[float, datetime] | None, str | None
]
"""A pending decision as the learner keeps it: ``(decided_at, context names, context values, chosen
id, chosen feature names, chosen feature values, flags, held, would_pick)``, keyed by the decision
id's integer. Only strings, numbers, datetimes and tuples of them, which the garbage collector
stops tracking (CPython untracks a tuple of untracked objects when it first looks at it, never one
that holds a dict), where a record of objects (the dataclass, the chosen ``TipCandidate`` model
and its dicts, the ``UUID``) was six tracked objects: at the default ``max_pending`` of 100,000,
every full collection went over 600,000 objects with the process standing still (``bench/policy.py``,
``learner_memory``). Only what learning needs is kept: the candidate's id and features, not its
text. The names tuples are shared between records (:func:`_split`)."""

_NAMES: dict[_Names, _Names] = {}
"""One tuple per distinct set of feature names (a handful: the contracts' fields), so that each
record holds a reference to it rather than its own copy."""


def _split(features: Mapping[str, float]) -> tuple[_Names, tuple[float, ...]]:
    """``features`` as (names, values); the names tuple shared with every record that has the same names."""
    names = tuple(features)
    # bounded: names from outside the contracts must not grow it forever (past it, still shared if known)
    shared = _NAMES.setdefault(names, names) if len(_NAMES) < 1024 else _NAMES.get(names, names)
    return shared, tuple(features.values())


@dataclass
class LearnerCounts:
    """What the learner has done since it was created (persisted with it)."""

    decisions: int = 0
    learned: int = 0
    defaults: int = 0
    duplicates: int = 0
    late: int = 0
    skipped_deferred: int = 0
    waited: int = 0
    dropped_waiting: int = 0
    forgotten: int = 0


@dataclass(frozen=True)
class ApprenticeStats:
    """Served (baseline) reward against the learner's would-be reward over the latest decisions.

    The learner's reward is a matching estimate: a reward is only observed for the served pick,
    so the learner earns it where its pick agrees and nothing elsewhere (a lower bound).
    """

    decisions: int
    baseline_reward: float
    learner_reward: float

    @property
    def ratio(self) -> float | None:
        """Learner over baseline (``None`` while the baseline earned nothing)."""
        return self.learner_reward / self.baseline_reward if self.baseline_reward > 0 else None


@dataclass
class _Waiting:
    rewards: OrderedDict[UUID, tuple[float, datetime, datetime]] = field(default_factory=OrderedDict)
    activations: OrderedDict[UUID, datetime] = field(default_factory=OrderedDict)


class OnlineLearner:
    """A policy plus its pending decisions, learning from each decision's reward once.

    Parameters
    ----------
    policy
        The policy that learns (and, in the embedded default, serves).
    window
        How long after a decision its reward is still learned from.
    shadows
        Policies whose picks :meth:`decide` records (they do not learn here).
    max_pending
        Pending decisions kept at most; the oldest are forgotten first.
    default_reward
        Learned for a decision whose window closes unrewarded; ``None`` learns nothing then.
    hold
        How long a reward (or activation) waits for a decision not seen yet.
    max_waiting
        Rewards waiting at most; the oldest are dropped first.
    apprentice_window
        Decisions over which :attr:`apprentice` compares.
    """

    def __init__(
        self,
        policy: Policy,
        window: timedelta,
        shadows: Sequence[Policy] = (),
        max_pending: int = 100_000,
        default_reward: float | None = None,
        hold: timedelta = timedelta(minutes=10),
        max_waiting: int = 10_000,
        apprentice_window: int = 1000,
    ) -> None:
        self.policy = policy
        self.window = window
        self.shadows = list(shadows)
        self.max_pending = max_pending
        self.default_reward = None if default_reward is None else check_reward(default_reward)
        self.hold = hold
        self.max_waiting = max_waiting
        self.counts = LearnerCounts()
        self._pending: OrderedDict[int, _Packed] = OrderedDict()
        """Each pending decision by its id's integer (an ``int``, which the collector does not
        track, where a ``UUID`` is an object it does), oldest first."""
        self._closing: list[tuple[datetime, int]] = []
        """A heap of the pending decisions' ``(decided_at, id)``: :meth:`expire` pops the windows
        that closed instead of scanning every pending decision on each call (the service calls it
        after each decision). Entries of decisions no longer pending are skipped as popped."""
        self._waiting = _Waiting()
        self._apprentice: deque[tuple[float, float]] = deque(maxlen=apprentice_window)

    # -- decisions ---------------------------------------------------------------------------
    def decide(
        self, decision_id: UUID, x: Context, candidates: Sequence[Candidate], at: datetime
    ) -> tuple[Choice, list[ShadowPick]]:
        """Choose among ``candidates`` and remember the decision for its reward."""
        if decision_id.int in self._pending:
            raise DuplicateDecision(f"decision {decision_id} is already pending")
        choice = self.policy.choose(x, candidates)
        picks = shadow_picks(self.shadows, x, candidates)
        chosen = next(c for c in candidates if c.candidate_id == choice.chosen_id)
        self.observe(decision_id, x, chosen, at)
        return choice, picks

    def observe(
        self,
        decision_id: UUID,
        x: Context,
        chosen: Candidate,
        at: datetime,
        *,
        deferred: bool = False,
        would_pick: str | None = None,
    ) -> list[RewardStatus]:
        """Remember a decision made elsewhere (a replica); apply what was waiting for it.

        Returns the statuses of the waiting reward applied, if any. A decision already pending is
        ignored (the event log may replay it).
        """
        key = decision_id.int
        if key in self._pending:
            return []
        self.counts.decisions += 1
        self._pending[key] = _Pending(
            context=x, chosen=chosen, decided_at=at, deferred=deferred, would_pick=would_pick
        ).packed()
        heapq.heappush(self._closing, (at, key))
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.counts.forgotten += 1
        out: list[RewardStatus] = []
        activated_at = self._waiting.activations.pop(decision_id, None)
        if activated_at is not None:
            self.activate(decision_id, activated_at)
        waiting = self._waiting.rewards.pop(decision_id, None)
        if waiting is not None:
            self.counts.waited += 1
            out.append(self.reward(decision_id, waiting[0], waiting[1]))
        return out

    # -- rewards and activations -------------------------------------------------------------
    def reward(self, decision_id: UUID, reward: float, at: datetime) -> RewardStatus:
        """Learn ``reward`` (occurred at ``at``) for ``decision_id`` unless duplicate, late or deferred."""
        value = check_reward(reward)
        key = decision_id.int
        pending = self._get(key)
        if pending is None:
            raise UnknownDecision(f"no pending decision {decision_id} (never made, or its window closed)")
        if pending.rewarded or pending.held is not None:
            self.counts.duplicates += 1
            return "duplicate"
        if at - pending.decided_at > self.window:
            self.counts.late += 1
            return "late"
        if pending.deferred and not pending.activated:
            self._pending[key] = replace(pending, held=(value, at)).packed()
            return "deferred"
        self._learn(key, pending, value)
        return "learned"

    def offer_reward(
        self, decision_id: UUID, reward: float, at: datetime, received_at: datetime | None = None
    ) -> RewardStatus:
        """:meth:`reward`, or hold the reward when its decision has not arrived yet (``waiting``)."""
        value = check_reward(reward)
        if decision_id.int in self._pending:
            return self.reward(decision_id, value, at)
        if decision_id in self._waiting.rewards:
            self.counts.duplicates += 1
            return "duplicate"
        self._waiting.rewards[decision_id] = (value, at, received_at or at)
        while len(self._waiting.rewards) > self.max_waiting:
            self._waiting.rewards.popitem(last=False)
            self.counts.dropped_waiting += 1
        return "waiting"

    def activate(self, decision_id: UUID, at: datetime) -> RewardStatus | None:
        """The user saw deferred decision ``decision_id``; learn its held reward, if any.

        An activation for a decision not seen yet waits for it like a reward does.
        """
        key = decision_id.int
        pending = self._get(key)
        if pending is None:
            self._waiting.activations[decision_id] = at
            while len(self._waiting.activations) > self.max_waiting:
                self._waiting.activations.popitem(last=False)
            return None
        held = None if pending.rewarded else pending.held  # the reward that waited for this activation
        pending = replace(pending, activated=True, held=pending.held if held is None else None)
        self._pending[key] = pending.packed()
        if held is not None:
            self._learn(key, pending, held[0])
            return "learned"
        return None

    def _get(self, key: int) -> _Pending | None:
        """The pending decision whose id's integer is ``key``, or ``None``."""
        t = self._pending.get(key)
        return None if t is None else _Pending.unpacked(t)

    def _learn(self, key: int, pending: _Pending, value: float, default: bool = False) -> None:
        """Learn ``value`` for ``pending`` (the decision ``key``), and mark it rewarded if it is still pending."""
        self.policy.learn_one(pending.context, pending.chosen, value)
        if key in self._pending:
            self._pending[key] = replace(pending, rewarded=True).packed()
        if default:
            self.counts.defaults += 1
        else:
            self.counts.learned += 1
        if pending.would_pick is not None:
            matched = value if pending.would_pick == pending.chosen.candidate_id else 0.0
            self._apprentice.append((value, matched))

    # -- windows -----------------------------------------------------------------------------
    def expire(self, now: datetime) -> int:
        """Close the windows that ended by ``now``; how many decisions were closed.

        An unrewarded decision is learned with ``default_reward`` (when set), unless it is
        deferred and was never activated: then it is skipped. Rewards and activations that
        waited longer than ``hold`` for their decision are dropped.
        """
        stale = []
        cutoff = now - self.window  # a window is closed when now - decided_at > window
        while self._closing and self._closing[0][0] < cutoff:
            at, key = heapq.heappop(self._closing)
            found = self._pending.get(key)
            if found is not None and found[0] == at:
                stale.append(key)
        if len(self._closing) > 2 * len(self._pending) + 1024:  # forgotten decisions' entries
            self._closing = [(t[0], k) for k, t in self._pending.items()]
            heapq.heapify(self._closing)
        for k in stale:
            pending = _Pending.unpacked(self._pending.pop(k))
            if pending.rewarded:
                continue
            if pending.deferred and not pending.activated:
                self.counts.skipped_deferred += 1
            elif self.default_reward is not None:
                self._learn(k, pending, self.default_reward, default=True)
        for waiting_id, (_, _, received_at) in list(self._waiting.rewards.items()):
            if now - received_at > self.hold:
                del self._waiting.rewards[waiting_id]
                self.counts.dropped_waiting += 1
        for waiting_id, at in list(self._waiting.activations.items()):
            if now - at > self.hold:
                del self._waiting.activations[waiting_id]
        return len(stale)

    # -- persistence -------------------------------------------------------------------------
    def checkpoint_copy(self) -> OnlineLearner:
        """A copy of this learner as it is now, to pickle while this one goes on learning.

        Taken under the caller's lock in milliseconds (the policy is copied; the pending records
        are shared, as they never change in place), so that the slow part, pickling every pending
        decision, runs outside it: a checkpoint of the embedded learner used to hold the lock
        every rank takes for about 20 microseconds per pending decision (seconds at 100,000).
        """
        copy = object.__new__(OnlineLearner)
        copy.__dict__.update(self.__dict__)
        copy.policy = pickle.loads(pickle.dumps(self.policy, protocol=pickle.HIGHEST_PROTOCOL))
        copy.shadows = list(self.shadows)
        copy.counts = replace(self.counts)
        copy._pending = self._pending.copy()
        copy._closing = list(self._closing)
        copy._waiting = _Waiting(self._waiting.rewards.copy(), self._waiting.activations.copy())
        copy._apprentice = deque(self._apprentice, maxlen=self._apprentice.maxlen)
        return copy

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the pending decisions in slices of :data:`PENDING_SLICE` (the heap is rebuilt)."""
        state = dict(self.__dict__)
        state.pop("_closing", None)  # rebuilt from the pending decisions
        items = list(state.pop("_pending").items())
        state["_pending_slices"] = [
            pickle.dumps(items[i : i + PENDING_SLICE], protocol=pickle.HIGHEST_PROTOCOL)
            for i in range(0, len(items), PENDING_SLICE)
        ]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle; a learner pickled whole (before the slices), or before the packed records
        (``UUID`` keys, :class:`_Pending` values), loads too."""
        slices = state.pop("_pending_slices", None)
        self.__dict__.update(state)
        if slices is not None:
            self._pending = OrderedDict(item for data in slices for item in pickle.loads(data))
        if any(isinstance(t, _Pending) for t in self._pending.values()):
            self._pending = OrderedDict(
                (k.int if isinstance(k, UUID) else k, t.packed() if isinstance(t, _Pending) else t)
                for k, t in self._pending.items()
            )
            state.pop("_closing", None)
        if slices is not None or "_closing" not in state:
            self._closing = [(t[0], k) for k, t in self._pending.items()]
            heapq.heapify(self._closing)

    def forget(self, decision_ids: Iterable[UUID]) -> int:
        """Drop these pending decisions (a user's erasure); how many were pending."""
        removed = 0
        for decision_id in decision_ids:
            if self._pending.pop(decision_id.int, None) is not None:
                removed += 1
        return removed

    def replace_policy(self, policy: Policy) -> None:
        """Restart the online state from ``policy`` (a new champion); pending decisions are kept."""
        self.policy = policy

    # -- views -------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """How many decisions are remembered."""
        return len(self._pending)

    def pending_ids(self) -> list[UUID]:
        """The decisions remembered, oldest first (the order ``max_pending`` forgets them in)."""
        return [UUID(int=k) for k in self._pending]

    @property
    def waiting(self) -> int:
        """How many rewards wait for their decision."""
        return len(self._waiting.rewards)

    @property
    def apprentice(self) -> ApprenticeStats:
        """Served against would-be reward over the latest decisions that carried ``would_pick``."""
        n = len(self._apprentice)
        if n == 0:
            return ApprenticeStats(0, 0.0, 0.0)
        return ApprenticeStats(n, sum(r for r, _ in self._apprentice) / n, sum(m for _, m in self._apprentice) / n)
