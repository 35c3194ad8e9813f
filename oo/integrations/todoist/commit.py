"""Commit: write the staged rows to the lake, then each user's cursor to the app database."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select

from data_contracts import QuarantinedRow
from oo.integrations.todoist.accounts import PROVIDER
from oo.integrations.todoist.fetch import Fetched
from oo.integrations.todoist.stage import Staged
from oo.lake import Lake
from oo.tables import Integration, utcnow


def commit(lake: Lake, staged: Staged) -> None:
    """Write the staged rows (raw payloads and quarantine first: nothing is lost)."""
    raw = staged.tables.get("todoist_raw")
    if raw is not None and raw.num_rows:
        lake.write_table("todoist_raw", raw)
    write_quarantine(lake, staged.quarantined)
    for dataset in ("todoist_projects", "todoist_tasks", "todoist_completions"):
        table = staged.tables.get(dataset)
        if table is not None and table.num_rows:
            lake.write_table(dataset, table)


def write_quarantine(lake: Lake, rows: Sequence[QuarantinedRow]) -> int:
    """Write the rows not quarantined before: one row per (user, payload hash), whatever the day
    (the lake's own check covers one day's partition). Returns how many were new."""
    fresh: dict[tuple[str | None, str], QuarantinedRow] = {}
    for q in rows:
        fresh.setdefault((q.source, q.row_hash), q)
    if fresh and lake.files("quarantine"):
        hashes = sorted({h for _, h in fresh})
        marks = ", ".join("?" for _ in hashes)
        seen = lake.read("quarantine", where=f"row_hash IN ({marks})", params=hashes, columns=["source", "row_hash"])
        for key in zip(seen.column("source").to_pylist(), seen.column("row_hash").to_pylist(), strict=True):
            fresh.pop(key, None)
    if fresh:
        lake.write("quarantine", list(fresh.values()))
    return len(fresh)


def _save_cursors(engine: Engine, fetched: Sequence[Fetched]) -> None:
    """After the lake writes: each user's new cursor and sync time, in one transaction."""
    from oo.db import session_scope

    by_user = {f.user_id: f for f in fetched}
    with session_scope(engine) as s:
        rows = s.execute(
            select(Integration).where(Integration.provider == PROVIDER, Integration.user_id.in_(by_user))
        ).scalars()
        for row in rows:
            f = by_user[row.user_id]
            row.cursor, row.last_synced_at, row.last_error = f.sync_token, f.synced_at, None
            if f.todoist_user_id:
                row.external_id = f.todoist_user_id
            row.updated_at = utcnow()
