"""GET /v1/tips/next: a decision from serving, within the user's consents, kinds and quiet hours."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anyio.to_thread
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app_api.services import Services
from app_api.tables import ServedDecision
from data_contracts.serving import RankRequest
from oo.fakes.serving import FakeServingServer
from oo.serving_client import AsyncServingClient, unwrap_body
from tests.app_api.conftest import Account, Clock


def kinds_ranked(fake: FakeServingServer, decision_id: str) -> set[str]:
    return {c.kind.value for c in fake.world.decisions[decision_id].ranking}


def test_a_tip_comes_with_its_decision_id(
    client: TestClient, services: Services, fake_serving: FakeServingServer, alice: Account
) -> None:
    r = client.get("/v1/tips/next", headers=alice.auth)
    assert r.status_code == 200
    body = r.json()
    decision = fake_serving.world.decisions[body["decision_id"]]
    assert decision.user_id == alice.id and body["tip"]["candidate_id"] == decision.reward_action_id
    with Session(services.engine) as s:
        served = s.get(ServedDecision, body["decision_id"])
        assert served is not None and served.user_id == alice.id and served.via == "api"


def test_on_sqlite_the_served_decision_skips_the_fsync_and_reactions_keep_it(services: Services) -> None:
    """A served decision is an index of what serving logged durably: its commit skips the fsync
    (``synchronous=NORMAL``, WAL); reactions and the outbox are the record: ``FULL``."""
    if services.engine.dialect.name != "sqlite":
        assert services.index_writes is services.engine
        return
    with services.index_writes.connect() as index, services.engine.connect() as record:
        assert index.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert record.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert index.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_no_llm_tips_without_consent(client: TestClient, fake_serving: FakeServingServer, alice: Account) -> None:
    before = client.get("/v1/tips/next", headers=alice.auth).json()
    assert kinds_ranked(fake_serving, before["decision_id"]) == {"todoist_task"}
    client.post("/v1/me/consents", json={"purpose": "llm_tips", "granted": True}, headers=alice.auth)
    given = client.get("/v1/tips/next", headers=alice.auth).json()
    assert kinds_ranked(fake_serving, given["decision_id"]) == {"todoist_task", "llm_tip"}
    client.post("/v1/me/consents", json={"purpose": "llm_tips", "granted": False}, headers=alice.auth)
    withdrawn = client.get("/v1/tips/next", headers=alice.auth).json()
    assert kinds_ranked(fake_serving, withdrawn["decision_id"]) == {"todoist_task"}


def test_preferred_kinds_limit_the_candidates(client: TestClient, alice: Account) -> None:
    client.put("/v1/me/profile", json={"tip_kinds": ["llm_tip"]}, headers=alice.auth)
    # LLM tips only, but no consent to them: nothing to suggest, and serving is told so.
    r = client.get("/v1/tips/next", headers=alice.auth).json()
    assert r["tip"] is None and r["reason"] == "no_candidates"
    client.post("/v1/me/consents", json={"purpose": "llm_tips", "granted": True}, headers=alice.auth)
    assert client.get("/v1/tips/next", headers=alice.auth).json()["tip"]["kind"] == "llm_tip"


def test_quiet_hours_in_the_users_timezone(
    client: TestClient, clock: Clock, fake_serving: FakeServingServer, alice: Account
) -> None:
    # The clock says 12:00 UTC = 21:00 in Tokyo: inside Alice's 20:00-08:00 quiet hours.
    profile = {"timezone": "Asia/Tokyo", "quiet_hours": {"start": "20:00", "end": "08:00"}}
    client.put("/v1/me/profile", json=profile, headers=alice.auth)
    calls = fake_serving.world.calls.get("rank", 0)
    r = client.get("/v1/tips/next", headers=alice.auth).json()
    assert r == {"decision_id": None, "tip": None, "reason": "quiet_hours"}
    assert fake_serving.world.calls.get("rank", 0) == calls  # serving was not asked
    clock.advance(hours=11)  # 08:00 in Tokyo
    alice.renew(client)
    assert client.get("/v1/tips/next", headers=alice.auth).json()["tip"] is not None


def test_serving_down_is_a_503_problem(client: TestClient, fake_serving: FakeServingServer, alice: Account) -> None:
    fake_serving.stop()
    try:
        r = client.get("/v1/tips/next", headers=alice.auth)
    finally:
        fake_serving.start()
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == "5"
    assert client.get("/v1/tips/next", headers=alice.auth).status_code == 200


def test_tips_need_a_user(client: TestClient) -> None:
    assert client.get("/v1/tips/next").status_code == 401


def test_tip_requests_waiting_for_serving_hold_no_worker_thread(
    client: TestClient, services: Services, fake_serving: FakeServingServer, alice: Account
) -> None:
    """With two worker threads in the app, six tip requests all reach a stalled serving at once,
    and the app still answers what needs a thread (its health check) while they wait."""
    waiting = 0
    release = threading.Event()

    async def stalled(request: Request) -> Response:
        nonlocal waiting
        waiting += 1
        for _ in range(2000):  # bounded: 10 s at most
            if release.is_set():
                break
            await asyncio.sleep(0.005)
        body = RankRequest.model_validate(unwrap_body("rank", await request.json()))
        return Response(fake_serving.world.rank(body).model_dump_json(), media_type="application/json")

    async def two_threads() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2

    async def stalled_client(url: str) -> AsyncServingClient:  # made on the app's loop, which uses it
        return AsyncServingClient(url)

    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/rank", stalled, methods=["POST"])]), port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started:
            break
        time.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    assert client.portal is not None
    client.portal.call(two_threads)
    services.serving_async = client.portal.call(stalled_client, url)
    try:
        with ThreadPoolExecutor(6) as pool:
            tips = [pool.submit(client.get, "/v1/tips/next", headers=alice.auth) for _ in range(6)]
            for _ in range(1000):
                if waiting == 6:
                    break
                time.sleep(0.01)
            assert waiting == 6  # every request is at serving: none is parked in a worker thread
            assert client.get("/healthz").status_code == 200
            release.set()
            assert [t.result().status_code for t in tips] == [200] * 6
    finally:
        release.set()
        client.portal.call(services.serving_async.aclose)
        server.should_exit = True
        thread.join(timeout=10)
