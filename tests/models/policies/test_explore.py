"""Explorers: exact probabilities that sum to one and match what they actually choose."""

from __future__ import annotations

import math
import pickle
from collections import Counter

import pytest
from scipy import stats

from data_contracts.decisions import MAX_CANDIDATES
from models.featurize import Featurizer
from models.policies import (
    BootstrapThompson,
    DuplicateCandidate,
    EpsilonGreedy,
    InvalidPropensity,
    InvalidReward,
    NoCandidates,
    PolicyFormatError,
    RuleBased,
    Softmax,
    TooManyCandidates,
    dumps,
    loads,
    shadow_picks,
)
from models.policies.base import POLICY_FORMAT, Arm
from models.simulation import Simulator

ONE_HOT = ("is_recurring", "has_deadline", "has_due_time", "is_llm_tip", "task_known", "has_due_date")
CANDS = [Arm(f"c{i}", {"priority": 1.0 + i % 4, ONE_HOT[i]: 1.0}) for i in range(6)]
"""Six candidates a linear scorer can tell apart (each has its own flag)."""
CTX = {"hour_of_day": 9.0, "usual_active_hour": 8.0, "done_rate_28d": 0.4}


def trained(policy):
    """A policy that has learned that c2 pays and c0 does not."""
    for i in range(60):
        policy.learn_one(CTX, CANDS[2], 1.0)
        policy.learn_one(CTX, CANDS[i % 6], 0.3 if i % 6 != 0 else 0.0)
    return policy


EXPLORERS = {
    "epsilon_greedy": lambda: EpsilonGreedy(epsilon=0.3, floor=0.12, seed=7),
    "softmax": lambda: Softmax(temperature=0.05, floor=0.12, seed=7),
    "bootstrap_thompson": lambda: BootstrapThompson(n_members=10, floor=0.12, seed=7),
}


@pytest.mark.parametrize("name", EXPLORERS)
def test_probabilities_sum_to_one_and_respect_the_floor(name: str) -> None:
    policy = trained(EXPLORERS[name]())
    probs = policy.probabilities(CTX, CANDS)
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-9)
    assert min(probs.values()) >= 0.12 / len(CANDS) - 1e-12  # the floor is a total mass, spread evenly
    assert max(probs, key=lambda k: probs[k]) == "c2"  # the better candidate wins


@pytest.mark.parametrize("name", EXPLORERS)
def test_choice_frequencies_match_the_stated_probabilities(name: str) -> None:
    policy = trained(EXPLORERS[name]())
    probs = policy.probabilities(CTX, CANDS)
    n = 6000
    choices = [policy.choose(CTX, CANDS) for _ in range(n)]
    assert all(c.probabilities == probs for c in choices)  # frozen policy: same distribution each time
    counts = Counter(c.chosen_id for c in choices)
    observed = [counts[c.candidate_id] for c in CANDS]
    expected = [probs[c.candidate_id] * n for c in CANDS]
    # chi-square goodness of fit: a correct sampler fails this 1 time in 1000 (seeded, so never flaky)
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    assert all(c.propensity == probs[c.chosen_id] for c in choices[:50])


def test_thompson_probability_is_the_share_of_members_whose_best_it_is() -> None:
    policy = trained(BootstrapThompson(n_members=7, floor=0.0, seed=3))
    per_member = policy.member_scores(CTX, CANDS)
    bests = Counter(max(range(6), key=lambda i: s[i]) for s in per_member)
    probs = policy.probabilities(CTX, CANDS)
    assert {CANDS[i].candidate_id: n / 7 for i, n in bests.items()} == {k: v for k, v in probs.items() if v}


def test_bilinear_scores_equal_the_scorer_on_the_pair_features() -> None:
    sim = Simulator(n_users=3, seed=5)
    policy = EpsilonGreedy(seed=1)
    for rnd in sim.rounds(50):
        choice = policy.choose(rnd.context, rnd.candidates)
        chosen = next(c for c in rnd.candidates if c.candidate_id == choice.chosen_id)
        policy.learn_one(rnd.context, chosen, sim.react(rnd, choice.chosen_id).reward, choice.propensity)
    fast = policy.scores(rnd.context, rnd.candidates)
    one_by_one = [policy.predict_one(rnd.context, c) for c in rnd.candidates]
    from_dicts = [policy.model.predict_one(policy.features_one(rnd.context, c)) for c in rnd.candidates]
    assert fast == pytest.approx(one_by_one, rel=1e-9, abs=1e-12)
    assert fast == pytest.approx(from_dicts, rel=1e-9, abs=1e-12)
    assert len(set(fast)) > 1  # the scorer learned something that tells candidates apart


@pytest.mark.parametrize("name", EXPLORERS)
def test_seeded_policies_replay_and_pickle(name: str) -> None:
    a, b = trained(EXPLORERS[name]()), trained(EXPLORERS[name]())
    assert [a.choose(CTX, CANDS).chosen_id for _ in range(30)] == [b.choose(CTX, CANDS).chosen_id for _ in range(30)]
    c = loads(dumps(a))
    assert [a.choose(CTX, CANDS).chosen_id for _ in range(30)] == [c.choose(CTX, CANDS).chosen_id for _ in range(30)]


def test_a_pickle_from_other_code_fails_clearly() -> None:
    data = pickle.loads(dumps(RuleBased()))
    data["oo_policy_format"] = 99
    with pytest.raises(PolicyFormatError, match="format 99"):
        loads(pickle.dumps(data))
    with pytest.raises(PolicyFormatError, match="no format envelope"):
        loads(pickle.dumps(RuleBased()))
    data["oo_policy_format"] = POLICY_FORMAT
    data["payload"] = b"not a pickle"
    with pytest.raises(PolicyFormatError, match="does not match this code"):
        loads(pickle.dumps(data))


@pytest.mark.parametrize(
    ("candidates", "error"),
    [
        ([], NoCandidates),
        ([Arm(f"c{i}", {}) for i in range(MAX_CANDIDATES + 1)], TooManyCandidates),
        ([Arm("a", {}), Arm("a", {})], DuplicateCandidate),
    ],
)
def test_bad_candidate_lists_are_refused(candidates, error) -> None:  # type: ignore[no-untyped-def]
    policy = EpsilonGreedy(seed=0)
    for method in (policy.choose, policy.rank, policy.probabilities):
        with pytest.raises(error):
            method(CTX, candidates)


def test_a_nan_reward_or_a_bad_propensity_is_refused_and_changes_nothing() -> None:
    policy = trained(Softmax(seed=1))
    before = dumps(policy)
    for bad in (math.nan, math.inf):
        with pytest.raises(InvalidReward):
            policy.learn_one(CTX, CANDS[0], bad)
    for propensity in (0.0, -0.1, 1.5, math.nan):
        with pytest.raises(InvalidPropensity):
            policy.learn_one(CTX, CANDS[0], 1.0, propensity)
    assert dumps(policy) == before


def test_a_nan_feature_is_imputed_with_the_contract_default() -> None:
    f = Featurizer.for_contracts()
    nan_row = f.candidate({"priority": math.nan, "hours_until_due": math.inf})
    default_row = f.candidate({})
    assert nan_row == default_row
    policy = trained(EpsilonGreedy(seed=1))
    policy.learn_one({"done_rate_28d": math.nan}, Arm("x", {"priority": math.nan}), 1.0)
    assert all(math.isfinite(s) for s in policy.scores(CTX, CANDS))


def test_rule_based_is_deterministic_and_prefers_urgent_tasks() -> None:
    late = Arm("late", {"priority": 2.0, "has_due_date": 1.0, "hours_until_due": -3.0, "is_overdue": 1.0})
    p4 = Arm("p4", {"priority": 4.0})
    tip = Arm("tip", {"priority": 4.0, "is_llm_tip": 1.0})
    policy = RuleBased()
    assert policy.rank({}, [tip, p4, late]) == ["late", "p4", "tip"]
    assert policy.probabilities({}, [tip, p4, late]) == {"tip": 0.0, "p4": 0.0, "late": 1.0}
    assert RuleBased(floor=0.3).probabilities({}, [tip, p4, late]) == pytest.approx(
        {"tip": 0.1, "p4": 0.1, "late": 0.8}
    )


def test_shadow_picks_record_each_shadow_without_touching_the_served_policy() -> None:
    served, twin = trained(Softmax(temperature=1.0, seed=4)), trained(Softmax(temperature=1.0, seed=4))
    shadows = [RuleBased(version="r1"), trained(EpsilonGreedy(epsilon=0.2, seed=2))]
    served_choices, twin_choices, picks = [], [], []
    for _ in range(20):  # shadows pick between the served policy's decisions; its twin runs alone
        served_choices.append(served.choose(CTX, CANDS))
        picks.append(shadow_picks(shadows, CTX, CANDS))
        twin_choices.append(twin.choose(CTX, CANDS))
    assert served_choices == twin_choices
    assert len({c.chosen_id for c in served_choices}) > 1  # the served policy did draw at random
    assert all([p.policy for p in round_] == ["rule_based", "epsilon_greedy"] for round_ in picks)
    rule = [round_[0] for round_ in picks]
    assert {(p.policy_version, p.chosen_id, p.propensity) for p in rule} == {
        ("r1", "c2", 1.0)
    }  # c3 has priority 4 but is an LLM tip
    explorer = [round_[1] for round_ in picks]
    assert all(p.propensity == shadows[1].probabilities(CTX, CANDS)[p.chosen_id] for p in explorer)
