"""The BentoML decision service: ``rank``, ``reward``, ``activate``, health, readiness, metrics.

``bentoml serve serving.service:TipService --host 127.0.0.1 --port 3000`` (``make serve``).
Bodies are :mod:`data_contracts.serving`'s, flat (``{"user_id": ..., "candidates": [...]}``).
Errors: 400 bad input, 404 unknown or foreign decision, 409 an event id reused for another
request; bodies ``{"error": "..."}``. ``GET /ops/health`` (alive), ``GET /ops/ready`` (model
source, learner and apprentice figures), BentoML's ``/readyz`` and Prometheus ``/metrics``.

Topology (``OO_SERVING__LEARNER``): ``embedded`` (default) runs the learner in this process, so a
reward reaches the next rank within milliseconds: one worker. ``separate``: this process only
decides and follows the snapshots of ``python -m serving.learner``; run as many as needed, and
``OO_SERVING__WORKERS`` worker processes in each (one per core).

Where events go: without ``OO_BUS__NATS_URL``, to the event log (every replica and the learner on
one disk). With it, each decision, its tip scores, rewards, reactions and activations are fsynced
to this replica's spool (``var/serving/spool``) before the answer leaves, and a relay thread
publishes them to JetStream (:mod:`serving.publish`): the bus down delays the learner, never a
decision. The separate learner then consumes them from the bus; ``events_ingest`` drains the bus
into the lake.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound
from fastapi import FastAPI
from starlette.responses import Response

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
from oo.runtime import configure, freeze_startup_heap
from oo.settings import get_settings
from serving.engine import BadRequest, Conflict, DecisionEngine, NotFoundError

if TYPE_CHECKING:
    from serving.learning import Background
    from serving.publish import Relay

log = logging.getLogger(__name__)

ops = FastAPI(title="oO serving ops")


def build_engine() -> tuple[DecisionEngine, Any]:
    """The engine from the settings, and its background threads (the embedded learner, the relay
    to NATS) or ``None``."""
    from oo.events_ingest import EventLog, get_event_log
    from oo.lake import get_lake
    from serving import metrics
    from serving.candidates import CandidateGenerator
    from serving.decision_index import open_index
    from serving.learning import Background, LearnerLoop
    from serving.models_source import EmbeddedSource, PolicySource, SnapshotSource
    from serving.snapshots import SnapshotStore

    settings = get_settings()
    relay = None
    events: EventLog
    if settings.bus.nats_url:  # events go to a local spool the relay drains onto the bus
        from serving.publish import nats_bus_factory, start_relay

        events, relay = start_relay(settings.serving_state_dir / "spool", nats_bus_factory(settings))
    else:
        events = get_event_log()
    snapshots = SnapshotStore(settings.snapshot_dir)
    index = open_index(settings.serving.index_url, settings.serving_state_dir)
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
    return engine, Workers(background, relay) if background or relay else None


class Workers:
    """The service's background threads (the embedded learner, the relay), stopped together."""

    def __init__(self, background: Background | None, relay: Relay | None) -> None:
        self.background, self.relay = background, relay

    def describe(self) -> dict[str, Any]:
        """The relay's figures for readiness (when there is one)."""
        return {} if self.relay is None else {"relay": self.relay.describe()}

    def stop(self) -> None:
        """Stop each (the learner checkpoints; the relay leaves the rest in the spool)."""
        for worker in (self.background, self.relay):
            if worker is not None:
                worker.stop()


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


DECISION_ROUTES = ("/rank", "/reward", "/activate")
"""The routes every decision and reaction takes (what tracing costs most on)."""


def tracing_config(sample_rate: float, otlp_endpoint: str | None = None) -> dict[str, Any]:
    """BentoML's ``tracing`` configuration from ``OO_SERVING__TRACE_SAMPLE_RATE`` and
    ``OO_SERVING__TRACE_OTLP_ENDPOINT``.

    BentoML's OpenTelemetry middleware builds a span for every request even at its default sample
    rate of 0, when none is ever exported: about a tenth of a rank's CPU (a ``py-spy`` profile of
    ``bentoml serve`` under load). At 0 the decision routes skip it; above 0 it samples that share
    of the requests and exports them over OTLP/HTTP.

    Examples
    --------
    >>> tracing_config(0.0)
    {'sample_rate': 0.0, 'excluded_urls': ['/rank', '/reward', '/activate']}
    >>> tracing_config(0.25, "http://127.0.0.1:4318/v1/traces")["otlp"]
    {'protocol': 'http', 'endpoint': 'http://127.0.0.1:4318/v1/traces'}
    """
    if sample_rate <= 0:
        return {"sample_rate": 0.0, "excluded_urls": list(DECISION_ROUTES)}
    config: dict[str, Any] = {"sample_rate": sample_rate}
    if otlp_endpoint:
        config |= {"exporter_type": "otlp", "otlp": {"protocol": "http", "endpoint": otlp_endpoint}}
    return config


WORKERS = get_settings().serving.workers
"""Worker processes (``OO_SERVING__WORKERS``): one per core past the embedded default, each a
replica reading the separate learner's snapshots; replicas share the event log or spool (appends
under a file lock, one relay drains a shared spool at a time) and the decision index."""


@bentoml.asgi_app(ops, path="/ops")
@bentoml.service(
    workers=WORKERS,
    traffic={"timeout": 10},
    logging={"access": {"enabled": False}},
    tracing=tracing_config(get_settings().serving.trace_sample_rate, get_settings().serving.trace_otlp_endpoint),
)
class TipService:
    """Decides which tip a user sees next, and learns from how they react."""

    def __init__(self) -> None:
        configure()
        _own_log_lines()
        self.engine, self.background = build_engine()

    @bentoml.on_startup
    async def warm_up(self) -> None:
        """One decision through every step but the log before the server accepts requests (and
        before ``/readyz`` answers), so the first user after a start is not the one who waits."""
        try:
            took = await self.engine.warm_up()
        except Exception as exc:  # a cold first request is better than no service
            log.warning("serving: warm-up failed (%s: %s); the first request will be slower", type(exc).__name__, exc)
        else:
            log.info("serving: warmed up in %.2f s", took)
        # no full-collection pauses over the start-up heap (oo.runtime), frozen once the first
        # decision has loaded what it needs (stores, registry, policy), whether or not it succeeded
        freeze_startup_heap()

    @bentoml.api(input_spec=RankRequest, output_spec=RankResponse)
    async def rank(self, **fields: Any) -> Response:
        """One decision: the ranking with every candidate's probability and the chosen one."""
        try:
            answer = await self.engine.decide(RankRequest(**fields))
        except (BadRequest, Conflict, NotFoundError, PolicyInputError) as exc:
            raise _translate(exc) from exc
        # the JSON the decision index keeps, sent as is (BentoML would serialize the model again)
        return Response(answer.body, media_type="application/json")

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
        """Which model serves (champion / snapshot / rule_baseline), the learner's and the relay's
        figures, and which worker process answered (1 to ``OO_SERVING__WORKERS``)."""
        workers = {} if self.background is None else self.background.describe()
        return {**self.engine.readiness(), **workers, "worker": bentoml.server_context.worker_index}

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Checkpoint the embedded learner; stop the relay."""
        if self.background is not None:
            self.background.stop()


@bentoml.service(workers=WORKERS, logging={"access": {"enabled": False}})
class Echo:
    """A trivial endpoint that returns its input: the floor the rank benchmark is compared with."""

    def __init__(self) -> None:
        # this module's imports (Feast, MLflow, the models) are in the heap of this process too: frozen
        # as TipService's are, so that the floor is BentoML's cost, not full collections over them
        freeze_startup_heap()

    @bentoml.api(input_spec=RankRequest)
    def echo(self, **fields: Any) -> RankRequest:
        """The request, as received."""
        return RankRequest(**fields)
