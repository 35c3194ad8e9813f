"""A user's rows in MLflow artifacts: found for an export, removed by an erasure (in place for a
local artifact store, downloaded-filtered-uploaded through the artifact repository otherwise),
other users' rows kept, idempotent; no tracking store is created where none existed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_contracts import TipCandidate, TrainingExample
from models import tracking_erasure
from models.registry import TRAINING_SET, Registry
from models.tracking_erasure import erase_user, read_user
from oo.settings import MlflowSettings, PathsSettings, Settings

pytestmark = pytest.mark.slow

T0 = datetime(2026, 5, 1, 8, tzinfo=UTC)


def example(user_id: str) -> TrainingExample:
    cand = TipCandidate(candidate_id="task:1", content="task 1", kind="todoist_task", source="todoist", task_id="1")
    return TrainingExample(
        decision_id=uuid.uuid4(), user_id=user_id, decided_at=T0, candidates=[cand], chosen_id="task:1",
        propensity=0.5, policy="baseline", policy_version="1", rewarded=True, reward=1.0,
    )  # fmt: skip


def settings(tmp_path: Path) -> Settings:
    return Settings(
        paths=PathsSettings(var_dir=tmp_path / "var"),
        mlflow=MlflowSettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=tmp_path / "artifacts"),
    )


def logged_run(registry: Registry, users: list[str]) -> str:
    import mlflow

    with mlflow.start_run(experiment_id=registry.experiment_id) as run:
        pass
    registry.log_training_set(run.info.run_id, [example(u) for u in users])
    return str(run.info.run_id)


def lineage(registry: Registry, run_id: str) -> list[str]:
    import mlflow

    uri = f"{registry.client.get_run(run_id).info.artifact_uri}/{TRAINING_SET}"
    return list(pq.read_table(mlflow.artifacts.download_artifacts(uri))["user_id"].to_pylist())


@pytest.mark.parametrize("store", ["local folder", "through the artifact repository"])
def test_erasure_rewrites_artifacts_without_the_user(tmp_path: Path, store: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    if store != "local folder":  # as for an object store: download, filter, upload (or delete)
        monkeypatch.setattr(tracking_erasure, "_local_root", lambda uri: None)
    s = settings(tmp_path)
    registry = Registry(s)
    mixed = logged_run(registry, ["alice", "bob", "alice"])
    only_alice = logged_run(registry, ["alice"])
    registry.client.delete_run(only_alice)  # a deleted run keeps its artifacts until gc

    found = read_user(s, "alice")
    assert {run: [r["user_id"] for r in rows[TRAINING_SET]] for run, rows in found.items()} == {
        mixed: ["alice", "alice"],
        only_alice: ["alice"],
    }
    assert erase_user(s, "alice") == 3
    assert lineage(registry, mixed) == ["bob"]
    assert TRAINING_SET not in {a.path for a in registry.client.list_artifacts(only_alice, "training_set")}
    assert read_user(s, "alice") == {} and erase_user(s, "alice") == 0
    assert list(read_user(s, "bob")) == [mixed]


def test_no_tracking_store_is_created_by_an_erasure(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert read_user(s, "alice") == {} and erase_user(s, "alice") == 0
    assert not (tmp_path / "mlflow.db").exists()
