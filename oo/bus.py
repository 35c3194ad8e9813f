"""The event bus: one publish / consume interface, in-process by default, NATS JetStream past one
machine (``OO_BUS__NATS_URL``).

Semantics, the same on both:

- payloads are contract records (:class:`data_contracts.Record`), sent as JSON;
- delivery is **at least once**: a message is acked only after its handler succeeded, a handler
  error leads to redelivery, up to ``max_deliver`` times, then to the dead-letter topic;
- consumers **deduplicate** by the record's natural key (its event id) through a
  :class:`Deduplicator`, so a redelivered event is processed once;
- a **malformed** message (not JSON, or breaking its contract) is dead-lettered at once with
  its reason, and the consumer keeps going.

The in-process bus keeps messages in memory: it is for one process (``make run``, tests).
JetStream keeps them on disk in a stream created idempotently, with server-side deduplication of
publishes by ``Nats-Msg-Id``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from pydantic import ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from data_contracts import DeadLetter, Record
from data_contracts.validation import reasons_of
from oo.logging import bound_decision
from oo.tables import ProcessedEvent

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Record)
Handler = Callable[[R], Awaitable[None]]


def event_key(record: Record) -> str:
    """The id a consumer deduplicates on: the record's natural key, joined.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from uuid import UUID
    >>> from data_contracts import ReactionEvent
    >>> event_key(ReactionEvent(event_id=UUID(int=7), decision_id=UUID(int=2), user_id="u",
    ...                         candidate_id="c", reaction="done",
    ...                         occurred_at=datetime(2026, 1, 1, tzinfo=UTC)))
    '00000000-0000-0000-0000-000000000007'
    """
    return "|".join(str(v) for v in record.natural_key)


class Deduplicator(Protocol):
    """Remembers which events a consumer has processed."""

    def seen(self, consumer: str, event_id: str) -> bool:
        """Whether ``consumer`` already processed ``event_id``."""

    def mark(self, consumer: str, event_id: str) -> None:
        """Record that ``consumer`` processed ``event_id``."""


class MemoryDeduplicator:
    """Processed ids in memory (one process; lost with it)."""

    def __init__(self) -> None:
        self._ids: set[tuple[str, str]] = set()

    def seen(self, consumer: str, event_id: str) -> bool:
        return (consumer, event_id) in self._ids

    def mark(self, consumer: str, event_id: str) -> None:
        self._ids.add((consumer, event_id))


STORED_KEY_LENGTH = 64
"""``processed_events.event_id``'s width; longer keys are stored as their digest."""


def stored_key(event_id: str) -> str:
    """The key as stored: itself up to :data:`STORED_KEY_LENGTH` characters (every UUID), else
    ``"sha256:"`` and the first 57 hex digits of its SHA-256 (a tip score's key joins a decision id,
    a candidate id of any length and a policy name)."""
    if len(event_id) <= STORED_KEY_LENGTH:
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()[: STORED_KEY_LENGTH - 7]


class DbDeduplicator:
    """Processed ids in the app database, so they survive a consumer's crash."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def seen(self, consumer: str, event_id: str) -> bool:
        with Session(self.engine) as s:
            q = select(ProcessedEvent.event_id).where(
                ProcessedEvent.consumer == consumer, ProcessedEvent.event_id == stored_key(event_id)
            )
            return s.execute(q).first() is not None

    def mark(self, consumer: str, event_id: str) -> None:
        try:
            with Session(self.engine) as s, s.begin():
                s.add(ProcessedEvent(consumer=consumer, event_id=stored_key(event_id)))
        except IntegrityError:  # marked concurrently by another replica: same outcome
            pass


@dataclass
class ConsumeReport:
    """What one :meth:`Bus.consume` call did."""

    processed: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Outcome:
    kind: str  # processed | duplicate | retry | dead
    reason: str = ""


class Bus(ABC, Generic[R]):
    """Publish contract records to topics; consume them with at-least-once delivery."""

    def __init__(self, dedup: Deduplicator, max_deliver: int = 5) -> None:
        self.dedup = dedup
        self.max_deliver = max_deliver

    @abstractmethod
    async def publish(self, topic: str, record: Record) -> None:
        """Send ``record`` to ``topic`` (durably, for JetStream)."""

    @abstractmethod
    async def consume(
        self,
        topic: str,
        model: type[R],
        handler: Handler[R],
        *,
        consumer: str,
        max_messages: int | None = None,
        idle_timeout: float = 0.5,
    ) -> ConsumeReport:
        """Deliver pending messages of ``topic`` to ``handler`` until none arrive for
        ``idle_timeout`` seconds or ``max_messages`` were handled."""

    @abstractmethod
    async def dead_letters(self, topic: str) -> list[DeadLetter]:
        """Every dead letter recorded for ``topic``."""

    async def close(self) -> None:
        """Release connections."""

    async def _handle(
        self, raw: bytes, model: type[R], handler: Handler[R], consumer: str, topic: str, delivery: int
    ) -> tuple[_Outcome, DeadLetter | None]:
        """Parse, deduplicate and run the handler on one message; say what to do with it."""
        try:
            record = model.model_validate_json(raw)
        except ValidationError as exc:
            reason = "malformed: " + "; ".join(reasons_of(exc))
            log.warning("bus %s/%s: dead-lettering a malformed message: %s", topic, consumer, reason)
            return _Outcome("dead", reason), self._dead(topic, consumer, raw, reason, delivery)
        key = event_key(record)
        if self.dedup.seen(consumer, key):
            return _Outcome("duplicate"), None
        try:
            with bound_decision(getattr(record, "decision_id", None)):
                await handler(record)
        except Exception as exc:  # the handler's failure: redeliver, then dead-letter
            reason = f"handler failed on delivery {delivery}: {type(exc).__name__}: {exc}"
            with bound_decision(getattr(record, "decision_id", None)):
                log.warning("bus %s/%s: %s", topic, consumer, reason)
            if delivery >= self.max_deliver:
                return _Outcome("dead", reason), self._dead(topic, consumer, raw, reason, delivery)
            return _Outcome("retry", reason), None
        self.dedup.mark(consumer, key)
        return _Outcome("processed"), None

    @staticmethod
    def _dead(topic: str, consumer: str, raw: bytes, reason: str, delivery: int) -> DeadLetter:
        return DeadLetter(
            topic=topic,
            consumer=consumer,
            message_hash=hashlib.sha256(raw).hexdigest(),
            raw=raw.decode("utf-8", errors="replace"),
            reason=reason,
            deliveries=delivery,
            dead_at=datetime.now(UTC),
        )

    @staticmethod
    def _tally(report: ConsumeReport, outcome: _Outcome) -> None:
        if outcome.kind == "processed":
            report.processed += 1
        elif outcome.kind == "duplicate":
            report.duplicates += 1
        elif outcome.kind == "retry":
            report.retried += 1
        else:
            report.dead_lettered += 1
            report.reasons.append(outcome.reason)


class InProcessBus(Bus[Any]):
    """An in-memory log per topic with a cursor per consumer (one process, not durable)."""

    def __init__(self, dedup: Deduplicator | None = None, max_deliver: int = 5) -> None:
        super().__init__(dedup or MemoryDeduplicator(), max_deliver)
        self._log: dict[str, list[bytes]] = defaultdict(list)
        self._cursor: dict[tuple[str, str], int] = defaultdict(int)
        self._dead_by_topic: dict[str, list[DeadLetter]] = defaultdict(list)
        self._arrived = asyncio.Event()

    async def publish(self, topic: str, record: Record) -> None:
        self._append(topic, record.model_dump_json().encode())

    def _append(self, topic: str, payload: bytes) -> None:
        """Append one message's bytes to ``topic``."""
        self._log[topic].append(payload)
        self._arrived.set()

    async def consume(
        self,
        topic: str,
        model: type[Any],
        handler: Handler[Any],
        *,
        consumer: str,
        max_messages: int | None = None,
        idle_timeout: float = 0.5,
    ) -> ConsumeReport:
        report = ConsumeReport()
        handled = 0
        while max_messages is None or handled < max_messages:
            position = self._cursor[(topic, consumer)]
            if position >= len(self._log[topic]):
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), idle_timeout)
                except TimeoutError:
                    break
                continue
            raw = self._log[topic][position]
            for delivery in range(1, self.max_deliver + 1):
                outcome, dead = await self._handle(raw, model, handler, consumer, topic, delivery)
                self._tally(report, outcome)
                if dead is not None:
                    self._dead_by_topic[topic].append(dead)
                if outcome.kind != "retry":
                    break
            self._cursor[(topic, consumer)] = position + 1
            handled += 1
        return report

    async def dead_letters(self, topic: str) -> list[DeadLetter]:
        return list(self._dead_by_topic[topic])


class NatsBus(Bus[Any]):
    """NATS JetStream: one durable stream for events, one for dead letters, pull consumers."""

    def __init__(
        self,
        url: str,
        dedup: Deduplicator,
        *,
        stream: str = "OO_EVENTS",
        prefix: str = "oo",
        max_deliver: int = 5,
        ack_wait_s: float = 30.0,
    ) -> None:
        super().__init__(dedup, max_deliver)
        self.url, self.stream, self.prefix, self.ack_wait_s = url, stream, prefix, ack_wait_s
        self._nc: Any = None
        self._js: Any = None

    def subject(self, topic: str) -> str:
        """The NATS subject of ``topic``."""
        return f"{self.prefix}.{topic}"

    def dlq_subject(self, topic: str) -> str:
        """The NATS subject of ``topic``'s dead letters."""
        return f"{self.prefix}_dlq.{topic}"

    async def _jetstream(self) -> Any:
        if self._nc is not None and self._nc.is_closed:
            # nats.py closes its client for good once its reconnect attempts are spent (the server
            # down for longer than that): a long-lived publisher starts a new one rather than keep
            # failing on the dead one until its process restarts
            log.warning("nats: the connection was closed; connecting again")
            self._nc = self._js = None
        if self._js is None:
            import nats
            from nats.js.api import StreamConfig

            self._nc = await nats.connect(self.url, connect_timeout=2, max_reconnect_attempts=3)
            self._js = self._nc.jetstream()
            for name, subjects in (
                (self.stream, [f"{self.prefix}.>"]),
                (f"{self.stream}_DLQ", [f"{self.prefix}_dlq.>"]),
            ):
                config = StreamConfig(name=name, subjects=subjects, duplicate_window=120.0)
                try:  # idempotent: create, or bring an existing stream to this config
                    await self._js.add_stream(config)
                except Exception as exc:  # nats.js.errors.BadRequestError when it differs
                    log.info("stream %s exists with another config (%s); updating", name, exc)
                    await self._js.update_stream(config)
        return self._js

    async def publish(self, topic: str, record: Record) -> None:
        await self.publish_raw(topic, record.model_dump_json().encode(), event_key(record))

    async def publish_raw(self, topic: str, payload: bytes, key: str) -> None:
        """Send an already serialized record (a relay re-sending a spooled line) with its event key.

        The server deduplicates by ``Nats-Msg-Id`` over the whole stream, so the id names the topic
        too: a decision and its activation share a decision id, a reward and its reaction an event id.
        """
        js = await self._jetstream()
        await js.publish(self.subject(topic), payload, headers={"Nats-Msg-Id": f"{topic}:{key}"})

    async def pull(self, topic: str, consumer: str, *, max_ack_pending: int = 65_536) -> Pull:
        """A durable pull consumer of ``topic`` whose messages the caller acknowledges itself, for a
        consumer that acks only once its own state holding them is saved (the learner's checkpoint).

        A new durable starts at the end of the stream (what is published from now on); an existing
        one resumes after its last acknowledged message, and what was delivered but never acked
        comes again once ``ack_wait_s`` has passed.
        """
        from nats.js.api import ConsumerConfig, DeliverPolicy

        js = await self._jetstream()
        config = ConsumerConfig(
            ack_wait=self.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=max_ack_pending,
            deliver_policy=DeliverPolicy.NEW,
        )
        sub = await js.pull_subscribe(self.subject(topic), durable=consumer, stream=self.stream, config=config)
        return Pull(self, topic, consumer, sub)

    async def dead_letter(self, topic: str, consumer: str, raw: bytes, reason: str, delivery: int) -> None:
        """Record ``raw`` as a dead letter of ``topic`` (for a :class:`Pull` consumer)."""
        js = await self._jetstream()
        await js.publish(
            self.dlq_subject(topic), self._dead(topic, consumer, raw, reason, delivery).model_dump_json().encode()
        )

    async def flush(self) -> None:
        """Wait until everything sent (acks included) has reached the server."""
        if self._nc is not None:
            await self._nc.flush()

    async def consume(
        self,
        topic: str,
        model: type[Any],
        handler: Handler[Any],
        *,
        consumer: str,
        max_messages: int | None = None,
        idle_timeout: float = 0.5,
    ) -> ConsumeReport:
        import nats.errors
        from nats.js.api import ConsumerConfig

        js = await self._jetstream()
        sub = await js.pull_subscribe(
            self.subject(topic),
            durable=consumer,
            stream=self.stream,
            config=ConsumerConfig(ack_wait=self.ack_wait_s, max_deliver=self.max_deliver + 1),
        )
        report = ConsumeReport()
        handled = 0
        try:
            while max_messages is None or handled < max_messages:
                batch = 1 if max_messages is None else max(1, min(64, max_messages - handled))
                try:
                    msgs = await sub.fetch(batch, timeout=idle_timeout)
                except (TimeoutError, nats.errors.TimeoutError):
                    break
                for msg in msgs:
                    delivery = int(msg.metadata.num_delivered)
                    outcome, dead = await self._handle(msg.data, model, handler, consumer, topic, delivery)
                    self._tally(report, outcome)
                    if dead is not None:
                        await js.publish(self.dlq_subject(topic), dead.model_dump_json().encode())
                        await msg.term()
                    elif outcome.kind == "retry":
                        await msg.nak(delay=min(0.05 * 2**delivery, 5.0))
                    else:
                        await msg.ack_sync()
                    if outcome.kind != "retry":
                        handled += 1
        finally:
            await sub.unsubscribe()
        return report

    async def dead_letters(self, topic: str) -> list[DeadLetter]:
        js = await self._jetstream()
        sub = await js.subscribe(self.dlq_subject(topic), ordered_consumer=True)
        out: list[DeadLetter] = []
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.3)
                except Exception:  # nats TimeoutError: nothing more stored
                    break
                out.append(DeadLetter.model_validate_json(msg.data))
        finally:
            await sub.unsubscribe()
        return out

    async def close(self) -> None:
        if self._nc is not None:
            if not self._nc.is_closed:  # draining a closed client raises
                await self._nc.drain()
            self._nc = self._js = None

    async def abort(self) -> None:
        """Drop the connection without draining (it may be dead); the next use reconnects."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            try:
                await nc.close()
            except Exception as exc:  # a dead connection may fail to close; it is dropped either way
                log.debug("bus: closing a dropped connection: %s", exc)


@dataclass(frozen=True)
class Delivery:
    """One message handed out by a :class:`Pull`, not yet acknowledged."""

    topic: str
    data: bytes
    delivery: int
    msg: Any = field(repr=False)


class Pull:
    """A durable pull consumer with explicit acknowledgement (see :meth:`NatsBus.pull`)."""

    def __init__(self, bus: NatsBus, topic: str, consumer: str, sub: Any) -> None:
        self.bus, self.topic, self.consumer, self._sub = bus, topic, consumer, sub

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        """Up to ``batch`` messages; none when nothing arrives within ``timeout`` seconds."""
        import nats.errors

        try:
            msgs = await self._sub.fetch(batch, timeout=timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        return [Delivery(self.topic, m.data, int(m.metadata.num_delivered), m) for m in msgs]

    async def ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge ``deliveries`` and wait until the acks reached the server."""
        for d in deliveries:
            await d.msg.ack()
        await self.bus.flush()

    async def reject(self, delivery: Delivery, reason: str) -> None:
        """Dead-letter a message that can never be processed (malformed) and stop its redelivery."""
        await self.bus.dead_letter(self.topic, self.consumer, delivery.data, reason, delivery.delivery)
        await delivery.msg.term()

    async def close(self) -> None:
        """Stop fetching (the durable consumer stays on the server)."""
        await self._sub.unsubscribe()


def get_bus() -> Bus[Any]:
    """The bus named by the settings: JetStream when ``OO_BUS__NATS_URL`` is set."""
    from oo.db import get_engine
    from oo.settings import get_settings

    s = get_settings().bus
    if s.nats_url:
        return NatsBus(
            s.nats_url,
            DbDeduplicator(get_engine()),
            stream=s.stream,
            prefix=s.subject_prefix,
            max_deliver=s.max_deliver,
            ack_wait_s=s.ack_wait_s,
        )
    return InProcessBus(max_deliver=s.max_deliver)
