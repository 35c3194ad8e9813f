"""The lake: date partitions, idempotent writes by natural key, atomic under a crash."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from data_contracts import Decision, ReactionEvent
from data_contracts.arrow import from_table
from oo.lake import Lake, UnknownDataset, WrongContract

T0 = datetime(2026, 5, 1, 23, 30, tzinfo=UTC)


def reaction(i: int, at: datetime = T0, reaction: str = "done") -> ReactionEvent:
    return ReactionEvent(
        event_id=UUID(int=i),
        decision_id=UUID(int=10_000 + i),
        user_id=f"u{i % 3}",
        candidate_id=f"task:{i}",
        reaction=reaction,
        occurred_at=at,
    )


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


def test_rows_land_in_their_own_date_partition(lake: Lake) -> None:
    late = reaction(2, at=T0 - timedelta(days=3))  # arrives now, happened three days ago
    lake.write("reactions", [reaction(1), late])
    parts = sorted(p.parent.name for p in lake.files("reactions"))
    assert parts == ["dt=2026-04-28", "dt=2026-05-01"]


def test_writing_the_same_batch_twice_leaves_the_same_rows(lake: Lake) -> None:
    batch = [reaction(i) for i in range(50)]
    first = lake.write("reactions", batch)
    again = lake.write("reactions", batch)
    assert (first.written, again.written, again.skipped) == (50, 0, 50)
    assert lake.read("reactions").num_rows == 50
    assert len(lake.files("reactions")) == 1


def test_an_overlapping_batch_adds_only_new_keys_and_duplicates_inside_a_batch_count_once(lake: Lake) -> None:
    lake.write("reactions", [reaction(i) for i in range(10)])
    result = lake.write("reactions", [reaction(i) for i in range(5, 15)] + [reaction(14)])
    assert (result.written, result.skipped) == (5, 6)
    ids = sorted(lake.read("reactions").column("event_id").to_pylist())
    assert ids == sorted(str(UUID(int=i)) for i in range(15))


def test_first_write_wins_for_a_key(lake: Lake) -> None:
    lake.write("reactions", [reaction(1, reaction="done")])
    lake.write("reactions", [reaction(1, reaction="dismiss")])
    assert lake.read("reactions").column("reaction").to_pylist() == ["done"]


def test_rows_read_back_as_the_records_written(lake: Lake) -> None:
    batch = [reaction(i) for i in range(3)]
    lake.write("reactions", batch)
    back = from_table(ReactionEvent, lake.read("reactions", where="user_id = ?", params=["u1"]))
    assert back == [batch[1]]


def test_an_empty_dataset_reads_as_an_empty_table_with_its_schema(lake: Lake) -> None:
    table = lake.read("decisions")
    assert table.num_rows == 0 and table.schema.names == list(Decision.model_fields)


def test_unknown_datasets_and_wrong_contracts_are_refused(lake: Lake) -> None:
    with pytest.raises(UnknownDataset):
        lake.write("nope", [reaction(1)])
    with pytest.raises(WrongContract, match="decisions holds Decision"):
        lake.write("decisions", [reaction(1)])


CRASH = textwrap.dedent(
    """
    import os, sys
    from datetime import UTC, datetime
    from uuid import UUID
    from data_contracts import ReactionEvent
    from oo.lake import Lake

    real_replace = os.replace
    def die(src, dst):  # the process is killed after the file was written, before it is committed
        os._exit(9)
    os.replace = die
    rows = [ReactionEvent(event_id=UUID(int=i), decision_id=UUID(int=i), user_id="u", candidate_id="c",
                          reaction="done", occurred_at=datetime(2026, 5, 1, tzinfo=UTC)) for i in range(100, 5000)]
    Lake(sys.argv[1]).write("reactions", rows)
    """
)


def test_a_write_killed_midway_leaves_the_dataset_readable_and_unchanged(lake: Lake) -> None:
    lake.write("reactions", [reaction(i) for i in range(5)])
    before = lake.read("reactions")
    proc = subprocess.run([sys.executable, "-c", CRASH, str(lake.root)], capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr.decode()
    assert list(lake.path("reactions").glob("dt=*/*.tmp")), "the crash left its temporary file behind"
    assert lake.read("reactions").equals(before)
    # the next writer sweeps the leftover and the retried batch lands whole
    lake.write("reactions", [reaction(5)])
    assert not list(lake.path("reactions").glob("dt=*/*.tmp"))
    assert lake.read("reactions").num_rows == 6


def test_duckdb_views_name_each_dataset(lake: Lake) -> None:
    lake.write("reactions", [reaction(i) for i in range(4)])
    with lake.connect() as con:
        assert con.execute("select count(*) from reactions").fetchall() == [(4,)]


def test_a_null_struct_reads_back_beside_a_set_one(lake: Lake) -> None:
    from data_contracts import TodoistTask

    def task(i: int, due: dict[str, object] | None) -> TodoistTask:
        return TodoistTask.model_validate(
            {"user_id": "u", "id": f"t{i}", "project_id": "p", "content": "c", "priority": 1, "due": due,
             "added_at": T0, "synced_at": T0}
        )  # fmt: skip

    lake.write("todoist_tasks", [task(1, None)])
    lake.write("todoist_tasks", [task(2, {"date": "2026-05-02", "is_recurring": True})])
    dues = sorted(lake.read("todoist_tasks").column("due").to_pylist(), key=str)
    assert dues[0] is None and dues[1]["date"] == "2026-05-02"


def test_write_table_has_the_guarantees_of_write(lake: Lake) -> None:
    from data_contracts.arrow import to_table

    batch = [reaction(i, at=T0 - timedelta(days=i % 2)) for i in range(6)]
    first = lake.write_table("reactions", to_table(ReactionEvent, batch))
    again = lake.write("reactions", batch)
    assert (first.written, again.written, again.skipped) == (6, 0, 6)
    assert sorted(p.parent.name for p in lake.files("reactions")) == ["dt=2026-04-30", "dt=2026-05-01"]
    with pytest.raises(WrongContract):
        lake.write_table("decisions", to_table(ReactionEvent, batch))


def test_a_read_can_select_columns(lake: Lake) -> None:
    lake.write("reactions", [reaction(i) for i in range(3)])
    table = lake.read("reactions", where="user_id = ?", params=["u1"], columns=["event_id"])
    assert table.column_names == ["event_id"] and table.column("event_id").to_pylist() == [str(UUID(int=1))]
    assert lake.read("decisions", columns=["decision_id"]).column_names == ["decision_id"]


def test_delete_where_rewrites_files_without_the_rows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime
    from uuid import UUID

    from data_contracts import ReactionEvent
    from oo.lake import Lake

    lake = Lake(tmp_path)

    def event(n: int, user: str, day: int) -> ReactionEvent:
        return ReactionEvent(
            event_id=UUID(int=n), decision_id=UUID(int=100 + n), user_id=user, candidate_id="c",
            reaction="done", occurred_at=datetime(2026, 5, day, tzinfo=UTC),
        )  # fmt: skip

    lake.write("reactions", [event(1, "a", 1), event(2, "b", 1), event(3, "a", 2)])
    assert len(lake.files("reactions")) == 2
    assert lake.delete_where("reactions", "user_id", ["a"]) == 2
    assert lake.read("reactions")["user_id"].to_pylist() == ["b"]
    assert len(lake.files("reactions")) == 1  # the day that held only "a" has no file left
    assert not list(tmp_path.rglob("*.tmp"))
    assert lake.delete_where("reactions", "user_id", ["a"]) == 0
    assert lake.delete_where("quarantine", "user_id", ["b"]) == 0  # no such column: nothing to do
    lake.write("reactions", [event(1, "a", 1)])  # the key is free again once erased
    assert lake.read("reactions").num_rows == 2
