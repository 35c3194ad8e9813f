"""The decision index replicas share: a decision indexed by one replica is known to every other
(so a reward may reach any replica), a reward counts once whichever replica takes it, erasure
removes a user everywhere. On one machine it is SQLite in the shared state dir; past one it is
PostgreSQL (``OO_SERVING__INDEX_URL``), which also survives a dropped connection."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from serving.decision_index import DecisionIndex, PostgresDecisionIndex, open_index

AT = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[DecisionIndex, DecisionIndex]]:
    """Two replicas' handles on one index."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    a, b = open_index(url, tmp_path), open_index(url, tmp_path)
    yield a, b
    a.close()
    b.close()


def decide(index: DecisionIndex, n: int, user: str = "u1", deferred: bool = False) -> UUID:
    decision = UUID(int=n)
    assert index.add(decision, user, AT, f"task:{n}", "todoist_task", deferred, "hash", f'{{"n": {n}}}')
    return decision


def test_a_decision_made_by_one_replica_is_known_to_the_other(replicas: tuple[DecisionIndex, DecisionIndex]) -> None:
    a, b = replicas
    decision = decide(a, 1)
    found = b.get(decision)
    assert found is not None
    assert (found.user_id, found.decided_at, found.chosen_id, found.response) == ("u1", AT, "task:1", '{"n": 1}')
    assert not b.add(decision, "u1", AT, "task:1", "todoist_task", False, "hash", "{}")  # the same id again
    assert b.get(UUID(int=2)) is None


def test_a_reward_counts_once_whichever_replica_takes_it(replicas: tuple[DecisionIndex, DecisionIndex]) -> None:
    a, b = replicas
    decision = decide(a, 1, deferred=True)
    assert b.add_reward(decision, UUID(int=9), "done", 1.0, "accepted", AT)
    assert not a.add_reward(decision, UUID(int=10), "dismiss", 0.0, "accepted", AT)
    reward = a.reward_of(decision)
    assert reward is not None and (reward.reaction_id, reward.reaction, reward.reward) == (UUID(int=9), "done", 1.0)
    assert b.activate(decision, AT) and not a.activate(decision, AT)
    activated = a.get(decision)
    assert activated is not None and activated.activated_at == AT


def test_erasure_through_one_replica_removes_the_user_for_all(replicas: tuple[DecisionIndex, DecisionIndex]) -> None:
    a, b = replicas
    mine, theirs = decide(a, 1, "u1"), decide(b, 2, "u2")
    a.add_reward(mine, UUID(int=9), "done", 1.0, "accepted", AT)
    assert [d["decision_id"] for d in b.for_user("u1")] == [str(mine)]
    assert b.forget("u1") == [mine]
    assert a.get(mine) is None and a.reward_of(mine) is None and a.for_user("u1") == []
    assert a.get(theirs) is not None


@pytest.mark.integration
def test_a_dropped_connection_is_opened_again(pg_url: str) -> None:
    import psycopg

    index = PostgresDecisionIndex(pg_url)
    try:
        decision = decide(index, 1)
        with psycopg.connect(pg_url, autocommit=True) as admin:  # the server ends the replica's session
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
        found = index.get(decision)
        assert found is not None and found.user_id == "u1"
    finally:
        index.close()


def test_commits_leave_the_write_ahead_log_to_a_background_checkpoint(tmp_path: Path) -> None:
    """SQLite's automatic checkpoint would run inside the commit that crosses 1,000 pages (in the
    thread every concurrent rank waits for); the index's commits never checkpoint, a background
    connection does, and the database file alone then holds every row."""

    def rows_in_the_file_alone(path: Path) -> int:
        shutil.copy(path, tmp_path / "alone.db")  # without its write-ahead log
        with closing(sqlite3.connect(tmp_path / "alone.db")) as db:
            try:
                return int(db.execute("SELECT count(*) FROM decisions").fetchone()[0])
            except sqlite3.OperationalError:  # not even the table moved yet
                return 0

    answer = "x" * 3500  # 400 of them: past SQLite's mark of 1,000 pages
    quiet = DecisionIndex(tmp_path / "quiet.db", checkpoint_every_s=3600)
    index = DecisionIndex(tmp_path / "d.db", checkpoint_every_s=0.05)
    for i in range(400):
        quiet.add(UUID(int=i), "u", AT, "c", "todoist_task", False, "h", answer)
        index.add(UUID(int=i), "u", AT, "c", "todoist_task", False, "h", answer)
    assert rows_in_the_file_alone(tmp_path / "quiet.db") == 0  # no commit checkpointed
    deadline = time.monotonic() + 30
    while rows_in_the_file_alone(tmp_path / "d.db") < 400 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rows_in_the_file_alone(tmp_path / "d.db") == 400
    quiet.close()
    index.close()
