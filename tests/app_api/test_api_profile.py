"""Profile: IANA timezones, quiet hours, tip kinds, channels; consents as a history."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from app_api.preferences import in_quiet_hours
from app_api.services import Services
from tests.app_api.conftest import Account, Clock

PROFILE = {
    "timezone": "America/New_York",
    "quiet_hours": {"start": "22:00", "end": "07:00"},
    "tip_kinds": ["todoist_task"],
    "channels": ["email", "webhook"],
    "webhook_url": "https://hooks.example.org/oo",
}


def test_a_new_user_has_defaults_and_no_consents(client: TestClient, alice: Account) -> None:
    assert client.get("/v1/me/profile", headers=alice.auth).json() == {
        "timezone": "UTC",
        "quiet_hours": None,
        "tip_kinds": [],
        "channels": [],
        "webhook_url": None,
    }
    consents = client.get("/v1/me/consents", headers=alice.auth).json()
    assert consents == {"current": {"llm_tips": False, "analytics": False, "notifications": False}, "history": []}


def test_profile_round_trips(client: TestClient, alice: Account) -> None:
    r = client.put("/v1/me/profile", json=PROFILE, headers=alice.auth)
    assert r.status_code == 200 and r.json() == PROFILE
    assert client.get("/v1/me/profile", headers=alice.auth).json() == PROFILE


@pytest.mark.parametrize(
    "change",
    [
        {"timezone": "Mars/Olympus_Mons"},
        {"timezone": "../../etc/passwd"},
        {"timezone": ""},
        {"quiet_hours": {"start": "25:00", "end": "07:00"}},
        {"tip_kinds": ["horoscope"]},
        {"channels": ["pigeon"]},
        {"channels": ["webhook"], "webhook_url": None},
        {"webhook_url": "not a url"},
        {"webhook_url": "https://hooks.example.org/" + "a" * 2030},  # fits HttpUrl, not the column
        {"webhook_url": "https://bücher.example/" + "a" * 2020},  # fits only before its punycode
        {"surprise": 1},
    ],
)
def test_bad_profiles_are_refused_and_change_nothing(client: TestClient, alice: Account, change: dict) -> None:
    client.put("/v1/me/profile", json=PROFILE, headers=alice.auth)
    r = client.put("/v1/me/profile", json=PROFILE | change, headers=alice.auth)
    assert r.status_code == 422, r.text
    assert client.get("/v1/me/profile", headers=alice.auth).json() == PROFILE


def test_the_longest_webhook_url_is_kept_whole(client: TestClient, alice: Account) -> None:
    longest = "https://hooks.example.org/" + "a" * (2048 - len("https://hooks.example.org/"))
    r = client.put("/v1/me/profile", json=PROFILE | {"webhook_url": longest}, headers=alice.auth)
    assert r.status_code == 200, r.text
    assert client.get("/v1/me/profile", headers=alice.auth).json()["webhook_url"] == longest


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("http://hooks.example.org/oo", 422),  # not https
        ("https://127.0.0.1/oo", 422),
        ("https://localhost:8443/oo", 422),
        ("https://[::1]/oo", 422),
        ("https://10.0.0.7/oo", 422),  # a private network
        ("https://169.254.169.254/latest/meta-data", 422),  # a cloud's metadata service
        ("https://hooks.example.org/oo", 200),
    ],
)
def test_outside_local_mode_a_webhook_must_be_https_and_public(
    client: TestClient, services: Services, alice: Account, url: str, status: int
) -> None:
    services.settings = services.settings.model_copy(update={"env": "staging"})
    r = client.put("/v1/me/profile", json=PROFILE | {"webhook_url": url}, headers=alice.auth)
    assert r.status_code == status, r.text
    if status == 422:
        assert r.json()["detail"] in ("webhook_url must be https", "webhook_url must reach a public address")


def test_consents_keep_their_history(client: TestClient, clock: Clock, alice: Account) -> None:
    given_at = clock.now
    client.post("/v1/me/consents", json={"purpose": "llm_tips", "granted": True}, headers=alice.auth)
    clock.advance(minutes=5)
    r = client.post("/v1/me/consents", json={"purpose": "llm_tips", "granted": False}, headers=alice.auth)
    body = r.json()
    assert body["current"]["llm_tips"] is False
    assert [(e["granted"], datetime.fromisoformat(e["at"])) for e in body["history"]] == [
        (True, given_at),
        (False, clock.now),
    ]


def test_one_users_profile_is_not_anothers(client: TestClient, alice: Account, bob: Account) -> None:
    client.put("/v1/me/profile", json=PROFILE, headers=alice.auth)
    client.post("/v1/me/consents", json={"purpose": "analytics", "granted": True}, headers=alice.auth)
    assert client.get("/v1/me/profile", headers=bob.auth).json()["timezone"] == "UTC"
    assert client.get("/v1/me/consents", headers=bob.auth).json()["history"] == []


@pytest.mark.parametrize(
    ("utc", "quiet"),
    [
        # New York, 22:00-07:00. Before the spring-forward change (2026-03-08, EST = UTC-5) ...
        (datetime(2026, 3, 7, 2, 30, tzinfo=UTC), False),  # 21:30 EST
        (datetime(2026, 3, 7, 3, 30, tzinfo=UTC), True),  # 22:30 EST
        (datetime(2026, 3, 7, 12, 30, tzinfo=UTC), False),  # 07:30 EST
        # ... and after it (EDT = UTC-4): the same UTC instants are an hour later locally.
        (datetime(2026, 3, 9, 2, 30, tzinfo=UTC), True),  # 22:30 EDT
        (datetime(2026, 3, 9, 11, 30, tzinfo=UTC), False),  # 07:30 EDT (06:30 EST would be quiet)
        (datetime(2026, 3, 7, 11, 30, tzinfo=UTC), True),  # 06:30 EST
    ],
)
def test_quiet_hours_follow_the_users_clock_across_dst(utc: datetime, quiet: bool) -> None:
    assert in_quiet_hours(utc, "America/New_York", "22:00", "07:00") is quiet
