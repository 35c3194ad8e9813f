"""App API test set-up: one migrated database per backend and test session (SQLite always,
PostgreSQL when reachable), emptied between tests; a fake serving server; a settable clock; and a
client on the real app (``create_app``) with its services pointing at all of that."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, delete

import app_api.tables  # noqa: F401  (the app's tables join the metadata)
from app_api.main import create_app
from app_api.services import Services, build
from oo.bus import InProcessBus
from oo.fakes.serving import FakeServingServer
from oo.settings import AppSettings, DBSettings, FeastSettings, LakeSettings, PathsSettings, Settings, VaultSettings
from oo.tables import Base

PASSWORD = "correct horse battery staple"


class Clock:
    """A clock the test moves."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 28, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture(scope="session")
def fake_serving() -> Iterator[FakeServingServer]:
    server = FakeServingServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_database(pg_server: str) -> Iterator[str]:
    """One PostgreSQL database for the session's app tests, dropped at the end."""
    base = pg_server
    import psycopg

    name = f"oo_app_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + f"/{name}"
    from oo.db import engine_for

    for eng in [engine_for(base.rsplit("/", 1)[0] + f"/{name}")]:
        eng.dispose()
    engine_for.cache_clear()
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('appdb') / 'app.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The app database URL, once per backend."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_database"))
    return str(request.getfixturevalue("pg_database"))


def empty(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_settings(tmp_path: Path, db_url: str, fake_serving: FakeServingServer) -> Callable[..., Settings]:
    def make(**app: Any) -> Settings:
        return Settings(
            paths=PathsSettings(var_dir=tmp_path / "var"),
            feast=FeastSettings(project=f"t_{uuid.uuid4().hex[:10]}"),
            db=DBSettings(url=db_url),
            lake=LakeSettings(root=tmp_path / "lake"),
            vault=VaultSettings(keys=[SecretStr(Fernet.generate_key().decode())]),
            app=AppSettings(serving_url=fake_serving.url, **({"run_workers": False} | app)),
        )

    return make


@pytest.fixture
def services(
    make_settings: Callable[..., Settings], clock: Clock, fake_serving: FakeServingServer
) -> Iterator[Services]:
    s = build(make_settings(), bus=InProcessBus())
    s.clock = clock
    empty(s.engine)
    fake_serving.world.reset()
    yield s
    s.close()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services), raise_server_exceptions=False) as c:
        yield c


@dataclass
class Account:
    """A registered user and a ready ``Authorization`` header."""

    id: str
    email: str
    tokens: dict[str, Any]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}

    def renew(self, client: TestClient) -> None:
        """New tokens (after the test moved the clock past the access token's life)."""
        r = client.post("/v1/auth/refresh", json={"refresh_token": self.tokens["refresh_token"]})
        assert r.status_code == 200, r.text
        self.tokens = r.json()


def register(client: TestClient, email: str) -> Account:
    r = client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    tokens = r.json()
    me = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    return Account(id=me["id"], email=email, tokens=tokens)


@pytest.fixture
def alice(client: TestClient) -> Account:
    return register(client, "alice@example.org")


@pytest.fixture
def bob(client: TestClient) -> Account:
    return register(client, "bob@example.org")
