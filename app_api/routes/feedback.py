"""Reactions to tips: recorded with their outbox messages in one transaction, delivered by the relay."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal, cast
from uuid import UUID

from fastapi import APIRouter, Header, HTTPException
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Table, insert
from sqlalchemy.exc import IntegrityError

from app_api import relay
from app_api.deps import CurrentUser, Now, ServicesDep, SessionDep
from app_api.problems import openapi_responses
from app_api.tables import Reaction, ServedDecision
from data_contracts import ReactionEvent
from data_contracts.events import Reaction as ReactionKind
from data_contracts.serving import RewardRequest

router = APIRouter(prefix="/feedback", tags=["feedback"])

INSERT_REACTION = insert(cast(Table, Reaction.__table__))
"""Built once: a Core INSERT (no unit of work, no per-request statement construction)."""

REACTION_NS = UUID("6f0c1c33-8a55-4b9e-9c59-3f2f4b8c2a10")


class FeedbackBody(BaseModel):
    """A reaction to the tip of a decision."""

    model_config = ConfigDict(extra="forbid")
    decision_id: UUID
    reaction: ReactionKind


class Accepted(BaseModel):
    """The reaction is recorded and will reach the learner; ``duplicate`` when it already was."""

    reaction_id: UUID
    decision_id: UUID
    status: Literal["accepted", "duplicate"]


IdempotencyKey = Annotated[
    UUID | None,
    Header(alias="Idempotency-Key", description="a UUID; the same key again is the same reaction"),
]


def _replay(session: SessionDep, reaction_id: UUID, body: FeedbackBody, user_id: str) -> Accepted:
    existing = session.get(Reaction, str(reaction_id))
    if existing is None:
        raise HTTPException(409, "a concurrent request with this key is in progress; retry")
    if (existing.decision_id, existing.reaction, existing.user_id) != (
        str(body.decision_id),
        body.reaction.value,
        user_id,
    ):
        raise HTTPException(409, "this Idempotency-Key was used for a different reaction")
    return Accepted(reaction_id=reaction_id, decision_id=body.decision_id, status="duplicate")


@router.post("", status_code=202, responses=openapi_responses(401, 404, 409))
def submit(
    body: FeedbackBody,
    user: CurrentUser,
    session: SessionDep,
    services: ServicesDep,
    now: Now,
    idempotency_key: IdempotencyKey = None,
) -> Accepted:
    """Record a reaction to a tip."""
    decision = session.get(ServedDecision, str(body.decision_id))
    if decision is None or decision.user_id != user.id:  # another user's decision does not exist for you
        raise HTTPException(404, "no such decision")
    reaction_id = idempotency_key or uuid.uuid5(REACTION_NS, f"{user.id}:{body.decision_id}:{body.reaction.value}")
    reward = RewardRequest(
        event_id=body.decision_id, user_id=user.id, reaction=body.reaction, reaction_id=reaction_id, occurred_at=now
    )
    event = ReactionEvent(
        event_id=reaction_id,
        decision_id=body.decision_id,
        user_id=user.id,
        candidate_id=decision.candidate_id,
        reaction=body.reaction,
        occurred_at=now,
    )
    # The reaction and its two outbox messages in one transaction, as plain INSERTs; a reaction
    # already recorded (the same key again, or committed concurrently) fails the first one.
    # delivery is scheduled on the wall clock (the relay's), even when the request's time is simulated
    sent = services.clock()
    try:
        session.execute(
            INSERT_REACTION,
            {
                "reaction_id": str(reaction_id),
                "decision_id": decision.decision_id,
                "user_id": user.id,
                "reaction": body.reaction.value,
                "occurred_at": now,
            },
        )
        relay.enqueue(session, relay.SERVING_REWARD, f"reward:{reaction_id}", user.id, reward, sent)
        relay.enqueue(session, relay.BUS_REACTIONS, f"reaction:{reaction_id}", user.id, event, sent)
        session.commit()
    except IntegrityError:
        session.rollback()
        return _replay(session, reaction_id, body, user.id)
    relay.nudge(services)
    return Accepted(reaction_id=reaction_id, decision_id=body.decision_id, status="accepted")
