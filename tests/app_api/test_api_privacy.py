"""Privacy: the export holds the user's data from every store and nobody else's; after the
erasure, a search of every store for the user's id finds nothing, and the audit entry holds no
personal data."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app_api.privacy import feature_store, lake_datasets
from app_api.relay import relay_once
from app_api.services import Services
from app_api.tables import AuditEntry
from data_contracts import CandidateKind, NotificationDelivery, ReactionEvent
from oo.fakes.serving import FakeServingServer
from oo.feature_erasure import read_online
from oo.tables import Base
from tests.app_api.conftest import Account

pytestmark = pytest.mark.slow


def reaction(user_id: str) -> ReactionEvent:
    return ReactionEvent(
        event_id=uuid.uuid4(),
        decision_id=uuid.uuid4(),
        user_id=user_id,
        candidate_id="task:1",
        reaction="done",
        occurred_at=datetime(2026, 3, 27, 9, tzinfo=UTC),
    )


def give_data(client: TestClient, services: Services, account: Account) -> None:
    """Data in every store: profile, consent, token, a tip and its reaction (relayed to serving),
    lake rows, and online feature rows."""
    client.put("/v1/me/profile", json={"timezone": "Europe/Paris"}, headers=account.auth)
    client.post("/v1/me/consents", json={"purpose": "analytics", "granted": True}, headers=account.auth)
    client.post("/v1/integrations/todoist", json={"token": f"tok-{account.id}"}, headers=account.auth)
    tip = client.get("/v1/tips/next", headers=account.auth).json()
    client.post("/v1/feedback", json={"decision_id": tip["decision_id"], "reaction": "done"}, headers=account.auth)
    asyncio.run(relay_once(services))
    event = reaction(account.id)
    services.lake.write("reactions", [event])
    services.lake.write(
        "deliveries",
        [
            NotificationDelivery(
                delivery_id=uuid.uuid4(), user_id=account.id, channel="email", status="sent", attempt=1,
                created_at=datetime(2026, 3, 27, 9, tzinfo=UTC),
            )
        ],
    )  # fmt: skip
    from models.features.online import OnlineFeatures

    OnlineFeatures(feature_store(services)).push_reaction(event, CandidateKind.todoist_task)


@pytest.fixture
def applied(services: Services) -> Services:
    from oo.feature_store import apply

    apply(feature_store(services))
    return services


def everything_in_the_app_db(services: Services) -> str:
    out: list[Any] = []
    with Session(services.engine) as s:
        for table in Base.metadata.sorted_tables:
            out += [list(r) for r in s.execute(select(table)).all()]
    return json.dumps(out, default=str)


def everything_in_the_lake(services: Services) -> str:
    return json.dumps([services.lake.read(n).to_pylist() for n in lake_datasets()], default=str)


def test_export_then_erase(
    client: TestClient, applied: Services, fake_serving: FakeServingServer, alice: Account, bob: Account
) -> None:
    services = applied
    give_data(client, services, alice)
    give_data(client, services, bob)

    r = client.get("/v1/me/export", headers=alice.auth)
    assert r.status_code == 200
    data = r.json()
    assert data["app"]["user"]["email"] == alice.email
    assert data["app"]["user"]["timezone"] == "Europe/Paris"
    assert [c["purpose"] for c in data["app"]["consents"]] == ["analytics"]
    assert data["app"]["integrations"][0]["token_stored"] is True and "token_ciphertext" not in r.text
    assert len(data["app"]["reactions"]) == 1 and len(data["app"]["served_decisions"]) == 1
    assert len(data["lake"]["reactions"]) == 1 and len(data["lake"]["deliveries"]) == 1
    assert data["feature_store"]["online"]["user_reactions"][0]["user_id"] == alice.id
    assert len(data["serving"]["decisions"]) == 1 and len(data["serving"]["rewards"]) == 1
    assert bob.id not in r.text and bob.email not in r.text  # only the caller's data
    assert f"tok-{alice.id}" not in r.text and "password_hash" not in r.text

    assert client.delete("/v1/me", headers=alice.auth).status_code == 204

    for haystack in (everything_in_the_app_db(services), everything_in_the_lake(services)):
        assert alice.id not in haystack and alice.email not in haystack
        assert bob.id in haystack  # Bob is untouched
    store = feature_store(services)
    assert read_online(store, "user_id", [alice.id]) == {}
    assert read_online(store, "user_id", [bob.id]) != {}
    assert fake_serving.world.held(alice.id) == {"decisions": [], "rewards": []}
    assert fake_serving.world.held(bob.id)["decisions"]
    with Session(services.engine) as s:
        [audit] = s.execute(select(AuditEntry)).scalars().all()
    assert audit.action == "user_erased" and audit.detail["lake"] == 2 and audit.detail["serving"] == 2
    assert alice.id not in json.dumps(audit.detail) and alice.email not in json.dumps(audit.detail)
    # The account is gone: its token no longer works, and the email can register again.
    assert client.get("/v1/auth/me", headers=alice.auth).status_code == 401
    assert client.post("/v1/auth/login", json={"email": alice.email, "password": "x" * 12}).status_code == 401


def test_serving_down_erases_nothing(
    client: TestClient, services: Services, fake_serving: FakeServingServer, alice: Account
) -> None:
    services.lake.write("reactions", [reaction(alice.id)])
    fake_serving.stop()
    try:
        r = client.delete("/v1/me", headers=alice.auth)
        export = client.get("/v1/me/export", headers=alice.auth)
    finally:
        fake_serving.start()
    assert r.status_code == 503 and export.status_code == 503
    assert services.lake.read("reactions").num_rows == 1
    assert client.get("/v1/auth/me", headers=alice.auth).status_code == 200
    assert client.delete("/v1/me", headers=alice.auth).status_code == 204  # and again, now it works
    assert services.lake.read("reactions").num_rows == 0
