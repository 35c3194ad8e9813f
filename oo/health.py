"""Is each store and service healthy? What ``oo status`` prints.

Every check is bounded by a short timeout and never raises: a store that is down is a row that
says so, with the reason. Stores the settings do not configure (NATS, Redis) are reported as
such, and services whose code is not in this checkout as *not built*.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from oo.settings import Settings

State = Literal["ok", "down", "not configured", "not built"]

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Check:
    """One store's or service's health."""

    name: str
    state: State
    where: str
    detail: str = ""


def _guard(name: str, where: str, probe: Callable[[], str]) -> Check:
    """Run ``probe`` (returns a detail, raises when unhealthy) into a :class:`Check`."""
    try:
        return Check(name, "ok", where, probe())
    except Exception as exc:  # any failure of a probe is the answer "down", with its reason
        return Check(name, "down", where, f"{type(exc).__name__}: {exc}"[:300])


def _sql(url: str) -> str:
    from sqlalchemy import create_engine, text

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist yet")
    engine = create_engine(url, connect_args={"connect_timeout": int(TIMEOUT_S)} if "postgresql" in url else {})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    return "SELECT 1 answered"


def check_app_db(settings: Settings) -> Check:
    """The app database answers a query."""
    return _guard("app database", _redact(settings.db_url), lambda: _sql(settings.db_url))


def check_lake(settings: Settings) -> Check:
    """The lake's folder exists (or can be made) and is writable; how many datasets hold data."""

    def probe() -> str:
        root = settings.lake_root
        root.mkdir(parents=True, exist_ok=True)
        marker = root / ".oo-status-probe"
        marker.write_text("ok")
        marker.unlink()
        datasets = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.rglob("*.parquet")))
        return f"{len(datasets)} datasets with data" if datasets else "empty (nothing written yet)"

    return _guard("lake", str(settings.lake_root), probe)


def check_online_store(settings: Settings) -> Check:
    """Feast's online store: Redis answers PING, or the SQLite file opens."""
    if settings.redis.url:
        return _guard("Feast online store", _redact(settings.redis.url), lambda: _redis_ping(str(settings.redis.url)))
    path = settings.feast_dir / "online_store.db"
    return _guard("Feast online store", str(path), lambda: _sql(f"sqlite:///{path}") + " (SQLite)")


def _redis_ping(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        if not client.ping():
            raise ConnectionError("PING was not answered")
        return "PING answered"
    finally:
        client.close()


def check_redis(settings: Settings) -> Check:
    """Redis, when configured."""
    if not settings.redis.url:
        return Check("Redis", "not configured", "OO_REDIS__URL unset (SQLite online store)")
    return _guard("Redis", _redact(settings.redis.url), lambda: _redis_ping(str(settings.redis.url)))


def check_nats(settings: Settings) -> Check:
    """NATS JetStream, when configured: connect and read the account's JetStream info."""
    url = settings.bus.nats_url
    if not url:
        return Check("event bus (NATS)", "not configured", "OO_BUS__NATS_URL unset (in-process bus)")

    async def probe() -> str:
        import nats

        nc = await nats.connect(url, connect_timeout=TIMEOUT_S, allow_reconnect=False, max_reconnect_attempts=0)
        try:
            info = await nc.jetstream().account_info()
            return f"JetStream: {info.streams} streams"
        finally:
            await nc.close()

    return _guard("event bus (NATS)", url, lambda: asyncio.run(asyncio.wait_for(probe(), TIMEOUT_S * 2)))


def check_mlflow(settings: Settings) -> Check:
    """MLflow's tracking store: its database answers, or its server's ``/health``."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        return check_http("MLflow tracking", uri.rstrip("/") + "/health")
    return _guard("MLflow tracking store", _redact(uri), lambda: _sql(uri))


def check_http(name: str, url: str, built: bool = True, why_not_built: str = "", any_status: bool = False) -> Check:
    """A service answers ``url`` with 200 (or anything, with ``any_status``)."""
    if not built:
        return Check(name, "not built", url, why_not_built)

    def probe() -> str:
        response = httpx.get(url, timeout=TIMEOUT_S)
        if not any_status and response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:120]}")
        return f"HTTP {response.status_code}"

    check = _guard(name, url, probe)
    if check.state == "down" and "ConnectError" in check.detail:
        return Check(name, "down", url, "not running (connection refused); `make run` starts it")
    return check


def check_airflow(url: str) -> Check:
    """Airflow's ``/api/v2/monitor/health``: every component it lists is healthy."""

    def probe() -> str:
        body = httpx.get(url, timeout=TIMEOUT_S).raise_for_status().json()
        states = {part: info.get("status") for part, info in body.items() if isinstance(info, dict)}
        bad = {part: state for part, state in states.items() if state not in ("healthy", None)}
        if bad:
            raise RuntimeError(f"unhealthy: {bad}")
        return ", ".join(f"{part} {state}" for part, state in states.items())

    check = _guard("Airflow", url, probe)
    if check.state == "down" and "ConnectError" in check.detail:
        return Check("Airflow", "down", url, "not running (connection refused); `make run` starts it")
    return check


def check_all(settings: Settings, root: Path = ROOT) -> list[Check]:
    """Every store, then every service of the platform."""
    p = settings.platform
    return [
        check_app_db(settings),
        check_lake(settings),
        check_online_store(settings),
        check_mlflow(settings),
        check_nats(settings),
        check_redis(settings),
        check_http("MLflow server", p.url(p.mlflow_port) + "/health"),
        check_http(
            "serving",
            p.url(p.serving_port) + "/readyz",
            built=(root / "serving" / "service.py").exists(),
            why_not_built="serving/service.py is not in this checkout yet",
        ),
        check_http(
            "app API",
            p.url(p.app_api_port) + "/healthz",
            built=(root / "app_api" / "main.py").exists(),
            why_not_built="app_api/main.py is not in this checkout yet",
        ),
        check_airflow(p.url(p.airflow_port) + "/api/v2/monitor/health"),
    ]


def _redact(url: str) -> str:
    """``url`` without its password."""
    with contextlib.suppress(Exception):
        parsed = httpx.URL(url)
        if parsed.password:
            return str(parsed.copy_with(password="***"))
    return url
