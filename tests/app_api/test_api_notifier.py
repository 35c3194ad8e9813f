"""The notifier: due users get a tip by email (to a local aiosmtpd server) or webhook (to a local
receiver), within their quiet hours' rules in their own timezone across a DST change, never the
same tip twice within a day, every attempt recorded, failures retried with backoff, and the
decision activated only once delivered."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app_api.notifier import notify_once
from app_api.relay import relay_once
from app_api.services import Services
from app_api.tables import Delivery, Profile
from oo.fakes.serving import FakeServingServer
from tests.app_api.conftest import Account, Clock
from tests.receiver import PostReceiver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


class Receiver(PostReceiver):
    """A local webhook receiver that answers ``status`` and records the JSON bodies."""

    def __init__(self) -> None:
        super().__init__("/hook", json.loads)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def smtp_wired(services: Services, smtp: tuple[Inbox, int]) -> Inbox:
    inbox, port = smtp
    services.settings = services.settings.model_copy(
        update={"app": services.settings.app.model_copy(update={"smtp_port": port, "notify_every_hours": 1.0})}
    )
    return inbox


def opt_in(client: TestClient, account: Account, **profile: Any) -> None:
    body = {"channels": ["email"]} | profile
    assert client.put("/v1/me/profile", json=body, headers=account.auth).status_code == 200
    client.post("/v1/me/consents", json={"purpose": "notifications", "granted": True}, headers=account.auth)


def deliveries(services: Services) -> list[Delivery]:
    with Session(services.engine) as s:
        return list(s.execute(select(Delivery).order_by(Delivery.created_at)).scalars())


def test_email_reaches_the_smtp_server_and_activates_the_decision(
    client: TestClient,
    services: Services,
    smtp_wired: Inbox,
    fake_serving: FakeServingServer,
    alice: Account,
    bob: Account,
) -> None:
    opt_in(client, alice)
    client.put("/v1/me/profile", json={"channels": ["email"]}, headers=bob.auth)  # Bob never consented
    report = notify_once(services)
    assert (report.considered, report.sent, report.failed) == (1, 1, 0)
    [mail] = smtp_wired.messages
    [d] = deliveries(services)
    decision = fake_serving.world.decisions[d.decision_id]
    assert mail["To"] == alice.email and decision.chosen is not None and decision.chosen.content in mail.get_payload()
    assert decision.defer_activation is True and d.decision_id not in fake_serving.world.activated
    asyncio.run(relay_once(services))
    assert d.decision_id in fake_serving.world.activated  # learned from only now that it was delivered
    [row] = services.lake.read("deliveries").to_pylist()
    assert (row["user_id"], row["status"], row["attempt"], row["channel"]) == (alice.id, "sent", 1, "email")
    # The notified tip can be reacted to like any other.
    r = client.post("/v1/feedback", json={"decision_id": d.decision_id, "reaction": "done"}, headers=alice.auth)
    assert r.status_code == 202
    assert notify_once(services).considered == 0  # not due again within notify_every_hours


@pytest.fixture
def hooked(client: TestClient, receiver: Receiver, alice: Account) -> Receiver:
    """Alice opted in to notifications by webhook, to the local receiver (allowed in local mode)."""
    opt_in(client, alice, channels=["webhook"], webhook_url=receiver.url)
    return receiver


def test_webhook_failures_are_retried_with_backoff(
    services: Services, clock: Clock, hooked: Receiver, fake_serving: FakeServingServer
) -> None:
    receiver = hooked
    receiver.status = 500
    assert notify_once(services).failed == 1
    [d] = deliveries(services)
    assert d.status == "failed" and d.next_attempt_at is not None
    asyncio.run(relay_once(services))
    assert d.decision_id not in fake_serving.world.activated  # never delivered: never activated
    assert notify_once(services).retried == 0  # the backoff has not passed
    receiver.status = 204
    clock.advance(seconds=services.settings.app.notify_backoff_initial_s)
    report = notify_once(services)
    assert (report.retried, report.sent) == (1, 1)
    assert [b["decision_id"] for b in receiver.bodies] == [d.decision_id, d.decision_id]
    assert len({b["delivery_id"] for b in receiver.bodies}) == 1  # the same delivery, its idempotency key
    rows = sorted(services.lake.read("deliveries").to_pylist(), key=lambda r: r["attempt"])
    assert [(r["attempt"], r["status"]) for r in rows] == [(1, "failed"), (2, "sent")]
    asyncio.run(relay_once(services))
    assert d.decision_id in fake_serving.world.activated


@pytest.mark.parametrize(
    ("utc", "due"),
    [
        (datetime(2026, 3, 28, 5, 30, tzinfo=UTC), False),  # Saturday 06:30 CET: still quiet
        (datetime(2026, 3, 29, 5, 30, tzinfo=UTC), True),  # Sunday 07:30 CEST (clocks went forward): awake
        (datetime(2026, 10, 24, 5, 30, tzinfo=UTC), True),  # 07:30 CEST
        (datetime(2026, 10, 25, 5, 30, tzinfo=UTC), False),  # 06:30 CET (clocks went back): quiet again
        (datetime(2026, 3, 28, 20, 30, tzinfo=UTC), False),  # 21:30 CET, after quiet hours begin
    ],
)
def test_quiet_hours_in_the_users_timezone_across_dst(
    client: TestClient, services: Services, smtp_wired: Inbox, alice: Account, utc: datetime, due: bool
) -> None:
    opt_in(client, alice, timezone="Europe/Berlin", quiet_hours={"start": "21:00", "end": "07:00"})
    report = notify_once(services, now=utc)
    assert (report.considered, len(smtp_wired.messages)) == ((1, 1) if due else (0, 0))


def test_never_the_same_tip_twice_within_a_day(
    client: TestClient, services: Services, smtp_wired: Inbox, clock: Clock, alice: Account
) -> None:
    opt_in(client, alice)
    sent: list[str] = []
    for _ in range(4):  # the fake has three tasks for each user
        notify_once(services)
        clock.advance(hours=1, minutes=1)
    sent = [d.candidate_id for d in deliveries(services)]
    assert len(sent) == 3 and len(set(sent)) == 3  # the fourth hour had nothing new to send
    clock.advance(days=1)
    assert notify_once(services).sent == 1  # a day later a tip may come back


def test_serving_down_sends_nothing_and_the_user_stays_due(
    client: TestClient, services: Services, smtp_wired: Inbox, fake_serving: FakeServingServer, alice: Account
) -> None:
    opt_in(client, alice)
    fake_serving.stop()
    try:
        assert notify_once(services).decisions == 0
    finally:
        fake_serving.start()
    assert deliveries(services) == [] and smtp_wired.messages == []
    assert notify_once(services).sent == 1


def test_an_unreachable_smtp_server_is_a_failed_attempt(client: TestClient, services: Services, alice: Account) -> None:
    services.settings = services.settings.model_copy(
        update={"app": services.settings.app.model_copy(update={"smtp_port": free_port(), "smtp_timeout_s": 2.0})}
    )
    opt_in(client, alice)
    assert notify_once(services).failed == 1
    [d] = deliveries(services)
    assert d.status == "failed" and "smtp" in (d.error or "") and d.next_attempt_at is not None


def test_outside_local_mode_a_webhook_on_this_network_is_never_called(
    services: Services, clock: Clock, hooked: Receiver, fake_serving: FakeServingServer
) -> None:
    receiver = hooked
    services.settings = services.settings.model_copy(update={"env": "staging"})
    assert notify_once(services).failed == 1
    [d] = deliveries(services)
    assert d.status == "failed" and d.error == "webhook: webhook_url must be https; not sent"  # http://127.0.0.1
    with Session(services.engine) as s:
        https = receiver.url.replace("http://", "https://")  # the same address over https
        s.execute(update(Profile).values(webhook_url=https))
        s.commit()
    clock.advance(seconds=services.settings.app.notify_backoff_initial_s)
    assert notify_once(services).retried == 1
    assert deliveries(services)[0].error == "webhook: webhook_url must reach a public address; not sent"
    assert receiver.bodies == []  # not even a connection's worth of the user's tip
