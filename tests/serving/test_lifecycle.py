"""Which policy serves: champion, else the last local snapshot, else the rule baseline."""

from __future__ import annotations

from pathlib import Path

from models.policies import RuleBased
from oo.settings import Settings
from serving import lifecycle
from serving.snapshots import SnapshotStore
from tests.serving.conftest import free_port, learnable_policy


def dead_mlflow(tmp: Path) -> Settings:
    return Settings(paths={"var_dir": tmp}, mlflow={"tracking_uri": f"http://127.0.0.1:{free_port()}"})


def test_mlflow_down_and_no_snapshot_serve_the_rule_baseline(tmp_path: Path) -> None:
    loaded = lifecycle.initial_policy(dead_mlflow(tmp_path), SnapshotStore(tmp_path / "snapshots"))
    assert loaded.source == "rule_baseline" and isinstance(loaded.policy, RuleBased)
    assert loaded.policy.version == lifecycle.BASELINE_VERSION


def test_mlflow_down_serves_the_newest_local_snapshot(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    store.publish(RuleBased(version="old"), source="rule_baseline", champion_version=None)
    store.publish(learnable_policy(), source="champion", champion_version="3")
    loaded = lifecycle.initial_policy(dead_mlflow(tmp_path), store)
    assert (loaded.source, loaded.champion_version, loaded.policy.name) == ("snapshot", "3", "softmax")
