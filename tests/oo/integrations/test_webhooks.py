"""Todoist webhooks: signed events become sync triggers on the bus; forged ones change nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from data_contracts import TodoistSyncTrigger
from oo.bus import InProcessBus
from oo.db import engine_for, migrate, session_scope
from oo.integrations.todoist.sync import connect_user
from oo.integrations.todoist.webhooks import (
    TRIGGER_TOPIC,
    bus_dependency,
    engine_dependency,
    router,
    run_triggered_syncs,
    secret_dependency,
    sign,
    verify,
)
from oo.tables import Integration
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


@pytest.fixture
def bus() -> InProcessBus:
    return InProcessBus()


@pytest.fixture
def client(engine: Engine, bus: InProcessBus) -> TestClient:
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[bus_dependency] = lambda: bus
    app.dependency_overrides[engine_dependency] = lambda: engine
    app.dependency_overrides[secret_dependency] = lambda: SECRET
    return TestClient(app)


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


def pending(bus: InProcessBus) -> list[TodoistSyncTrigger]:
    got: list[TodoistSyncTrigger] = []

    async def handle(t: TodoistSyncTrigger) -> None:
        got.append(t)

    asyncio.run(bus.consume(TRIGGER_TOPIC, TodoistSyncTrigger, handle, consumer="probe", idle_timeout=0.05))
    return got


def test_signature_is_base64_hmac_sha256_of_the_raw_body() -> None:
    body = event()
    assert verify(body, sign(body, SECRET), SECRET)
    assert not verify(body + b" ", sign(body, SECRET), SECRET)
    assert not verify(body, sign(body, SecretStr("other")), SECRET)
    assert not verify(body, None, SECRET) and not verify(body, "", SECRET)


def test_a_signed_event_becomes_a_sync_trigger_for_its_user(client: TestClient, bus: InProcessBus) -> None:
    body = event()
    headers = {"X-Todoist-Hmac-SHA256": sign(body, SECRET), "X-Todoist-Delivery-ID": "d-1"}
    response = client.post("/webhooks/todoist", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["user_id"] == "oo-user-1"
    client.post("/webhooks/todoist", content=body, headers=headers)  # redelivered: same delivery id
    triggers = pending(bus)
    assert len(triggers) == 1  # the redelivery is deduplicated by its delivery id
    assert [(t.user_id, t.todoist_user_id, t.event_name, t.delivery_id) for t in triggers][0] == (
        "oo-user-1",
        "2671355",
        "item:added",
        "d-1",
    )


def test_a_forged_signature_is_401_and_changes_nothing(client: TestClient, bus: InProcessBus) -> None:
    body = event()
    forged = sign(body, SecretStr("guessed"))
    for headers in ({"X-Todoist-Hmac-SHA256": forged}, {}):
        assert client.post("/webhooks/todoist", content=body, headers=headers).status_code == 401
    tampered = body.replace(b"item:added", b"item:deleted")
    headers = {"X-Todoist-Hmac-SHA256": sign(body, SECRET)}
    assert client.post("/webhooks/todoist", content=tampered, headers=headers).status_code == 401
    assert pending(bus) == []


def test_malformed_and_unknown_user_events_trigger_nothing(client: TestClient, bus: InProcessBus) -> None:
    bad = b'{"event_name": "item:added", '
    assert (
        client.post("/webhooks/todoist", content=bad, headers={"X-Todoist-Hmac-SHA256": sign(bad, SECRET)}).status_code
        == 400
    )
    stranger = event(user_id="999")
    response = client.post(
        "/webhooks/todoist", content=stranger, headers={"X-Todoist-Hmac-SHA256": sign(stranger, SECRET)}
    )
    assert response.status_code == 200 and response.json()["accepted"] is False
    assert pending(bus) == []


def test_triggers_sync_each_user_once(client: TestClient, bus: InProcessBus) -> None:
    for i in range(3):
        body = event(name=f"item:updated{i}")
        client.post("/webhooks/todoist", content=body, headers={"X-Todoist-Hmac-SHA256": sign(body, SECRET)})
    synced: list[list[str]] = []
    users = asyncio.run(run_triggered_syncs(bus, synced.append, idle_timeout=0.05))
    assert users == ["oo-user-1"] and synced == [["oo-user-1"]]
