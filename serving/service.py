"""The BentoML decision service: ``rank``, ``reward``, ``activate``, health, readiness, metrics.

``bentoml serve serving.service:TipService --host 127.0.0.1 --port 3000`` (``make serve``).
Bodies are :mod:`data_contracts.serving`'s, flat (``{"user_id": ..., "candidates": [...]}``).
Errors: 400 bad input, 404 unknown or foreign decision, 409 an event id reused for another
request; bodies ``{"error": "..."}``. ``GET /ops/health`` (alive), ``GET /ops/ready`` (model
source, learner and apprentice figures), BentoML's ``/readyz`` and Prometheus ``/metrics``.

Topology (``OO_SERVING__LEARNER``): ``embedded`` (default) runs the learner in this process, so a
reward reaches the next rank within milliseconds: one worker. ``separate``: this process only
decides and follows the snapshots of ``python -m serving.learner``; run as many as needed.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound
from fastapi import FastAPI

from data_contracts.serving import (
    ActivateRequest,
    ForgetResponse,
    RankRequest,
    RankResponse,
    RewardRequest,
    RewardResponse,
    UserRequest,
    UserStateResponse,
)
from models.policies import PolicyInputError
from oo.runtime import configure
from oo.settings import get_settings
from serving.engine import BadRequest, Conflict, DecisionEngine, NotFoundError

log = logging.getLogger(__name__)

ops = FastAPI(title="oO serving ops")


def build_engine() -> tuple[DecisionEngine, Any]:
    """The engine from the settings, and the background learner thread (embedded) or ``None``."""
    from oo.events_ingest import get_event_log
    from oo.lake import get_lake
    from serving import metrics
    from serving.candidates import CandidateGenerator
    from serving.decision_index import DecisionIndex
    from serving.learning import Background, LearnerLoop
    from serving.models_source import EmbeddedSource, PolicySource, SnapshotSource
    from serving.snapshots import SnapshotStore

    settings = get_settings()
    events = get_event_log()
    snapshots = SnapshotStore(settings.snapshot_dir)
    index = DecisionIndex(settings.serving_state_dir / "decisions.db")
    features = None
    try:
        from models.features.online import OnlineFeatures
        from oo.feature_store import get_store

        features = OnlineFeatures(get_store(settings), task_ttl_s=settings.serving.task_features_ttl_s)
    except Exception as exc:  # no store at all: every decision is served on contract defaults
        log.warning("serving: feature store unavailable (%s: %s); contract defaults", type(exc).__name__, exc)
    loop = None
    background = None
    source: PolicySource
    if settings.serving.learner == "embedded":
        loop = LearnerLoop(
            settings, events, snapshots, on_champion_change=lambda old, new: metrics.CHAMPION_RELOADS.inc()
        )
        loop.poll()
        source = EmbeddedSource(loop)
        background = Background(loop, settings.serving.learner_poll_s * 10)
        background.start()
    else:
        source = SnapshotSource(settings, snapshots)
    engine = DecisionEngine(
        settings,
        events=events,
        index=index,
        source=source,
        generator=CandidateGenerator(settings, get_lake(), features=features),
        features=features,
        loop=loop,
    )
    return engine, background


def _own_log_lines() -> None:
    """Our INFO lines (snapshot loads, champion moves) in the server's output: BentoML configures
    its own loggers only, so ``serving.*`` gets a handler of its own."""
    logger = logging.getLogger("serving")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(get_settings().log_level)


def _translate(exc: Exception) -> BentoMLException:
    if isinstance(exc, NotFoundError):
        return NotFound(str(exc.args[0]) if exc.args else "not found")
    if isinstance(exc, Conflict):
        return BentoMLException(str(exc), error_code=HTTPStatus.CONFLICT)
    return InvalidArgument(str(exc))


@bentoml.asgi_app(ops, path="/ops")
@bentoml.service(
    workers=1,
    traffic={"timeout": 10},
    logging={"access": {"enabled": False}},
)
class TipService:
    """Decides which tip a user sees next, and learns from how they react."""

    def __init__(self) -> None:
        configure()
        _own_log_lines()
        self.engine, self.background = build_engine()

    @bentoml.api(input_spec=RankRequest)
    async def rank(self, **fields: Any) -> RankResponse:
        """One decision: the ranking with every candidate's probability and the chosen one."""
        try:
            return await self.engine.rank(RankRequest(**fields))
        except (BadRequest, Conflict, NotFoundError, PolicyInputError) as exc:
            raise _translate(exc) from exc

    @bentoml.api(input_spec=RewardRequest)
    def reward(self, **fields: Any) -> RewardResponse:
        """A reaction to a decision's chosen tip: counted once, published, learned."""
        try:
            return self.engine.reward(RewardRequest(**fields))
        except (BadRequest, NotFoundError) as exc:
            raise _translate(exc) from exc

    @bentoml.api(input_spec=ActivateRequest)
    def activate(self, **fields: Any) -> dict[str, Any]:
        """A deferred decision's tip reached the user."""
        try:
            return self.engine.activate(ActivateRequest(**fields))
        except NotFoundError as exc:
            raise _translate(exc) from exc

    @bentoml.api(input_spec=UserRequest)
    def user_state(self, **fields: Any) -> UserStateResponse:
        """Everything serving keeps about one user (the app API's export)."""
        user = UserRequest(**fields)
        return UserStateResponse(user_id=user.user_id, state=self.engine.user_state(user.user_id))

    @bentoml.api(input_spec=UserRequest)
    def forget(self, **fields: Any) -> ForgetResponse:
        """Erase one user from serving's state (the app API's account deletion)."""
        user = UserRequest(**fields)
        return ForgetResponse(user_id=user.user_id, removed=self.engine.forget(user.user_id))

    @ops.get("/health")
    def health(self) -> dict[str, str]:
        """Alive."""
        return {"status": "ok"}

    @ops.get("/ready")
    def ready(self) -> dict[str, Any]:
        """Which model serves (champion / snapshot / rule_baseline) and the learner's figures."""
        return self.engine.readiness()

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Checkpoint the embedded learner."""
        if self.background is not None:
            self.background.stop()


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class Echo:
    """A trivial endpoint that returns its input: the floor the rank benchmark is compared with."""

    @bentoml.api(input_spec=RankRequest)
    def echo(self, **fields: Any) -> RankRequest:
        """The request, as received."""
        return RankRequest(**fields)
