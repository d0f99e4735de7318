"""The FastAPI application factory: the lifespan, middleware and routers of the service.

Import this module through :func:`shopaug.serve.create_app`, which names the missing extra
when FastAPI is not installed. The routes live in :mod:`shopaug.serve.routes` (one router per
concern) and take what they use from :mod:`shopaug.serve.deps`, which tests can override.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shopaug.errors import require
from shopaug.feedback.store import FeedbackStore
from shopaug.serve import input_checks
from shopaug.serve.backend import BackendLoader
from shopaug.serve.deps import Runtime
from shopaug.serve.metrics import BodyLimitMiddleware, MetricsMiddleware, ServiceMetrics
from shopaug.serve.openapi import complete_openapi
from shopaug.serve.routes import admin, ads, feedback, health, recommend, search
from shopaug.serve.schemas import error_responses
from shopaug.serve.settings import Settings
from shopaug.serve.state import ModelHolder, ModelLoadError

logger = logging.getLogger(__name__)


def _load_initial_model(runtime: Runtime) -> None:
    try:
        runtime.holder.reload()
    except ModelLoadError:
        logger.error("the service has no model: %s", runtime.holder.load_error)
        if not runtime.settings.load_in_background:
            raise


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the feedback store and load the model (in a thread when configured)."""
    runtime: Runtime = app.state.runtime
    settings = runtime.settings
    runtime.store = FeedbackStore(
        settings.feedback_url,
        table_prefix=settings.table_prefix,
        timeout_s=settings.feedback_store_timeout_s,
    )
    runtime.metrics.set_backlog_source(runtime.store.backlog)
    if settings.load_in_background:
        runtime.loader_thread = threading.Thread(
            target=_load_initial_model, args=(runtime,), name="shopaug-model-loader", daemon=True
        )
        runtime.loader_thread.start()
    else:
        _load_initial_model(runtime)
    try:
        yield
    finally:
        runtime.metrics.set_backlog_source(None)
        runtime.store.close()


async def _store_unavailable(_request: Any, error: Exception) -> JSONResponse:
    logger.error("feedback store error: %s", error)
    return JSONResponse(
        status_code=503,
        content={"detail": "the feedback store is unavailable; retry later"},
        headers={"Retry-After": "1"},
    )


def create_app(settings: Settings, loader: BackendLoader) -> FastAPI:
    """Build the service.

    Args:
        settings: paths, database and limits.
        loader: builds a :class:`~shopaug.serve.backend.SearchBackend` from a model directory;
            called once at start-up and once per reload/promotion.

    Returns:
        A FastAPI app. Its lifespan opens the feedback store and loads the model (see
        ``Settings.load_in_background``); use it as ``with TestClient(app): ...`` in tests.
        ``app.state.runtime`` is its :class:`~shopaug.serve.deps.Runtime`; the routes' inputs
        can be replaced through ``app.dependency_overrides`` (see :mod:`shopaug.serve.deps`).
    """
    sqlalchemy = require("sqlalchemy", "serve")
    metrics = ServiceMetrics()

    def on_swap(new_version: str, previous_version: str | None) -> None:
        metrics.set_model_version(new_version, previous_version)
        if previous_version is not None:
            metrics.model_swaps.inc()

    app = FastAPI(
        title="shopaug",
        summary="Product search and recommendations with feedback logging.",
        lifespan=_lifespan,
        responses=error_responses(400, 408, 415),
    )
    app.state.runtime = Runtime(
        settings=settings,
        holder=ModelHolder(loader, settings.pointer, settings.run_dir, on_swap=on_swap),
        metrics=metrics,
    )
    # Outermost last: metrics, then the body deadline, the size limit, the raw-byte checks.
    app.add_middleware(input_checks.RawInputMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        input_checks.BodyReadTimeoutMiddleware,
        seconds=input_checks.BODY_READ_TIMEOUT_SECONDS,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_exception_handler(sqlalchemy.exc.OperationalError, _store_unavailable)
    app.add_exception_handler(RequestValidationError, input_checks.validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, input_checks.http_error_handler)
    complete_openapi(app, settings)
    for router in (search.router, recommend.router, feedback.router, health.router, admin.router):
        app.include_router(router)
    app.include_router(ads.router)  # ad ranking by calibrated CTR (routes/ads.py)
    return app
