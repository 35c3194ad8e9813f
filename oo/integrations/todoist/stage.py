"""Stage: map fetched JSON to the contracts, validate it and decide what to write (no writes)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from data_contracts import (
    QuarantinedRow,
    Record,
    TodoistCompletion,
    TodoistProject,
    TodoistRawPayload,
    TodoistTask,
)
from data_contracts.validation import quarantine, split
from oo.integrations.todoist.changes import _changes
from oo.integrations.todoist.fetch import Fetched
from oo.integrations.todoist.results import UserSyncResult
from oo.lake import Lake
from oo.settings import Settings

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


# -- turning fetched JSON into lake rows --------------------------------------------------------------
@dataclass
class Staged:
    """What a chunk of users' sync will write: one Arrow table per dataset (the contract's
    schema), the quarantined rows, and per-user counts."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    quarantined: list[QuarantinedRow] = field(default_factory=list)
    results: dict[str, UserSyncResult] = field(default_factory=dict)


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


def _owner_of(raw: str) -> str | None:
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    owner = payload.get("user_id") if isinstance(payload, dict) else None
    return owner if isinstance(owner, str) else None
