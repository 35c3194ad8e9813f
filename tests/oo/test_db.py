"""The app database: the same migrations and tables on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select

from oo.db import engine_for, migrate, session_scope
from oo.tables import Integration, User


def check_round_trip(url: str) -> None:
    migrate(url)
    migrate(url)  # idempotent
    engine = engine_for(url)
    assert {"users", "integrations", "processed_events", "alembic_version"} <= set(inspect(engine).get_table_names())
    with session_scope(engine) as s:
        s.add(User(id="u1", email="a@example.org"))
        s.add(Integration(user_id="u1", provider="todoist", token_ciphertext=b"\x00secret", cursor="*"))
    with session_scope(engine) as s:
        integration = s.execute(select(Integration)).scalar_one()
        assert (integration.status, integration.cursor, integration.token_ciphertext) == (
            "active",
            "*",
            b"\x00secret",
        )
        s.delete(s.get(User, "u1"))
    with session_scope(engine) as s:  # deleting a user deletes their integrations
        assert s.execute(select(Integration)).first() is None


def check_no_drift(url: str) -> None:
    """The migration chain builds exactly the tables, columns, types, indexes and keys the code
    declares (the kernel's and the app's): Alembic's autogenerate comparison finds nothing to do."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import app_api.tables  # noqa: F401  # the app's tables, on the same metadata
    from oo.tables import Base

    migrate(url)
    with engine_for(url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diffs == []


def test_migrations_and_tables_on_sqlite(sqlite_url: str) -> None:
    check_round_trip(sqlite_url)
    check_no_drift(sqlite_url)


@pytest.mark.integration
def test_migrations_and_tables_on_postgresql(pg_url: str) -> None:
    check_round_trip(pg_url)
    check_no_drift(pg_url)
