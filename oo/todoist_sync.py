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
from typing import Any, Literal

import httpx
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
from oo.lake import Lake
from oo.settings import Settings
from oo.tables import Integration, User, utcnow
from oo.todoist import MalformedResponse, SyncTokenRefused, TodoistAuthError, TodoistClient, TodoistError
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
def task_row(raw: Mapping[str, Any], keep_unknown: bool = True) -> dict[str, Any]:
    """The contract fields of a raw API task (plus undocumented fields when ``keep_unknown``,
    so that validation names them).

    Examples
    --------
    >>> task_row({"id": "t1", "user_id": "99", "content": "x", "added_by_uid": "99", "colour": 1})
    {'id': 't1', 'content': 'x', 'colour': 1}
    """
    contract = TodoistTask.model_fields
    out = {k: v for k, v in raw.items() if k in contract and k not in ("user_id", "synced_at", "schema_version")}
    if keep_unknown:
        out.update({k: v for k, v in raw.items() if k not in TASK_API_FIELDS and k not in contract})
    return out


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


def _raw_rows(user_id: str, resource: str, rows: Iterable[Any], synced_at: datetime) -> list[TodoistRawPayload]:
    out = []
    for row in rows:
        text = json.dumps(row, sort_keys=True, default=str)
        oid = row.get("id") if isinstance(row, dict) else None
        out.append(
            TodoistRawPayload(
                user_id=user_id,
                resource=resource,
                object_id=str(oid) if oid is not None else None,
                payload_hash=_hash(text),
                payload=text,
                synced_at=synced_at,
            )
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
    from oo.lake import DATASETS  # noqa: F401  (the dataset's schema is the contract's)

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
    """The lake rows of a chunk of users, and per-user counts."""

    rows: dict[str, list[Record]] = field(default_factory=dict)
    results: dict[str, UserSyncResult] = field(default_factory=dict)

    def add(self, dataset: str, records: Iterable[Record]) -> None:
        self.rows.setdefault(dataset, []).extend(records)


def _last_observation(latest: Mapping[str, Record], record: Record) -> Record | None:
    return latest.get(record.id)  # type: ignore[attr-defined]


def _changed(previous: Record | None, record: Record) -> bool:
    if previous is None:
        return True
    return previous.model_dump(exclude={"synced_at"}) != record.model_dump(exclude={"synced_at"})


def stage(
    fetched: Sequence[Fetched],
    lake: Lake,
    settings: Settings,
    *,
    suite: bool = True,
) -> Staged:
    """Validate a chunk of users' fetched JSON and decide which rows to write (no writes)."""
    keep_unknown = settings.todoist.unknown_fields == "quarantine"
    out = Staged()
    task_rows: list[Any] = []
    project_rows: list[Any] = []
    completion_rows: list[Any] = []
    bad: list[QuarantinedRow] = []
    for f in fetched:
        res = out.results.setdefault(f.user_id, UserSyncResult(f.user_id, full_sync=f.full_sync))
        res.token_refused, res.requests = f.token_refused, f.requests
        raws = (
            _raw_rows(f.user_id, "items", f.items, f.synced_at)
            + _raw_rows(f.user_id, "projects", f.projects, f.synced_at)
            + _raw_rows(f.user_id, "completed", f.completed, f.synced_at)
            + _raw_rows(f.user_id, "archived_projects", f.archived, f.synced_at)
        )
        res.raw = len(raws)
        out.add("todoist_raw", raws)
        stamp = {"user_id": f.user_id, "synced_at": f.synced_at}
        # a value that is not an object goes on as its JSON text, which split() refuses with a reason
        for raw in f.items:
            task_rows.append({**task_row(raw, keep_unknown), **stamp} if isinstance(raw, dict) else json.dumps(raw))
        for raw in [*f.projects, *f.archived]:
            project_rows.append(
                {**project_row(raw, keep_unknown), **stamp} if isinstance(raw, dict) else json.dumps(raw)
            )
        for raw in f.completed:
            completion_rows.append(
                {**completion_row(raw), "user_id": f.user_id} if isinstance(raw, dict) else json.dumps(raw)
            )

    src = "todoist"
    tasks = split(TodoistTask, task_rows, dataset="todoist_tasks", source=src, suite=suite)
    projects = split(TodoistProject, project_rows, dataset="todoist_projects", source=src, suite=suite)
    completions = split(TodoistCompletion, completion_rows, dataset="todoist_completions", source=src, suite=suite)
    bad += tasks.quarantined + projects.quarantined + completions.quarantined
    out.add("quarantine", bad)
    for q in bad:
        owner = _owner_of(q.raw)
        if owner in out.results:
            out.results[owner].quarantined += 1
        elif len(fetched) == 1:
            out.results[fetched[0].user_id].quarantined += 1

    by_user: dict[str, dict[str, list[Any]]] = {f.user_id: {"t": [], "p": [], "c": []} for f in fetched}
    for t in tasks.valid:
        by_user[t.user_id]["t"].append(t)
    for p in projects.valid:
        by_user[p.user_id]["p"].append(p)
    for c in completions.valid:
        by_user[c.user_id]["c"].append(c)

    for f in fetched:
        res = out.results[f.user_id]
        mine = by_user[f.user_id]
        known_tasks = current_tasks(lake, f.user_id, include_gone=True) if f.had_state else {}
        known_projects = current_projects(lake, f.user_id, include_gone=True) if f.had_state else {}
        # projects: later rows of the same id win (archived list after the sync's own list)
        seen_projects: dict[str, TodoistProject] = {}
        for p in mine["p"]:
            seen_projects[p.id] = p
        new_projects = [p for p in seen_projects.values() if _changed(known_projects.get(p.id), p)]
        gone_projects: set[str] = set()
        if f.full_sync and f.had_state:
            for pid, old in known_projects.items():
                if pid not in seen_projects and not old.is_deleted:
                    new_projects.append(old.model_copy(update={"is_deleted": True, "synced_at": f.synced_at}))
                    gone_projects.add(pid)
        archived_ids = {p.id for p in seen_projects.values() if p.is_archived} | {
            pid for pid, p in known_projects.items() if p.is_archived and pid not in gone_projects
        }
        seen_tasks: dict[str, TodoistTask] = {}
        for t in mine["t"]:
            seen_tasks[t.id] = t
        new_tasks = [t for t in seen_tasks.values() if _changed(known_tasks.get(t.id), t)]
        latest = {**known_tasks, **seen_tasks}
        # completions: dedup by (task, completed_at); a non-recurring task still open is checked
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
                row = prev.model_copy(
                    update={"checked": True, "completed_at": c.completed_at, "synced_at": f.synced_at}
                )
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
        res.tombstones = sum(t.is_deleted for t in new_tasks)
        res.tasks, res.projects, res.completions = len(new_tasks), len(new_projects), len(unique)
        out.add("todoist_tasks", new_tasks)
        out.add("todoist_projects", new_projects)
        out.add("todoist_completions", unique.values())
    return out


def _owner_of(raw: str) -> str | None:
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    owner = payload.get("user_id") if isinstance(payload, dict) else None
    return owner if isinstance(owner, str) else None


def commit(lake: Lake, staged: Staged) -> None:
    """Write the staged rows (raw payloads and quarantine first: nothing is lost)."""
    order = ["todoist_raw", "quarantine", "todoist_projects", "todoist_tasks", "todoist_completions"]
    for dataset in order:
        rows = staged.rows.get(dataset)
        if rows:
            lake.write(dataset, rows)


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
    """Sync ``user_ids``; write the lake every ``chunk`` users. One user's failure never stops
    the others: it comes back as a failed (or ``needs_reauth``) result."""
    from oo.db import get_engine
    from oo.lake import get_lake
    from oo.settings import get_settings
    from oo.vault import get_vault

    settings = settings or get_settings()
    engine = engine or get_engine()
    lake = lake or get_lake()
    vault = vault or get_vault()
    clock = now or (lambda: datetime.now(UTC))
    results: list[UserSyncResult] = []
    pending: list[Fetched] = []

    def flush() -> None:
        if not pending:
            return
        staged = stage(pending, lake, settings, suite=suite)
        commit(lake, staged)
        for f in pending:
            _record(
                engine,
                f.user_id,
                cursor=f.sync_token,
                last_synced_at=f.synced_at,
                last_error=None,
                **({"external_id": f.todoist_user_id} if f.todoist_user_id else {}),
            )
            results.append(staged.results[f.user_id])
        pending.clear()

    for user_id in user_ids:
        result = UserSyncResult(user_id)
        try:
            state = _load(engine, vault, user_id)
        except VaultError as exc:
            results.append(_fail(engine, result, exc))
            continue
        if state is None:
            result.status, result.error = "failed", "no active Todoist integration"
            results.append(result)
            continue
        kwargs: dict[str, Any] = {"transport": transport}
        if sleep is not None:
            kwargs["sleep"] = sleep
        try:
            with TodoistClient(state.token, settings.todoist, **kwargs) as client:
                pending.append(fetch(client, state, settings, clock()))
        except MalformedResponse as exc:
            lake.write(
                "quarantine",
                [quarantine("todoist_raw", TodoistRawPayload, exc.body or b"<empty>", [str(exc)], source=user_id)],
            )
            results.append(_fail(engine, result, exc))
            continue
        except TodoistError as exc:
            results.append(_fail(engine, result, exc))
            continue
        if len(pending) >= chunk:
            flush()
    flush()
    return results


def sync_user(user_id: str, **kwargs: Any) -> UserSyncResult:
    """Sync one user (see :func:`sync_users` for the keyword arguments)."""
    return sync_users([user_id], **kwargs)[0]


def log_summary(results: Iterable[Mapping[str, Any] | None]) -> str:
    """Log and return the summary of a run's per-user results (missing ones are skipped)."""
    line = summarize([r for r in results if r])
    log.info("%s", line)
    return line
