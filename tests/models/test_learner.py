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


def bus_fed(default: float | None = 0.0) -> OnlineLearner:
    return OnlineLearner(
        Softmax(seed=0, model=default_model(0.3)),
        window=timedelta(hours=24),
        default_reward=default,
        hold=timedelta(minutes=10),
    )


def test_a_reward_before_its_decision_waits_and_is_learned_once_it_arrives() -> None:
    learner = bus_fed()
    untouched = dumps(learner.policy)
    assert learner.offer_reward(UUID(int=1), 1.0, AT + timedelta(minutes=1)) == "waiting"
    assert learner.offer_reward(UUID(int=1), 1.0, AT + timedelta(minutes=1)) == "duplicate"
    assert learner.waiting == 1 and dumps(learner.policy) == untouched
    assert learner.observe(UUID(int=1), {}, ARMS[0], AT) == ["learned"]
    assert learner.observe(UUID(int=1), {}, ARMS[0], AT) == []  # a replayed decision changes nothing
    assert learner.counts.learned == 1 and learner.counts.waited == 1 and learner.waiting == 0


def test_a_reward_whose_decision_never_comes_is_dropped_after_the_hold() -> None:
    learner = bus_fed()
    learner.offer_reward(UUID(int=1), 1.0, AT, received_at=AT)
    learner.expire(AT + timedelta(minutes=11))
    assert learner.waiting == 0 and learner.counts.dropped_waiting == 1


def test_a_window_closing_unrewarded_learns_the_default_reward() -> None:
    learner = bus_fed(default=0.2)  # a default the untrained scorer does not already predict
    learner.observe(UUID(int=1), {}, ARMS[1], AT)
    before = dumps(learner.policy)
    assert learner.expire(AT + timedelta(hours=23)) == 0 and dumps(learner.policy) == before
    assert learner.expire(AT + timedelta(hours=25)) == 1
    assert learner.counts.defaults == 1 and learner.counts.learned == 0 and dumps(learner.policy) != before
    silent = bus_fed(default=None)
    silent.observe(UUID(int=1), {}, ARMS[1], AT)
    silent.expire(AT + timedelta(hours=25))
    assert silent.counts.defaults == 0


def test_a_deferred_decision_is_learned_only_once_activated() -> None:
    learner = bus_fed(default=0.0)
    learner.observe(UUID(int=1), {}, ARMS[0], AT, deferred=True)
    learner.observe(UUID(int=2), {}, ARMS[1], AT, deferred=True)
    assert learner.reward(UUID(int=1), 1.0, AT + timedelta(hours=1)) == "deferred"
    assert learner.reward(UUID(int=2), 1.0, AT + timedelta(hours=1)) == "deferred"
    assert learner.counts.learned == 0
    assert learner.activate(UUID(int=2), AT + timedelta(hours=2)) == "learned"
    learner.expire(AT + timedelta(hours=25))
    assert learner.counts.learned == 1 and learner.counts.skipped_deferred == 1 and learner.counts.defaults == 0


def test_an_activation_before_its_decision_waits_for_it() -> None:
    learner = bus_fed()
    assert learner.activate(UUID(int=1), AT) is None
    learner.observe(UUID(int=1), {}, ARMS[0], AT, deferred=True)
    assert learner.reward(UUID(int=1), 1.0, AT + timedelta(minutes=5)) == "learned"


def test_apprentice_stats_compare_the_served_reward_with_the_learners_matching_one() -> None:
    learner = bus_fed()
    for i, (pick, reward) in enumerate([("a", 1.0), ("b", 1.0), ("b", 0.0), ("a", 0.2)]):
        learner.observe(UUID(int=i), {}, ARMS[0], AT, would_pick=pick)  # the baseline served "a"
        learner.reward(UUID(int=i), reward, AT)
    stats = learner.apprentice
    assert (
        stats.decisions == 4 and math.isclose(stats.baseline_reward, 0.55) and math.isclose(stats.learner_reward, 0.3)
    )
    assert math.isclose(stats.ratio or 0.0, 0.3 / 0.55)


def test_windows_close_exactly_when_due_whatever_the_arrival_order() -> None:
    """Decisions arrive out of order (replicas), some are forgotten or pushed out; each call of
    ``expire`` closes exactly the pending decisions whose window ended, found from a heap rather
    than by scanning every pending decision."""
    import pickle
    import random

    rng = random.Random(7)
    learner = OnlineLearner(RuleBased(version="r"), window=timedelta(hours=1), default_reward=0.0, max_pending=300)
    decided = {UUID(int=i): AT + timedelta(minutes=rng.uniform(0, 600)) for i in range(400)}
    for key, at in decided.items():  # dict order: shuffled in time
        learner.observe(key, {}, ARMS[0], at)
    learner.forget([UUID(int=i) for i in range(100, 120)])
    pending = {k: v for k, v in decided.items() if k in set(learner.pending_ids())}
    assert len(pending) == 280  # the first 100 pushed out by max_pending, 20 forgotten
    restored: OnlineLearner = pickle.loads(pickle.dumps(learner))
    del restored.__dict__["_closing"]  # as a learner checkpointed before the heap existed
    restored = pickle.loads(pickle.dumps(restored))
    for minutes in range(0, 700, 25):
        now = AT + timedelta(minutes=minutes)
        due = {k for k, at in pending.items() if now - at > timedelta(hours=1)}
        for one in (learner, restored):
            before = one.counts.defaults
            assert one.expire(now) == len(due) and one.counts.defaults - before == len(due)
            assert set(one.pending_ids()) == set(pending) - due
        pending = {k: v for k, v in pending.items() if k not in due}
    assert not pending and len(learner._closing) <= 1024


def test_a_checkpoint_copy_is_the_learner_as_it_was_and_pickles_in_slices() -> None:
    """A checkpoint pickles a copy taken in an instant (the live learner goes on learning
    meanwhile); the copy keeps each pending decision's state as it was when it was taken, and
    pickles its pending decisions in slices that read back in order."""
    import pickle

    from models.learner import PENDING_SLICE

    learner = OnlineLearner(Softmax(seed=0), window=timedelta(hours=24), default_reward=0.0)
    n = 2 * PENDING_SLICE + 17  # three slices
    for i in range(n):
        learner.observe(UUID(int=i), {}, ARMS[i % 2], AT + timedelta(seconds=i), deferred=i == 2)
    learner.reward(UUID(int=0), 1.0, AT)
    learner.reward(UUID(int=2), 1.0, AT)  # deferred: held until activated
    copy = learner.checkpoint_copy()
    weights = pickle.dumps(learner.policy)

    learner.reward(UUID(int=1), 1.0, AT)  # after the copy: the copy does not see these
    assert learner.activate(UUID(int=2), AT) == "learned"
    assert learner.counts.learned == 3 and copy.counts.learned == 1
    assert pickle.dumps(copy.policy) == weights != pickle.dumps(learner.policy)

    restored: OnlineLearner = pickle.loads(pickle.dumps(copy))
    assert restored.pending_ids() == [UUID(int=i) for i in range(n)]  # the order max_pending evicts by
    assert restored.reward(UUID(int=0), 1.0, AT) == "duplicate"  # learned before the copy
    assert restored.reward(UUID(int=1), 1.0, AT) == "learned"  # after it: learned again after a restart
    assert restored.activate(UUID(int=2), AT) == "learned"  # its held reward waited in the copy
    assert restored.expire(AT + timedelta(hours=25)) == n and restored.counts.defaults == n - 3


def test_pending_decisions_cost_the_garbage_collector_nothing() -> None:
    """A pending decision is kept as strings, numbers and tuples of them, which the collector stops
    tracking: however many decisions wait for their reward (100,000 by default), a full
    collection, during which every thread of serving stands still, does not go over them. Each
    is learned from as it was made: the chosen candidate's id and features, the context."""
    import gc

    from data_contracts import TipCandidate

    learner = OnlineLearner(Softmax(seed=0), window=timedelta(hours=24), default_reward=0.0)
    twin = OnlineLearner(Softmax(seed=0), window=timedelta(hours=24), default_reward=0.0)
    for i in range(300):
        features = {"priority": float(i % 4), "age_days": i / 7}
        chosen = TipCandidate(
            candidate_id=f"task:{i}", content="Call mum", kind="todoist_task", source="todoist", features=features
        )
        learner.observe(UUID(int=i), {"hour_of_day": i % 24}, chosen, AT, deferred=i % 3 == 0, would_pick="task:0")
        twin.observe(UUID(int=i), {"hour_of_day": i % 24}, Arm(f"task:{i}", features), AT, deferred=i % 3 == 0)
    learner.reward(UUID(int=3), 1.0, AT)  # deferred: held, a (reward, time) tuple in the record
    gc.collect()  # a tuple is untracked once the collector finds its items untracked; one whose
    gc.collect()  # items it looked at first (a younger generation's) is, at the next collection
    assert not any(gc.is_tracked(record) for record in learner._pending.values())
    assert not any(gc.is_tracked(entry) for entry in learner._closing)

    for i in range(1, 300, 3):  # not deferred: learned as the same decisions made with light arms
        assert learner.reward(UUID(int=i), 1.0, AT) == twin.reward(UUID(int=i), 1.0, AT) == "learned"
    assert dumps(learner.policy) == dumps(twin.policy)
    assert learner.activate(UUID(int=3), AT) == "learned" and learner.apprentice.decisions == 101


def test_a_checkpoint_written_before_the_packed_records_loads() -> None:
    """A checkpoint from an earlier version (pending decisions as records keyed by ``UUID``,
    pickled in slices or whole) loads, and its decisions are rewarded as they would have been."""
    import pickle
    from collections import OrderedDict

    from models.learner import _Pending

    def old_style() -> OnlineLearner:
        learner = OnlineLearner(Softmax(seed=0), window=timedelta(hours=24), default_reward=0.0)
        for i in range(3):
            learner.observe(UUID(int=i), {"hour_of_day": 9.0}, ARMS[i % 2], AT, deferred=i == 2)
        learner.reward(UUID(int=0), 1.0, AT)
        learner.reward(UUID(int=2), 0.5, AT)  # held until activated
        records = [(UUID(int=k), _Pending.unpacked(t)) for k, t in learner._pending.items()]
        learner.__dict__["_pending"] = OrderedDict(records)
        learner.__dict__["_closing"] = [(p.decided_at, k) for k, p in records]
        return learner

    sliced = pickle.loads(pickle.dumps(old_style()))
    whole = object.__new__(OnlineLearner)
    whole.__setstate__(dict(old_style().__dict__))  # pickled before the slices: the state as it was
    for restored in (sliced, whole):
        assert restored.pending_ids() == [UUID(int=0), UUID(int=1), UUID(int=2)]
        assert restored.reward(UUID(int=0), 1.0, AT) == "duplicate"
        assert restored.reward(UUID(int=1), 1.0, AT) == "learned"
        assert restored.activate(UUID(int=2), AT) == "learned"
        assert restored.expire(AT + timedelta(hours=25)) == 3 and restored.counts.defaults == 0
