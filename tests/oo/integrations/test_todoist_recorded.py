"""The sync against answers shaped as Todoist's own documentation shows them (fixtures/todoist_docs,
see its README for their provenance), not only against our fake server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import select

from oo.db import engine_for, migrate, session_scope
from oo.integrations.todoist.sync import (
    UserSyncResult,
    connect_user,
    current_projects,
    current_tasks,
    summarize,
    sync_users,
)
from oo.lake import Lake
from oo.settings import Settings
from oo.tables import Integration
from oo.vault import Vault

DOCS = Path(__file__).parent / "fixtures" / "todoist_docs"
NOW = datetime(2025, 1, 21, 21, 30, 20, tzinfo=UTC)  # 20 s after the full sync's full_sync_date_utc


def recorded(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((DOCS / name).read_text())
    return body


class RecordedTodoist(httpx.BaseTransport):
    """Answers every request with the recorded documentation examples; ``patches[token]`` changes
    that user's ``/sync`` answers (``None`` removes a key). Requests are counted per path."""

    def __init__(self, patches: dict[str, dict[str, Any]] | None = None) -> None:
        self.patches = patches or {}
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.paths.append(path)
        assert request.url.host == "api.todoist.com"  # the default base URL; nothing leaves this process
        if path == "/api/v1/sync":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            full, delta = recorded("sync_full.json"), recorded("sync_delta.json")
            body = {"*": full, full["sync_token"]: delta}.get(
                form["sync_token"], {**delta, "items": [], "sync_token": delta["sync_token"]}
            )
            token = request.headers["Authorization"].removeprefix("Bearer ")
            for key, value in self.patches.get(token, {}).items():
                if value is None:
                    body.pop(key, None)
                else:
                    body[key] = value
            return httpx.Response(200, json=body)
        if path == "/api/v1/tasks/completed/by_completion_date":
            return httpx.Response(200, json=recorded("completed_by_completion_date.json"))
        if path == "/api/v1/projects/archived":
            return httpx.Response(200, json=recorded("projects_archived.json"))
        return httpx.Response(404, json={"error": "Not found", "error_code": 404, "http_code": 404})


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.settings = Settings(vault={"keys": [Fernet.generate_key().decode()]})
        url = f"sqlite:///{tmp_path / 'app.db'}"
        migrate(url)
        self.engine, self.lake, self.vault = engine_for(url), Lake(tmp_path / "lake"), Vault(self.settings.vault.keys)

    def sync(self, users: list[str], transport: RecordedTodoist, now: datetime, chunk: int = 1) -> list[UserSyncResult]:
        return sync_users(
            users,
            engine=self.engine,
            lake=self.lake,
            vault=self.vault,
            settings=self.settings,
            transport=transport,
            now=lambda: now,
            chunk=chunk,
        )


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_the_documented_answers_land_as_documented(world: World) -> None:
    assert world.settings.todoist.base_url == "https://api.todoist.com/api/v1/"
    connect_user(world.engine, world.vault, "alice", SecretStr("0123456789abcdef0123456789abcdef01234567"))
    api = RecordedTodoist()
    (first,) = world.sync(["alice"], api, NOW)
    assert (first.status, first.full_sync, first.tasks, first.projects, first.completions) == ("ok", True, 1, 1, 1)
    assert (first.quarantined, first.unknown_fields) == (0, {})  # every field of the examples is documented
    task = current_tasks(world.lake, "alice")["6X7rM8997g3RQmvh"]
    assert (task.content, task.labels, task.priority, task.section_id, task.day_order) == (
        "Buy Milk",
        ["Food", "Shopping"],
        1,
        "3Ty8VQXxpwv28PK3",
        -1,
    )
    assert task.duration is not None and (task.duration.amount, task.duration.unit) == (15, "minute")
    assert task.added_at == datetime(2025, 1, 21, 21, 28, 43, 841504, tzinfo=UTC)
    project = current_projects(world.lake, "alice")["6Jf8VQXxpwv56VQ7"]
    assert (project.name, project.is_inbox_project, project.color) == ("Shopping List", True, "lime_green")
    (done,) = world.lake.read("todoist_completions").to_pylist()
    assert (done["task_id"], done["completed_at"]) == ("6X7rfFVPjhvv84XG", datetime(2025, 1, 21, 9, 5, tzinfo=UTC))
    with session_scope(world.engine) as s:
        row = s.execute(select(Integration)).scalar_one()
        assert (row.external_id, row.cursor) == ("2671355", recorded("sync_full.json")["sync_token"])

    # the delta marks the task deleted; the completion window overlaps and finds nothing new
    (second,) = world.sync(["alice"], api, NOW + timedelta(hours=1))
    assert (second.full_sync, second.tasks, second.tombstones, second.completions) == (False, 1, 1, 0)
    assert current_tasks(world.lake, "alice") == {}
    assert current_tasks(world.lake, "alice", include_gone=True)["6X7rM8997g3RQmvh"].content == "Buy Milk"
    assert api.paths.count("/api/v1/sync") == 2


def test_a_field_todoist_adds_is_recorded_and_the_task_kept(world: World) -> None:
    full = recorded("sync_full.json")
    items = [{**full["items"][0], "ai_summary": "new in the API"}]
    connect_user(world.engine, world.vault, "alice", SecretStr("a"))
    (result,) = world.sync(["alice"], RecordedTodoist({"a": {"items": items}}), NOW)
    assert (result.status, result.tasks, result.quarantined) == ("ok", 1, 0)
    assert result.unknown_fields == {"items.ai_summary": 1}
    assert "unknown fields: items.ai_summary 1" in summarize([result])


@pytest.mark.parametrize("chunk", [1, 3], ids=["per-user", "batched"])
def test_several_users_one_malformed_answer_the_others_land(world: World, chunk: int) -> None:
    for user in ("ann", "bob", "cat"):
        connect_user(world.engine, world.vault, user, SecretStr(f"token-{user}"))
    api = RecordedTodoist({"token-bob": {"items": 5}, "token-cat": {"items": None}})
    results = {r.user_id: r for r in world.sync(["ann", "bob", "cat"], api, NOW, chunk=chunk)}
    assert {u: r.status for u, r in results.items()} == {"ann": "ok", "bob": "failed", "cat": "failed"}
    assert set(current_tasks(world.lake, "ann")) == {"6X7rM8997g3RQmvh"}
    assert current_tasks(world.lake, "bob") == {} and current_tasks(world.lake, "cat") == {}
    with session_scope(world.engine) as s:
        errors = dict(s.execute(select(Integration.user_id, Integration.last_error)).all())
    assert errors["ann"] is None
    assert "items" in (errors["bob"] or "") and "no items list" in (errors["cat"] or "")
    kept = world.lake.read("quarantine").to_pylist()
    assert {r["source"] for r in kept} == {"bob", "cat"}  # the malformed answers, as received
    assert any('"items":5' in r["raw"].replace(" ", "") for r in kept)
