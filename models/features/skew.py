"""Train/serve skew: do the features logged with each decision match the offline store's
point-in-time values for the same moment?

Serving logs what the policy saw (``Decision.features`` for the context, each
``TipCandidate.features`` for a candidate). Training reads the offline store. Any difference
means the policy trains on something else than what it serves on: a bug in one of the two paths,
a push the batch disagrees with, or a late event. :func:`compare` gives the mismatch rate per
feature from the point-in-time features that
:func:`models.features.datasets.historical_features` reads (it imports nothing of that module, so
the two never import each other); the training DAG logs it to MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from data_contracts import CandidateFeatures, Decision, FeatureSkew, UserContext
from models.features.online import features_dict

__all__ = ["SkewReport", "aggregate", "compare"]


@dataclass
class SkewReport:
    """Mismatches per feature over the compared decisions."""

    compared: dict[str, int] = field(default_factory=dict)
    mismatched: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[tuple[str, float, float]]] = field(default_factory=dict)

    @property
    def rates(self) -> dict[str, float]:
        """Mismatch rate per feature (features never logged are absent)."""
        return {f: self.mismatched.get(f, 0) / n for f, n in sorted(self.compared.items()) if n}

    def records(self, as_of: datetime) -> list[FeatureSkew]:
        """One :class:`FeatureSkew` row per compared feature, for the lake's ``feature_skew``."""
        return [
            FeatureSkew(as_of=as_of, feature=f, compared=n, mismatched=self.mismatched.get(f, 0), rate=rate)
            for (f, n), rate in zip(sorted(self.compared.items()), self.rates.values(), strict=True)
            if n
        ]

    def add(self, where: str, logged: Mapping[str, float], offline: Mapping[str, float], tol: float) -> None:
        """Compare one logged feature dict with its offline counterpart."""
        for name, value in logged.items():
            if name not in offline:
                continue
            self.compared[name] = self.compared.get(name, 0) + 1
            if not math.isclose(float(value), offline[name], rel_tol=tol, abs_tol=tol):
                self.mismatched[name] = self.mismatched.get(name, 0) + 1
                shown = self.examples.setdefault(name, [])
                if len(shown) < 3:
                    shown.append((where, float(value), offline[name]))


def compare(
    decisions: Sequence[Decision],
    offline: Mapping[tuple[UUID, str], tuple[UserContext, CandidateFeatures]],
    tol: float = 1e-6,
) -> SkewReport:
    """A :class:`SkewReport` of logged features against ``offline`` (from
    :func:`models.features.datasets.historical_features`)."""
    report = SkewReport()
    for d in decisions:
        for i, c in enumerate(d.candidates):
            ctx, cand = offline[(d.decision_id, c.candidate_id)]
            if i == 0 and d.features:
                report.add(f"{d.decision_id}", d.features, features_dict(ctx), tol)
            if c.features:
                report.add(f"{d.decision_id}/{c.candidate_id}", c.features, features_dict(cand), tol)
    return report


def aggregate(rows: Sequence[FeatureSkew]) -> dict[str, float]:
    """Mismatch rate per feature over several pipeline runs (mismatches / comparisons).

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> aggregate([FeatureSkew(as_of=t, feature="priority", compared=3, mismatched=1, rate=1 / 3),
    ...            FeatureSkew(as_of=t.replace(day=2), feature="priority", compared=1, mismatched=0, rate=0.0)])
    {'priority': 0.25}
    """
    compared: dict[str, int] = {}
    mismatched: dict[str, int] = {}
    for r in rows:
        compared[r.feature] = compared.get(r.feature, 0) + r.compared
        mismatched[r.feature] = mismatched.get(r.feature, 0) + r.mismatched
    return {f: mismatched[f] / n for f, n in sorted(compared.items())}
