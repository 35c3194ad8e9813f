"""Group commit: concurrent decisions share the event log's writes and fsyncs.

A decision is durable before its answer leaves, so every rank used to write and fsync twice
(its tip scores, then the decision) on the event loop, which stood still meanwhile. Here a rank
queues its serialized events and awaits; one flush at a time, in a worker thread, writes
everything queued so far topic by topic (in the order the callers gave them: tip scores before
decisions), one write and one fsync per topic, and only then wakes its callers. Under load the
ranks that arrive during a flush share the next one; alone, a rank costs what it did.

What must follow the write before a caller is answered runs in the same worker thread, off the
event loop: each caller's own ``then`` (a rank indexes its decision: a SQLite commit, that used
to stall the loop). Nothing else waits in the flush: the embedded learner reads the decisions on
its own clock (its background poll, or the next reward's), not before the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from data_contracts import Record
from oo.events_ingest import EventLog, lines

Entries = list[tuple[str, bytes]]
Then = Callable[[], object] | None


class GroupCommit:
    """Durable appends to ``events`` from coroutines of one event loop at a time.

    Parameters
    ----------
    events
        The event log written.

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
        self._queue: list[tuple[Entries, Then, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(self, *entries: tuple[str, Sequence[Record] | bytes], then: Then = None) -> None:
        """Return once every record of ``entries`` is written and fsynced, and ``then`` (if given)
        has run after that in the flush's thread (raise if either failed).

        An entry holds records, or their event-log lines already serialized (:func:`lines`)."""
        loop = asyncio.get_running_loop()
        if self._flusher is not None and (self._flusher.done() or self._flusher.get_loop() is not loop):
            self._flusher = None  # finished, or left behind by a closed loop (asyncio.run per call)
            self._queue = [q for q in self._queue if q[2].get_loop() is loop and not q[2].done()]
        done: asyncio.Future[None] = loop.create_future()
        data = [(topic, r if isinstance(r, bytes) else lines(r)) for topic, r in entries if r]
        self._queue.append((data, then, done))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                failed = await asyncio.to_thread(self._write, [(entries, then) for entries, then, _ in batch])
            except BaseException as exc:  # every caller of this batch learns its events may be lost
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("flush cancelled"))
                if not isinstance(exc, Exception):
                    raise
            else:
                for (_, _, done), error in zip(batch, failed, strict=True):
                    if done.done():
                        continue
                    if error is None:
                        done.set_result(None)
                    else:
                        done.set_exception(error)

    def _write(self, batch: list[tuple[Entries, Then]]) -> list[Exception | None]:
        """One write and one fsync per topic, topics in their first caller's order; then each
        caller's ``then`` (its error, or None, per caller)."""
        by_topic: dict[str, list[bytes]] = {}
        for entries, _ in batch:
            for topic, data in entries:
                by_topic.setdefault(topic, []).append(data)
        for topic, chunks in by_topic.items():
            self.events.append_lines(topic, b"".join(chunks))
        failed: list[Exception | None] = []
        for _, then in batch:
            try:
                if then is not None:
                    then()
                failed.append(None)
            except Exception as exc:  # this caller's alone: the others' events and thens stand
                failed.append(exc)
        self.flushes += 1
        return failed
