"""A request's database session always goes back to the pool, even when the request is cancelled
(a client that gives up): otherwise every cancelled request leaks a connection until the pool
runs dry and the whole app waits on it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import pytest
from sqlalchemy import create_engine, text

from app_api.deps import get_session


@pytest.mark.anyio
async def test_a_cancelled_requests_session_gives_its_connection_back(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}", pool_size=1, max_overflow=0, pool_timeout=1)
    services = cast(Any, SimpleNamespace(engine=engine))
    with anyio.CancelScope() as scope:
        dependency = get_session(services)
        session = await dependency.__anext__()
        session.execute(text("select 1"))  # the request holds a connection, in a transaction
        assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
        scope.cancel()  # the client went away: FastAPI closes the dependency while cancelled
        with pytest.raises(StopAsyncIteration):
            await dependency.__anext__()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    engine.dispose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
