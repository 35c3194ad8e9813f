"""A request's database session always goes back to the pool, even when the request is cancelled
(a client that gives up): otherwise every cancelled request leaks a connection until the pool
runs dry and the whole app waits on it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import anyio.to_thread
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


@pytest.mark.anyio
async def test_a_session_closes_without_waiting_for_a_worker_thread(tmp_path: Path) -> None:
    """Under load every worker thread may be waiting for a pooled connection; a finished request
    that holds one must give it back without first needing a thread (else: deadlock)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}", pool_size=1, max_overflow=0, pool_timeout=1)
    services = cast(Any, SimpleNamespace(engine=engine))
    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens = limiter.total_tokens
    limiter.total_tokens = 1
    try:
        await limiter.acquire()  # every worker thread busy
        try:
            dependency = get_session(services)
            session = await dependency.__anext__()
            session.execute(text("select 1"))
            with anyio.fail_after(5), pytest.raises(StopAsyncIteration):
                await dependency.__anext__()
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        finally:
            limiter.release()
    finally:
        limiter.total_tokens = tokens
        engine.dispose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
