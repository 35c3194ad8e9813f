"""Todoist webhooks: verify the signature, turn a valid event into a sync trigger for its user.

Webhooks are notifications, never the data source: an event only says "this user changed
something"; the sync reads the API. A verified event becomes a
:class:`data_contracts.TodoistSyncTrigger` published on the bus (topic
:data:`TRIGGER_TOPIC`); :func:`run_triggered_syncs` consumes triggers and syncs each user once.

The signature is ``X-Todoist-Hmac-SHA256``: base64 of HMAC-SHA256 over the raw body, keyed with
the app's client secret (``OO_TODOIST__CLIENT_SECRET``), compared in constant time. A missing or
forged signature gets 401 and changes nothing. The app API mounts :data:`router`; its
dependencies (:func:`bus_dependency`, :func:`engine_dependency`) can be overridden.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import SecretStr
from sqlalchemy import Engine, select

from data_contracts import TodoistSyncTrigger
from oo.bus import Bus
from oo.tables import Integration

log = logging.getLogger(__name__)

TRIGGER_TOPIC = "todoist.sync_requested"
"""The bus topic of :class:`TodoistSyncTrigger` events."""


class BadWebhook(ValueError):
    """A webhook body that is not a Todoist event."""


def sign(body: bytes, secret: SecretStr) -> str:
    """The ``X-Todoist-Hmac-SHA256`` value of ``body``.

    Examples
    --------
    >>> sign(b'{"event_name": "item:added"}', SecretStr("s3cret"))
    'JfFAUBMGNDQdhM2uMIwCdjSuXq1cB8dVjuUZOvVS378='
    """
    mac = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def verify(body: bytes, signature: str | None, secret: SecretStr) -> bool:
    """Whether ``signature`` is the body's HMAC under ``secret`` (constant-time)."""
    if not signature:
        return False
    return hmac.compare_digest(sign(body, secret).encode(), signature.strip().encode())


def parse_event(body: bytes) -> dict[str, Any]:
    """The event of a verified body; :class:`BadWebhook` when it is not one."""
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise BadWebhook(f"malformed JSON: {exc}") from None
    if not isinstance(event, dict):
        raise BadWebhook("the body is not a JSON object")
    missing = [k for k in ("event_name", "user_id") if not event.get(k)]
    if missing:
        raise BadWebhook(f"missing {', '.join(missing)}")
    return event


def trigger_for(
    engine: Engine, event: dict[str, Any], delivery_id: str | None, now: datetime | None = None
) -> TodoistSyncTrigger | None:
    """The sync trigger of ``event``, or ``None`` when no connected user has that Todoist id."""
    from oo.db import session_scope

    todoist_user = str(event["user_id"])
    with session_scope(engine) as s:
        user_id = s.execute(
            select(Integration.user_id).where(
                Integration.provider == "todoist", Integration.external_id == todoist_user
            )
        ).scalar_one_or_none()
    if user_id is None:
        return None
    triggered: datetime | None = None
    if isinstance(event.get("triggered_at"), str):
        try:
            triggered = datetime.fromisoformat(event["triggered_at"].replace("Z", "+00:00"))
        except ValueError:
            triggered = None
        if triggered is not None and triggered.tzinfo is None:
            triggered = triggered.replace(tzinfo=UTC)
    received = now or datetime.now(UTC)
    body_id = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()[:32]
    return TodoistSyncTrigger(
        delivery_id=delivery_id or body_id,
        user_id=user_id,
        todoist_user_id=todoist_user,
        event_name=str(event["event_name"]),
        triggered_at=triggered,
        received_at=received,
    )


_BUS: Bus[Any] | None = None


def bus_dependency() -> Bus[Any]:
    """The process's bus (override in the app: ``app.dependency_overrides[bus_dependency]``)."""
    global _BUS
    if _BUS is None:
        from oo.bus import get_bus

        _BUS = get_bus()
    return _BUS


def engine_dependency() -> Engine:
    """The app database engine (overridable)."""
    from oo.db import get_engine

    return get_engine()


def secret_dependency() -> SecretStr:
    """The Todoist client secret (overridable)."""
    from oo.settings import get_settings

    return get_settings().todoist.client_secret


router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.post("/todoist")
async def todoist_webhook(
    request: Request,
    bus: Annotated[Bus[Any], Depends(bus_dependency)],
    engine: Annotated[Engine, Depends(engine_dependency)],
    secret: Annotated[SecretStr, Depends(secret_dependency)],
) -> dict[str, Any]:
    """Receive a Todoist webhook: verify it and ask for a sync of its user."""
    body = await request.body()
    if not verify(body, request.headers.get("X-Todoist-Hmac-SHA256"), secret):
        log.warning("todoist webhook: bad signature, refused")
        raise HTTPException(status_code=401, detail="invalid webhook signature")
    try:
        event = parse_event(body)
    except BadWebhook as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    trigger = trigger_for(engine, event, request.headers.get("X-Todoist-Delivery-ID"))
    if trigger is None:  # acknowledged, so Todoist does not redeliver; nothing to sync
        return {"accepted": False, "reason": "no connected user with this Todoist id"}
    await bus.publish(TRIGGER_TOPIC, trigger)
    return {"accepted": True, "user_id": trigger.user_id, "event_name": trigger.event_name}


async def run_triggered_syncs(
    bus: Bus[Any],
    sync: Callable[[list[str]], Any] | None = None,
    *,
    consumer: str = "todoist-sync",
    idle_timeout: float = 0.5,
) -> list[str]:
    """Consume pending triggers and sync each triggered user once (a trigger is acked only after
    its user's sync ran, so a crash redelivers it). Returns the users synced."""
    from oo.integrations.todoist.sync import sync_users

    run = sync or sync_users
    users: list[str] = []

    async def handle(trigger: TodoistSyncTrigger) -> None:
        if trigger.user_id not in users:
            run([trigger.user_id])
            users.append(trigger.user_id)

    await bus.consume(TRIGGER_TOPIC, TodoistSyncTrigger, handle, consumer=consumer, idle_timeout=idle_timeout)
    return users


__all__ = [
    "TRIGGER_TOPIC",
    "BadWebhook",
    "bus_dependency",
    "engine_dependency",
    "parse_event",
    "router",
    "run_triggered_syncs",
    "secret_dependency",
    "sign",
    "trigger_for",
    "verify",
]
