"""The simulator: seeded, the same rounds for every policy, a measurable oracle, real contracts."""

from __future__ import annotations

import pytest

from data_contracts import Decision, TrainingExample
from data_contracts.features import CandidateFeatures, UserContext
from models.policies import RuleBased, Softmax, UniformRandom
from models.simulation import Simulator


def test_every_policy_faces_the_same_rounds_under_one_seed() -> None:
    a, b = Simulator(n_users=4, seed=3), Simulator(n_users=4, seed=3)
    for ra, rb in zip(a.rounds(50), b.rounds(50), strict=True):
        assert ra.context == rb.context and [c.candidate_id for c in ra.candidates] == [
            c.candidate_id for c in rb.candidates
        ]
        a.react(ra, ra.candidates[0].candidate_id)
        b.react(rb, rb.best_id)  # different choices do not change the world


def test_features_use_the_contract_names_and_values() -> None:
    rnd = Simulator(n_users=2, seed=1).next_round()
    UserContext(**rnd.context)  # validates ranges too
    for c in rnd.candidates:
        CandidateFeatures(**c.features)
    assert {c.kind.value for c in rnd.candidates} == {"todoist_task", "llm_tip"}


def test_oracle_bounds_every_policy_and_learning_beats_uniform() -> None:
    oracle = Simulator(n_users=10, seed=4).run(None, 3000)
    uniform = Simulator(n_users=10, seed=4).run(UniformRandom(seed=4), 3000)
    learner = Simulator(n_users=10, seed=4).run(Softmax(temperature=0.02, seed=4), 3000)
    assert oracle.regret == 0.0
    assert oracle.mean_expected >= learner.mean_expected > uniform.mean_expected
    assert learner.oracle_reward == pytest.approx(oracle.mean_expected)


def test_records_are_valid_contracts_that_join_by_decision_id() -> None:
    sim = Simulator(n_users=3, seed=2)
    rnd = sim.next_round()
    policy = RuleBased(version="r1")
    choice = policy.choose(rnd.context, rnd.candidates)
    outcome = sim.react(rnd, choice.chosen_id)
    decision, reaction, reward, example = sim.records(rnd, choice, outcome, policy)
    Decision.model_validate(decision.model_dump())
    TrainingExample.model_validate(example.model_dump())
    assert decision.decision_id == reaction.decision_id == reward.decision_id == example.decision_id
    assert reward.reward == {"done": 1.0, "snooze": 0.2, "dismiss": 0.0}[reaction.reaction.value]
    with pytest.raises(KeyError, match="not a candidate"):
        sim.react(rnd, "nope")
