"""`python -m models.cli simulate`: simulated serving and app traffic lands where events_ingest
reads it (the event log), the simulated users' Todoist snapshots land in the lake, and a re-run
adds nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from data_contracts import Decision, TodoistTask
from data_contracts.arrow import from_table
from oo.settings import get_settings

NOW = datetime(2026, 3, 4, 15, 30, tzinfo=UTC)


@pytest.fixture
def var(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OO_PATHS__VAR_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def lines(path) -> list[dict]:  # type: ignore[no-untyped-def]
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_simulate_writes_the_event_log_and_todoist_snapshots_and_is_idempotent(var) -> None:  # type: ignore[no-untyped-def]
    from models.cli import simulate_traffic
    from models.policies import UniformRandom
    from oo.events_ingest import get_event_log, ingest
    from oo.lake import get_lake

    report = simulate_traffic(users=5, days=2, seed=3, now=NOW, policy=UniformRandom(seed=3))
    assert report.start == datetime(2026, 3, 2, tzinfo=UTC) and report.end == NOW
    assert report.decisions > 100 and report.appended == dict.fromkeys(
        ("decisions", "reactions", "rewards"), report.decisions
    )
    events = get_event_log()
    decisions = [Decision.model_validate(d) for d in lines(events.path("decisions"))]
    assert len(decisions) == report.decisions
    assert all(report.start < d.decided_at and d.decided_at < NOW for d in decisions)
    assert {d.user_id for d in decisions} <= {f"sim-user-{i}" for i in range(5)}
    assert {r["decision_id"] for r in lines(events.path("rewards"))} == {str(d.decision_id) for d in decisions}

    lake = get_lake()
    tasks = from_table(TodoistTask, lake.read("todoist_tasks"))
    assert report.tasks_written == len(tasks) > 5 * 15 and report.completions_written > 0
    assert all(t.user_id.startswith("sim-user-") and t.id.startswith("sim-") for t in tasks)
    # every task a decision showed was synced (by the simulated Todoist) no later than the decision
    first_seen: dict[str, datetime] = {}
    for t in tasks:
        first_seen[t.id] = min(first_seen.get(t.id, t.synced_at), t.synced_at)
    shown = [(c.task_id, d.decided_at) for d in decisions for c in d.candidates if c.task_id]
    assert shown and all(first_seen[task_id] <= at for task_id, at in shown)

    # the lake gets them through events_ingest, all valid
    moved = ingest(lake, events)
    assert moved.topics["decisions"].written == report.decisions and moved.topics["decisions"].quarantined == 0

    again = simulate_traffic(users=5, days=2, seed=3, now=NOW, policy=UniformRandom(seed=3))
    assert again.decisions == report.decisions and again.already_logged == 3 * report.decisions
    assert again.appended == dict.fromkeys(("decisions", "reactions", "rewards"), 0)
    assert again.tasks_written == again.completions_written == 0
    assert len(lines(events.path("decisions"))) == report.decisions


def test_simulate_command_says_what_it_simulated(var) -> None:  # type: ignore[no-untyped-def]
    from models.cli import app
    from oo.lake import get_lake

    result = CliRunner().invoke(app, ["simulate", "--users", "3", "--days", "1", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "SIMULATED traffic" in result.output and "epsilon_greedy@sim-bootstrap" in result.output
    assert get_lake().read("todoist_tasks").num_rows > 0

    bad = CliRunner().invoke(app, ["simulate", "--users", "0"])
    assert bad.exit_code != 0 and "--users" in bad.output
