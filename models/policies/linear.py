"""Dense linear scorers of pair features: :class:`BlockRidge` (the default) and :class:`AdaptiveLinear`.

:class:`BlockRidge` is ridge regression with one exact posterior block per candidate feature
(see its docstring); it needs no learning rate, which is why it is the default: on the
bake-off, the first-order scorer below needs a per-dataset rate to come near it.

:class:`AdaptiveLinear` is the update Vowpal Wabbit runs by default (``--adaptive --normalized
--invariant``), written over dense NumPy vectors so that a policy can score a context x candidate interaction
as a bilinear form (see :meth:`models.featurize.Featurizer.bilinear_scores`) instead of
building one feature dict per candidate. River's linear models keep their weights in dicts
and take one global step size, which is why this one is written here rather than taken from
River; it still is a River regressor (``predict_one`` / ``learn_one`` over feature dicts,
``clone``), so it plugs in wherever one is expected.

Per feature ``i`` the model keeps a weight ``w_i``, the largest ``|x_i|`` seen so far ``N_i``
(*normalised*: a feature's scale does not matter; when ``N_i`` grows, ``w_i`` is rescaled by
``N_i / |x_i|`` as VW does with adaptive steps) and the sum of its squared gradients ``G_i`` (*adaptive*, as in
AdaGrad: rarely seen features keep large steps, frequent ones settle). A step on ``(x, y)``
with importance weight ``h`` moves the prediction ``p`` towards ``y`` along the direction
``d_i = x_i / (N_i sqrt(G_i))`` by the closed-form *importance-invariant* amount
``(y - p) (1 - exp(-eta h s))`` with ``s = x . d`` (Karampatziakis and Langford, 2011): it
never overshoots ``y``, whatever the number of features or the weight, and a weight of ``k``
equals ``k`` tiny steps. As in VW, the rate is also divided by the running root mean square of
the normalised example norm, so that it does not grow with the number of features.

Examples
--------
>>> model = AdaptiveLinear()
>>> for _ in range(30):
...     model.learn_one({"a": 1.0}, 1.0)
...     model.learn_one({"b": 10.0}, 0.0)
>>> round(model.predict_one({"a": 1.0}), 2), round(model.predict_one({"b": 10.0}), 2)
(1.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from river import base as river_base

FloatArray = npt.NDArray[np.float64]


class LinearScorer(river_base.Regressor):
    """Base of the dense linear scorers: ``w . x + intercept`` over named features.

    Features get positions in the order they are first seen (:meth:`bind` declares them all
    at once); a policy reads :attr:`weights` and :attr:`intercept` to score candidates as a
    bilinear form and steps on dense vectors with :meth:`learn_dense`. ``predict_one`` and
    ``learn_one`` take feature dicts, as River regressors do.

    Parameters
    ----------
    intercept_init
        The score before any data.
    prior_scale
        Standard deviation of the random initial weights, divided by ``sqrt(n_features)`` so
        that the initial score of a unit-scale pair has about this standard deviation. 0 starts
        from zero weights; bootstrap ensembles set it so that members differ from the start
        (a randomised prior).
    seed
        Seed of the initial weights (only used when ``prior_scale > 0``).
    """

    def __init__(self, intercept_init: float = 0.0, prior_scale: float = 0.0, seed: int | None = None) -> None:
        if not math.isfinite(intercept_init):
            raise ValueError(f"intercept_init must be finite, got {intercept_init}")
        if not (prior_scale >= 0.0 and math.isfinite(prior_scale)):
            raise ValueError(f"prior_scale must be non-negative and finite, got {prior_scale}")
        self.intercept_init = intercept_init
        self.prior_scale = prior_scale
        self.seed = seed
        self._index: dict[Hashable, int] = {}
        self._w: FloatArray = np.zeros(0)
        self._intercept = float(intercept_init)
        self.n_updates = 0

    @property
    def intercept(self) -> float:
        """The score of an all-zero pair."""
        return self._intercept

    # -- feature space -----------------------------------------------------------------------
    def bind(self, names: Sequence[str]) -> None:
        """Declare features ``names`` in order: they take positions ``0 .. len(names) - 1``.

        The dense methods (:meth:`weights`, :meth:`learn_dense`) read those positions. Binding
        the same names again is a no-op; binding other names to a bound model raises.
        """
        names = list(names)
        if self._index:
            if list(self._index)[: len(names)] != names:
                raise ValueError("this model is already bound to other features")
            return
        self._grow(names)

    def _grow(self, names: Sequence[Hashable]) -> None:
        start = len(self._index)
        for n in names:
            self._index.setdefault(n, len(self._index))
        added = len(self._index) - start
        if added == 0:
            return
        prior = np.zeros(added)
        if self.prior_scale > 0.0:
            rng = np.random.default_rng(self.seed)
            prior = rng.normal(0.0, self.prior_scale / math.sqrt(max(len(self._index), 1)), size=added)
        self._w = np.concatenate([self._w, prior])
        self._extend(added)

    def _extend(self, added: int) -> None:
        """Make room for ``added`` new features in the scorer's own state."""

    @property
    def weights(self) -> FloatArray:
        """The weights of the bound features, by position (a view)."""
        return self._w

    def _dense(self, x: Mapping[Hashable, Any]) -> FloatArray:
        self._grow([n for n in x if n not in self._index])
        dense = np.zeros(len(self._index))
        for name, value in x.items():
            dense[self._index[name]] = float(value)
        return dense

    # -- River-shaped ------------------------------------------------------------------------
    def predict_one(self, x: dict[Hashable, Any]) -> float:
        """``w . x + intercept``; unknown features weigh nothing."""
        total = self._intercept
        for name, value in x.items():
            i = self._index.get(name)
            if i is not None:
                total += float(self._w[i]) * float(value)
        return total

    def learn_one(self, x: dict[Hashable, Any], y: float, w: float = 1.0) -> None:
        """One step towards ``y`` with importance weight ``w``."""
        self.learn_dense(self._dense(x), y, w)

    # -- dense -------------------------------------------------------------------------------
    def predict_dense(self, x: FloatArray) -> float:
        """``w . x + intercept`` for a vector over the bound features."""
        return float(self._w[: len(x)] @ x) + self.intercept

    def learn_dense(self, x: FloatArray, y: float, weight: float = 1.0) -> None:
        """One step towards ``y`` with importance weight ``weight`` on a vector over the bound features."""
        raise NotImplementedError


class AdaptiveLinear(LinearScorer):
    """Linear regression by normalised adaptive importance-invariant gradient steps (VW's default).

    Parameters
    ----------
    learning_rate
        ``eta``; VW's default is 0.5.
    intercept_init, prior_scale, seed
        See :class:`LinearScorer`.
    """

    def __init__(
        self, learning_rate: float = 0.5, intercept_init: float = 0.0, prior_scale: float = 0.0, seed: int | None = None
    ) -> None:
        if not (learning_rate > 0.0 and math.isfinite(learning_rate)):
            raise ValueError(f"learning_rate must be positive and finite, got {learning_rate}")
        self.learning_rate = learning_rate
        self._g2: FloatArray = np.zeros(0)
        self._norm: FloatArray = np.zeros(0)
        self._intercept_g2 = 0.0
        self._sum_weight = 0.0
        self._sum_norm = 0.0
        super().__init__(intercept_init=intercept_init, prior_scale=prior_scale, seed=seed)

    def _extend(self, added: int) -> None:
        self._g2 = np.concatenate([self._g2, np.zeros(added)])
        self._norm = np.concatenate([self._norm, np.zeros(added)])

    def learn_dense(self, x: FloatArray, y: float, weight: float = 1.0) -> None:
        """One importance-invariant step towards ``y`` on a vector over the bound features.

        ``x`` must be finite; a zero or negative ``weight`` changes nothing.
        """
        if weight <= 0.0:
            return
        n = len(x)
        w, g2, norm = self._w[:n], self._g2[:n], self._norm[:n]
        p = float(w @ x) + self._intercept
        g = p - y
        if g == 0.0:
            return
        ax = np.abs(x)
        grow = ax > norm
        if grow.any():
            seen = grow & (norm > 0.0)
            if seen.any():  # VW's normalised rescaling (adaptive form) when N_i grows
                w[seen] *= norm[seen] / ax[seen]
            norm[grow] = ax[grow]
        g2 += (weight * g * g) * (x * x)
        self._intercept_g2 += weight * g * g
        active = ax > 0.0
        rate = np.zeros(n)
        rate[active] = 1.0 / (norm[active] * np.sqrt(g2[active]))
        scaled = x[active] / norm[active]
        self._sum_weight += weight
        self._sum_norm += weight * (float(scaled @ scaled) + 1.0)
        eta = self.learning_rate * math.sqrt(self._sum_weight / self._sum_norm)
        direction = x * rate
        intercept_rate = 1.0 / math.sqrt(self._intercept_g2)
        s = float(x @ direction) + intercept_rate
        step = -g * -math.expm1(-eta * weight * s) / s
        w += step * direction
        self._intercept += step * intercept_rate
        self.n_updates += 1


class BlockRidge(LinearScorer):
    """Online ridge regression over the pair features, one exact block per candidate feature.

    A pair's features are ``cand_m * (1, ctx)`` for every candidate feature ``m`` (the feature
    itself and its interactions with the context) and ``(1, ctx)`` (the intercept and the
    context's main effects). Each of these ``d + 1`` blocks keeps its own ridge posterior, of
    size ``(c + 1)^2`` for ``c`` context features, and the blocks share each step's prediction
    error: the *decoupled* recursive least squares of the decoupled extended Kalman filter
    (Puskorius and Feldkamp, 1991). Within a block the update is exact (no learning rate); only
    the correlations between blocks are ignored, which makes a step ``O(d c^2)`` instead of
    ``O((d c)^2)``. When candidates are one-hot (the bake-off's arms), each arm's block is
    exactly that arm's own ridge regression, as in LinUCB.

    Parameters
    ----------
    l2
        Ridge penalty: the prior precision of the intercept and of the candidate features' main
        effects (and of every weight when ``l2_context`` is None).
    l2_context
        The prior precision of every weight on a context feature: the context's main effects and
        its interactions with the candidate features (``None``: ``l2``). Larger than ``l2`` is a
        hierarchical prior: the candidate features' main effects are learned first, and a weight on
        one of the many context features only once the data insist. With ``c`` context features each
        candidate feature has ``c`` interactions and one main effect, so on a few hundred logged
        rewards an equal prior lets those weights fit noise, and extrapolate it as the context drifts
        (counters that grow with a user's history).
    intercept_init
        The prior mean of the score. The default 0.5 is the middle of the reward range [0, 1]:
        before any data every candidate is as likely to be good as bad.
    prior_scale, seed
        See :class:`LinearScorer` (random prior means of the weights, for bootstrap members).

    Examples
    --------
    >>> model = BlockRidge(l2=1e-6, intercept_init=0.0)
    >>> model.bind_layout(["a"], ["t"])
    >>> for t in (1.0, 2.0, 3.0):
    ...     model.learn_one({"a": 1.0, "t": t, "a*t": t}, 2.0 * t + 1.0)
    >>> round(model.predict_one({"a": 1.0, "t": 4.0, "a*t": 4.0}), 1)  # 9 for exact least squares
    8.8
    """

    def __init__(
        self,
        l2: float = 1.0,
        intercept_init: float = 0.5,
        prior_scale: float = 0.0,
        seed: int | None = None,
        l2_context: float | None = None,
    ) -> None:
        for name, value in (("l2", l2), ("l2_context", l2 if l2_context is None else l2_context)):
            if not (value > 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        self.l2 = l2
        self.l2_context = l2_context
        self._d = self._c = 0
        self._blocks: FloatArray = np.zeros((1, 1))  # weights, (d + 1, c + 1); row d is the intercept block
        self._cov: FloatArray = np.zeros((1, 1, 1))  # inverse precisions, (d + 1, c + 1, c + 1)
        super().__init__(intercept_init=intercept_init, prior_scale=prior_scale, seed=seed)

    def bind_layout(self, candidate_fields: Sequence[str], context_fields: Sequence[str]) -> None:
        """Declare the pair layout of :class:`models.featurize.Featurizer`: candidate features,
        context features, then every ``"cand*ctx"`` product (required before learning)."""
        d, c = len(candidate_fields), len(context_fields)
        names = [*candidate_fields, *context_fields, *(f"{m}*{x}" for m in candidate_fields for x in context_fields)]
        if self._index:
            if self._d != d or self._c != c:
                raise ValueError("this model is already bound to another layout")
            self.bind(names)
            return
        self.bind(names)
        self._d, self._c = d, c
        self._cov = np.tile(np.eye(c + 1) / self.l2, (d + 1, 1, 1))
        if self.l2_context is not None:  # columns 1..c of every block: the weights on the context
            self._cov[:, np.arange(1, c + 1), np.arange(1, c + 1)] = 1.0 / self.l2_context
        blocks = np.zeros((d + 1, c + 1))
        blocks[:d, 0] = self._w[:d]
        blocks[d, 1:] = self._w[d : d + c]
        blocks[:d, 1:] = self._w[d + c :].reshape(d, c)
        self._blocks = blocks

    def _extend(self, added: int) -> None:
        if self._d or self._c:
            raise ValueError(f"{type(self).__name__} learns only the features of its layout")

    @property
    def weights(self) -> FloatArray:
        """The weights in the layout's order (candidate, context, products)."""
        d, b = self._d, self._blocks
        return np.concatenate([b[:d, 0], b[d, 1:], b[:d, 1:].ravel()])

    @property
    def intercept(self) -> float:
        """The score of an all-zero pair."""
        return self.intercept_init + float(self._blocks[self._d, 0]) if self._d or self._c else self.intercept_init

    def predict_one(self, x: dict[Hashable, Any]) -> float:
        """The score of a pair given as a feature dict (unknown features weigh nothing)."""
        known = {n: v for n, v in x.items() if n in self._index}
        return self.predict_dense(self._dense(known))

    def learn_one(self, x: dict[Hashable, Any], y: float, w: float = 1.0) -> None:
        """One step towards ``y`` with importance weight ``w``, from a feature dict of the layout."""
        unknown = [n for n in x if n not in self._index]
        if unknown:
            raise ValueError(f"features outside the layout: {unknown[:5]}")
        self.learn_dense(self._dense(x), y, w)

    def predict_dense(self, x: FloatArray) -> float:
        """The score of a pair vector in the layout's order."""
        d, c = self._d, self._c
        v = np.concatenate([[1.0], x[d : d + c]])
        return float(x[:d] @ (self._blocks[:d] @ v)) + float(self._blocks[d] @ v) + self.intercept_init

    def learn_dense(self, x: FloatArray, y: float, weight: float = 1.0) -> None:
        """One decoupled ridge step with importance weight ``weight`` on a pair vector.

        Reads the candidate part ``x[:d]`` and the context part ``x[d:d+c]`` (the products
        are those two's outer product); ``x`` must be finite.
        """
        if weight <= 0.0:
            return
        d, c = self._d, self._c
        if not (d or c):
            raise ValueError(f"{type(self).__name__} needs bind_layout before learning")
        v = np.empty(c + 1)
        v[0] = 1.0
        v[1:] = x[d : d + c]
        scale = np.append(x[:d], 1.0)
        active = np.flatnonzero(scale)
        everyone = len(active) == d + 1
        s = scale if everyone else scale[active]
        cov = self._cov if everyone else self._cov[active]
        blocks = self._blocks if everyone else self._blocks[active]
        k = len(s)
        gain = (cov.reshape(k * (c + 1), c + 1) @ v).reshape(k, c + 1)  # each active block's A^-1 v
        err = y - (float(s @ (blocks @ v)) + self.intercept_init)
        s2 = s * s
        denom = 1.0 / weight + float(s2 @ (gain @ v))
        blocks += (s * (err / denom))[:, None] * gain
        scaled = gain * (s2 / denom)[:, None]
        cov -= scaled[:, :, None] * gain[:, None, :]
        if not everyone:
            self._blocks[active] = blocks
            self._cov[active] = cov
        self.n_updates += 1
