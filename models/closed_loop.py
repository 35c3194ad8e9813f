"""``oo simulate``: the simulator's users live through the real services, day by day.

The loop, for ``users`` users over ``days`` simulated days (seeded):

1. a FAKE Todoist API (in a thread) holds each simulated user's tasks, on the simulated clock;
2. the app API and the BentoML service run as child processes (:mod:`oo.launcher`, free
   loopback ports, an isolated var dir); each user signs up (``POST /v1/auth/register``) and
   connects their fake Todoist account with a personal token (``POST /v1/integrations/todoist``);
3. every simulated day, each user opens the app in each of ``visits_per_day`` slots spread over
   08:00-22:00 (a few minutes into the slot, at random; not around the hidden active hour, so the
   simulator's rhythm term is one no policy can see): they renew their session, ask
   ``GET /v1/tips/next`` (serving decides, reading the user's context and the tasks' features
   from the feature store) and react with ``POST /v1/feedback``; the reaction is drawn from the
   simulator's hidden traits only, never shown to the policy. A task done through a tip is
   completed in the fake Todoist, and a few are completed outside oO;
4. at each simulated midnight the DAGs' work runs **in-process**, the same library calls each
   DAG task makes (no Airflow is started): Todoist sync of every user, ``events_ingest``,
   ``features`` (build, validate, publish + apply, materialize, training examples) and
   ``policy_training`` (train, evaluate off-policy, gate); when the gate moves ``@champion``, the
   loop waits until serving reports the new champion.

Simulated time: requests carry ``X-OO-Simulated-Time`` (the app honours it with
``OO_APP__SIMULATED_CLOCK``, and passes it to serving as ``RankRequest.decided_at``, honoured
with ``OO_SERVING__SIMULATED_CLOCK``; both settings are refused outside ``local``). The simulated
days start at the UTC midnight after the wall clock, so that the learner's reward windows (on the
wall clock) never close before a simulated reaction arrives. The served rule baseline explores
(``OO_SERVING__BASELINE_FLOOR``, 0.8 by default here) so that its logs can evaluate challengers off-policy,
and after a promotion it keeps serving a random control group (``OO_SERVING__CONTROL_FRACTION``, 0.5
by default here) that the report compares the promoted policy with, on the same days.

:mod:`models.closed_loop_report` turns the run's records into the report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from data_contracts.events import Reaction
from models.simulation import Simulator, Task, UserTraits
from oo.settings import settings_env

log = logging.getLogger(__name__)

HEADER = "X-OO-Simulated-Time"
PASSWORD = "simulated-user-password-1"  # noqa: S105  (a simulated account on a loopback app)


@dataclass(frozen=True)
class LoopConfig:
    """One closed-loop run."""

    users: int
    days: int
    seed: int
    var_dir: Path
    baseline_floor: float = 0.8
    """Exploration mass of the served rule baseline (its logs must evaluate challengers off-policy:
    the gate's effective sample size is about n / E[1 / propensity of the challenger's choice]).
    At 0.8 over 3 tasks the baseline picks uniformly 80% of the time: the gate's ESS is about n / 3."""
    control_fraction: float = 0.5
    """``OO_SERVING__CONTROL_FRACTION`` of the run: once a challenger is promoted, this share of the
    decisions (at random) is still served by the exploring rule baseline, as a staged rollout's A/B
    test does, so that the report compares the promoted policy with the baseline on the same days
    and users (the world changes over the days: tasks age, get snoozed, and the easy ones get done),
    and evaluates it off-policy on those baseline decisions, which no gate saw. Before a promotion
    the baseline serves everything anyway."""
    outside_done_per_day: float = 0.05
    """Chance that each open task is completed outside oO on a given day."""
    visits_per_day: int = 4
    """Slots a day (a notifier sending several tips): in each one every user opens the app once.
    Before each slot the hourly DAG work runs (Todoist sync, ingest, features build and
    materialize), so serving reads what the feature store would hold at that time."""
    tasks_per_user: int = 3
    """Open tasks of each simulated user: the candidates serving chooses among."""
    holdout_fraction: float | None = 0.6
    """``OO_TRAINING__HOLDOUT_FRACTION`` of the run (None: the platform's default, 0.3)."""
    gate_fraction: float | None = 0.7
    """``OO_TRAINING__GATE_FRACTION`` of the run (None: the platform's default, 0.5). With 0.6 and
    0.7 the gate slice is 42% of the window instead of 15%: more evidence for the same gate rule
    (its minimum ESS, level and margin are the platform's), less data (40%) to train the challengers."""
    concurrency: int = 8
    """Users whose requests of a slot are in flight at once."""
    health_timeout_s: float = 240.0
    champion_timeout_s: float = 120.0
    delivery_timeout_s: float = 120.0
    start: datetime | None = None
    """The first simulated midnight (default: the UTC midnight after now)."""


@dataclass
class LoopUser:
    """A simulated user and their accounts: the app's and the fake Todoist's."""

    traits: UserTraits
    email: str
    app_id: str = ""
    token: str = ""
    refresh: str = ""
    todoist: Any = None


@dataclass
class Served:
    """One decision as the simulated user lived it."""

    day: int
    at: datetime
    user: str
    decision_id: str
    candidate_id: str | None
    reaction: str | None
    reward: float | None
    expected: float | None
    values: dict[str, float]
    """Expected reward of every open task of the user at the time (``task:<todoist id>``)."""


@dataclass
class LoopRun:
    """What the loop did, for the report."""

    config: LoopConfig
    start: datetime
    served: list[Served] = field(default_factory=list)
    days: list[dict[str, Any]] = field(default_factory=list)
    promotions: list[dict[str, Any]] = field(default_factory=list)
    slots: list[dict[str, Any]] = field(default_factory=list)
    """The hourly DAG work before each slot (sync, ingest, features)."""
    wall_s: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds spent in each kind of step over the run (sync, build, validate, training, the
    users' requests, ...): where the time went."""


def free_port() -> int:
    """A free loopback port (bound and released: the caller binds it next)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loop_env(
    var_dir: Path, todoist_url: str, serving_port: int, app_port: int, floor: float, control: float = 0.0
) -> dict[str, str]:
    """The settings (``OO_*``) of this process and its services for one run."""
    return {
        "OO_ENV": "local",
        "OO_PATHS__VAR_DIR": str(var_dir),
        "OO_TODOIST__BASE_URL": todoist_url,
        "OO_PLATFORM__SERVING_PORT": str(serving_port),
        "OO_PLATFORM__APP_API_PORT": str(app_port),
        "OO_APP__SERVING_URL": f"http://127.0.0.1:{serving_port}",
        "OO_APP__SERVING_TIMEOUT_S": "20",
        "OO_APP__RELAY_INTERVAL_S": "0.2",
        "OO_APP__SIMULATED_CLOCK": "true",
        "OO_SERVING__SIMULATED_CLOCK": "true",
        "OO_SERVING__BASELINE_FLOOR": str(floor),
        "OO_SERVING__CONTROL_FRACTION": str(control),
        "OO_SERVING__CHAMPION_POLL_S": "1",
        # simulated hours pass in wall seconds: serving's wall-clock caches of the online task
        # features and of the synced task files would outlive a materialization or a sync
        "OO_SERVING__TASK_FEATURES_TTL_S": "0",
        "OO_SERVING__CANDIDATES_TTL_S": "0",
        "OO_LLM__ENABLED": "false",
        "OO_FEAST__PROJECT": "oo_simulation",
        "OO_LOG_FORMAT": "json",
    }


def todoist_item(task: Task, at: datetime) -> dict[str, Any]:
    """The fake Todoist item fields of a simulated task (what its sync reads back)."""
    snap = task.todoist("-", at)
    due = None
    if snap.due is not None:
        due = {"date": snap.due.date, "timezone": None, "string": "sim", "lang": "en", "is_recurring": False}
        due["is_recurring"] = bool(snap.due.is_recurring)
    return {
        "content": snap.content,
        "labels": list(snap.labels),
        "priority": snap.priority,
        "due": due,
        "deadline": None if snap.deadline is None else {"date": snap.deadline.date.isoformat(), "lang": "en"},
        "duration": None if snap.duration is None else {"amount": snap.duration.amount, "unit": snap.duration.unit},
        "added_at": task.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


class ClosedLoop:
    """Drives one run; :meth:`run` returns the :class:`LoopRun`."""

    def __init__(self, config: LoopConfig, on_progress: Callable[[str, int], None] | None = None) -> None:
        try:
            from oo.fakes.todoist import Clock, FakeTodoist
        except ImportError as exc:  # the wheel leaves the stand-in servers out
            raise RuntimeError(
                "oo simulate needs a source checkout: oo.fakes (the FAKE Todoist) is not installed"
            ) from exc
        if min(config.users, config.days, config.visits_per_day, config.tasks_per_user, config.concurrency) < 1:
            raise ValueError("users, days, visits per day, tasks per user and concurrency must be at least 1")
        if config.visits_per_day > 12:
            raise ValueError("at most 12 visits a day (slots are an hour or more apart)")
        self.config = config
        now = datetime.now(UTC)
        self.start = config.start or (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1))
        opened = self.start - timedelta(hours=1)  # users sign up an hour before the first day
        self.sim = Simulator(
            n_users=config.users,
            seed=config.seed,
            start=opened,
            stateful=True,
            llm_tips=0,
            tasks_per_user=config.tasks_per_user,
        )
        self.clock = Clock(opened)
        self.world = FakeTodoist(seed=config.seed, clock=self.clock)
        self.rng = random.Random(config.seed + 7)
        self.users = [LoopUser(t, f"{t.user_id}@simulated.example.com") for t in self.sim.users]
        self.item_of: dict[str, str] = {}
        """Simulated task id -> fake Todoist item id."""
        self.task_of: dict[str, tuple[LoopUser, Task]] = {}
        """``task:<item id>`` -> the user and their hidden task."""
        self.gone: dict[str, LoopUser] = {}
        """Tasks done since the last sync, which serving may still offer (the lake is a day behind)."""
        self.on_progress = on_progress or (lambda what, n: None)
        self.features_at: datetime | None = None
        """The time of the last features run (build to materialize)."""
        self.features_skipped = 0
        """Features runs skipped: nothing new since the last one (see :meth:`_features`)."""
        self.run_record = LoopRun(config=config, start=self.start)

    # -- the fake Todoist world ------------------------------------------------------------------
    def _add(self, user: LoopUser, task: Task) -> None:
        item = self.world.add_task(user.todoist, **todoist_item(task, self.sim.now))
        self.item_of[task.task_id] = item["id"]
        self.task_of[f"task:{item['id']}"] = (user, task)

    def _complete(self, user: LoopUser, done: Task, replacement: Task) -> None:
        item_id = self.item_of.pop(done.task_id)
        self.task_of.pop(f"task:{item_id}", None)
        self.gone[f"task:{item_id}"] = user
        item = self.world.complete_task(user.todoist, item_id)
        if not item.get("checked"):  # a recurring task moved on in Todoist; the simulated one is replaced
            self.world.delete_task(user.todoist, item_id)
        self._add(user, replacement)

    def _at(self, when: datetime) -> None:
        self.sim.set_now(when)
        self.clock.advance(seconds=(when - self.clock.now()).total_seconds())  # the fake follows the simulation

    # -- the app API -----------------------------------------------------------------------------
    def _call(self, http: httpx.Client, method: str, path: str, at: datetime, **kw: Any) -> httpx.Response:
        headers = {HEADER: at.isoformat(), **kw.pop("headers", {})}
        for attempt in range(5):  # bounded: a busy machine may time a request out
            try:
                response = http.request(method, path, headers=headers, **kw)
            except httpx.TimeoutException:
                if attempt == 4:
                    raise
                continue
            if response.status_code == 503 and attempt < 4:
                time.sleep(0.5)
                continue
            if response.status_code >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
            return response
        raise RuntimeError(f"{method} {path}: no answer")

    def _sign_up(self, http: httpx.Client, user: LoopUser, at: datetime) -> None:
        import jwt

        body = {"email": user.email, "password": PASSWORD, "display_name": user.traits.user_id}
        pair = self._call(http, "POST", "/v1/auth/register", at, json=body).json()
        user.token, user.refresh = pair["access_token"], pair["refresh_token"]
        user.app_id = str(jwt.decode(user.token, options={"verify_signature": False})["sub"])
        auth = {"Authorization": f"Bearer {user.token}"}
        self._call(http, "POST", "/v1/integrations/todoist", at, json={"token": user.todoist.token}, headers=auth)

    def _log_in(self, http: httpx.Client, user: LoopUser, at: datetime) -> None:
        """A returning user's app renews its session with the refresh token (signing in with the
        password again when that is refused)."""
        try:
            pair = self._call(http, "POST", "/v1/auth/refresh", at, json={"refresh_token": user.refresh}).json()
        except RuntimeError:
            body = {"email": user.email, "password": PASSWORD}
            pair = self._call(http, "POST", "/v1/auth/login", at, json=body).json()
        user.token, user.refresh = pair["access_token"], pair["refresh_token"]

    def _ask(self, http: httpx.Client, user: LoopUser, at: datetime) -> dict[str, Any]:
        """A visit: renew the session, ask for the next tip (HTTP only: run from the slot's threads)."""
        self._log_in(http, user, at)
        auth = {"Authorization": f"Bearer {user.token}"}
        tip: dict[str, Any] = self._call(http, "GET", "/v1/tips/next", at, headers=auth).json()
        return tip

    def _served(
        self, day: int, user: LoopUser, at: datetime, tip: dict[str, Any], values: dict[str, float]
    ) -> tuple[Served, Task | None]:
        """The served record of a visit and the hidden task of the tip (None: no tip, or a task
        the user already did)."""
        served = Served(day, at, user.app_id, str(tip.get("decision_id")), None, None, None, None, values)
        if tip.get("tip") is None:
            return served, None
        cid = tip["tip"]["candidate_id"]
        if self.gone.get(cid) is user:  # done since the last sync: serving may still offer it
            served.candidate_id = cid
            served.expected = served.values[cid] = float(self.sim.rewards["dismiss"])
            return served, None
        owner_task = self.task_of.get(cid)
        if owner_task is None or owner_task[0] is not user:
            raise RuntimeError(f"serving chose {cid!r}, not an open task of {user.traits.user_id}")
        served.candidate_id, served.expected = cid, values[cid]
        return served, owner_task[1]

    def _feedback(self, http: httpx.Client, user: LoopUser, served: Served, at: datetime) -> None:
        body = {"decision_id": served.decision_id, "reaction": served.reaction}
        self._call(http, "POST", "/v1/feedback", at, json=body, headers={"Authorization": f"Bearer {user.token}"})

    def _slot(self, http: httpx.Client, pool: ThreadPoolExecutor, day: int, slot_start: datetime) -> int:
        """One slot: every user asks for a tip at their own time in the slot's first 10 minutes
        and reacts at the slot's 12th minute, within the access token's 15 (reactions drawn from
        the hidden traits, in user order: the seed fixes them).

        Each user's reaction is posted as soon as their tip came back, while the users after them
        still ask (``concurrency`` requests in flight at once, asks and reactions in user order),
        so the app's outbox delivers the slot's rewards to serving while the slot is going on, as a
        deployment's relay would, instead of after it. A reaction only changes its own user's
        features (the user's counters and their own tasks'; every task belongs to one user), so
        no other user's decision reads it early."""
        times = [self._visit_time(slot_start, u) for u in self.users]
        self._at(slot_start)
        values = [
            {f"task:{self.item_of[t.task_id]}": self.sim.value(u.traits, t) for t in self.sim.tasks(u.traits.user_id)}
            for u in self.users
        ]
        react_at = slot_start + timedelta(minutes=12)
        self._at(react_at)  # the simulator's clock for the reactions (the asks carry their own times)
        n, window = len(self.users), self.config.concurrency
        asks = {i: pool.submit(self._ask, http, self.users[i], times[i]) for i in range(min(window, n))}
        feedback = []
        done: list[tuple[LoopUser, Task, Task]] = []
        for i, user in enumerate(self.users):
            served, task = self._served(day, user, times[i], asks.pop(i).result(), values[i])
            self.run_record.served.append(served)
            if served.candidate_id is not None:
                reaction, replacement = (
                    (Reaction.dismiss, None) if task is None else self.sim.react_to(user.traits, task)
                )
                served.reaction, served.reward = reaction.value, float(self.sim.rewards[reaction.value])
                feedback.append(pool.submit(self._feedback, http, user, served, react_at))
                if task is not None and replacement is not None:
                    done.append((user, task, replacement))
            if i + window < n:
                asks[i + window] = pool.submit(self._ask, http, self.users[i + window], times[i + window])
        self.on_progress("decision", n)
        for f in feedback:
            f.result()
        for user, task, replacement in done:
            self._complete(user, task, replacement)
        return len(feedback)

    def slot_starts(self, day_start: datetime) -> list[datetime]:
        """The day's slots, spread over the waking hours 08:00-22:00 (UTC, simulated)."""
        n = self.config.visits_per_day
        return [day_start + timedelta(hours=8 + 14 * k / n) for k in range(n)]

    def _visit_time(self, slot_start: datetime, user: LoopUser) -> datetime:
        return slot_start + timedelta(minutes=self.rng.uniform(0.5, 10))

    # -- the DAGs' work, in-process --------------------------------------------------------------
    def batch(self, at: datetime) -> dict[str, Any]:
        """What the DAGs do at ``at``: sync, ingest, features, training with the gate (their
        printed output, Feast's and MLflow's, goes to ``logs/batch.log``)."""
        from oo.settings import get_settings

        log_path = get_settings().paths.resolve("logs", "batch.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            return self._batch(at)

    def _sync(self, at: datetime) -> tuple[list[str], int]:
        """``todoist_sync`` of every user just before ``at`` (one chunk: the contract's suite runs
        once per dataset, not once per 25 users); the users whose sync failed, and the rows it wrote
        (new task, project and completion states, deletions, quarantined rows)."""
        from oo.integrations.todoist.sync import sync_users

        synced_at = at - timedelta(seconds=1)
        with self._timed("sync"):
            synced = sync_users([u.app_id for u in self.users], now=lambda: synced_at, chunk=len(self.users))
        written = sum(r.tasks + r.tombstones + r.projects + r.completions + r.quarantined for r in synced)
        return [r.user_id for r in synced if r.status != "ok"], written

    def _features(self, at: datetime, meanwhile: Callable[[], None] | None = None) -> tuple[list[str], int]:
        """The hourly work before a slot: Todoist sync (``todoist_sync``), ``events_ingest`` and the
        ``features`` DAG's build, validate, publish + apply and materialize; the users whose sync failed.

        ``meanwhile`` (waiting for the app's outbox to reach serving) runs while the sync does, as
        the two would in a deployment: the sync reads Todoist and writes the Todoist datasets, the
        rewards go to serving and its event log; the ingest after both reads that log."""
        from models.features import pipeline
        from oo.events_ingest import run_ingest

        # the sync runs just before the features build, as todoist_sync runs before the features DAG
        with ThreadPoolExecutor(1, thread_name_prefix="sim-sync") as background:
            syncing = background.submit(self._sync, at)
            if meanwhile is not None:
                meanwhile()
            failed, synced = syncing.result()
        with self._timed("ingest"):
            ingested = run_ingest().written
        last, self.features_at = self.features_at, at
        if not synced and not ingested and not failed and last is not None and last.date() == at.date():
            # nothing new in the lake and no UTC midnight (where the windowed features shrink) since
            # the last run: its build would add no row, so publish and materialize would change nothing
            # (the first slot of a day, after the nightly run at midnight); the features DAG is skipped
            self.features_at = last
            self.gone.clear()
            self.features_skipped += 1
            return failed, ingested
        with self._timed("build"):
            built = pipeline.build(f"sim-{at:%Y%m%dT%H%M}", at.isoformat())
        with self._timed("validate"):
            pipeline.validate(built["staging"])
        with self._timed("publish_and_apply"):
            pipeline.publish_and_apply(built["staging"])
        with self._timed("materialize"):
            pipeline.materialize(at.isoformat())
        self.gone.clear()  # synced: serving no longer offers them
        return failed, ingested

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        """Add the wall seconds of ``step`` to the run's ``step_seconds`` (what the run spent where)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            spent = self.run_record.step_seconds
            spent[step] = round(spent.get(step, 0.0) + time.perf_counter() - t0, 2)

    def features(self, at: datetime, meanwhile: Callable[[], None] | None = None) -> dict[str, Any]:
        """:meth:`_features` with its printed output in ``logs/batch.log``; what it did."""
        from oo.settings import get_settings

        t0, before, skipped = time.perf_counter(), dict(self.run_record.step_seconds), self.features_skipped
        with open(get_settings().paths.resolve("logs", "batch.log"), "a") as out:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                failed, ingested = self._features(at, meanwhile)
        steps = {k: round(v - before.get(k, 0.0), 2) for k, v in self.run_record.step_seconds.items()}
        return {"at": at.isoformat(), "sync_failed": failed, "events_ingested": ingested,
                "features_skipped": self.features_skipped > skipped, "seconds": round(time.perf_counter() - t0, 2),
                "steps": {k: v for k, v in steps.items() if v > 0}}  # fmt: skip

    def _batch(self, at: datetime) -> dict[str, Any]:
        from models.features import pipeline
        from models.policy_training import train_and_register

        t0 = time.perf_counter()
        failed, ingested = self._features(at)
        with self._timed("training_examples"):
            examples = pipeline.training_examples(at.isoformat())
        with self._timed("training"):
            trained = train_and_register(at)
        return {
            "at": at.isoformat(),
            "sync_failed": failed,
            "events_ingested": ingested,
            "training_examples_added": examples,
            "training": {
                k: trained.get(k) for k in ("examples", "trained", "challenger", "champion", "promoted", "gate")
            },
            "seconds": round(time.perf_counter() - t0, 2),
        }

    def _wait_delivered(self) -> None:
        """Until the app's outbox delivered every reward to serving (which then logged it and
        pushed the user's fresh counters): simulated hours pass in milliseconds, and a user's next
        visit must not overtake what the relay would long have delivered."""
        from sqlalchemy import text

        query = text("SELECT status, count(*) FROM outbox WHERE destination = 'serving.reward' GROUP BY status")
        deadline = time.monotonic() + self.config.delivery_timeout_s
        with self._timed("wait_delivered"):
            self._poll_delivered(query, deadline)

    def _poll_delivered(self, query: Any, deadline: float) -> None:
        from oo.db import get_engine

        while True:
            with get_engine().connect() as con:
                counts = {str(k): int(v) for k, v in con.execute(query).all()}
            if counts.get("dead"):
                raise RuntimeError(f"serving refused {counts['dead']} rewards (dead outbox messages); see logs/")
            if not counts.get("pending"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{counts['pending']} rewards undelivered after {self.config.delivery_timeout_s} s")
            time.sleep(0.02)

    def _wait_champion(self, serving_url: str, version: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.config.champion_timeout_s
        while True:
            with contextlib.suppress(httpx.HTTPError):
                ready: dict[str, Any] = httpx.get(serving_url + "/ops/ready", timeout=10).json()
                if str(ready.get("champion_version")) == str(version):
                    return ready
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"serving did not load champion v{version} within {self.config.champion_timeout_s} s"
                )
            time.sleep(0.5)

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> LoopRun:
        """Run every simulated day; the services are stopped on leaving, whatever happens."""
        from oo.fakes.todoist import serve_in_thread

        t0 = time.perf_counter()
        self.config.var_dir.mkdir(parents=True, exist_ok=True)
        with serve_in_thread(self.world) as todoist_url:
            serving_port, app_port = free_port(), free_port()
            env = loop_env(
                self.config.var_dir,
                todoist_url,
                serving_port,
                app_port,
                self.config.baseline_floor,
                self.config.control_fraction,
            )
            if self.config.holdout_fraction is not None:
                env["OO_TRAINING__HOLDOUT_FRACTION"] = str(self.config.holdout_fraction)
            if self.config.gate_fraction is not None:
                env["OO_TRAINING__GATE_FRACTION"] = str(self.config.gate_fraction)
            with settings_env(**env):
                self._run(f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{serving_port}")
        self.run_record.wall_s = time.perf_counter() - t0
        return self.run_record

    def _services(self, names: set[str]) -> Any:
        from oo.launcher import Launcher
        from oo.platform import platform_services
        from oo.settings import get_settings

        settings = get_settings()
        chosen = [s for s in platform_services(settings) if s.name in names]
        for s in chosen:
            s.env = {**s.env, **{k: v for k, v in os.environ.items() if k.startswith("OO_")}}
        return Launcher(
            chosen,
            run_dir=settings.paths.resolve("run"),
            log_dir=settings.paths.resolve("logs"),
            health_timeout_s=self.config.health_timeout_s,
            title="oo simulate",
        )

    def _run(self, app_url: str, serving_url: str) -> None:
        from models.registry import Registry
        from oo import feature_store
        from oo.db import migrate
        from oo.settings import get_settings

        migrate()
        get_settings().paths.resolve("events").mkdir(parents=True, exist_ok=True)  # read before serving writes
        before = self.start - timedelta(hours=1)
        self._at(before)
        for user in self.users:
            user.todoist = self.world.add_user(full_name=user.traits.user_id)
            self.world.add_project(user.todoist, "Inbox", inbox=True)
            for task in self.sim.tasks(user.traits.user_id):
                self._add(user, task)
        # serving reads the feature repo's definitions and the MLflow store: both made before it
        # starts (the first features run finds the definitions registered and does not apply
        # again; two processes creating the MLflow database at once race on its migrations)
        with self._timed("start_services"):
            feature_store.apply()
            Registry()
        with contextlib.ExitStack() as stack, ThreadPoolExecutor(2, thread_name_prefix="sim-start") as background:
            # serving starts (and the batch's libraries load) while the app starts and users sign up
            serving = self._services({"serving"}).started()
            serving_up = background.submit(serving.__enter__)
            stack.callback(_leave, serving, serving_up)
            warmed = background.submit(_warm_imports)
            with self._timed("start_services"):
                stack.enter_context(self._services({"app-api"}).started())
            http = stack.enter_context(httpx.Client(base_url=app_url, timeout=30))
            with self._timed("sign_up"), ThreadPoolExecutor(self.config.concurrency) as pool:
                list(pool.map(lambda u: self._sign_up(http, u, before), self.users))
            self.on_progress("signed up", len(self.users))
            warmed.result()
            self.run_record.days.append(self.batch(self.start))  # the features serving reads on day 0
            with self._timed("start_services"):
                serving_up.result()
            self._days(http, serving_url)

    def _days(self, http: httpx.Client, serving_url: str) -> None:
        with ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="sim-user") as pool:
            for day in range(self.config.days):
                day_start = self.start + timedelta(days=day)
                for slot_start in self.slot_starts(day_start):
                    self._at(slot_start)
                    step = self.features(slot_start, meanwhile=self._wait_delivered)
                    step["day"] = day
                    self.run_record.slots.append(step)
                    with self._timed("requests"):
                        self._slot(http, pool, day, slot_start)
                self._night(day, day_start + timedelta(days=1), serving_url)
                self.on_progress("day", 1)
        self._close_windows(self.start + timedelta(days=self.config.days))

    def _close_windows(self, last_midnight: datetime) -> None:
        """After the last night: the time when the last day's reward windows have closed, and the
        hourly features work and the training examples then (no training), so that the report
        reads back every decision of the run, the last day's too (the control group's after a
        late promotion), not only those of the days before the last night."""
        from models.features import pipeline
        from oo.settings import get_settings

        closed = last_midnight + timedelta(hours=get_settings().reward.window_hours, minutes=1)
        self._at(closed)
        step = self.features(closed, meanwhile=self._wait_delivered)
        with self._timed("training_examples"):
            step["training_examples_added"] = pipeline.training_examples(closed.isoformat())
        step["windows_closed"] = True
        self.run_record.slots.append(step)

    def _night(self, day: int, midnight: datetime, serving_url: str) -> None:
        """A few tasks get done outside oO late in the evening; at midnight the nightly DAGs run
        (features, training examples, training and the gate)."""
        self._at(midnight - timedelta(minutes=10))
        for user in self.users:
            for done, replacement in self.sim.finish_outside(user.traits, self.config.outside_done_per_day):
                self._complete(user, done, replacement)
        self._wait_delivered()
        self._at(midnight)
        step = self.batch(midnight)
        step["day"] = day
        self.run_record.days.append(step)
        training = step["training"]
        if training.get("promoted"):
            with self._timed("wait_champion"):
                ready = self._wait_champion(serving_url, str(training["champion"]))
            self.run_record.promotions.append(
                {"day": day, "at": midnight.isoformat(), "version": str(training["champion"]), "serving": ready}
            )


def _leave(started: Any, entering: Any) -> None:
    """Stop the services of ``started`` (a :meth:`Launcher.started` context entered in another
    thread by ``entering``) once that entry is over; an entry that failed stopped them itself."""
    try:
        entering.result()
    except BaseException:  # noqa: BLE001  (its own ``finally`` stopped every process it started)
        return
    started.__exit__(None, None, None)


def _warm_imports() -> None:
    """Import what the first batch needs (Great Expectations, Feast, MLflow: tens of seconds on a
    busy machine) while the services start."""
    import feast  # noqa: F401
    import mlflow  # noqa: F401

    from data_contracts.expectations import _gx
    from models.features import pipeline  # noqa: F401
    from models.policy_training import train_and_register  # noqa: F401

    _gx()


def new_run_dir(root: Path, users: int, days: int, seed: int) -> Path:
    """A fresh folder for one run under ``root`` (``<users>x<days>-s<seed>-<utc time>-<id>``)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return root / f"{users}x{days}-s{seed}-{stamp}-{uuid.uuid4().hex[:6]}"
