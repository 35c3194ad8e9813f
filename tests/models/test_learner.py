"""The online learner joins rewards to its own decisions: once, in the window, never unknown ones."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from models.learner import DuplicateDecision, OnlineLearner, UnknownDecision
from models.policies import InvalidReward, RuleBased, Softmax, default_model, dumps
from models.policies.base import Arm

AT = datetime(2026, 3, 1, 9, tzinfo=UTC)
ARMS = [Arm("a", {"priority": 1.0}), Arm("b", {"priority": 4.0})]


@pytest.fixture
def learner() -> OnlineLearner:
    return OnlineLearner(
        Softmax(seed=0, model=default_model(0.3)), window=timedelta(hours=24), shadows=[RuleBased(version="r")]
    )


def test_decide_records_shadow_picks(learner: OnlineLearner) -> None:
    choice, shadow = learner.decide(UUID(int=1), {}, ARMS, AT)
    assert math.isclose(sum(choice.probabilities.values()), 1.0)
    assert [(s.policy, s.chosen_id, s.propensity) for s in shadow] == [("rule_based", "b", 1.0)]
    with pytest.raises(DuplicateDecision):
        learner.decide(UUID(int=1), {}, ARMS, AT)


def test_a_reward_for_an_unknown_decision_is_refused_and_learns_nothing(learner: OnlineLearner) -> None:
    learner.decide(UUID(int=1), {}, ARMS, AT)
    before = dumps(learner.policy)
    with pytest.raises(UnknownDecision, match="no pending decision"):
        learner.reward(UUID(int=99), 1.0, AT)
    with pytest.raises(InvalidReward):
        learner.reward(UUID(int=1), math.nan, AT)
    assert dumps(learner.policy) == before


def test_the_same_reward_twice_counts_once_and_late_rewards_are_not_learned(learner: OnlineLearner) -> None:
    learner.decide(UUID(int=1), {}, ARMS, AT)
    learner.decide(UUID(int=2), {}, ARMS, AT)
    assert learner.reward(UUID(int=1), 1.0, AT + timedelta(hours=1)) == "learned"
    after_one = dumps(learner.policy)
    assert learner.reward(UUID(int=1), 1.0, AT + timedelta(hours=2)) == "duplicate"
    assert learner.reward(UUID(int=2), 1.0, AT + timedelta(hours=25)) == "late"
    assert dumps(learner.policy) == after_one
    assert learner.expire(AT + timedelta(hours=25)) == 2 and learner.pending == 0
