"""The todoist_requested_syncs DAG with dag.test(): only the users a webhook asked for are synced,
their requests are marked processed, and a run with nothing pending is skipped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from oo.fakes.todoist import FakeTodoist, serve_in_thread
from oo.settings import get_settings

pytestmark = pytest.mark.slow


@pytest.fixture
def todoist_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTodoist]:
    world = FakeTodoist.seeded(seed=5, users=2, tasks_per_user=6)
    with serve_in_thread(world) as url:
        monkeypatch.setenv("OO_TODOIST__BASE_URL", url)
        monkeypatch.setenv("OO_DB__URL", f"sqlite:///{tmp_path / 'app.db'}")
        monkeypatch.setenv("OO_LAKE__ROOT", str(tmp_path / "lake"))
        get_settings.cache_clear()
        yield world
    get_settings.cache_clear()


def test_requested_users_are_synced_once_then_the_dag_skips(airflow_db: None, todoist_env: FakeTodoist) -> None:
    from data_contracts import TodoistSyncTrigger
    from oo.db import get_engine, migrate
    from oo.integrations.todoist.sync import connect_user
    from oo.integrations.todoist.webhooks import record_trigger
    from oo.lake import get_lake
    from oo.tables import SyncRequest
    from oo.vault import get_vault

    world = todoist_env
    migrate()
    for user in world.users:
        connect_user(get_engine(), get_vault(), user.todoist_id, SecretStr(user.token))
    asked = world.users[0].todoist_id
    at = datetime(2026, 3, 2, 9, tzinfo=UTC)
    for delivery in ("d-1", "d-2"):  # two webhooks for the same user: one sync
        trigger = TodoistSyncTrigger(
            delivery_id=delivery, user_id=asked, todoist_user_id=asked, event_name="item:added",
            triggered_at=at, received_at=at,
        )  # fmt: skip
        assert record_trigger(get_engine(), trigger)

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags")).dags["todoist_requested_syncs"]
    run = dag.test()
    assert [str(ti.state) for ti in run.get_task_instances()] == ["success"]
    synced = {r["user_id"] for r in get_lake().read("todoist_tasks").to_pylist()}
    assert synced == {asked}  # the other connected user waits for the hourly todoist_sync
    with get_engine().connect() as con:
        pending = con.execute(select(SyncRequest.delivery_id).where(SyncRequest.processed_at.is_(None))).all()
    assert pending == []

    run = dag.test()
    assert [str(ti.state) for ti in run.get_task_instances()] == ["skipped"]
