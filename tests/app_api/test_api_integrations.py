"""Integrations: connect Todoist by OAuth code (or a personal token in local mode), status,
disconnect (revoked at Todoist, token deleted), and the signed webhook as a durable sync request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from app_api.services import Services
from oo.fakes.todoist import FakeTodoist, serve_in_thread
from oo.integrations.todoist.webhooks import requested_users, run_requested_syncs, sign
from oo.tables import Integration
from tests.app_api.conftest import Account, Clock


@pytest.fixture
def todoist() -> Iterator[tuple[FakeTodoist, str]]:
    world = FakeTodoist.seeded(seed=3, users=2, tasks_per_user=3)
    with serve_in_thread(world) as api:
        yield world, api


@pytest.fixture
def wired(services: Services, todoist: tuple[FakeTodoist, str]) -> FakeTodoist:
    world, api = todoist
    host = api.removesuffix("/api/v1/")
    s = services.settings
    services.settings = s.model_copy(
        update={
            "app": s.app.model_copy(
                update={
                    "todoist_token_url": f"{host}/oauth/access_token",
                    "todoist_revoke_url": f"{host}/api/v1/access_tokens",
                }
            ),
            "todoist": s.todoist.model_copy(update={"base_url": api}),
        }
    )
    return world


def oauth_connect(client: TestClient, world: FakeTodoist, account: Account, user_index: int = 0) -> dict:
    start = client.get("/v1/integrations/todoist/authorize", headers=account.auth).json()
    query = parse_qs(urlparse(start["authorize_url"]).query)
    assert query["state"] == [start["state"]] and query["scope"] == ["data:read"]
    code = world.authorization_code(world.users[user_index])
    r = client.post("/v1/integrations/todoist", json={"code": code, "state": start["state"]}, headers=account.auth)
    assert r.status_code == 200, r.text
    return r.json()


def test_oauth_connect_stores_the_token_encrypted(
    client: TestClient, services: Services, wired: FakeTodoist, alice: Account
) -> None:
    assert client.get("/v1/integrations/todoist", headers=alice.auth).json()["status"] == "not_connected"
    status = oauth_connect(client, wired, alice)
    assert status["status"] == "active" and status["last_synced_at"] is None
    token = wired.users[0].token
    with Session(services.engine) as s:
        row = s.execute(select(Integration)).scalar_one()
        assert row.token_ciphertext is not None and token.encode() not in row.token_ciphertext
        assert services.vault.decrypt(row.token_ciphertext).get_secret_value() == token
    assert token not in json.dumps(status)
    assert requested_users(services.engine) == [alice.id]  # the first sync is requested at once


def test_a_code_or_state_that_is_wrong_is_refused(
    client: TestClient, wired: FakeTodoist, clock: Clock, alice: Account, bob: Account
) -> None:
    start = client.get("/v1/integrations/todoist/authorize", headers=alice.auth).json()
    bad_code = client.post(
        "/v1/integrations/todoist", json={"code": "forged", "state": start["state"]}, headers=alice.auth
    )
    assert bad_code.status_code == 400 and "refused" in bad_code.json()["detail"]
    code = wired.authorization_code(wired.users[0])
    reused = client.post("/v1/integrations/todoist", json={"code": code, "state": start["state"]}, headers=alice.auth)
    assert reused.status_code == 400  # a state is used once
    start = client.get("/v1/integrations/todoist/authorize", headers=alice.auth).json()
    stolen = client.post("/v1/integrations/todoist", json={"code": code, "state": start["state"]}, headers=bob.auth)
    assert stolen.status_code == 400  # Alice's state is not Bob's
    assert client.post("/v1/integrations/todoist", json={"code": code}, headers=alice.auth).status_code == 422
    assert client.get("/v1/integrations/todoist", headers=bob.auth).json()["status"] == "not_connected"


def test_a_personal_token_in_local_mode_only(
    client: TestClient, services: Services, wired: FakeTodoist, alice: Account
) -> None:
    r = client.post("/v1/integrations/todoist", json={"token": wired.users[1].token}, headers=alice.auth)
    assert r.status_code == 200 and r.json()["status"] == "active"
    services.settings = services.settings.model_copy(update={"env": "staging"})
    r = client.post("/v1/integrations/todoist", json={"token": wired.users[1].token}, headers=alice.auth)
    assert r.status_code == 403


def test_status_reports_last_sync_and_error(
    client: TestClient, services: Services, wired: FakeTodoist, alice: Account
) -> None:
    oauth_connect(client, wired, alice)
    from oo.integrations.todoist.sync import sync_users

    synced = run_requested_syncs(
        services.engine,
        lambda users: sync_users(
            users,
            engine=services.engine,
            lake=services.lake,
            vault=services.vault,
            settings=services.settings,
            suite=False,
        ),
    )
    assert synced == [alice.id]
    status = client.get("/v1/integrations/todoist", headers=alice.auth).json()
    assert status["status"] == "active" and status["last_synced_at"] is not None and status["last_error"] is None
    assert services.lake.read("todoist_tasks", where="user_id = ?", params=[alice.id]).num_rows == 3
    wired.revoke(wired.users[0])
    sync_users(
        [alice.id],
        engine=services.engine,
        lake=services.lake,
        vault=services.vault,
        settings=services.settings,
        suite=False,
    )
    status = client.get("/v1/integrations/todoist", headers=alice.auth).json()
    assert status["status"] == "needs_reauth" and status["last_error"]


def test_disconnect_revokes_at_todoist_and_deletes_the_token(
    client: TestClient, services: Services, wired: FakeTodoist, alice: Account, bob: Account
) -> None:
    oauth_connect(client, wired, alice, user_index=1)
    token = wired.users[1].token
    assert client.delete("/v1/integrations/todoist", headers=bob.auth).status_code == 404  # Bob has none
    r = client.delete("/v1/integrations/todoist", headers=alice.auth)
    assert r.status_code == 200 and r.json()["status"] == "revoked" and r.json()["revoked_at_provider"] is True
    assert token in wired.revoked
    with Session(services.engine) as s:
        assert s.execute(select(Integration.token_ciphertext)).scalar_one() is None
    assert client.delete("/v1/integrations/todoist", headers=alice.auth).status_code == 404


def webhook(client: TestClient, body: bytes, secret: SecretStr, delivery: str = "d-1"):  # type: ignore[no-untyped-def]
    headers = {"X-Todoist-Hmac-SHA256": sign(body, secret), "X-Todoist-Delivery-ID": delivery}
    return client.post("/v1/webhooks/todoist", content=body, headers=headers)


def test_the_webhook_requests_a_durable_sync(
    client: TestClient, services: Services, wired: FakeTodoist, alice: Account
) -> None:
    oauth_connect(client, wired, alice)
    run_requested_syncs(services.engine, lambda users: [])  # clear the connect request
    with Session(services.engine) as s:
        s.execute(select(Integration)).scalar_one().external_id = wired.users[0].todoist_id
        s.commit()
    secret = services.settings.todoist.client_secret
    body = json.dumps({"event_name": "item:added", "user_id": wired.users[0].todoist_id}).encode()
    assert webhook(client, body, SecretStr("forged")).status_code == 401
    assert requested_users(services.engine) == []
    r = webhook(client, body, secret)
    assert r.status_code == 200 and r.json() == {"accepted": True}
    # The request is a row in the app database: a new process (no in-memory bus) still finds it.
    assert requested_users(services.engine) == [alice.id]
    stranger = json.dumps({"event_name": "item:added", "user_id": "1"}).encode()
    assert webhook(client, stranger, secret, "d-2").json() == {"accepted": False}
    assert webhook(client, b"[1, 2", secret, "d-3").status_code == 400
    too_long = webhook(client, body, secret, "d" * 129)  # signed, but more than the table holds
    assert too_long.status_code == 422
    assert [e["loc"] for e in too_long.json()["errors"]] == [["header", "X-Todoist-Delivery-ID"]]
