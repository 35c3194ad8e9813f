"""Users of the app API at a fixed offered rate while serving, the learner and Todoist fail.

Open loop: request ``i`` is sent at ``i / rps`` seconds whatever the earlier ones are doing, so a
slow or dead server cannot slow the load down and hide its queue; latency is measured from the
scheduled time. Each slot is a ``GET /v1/tips/next`` of one user or (``feedback_share`` of the
slots, when a tip waits for a reaction) a ``POST /v1/feedback`` on a decision the user was shown,
with its own ``Idempotency-Key``. A feedback that failed is sent again later with the same key
(and after the timed window, as ``retry``, until accepted or five rounds);
``resend_share`` of the accepted ones are sent again on purpose (the answer must be
``duplicate``). Meanwhile, on a schedule: serving is killed (SIGKILL) and started again, the
learner likewise, and every connected user's Todoist is synced while the fake Todoist answers 429
and 5xx for some users (some on one request, some on every request).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from oo.fakes.e2e.stack import Stack

PASSWORD = "load-and-fault-password"
REACTIONS = ("done", "snooze", "dismiss")
FAULTS: tuple[dict[str, Any], ...] = (
    {"kind": "429", "times": -1, "retry_after": 1.0},  # every request: the user's sync fails
    {"kind": "5xx", "times": -1, "status": 503},
    {"kind": "429", "times": 1, "retry_after": 1.0},  # one request: the retry gets through
    {"kind": "5xx", "times": 1, "status": 500},
)
"""Faults of the faulty users, in turn; ``times=-1`` lasts for the rest of the run."""


@dataclass(frozen=True)
class Conditions:
    """What the run does. Times of events are fractions of ``seconds``."""

    users: int = 20
    rps: float = 100.0
    seconds: float = 60.0
    feedback_share: float = 0.5
    resend_share: float = 0.05
    faulty_users: int = 4
    kill_serving_at: float = 0.2
    kill_learner_at: float = 0.5
    learner_down_s: float = 2.0
    sync_at: float = 0.6
    timeout_s: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.users >= 1 and self.rps > 0 and self.seconds > 0):
            raise ValueError(f"users, rps and seconds must be positive: {self}")
        if not 0 <= self.faulty_users < self.users:
            raise ValueError("faulty_users must leave at least one healthy user")
        for name in ("kill_serving_at", "kill_learner_at", "sync_at", "feedback_share", "resend_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")


@dataclass
class User:
    """A signed-up user with a connected (fake) Todoist account."""

    email: str
    user_id: str
    access_token: str
    todoist_id: str
    fault: dict[str, Any] | None = None
    shown: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class Sample:
    """One request: what, when it was due (s from the start), its latency and its answer."""

    kind: Literal["tip", "feedback", "resend", "retry"]
    due_s: float
    latency_ms: float
    status: int | str


@dataclass
class Reaction:
    """A reaction the client wants recorded, under its idempotency key."""

    key: str
    user: User
    decision_id: str
    reaction: str
    attempts: int = 0
    answer: str | None = None


@dataclass
class LoadResult:
    """The samples, the reactions the app accepted, and what happened when."""

    samples: list[Sample] = field(default_factory=list)
    accepted: dict[str, Reaction] = field(default_factory=dict)
    resends: Counter[str] = field(default_factory=Counter)
    unaccepted: list[Reaction] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)
    syncs: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        raise RuntimeError(f"{what}: HTTP {response.status_code} {response.text[:300]}")


async def sign_up(client: httpx.AsyncClient, stack: Stack, cond: Conditions) -> list[User]:
    """``cond.users`` accounts, each connected to one fake Todoist user with its personal token;
    the first ``faulty_users`` get a fault to inject later."""
    fakes = (await client.get(stack.fake_admin_url + "users")).json()
    if len(fakes) < cond.users:
        raise RuntimeError(f"the fake Todoist has {len(fakes)} users, {cond.users} wanted")
    users = []
    run = uuid.uuid4().hex[:8]
    for i, fake in enumerate(fakes[: cond.users]):
        email = f"load-{run}-{i}@example.org"
        r = await client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
        _raise_for(r, "register")
        token = r.json()["access_token"]
        me = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        _raise_for(me, "me")
        user = User(email, me.json()["id"], token, fake["todoist_id"])
        r = await client.post("/v1/integrations/todoist", json={"token": fake["token"]}, headers=user.headers)
        _raise_for(r, "connect todoist")
        if i < cond.faulty_users:
            user.fault = FAULTS[i % len(FAULTS)]
        users.append(user)
    return users


def sync_everyone(stack: Stack, users: list[User]) -> dict[str, str]:
    """One run of the sync (what a ``todoist_sync`` DAG run does) over every user: status by user."""
    from oo.db import engine_for
    from oo.integrations.todoist.sync import sync_users
    from oo.lake import Lake
    from oo.vault import Vault

    settings = stack.settings()
    results = sync_users(
        [u.user_id for u in users],
        engine=engine_for(settings.db_url),
        lake=Lake(settings.lake_root),
        vault=Vault(settings.vault.keys),
        settings=settings,
    )
    return {r.user_id: r.status for r in results}


class Driver:
    """Runs the schedule; holds what the client knows."""

    def __init__(self, stack: Stack, users: list[User], cond: Conditions) -> None:
        self.stack, self.users, self.cond = stack, users, cond
        self.rng = random.Random(cond.seed)
        self.result = LoadResult()
        self.waiting: list[Reaction] = []  # shown tips to react to, and failed feedback to send again
        self.t0 = 0.0

    def _now(self) -> float:
        return time.monotonic() - self.t0

    def _key(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    async def _tip(self, client: httpx.AsyncClient, user: User, due: float) -> None:
        status: int | str
        try:
            r = await client.get("/v1/tips/next", headers=user.headers)
            status = r.status_code
            if status == 200:
                body = r.json()
                if body.get("decision_id") and body.get("tip"):
                    reaction = self.rng.choice(REACTIONS)
                    self.waiting.append(Reaction(self._key(), user, body["decision_id"], reaction))
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        self.result.samples.append(Sample("tip", due, (self._now() - due) * 1000, status))

    async def _feedback(
        self, client: httpx.AsyncClient, item: Reaction, due: float, kind: Literal["feedback", "resend", "retry"]
    ) -> None:
        status: int | str
        item.attempts += 1
        try:
            r = await client.post(
                "/v1/feedback",
                json={"decision_id": item.decision_id, "reaction": item.reaction},
                headers={**item.user.headers, "Idempotency-Key": item.key},
            )
            status = r.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        self.result.samples.append(Sample(kind, due, (self._now() - due) * 1000, status))
        resend = kind == "resend"
        if status == 202:
            answer = r.json()["status"]
            if resend:
                self.result.resends[answer] += 1
            else:
                item.answer = answer
                self.result.accepted[item.key] = item
        elif not resend:
            self.waiting.append(item)  # a client sends it again later, with the same key

    async def _slot(self, client: httpx.AsyncClient, i: int, due: float) -> None:
        roll = self.rng.random()
        if self.result.accepted and roll < self.cond.feedback_share * self.cond.resend_share:
            again = self.result.accepted[self.rng.choice(sorted(self.result.accepted))]
            await self._feedback(client, again, due, "resend")
        elif self.waiting and roll < self.cond.feedback_share:
            item = self.waiting.pop(self.rng.randrange(len(self.waiting)))
            await self._feedback(client, item, due, "feedback")
        else:
            await self._tip(client, self.users[i % len(self.users)], due)

    # -- the faults ----------------------------------------------------------------------------
    async def _crash(self, name: str, down_s: float) -> None:
        self.result.events[f"{name}_killed_s"] = self._now()
        await asyncio.to_thread(self.stack.kill, name)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.stack.restart, name)
        self.result.events[f"{name}_restarted_s"] = self._now()
        took = await asyncio.to_thread(self.stack.procs[name].wait_healthy, self.stack.health_timeout_s)
        self.result.events[f"{name}_healthy_s"] = self._now()
        self.result.events[f"{name}_restart_to_healthy_s"] = took

    async def _admin(self, client: httpx.AsyncClient, path: str, **kwargs: Any) -> None:
        """A call to the fake's admin endpoints, tried again while the (busy) machine refuses it."""
        deadline = time.monotonic() + 60.0
        while True:
            try:
                r = await client.post(self.stack.fake_admin_url + path, **kwargs)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        _raise_for(r, f"fake Todoist {path}")

    async def _sync_with_faults(self, client: httpx.AsyncClient) -> None:
        self.result.events["sync_started_s"] = self._now()
        await self._admin(client, "evolve", params={"steps": 3})
        for user in self.users:
            if user.fault is not None:
                await self._admin(client, "faults", json={"todoist_id": user.todoist_id, **user.fault})
        statuses = await asyncio.to_thread(sync_everyone, self.stack, self.users)
        self.result.events["sync_finished_s"] = self._now()
        self.result.syncs.append({"round": "during_load", "statuses": statuses})

    async def run(self) -> LoadResult:
        """Send ``rps * seconds`` requests on schedule while the faults happen; wait for them all."""
        cond = self.cond
        total = int(cond.rps * cond.seconds)
        # no cap on connections: an overloaded server gets every request on time (open loop), and
        # httpcore's queue of waiting requests (whose scans starve the event loop) never forms
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
        timeout = httpx.Timeout(cond.timeout_s)
        async with (
            httpx.AsyncClient(base_url=self.stack.app_url, limits=limits, timeout=timeout) as client,
            httpx.AsyncClient(timeout=timeout) as admin,
        ):
            self.t0 = time.monotonic()
            faults = [
                self._at(cond.kill_serving_at * cond.seconds, self._crash("serving", 0.0)),
                self._at(cond.kill_learner_at * cond.seconds, self._crash("learner", cond.learner_down_s)),
                self._at(cond.sync_at * cond.seconds, self._sync_with_faults(admin)),
            ]
            tasks = [asyncio.create_task(f) for f in faults]
            for i in range(total):
                due = i / cond.rps
                delay = due - self._now()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self._slot(client, i, due)))
            await asyncio.gather(*tasks)
            self.result.elapsed_s = self._now()
            await self._send_failed_again(client)
        self.result.unaccepted = [r for r in self.waiting if r.attempts > 0]
        return self.result

    async def _send_failed_again(self, client: httpx.AsyncClient, rounds: int = 5, deadline_s: float = 90.0) -> None:
        """After the timed window: feedback that failed is sent again (same key), as a client would,
        all at once, for at most ``rounds`` rounds and ``deadline_s`` seconds."""
        end = time.monotonic() + deadline_s
        for _ in range(rounds):
            failed = [r for r in self.waiting if r.attempts > 0]
            if not failed or time.monotonic() > end:
                return
            self.waiting = [r for r in self.waiting if r.attempts == 0]
            await asyncio.gather(*(self._feedback(client, item, self._now(), "retry") for item in failed))
            await asyncio.sleep(1.0)

    async def _at(self, when_s: float, work: Any) -> None:
        delay = when_s - self._now()
        if delay > 0:
            await asyncio.sleep(delay)
        await work


async def recovered(stack: Stack, users: list[User], timeout_s: float) -> dict[str, Any]:
    """After the run: every user gets a tip again (within ``timeout_s``); how long that took."""
    start = time.monotonic()
    missing = {u.user_id: u for u in users}

    async def ask(client: httpx.AsyncClient, user: User) -> None:
        try:
            r = await client.get("/v1/tips/next", headers=user.headers)
        except httpx.HTTPError:
            return
        if r.status_code == 200 and r.json().get("tip"):
            missing.pop(user.user_id, None)

    async with httpx.AsyncClient(base_url=stack.app_url, timeout=5.0) as client:
        while missing and time.monotonic() - start < timeout_s:
            await asyncio.gather(*(ask(client, u) for u in list(missing.values())))
            if missing:
                await asyncio.sleep(0.5)
    return {"users_without_tip": len(missing), "seconds": round(time.monotonic() - start, 2)}
