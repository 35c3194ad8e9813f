"""Group commit: concurrent decisions share the event log's writes and fsyncs.

A decision is durable before its answer leaves, so every rank used to write and fsync twice
(its tip scores, then the decision) on the event loop, which stood still meanwhile. Here a rank
queues its serialized events and awaits; one flush at a time, in a worker thread, writes
everything queued so far topic by topic (in the order the callers gave them: tip scores before
decisions), one write and one fsync per topic, and only then wakes its callers. Under load the
ranks that arrive during a flush share the next one; alone, a rank costs what it did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from data_contracts import Record
from oo.events_ingest import EventLog, lines

Entries = list[tuple[str, bytes]]


class GroupCommit:
    """Durable appends to ``events`` from coroutines of one event loop at a time.

    Examples
    --------
    >>> import asyncio, tempfile
    >>> from datetime import UTC, datetime
    >>> from uuid import UUID
    >>> from data_contracts import Activation
    >>> events = EventLog(tempfile.mkdtemp())
    >>> journal = GroupCommit(events)
    >>> a = [Activation(decision_id=UUID(int=i), user_id="u", activated_at=datetime(2026, 5, 1, tzinfo=UTC))
    ...      for i in range(3)]
    >>> async def three() -> None:
    ...     await asyncio.gather(*(journal.append(("activations", [x])) for x in a))
    >>> asyncio.run(three())
    >>> len(events.read("activations", "me")[0]), journal.flushes <= 3
    (3, True)
    """

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.flushes = 0
        self._queue: list[tuple[Entries, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(self, *entries: tuple[str, Sequence[Record] | bytes]) -> None:
        """Return once every record of ``entries`` is written and fsynced (raise if it was not).

        An entry holds records, or their event-log lines already serialized (:func:`lines`)."""
        loop = asyncio.get_running_loop()
        if self._flusher is not None and (self._flusher.done() or self._flusher.get_loop() is not loop):
            self._flusher = None  # finished, or left behind by a closed loop (asyncio.run per call)
            self._queue = [q for q in self._queue if q[1].get_loop() is loop and not q[1].done()]
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append(
            (
                [
                    (topic, records if isinstance(records, bytes) else lines(records))
                    for topic, records in entries
                    if records
                ],
                done,
            )
        )
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await asyncio.to_thread(self._write, [entries for entries, _ in batch])
            except BaseException as exc:  # every caller of this batch learns its events may be lost
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("flush cancelled"))
                if not isinstance(exc, Exception):
                    raise
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    def _write(self, batch: list[Entries]) -> None:
        """One write and one fsync per topic, topics in their first caller's order."""
        by_topic: dict[str, list[bytes]] = {}
        for entries in batch:
            for topic, data in entries:
                by_topic.setdefault(topic, []).append(data)
        for topic, chunks in by_topic.items():
            self.events.append_lines(topic, b"".join(chunks))
        self.flushes += 1
