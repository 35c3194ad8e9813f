"""Erasing a user from NATS JetStream: their events and dead letters are deleted from the streams,
everyone else's stay, and a durable consumer part-way through the stream reads the rest of the
others' events once, without the erased ones."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from data_contracts import ReactionEvent
from oo.bus import DbDeduplicator, NatsBus
from oo.bus_erasure import erase_user, read_user
from oo.db import engine_for, migrate

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

T0 = datetime(2026, 5, 1, 8, tzinfo=UTC)


def reaction(i: int, user: str) -> ReactionEvent:
    return ReactionEvent(
        event_id=UUID(int=i), decision_id=UUID(int=1000 + i), user_id=user, candidate_id=f"task:{i}",
        reaction="done", occurred_at=T0,
    )  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def bus(nats_url: str, tmp_path: Path) -> AsyncIterator[NatsBus]:
    url = f"sqlite:///{tmp_path / 'bus.db'}"
    migrate(url)
    tag = uuid.uuid4().hex[:8]
    b = NatsBus(nats_url, DbDeduplicator(engine_for(url)), stream=f"E{tag}", prefix=f"e{tag}", max_deliver=1)
    yield b
    js = await b._jetstream()
    for name in (b.stream, f"{b.stream}_DLQ"):
        await js.delete_stream(name)
    await b.close()


async def test_erasure_deletes_the_users_events_and_dead_letters_only(bus: NatsBus) -> None:
    users = ["alice", "bob"]
    for i in range(8):
        await bus.publish("reactions", reaction(i, users[i % 2]))
    seen: list[str] = []

    async def first_half(event: ReactionEvent) -> None:
        seen.append(event.user_id)

    # a durable consumer reads part of the stream before the erasure
    await bus.consume("reactions", ReactionEvent, first_half, consumer="ingest", max_messages=3)
    assert seen == ["alice", "bob", "alice"]
    # a malformed message of Alice's ends as a dead letter holding her raw body
    js = await bus._jetstream()
    await js.publish(bus.subject("rewards"), b'{"user_id": "alice", "reward": "not a number"}')

    async def never(event: ReactionEvent) -> None:
        raise AssertionError("the malformed event reached the handler")

    report = await bus.consume("rewards", ReactionEvent, never, consumer="learner")
    assert report.dead_lettered == 1

    held = await read_user(bus, "alice")
    assert len(held[bus.subject("reactions")]) == 4 and len(held[bus.dlq_subject("rewards")]) == 1
    assert await erase_user(bus, "alice") == 6  # 4 reactions, the malformed reward, its dead letter
    assert await read_user(bus, "alice") == {}
    assert await erase_user(bus, "alice") == 0
    assert len((await read_user(bus, "bob"))[bus.subject("reactions")]) == 4

    rest: list[str] = []

    async def second_half(event: ReactionEvent) -> None:
        rest.append(event.user_id)

    await bus.consume("reactions", ReactionEvent, second_half, consumer="ingest")
    assert rest == ["bob", "bob", "bob"]  # the rest of Bob's, once each; nothing of Alice's


async def test_an_empty_user_id_is_refused(bus: NatsBus) -> None:
    with pytest.raises(ValueError, match="empty"):
        await erase_user(bus, "")
