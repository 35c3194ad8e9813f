"""A simulator of users, their Todoist-like tasks and how they react to tips.

Each synthetic user has hidden preferences: affinities for task kinds (quick, deep, errand,
admin), a daily rhythm (a usual active hour, and how much long tasks depend on it),
procrastination (avoids long and old tasks, responds to deadlines), a snooze habit (snoozes
rather than dismisses) and how often an LLM tip helps them. Tasks carry
``CandidateFeatures``-named features, the context carries ``UserContext``-named features (the
values a feature store would have computed from the user's history, drawn around the hidden
traits), and reactions are done / snooze / dismiss, turned into rewards by the reward table.

The simulator knows every candidate's expected reward, so each round's best choice (the oracle)
and a policy's regret are measurable. It is deterministic under its seed, runs in-process, and
can emit the records the live stack logs (``Decision``, ``ReactionEvent``, ``RewardEvent``,
``TrainingExample``) and, with ``track_tasks``, its users' tasks as the ``TodoistTask`` snapshots
and ``TodoistCompletion`` rows a Todoist sync would have written (:meth:`Simulator.drain_todoist`),
so that it can drive the live stack: the feature tables recompute from those snapshots the same
task features the simulator hands its policies (priority, due date and time, recurrence,
deadline, duration, labels, content length, age; see ``tests/models/test_simulation.py``).

Examples
--------
>>> from models.policies import RuleBased
>>> sim = Simulator(n_users=5, seed=1)
>>> result = sim.run(RuleBased(), n_rounds=200)
>>> 0.0 <= result.mean_reward <= result.oracle_reward <= 1.0
True
>>> Simulator(n_users=5, seed=1).run(RuleBased(), n_rounds=200) == result
True
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from data_contracts import (
    Decision,
    ReactionEvent,
    RewardEvent,
    TipCandidate,
    TodoistCompletion,
    TodoistTask,
    TrainingExample,
)
from data_contracts.decisions import CandidateKind, ShadowPick
from data_contracts.events import Reaction
from data_contracts.todoist import Deadline, Due, Duration
from models.policies.base import Choice, Policy

KINDS = ("quick", "deep", "errand", "admin")
"""Hidden task kinds; each shapes the task's observable features differently."""

DEFAULT_REWARDS: dict[str, float] = {"done": 1.0, "snooze": 0.2, "dismiss": 0.0}
"""The reward table of :class:`oo.settings.RewardSettings` (passed in to stay I/O-free)."""


@dataclass(frozen=True)
class UserTraits:
    """A user's hidden preferences."""

    user_id: str
    base: float
    kind_affinity: Mapping[str, float]
    active_hour: float
    rhythm: float
    procrastination: float
    snooze_habit: float
    llm_help: float


@dataclass
class Task:
    """An open task of a simulated user (mutable: it ages, gets shown and snoozed)."""

    task_id: str
    kind: str
    created_at: datetime
    priority: float
    duration_minutes: float
    content_length: float
    label_count: float
    is_recurring: float
    due_at: datetime | None
    """When it is due; a task without a due time is due at the end of its due day (UTC)."""
    deadline_at: datetime | None
    """UTC midnight of the deadline's day (Todoist deadlines are dates)."""
    due_has_time: bool = False
    times_snoozed: int = 0
    times_shown: int = 0

    def todoist(self, user_id: str, synced_at: datetime, completed_at: datetime | None = None) -> TodoistTask:
        """This task as the ``TodoistTask`` snapshot a Todoist sync would observe at ``synced_at``
        (checked, with ``completed_at``, when it was completed).

        Examples
        --------
        >>> sim = Simulator(n_users=1, seed=3, tasks_per_user=1)
        >>> task = sim.tasks("sim-user-0")[0]
        >>> snap = task.todoist("sim-user-0", sim.start)
        >>> (snap.priority, len(snap.content), len(snap.labels)) == (
        ...     task.priority, task.content_length, task.label_count)
        True
        """
        due = None
        if self.due_at is not None:
            if self.due_has_time:
                due = Due(date=self.due_at.strftime("%Y-%m-%dT%H:%M:%SZ"), is_recurring=bool(self.is_recurring))
            else:  # a date-only due counts until the end of that day
                day = (self.due_at - timedelta(days=1)).date()
                due = Due(date=day.isoformat(), is_recurring=bool(self.is_recurring))
        deadline = None if self.deadline_at is None else Deadline(date=self.deadline_at.date())
        words = f"{self.kind} task {self.task_id} "
        content = (words * (1 + int(self.content_length) // len(words)))[: int(self.content_length)]
        return TodoistTask(
            user_id=user_id,
            id=self.task_id,
            project_id=f"{user_id}-inbox",
            content=content,
            labels=[f"{self.kind}-{i}" for i in range(int(self.label_count))],
            priority=int(self.priority),
            due=due,
            deadline=deadline,
            duration=Duration(amount=int(self.duration_minutes), unit="minute"),
            added_at=self.created_at,
            updated_at=synced_at,
            checked=completed_at is not None,
            completed_at=completed_at,
            synced_at=synced_at,
        )


@dataclass(frozen=True)
class Round:
    """One decision point: who, when, the context and the candidates, with their true value."""

    decision_id: uuid.UUID
    user: UserTraits
    at: datetime
    context: dict[str, float]
    candidates: list[TipCandidate]
    expected: dict[str, float]
    """Each candidate's expected reward (hidden from policies)."""

    @property
    def best_id(self) -> str:
        """The oracle's choice."""
        return max(self.expected, key=lambda k: self.expected[k])


@dataclass(frozen=True)
class Outcome:
    """What the user did with the chosen tip."""

    reaction: Reaction
    reward: float
    expected: float
    regret: float


@dataclass(frozen=True)
class SimulationResult:
    """Average realised reward of a policy, and of the oracle's expected choice, over a run."""

    rounds: int
    mean_reward: float
    mean_expected: float
    oracle_reward: float
    """Mean expected reward of the best candidate of each round (the oracle's value)."""
    regret: float
    """Mean expected regret per round."""


def _reaction_for(u: float, p_done: float, snooze_habit: float) -> Reaction:
    """The reaction a uniform draw ``u`` gives: done with ``p_done``, else snooze with the user's
    snooze habit, else dismiss."""
    if u < p_done:
        return Reaction.done
    if u < p_done + (1 - p_done) * snooze_habit:
        return Reaction.snooze
    return Reaction.dismiss


def _sigmoid(u: float) -> float:
    return 1.0 / (1.0 + math.exp(-u))


def _clip(v: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return min(hi, max(lo, v))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass
class Simulator:
    """Synthetic users producing tasks and reacting to tips.

    Parameters
    ----------
    n_users
        How many users; each round picks one uniformly.
    seed
        Seed of the simulator's own random generator (policies keep their own).
    tasks_per_user
        Size of each user's open task list (a done task is replaced by a new one).
    max_candidates
        Tasks shown per decision (plus ``llm_tips`` fresh LLM tips).
    rewards
        Reaction -> reward (``settings.reward.table``).
    start
        The simulated clock's start.
    """

    n_users: int = 50
    seed: int = 0
    tasks_per_user: int = 15
    max_candidates: int = 8
    llm_tips: int = 2
    rewards: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_REWARDS))
    start: datetime = datetime(2026, 1, 5, 6, tzinfo=UTC)
    stateful: bool = False
    """When true, reactions change the world (a done task is replaced, a snooze is counted), so
    policies face different rounds; when false (the default) every policy faces the same rounds
    under one seed, tasks are completed outside oO at a steady rate, and oracles compare."""
    track_tasks: bool = False
    """When true, every task that appears or is completed is remembered until
    :meth:`drain_todoist` turns it into Todoist snapshots (off by default: long runs need no log)."""
    id_prefix: str = "sim-"
    """Prefix of user ids (``sim-user-0``) and task ids (``sim-1``): simulated rows in a shared lake
    are told apart from real ones, and never share a task id with them."""
    task_prefix: str | None = None
    """Prefix of task ids when not ``id_prefix``: worlds simulated from different starts into one
    lake keep their tasks apart (``sim-0301s0-1``)."""

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._react_rng = random.Random(self.seed + 1_000_003)
        self._now = self.start
        self._task_seq = 0
        self._task_log: list[tuple[datetime, str, Task, bool]] = []
        self.users = [self._new_user(i) for i in range(self.n_users)]
        self._tasks: dict[str, list[Task]] = {
            u.user_id: [self._new_task(u) for _ in range(self.tasks_per_user)] for u in self.users
        }

    # -- world -------------------------------------------------------------------------------
    def _new_user(self, i: int) -> UserTraits:
        r = self._rng
        return UserTraits(
            user_id=f"{self.id_prefix}user-{i}",
            base=r.gauss(-0.6, 0.3),
            kind_affinity={k: r.gauss(m, 0.25) for k, m in zip(KINDS, (0.4, -0.2, 0.1, -0.3), strict=True)},
            active_hour=r.choice((7.0, 9.0, 13.0, 17.0, 21.0)) + r.uniform(-1, 1),
            rhythm=r.uniform(0.0, 2.0),
            procrastination=r.random(),
            snooze_habit=r.uniform(0.1, 0.9),
            llm_help=r.random(),
        )

    def _new_task(self, user: UserTraits) -> Task:
        r = self._rng
        self._task_seq += 1
        kind = r.choice(KINDS)
        now = self._now
        created = now - timedelta(days=r.expovariate(1 / 10))
        due = deadline = None
        if kind == "quick":
            duration, length, labels, prio = (
                r.uniform(5, 15),
                r.uniform(8, 40),
                r.choice((0, 0, 1)),
                r.choice((1, 1, 2)),
            )
        elif kind == "deep":
            duration, length, labels, prio = (
                r.uniform(60, 180),
                r.uniform(40, 200),
                r.choice((1, 2, 3)),
                r.choice((2, 3, 4)),
            )
            if r.random() < 0.3:
                deadline = now + timedelta(days=r.uniform(1, 30))
        elif kind == "errand":
            duration, length, labels, prio = (
                r.uniform(15, 45),
                r.uniform(10, 60),
                r.choice((0, 1, 2)),
                r.choice((1, 2, 3)),
            )
            due = now + timedelta(hours=r.uniform(-48, 120))
        else:
            duration, length, labels, prio = r.uniform(10, 30), r.uniform(20, 80), 1, r.choice((1, 2, 3, 4))
            deadline = now + timedelta(days=r.uniform(0.5, 20))
            if r.random() < 0.5:
                due = deadline
        # what Todoist can hold: whole minutes, whole characters, whole seconds, deadline days,
        # and a due date without a time is due at the end of its day
        due_has_time = kind == "errand"
        deadline_at = None if deadline is None else _midnight(deadline.date())
        due_at = due if due is None or due_has_time else _midnight(due.date()) + timedelta(days=1)
        task = Task(
            task_id=f"{self.id_prefix if self.task_prefix is None else self.task_prefix}{self._task_seq}",
            kind=kind,
            created_at=created.replace(microsecond=0),
            priority=float(prio),
            duration_minutes=float(max(1, round(duration))),
            content_length=float(max(1, round(length))),
            label_count=float(labels),
            is_recurring=1.0 if kind == "errand" and r.random() < 0.5 else 0.0,
            due_at=None if due_at is None else due_at.replace(microsecond=0),
            deadline_at=deadline_at,
            due_has_time=due_has_time,
        )
        if self.track_tasks:
            self._task_log.append((now, user.user_id, task, False))
        return task

    def _replace_task(self, user: UserTraits, index: int) -> None:
        """The user completed their ``index``-th task; a new one takes its place."""
        tasks = self._tasks[user.user_id]
        if self.track_tasks:
            self._task_log.append((self._now, user.user_id, tasks[index], True))
        tasks[index] = self._new_task(user)

    def tasks(self, user_id: str) -> list[Task]:
        """The user's open tasks now."""
        return list(self._tasks[user_id])

    @property
    def now(self) -> datetime:
        """The simulated clock."""
        return self._now

    def drain_todoist(self) -> tuple[list[TodoistTask], list[TodoistCompletion]]:
        """Todoist snapshots of every task that appeared (observed when it appeared) or was
        completed (checked) since the last call, and the completions; needs ``track_tasks``."""
        if not self.track_tasks:
            raise RuntimeError("Simulator(track_tasks=True) remembers tasks for drain_todoist")
        snapshots: list[TodoistTask] = []
        completions: list[TodoistCompletion] = []
        for at, user_id, task, completed in self._task_log:
            snapshots.append(task.todoist(user_id, at, completed_at=at if completed else None))
            if completed:
                completions.append(
                    TodoistCompletion(
                        user_id=user_id,
                        task_id=task.task_id,
                        project_id=f"{user_id}-inbox",
                        completed_at=at,
                        is_recurring=bool(task.is_recurring),
                    )
                )
        self._task_log.clear()
        return snapshots, completions

    # -- features ----------------------------------------------------------------------------
    def _context(self, user: UserTraits) -> dict[str, float]:
        r, now = self._rng, self._now
        hour = now.hour + now.minute / 60.0
        done = _clip(_sigmoid(user.base + 0.6 - user.procrastination) + r.gauss(0, 0.03))
        snooze = _clip((1 - done) * user.snooze_habit * (0.5 + 0.5 * user.procrastination) + r.gauss(0, 0.03))
        llm_done = _clip(_sigmoid(user.base + 3.0 * (user.llm_help - 0.4)) + r.gauss(0, 0.05))
        reactions = max(0.0, r.gauss(40, 10))
        return {
            "context_known": 1.0,
            "reactions_1d": reactions / 28,
            "reactions_7d": reactions / 4,
            "reactions_28d": reactions,
            "done_rate_1d": _clip(done + r.gauss(0, 0.15)),
            "done_rate_7d": _clip(done + r.gauss(0, 0.07)),
            "done_rate_28d": done,
            "snooze_rate_1d": _clip(snooze + r.gauss(0, 0.15)),
            "snooze_rate_7d": _clip(snooze + r.gauss(0, 0.07)),
            "snooze_rate_28d": snooze,
            "dismiss_rate_1d": _clip(1 - done - snooze + r.gauss(0, 0.15)),
            "dismiss_rate_7d": _clip(1 - done - snooze + r.gauss(0, 0.07)),
            "dismiss_rate_28d": _clip(1 - done - snooze),
            "done_rate_28d_todoist_task": _clip(done + r.gauss(0, 0.03)),
            "done_rate_28d_llm_tip": llm_done,
            "dismiss_rate_28d_todoist_task": _clip(1 - done - snooze + r.gauss(0, 0.03)),
            "dismiss_rate_28d_llm_tip": _clip(1 - llm_done - snooze),
            "done_rate_28d_night": _clip(done * 0.5),
            "done_rate_28d_morning": _clip(done * (1.2 if user.active_hour < 12 else 0.8)),
            "done_rate_28d_afternoon": _clip(done * (1.2 if 12 <= user.active_hour < 18 else 0.8)),
            "done_rate_28d_evening": _clip(done * (1.2 if user.active_hour >= 18 else 0.8)),
            "hours_since_last_reaction": r.expovariate(1 / 12),
            "completions_per_day_28d": max(0.0, r.gauss(5 * (1 - user.procrastination), 0.3)),
            "usual_active_hour": user.active_hour % 24,
            "weekend_share_28d": _clip(r.gauss(2 / 7, 0.05)),
            "hour_of_day": hour,
            "weekday": float(now.weekday()),
        }

    def task_features(self, task: Task) -> dict[str, float]:
        """The ``CandidateFeatures`` of ``task`` now, as the policies see them."""
        now = self._now
        hours_until_due = 720.0
        if task.due_at is not None:
            hours_until_due = _clip((task.due_at - now).total_seconds() / 3600, -720.0, 720.0)
        days_to_deadline = 365.0
        if task.deadline_at is not None:  # whole days from today (UTC) to the deadline's day
            days_to_deadline = float((task.deadline_at.date() - now.date()).days)
        return {
            "task_known": 1.0,
            "is_llm_tip": 0.0,
            "priority": task.priority,
            "age_days": max(0.0, (now - task.created_at).total_seconds() / 86400),
            "has_due_date": 1.0 if task.due_at is not None else 0.0,
            "has_due_time": 1.0 if task.due_at is not None and task.due_has_time else 0.0,
            "is_recurring": task.is_recurring,
            "has_deadline": 1.0 if task.deadline_at is not None else 0.0,
            "days_to_deadline": days_to_deadline,
            "duration_minutes": task.duration_minutes,
            "label_count": task.label_count,
            "content_length": task.content_length,
            "times_snoozed": float(task.times_snoozed),
            "times_shown": float(task.times_shown),
            "hours_until_due": hours_until_due,
            "is_overdue": 1.0 if task.due_at is not None and task.due_at < now else 0.0,
        }

    def _utility(self, user: UserTraits, kind: str, f: Mapping[str, float]) -> float:
        """The hidden logit of 'done' for a candidate with features ``f`` of hidden ``kind``."""
        hour = self._now.hour + self._now.minute / 60.0
        active_now = math.cos(2 * math.pi * (hour - user.active_hour) / 24.0)
        if kind == "llm_tip":
            return user.base + 3.0 * (user.llm_help - 0.4)
        long_task = math.log1p(f["duration_minutes"]) / math.log1p(480)
        urgency = 0.0
        if f["has_due_date"]:
            urgency = _clip(1 - f["hours_until_due"] / 72.0, 0.0, 1.5)
        deadline = _clip(1 - f["days_to_deadline"] / 14.0) if f["has_deadline"] else 0.0
        return (
            user.base
            + user.kind_affinity[kind]
            + 0.8 * (f["priority"] - 1) / 3
            + (0.5 + user.procrastination) * (urgency + deadline)
            - 2.0 * user.procrastination * long_task
            + user.rhythm * active_now * long_task
            - 0.5 * user.procrastination * math.log1p(f["times_snoozed"])
        )

    def _expected_reward(self, user: UserTraits, utility: float) -> float:
        p_done = _sigmoid(utility)
        p_snooze = (1 - p_done) * user.snooze_habit
        t = self.rewards
        return p_done * t["done"] + p_snooze * t["snooze"] + (1 - p_done - p_snooze) * t["dismiss"]

    # -- driving the live stack (``models.closed_loop``) -------------------------------------
    def set_now(self, when: datetime) -> None:
        """Move the simulated clock to ``when`` (never backwards)."""
        if when < self._now:
            raise ValueError(f"the simulated clock cannot go back from {self._now} to {when}")
        self._now = when

    def value(self, user: UserTraits, task: Task | None) -> float:
        """The expected reward of showing ``task`` (``None``: an LLM tip) to ``user`` now."""
        if task is None:
            return self._expected_reward(user, self._utility(user, "llm_tip", {}))
        return self._expected_reward(user, self._utility(user, task.kind, self.task_features(task)))

    def react_to(self, user: UserTraits, task: Task | None) -> tuple[Reaction, Task | None]:
        """``user``'s reaction to being shown ``task`` now, from the hidden traits alone, and the
        task that replaces it when it was done (the world changes: a stateful simulator)."""
        kind = "llm_tip" if task is None else task.kind
        features = {} if task is None else self.task_features(task)
        p_done = _sigmoid(self._utility(user, kind, features))
        u = self._react_rng.random()
        reaction = _reaction_for(u, p_done, user.snooze_habit)
        if task is None:
            return reaction, None
        task.times_shown += 1
        if reaction is Reaction.snooze:
            task.times_snoozed += 1
        if reaction is Reaction.done:
            tasks = self._tasks[user.user_id]
            index = tasks.index(task)
            self._replace_task(user, index)
            return reaction, tasks[index]
        return reaction, None

    def finish_outside(self, user: UserTraits, rate: float) -> list[tuple[Task, Task]]:
        """Each open task of ``user`` is completed outside oO with probability ``rate``; the
        ``(done, replacement)`` pairs."""
        out = []
        tasks = self._tasks[user.user_id]
        for i in range(len(tasks)):
            if self._rng.random() < rate:
                done = tasks[i]
                self._replace_task(user, i)
                out.append((done, tasks[i]))
        return out

    # -- rounds ------------------------------------------------------------------------------
    def next_round(self) -> Round:
        """Advance the clock, pick a user, and lay out the candidates of one decision."""
        r = self._rng
        self._now += timedelta(minutes=r.expovariate(1 / 20))
        user = self.users[r.randrange(self.n_users)]
        context = self._context(user)
        tasks = self._tasks[user.user_id]
        for i in range(len(tasks)):  # the user finishes some tasks outside oO
            if r.random() < 0.02:
                self._replace_task(user, i)
        shown = r.sample(tasks, min(self.max_candidates, len(tasks)))
        candidates: list[TipCandidate] = []
        expected: dict[str, float] = {}
        self._hidden: dict[str, tuple[str, Task | None]] = {}
        for task in shown:
            f = self.task_features(task)
            cid = f"task:{task.task_id}"
            candidates.append(
                TipCandidate.model_construct(
                    candidate_id=cid,
                    content=f"{task.kind} task {task.task_id}",
                    kind=CandidateKind.todoist_task,
                    source="todoist",
                    task_id=task.task_id,
                    features=f,
                )
            )
            expected[cid] = self._expected_reward(user, self._utility(user, task.kind, f))
            self._hidden[cid] = (task.kind, task)
        for j in range(self.llm_tips):
            # what serving knows of an LLM tip: it is one, and nothing a task would have
            # (``models.features.online.llm_tip_features``); the tip's own length and effort are
            # still drawn, so that a seed gives the same world as before LLM tips lost them
            _effort, _length = r.uniform(2, 10), r.uniform(40, 160)
            f = {
                "task_known": 0.0,
                "is_llm_tip": 1.0,
                "priority": 1.0,
                "duration_minutes": 0.0,
                "content_length": 0.0,
                "days_to_deadline": 365.0,
                "hours_until_due": 720.0,
            }
            cid = f"llm:{self._task_seq}:{j}:{r.getrandbits(32):08x}"
            candidates.append(
                TipCandidate.model_construct(
                    candidate_id=cid,
                    content="a small next step",
                    kind=CandidateKind.llm_tip,
                    source="local/tip-generator",
                    llm_model="local/tip-generator",
                    prompt_version="sim",
                    features=f,
                )
            )
            expected[cid] = self._expected_reward(user, self._utility(user, "llm_tip", f))
            self._hidden[cid] = ("llm_tip", None)
        return Round(
            decision_id=uuid.UUID(int=r.getrandbits(128), version=4),
            user=user,
            at=self._now,
            context=context,
            candidates=candidates,
            expected=expected,
        )

    def react(self, rnd: Round, chosen_id: str) -> Outcome:
        """The user's reaction to ``chosen_id``; updates the task (shown, snoozed, done)."""
        if chosen_id not in rnd.expected:
            raise KeyError(f"{chosen_id!r} was not a candidate of decision {rnd.decision_id}")
        r, user = self._react_rng, rnd.user
        expected = rnd.expected[chosen_id]
        kind, task = self._hidden[chosen_id]
        p_done = _sigmoid(
            self._utility(user, kind, next(c for c in rnd.candidates if c.candidate_id == chosen_id).features)
        )
        u = r.random()
        reaction = _reaction_for(u, p_done, user.snooze_habit)
        if task is not None and self.stateful:
            task.times_shown += 1
            if reaction is Reaction.snooze:
                task.times_snoozed += 1
            elif reaction is Reaction.done:
                self._replace_task(user, self._tasks[user.user_id].index(task))
        reward = self.rewards[reaction.value]
        best = max(rnd.expected.values())
        return Outcome(reaction=reaction, reward=reward, expected=expected, regret=best - expected)

    def rounds(self, n: int) -> Iterator[Round]:
        """``n`` rounds; call :meth:`react` on each before asking for the next."""
        for _ in range(n):
            yield self.next_round()

    # -- whole runs --------------------------------------------------------------------------
    def run(self, policy: Policy | None, n_rounds: int, learn: bool = True) -> SimulationResult:
        """Play ``n_rounds`` with ``policy`` (``None`` plays the oracle), learning from each reward."""
        total = expected = oracle = regret = 0.0
        for rnd in self.rounds(n_rounds):
            if policy is None:
                chosen = rnd.best_id
            else:
                chosen = policy.choose(rnd.context, rnd.candidates).chosen_id
            out = self.react(rnd, chosen)
            if policy is not None and learn:
                policy.learn_one(rnd.context, next(c for c in rnd.candidates if c.candidate_id == chosen), out.reward)
            total += out.reward
            expected += out.expected
            oracle += out.expected + out.regret
            regret += out.regret
        n = max(n_rounds, 1)
        return SimulationResult(
            rounds=n_rounds,
            mean_reward=total / n,
            mean_expected=expected / n,
            oracle_reward=oracle / n,
            regret=regret / n,
        )

    def records(
        self, rnd: Round, choice: Choice, outcome: Outcome, policy: Policy, shadow: Sequence[ShadowPick] = ()
    ) -> tuple[Decision, ReactionEvent, RewardEvent, TrainingExample]:
        """The records the live stack would log for this round (with the shadows' picks, if any)."""
        reacted_at = rnd.at + timedelta(minutes=5)
        event_id = uuid.UUID(int=(rnd.decision_id.int ^ 0x5EED), version=4)
        decision = Decision(
            decision_id=rnd.decision_id,
            user_id=rnd.user.user_id,
            decided_at=rnd.at,
            candidates=rnd.candidates,
            ranked_ids=list(choice.ranked_ids),
            chosen_id=choice.chosen_id,
            propensity=choice.propensity,
            policy=policy.name,
            policy_version=policy.version,
            features=rnd.context,
        )
        reaction = ReactionEvent(
            event_id=event_id,
            decision_id=rnd.decision_id,
            user_id=rnd.user.user_id,
            candidate_id=choice.chosen_id,
            reaction=outcome.reaction,
            occurred_at=reacted_at,
        )
        reward = RewardEvent(
            event_id=event_id,
            decision_id=rnd.decision_id,
            user_id=rnd.user.user_id,
            reaction=outcome.reaction,
            reward=outcome.reward,
            occurred_at=reacted_at,
        )
        example = TrainingExample(
            decision_id=rnd.decision_id,
            user_id=rnd.user.user_id,
            decided_at=rnd.at,
            candidates=rnd.candidates,
            chosen_id=choice.chosen_id,
            propensity=choice.propensity,
            policy=policy.name,
            policy_version=policy.version,
            context=rnd.context,
            reaction=outcome.reaction,
            rewarded=True,
            reward=outcome.reward,
        )
        return decision, reaction, reward, example

    def log(self, policy: Policy, n_rounds: int, learn: bool = True) -> list[TrainingExample]:
        """Play ``n_rounds`` with ``policy`` and return the training examples it would have logged."""
        out = []
        for rnd in self.rounds(n_rounds):
            choice = policy.choose(rnd.context, rnd.candidates)
            outcome = self.react(rnd, choice.chosen_id)
            if learn:
                chosen = next(c for c in rnd.candidates if c.candidate_id == choice.chosen_id)
                policy.learn_one(rnd.context, chosen, outcome.reward)
            out.append(self.records(rnd, choice, outcome, policy)[3])
        return out
