"""Candidate generation for one decision: the user's open Todoist tasks and LLM-written tips, two
pools fetched concurrently.

- **Todoist pool**: the lake's latest state of the user's tasks (``current_tasks``), open ones
  only, most urgent first, with their :class:`CandidateFeatures` from the feature store's
  ``tip_policy_v1`` (``OnlineFeatures.get``, the one feature read of a decision: the engine uses
  this read's user context too); a task the store does not know (``task_known = 0``), or every
  task when the store cannot be read (counted), gets the contract defaults overlaid with its own
  lake row's attributes (``task_row_features``: priority, due date, labels...).
- **LLM pool**: the ``tip-generator`` alias of the LLM gateway, asked with the versioned prompt
  (``OO_LLM__PROMPT_VERSION``) for JSON validated against :class:`data_contracts.llm_tips.LLMTip`.
  Malformed tips are dropped and counted, never served; a tip repeating one the user was offered
  within ``OO_LLM__RECENT_WINDOW_S`` is dropped (cosine similarity of the ``embedder`` alias).
  The pool has a deadline (``OO_LLM__DEADLINE_MS``): when it is missed, the decision goes ahead
  with the Todoist pool alone, the generation finishes in the background and its tips are kept
  for the user's next request (``llm_status = "cached"``). Generated tips are reused for
  ``OO_LLM__CACHE_TTL_S``. No consent, no LLM pool.

A failing or slow pool never fails the decision: each failure becomes a status and a metric.
Late tips are finished by a background task on the caller's event loop: call :meth:`gather` from
one long-lived loop (BentoML's), not from a fresh ``asyncio.run`` per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from prometheus_client import Counter
from pydantic import TypeAdapter

from data_contracts import CandidateFeatures, CandidateKind, TipCandidate, TodoistTask, UserContext
from data_contracts.decisions import MAX_CANDIDATES
from models.features.online import (
    candidate_from_row,
    features_dict,
    features_dicts,
    llm_tip_features,
    task_row_features,
)
from oo.integrations.todoist.sync import current_tasks
from oo.lake import Lake
from oo.llm.prompts import response_format, tip_messages
from oo.settings import Settings
from serving.llm_tips import TIPS_DROPPED, BoundedLRU, RecentTips, parse_tips, repeats, tip_candidate

if TYPE_CHECKING:
    from models.features.online import OnlineFeatures
    from oo.llm.gateway import LLMGateway

log = logging.getLogger(__name__)

LLMStatus = Literal["ok", "cached", "timeout", "error", "malformed", "no_consent", "disabled"]

_TIP_CANDIDATES = TypeAdapter(list[TipCandidate])

LLM_POOL = Counter("oo_llm_pool", "LLM pool outcomes, one per gathered decision", ["status"])
POOL_FAILURES = Counter(
    "oo_candidate_pool_failures", "Candidate sources that failed and were served around", ["source"]
)
"""``source`` = ``lake`` (the Todoist tasks could not be read) or ``features`` (defaults served)."""


@dataclass(frozen=True)
class CandidatePools:
    """The candidates of one decision and how the LLM pool fared."""

    candidates: list[TipCandidate]
    llm_status: str
    llm_model: str | None
    prompt_version: str | None
    dropped_malformed: int
    dropped_duplicates: int
    context: UserContext | None = None
    """The user's context from the same feature-store read as the tasks' features (None when the
    store could not be read)."""


@dataclass
class _Generated:
    """One generation's outcome, kept per user while fresh."""

    status: LLMStatus
    started_at: datetime
    candidates: list[TipCandidate] = field(default_factory=list)
    model: str | None = None
    prompt_version: str | None = None
    malformed: int = 0
    duplicates: int = 0


class CandidateGenerator:
    """Gathers a user's candidates from the Todoist and LLM pools.

    Parameters
    ----------
    settings
        The platform settings (``settings.llm`` drives the LLM pool).
    lake
        Where the users' Todoist tasks are.
    gateway
        The LLM gateway; built from ``settings.llm`` when omitted (and the LLM pool is enabled).
    features
        The online feature reads; built from the settings' feature store on first use when omitted.
    """

    def __init__(
        self,
        settings: Settings,
        lake: Lake,
        gateway: LLMGateway | None = None,
        *,
        features: OnlineFeatures | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.llm
        self.lake = lake
        tip_messages(self.cfg.prompt_version, 1)  # an unknown prompt version fails here, not per request
        if gateway is None and self.cfg.enabled:
            from oo.llm.gateway import LLMGateway

            gateway = LLMGateway(self.cfg)
        self.gateway = gateway
        self._features = features
        self._tip_features = features_dict(llm_tip_features())
        self._cache: BoundedLRU[str, _Generated] = BoundedLRU(self.cfg.cache_max_users)
        self._recent = RecentTips(
            window=timedelta(seconds=self.cfg.recent_window_s),
            per_user=self.cfg.recent_per_user,
            max_users=self.cfg.cache_max_users,
        )
        self._inflight: dict[str, asyncio.Task[_Generated]] = {}
        self._version: tuple[float, tuple[tuple[str, int, int], ...]] | None = None
        self._tasks: BoundedLRU[str, tuple[tuple[tuple[str, int, int], ...], list[TodoistTask]]] = BoundedLRU(
            self.cfg.cache_max_users
        )

    # -- the one entry point -------------------------------------------------------------------
    async def gather(
        self,
        user_id: str,
        *,
        llm_consent: bool,
        now: datetime,
        context: Mapping[str, float] | None = None,
        tz: str = "UTC",
    ) -> CandidatePools:
        """Both pools for ``user_id`` at ``now``: Todoist tasks first (most urgent first), then LLM
        tips; at most ``MAX_CANDIDATES`` in all. ``context`` (the user's features) goes into the
        tip prompt; ``tz`` is the user's timezone for the request-time task features."""
        started = time.monotonic()
        tasks = asyncio.create_task(self._read_tasks(user_id))
        (todoist, user_context), llm = await asyncio.gather(
            self._todoist_pool(user_id, tasks, now, tz),
            self._llm_pool(user_id, llm_consent, now, context, tasks, started),
        )
        LLM_POOL.labels(llm.status).inc()
        room = MAX_CANDIDATES - len(llm.candidates)
        return CandidatePools(
            candidates=[*todoist[:room], *llm.candidates],
            llm_status=llm.status,
            llm_model=llm.model,
            prompt_version=llm.prompt_version,
            dropped_malformed=llm.malformed,
            dropped_duplicates=llm.duplicates,
            context=user_context,
        )

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) for the generations still running in the background."""
        pending = [t for t in self._inflight.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    # -- Todoist pool --------------------------------------------------------------------------
    async def _read_tasks(self, user_id: str) -> list[TodoistTask]:
        """The user's open tasks, most urgent first; re-read (in a worker thread) only when the
        lake's task files changed: a read scans every file of ``todoist_tasks``, hundreds of
        milliseconds on a large lake, while the check is a ``stat`` per file, made at most every
        ``OO_SERVING__CANDIDATES_TTL_S``."""
        try:
            version = self._checked_lake_version()
        except OSError:
            log.exception("Todoist pool: cannot list the lake's task files; serving without tasks")
            POOL_FAILURES.labels("lake").inc()
            return []
        hit = self._tasks.get(user_id)
        if hit is not None and hit[0] == version:
            return list(hit[1])
        ranked = await asyncio.to_thread(self._open_tasks, user_id)
        if ranked is None:
            return []
        self._tasks[user_id] = (version, ranked)
        return list(ranked)

    def _open_tasks(self, user_id: str) -> list[TodoistTask] | None:
        """The user's open tasks from the lake, most urgent first; None when the lake is unreadable."""
        try:
            tasks = current_tasks(self.lake, user_id)
        except Exception:  # a lake read failure serves around the Todoist pool, never fails the decision
            log.exception("Todoist pool: cannot read %s's tasks from the lake; serving without them", user_id)
            POOL_FAILURES.labels("lake").inc()
            return None
        open_tasks = [t for t in tasks.values() if not t.checked]
        return sorted(open_tasks, key=lambda t: (-t.priority, t.due.date if t.due else "~", t.child_order, t.id))

    def _checked_lake_version(self) -> tuple[tuple[str, int, int], ...]:
        """:meth:`_lake_version`, looked at again at most every ``OO_SERVING__CANDIDATES_TTL_S``
        (for every user at once): a sync shows within that, and a rank does not list and stat
        every task file."""
        now = time.monotonic()
        if self._version is None or now - self._version[0] >= self.settings.serving.candidates_ttl_s:
            self._version = (now, self._lake_version())
        return self._version[1]

    def _lake_version(self) -> tuple[tuple[str, int, int], ...]:
        """Name, modification time and size of every committed ``todoist_tasks`` file."""
        out = []
        for path in self.lake.files("todoist_tasks"):
            st = path.stat()
            out.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(out)

    async def _todoist_pool(
        self, user_id: str, reading: asyncio.Task[list[TodoistTask]], now: datetime, tz: str
    ) -> tuple[list[TipCandidate], UserContext | None]:
        tasks = (await asyncio.shield(reading))[:MAX_CANDIDATES]
        context, features = await asyncio.to_thread(self._task_features, user_id, [t.id for t in tasks], now, tz)
        candidates = _TIP_CANDIDATES.validate_python(  # one call of the compiled validator for all
            [
                {
                    "candidate_id": f"task:{task.id}",
                    "content": task.content,
                    "kind": CandidateKind.todoist_task,
                    "source": "todoist",
                    "task_id": task.id,
                    "features": _pool_features(task, f, d),
                }
                for task, f, d in zip(tasks, features, features_dicts(features), strict=True)
            ]
        )
        return candidates, context

    def _task_features(
        self, user_id: str, task_ids: list[str], now: datetime, tz: str
    ) -> tuple[UserContext | None, list[CandidateFeatures]]:
        try:
            if self._features is None:
                from models.features.online import OnlineFeatures
                from oo.feature_store import get_store

                self._features = OnlineFeatures(
                    get_store(self.settings), task_ttl_s=self.settings.serving.task_features_ttl_s
                )
            return self._features.get(user_id, task_ids, tz=tz, now=now)
        except Exception:  # the store down or not applied: contract defaults, flagged unknown, counted
            log.warning("Todoist pool: online features unreadable for %s; contract defaults", user_id, exc_info=True)
            POOL_FAILURES.labels("features").inc()
            return None, [candidate_from_row({}) for _ in task_ids]

    # -- LLM pool ------------------------------------------------------------------------------
    async def _llm_pool(
        self,
        user_id: str,
        consent: bool,
        now: datetime,
        context: Mapping[str, float] | None,
        reading: asyncio.Task[list[TodoistTask]],
        started: float,
    ) -> _Generated:
        if not consent:
            return _Generated("no_consent", now)
        if self.gateway is None or not self.cfg.enabled:
            return _Generated("disabled", now)
        cached = self._fresh(user_id, now)
        if cached is not None:
            return _as_cached(cached)
        job = self._inflight.get(user_id)
        if job is not None and job.get_loop() is not asyncio.get_running_loop():
            job = None  # started on a loop that is gone (a caller using asyncio.run per request)
        ours = job is None
        if job is None:
            job = asyncio.create_task(self._generate(user_id, now, dict(context or {}), reading))
            self._inflight[user_id] = job
            job.add_done_callback(lambda done: self._settled(user_id, done))
        remaining = self.cfg.deadline_ms / 1000 - (time.monotonic() - started)
        finished, _ = await asyncio.wait({job}, timeout=max(0.0, remaining))
        if not finished:
            log.info(
                "LLM pool: %s missed the %.0f ms deadline; tips kept for the next request",
                user_id,
                self.cfg.deadline_ms,
            )
            return _Generated("timeout", now, prompt_version=self.cfg.prompt_version)
        if job.cancelled():  # its loop was closed under it
            return _Generated("error", now, prompt_version=self.cfg.prompt_version)
        result = job.result()
        return result if ours or result.status != "ok" else _as_cached(result)

    def _fresh(self, user_id: str, now: datetime) -> _Generated | None:
        cached: _Generated | None = self._cache.get(user_id)
        if cached is None or not timedelta(0) <= now - cached.started_at < timedelta(seconds=self.cfg.cache_ttl_s):
            return None
        return cached

    def _settled(self, user_id: str, job: asyncio.Task[_Generated]) -> None:
        if self._inflight.get(user_id) is job:
            del self._inflight[user_id]
        if job.cancelled():
            return
        result = job.result()  # _generate returns every failure as a status
        if result.status == "ok":
            self._cache[user_id] = result

    async def _generate(
        self, user_id: str, now: datetime, context: dict[str, float], reading: asyncio.Task[list[TodoistTask]]
    ) -> _Generated:
        try:
            return await self._write_tips(user_id, now, context, reading)
        except Exception:  # anything unforeseen is the LLM pool's failure, never the decision's
            log.exception("LLM pool: generation for %s failed", user_id)
            return _Generated("error", now, prompt_version=self.cfg.prompt_version)

    async def _write_tips(
        self, user_id: str, now: datetime, context: dict[str, float], reading: asyncio.Task[list[TodoistTask]]
    ) -> _Generated:
        from oo.llm.gateway import LLMCallError

        assert self.gateway is not None
        version, n = self.cfg.prompt_version, self.cfg.tips_per_request
        context.setdefault("hour_of_day", now.hour + now.minute / 60)
        context.setdefault("weekday", float(now.weekday()))
        titles = [t.content for t in await asyncio.shield(reading)]
        avoid = self._recent.texts(user_id, now)
        messages = tip_messages(version, n, context, titles, avoid)
        try:
            answer = await self.gateway.complete("tip-generator", messages, response_format=response_format())
        except LLMCallError as exc:
            log.warning("LLM pool: tip-generator failed for %s: %s", user_id, exc)
            return _Generated("error", now, prompt_version=version)
        tips, malformed = parse_tips(answer.text, n)
        TIPS_DROPPED.labels("malformed").inc(malformed)
        if not tips and malformed:
            log.warning("LLM pool: %s answered no valid tip for %s (%d malformed)", answer.model, user_id, malformed)
            return _Generated("malformed", now, model=answer.model, prompt_version=version, malformed=malformed)
        texts = [t.content for t in tips]
        is_repeat = await self._repeats(texts, avoid)
        kept = [t for t, dup in zip(tips, is_repeat, strict=True) if not dup]
        duplicates = len(tips) - len(kept)
        TIPS_DROPPED.labels("duplicate").inc(duplicates)
        self._recent.remember(user_id, [t.content for t in kept], now)
        candidates = [
            tip_candidate(user_id, t, model=answer.model, prompt_version=version, features=self._tip_features)
            for t in kept
        ]
        return _Generated("ok", now, candidates, answer.model, version, malformed, duplicates)

    async def _repeats(self, texts: list[str], recent: list[str]) -> list[bool]:
        """Which of ``texts`` repeat a recent tip or an earlier one of ``texts`` (embedder alias);
        exact case-folded matches when the embedder fails."""
        from oo.llm.gateway import LLMCallError

        assert self.gateway is not None
        if not texts:
            return []
        try:
            embedded = await self.gateway.embed([*recent, *texts])
        except LLMCallError as exc:
            log.warning("LLM pool: embedder failed (%s); comparing exact texts", exc)
            seen = {r.casefold() for r in recent}
            out = []
            for t in texts:
                out.append(t.casefold() in seen)
                seen.add(t.casefold())
            return out
        vectors = embedded.vectors
        return repeats(vectors[len(recent) :], vectors[: len(recent)], self.cfg.duplicate_similarity)


def _pool_features(task: TodoistTask, stored: CandidateFeatures, features: dict[str, float]) -> dict[str, float]:
    """The store's features of a task it knows (``features``: ``stored`` as a dict); for one it
    does not know yet (``task_known = 0``, say synced since the last materialization) the contract
    defaults overlaid with what the task's own lake row says (its priority, due date, labels...)."""
    if stored.task_known > 0:
        return features
    return {**features, **task_row_features(task)}


def _as_cached(result: _Generated) -> _Generated:
    """``result`` served again: the same tips, status ``cached``, nothing dropped this time."""
    return _Generated("cached", result.started_at, result.candidates, result.model, result.prompt_version)
