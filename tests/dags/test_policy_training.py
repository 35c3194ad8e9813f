"""`policy_training` end to end: simulated training examples in a temp lake -> runs and aliases in a temp MLflow."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from data_contracts import FeatureSkew
from models.policies import UniformRandom
from models.simulation import Simulator
from oo.lake import Lake
from oo.settings import get_settings

pytestmark = pytest.mark.slow


def test_dag_test_trains_logs_runs_and_sets_aliases(airflow_db, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OO_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("OO_MLFLOW__ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    monkeypatch.setenv("OO_LAKE__ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("OO_TRAINING__N_BOOTSTRAP", "100")
    get_settings.cache_clear()
    try:
        sim = Simulator(n_users=8, seed=21)
        examples = sim.log(UniformRandom(seed=21), 500)
        Lake(tmp_path / "lake").write("training_examples", examples)
        end = max(e.decided_at for e in examples) + timedelta(hours=1)
        # two feature-pipeline runs recorded train/serve skew: 1 of 4 logged priorities differed
        skew = [
            FeatureSkew(as_of=end - timedelta(hours=3), feature="priority", compared=3, mismatched=1, rate=1 / 3),
            FeatureSkew(as_of=end - timedelta(hours=2), feature="priority", compared=1, mismatched=0, rate=0.0),
        ]
        Lake(tmp_path / "lake").write("feature_skew", skew)

        from airflow.dag_processing.dagbag import DagBag

        from oo.runtime import DAGS_FOLDER

        dag = DagBag(dag_folder=str(DAGS_FOLDER)).get_dag("policy_training")
        run = dag.test(logical_date=end)
        assert run.state == "success"

        from models.registry import Registry
        from models.training import DEFAULT_GRID

        registry = Registry()
        runs = registry.client.search_runs([registry.experiment_id])
        assert len(runs) == len(DEFAULT_GRID)
        assert {r.data.tags["oo.interval_end"] for r in runs} == {end.isoformat()}
        challenger = registry.version_for("challenger")
        assert challenger is not None
        best = [r for r in runs if "gate.decision" in r.data.tags]
        assert len(best) == 1
        # 500 decisions of 8 users: the gate slice (the latest 75) is far below the default minimum
        # effective sample size, so the gate refuses for want of evidence, and says so with its numbers
        tags, metrics = best[0].data.tags, best[0].data.metrics
        assert tags["gate.decision"] == "refused" and registry.version_for("champion") is None
        assert tags["gate.reason"].startswith("not enough evidence: effective sample size")
        assert tags["gate.reference"] == "logged policy"
        assert metrics["gate_ess"] < metrics["gate_min_ess"] == 100 and metrics["gate_n_decisions"] == 75
        assert metrics["gate_n_users"] <= 8
        assert tags["gate.selection_end"] <= tags["gate.slice_start"] < tags["gate.slice_end"] < end.isoformat()
        assert str(tmp_path / "mlartifacts") in best[0].info.artifact_uri
        assert all(r.data.metrics["skew_priority"] == pytest.approx(0.25) for r in runs)

        dag.test(logical_date=end)  # the same interval again: idempotent, no new runs
        assert len(registry.client.search_runs([registry.experiment_id])) == len(DEFAULT_GRID)
    finally:
        get_settings.cache_clear()
