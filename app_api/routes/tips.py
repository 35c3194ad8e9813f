"""The next tip: asks serving for a decision, honouring consents, preferred kinds and quiet hours."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Literal, cast
from uuid import UUID

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import Table, insert

from app_api.deps import Now, ServicesDep, TokenUserId, user_gone
from app_api.preferences import in_quiet_hours, tip_settings
from app_api.problems import openapi_responses
from app_api.services import Services
from app_api.tables import ServedDecision
from data_contracts import CandidateKind
from data_contracts.decisions import TipCandidate
from data_contracts.serving import RankRequest, RankResponse
from oo.serving_client import ServingRefused, ServingUnavailable

log = logging.getLogger(__name__)

router = APIRouter(prefix="/tips", tags=["tips"])

INSERT_SERVED = insert(cast(Table, ServedDecision.__table__))
"""Built once: a Core INSERT (no unit of work, no per-request statement construction)."""


class Tip(BaseModel):
    """A suggested next step."""

    candidate_id: str
    kind: CandidateKind
    content: str


class NextTip(BaseModel):
    """The decision's id (to react to with ``POST /v1/feedback``) and its tip; no tip (with the
    reason) during quiet hours or when there is nothing to suggest."""

    decision_id: UUID | None
    tip: Tip | None
    reason: Literal["quiet_hours", "no_candidates"] | None = None


@router.get("/next", responses=openapi_responses(401, 502, 503))
async def next_tip(user_id: TokenUserId, services: ServicesDep, now: Now) -> NextTip:
    """Ask serving for the caller's next tip.

    The database work runs in worker threads (two calls: the reads, then the record); the token
    check and the wait for serving run on the event loop, so a slow or restarting serving holds
    no thread that feedback and sign-ins need."""
    asked = await run_in_threadpool(_ask, services, user_id, now)
    if isinstance(asked, NextTip):
        return asked
    request, kinds = asked
    try:
        decision = await _rank(services, request)
    except ServingUnavailable as exc:
        log.warning("tips/next: %s", exc)
        raise HTTPException(
            503, "the recommender is unavailable; try again shortly", headers={"Retry-After": "5"}
        ) from None
    except ServingRefused as exc:
        log.error("tips/next: %s", exc)
        raise HTTPException(502, "the recommender refused the request") from None
    chosen = decision.chosen
    if chosen is None:
        return NextTip(decision_id=decision.event_id, tip=None, reason="no_candidates")
    if chosen.kind.value not in kinds or (chosen.kind is CandidateKind.llm_tip and not request.llm_consent):
        # Serving must not do this; if it does, the user's choice wins and nothing is shown.
        log.error("tips/next: serving chose a %s the user did not allow; not shown", chosen.kind.value)
        return NextTip(decision_id=decision.event_id, tip=None, reason="no_candidates")
    await run_in_threadpool(_record, services, user_id, decision.event_id, chosen, now)
    return NextTip(
        decision_id=decision.event_id,
        tip=Tip(candidate_id=chosen.candidate_id, kind=chosen.kind, content=chosen.content),
    )


def _ask(services: Services, user_id: str, now: datetime) -> NextTip | tuple[RankRequest, set[str]]:
    """The request to serving (and the kinds the user allows), or the answer without one; 401 when
    the token's user no longer exists. One statement on a pooled connection, given back before
    serving is asked."""
    with services.engine.connect() as conn:
        settings = tip_settings(conn, user_id)
    if settings is None:
        raise user_gone()
    if in_quiet_hours(now, settings.timezone, settings.quiet_start, settings.quiet_end):
        return NextTip(decision_id=None, tip=None, reason="quiet_hours")
    kinds = set(settings.tip_kinds) or {k.value for k in CandidateKind}
    request = RankRequest(
        user_id=user_id,
        event_id=uuid.uuid4(),
        llm_consent=settings.llm_consent and CandidateKind.llm_tip.value in kinds,
        include_todoist=CandidateKind.todoist_task.value in kinds,
        decided_at=now if services.settings.app.simulated_clock else None,
    )
    return request, kinds


async def _rank(services: Services, request: RankRequest) -> RankResponse:
    if services.serving_async is None:  # outside the app's lifespan: the blocking client, in a thread
        return await run_in_threadpool(services.serving.rank, request)
    return await services.serving_async.rank(request)


def _record(services: Services, user_id: str, decision_id: UUID, chosen: TipCandidate, now: datetime) -> None:
    # a plain INSERT (nothing reads the row back in this request) without the fsync: the row is an
    # index of the decision serving logged durably (Services.index_engine)
    with services.writing(), services.index_writes.begin() as conn:
        conn.execute(
            INSERT_SERVED,
            {
                "decision_id": str(decision_id),
                "user_id": user_id,
                "candidate_id": chosen.candidate_id,
                "kind": chosen.kind.value,
                "content": chosen.content,
                "via": "api",
                "served_at": now,
            },
        )
