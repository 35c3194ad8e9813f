"""BlockRidge's prior on the weights of context features: the challengers' scorer learns the
candidate features' main effects first, and a weight on one of the many context features only
once the data insist."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest

from data_contracts.features import UserContext
from models.policies import EpsilonGreedy
from models.policies.base import Arm
from models.policies.linear import BlockRidge
from models.training import DEFAULT_GRID, CandidateSpec

CONTEXT = [n for n in UserContext.model_fields if n != "schema_version"]

Round = tuple[dict[str, float], list[Arm], Callable[[Arm], float]]


def rounds(seed: int, n: int, first_day: float) -> list[Round]:
    """Three tasks a round; what pays is the tasks' priority and shortness alone, while the context
    is noise whose history counters grow with the days (as a new user's do)."""
    r = random.Random(seed)
    out: list[Round] = []
    for i in range(n):
        day = first_day + i / 40
        ctx = {f: r.random() for f in CONTEXT}
        ctx.update(reactions_28d=10 * day * r.uniform(0.5, 1.5), reactions_7d=3 * day, completions_per_day_28d=day / 3)
        tasks = [
            Arm(
                f"t{j}",
                {
                    "priority": float(r.randint(1, 4)),
                    "duration_minutes": r.uniform(5, 180),
                    "times_snoozed": float(r.randint(0, 3)),
                },
            )
            for j in range(3)
        ]

        def value(c: Arm) -> float:
            return 0.25 + 0.15 * (c.features["priority"] - 1) / 3 - 0.1 * c.features["duration_minutes"] / 180

        out.append((ctx, tasks, value))
    return out


def best_share(l2_context: float | None, seed: int = 0) -> float:
    """How often a greedy policy trained on 400 uniformly logged rewards (10 days) picks the best
    task two weeks later."""
    policy = EpsilonGreedy(epsilon=0.0, model=BlockRidge(l2_context=l2_context), seed=0)
    r = random.Random(seed + 1)
    for ctx, tasks, value in rounds(seed, 400, first_day=0):
        shown = r.choice(tasks)
        policy.learn_one(ctx, shown, 1.0 if r.random() < value(shown) else 0.0)
    later = rounds(seed + 100, 300, first_day=14)
    hits = 0
    for ctx, tasks, value in later:
        scores = policy.scores(ctx, tasks)
        hits += tasks[scores.index(max(scores))] is max(tasks, key=value)
    return hits / len(later)


def test_a_prior_on_the_context_weights_ranks_by_what_pays_where_an_equal_one_fits_noise() -> None:
    equal, shrunk = best_share(None), best_share(1000.0)
    assert shrunk >= 0.85
    assert shrunk - equal >= 0.15


def test_the_context_weights_start_with_the_stated_precision() -> None:
    model = BlockRidge(l2=2.0, l2_context=500.0)
    model.bind_layout(["a", "b"], ["x", "y", "z"])
    cov = model._cov  # (blocks, 1 + context, 1 + context): the prior's inverse precisions
    assert np.allclose(cov[:, 0, 0], 1 / 2.0)  # main effects of a and b, and the intercept
    assert np.allclose(cov[:, 1:, 1:], np.eye(3) / 500.0)  # x, y, z: main effects and interactions


def test_a_non_positive_context_prior_is_refused() -> None:
    with pytest.raises(ValueError, match="l2_context"):
        BlockRidge(l2_context=0.0)


def test_the_training_grid_trains_ridge_challengers_with_the_context_prior() -> None:
    ridge = [s for s in DEFAULT_GRID if s.learning_rate is None]
    assert ridge and all(
        s.build().model.l2_context == CandidateSpec("softmax", None, 0.1).l2_context == 1000.0 for s in ridge
    )
    assert ridge[0].build().params()["l2_context"] == 1000.0
