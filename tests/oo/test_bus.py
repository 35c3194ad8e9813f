"""The event bus: at-least-once delivery, deduplication by event id, dead letters for what cannot
be processed; the same behaviour in-process and on NATS JetStream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from data_contracts import ReactionEvent
from oo.bus import Bus, DbDeduplicator, InProcessBus, NatsBus
from oo.db import engine_for, migrate

T0 = datetime(2026, 5, 1, 8, tzinfo=UTC)


def reaction(i: int) -> ReactionEvent:
    return ReactionEvent(
        event_id=UUID(int=i),
        decision_id=UUID(int=1000 + i),
        user_id="u1",
        candidate_id=f"task:{i}",
        reaction="done",
        occurred_at=T0,
    )


def dedup(tmp_path: Path) -> DbDeduplicator:
    url = f"sqlite:///{tmp_path / 'bus.db'}"
    migrate(url)
    return DbDeduplicator(engine_for(url))


@pytest.fixture(params=["in-process", pytest.param("nats", marks=pytest.mark.integration)])
async def bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Bus[ReactionEvent]]:
    if request.param == "in-process":
        b: Bus[ReactionEvent] = InProcessBus(dedup(tmp_path), max_deliver=3)
    else:
        url = request.getfixturevalue("nats_url")
        tag = uuid.uuid4().hex[:8]
        b = NatsBus(url, dedup(tmp_path), stream=f"T{tag}", prefix=f"t{tag}", max_deliver=3, ack_wait_s=2)
    yield b
    if isinstance(b, NatsBus):
        js = await b._jetstream()
        for name in (b.stream, f"{b.stream}_DLQ"):
            await js.delete_stream(name)
    await b.close()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_published_events_reach_the_consumer_once_each(bus: Bus[ReactionEvent]) -> None:
    seen: list[ReactionEvent] = []

    async def handle(e: ReactionEvent) -> None:
        seen.append(e)

    for i in range(5):
        await bus.publish("reactions", reaction(i))
    await bus.publish("reactions", reaction(2))  # published twice: processed once
    report = await bus.consume("reactions", ReactionEvent, handle, consumer="learner", idle_timeout=0.5)
    assert [e.event_id.int for e in seen] == [0, 1, 2, 3, 4]
    assert report.processed == 5


async def publish_raw(bus: Bus[ReactionEvent], topic: str, payload: bytes) -> None:
    """Put bytes that are not a valid record on ``topic``, as a broken producer would."""
    if isinstance(bus, NatsBus):
        js = await bus._jetstream()
        await js.publish(bus.subject(topic), payload)
    else:
        assert isinstance(bus, InProcessBus)
        bus._append(topic, payload)


@pytest.mark.anyio
async def test_a_malformed_event_is_dead_lettered_and_the_consumer_keeps_going(
    bus: Bus[ReactionEvent],
) -> None:
    seen: list[int] = []

    async def handle(e: ReactionEvent) -> None:
        seen.append(e.event_id.int)

    await bus.publish("reactions", reaction(1))
    await publish_raw(bus, "reactions", b"{not json")
    await publish_raw(bus, "reactions", reaction(2).model_dump_json().replace('"done"', '"meh"').encode())
    await bus.publish("reactions", reaction(3))
    report = await bus.consume("reactions", ReactionEvent, handle, consumer="learner")
    assert seen == [1, 3]
    assert report.dead_lettered == 2
    dead = await bus.dead_letters("reactions")
    assert sorted(d.reason.split(":")[0] for d in dead) == ["malformed", "malformed"]
    assert any("reaction" in d.reason for d in dead) and any("{not json" == d.raw for d in dead)


@pytest.mark.anyio
async def test_a_failing_handler_gets_redeliveries_then_the_event_is_dead_lettered(
    bus: Bus[ReactionEvent],
) -> None:
    attempts: dict[int, int] = {}

    async def flaky(e: ReactionEvent) -> None:
        attempts[e.event_id.int] = attempts.get(e.event_id.int, 0) + 1
        if e.event_id.int == 1 and attempts[1] < 2:
            raise ConnectionError("feature store down")
        if e.event_id.int == 2:
            raise ValueError("poison")

    for i in (1, 2, 3):
        await bus.publish("reactions", reaction(i))
    report = await bus.consume("reactions", ReactionEvent, flaky, consumer="learner", idle_timeout=1.5)
    assert attempts == {1: 2, 2: 3, 3: 1}
    assert report.processed == 2 and report.dead_lettered == 1
    (dead,) = await bus.dead_letters("reactions")
    assert "ValueError: poison" in dead.reason and dead.deliveries == 3


@pytest.mark.anyio
async def test_consumers_keep_their_own_position(bus: Bus[ReactionEvent]) -> None:
    async def nothing(e: ReactionEvent) -> None:
        return None

    for i in range(3):
        await bus.publish("reactions", reaction(i))
    a = await bus.consume("reactions", ReactionEvent, nothing, consumer="a", max_messages=2)
    b = await bus.consume("reactions", ReactionEvent, nothing, consumer="b")
    a2 = await bus.consume("reactions", ReactionEvent, nothing, consumer="a")
    assert (a.processed, b.processed, a2.processed) == (2, 3, 1)


CRASHING_CONSUMER = textwrap.dedent(
    """
    import asyncio, os, sys
    from data_contracts import ReactionEvent
    from oo.bus import DbDeduplicator, NatsBus
    from oo.db import engine_for

    url, stream, prefix, db, out = sys.argv[1:]
    bus = NatsBus(url, DbDeduplicator(engine_for(db)), stream=stream, prefix=prefix, max_deliver=3, ack_wait_s=1)

    async def handle(e):
        with open(out, "a") as f:
            f.write(str(e.event_id) + "\\n")

    async def main():
        import nats.aio.msg
        async def die(self, *a, **k):  # killed after processing, before the ack reaches the server
            os._exit(9)
        nats.aio.msg.Msg.ack_sync = die
        await bus.consume("reactions", ReactionEvent, handle, consumer="learner", max_messages=1)

    asyncio.run(main())
    """
)


@pytest.mark.integration
@pytest.mark.anyio
async def test_on_nats_a_consumer_that_dies_before_acking_gets_the_event_again_and_processes_it_once(
    nats_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    db = f"sqlite:///{tmp_path / 'bus.db'}"
    migrate(db)
    out = tmp_path / "processed.txt"
    bus = NatsBus(
        nats_url,
        DbDeduplicator(engine_for(db)),
        stream=f"T{tag}",
        prefix=f"t{tag}",
        max_deliver=3,
        ack_wait_s=1,
    )
    try:
        await bus.publish("reactions", reaction(7))
        proc = subprocess.run(
            [sys.executable, "-c", CRASHING_CONSUMER, nats_url, bus.stream, bus.prefix, db, str(out)],
            capture_output=True,
            timeout=120,
        )
        assert proc.returncode == 9, proc.stderr.decode()[-2000:]
        assert out.read_text().split() == [str(UUID(int=7))]

        async def handle(e: ReactionEvent) -> None:
            with open(out, "a") as f:
                f.write(str(e.event_id) + "\n")

        # poll under a deadline until the unacked message's ack wait has run out and it comes back
        deadline = time.monotonic() + 30
        report = await bus.consume("reactions", ReactionEvent, handle, consumer="learner", idle_timeout=0.5)
        while report.duplicates == 0 and report.processed == 0 and time.monotonic() < deadline:
            report = await bus.consume("reactions", ReactionEvent, handle, consumer="learner", idle_timeout=0.5)
        assert report.duplicates == 1 and report.processed == 0, "redelivered, recognised, not processed again"
        assert out.read_text().split() == [str(UUID(int=7))]
        again = await bus.consume("reactions", ReactionEvent, handle, consumer="learner", idle_timeout=0.5)
        assert (again.processed, again.duplicates) == (0, 0), "acked this time"
    finally:
        js = await bus._jetstream()
        for name in (bus.stream, f"{bus.stream}_DLQ"):
            await js.delete_stream(name)
        await bus.close()


@pytest.mark.integration
@pytest.mark.anyio
async def test_on_nats_streams_are_created_idempotently(nats_url: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    buses = [NatsBus(nats_url, dedup(tmp_path), stream=f"T{tag}", prefix=f"t{tag}") for _ in range(2)]
    try:
        for b in buses:
            await b.publish("reactions", reaction(1))
        info = await (await buses[0]._jetstream()).stream_info(f"T{tag}")
        assert info.state.messages == 1, "the second publish of the same event id was deduplicated by the server"
    finally:
        js = await buses[0]._jetstream()
        for name in (f"T{tag}", f"T{tag}_DLQ"):
            await js.delete_stream(name)
        for b in buses:
            await b.close()


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def test_keys_longer_than_the_column_are_deduplicated_by_their_digest(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A tip score's key (decision id | candidate id | policy) may be longer than the stored id's
    64 characters: it is stored as its digest, distinct keys stay distinct, PostgreSQL included."""
    url = request.getfixturevalue("pg_url") if database == "postgresql" else f"sqlite:///{tmp_path / 'bus.db'}"
    migrate(url)
    seen = DbDeduplicator(engine_for(url))
    long_key = f"{uuid.uuid4()}|task:{'x' * 80}|rule_based"
    other = long_key.replace("rule_based", "softmax")
    seen.mark("events_ingest_tip_scores", long_key)
    seen.mark("events_ingest_tip_scores", long_key)  # again: no error
    assert seen.seen("events_ingest_tip_scores", long_key)
    assert not seen.seen("events_ingest_tip_scores", other)
    assert seen.seen("events_ingest_tip_scores", "short") is False


@pytest.mark.integration
@pytest.mark.anyio
async def test_on_nats_a_client_that_gave_up_is_replaced_by_the_next_publish(nats_url: str, tmp_path: Path) -> None:
    """nats.py closes its client for good once its reconnect attempts are spent (NATS down for
    longer than that); a long-lived publisher (the app's relay) must not keep that dead client."""
    tag = uuid.uuid4().hex[:8]
    bus = NatsBus(nats_url, dedup(tmp_path), stream=f"T{tag}", prefix=f"t{tag}")
    try:
        await bus.publish("reactions", reaction(1))
        await bus._nc.close()  # what nats.py does after its last reconnect attempt fails
        await bus.publish("reactions", reaction(2))  # connects again
        await bus._nc.close()
        await bus.close()  # closing the bus over a dead client is harmless too
        await bus.publish("reactions", reaction(3))
        info = await (await bus._jetstream()).stream_info(f"T{tag}")
        assert info.state.messages == 3
    finally:
        js = await bus._jetstream()
        for name in (f"T{tag}", f"T{tag}_DLQ"):
            await js.delete_stream(name)
        await bus.close()
