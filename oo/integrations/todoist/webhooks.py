"""Todoist webhooks: verify the signature, turn a valid event into a durable sync request.

Webhooks are notifications, never the data source: an event only says "this user changed
something"; the sync reads the API. A verified event becomes a
:class:`data_contracts.TodoistSyncTrigger`, stored as a :class:`oo.tables.SyncRequest` row in the
app database before the webhook is acknowledged (so a crash or restart loses no trigger;
Todoist's redelivery of the same ``X-Todoist-Delivery-ID`` is stored once).
:func:`run_requested_syncs` syncs each requested user once and marks their requests processed.

The signature is ``X-Todoist-Hmac-SHA256``: base64 of HMAC-SHA256 over the raw body, keyed with
the app's client secret (``OO_TODOIST__CLIENT_SECRET``), compared in constant time. A missing or
forged signature raises :class:`BadSignature` and changes nothing. The HTTP endpoint is the app
API's (``app_api/routes/integrations.py``), which calls :func:`receive`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from data_contracts import TodoistSyncTrigger
from oo.tables import DELIVERY_ID_MAX, Integration, SyncRequest

log = logging.getLogger(__name__)


SIGNATURE_HEADER = "X-Todoist-Hmac-SHA256"
DELIVERY_HEADER = "X-Todoist-Delivery-ID"


class BadWebhook(ValueError):
    """A webhook body that is not a Todoist event."""


class BadSignature(BadWebhook):
    """A webhook whose signature is missing or wrong (forged, or tampered with)."""


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


def record_trigger(engine: Engine, trigger: TodoistSyncTrigger) -> bool:
    """Store ``trigger`` durably as a :class:`SyncRequest` (committed before the webhook is
    acknowledged). False when its delivery id is already stored (Todoist redelivered it)."""
    from oo.db import session_scope

    try:
        with session_scope(engine) as s:
            s.add(
                SyncRequest(
                    delivery_id=trigger.delivery_id,
                    user_id=trigger.user_id,
                    event_name=trigger.event_name[:64],
                    requested_at=trigger.received_at,
                )
            )
    except IntegrityError:
        return False
    return True


def requested_users(engine: Engine) -> list[str]:
    """Users with a pending sync request, oldest request first."""
    from oo.db import session_scope

    with session_scope(engine) as s:
        rows = s.execute(
            select(SyncRequest.user_id, func.min(SyncRequest.requested_at))
            .where(SyncRequest.processed_at.is_(None))
            .group_by(SyncRequest.user_id)
            .order_by(func.min(SyncRequest.requested_at))
        ).all()
    return [r[0] for r in rows]


def run_requested_syncs(
    engine: Engine,
    sync: Callable[[list[str]], Sequence[Any]] | None = None,
    now: Callable[[], datetime] | None = None,
) -> list[str]:
    """Sync every user with pending requests once, then mark the requests that existed before the
    sync as processed. A crash before the mark leaves them pending (the next run syncs again:
    syncs are incremental and idempotent); a request arriving during the sync stays pending.
    Returns the users synced."""
    from oo.db import session_scope

    clock = now or (lambda: datetime.now(UTC))
    started = clock()
    users = requested_users(engine)
    if not users:
        return []
    if sync is None:
        from oo.integrations.todoist.sync import sync_users

        sync = sync_users
    sync(users)
    with session_scope(engine) as s:
        s.execute(
            update(SyncRequest)
            .where(
                SyncRequest.user_id.in_(users),
                SyncRequest.processed_at.is_(None),
                SyncRequest.requested_at <= started,
            )
            .values(processed_at=clock())
        )
    return users


def receive(engine: Engine, body: bytes, headers: Mapping[str, str], secret: SecretStr) -> TodoistSyncTrigger | None:
    """Verify and record one webhook delivery: the trigger stored, or ``None`` for an event of no
    connected user. Raises :class:`BadSignature` or :class:`BadWebhook`."""
    if not verify(body, headers.get(SIGNATURE_HEADER), secret):
        raise BadSignature("invalid webhook signature")
    event = parse_event(body)
    delivery_id = headers.get(DELIVERY_HEADER)
    if delivery_id is not None and len(delivery_id) > DELIVERY_ID_MAX:
        raise BadWebhook(f"{DELIVERY_HEADER} is longer than {DELIVERY_ID_MAX} characters")
    trigger = trigger_for(engine, event, delivery_id)
    if trigger is not None:
        record_trigger(engine, trigger)
    return trigger


__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "BadSignature",
    "BadWebhook",
    "parse_event",
    "receive",
    "record_trigger",
    "requested_users",
    "run_requested_syncs",
    "sign",
    "trigger_for",
    "verify",
]
