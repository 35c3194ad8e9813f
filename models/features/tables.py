"""The feature tables: DuckDB SQL over the lake, staged, validated, then published for Feast.

Every table is a history: each row holds what was true about one entity from its
``event_timestamp`` on, computed only from lake rows at or before that time, so Feast's
point-in-time join never leaks the future into a training row. Rows are written

- at every event that changes a value (a Todoist snapshot, a decision that showed a task, a
  reaction),
- at every UTC midnight while a 1/7/28-day window may still be shrinking (reactions, rhythm),
- at ``as_of``, the latest state of every entity that changed since the published table (all of
  them on a first build), so that incremental materialization finds every changed entity's latest
  values, including ones late events changed; the latest-state rows of earlier runs stay, as the
  history of what was materialized (:func:`incremental`).

A run builds the tables into a staging folder (:func:`build`), validates them against their
contracts with Great Expectations (:func:`validate`), and only then moves them to where the Feast
sources read them (:func:`publish`). A table that fails validation is never published, so it is
never materialized and the online store keeps its values.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from data_contracts.arrow import arrow_schema
from data_contracts.feature_tables import FEATURE_TABLES, KINDS, REACTIONS
from data_contracts.features import HOUR_BUCKETS, WINDOWS
from oo.lake import DATASETS, Lake

__all__ = ["FeatureValidationError", "TableReport", "build", "publish", "validate", "connect_lake"]


class FeatureValidationError(ValueError):
    """A feature table broke its contract; it was not published (nor materialized)."""

    def __init__(self, reasons: dict[str, list[str]]) -> None:
        self.reasons = reasons
        lines = [f"{table}: {reason}" for table, rs in reasons.items() for reason in rs]
        super().__init__("feature tables failed validation, not materialized:\n  " + "\n  ".join(lines))


@dataclass(frozen=True)
class TableReport:
    """What :func:`build` wrote for one table."""

    table: str
    path: str
    rows: int


def connect_lake(lake: Lake, timezones: Mapping[str, str] | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per lake dataset (empty ones too) and ``user_tz``."""
    con = lake.connect()
    con.execute("SET TimeZone = 'UTC'")  # date_trunc('day', ...) means UTC midnight, whatever the host's zone
    present = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    for name, model in DATASETS.items():
        if name not in present:
            empty = arrow_schema(model).empty_table()
            con.register(f"_{name}_empty", empty)
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_empty")
    tz = pa.table(
        {"user_id": list((timezones or {}).keys()), "tz": list((timezones or {}).values())},
        schema=pa.schema([("user_id", pa.string()), ("tz", pa.string())]),
    )
    con.register("user_tz", tz)
    return con


# -- SQL -----------------------------------------------------------------------------------------
# The bound parameter $as_of (TIMESTAMPTZ) is the run's "now": nothing after it is read.

_TASK_ATTRIBUTES = """
WITH snap AS (
    SELECT
        id AS task_id, user_id, project_id, synced_at AS event_timestamp,
        CAST(priority AS DOUBLE) AS priority,
        CAST(epoch(added_at) AS DOUBLE) AS added_ts,
        CAST(due IS NOT NULL AS DOUBLE) AS has_due_date,
        CAST(due IS NOT NULL AND contains(due.date, 'T') AS DOUBLE) AS has_due_time,
        CAST(coalesce(due.is_recurring, false) AS DOUBLE) AS is_recurring,
        CASE
            WHEN due IS NULL THEN NULL
            WHEN contains(due.date, 'T') THEN CAST(epoch(CAST(replace(due.date, 'Z', '') AS TIMESTAMP)) AS DOUBLE)
            ELSE CAST(epoch(CAST(CAST(due.date AS DATE) AS TIMESTAMP) + INTERVAL 1 DAY) AS DOUBLE)
        END AS due_ts,
        CAST(due IS NOT NULL AND NOT ends_with(due.date, 'Z') AS DOUBLE) AS due_floating,
        CAST(deadline IS NOT NULL AS DOUBLE) AS has_deadline,
        CAST(deadline.date - DATE '1970-01-01' AS DOUBLE) AS deadline_day,
        CAST(CASE duration.unit WHEN 'minute' THEN duration.amount WHEN 'day' THEN duration.amount * 1440
             ELSE 0 END AS DOUBLE) AS duration_minutes,
        CAST(len(labels) AS DOUBLE) AS label_count,
        CAST(length(content) AS DOUBLE) AS content_length
    FROM todoist_tasks
    WHERE synced_at <= $as_of
    QUALIFY row_number() OVER (PARTITION BY id, synced_at ORDER BY user_id) = 1
),
latest AS (
    SELECT * REPLACE ($as_of AS event_timestamp) FROM snap
    QUALIFY row_number() OVER (PARTITION BY task_id ORDER BY event_timestamp DESC, user_id) = 1
)
SELECT *, $as_of AS created FROM (
    SELECT * FROM snap UNION ALL SELECT * FROM latest
)
QUALIFY row_number() OVER (PARTITION BY task_id, event_timestamp) = 1
ORDER BY task_id, event_timestamp
"""

_TASK_ENGAGEMENT = """
WITH shown AS (
    -- a decision shows its task just after it is made: the decision itself must not see it
    SELECT list_filter(candidates, lambda c: c.candidate_id = chosen_id)[1].task_id AS task_id,
           decided_at + INTERVAL 1 MILLISECOND AS ts, 1.0 AS shown, 0.0 AS snoozed
    FROM decisions WHERE decided_at <= $as_of
),
snoozes AS (
    SELECT list_filter(d.candidates, lambda c: c.candidate_id = r.candidate_id)[1].task_id AS task_id,
           min(r.occurred_at) AS ts, 0.0 AS shown, 1.0 AS snoozed
    FROM reactions r JOIN decisions d USING (decision_id)
    WHERE r.reaction = 'snooze' AND r.occurred_at <= $as_of
    GROUP BY ALL
),
ev AS (
    SELECT task_id, ts, shown, snoozed FROM shown WHERE task_id IS NOT NULL
    UNION ALL
    SELECT task_id, ts, shown, snoozed FROM snoozes WHERE task_id IS NOT NULL
),
tasks AS (SELECT DISTINCT task_id FROM ev),
rows AS (
    SELECT task_id, ts, shown, snoozed FROM ev
    UNION ALL
    SELECT task_id, $as_of, 0.0, 0.0 FROM tasks
)
SELECT task_id, ts AS event_timestamp,
       sum(shown) OVER w AS times_shown, sum(snoozed) OVER w AS times_snoozed,
       $as_of AS created
FROM rows
WINDOW w AS (PARTITION BY task_id ORDER BY ts RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
QUALIFY row_number() OVER (PARTITION BY task_id, ts) = 1
ORDER BY task_id, event_timestamp
"""

_GRID = """
grid AS (
    SELECT user_id, unnest(generate_series(
        date_trunc('day', min(ts)) + INTERVAL 1 DAY,
        least(date_trunc('day', $as_of), date_trunc('day', max(ts)) + INTERVAL 29 DAY),
        INTERVAL 1 DAY)) AS ts
    FROM ev GROUP BY user_id
    UNION ALL
    SELECT DISTINCT user_id, $as_of AS ts FROM ev
)"""


def _span(days: int) -> str:
    """A window of ``days`` that excludes its start: an event exactly ``days`` old has left it."""
    return f"INTERVAL '{days * 86_400_000_000 - 1} microseconds'"


def _user_reactions_sql() -> str:
    counts: list[str] = []
    for w in WINDOWS:
        frame = f"(PARTITION BY user_id ORDER BY ts RANGE BETWEEN {_span(w)} PRECEDING AND CURRENT ROW)"
        counts.append(f"sum(n) OVER {frame} AS reactions_{w}d")
        counts += [f"sum(n * is_{r}) OVER {frame} AS {r}_{w}d" for r in REACTIONS]
    frame28 = f"(PARTITION BY user_id ORDER BY ts RANGE BETWEEN {_span(28)} PRECEDING AND CURRENT ROW)"
    for g in (*KINDS, *HOUR_BUCKETS):
        col = "kind" if g in KINDS else "bucket"
        counts.append(f"sum(n * coalesce(CAST({col} = '{g}' AS DOUBLE), 0.0)) OVER {frame28} AS reactions_28d_{g}")
        for r in ("done", "dismiss"):
            counts.append(
                f"sum(n * is_{r} * coalesce(CAST({col} = '{g}' AS DOUBLE), 0.0)) OVER {frame28} AS {r}_28d_{g}"
            )
    counts.append(
        "max(CASE WHEN n > 0 THEN CAST(epoch(ts) AS DOUBLE) END) OVER "
        "(PARTITION BY user_id ORDER BY ts RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS last_reaction_ts"
    )

    def rate(num: str, den: str) -> str:
        return f"CASE WHEN {den} > 0 THEN {num} / {den} ELSE 0.0 END"

    rates = [f"{rate(f'{r}_{w}d', f'reactions_{w}d')} AS {r}_rate_{w}d" for w in WINDOWS for r in REACTIONS]
    for g in (*KINDS, *HOUR_BUCKETS):
        rates += [f"{rate(f'{r}_28d_{g}', f'reactions_28d_{g}')} AS {r}_rate_28d_{g}" for r in ("done", "dismiss")]
    bucket = " ".join(f"WHEN {i} THEN '{b}'" for i, b in enumerate(HOUR_BUCKETS))
    return f"""
WITH react AS (
    SELECT r.user_id, r.occurred_at AS ts, r.reaction,
           list_filter(d.candidates, lambda c: c.candidate_id = r.candidate_id)[1].kind AS kind,
           CASE hour(timezone(coalesce(z.tz, 'UTC'), r.occurred_at)) // 6 {bucket} END AS bucket
    FROM reactions r
    LEFT JOIN decisions d USING (decision_id)
    LEFT JOIN user_tz z ON z.user_id = r.user_id
    WHERE r.occurred_at <= $as_of
    -- the same reaction to the same decision sent twice counts once
    QUALIFY row_number() OVER (PARTITION BY r.decision_id, r.reaction ORDER BY r.occurred_at, r.event_id) = 1
),
ev AS (SELECT user_id, ts FROM react),
{_GRID},
rows AS (
    SELECT user_id, ts, 1.0 AS n, CAST(reaction = 'done' AS DOUBLE) AS is_done,
           CAST(reaction = 'snooze' AS DOUBLE) AS is_snooze, CAST(reaction = 'dismiss' AS DOUBLE) AS is_dismiss,
           kind, bucket
    FROM react
    UNION ALL
    SELECT user_id, ts, 0.0, 0.0, 0.0, 0.0, NULL, NULL FROM grid
),
counted AS (
    SELECT user_id, ts, {", ".join(counts)} FROM rows
    QUALIFY row_number() OVER (PARTITION BY user_id, ts ORDER BY n DESC) = 1
)
SELECT user_id, ts AS event_timestamp, * EXCLUDE (user_id, ts), {", ".join(rates)}, $as_of AS created
FROM counted
ORDER BY user_id, event_timestamp
"""


_USER_RHYTHM = f"""
WITH done AS (
    SELECT c.user_id, c.completed_at AS ts, timezone(coalesce(z.tz, 'UTC'), c.completed_at) AS local
    FROM todoist_completions c LEFT JOIN user_tz z ON z.user_id = c.user_id
    WHERE c.completed_at <= $as_of
),
ev AS (SELECT user_id, ts FROM done),
{_GRID},
rows AS (
    SELECT user_id, ts, 1.0 AS n, hour(local) + minute(local) / 60.0 AS hour,
           CAST(isodow(local) >= 6 AS DOUBLE) AS weekend
    FROM done
    UNION ALL
    SELECT user_id, ts, 0.0, NULL, NULL FROM grid
),
windowed AS (
    SELECT user_id, ts, n, sum(n) OVER w AS n28, median(hour) OVER w AS med_hour, avg(weekend) OVER w AS weekend
    FROM rows
    WINDOW w AS (PARTITION BY user_id ORDER BY ts RANGE BETWEEN {_span(28)} PRECEDING AND CURRENT ROW)
)
SELECT user_id, ts AS event_timestamp,
       n28 / 28.0 AS completions_per_day_28d,
       coalesce(med_hour, 12.0) AS usual_active_hour,
       coalesce(weekend, 2.0 / 7.0) AS weekend_share_28d,
       $as_of AS created
FROM windowed
QUALIFY row_number() OVER (PARTITION BY user_id, ts ORDER BY n DESC) = 1
ORDER BY user_id, event_timestamp
"""

SQL: dict[str, str] = {
    "task_attributes": _TASK_ATTRIBUTES,
    "task_engagement": _TASK_ENGAGEMENT,
    "user_reactions": _user_reactions_sql(),
    "user_rhythm": _USER_RHYTHM,
}
"""The DuckDB query of each feature table."""


def _columns(table: str) -> list[str]:
    return list(FEATURE_TABLES[table].model_fields)


def compute(con: duckdb.DuckDBPyConnection, table: str, as_of: datetime) -> pa.Table:
    """One feature table as of ``as_of``, with its contract's columns in order."""
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    result = con.sql(SQL[table], params={"as_of": as_of.astimezone(UTC)}).to_arrow_table()
    return result.select(_columns(table))


_KEYS = {
    "task_attributes": "task_id",
    "task_engagement": "task_id",
    "user_reactions": "user_id",
    "user_rhythm": "user_id",
}


def incremental(
    con: duckdb.DuckDBPyConnection, table: str, current: pa.Table, previous: Path, as_of: datetime
) -> pa.Table:
    """``current`` with the latest-state rows at ``as_of`` kept only for entities that changed
    since ``previous`` (the published table), and ``previous``'s own latest-state rows carried over.

    Incremental materialization then writes only what changed, and the offline store keeps, as
    history, the rows that were materialized: what serving read is what training reads. A row
    exactly at ``as_of`` counts as a latest-state row; an entity new since ``previous`` (a task
    whose first snapshot is stamped exactly at ``as_of``) keeps its latest-state row.
    """
    key = _KEYS[table]
    cols = ", ".join(f'"{c}"' for c in _columns(table) if c != "created")
    con.register("_current", current)
    sql = f"""
    WITH base AS (SELECT * FROM _current WHERE event_timestamp < $as_of),
    prev AS (SELECT * FROM read_parquet($previous)),
    changed AS (
        SELECT DISTINCT {key} FROM (SELECT {cols} FROM base EXCEPT SELECT {cols} FROM prev)
        UNION SELECT {key} FROM _current WHERE event_timestamp >= $as_of AND {key} NOT IN (SELECT {key} FROM prev)
    ),
    carried AS (
        SELECT p.* FROM prev p ANTI JOIN base b ON p.{key} = b.{key} AND p.event_timestamp = b.event_timestamp
        WHERE p.event_timestamp < $as_of
    )
    SELECT * FROM (
        SELECT * FROM base
        UNION ALL BY NAME SELECT * FROM carried
        UNION ALL BY NAME
        SELECT * FROM _current WHERE event_timestamp >= $as_of AND {key} IN (SELECT {key} FROM changed)
    ) ORDER BY {key}, event_timestamp
    """
    try:
        result = con.sql(sql, params={"as_of": as_of.astimezone(UTC), "previous": str(previous)}).to_arrow_table()
    finally:
        con.unregister("_current")
    return result.select(_columns(table)).cast(current.schema)


def build(
    lake: Lake,
    out_dir: Path,
    as_of: datetime,
    timezones: Mapping[str, str] | None = None,
    previous: Path | None = None,
) -> list[TableReport]:
    """Compute every feature table as of ``as_of`` into ``out_dir`` (a staging folder).

    With ``previous`` (the folder of the published tables), each table is made incremental
    against its published version (:func:`incremental`); without it, or for a table not yet
    published, every entity gets a latest-state row.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    with connect_lake(lake, timezones) as con:
        for table in SQL:
            data = compute(con, table, as_of)
            if previous is not None and (previous / f"{table}.parquet").exists():
                data = incremental(con, table, data, previous / f"{table}.parquet", as_of)
            path = out_dir / f"{table}.parquet"
            tmp = path.with_suffix(".parquet.tmp")
            pq.write_table(data, tmp, compression="zstd")
            os.replace(tmp, path)
            reports.append(TableReport(table=table, path=str(path), rows=data.num_rows))
    return reports


def validate(staging: Path, max_reasons: int = 5) -> dict[str, int]:
    """Check every staged table against its contract's Great Expectations suite.

    Returns the row count per table; raises :class:`FeatureValidationError` naming each failing
    expectation, value and row count when any table breaks its contract (or is missing).
    """
    from data_contracts.expectations import failing_rows

    counts: dict[str, int] = {}
    problems: dict[str, list[str]] = {}
    for table, model in FEATURE_TABLES.items():
        path = staging / f"{table}.parquet"
        if not path.exists():
            problems[table] = [f"missing: {path}"]
            continue
        frame = pq.read_table(path).to_pandas()
        counts[table] = len(frame)
        failures = failing_rows(model, frame)
        if failures:
            reasons: dict[str, int] = {}
            for row_reasons in failures.values():
                for reason in row_reasons:
                    reasons[reason] = reasons.get(reason, 0) + 1
            top = sorted(reasons.items(), key=lambda kv: -kv[1])[:max_reasons]
            problems[table] = [f"{len(failures)} of {len(frame)} rows failed"] + [f"{n} x {r}" for r, n in top]
    if problems:
        raise FeatureValidationError(problems)
    return counts


def publish(staging: Path, live: Path) -> list[str]:
    """Move validated tables from ``staging`` to ``live`` (each with an atomic rename)."""
    live.mkdir(parents=True, exist_ok=True)
    moved = []
    for table in FEATURE_TABLES:
        src = staging / f"{table}.parquet"
        if src.exists():
            os.replace(src, live / src.name)
            moved.append(table)
    shutil.rmtree(staging, ignore_errors=True)
    return moved
