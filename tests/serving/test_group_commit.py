"""Group commit of the event log: concurrent ranks share writes and fsyncs, in the callers' topic
order, nobody returns before their events are durable, and a failed flush fails its callers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from data_contracts import Activation, ReactionEvent
from oo.events_ingest import EventLog
from serving.group_commit import GroupCommit

AT = datetime(2026, 5, 1, 9, tzinfo=UTC)


class RecordingLog(EventLog):
    """The real event log, noting each durable append (topic, lines) in order."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.appends: list[tuple[str, int]] = []

    def append_lines(self, topic: str, data: bytes) -> None:
        super().append_lines(topic, data)
        self.appends.append((topic, data.count(b"\n")))


def reaction(i: int) -> ReactionEvent:
    return ReactionEvent(
        event_id=UUID(int=i),
        decision_id=UUID(int=1000 + i),
        user_id="u",
        candidate_id="c",
        reaction="done",
        occurred_at=AT,
    )


def activation(i: int) -> Activation:
    return Activation(decision_id=UUID(int=1000 + i), user_id="u", activated_at=AT)


def test_concurrent_callers_share_one_write_per_topic_in_their_order(tmp_path: Path) -> None:
    log = RecordingLog(tmp_path)
    journal = GroupCommit(log)
    returned: list[int] = []

    async def one(i: int) -> None:
        await journal.append(("reactions", [reaction(i)]), ("activations", [activation(i)]))
        returned.append(len(log.read("activations", "t", start=0)[0]))

    async def eight() -> None:
        await asyncio.gather(*(one(i) for i in range(8)))

    asyncio.run(eight())
    assert log.appends == [("reactions", 8), ("activations", 8)] and journal.flushes == 1
    assert returned == [8] * 8  # each caller returned once its events were written and fsynced
    lines = log.read("reactions", "t", start=0)[0]
    assert sorted(ReactionEvent.model_validate_json(line).event_id.int for line in lines) == list(range(8))


def test_callers_arriving_during_a_flush_share_the_next_one(tmp_path: Path) -> None:
    log = RecordingLog(tmp_path)
    journal = GroupCommit(log)

    async def waves() -> None:
        first = asyncio.ensure_future(journal.append(("reactions", [reaction(0)])))
        await asyncio.sleep(0)  # the first flush has started with one caller
        await asyncio.gather(first, *(journal.append(("reactions", [reaction(i)])) for i in range(1, 6)))

    asyncio.run(waves())
    assert log.appends == [("reactions", 1), ("reactions", 5)] and journal.flushes == 2


def test_a_failed_flush_fails_each_of_its_callers_and_the_next_one_works(tmp_path: Path) -> None:
    log = RecordingLog(tmp_path)
    journal = GroupCommit(log)

    async def bad_then_good() -> list[BaseException | None]:
        outcomes = await asyncio.gather(
            journal.append(("no_such_topic", [reaction(1)])),
            journal.append(("reactions", [reaction(2)])),
            return_exceptions=True,
        )
        await journal.append(("reactions", [reaction(3)]))
        return outcomes

    first, second = asyncio.run(bad_then_good())
    assert isinstance(first, KeyError) and "unknown event topic" in str(first)
    assert isinstance(second, KeyError)  # its batch failed: it is not told its events are durable
    assert [ReactionEvent.model_validate_json(x).event_id.int for x in log.read("reactions", "t", start=0)[0]] == [3]


def test_it_serves_one_event_loop_after_another(tmp_path: Path) -> None:
    """Tests and scripts call ``asyncio.run`` per rank: each run gets its own flushes."""
    log = EventLog(tmp_path)
    journal = GroupCommit(log)
    for i in range(3):
        asyncio.run(journal.append(("reactions", [reaction(i)])))
    assert len(log.read("reactions", "t", start=0)[0]) == 3 and journal.flushes == 3


@pytest.mark.parametrize("entries", [(), (("reactions", []),)])
def test_nothing_to_write_returns_at_once(tmp_path: Path, entries: tuple[tuple[str, list[ReactionEvent]], ...]) -> None:
    log = RecordingLog(tmp_path)
    asyncio.run(GroupCommit(log).append(*entries))
    assert log.appends == []


def test_each_callers_then_runs_after_the_write_and_fails_its_own_caller_only(tmp_path: Path) -> None:
    """A rank indexes its decision once it is durable; a failing ``then`` fails its own caller
    only, and the flush waits for nothing else (the embedded learner reads on its own clock)."""
    log = RecordingLog(tmp_path)
    seen: list[tuple[str, int]] = []
    journal = GroupCommit(log)

    def then(i: int) -> None:
        seen.append((f"then{i}", len(log.read("reactions", "t", start=0)[0])))
        if i == 2:
            raise ValueError("index full")

    async def three() -> list[BaseException | None]:
        return await asyncio.gather(
            *(journal.append(("reactions", [reaction(i)]), then=lambda i=i: then(i)) for i in range(3)),
            return_exceptions=True,
        )

    outcomes = asyncio.run(three())
    assert seen == [("then0", 3), ("then1", 3), ("then2", 3)] and journal.flushes == 1
    assert outcomes[:2] == [None, None] and isinstance(outcomes[2], ValueError)
