"""Export everything held about the caller; erase the caller everywhere."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from app_api import privacy
from app_api.deps import CurrentUser, Now, ServicesDep, SessionDep
from app_api.problems import openapi_responses
from oo.serving_client import ServingError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/me", tags=["privacy"])


EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}}},
    **openapi_responses(401, 503),
}


@router.get("/export", responses=EXPORT_RESPONSES, response_class=JSONResponse)
def export(user: CurrentUser, session: SessionDep, services: ServicesDep) -> Any:
    """Everything held about the caller: app database, lake, event log, feature store, MLflow, serving."""
    try:
        data = privacy.export_all(services, session, user)
    except ServingError as exc:
        log.warning("export: %s", exc)
        raise HTTPException(
            503, "serving could not report its state; try again", headers={"Retry-After": "30"}
        ) from None
    return JSONResponse(
        jsonable_encoder(data), headers={"Content-Disposition": 'attachment; filename="oo-export.json"'}
    )


@router.delete("", status_code=204, responses=openapi_responses(401, 503))
def erase(user: CurrentUser, services: ServicesDep, now: Now) -> None:
    """Erase the caller from every store (idempotent: run it again after a failure)."""
    user_id = user.id
    try:
        privacy.erase(services, user_id, now)
    except ServingError as exc:
        log.warning("erase: %s", exc)
        raise HTTPException(
            503,
            "serving could not forget the user yet; nothing was deleted here; try again",
            headers={"Retry-After": "30"},
        ) from None
    except privacy.ErasureIncomplete as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "30"}) from None
