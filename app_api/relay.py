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
:class:`RelayWorker` runs the relay in a thread of the API process, with its own event loop and
its own event-loop client of serving (sharing the app's breaker); ``nudge`` wakes it early.
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
from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from app_api.services import Services
from app_api.tables import OutboxMessage
from data_contracts import ReactionEvent
from data_contracts.serving import ActivateRequest, RewardRequest
from oo.serving_client import AsyncServingClient, ServingRefused

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


async def _call_serving(services: Services, serving: AsyncServingClient | None, endpoint: str, body: BaseModel) -> None:
    """``endpoint`` (``reward`` or ``activate``) of the event-loop client, or of the blocking
    ``services.serving`` in a thread when there is none; a 4xx is a refusal (dead, not retried)."""
    try:
        if serving is None:
            await asyncio.to_thread(getattr(services.serving, endpoint), body)
        else:
            await getattr(serving, endpoint)(body)
    except ServingRefused as exc:
        raise Refused(str(exc)) from None


async def _to_serving(services: Services, payload: str, serving: AsyncServingClient | None) -> None:
    await _call_serving(services, serving, "reward", RewardRequest.model_validate_json(payload))


async def _activate(services: Services, payload: str, serving: AsyncServingClient | None) -> None:
    await _call_serving(services, serving, "activate", ActivateRequest.model_validate_json(payload))


async def _to_bus(services: Services, payload: str, serving: AsyncServingClient | None) -> None:
    await services.bus.publish("reactions", ReactionEvent.model_validate_json(payload))


SENDERS: dict[str, Callable[[Services, str, AsyncServingClient | None], Awaitable[None]]] = {
    SERVING_REWARD: _to_serving,
    SERVING_ACTIVATE: _activate,
    BUS_REACTIONS: _to_bus,
}
"""Each destination's sender: ``(services, payload, serving)``, where ``serving`` is the relay
worker's event-loop client of serving (``None``: the blocking ``services.serving``, in a thread)."""


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


@dataclass
class _Due:
    """A due message as read, and what its delivery attempt changes."""

    id: int
    message_id: str
    destination: str
    payload: str
    attempts: int
    outcome: str | None = None  # delivered, dead or retried; None: not sent in this pass
    next_attempt_at: datetime | None = None
    last_error: str | None = None


_DUE_COLUMNS = (
    OutboxMessage.id,
    OutboxMessage.message_id,
    OutboxMessage.destination,
    OutboxMessage.payload,
    OutboxMessage.attempts,
)
_ROW = OutboxMessage.id == bindparam("row_id")
_MARKS = {
    "delivered": update(OutboxMessage)
    .where(_ROW)
    .values(status="delivered", attempts=bindparam("n"), delivered_at=bindparam("at"), last_error=None),
    "dead": update(OutboxMessage)
    .where(_ROW)
    .values(status="dead", attempts=bindparam("n"), last_error=bindparam("error")),
    "retried": update(OutboxMessage)
    .where(_ROW)
    .values(attempts=bindparam("n"), next_attempt_at=bindparam("at"), last_error=bindparam("error")),
}
"""The marks of a pass, one statement per outcome, each executed once for all its rows; built once
(Core, no unit of work: the relay reads columns and writes marks, it never needs the objects)."""


async def relay_once(
    services: Services, now: datetime | None = None, *, serving: AsyncServingClient | None = None
) -> RelayReport:
    """Deliver every due pending message once, ``relay_concurrency`` at a time; return the tally.

    A receiver that fails (an outage) is not tried again in the same pass: the rest of its
    messages stay due, untouched, for the next pass, so an outage costs each message no attempts
    and no growing backoff, and the receiver is not flooded while it recovers. Only the messages
    actually sent during the outage back off (capped at ``relay_backoff_max_s``). ``serving`` is
    the caller's event-loop client of serving (the worker's); without it, the blocking client.
    """
    now = now or services.clock()
    cfg = services.settings.app
    report = RelayReport()
    down: set[str] = set()
    gate = asyncio.Semaphore(cfg.relay_concurrency)

    async def deliver(row: _Due) -> None:
        async with gate:
            if row.destination in down:
                report.skipped += 1
                return
            row.attempts += 1
            try:
                await SENDERS[row.destination](services, row.payload, serving)
            except Refused as exc:
                row.outcome, row.last_error = "dead", str(exc)[:1000]
                report.dead += 1
                log.error("outbox %s to %s refused: %s", row.message_id, row.destination, exc)
            except Exception as exc:  # an outage of the receiver: retry later (logged, not raised)
                down.add(row.destination)
                row.outcome = "retried"
                row.next_attempt_at = now + backoff(row.attempts, cfg.relay_backoff_initial_s, cfg.relay_backoff_max_s)
                row.last_error = f"{type(exc).__name__}: {exc}"[:1000]
                report.retried += 1
                log.warning(
                    "outbox %s to %s failed (attempt %d): %s", row.message_id, row.destination, row.attempts, exc
                )
            else:
                row.outcome = "delivered"
                report.delivered += 1

    postgres = services.engine.dialect.name == "postgresql"
    # The marks are committed without the fsync on SQLite (Services.index_engine): a mark that an
    # OS crash takes back sends its message again, which at-least-once delivery allows (receivers
    # deduplicate), and the relay's commits stop holding SQLite's one write lock through an fsync
    # that the API's reactions wait for.
    with services.index_writes.connect() as conn:
        due = select(*_DUE_COLUMNS).where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now)
        if postgres:
            due = due.with_for_update(skip_locked=True)  # several relays never take the same row
        rows = [_Due(*r) for r in conn.execute(due.order_by(OutboxMessage.id).limit(cfg.relay_batch))]
        if not postgres or not rows:  # (PostgreSQL keeps the rows' locks until the marks)
            conn.commit()  # the read is over: its connection goes back to the pool while sending
        if not rows:
            return report
        await asyncio.gather(*(deliver(row) for row in rows))
        # One commit for the batch (each commit is an fsync, and on SQLite it holds the one write
        # lock the API's requests wait for). A crash before it sends the batch's acknowledged
        # messages again: receivers deduplicate by the idempotency key, so at-least-once holds.
        marks: dict[str, list[dict[str, Any]]] = {"delivered": [], "dead": [], "retried": []}
        for r in rows:
            if r.outcome == "delivered":
                marks["delivered"].append({"row_id": r.id, "n": r.attempts, "at": now})
            elif r.outcome == "dead":
                marks["dead"].append({"row_id": r.id, "n": r.attempts, "error": r.last_error})
            elif r.outcome == "retried":
                retry = {"row_id": r.id, "n": r.attempts, "at": r.next_attempt_at, "error": r.last_error}
                marks["retried"].append(retry)
        with services.writing():  # queued with the app's hot writes (SQLite: one writer)
            for outcome, params in marks.items():
                if params:
                    conn.execute(_MARKS[outcome], params)
            conn.commit()
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
        app = self.services.settings.app
        serving: AsyncServingClient | None = None

        async def open_serving() -> AsyncServingClient:  # made on this loop, which uses it
            return AsyncServingClient(app.serving_url, app.serving_timeout_s, breaker=self.services.serving.breaker)

        try:
            serving = loop.run_until_complete(open_serving())
            while not self._stop.is_set():
                try:
                    loop.run_until_complete(relay_once(self.services, serving=serving))
                except Exception:  # the database is down: keep the thread, try again next tick
                    log.exception("outbox relay pass failed")
                self._wake.wait(app.relay_interval_s)
                self._wake.clear()
        finally:
            if serving is not None:
                loop.run_until_complete(serving.aclose())
            loop.close()


def nudge(services: Services) -> None:
    """Wake the app's relay worker, if it runs."""
    worker: Any = services.extra.get("relay")
    if worker is not None:
        worker.nudge()
