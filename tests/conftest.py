"""Test set-up: every test session gets its own ./var in a temporary folder, the offline switches
are on, and integration fixtures find PostgreSQL, Redis and NATS or skip with a reason (fail
instead under ``OO_REQUIRE_SERVICES=1``)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

_VAR = Path(tempfile.mkdtemp(prefix="oo-test-var-"))
os.environ["OO_PATHS__VAR_DIR"] = str(_VAR)
for _key in ("OO_DB__URL", "OO_BUS__NATS_URL", "OO_REDIS__URL", "OO_LAKE__ROOT", "OO_MLFLOW__TRACKING_URI"):
    os.environ.pop(_key, None)  # unit tests run on the embedded defaults

from oo.runtime import configure, tool_homes  # noqa: E402
from oo.settings import get_settings  # noqa: E402

os.environ.update(tool_homes(_VAR))  # override the Makefile's ./var homes: tests never touch ./var
configure()

collect_ignore_glob = ["oo/launcher_standins/*"]  # programs the launcher's tests run, never imported

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/15"
NATS_URL = "nats://127.0.0.1:4222"


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, url: str) -> str:
    """Return ``url`` when the service answers; otherwise skip (or fail when services are required)."""
    if _reachable(url):
        return url
    message = f"{name} is not reachable at {url}"
    if get_settings().require_services:
        pytest.fail(message + " and OO_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message + " (set OO_REQUIRE_SERVICES=1 to fail instead)")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    base = need_service("PostgreSQL", PG_URL)
    import psycopg

    name = f"oo_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + f"/{name}"
    yield url
    from oo.db import engine_for

    engine_for.cache_clear()
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The local PostgreSQL server's URL (its ``test`` database), for session-scoped fixtures."""
    return need_service("PostgreSQL", PG_URL)


@pytest.fixture
def nats_url() -> str:
    """The local NATS JetStream server."""
    return need_service("NATS", NATS_URL)


@pytest.fixture
def redis_url() -> str:
    """The local Redis server (database 15, for tests)."""
    return need_service("Redis", REDIS_URL)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file."""
    return f"sqlite:///{tmp_path / 'app.db'}"


# -- a real browser ------------------------------------------------------------------------------
# A real browser for end-to-end tests: Playwright driving Debian's Chromium (``/usr/bin/chromium``,
# installed by ``.ci/run``; Playwright's own browser download is not reachable here).
#
# The flags are the ones known to work on these machines: as root Chromium needs ``--no-sandbox``,
# and without the background-networking switches it keeps trying to reach Google's hosts.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium for one test; skips without /usr/bin/chromium (fails instead under
    OO_REQUIRE_SERVICES=1: CI installs it).

    Per test, not per session: Playwright's sync API keeps an event loop running while it is
    open, and ``asyncio.run`` in any later test on the same worker would then fail."""
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        message = f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run does)"
        if get_settings().require_services:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            args=CHROMIUM_FLAGS,
            headless=True,
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page in its own context (no cookies or storage shared between tests)."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()
