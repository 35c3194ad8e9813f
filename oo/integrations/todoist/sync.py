"""Sync each connected user's Todoist into the lake: incremental, validated, idempotent.

One user's sync (:func:`sync_user`; :func:`sync_users` does many, writing the lake in chunks):

1. **Fetch.** ``POST /sync`` with the integration's cursor (its ``sync_token``); with none, or
   when the API refuses it, a full sync (``"*"``). After a full sync of a user synced before,
   ``/projects/archived`` tells archived projects from deleted ones. Completion history comes
   from ``/tasks/completed/by_completion_date`` in overlapping windows (at most 3 months each)
   from the last sync (minus the overlap), or ``history_days`` back on the first sync.
2. **Keep the raw JSON** of every object (``todoist_raw``), valid or not.
3. **Validate.** Each raw task, project and completion is mapped to its contract and checked by
   :func:`data_contracts.validation.split` (pydantic, then the contract's Great Expectations
   suite). Bad rows go to ``quarantine`` with their reasons; good rows go on.
4. **Observe changes.** ``todoist_tasks`` and ``todoist_projects`` hold one row per observed
   state (key: user, id, ``synced_at``). A row identical to the latest one already in the lake
   (apart from ``synced_at``) is not written again, so a re-run writes nothing new. Items with
   ``is_deleted`` are tombstones; after a full resync, ids that disappeared become tombstones
   (tasks of a project that was archived are kept, the project row says it is archived). A
   non-recurring task found in the completion history but still open in the lake is recorded as
   checked (in case deltas leave completed items out).
5. **Commit.** Lake writes first (each atomic and idempotent), then the integration's cursor and
   ``last_synced_at``: a crash in between repeats the fetch, and step 4 makes that harmless.

Failures are per user: a refused token (401, 403 + ``AUTH_INVALID_TOKEN``) marks the integration
``needs_reauth``; any other API failure is recorded in ``last_error``; neither stops the others.
:func:`current_tasks` and :func:`current_projects` give the latest state per id.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import httpx
import pyarrow as pa
from pydantic import SecretStr
from sqlalchemy import Engine, select

from data_contracts import (
    QuarantinedRow,
    Record,
    TodoistCompletion,
    TodoistProject,
    TodoistRawPayload,
    TodoistTask,
)
from data_contracts.arrow import from_table
from data_contracts.validation import quarantine, split
from oo.integrations.todoist.client import (
    MalformedResponse,
    SyncTokenRefused,
    TodoistAuthError,
    TodoistClient,
    TodoistError,
)
from oo.lake import Lake
from oo.settings import Settings
from oo.tables import Integration, User, utcnow
from oo.vault import Vault, VaultError

log = logging.getLogger(__name__)

PROVIDER = "todoist"

TASK_API_FIELDS = frozenset(
    {
        "id", "user_id", "project_id", "section_id", "parent_id", "content", "description", "labels",
        "priority", "due", "deadline", "duration", "child_order", "day_order", "is_collapsed",
        "added_by_uid", "assigned_by_uid", "responsible_uid", "checked", "is_deleted", "added_at",
        "updated_at", "completed_at", "completed_by_uid", "note_count", "collapsed", "v2_id",
        "v2_parent_id", "v2_project_id", "v2_section_id", "sync_id", "meta",
    }
)  # fmt: skip
"""Task fields API v1 documents; any other field is "unknown" (quarantined by default)."""

PROJECT_API_FIELDS = frozenset(
    {
        "id", "name", "color", "parent_id", "child_order", "order", "is_archived", "is_deleted",
        "is_favorite", "is_frozen", "inbox_project", "is_inbox_project", "view_style", "is_collapsed",
        "collapsed", "shared", "is_shared", "can_assign_tasks", "description", "created_at",
        "updated_at", "workspace_id", "folder_id", "v2_id", "v2_parent_id", "sync_id", "role",
        "default_order", "access", "public_access", "is_public",
    }
)  # fmt: skip
"""Project fields API v1 documents (Sync and REST shapes)."""


# -- mapping API JSON to the contracts ------------------------------------------------------------
_OURS = frozenset({"user_id", "synced_at", "schema_version"})
_TASK_KEEP = frozenset(TodoistTask.model_fields) - _OURS
_TASK_KNOWN = TASK_API_FIELDS | frozenset(TodoistTask.model_fields)


def task_row(raw: Mapping[str, Any], keep_unknown: bool = True) -> dict[str, Any]:
    """The contract fields of a raw API task (plus undocumented fields when ``keep_unknown``,
    so that validation names them).

    Examples
    --------
    >>> task_row({"id": "t1", "user_id": "99", "content": "x", "added_by_uid": "99", "colour": 1})
    {'id': 't1', 'content': 'x', 'colour': 1}
    """
    keys = raw.keys() & _TASK_KEEP
    if keep_unknown:
        keys |= raw.keys() - _TASK_KNOWN
    return {k: raw[k] for k in raw if k in keys}


def project_row(raw: Mapping[str, Any], keep_unknown: bool = True) -> dict[str, Any]:
    """The contract fields of a raw API project (Sync or REST shape)."""
    contract = TodoistProject.model_fields
    out = {k: v for k, v in raw.items() if k in contract and k not in ("user_id", "synced_at", "schema_version")}
    if "is_inbox_project" not in out and "inbox_project" in raw:
        out["is_inbox_project"] = raw["inbox_project"]
    if "child_order" not in out and "order" in raw:
        out["child_order"] = raw["order"]
    if keep_unknown:
        out.update({k: v for k, v in raw.items() if k not in PROJECT_API_FIELDS and k not in contract})
    return out


def completion_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A completion record from a raw completed task."""
    due = raw.get("due")
    return {
        "task_id": raw.get("id"),
        "project_id": raw.get("project_id"),
        "content": raw.get("content", ""),
        "completed_at": raw.get("completed_at"),
        "is_recurring": bool(due.get("is_recurring")) if isinstance(due, dict) else False,
    }


def completion_windows(
    since: datetime, until: datetime, window: timedelta, overlap: timedelta
) -> list[tuple[datetime, datetime]]:
    """Consecutive ``(since, until)`` windows no longer than ``window``, each overlapping the
    previous one by ``overlap``, covering ``[since, until]``.

    Examples
    --------
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


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def raw_text(obj: Any) -> str:
    """The JSON text kept for one API object (keys in the order received)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


def _raw_rows(user_id: str, resource: str, rows: Iterable[Any], synced_at: datetime) -> list[dict[str, Any]]:
    """``todoist_raw`` rows (the contract's fields as a dict) for every object, valid or not."""
    out = []
    for row in rows:
        text = raw_text(row)
        oid = row.get("id") if isinstance(row, dict) else None
        out.append(
            {
                "schema_version": 1,
                "user_id": user_id,
                "resource": resource,
                "object_id": str(oid) if oid is not None else None,
                "payload_hash": _hash(text),
                "payload": text,
                "synced_at": synced_at,
            }
        )
    return out


# -- results ----------------------------------------------------------------------------------------
Status = Literal["ok", "failed", "needs_reauth"]


@dataclass
class UserSyncResult:
    """What one user's sync did."""

    user_id: str
    status: Status = "ok"
    full_sync: bool = False
    token_refused: bool = False
    tasks: int = 0
    tombstones: int = 0
    projects: int = 0
    completions: int = 0
    raw: int = 0
    quarantined: int = 0
    requests: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (for XCom)."""
        return asdict(self)


def summarize(results: Sequence[Mapping[str, Any] | UserSyncResult]) -> str:
    """The run's summary: ``todoist sync: N ok, M failed (K users)`` then the counts.

    Examples
    --------
    >>> line = summarize([UserSyncResult("a", tasks=3), UserSyncResult("b", status="needs_reauth")])
    >>> print(line.replace("; ", chr(10)))
    todoist sync: 1 ok, 1 failed (2 users)
    tasks 3, tombstones 0, projects 0, completions 0, quarantined 0
    needs_reauth: b
    """
    rows = [r.as_dict() if isinstance(r, UserSyncResult) else dict(r) for r in results]
    ok = sum(r["status"] == "ok" for r in rows)
    total = {
        k: sum(int(r.get(k, 0)) for r in rows)
        for k in ("tasks", "tombstones", "projects", "completions", "quarantined")
    }
    line = f"todoist sync: {ok} ok, {len(rows) - ok} failed ({len(rows)} users); " + ", ".join(
        f"{k} {v}" for k, v in total.items()
    )
    reauth = [r["user_id"] for r in rows if r["status"] == "needs_reauth"]
    if reauth:
        line += "; needs_reauth: " + ", ".join(reauth)
    failed = [f"{r['user_id']} ({r.get('error')})" for r in rows if r["status"] == "failed"]
    if failed:
        line += "; failed: " + ", ".join(failed)
    return line


# -- the app database side -------------------------------------------------------------------------
def connect_user(engine: Engine, vault: Vault, user_id: str, token: SecretStr, email: str | None = None) -> None:
    """Store ``user_id``'s Todoist token (encrypted) and make the integration active, ready for a
    full sync."""
    from oo.db import session_scope

    with session_scope(engine) as s:
        if s.get(User, user_id) is None:
            s.add(User(id=user_id, email=email))
        integration = s.execute(
            select(Integration).where(Integration.user_id == user_id, Integration.provider == PROVIDER)
        ).scalar_one_or_none()
        if integration is None:
            integration = Integration(user_id=user_id, provider=PROVIDER)
            s.add(integration)
        integration.token_ciphertext = vault.encrypt(token)
        integration.status = "active"
        integration.cursor = None
        integration.last_error = None


def connected_users(engine: Engine) -> list[str]:
    """Users whose Todoist integration is active, sorted."""
    from oo.db import session_scope

    with session_scope(engine) as s:
        q = select(Integration.user_id).where(Integration.provider == PROVIDER, Integration.status == "active")
        return sorted(s.execute(q).scalars())


@dataclass
class _Cursor:
    user_id: str
    token: SecretStr
    cursor: str | None
    last_synced_at: datetime | None


def _load(engine: Engine, vault: Vault, user_id: str) -> _Cursor | None:
    from oo.db import session_scope

    with session_scope(engine) as s:
        row = s.execute(
            select(Integration).where(Integration.user_id == user_id, Integration.provider == PROVIDER)
        ).scalar_one_or_none()
        if row is None or row.status != "active" or row.token_ciphertext is None:
            return None
        last = row.last_synced_at
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=UTC)  # SQLite drops the offset
        return _Cursor(user_id, vault.decrypt(row.token_ciphertext), row.cursor, last)


def _record(engine: Engine, user_id: str, **values: Any) -> None:
    from oo.db import session_scope

    with session_scope(engine) as s:
        row = s.execute(
            select(Integration).where(Integration.user_id == user_id, Integration.provider == PROVIDER)
        ).scalar_one()
        for k, v in values.items():
            setattr(row, k, v)
        row.updated_at = utcnow()


# -- the lake side ----------------------------------------------------------------------------------
def _latest(lake: Lake, dataset: str, model: type[Record], user_id: str) -> dict[str, Any]:
    import duckdb

    if not lake.files(dataset):
        return {}
    names = ", ".join(f'"{n}"' for n in model.model_fields)
    sql = (
        f"SELECT {names} FROM read_parquet(?, hive_partitioning = false, union_by_name = true) "
        "WHERE user_id = ? QUALIFY row_number() OVER (PARTITION BY id ORDER BY synced_at DESC) = 1 ORDER BY id"
    )
    with duckdb.connect() as con:
        table = con.sql(sql, params=[lake.glob(dataset), user_id]).to_arrow_table()
    return {r.id: r for r in from_table(model, table)}  # type: ignore[attr-defined]


def current_tasks(lake: Lake, user_id: str, include_gone: bool = False) -> dict[str, TodoistTask]:
    """The latest observed state of each of ``user_id``'s tasks, by id.

    Deleted tasks are left out unless ``include_gone``; completed ones are in (``checked``).
    """
    rows: dict[str, TodoistTask] = _latest(lake, "todoist_tasks", TodoistTask, user_id)
    return rows if include_gone else {k: v for k, v in rows.items() if not v.is_deleted}


def current_projects(lake: Lake, user_id: str, include_gone: bool = False) -> dict[str, TodoistProject]:
    """The latest observed state of each of ``user_id``'s projects (archived ones included)."""
    rows: dict[str, TodoistProject] = _latest(lake, "todoist_projects", TodoistProject, user_id)
    return rows if include_gone else {k: v for k, v in rows.items() if not v.is_deleted}


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
    items = list(body.get("items") or [])
    projects = list(body.get("projects") or [])
    lag = body.get("full_sync_date_utc")
    if full and isinstance(lag, str):
        try:
            behind = now - datetime.fromisoformat(lag.replace("Z", "+00:00"))
        except ValueError:
            behind = timedelta(0)
        if behind > timedelta(minutes=1):  # big accounts: the full sync is a snapshot from then
            extra = client.sync(body["sync_token"])
            items += list(extra.get("items") or [])
            projects += list(extra.get("projects") or [])
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


# -- turning fetched JSON into lake rows --------------------------------------------------------------
@dataclass
class Staged:
    """What a chunk of users' sync will write: one Arrow table per dataset (the contract's
    schema), the quarantined rows, and per-user counts."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    quarantined: list[QuarantinedRow] = field(default_factory=list)
    results: dict[str, UserSyncResult] = field(default_factory=dict)


def _changed(previous: Record | None, record: Record) -> bool:
    if previous is None:
        return True
    return previous.model_dump(exclude={"synced_at"}) != record.model_dump(exclude={"synced_at"})


def _gx_frame(table: pa.Table) -> Any:
    """The frame the suite checks. Its expectations on nested columns (structs, lists) are
    existence and nullness only (pydantic checks inside them), so those columns become a marker
    with the same nulls: the frame stays hashable (GX fingerprints each batch, and pickles the
    whole frame when a column holds dicts) and converts to pandas without a dict per row."""
    import pyarrow.compute as pc

    columns = []
    for column in table.columns:
        if pa.types.is_nested(column.type):
            column = pc.if_else(pc.is_valid(column), pa.scalar("<nested>"), pa.scalar(None, pa.string()))
        columns.append(column)
    return pa.table(columns, names=table.column_names).to_pandas()


def _gate(
    model: type[Record], dataset: str, records: list[Any], suite: bool, stamp: datetime
) -> tuple[pa.Table, list[Any], list[QuarantinedRow]]:
    """The Arrow table of ``records`` after the contract's Great Expectations suite: rows it
    fails are quarantined with its reasons (the same check as ``split(..., suite=True)``, run on
    the table that is then written, so the table is built once)."""
    from data_contracts.arrow import to_table

    table = to_table(model, records)
    if not suite or not records:
        return table, records, []
    from data_contracts.expectations import failing_rows

    failures = failing_rows(model, _gx_frame(table))
    if not failures:
        return table, records, []
    bad = [
        quarantine(dataset, model, records[i].model_dump_json(), reasons, source="todoist", now=stamp)
        for i, reasons in sorted(failures.items())
    ]
    keep = [i not in failures for i in range(len(records))]
    return table.filter(pa.array(keep)), [r for r, k in zip(records, keep, strict=True) if k], bad


def stage(
    fetched: Sequence[Fetched],
    lake: Lake,
    settings: Settings,
    *,
    suite: bool = True,
) -> Staged:
    """Validate a chunk of users' fetched JSON and decide what to write (no writes).

    Pydantic parses every raw row (``split``); the changed rows are then checked by the
    contract's Great Expectations suite; rows either check refuses go to quarantine.
    """
    from data_contracts.arrow import arrow_schema

    keep_unknown = settings.todoist.unknown_fields == "quarantine"
    out = Staged()
    raws: list[dict[str, Any]] = []
    task_rows: list[Any] = []
    project_rows: list[Any] = []
    completion_rows: list[Any] = []
    non_objects: list[QuarantinedRow] = []
    for f in fetched:
        res = out.results.setdefault(f.user_id, UserSyncResult(f.user_id, full_sync=f.full_sync))
        res.token_refused, res.requests = f.token_refused, f.requests
        mine = (
            _raw_rows(f.user_id, "items", f.items, f.synced_at)
            + _raw_rows(f.user_id, "projects", f.projects, f.synced_at)
            + _raw_rows(f.user_id, "completed", f.completed, f.synced_at)
            + _raw_rows(f.user_id, "archived_projects", f.archived, f.synced_at)
        )
        res.raw = len(mine)
        raws += mine
        stamp = {"user_id": f.user_id, "synced_at": f.synced_at}
        for dataset, model, objects in (
            ("todoist_tasks", TodoistTask, f.items),
            ("todoist_projects", TodoistProject, [*f.projects, *f.archived]),
            ("todoist_completions", TodoistCompletion, f.completed),
        ):
            for raw in objects:
                if not isinstance(raw, dict):  # refused here, so that it counts against its user
                    reason = f"<row>: expected an object, got {type(raw).__name__}"
                    non_objects.append(
                        quarantine(dataset, model, raw_text(raw), [reason], source=f.user_id, now=f.synced_at)
                    )
                    res.quarantined += 1
        task_rows += [{**task_row(raw, keep_unknown), **stamp} for raw in f.items if isinstance(raw, dict)]
        project_rows += [
            {**project_row(raw, keep_unknown), **stamp} for raw in [*f.projects, *f.archived] if isinstance(raw, dict)
        ]
        completion_rows += [
            {**completion_row(raw), "user_id": f.user_id} for raw in f.completed if isinstance(raw, dict)
        ]
    out.tables["todoist_raw"] = pa.Table.from_pylist(raws, schema=arrow_schema(TodoistRawPayload))

    src = "todoist"
    tasks = split(TodoistTask, task_rows, dataset="todoist_tasks", source=src, suite=False)
    projects = split(TodoistProject, project_rows, dataset="todoist_projects", source=src, suite=False)
    completions = split(TodoistCompletion, completion_rows, dataset="todoist_completions", source=src, suite=False)
    bad = tasks.quarantined + projects.quarantined + completions.quarantined

    by_user: dict[str, dict[str, list[Any]]] = {f.user_id: {"t": [], "p": [], "c": []} for f in fetched}
    for t in tasks.valid:
        by_user[t.user_id]["t"].append(t)
    for p in projects.valid:
        by_user[p.user_id]["p"].append(p)
    for c in completions.valid:
        by_user[c.user_id]["c"].append(c)

    all_tasks: list[TodoistTask] = []
    all_projects: list[TodoistProject] = []
    all_completions: list[TodoistCompletion] = []
    for f in fetched:
        new_tasks, new_projects, done = _changes(f, by_user[f.user_id], lake)
        all_tasks += new_tasks
        all_projects += new_projects
        all_completions += done

    when = fetched[0].synced_at if fetched else datetime.now(UTC)
    for dataset, model, records in (
        ("todoist_tasks", TodoistTask, all_tasks),
        ("todoist_projects", TodoistProject, all_projects),
        ("todoist_completions", TodoistCompletion, all_completions),
    ):
        table, kept, refused = _gate(model, dataset, records, suite, when)
        out.tables[dataset] = table
        bad += refused
        for r in kept:
            res = out.results[r.user_id]
            if dataset == "todoist_tasks":
                res.tasks += 1
                res.tombstones += r.is_deleted
            elif dataset == "todoist_projects":
                res.projects += 1
            else:
                res.completions += 1
    for q in bad:  # every one of these was an object carrying its user_id
        owner = _owner_of(q.raw)
        if owner in out.results:
            out.results[owner].quarantined += 1
    out.quarantined = non_objects + bad
    return out


def _changes(
    f: Fetched, mine: dict[str, list[Any]], lake: Lake
) -> tuple[list[TodoistTask], list[TodoistProject], list[TodoistCompletion]]:
    """One user's rows to write: what changed since the latest rows in the lake, tombstones,
    completion records (deduplicated by task and time) and completions seen only in history."""
    known_tasks = current_tasks(lake, f.user_id, include_gone=True) if f.had_state else {}
    known_projects = current_projects(lake, f.user_id, include_gone=True) if f.had_state else {}
    # projects: later rows of the same id win (the archived list after the sync's own list)
    seen_projects, new_projects = _snapshot_changes(mine["p"], known_projects, _deleted_ids(f.projects), f.synced_at)
    gone_projects: set[str] = set()
    if f.full_sync and f.had_state:
        for pid, old in known_projects.items():
            if pid not in seen_projects and not old.is_deleted:
                new_projects.append(old.model_copy(update={"is_deleted": True, "synced_at": f.synced_at}))
                gone_projects.add(pid)
    archived_ids = {p.id for p in seen_projects.values() if p.is_archived} | {
        pid for pid, p in known_projects.items() if p.is_archived and pid not in gone_projects
    }
    seen_tasks, new_tasks = _snapshot_changes(mine["t"], known_tasks, _deleted_ids(f.items), f.synced_at)
    latest = {**known_tasks, **seen_tasks}
    unique: dict[tuple[str, datetime], TodoistCompletion] = {}
    for c in mine["c"]:
        unique.setdefault((c.task_id, c.completed_at), c)
    derived: set[str] = set()
    for c in unique.values():
        prev = latest.get(c.task_id)
        if (
            c.task_id not in seen_tasks
            and prev is not None
            and not c.is_recurring
            and not prev.checked
            and not prev.is_deleted
            and prev.synced_at < c.completed_at
        ):
            row = prev.model_copy(update={"checked": True, "completed_at": c.completed_at, "synced_at": f.synced_at})
            new_tasks.append(row)
            latest[c.task_id] = row
            derived.add(c.task_id)
    if f.full_sync and f.had_state:
        for tid, last in known_tasks.items():
            if tid in seen_tasks or tid in derived or last.is_deleted or last.checked:
                continue
            if last.project_id in archived_ids:
                continue  # the project was archived, not the task deleted
            new_tasks.append(last.model_copy(update={"is_deleted": True, "synced_at": f.synced_at}))
    return new_tasks, new_projects, list(unique.values())


S = TypeVar("S", TodoistTask, TodoistProject)


def _snapshot_changes(
    rows: Iterable[S], known: Mapping[str, S], deleted_ids: Iterable[str], synced_at: datetime
) -> tuple[dict[str, S], list[S]]:
    """The latest row per id seen by this sync (later rows win) and the rows to write: those that
    differ from the last known state, plus tombstones.

    A deleted object may come as a stub (``{"id", "is_deleted": true}``) that the contract refuses
    (it is quarantined and kept raw): its tombstone is made from the last known state instead.
    """
    seen: dict[str, S] = {}
    for r in rows:
        seen[r.id] = r
    new = [r for r in seen.values() if _changed(known.get(r.id), r)]
    for rid in deleted_ids:
        last = known.get(rid)
        if rid not in seen and last is not None and not last.is_deleted:
            tomb = last.model_copy(update={"is_deleted": True, "synced_at": synced_at})
            new.append(tomb)
            seen[rid] = tomb
    return seen, new


def _deleted_ids(objects: Iterable[Any]) -> list[str]:
    return [str(o["id"]) for o in objects if isinstance(o, dict) and o.get("is_deleted") is True and o.get("id")]


def _owner_of(raw: str) -> str | None:
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    owner = payload.get("user_id") if isinstance(payload, dict) else None
    return owner if isinstance(owner, str) else None


def commit(lake: Lake, staged: Staged) -> None:
    """Write the staged rows (raw payloads and quarantine first: nothing is lost)."""
    raw = staged.tables.get("todoist_raw")
    if raw is not None and raw.num_rows:
        lake.write_table("todoist_raw", raw)
    if staged.quarantined:
        lake.write("quarantine", staged.quarantined)
    for dataset in ("todoist_projects", "todoist_tasks", "todoist_completions"):
        table = staged.tables.get(dataset)
        if table is not None and table.num_rows:
            lake.write_table(dataset, table)


# -- the entry points ---------------------------------------------------------------------------------
def _fail(engine: Engine, result: UserSyncResult, exc: Exception) -> UserSyncResult:
    if isinstance(exc, TodoistAuthError):
        result.status, result.error = "needs_reauth", str(exc)
        _record(engine, result.user_id, status="needs_reauth", last_error=str(exc))
        log.warning("todoist: %s needs re-authorisation: %s", result.user_id, exc)
    else:
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        _record(engine, result.user_id, last_error=result.error)
        log.warning("todoist: sync of %s failed: %s", result.user_id, result.error)
    return result


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


def sync_users(
    user_ids: Sequence[str],
    *,
    engine: Engine | None = None,
    lake: Lake | None = None,
    vault: Vault | None = None,
    settings: Settings | None = None,
    now: Callable[[], datetime] | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] | None = None,
    chunk: int = 1,
    suite: bool = True,
) -> list[UserSyncResult]:
    """Sync ``user_ids``: fetch ``settings.todoist.concurrency`` users at a time, validate and
    write the lake every ``chunk`` users (the next chunk is fetched meanwhile). One user's failure
    never stops the others: it comes back as a failed (or ``needs_reauth``) result.

    Results come back in the order of ``user_ids``.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from oo.db import get_engine
    from oo.lake import get_lake
    from oo.settings import get_settings
    from oo.vault import get_vault

    cfg = settings or get_settings()
    db = engine or get_engine()
    store = lake or get_lake()
    keys = vault or get_vault()
    clock = now or (lambda: datetime.now(UTC))
    results: dict[str, UserSyncResult] = {}

    def fetch_one(user_id: str) -> Fetched | tuple[UserSyncResult, list[QuarantinedRow]]:
        result = UserSyncResult(user_id)
        try:
            state = _load(db, keys, user_id)
        except VaultError as exc:
            return _fail(db, result, exc), []
        if state is None:
            result.status, result.error = "failed", "no active Todoist integration"
            return result, []
        kwargs: dict[str, Any] = {"transport": transport}
        if sleep is not None:
            kwargs["sleep"] = sleep
        try:
            with TodoistClient(state.token, cfg.todoist, **kwargs) as client:
                return fetch(client, state, cfg, clock())
        except MalformedResponse as exc:
            kept = quarantine("todoist_raw", TodoistRawPayload, exc.body or b"<empty>", [str(exc)], source=user_id)
            return _fail(db, result, exc), [kept]
        except TodoistError as exc:
            return _fail(db, result, exc), []

    def flush(pending: list[Fetched]) -> None:
        if not pending:
            return
        staged = stage(pending, store, cfg, suite=suite)
        commit(store, staged)
        _save_cursors(db, pending)
        for f in pending:
            results[f.user_id] = staged.results[f.user_id]

    chunks = [list(user_ids[i : i + max(1, chunk)]) for i in range(0, len(user_ids), max(1, chunk))]
    with ThreadPoolExecutor(max_workers=cfg.todoist.concurrency, thread_name_prefix="todoist-fetch") as pool:
        ahead: list[Future[Any]] = [pool.submit(fetch_one, u) for u in chunks[0]] if chunks else []
        for k in range(len(chunks)):
            current = ahead
            ahead = [pool.submit(fetch_one, u) for u in chunks[k + 1]] if k + 1 < len(chunks) else []
            pending: list[Fetched] = []
            for future in current:
                outcome = future.result()
                if isinstance(outcome, Fetched):
                    pending.append(outcome)
                else:
                    failed, kept = outcome
                    if kept:
                        store.write("quarantine", kept)
                    results[failed.user_id] = failed
            flush(pending)
    return [results[u] for u in dict.fromkeys(user_ids)]


def sync_user(user_id: str, **kwargs: Any) -> UserSyncResult:
    """Sync one user (see :func:`sync_users` for the keyword arguments)."""
    return sync_users([user_id], **kwargs)[0]


def log_summary(results: Iterable[Mapping[str, Any] | None]) -> str:
    """Log and return the summary of a run's per-user results (missing ones are skipped)."""
    line = summarize([r for r in results if r])
    log.info("%s", line)
    return line
