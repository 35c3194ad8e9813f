"""What one user's sync did, and the run's summary line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "failed", "needs_reauth"]


@dataclass
class UserSyncResult:
    """What one user's sync did. The counts are rows written (``tasks``, ``projects``,
    ``completions``: new states only, so a re-run that changes nothing counts 0), objects
    received (``raw``), rows refused (``quarantined``), and fields the API docs do not list, by
    ``resource.field`` (``unknown_fields``)."""

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
    unknown_fields: dict[str, int] = field(default_factory=dict)

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
    >>> summarize([UserSyncResult("a", unknown_fields={"items.colour": 2})]).split("; ")[-1]
    'unknown fields: items.colour 2'
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
    unknown: dict[str, int] = {}
    for r in rows:
        for name, n in (r.get("unknown_fields") or {}).items():
            unknown[name] = unknown.get(name, 0) + int(n)
    if unknown:
        line += "; unknown fields: " + ", ".join(f"{k} {v}" for k, v in sorted(unknown.items()))
    return line
