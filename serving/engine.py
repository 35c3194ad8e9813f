"""The service's work, apart from HTTP: rank, reward and activate over the stores they need.

BentoML (:mod:`serving.service`) only translates; everything here runs the same in a test.
Durability: a decision and its tip scores are appended to the event log and fsynced before the
answer leaves (a group commit: concurrent ranks share the writes, off the event loop); a reward
and its reaction likewise before it is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from data_contracts import (
    Activation,
    CandidateFeatures,
    CandidateKind,
    ReactionEvent,
    RewardEvent,
    TipCandidate,
    UserContext,
)
from data_contracts.decisions import MAX_CANDIDATES
from data_contracts.serving import ActivateRequest, RankRequest, RankResponse, RewardRequest, RewardResponse
from models.features.online import OnlineFeatures, features_dict, llm_tip_features
from models.policies import Policy, PolicyInputError, PolicyNumericError
from oo.event_erasure import redact_user
from oo.events_ingest import EventLog
from oo.settings import Settings
from serving import lifecycle, metrics
from serving.candidates import CandidateGenerator, CandidatePools
from serving.decision_index import DecisionIndex, IndexedDecision
from serving.group_commit import GroupCommit
from serving.learning import LearnerLoop
from serving.models_source import PolicySource
from serving.ranking import empty_response, in_control, make_decision, request_hash

log = logging.getLogger(__name__)

WARM_UP_USER = "oo-warm-up"
"""The user of the warm-up decision (:meth:`DecisionEngine.warm_up`; never logged)."""


class BadRequest(ValueError):
    """A request the service refuses (400)."""


class NotFoundError(KeyError):
    """A decision id that is unknown, or not the caller's (404: the two look the same)."""


class Conflict(ValueError):
    """An event id already used for another request (409)."""


_LLM_TIP = features_dict(llm_tip_features())
_DEFAULTS = features_dict(CandidateFeatures())


def _merge_features(candidate: TipCandidate, base: dict[str, float], from_store: bool) -> TipCandidate:
    """The store's features win over the caller's for a known task; the caller's win otherwise."""
    features = {**candidate.features, **base} if from_store else {**base, **candidate.features}
    return candidate.model_copy(update={"features": features})


@dataclass(frozen=True)
class Answer:
    """A rank's answer and its JSON (the response's ``model_dump_json``)."""

    response: RankResponse
    body: bytes

    @classmethod
    def of(cls, response: RankResponse) -> Answer:
        """``response`` with its JSON."""
        return cls(response, response.model_dump_json().encode())


class DecisionEngine:
    """Rank, reward, activate; the stores and the policy source are handed in."""

    def __init__(
        self,
        settings: Settings,
        *,
        events: EventLog,
        index: DecisionIndex,
        source: PolicySource,
        generator: CandidateGenerator,
        features: OnlineFeatures | None,
        loop: LearnerLoop | None = None,
    ) -> None:
        self.settings = settings
        self.events = events
        self.journal = GroupCommit(events)
        self.index = index
        self.source = source
        self.generator = generator
        self.features = features
        self.loop = loop
        self.baseline = lifecycle.rule_baseline(settings.serving.baseline_floor)
        self.fallbacks = 0
        self.policy_fallbacks = 0

    # -- rank --------------------------------------------------------------------------------
    async def rank(self, request: RankRequest, now: datetime | None = None) -> RankResponse:
        """One decision for ``request`` (logged before it is returned)."""
        return (await self.decide(request, now)).response

    async def warm_up(self) -> float:
        """Take one decision through every step but the log, the index and the counters (the
        feature store's first read, the lake's task files, the policy's first scores), so that
        the first user after a start does not wait for them; the seconds it took. Run before the
        service says it is ready."""
        start = time.perf_counter()
        candidates = [
            TipCandidate(
                candidate_id=f"warm-up:{i}", content="warm-up", kind=CandidateKind.todoist_task, source="warm-up"
            )
            for i in range(2)
        ]
        request = RankRequest(user_id=WARM_UP_USER, include_todoist=True, candidates=candidates)
        await self.decide(request, dry_run=True)
        return time.perf_counter() - start

    async def decide(self, request: RankRequest, now: datetime | None = None, dry_run: bool = False) -> Answer:
        """One decision for ``request`` (logged before it is returned), and its JSON, serialized
        once for the decision index and the HTTP answer alike; ``dry_run`` (the warm-up) logs,
        indexes and counts nothing."""
        start = time.perf_counter()
        if request.decided_at is not None and not self.settings.serving.simulated_clock:
            raise BadRequest("decided_at is accepted only when serving runs with OO_SERVING__SIMULATED_CLOCK")
        decided_at = now or request.decided_at or datetime.now(UTC)
        event_id = request.event_id or uuid.uuid4()
        digest = request_hash(request)
        if request.event_id is not None:
            previous = self.index.get(request.event_id)
            if previous is not None:
                return self._repeat(previous, digest)
        given = self._check_candidates(request.candidates)
        pools = None
        if request.include_todoist or request.llm_consent:
            pools = await self.generator.gather(
                request.user_id, llm_consent=request.llm_consent, now=decided_at, context=request.context
            )
            # LLM pool outcomes (timeouts, errors, malformed) are counted where they happen:
            # serving.candidates.LLM_POOL, by status.
        gathered = (
            []
            if pools is None
            else [c for c in pools.candidates if request.include_todoist or c.kind is CandidateKind.llm_tip]
        )
        candidates = self._combine(given, gathered)
        context, candidates, store_ok, known = self._featurize(request, candidates, pools, decided_at)
        excluded_ids = set(request.excluded_ids)
        eligible = [c for c in candidates if c.candidate_id not in excluded_ids]
        excluded = [c for c in candidates if c.candidate_id in excluded_ids]
        fallback_reason: str | None = None
        self.source.refresh()
        with self.source.lock:
            learning = self.source.policy()
            unknown_user = store_ok and not known and not gathered
            served, shadows = self._policies(learning, unknown_user, event_id)
            if not eligible:
                reason = "no candidates: the user has no open tasks and the request gave none"
                if excluded:
                    reason = "every candidate is excluded"
                metrics.decisions(served.name, "empty").inc()
                return Answer.of(empty_response(event_id, request, decided_at, served, reason, excluded))
            decide = partial(
                make_decision,
                event_id=event_id,
                request=request,
                decided_at=decided_at,
                context=context,
                eligible=eligible,
                excluded=excluded,
            )
            try:
                made = decide(served=served, shadows=shadows)
            except PolicyNumericError as exc:  # never a 500: the rule baseline decides this one
                if served is self.baseline and not shadows:
                    raise
                failed = served.name if served is not self.baseline else shadows[0].name
                self.policy_fallbacks += 1
                metrics.POLICY_FALLBACKS.labels(policy=failed, error=type(exc).__name__).inc()
                log.warning(
                    "rank: %s failed numerically (%s: %s); the rule baseline decided %s",
                    failed,
                    type(exc).__name__,
                    exc,
                    event_id,
                )
                fallback_reason = f"{failed} failed ({type(exc).__name__}): the rule baseline decided"
                served = self.baseline
                made = decide(served=served, shadows=[])
        response = made.response
        if fallback_reason is not None:
            response = response.model_copy(update={"reason": fallback_reason})
        elif unknown_user:
            response = response.model_copy(update={"reason": "unknown user: the rule baseline decided"})
        kind = next(c.kind.value for c in eligible if c.candidate_id == made.decision.chosen_id)

        body = response.model_dump_json()
        if dry_run:
            return Answer(response, body.encode())
        decision_line = made.decision.model_dump_json().encode()
        if self.loop is not None:  # the embedded learner takes the record when it reads this line
            self.loop.expect(decision_line, made.decision)

        index_it = partial(
            self.index.add,
            event_id,
            request.user_id,
            decided_at,
            made.decision.chosen_id,
            kind,
            request.defer_activation,
            digest,
            body,
        )
        # durable before the answer leaves: tip scores, then the decision (the learner reads
        # decisions), fsynced in a worker thread together with the concurrent ranks' (group
        # commit); then indexed in that thread, so that a repeated event_id gets this answer. The
        # embedded learner reads it on its own clock (its background poll, or the next reward's:
        # not before the answer, which would hold every rank of the flush). Shielded: a caller
        # that goes away mid-write never leaves a logged decision unindexed
        logging_started = time.perf_counter()
        await asyncio.shield(
            self.journal.append(("tip_scores", made.tip_scores), ("decisions", decision_line + b"\n"), then=index_it)
        )
        metrics.DECISION_LOG_WAIT.observe(time.perf_counter() - logging_started)
        metrics.decisions(served.name, "served").inc()
        metrics.DECISION_LATENCY.observe(time.perf_counter() - start)
        return Answer(response, body.encode())

    def _repeat(self, previous: IndexedDecision, digest: str) -> Answer:
        if previous.request_hash != digest:
            raise Conflict(f"event_id {previous.decision_id} was already used for another request")
        return Answer(RankResponse.model_validate_json(previous.response), previous.response.encode())

    @staticmethod
    def _check_candidates(candidates: Sequence[TipCandidate]) -> list[TipCandidate]:
        if len(candidates) > MAX_CANDIDATES:
            raise BadRequest(f"{len(candidates)} candidates; at most {MAX_CANDIDATES} per request")
        ids = [c.candidate_id for c in candidates]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise BadRequest(f"candidate ids must be unique; repeated: {dupes[:5]}")
        return list(candidates)

    @staticmethod
    def _combine(given: list[TipCandidate], gathered: list[TipCandidate]) -> list[TipCandidate]:
        """The caller's candidates, then the gathered ones not already given, at most MAX_CANDIDATES."""
        seen = {c.candidate_id for c in given}
        out = list(given)
        for c in gathered:
            if c.candidate_id not in seen and len(out) < MAX_CANDIDATES:
                seen.add(c.candidate_id)
                out.append(c)
        return out

    def _featurize(
        self, request: RankRequest, candidates: list[TipCandidate], pools: CandidatePools | None, now: datetime
    ) -> tuple[dict[str, float], list[TipCandidate], bool, bool]:
        """Context and candidates with features; whether the store answered; whether it knew the user.

        One feature-store read per decision: the Todoist pool's (gathered tasks already carry
        their features, and its user context is this decision's); the store is read here only
        for the caller's own task candidates, or when no pool was gathered.
        """
        given = {c.candidate_id for c in request.candidates}  # the caller's win over a pool's namesake
        gathered = {c.candidate_id for c in pools.candidates} - given if pools is not None else set()
        task_ids = [
            c.task_id
            for c in candidates
            if c.kind is CandidateKind.todoist_task and c.task_id and c.candidate_id not in gathered
        ]
        store_ok = self.features is not None and (pools is None or pools.context is not None)
        ctx: UserContext = pools.context if pools is not None and pools.context is not None else UserContext()
        by_task: dict[str, CandidateFeatures] = {}
        if self.features is not None and store_ok and (pools is None or task_ids):
            try:
                read_ctx, feats = self.features.get(request.user_id, task_ids, now=now)
                ctx = ctx if pools is not None else read_ctx
                by_task = dict(zip(task_ids, feats, strict=True))
            except Exception as exc:  # store down or broken: serve on the contract defaults, counted
                store_ok = False
                log.warning("rank: feature store failed (%s: %s); contract defaults", type(exc).__name__, exc)
        if not store_ok:
            self.fallbacks += 1
            metrics.FEATURE_FALLBACKS.inc()
        context = {**features_dict(ctx), **request.context}
        out = []
        for c in candidates:
            if c.candidate_id in gathered:
                out.append(c)  # the pool's features: the store's, or the task's own lake row's
            elif c.kind is CandidateKind.llm_tip:
                out.append(_merge_features(c, _LLM_TIP, False))
            elif c.task_id in by_task and by_task[c.task_id].task_known > 0:
                out.append(_merge_features(c, features_dict(by_task[c.task_id]), True))
            else:
                out.append(_merge_features(c, _DEFAULTS, False))
        return context, out, store_ok, ctx.context_known > 0

    def _policies(self, learning: Policy, unknown_user: bool, event_id: UUID) -> tuple[Policy, list[Policy]]:
        """The served policy and the shadows: apprentice mode, unknown users and the control group
        (``OO_SERVING__CONTROL_FRACTION`` of the decisions, at random) get the baseline."""
        is_baseline = learning.name == self.baseline.name
        control = not is_baseline and in_control(event_id, self.settings.serving.control_fraction)
        if self.settings.serving.mode == "apprentice" or unknown_user or control:
            return self.baseline, [] if is_baseline else [learning]
        return learning, [] if is_baseline else [self.baseline]

    # -- reward and activate -----------------------------------------------------------------
    def _owned(self, event_id: UUID, user_id: str) -> IndexedDecision:
        found = self.index.get(event_id)
        if found is None or found.user_id != user_id:
            raise NotFoundError(f"no decision {event_id} for user {user_id!r}")
        return found

    def reward(self, request: RewardRequest, now: datetime | None = None) -> RewardResponse:
        """Count the first reward of a decision; publish it; push the reaction counters."""
        received = now or datetime.now(UTC)
        decision = self._owned(request.event_id, request.user_id)
        table = self.settings.reward.table
        if request.reaction.value not in table:
            raise BadRequest(f"reaction {request.reaction.value!r} has no reward; known: {sorted(table)}")
        counted = self.index.reward_of(request.event_id)
        if counted is not None:
            metrics.REWARDS.labels(reaction=request.reaction.value, status="duplicate").inc()
            return RewardResponse(event_id=request.event_id, reward=counted.reward, status="duplicate")
        value = float(table[request.reaction.value])
        occurred = request.occurred_at or received
        late = occurred - decision.decided_at > timedelta(hours=self.settings.reward.window_hours)
        reward = RewardEvent(
            event_id=request.reaction_id,
            decision_id=request.event_id,
            user_id=request.user_id,
            reaction=request.reaction,
            reward=value,
            occurred_at=occurred,
            late=late,
        )
        reaction = ReactionEvent(
            event_id=request.reaction_id,
            decision_id=request.event_id,
            user_id=request.user_id,
            candidate_id=decision.chosen_id,
            reaction=request.reaction,
            occurred_at=occurred,
        )
        self.events.append("reactions", reaction)
        self.events.append("rewards", reward)
        status = "late" if late else "accepted"
        if not self.index.add_reward(
            request.event_id, request.reaction_id, request.reaction.value, value, status, occurred
        ):
            status = "duplicate"  # another replica counted one in between; the learner counts once too
        if self.loop is not None:
            self.loop.poll()
        self._push(reaction, decision.chosen_kind)
        metrics.REWARDS.labels(reaction=request.reaction.value, status=status).inc()
        return RewardResponse(event_id=request.event_id, reward=value, status=status)

    def _push(self, reaction: ReactionEvent, kind: str) -> None:
        if self.features is None:
            metrics.PUSH_FAILURES.inc()
            return
        try:
            self.features.push_reaction(reaction, CandidateKind(kind))
        except Exception as exc:  # the batch path recounts from the lake; the reward is already durable
            metrics.PUSH_FAILURES.inc()
            log.warning("reward: pushing reaction counters failed (%s: %s)", type(exc).__name__, exc)

    def activate(self, request: ActivateRequest, now: datetime | None = None) -> dict[str, Any]:
        """Mark a deferred decision seen (idempotent)."""
        at = now or datetime.now(UTC)
        decision = self._owned(request.event_id, request.user_id)
        if not decision.deferred:
            return {"event_id": str(request.event_id), "status": "not_deferred"}
        if decision.activated_at is not None:
            return {"event_id": str(request.event_id), "status": "already_activated"}
        self.events.append(
            "activations", Activation(decision_id=request.event_id, user_id=request.user_id, activated_at=at)
        )
        self.index.activate(request.event_id, at)
        if self.loop is not None:
            self.loop.poll()
        return {"event_id": str(request.event_id), "status": "activated"}

    def user_state(self, user_id: str) -> dict[str, Any]:
        """Everything this service keeps about ``user_id`` (for an export): its indexed decisions,
        each with its reward when one was counted. The embedded learner's pending records are
        those decisions' features keyed by their ids, with no user id; :meth:`forget` drops them
        by those ids."""
        decisions = self.index.for_user(user_id)
        return {"decisions": decisions}

    def forget(self, user_id: str) -> int:
        """Erase ``user_id`` from the decision index and the embedded learner's pending decisions.

        This service's own event log is redacted too: the spool a replica keeps for the bus
        (``OO_BUS__NATS_URL``), or the shared event log (the app API's privacy job redacts that one
        as well; a second redaction finds nothing). A separate learner drops the user's pending
        decisions when their window closes; the bus and the lake are erased by the app API."""
        ids = self.index.forget(user_id)
        redact_user(self.events, user_id)
        if self.loop is not None:
            with self.loop.lock:
                self.loop.learner.forget(ids)
        return len(ids)

    def readiness(self) -> dict[str, Any]:
        """Which model serves, where it came from, the learner's and apprentice mode's figures."""
        self.source.refresh()
        described = self.source.describe()
        apprentice = described.get("apprentice") or {}
        if apprentice.get("decisions"):
            metrics.APPRENTICE_REWARD.labels(policy="baseline").set(apprentice["baseline_reward"])
            metrics.APPRENTICE_REWARD.labels(policy="learner").set(apprentice["learner_reward"])
        return {
            "ready": True,
            "mode": self.settings.serving.mode,
            **described,
            "feature_store": "ok" if self.features is not None else "unavailable",
            "feature_store_fallbacks": self.fallbacks,
            "policy_numeric_fallbacks": self.policy_fallbacks,
        }


__all__ = ["Answer", "BadRequest", "Conflict", "DecisionEngine", "NotFoundError", "PolicyInputError"]
