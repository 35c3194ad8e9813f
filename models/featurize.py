"""Turn a (context, candidate) pair into the features one shared scoring model reads.

Candidates are transient, so the policy never keeps a model per arm: it scores each pair from
*action-dependent features*: the candidate's own features, the context's features, and every
context x candidate product (``"priority*hour_sin"``), so that one linear model can learn that
this user prefers short tasks in the morning.

Inputs are put on comparable scales by fixed, documented transforms (no learned state), so the
same pair always gives the same features, online and offline:

- **Imputation**: a missing, NaN or infinite value of a declared feature becomes that feature's
  contract default (``UserContext`` / ``CandidateFeatures``, or 0.0 for a feature declared by
  name only). Features not declared in the featurizer's schema are ignored.
- **Scaling**: counts go through ``log1p``, hours and days are divided by their caps, priority
  maps 1..4 to 0..1; the transforms are listed in :data:`CONTEXT_TRANSFORMS` and
  :data:`CANDIDATE_TRANSFORMS`.
- **Clipping**: every transformed feature is clipped to ``[-CLIP, CLIP]`` (:data:`CLIP`, 5), so
  that one absurd value (a priority of 1e308) weighs at most as much as a value five times the
  ordinary range and cannot take a decision's whole probability mass. The transforms put
  ordinary values in [-1, 1]; z-scored features leave it only beyond five standard deviations.
- **Derived context features**: ``hour_sin``, ``hour_cos`` (the hour on a circle) and
  ``active_now`` (cosine of the distance between now and the user's usual active hour).
- **Derived candidate features**: ``due_soon`` and ``deadline_soon``, which rise smoothly to 1
  as the due date or deadline comes near (see :data:`DERIVED_CANDIDATE`).

Examples
--------
>>> f = Featurizer.for_contracts()
>>> ctx = f.context({"hour_of_day": 8.0, "usual_active_hour": 8.0})
>>> ctx["active_now"]
1.0
>>> cand = f.candidate({"priority": 4.0, "is_llm_tip": 0.0})
>>> x = f.pair_dict(f.context_vector({"hour_of_day": 8.0, "usual_active_hour": 8.0}),
...                 f.candidate_vector({"priority": 4.0}))
>>> x["priority"], x["priority*active_now"]
(1.0, 1.0)
>>> f.candidate({"priority": 1e308})["priority"]
5.0
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from data_contracts.features import CandidateFeatures, UserContext

FloatArray = npt.NDArray[np.float64]

CLIP = 5.0
"""Every transformed feature (and so every derived one) lies in ``[-CLIP, CLIP]``."""


@dataclass(frozen=True)
class Transform:
    """A fixed transform of one feature: ``log1p(max(v, 0)) / log1p(cap)`` or ``(v - shift) / cap``.

    Examples
    --------
    >>> Transform("scale", 720.0)(360.0), Transform("log1p", 0.0 + math.e - 1)(math.e - 1)
    (0.5, 1.0)
    """

    kind: Literal["log1p", "scale"]
    cap: float
    shift: float = 0.0

    def __call__(self, value: float) -> float:
        return float(self.array(np.asarray([value], dtype=np.float64))[0])

    def array(self, values: FloatArray) -> FloatArray:
        """The transform applied to an array."""
        if self.kind == "log1p":
            out: FloatArray = np.log1p(np.maximum(values, 0.0)) / math.log1p(self.cap)
            return out
        scaled: FloatArray = (values - self.shift) / self.cap
        return scaled


CONTEXT_TRANSFORMS: dict[str, Transform] = {
    "reactions_1d": Transform("log1p", 20.0),
    "reactions_7d": Transform("log1p", 100.0),
    "reactions_28d": Transform("log1p", 400.0),
    "hours_since_last_reaction": Transform("scale", 720.0),
    "completions_per_day_28d": Transform("log1p", 20.0),
    "usual_active_hour": Transform("scale", 24.0),
    "hour_of_day": Transform("scale", 24.0),
    "weekday": Transform("scale", 6.0),
}
"""Fixed transforms of context features; rates and flags (already in [0, 1]) pass through."""

CANDIDATE_TRANSFORMS: dict[str, Transform] = {
    "priority": Transform("scale", 3.0, shift=1.0),
    "age_days": Transform("log1p", 365.0),
    "days_to_deadline": Transform("scale", 365.0),
    "duration_minutes": Transform("log1p", 480.0),
    "label_count": Transform("scale", 5.0),
    "content_length": Transform("log1p", 500.0),
    "times_snoozed": Transform("log1p", 20.0),
    "times_shown": Transform("log1p", 50.0),
    "hours_until_due": Transform("scale", 720.0),
}
"""Fixed transforms of candidate features; flags pass through."""

DERIVED_CONTEXT = ("hour_sin", "hour_cos", "active_now")
"""Context features the featurizer adds when ``hour_of_day`` and ``usual_active_hour`` are declared."""

DERIVED_CANDIDATE = ("due_soon", "deadline_soon")
"""Candidate features the featurizer adds when the due date and deadline fields are declared:
``due_soon = has_due_date * exp(-max(hours_until_due, 0) / 48)`` (1 when overdue) and
``deadline_soon = has_deadline * exp(-max(days_to_deadline, 0) / 7)``."""

_DUE_FIELDS = ("has_due_date", "hours_until_due", "has_deadline", "days_to_deadline")


_Grouped = tuple[npt.NDArray[np.intp], FloatArray, npt.NDArray[np.intp], FloatArray, FloatArray]
"""Log1p columns and their divisors; scaled columns, their shifts and caps."""


def _contract_defaults(model: type[Any]) -> dict[str, float]:
    return {
        name: float(f.default)
        for name, f in model.model_fields.items()
        if name != "schema_version" and isinstance(f.default, int | float)
    }


class Featurizer:
    """Fixed-schema featurizer of (context, candidate) pairs with context x candidate interactions.

    Parameters
    ----------
    context_fields
        Context features read, in order (the derived ones are appended when possible).
    candidate_fields
        Candidate features read, in order.
    defaults
        Imputation value of each declared feature (missing, NaN or infinite input); 0.0 otherwise.
    transforms
        Fixed per-feature transforms applied after imputation; identity otherwise.
    interactions
        Add every context x candidate product (the action-dependent features). Without them a
        linear model ranks candidates the same way for every user.

    Examples
    --------
    >>> f = Featurizer(context_fields=("x",), candidate_fields=("a", "b"))
    >>> f.pair_dict(f.context_vector({"x": 2.0}), f.candidate_vector({"a": 1.0, "b": float("nan")}))
    {'a': 1.0, 'x': 2.0, 'a*x': 2.0}
    >>> len(f.feature_names)
    5
    """

    def __init__(
        self,
        context_fields: Sequence[str],
        candidate_fields: Sequence[str],
        defaults: Mapping[str, float] | None = None,
        transforms: Mapping[str, Transform] | None = None,
        interactions: bool = True,
    ) -> None:
        self.context_fields = tuple(context_fields)
        self.candidate_fields = tuple(candidate_fields)
        self.defaults = dict(defaults or {})
        self.transforms = dict(transforms or {})
        self.interactions = interactions
        ctx = self.context_fields
        self._derive = "hour_of_day" in ctx and "usual_active_hour" in ctx
        if self._derive:
            ctx = ctx + tuple(d for d in DERIVED_CONTEXT if d not in ctx)
            self._hour_idx = (self.context_fields.index("hour_of_day"), self.context_fields.index("usual_active_hour"))
        self.all_context_fields: tuple[str, ...] = ctx
        """The context features after derivation, in order."""
        cand = self.candidate_fields
        self._derive_due = all(n in cand for n in _DUE_FIELDS)
        if self._derive_due:
            self._due_idx = tuple(cand.index(n) for n in _DUE_FIELDS)
            cand = cand + DERIVED_CANDIDATE
        self.all_candidate_fields: tuple[str, ...] = cand
        """The candidate features after derivation, in order."""
        self._cross = tuple(tuple(f"{m}*{c}" for c in ctx) for m in cand) if interactions else ()
        self.feature_names: list[str] = [*cand, *ctx, *(n for row in self._cross for n in row)]
        """Every feature a pair can have: candidate, context, then interactions."""
        self._ctx = self._plan(self.context_fields)
        self._cand = self._plan(self.candidate_fields)
        fields = self.candidate_fields
        self._getter: Callable[[Mapping[str, float]], Sequence[float]] = (
            operator.itemgetter(*fields) if len(fields) > 1 else (lambda f: [f[fields[0]]] if fields else [])
        )

    def _plan(self, fields: tuple[str, ...]) -> tuple[FloatArray, list[tuple[int, Transform]]]:
        defaults = np.asarray([self.defaults.get(n, 0.0) for n in fields], dtype=np.float64)
        return defaults, [(i, self.transforms[n]) for i, n in enumerate(fields) if n in self.transforms]

    def __repr__(self) -> str:
        return (
            f"Featurizer({len(self.context_fields)} context, {len(self.candidate_fields)} candidate fields, "
            f"interactions={self.interactions})"
        )

    @classmethod
    def for_contracts(cls, interactions: bool = True) -> Featurizer:
        """The featurizer of :class:`UserContext` and :class:`CandidateFeatures` (the default)."""
        context_fields = tuple(n for n in UserContext.model_fields if n != "schema_version")
        candidate_fields = tuple(n for n in CandidateFeatures.model_fields if n != "schema_version")
        return cls(
            context_fields=context_fields,
            candidate_fields=candidate_fields,
            defaults={**_contract_defaults(UserContext), **_contract_defaults(CandidateFeatures)},
            transforms={**CONTEXT_TRANSFORMS, **CANDIDATE_TRANSFORMS},
            interactions=interactions,
        )

    # -- transforms --------------------------------------------------------------------------
    @staticmethod
    def _impute(raw: FloatArray, plan: tuple[FloatArray, list[tuple[int, Transform]]]) -> FloatArray:
        bad = ~np.isfinite(raw)
        if bad.any():
            raw = np.where(bad, np.broadcast_to(plan[0], raw.shape), raw)
        return raw

    def _transform(self, values: FloatArray, plan: tuple[FloatArray, list[tuple[int, Transform]]]) -> FloatArray:
        log_idx, log_div, scale_idx, shift, cap = self._grouped(plan)
        with np.errstate(over="ignore", invalid="ignore"):  # 1e308 / cap overflows to inf, then clipped
            if len(log_idx):
                values[..., log_idx] = np.log1p(np.maximum(values[..., log_idx], 0.0)) / log_div
            if len(scale_idx):
                values[..., scale_idx] = (values[..., scale_idx] - shift) / cap
        clipped: FloatArray = np.clip(values, -CLIP, CLIP, out=values)
        return clipped

    def _grouped(self, plan: tuple[FloatArray, list[tuple[int, Transform]]]) -> _Grouped:
        """``plan``'s transforms as two column groups, each applied in one numpy step per call
        (element by element the same arithmetic as :meth:`Transform.array`); kept on first use,
        so that policies pickled before it existed load and score alike."""
        key = "_grouped_ctx" if plan is self._ctx else "_grouped_cand"
        got: _Grouped | None = self.__dict__.get(key)
        if got is None:
            logs = [(i, t) for i, t in plan[1] if t.kind == "log1p"]
            scales = [(i, t) for i, t in plan[1] if t.kind != "log1p"]
            got = (
                np.asarray([i for i, _ in logs], dtype=np.intp),
                np.asarray([math.log1p(t.cap) for _, t in logs], dtype=np.float64),
                np.asarray([i for i, _ in scales], dtype=np.intp),
                np.asarray([t.shift for _, t in scales], dtype=np.float64),
                np.asarray([t.cap for _, t in scales], dtype=np.float64),
            )
            self.__dict__[key] = got
        return got

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_grouped_")}

    def _impute_transform(self, raw: FloatArray, plan: tuple[FloatArray, list[tuple[int, Transform]]]) -> FloatArray:
        return self._transform(self._impute(raw, plan), plan)

    def context_vector(self, context: Mapping[str, float]) -> FloatArray:
        """The transformed context as a vector over :attr:`all_context_fields`."""
        nan = math.nan
        raw = np.asarray([context.get(n, nan) for n in self.context_fields], dtype=np.float64)
        imputed = self._impute_transform(raw.copy(), self._ctx)
        if not self._derive:
            return imputed
        defaults = self._ctx[0]
        h, u = self._hour_idx
        hour = raw[h] if math.isfinite(raw[h]) else defaults[h]
        usual = raw[u] if math.isfinite(raw[u]) else defaults[u]
        angle = 2 * math.pi * hour / 24.0
        derived = [math.sin(angle), math.cos(angle), math.cos(2 * math.pi * (hour - usual) / 24.0)]
        return np.concatenate([imputed, np.asarray(derived, dtype=np.float64)])

    def candidate_matrix(self, candidates: Sequence[Mapping[str, float]]) -> FloatArray:
        """The transformed features of many candidates, one row each, over :attr:`all_candidate_fields`."""
        raw = np.asarray([self._candidate_row(f) for f in candidates], dtype=np.float64)
        fields = self.candidate_fields
        imputed = self._impute(raw.reshape(len(candidates), len(fields)), self._cand)
        if not self._derive_due:
            return self._transform(imputed, self._cand)
        has_due, hours, has_deadline, days = (imputed[:, i] for i in self._due_idx)
        derived = np.column_stack(
            [has_due * np.exp(-np.maximum(hours, 0.0) / 48.0), has_deadline * np.exp(-np.maximum(days, 0.0) / 7.0)]
        )
        return np.hstack([self._transform(imputed.copy(), self._cand), np.clip(derived, -CLIP, CLIP)])

    def _candidate_row(self, features: Mapping[str, float]) -> Sequence[float]:
        try:  # every field present (the usual case): one C-level look-up
            row: Sequence[float] = self._getter(features)
        except KeyError:
            row = [features.get(n, math.nan) for n in self.candidate_fields]
        return row

    def candidate_vector(self, features: Mapping[str, float]) -> FloatArray:
        """The transformed candidate features as a vector over :attr:`all_candidate_fields`."""
        row: FloatArray = self.candidate_matrix([features])[0]
        return row

    def context(self, context: Mapping[str, float]) -> dict[str, float]:
        """The transformed context as a dict (zeros kept)."""
        return dict(zip(self.all_context_fields, self.context_vector(context).tolist(), strict=True))

    def candidate(self, features: Mapping[str, float]) -> dict[str, float]:
        """The transformed candidate features as a dict (zeros kept)."""
        return dict(zip(self.all_candidate_fields, self.candidate_vector(features).tolist(), strict=True))

    def pair_vector(self, ctx: FloatArray, cand: FloatArray) -> FloatArray:
        """The dense features of one pair, in the order of :attr:`feature_names`."""
        if not self.interactions:
            return np.concatenate([cand, ctx])
        return np.concatenate([cand, ctx, np.outer(cand, ctx).ravel()])

    def pair_dict(self, ctx: FloatArray, cand: FloatArray) -> dict[str, float]:
        """The sparse feature dict of one pair from its transformed vectors (zeros dropped)."""
        values = self.pair_vector(ctx, cand).tolist()
        return {name: v for name, v in zip(self.feature_names, values, strict=True) if v != 0.0}

    def bilinear_scores(self, w: FloatArray, intercept: float, ctx: FloatArray, cands: FloatArray) -> FloatArray:
        """Scores of a linear model over pair features for every candidate at once.

        Equal to ``intercept + w . pair_vector(ctx, cand)`` for each row of ``cands``, computed
        as the bilinear form ``cands @ (w_cand + W_cross @ ctx) + w_ctx . ctx + intercept``
        (one matrix product instead of one feature vector per candidate).
        """
        d, c = len(self.all_candidate_fields), len(self.all_context_fields)
        effective = w[:d]
        if self.interactions:
            effective = effective + w[d + c : d + c + d * c].reshape(d, c) @ ctx
        with np.errstate(invalid="ignore", over="ignore"):  # a corrupted weight gives NaN, which the policy refuses
            base = float(w[d : d + c] @ ctx) + intercept
            out: FloatArray = cands @ effective + base
        return out


__all__ = [
    "CANDIDATE_TRANSFORMS",
    "CLIP",
    "CONTEXT_TRANSFORMS",
    "DERIVED_CANDIDATE",
    "DERIVED_CONTEXT",
    "Featurizer",
    "Transform",
]
