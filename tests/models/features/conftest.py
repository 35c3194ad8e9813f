"""Feature-store test set-up: each module gets its own var dir, lake and Feast project, on the
SQLite or the Redis online store, through the same settings the platform uses."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from oo.settings import Settings, get_settings, settings_env

REDIS_URL = "redis://127.0.0.1:6379/15"


def redis_or_skip() -> str:
    """The local Redis (db 15), or skip (fail under OO_REQUIRE_SERVICES=1), like ``redis_url``."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return REDIS_URL
    except OSError:
        if get_settings().require_services:
            pytest.fail("Redis is not reachable at 127.0.0.1:6379 and OO_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")


@contextmanager
def feature_env(tmp: Path, backend: str) -> Iterator[Settings]:
    """A fresh var dir and Feast project on ``backend`` (``sqlite`` or ``redis``)."""
    env = {"OO_PATHS__VAR_DIR": str(tmp), "OO_FEAST__PROJECT": f"t_{uuid.uuid4().hex[:10]}"}
    if backend == "redis":
        env["OO_REDIS__URL"] = redis_or_skip()
    with settings_env(**env) as s:
        yield s
