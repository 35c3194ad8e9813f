"""A user's data everywhere oO keeps it: export it all, or erase it all.

Stores: the app database (every table with a ``user_id``), the lake (every dataset with a
``user_id`` column), NATS JetStream's event and dead-letter streams when configured (messages
deleted by sequence, see :mod:`oo.bus_erasure`), the event log under ``var/events`` (redacted
in place so readers' byte offsets stay valid, see :mod:`oo.event_erasure`), the feature store
(online rows and published tables of the user and of their Todoist tasks), MLflow (artifacts
with a ``user_id`` column, such as training-set lineage, see :mod:`models.tracking_erasure`)
and serving (decisions, rewards, learner state, through its ``user_state`` and ``forget``
endpoints). Erasure runs the steps that can fail first (serving, then the bus, the event log,
the feature store, the lake and MLflow) and deletes the app-database rows last, with an audit
entry in the same transaction; every step is idempotent, so a failed erasure is simply run
again. The audit entry holds counts and a random id, never the user's id or email.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import pyarrow.compute as pc
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app_api.services import Services
from app_api.tables import (
    AuditEntry,
    Consent,
    Delivery,
    OutboxMessage,
    Profile,
    Reaction,
    RefreshToken,
    ServedDecision,
)
from data_contracts.arrow import arrow_schema
from oo.events_ingest import EventLog
from oo.lake import DATASETS
from oo.tables import Integration, SyncRequest, User

log = logging.getLogger(__name__)
T = TypeVar("T")

USER_TABLES: tuple[Any, ...] = (Profile, Consent, ServedDecision, Reaction, OutboxMessage, Delivery, SyncRequest)
"""App tables exported row by row (tokens and hashes are never exported, see :func:`export_app`)."""


def lake_datasets() -> list[str]:
    """The lake datasets that hold users' rows."""
    return [name for name, model in DATASETS.items() if "user_id" in arrow_schema(model).names]


def _row(obj: Any) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in obj.__mapper__.column_attrs}


def export_app(session: Session, user: User) -> dict[str, Any]:
    """The user's rows in the app database."""
    out: dict[str, Any] = {
        "user": {
            "id": user.id,
            "email": user.email,
            "display_name": user.display_name,
            "timezone": user.timezone,
            "created_at": user.created_at,
            "password_set": user.password_hash is not None,
            "google_linked": user.oidc_subject is not None,
        }
    }
    for table in USER_TABLES:
        rows = session.execute(select(table).where(table.user_id == user.id)).scalars()
        out[table.__tablename__] = [_row(r) for r in rows]
    out["integrations"] = [
        {k: v for k, v in _row(r).items() if k != "token_ciphertext"} | {"token_stored": r.token_ciphertext is not None}
        for r in session.execute(select(Integration).where(Integration.user_id == user.id)).scalars()
    ]
    out["refresh_tokens"] = [
        {"family_id": r.family_id, "created_at": r.created_at, "used_at": r.used_at, "revoked_at": r.revoked_at}
        for r in session.execute(select(RefreshToken).where(RefreshToken.user_id == user.id)).scalars()
    ]
    return out


def task_ids(services: Services, user_id: str) -> list[str]:
    """The ids of the user's Todoist tasks in the lake (feature rows are keyed by them)."""
    table = services.lake.read("todoist_tasks", where="user_id = ?", params=[user_id], columns=["id"])
    return sorted(set(pc.cast(table["id"], "string").to_pylist())) if table.num_rows else []


def export_lake(services: Services, user_id: str) -> dict[str, list[dict[str, Any]]]:
    """The user's rows in every lake dataset."""
    return {
        name: services.lake.read(name, where="user_id = ?", params=[user_id]).to_pylist() for name in lake_datasets()
    }


def feature_store(services: Services) -> Any:
    """The Feast store of the app's settings (built once; importing Feast takes seconds)."""
    store = services.extra.get("feature_store")
    if store is None:
        from oo.feature_store import get_store

        store = services.extra["feature_store"] = get_store(services.settings)
    return store


def _has_registry(services: Services) -> bool:
    return (services.settings.feast_dir / "registry.db").exists()


def export_features(services: Services, user_id: str, tasks: list[str]) -> dict[str, Any]:
    """The user's (and their tasks') online rows and published feature-table rows."""
    from oo.feature_erasure import read_online, read_tables
    from oo.feature_store import tables_dir

    folder = tables_dir(services.settings)
    out: dict[str, Any] = {
        "tables": merged(read_tables(folder, "user_id", [user_id]), read_tables(folder, "task_id", tasks))
    }
    if _has_registry(services):
        store = feature_store(services)
        out["online"] = merged(read_online(store, "user_id", [user_id]), read_online(store, "task_id", tasks))
    else:
        out["online"] = {}
    return out


def merged(*parts: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Rows per table from several lookups, each row once: a table keyed by both the user and the
    task (``task_attributes``) is found by both, and neither lookup may hide the other's rows.

    >>> merged({"t": [{"a": 1}]}, {"t": [{"a": 1}, {"a": 2}], "u": [{"b": 0}]})
    {'t': [{'a': 1}, {'a': 2}], 'u': [{'b': 0}]}
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        for table, rows in part.items():
            kept = out.setdefault(table, [])
            kept.extend(row for row in rows if row not in kept)
    return out


def event_log(services: Services) -> EventLog:
    """The event log of the app's settings (serving and the app append to it on one machine)."""
    return EventLog(services.settings.paths.resolve("events"))


def _on_bus(services: Services, work: Callable[[Any], Awaitable[T]], nothing: T) -> T:
    """Run ``work(bus)`` on NATS JetStream when the settings name it (the in-process bus keeps
    nothing past its process); a connection of its own, closed after."""
    cfg = services.settings.bus
    if not cfg.nats_url:
        return nothing
    from oo.bus import DbDeduplicator, NatsBus

    async def run() -> T:
        bus = NatsBus(cfg.nats_url or "", DbDeduplicator(services.engine), stream=cfg.stream, prefix=cfg.subject_prefix)
        try:
            return await work(bus)
        finally:
            await bus.close()

    return asyncio.run(run())


def export_all(services: Services, session: Session, user: User) -> dict[str, Any]:
    """Everything held about ``user``. Raises :class:`oo.serving_client.ServingError` when serving
    cannot say what it holds."""
    from models.tracking_erasure import read_user as mlflow_rows
    from oo.bus_erasure import read_user as bus_messages
    from oo.event_erasure import read_user as event_rows

    tasks = task_ids(services, user.id)
    return {
        "app": export_app(session, user),
        "lake": export_lake(services, user.id),
        "bus": _on_bus(services, lambda bus: bus_messages(bus, user.id), dict[str, list[Any]]()),
        "event_log": event_rows(event_log(services), user.id),
        "feature_store": export_features(services, user.id, tasks),
        "mlflow": mlflow_rows(services.settings, user.id),
        "serving": services.serving.user_state(user.id).state,
    }


class ErasureIncomplete(RuntimeError):
    """A store failed midway through an erasure: what ran before it is erased, the rest (and the
    account) is kept; running the erasure again finishes it. The message names the store only."""

    def __init__(self, store: str) -> None:
        super().__init__(f"the erasure stopped at the {store}; the account is kept; run it again")
        self.store = store


def erase(services: Services, user_id: str, now: datetime) -> dict[str, int]:
    """Remove ``user_id`` from every store; the counts removed per store. The app database goes
    last, with the audit entry, in one transaction. Raises :class:`oo.serving_client.ServingError`
    when serving cannot forget the user (nothing is erased then) and :class:`ErasureIncomplete`
    when a later store fails."""
    from models.tracking_erasure import erase_user as erase_mlflow
    from oo.bus_erasure import erase_user as erase_bus
    from oo.event_erasure import redact_user
    from oo.feature_erasure import delete_from_tables, delete_online
    from oo.feature_store import tables_dir

    counts: dict[str, int] = {}
    counts["serving"] = services.serving.forget(user_id).removed

    def step(store: str, work: Callable[[], T]) -> T:
        # any failure of a store (I/O, a server down, a corrupt file) stops the erasure with the
        # store's name; the account and the app database stay, so the user can run it again
        try:
            return work()
        except Exception as exc:
            log.exception("erasure stopped at the %s (%s)", store, type(exc).__name__)
            raise ErasureIncomplete(store) from exc

    # Upstream first: bus -> event log -> lake; an event not yet moved down would otherwise reach
    # a store after that store's erasure.
    counts["bus"] = step("bus", lambda: _on_bus(services, lambda bus: erase_bus(bus, user_id), 0))
    counts["event_log"] = step("event log", lambda: sum(redact_user(event_log(services), user_id).values()))
    tasks = step("lake", lambda: task_ids(services, user_id))
    folder = tables_dir(services.settings)
    counts["feature_tables"] = step(
        "feature tables",
        lambda: delete_from_tables(folder, "user_id", [user_id]) + delete_from_tables(folder, "task_id", tasks),
    )
    if _has_registry(services):

        def online() -> int:
            store = feature_store(services)
            return delete_online(store, "user_id", [user_id]) + delete_online(store, "task_id", tasks)

        counts["feature_online"] = step("online feature store", online)
    counts["lake"] = step(
        "lake", lambda: sum(services.lake.delete_where(name, "user_id", [user_id]) for name in lake_datasets())
    )
    counts["mlflow"] = step("MLflow", lambda: erase_mlflow(services.settings, user_id))
    with Session(services.engine) as session:
        counts["app_rows"] = sum(
            len(session.execute(select(t).where(t.user_id == user_id)).all())
            for t in (*USER_TABLES, Integration, RefreshToken)
        )
        # Foreign keys cascade (PostgreSQL always, SQLite with PRAGMA foreign_keys), and the
        # explicit deletes make the order independent of that.
        for table in (Reaction, OutboxMessage, Delivery, ServedDecision, *USER_TABLES, Integration, RefreshToken):
            session.execute(delete(table).where(table.user_id == user_id))
        session.execute(delete(User).where(User.id == user_id))
        session.add(AuditEntry(action="user_erased", at=now, detail={"erasure_id": str(uuid.uuid4()), **counts}))
        session.commit()
    log.info("user erased: %s", counts)
    return counts
