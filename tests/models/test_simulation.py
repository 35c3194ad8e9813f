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
    # the oracle's value, recomputed from the rounds themselves: the mean of each round's best expected reward
    rounds = list(Simulator(n_users=10, seed=4).rounds(3000))
    best = sum(max(r.expected.values()) for r in rounds) / len(rounds)
    assert oracle.mean_expected == pytest.approx(best) and oracle.oracle_reward == pytest.approx(best)
    # and no fixed rule beats it on the same rounds (here: always the first, always the last candidate)
    for pick in (0, -1):
        fixed = sum(r.expected[r.candidates[pick].candidate_id] for r in rounds) / len(rounds)
        assert fixed < best - 0.05
    assert oracle.mean_expected >= learner.mean_expected > uniform.mean_expected
    for result in (uniform, learner):  # regret is what the oracle would have earned on top, round by round
        assert result.oracle_reward == pytest.approx(best)
        assert result.regret == pytest.approx(best - result.mean_expected) and result.regret > 0.0


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


# -- Todoist snapshots: what a sync would have written, recomputed by the feature tables --------

FEATURE_TABLE_FIELDS = (
    "priority",
    "has_due_date",
    "has_due_time",
    "is_recurring",
    "has_deadline",
    "duration_minutes",
    "label_count",
    "content_length",
    "age_days",
    "days_to_deadline",
    "hours_until_due",
    "is_overdue",
)
"""Task features computed from ``todoist_tasks`` (table ``task_attributes`` + on-demand ``task_time``)."""


def test_snapshots_recompute_to_the_simulators_task_features(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from data_contracts import TodoistTask
    from models.features.tables import compute, connect_lake
    from oo.feature_store import load_definitions
    from oo.lake import Lake

    sim = Simulator(n_users=4, seed=9, stateful=True, track_tasks=True, start=datetime(2026, 3, 2, 5, tzinfo=UTC))
    for rnd in sim.rounds(120):  # done tasks are replaced, others completed outside oO
        sim.react(rnd, rnd.best_id)
    snapshots, completions = sim.drain_todoist()
    assert all(isinstance(s, TodoistTask) and s.user_id.startswith("sim-") for s in snapshots)
    assert completions and {c.task_id for c in completions} <= {s.id for s in snapshots if s.checked}
    assert sim.drain_todoist() == ([], [])  # drained
    lake = Lake(tmp_path / "lake")
    lake.write("todoist_tasks", snapshots)

    now = sim.now
    with connect_lake(lake) as con:
        table = compute(con, "task_attributes", now).to_pylist()
    latest = {r["task_id"]: r for r in table if r["event_timestamp"] == now}
    udf = next(o for o in load_definitions() if o.name == "task_time").feature_transformation.udf
    open_tasks = [(u.user_id, t) for u in sim.users for t in sim.tasks(u.user_id)]
    assert len(open_tasks) == 4 * sim.tasks_per_user
    rows = [latest[t.task_id] for _, t in open_tasks]
    on_demand = udf(
        {
            "now_ts": [now.timestamp()] * len(rows),
            "tz": ["UTC"] * len(rows),
            **{k: [r[k] for r in rows] for k in ("added_ts", "due_ts", "due_floating", "deadline_day")},
        }
    )
    kinds = set()
    for i, ((user_id, task), row) in enumerate(zip(open_tasks, rows, strict=True)):
        assert row["user_id"] == user_id
        recomputed = {**row, **{k: v[i] for k, v in on_demand.items()}}
        expected = sim.task_features(task)
        for name in FEATURE_TABLE_FIELDS:
            assert recomputed[name] == pytest.approx(expected[name], abs=1e-6), (task.kind, name)
        kinds.add(task.kind)
    assert kinds == {"quick", "deep", "errand", "admin"}  # every shape of task was compared
    assert {r["has_due_time"] for r in rows} == {0.0, 1.0} and {r["has_deadline"] for r in rows} == {0.0, 1.0}


def test_drain_todoist_needs_track_tasks() -> None:
    with pytest.raises(RuntimeError, match="track_tasks"):
        Simulator(n_users=1, seed=0).drain_todoist()
