"""A stand-in for the serving API that speaks the real bodies, for the app API's tests and bench.

It is not the recommender: it ranks the caller's candidates plus a fixed pool per user
(two Todoist-like tasks, and an LLM tip when ``llm_consent`` is set) uniformly at random, seeded
by the decision id, so the propensity is exact (1/n). It keeps what the real service must keep
to honour the protocol: decisions by id (a reward names its decision, and only that decision's
user may reward it), rewards by ``reaction_id`` (the same reaction twice counts once), and
activations of deferred decisions. It can be stopped and started again on the same port with
its state intact, to test "serving down, delivered after it comes back, exactly once".
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from data_contracts import TipCandidate
from data_contracts.serving import (
    ActivateRequest,
    ForgetResponse,
    RankedCandidate,
    RankRequest,
    RankResponse,
    RewardRequest,
    RewardResponse,
    UserRequest,
    UserStateResponse,
)
from oo.serving_client import WIRE, unwrap_body

REWARDS = {"done": 1.0, "snooze": 0.2, "dismiss": 0.0}


def default_pool(user_id: str) -> list[TipCandidate]:
    """The Todoist-like candidates every user has in the fake."""
    return [
        TipCandidate(candidate_id=f"task:{user_id}:{n}", content=text, kind="todoist_task", source="todoist")
        for n, text in enumerate(("Water the plants", "Reply to the landlord", "Stretch for five minutes"))
    ]


@dataclass
class FakeServing:
    """The fake's state: decisions, accepted rewards, activations, and call counts."""

    decisions: dict[str, RankResponse] = field(default_factory=dict)
    rewards: dict[str, RewardRequest] = field(default_factory=dict)
    activated: set[str] = field(default_factory=set)
    calls: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Forget everything (between tests)."""
        with self.lock:
            self.decisions.clear()
            self.rewards.clear()
            self.activated.clear()
            self.calls.clear()

    def rank(self, req: RankRequest) -> RankResponse:
        event_id = req.event_id or uuid.uuid4()
        pool = list(req.candidates)
        if req.include_todoist:
            pool += default_pool(req.user_id)
        if req.llm_consent:
            pool.append(
                TipCandidate(
                    candidate_id=f"llm:{req.user_id}:{datetime.now(UTC):%Y%m%d}",
                    content="Pick the smallest task and do two minutes of it",
                    kind="llm_tip",
                    source="fake-llm",
                    llm_model="fake",
                    prompt_version="v0",
                )
            )
        seen: set[str] = set()
        allowed = []
        for c in pool:
            if c.candidate_id not in seen and c.candidate_id not in req.excluded_ids:
                seen.add(c.candidate_id)
                allowed.append(c)
        now = req.decided_at or datetime.now(UTC)  # a simulation's time, as serving takes it
        if not allowed:
            response = RankResponse(
                event_id=event_id, user_id=req.user_id, decided_at=now, ranking=[], reward_action_id=None,
                chosen=None, excluded_ids=list(req.excluded_ids), policy="fake-uniform", policy_version="0",
                defer_activation=req.defer_activation, reason="no candidates",
            )  # fmt: skip
        else:
            order = list(allowed)
            random.Random(event_id.int).shuffle(order)
            p = 1.0 / len(order)
            response = RankResponse(
                event_id=event_id,
                user_id=req.user_id,
                decided_at=now,
                ranking=[
                    RankedCandidate(id=c.candidate_id, probability=p, kind=c.kind, content=c.content) for c in order
                ],
                reward_action_id=order[0].candidate_id,
                chosen=order[0],
                propensity=p,
                excluded_ids=list(req.excluded_ids),
                policy="fake-uniform",
                policy_version="0",
                defer_activation=req.defer_activation,
            )
        with self.lock:
            self.decisions[str(event_id)] = response
        return response

    def reward(self, req: RewardRequest) -> tuple[int, dict[str, Any]]:
        with self.lock:
            decision = self.decisions.get(str(req.event_id))
            if decision is None:
                return 404, {"error": "unknown decision"}
            if decision.user_id != req.user_id:
                return 403, {"error": "the decision was made for another user"}
            if str(req.reaction_id) in self.rewards:
                status = "duplicate"
            else:
                self.rewards[str(req.reaction_id)] = req
                status = "accepted"
        body = RewardResponse(event_id=req.event_id, reward=REWARDS[req.reaction.value], status=status)
        return 200, body.model_dump(mode="json")

    def activate(self, req: ActivateRequest) -> tuple[int, dict[str, Any]]:
        with self.lock:
            decision = self.decisions.get(str(req.event_id))
            if decision is None or decision.user_id != req.user_id:
                return 404, {"error": "unknown decision"}
            self.activated.add(str(req.event_id))
        return 200, {"event_id": str(req.event_id), "activated": True}

    def held(self, user_id: str) -> dict[str, object]:
        with self.lock:
            return {
                "decisions": [d.model_dump(mode="json") for d in self.decisions.values() if d.user_id == user_id],
                "rewards": [r.model_dump(mode="json") for r in self.rewards.values() if r.user_id == user_id],
            }

    def forget(self, user_id: str) -> int:
        with self.lock:
            ids = [k for k, d in self.decisions.items() if d.user_id == user_id]
            rewards = [k for k, r in self.rewards.items() if r.user_id == user_id]
            for k in ids:
                del self.decisions[k]
                self.activated.discard(k)
            for k in rewards:
                del self.rewards[k]
            return len(ids) + len(rewards)

    def accepted_rewards(self, event_id: str) -> list[RewardRequest]:
        """The distinct rewards accepted for one decision."""
        with self.lock:
            return [r for r in self.rewards.values() if str(r.event_id) == event_id]


def create_app(world: FakeServing) -> Starlette:
    """The ASGI app serving ``world`` at the paths of :data:`oo.serving_client.WIRE`."""

    def endpoint(name: str, model: type[BaseModel]) -> Any:
        async def handle(request: Request) -> Response:
            with world.lock:
                world.calls[name] = world.calls.get(name, 0) + 1
            try:
                body = model.model_validate(unwrap_body(name, await request.json()))
            except (ValueError, ValidationError) as exc:
                return JSONResponse({"error": str(exc)[:500]}, status_code=400)
            if isinstance(body, RankRequest):
                return Response(world.rank(body).model_dump_json(), media_type="application/json")
            if isinstance(body, RewardRequest):
                status, answer = world.reward(body)
            elif isinstance(body, ActivateRequest):
                status, answer = world.activate(body)
            elif name == "user_state" and isinstance(body, UserRequest):
                status, answer = (
                    200,
                    UserStateResponse(user_id=body.user_id, state=world.held(body.user_id)).model_dump(),
                )
            elif isinstance(body, UserRequest):
                status, answer = (
                    200,
                    ForgetResponse(user_id=body.user_id, removed=world.forget(body.user_id)).model_dump(),
                )
            return JSONResponse(answer, status_code=status)

        return handle

    models: dict[str, type[BaseModel]] = {
        "rank": RankRequest,
        "reward": RewardRequest,
        "activate": ActivateRequest,
        "user_state": UserRequest,
        "forget": UserRequest,
    }
    return Starlette(routes=[Route(WIRE[n].path, endpoint(n, m), methods=["POST"]) for n, m in models.items()])


class FakeServingServer:
    """Runs a :class:`FakeServing` on a loopback port in a thread; :meth:`stop` and :meth:`start`
    again keep the port and the state."""

    def __init__(self, world: FakeServing | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.world = world or FakeServing()
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> str:
        import uvicorn

        config = uvicorn.Config(
            create_app(self.world), host=self.host, port=self.port, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-serving", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake serving server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self.url

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None


@contextmanager
def serve_in_thread(world: FakeServing | None = None, port: int = 0) -> Iterator[FakeServingServer]:
    """A running fake serving server, stopped on exit."""
    server = FakeServingServer(world, port=port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main(host: str = "127.0.0.1", port: int = 3000) -> None:
    """Serve the fake until interrupted."""
    import uvicorn

    uvicorn.run(create_app(FakeServing()), host=host, port=port, log_level="warning", access_log=False)
