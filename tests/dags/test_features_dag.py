"""The features DAG end to end with dag.test(): tables built, validated, materialized and training
rows written; a table that breaks its contract stops the run before anything is materialized,
and the run says why."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from oo.settings import get_settings
from tests.models.features.synthetic import populate, task

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OO_PATHS__VAR_DIR", str(tmp_path))
    monkeypatch.setenv("OO_FEAST__PROJECT", f"dag_{uuid.uuid4().hex[:8]}")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def states(run) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_features_dag_materializes_and_writes_training_rows_then_refuses_bad_tables(airflow_db, env, caplog) -> None:  # type: ignore[no-untyped-def]
    from dags.features import features_dag
    from models.features.online import OnlineFeatures
    from oo import feature_store
    from oo.lake import Lake

    lake = Lake(env.lake_root)
    populate(lake)
    run = features_dag.test()
    assert states(run) == dict.fromkeys(states(run), "success"), states(run)
    assert lake.read("training_examples").num_rows == 25  # 5 users x 5 decisions, all windows closed
    online = OnlineFeatures(feature_store.get_store())
    _, [before] = online.get("u0", ["t0_3"])
    assert before.task_known == 1.0 and before.priority == 4.0

    # upstream corruption the lake contract would have refused: priority 9
    bad = task("u0", "t0_3", datetime.now(UTC) - timedelta(minutes=1)).model_copy(update={"priority": 9})
    lake.write("todoist_tasks", [bad])
    caplog.clear()
    run = features_dag.test()
    got = states(run)
    assert got["validate"] == "failed"
    assert got["publish_and_apply"] == got["materialize"] == "upstream_failed"
    # the failure names the failing expectation and says nothing was materialized
    assert "priority" in caplog.text and "not materialized" in caplog.text
    _, [after] = online.get("u0", ["t0_3"])
    assert after.priority == 4.0  # the online store kept what it had
