"""Fixtures of the Todoist integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.oo.integrations.todoist_env import Env, make_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """A fake Todoist API v1, a fresh app database and lake, settings pointing at them."""
    with make_env(tmp_path) as e:
        yield e
