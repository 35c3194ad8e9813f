"""What Todoist could really answer, and what the sync must never do with it: delete what it could
not read, crash other users, quarantine twice, count what it did not write, or send a demo token to
the real API. One test per finding of issue 9 (each failed before the fix)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from oo.integrations.todoist import stage as stage_module
from oo.integrations.todoist.sync import connect_user, connected_users, current_tasks, summarize, sync_users
from oo.settings import Settings
from tests.oo.integrations.todoist_env import Env, make_env, make_user, plain


def three_tasks(env: Env) -> tuple[Any, dict[str, str], list[str]]:
    user, p = make_user(env.world)
    ids = [plain(env.world, user, p["inbox"], f"task {i}") for i in range(3)]
    env.connect(user)
    env.sync(user)
    return user, p, ids


def full_resync(env: Env, user: Any) -> Any:
    env.world.expire_tokens(user)
    env.clock.advance(hours=1)
    result = env.sync(user)[user.todoist_id]
    assert result.full_sync and result.token_refused
    return result


# -- 1. deletion only from positive evidence ------------------------------------------------------
def test_a_task_quarantined_on_a_full_resync_is_not_deleted(env: Env) -> None:
    user, _, (a, b, c) = three_tasks(env)
    env.world.user(user.todoist_id).items[b]["priority"] = "urgent"  # served, but refused by the contract
    result = full_resync(env, user)
    assert (result.status, result.quarantined, result.tombstones) == ("ok", 1, 0)
    assert set(current_tasks(env.lake, user.todoist_id)) == {a, b, c}


def test_a_new_field_on_every_task_deletes_nothing_and_is_recorded(env: Env) -> None:
    user, _, ids = three_tasks(env)
    for task in env.world.user(user.todoist_id).items.values():
        task["ai_summary"] = "a field Todoist added"
    result = full_resync(env, user)
    assert (result.quarantined, result.tombstones) == (0, 0)
    assert result.unknown_fields == {"items.ai_summary": 3}
    assert set(current_tasks(env.lake, user.todoist_id)) == set(ids)
    raw = [json.loads(r["payload"]) for r in env.rows("todoist_raw") if r["resource"] == "items"]
    assert any(r.get("ai_summary") == "a field Todoist added" for r in raw)  # the value is kept raw


def test_strict_mode_quarantines_a_new_field_and_still_deletes_nothing(tmp_path: Path) -> None:
    with make_env(tmp_path, unknown_fields="quarantine") as env:
        user, _, ids = three_tasks(env)
        for task in env.world.user(user.todoist_id).items.values():
            task["ai_summary"] = "x"
        result = full_resync(env, user)
        assert (result.quarantined, result.tombstones) == (3, 0)
        assert set(current_tasks(env.lake, user.todoist_id)) == set(ids)
        assert all("ai_summary" in " ".join(r["reasons"]) for r in env.rows("quarantine"))


def test_an_object_without_a_readable_id_makes_a_full_resync_prove_no_absence(env: Env) -> None:
    user, _, (a, b, c) = three_tasks(env)
    env.world.delete_task(user, c)
    user.junk_items = [{"content": "no id"}]
    first = full_resync(env, user)
    assert (first.quarantined, first.tombstones) == (1, 0)
    assert c in current_tasks(env.lake, user.todoist_id)
    user.junk_items = []
    second = full_resync(env, user)  # a clean full answer: now the absence is evidence
    assert second.tombstones == 1 and set(current_tasks(env.lake, user.todoist_id)) == {a, b}


# -- 2. and 3. an answer of the wrong shape fails that user, records why, changes nothing ----------
SHAPES = {
    "no items": ({}, {"items"}),
    "items not a list": ({"items": 5}, set()),
    "items null": ({"items": None}, set()),
    "zone-less full_sync_date_utc": ({"full_sync_date_utc": "2026-03-02T09:00:00"}, set()),
    "full_sync a string": ({"full_sync": "yes"}, set()),
    "no projects": ({}, {"projects"}),
}


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_a_full_sync_answer_of_the_wrong_shape_changes_nothing(env: Env, shape: str) -> None:
    patch, drop = SHAPES[shape]
    user, _, ids = three_tasks(env)
    before = {d: len(env.rows(d)) for d in ("todoist_tasks", "todoist_projects", "todoist_completions")}
    cursor = env.integration(user).cursor
    env.world.expire_tokens(user)
    user.sync_patch, user.sync_drop = dict(patch), set(drop)
    env.clock.advance(hours=1)
    result = env.sync(user)[user.todoist_id]
    assert result.status == "failed" and "wrong shape" in (result.error or "")
    assert {d: len(env.rows(d)) for d in before} == before
    assert set(current_tasks(env.lake, user.todoist_id)) == set(ids)
    integration = env.integration(user)
    assert integration.cursor == cursor and "wrong shape" in (integration.last_error or "")
    assert integration.status == "active"  # tried again next run


@pytest.mark.parametrize("chunk", [1, 10], ids=["per-user", "batched"])
def test_one_malformed_answer_among_several_users_fails_only_that_user(env: Env, chunk: int) -> None:
    users = []
    for i in range(4):
        u, p = make_user(env.world)
        for k in range(2):
            plain(env.world, u, p["inbox"], f"user {i} task {k}")
        env.connect(u)
        users.append(u)
    fine_a, items_five, naive_date, fine_b = users
    items_five.sync_patch = {"items": 5}
    naive_date.sync_patch = {"full_sync_date_utc": "2026-03-02T08:00:00"}
    results = env.sync(chunk=chunk)
    assert [results[u.todoist_id].status for u in users] == ["ok", "failed", "failed", "ok"]
    for u in (fine_a, fine_b):
        assert len(current_tasks(env.lake, u.todoist_id)) == 2
    for u in (items_five, naive_date):
        assert current_tasks(env.lake, u.todoist_id) == {}
        assert "wrong shape" in (env.integration(u).last_error or "")
    assert summarize(list(results.values())).startswith("todoist sync: 2 ok, 2 failed (4 users)")


def test_an_error_while_staging_one_user_of_a_chunk_fails_only_that_user(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the exception, the per-user boundary holds: a chunk that fails is retried user by
    user, so only the culprit fails (and it is recorded on its integration)."""
    users = []
    for i in range(3):
        u, p = make_user(env.world)
        plain(env.world, u, p["inbox"], f"task of {i}")
        env.connect(u)
        users.append(u)
    culprit = users[1].todoist_id
    real = stage_module._changes

    def changes(f: Any, *rest: Any) -> Any:
        if f.user_id == culprit:
            raise RuntimeError("a bug met this user's data")
        return real(f, *rest)

    monkeypatch.setattr(stage_module, "_changes", changes)
    results = env.sync(chunk=10)
    assert [results[u.todoist_id].status for u in users] == ["ok", "failed", "ok"]
    assert "RuntimeError: a bug met this user's data" in (env.integration(users[1]).last_error or "")
    assert env.integration(users[1]).cursor is None
    assert [len(current_tasks(env.lake, u.todoist_id)) for u in users] == [1, 0, 1]


# -- 5. quarantine keeps what was received, once ------------------------------------------------------
def test_quarantine_keeps_the_payload_as_received_and_once_per_user_and_payload(env: Env) -> None:
    user, p = make_user(env.world)
    good = plain(env.world, user, p["inbox"], "fine")
    bad = {**env.world.user(user.todoist_id).items[good], "id": "bad-one", "priority": True, "added_by_uid": "7"}
    user.junk_items = [bad]
    env.connect(user)
    env.sync(user)
    env.clock.advance(days=2)  # another day, another partition
    env.sync(user)
    rows = env.rows("quarantine")
    assert len(rows) == 1
    (row,) = rows
    raw = [r for r in env.rows("todoist_raw") if r["object_id"] == "bad-one"]
    assert json.loads(row["raw"]) == bad  # every field as sent, ours not added, theirs not dropped
    assert row["raw"] == raw[0]["payload"] and row["row_hash"] == raw[0]["payload_hash"]
    assert row["source"] == user.todoist_id and "priority" in " ".join(row["reasons"])


# -- 6. the summary counts what was written -------------------------------------------------------------
def test_a_rerun_over_the_same_completions_counts_none(env: Env) -> None:
    user, p = make_user(env.world)
    task = plain(env.world, user, p["inbox"], "done once")
    env.connect(user)
    env.sync(user)
    env.clock.advance(minutes=30)
    env.world.complete_task(user, task)
    env.clock.advance(minutes=5)
    assert env.sync(user)[user.todoist_id].completions == 1
    env.clock.advance(minutes=5)  # the completion window overlaps the last sync: fetched again
    again = env.sync(user)[user.todoist_id]
    assert again.completions == 0 and "completions 0" in summarize([again])
    assert len(env.rows("todoist_completions")) == 1


# -- 7. a demo token never leaves its fake server ------------------------------------------------------
class Recorder(httpx.BaseTransport):
    """Records every request and answers 503 (nothing may be sent here at all)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(503, json={"error": "recorder"})


def connect_demo(env: Env, bound_to: str) -> Any:
    user, p = make_user(env.world)
    plain(env.world, user, p["inbox"], "demo task")
    connect_user(env.engine, env.vault, "demo-1", SecretStr(user.token), demo_base_url=bound_to)
    return user


def test_scheduled_and_cli_syncs_leave_demo_users_out(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from oo import cli
    from oo.integrations.todoist import client as client_module
    from oo.settings import get_settings

    user = connect_demo(env, env.settings.todoist.base_url)
    assert connected_users(env.engine) == [] and connected_users(env.engine, include_demo=True) == ["demo-1"]
    recorder = Recorder()
    monkeypatch.setattr(client_module, "shared_transport", lambda: recorder)
    monkeypatch.setenv("OO_DB__URL", str(env.engine.url))
    monkeypatch.setenv("OO_LAKE__ROOT", str(env.lake.root))
    monkeypatch.setenv("OO_VAULT__KEYS", json.dumps([k.get_secret_value() for k in env.settings.vault.keys]))
    monkeypatch.delenv("OO_TODOIST__BASE_URL", raising=False)  # the default: the real API
    get_settings.cache_clear()
    try:
        assert get_settings().todoist.base_url == "https://api.todoist.com/api/v1/"
        out = CliRunner().invoke(cli.app, ["todoist-sync"])
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 0, out.output
    assert "(0 users)" in out.output and recorder.requests == []
    assert user.requests == 0


def test_a_demo_token_goes_only_to_the_fake_server_it_is_bound_to(env: Env) -> None:
    user = connect_demo(env, env.settings.todoist.base_url)
    real_api = Settings(vault={"keys": [k.get_secret_value() for k in env.settings.vault.keys]})  # the default base URL
    recorder = Recorder()
    sync_users(["demo-1"], engine=env.engine, lake=env.lake, vault=env.vault, settings=real_api, transport=recorder)
    assert recorder.requests and {r.url.host for r in recorder.requests} == {"127.0.0.1"}
    assert all(str(r.url).startswith(env.settings.todoist.base_url) for r in recorder.requests)
    assert user.requests == 0  # the recorder stood in for the fake server itself


def test_a_demo_user_cannot_be_bound_to_a_remote_api_nor_synced_unbound(env: Env) -> None:
    from oo.db import session_scope
    from oo.integrations.todoist.accounts import DemoBindingError
    from oo.tables import Integration

    with pytest.raises(DemoBindingError):
        connect_user(env.engine, env.vault, "demo-9", SecretStr("t"), demo_base_url="https://api.todoist.com/api/v1/")
    connect_demo(env, env.settings.todoist.base_url)
    with session_scope(env.engine) as s:  # as if the binding were lost
        s.query(Integration).filter(Integration.user_id == "demo-1").one().api_base_url = None
    recorder = Recorder()
    result = sync_users(["demo-1"], engine=env.engine, lake=env.lake, vault=env.vault, transport=recorder)[0]
    assert result.status == "failed" and "demo user" in (result.error or "") and recorder.requests == []


def test_connecting_a_real_token_makes_a_demo_user_real_again(env: Env) -> None:
    connect_demo(env, env.settings.todoist.base_url)
    connect_user(env.engine, env.vault, "demo-1", SecretStr("real"))
    assert connected_users(env.engine) == ["demo-1"]
