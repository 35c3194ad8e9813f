"""The Todoist sync's test bench: a fake API v1 on a loopback port, a fresh app database and lake,
and helpers that build users and tasks (imported by the tests next to it; ``env`` is their fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import Engine, select

from oo.db import engine_for, migrate, session_scope
from oo.fakes.todoist import Clock, FakeTodoist, FakeUser, serve_in_thread
from oo.integrations.todoist.sync import UserSyncResult, connect_user, connected_users, current_tasks, sync_users
from oo.lake import Lake
from oo.settings import Settings
from oo.tables import Integration
from oo.vault import Vault

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Env:
    world: FakeTodoist
    clock: Clock
    settings: Settings
    engine: Engine
    lake: Lake
    vault: Vault
    db_dir: Path
    sleeps: list[float]

    def connect(self, user: FakeUser) -> None:
        connect_user(self.engine, self.vault, user.todoist_id, SecretStr(user.token))

    def sync(self, *users: FakeUser, chunk: int = 1) -> dict[str, UserSyncResult]:
        ids = [u.todoist_id for u in users] or connected_users(self.engine)
        out = sync_users(
            ids,
            engine=self.engine,
            lake=self.lake,
            vault=self.vault,
            settings=self.settings,
            now=self.clock.now,
            sleep=self.sleeps.append,
            chunk=chunk,
        )
        return {r.user_id: r for r in out}

    def rows(self, dataset: str) -> list[dict[str, Any]]:
        return self.lake.read(dataset).to_pylist()

    def integration(self, user: FakeUser) -> Integration:
        with session_scope(self.engine) as s:
            row = s.execute(select(Integration).where(Integration.user_id == user.todoist_id)).scalar_one()
            s.expunge(row)
            return row


@contextmanager
def make_env(tmp_path: Path, **todoist: Any) -> Iterator[Env]:
    """A fake Todoist world served on a loopback port, with settings pointing at it."""
    clock = Clock(T0)
    world = FakeTodoist(seed=11, clock=clock)
    with serve_in_thread(world) as url:
        settings = Settings(
            todoist={"base_url": url, "timeout_s": 0.5, "backoff_initial_s": 0.01, "history_days": 30, **todoist},
            vault={"keys": [Fernet.generate_key().decode()]},
        )
        db_url = f"sqlite:///{tmp_path / 'db' / 'app.db'}"
        migrate(db_url)
        yield Env(
            world, clock, settings, engine_for(db_url), Lake(tmp_path / "lake"), Vault(settings.vault.keys),
            tmp_path / "db", [],
        )  # fmt: skip


def make_user(world: FakeTodoist) -> tuple[FakeUser, dict[str, str]]:
    user = world.add_user()
    inbox = world.add_project(user, "Inbox", inbox=True)["id"]
    garden = world.add_project(user, "Garden")["id"]
    return user, {"inbox": inbox, "garden": garden}


def plain(world: FakeTodoist, user: FakeUser, project: str, content: str, **kw: Any) -> str:
    fields = {"due": None, "deadline": None, "duration": None, "labels": [], "priority": 1, "description": ""}
    return str(world.add_task(user, project_id=project, content=content, **{**fields, **kw})["id"])


def state(env: Env, user: FakeUser) -> dict[str, tuple[str, bool, str | None]]:
    """content, checked, due date of every live task."""
    return {
        t.content: (t.project_id, t.checked, t.due.date if t.due else None)
        for t in current_tasks(env.lake, user.todoist_id).values()
    }
