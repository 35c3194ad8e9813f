"""Synthetic lake inputs written with the contracts: Todoist snapshots, completions, decisions,
reactions and rewards for a few users, deterministic under a seed."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from data_contracts import (
    Decision,
    ReactionEvent,
    RewardEvent,
    TipCandidate,
    TodoistCompletion,
    TodoistTask,
)
from oo.lake import Lake

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def task(user: str, task_id: str, synced_at: datetime, priority: int = 1, **kw: object) -> TodoistTask:
    fields: dict = {
        "user_id": user,
        "id": task_id,
        "project_id": "p1",
        "content": f"task {task_id}",
        "priority": priority,
        "added_at": T0 - timedelta(days=3),
        "synced_at": synced_at,
    }
    fields.update(kw)
    return TodoistTask(**fields)


def candidate(task_id: str, features: dict[str, float] | None = None) -> TipCandidate:
    return TipCandidate(
        candidate_id=f"task:{task_id}",
        content=f"task {task_id}",
        kind="todoist_task",
        source="todoist",
        task_id=task_id,
        features=features or {},
    )


def llm_candidate(n: int) -> TipCandidate:
    return TipCandidate(candidate_id=f"llm:{n}", content=f"tip {n}", kind="llm_tip", source="local/tip-generator")


def decision(n: int, user: str, at: datetime, task_ids: list[str], chosen: int = 0, **kw: object) -> Decision:
    cands = [candidate(t) for t in task_ids]
    return Decision(
        decision_id=uid(n),
        user_id=user,
        decided_at=at,
        candidates=cands,
        ranked_ids=[c.candidate_id for c in cands],
        chosen_id=cands[chosen].candidate_id,
        propensity=0.5,
        policy="baseline",
        policy_version="1",
        **kw,
    )


def reaction(n: int, d: Decision, reaction: str, at: datetime) -> ReactionEvent:
    return ReactionEvent(
        event_id=uid(10_000 + n),
        decision_id=d.decision_id,
        user_id=d.user_id,
        candidate_id=d.chosen_id,
        reaction=reaction,
        occurred_at=at,
    )


def reward(n: int, d: Decision, reaction: str, at: datetime, value: float, late: bool = False) -> RewardEvent:
    return RewardEvent(
        event_id=uid(20_000 + n),
        decision_id=d.decision_id,
        user_id=d.user_id,
        reaction=reaction,
        reward=value,
        occurred_at=at,
        late=late,
    )


def populate(lake: Lake, users: int = 5, tasks_per_user: int = 4, seed: int = 7) -> dict[str, list[str]]:
    """A small, plausible history; returns each user's task ids."""
    rng = random.Random(seed)
    snapshots, completions, decisions, reactions = [], [], [], []
    owned: dict[str, list[str]] = {}
    n = 0
    for u in range(users):
        user = f"u{u}"
        ids = [f"t{u}_{k}" for k in range(tasks_per_user)]
        owned[user] = ids
        for k, t in enumerate(ids):
            snapshots.append(task(user, t, T0 - timedelta(days=2), priority=1 + (k % 4), labels=["a"] * k))
        for day in range(5):
            completions.append(
                TodoistCompletion(
                    user_id=user,
                    task_id=f"done{u}_{day}",
                    completed_at=T0 - timedelta(days=day, hours=rng.randint(0, 10)),
                )
            )
            n += 1
            d = decision(n, user, T0 - timedelta(days=day, hours=3), ids, chosen=rng.randrange(len(ids)))
            decisions.append(d)
            reactions.append(
                reaction(n, d, rng.choice(["done", "snooze", "dismiss"]), d.decided_at + timedelta(hours=1))
            )
    lake.write("todoist_tasks", snapshots)
    lake.write("todoist_completions", completions)
    lake.write("decisions", decisions)
    lake.write("reactions", reactions)
    return owned
