"""Per-user Todoist sync against the fake API v1: the exact lake state after each change, faults
isolated per user, bad input quarantined, re-runs idempotent, the token never at rest in clear."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import select

from oo.db import engine_for, migrate, session_scope
from oo.fakes.todoist import Clock, FakeTodoist, Fault, serve_in_thread
from oo.integrations.todoist.sync import (
    connected_users,
    current_projects,
    current_tasks,
    summarize,
    sync_users,
)
from oo.lake import Lake
from oo.settings import Settings
from oo.tables import Integration
from oo.vault import Vault
from tests.oo.integrations.todoist_env import T0, Env, make_user, plain, state


def test_the_lake_follows_a_sequence_of_changes_exactly(env: Env) -> None:
    w, clock = env.world, env.clock
    user, p = make_user(w)
    env.connect(user)
    every_day = {"date": "2026-03-03", "timezone": None, "string": "every day", "lang": "en", "is_recurring": True}
    milk = plain(w, user, p["inbox"], "Buy milk")
    water = plain(w, user, p["garden"], "Water plants", due=every_day)
    mum = plain(w, user, p["inbox"], "Call mum", priority=4)
    rent = plain(w, user, p["inbox"], "Pay rent")

    # 1. first sync: full
    clock.advance(minutes=5)
    r1 = env.sync(user)[user.todoist_id]
    assert (r1.status, r1.full_sync, r1.tasks, r1.projects, r1.completions) == ("ok", True, 4, 2, 0)
    assert state(env, user) == {
        "Buy milk": (p["inbox"], False, None),
        "Water plants": (p["garden"], False, "2026-03-03"),
        "Call mum": (p["inbox"], False, None),
        "Pay rent": (p["inbox"], False, None),
    }
    assert env.integration(user).cursor is not None
    assert env.integration(user).external_id == user.todoist_id

    # 2. add, edit, complete, recurring completion, delete
    clock.advance(hours=1)
    tea = plain(w, user, p["inbox"], "Buy tea")
    w.edit_task(user, milk, content="Buy oat milk")
    w.complete_task(user, mum)
    t_water_1 = clock.advance(minutes=1)
    w.complete_task(user, water)
    w.delete_task(user, rent)
    clock.advance(minutes=5)
    r2 = env.sync(user)[user.todoist_id]
    assert (r2.full_sync, r2.tasks, r2.tombstones, r2.completions) == (False, 5, 1, 2)
    assert state(env, user) == {
        "Buy oat milk": (p["inbox"], False, None),
        "Water plants": (p["garden"], False, "2026-03-04"),
        "Call mum": (p["inbox"], True, None),
        "Buy tea": (p["inbox"], False, None),
    }
    gone = current_tasks(env.lake, user.todoist_id, include_gone=True)[rent]
    assert gone.is_deleted and gone.content == "Pay rent"

    # 3. uncomplete, a second recurring completion, archive the project
    clock.advance(hours=1)
    w.uncomplete_task(user, mum)
    t_water_2 = clock.advance(minutes=1)
    w.complete_task(user, water)
    w.archive_project(user, p["garden"])
    clock.advance(minutes=5)
    r3 = env.sync(user)[user.todoist_id]
    assert (r3.tasks, r3.projects, r3.tombstones) == (2, 1, 0)
    assert state(env, user) == {
        "Buy oat milk": (p["inbox"], False, None),
        "Water plants": (p["garden"], False, "2026-03-05"),
        "Call mum": (p["inbox"], False, None),
        "Buy tea": (p["inbox"], False, None),
    }
    assert current_projects(env.lake, user.todoist_id)[p["garden"]].is_archived
    completions = sorted((c["task_id"], c["completed_at"], c["is_recurring"]) for c in env.rows("todoist_completions"))
    assert completions == sorted(
        [(mum, T0 + timedelta(hours=1, minutes=5), False), (water, t_water_1, True), (water, t_water_2, True)]
    )  # the uncompleted completion stays in the history; the recurring task completed twice

    # 4. the sync token is refused: a full resync; a task that vanished is deleted, the tasks of
    #    the archived project are kept
    clock.advance(hours=1)
    w.delete_task(user, tea)
    w.expire_tokens(user)
    clock.advance(minutes=5)
    r4 = env.sync(user)[user.todoist_id]
    assert (r4.full_sync, r4.token_refused, r4.tasks, r4.tombstones, r4.projects) == (True, True, 1, 1, 0)
    assert state(env, user) == {
        "Buy oat milk": (p["inbox"], False, None),
        "Water plants": (p["garden"], False, "2026-03-05"),
        "Call mum": (p["inbox"], False, None),
    }

    # 5. nothing changed: nothing written
    before = {d: len(env.rows(d)) for d in ("todoist_tasks", "todoist_projects", "todoist_completions")}
    clock.advance(hours=1)
    r5 = env.sync(user)[user.todoist_id]
    assert (r5.full_sync, r5.token_refused, r5.tasks, r5.projects, r5.tombstones) == (False, False, 0, 0, 0)
    assert (
        {d: len(env.rows(d)) for d in before}
        == before
        == {
            "todoist_tasks": 4 + 5 + 2 + 1,
            "todoist_projects": 3,
            "todoist_completions": 3,
        }
    )
    raw = env.rows("todoist_raw")
    assert {r["resource"] for r in raw} == {"items", "projects", "completed", "archived_projects"}
    assert any(json.loads(r["payload"]).get("checked") is True and r["object_id"] == mum for r in raw)


def test_a_resync_of_the_same_changes_writes_no_duplicate_rows(env: Env) -> None:
    """A crash after the lake write and before the cursor was saved repeats the fetch: harmless."""
    user, p = make_user(env.world)
    env.connect(user)
    for i in range(5):
        plain(env.world, user, p["inbox"], f"task {i}")
    env.sync(user)
    cursor = env.integration(user).cursor
    env.world.edit_task(user, next(iter(user.items)), content="changed")
    env.clock.advance(minutes=10)
    env.sync(user)
    with session_scope(env.engine) as s:  # as if the cursor had not been saved
        s.execute(select(Integration)).scalar_one().cursor = cursor
    env.clock.advance(minutes=10)
    again = env.sync(user)[user.todoist_id]
    assert again.tasks == 0
    tasks = env.rows("todoist_tasks")
    assert len(tasks) == 6 and len({(t["id"], t["content"]) for t in tasks}) == 6


def test_an_incremental_sync_with_no_change_reads_nothing_from_the_lake(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hourly sync of a user whose account did not change must not scan the lake (it did,
    twice per user: the cost of every hourly sync grew with the lake)."""
    from oo.integrations.todoist import changes

    user, p = make_user(env.world)
    env.connect(user)
    plain(env.world, user, p["inbox"], "task")
    env.sync(user)
    env.clock.advance(hours=3)

    def no_lake(*args: object, **kwargs: object) -> None:
        raise AssertionError("the lake was read")

    for name in ("_latest", "_latest_many", "_stored_completions"):
        monkeypatch.setattr(changes, name, no_lake)
    monkeypatch.setattr(changes.Known, "read", no_lake)
    quiet = env.sync(user)[user.todoist_id]
    assert (quiet.status, quiet.tasks, quiet.projects, quiet.completions) == ("ok", 0, 0, 0)
    monkeypatch.undo()
    env.world.edit_task(user, next(iter(user.items)), content="changed")
    env.clock.advance(hours=3)
    assert env.sync(user)[user.todoist_id].tasks == 1  # a change is still read against the lake


def test_a_chunk_of_users_reads_the_lake_once_per_dataset_and_writes_what_per_user_reads_would(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk's sync compares every user's answer with the lake in one read per dataset (reading
    per user scanned every file twice per user); each user's rows are the same as alone."""
    from oo.integrations.todoist import changes

    users = [make_user(env.world) for _ in range(3)]
    for user, p in users:
        env.connect(user)
        for i in range(3):
            plain(env.world, user, p["inbox"], f"task {i} of {user.todoist_id}")
    env.sync(*(u for u, _ in users), chunk=3)
    for user, p in users:
        first = next(iter(user.items))
        env.world.edit_task(user, first, content="edited")
        env.world.complete_task(user, first)
        plain(env.world, user, p["inbox"], "new one")
    env.clock.advance(hours=1)
    reads: list[str] = []
    real = changes._latest_many

    def counted(lake, dataset, model, user_ids):  # type: ignore[no-untyped-def]
        reads.append(dataset)
        return real(lake, dataset, model, user_ids)

    monkeypatch.setattr(changes, "_latest_many", counted)
    monkeypatch.setattr(changes, "_latest", lambda *a, **k: pytest.fail("a per-user read"))
    results = env.sync(*(u for u, _ in users), chunk=3)
    assert sorted(reads) == ["todoist_projects", "todoist_tasks"]
    monkeypatch.undo()
    for user, _ in users:
        r = results[user.todoist_id]
        assert (r.status, r.tasks, r.completions) == ("ok", 2, 1)  # the edited + done task, the new one
        now = state(env, user)
        assert now["edited"][1] is True and now["new one"][1] is False and len(now) == 4


def test_a_deleted_stub_still_deletes(env: Env) -> None:
    """Whether deltas carry whole deleted objects or stubs is undocumented: a stub the contract
    refuses is kept raw (not quarantined: it is what a deletion looks like), and the task is
    tombstoned from its last known state."""
    user, p = make_user(env.world)
    env.connect(user)
    task = plain(env.world, user, p["inbox"], "Return library books")
    keep = plain(env.world, user, p["inbox"], "Stay")
    env.sync(user)
    env.clock.advance(hours=1)
    user.junk_items = [{"id": task, "is_deleted": True}]
    result = env.sync(user)[user.todoist_id]
    assert (result.tombstones, result.quarantined) == (1, 0)
    assert any(r["object_id"] == task for r in env.rows("todoist_raw") if '"is_deleted":true' in r["payload"])
    assert set(current_tasks(env.lake, user.todoist_id)) == {keep}
    assert current_tasks(env.lake, user.todoist_id, include_gone=True)[task].content == "Return library books"


def test_completed_items_missing_from_deltas_are_taken_from_the_completion_history(env: Env) -> None:
    """Whether deltas carry completed items is undocumented: both answers give the same state."""
    user, p = make_user(env.world)
    env.connect(user)
    task = plain(env.world, user, p["inbox"], "Renew passport")
    env.sync(user)
    env.clock.advance(hours=1)
    env.world.complete_task(user, task)
    user.item_rev.pop(task)  # this server leaves the completed item out of the delta
    env.clock.advance(minutes=1)
    env.sync(user)
    latest = current_tasks(env.lake, user.todoist_id)[task]
    assert latest.checked and latest.completed_at == T0 + timedelta(hours=1)


def test_429_5xx_timeouts_and_revoked_tokens_stay_with_their_user(env: Env) -> None:
    w = env.world
    users = []
    for _ in range(7):
        u, p = make_user(w)
        for i in range(3):
            plain(w, u, p["inbox"], f"task {i}")
        env.connect(u)
        users.append(u)
    fine, limited, limited_body, flaky, slow, revoked_403, revoked_401 = users
    w.inject(limited, Fault("429", times=2, retry_after=2, retry_after_in="header"))
    w.inject(limited_body, Fault("429", times=1, retry_after=3, retry_after_in="body"))
    w.inject(flaky, Fault("5xx", times=2, status=503))
    w.inject(slow, Fault("slow", times=1, delay_s=1.0))  # longer than the 0.5 s timeout
    w.revoke(revoked_403, status=403)
    w.revoke(revoked_401, status=401)

    results = env.sync()
    status = {u.todoist_id: results[u.todoist_id].status for u in users}
    assert status == {
        fine.todoist_id: "ok",
        limited.todoist_id: "ok",
        limited_body.todoist_id: "ok",
        flaky.todoist_id: "ok",
        slow.todoist_id: "ok",
        revoked_403.todoist_id: "needs_reauth",
        revoked_401.todoist_id: "needs_reauth",
    }
    assert sorted(s for s in env.sleeps if s >= 1) == [2.0, 2.0, 3.0]  # Retry-After honoured
    assert len([s for s in env.sleeps if s < 1]) == 3  # backoff: two 503s and a timeout
    for u in users[:5]:
        assert len(current_tasks(env.lake, u.todoist_id)) == 3
    for u in (revoked_403, revoked_401):
        assert current_tasks(env.lake, u.todoist_id) == {}
        integration = env.integration(u)
        assert integration.status == "needs_reauth" and "AUTH_INVALID_TOKEN" in (integration.last_error or "")
    assert summarize(list(results.values())).startswith("todoist sync: 5 ok, 2 failed (7 users)")
    # skipped from now on, until the user connects again
    assert set(connected_users(env.engine)) == {u.todoist_id for u in users[:5]}


def test_a_rate_limit_longer_than_the_bound_and_endless_5xx_fail_only_that_user(env: Env) -> None:
    w = env.world
    users = []
    for _ in range(3):
        u, p = make_user(w)
        plain(w, u, p["inbox"], "one task")
        env.connect(u)
        users.append(u)
    fine, patient, down = users
    w.inject(patient, Fault("429", times=1, retry_after=3600))
    w.inject(down, Fault("5xx", times=-1, status=502))
    results = env.sync()
    assert [results[u.todoist_id].status for u in users] == ["ok", "failed", "failed"]
    assert "429" in (results[patient.todoist_id].error or "")
    assert "502" in (results[down.todoist_id].error or "")
    assert env.integration(down).status == "active"  # tried again next run
    assert env.integration(down).cursor is None
    assert len(current_tasks(env.lake, fine.todoist_id)) == 1
    assert w.user(down.todoist_id).requests == env.settings.todoist.max_retries + 1


@pytest.mark.parametrize("chunk", [1, 10], ids=["per-user", "batched"])
def test_bad_rows_are_quarantined_with_reasons_counted_and_kept(env: Env, chunk: int) -> None:
    user, p = make_user(env.world)
    good = plain(env.world, user, p["inbox"], "fine task")
    base = dict(env.world.user(user.todoist_id).items[good])
    user.junk_items = [
        "not an object",
        {**base, "id": "no-added-at", "added_at": None},
        {**base, "id": "wrong-type", "priority": "urgent"},
        {**base, "id": "bad-date", "due": {"date": "2026-02-30", "is_recurring": False}},
        {k: v for k, v in base.items() if k != "content"} | {"id": "no-content"},
        {**base, "id": "out-of-range", "priority": 9},
        {**base, "id": "unknown-field", "colour": "teal"},  # kept: a new field is recorded, not refused
    ]
    env.connect(user)
    other, q = make_user(env.world)
    plain(env.world, other, q["inbox"], "unaffected")
    env.connect(other)
    results = env.sync(chunk=chunk)
    mine = results[user.todoist_id]
    assert (mine.status, mine.tasks, mine.quarantined) == ("ok", 2, 6)
    assert mine.unknown_fields == {"items.colour": 1}
    assert results[other.todoist_id].quarantined == 0
    joined = "\n".join(" | ".join(r["reasons"]) for r in env.rows("quarantine"))
    for expected in ("expected an object", "added_at", "priority", "2026-02-30", "content"):
        assert expected in joined, expected
    assert {t.content for t in current_tasks(env.lake, user.todoist_id).values()} == {"fine task"}
    assert set(current_tasks(env.lake, user.todoist_id)) == {good, "unknown-field"}
    # never lost: every payload, good or bad, is in the raw dataset
    raw_items = [r for r in env.rows("todoist_raw") if r["resource"] == "items" and r["user_id"] == user.todoist_id]
    assert len(raw_items) == 8
    assert "quarantined 6" in summarize(list(results.values()))
    assert "unknown fields: items.colour 1" in summarize(list(results.values()))


def test_a_malformed_response_fails_that_user_and_keeps_the_body(env: Env) -> None:
    user, p = make_user(env.world)
    plain(env.world, user, p["inbox"], "x")
    env.connect(user)
    other, q = make_user(env.world)
    plain(env.world, other, q["inbox"], "y")
    env.connect(other)
    env.world.inject(user, Fault("garbage", times=1))
    results = env.sync()
    assert results[user.todoist_id].status == "failed"
    assert "malformed JSON" in (results[user.todoist_id].error or "")
    assert results[other.todoist_id].status == "ok"
    kept = [r for r in env.rows("quarantine") if r["dataset"] == "todoist_raw"]
    assert len(kept) == 1 and kept[0]["raw"].startswith('{"sync_token"')
    assert env.sync(user)[user.todoist_id].status == "ok"  # next run: fine again


def test_the_token_is_encrypted_at_rest_and_never_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    users = []
    for _ in range(2):
        u, p = make_user(env.world)
        plain(env.world, u, p["inbox"], "a task")
        env.connect(u)
        users.append(u)
    env.world.revoke(users[1])
    env.world.inject(users[0], Fault("5xx", times=1))
    results = env.sync()
    assert [results[u.todoist_id].status for u in users] == ["ok", "needs_reauth"]
    with session_scope(env.engine) as s:
        stored = s.execute(select(Integration.token_ciphertext)).scalars().all()
    assert all(c and env.vault.decrypt(c).get_secret_value() in {u.token for u in users} for c in stored)
    files = [f for f in [*env.db_dir.rglob("*"), *env.lake.root.rglob("*")] if f.is_file()]
    assert any(f.name.startswith("app.db") for f in files) and any(f.suffix == ".parquet" for f in files)
    for u in users:
        secret = u.token.encode()
        for f in files:
            assert secret not in f.read_bytes(), f"token of {u.todoist_id} in {f}"
        assert u.token not in caplog.text
        assert u.token not in " ".join(str(r.error) for r in results.values())
    assert "needs re-authorisation" in caplog.text  # the logs were captured


def test_a_wrong_vault_key_fails_only_that_user(env: Env) -> None:
    user, p = make_user(env.world)
    plain(env.world, user, p["inbox"], "x")
    env.connect(user)
    other_key = Vault([SecretStr(Fernet.generate_key().decode())])
    result = sync_users(
        [user.todoist_id], engine=env.engine, lake=env.lake, vault=other_key, settings=env.settings, now=env.clock.now
    )[0]
    assert result.status == "failed" and "no vault key" in (result.error or "")


def test_the_great_expectations_suite_gates_what_pydantic_let_through() -> None:
    """Rows made in code (tombstones are copies) skip pydantic; the contract's GX suite still
    checks every row before it is written."""
    from data_contracts import TodoistTask
    from oo.integrations.todoist.stage import _gate

    good = TodoistTask(user_id="u", id="t1", project_id="p", content="c", priority=1, added_at=T0, synced_at=T0)
    broken = good.model_copy(update={"id": "t2", "priority": 9})  # model_copy does not validate
    no_labels = good.model_copy(update={"id": "t3", "labels": None})  # a nested column, null
    received = {("todoist_tasks", broken.natural_key): '{"id":"t2","priority":9,"as":"received"}'}
    table, kept, refused = _gate(TodoistTask, "todoist_tasks", [good, broken, no_labels], True, T0, received)
    assert table.column("id").to_pylist() == ["t1"] and kept == [good]
    assert [r.reasons for r in refused] == [
        ["expect_column_values_to_be_between priority failed (value np.int64(9))"],
        [
            "expect_column_values_to_not_be_null labels failed (value None)",
            "<row>: made by the sync (no payload received)",
        ],
    ]
    assert refused[0].raw == received[("todoist_tasks", broken.natural_key)]  # the payload as received
    assert '"id":"t3"' in refused[1].raw and refused[1].source == "u"


@pytest.mark.integration
def test_sync_state_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    migrate(pg_url)
    clock = Clock(T0)
    world = FakeTodoist(seed=4, clock=clock)
    with serve_in_thread(world) as url:
        settings = Settings(todoist={"base_url": url, "history_days": 10})
        env = Env(world, clock, settings, engine_for(pg_url), Lake(tmp_path / "lake"), Vault(settings.vault.keys),
                  tmp_path, [])  # fmt: skip
        user, p = make_user(world)
        task = plain(world, user, p["inbox"], "on postgres")
        env.connect(user)
        assert env.sync(user)[user.todoist_id].full_sync
        clock.advance(hours=1)
        world.complete_task(user, task)
        clock.advance(minutes=1)
        second = env.sync(user)[user.todoist_id]
    assert (second.full_sync, second.tasks, second.completions) == (False, 1, 1)
    row = env.integration(user)
    assert row.external_id == user.todoist_id and row.last_synced_at == T0 + timedelta(hours=1, minutes=1)
