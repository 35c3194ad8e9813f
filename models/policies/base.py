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

POLICY_FORMAT = 2
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


class InvalidPropensity(PolicyInputError):
    """A propensity outside (0, 1]."""


class PolicyNumericError(ArithmeticError):
    """A policy produced numbers it must not serve; nothing is chosen from them."""


class NonFiniteScore(PolicyNumericError):
    """A candidate's score is NaN or infinite (a diverged or corrupted scorer)."""


class InvalidDistribution(PolicyNumericError):
    """Probabilities that are negative, not finite, or do not sum to 1 within :data:`SUM_TOLERANCE`."""


SUM_TOLERANCE = 1e-9
"""How far from 1 a served distribution's sum may be."""


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


def check_propensity(propensity: float | None) -> float:
    """The importance weight ``1 / propensity`` (1 when unknown), or :class:`InvalidPropensity`.

    Examples
    --------
    >>> check_propensity(0.25), check_propensity(None)
    (4.0, 1.0)
    """
    if propensity is None:
        return 1.0
    p = float(propensity)
    if not (0.0 < p <= 1.0):
        raise InvalidPropensity(f"propensity must be in (0, 1], got {propensity!r}")
    return 1.0 / p


def check_reward(reward: float) -> float:
    """A finite reward as float, or :class:`InvalidReward`."""
    value = float(reward)
    if not math.isfinite(value):
        raise InvalidReward(f"reward must be finite, got {reward!r}")
    return value


def check_scores(scores: Sequence[float]) -> None:
    """Refuse NaN or infinite scores with :class:`NonFiniteScore`.

    Examples
    --------
    >>> check_scores([0.1, float("nan")])
    Traceback (most recent call last):
    ...
    models.policies.base.NonFiniteScore: 1 of 2 scores are not finite (first at position 1)
    """
    bad = [i for i, s in enumerate(scores) if not math.isfinite(s)]
    if bad:
        raise NonFiniteScore(f"{len(bad)} of {len(scores)} scores are not finite (first at position {bad[0]})")


def check_distribution(probabilities: Sequence[float]) -> None:
    """Refuse a distribution that is not finite, has a negative entry or does not sum to 1.

    Examples
    --------
    >>> check_distribution([0.5, 0.5])
    >>> check_distribution([0.5, 0.6])
    Traceback (most recent call last):
    ...
    models.policies.base.InvalidDistribution: probabilities sum to 1.1, not 1
    """
    if not all(math.isfinite(p) and p >= 0.0 for p in probabilities):
        raise InvalidDistribution(f"probabilities must be finite and non-negative, got {list(probabilities)}")
    total = math.fsum(probabilities)
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise InvalidDistribution(f"probabilities sum to {total:.12g}, not 1")


def apply_floor(probabilities: Sequence[float], floor: float) -> list[float]:
    """Mix with the uniform: ``p' = (1 - floor) p + floor / K``.

    ``floor`` is the *total* mass spread uniformly, so every probability is at least
    ``floor / K`` and the explorer's own distribution keeps ``1 - floor`` of the mass, at any
    number of candidates K.

    Examples
    --------
    >>> [round(p, 6) for p in apply_floor([1.0, 0.0, 0.0, 0.0], 0.2)]
    [0.85, 0.05, 0.05, 0.05]
    """
    if floor == 0.0:
        return list(probabilities)
    k = len(probabilities)
    return [(1.0 - floor) * p + floor / k for p in probabilities]


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
        Total probability mass spread uniformly over the candidates (``p' = (1 - floor) p +
        floor / K``): every candidate gets at least ``floor / K`` and the policy's own choice
        keeps at least ``1 - floor``.
    seed
        Seed of the policy's own random generator.
    version
        Recorded with each decision: ``"dev"`` for a policy never registered; the registry sets
        it (an attribute) to the registered version.
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
    def learn_one(self, x: Context, candidate: Candidate, reward: float, propensity: float | None = None) -> None:
        """Learn that ``candidate``, shown in context ``x``, earned ``reward``.

        ``propensity`` is the probability with which ``candidate`` was chosen, when known;
        scoring policies then weigh the example by ``1 / propensity`` (importance-weighted
        regression, which keeps the scorer's estimates unbiased under their own exploration).
        """

    @abstractmethod
    def _probabilities(self, x: Context, candidates: Sequence[Candidate], scores: list[float]) -> list[float]:
        """Every candidate's probability of being chosen, before the floor."""

    # -- written once ------------------------------------------------------------------------
    def scores(self, x: Context, candidates: Sequence[Candidate]) -> list[float]:
        """Every candidate's score (``predict_one`` of each)."""
        return [self.predict_one(x, c) for c in candidates]

    def distribution(self, x: Context, candidates: Sequence[Candidate]) -> tuple[list[float], list[float]]:
        """Scores and floored probabilities of every candidate; draws no random number.

        Raises :class:`NonFiniteScore` or :class:`InvalidDistribution` rather than return
        numbers that must not be served.
        """
        check_candidates(candidates)
        scores = self.scores(x, candidates)
        check_scores(scores)
        probs = apply_floor(self._probabilities(x, candidates, scores), self.floor)
        check_distribution(probs)
        return scores, probs

    def probabilities(self, x: Context, candidates: Sequence[Candidate]) -> dict[str, float]:
        """Every candidate's probability of being chosen, by id (for off-policy evaluation)."""
        _, probs = self.distribution(x, candidates)
        return {c.candidate_id: p for c, p in zip(candidates, probs, strict=True)}

    def rank(self, x: Context, candidates: Sequence[Candidate]) -> list[str]:
        """Candidate ids from best to worst score (ties keep the input order)."""
        check_candidates(candidates)
        scores = self.scores(x, candidates)
        check_scores(scores)
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])
        return [candidates[i].candidate_id for i in order]

    def choose(self, x: Context, candidates: Sequence[Candidate]) -> Choice:
        """Draw one candidate from the policy's distribution; the choice carries every probability."""
        scores, probs = self.distribution(x, candidates)
        u = self._rng.random()
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
