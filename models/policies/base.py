"""The policy protocol: score (context, candidate) pairs, rank, choose with exact probabilities.

``rank`` and ``choose`` are written once here from the scores, in the manner of River's
``reco`` rankers; explorers only say how scores become probabilities. A policy does no I/O and
draws every random number from its own ``random.Random(seed)``, so a seeded policy replays the
same choices. Policies pickle; :func:`dumps` / :func:`loads` wrap the pickle in a versioned
envelope so that a policy pickled by other code fails to load with a clear message.
"""

from __future__ import annotations

import math
import pickle
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version as _dist_version
from typing import Any, Protocol

from data_contracts.decisions import MAX_CANDIDATES

Context = Mapping[str, float]
"""A decision's context: ``UserContext`` fields by name (see :mod:`data_contracts.features`)."""

RIVER_VERSION = _dist_version("river")
"""River's version; a pickled River model only loads under the version that wrote it."""

POLICY_FORMAT = 1
"""Version of the pickled policy envelope; bump it when a policy's pickled state changes shape."""


class Candidate(Protocol):
    """Anything with an id and a feature dict, such as :class:`data_contracts.TipCandidate`."""

    @property
    def candidate_id(self) -> str: ...

    @property
    def features(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class Arm:
    """A light candidate (id and features) for simulations, benchmarks and tests.

    Examples
    --------
    >>> Arm("a", {"priority": 4.0}).features["priority"]
    4.0
    """

    candidate_id: str
    features: Mapping[str, float]


class PolicyInputError(ValueError):
    """Input a policy refuses, before any state changes."""


class NoCandidates(PolicyInputError):
    """A decision over an empty candidate list."""


class TooManyCandidates(PolicyInputError):
    """More candidates than :data:`data_contracts.decisions.MAX_CANDIDATES`."""


class DuplicateCandidate(PolicyInputError):
    """Two candidates with the same id in one decision."""


class InvalidReward(PolicyInputError):
    """A reward that is NaN or infinite."""


class PolicyFormatError(RuntimeError):
    """A pickled policy written by another version of the code (or not a policy at all)."""


@dataclass(frozen=True)
class Choice:
    """One decision: the chosen candidate and the probability of every candidate.

    Examples
    --------
    >>> c = Choice(chosen_id="b", probabilities={"a": 0.25, "b": 0.75}, scores={"a": 0.1, "b": 0.2},
    ...            ranked_ids=("b", "a"))
    >>> c.propensity
    0.75
    """

    chosen_id: str
    probabilities: dict[str, float]
    scores: dict[str, float]
    ranked_ids: tuple[str, ...]

    @property
    def propensity(self) -> float:
        """The probability with which ``chosen_id`` was chosen."""
        return self.probabilities[self.chosen_id]


def check_candidates(candidates: Sequence[Candidate]) -> None:
    """Refuse an empty, too long or ambiguous candidate list.

    Examples
    --------
    >>> check_candidates([])
    Traceback (most recent call last):
    ...
    models.policies.base.NoCandidates: a decision needs at least one candidate
    """
    if not candidates:
        raise NoCandidates("a decision needs at least one candidate")
    if len(candidates) > MAX_CANDIDATES:
        raise TooManyCandidates(f"{len(candidates)} candidates; at most {MAX_CANDIDATES} per decision")
    ids = {c.candidate_id for c in candidates}
    if len(ids) != len(candidates):
        raise DuplicateCandidate("candidate ids must be unique within a decision")


def check_reward(reward: float) -> float:
    """A finite reward as float, or :class:`InvalidReward`."""
    value = float(reward)
    if not math.isfinite(value):
        raise InvalidReward(f"reward must be finite, got {reward!r}")
    return value


def apply_floor(probabilities: Sequence[float], floor: float) -> list[float]:
    """Mix with the uniform so that every probability is at least ``floor`` (capped at 1/K).

    Examples
    --------
    >>> [round(p, 6) for p in apply_floor([1.0, 0.0, 0.0, 0.0], 0.05)]
    [0.85, 0.05, 0.05, 0.05]
    """
    k = len(probabilities)
    f = min(max(floor, 0.0), 1.0 / k)
    if f == 0.0:
        return list(probabilities)
    return [(1.0 - k * f) * p + f for p in probabilities]


def argmax_shares(scores: Sequence[float]) -> list[float]:
    """1 for the best score, split evenly among ties, 0 elsewhere.

    Examples
    --------
    >>> argmax_shares([0.1, 0.3, 0.3])
    [0.0, 0.5, 0.5]
    """
    best = max(scores)
    ties = [i for i, s in enumerate(scores) if s == best]
    out = [0.0] * len(scores)
    for i in ties:
        out[i] = 1.0 / len(ties)
    return out


class Policy(ABC):
    """Base of every policy: River-shaped scoring plus exact-probability choice.

    Subclasses implement :meth:`predict_one`, :meth:`learn_one` and :meth:`_probabilities`
    (from the candidates' scores); they may override :meth:`scores` with a vectorised version
    that equals ``[predict_one(x, c) for c in candidates]``.

    Parameters
    ----------
    floor
        Every candidate's probability is at least ``min(floor, 1/K)``.
    seed
        Seed of the policy's own random generator.
    version
        Free-form version recorded with each decision.
    """

    name = "policy"
    """Logged as the decision's ``policy``."""

    def __init__(self, floor: float = 0.0, seed: int | None = None, version: str = "dev") -> None:
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor must be in [0, 1], got {floor}")
        self.floor = floor
        self.seed = seed
        self.version = version
        self._rng = random.Random(seed)

    # -- River-shaped core -------------------------------------------------------------------
    @abstractmethod
    def predict_one(self, x: Context, candidate: Candidate) -> float:
        """The score of ``candidate`` in context ``x`` (higher is better)."""

    @abstractmethod
    def learn_one(self, x: Context, candidate: Candidate, reward: float) -> None:
        """Learn that ``candidate``, shown in context ``x``, earned ``reward``."""

    @abstractmethod
    def _probabilities(self, x: Context, candidates: Sequence[Candidate], scores: list[float]) -> list[float]:
        """Every candidate's probability of being chosen, before the floor."""

    # -- written once ------------------------------------------------------------------------
    def scores(self, x: Context, candidates: Sequence[Candidate]) -> list[float]:
        """Every candidate's score (``predict_one`` of each)."""
        return [self.predict_one(x, c) for c in candidates]

    def distribution(self, x: Context, candidates: Sequence[Candidate]) -> tuple[list[float], list[float]]:
        """Scores and floored probabilities of every candidate; draws no random number."""
        check_candidates(candidates)
        scores = self.scores(x, candidates)
        probs = apply_floor(self._probabilities(x, candidates, scores), self.floor)
        return scores, probs

    def probabilities(self, x: Context, candidates: Sequence[Candidate]) -> dict[str, float]:
        """Every candidate's probability of being chosen, by id (for off-policy evaluation)."""
        _, probs = self.distribution(x, candidates)
        return {c.candidate_id: p for c, p in zip(candidates, probs, strict=True)}

    def rank(self, x: Context, candidates: Sequence[Candidate]) -> list[str]:
        """Candidate ids from best to worst score (ties keep the input order)."""
        check_candidates(candidates)
        scores = self.scores(x, candidates)
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])
        return [candidates[i].candidate_id for i in order]

    def choose(self, x: Context, candidates: Sequence[Candidate]) -> Choice:
        """Draw one candidate from the policy's distribution; the choice carries every probability."""
        scores, probs = self.distribution(x, candidates)
        u = self._rng.random() * math.fsum(probs)
        chosen = len(candidates) - 1
        acc = 0.0
        for i, p in enumerate(probs):
            acc += p
            if u < acc:
                chosen = i
                break
        while probs[chosen] <= 0.0:  # rounding at the very end of the CDF
            chosen -= 1
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])
        ids = [c.candidate_id for c in candidates]
        return Choice(
            chosen_id=ids[chosen],
            probabilities=dict(zip(ids, probs, strict=True)),
            scores=dict(zip(ids, scores, strict=True)),
            ranked_ids=tuple(ids[i] for i in order),
        )

    def params(self) -> dict[str, Any]:
        """Constructor parameters worth logging (public scalar attributes)."""
        return {
            k: v for k, v in vars(self).items() if not k.startswith("_") and isinstance(v, int | float | str | bool)
        }

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({inner})"


def dumps(policy: Policy) -> bytes:
    """Pickle ``policy`` in an envelope that records the format and River versions.

    Examples
    --------
    >>> from models.policies.baseline import RuleBased
    >>> type(loads(dumps(RuleBased()))).__name__
    'RuleBased'
    """
    payload = pickle.dumps(policy, protocol=pickle.HIGHEST_PROTOCOL)
    envelope = {"oo_policy_format": POLICY_FORMAT, "river": RIVER_VERSION, "payload": payload}
    return pickle.dumps(envelope, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Policy:
    """Unpickle a policy written by :func:`dumps`, refusing other versions with a clear message.

    Examples
    --------
    >>> loads(pickle.dumps({"oo_policy_format": 0, "river": "0.1", "payload": b""}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    models.policies.base.PolicyFormatError: policy pickled with format 0 (river 0.1); ...: retrain ...
    """
    try:
        envelope = pickle.loads(data)
    except Exception as exc:  # any unpickling failure means: not our envelope
        raise PolicyFormatError(f"not a pickled oO policy: {exc}") from exc
    if not isinstance(envelope, dict) or "oo_policy_format" not in envelope:
        raise PolicyFormatError("not a pickled oO policy (no format envelope)")
    fmt, river_version = envelope.get("oo_policy_format"), envelope.get("river")
    if fmt != POLICY_FORMAT or river_version != RIVER_VERSION:
        raise PolicyFormatError(
            f"policy pickled with format {fmt} (river {river_version}); this code reads format "
            f"{POLICY_FORMAT} (river {RIVER_VERSION}): retrain or load it with the code that wrote it"
        )
    try:
        policy = pickle.loads(envelope["payload"])
    except Exception as exc:  # classes moved or changed shape since it was written
        raise PolicyFormatError(f"policy pickle does not match this code: {exc}") from exc
    if not isinstance(policy, Policy):
        raise PolicyFormatError(f"pickle holds a {type(policy).__name__}, not a Policy")
    return policy
