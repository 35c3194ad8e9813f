"""The ``policy_training`` task: read the training window from the lake, train, log to MLflow, gate.

Kept apart from :mod:`models.training` (pure: examples in, candidates out) and
:mod:`models.registry` (MLflow) so that neither imports the other's caller: this module is the
only one that imports both.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from data_contracts import TrainingExample
from models.registry import Registry
from models.training import NotEnoughExamples, train_candidates

log = logging.getLogger(__name__)


def read_training_examples(start: datetime, end: datetime, lake: Any = None) -> list[TrainingExample]:
    """The lake's training examples decided in ``[start, end)``."""
    from data_contracts.arrow import from_table
    from oo.lake import get_lake

    lake = lake or get_lake()
    table = lake.read("training_examples", where="decided_at >= ? AND decided_at < ?", params=[start, end])
    return from_table(TrainingExample, table)


def read_skew(start: datetime, end: datetime, lake: Any = None) -> dict[str, float]:
    """Train/serve mismatch rate per feature over the feature-pipeline runs in ``[start, end)``."""
    from data_contracts import FeatureSkew
    from data_contracts.arrow import from_table
    from models.features.skew import aggregate
    from oo.lake import get_lake

    lake = lake or get_lake()
    table = lake.read("feature_skew", where="as_of >= ? AND as_of < ?", params=[start, end])
    return aggregate(from_table(FeatureSkew, table))


def train_and_register(interval_end: datetime, settings: Any = None, lake: Any = None) -> dict[str, Any]:
    """The ``policy_training`` task: read the window ending at ``interval_end``, train, log, gate.

    Idempotent over its interval: a second call for the same ``interval_end`` finds the runs
    already logged and returns their summary without training again.
    """
    from oo.settings import get_settings

    settings = settings or get_settings()
    cfg = settings.training
    registry = Registry(settings)
    interval_key = interval_end.isoformat()
    done = registry.summary_for_interval(interval_key)
    if done is not None:
        log.info("interval %s already trained; nothing to do", interval_key)
        return done
    start = interval_end - timedelta(days=cfg.window_days)
    examples = read_training_examples(start, interval_end, lake)
    if len(examples) < cfg.min_examples:
        log.warning(
            "%d training examples in [%s, %s): fewer than %d, nothing trained",
            len(examples),
            start,
            interval_end,
            cfg.min_examples,
        )
        return {"interval_end": interval_key, "examples": len(examples), "trained": 0, "promoted": False}
    skew = read_skew(start, interval_end, lake)
    try:
        outcome = train_candidates(
            examples,
            holdout_fraction=cfg.holdout_fraction,
            gate_fraction=cfg.gate_fraction,
            min_examples=cfg.min_examples,
            n_bootstrap=cfg.n_bootstrap,
            seed=cfg.seed,
            metric=cfg.gate_metric,
            clip=cfg.weight_clip,
        )
    except NotEnoughExamples as exc:  # too few to split into train / selection / gate: skip, as above
        log.warning("%d training examples in [%s, %s): %s; nothing trained", len(examples), start, interval_end, exc)
        return {"interval_end": interval_key, "examples": len(examples), "trained": 0, "promoted": False}
    return registry.register_outcome(
        outcome, interval_key=interval_key, n_examples=len(examples), skew=skew, examples=examples
    )
