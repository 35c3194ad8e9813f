"""One decision: candidates, features, the policy's exact probabilities, a choice seeded by the
event id, shadow picks, and the records that log it.

Pure of I/O except through what it is handed; :mod:`serving.engine` does the fetching and the
writing around it.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from pydantic import TypeAdapter

from data_contracts import CandidateKind, Decision, ShadowPick, TipCandidate
from data_contracts.serving import RankedCandidate, RankRequest, RankResponse
from models.policies import Policy
from serving.tip_score_lines import tip_score_lines

_RANKING = TypeAdapter(list[RankedCandidate])


def seeded_draw(probabilities: Sequence[float], seed: int) -> int:
    """The index drawn from ``probabilities`` by a generator seeded with ``seed`` (never a zero).

    Examples
    --------
    >>> seeded_draw([0.2, 0.8], 7) == seeded_draw([0.2, 0.8], 7)
    True
    >>> seeded_draw([0.0, 1.0, 0.0], 3)
    1
    """
    u = random.Random(seed).random() * math.fsum(probabilities)
    acc = 0.0
    chosen = len(probabilities) - 1
    for i, p in enumerate(probabilities):
        acc += p
        if u < acc:
            chosen = i
            break
    while probabilities[chosen] <= 0.0:  # rounding at the very end of the CDF
        chosen -= 1
    return chosen


def in_control(event_id: UUID, fraction: float) -> bool:
    """Whether decision ``event_id`` falls in the control group of size ``fraction``: a uniform
    draw from a hash of the id, independent of the context and of the policies' own draws (seeded
    with the id itself), so each group is a random sample of the decisions.

    Examples
    --------
    >>> from uuid import UUID
    >>> ids = [UUID(int=i) for i in range(2000)]
    >>> round(sum(in_control(i, 0.5) for i in ids) / len(ids), 1), any(in_control(i, 0.0) for i in ids)
    (0.5, False)
    """
    u = int.from_bytes(hashlib.blake2b(event_id.bytes, digest_size=8, person=b"oo-control").digest(), "big")
    return u / 2**64 < fraction


def request_hash(request: RankRequest) -> str:
    """What makes two requests with one ``event_id`` "the same request"."""
    return hashlib.sha256(request.model_dump_json(exclude={"event_id"}).encode()).hexdigest()


@dataclass(frozen=True)
class Scored:
    """One policy's view of one decision."""

    policy: Policy
    scores: list[float]
    probabilities: list[float]
    chosen: int
    latency_ms: float


def score(policy: Policy, context: Mapping[str, float], candidates: Sequence[TipCandidate], seed: int) -> Scored:
    """Scores, exact probabilities and the seeded pick of ``policy``."""
    start = time.perf_counter()
    scores, probs = policy.distribution(context, candidates)
    chosen = seeded_draw(probs, seed)
    return Scored(policy, scores, probs, chosen, (time.perf_counter() - start) * 1000)


@dataclass(frozen=True)
class Made:
    """A decision and everything logged and answered for it."""

    decision: Decision
    tip_scores: bytes
    """The decision's ``tip_scores`` rows as event-log lines (:func:`serving.tip_score_lines.tip_score_lines`)."""
    response: RankResponse


def make_decision(
    *,
    event_id: UUID,
    request: RankRequest,
    decided_at: datetime,
    context: Mapping[str, float],
    eligible: Sequence[TipCandidate],
    excluded: Sequence[TipCandidate],
    served: Policy,
    shadows: Sequence[Policy],
) -> Made:
    """Score ``eligible`` with ``served`` and each shadow; choose; build the records and the answer.

    Each policy draws from a generator seeded with the event id (shadow ``i`` with ``id + i + 1``),
    so the same event id over the same candidates and policy chooses the same candidate.
    """
    seed = event_id.int
    main = score(served, context, eligible, seed)
    others = [score(p, context, eligible, seed + i + 1) for i, p in enumerate(shadows)]
    chosen = eligible[main.chosen]
    order = sorted(range(len(eligible)), key=lambda i: (-main.probabilities[i], -main.scores[i]))
    shadow = [
        ShadowPick(
            policy=s.policy.name,
            policy_version=s.policy.version,
            chosen_id=eligible[s.chosen].candidate_id,
            propensity=s.probabilities[s.chosen],
        )
        for s in others
    ]
    decision = Decision(
        decision_id=event_id,
        user_id=request.user_id,
        decided_at=decided_at,
        candidates=list(eligible),
        ranked_ids=[eligible[i].candidate_id for i in order],
        chosen_id=chosen.candidate_id,
        propensity=main.probabilities[main.chosen],
        policy=served.name,
        policy_version=served.version,
        shadow=shadow,
        features=dict(context),
        defer_activation=request.defer_activation,
    )
    # serialized from their parts (each candidate's features once, not once per policy); the
    # scores and probabilities clamped to what the contract accepts
    tip_scores = tip_score_lines(
        decision_id=event_id,
        user_id=request.user_id,
        decided_at=decided_at,
        candidates=eligible,
        policies=[
            (
                s.policy.name,
                s.policy.version,
                [float(x) if math.isfinite(x) else 0.0 for x in s.scores],
                [min(1.0, max(0.0, float(p))) for p in s.probabilities],
                s.latency_ms,
            )
            for s in (main, *others)
        ],
    )
    # validated in one call of the contract's compiled validator, not one model per candidate
    ranking = _RANKING.validate_python(
        [
            {
                "id": eligible[i].candidate_id,
                "probability": min(1.0, max(0.0, main.probabilities[i])),
                "kind": eligible[i].kind,
                "content": eligible[i].content,
            }
            for i in order
        ]
        + [{"id": c.candidate_id, "probability": 0.0, "kind": c.kind, "content": c.content} for c in excluded]
    )
    response = RankResponse(
        event_id=event_id,
        user_id=request.user_id,
        decided_at=decided_at,
        ranking=ranking,
        reward_action_id=chosen.candidate_id,
        chosen=chosen,
        propensity=decision.propensity,
        excluded_ids=[c.candidate_id for c in excluded],
        policy=served.name,
        policy_version=served.version,
        defer_activation=request.defer_activation,
    )
    return Made(decision, tip_scores, response)


def empty_response(
    event_id: UUID,
    request: RankRequest,
    decided_at: datetime,
    policy: Policy,
    reason: str,
    excluded: Sequence[TipCandidate] = (),
) -> RankResponse:
    """An answer with nothing to suggest, saying why (nothing is logged: there was no choice)."""
    return RankResponse(
        event_id=event_id,
        user_id=request.user_id,
        decided_at=decided_at,
        ranking=[RankedCandidate(id=c.candidate_id, probability=0.0, kind=c.kind, content=c.content) for c in excluded],
        reward_action_id=None,
        chosen=None,
        excluded_ids=[c.candidate_id for c in excluded],
        policy=policy.name,
        policy_version=policy.version,
        defer_activation=request.defer_activation,
        reason=reason,
    )


KIND_OF = {k.value: k for k in CandidateKind}
