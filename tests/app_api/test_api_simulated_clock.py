"""The simulated clock of `oo simulate`: the request's time from ``X-OO-Simulated-Time`` only
when ``OO_APP__SIMULATED_CLOCK`` is on; serving is then told the decision's time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app_api.main import create_app
from app_api.services import build
from app_api.tables import OutboxMessage, Reaction
from oo.bus import InProcessBus
from oo.fakes.serving import FakeServingServer
from oo.settings import Settings
from tests.app_api.conftest import Clock, empty, register

LATER = datetime(2031, 6, 1, 9, 30, tzinfo=UTC)
HEADER = "X-OO-Simulated-Time"


@pytest.fixture
def simulated(
    make_settings: Callable[..., Settings], clock: Clock, fake_serving: FakeServingServer
) -> Iterator[tuple[TestClient, Any]]:
    services = build(make_settings(simulated_clock=True), bus=InProcessBus())
    services.clock = clock
    empty(services.engine)
    fake_serving.world.reset()
    with TestClient(create_app(services), raise_server_exceptions=False) as client:
        yield client, services
    services.close()


def test_with_the_setting_the_header_is_the_requests_time_everywhere(
    simulated: tuple[TestClient, Any], clock: Clock, fake_serving: FakeServingServer
) -> None:
    client, services = simulated
    at = {HEADER: LATER.isoformat()}
    r = client.post("/v1/auth/register", json={"email": "sim@example.org", "password": "a-long-password-1"}, headers=at)
    assert r.status_code == 201, r.text
    auth = {"Authorization": f"Bearer {r.json()['access_token']}", **at}
    # a token issued at the simulated time is not valid at the wall clock's (issued in the future)
    assert client.get("/v1/tips/next", headers={"Authorization": auth["Authorization"]}).status_code == 401
    tip = client.get("/v1/tips/next", headers=auth).json()
    assert fake_serving.world.decisions[tip["decision_id"]].decided_at == LATER  # serving was told the time
    reacted = {**auth, HEADER: (LATER + timedelta(minutes=4)).isoformat()}
    body = {"decision_id": tip["decision_id"], "reaction": "done"}
    assert client.post("/v1/feedback", json=body, headers=reacted).status_code == 202
    with Session(services.engine) as s:
        reaction = s.query(Reaction).one()
        assert reaction.occurred_at.replace(tzinfo=UTC) == LATER + timedelta(minutes=4)
        # the outbox is scheduled on the wall clock, so the relay delivers it now, not in 2031
        due = {m.next_attempt_at.replace(tzinfo=UTC) for m in s.query(OutboxMessage).all()}
        assert due == {clock()}


def test_a_malformed_or_naive_time_is_refused(simulated: tuple[TestClient, Any]) -> None:
    client, _ = simulated
    for bad in ("next tuesday", "2031-06-01T09:30:00"):
        r = client.post("/v1/auth/register", json={"email": "x@example.org", "password": "a-long-password-1"},
                        headers={HEADER: bad})  # fmt: skip
        assert r.status_code == 400 and HEADER in r.text


def test_without_the_setting_the_header_is_ignored(
    client: TestClient, clock: Clock, fake_serving: FakeServingServer
) -> None:
    alice = register(client, "alice@example.org")
    tip = client.get("/v1/tips/next", headers={**alice.auth, HEADER: LATER.isoformat()}).json()
    assert fake_serving.world.decisions[tip["decision_id"]].decided_at != LATER
    assert client.get("/v1/tips/next", headers={**alice.auth, HEADER: "garbage"}).status_code == 200


def test_the_setting_is_refused_outside_local() -> None:
    with pytest.raises(ValueError, match="local only"):
        Settings(env="staging", app={"simulated_clock": True})
    with pytest.raises(ValueError, match="local only"):
        Settings(env="staging", serving={"simulated_clock": True})
