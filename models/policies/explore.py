"""Exploring policies over one shared River regressor of (context, candidate) features.

Each returns the exact probability of every candidate (epsilon-greedy, softmax, bootstrap
Thompson), so that a decision logs the propensity of what it chose. They build on River's
regressors (``linear_model.LinearRegression`` by default), not on ``river.bandit``, whose
policies give no probabilities.

When the scorer is a plain ``LinearRegression``, :meth:`ScoringPolicy.scores` scores all
candidates with one matrix product over the model's own weights (equal to ``predict_one`` of
each pair, which a test checks); any other River regressor (a pipeline with a scaler, a tree)
is scored pair by pair through ``predict_one``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from river import base as river_base
from river import linear_model, optim

from models.featurize import Featurizer, FloatArray
from models.policies.base import (
    Candidate,
    Context,
    Policy,
    apply_floor,
    argmax_shares,
    check_candidates,
    check_reward,
)


def default_model(learning_rate: float = 0.1, decay: float = 0.25, l2: float = 0.0) -> river_base.Regressor:
    """A River linear regression trained by SGD, the default scorer.

    The step size is ``learning_rate / (1 + t) ** decay`` after ``t`` updates (River's
    ``InverseScaling``): large at first so that a new policy learns fast, then smaller so that
    its estimates settle; ``decay=0`` keeps it constant (better under strong drift).

    Examples
    --------
    >>> type(default_model()).__name__
    'LinearRegression'
    """
    rate: float | optim.base.Scheduler = learning_rate
    if decay > 0.0:
        rate = optim.schedulers.InverseScaling(learning_rate, power=decay)
    return linear_model.LinearRegression(optimizer=optim.SGD(rate), intercept_lr=rate, l2=l2, clip_gradient=10.0)


class ScoringPolicy(Policy):
    """A policy that scores pairs with one River regressor over :class:`Featurizer` features.

    Parameters
    ----------
    model
        A River regressor; ``None`` means :func:`default_model`.
    featurizer
        ``None`` means the contracts' featurizer (``UserContext`` x ``CandidateFeatures``).
    floor, seed, version
        See :class:`~models.policies.base.Policy`.
    normalized
        Weight each learning step by ``1 / (1 + |x|^2)`` (the model must accept ``w``).
    """

    def __init__(
        self,
        model: river_base.Regressor | None = None,
        featurizer: Featurizer | None = None,
        floor: float = 0.0,
        seed: int | None = None,
        version: str = "dev",
        normalized: bool = True,
    ) -> None:
        super().__init__(floor=floor, seed=seed, version=version)
        self.normalized = normalized
        self.model = model if model is not None else default_model()
        self.featurizer = featurizer if featurizer is not None else Featurizer.for_contracts()

    # -- featurization -----------------------------------------------------------------------
    def _vectors(self, x: Context, candidates: Sequence[Candidate]) -> tuple[FloatArray, FloatArray]:
        f = self.featurizer
        ctx = f.context_vector(x)
        cands = f.candidate_matrix([c.features for c in candidates])
        return ctx, cands

    def features_one(self, x: Context, candidate: Candidate) -> dict[str, float]:
        """The pair features the model reads for ``candidate`` in context ``x``."""
        return self._features_and_weight(x, candidate)[0]

    def _features_and_weight(self, x: Context, candidate: Candidate) -> tuple[dict[str, float], float]:
        """The pair features and the step weight ``1 / (1 + |x|^2)`` (1 when not normalized)."""
        f = self.featurizer
        ctx, cand = f.context_vector(x), f.candidate_vector(candidate.features)
        weight = 1.0 / (1.0 + f.squared_norm(ctx, cand)) if self.normalized else 1.0
        return f.pair_from_vectors(ctx, cand), weight

    @staticmethod
    def _model_scores(model: river_base.Regressor, f: Featurizer, ctx: FloatArray, cands: FloatArray) -> list[float]:
        if type(model) is linear_model.LinearRegression:
            weights = model._weights  # River's own weight vector; to_numpy reads it by name
            out: list[float] = f.linear_scores(weights.to_numpy, float(model.intercept), ctx, cands).tolist()
            return out
        return [float(_river(model).predict_one(f.pair_from_vectors(ctx, row))) for row in cands]

    # -- River-shaped core -------------------------------------------------------------------
    def predict_one(self, x: Context, candidate: Candidate) -> float:
        """The model's score of ``candidate`` in context ``x``."""
        return float(_river(self.model).predict_one(self.features_one(x, candidate)))

    def learn_one(self, x: Context, candidate: Candidate, reward: float) -> None:
        """One SGD step of the scorer on the pair's features towards ``reward``.

        With ``normalized`` (the default) the step is weighted by ``1 / (1 + |x|^2)`` (normalised
        least mean squares), so one learning rate suits any number of features.
        """
        y = check_reward(reward)
        features, weight = self._features_and_weight(x, candidate)
        _river(self.model).learn_one(features, y, w=weight)

    def scores(self, x: Context, candidates: Sequence[Candidate]) -> list[float]:
        """Every candidate's score, vectorised for linear scorers."""
        ctx, cands = self._vectors(x, candidates)
        return self._model_scores(self.model, self.featurizer, ctx, cands)

    def params(self) -> dict[str, Any]:
        """Constructor parameters worth logging, including the scorer's."""
        out = super().params()
        out["model"] = type(self.model).__name__
        lr = getattr(getattr(self.model, "optimizer", None), "learning_rate", None)
        if isinstance(lr, int | float):
            out["learning_rate"] = float(lr)
        elif lr is not None:
            out["learning_rate"] = repr(lr)
        return out


class EpsilonGreedy(ScoringPolicy):
    """Epsilon-greedy over a shared scoring model of (context, candidate) features.

    Parameters
    ----------
    epsilon
        Probability mass spread uniformly over all candidates; the rest goes to the best
        (split evenly among ties).

    Examples
    --------
    >>> from data_contracts import TipCandidate
    >>> cands = [TipCandidate(candidate_id=f"t{i}", content="x", kind="todoist_task", source="todoist",
    ...                       features={"priority": float(i)}) for i in (1, 4)]
    >>> policy = EpsilonGreedy(epsilon=0.1, seed=42)
    >>> for _ in range(20):
    ...     policy.learn_one({}, cands[1], reward=1.0)
    >>> choice = policy.choose({}, cands)
    >>> round(sum(choice.probabilities.values()), 6), round(choice.probabilities["t4"], 6)
    (1.0, 0.95)
    """

    name = "epsilon_greedy"

    def __init__(self, epsilon: float = 0.1, **kwargs: Any) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def _probabilities(self, x: Context, candidates: Sequence[Candidate], scores: list[float]) -> list[float]:
        k = len(scores)
        return [self.epsilon / k + (1.0 - self.epsilon) * s for s in argmax_shares(scores)]


class Softmax(ScoringPolicy):
    """Boltzmann exploration: ``p ~ exp(score / temperature)``.

    Parameters
    ----------
    temperature
        Lower is greedier; must be positive.

    Examples
    --------
    >>> from data_contracts import TipCandidate
    >>> cands = [TipCandidate(candidate_id=f"t{i}", content="x", kind="todoist_task", source="todoist")
    ...          for i in range(4)]
    >>> Softmax(temperature=0.1, seed=0).probabilities({}, cands)
    {'t0': 0.25, 't1': 0.25, 't2': 0.25, 't3': 0.25}
    """

    name = "softmax"

    def __init__(self, temperature: float = 0.1, **kwargs: Any) -> None:
        if not temperature > 0.0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        super().__init__(**kwargs)
        self.temperature = temperature

    def _probabilities(self, x: Context, candidates: Sequence[Candidate], scores: list[float]) -> list[float]:
        top = max(scores)
        weights = [math.exp((s - top) / self.temperature) for s in scores]
        total = math.fsum(weights)
        return [w / total for w in weights]


class BootstrapThompson(ScoringPolicy):
    """Thompson-style exploration with an ensemble of online-bootstrapped River scorers.

    Each member learns every example ``k ~ Poisson(1)`` times (the online bootstrap of Oza and
    Russell), so the ensemble's disagreement tracks the scorer's uncertainty. A decision draws
    one member uniformly and follows its best candidate, so a candidate's probability is
    exactly the share of members whose best it is (ties split evenly); :meth:`choose` samples
    from these shares, which is the same distribution.

    Parameters
    ----------
    n_members
        Size of the ensemble.
    model
        The scorer every member starts as (cloned); ``None`` means :func:`default_model`.

    Examples
    --------
    >>> from data_contracts import TipCandidate
    >>> cands = [TipCandidate(candidate_id=f"t{i}", content="x", kind="todoist_task", source="todoist",
    ...                       features={"priority": float(i)}) for i in (1, 4)]
    >>> policy = BootstrapThompson(n_members=8, seed=3)
    >>> for i in range(30):
    ...     policy.learn_one({}, cands[i % 2], reward=float(i % 2))
    >>> probs = policy.probabilities({}, cands)
    >>> probs["t4"] > probs["t1"], all(p * 8 == int(p * 8) for p in probs.values())
    (True, True)
    """

    name = "bootstrap_thompson"

    def __init__(self, n_members: int = 10, **kwargs: Any) -> None:
        if n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}")
        super().__init__(**kwargs)
        self.n_members = n_members
        self._members: list[river_base.Regressor] = [self.model.clone() for _ in range(n_members)]

    def _poisson1(self) -> int:
        # Knuth's method for Poisson(1): enough for a rate this small
        limit, k, p = math.exp(-1.0), 0, self._rng.random()
        while p > limit:
            k += 1
            p *= self._rng.random()
        return k

    def predict_one(self, x: Context, candidate: Candidate) -> float:
        """The ensemble's mean score."""
        features = self.features_one(x, candidate)
        return math.fsum(float(_river(m).predict_one(features)) for m in self._members) / self.n_members

    def learn_one(self, x: Context, candidate: Candidate, reward: float) -> None:
        """Each member learns the pair ``k ~ Poisson(1)`` times."""
        y = check_reward(reward)
        features, step = self._features_and_weight(x, candidate)
        counts = [self._poisson1() for _ in self._members]
        for member, k in zip(self._members, counts, strict=True):
            for _ in range(k):  # k normalised steps (one step of weight k could overshoot)
                _river(member).learn_one(features, y, w=step)

    def member_scores(self, x: Context, candidates: Sequence[Candidate]) -> list[list[float]]:
        """Every member's scores of every candidate."""
        ctx, cands = self._vectors(x, candidates)
        return [self._model_scores(m, self.featurizer, ctx, cands) for m in self._members]

    def scores(self, x: Context, candidates: Sequence[Candidate]) -> list[float]:
        """The ensemble's mean score of every candidate."""
        per_member = self.member_scores(x, candidates)
        return [math.fsum(col) / self.n_members for col in zip(*per_member, strict=True)]

    def distribution(self, x: Context, candidates: Sequence[Candidate]) -> tuple[list[float], list[float]]:
        """Mean scores and the members' vote shares (floored), from one scoring pass."""
        check_candidates(candidates)
        per_member = self.member_scores(x, candidates)
        mean = [math.fsum(col) / self.n_members for col in zip(*per_member, strict=True)]
        return mean, apply_floor(self._shares(per_member), self.floor)

    def _shares(self, per_member: list[list[float]]) -> list[float]:
        votes = [0.0] * len(per_member[0])
        for member_scores in per_member:
            for i, s in enumerate(argmax_shares(member_scores)):
                votes[i] += s
        return [v / self.n_members for v in votes]

    def _probabilities(self, x: Context, candidates: Sequence[Candidate], scores: list[float]) -> list[float]:
        return self._shares(self.member_scores(x, candidates))


def _river(model: river_base.Regressor) -> Any:
    """The model, untyped: River annotates ``x`` as ``dict[Hashable, Any]`` and omits ``w``."""
    return model
