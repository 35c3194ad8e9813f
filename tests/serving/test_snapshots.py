"""Snapshots and the learner checkpoint: atomic files, newest wins, other code refused."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from models.learner import OnlineLearner
from models.policies import PolicyFormatError, RuleBased, dumps
from models.policies.base import Arm
from serving.snapshots import Checkpoint, SnapshotStore, load_checkpoint, save_checkpoint
from tests.serving.conftest import learnable_policy


def test_the_newest_snapshot_wins_and_old_files_are_pruned(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    stamps = [store.stamp()]
    for i in range(7):
        store.publish(RuleBased(version=f"v{i}"), source="champion", champion_version="1")
        stamps.append(store.stamp())
    info, policy = store.load_latest() or pytest.fail("no snapshot")
    assert info.seq == 7 and policy.version == "v6" and stamps[0] == 0 and stamps[-1] > 0
    assert len(list(tmp_path.glob("policy-*.pkl"))) == 5 and not list(tmp_path.glob(".*tmp"))


def test_a_checkpoint_restores_pending_decisions_and_the_learned_policy(tmp_path: Path) -> None:
    at = datetime(2026, 5, 1, tzinfo=UTC)
    learner = OnlineLearner(learnable_policy(), window=timedelta(hours=1), default_reward=0.0)
    learner.observe(UUID(int=1), {}, Arm("a", {"priority": 2.0}), at)
    learner.observe(UUID(int=2), {}, Arm("b", {"priority": 3.0}), at)
    learner.reward(UUID(int=1), 1.0, at)
    save_checkpoint(tmp_path / "ckpt", Checkpoint(learner, {"decisions": 42}, "champion", "3"))
    restored = load_checkpoint(tmp_path / "ckpt") or pytest.fail("no checkpoint")
    assert restored.offsets == {"decisions": 42} and restored.champion_version == "3"
    assert restored.learner.pending == 2 and dumps(restored.learner.policy) == dumps(learner.policy)
    assert restored.learner.reward(UUID(int=2), 1.0, at) == "learned"
    assert load_checkpoint(tmp_path / "none") is None


def test_a_checkpoint_written_by_other_code_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ckpt").write_bytes(pickle.dumps({"oo_checkpoint_format": 0, "payload": b""}))
    with pytest.raises(PolicyFormatError, match="other code"):
        load_checkpoint(tmp_path / "ckpt")
