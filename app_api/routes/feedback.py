"""Reactions to tips: recorded with their outbox messages in one transaction, delivered by the relay."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal, cast
from uuid import UUID

from fastapi import APIRouter, Header, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, Table, and_, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from app_api import relay
from app_api.deps import Now, ServicesDep, TokenUserId, user_gone
from app_api.problems import openapi_responses
from app_api.services import Services
from app_api.tables import Reaction, ServedDecision
from data_contracts import ReactionEvent
from data_contracts.events import Reaction as ReactionKind
from data_contracts.serving import RewardRequest
from oo.tables import User

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
    str | None,
    Header(
        alias="Idempotency-Key",
        description="a UUID; the same key again is the same reaction",
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    ),
]
"""A string in the schema (a UUID's pattern), not ``format: uuid``: generated clients type a
header by its format, and openapi-python-client then hands httpx a ``UUID`` it cannot send."""


_OWNED_DECISION = (
    select(User.id, ServedDecision.candidate_id)
    .select_from(User)
    .outerjoin(
        ServedDecision,
        and_(ServedDecision.decision_id == bindparam("decision_id"), ServedDecision.user_id == User.id),
    )
    .where(User.id == bindparam("user_id"))
)
"""Built once: the user (absent: the token's user is gone) and the candidate of their decision
(``NULL``: no such decision, or another user's)."""

_REACTION = select(Reaction.decision_id, Reaction.reaction, Reaction.user_id).where(
    Reaction.reaction_id == bindparam("reaction_id")
)


def _replay(conn: Connection, reaction_id: UUID, body: FeedbackBody, user_id: str) -> Accepted:
    existing = conn.execute(_REACTION, {"reaction_id": str(reaction_id)}).first()
    if existing is None:
        raise HTTPException(409, "a concurrent request with this key is in progress; retry")
    if tuple(existing) != (str(body.decision_id), body.reaction.value, user_id):
        raise HTTPException(409, "this Idempotency-Key was used for a different reaction")
    return Accepted(reaction_id=reaction_id, decision_id=body.decision_id, status="duplicate")


@router.post("", status_code=202, responses=openapi_responses(401, 404, 409))
async def submit(
    body: FeedbackBody,
    user_id: TokenUserId,
    services: ServicesDep,
    now: Now,
    idempotency_key: IdempotencyKey = None,
) -> Accepted:
    """Record a reaction to a tip."""
    key = UUID(idempotency_key) if idempotency_key is not None else None
    accepted = await run_in_threadpool(_submit, services, user_id, body, now, key)
    if accepted.status == "accepted":
        relay.nudge(services)
    return accepted


def _submit(services: Services, user_id: str, body: FeedbackBody, now: datetime, key: UUID | None) -> Accepted:
    """The checks and the writes, in one worker-thread call on one pooled connection."""
    with services.engine.connect() as conn:
        found = conn.execute(_OWNED_DECISION, {"user_id": user_id, "decision_id": str(body.decision_id)}).first()
        if found is None:
            raise user_gone()
        candidate_id = found.candidate_id
        if candidate_id is None:  # another user's decision does not exist for you
            raise HTTPException(404, "no such decision")
        conn.rollback()  # end the read; the writes are their own transaction
        reaction_id = key or uuid.uuid5(REACTION_NS, f"{user_id}:{body.decision_id}:{body.reaction.value}")
        reward = RewardRequest(
            event_id=body.decision_id, user_id=user_id, reaction=body.reaction, reaction_id=reaction_id, occurred_at=now
        )
        event = ReactionEvent(
            event_id=reaction_id,
            decision_id=body.decision_id,
            user_id=user_id,
            candidate_id=candidate_id,
            reaction=body.reaction,
            occurred_at=now,
        )
        # The reaction and its two outbox messages in one transaction, as plain INSERTs; a reaction
        # already recorded (the same key again, or committed concurrently) fails the first one.
        # delivery is scheduled on the wall clock (the relay's), even when the request's time is simulated
        sent = services.clock()
        try:
            with services.writing(), conn.begin():
                conn.execute(
                    INSERT_REACTION,
                    {
                        "reaction_id": str(reaction_id),
                        "decision_id": str(body.decision_id),
                        "user_id": user_id,
                        "reaction": body.reaction.value,
                        "occurred_at": now,
                    },
                )
                relay.enqueue(conn, relay.SERVING_REWARD, f"reward:{reaction_id}", user_id, reward, sent)
                relay.enqueue(conn, relay.BUS_REACTIONS, f"reaction:{reaction_id}", user_id, event, sent)
        except IntegrityError:
            return _replay(conn, reaction_id, body, user_id)
    return Accepted(reaction_id=reaction_id, decision_id=body.decision_id, status="accepted")
