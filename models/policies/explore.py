"""Exploring policies over one shared scorer of (context, candidate) features.

Each returns the exact probability of every candidate (epsilon-greedy, softmax, bootstrap
Thompson), so that a decision logs the propensity of what it chose. They do not build on
``river.bandit``, whose policies give no probabilities.

The default scorer is :class:`~models.policies.linear.BlockRidge` (ridge regression, one exact
block per candidate feature); :class:`~models.policies.linear.AdaptiveLinear` (VW's normalised
adaptive importance-invariant steps) is the first-order alternative. With either,
:meth:`ScoringPolicy.scores` scores all candidates as one bilinear form over the model's
weights, and :meth:`ScoringPolicy.learn_one` steps on one dense pair vector; no feature dict is
built (the fast scores equal ``predict_one`` and the scorer on :meth:`ScoringPolicy.features_one`,
which a test checks). Any other River regressor (a pipeline with a scaler, a tree) is scored
pair by pair through :meth:`ScoringPolicy.features_one`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from river import base as river_base

from models.featurize import Featurizer, FloatArray
from models.policies.base import (
    Candidate,
    Context,
    Policy,
    apply_floor,
    argmax_shares,
    check_candidates,
    check_distribution,
    check_propensity,
    check_reward,
    check_scores,
)
from models.policies.linear import AdaptiveLinear, BlockRidge, LinearScorer

DEFAULT_FLOOR = 0.05
"""The default floor (total uniform mass) of softmax and bootstrap Thompson, which can
otherwise put all the mass on one candidate; epsilon-greedy's epsilon already is one."""


def default_model(learning_rate: float | None = None, l2_context: float | None = None) -> river_base.Regressor:
    """The default scorer, :class:`BlockRidge` (no learning rate to tune; ``l2_context`` is its
    prior precision on the weights of context features); given a learning rate, the first-order
    :class:`AdaptiveLinear` (VW's update) with that rate.

    Examples
    --------
    >>> type(default_model()).__name__, type(default_model(0.5)).__name__
    ('BlockRidge', 'AdaptiveLinear')
    """
    if learning_rate is None:
        return BlockRidge(l2_context=l2_context)
    return AdaptiveLinear(learning_rate=learning_rate)


class ScoringPolicy(Policy):
    """A policy that scores pairs with one regressor over :class:`Featurizer` features.

    Parameters
    ----------
    model
        The scorer: a :class:`LinearScorer` (``None`` means :func:`default_model`), scored as a
        bilinear form, or any River regressor, scored pair by pair.
    featurizer
        ``None`` means the contracts' featurizer (``UserContext`` x ``CandidateFeatures``).
    floor, seed, version
        See :class:`~models.policies.base.Policy`.
    normalized
        For a River regressor other than the linear scorers only: weight each learning step
        by ``1 / (1 + |x|^2)`` (normalised least mean squares; the model must accept ``w``).
    importance_weighted
        Weigh each example by ``1 / propensity`` when :meth:`learn_one` is given one
        (importance-weighted regression, VW's ``mtr``). Off by default: a scorer that can
        represent each candidate's reward learns it without weights, and weights of 1/p add
        variance (on the bake-off they cost 2 to 8 points of reward).
    """

    def __init__(
        self,
        model: river_base.Regressor | None = None,
        featurizer: Featurizer | None = None,
        floor: float = 0.0,
        seed: int | None = None,
        version: str = "dev",
        normalized: bool = True,
        importance_weighted: bool = False,
    ) -> None:
        super().__init__(floor=floor, seed=seed, version=version)
        self.normalized = normalized
        self.importance_weighted = importance_weighted
        self.model = model if model is not None else default_model()
        self.featurizer = featurizer if featurizer is not None else Featurizer.for_contracts()
        self._bind(self.model)

    def _bind(self, model: river_base.Regressor) -> None:
        f = self.featurizer
        if isinstance(model, BlockRidge):
            if not f.interactions:
                raise ValueError("BlockRidge scores pair features with interactions; use a featurizer that has them")
            model.bind_layout(f.all_candidate_fields, f.all_context_fields)
        elif isinstance(model, LinearScorer):
            model.bind(f.feature_names)

    # -- featurization -----------------------------------------------------------------------
    def _vectors(self, x: Context, candidates: Sequence[Candidate]) -> tuple[FloatArray, FloatArray]:
        f = self.featurizer
        return f.context_vector(x), f.candidate_matrix([c.features for c in candidates])

    def _pair(self, x: Context, candidate: Candidate) -> FloatArray:
        f = self.featurizer
        return f.pair_vector(f.context_vector(x), f.candidate_vector(candidate.features))

    def features_one(self, x: Context, candidate: Candidate) -> dict[str, float]:
        """The pair features the scorer reads for ``candidate`` in context ``x`` (zeros dropped).

        Transformed, imputed and clipped as :mod:`models.featurize` documents; any River
        regressor can learn from them (the DR reward model does).
        """
        f = self.featurizer
        return f.pair_dict(f.context_vector(x), f.candidate_vector(candidate.features))

    def _model_scores(self, model: river_base.Regressor, ctx: FloatArray, cands: FloatArray) -> list[float]:
        f = self.featurizer
        if isinstance(model, LinearScorer):
            out: list[float] = f.bilinear_scores(model.weights, model.intercept, ctx, cands).tolist()
            return out
        return [float(_river(model).predict_one(f.pair_dict(ctx, row))) for row in cands]

    def _learn(self, model: river_base.Regressor, vector: FloatArray, y: float, weight: float) -> None:
        """``weight`` steps of ``model`` towards ``y`` (one importance-weighted step when it can)."""
        if isinstance(model, LinearScorer):
            model.learn_dense(vector, y, weight)
            return
        features = {n: v for n, v in zip(self.featurizer.feature_names, vector.tolist(), strict=True) if v != 0.0}
        step = 1.0 / (1.0 + float(vector @ vector)) if self.normalized else 1.0
        _river(model).learn_one(features, y, w=step * weight)

    # -- River-shaped core -------------------------------------------------------------------
    def predict_one(self, x: Context, candidate: Candidate) -> float:
        """The model's score of ``candidate`` in context ``x``."""
        if isinstance(self.model, LinearScorer):
            return self.model.predict_dense(self._pair(x, candidate))
        return float(_river(self.model).predict_one(self.features_one(x, candidate)))

    def learn_one(self, x: Context, candidate: Candidate, reward: float, propensity: float | None = None) -> None:
        """One step of the scorer on the pair's features towards ``reward`` (of importance
        weight ``1 / propensity`` when the policy is ``importance_weighted``)."""
        y = check_reward(reward)
        weight = check_propensity(propensity)
        self._learn(self.model, self._pair(x, candidate), y, weight if self.importance_weighted else 1.0)

    def scores(self, x: Context, candidates: Sequence[Candidate]) -> list[float]:
        """Every candidate's score (a bilinear form for :class:`AdaptiveLinear`)."""
        ctx, cands = self._vectors(x, candidates)
        return self._model_scores(self.model, ctx, cands)

    def params(self) -> dict[str, Any]:
        """Constructor parameters worth logging, including the scorer's."""
        out = super().params()
        out["model"] = type(self.model).__name__
        l2_context = getattr(self.model, "l2_context", None)
        if isinstance(l2_context, int | float):
            out["l2_context"] = float(l2_context)
        lr = getattr(self.model, "learning_rate", None)
        if lr is None:
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

    def __init__(self, epsilon: float = 0.05, **kwargs: Any) -> None:
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
    floor
        Total uniform mass (default :data:`DEFAULT_FLOOR`), so that no candidate's probability
        underflows to 0 and none reaches 1.

    Examples
    --------
    >>> from data_contracts import TipCandidate
    >>> cands = [TipCandidate(candidate_id=f"t{i}", content="x", kind="todoist_task", source="todoist")
    ...          for i in range(4)]
    >>> Softmax(temperature=0.1, seed=0).probabilities({}, cands)
    {'t0': 0.25, 't1': 0.25, 't2': 0.25, 't3': 0.25}
    """

    name = "softmax"

    def __init__(self, temperature: float = 0.1, floor: float = DEFAULT_FLOOR, **kwargs: Any) -> None:
        if not (temperature > 0.0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be positive and finite, got {temperature}")
        super().__init__(floor=floor, **kwargs)
        self.temperature = temperature

    def _probabilities(self, x: Context, candidates: Sequence[Candidate], scores: list[float]) -> list[float]:
        top = max(scores)
        weights = [math.exp((s - top) / self.temperature) for s in scores]
        total = math.fsum(weights)
        return [w / total for w in weights]


class BootstrapThompson(ScoringPolicy):
    """Thompson-style exploration with an ensemble of online-bootstrapped scorers.

    Each member learns every example with weight ``k ~ Poisson(1)`` (the online bootstrap of
    Oza and Russell), so the ensemble's disagreement tracks the scorer's uncertainty. Members
    of the default scorer start from different random weights of scale ``prior_scale`` (a
    randomised prior, as in Osband et al.), so they disagree before any data. A decision draws
    one member uniformly and follows its best candidate, so a candidate's probability is
    exactly the share of members whose best it is (ties split evenly), mixed with the floor;
    :meth:`choose` samples from these shares, which is the same distribution.

    Parameters
    ----------
    n_members
        Size of the ensemble.
    prior_scale
        Scale of each member's random initial weights (see :class:`AdaptiveLinear`); ignored
        for other River regressors, whose members start identical.
    floor
        Total uniform mass (default :data:`DEFAULT_FLOOR`): members that agree would otherwise
        log a propensity of 1.
    model
        The scorer every member starts as (cloned); ``None`` means :func:`default_model`.

    Examples
    --------
    >>> from data_contracts import TipCandidate
    >>> cands = [TipCandidate(candidate_id=f"t{i}", content="x", kind="todoist_task", source="todoist",
    ...                       features={"priority": float(i)}) for i in (1, 4)]
    >>> policy = BootstrapThompson(n_members=8, floor=0.0, seed=3)
    >>> for i in range(30):
    ...     policy.learn_one({}, cands[i % 2], reward=float(i % 2))
    >>> probs = policy.probabilities({}, cands)
    >>> probs["t4"] > probs["t1"], all(p * 8 == int(p * 8) for p in probs.values())
    (True, True)
    """

    name = "bootstrap_thompson"

    def __init__(
        self, n_members: int = 10, prior_scale: float = 0.1, floor: float = DEFAULT_FLOOR, **kwargs: Any
    ) -> None:
        if n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}")
        super().__init__(floor=floor, **kwargs)
        self.n_members = n_members
        self.prior_scale = prior_scale
        self._members: list[river_base.Regressor] = []
        for m in range(n_members):
            if isinstance(self.model, LinearScorer):
                member_seed = self._rng.getrandbits(32)
                member: river_base.Regressor = self.model.clone({"prior_scale": prior_scale, "seed": member_seed})
                self._bind(member)
            else:
                member = self.model.clone()
            self._members.append(member)
            del m

    def _poisson1(self) -> int:
        # Knuth's method for Poisson(1): enough for a rate this small
        limit, k, p = math.exp(-1.0), 0, self._rng.random()
        while p > limit:
            k += 1
            p *= self._rng.random()
        return k

    def predict_one(self, x: Context, candidate: Candidate) -> float:
        """The ensemble's mean score."""
        ctx = self.featurizer.context_vector(x)
        cand = self.featurizer.candidate_matrix([candidate.features])
        return math.fsum(self._model_scores(m, ctx, cand)[0] for m in self._members) / self.n_members

    def learn_one(self, x: Context, candidate: Candidate, reward: float, propensity: float | None = None) -> None:
        """Each member learns the pair with weight ``k ~ Poisson(1)`` (over the propensity when
        ``importance_weighted``)."""
        y = check_reward(reward)
        weight = check_propensity(propensity)
        weight = weight if self.importance_weighted else 1.0
        vector = self._pair(x, candidate)
        counts = [self._poisson1() for _ in self._members]
        for member, k in zip(self._members, counts, strict=True):
            if k:
                self._learn(member, vector, y, k * weight)

    def member_scores(self, x: Context, candidates: Sequence[Candidate]) -> list[list[float]]:
        """Every member's scores of every candidate."""
        ctx, cands = self._vectors(x, candidates)
        return [self._model_scores(m, ctx, cands) for m in self._members]

    def scores(self, x: Context, candidates: Sequence[Candidate]) -> list[float]:
        """The ensemble's mean score of every candidate."""
        per_member = self.member_scores(x, candidates)
        return [math.fsum(col) / self.n_members for col in zip(*per_member, strict=True)]

    def distribution(self, x: Context, candidates: Sequence[Candidate]) -> tuple[list[float], list[float]]:
        """Mean scores and the members' vote shares (floored), from one scoring pass."""
        check_candidates(candidates)
        per_member = self.member_scores(x, candidates)
        for member_scores in per_member:
            check_scores(member_scores)
        mean = [math.fsum(col) / self.n_members for col in zip(*per_member, strict=True)]
        probs = apply_floor(self._shares(per_member), self.floor)
        check_distribution(probs)
        return mean, probs

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
