"""One learner, many replicas: ``python -m serving.learner`` learns from a replica's decisions and
rewards through the event log, publishes snapshots the replica loads without a restart, and
restarts with its pending decisions and learned state intact. The replica runs two worker
processes (``OO_SERVING__WORKERS=2``): both decide, and the one learner learns from both."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.policies.base import Arm
from serving.snapshots import SnapshotStore
from tests.serving.conftest import (
    Server,
    Service,
    applied_env,
    apply_feature_store,
    learnable_policy,
    register_champion,
    seed_tasks,
    serving_env,
    wait_for,
)

pytestmark = pytest.mark.slow

PROBE = [Arm(f"p{i}", {"priority": float(i + 1), "is_overdue": float(i % 2)}) for i in range(4)]
"""Fixed candidates whose scores show a policy's learned state."""


def start_learner(env: dict[str, str], var: Path, name: str) -> Server:
    return Server([sys.executable, "-m", "serving.learner"], env, var / f"{name}.log")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    var = tmp_path_factory.mktemp("serving-topology")
    env = serving_env(
        var,
        OO_SERVING__LEARNER="separate",
        OO_SERVING__WORKERS="2",
        OO_SERVING__SNAPSHOT_EVERY_REWARDS="1",
        OO_SERVING__SNAPSHOT_EVERY_S="0.5",
        OO_SERVING__SNAPSHOT_POLL_S="0.05",
    )
    with applied_env(env) as settings:
        register_champion(settings, learnable_policy())
        apply_feature_store(settings)
        seed_tasks(settings, "carol", 6)
        snapshots = SnapshotStore(settings.snapshot_dir)
        learner = start_learner(env, var, "learner")
        world: dict[str, Any] = {"learner": learner, "snapshots": snapshots, "env": env, "var": var}
        try:
            wait_for(
                lambda: snapshots.latest() is not None, 240, lambda: f"no first snapshot:\n{learner.log()}", learner
            )
            world["replica"] = replica = Service(env, var / "replica.log")
            try:
                yield world
            finally:
                replica.stop()
        finally:
            world["learner"].stop()  # the one a test restarted, when it did
            learner.stop()


def rank(replica: Service) -> str:
    r = replica.post("/rank", {"user_id": "carol"})
    assert r.status_code == 200, r.text
    event_id: str = r.json()["event_id"]
    return event_id


def reward(replica: Service, event_id: str) -> None:
    body = {"event_id": event_id, "user_id": "carol", "reaction": "done", "reaction_id": str(uuid.uuid4())}
    r = replica.post("/reward", body)
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text


def probe_scores(snapshots: SnapshotStore) -> list[float]:
    loaded = snapshots.load_latest()
    assert loaded is not None
    return loaded[1].scores({}, PROBE)


def test_the_replica_loads_the_learners_new_snapshot_without_a_restart(world: dict[str, Any]) -> None:
    replica, snapshots = world["replica"], world["snapshots"]
    start = replica.ready()
    assert start["learner"] == "separate" and start["model_source"] in ("snapshot", "champion")
    reward(replica, rank(replica))
    ready = wait_for(
        lambda: (
            (r := replica.ready())["snapshot_seq"] > start["snapshot_seq"] and r["learner_stats"].get("learned") and r
        ),
        60,
        "the replica did not load a newer snapshot",
    )
    assert ready["snapshot_loads"] >= 1 and ready["learner_stats"]["learned"] >= 1
    assert ready["snapshot_seq"] == snapshots.latest().seq or ready["snapshot_seq"] < snapshots.latest().seq


def test_both_workers_decide_and_the_one_learner_learns_from_each(world: dict[str, Any]) -> None:
    replica, snapshots = world["replica"], world["snapshots"]
    before = wait_for(lambda: snapshots.latest(), 60, "no snapshot")
    answered: dict[int, list[str]] = {}
    for _ in range(200):  # a new connection per request: the kernel spreads them (unevenly) over the workers
        if len(answered) == 2 and sum(map(len, answered.values())) >= 8:
            break
        with httpx.Client(base_url=replica.url, timeout=30) as fresh:
            r = fresh.post("/rank", json={"user_id": "carol"})
            assert r.status_code == 200, r.text
            worker = fresh.get("/ops/ready").json()["worker"]  # the same connection: the same worker
        answered.setdefault(worker, []).append(r.json()["event_id"])
    assert sorted(answered) == [1, 2], answered
    decided = sum(map(len, answered.values()))
    for event_ids in answered.values():  # one kept connection: one reward reaches the other worker
        reward(replica, event_ids[0])
    wait_for(
        lambda: (
            (i := snapshots.latest()).learner["decisions"] >= before.learner["decisions"] + decided
            and i.learner["learned"] >= before.learner["learned"] + 2
        ),
        60,
        "the learner did not learn from both workers' decisions",
    )


def test_the_learner_restarts_with_its_pending_decisions_and_learned_state(world: dict[str, Any]) -> None:
    replica, snapshots = world["replica"], world["snapshots"]
    start = snapshots.latest().learner  # what the module's earlier tests left learned
    first, second = rank(replica), rank(replica)
    reward(replica, first)
    before = wait_for(
        lambda: (
            (i := snapshots.latest())
            and i.learner["decisions"] >= start["decisions"] + 2
            and i.learner["learned"] >= start["learned"] + 1
            and i
        ),
        60,
        "the learner did not learn the first reward",
    )
    scores_before = probe_scores(snapshots)
    world["learner"].stop()  # SIGTERM: checkpoint
    restarted = start_learner(world["env"], world["var"], "learner-2")
    world["learner"] = restarted
    after = wait_for(
        lambda: (i := snapshots.latest()) and i.seq > before.seq and i, 240, lambda: restarted.log(), restarted
    )
    assert (
        after.learner["pending"] == before.learner["pending"] and after.learner["learned"] == before.learner["learned"]
    )
    assert probe_scores(snapshots) == scores_before  # learned state intact
    reward(replica, second)  # a decision pending since before the restart
    learned = wait_for(
        lambda: (i := snapshots.latest()) and i.learner["learned"] == before.learner["learned"] + 1 and i,
        60,
        "the pending decision's reward was not learned after the restart",
    )
    assert learned.learner["pending"] == before.learner["pending"]
    assert probe_scores(snapshots) != scores_before
