"""The notifier DAG with dag.test(): its task runs the app API's notifier entry point in a
subprocess on the worker's settings; a due user's tip reaches a local SMTP server and is
recorded, and the next run sends nothing (the user is no longer due)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from oo.fakes.serving import FakeServingServer
from oo.settings import get_settings
from tests.app_api.conftest import PASSWORD
from tests.app_api.test_api_notifier import Inbox, smtp  # noqa: F401  (the SMTP fixture)

pytestmark = pytest.mark.slow


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp: tuple[Inbox, int]) -> Iterator[Inbox]:  # noqa: F811
    inbox, port = smtp
    serving = FakeServingServer()
    serving.start()
    monkeypatch.setenv("OO_PATHS__VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("OO_DB__URL", f"sqlite:///{tmp_path / 'app.db'}")
    monkeypatch.setenv("OO_LAKE__ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("OO_APP__SERVING_URL", serving.url)
    monkeypatch.setenv("OO_APP__SMTP_PORT", str(port))
    get_settings.cache_clear()
    try:
        yield inbox
    finally:
        serving.stop()
        get_settings.cache_clear()


def test_a_run_notifies_the_due_user_once(airflow_db: None, app_env: Inbox) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from app_api.main import create_app
    from app_api.services import build
    from app_api.tables import Delivery

    services = build(get_settings())
    try:
        with TestClient(create_app(services)) as client:
            tokens = client.post("/v1/auth/register", json={"email": "dana@example.org", "password": PASSWORD}).json()
            auth = {"Authorization": f"Bearer {tokens['access_token']}"}
            assert client.put("/v1/me/profile", json={"channels": ["email"]}, headers=auth).status_code == 200
            consent = {"purpose": "notifications", "granted": True}
            assert client.post("/v1/me/consents", json=consent, headers=auth).status_code in (200, 201)

        dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags")).dags["notifier"]
        run = dag.test()
        assert [str(ti.state) for ti in run.get_task_instances()] == ["success"]
        assert [m["To"] for m in app_env.messages] == ["dana@example.org"]
        with Session(services.engine) as s:
            assert [(d.channel, d.status) for d in s.execute(select(Delivery)).scalars()] == [("email", "sent")]

        run = dag.test()
        assert [str(ti.state) for ti in run.get_task_instances()] == ["success"]
        assert len(app_env.messages) == 1  # not due again within the period
    finally:
        services.close()
