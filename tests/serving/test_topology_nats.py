"""One learner, many replicas, past one machine: two ``bentoml serve`` replicas (separate state,
as on two hosts) publish through NATS JetStream to one ``python -m serving.learner``. It learns
from both, gets what a replica decided while its bus was cut once it is back, and a learner killed
with SIGKILL restarts with its pending decisions intact and learns nothing twice."""

from __future__ import annotations

import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oo.bus import MemoryDeduplicator, NatsBus
from serving.snapshots import SnapshotInfo, SnapshotStore
from tests.conftest import NATS_URL
from tests.serving.conftest import (
    Server,
    Service,
    applied_env,
    apply_feature_store,
    free_port,
    learnable_policy,
    register_champion,
    seed_tasks,
    serving_env,
    wait_for,
)
from tests.serving.tcp_proxy import TcpProxy
from tests.serving.test_topology import probe_scores

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ACK_WAIT_S = 2.0


def start_learner(env: dict[str, str], var: Path, name: str) -> Server:
    return Server([sys.executable, "-m", "serving.learner"], env, var / f"{name}.log")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.conftest import need_service

    nats_url = need_service("NATS", NATS_URL)
    var = tmp_path_factory.mktemp("serving-topology-nats")
    tag = uuid.uuid4().hex[:8]
    env = serving_env(
        var,
        OO_SERVING__LEARNER="separate",
        OO_SERVING__SNAPSHOT_DIR=str(var / "snapshots"),  # the one folder every host mounts
        OO_SERVING__SNAPSHOT_EVERY_REWARDS="1",
        OO_SERVING__SNAPSHOT_EVERY_S="0.5",
        OO_SERVING__SNAPSHOT_POLL_S="0.05",
        OO_BUS__NATS_URL=nats_url,
        OO_BUS__STREAM=f"T{tag}",
        OO_BUS__SUBJECT_PREFIX=f"t{tag}",
        OO_BUS__ACK_WAIT_S=str(ACK_WAIT_S),
    )
    host, port = nats_url.removeprefix("nats://").split(":")
    proxy = TcpProxy(host, int(port), free_port())
    proxy.up()
    servers: list[Server] = []
    try:
        with applied_env(env) as settings:
            register_champion(settings, learnable_policy())
            apply_feature_store(settings)
            seed_tasks(settings, "carol", 6)
        snapshots = SnapshotStore(var / "snapshots")
        learner = start_learner(env, var, "learner")
        servers.append(learner)
        wait_for(lambda: snapshots.latest() is not None, 240, lambda: f"no first snapshot:\n{learner.log()}", learner)
        a = Service({**env, "OO_SERVING__STATE_DIR": str(var / "host-a")}, var / "replica-a.log")
        servers.append(a)
        b_env = {
            **env,
            "OO_SERVING__STATE_DIR": str(var / "host-b"),
            "OO_BUS__NATS_URL": f"nats://127.0.0.1:{proxy.port}",
        }
        b = Service(b_env, var / "replica-b.log")  # reaches the bus through a proxy the tests cut
        servers.append(b)
        yield {
            "a": a,
            "b": b,
            "learner": learner,
            "servers": servers,
            "snapshots": snapshots,
            "env": env,
            "var": var,
            "proxy": proxy,
        }
    finally:
        for server in servers:
            server.stop()
        proxy.close()
        import asyncio

        async def drop() -> None:
            bus = NatsBus(nats_url, MemoryDeduplicator(), stream=f"T{tag}", prefix=f"t{tag}")
            js = await bus._jetstream()
            for name in (bus.stream, f"{bus.stream}_DLQ"):
                await js.delete_stream(name)
            await bus.close()

        asyncio.run(drop())


def rank(replica: Service) -> str:
    r = replica.post("/rank", {"user_id": "carol"})
    assert r.status_code == 200, r.text
    event_id: str = r.json()["event_id"]
    return event_id


def reward(replica: Service, event_id: str) -> None:
    body = {"event_id": event_id, "user_id": "carol", "reaction": "done", "reaction_id": str(uuid.uuid4())}
    r = replica.post("/reward", body)
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text


def learned(world: dict[str, Any], decisions: int, rewards: int, what: str, after: int = 0) -> SnapshotInfo:
    """The first snapshot after seq ``after`` whose learner has seen ``decisions`` and learned ``rewards``."""
    snapshots: SnapshotStore = world["snapshots"]

    def check() -> SnapshotInfo | None:
        info = snapshots.latest()
        ok = info and info.seq > after and info.learner["decisions"] >= decisions and info.learner["learned"] >= rewards
        return info if ok else None

    return wait_for(check, 120, lambda: f"{what}:\n{world['learner'].log()}", world["learner"])  # type: ignore[no-any-return]


def test_one_learner_learns_from_both_replicas_and_both_load_its_snapshot(world: dict[str, Any]) -> None:
    a, b = world["a"], world["b"]
    start = world["snapshots"].latest().learner
    reward(a, rank(a))
    reward(b, rank(b))
    info = learned(world, start["decisions"] + 2, start["learned"] + 2, "the learner did not learn from both")
    assert info.learner["learned"] == start["learned"] + 2
    for replica in (a, b):
        wait_for(lambda r=replica: r.ready()["snapshot_seq"] >= info.seq, 60, "a replica did not load the snapshot")


def test_a_decision_made_while_the_bus_is_cut_is_served_and_learned_once_it_is_back(world: dict[str, Any]) -> None:
    b, proxy = world["b"], world["proxy"]
    start = world["snapshots"].latest()
    proxy.down()
    event_id = rank(b)  # served: durable in b's spool
    reward(b, event_id)
    time.sleep(2.0)
    now = world["snapshots"].latest()
    assert now.learner["decisions"] == start.learner["decisions"], "nothing reached the learner while cut"
    assert b.ready()["relay"]["backlog_bytes"] > 0, "spooled, waiting for the bus"
    wait_for(lambda: b.ready()["relay"]["failures"] >= 1, 60, "b's relay never reported the bus down")
    proxy.up()
    info = learned(world, start.learner["decisions"] + 1, start.learner["learned"] + 1, "b's relay did not deliver")
    assert info.learner["learned"] == start.learner["learned"] + 1
    assert b.ready()["relay"]["backlog_bytes"] == 0


def test_a_killed_learner_restarts_with_its_pending_decisions_and_learns_nothing_twice(world: dict[str, Any]) -> None:
    a = world["a"]
    start = world["snapshots"].latest().learner
    first, second = rank(a), rank(a)
    reward(a, first)
    before = learned(world, start["decisions"] + 2, start["learned"] + 1, "the learner did not learn the reward")
    scores_before = probe_scores(world["snapshots"])
    world["learner"].proc.send_signal(signal.SIGKILL)  # no checkpoint, no acks on the way out
    world["learner"].stop()
    restarted = start_learner(world["env"], world["var"], "learner-2")
    world["learner"] = restarted
    world["servers"].append(restarted)
    after = learned(world, before.learner["decisions"], before.learner["learned"], "restart", after=before.seq)
    time.sleep(3 * ACK_WAIT_S)  # whatever was unacked at the kill has come back by now
    after = world["snapshots"].latest()
    assert after.learner["learned"] == before.learner["learned"], "each reward learned once across the kill"
    assert after.learner["pending"] == before.learner["pending"], "pending decisions intact"
    assert probe_scores(world["snapshots"]) == scores_before
    reward(a, second)  # a decision pending since before the kill
    done = learned(world, before.learner["decisions"], before.learner["learned"] + 1, "pending reward", after.seq)
    assert done.learner["learned"] == before.learner["learned"] + 1
    assert probe_scores(world["snapshots"]) != scores_before
