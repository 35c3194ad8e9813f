"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app_api.deps import SessionDep
from app_api.problems import openapi_responses

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The app's state."""

    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"


@router.get("/healthz", responses=openapi_responses(503))
def healthz(session: SessionDep) -> Health:
    """The app runs and its database answers."""
    try:
        session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise HTTPException(503, f"the database does not answer ({type(exc).__name__})") from None
    return Health()
