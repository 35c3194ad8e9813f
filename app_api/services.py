"""What the app's routes use, built once per app: settings, database, serving client, bus, lake,
vault, clock. Tests build their own (:func:`build`) and hand it to :func:`app_api.main.create_app`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine

from oo.bus import Bus
from oo.lake import Lake
from oo.serving_client import AsyncServingClient, ServingClient
from oo.settings import Settings
from oo.vault import Vault


def utc_now() -> datetime:
    """The wall clock, timezone-aware."""
    return datetime.now(UTC)


@dataclass
class Services:
    """The app's collaborators. ``http`` calls outside services (Todoist OAuth, webhooks of users,
    the OIDC provider)."""

    settings: Settings
    engine: Engine
    serving: ServingClient
    bus: Bus[Any]
    lake: Lake
    vault: Vault
    http: httpx.Client
    clock: Callable[[], datetime] = utc_now
    extra: dict[str, Any] = field(default_factory=dict)
    serving_async: AsyncServingClient | None = None
    """The app's event-loop client of serving, opened and closed by the app's lifespan."""
    index_engine: Engine | None = None
    """On SQLite, a second pool on the same file whose commits skip the fsync (``synchronous=NORMAL``)
    for what the app keeps only as an index of a record held durably elsewhere: the served
    decisions (serving's decision log holds each decision, fsynced, before the app sees it), and
    the outbox relay's delivery marks (a mark taken back sends the message again: at-least-once,
    receivers deduplicate). Reactions and outbox messages are the record and keep ``engine``
    (``FULL``). In WAL mode a
    NORMAL commit is safe from corruption and from the app crashing; only an OS crash or power
    loss can take back the last ones, and the next FULL commit makes them durable too. ``None``:
    ``engine`` for everything (PostgreSQL)."""
    _writes: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def index_writes(self) -> Engine:
        """The engine for the app's index writes (see :attr:`index_engine`)."""
        return self.index_engine or self.engine

    def writing(self) -> AbstractContextManager[Any]:
        """Held around a hot write transaction (tips, feedback, the relay's marks): on SQLite, one
        at a time in this process, queued on a mutex that wakes the next writer when the last one
        commits. SQLite has one writer anyway, and a writer that finds the file locked polls with
        growing sleeps instead (its busy handler: 1, 2, 5, 10, 15, 20, 25 ms...), so it can sleep
        on well after the lock was free. Other engines lock rows, not the database: nothing to
        queue on."""
        return self._writes if self.engine.dialect.name == "sqlite" else nullcontext()

    def close(self) -> None:
        """Close the pools this object opened."""
        self.serving.close()
        self.http.close()
        if self.index_engine is not None:
            self.index_engine.dispose()


def build(settings: Settings, *, bus: Bus[Any] | None = None, migrate: bool = True) -> Services:
    """Services for ``settings``; migrates the app database to head unless told not to."""
    from oo import db
    from oo.bus import DbDeduplicator, InProcessBus, NatsBus

    if migrate:
        db.migrate(settings.db_url)
    engine = db.engine_for(settings.db_url, settings.db.echo)
    if bus is None:
        b = settings.bus
        bus = (
            NatsBus(
                b.nats_url,
                DbDeduplicator(engine),
                stream=b.stream,
                prefix=b.subject_prefix,
                max_deliver=b.max_deliver,
                ack_wait_s=b.ack_wait_s,
            )
            if b.nats_url
            else InProcessBus(max_deliver=b.max_deliver)
        )
    return Services(
        settings=settings,
        engine=engine,
        # the same SQLite file, commits without the fsync (see Services.index_engine)
        index_engine=db.engine_for(settings.db_url, synchronous="NORMAL") if engine.dialect.name == "sqlite" else None,
        serving=ServingClient(settings.app.serving_url, settings.app.serving_timeout_s),
        bus=bus,
        lake=Lake(settings.lake_root),
        vault=Vault(settings.vault.keys),
        http=httpx.Client(timeout=httpx.Timeout(settings.app.webhook_timeout_s), follow_redirects=False),
    )
