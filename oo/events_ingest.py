"""Moving decisions, rewards and reactions from where they are written into the lake.

Serving and the app publish these events on the bus (NATS JetStream past one machine) or, on one
machine, append them to an :class:`EventLog`. :func:`ingest` runs in two steps, both incremental
and both safe to repeat:

1. **bus -> event log**: a durable bus consumer (its position in the stream is the watermark)
   appends each event to the topic's append-only log and fsyncs it *before* the message is acked,
   so an acked event is never lost;
2. **event log -> lake**: the lines after the reader's stored byte-offset watermark are validated
   against their contract; valid ones go to the lake (which deduplicates by natural key and
   partitions by the event's own timestamp, so a late event lands in its own date's partition),
   malformed ones to the ``quarantine`` dataset with their reasons; then the watermark moves.

A crash between the lake write and the watermark update replays some lines next time; the lake's
deduplication makes that a no-op. Re-running an interval adds nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_contracts import Activation, Decision, ReactionEvent, Record, RewardEvent, TipScore
from data_contracts.validation import split
from oo.bus import Bus
from oo.lake import Lake

log = logging.getLogger(__name__)

TOPICS: dict[str, type[Record]] = {
    "decisions": Decision,
    "tip_scores": TipScore,
    "rewards": RewardEvent,
    "reactions": ReactionEvent,
    "activations": Activation,
}
"""Bus topic (and event log, and lake dataset: the names are the same) to contract."""

CONSUMER = "events_ingest"
"""The reader name of the event log watermarks; the bus's durable consumers are ``<name>_<topic>``."""


def lines(records: Sequence[Record]) -> bytes:
    """``records`` as event-log lines (JSON, one per line)."""
    return b"".join(r.model_dump_json().encode() + b"\n" for r in records)


class EventLog:
    """Append-only JSON-lines files, one per topic, with a byte-offset watermark per reader.

    Examples
    --------
    >>> import tempfile
    >>> from datetime import UTC, datetime
    >>> from uuid import UUID
    >>> from data_contracts import ReactionEvent
    >>> events = EventLog(tempfile.mkdtemp())
    >>> events.append("reactions", ReactionEvent(event_id=UUID(int=1), decision_id=UUID(int=2),
    ...     user_id="u1", candidate_id="task:1", reaction="done", occurred_at=datetime(2026, 5, 1, tzinfo=UTC)))
    >>> lines, end = events.read("reactions", "me")
    >>> len(lines), events.read("reactions", "me", start=end)[0]
    (1, [])
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def path(self, topic: str) -> Path:
        """The log file of ``topic``."""
        if topic not in TOPICS:
            raise KeyError(f"unknown event topic {topic!r}; known: {sorted(TOPICS)}")
        return self.root / f"{topic}.jsonl"

    def append(self, topic: str, record: Record) -> None:
        """Append one event durably (flushed and fsynced, under an exclusive lock)."""
        self.append_many(topic, [record])

    def append_many(self, topic: str, records: Sequence[Record]) -> None:
        """Append events durably with one write and one fsync (a decision's tip scores, say)."""
        if records:
            self.append_lines(topic, lines(records))

    def append_lines(self, topic: str, data: bytes) -> None:
        """Append serialized events (:func:`lines` of ``topic``'s records) with one write and one
        fsync: a group commit of several callers' events."""
        if not data:
            return
        path = self.path(topic)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def watermark(self, topic: str, reader: str) -> int:
        """The byte offset up to which ``reader`` has consumed ``topic``."""
        mark = self.root / f"{topic}.{reader}.offset"
        return int(mark.read_text()) if mark.exists() else 0

    def commit(self, topic: str, reader: str, offset: int) -> None:
        """Store ``reader``'s new watermark atomically."""
        mark = self.root / f"{topic}.{reader}.offset"
        mark.parent.mkdir(parents=True, exist_ok=True)  # nothing logged yet: the folder may not exist
        tmp = mark.with_suffix(".tmp")
        tmp.write_text(str(offset))
        os.replace(tmp, mark)

    def generation(self, topic: str) -> int:
        """How many times lines of ``topic`` were redacted in place (odd while a redaction runs).

        Offsets never move (a redaction overwrites a line with as many spaces), so a reader never
        re-syncs; it only re-reads a chunk that a redaction may have torn (see :meth:`read`)."""
        mark = self.root / f"{topic}.generation"
        try:
            return int(mark.read_text())
        except FileNotFoundError:
            return 0

    def set_generation(self, topic: str, value: int) -> None:
        """Store ``topic``'s redaction generation atomically (used by :mod:`oo.event_erasure`)."""
        mark = self.root / f"{topic}.generation"
        tmp = mark.with_suffix(".generation-tmp")
        tmp.write_text(str(value))
        os.replace(tmp, mark)

    def read(
        self, topic: str, reader: str, start: int | None = None, max_bytes: int = 64 << 20
    ) -> tuple[list[bytes], int]:
        """Complete lines after the watermark (a line still being written is left for later).

        Blank lines (a redacted event is a line of spaces) are skipped. Reads take no lock: when
        the redaction generation was odd or moved during the read, the chunk is read again under
        a shared lock, which waits for the redaction's exclusive one (a seqlock)."""
        path = self.path(topic)
        offset = self.watermark(topic, reader) if start is None else start
        if not path.exists():
            return [], offset
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size <= offset:  # nothing new (a poll's usual answer)
                return [], offset
            before = self.generation(topic)
            handle.seek(offset)
            chunk = handle.read(max_bytes)
            if before % 2 or self.generation(topic) != before:
                fcntl.flock(handle, fcntl.LOCK_SH)
                try:
                    handle.seek(offset)
                    chunk = handle.read(max_bytes)
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        complete = chunk[: chunk.rfind(b"\n") + 1]
        lines = [line for line in complete.split(b"\n") if line.strip()]
        return lines, offset + len(complete)


@dataclass
class TopicReport:
    """What one ingest did for one topic."""

    from_bus: int = 0
    read: int = 0
    written: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reasons: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    """What :func:`ingest` did, per topic."""

    topics: dict[str, TopicReport] = field(default_factory=dict)

    @property
    def written(self) -> int:
        """New rows in the lake, over all topics."""
        return sum(t.written for t in self.topics.values())

    def summary(self) -> dict[str, Any]:
        """A plain dict for logs and XCom."""
        return {k: {**vars(v), "reasons": v.reasons[:5]} for k, v in self.topics.items()}


async def drain_bus(bus: Bus[Any], events: EventLog, consumer: str = CONSUMER) -> dict[str, int]:
    """Append every pending bus event to its topic's log; the consumer acks only after the fsync."""
    moved: dict[str, int] = {}
    for topic, model in TOPICS.items():

        async def handler(record: Record, topic: str = topic) -> None:
            events.append(topic, record)

        # one durable consumer per topic: a JetStream durable is bound to one subject filter
        report = await bus.consume(topic, model, handler, consumer=f"{consumer}_{topic}")
        moved[topic] = report.processed
        if report.dead_lettered:
            log.warning("events_ingest: %d %s dead-lettered: %s", report.dead_lettered, topic, report.reasons[:3])
    return moved


def ingest(lake: Lake, events: EventLog, bus: Bus[Any] | None = None, reader: str = CONSUMER) -> IngestReport:
    """Move new events (bus -> event log -> lake) from the stored watermarks; idempotent."""
    report = IngestReport({topic: TopicReport() for topic in TOPICS})
    if bus is not None:

        async def _drain() -> dict[str, int]:
            try:
                return await drain_bus(bus, events, reader)
            finally:
                await bus.close()

        for topic, n in asyncio.run(_drain()).items():
            report.topics[topic].from_bus = n
    for topic, model in TOPICS.items():
        rows = report.topics[topic]
        while True:
            lines, end = events.read(topic, reader)
            if not lines:
                events.commit(topic, reader, end)
                break
            batch = split(model, lines, dataset=topic, source=f"event_log:{topic}", suite=False)
            result = lake.write(topic, batch.valid)
            if batch.quarantined:
                lake.write("quarantine", batch.quarantined)
                rows.reasons += [r for q in batch.quarantined for r in q.reasons]
            rows.read += len(lines)
            rows.written += result.written
            rows.duplicates += result.skipped
            rows.quarantined += len(batch.quarantined)
            events.commit(topic, reader, end)
    log.info("events_ingest: %s", report.summary())
    return report


def get_event_log() -> EventLog:
    """The event log under the settings' var dir."""
    from oo.settings import get_settings

    return EventLog(get_settings().paths.resolve("events"))


def run_ingest() -> IngestReport:
    """Ingest with the lake, event log and bus named by the settings (the bus only with NATS:
    the in-process bus lives and dies with its process, so there is nothing durable to drain)."""
    from oo.bus import get_bus
    from oo.lake import get_lake
    from oo.settings import get_settings

    bus = get_bus() if get_settings().bus.nats_url else None
    return ingest(get_lake(), get_event_log(), bus)
