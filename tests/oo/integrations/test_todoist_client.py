"""The Todoist client and the fake API v1 it is tested against: the protocol as documented."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr
from todoist_api_python.models import Project, Task

from oo.fakes.todoist import Clock, FakeTodoist, Fault, serve_in_thread
from oo.integrations.todoist.client import (
    BaseUrlTransport,
    SyncTokenRefused,
    TodoistAuthError,
    TodoistClient,
    TodoistError,
    TodoistRateLimited,
    TodoistUnavailable,
)
from oo.integrations.todoist.sync import completion_windows
from oo.settings import TodoistSettings

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeTodoist, str]]:
    world = FakeTodoist.seeded(seed=5, users=2, tasks_per_user=450, clock=Clock(T0))
    with serve_in_thread(world) as url:
        yield world, url


def client(url: str, token: str, sleeps: list[float] | None = None, **kw: object) -> TodoistClient:
    settings = TodoistSettings(base_url=url, timeout_s=0.5, backoff_initial_s=0.01, max_retries=2, **kw)  # type: ignore[arg-type]
    return TodoistClient(SecretStr(token), settings, sleep=(sleeps if sleeps is not None else []).append)


def test_the_sdk_is_pointed_at_the_base_url_and_reads_every_page(served: tuple[FakeTodoist, str]) -> None:
    world, url = served
    user = world.users[0]
    with client(url, user.token) as c:
        raw = c.tasks()  # 450 tasks: three pages of 200 through the SDK's paginator
        assert len(raw) == 450 and {t["id"] for t in raw} == set(user.items)
        assert "checked" in raw[0] and "user_id" in raw[0]  # the raw JSON keeps what the SDK drops
        sdk_tasks = [t for page in c.sdk().get_tasks(limit=200) for t in page]
        assert {t.id for t in sdk_tasks} == set(user.items)  # the SDK's own models load the fake's JSON
        assert all(isinstance(Task.from_dict(t), Task) for t in raw[:20])
        projects = [p for page in c.sdk().get_projects() for p in page]
        assert all(isinstance(p, Project) for p in projects) and any(p.is_inbox_project for p in projects)


def test_base_url_transport_rewrites_only_the_sdk_host() -> None:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.headers['host']} {request.url}")
        return httpx.Response(200, json={})

    transport = BaseUrlTransport("http://127.0.0.1:9/api/v1", 1.0, httpx.MockTransport(record))
    with httpx.Client(transport=transport) as http:
        http.get("https://api.todoist.com/api/v1/tasks?limit=5")
        http.get("http://elsewhere:1/x")
    assert seen == ["127.0.0.1:9 http://127.0.0.1:9/api/v1/tasks?limit=5", "elsewhere:1 http://elsewhere:1/x"]


def test_sync_is_form_encoded_full_then_incremental(served: tuple[FakeTodoist, str]) -> None:
    world, url = served
    user = world.users[1]
    with client(url, user.token) as c:
        full = c.sync("*")
        assert full["full_sync"] is True and len(full["items"]) == 450 and full["user"]["id"] == user.todoist_id
        empty = c.sync(full["sync_token"])
        assert (empty["full_sync"], empty["items"], empty["projects"]) == (False, [], [])
        task = next(iter(user.items))
        world.edit_task(user, task, content="edited")
        delta = c.sync(empty["sync_token"])
        assert [(i["id"], i["content"]) for i in delta["items"]] == [(task, "edited")]
        with pytest.raises(SyncTokenRefused):
            c.sync("12:forged")


def test_json_sync_bodies_work_too(served: tuple[FakeTodoist, str]) -> None:
    world, url = served
    response = httpx.post(
        url + "sync",
        json={"sync_token": "*", "resource_types": ["projects"]},
        headers={"Authorization": f"Bearer {world.users[0].token}"},
    )
    assert response.status_code == 200 and "items" not in response.json() and response.json()["projects"]


def test_errors_have_the_documented_shape(served: tuple[FakeTodoist, str]) -> None:
    _, url = served
    response = httpx.get(url + "tasks", headers={"Authorization": "Bearer nope"})
    body = response.json()
    assert response.status_code == 401
    assert set(body) == {"error", "error_code", "error_extra", "error_tag", "http_code"}
    assert body["error_tag"] == "AUTH_INVALID_TOKEN" and "event_id" in body["error_extra"]


def test_bad_cursor_and_oversized_limit_are_400(served: tuple[FakeTodoist, str]) -> None:
    world, url = served
    auth = {"Authorization": f"Bearer {world.users[0].token}"}
    bad = httpx.get(url + "tasks", params={"cursor": "Zm9v"}, headers=auth).json()
    assert (bad["http_code"], bad["error_tag"], bad["error_code"]) == (400, "INVALID_ARGUMENT_VALUE", 20)
    assert httpx.get(url + "tasks", params={"limit": 201}, headers=auth).status_code == 400


def test_completion_history_in_windows_of_at_most_three_months(served: tuple[FakeTodoist, str]) -> None:
    world, url = served
    user = world.users[0]
    task = next(i for i in user.items.values() if (i.get("due") or {}).get("is_recurring"))
    for _ in range(3):  # a recurring task completes many times
        world.clock.advance(hours=1)
        world.complete_task(user, task["id"])
    with client(url, user.token) as c:
        with pytest.raises(TodoistError, match="400"):
            c.completed(T0 - timedelta(days=120), T0 + timedelta(days=1))
        rows = [
            r
            for since, until in completion_windows(
                T0 - timedelta(days=120), T0 + timedelta(days=1), timedelta(days=85), timedelta(days=1)
            )
            for r in c.completed(since, until)
        ]
    mine = [(r["id"], r["completed_at"]) for r in rows if r["id"] == task["id"]]
    assert len(mine) == 3 and len(set(mine)) == 3


def test_429_waits_for_retry_after_then_succeeds(served: tuple[FakeTodoist, str]) -> None:
    world, url = served
    user = world.users[0]
    world.inject(user, Fault("429", times=1, retry_after=7, retry_after_in="header"))
    world.inject(user, Fault("429", times=1, retry_after=4, retry_after_in="body"))
    sleeps: list[float] = []
    with client(url, user.token, sleeps) as c:
        assert c.sync("*")["full_sync"]
    assert sleeps == [7.0, 4.0]


def test_429_beyond_the_bound_is_not_waited_for(served: tuple[FakeTodoist, str]) -> None:
    world, url = served
    user = world.users[0]
    world.inject(user, Fault("429", times=1, retry_after=600))
    sleeps: list[float] = []
    with client(url, user.token, sleeps, max_retry_after_s=60) as c, pytest.raises(TodoistRateLimited) as caught:
        c.sync("*")
    assert caught.value.retry_after == 600 and sleeps == []


def test_5xx_and_timeouts_back_off_with_jitter_then_give_up(served: tuple[FakeTodoist, str]) -> None:
    world, url = served
    user = world.users[0]
    world.inject(user, Fault("5xx", times=3, status=500))
    sleeps: list[float] = []
    with client(url, user.token, sleeps) as c, pytest.raises(TodoistUnavailable, match="HTTP 500"):
        c.sync("*")
    assert len(sleeps) == 2 and 0 < sleeps[0] < sleeps[1] + 0.02  # 2 retries (max_retries=2), growing
    world.inject(user, Fault("slow", times=1, delay_s=1.0))
    sleeps.clear()
    with client(url, user.token, sleeps) as c:
        assert c.sync("*")["full_sync"]  # the slow answer timed out and the retry succeeded
    assert len(sleeps) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_a_revoked_token_is_an_auth_error_and_is_not_retried(status: int) -> None:
    world = FakeTodoist.seeded(seed=1, users=1, tasks_per_user=1)
    user = world.users[0]
    world.revoke(user, status=status)  # type: ignore[arg-type]
    with serve_in_thread(world) as url:
        sleeps: list[float] = []
        with client(url, user.token, sleeps) as c, pytest.raises(TodoistAuthError) as caught:
            c.sync("*")
    assert sleeps == [] and user.requests == 1
    assert user.token not in str(caught.value) and user.token not in repr(c)


def test_a_403_without_the_auth_tag_is_not_an_auth_error() -> None:
    def forbidden(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": "Forbidden", "error_code": 31, "error_tag": "FORBIDDEN"})

    settings = TodoistSettings(base_url="http://127.0.0.1:9/api/v1/")
    with TodoistClient(SecretStr("t"), settings, transport=httpx.MockTransport(forbidden)) as c:
        with pytest.raises(TodoistError) as caught:
            c.sync("*")
    assert type(caught.value) is TodoistError and caught.value.status == 403


def test_the_fake_is_deterministic_and_changes_over_time() -> None:
    a = FakeTodoist.seeded(seed=3, users=3, tasks_per_user=10, clock=Clock(T0))
    b = FakeTodoist.seeded(seed=3, users=3, tasks_per_user=10, clock=Clock(T0))
    a.evolve(5)
    b.evolve(5)
    assert [u.items for u in a.users] == [u.items for u in b.users]
    states = {(i["is_deleted"], i["checked"]) for u in a.users for i in u.items.values()}
    assert {(False, False), (True, False), (False, True)} <= states
    assert sum(len(u.completions) for u in a.users) > 0
    assert sum(len(u.items) for u in a.users) > 30  # tasks were added
