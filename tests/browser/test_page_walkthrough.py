"""The end-user page, driven in headless Chromium against the real app API.

The app runs under uvicorn on a free loopback port, on a temporary SQLite database, var dir and
lake, with its outbox relay running; serving is the stand-in (:mod:`oo.fakes.serving`) and
Todoist the fake (:mod:`oo.fakes.todoist`). Each step of the walkthrough (sign up, connect
Todoist, get tips and react, quiet hours, a consent, export, delete) is checked on the page and
in the app's database, serving's state or the API behind it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app_api.main import create_app
from app_api.page import PAGE_CSP
from app_api.services import Services, build
from app_api.tables import Consent, Profile, Reaction, RefreshToken, ServedDecision
from oo.fakes.serving import FakeServingServer
from oo.fakes.todoist import FakeTodoist, serve_in_thread
from oo.settings import (
    AppSettings,
    DBSettings,
    FeastSettings,
    LakeSettings,
    PathsSettings,
    Settings,
    TodoistSettings,
    VaultSettings,
)
from oo.tables import Integration, User

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
WAIT_S = 15.0


class ShiftedClock:
    """The app's clock: the wall clock plus an offset the test moves (to expire access tokens)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Platform:
    """The running app and what stands behind it."""

    url: str
    services: Services
    serving: FakeServingServer
    todoist: FakeTodoist
    clock: ShiftedClock

    def session(self) -> Session:
        return Session(self.services.engine, expire_on_commit=False)


def poll(what: str, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """``check()``'s first truthy value, polled under a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    import uvicorn

    todoist = FakeTodoist.seeded(seed=12, users=2, tasks_per_user=5)
    serving = FakeServingServer()
    serving.start()
    with serve_in_thread(todoist) as todoist_api:
        origin = todoist_api.removesuffix("api/v1/")
        settings = Settings(
            paths=PathsSettings(var_dir=tmp_path / "var"),
            feast=FeastSettings(project=f"t_{uuid.uuid4().hex[:10]}"),
            db=DBSettings(url=f"sqlite:///{tmp_path / 'app.db'}"),
            lake=LakeSettings(root=tmp_path / "lake"),
            vault=VaultSettings(keys=[SecretStr(Fernet.generate_key().decode())]),
            todoist=TodoistSettings(base_url=todoist_api),
            app=AppSettings(
                serving_url=serving.url,
                run_workers=True,
                relay_interval_s=0.2,
                todoist_token_url=f"{origin}oauth/access_token",
                todoist_revoke_url=f"{origin}api/v1/access_tokens",
            ),
        )
        services = build(settings)
        clock = ShiftedClock()
        services.clock = clock
        server = uvicorn.Server(
            uvicorn.Config(create_app(services), host="127.0.0.1", port=0, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, name="app-api", daemon=True)
        thread.start()
        try:
            poll("the app API to start", lambda: server.started or not thread.is_alive())
            assert thread.is_alive(), "the app API did not start"
            port = server.servers[0].sockets[0].getsockname()[1]
            yield Platform(f"http://127.0.0.1:{port}", services, serving, todoist, clock)
        finally:
            server.should_exit = True
            thread.join(timeout=WAIT_S)
            services.close()
            serving.stop()


@pytest.fixture
def watched(page: Any) -> Iterator[tuple[Any, list[str]]]:
    """The page, and every console error or page error it shows (a CSP violation is one)."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    yield page, problems


def sign_up(page: Any, email: str, password: str = PASSWORD) -> None:
    form = page.locator("#signup-form")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Create account").click()


def shown_tip(page: Any) -> tuple[str, str]:
    """Asks for a tip; the decision id and the text the page shows."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="Get a tip").click()
    expect(page.locator("#tip")).not_to_have_attribute("data-decision-id", "")
    expect(page.get_by_role("button", name="Done")).to_be_enabled()
    return page.locator("#tip").get_attribute("data-decision-id"), page.locator("#tip-text").inner_text()


def test_the_walkthrough_in_a_real_browser(watched: tuple[Any, list[str]], platform: Platform) -> None:
    from playwright.sync_api import expect

    page, problems = watched
    email = "ada@example.org"

    # The page: HTML with its own policy; its script ran (so the CSP let it).
    response = page.goto(platform.url + "/")
    assert response.status == 200
    assert response.headers["content-security-policy"] == PAGE_CSP
    expect(page).to_have_title("oO: your next step")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")

    # Sign up: the account exists, and no token is kept where another script or a reload finds it.
    sign_up(page, email)
    expect(page.locator("#account-email")).to_have_text(email)
    expect(page.locator("#status")).to_have_text("Welcome! Your account is ready.")
    with platform.session() as s:
        user = s.execute(select(User).where(User.email == email)).scalar_one()
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert page.context.cookies() == []
    expect(page.locator("#todoist-status")).to_have_text("not connected")

    # Connect Todoist with a fake user's personal token; a sync with it reaches the fake.
    fake_user = platform.todoist.users[0]
    page.get_by_label("Personal API token (local mode)").fill(fake_user.token)
    page.get_by_role("button", name="Connect Todoist").click()
    expect(page.locator("#todoist-status")).to_have_text("connected")
    expect(page.get_by_role("button", name="Disconnect Todoist")).to_be_visible()
    with platform.session() as s:
        integration = s.execute(select(Integration).where(Integration.user_id == user.id)).scalar_one()
    assert integration.status == "active"
    assert platform.services.vault.decrypt(integration.token_ciphertext).get_secret_value() == fake_user.token
    from oo.integrations.todoist.sync import sync_user

    before = fake_user.requests
    result = sync_user(
        user.id,
        engine=platform.services.engine,
        lake=platform.services.lake,
        vault=platform.services.vault,
        settings=platform.services.settings,
    )
    assert result.status == "ok", result
    assert fake_user.requests > before

    # Tips and the three reactions: each recorded, and delivered to serving by the relay.
    reacted: dict[str, str] = {}
    for reaction, button, words in (
        ("done", "Done", "Marked as done."),
        ("snooze", "Snooze", "Snoozed."),
        ("dismiss", "Dismiss", "Dismissed."),
    ):
        decision_id, text = shown_tip(page)
        with platform.session() as s:
            served = s.get(ServedDecision, decision_id)
        assert served is not None and served.user_id == user.id and served.content == text
        page.get_by_role("button", name=button).click()
        expect(page.locator("#status")).to_contain_text(words)
        expect(page.get_by_role("button", name=button)).to_be_disabled()
        expect(page.locator("#tip")).to_have_attribute("data-reaction", reaction)
        reacted[decision_id] = reaction
        poll(
            f"the {reaction} reward to reach serving", lambda d=decision_id: platform.serving.world.accepted_rewards(d)
        )
    with platform.session() as s:
        rows = s.execute(select(Reaction.decision_id, Reaction.reaction).where(Reaction.user_id == user.id)).all()
    assert dict(rows) == reacted
    assert {str(r.event_id): r.reaction.value for r in platform.serving.world.rewards.values()} == reacted

    # Quiet hours around now: saved on the profile, and the next tip is withheld.
    now = datetime.now(UTC)
    start, end = (now - timedelta(hours=1)).strftime("%H:%M"), (now + timedelta(hours=1)).strftime("%H:%M")
    form = page.locator("#profile-form")
    expect(form.get_by_label("Time zone")).not_to_have_value("")  # the profile has loaded
    form.get_by_label("Time zone").fill("UTC")
    form.get_by_label("No tips from").fill(start)
    form.get_by_label("until").fill(end)
    form.get_by_role("button", name="Save quiet hours").click()
    expect(page.locator("#status")).to_have_text(f"Quiet hours saved: {start} to {end}.")
    with platform.session() as s:
        profile = s.get(Profile, user.id)
    assert profile is not None and (profile.quiet_start, profile.quiet_end) == (start, end)
    page.get_by_role("button", name="Get a tip").click()
    expect(page.locator("#tip-text")).to_have_text("It is quiet hours: no tips until they end.")
    for button in ("Done", "Snooze", "Dismiss"):
        expect(page.get_by_role("button", name=button)).to_be_disabled()

    # A consent: recorded with its time, and what the API reports.
    page.get_by_label("Tips written by a language model").check()
    expect(page.locator("#status")).to_contain_text("Consent given")
    with platform.session() as s:
        consents = s.execute(select(Consent.purpose, Consent.granted).where(Consent.user_id == user.id)).all()
    assert consents == [("llm_tips", True)]
    expect(page.get_by_label("Analytics to improve the tips")).not_to_be_checked()

    # Export: a JSON file holding what the app keeps about the user, and no token.
    with page.expect_download(timeout=WAIT_S * 1000) as download_info:
        page.get_by_role("button", name="Export my data (JSON)").click()
    download = download_info.value
    assert download.suggested_filename == "oo-export.json"
    raw = Path(download.path()).read_text()
    exported = json.loads(raw)
    assert fake_user.token not in raw
    app_part = exported["app"]
    assert app_part["user"]["email"] == email
    assert {r["decision_id"] for r in app_part["reactions"]} == set(reacted)
    assert [(c["purpose"], c["granted"]) for c in app_part["consents"]] == [("llm_tips", True)]
    assert app_part["integrations"][0]["token_stored"] is True
    tasks = exported["lake"]["todoist_tasks"]
    assert tasks and {t["user_id"] for t in tasks} == {user.id}  # what the sync brought in
    assert {d["event_id"] for d in exported["serving"]["decisions"]} >= set(reacted)
    expect(page.locator("#status")).to_have_text("Your data was exported to oo-export.json.")

    # Delete: two steps; then the account is gone here and in serving, and cannot sign in.
    page.get_by_role("button", name="Delete my account").click()
    page.get_by_role("button", name="Yes, delete everything").click()
    expect(page.locator("#signed-out")).to_be_visible()
    expect(page.locator("#status")).to_have_text("Your account and everything oO held about you were deleted.")
    with platform.session() as s:
        assert s.get(User, user.id) is None
        for table in (Reaction, ServedDecision, Consent, Integration, RefreshToken):
            assert s.execute(select(func.count()).where(table.user_id == user.id)).scalar_one() == 0, table
    assert platform.serving.world.held(user.id) == {"decisions": [], "rewards": []}
    login = httpx.post(f"{platform.url}/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=WAIT_S)
    assert login.status_code == 401

    assert problems == []


def test_an_expired_access_token_is_renewed_once_and_the_request_goes_through(
    watched: tuple[Any, list[str]], platform: Platform
) -> None:
    from playwright.sync_api import expect

    page, problems = watched
    # Signed up in the app's past, so the access token has expired by now. (Not the other way
    # round: PyJWT checks ``iat`` against the wall clock, so tokens must not be issued in the future.)
    ttl = platform.services.settings.auth.access_ttl_s
    platform.clock.offset = -timedelta(seconds=ttl + 60)
    page.goto(platform.url + "/")
    sign_up(page, "grace@example.org")
    expect(page.locator("#account-email")).to_have_text("grace@example.org")
    with platform.session() as s:
        user_id = s.execute(select(User.id).where(User.email == "grace@example.org")).scalar_one()

    platform.clock.offset = timedelta(0)
    decision_id, _ = shown_tip(page)  # answered 401 first, then renewed and retried

    with platform.session() as s:
        tokens = s.execute(select(RefreshToken).where(RefreshToken.user_id == user_id)).scalars().all()
        assert s.get(ServedDecision, decision_id) is not None
    assert len(tokens) == 2 and sum(t.used_at is not None for t in tokens) == 1  # rotated exactly once
    # The expired token is refused (401) on whichever requests the page sends before it renews it
    # (tips/next, or the profile and integrations it loads after sign-up, depending on timing);
    # nothing else goes wrong, and the renewal above happened exactly once.
    refused = "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    assert problems, "the expired token was never refused"
    assert all(p.startswith(f"401 {platform.url}/v1/") or p == refused for p in problems), problems


def test_bad_input_is_explained_and_nothing_is_created(watched: tuple[Any, list[str]], platform: Platform) -> None:
    from playwright.sync_api import expect

    page, _ = watched
    page.goto(platform.url + "/")

    sign_up(page, "short@example.org", password="too short")
    expect(page.get_by_role("alert")).to_contain_text("password")
    expect(page.get_by_role("alert")).to_contain_text("at least 12 characters")
    expect(page.locator("#signed-out")).to_be_visible()

    signin = page.locator("#signin-form")
    signin.get_by_label("Email").fill("nobody@example.org")
    signin.get_by_label("Password").fill(PASSWORD)
    signin.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("wrong email or password")

    sign_up(page, "lin@example.org")
    expect(page.locator("#account-email")).to_have_text("lin@example.org")
    form = page.locator("#profile-form")
    # the page fills the form from the profile once it has loaded; fill it after that, not before
    expect(form.get_by_label("Time zone")).not_to_have_value("")
    form.get_by_label("No tips from").fill("22:00")
    form.get_by_role("button", name="Save quiet hours").click()
    expect(page.get_by_role("alert")).to_have_text("Give both a start and an end for quiet hours, or neither.")
    form.get_by_label("until").fill("07:00")
    form.get_by_label("Time zone").fill("Mars/Olympus")
    form.get_by_role("button", name="Save quiet hours").click()
    expect(page.get_by_role("alert")).to_contain_text("not an IANA timezone")

    with platform.session() as s:
        assert s.execute(select(User.email)).scalars().all() == ["lin@example.org"]
        assert s.execute(select(func.count()).select_from(Profile)).scalar_one() == 0
