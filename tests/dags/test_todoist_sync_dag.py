"""The todoist_sync DAG end to end with dag.test(): users fan out, a revoked user fails alone,
and two runs over the same interval leave no duplicate rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from oo.fakes.todoist import FakeTodoist, serve_in_thread
from oo.settings import get_settings


@pytest.fixture
def todoist_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTodoist]:
    world = FakeTodoist.seeded(seed=21, users=3, tasks_per_user=15)
    with serve_in_thread(world) as url:
        monkeypatch.setenv("OO_TODOIST__BASE_URL", url)
        monkeypatch.setenv("OO_DB__URL", f"sqlite:///{tmp_path / 'app.db'}")
        monkeypatch.setenv("OO_LAKE__ROOT", str(tmp_path / "lake"))
        get_settings.cache_clear()
        yield world
    get_settings.cache_clear()


@pytest.mark.slow
def test_dag_test_syncs_every_user_and_a_second_run_adds_nothing(
    airflow_db: None, todoist_env: FakeTodoist, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from oo.db import get_engine, migrate
    from oo.integrations.todoist.sync import connect_user
    from oo.lake import get_lake
    from oo.tables import Integration
    from oo.vault import get_vault

    world = todoist_env
    migrate()
    for user in world.users:
        connect_user(get_engine(), get_vault(), user.todoist_id, SecretStr(user.token))
    world.revoke(world.users[2])

    dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags")).dags["todoist_sync"]
    caplog.set_level("INFO", logger="oo.integrations.todoist.sync")
    interval = datetime(2026, 3, 2, tzinfo=UTC)  # both runs over the same logical date
    first = dag.test(logical_date=interval)
    assert first.state == "success"
    assert "todoist sync: 2 ok, 1 failed (3 users)" in caplog.text

    lake = get_lake()
    tasks = lake.read("todoist_tasks").to_pylist()
    assert len(tasks) == 30
    with get_engine().connect() as con:
        status = dict(con.execute(select(Integration.user_id, Integration.status)).all())
    assert status[world.users[2].todoist_id] == "needs_reauth"

    caplog.clear()
    second = dag.test(logical_date=interval)  # clears the first run's task instances and re-runs
    assert second.state == "success"
    assert "todoist sync: 2 ok, 0 failed (2 users)" in caplog.text  # the revoked user is skipped now
    for dataset in ("todoist_tasks", "todoist_projects", "todoist_completions"):
        rows = lake.read(dataset).to_pylist()
        keys = [tuple(r[k] for k in ("user_id", "id" if "id" in r else "task_id")) for r in rows]
        assert len(keys) == len(set(keys)), f"duplicates in {dataset}"
    assert lake.read("todoist_tasks").num_rows == 30


@pytest.mark.slow
def test_dag_test_with_one_malformed_answer_lands_the_others_and_records_the_failure(
    airflow_db: None, todoist_env: FakeTodoist, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from oo.db import get_engine, migrate
    from oo.integrations.todoist.sync import connect_user, current_tasks
    from oo.lake import get_lake
    from oo.tables import Integration
    from oo.vault import get_vault

    world = todoist_env
    migrate()
    for user in world.users:
        connect_user(get_engine(), get_vault(), user.todoist_id, SecretStr(user.token))
    broken = world.users[1]
    broken.sync_patch = {"items": 5}  # a TypeError in the run before issue 9, failing every user

    dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags")).dags["todoist_sync"]
    caplog.set_level("INFO", logger="oo.integrations.todoist.sync")
    run = dag.test(logical_date=datetime(2026, 3, 3, tzinfo=UTC))
    assert run.state == "success"
    assert "todoist sync: 2 ok, 1 failed (3 users)" in caplog.text
    lake = get_lake()
    assert [len(current_tasks(lake, u.todoist_id)) for u in world.users] == [15, 0, 15]
    with get_engine().connect() as con:
        errors = dict(con.execute(select(Integration.user_id, Integration.last_error)).all())
    assert "wrong shape" in (errors[broken.todoist_id] or "")
    assert errors[world.users[0].todoist_id] is None
