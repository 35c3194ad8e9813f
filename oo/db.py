"""The app database: one SQLAlchemy 2 engine for SQLite (default) or PostgreSQL (psycopg 3).

Schema changes go through Alembic (``oo/migrations``); :func:`migrate` upgrades to head and is
what ``make run``, the tests and deployments call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


def _normalise(url: str) -> str:
    # SQLAlchemy 2.1 maps postgresql:// to psycopg 3 already; older URLs name psycopg2.
    if url.startswith(("postgres://", "postgresql+psycopg2://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@lru_cache(maxsize=8)
def engine_for(url: str, echo: bool = False, synchronous: Literal["FULL", "NORMAL"] | None = None) -> Engine:
    """One pooled engine per URL. SQLite gets foreign keys, WAL and a busy timeout, and
    ``synchronous`` when given (``NORMAL``: commits without the fsync; SQLite's default is FULL)."""
    url = _normalise(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # As many pooled connections as the app's worker threads (Starlette's pool is 40), so a
        # burst of requests queues on SQLite's own lock rather than failing at the pool.
        eng = create_engine(url, echo=echo, connect_args={"timeout": 30}, pool_size=40, max_overflow=10)

        @event.listens_for(eng, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            if synchronous is not None:
                cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.close()

        return eng
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=20, max_overflow=20)


def get_engine() -> Engine:
    """The engine named by the settings."""
    from oo.settings import get_settings

    s = get_settings()
    return engine_for(s.db_url, s.db.echo)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    factory = sessionmaker(engine or get_engine(), expire_on_commit=False)
    with factory() as session, session.begin():
        yield session


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    """An Alembic config pointing at ``oo/migrations`` and ``url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", _normalise(url).replace("%", "%%"))
    return cfg


def migrate(url: str | None = None) -> None:
    """Upgrade the app database to the newest migration (idempotent)."""
    from alembic import command

    if url is None:
        from oo.settings import get_settings

        url = get_settings().db_url
    engine_for(url)  # creates the SQLite folder
    command.upgrade(alembic_config(url), "head")
