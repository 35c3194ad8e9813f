"""Todoist webhooks: signed events become durable sync requests; forged ones change nothing.
(The HTTP endpoint is the app API's: tests/app_api/test_api_integrations.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import Engine, select

from oo.db import engine_for, migrate, session_scope
from oo.integrations.todoist.sync import connect_user
from oo.integrations.todoist.webhooks import (
    BadSignature,
    BadWebhook,
    receive,
    requested_users,
    run_requested_syncs,
    sign,
    verify,
)
from oo.tables import Integration, SyncRequest
from oo.vault import Vault

SECRET = SecretStr("client-secret-for-tests")


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(url)
    eng = engine_for(url)
    connect_user(eng, Vault([SecretStr(Fernet.generate_key().decode())]), "oo-user-1", SecretStr("tok"))
    with session_scope(eng) as s:
        s.query(Integration).one().external_id = "2671355"
    return eng


def event(user_id: str = "2671355", name: str = "item:added") -> bytes:
    return json.dumps(
        {
            "event_name": name,
            "user_id": user_id,
            "event_data": {"id": "6X7rM8997g3RQmvh", "content": "Buy milk"},
            "version": "10",
            "initiator": {"id": user_id},
            "triggered_at": "2026-03-02T09:00:00.000000Z",
        }
    ).encode()


def signed(body: bytes, delivery: str | None = None) -> dict[str, str]:
    headers = {"X-Todoist-Hmac-SHA256": sign(body, SECRET)}
    return headers | ({"X-Todoist-Delivery-ID": delivery} if delivery else {})


def stored(engine: Engine) -> list[tuple[str, str, str]]:
    with session_scope(engine) as s:
        return [(r.user_id, r.event_name, r.delivery_id) for r in s.execute(select(SyncRequest)).scalars()]


def test_signature_is_base64_hmac_sha256_of_the_raw_body() -> None:
    body = event()
    assert verify(body, sign(body, SECRET), SECRET)
    assert not verify(body + b" ", sign(body, SECRET), SECRET)
    assert not verify(body, sign(body, SecretStr("other")), SECRET)
    assert not verify(body, None, SECRET) and not verify(body, "", SECRET)


def test_a_signed_event_becomes_a_durable_request_for_its_user(engine: Engine) -> None:
    body = event()
    trigger = receive(engine, body, signed(body, "d-1"), SECRET)
    assert trigger is not None and (trigger.user_id, trigger.todoist_user_id) == ("oo-user-1", "2671355")
    receive(engine, body, signed(body, "d-1"), SECRET)  # redelivered: same delivery id
    assert stored(engine) == [("oo-user-1", "item:added", "d-1")]
    assert requested_users(engine) == ["oo-user-1"]


def test_a_forged_signature_is_refused_and_changes_nothing(engine: Engine) -> None:
    body = event()
    for headers in ({"X-Todoist-Hmac-SHA256": sign(body, SecretStr("guessed"))}, {}):
        with pytest.raises(BadSignature):
            receive(engine, body, headers, SECRET)
    with pytest.raises(BadSignature):
        receive(engine, body.replace(b"item:added", b"item:deleted"), signed(body), SECRET)
    assert stored(engine) == []


def test_malformed_and_unknown_user_events_request_nothing(engine: Engine) -> None:
    bad = b'{"event_name": "item:added", '
    with pytest.raises(BadWebhook) as raised:
        receive(engine, bad, signed(bad), SECRET)
    assert not isinstance(raised.value, BadSignature)
    stranger = event(user_id="999")
    assert receive(engine, stranger, signed(stranger), SECRET) is None
    body = event()
    with pytest.raises(BadWebhook, match="X-Todoist-Delivery-ID is longer than 128"):
        receive(engine, body, signed(body, "d" * 129), SECRET)  # longer than the table holds
    assert stored(engine) == []


def test_requests_sync_each_user_once_and_survive_a_failed_sync(engine: Engine) -> None:
    for i in range(3):
        body = event(name=f"item:updated{i}")
        receive(engine, body, signed(body), SECRET)

    def crash(users: list[str]) -> list[object]:
        raise RuntimeError("the sync died")

    with pytest.raises(RuntimeError):
        run_requested_syncs(engine, crash)
    assert requested_users(engine) == ["oo-user-1"]  # nothing lost
    synced: list[list[str]] = []
    assert run_requested_syncs(engine, lambda users: synced.append(users) or []) == ["oo-user-1"]
    assert synced == [["oo-user-1"]] and requested_users(engine) == []
    assert run_requested_syncs(engine, lambda users: synced.append(users) or []) == []
