"""The main job end to end at a tiny size (what `make run` does after the Todoist demo):
simulated traffic -> events_ingest -> features -> policy_training, each DAG with dag.test(), then
the models CLI summary. The DAGs must pick up the simulated data at every step."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from oo.settings import get_settings

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OO_PATHS__VAR_DIR", str(tmp_path))
    monkeypatch.setenv("OO_FEAST__PROJECT", f"loop_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("OO_TRAINING__N_BOOTSTRAP", "50")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def states(run) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_simulated_traffic_flows_through_the_dags_into_mlflow(airflow_db, env) -> None:  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    from models.cli import app, simulate_traffic
    from models.registry import Registry
    from models.training import DEFAULT_GRID
    from oo.lake import get_lake
    from oo.runtime import DAGS_FOLDER

    sim = simulate_traffic(users=6, days=2, seed=5, now=datetime.now(UTC))
    bag = DagBag(dag_folder=str(DAGS_FOLDER))

    run = bag.get_dag("events_ingest").test()
    assert states(run) == {"ingest": "success"}
    lake = get_lake()
    assert lake.read("decisions").num_rows == lake.read("rewards").num_rows == sim.decisions

    run = bag.get_dag("features").test()
    assert set(states(run).values()) == {"success"}, states(run)
    examples = lake.read("training_examples")
    assert 50 <= examples.num_rows < sim.decisions  # the last day's reward windows are still open
    assert set(examples.column("user_id").to_pylist()) <= {f"sim-user-{i}" for i in range(6)}
    # the task features the DAG computed from the simulated Todoist snapshots agree with what was logged
    skew = {r["feature"]: r["rate"] for r in lake.read("feature_skew").to_pylist()}
    assert skew["priority"] == skew["has_due_time"] == skew["is_recurring"] == 0.0
    assert skew["content_length"] == skew["hours_until_due"] == skew["days_to_deadline"] == 0.0

    run = bag.get_dag("policy_training").test()
    assert states(run) == {"train_and_register": "success"}
    registry = Registry()
    runs = registry.client.search_runs([registry.experiment_id])
    assert len(runs) == len(DEFAULT_GRID)
    assert registry.version_for("challenger") is not None
    gated = [r for r in runs if "gate.decision" in r.data.tags]
    assert len(gated) == 1 and gated[0].data.tags["gate.decision"] in {"promoted", "refused"}

    out = CliRunner().invoke(app, ["summary"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert f"@challenger = v{registry.version_for('challenger')}" in text
    assert gated[0].data.tags["gate.reason"].split(" + ")[0] in text
    assert "Serving (BentoML) and the app API (FastAPI) are built: `make run` starts them" in text
    assert "training_examples" in text and "candidate features: " in text
