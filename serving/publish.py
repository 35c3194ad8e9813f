"""A replica's decisions, tip scores, rewards, reactions and activations on the bus (NATS JetStream).

The request path never waits for the bus. A replica appends each event to its local **spool** (an
:class:`~oo.events_ingest.EventLog` under ``var/serving/spool``, one fsync, as before the answer
leaves), then nudges the :class:`Relay`. The relay's thread publishes every spooled line after its
watermark and moves the watermark only once JetStream has stored them, so:

- the bus down does not stop serving: the decision is durable in the spool, and the relay, which
  retries with a growing pause, publishes it when the bus is back;
- a crash between a publish and the watermark re-sends a few lines: JetStream drops a repeated
  ``Nats-Msg-Id`` within its duplicate window and consumers deduplicate by event id after it.

Replicas sharing a disk may share a spool: a lock file lets one relay drain it at a time. Without
``OO_BUS__NATS_URL`` there is no relay and serving appends to the event log itself (one machine).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from data_contracts import Record
from oo.bus import NatsBus
from oo.events_ingest import TOPICS, EventLog
from oo.settings import Settings
from serving import metrics

log = logging.getLogger(__name__)

READER = "relay"
"""The relay's watermark name in the spool."""


def line_key(topic: str, line: bytes) -> str:
    """The event key of a spooled line (what :func:`oo.bus.event_key` gives for its record), read
    without validating the whole record; a line that is not a record (a write torn by a crash) is
    keyed by its hash and still sent, for the consumers to dead-letter, so it never blocks the relay.

    Examples
    --------
    >>> line_key("tip_scores", b'{"decision_id": "d1", "candidate_id": "c1", "policy": "softmax", "score": 1}')
    'd1|c1|softmax'
    >>> line_key("decisions", b'{"decision_id": "d1", "user_')[:7]
    'sha256:'
    """
    try:
        data = json.loads(line)
        return "|".join(str(data[f]) for f in TOPICS[topic].key_fields)
    except (ValueError, KeyError, TypeError):
        return "sha256:" + hashlib.sha256(line).hexdigest()


class Relay:
    """Publishes what the spool holds past its watermark, in a thread of its own.

    Parameters
    ----------
    spool
        The replica's spool.
    make_bus
        Builds a connected-on-first-use bus; called again after a failure.
    poll_s
        How often the relay looks at the spool without being nudged (another replica's lines).
    max_backoff_s
        The longest pause between attempts while the bus is down.
    """

    def __init__(
        self,
        spool: EventLog,
        make_bus: Callable[[], NatsBus],
        *,
        poll_s: float = 1.0,
        max_backoff_s: float = 2.0,
        batch: int = 512,
    ) -> None:
        self.spool = spool
        self.make_bus = make_bus
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self.batch = batch
        self.published = 0
        self.failures = 0
        self._bus: NatsBus | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oo-relay", daemon=True)

    def start(self) -> Relay:
        """Start the thread (it drains what an earlier run left first)."""
        self._thread.start()
        return self

    def nudge(self) -> None:
        """Something was spooled: publish it soon."""
        self._wake.set()

    def backlog(self) -> int:
        """Bytes spooled but not published yet."""
        return sum(max(0, _size(self.spool.path(t)) - self.spool.watermark(t, READER)) for t in TOPICS)

    def describe(self) -> dict[str, int]:
        """For readiness: events published, failed attempts, bytes waiting."""
        return {"published": self.published, "failures": self.failures, "backlog_bytes": self.backlog()}

    def stop(self) -> None:
        """Stop the thread; what is not published yet stays in the spool for the next start."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    # -- the thread --------------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # the NATS client looks its loop up
        backoff = 0.0
        try:
            while not self._stop.is_set():
                self._wake.clear()  # before reading: a nudge during the pass brings another pass
                try:
                    left = self._drain_locked(loop)
                    backoff = 0.0
                    if not left:
                        self._wake.wait(self.poll_s)
                except Exception as exc:  # the bus is down or refused: keep the spool, try again later
                    self.failures += 1
                    metrics.RELAY_FAILURES.inc()
                    backoff = min(self.max_backoff_s, max(0.1, backoff * 2))
                    log.warning(
                        "relay: publishing failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, backoff
                    )
                    self._drop_bus(loop)
                    self._stop.wait(backoff)  # a nudge does not shorten the pause
        finally:
            self._drop_bus(loop)
            _close(loop)

    def _drop_bus(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._bus is not None:
            bus, self._bus = self._bus, None
            try:
                loop.run_until_complete(asyncio.wait_for(bus.abort(), 2.0))
            except Exception as exc:  # a broken connection may not close cleanly; it is dropped anyway
                log.debug("relay: closing the bus: %s", exc)

    def _drain_locked(self, loop: asyncio.AbstractEventLoop) -> bool:
        """One pass over every topic under the spool's relay lock; whether lines are left."""
        self.spool.root.mkdir(parents=True, exist_ok=True)
        with open(self.spool.root / "relay.lock", "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return loop.run_until_complete(self._drain())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    async def _drain(self) -> bool:
        left = False
        for topic in TOPICS:
            lines, end = self.spool.read(topic, READER, max_bytes=4 << 20)
            if not lines:
                continue
            if self._bus is None:
                self._bus = self.make_bus()
            await self._publish(self._bus, topic, lines)
            self.spool.commit(topic, READER, end)
            self.published += len(lines)
            metrics.RELAYED.labels(topic=topic).inc(len(lines))
            left = left or end < _size(self.spool.path(topic))
        return left

    async def _publish(self, bus: NatsBus, topic: str, lines: Sequence[bytes]) -> None:
        """Every line, ``batch`` at a time in flight; raises when any was not stored."""
        for i in range(0, len(lines), self.batch):
            chunk = lines[i : i + self.batch]
            await asyncio.gather(*(bus.publish_raw(topic, line, line_key(topic, line)) for line in chunk))


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what a dropped connection left running (its reconnect attempts), then close."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class Spool(EventLog):
    """The replica's spool: an event log whose every append nudges the relay.

    The engine writes to it exactly as to the event log, so the engine does not know whether its
    events go on the bus.
    """

    def __init__(self, root: str | Path, relay: Relay | None = None) -> None:
        super().__init__(root)
        self.relay = relay

    def append_many(self, topic: str, records: Sequence[Record]) -> None:
        super().append_many(topic, records)
        if self.relay is not None:
            self.relay.nudge()


def start_relay(spool_dir: Path, make_bus: Callable[[], NatsBus]) -> tuple[Spool, Relay]:
    """A spool under ``spool_dir`` and its running relay."""
    spool = Spool(spool_dir)
    relay = Relay(spool, make_bus)
    spool.relay = relay
    return spool, relay.start()


def nats_bus_factory(settings: Settings) -> Callable[[], NatsBus]:
    """Builds the settings' JetStream bus (no deduplicator: the relay only publishes)."""
    from oo.bus import MemoryDeduplicator

    s = settings.bus

    def make() -> NatsBus:
        assert s.nats_url is not None
        return NatsBus(
            s.nats_url,
            MemoryDeduplicator(),
            stream=s.stream,
            prefix=s.subject_prefix,
            max_deliver=s.max_deliver,
            ack_wait_s=s.ack_wait_s,
        )

    return make


__all__ = ["Relay", "Spool", "line_key", "nats_bus_factory", "start_relay"]
