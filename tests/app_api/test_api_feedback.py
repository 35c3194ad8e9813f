"""POST /v1/feedback: the reaction and its outbox messages in one transaction; the relay delivers
them to serving and the bus until acknowledged, exactly once downstream; only the decision's user
may react."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app_api import relay as relay_module
from app_api.main import create_app
from app_api.relay import relay_once
from app_api.services import Services
from app_api.tables import OutboxMessage, Reaction
from data_contracts import ReactionEvent, Record
from oo.bus import InProcessBus
from oo.fakes.serving import FakeServingServer
from tests.app_api.conftest import Account, Clock


def a_tip(client: TestClient, account: Account) -> str:
    r = client.get("/v1/tips/next", headers=account.auth)
    assert r.status_code == 200 and r.json()["tip"] is not None, r.text
    return str(r.json()["decision_id"])


def react(client: TestClient, account: Account, decision_id: str, reaction: str = "done", **headers: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/feedback", json={"decision_id": decision_id, "reaction": reaction}, headers=account.auth | headers
    )


def relay(services: Services) -> Any:
    return asyncio.run(relay_once(services))


def bus_reactions(bus: InProcessBus) -> list[ReactionEvent]:
    got: list[ReactionEvent] = []

    async def handle(e: ReactionEvent) -> None:
        got.append(e)

    asyncio.run(bus.consume("reactions", ReactionEvent, handle, consumer=f"test-{uuid.uuid4()}", idle_timeout=0.05))
    return got


def pending(services: Services) -> int:
    with Session(services.engine) as s:
        return s.execute(select(func.count()).where(OutboxMessage.status == "pending")).scalar_one()


def test_feedback_is_recorded_and_relayed(
    client: TestClient, services: Services, fake_serving: FakeServingServer, alice: Account
) -> None:
    decision = a_tip(client, alice)
    r = react(client, alice, decision)
    assert r.status_code == 202 and r.json()["status"] == "accepted"
    assert pending(services) == 2  # serving's reward and the bus, written with the reaction
    report = relay(services)
    assert (report.delivered, report.retried, report.dead) == (2, 0, 0)
    [reward] = fake_serving.world.accepted_rewards(decision)
    assert (reward.user_id, reward.reaction.value, str(reward.reaction_id)) == (
        alice.id,
        "done",
        r.json()["reaction_id"],
    )
    assert isinstance(services.bus, InProcessBus)
    [event] = bus_reactions(services.bus)
    assert (str(event.decision_id), str(event.event_id)) == (decision, r.json()["reaction_id"])


def test_the_same_reaction_twice_is_one_reaction(client: TestClient, services: Services, alice: Account) -> None:
    decision = a_tip(client, alice)
    first, again = react(client, alice, decision), react(client, alice, decision)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json() | {"status": "duplicate"}
    key = str(uuid.uuid4())
    assert react(client, alice, decision, "snooze", **{"Idempotency-Key": key}).json()["status"] == "accepted"
    assert react(client, alice, decision, "snooze", **{"Idempotency-Key": key}).json()["status"] == "duplicate"
    clash = react(client, alice, decision, "dismiss", **{"Idempotency-Key": key})
    assert clash.status_code == 409 and clash.headers["content-type"] == "application/problem+json"
    with Session(services.engine) as s:
        assert s.execute(select(func.count()).select_from(Reaction)).scalar_one() == 2
        assert s.execute(select(func.count()).select_from(OutboxMessage)).scalar_one() == 4


def test_a_database_failure_midway_writes_nothing_and_the_retry_is_recorded_once(
    client: TestClient, services: Services, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    decision = a_tip(client, alice)
    enqueue = relay_module.enqueue
    calls: list[str] = []

    def fails_on_the_second(conn: Any, kind: str, *args: Any) -> None:
        calls.append(kind)
        if len(calls) == 2:  # after the reaction and serving's message: the bus's message fails
            raise OperationalError("INSERT INTO outbox", {}, Exception("disk I/O error"))
        enqueue(conn, kind, *args)

    monkeypatch.setattr(relay_module, "enqueue", fails_on_the_second)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    r = react(client, alice, decision, **key)
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.headers["content-type"] == "application/problem+json" and "disk" not in r.text
    with Session(services.engine) as s:  # the transaction rolled back whole
        assert s.execute(select(func.count()).select_from(Reaction)).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(OutboxMessage)).scalar_one() == 0

    monkeypatch.setattr(relay_module, "enqueue", enqueue)
    again = react(client, alice, decision, **key)  # the client's retry, with the same key
    assert again.status_code == 202 and again.json()["status"] == "accepted"
    with Session(services.engine) as s:
        assert s.execute(select(func.count()).select_from(Reaction)).scalar_one() == 1
        assert s.execute(select(func.count()).select_from(OutboxMessage)).scalar_one() == 2


def test_only_the_decisions_user_may_react(
    client: TestClient, services: Services, alice: Account, bob: Account
) -> None:
    decision = a_tip(client, alice)
    assert react(client, bob, decision).status_code == 404
    assert react(client, alice, str(uuid.uuid4())).status_code == 404
    assert react(client, alice, "not-a-uuid").status_code == 422
    assert react(client, alice, decision, "love").status_code == 422
    assert react(client, alice, decision, **{"Idempotency-Key": "nope"}).status_code == 422
    assert pending(services) == 0


def test_serving_down_then_back_delivers_exactly_once(
    client: TestClient, services: Services, clock: Clock, fake_serving: FakeServingServer, alice: Account
) -> None:
    decision = a_tip(client, alice)
    fake_serving.stop()
    try:
        assert react(client, alice, decision).status_code == 202  # accepted while serving is down
        report = relay(services)
        assert (report.delivered, report.retried) == (1, 1)  # the bus took its copy; serving did not
        assert relay(services).retried == 0  # not due before its backoff
    finally:
        fake_serving.start()
    assert relay(services).delivered == 0
    clock.advance(seconds=services.settings.app.relay_backoff_initial_s)
    assert relay(services).delivered == 1
    assert relay(services).delivered == 0
    assert len(fake_serving.world.accepted_rewards(decision)) == 1
    # A relay that crashed after serving acknowledged, before marking: the message goes again,
    # and serving counts it once (the reaction id is the idempotency key).
    with Session(services.engine) as s:
        s.execute(update(OutboxMessage).values(status="pending"))
        s.commit()
    assert relay(services).delivered == 2
    assert len(fake_serving.world.accepted_rewards(decision)) == 1
    assert isinstance(services.bus, InProcessBus)
    assert len(services.bus._log["reactions"]) == 2  # published twice ...
    assert len(bus_reactions(services.bus)) == 1  # ... and consumed once: consumers dedupe on the event id


def test_an_outage_costs_the_waiting_messages_no_attempts(
    client: TestClient, services: Services, clock: Clock, fake_serving: FakeServingServer, alice: Account
) -> None:
    """While serving is down a pass sends it one message (at concurrency 1), not every due one:
    the rest stay due with no attempt spent, and go in the first pass after serving is back."""
    services.settings.app.relay_concurrency = 1
    decisions = [a_tip(client, alice) for _ in range(5)]
    fake_serving.stop()
    try:
        for d in decisions:
            assert react(client, alice, d).status_code == 202
        report = relay(services)
        assert (report.retried, report.skipped, report.delivered) == (1, 4, 5)  # the bus took all five
    finally:
        fake_serving.start()
    with Session(services.engine) as s:
        rewards = s.execute(select(OutboxMessage).where(OutboxMessage.destination == "serving.reward")).scalars().all()
        assert sorted(r.attempts for r in rewards) == [0, 0, 0, 0, 1]
    assert relay(services).delivered == 4  # at once, no backoff for the untried four
    clock.advance(seconds=services.settings.app.relay_backoff_initial_s)
    assert relay(services).delivered == 1
    assert sorted(len(fake_serving.world.accepted_rewards(d)) for d in decisions) == [1] * 5


def test_a_batch_is_sent_concurrently_within_the_bound(
    client: TestClient, services: Services, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    services.settings.app.relay_concurrency = 3
    in_flight, most = 0, 0

    async def slow(_services: Services, _payload: str, _serving: object) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1

    for destination in (relay_module.SERVING_REWARD, relay_module.BUS_REACTIONS):
        monkeypatch.setitem(relay_module.SENDERS, destination, slow)
    for _ in range(4):
        react(client, alice, a_tip(client, alice))
    assert relay(services).delivered == 8 and pending(services) == 0
    assert most == 3


class DownBus(InProcessBus):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def publish(self, topic: str, record: Record) -> None:
        if self.down:
            raise ConnectionError("nats: no servers available")
        await super().publish(topic, record)


def test_bus_down_is_retried_with_backoff(
    client: TestClient, services: Services, clock: Clock, fake_serving: FakeServingServer, alice: Account
) -> None:
    bus = DownBus()
    services.bus = bus
    decision = a_tip(client, alice)
    react(client, alice, decision)
    assert (relay(services).delivered, pending(services)) == (1, 1)
    clock.advance(seconds=1)
    assert relay(services).retried == 1  # attempt 2 fails too; the next wait doubles
    clock.advance(seconds=1)
    assert relay(services).retried == 0
    bus.down = False
    clock.advance(seconds=1)
    assert relay(services).delivered == 1 and pending(services) == 0
    with Session(services.engine) as s:
        row = s.execute(select(OutboxMessage).where(OutboxMessage.destination == "bus.reactions")).scalar_one()
        assert (row.attempts, row.status, row.last_error) == (3, "delivered", None)


@pytest.mark.integration
def test_nats_down_then_back_delivers_each_reaction_once(
    client: TestClient, services: Services, clock: Clock, fake_serving: FakeServingServer, alice: Account, nats_url: str
) -> None:
    from oo.bus import DbDeduplicator, NatsBus
    from tests.serving.conftest import free_port

    tag = uuid.uuid4().hex[:8]

    def nats(url: str) -> NatsBus:
        return NatsBus(url, DbDeduplicator(services.engine), stream=f"R{tag}", prefix=f"r{tag}")

    decision = a_tip(client, alice)
    reaction_id = react(client, alice, decision).json()["reaction_id"]

    async def scenario() -> tuple[Any, Any, Any, list[ReactionEvent]]:
        services.bus = nats(f"nats://127.0.0.1:{free_port()}")  # no server there: NATS is down
        try:
            down = await relay_once(services)
        finally:
            await services.bus.close()
        services.bus = nats(nats_url)  # back
        got: list[ReactionEvent] = []

        async def handle(e: ReactionEvent) -> None:
            got.append(e)

        try:
            clock.advance(seconds=1)
            back = await relay_once(services)
            clock.advance(seconds=60)
            after = await relay_once(services)
            await services.bus.consume("reactions", ReactionEvent, handle, consumer=f"t{tag}", idle_timeout=0.5)
        finally:
            js = await services.bus._jetstream()
            for name in (f"R{tag}", f"R{tag}_DLQ"):
                await js.delete_stream(name)
            await services.bus.close()
        return down, back, after, got

    down, back, after, got = asyncio.run(scenario())
    assert (down.delivered, down.retried) == (1, 1)  # serving's reward went out; the bus's waits
    assert (back.delivered, after.delivered) == (1, 0) and pending(services) == 0
    assert [str(e.event_id) for e in got] == [reaction_id]  # on the stream once, with its key
    with Session(services.engine) as s:
        row = s.execute(select(OutboxMessage).where(OutboxMessage.destination == "bus.reactions")).scalar_one()
        assert (row.attempts, row.status) == (2, "delivered")


def test_a_refused_message_is_dead_not_retried(
    client: TestClient, services: Services, fake_serving: FakeServingServer, alice: Account
) -> None:
    decision = a_tip(client, alice)
    fake_serving.world.forget(alice.id)  # serving lost the decision: it answers 404
    react(client, alice, decision)
    report = relay(services)
    assert (report.delivered, report.dead) == (1, 1)
    with Session(services.engine) as s:
        dead = s.execute(select(OutboxMessage).where(OutboxMessage.status == "dead")).scalar_one()
        assert dead.destination == "serving.reward" and "404" in (dead.last_error or "")


@pytest.mark.slow
def test_the_worker_in_the_app_delivers(
    services: Services, fake_serving: FakeServingServer, make_settings: Any, clock: Clock
) -> None:
    services.settings = make_settings(run_workers=True, relay_interval_s=0.05)
    with TestClient(create_app(services)) as c:
        from tests.app_api.conftest import register

        alice = register(c, "alice@example.org")
        decision = a_tip(c, alice)
        react(c, alice, decision)
        deadline = time.monotonic() + 10
        while pending(services) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert pending(services) == 0 and len(fake_serving.world.accepted_rewards(decision)) == 1
