"""Exploration that stays what it says at any K, and numbers that cannot lie."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from models.featurize import CLIP, Featurizer
from models.policies import (
    BlockRidge,
    BootstrapThompson,
    EpsilonGreedy,
    InvalidDistribution,
    NonFiniteScore,
    RuleBased,
    Softmax,
)
from models.policies.base import Arm, Candidate, Context, Policy, argmax_shares

GAMMA = 0.1
CTX = {"hour_of_day": 9.0, "usual_active_hour": 8.0, "done_rate_28d": 0.4}


def arms(k: int) -> list[Arm]:
    """K candidates; the first is the most urgent (priority 4), the others priority 1."""
    return [Arm(f"c{i}", {"priority": 4.0 if i == 0 else 1.0}) for i in range(k)]


def taught(policy: EpsilonGreedy, k: int) -> EpsilonGreedy:
    """A policy that has learned that priority-4 candidates pay and priority-1 ones do not."""
    cands = arms(k)
    for _ in range(30):
        policy.learn_one(CTX, cands[0], 1.0)
        policy.learn_one(CTX, cands[1], 0.0)
    return policy


@pytest.mark.parametrize("k", [2, 10, 50, 200])
def test_epsilon_greedy_keeps_one_minus_gamma_on_the_greedy_candidate_at_any_k(k: int) -> None:
    probs = taught(EpsilonGreedy(epsilon=GAMMA, seed=0), k).probabilities(CTX, arms(k))
    assert probs["c0"] >= 1.0 - GAMMA
    assert min(probs.values()) >= GAMMA / k - 1e-15
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-9)


@pytest.mark.parametrize("k", [2, 10, 50, 200])
def test_the_floor_is_a_total_mass_spread_evenly_at_any_k(k: int) -> None:
    # a greedy policy with a floor of GAMMA: before, the floor gave every candidate
    # min(GAMMA, 1/K), which left the best candidate nothing but the floor at K >= 10
    probs = taught(EpsilonGreedy(epsilon=0.0, floor=GAMMA, seed=0), k).probabilities(CTX, arms(k))
    assert probs["c0"] == pytest.approx(1.0 - GAMMA + GAMMA / k)
    assert min(probs.values()) == pytest.approx(GAMMA / k)
    rule = RuleBased(floor=GAMMA).probabilities({}, arms(k))
    assert rule["c0"] == pytest.approx(1.0 - GAMMA + GAMMA / k)


def test_ties_are_split_evenly_before_the_floor() -> None:
    tied = [Arm(f"c{i}", {"priority": 2.0}) for i in range(4)]
    probs = EpsilonGreedy(epsilon=0.0, floor=0.2, seed=0).probabilities(CTX, tied)
    assert probs == pytest.approx(dict.fromkeys(("c0", "c1", "c2", "c3"), 0.25))
    assert argmax_shares([0.3, 0.1, 0.3]) == [0.5, 0.0, 0.5]


def test_bootstrap_members_differ_before_any_data() -> None:
    policy = BootstrapThompson(seed=0)
    per_member = np.asarray(policy.member_scores(CTX, arms(10)))
    assert len({tuple(row) for row in per_member.round(12)}) == policy.n_members
    bests = {int(np.argmax(row)) for row in per_member}
    assert len(bests) > 1  # the members do not all follow the same candidate


@pytest.mark.parametrize(
    "make",
    [lambda: EpsilonGreedy(seed=0), lambda: Softmax(seed=0), lambda: BootstrapThompson(seed=0)],
    ids=["epsilon_greedy", "softmax", "bootstrap_thompson"],
)
def test_no_default_explorer_logs_a_propensity_of_one(make) -> None:  # type: ignore[no-untyped-def]
    policy = make()
    cands = arms(5)
    for _ in range(200):  # one candidate always pays, the others never: every member agrees
        choice = policy.choose(CTX, cands)
        chosen = next(c for c in cands if c.candidate_id == choice.chosen_id)
        policy.learn_one(CTX, chosen, 1.0 if chosen is cands[0] else 0.0, choice.propensity)
        assert choice.propensity < 1.0
    assert policy.probabilities(CTX, cands)["c0"] > 0.9  # it did learn


def test_a_greedy_policy_may_log_one() -> None:
    assert taught(EpsilonGreedy(epsilon=0.0, seed=0), 3).choose(CTX, arms(3)).propensity == 1.0


def test_non_finite_scores_raise_and_serve_nothing() -> None:
    policy = taught(EpsilonGreedy(seed=0), 4)
    for bad in (math.nan, math.inf):
        policy.model._blocks[0, 0] = bad  # a corrupted scorer: the priority weight
        state = policy._rng.getstate()
        for method in (policy.choose, policy.probabilities, policy.rank):
            with pytest.raises(NonFiniteScore):
                method(CTX, arms(4))
        assert policy._rng.getstate() == state  # no random number drawn, nothing chosen


class Broken(Policy):
    """A policy whose explorer returns the given numbers."""

    def __init__(self, probs: Sequence[float]) -> None:
        super().__init__(seed=0)
        self.probs = list(probs)

    def predict_one(self, x: Context, candidate: Candidate) -> float:
        return 0.0

    def learn_one(self, x: Context, candidate: Candidate, reward: float, propensity: float | None = None) -> None:
        """Learns nothing."""

    def _probabilities(self, x: Context, candidates: Sequence[Candidate], scores: list[float]) -> list[float]:
        return self.probs


@pytest.mark.parametrize(
    "probs", [[0.5, 0.6, 0.0], [0.1, 0.1, 0.1], [1.2, -0.2, 0.0], [math.nan, 0.5, 0.5], [0.5, 0.5, 1e-8]]
)
def test_a_distribution_that_is_not_one_raises(probs: list[float]) -> None:
    with pytest.raises(InvalidDistribution):
        Broken(probs).choose(CTX, arms(3))


def test_a_distribution_within_the_tolerance_passes() -> None:
    assert Broken([0.5, 0.5, 1e-10]).choose(CTX, arms(3)).chosen_id in {"c0", "c1", "c2"}


def test_transformed_features_are_clipped_and_nan_imputed() -> None:
    f = Featurizer.for_contracts()
    assert f.candidate({"priority": 1e308})["priority"] == CLIP
    assert f.candidate({"priority": -1e308})["priority"] == -CLIP
    assert f.candidate({"hours_until_due": -1e308, "has_due_date": 1e308})["due_soon"] == CLIP
    assert f.context({"reactions_7d": 1e308})["reactions_7d"] == CLIP
    assert f.candidate({"priority": math.nan}) == f.candidate({})  # NaN: the contract's default
    raw = Featurizer(context_fields=("x",), candidate_fields=("a",))
    assert raw.context({"x": math.inf}) == {"x": 0.0}  # undeclared default: 0


def test_a_feature_of_1e308_does_not_take_all_the_mass() -> None:
    policy = taught(Softmax(temperature=0.1, seed=0), 4)
    huge = [Arm("huge", {"priority": 1e308}), *arms(4)]
    at_bound = [Arm("huge", {"priority": 1.0 + 3.0 * CLIP}), *arms(4)]  # priority maps to (p - 1) / 3
    scores = policy.scores(CTX, huge)
    assert all(math.isfinite(s) for s in scores)
    assert scores == policy.scores(CTX, at_bound)  # it weighs exactly as much as the clip bound
    probs = policy.probabilities(CTX, huge)
    # it may be the favourite (the policy learned that priority pays), but not take all the mass
    assert probs["huge"] <= 1.0 - policy.floor + policy.floor / 5 + 1e-12
    assert min(probs.values()) >= policy.floor / 5 - 1e-12


def test_block_ridge_learns_each_one_hot_arm_as_its_own_regression() -> None:
    rng = np.random.default_rng(0)
    f = Featurizer(context_fields=("x0", "x1"), candidate_fields=("a0", "a1"))
    policy = EpsilonGreedy(model=BlockRidge(), featurizer=f, seed=0)
    both = [Arm("a0", {"a0": 1.0}), Arm("a1", {"a1": 1.0})]

    def truth(arm: int, x: np.ndarray) -> float:  # the arms answer to opposite features
        return float(0.5 + 0.3 * x[0]) if arm == 0 else float(0.5 - 0.3 * x[1])

    for i, row in enumerate(rng.normal(size=(300, 2))):
        policy.learn_one({"x0": row[0], "x1": row[1]}, both[i % 2], truth(i % 2, row) + rng.normal(0, 0.05))
    for row in rng.normal(size=(20, 2)):
        scores = policy.scores({"x0": row[0], "x1": row[1]}, both)
        assert scores == pytest.approx([truth(0, row), truth(1, row)], abs=0.05)
