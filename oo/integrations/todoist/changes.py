"""Changes: what a user's fetched rows change against the latest state in the lake (reads only)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from data_contracts import (
    Record,
    TodoistCompletion,
    TodoistProject,
    TodoistTask,
)
from data_contracts.arrow import from_table
from oo.integrations.todoist.fetch import Fetched
from oo.lake import Lake


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


def _latest_many(lake: Lake, dataset: str, model: type[Record], user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """:func:`_latest` of several users in one read of the dataset: ``{user: {id: row}}``."""
    import duckdb

    if not user_ids or not lake.files(dataset):
        return {}
    names = ", ".join(f'"{n}"' for n in model.model_fields)
    sql = (
        f"SELECT {names} FROM read_parquet(?, hive_partitioning = false, union_by_name = true) "
        "WHERE user_id IN (SELECT unnest(?)) "
        "QUALIFY row_number() OVER (PARTITION BY user_id, id ORDER BY synced_at DESC) = 1 ORDER BY user_id, id"
    )
    with duckdb.connect() as con:
        table = con.sql(sql, params=[lake.glob(dataset), list(user_ids)]).to_arrow_table()
    out: dict[str, dict[str, Any]] = {}
    for r in from_table(model, table):
        out.setdefault(r.user_id, {})[r.id] = r  # type: ignore[attr-defined]
    return out


@dataclass
class Known:
    """What the lake holds of several users, read once per dataset for a chunk of users (the
    per-user reads of :func:`_changes` scan every file of a dataset, twice per user)."""

    tasks: dict[str, dict[str, TodoistTask]] = field(default_factory=dict)
    projects: dict[str, dict[str, TodoistProject]] = field(default_factory=dict)
    completions: dict[str, set[tuple[str, datetime]]] = field(default_factory=dict)
    users: frozenset[str] = frozenset()

    @classmethod
    def read(cls, lake: Lake, user_ids: Sequence[str], completions_since: datetime | None) -> Known:
        """The latest tasks and projects of ``user_ids`` and their stored completions from
        ``completions_since`` on (none when ``None``)."""
        done: dict[str, set[tuple[str, datetime]]] = {}
        if completions_since is not None and user_ids and lake.files("todoist_completions"):
            table = lake.read(
                "todoist_completions",
                where="user_id IN (SELECT unnest(?)) AND completed_at >= ?",
                params=[list(user_ids), completions_since],
                columns=["user_id", "task_id", "completed_at"],
            )
            for user, task, at in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True):
                done.setdefault(user, set()).add((task, at))
        return cls(
            tasks=_latest_many(lake, "todoist_tasks", TodoistTask, user_ids),
            projects=_latest_many(lake, "todoist_projects", TodoistProject, user_ids),
            completions=done,
            users=frozenset(user_ids),
        )


def needs_lake(f: Fetched, completions: Sequence[Any]) -> bool:
    """Whether a user's fetched answer must be compared with the lake: a resync (tombstones by
    absence), or any item, project or completion in it. An empty incremental answer changes nothing."""
    return f.had_state and (f.full_sync or bool(f.items) or bool(f.projects) or bool(completions))


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


def _changed(previous: Record | None, record: Record) -> bool:
    if previous is None:
        return True
    return previous.model_dump(exclude={"synced_at"}) != record.model_dump(exclude={"synced_at"})


def answered_ids(objects: Iterable[Any]) -> set[str] | None:
    """The id of every object an answer held, whether it validated or not; ``None`` when one of
    them had no readable id (then the answer cannot prove that any id is absent).

    Examples
    --------
    >>> sorted(answered_ids([{"id": "a"}, {"id": "b", "priority": "urgent"}]))
    ['a', 'b']
    >>> answered_ids([{"id": "a"}, "not an object"]) is None
    True
    """
    out: set[str] = set()
    for o in objects:
        oid = o.get("id") if isinstance(o, dict) else None
        if not isinstance(oid, str) or not oid:
            return None
        out.add(oid)
    return out


def _changes(
    f: Fetched, mine: dict[str, list[Any]], lake: Lake, known: Known | None = None
) -> tuple[list[TodoistTask], list[TodoistProject], list[TodoistCompletion]]:
    """One user's rows to write: what changed since the latest rows in the lake, tombstones,
    completion records not in the lake yet (deduplicated by task and time) and completions seen
    only in history.

    A tombstone needs positive evidence: an item marked ``is_deleted``, or a full sync whose
    answer held no object with that id at all. An object the contract refused still answers for
    its id (its last valid state stays); one without a readable id makes the answer prove no
    absence, so that sync tombstones nothing by absence.
    """
    resync = f.full_sync and f.had_state
    if not resync and not f.items and not f.projects and not mine["c"]:
        return [], [], []  # an incremental answer with nothing in it changes nothing: no lake read
    if known is not None and f.user_id in known.users:
        known_tasks = known.tasks.get(f.user_id, {}) if f.had_state else {}
        known_projects = known.projects.get(f.user_id, {}) if f.had_state else {}
    else:
        known_tasks = current_tasks(lake, f.user_id, include_gone=True) if f.had_state else {}
        known_projects = current_projects(lake, f.user_id, include_gone=True) if f.had_state else {}
    # projects: later rows of the same id win (the archived list after the sync's own list)
    seen_projects, new_projects = _snapshot_changes(mine["p"], known_projects, _deleted_ids(f.projects), f.synced_at)
    gone_projects: set[str] = set()
    project_ids = answered_ids([*f.projects, *f.archived]) if resync else None
    if project_ids is not None:
        for pid, old in known_projects.items():
            if pid not in project_ids and pid not in seen_projects and not old.is_deleted:
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
    task_ids = answered_ids(f.items) if resync else None
    if task_ids is not None:
        for tid, last in known_tasks.items():
            if tid in task_ids or tid in seen_tasks or tid in derived or last.is_deleted or last.checked:
                continue
            if last.project_id in archived_ids:
                continue  # the project was archived, not the task deleted
            new_tasks.append(last.model_copy(update={"is_deleted": True, "synced_at": f.synced_at}))
    done = list(unique.values())
    if f.had_state and done:
        since = min(c.completed_at for c in done)
        if known is not None and f.user_id in known.users:
            stored = {k for k in known.completions.get(f.user_id, set()) if k[1] >= since}
        else:
            stored = _stored_completions(lake, f.user_id, since)
        done = [c for c in done if (c.task_id, c.completed_at) not in stored]
    return new_tasks, new_projects, done


def _stored_completions(lake: Lake, user_id: str, since: datetime) -> set[tuple[str, datetime]]:
    """(task, completed_at) of ``user_id``'s completions already in the lake from ``since`` on."""
    if not lake.files("todoist_completions"):
        return set()
    table = lake.read(
        "todoist_completions",
        where="user_id = ? AND completed_at >= ?",
        params=[user_id, since],
        columns=["task_id", "completed_at"],
    )
    return set(zip(table.column("task_id").to_pylist(), table.column("completed_at").to_pylist(), strict=True))


S = TypeVar("S", TodoistTask, TodoistProject)


def _snapshot_changes(
    rows: Iterable[S], known: Mapping[str, S], deleted_ids: Iterable[str], synced_at: datetime
) -> tuple[dict[str, S], list[S]]:
    """The latest row per id seen by this sync (later rows win) and the rows to write: those that
    differ from the last known state, plus tombstones.

    A deleted object may come as a stub (``{"id", "is_deleted": true}``) that the contract refuses
    (it is kept raw, not quarantined): its tombstone is made from the last known state instead.
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


def is_deletion(obj: Any) -> bool:
    """Whether ``obj`` is an object the API marked deleted (``"is_deleted": true``, a string id)."""
    oid = obj.get("id") if isinstance(obj, dict) else None
    return isinstance(oid, str) and bool(oid) and obj.get("is_deleted") is True


def _deleted_ids(objects: Iterable[Any]) -> list[str]:
    return [o["id"] for o in objects if is_deletion(o)]
