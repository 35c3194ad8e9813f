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
``needs_reauth``; any other failure (an API error, an answer of the wrong shape, anything raised
while staging or writing that user) is recorded in ``last_error`` and changes nothing of theirs;
none stops the others. Deletions need positive evidence (see :func:`.changes._changes`). Demo
users' tokens go only to the fake server they are bound to (:func:`.accounts.bound_settings`).
:func:`current_tasks` and :func:`current_projects` give the latest state per id.

The steps live in their own modules: :mod:`.fetch` (network only), :mod:`.stage` (mapping and
validation), :mod:`.changes` (what differs from the lake), :mod:`.commit` (writes);
:mod:`.accounts` holds the app database side and :mod:`.results` the per-user outcome. This
module runs them per user and keeps one user's failure from touching the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine

from data_contracts import (
    QuarantinedRow,
    TodoistRawPayload,
)
from data_contracts.validation import quarantine
from oo.integrations.todoist.accounts import (
    PROVIDER,
    DemoBindingError,
    _load,
    _record,
    bound_settings,
    connect_user,
    connected_users,
)
from oo.integrations.todoist.changes import current_projects, current_tasks
from oo.integrations.todoist.client import (
    MalformedResponse,
    TodoistAuthError,
    TodoistClient,
    TodoistError,
)
from oo.integrations.todoist.commit import _save_cursors, commit, write_quarantine
from oo.integrations.todoist.fetch import Fetched, completion_windows, fetch
from oo.integrations.todoist.results import UserSyncResult, summarize
from oo.integrations.todoist.stage import (
    PROJECT_API_FIELDS,
    TASK_API_FIELDS,
    completion_row,
    project_row,
    raw_text,
    stage,
    task_row,
)
from oo.lake import Lake
from oo.settings import Settings
from oo.vault import Vault, VaultError

__all__ = [
    "PROJECT_API_FIELDS",
    "PROVIDER",
    "TASK_API_FIELDS",
    "UserSyncResult",
    "completion_row",
    "completion_windows",
    "connect_user",
    "connected_users",
    "current_projects",
    "current_tasks",
    "log_summary",
    "project_row",
    "raw_text",
    "summarize",
    "sync_user",
    "sync_users",
    "task_row",
]

log = logging.getLogger(__name__)


# -- the entry points ---------------------------------------------------------------------------------
def _fail(engine: Engine, result: UserSyncResult, exc: BaseException) -> UserSyncResult:
    """Record ``exc`` as ``result``'s failure, in the result and on the integration (a refused
    token also marks it ``needs_reauth``). Recording never raises: a database that is down is
    logged, and the result still says what happened."""
    if isinstance(exc, TodoistAuthError):
        result.status, result.error = "needs_reauth", str(exc)
        values: dict[str, Any] = {"status": "needs_reauth", "last_error": str(exc)}
        log.warning("todoist: %s needs re-authorisation: %s", result.user_id, exc)
    else:
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        values = {"last_error": result.error}
        log.warning("todoist: sync of %s failed: %s", result.user_id, result.error)
    try:
        _record(engine, result.user_id, **values)
    except Exception:  # the failure is in the result; the log says why it is not stored
        log.exception("todoist: could not record the failure of %s on its integration", result.user_id)
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
    """Sync ``user_ids``: fetch ``settings.todoist.concurrency`` users at a time, validate and
    write the lake every ``chunk`` users (the next chunk is fetched meanwhile).

    Each user is its own failure boundary: whatever goes wrong while fetching, staging or
    writing one user (an API error, an answer of the wrong shape, a bug) comes back as that
    user's failed (or ``needs_reauth``) result, is recorded on the integration's ``last_error``,
    and changes nothing of theirs; other users are untouched. When a chunk of several users fails
    to stage or write, each of them is retried alone, so only the culprit fails.

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
        kwargs: dict[str, Any] = {"transport": transport}
        if sleep is not None:
            kwargs["sleep"] = sleep
        try:
            state = _load(db, keys, user_id)
            if state is None:
                result.status, result.error = "failed", "no active Todoist integration"
                return result, []
            with TodoistClient(state.token, bound_settings(cfg.todoist, state), **kwargs) as client:
                return fetch(client, state, cfg, clock())
        except MalformedResponse as exc:
            body = exc.body or b"<empty>"
            kept = quarantine("todoist_raw", TodoistRawPayload, body, [str(exc)], source=user_id, now=clock())
            return _fail(db, result, exc), [kept]
        except (TodoistError, VaultError, DemoBindingError) as exc:
            return _fail(db, result, exc), []
        except Exception as exc:  # the per-user boundary: logged, recorded, this user only
            log.exception("todoist: unexpected error fetching %s", user_id)
            return _fail(db, result, exc), []

    def write(pending: list[Fetched]) -> None:
        staged = stage(pending, store, cfg, suite=suite)
        commit(store, staged)
        _save_cursors(db, pending)
        for f in pending:
            results[f.user_id] = staged.results[f.user_id]

    def flush(pending: list[Fetched]) -> None:
        if not pending:
            return
        try:
            write(pending)
            return
        except Exception as exc:  # retried per user below, so that only the culprit fails
            if len(pending) == 1:
                log.exception("todoist: staging or writing %s failed", pending[0].user_id)
                results[pending[0].user_id] = _fail(db, UserSyncResult(pending[0].user_id), exc)
                return
            log.warning("todoist: a chunk of %d users failed (%s); writing them one by one", len(pending), exc)
        for f in pending:
            flush([f])

    def keep(rows: list[QuarantinedRow]) -> None:
        try:
            write_quarantine(store, rows)
        except Exception:  # the failure itself is recorded on the integration already
            log.exception("todoist: could not quarantine the malformed answer")

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
                        keep(kept)
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
