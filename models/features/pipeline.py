"""The features DAG's steps, one library call each: build, validate, publish + apply, materialize,
training examples. Each step is idempotent over its run and says what it did.

A run stages its tables under ``<feast dir>/staging/<run id>``; only a validated staging folder is
published to where the Feast sources read, so a table that fails its contract is never
materialized and the online store keeps what it had.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.features import tables as feature_tables
from models.features.tables import FeatureValidationError
from oo import feature_store
from oo.settings import get_settings

log = logging.getLogger(__name__)

__all__ = [
    "FeatureValidationError",
    "build",
    "materialize",
    "publish_and_apply",
    "staging_dir",
    "training_examples",
    "user_timezones",
    "validate",
]


def staging_dir(run_id: str) -> Path:
    """The staging folder of one run (run ids are made safe for a path)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)
    return get_settings().feast_dir / "staging" / safe


def user_timezones() -> dict[str, str]:
    """Each user's timezone from the app database (``users.timezone``); empty when the app
    database has no users table yet (every user then counts as UTC)."""
    from sqlalchemy import select
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from oo.db import session_scope
    from oo.tables import User

    try:
        with session_scope() as s:
            return {str(uid): str(tz) for uid, tz in s.execute(select(User.id, User.timezone)).all()}
    except (OperationalError, ProgrammingError) as exc:
        log.warning("no user timezones (app database not migrated?): %s; using UTC", exc.__class__.__name__)
        return {}


def build(run_id: str, as_of: str | None = None) -> dict[str, Any]:
    """Compute the feature tables from the lake into the run's staging folder."""
    from oo.lake import get_lake

    when = datetime.fromisoformat(as_of) if as_of else datetime.now(UTC)
    staging = staging_dir(run_id)
    reports = feature_tables.build(get_lake(), staging, when, user_timezones(), previous=feature_store.tables_dir())
    return {"staging": str(staging), "as_of": when.isoformat(), "rows": {r.table: r.rows for r in reports}}


def validate(staging: str) -> dict[str, int]:
    """Great Expectations over the staged tables; raises FeatureValidationError with the reasons."""
    try:
        return feature_tables.validate(Path(staging))
    except feature_tables.FeatureValidationError as exc:
        log.error("%s", exc)
        raise


def publish_and_apply(staging: str) -> list[str]:
    """Publish the validated tables where the Feast sources read them; ``feast apply`` the repo."""
    moved = feature_tables.publish(Path(staging), feature_store.tables_dir())
    feature_store.apply()
    return moved


def materialize(end: str | None = None) -> str:
    """Incremental materialization into the online store up to ``end`` (default now)."""
    store = feature_store.get_store()
    until = datetime.fromisoformat(end) if end else datetime.now(UTC)
    store.materialize_incremental(end_date=until)
    return until.isoformat()


def training_examples(as_of: str | None = None) -> int:
    """Training rows for decisions whose reward window closed; returns how many were written."""
    from models.features.datasets import build_training_examples
    from oo.lake import get_lake

    when = datetime.fromisoformat(as_of) if as_of else datetime.now(UTC)
    s = get_settings()
    rows = build_training_examples(get_lake(), feature_store.get_store(), when, s.reward, user_timezones())
    return len(rows)
