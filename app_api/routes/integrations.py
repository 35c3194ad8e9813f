"""Connecting Todoist (OAuth code exchange, or a personal token in local mode), its status,
disconnecting (revoked at Todoist, token deleted), and Todoist's webhook endpoint."""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Literal, Self
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy import select

from app_api.deps import CurrentUser, Now, ServicesDep, SessionDep, SettingsDep
from app_api.problems import openapi_responses
from app_api.tables import AuthState, aware
from oo.integrations.todoist.sync import connect_user
from oo.integrations.todoist.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, BadSignature, BadWebhook, receive
from oo.tables import DELIVERY_ID_MAX, Integration, SyncRequest

log = logging.getLogger(__name__)

router = APIRouter(prefix="/integrations", tags=["integrations"])
webhooks = APIRouter(prefix="/webhooks", tags=["webhooks"])

PROVIDER = "todoist"
STATE_TTL = timedelta(minutes=15)


class Authorize(BaseModel):
    """Where to send the user to grant access, and the state to hand back."""

    authorize_url: str
    state: str


class Connect(BaseModel):
    """Either the ``code`` and ``state`` Todoist redirected with, or (local mode only) a personal
    API token."""

    model_config = ConfigDict(extra="forbid")
    code: str | None = Field(default=None, min_length=1, max_length=512)
    state: str | None = Field(default=None, min_length=1, max_length=128)
    token: SecretStr | None = Field(default=None, min_length=1, max_length=512)

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if (self.token is None) == (self.code is None):
            raise ValueError("give either code and state, or token")
        if self.code is not None and self.state is None:
            raise ValueError("a code comes with its state")
        return self


class Status(BaseModel):
    """A connection's state. Tokens are never shown."""

    provider: Literal["todoist"] = "todoist"
    status: Literal["not_connected", "active", "needs_reauth", "revoked"]
    last_synced_at: AwareDatetime | None = None
    last_error: str | None = None
    revoked_at_provider: bool | None = Field(default=None, description="after a disconnect: Todoist confirmed")


def _status(session: SessionDep, user_id: str) -> Status:
    row = session.execute(
        select(Integration).where(Integration.user_id == user_id, Integration.provider == PROVIDER)
    ).scalar_one_or_none()
    if row is None:
        return Status(status="not_connected")
    state = row.status if row.status in ("active", "needs_reauth", "revoked") else "needs_reauth"
    return Status(
        status=state,
        last_synced_at=aware(row.last_synced_at) if row.last_synced_at else None,
        last_error=row.last_error,
    )


@router.get("/todoist", responses=openapi_responses(401))
def todoist_status(user: CurrentUser, session: SessionDep) -> Status:
    """The caller's Todoist connection: status, last sync, last error."""
    return _status(session, user.id)


@router.get("/todoist/authorize", responses=openapi_responses(401))
def todoist_authorize(user: CurrentUser, session: SessionDep, settings: SettingsDep, now: Now) -> Authorize:
    """Start connecting Todoist: the consent page's URL, with a one-time state."""
    state = secrets.token_urlsafe(24)
    session.add(AuthState(state=state, purpose=PROVIDER, user_id=user.id, created_at=now))
    session.commit()
    query = urlencode({"client_id": settings.app.todoist_client_id, "scope": "data:read", "state": state})
    return Authorize(authorize_url=f"{settings.app.todoist_authorize_url}?{query}", state=state)


def _take_state(session: SessionDep, state: str, user_id: str, now: datetime) -> None:
    row = session.get(AuthState, state)
    if row is None or row.purpose != PROVIDER or row.user_id != user_id:
        raise HTTPException(400, "unknown or foreign state")
    session.delete(row)
    if now - aware(row.created_at) > STATE_TTL:
        session.commit()
        raise HTTPException(400, "the state has expired; start again")


def _exchange(services: ServicesDep, code: str) -> SecretStr:
    cfg = services.settings
    try:
        r = services.http.post(
            cfg.app.todoist_token_url,
            data={
                "client_id": cfg.app.todoist_client_id,
                "client_secret": cfg.todoist.client_secret.get_secret_value(),
                "code": code,
            },
        )
    except httpx.HTTPError as exc:
        raise HTTPException(502, f"Todoist did not answer ({type(exc).__name__})") from None
    if r.status_code >= 500:
        raise HTTPException(502, f"Todoist failed (HTTP {r.status_code})")
    if r.status_code != 200:
        raise HTTPException(400, "Todoist refused the authorization code")
    try:
        token = r.json()["access_token"]
    except (ValueError, KeyError, TypeError):
        raise HTTPException(502, "Todoist's answer had no access token") from None
    if not isinstance(token, str) or not token:
        raise HTTPException(502, "Todoist's answer had no access token")
    return SecretStr(token)


@router.post("/todoist", responses=openapi_responses(400, 401, 403, 502))
def todoist_connect(body: Connect, user: CurrentUser, session: SessionDep, services: ServicesDep, now: Now) -> Status:
    """Connect Todoist: exchange the OAuth code (or store a personal token in local mode)."""
    if body.token is not None:
        if services.settings.env != "local":
            raise HTTPException(403, "personal tokens are accepted in local mode only; use OAuth")
        token = body.token
    else:
        assert body.code is not None and body.state is not None
        _take_state(session, body.state, user.id, now)
        session.commit()
        token = _exchange(services, body.code)
    connect_user(services.engine, services.vault, user.id, token)
    session.add(
        SyncRequest(delivery_id=f"connect:{uuid.uuid4()}", user_id=user.id, event_name="connected", requested_at=now)
    )
    session.commit()
    log.info("todoist connected for a user")
    return _status(session, user.id)


def _revoke(services: ServicesDep, token: SecretStr) -> bool:
    cfg = services.settings
    try:
        r = services.http.delete(
            cfg.app.todoist_revoke_url,
            params={
                "client_id": cfg.app.todoist_client_id,
                "client_secret": cfg.todoist.client_secret.get_secret_value(),
                "access_token": token.get_secret_value(),
            },
        )
    except httpx.HTTPError as exc:
        log.warning("todoist revoke failed: %s", type(exc).__name__)
        return False
    if r.status_code >= 300:
        log.warning("todoist revoke refused: HTTP %d", r.status_code)
        return False
    return True


@router.delete("/todoist", responses=openapi_responses(401, 404))
def todoist_disconnect(user: CurrentUser, session: SessionDep, services: ServicesDep) -> Status:
    """Disconnect Todoist: revoke the token at Todoist and delete it here (even if Todoist is down)."""
    row = session.execute(
        select(Integration).where(Integration.user_id == user.id, Integration.provider == PROVIDER)
    ).scalar_one_or_none()
    if row is None or row.token_ciphertext is None:
        raise HTTPException(404, "Todoist is not connected")
    revoked = _revoke(services, services.vault.decrypt(row.token_ciphertext))
    row.token_ciphertext = None
    row.status = "revoked"
    row.cursor = None
    session.commit()
    return _status(session, user.id).model_copy(update={"revoked_at_provider": revoked})


class WebhookAck(BaseModel):
    """Whether the event named a connected user (whose sync is now requested)."""

    accepted: bool


WEBHOOK_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["event_name", "user_id"],
                "properties": {
                    "event_name": {"type": "string", "minLength": 1, "examples": ["item:added"]},
                    "user_id": {"type": "string", "minLength": 1, "description": "the Todoist user's id"},
                    "triggered_at": {"type": "string", "format": "date-time"},
                    "event_data": {"type": "object"},
                },
            }
        }
    },
}
"""Todoist's event, as the schema shows it: the route reads the raw body (the signature is over
its bytes) and parses it after verifying."""


@webhooks.post("/todoist", responses=openapi_responses(400, 401), openapi_extra={"requestBody": WEBHOOK_BODY})
async def todoist_webhook(
    request: Request,
    services: ServicesDep,
    signature: Annotated[
        str | None, Header(alias=SIGNATURE_HEADER, description="base64 HMAC-SHA256 of the body")
    ] = None,
    delivery: Annotated[
        str | None,
        Header(alias=DELIVERY_HEADER, description="the same on a redelivery", max_length=DELIVERY_ID_MAX),
    ] = None,
) -> WebhookAck:
    """Receive a Todoist webhook: verify its signature and request a sync of its user.

    The two headers are read again from the request by :func:`receive` (with the raw body); they
    are declared here so that the schema, and a client generated from it, has them."""
    body = await request.body()
    try:
        trigger = await run_in_threadpool(
            receive, services.engine, body, request.headers, services.settings.todoist.client_secret
        )
    except BadSignature:
        log.warning("todoist webhook: bad signature, refused")
        raise HTTPException(401, "invalid webhook signature") from None
    except BadWebhook as exc:
        raise HTTPException(400, str(exc)) from None
    return WebhookAck(accepted=trigger is not None)
