"""The app API: the one file that lists the routers.

``make api`` serves :func:`create_app` with uvicorn on 127.0.0.1:8000. Every path is under
``/v1`` except ``/healthz``. Errors are problem+json (:mod:`app_api.problems`); security headers
and a body limit wrap everything (:mod:`app_api.edge`); CORS allows the configured origins only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app_api import problems
from app_api.edge import BodyLimit, SecurityHeaders
from app_api.page import router as page_router
from app_api.relay import RelayWorker
from app_api.routes import auth, feedback, health, integrations, privacy, profile, tips
from app_api.services import Services, build
from oo.runtime import freeze_startup_heap
from oo.serving_client import AsyncServingClient

API_PREFIX = "/v1"


def create_app(services: Services | None = None) -> FastAPI:
    """The app on ``services`` (built from the process settings when omitted)."""
    own_process = services is None  # the server's factory (uvicorn --factory), not a test's app
    if services is None:
        from oo.settings import get_settings

        services = build(get_settings())
    settings = services.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = RelayWorker(services) if settings.app.run_workers else None
        if worker is not None:
            services.extra["relay"] = worker
            worker.start()
        serving = AsyncServingClient(
            settings.app.serving_url,
            settings.app.serving_timeout_s,
            breaker=services.serving.breaker,
            max_connections=settings.app.serving_max_in_flight,
        )
        services.serving_async = serving
        if own_process:
            freeze_startup_heap()  # no full-collection pauses over the start-up heap (oo.runtime)
        try:
            yield
        finally:
            await serving.aclose()
            if services.serving_async is serving:
                services.serving_async = None
            if worker is not None:
                worker.stop()
                services.extra.pop("relay", None)

    app = FastAPI(
        title="oO app API",
        version="1",
        summary="Auth, profile, integrations, tips, feedback, notifications and privacy for oO's users.",
        lifespan=lifespan,
        docs_url="/docs" if settings.env == "local" else None,
        redoc_url=None,
        responses=problems.openapi_responses(400, 413, 422, 500),
    )
    app.state.services = services
    problems.install(app)

    v1 = APIRouter(prefix=API_PREFIX)
    v1.include_router(auth.router)
    v1.include_router(profile.router)
    v1.include_router(tips.router)
    v1.include_router(feedback.router)
    v1.include_router(integrations.router)
    v1.include_router(integrations.webhooks)
    v1.include_router(privacy.router)
    app.include_router(v1)
    app.include_router(health.router)
    app.include_router(page_router)  # the end-user page at / (not in the OpenAPI schema)

    # Outermost last: the body limit runs first, then CORS, then the headers on every answer.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.app.cors_origins,
        allow_credentials=False,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        max_age=600,
    )
    app.add_middleware(SecurityHeaders, hsts=settings.env != "local")
    app.add_middleware(BodyLimit, max_bytes=settings.app.max_body_bytes)
    return app
