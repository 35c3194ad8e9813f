"""events_ingest with dag.test(): new events land in the lake and update EVENTS; a run with
nothing new is skipped (and updates nothing)."""

from __future__ import annotations

import pytest

from oo.settings import get_settings
from tests.models.features.synthetic import T0, decision, reaction

pytestmark = pytest.mark.slow


def test_events_ingest_dag_moves_events_then_skips_when_nothing_is_new(airflow_db, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OO_PATHS__VAR_DIR", str(tmp_path))
    get_settings.cache_clear()
    from dags.events_ingest import events_ingest_dag
    from oo.events_ingest import get_event_log
    from oo.lake import get_lake

    d = decision(1, "u1", T0, ["t1"])
    get_event_log().append("decisions", d)
    get_event_log().append("reactions", reaction(1, d, "done", T0))
    run = events_ingest_dag.test()
    assert [str(ti.state) for ti in run.get_task_instances()] == ["success"]
    assert get_lake().read("decisions").num_rows == 1 and get_lake().read("reactions").num_rows == 1
    run = events_ingest_dag.test()
    assert [str(ti.state) for ti in run.get_task_instances()] == ["skipped"]
    get_settings.cache_clear()
