"""One learner, many replicas, over the real NATS JetStream: replicas spool their events and relay
them to the bus; the learner consumes decisions, rewards and activations from it in any order,
learns each once across crashes (acks after its checkpoint) and gets what a replica spooled while
the bus was down once it is back."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from data_contracts import Activation, Decision, RewardEvent, TipCandidate
from oo.events_ingest import EventLog
from oo.settings import Settings
from serving import bus_feed
from serving.bus_feed import BusFeed
from serving.learning import LearnerLoop
from serving.publish import Relay, Spool, nats_bus_factory, start_relay
from serving.snapshots import SnapshotStore
from tests.conftest import NATS_URL
from tests.serving.conftest import free_port, learnable_policy
from tests.serving.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ACK_WAIT_S = 1.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def world(nats_url: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """Settings on a stream and subject prefix of this test's own, and its relays, stopped after."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        paths={"var_dir": tmp_path},
        mlflow={"tracking_uri": f"http://127.0.0.1:{free_port()}"},  # MLflow down: the snapshot serves
        bus={"nats_url": nats_url, "stream": f"T{tag}", "subject_prefix": f"t{tag}", "ack_wait_s": ACK_WAIT_S},
        reward={"window_hours": 1.0, "default_reward": 0.3},
        serving={"learner": "separate", "checkpoint_every_s": 3600},
    )
    SnapshotStore(settings.snapshot_dir).publish(learnable_policy(), source="champion", champion_version="1")
    relays: list[Relay] = []
    yield {"settings": settings, "tmp": tmp_path, "relays": relays}
    for relay in relays:
        relay.stop()
    bus = nats_bus_factory(settings)()
    js = await bus._jetstream()
    for name in (bus.stream, f"{bus.stream}_DLQ"):
        await js.delete_stream(name)
    await bus.close()


def replica(world: dict[str, Any], name: str, settings: Settings | None = None) -> Spool:
    """A replica's spool and its running relay."""
    spool, relay = start_relay(world["tmp"] / name / "spool", nats_bus_factory(settings or world["settings"]))
    world["relays"].append(relay)
    return spool


async def learner(world: dict[str, Any]) -> BusFeed:
    """A learner (from its checkpoint when there is one) fed by the bus."""
    settings: Settings = world["settings"]
    loop = LearnerLoop(settings, EventLog(world["tmp"] / "events"), SnapshotStore(settings.snapshot_dir))
    feed = BusFeed(loop, nats_bus_factory(settings)())
    await feed.start()
    return feed


async def step_until(feed: BusFeed, check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: {feed.loop.stats()}")
        await feed.step(timeout=0.1)


async def step_for(feed: BusFeed, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await feed.step(timeout=0.1)


async def crash(feed: BusFeed) -> None:
    """The learner process dies: no checkpoint, no acks; its connection goes away."""
    await feed.bus.abort()


CANDIDATES = [
    TipCandidate(
        candidate_id=f"c{j}", content="x", kind="todoist_task", source="todoist", features={"priority": j + 1.0}
    )
    for j in range(3)
]


def decision(i: int, chosen: str = "c1", deferred: bool = False, at: datetime | None = None) -> Decision:
    return Decision(
        decision_id=uuid.UUID(int=i), user_id="u", decided_at=at or datetime.now(UTC), candidates=CANDIDATES,
        ranked_ids=["c0", "c1", "c2"], chosen_id=chosen, propensity=0.5, policy="softmax",
        policy_version="tip-policy/1", features={"hour": float(i)}, defer_activation=deferred,
    )  # fmt: skip


def reward(i: int, value: float = 1.0) -> RewardEvent:
    return RewardEvent(
        event_id=uuid.UUID(int=10_000 + i), decision_id=uuid.UUID(int=i), user_id="u", reaction="done",
        reward=value, occurred_at=datetime.now(UTC),
    )  # fmt: skip


def chosen(d: Decision) -> TipCandidate:
    return next(c for c in d.candidates if c.candidate_id == d.chosen_id)


async def test_one_learner_learns_from_two_replicas_each_reward_once_in_any_order(world: dict[str, Any]) -> None:
    feed = await learner(world)
    a, b = replica(world, "a"), replica(world, "b")
    d1, d2 = decision(1, "c0"), decision(2, "c2")
    a.append("decisions", d1)
    b.append("rewards", reward(2))  # replica b's user reacted before b's decision reached the bus
    await step_until(feed, lambda: feed.loop.learner.pending == 1 and feed.loop.learner.waiting == 1, "d1, r2")
    assert feed.loop.learner.counts.learned == 0
    b.append("decisions", d2)
    await step_until(feed, lambda: feed.loop.learner.counts.learned == 1, "r2 learned once d2 arrived")
    a.append("rewards", reward(1, 0.2))
    a.append("rewards", reward(1, 0.2))  # the client retried: the same reward event again
    await step_until(feed, lambda: feed.loop.learner.counts.learned == 2, "r1 learned")
    await step_for(feed, 0.5)
    reference = learnable_policy()
    reference.learn_one(d2.features, chosen(d2), 1.0)
    reference.learn_one(d1.features, chosen(d1), 0.2)
    assert feed.loop.learner.counts.learned == 2 and feed.loop.learner.waiting == 0
    assert feed.loop.policy.scores({"hour": 3.0}, CANDIDATES) == reference.scores({"hour": 3.0}, CANDIDATES)
    await feed.close()


async def test_window_close_learns_the_default_reward_and_skips_a_deferred_decision_never_activated(
    world: dict[str, Any],
) -> None:
    feed = await learner(world)
    spool = replica(world, "a")
    spool.append("decisions", decision(1))  # never rewarded: the default reward at window close
    spool.append("decisions", decision(2, deferred=True))  # never activated: never learned from
    spool.append("decisions", decision(3, deferred=True))
    spool.append("rewards", reward(3))
    await step_until(feed, lambda: feed.loop.learner.pending == 3, "three decisions")
    assert feed.loop.learner.counts.learned == 0, "a deferred decision's reward waits for its activation"
    spool.append("activations", Activation(decision_id=uuid.UUID(int=3), user_id="u", activated_at=datetime.now(UTC)))
    await step_until(feed, lambda: feed.loop.learner.counts.learned == 1, "d3 learned once activated")
    assert feed.loop.expire(datetime.now(UTC) + timedelta(hours=2)) == 3
    counts = feed.loop.learner.counts
    assert (counts.learned, counts.defaults, counts.skipped_deferred) == (1, 1, 1)
    await feed.close()


async def test_a_killed_learner_restarts_with_its_pending_decisions_and_learns_nothing_twice(
    world: dict[str, Any],
) -> None:
    spool = replica(world, "a")
    feed = await learner(world)
    for i in (1, 2, 3):
        spool.append("decisions", decision(i))
    await step_until(feed, lambda: feed.loop.learner.pending == 3, "three decisions")
    feed.loop.checkpoint()
    assert await feed.ack() == 3
    spool.append("rewards", reward(1))
    await step_until(feed, lambda: feed.loop.learner.counts.learned == 1, "r1")
    learned_scores = feed.loop.policy.scores({}, CANDIDATES)
    await crash(feed)  # r1 was learned, but neither checkpointed nor acked

    second = await learner(world)
    assert (second.loop.learner.pending, second.loop.learner.counts.learned) == (3, 0), "the checkpoint's state"
    await step_until(second, lambda: second.loop.learner.counts.learned == 1, "r1 redelivered after the ack wait")
    assert second.loop.policy.scores({}, CANDIDATES) == learned_scores
    second.loop.checkpoint()  # r1 is in the checkpoint now, but the process dies before the acks
    await crash(second)

    third = await learner(world)
    assert third.loop.learner.counts.learned == 1
    await step_until(third, lambda: third.loop.redelivered >= 1, "r1 redelivered again", timeout=10 * ACK_WAIT_S)
    await step_for(third, 2 * ACK_WAIT_S)  # anything else still unacked comes back in this time
    assert third.loop.learner.counts.learned == 1, "recognised by its checkpointed key, not learned twice"
    assert third.loop.policy.scores({}, CANDIDATES) == learned_scores
    spool.append("rewards", reward(2))  # a decision pending since before both crashes
    await step_until(third, lambda: third.loop.learner.counts.learned == 2, "r2 for a decision from before")
    assert third.loop.learner.pending == 3
    await third.close()


async def test_replicas_sharing_a_spool_publish_each_line_once(world: dict[str, Any]) -> None:
    feed = await learner(world)
    first = replica(world, "shared")
    second = replica(world, "shared")  # a second replica process on the same disk and state dir
    for i in range(40):
        (first if i % 2 else second).append("decisions", decision(i))
    await step_until(feed, lambda: feed.loop.learner.pending == 40, "forty decisions")
    await step_for(feed, 1.0)
    relays = world["relays"][-2:]
    assert sum(r.published for r in relays) == 40 and feed.loop.redelivered == 0
    info = await (await feed.bus._jetstream()).stream_info(feed.bus.stream)
    assert info.state.messages == 40, "each spooled line is in the stream once"
    await feed.close()


async def test_a_malformed_message_is_dead_lettered_and_the_learner_keeps_going(world: dict[str, Any]) -> None:
    feed = await learner(world)
    await feed.bus.publish_raw("decisions", b'{"decision_id": "not a decision"}', "garbage")
    replica(world, "a").append("decisions", decision(1))
    await step_until(feed, lambda: feed.loop.learner.pending == 1, "the valid decision after the malformed one")
    assert feed.loop.malformed == 1
    dead = await feed.bus.dead_letters("decisions")
    assert [d.consumer for d in dead] == ["learner_decisions"] and dead[0].reason.startswith("malformed")
    await feed.close()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    host, port = NATS_URL.removeprefix("nats://").split(":")
    p = TcpProxy(host, int(port), free_port())
    yield p
    p.close()


async def test_the_bus_down_at_publish_time_the_event_is_spooled_and_relayed_when_it_is_back(
    world: dict[str, Any], proxy: TcpProxy
) -> None:
    feed = await learner(world)  # the learner reaches NATS directly; the replica through the proxy
    cut_off = world["settings"].model_copy(
        update={"bus": world["settings"].bus.model_copy(update={"nats_url": f"nats://127.0.0.1:{proxy.port}"})}
    )
    spool = replica(world, "a", cut_off)
    relay = world["relays"][-1]
    spool.append("decisions", decision(1))  # returns once fsynced: the decision can be served
    assert len(spool.read("decisions", "check", start=0)[0]) == 1
    await asyncio.to_thread(wait, lambda: relay.failures >= 1, "the relay never found the bus down")
    await step_for(feed, 1.0)
    assert feed.loop.learner.pending == 0
    assert relay.describe()["backlog_bytes"] == len(spool.path("decisions").read_bytes())
    proxy.up()
    await step_until(feed, lambda: feed.loop.learner.pending == 1, "the spooled decision relayed")

    proxy.down()  # and down again, this time under an open connection
    failures = relay.failures
    spool.append("rewards", reward(1))
    await asyncio.to_thread(wait, lambda: relay.failures > failures, "the relay never noticed the cut")
    proxy.up()
    await step_until(feed, lambda: feed.loop.learner.counts.learned == 1, "the spooled reward relayed")
    assert relay.published == 2 and relay.describe()["backlog_bytes"] == 0
    await feed.close()


def wait(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(what)
        time.sleep(0.05)


async def test_the_learner_rides_out_the_bus_going_down_and_coming_back(
    world: dict[str, Any], proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="serving.bus_feed")
    proxy.up()
    settings: Settings = world["settings"]
    via_proxy = settings.bus.model_copy(update={"nats_url": f"nats://127.0.0.1:{proxy.port}"})
    loop = LearnerLoop(settings, EventLog(world["tmp"] / "events"), SnapshotStore(settings.snapshot_dir))
    feed = BusFeed(loop, nats_bus_factory(settings.model_copy(update={"bus": via_proxy}))())
    started, stop = threading.Event(), threading.Event()
    running = asyncio.create_task(bus_feed.run(feed, stop, time.monotonic() + 120, 0.02, started.set))
    try:
        await until(started.is_set, "the learner did not start")
        spool = replica(world, "a")  # the replica reaches NATS directly
        spool.append("decisions", decision(1))
        await until(lambda: loop.learner.pending == 1, "the decision")
        proxy.down()
        spool.append("rewards", reward(1))
        # down long enough for the NATS client to give up its own reconnection attempts
        await until(lambda: "learner: bus failed" in caplog.text, "the learner never saw the bus fail", timeout=60)
        assert loop.learner.counts.learned == 0, "cut off from the bus"
        proxy.up()
        await until(lambda: loop.learner.counts.learned == 1, "the reward once the bus is back", timeout=60)
    finally:
        stop.set()
        await running
    assert loop.learner.counts.learned == 1


async def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(what)
        await asyncio.sleep(0.05)
