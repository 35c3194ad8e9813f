"""`oo simulate`'s closed loop, small: simulated users through the real app API and serving
(child processes on free ports), the DAGs' work in-process between simulated days, the report."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from data_contracts import CandidateFeatures, UserContext
from models.closed_loop import ClosedLoop, LoopConfig, todoist_item
from models.closed_loop_report import build_report, figures, write
from oo.settings import settings_env

START = datetime(2030, 3, 4, tzinfo=UTC)
"""A simulated start after the wall clock (the learner's windows are on the wall clock)."""


def test_the_simulated_world_and_its_schedule_are_deterministic_under_the_seed(tmp_path: Path) -> None:
    a = ClosedLoop(LoopConfig(users=4, days=1, seed=3, var_dir=tmp_path / "a", start=START))
    b = ClosedLoop(LoopConfig(users=4, days=1, seed=3, var_dir=tmp_path / "b", start=START))
    c = ClosedLoop(LoopConfig(users=4, days=1, seed=4, var_dir=tmp_path / "c", start=START))

    def world(loop: ClosedLoop) -> list[Any]:
        return [
            (
                u.traits,
                [todoist_item(t, loop.sim.now) for t in loop.sim.tasks(u.traits.user_id)],
                loop._visit_time(START, u),
            )
            for u in loop.users
        ]

    assert world(a) == world(b)
    assert world(a) != world(c)


def test_a_bad_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ClosedLoop(LoopConfig(users=0, days=1, seed=0, var_dir=tmp_path))


@pytest.mark.slow
def test_a_small_closed_loop_goes_through_serving_and_reports(tmp_path: Path) -> None:
    config = LoopConfig(
        users=5, days=2, seed=11, var_dir=tmp_path / "run", start=START, health_timeout_s=150, visits_per_day=2
    )
    run = ClosedLoop(config).run()  # no timed assertion: the machine is shared (STYLE.md)

    with settings_env(OO_PATHS__VAR_DIR=str(config.var_dir), OO_FEAST__PROJECT="oo_simulation"):
        from models.registry import Registry
        from oo.lake import get_lake

        lake = get_lake()
        report = build_report(run, lake, Registry())
        decisions = lake.read("decisions").to_pylist()
        skew_rows = lake.read("feature_skew").to_pylist()
        examples = lake.read("training_examples", columns=["decision_id"]).to_pylist()
        users = {r["user_id"] for r in lake.read("todoist_tasks", columns=["user_id"]).to_pylist()}

    # every user asked once a slot, two slots a day, and every decision was made and logged by serving
    assert len(run.served) == 20
    assert report["decisions"]["asked"] == report["decisions"]["logged_by_serving"] == 20
    assert report["checks"]["decisions_from_serving"] is True
    assert {d["decision_id"] for d in decisions} == {s.decision_id for s in run.served}
    # ... by the served (exploring) rule baseline: no champion exists in two days
    assert {(d["policy"], d["policy_version"]) for d in decisions} == {("rule_based", "rule-baseline/1")}
    assert all(0 < d["propensity"] < 1 for d in decisions)
    # ... at the simulated times, for the app's users, over their fake-Todoist tasks
    assert all(d["decided_at"].date() in (START.date(), START.replace(day=5).date()) for d in decisions)
    assert {d["user_id"] for d in decisions} == {s.user for s in run.served} == users
    assert all(c["candidate_id"].startswith("task:") for d in decisions for c in d["candidates"])

    # skew: serving's logged features against the feature store's point-in-time values
    assert skew_rows, "the features step compared the decisions whose reward window closed"
    skew = report["skew"]
    assert set(skew) <= set(UserContext.model_fields) | set(CandidateFeatures.model_fields)
    assert {"done_rate_28d", "hours_since_last_reaction", "priority", "hours_until_due"} <= set(skew)
    assert report["skew_max"] < 0.01, {k: v for k, v in skew.items() if v >= 0.01}

    # the report's shape, and its figures
    assert set(report) >= {"config", "decisions", "per_day", "per_policy", "skew", "checks", "promotions", "batches"}
    assert [d["day"] for d in report["per_day"]] == [0, 1]
    for row in report["per_day"]:
        assert 0 <= row["reward"] <= 1 and row["regret"] >= -1e-12 and row["oracle"] >= row["expected"] - 1e-12
    assert report["checks"]["promoted"] is False and "ope" not in report  # too little data: honest
    assert report["checks"]["beats_baseline"] is False and "no challenger was promoted" in report["not_evaluated"]
    assert len(report["batches"]) == 3 and all(not b["sync_failed"] for b in report["batches"])
    assert len(report["slots"]) == 5 and all(not b["sync_failed"] for b in report["slots"])
    # the first slot of a day finds nothing new since the nightly run at midnight: no features run
    assert [s["features_skipped"] for s in report["slots"]] == [True, False, True, False, False]
    assert [("build" in s["steps"]) for s in report["slots"]] == [False, True, False, True, True]
    # after the last night the loop waits until the last day's reward windows closed: every decision
    # of the run, the last day's too, is a training example the report reads back
    assert report["slots"][-1]["windows_closed"] is True
    assert {str(e["decision_id"]) for e in examples} == {s.decision_id for s in run.served}
    assert set(figures(report)) == {"reward_per_day.png", "regret_per_day.png", "skew_per_feature.png"}
    path = write(report, tmp_path / "report.json")
    assert json.loads(path.read_text())["config"] == {
        "users": 5,
        "days": 2,
        "seed": 11,
        "visits_per_day": 2,
        "tasks_per_user": 3,
        "baseline_floor": 0.8,
        "control_fraction": 0.5,
        "concurrency": 8,
        "holdout_fraction": 0.6,
        "gate_fraction": 0.7,
    }


def test_the_simulator_reacts_from_hidden_traits_and_changes_its_world() -> None:
    from datetime import timedelta

    from data_contracts.events import Reaction
    from models.simulation import Simulator

    sim = Simulator(n_users=3, seed=5, start=START, stateful=True, llm_tips=0)
    with pytest.raises(ValueError, match="cannot go back"):
        sim.set_now(START - timedelta(seconds=1))
    user = sim.users[0]
    seen: dict[Reaction, int] = {}
    for _ in range(300):  # bounded: every reaction kind turns up, a done task is replaced
        task = sim.tasks(user.user_id)[0]
        reaction, replacement = sim.react_to(user, task)
        seen[reaction] = seen.get(reaction, 0) + 1
        open_ids = {t.task_id for t in sim.tasks(user.user_id)}
        if reaction is Reaction.done:
            assert replacement is not None and task.task_id not in open_ids and replacement.task_id in open_ids
        else:
            assert replacement is None and task.task_id in open_ids
    assert set(seen) == set(Reaction)
    assert 0.0 <= sim.value(user, sim.tasks(user.user_id)[0]) <= 1.0
    done = sim.finish_outside(user, 1.0)
    assert len(done) == sim.tasks_per_user and not {d.task_id for d, _ in done} & {
        t.task_id for t in sim.tasks(user.user_id)
    }
