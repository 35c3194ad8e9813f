"""The transactional outbox and its relay: messages written with the change that caused them are
delivered to serving and to the bus until acknowledged, each exactly once downstream.

A route adds :class:`OutboxMessage` rows in the same transaction as its own rows, so either both
exist or neither does. :func:`relay_once` delivers the due ones: an acknowledgement marks a
message ``delivered``; an outage (serving unreachable or 5xx, the bus failing) schedules another
attempt of the message sent with exponential backoff and leaves the receiver's other messages
due for the next pass; a refusal (4xx: the message is invalid) marks it ``dead`` with
the reason. Delivery is at-least-once (a crash between the acknowledgement and the mark sends the
message again; the marks of a pass are committed together), and every message carries its
idempotency key to the receiver: serving counts a ``reaction_id`` once, the bus deduplicates on
the event id (``Nats-Msg-Id``, consumers' records).
:class:`RelayWorker` runs the relay in a thread of the API process; ``nudge`` wakes it early.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import Connection, Table, insert, select
from sqlalchemy.orm import Session

from app_api.services import Services
from app_api.tables import OutboxMessage
from data_contracts import ReactionEvent
from data_contracts.serving import ActivateRequest, RewardRequest
from oo.serving_client import ServingRefused

log = logging.getLogger(__name__)

SERVING_REWARD = "serving.reward"
SERVING_ACTIVATE = "serving.activate"
BUS_REACTIONS = "bus.reactions"


class Refused(Exception):
    """The receiver refused the message as invalid: retrying cannot help."""


_INSERT_OUTBOX = insert(cast(Table, OutboxMessage.__table__))
"""One statement, built once (compiled once, cached by SQLAlchemy): a Core INSERT of the table."""


def enqueue(
    session: Session | Connection, destination: str, message_id: str, user_id: str, body: BaseModel, now: datetime
) -> None:
    """Add a message to the outbox in the caller's transaction (an INSERT now, without the ORM's
    unit of work: nothing reads the row back in this request; a duplicate ``message_id`` raises
    ``IntegrityError`` here rather than at the commit)."""
    session.execute(
        _INSERT_OUTBOX,
        {
            "message_id": message_id,
            "destination": destination,
            "user_id": user_id,
            "payload": body.model_dump_json(),
            "status": "pending",
            "created_at": now,
            "next_attempt_at": now,
            "attempts": 0,
        },
    )


async def _to_serving(services: Services, payload: str) -> None:
    request = RewardRequest.model_validate_json(payload)
    try:
        await asyncio.to_thread(services.serving.reward, request)
    except ServingRefused as exc:
        raise Refused(str(exc)) from None


async def _activate(services: Services, payload: str) -> None:
    request = ActivateRequest.model_validate_json(payload)
    try:
        await asyncio.to_thread(services.serving.activate, request)
    except ServingRefused as exc:
        raise Refused(str(exc)) from None


async def _to_bus(services: Services, payload: str) -> None:
    await services.bus.publish("reactions", ReactionEvent.model_validate_json(payload))


SENDERS: dict[str, Callable[[Services, str], Awaitable[None]]] = {
    SERVING_REWARD: _to_serving,
    SERVING_ACTIVATE: _activate,
    BUS_REACTIONS: _to_bus,
}


@dataclass
class RelayReport:
    """What one pass of the relay did."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    skipped: int = 0
    """Due messages not sent because their receiver failed earlier in the pass."""


def backoff(attempts: int, initial_s: float, max_s: float) -> timedelta:
    """The wait before attempt ``attempts + 1``: doubling from ``initial_s``, capped at ``max_s``.

    Examples
    --------
    >>> [backoff(n, 1.0, 10.0).total_seconds() for n in (1, 2, 3, 4, 5)]
    [1.0, 2.0, 4.0, 8.0, 10.0]
    """
    return timedelta(seconds=min(max_s, initial_s * 2 ** max(0, attempts - 1)))


async def relay_once(services: Services, now: datetime | None = None) -> RelayReport:
    """Deliver every due pending message once, ``relay_concurrency`` at a time; return the tally.

    A receiver that fails (an outage) is not tried again in the same pass: the rest of its
    messages stay due, untouched, for the next pass, so an outage costs each message no attempts
    and no growing backoff, and the receiver is not flooded while it recovers. Only the messages
    actually sent during the outage back off (capped at ``relay_backoff_max_s``).
    """
    now = now or services.clock()
    cfg = services.settings.app
    report = RelayReport()
    down: set[str] = set()
    gate = asyncio.Semaphore(cfg.relay_concurrency)

    async def deliver(row: OutboxMessage) -> None:
        async with gate:
            if row.destination in down:
                report.skipped += 1
                return
            row.attempts += 1
            try:
                await SENDERS[row.destination](services, row.payload)
            except Refused as exc:
                row.status, row.last_error = "dead", str(exc)[:1000]
                report.dead += 1
                log.error("outbox %s to %s refused: %s", row.message_id, row.destination, exc)
            except Exception as exc:  # an outage of the receiver: retry later (logged, not raised)
                down.add(row.destination)
                row.next_attempt_at = now + backoff(row.attempts, cfg.relay_backoff_initial_s, cfg.relay_backoff_max_s)
                row.last_error = f"{type(exc).__name__}: {exc}"[:1000]
                report.retried += 1
                log.warning(
                    "outbox %s to %s failed (attempt %d): %s", row.message_id, row.destination, row.attempts, exc
                )
            else:
                row.status, row.delivered_at, row.last_error = "delivered", now, None
                report.delivered += 1

    with Session(services.engine, expire_on_commit=False) as session:
        due = select(OutboxMessage).where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now)
        if services.engine.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)  # several relays never take the same row
        rows = session.execute(due.order_by(OutboxMessage.id).limit(cfg.relay_batch)).scalars().all()
        if services.engine.dialect.name != "postgresql":  # (PostgreSQL keeps the rows' locks until the marks)
            session.commit()  # the read is over: its connection goes back to the pool while sending
        await asyncio.gather(*(deliver(row) for row in rows))
        # One commit for the batch (each commit is an fsync, and on SQLite it holds the one write
        # lock the API's requests wait for). A crash before it sends the batch's acknowledged
        # messages again: receivers deduplicate by the idempotency key, so at-least-once holds.
        session.commit()
    return report


class RelayWorker:
    """Runs :func:`relay_once` every ``relay_interval_s`` (or when nudged) in a daemon thread with
    its own event loop, until :meth:`stop`."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def nudge(self) -> None:
        """Look for due messages now."""
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        # the senders' blocking calls run here (asyncio's default pool has min(32, cores + 4) threads)
        loop.set_default_executor(
            ThreadPoolExecutor(self.services.settings.app.relay_concurrency, thread_name_prefix="outbox-relay")
        )
        try:
            while not self._stop.is_set():
                try:
                    loop.run_until_complete(relay_once(self.services))
                except Exception:  # the database is down: keep the thread, try again next tick
                    log.exception("outbox relay pass failed")
                self._wake.wait(self.services.settings.app.relay_interval_s)
                self._wake.clear()
        finally:
            loop.close()


def nudge(services: Services) -> None:
    """Wake the app's relay worker, if it runs."""
    worker: Any = services.extra.get("relay")
    if worker is not None:
        worker.nudge()
