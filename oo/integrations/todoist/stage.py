"""Stage: map fetched JSON to the contracts, validate it and decide what to write (no writes)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import pyarrow as pa
from pydantic import ValidationError

from data_contracts import (
    QuarantinedRow,
    Record,
    TodoistCompletion,
    TodoistProject,
    TodoistRawPayload,
    TodoistTask,
)
from data_contracts.validation import quarantine, reasons_of
from oo.integrations.todoist.changes import Known, _changes, is_deletion, needs_lake
from oo.integrations.todoist.fetch import Fetched
from oo.integrations.todoist.results import UserSyncResult
from oo.lake import Lake
from oo.settings import Settings

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Record)

TASK_API_FIELDS = frozenset(
    {
        "id", "user_id", "project_id", "section_id", "parent_id", "content", "description", "labels",
        "priority", "due", "deadline", "duration", "child_order", "day_order", "is_collapsed",
        "added_by_uid", "assigned_by_uid", "responsible_uid", "checked", "is_deleted", "added_at",
        "updated_at", "completed_at", "completed_by_uid", "note_count", "collapsed", "v2_id",
        "v2_parent_id", "v2_project_id", "v2_section_id", "sync_id", "meta",
    }
)  # fmt: skip
"""Task fields API v1 documents; any other field is "unknown": counted and kept in the raw payload
(``OO_TODOIST__UNKNOWN_FIELDS=record``, the default), or the row quarantined (``quarantine``)."""

PROJECT_API_FIELDS = frozenset(
    {
        "id", "name", "color", "parent_id", "child_order", "order", "is_archived", "is_deleted",
        "is_favorite", "is_frozen", "inbox_project", "is_inbox_project", "view_style", "is_collapsed",
        "collapsed", "shared", "is_shared", "can_assign_tasks", "description", "created_at",
        "updated_at", "workspace_id", "folder_id", "v2_id", "v2_parent_id", "sync_id", "role",
        "default_order", "access", "public_access", "is_public", "is_invite_only", "status",
        "is_link_sharing_enabled", "collaborator_role_default", "is_pending_default_collaborator_invites",
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


_PROJECT_KNOWN = PROJECT_API_FIELDS | frozenset(TodoistProject.model_fields)

_ROUTES: dict[str, tuple[str, type[Record], frozenset[str], str]] = {
    "items": ("todoist_tasks", TodoistTask, _TASK_KNOWN, "t"),
    "projects": ("todoist_projects", TodoistProject, _PROJECT_KNOWN, "p"),
    "archived_projects": ("todoist_projects", TodoistProject, _PROJECT_KNOWN, "p"),
    "completed": ("todoist_completions", TodoistCompletion, _TASK_KNOWN, "c"),
}
"""Each fetched list: its dataset, contract, known fields, and its key in ``_changes``' input."""


def completion_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A completion record from a raw completed task."""
    due = raw.get("due")
    return {
        "task_id": raw.get("id"),
        "project_id": raw.get("project_id"),
        "content": raw.get("content", ""),
        "completed_at": raw.get("completed_at"),
        "is_recurring": due.get("is_recurring", False) if isinstance(due, dict) else False,
    }


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def raw_text(obj: Any) -> str:
    """The JSON text kept for one API object (keys in the order received)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


def _raw_rows(
    user_id: str, resource: str, rows: Sequence[Any], texts: Sequence[str], synced_at: datetime
) -> list[dict[str, Any]]:
    """``todoist_raw`` rows (the contract's fields as a dict) for every object, valid or not."""
    out = []
    for row, text in zip(rows, texts, strict=True):
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


Received = dict[tuple[str, tuple[Any, ...]], str]
"""The JSON text as received of each staged record, by (dataset, natural key)."""


def _gate(
    model: type[Record],
    dataset: str,
    records: list[Any],
    suite: bool,
    stamp: datetime,
    received: Received | None = None,
) -> tuple[pa.Table, list[Any], list[QuarantinedRow]]:
    """The Arrow table of ``records`` after the contract's Great Expectations suite: rows it
    fails are quarantined with its reasons and the payload as received (a row made here, such as
    a tombstone, has none: its own JSON is kept and the reason says so). The same check as
    ``split(..., suite=True)``, run on the table that is then written, so the table is built once."""
    from data_contracts.arrow import to_table

    table = to_table(model, records)
    if not suite or not records:
        return table, records, []
    from data_contracts.expectations import failing_rows

    failures = failing_rows(model, _gx_frame(table))
    if not failures:
        return table, records, []
    bad = []
    for i, reasons in sorted(failures.items()):
        record = records[i]
        text = (received or {}).get((dataset, record.natural_key))
        if text is None:
            text, reasons = record.model_dump_json(), [*reasons, "<row>: made by the sync (no payload received)"]
        bad.append(quarantine(dataset, model, text, reasons, source=getattr(record, "user_id", None), now=stamp))
    keep = [i not in failures for i in range(len(records))]
    return table.filter(pa.array(keep)), [r for r, k in zip(records, keep, strict=True) if k], bad


def _check(model: type[R], row: Mapping[str, Any]) -> tuple[R | None, list[str]]:
    """``row`` as a ``model`` record, or the reasons it is refused."""
    try:
        return model.model_validate(row), []
    except ValidationError as exc:
        return None, reasons_of(exc)


def _unknown(raw: Mapping[str, Any], known: frozenset[str]) -> list[str]:
    return [k for k in raw if k not in known]


def stage(
    fetched: Sequence[Fetched],
    lake: Lake,
    settings: Settings,
    *,
    suite: bool = True,
) -> Staged:
    """Validate a chunk of users' fetched JSON and decide what to write (no writes).

    Every object is kept raw (``todoist_raw``). Pydantic checks each one against its contract;
    the changed rows are then checked by the contract's Great Expectations suite. A refused
    object is quarantined with its reasons and its JSON as received, attributed to its user
    (``source``). A field the API docs do not list is counted per user (``unknown_fields``) and
    dropped from the row, or, with ``OO_TODOIST__UNKNOWN_FIELDS=quarantine``, refuses the row.
    An object marked deleted that does not validate (a stub) is not quarantined: its deletion
    applies to the last known state.
    """
    from data_contracts.arrow import arrow_schema

    strict = settings.todoist.unknown_fields == "quarantine"
    out = Staged()
    raws: list[dict[str, Any]] = []
    bad: list[QuarantinedRow] = []
    received: Received = {}
    all_tasks: list[TodoistTask] = []
    all_projects: list[TodoistProject] = []
    all_completions: list[TodoistCompletion] = []
    checked: list[tuple[Fetched, dict[str, list[Any]]]] = []
    for f in fetched:
        res = out.results.setdefault(f.user_id, UserSyncResult(f.user_id, full_sync=f.full_sync))
        res.token_refused, res.requests = f.token_refused, f.requests
        stamp = {"user_id": f.user_id, "synced_at": f.synced_at}
        mine: dict[str, list[Any]] = {"t": [], "p": [], "c": []}
        for resource, objects in (
            ("items", f.items),
            ("projects", f.projects),
            ("completed", f.completed),
            ("archived_projects", f.archived),
        ):
            dataset, model, known, key = _ROUTES[resource]
            texts = [raw_text(o) for o in objects]
            raws += _raw_rows(f.user_id, resource, objects, texts, f.synced_at)
            for obj, text in zip(objects, texts, strict=True):
                if not isinstance(obj, dict):
                    reasons = [f"<row>: expected an object, got {type(obj).__name__}"]
                    bad.append(quarantine(dataset, model, text, reasons, source=f.user_id, now=f.synced_at))
                    continue
                for name in _unknown(obj, known):
                    res.unknown_fields[f"{resource}.{name}"] = res.unknown_fields.get(f"{resource}.{name}", 0) + 1
                if model is TodoistTask:
                    row = {**task_row(obj, strict), **stamp}
                elif model is TodoistProject:
                    row = {**project_row(obj, strict), **stamp}
                else:
                    row = {**completion_row(obj), "user_id": f.user_id}
                record, reasons = _check(model, row)
                if record is not None:
                    mine[key].append(record)
                    received[(dataset, record.natural_key)] = text
                elif not is_deletion(obj):
                    bad.append(quarantine(dataset, model, text, reasons, source=f.user_id, now=f.synced_at))
        res.raw = sum(len(o) for o in (f.items, f.projects, f.completed, f.archived))
        checked.append((f, mine))
    # the lake's state of every user whose answer must be compared with it, in one read per dataset
    reading = [(f, mine) for f, mine in checked if needs_lake(f, mine["c"])]
    since = min((c.completed_at for _, mine in reading for c in mine["c"]), default=None)
    in_lake = Known.read(lake, sorted({f.user_id for f, _ in reading}), since) if reading else None
    for f, mine in checked:
        new_tasks, new_projects, done = _changes(f, mine, lake, in_lake)
        all_tasks += new_tasks
        all_projects += new_projects
        all_completions += done
    out.tables["todoist_raw"] = pa.Table.from_pylist(raws, schema=arrow_schema(TodoistRawPayload))
    unknown = sorted({k for r in out.results.values() for k in r.unknown_fields})
    if unknown:
        log.warning("todoist: fields the API docs do not list (%s): %s", "refused" if strict else "kept raw", unknown)

    when = fetched[0].synced_at if fetched else datetime.now(UTC)
    for dataset, model, records in (
        ("todoist_tasks", TodoistTask, all_tasks),
        ("todoist_projects", TodoistProject, all_projects),
        ("todoist_completions", TodoistCompletion, all_completions),
    ):
        table, kept, refused = _gate(model, dataset, records, suite, when, received)
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
    for q in bad:
        if q.source in out.results:
            out.results[q.source].quarantined += 1
    out.quarantined = bad
    return out
