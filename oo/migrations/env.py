"""Alembic environment: runs migrations against the URL set by :func:`oo.db.alembic_config`."""

from alembic import context
from sqlalchemy import pool

from oo.db import engine_for
from oo.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    connectable = engine_for(url) if url else None
    assert connectable is not None, "sqlalchemy.url is not set"
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


_ = pool
if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
