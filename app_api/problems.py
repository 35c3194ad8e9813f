"""Errors as ``application/problem+json`` (RFC 9457), for every error the app returns.

:class:`Problem` is the body and its OpenAPI schema; :func:`install` registers handlers for
HTTP errors, validation errors (422, with the location and message of each error but never the
offending input, which may be a password), the database not answering (503 with ``Retry-After``:
a transaction that failed midway was rolled back, so the client can simply send the request again)
and anything unexpected (500, logged, no detail).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    """One invalid part of a request."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str = Field(default="about:blank", description="a URI naming the kind of problem")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = Field(default=None, description="the invalid fields of a 422")


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[FieldError] | None = None,
) -> JSONResponse:
    """A problem+json response."""
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, instance=instance, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _detail(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(value)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return problem_response(
        exc.status_code, _detail(exc.detail), instance=request.url.path, headers=getattr(exc, "headers", None)
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldError(loc=[p if isinstance(p, int) else str(p) for p in e.get("loc", ())], msg=e["msg"], type=e["type"])
        for e in exc.errors()
    ]
    return problem_response(422, "the request is not valid", instance=request.url.path, errors=errors)


DATABASE_RETRY_AFTER_S = 5


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # OperationalError: the server went away, refused or timed out, SQLite busy or out of disk;
    # PoolTimeout: every pooled connection stayed busy. Both pass; a bug (ProgrammingError,
    # IntegrityError not handled by the route) stays a 500.
    log.error("database unavailable on %s %s (%s)", request.method, request.url.path, type(exc).__name__)
    return problem_response(
        503,
        "the database is unavailable; nothing was changed; try again shortly",
        instance=request.url.path,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
    return problem_response(500, "an unexpected error; it has been logged", instance=request.url.path)


def install(app: FastAPI) -> None:
    """Make every error of ``app`` a problem+json response."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)


def openapi_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring problem+json bodies for ``statuses``."""
    return {s: {"model": Problem, "description": HTTPStatus(s).phrase, "content": {MEDIA_TYPE: {}}} for s in statuses}
