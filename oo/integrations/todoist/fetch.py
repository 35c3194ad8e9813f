"""Fetch: read one user's changes, projects and completion history from the API (network only, no writes)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import SecretStr

from oo.integrations.todoist.client import (
    SyncTokenRefused,
    TodoistClient,
)
from oo.settings import Settings

log = logging.getLogger(__name__)


def completion_windows(
    since: datetime, until: datetime, window: timedelta, overlap: timedelta
) -> list[tuple[datetime, datetime]]:
    """Consecutive ``(since, until)`` windows no longer than ``window``, each overlapping the
    previous one by ``overlap``, covering ``[since, until]``.

    Examples
    --------
    >>> from datetime import UTC
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> ws = completion_windows(t0, t0 + timedelta(days=100), timedelta(days=60), timedelta(days=1))
    >>> [(a.date().isoformat(), b.date().isoformat()) for a, b in ws]
    [('2026-01-01', '2026-03-02'), ('2026-03-01', '2026-04-11')]
    """
    if overlap >= window:
        raise ValueError("the overlap must be shorter than the window")
    out: list[tuple[datetime, datetime]] = []
    start = since
    while True:
        end = min(start + window, until)
        out.append((start, end))
        if end >= until:
            return out
        start = end - overlap


@dataclass
class _Cursor:
    user_id: str
    token: SecretStr
    cursor: str | None
    last_synced_at: datetime | None
    base_url: str | None = None
    demo: bool = False


# -- one user's fetch --------------------------------------------------------------------------------
@dataclass
class Fetched:
    """Everything one user's sync read from the API."""

    user_id: str
    synced_at: datetime
    full_sync: bool
    token_refused: bool
    sync_token: str
    todoist_user_id: str | None
    items: list[Any]
    projects: list[Any]
    completed: list[Any]
    archived: list[Any]
    had_state: bool
    requests: int = 0


def fetch(client: TodoistClient, state: _Cursor, settings: Settings, now: datetime) -> Fetched:
    """Read one user's changes, projects and completion history (network only, no writes)."""
    cfg = settings.todoist
    refused = False
    try:
        body = client.sync(state.cursor or "*")
    except SyncTokenRefused:
        log.info("todoist: sync token of %s refused; full sync", state.user_id)
        refused = True
        body = client.sync("*")
    full = bool(body.get("full_sync", state.cursor is None or refused))
    items = list(body["items"])  # the client checked that both lists are there
    projects = list(body["projects"])
    lag = body.get("full_sync_date_utc")  # checked by the client: aware, or None
    if full and isinstance(lag, datetime) and now - lag > timedelta(minutes=1):
        # big accounts: the full sync is a snapshot from then; the changes since follow
        extra = client.sync(body["sync_token"])
        items += list(extra["items"])
        projects += list(extra["projects"])
        body["sync_token"] = extra["sync_token"]
    had_state = state.last_synced_at is not None
    archived = client.archived_projects() if full and had_state else []
    overlap = timedelta(hours=cfg.window_overlap_hours)
    since = (state.last_synced_at - overlap) if state.last_synced_at else now - timedelta(days=cfg.history_days)
    completed: list[Any] = []
    for start, end in completion_windows(since, now, timedelta(days=cfg.window_days), overlap):
        completed += client.completed(start, end)
    user = body.get("user")
    return Fetched(
        user_id=state.user_id,
        synced_at=now,
        full_sync=full,
        token_refused=refused,
        sync_token=body["sync_token"],
        todoist_user_id=str(user["id"]) if isinstance(user, dict) and "id" in user else None,
        items=items,
        projects=projects,
        completed=completed,
        archived=archived,
        had_state=had_state,
        requests=client.requests,
    )
