"""The feature tables' SQL: windows that expire, the same reaction counted once, hour buckets in
the user's timezone, due dates read the way Todoist means them; and validation that names what
is wrong."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from data_contracts import Decision, TodoistCompletion
from models.features.tables import FeatureValidationError, build, compute, connect_lake, validate
from oo.lake import Lake
from tests.models.features.synthetic import T0, decision, llm_candidate, reaction, task


@pytest.fixture
def lake(tmp_path) -> Lake:  # type: ignore[no-untyped-def]
    return Lake(tmp_path / "lake")


def rows(lake: Lake, table: str, as_of: datetime, tz: dict[str, str] | None = None) -> list[dict]:
    with connect_lake(lake, tz) as con:
        return compute(con, table, as_of).to_pylist()


def at(rs: list[dict], when: datetime, key: str = "user_id", value: str = "u1") -> dict:
    return next(r for r in rs if r["event_timestamp"] == when and r[key] == value)


def test_reaction_windows_expire_and_a_reaction_sent_twice_counts_once(lake) -> None:  # type: ignore[no-untyped-def]
    d1 = decision(1, "u1", T0 - timedelta(days=2), ["t1"])
    d2 = decision(2, "u1", T0 - timedelta(hours=2), ["t1"])
    lake.write("decisions", [d1, d2])
    lake.write(
        "reactions",
        [
            reaction(1, d1, "done", T0 - timedelta(days=1)),  # exactly one day before T0
            reaction(2, d2, "snooze", T0 - timedelta(hours=1)),
            reaction(3, d2, "snooze", T0 - timedelta(minutes=59)),  # the same reaction again
        ],
    )
    now = at(rows(lake, "user_reactions", T0), T0)
    assert (now["reactions_1d"], now["reactions_7d"]) == (1.0, 2.0)  # a 1-day-old event has left the 1d window
    assert now["snooze_rate_1d"] == 1.0 and now["done_rate_7d"] == 0.5
    assert now["last_reaction_ts"] == (T0 - timedelta(hours=1)).timestamp()
    later = at(rows(lake, "user_reactions", T0 + timedelta(days=30)), T0 + timedelta(days=30))
    assert later["reactions_28d"] == 0.0 and later["done_rate_28d"] == 0.0  # everything expired


def test_rates_by_tip_kind_and_by_hour_bucket_in_the_users_timezone(lake) -> None:  # type: ignore[no-untyped-def]
    c = llm_candidate(1)
    tip = Decision(
        decision_id=decision(1, "u1", T0, ["t1"]).decision_id,
        user_id="u1",
        decided_at=T0,
        candidates=[c],
        ranked_ids=[c.candidate_id],
        chosen_id=c.candidate_id,
        propensity=1.0,
        policy="p",
        policy_version="1",
    )
    task_decision = decision(2, "u1", T0, ["t1"])
    lake.write("decisions", [tip, task_decision])
    # 20:00 UTC is 05:00 next day in Tokyo (night); 08:00 UTC is 17:00 (afternoon)
    lake.write(
        "reactions",
        [
            reaction(1, tip, "dismiss", T0.replace(hour=20)),
            reaction(2, task_decision, "done", T0.replace(hour=8, minute=30)),
        ],
    )
    r = at(rows(lake, "user_reactions", T0 + timedelta(days=1), {"u1": "Asia/Tokyo"}), T0 + timedelta(days=1))
    assert r["dismiss_rate_28d_llm_tip"] == 1.0 and r["done_rate_28d_llm_tip"] == 0.0
    assert r["done_rate_28d_todoist_task"] == 1.0
    assert r["reactions_28d_night"] == 1.0 and r["done_rate_28d_afternoon"] == 1.0
    assert r["reactions_28d_morning"] == r["reactions_28d_evening"] == 0.0


def test_task_attributes_read_due_dates_deadlines_and_durations_as_todoist_means_them(lake) -> None:  # type: ignore[no-untyped-def]
    lake.write(
        "todoist_tasks",
        [
            task("u1", "day", T0, due={"date": "2026-05-03"}, deadline={"date": "2026-05-10"}),
            task("u1", "utc", T0, due={"date": "2026-05-03T09:00:00Z", "timezone": "Europe/Berlin"}),
            task("u1", "wall", T0, due={"date": "2026-05-03T09:00:00", "is_recurring": True}),
            task("u1", "long", T0, duration={"amount": 2, "unit": "day"}, labels=["a", "b"]),
        ],
    )
    rs = {(r["task_id"], r["event_timestamp"]): r for r in rows(lake, "task_attributes", T0 + timedelta(hours=1))}
    day = rs[("day", T0)]
    assert day["due_ts"] == datetime(2026, 5, 4, tzinfo=UTC).timestamp() and day["due_floating"] == 1.0
    assert day["has_due_time"] == 0.0 and day["deadline_day"] == (date(2026, 5, 10) - date(1970, 1, 1)).days
    assert rs[("utc", T0)]["due_floating"] == 0.0 and rs[("utc", T0)]["has_due_time"] == 1.0
    assert rs[("wall", T0)]["is_recurring"] == 1.0 and rs[("wall", T0)]["due_floating"] == 1.0
    assert rs[("long", T0)]["duration_minutes"] == 2880.0 and rs[("long", T0)]["label_count"] == 2.0
    # the latest state of every task is repeated at as_of, for incremental materialization
    assert rs[("long", T0 + timedelta(hours=1))]["duration_minutes"] == 2880.0


def test_rhythm_from_completions(lake) -> None:  # type: ignore[no-untyped-def]
    saturday = datetime(2026, 5, 2, 7, tzinfo=UTC)
    lake.write(
        "todoist_completions",
        [TodoistCompletion(user_id="u1", task_id=f"x{i}", completed_at=saturday - timedelta(days=i)) for i in range(7)],
    )
    r = at(
        rows(lake, "user_rhythm", saturday + timedelta(hours=1), {"u1": "Europe/Berlin"}), saturday + timedelta(hours=1)
    )
    assert r["completions_per_day_28d"] == pytest.approx(7 / 28)
    assert r["usual_active_hour"] == 9.0  # 07:00 UTC is 09:00 in Berlin
    assert r["weekend_share_28d"] == pytest.approx(2 / 7)


def test_a_table_that_breaks_its_contract_fails_validation_with_reasons(lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = task("u1", "t1", T0)
    lake.write("todoist_tasks", [good, good.model_copy(update={"id": "t2", "priority": 7})])  # corrupt upstream
    build(lake, tmp_path / "staging", T0 + timedelta(hours=1))
    with pytest.raises(FeatureValidationError) as caught:
        validate(tmp_path / "staging")
    assert "task_attributes" in caught.value.reasons
    assert "priority" in str(caught.value) and "7.0" in str(caught.value)
    assert pq.read_table(tmp_path / "staging" / "task_attributes.parquet").num_rows == 4


def test_a_rebuild_repeats_only_changed_entities_at_as_of_and_keeps_what_was_materialized(lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from models.features.tables import publish

    lake.write("todoist_tasks", [task("u1", "same", T0), task("u1", "moved", T0, priority=1)])
    first_as_of = T0 + timedelta(hours=1)
    build(lake, tmp_path / "s1", first_as_of)
    publish(tmp_path / "s1", tmp_path / "live")
    # later: "moved" changes priority (a late snapshot, from before the first build); "same" does not
    lake.write("todoist_tasks", [task("u1", "moved", T0 + timedelta(minutes=30), priority=4)])
    second_as_of = T0 + timedelta(hours=2)
    build(lake, tmp_path / "s2", second_as_of, previous=tmp_path / "live")
    got = {
        (r["task_id"], r["event_timestamp"]): r["priority"]
        for r in pq.read_table(tmp_path / "s2" / "task_attributes.parquet").to_pylist()
    }
    assert (("same", second_as_of) in got, ("moved", second_as_of) in got) == (False, True)
    assert got[("moved", second_as_of)] == 4.0
    # the rows the first run materialized stay in the history (what serving read then)
    assert got[("same", first_as_of)] == 1.0 and got[("moved", first_as_of)] == 1.0


def test_a_task_first_synced_exactly_at_as_of_is_kept_by_the_rebuild(lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from models.features.tables import publish

    lake.write("todoist_tasks", [task("u1", "old", T0)])
    first_as_of = T0 + timedelta(hours=1)
    build(lake, tmp_path / "s1", first_as_of)
    publish(tmp_path / "s1", tmp_path / "live")
    second_as_of = T0 + timedelta(hours=2)
    lake.write("todoist_tasks", [task("u1", "new", second_as_of, priority=3)])  # its first snapshot, at as_of
    build(lake, tmp_path / "s2", second_as_of, previous=tmp_path / "live")
    got = {
        (r["task_id"], r["event_timestamp"]): r["priority"]
        for r in pq.read_table(tmp_path / "s2" / "task_attributes.parquet").to_pylist()
    }
    assert got[("new", second_as_of)] == 3.0
    assert ("old", second_as_of) not in got and got[("old", first_as_of)] == 1.0
