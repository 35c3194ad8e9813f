"""The next tip: asks serving for a decision, honouring consents, preferred kinds and quiet hours."""

from __future__ import annotations

import logging
import uuid
from typing import Literal, cast
from uuid import UUID

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel
from sqlalchemy import Table, insert

from app_api.deps import CurrentUser, Now, ServicesDep, SessionDep
from app_api.preferences import Purpose, current_consents, in_quiet_hours, profile_of
from app_api.problems import openapi_responses
from app_api.tables import ServedDecision
from data_contracts import CandidateKind
from data_contracts.serving import RankRequest
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
def next_tip(user: CurrentUser, session: SessionDep, services: ServicesDep, now: Now) -> NextTip:
    """Ask serving for the caller's next tip."""
    profile = profile_of(session, user.id)
    if in_quiet_hours(now, user.timezone, profile.quiet_start, profile.quiet_end):
        return NextTip(decision_id=None, tip=None, reason="quiet_hours")
    kinds = set(profile.tip_kinds) or {k.value for k in CandidateKind}
    llm_ok = current_consents(session, user.id)[Purpose.llm_tips] and CandidateKind.llm_tip.value in kinds
    request = RankRequest(
        user_id=user.id,
        event_id=uuid.uuid4(),
        llm_consent=llm_ok,
        include_todoist=CandidateKind.todoist_task.value in kinds,
        decided_at=now if services.settings.app.simulated_clock else None,
    )
    session.close()  # give the connection back to the pool while serving decides
    try:
        decision = services.serving.rank(request)
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
    if chosen.kind.value not in kinds or (chosen.kind is CandidateKind.llm_tip and not llm_ok):
        # Serving must not do this; if it does, the user's choice wins and nothing is shown.
        log.error("tips/next: serving chose a %s the user did not allow; not shown", chosen.kind.value)
        return NextTip(decision_id=decision.event_id, tip=None, reason="no_candidates")
    session.execute(  # a plain INSERT: nothing reads the row back in this request
        INSERT_SERVED,
        {
            "decision_id": str(decision.event_id),
            "user_id": user.id,
            "candidate_id": chosen.candidate_id,
            "kind": chosen.kind.value,
            "content": chosen.content,
            "via": "api",
            "served_at": now,
        },
    )
    session.commit()
    return NextTip(
        decision_id=decision.event_id,
        tip=Tip(candidate_id=chosen.candidate_id, kind=chosen.kind, content=chosen.content),
    )
