"""Candidate tips for a decision: the user's open Todoist tasks (the LLM pool lands with the LLM
gateway; this Todoist-only generator keeps its interface).

The open tasks come from the lake's latest state (``current_tasks``); the lake changes when a
sync runs (hourly), so one user's tasks are cached for ``OO_SERVING__CANDIDATES_TTL_S`` seconds:
a DuckDB scan per decision would cost more than the whole rest of a rank.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from data_contracts import CandidateKind, TipCandidate
from oo.integrations.todoist.sync import current_tasks
from oo.lake import Lake
from oo.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandidatePools:
    """The candidates of one decision and what became of the LLM pool."""

    candidates: list[TipCandidate]
    llm_status: str
    llm_model: str | None
    prompt_version: str | None
    dropped_malformed: int
    dropped_duplicates: int


def task_candidate(task: Any) -> TipCandidate:
    """A Todoist task as a candidate, with what the task itself says (priority, labels); the feature
    store's values replace these at rank time for a task it knows."""
    return TipCandidate(
        candidate_id=f"task:{task.id}",
        content=task.content or f"task {task.id}",
        kind=CandidateKind.todoist_task,
        source="todoist",
        task_id=task.id,
        features={"priority": float(task.priority), "label_count": float(len(task.labels))},
    )


class CandidateGenerator:
    """Gathers a user's candidate pools."""

    def __init__(self, settings: Settings, lake: Lake, gateway: Any = None) -> None:
        self.settings = settings
        self.lake = lake
        self.gateway = gateway
        self._cache: dict[str, tuple[float, list[TipCandidate]]] = {}
        self._lock = threading.Lock()

    def open_tasks(self, user_id: str) -> list[TipCandidate]:
        """The user's open (unchecked, not deleted) tasks as candidates, cached for the TTL."""
        ttl = self.settings.serving.candidates_ttl_s
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(user_id)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        tasks = [task_candidate(t) for t in current_tasks(self.lake, user_id).values() if not t.checked]
        with self._lock:
            self._cache[user_id] = (now, tasks)
        return tasks

    async def gather(
        self,
        user_id: str,
        *,
        llm_consent: bool,
        now: datetime,
        context: Mapping[str, float] | None = None,
    ) -> CandidatePools:
        """The Todoist pool (the LLM pool is not built here: ``llm_status`` says so)."""
        tasks = await asyncio.to_thread(self.open_tasks, user_id)
        return CandidatePools(
            candidates=list(tasks),
            llm_status="disabled" if llm_consent else "no_consent",
            llm_model=None,
            prompt_version=None,
            dropped_malformed=0,
            dropped_duplicates=0,
        )
