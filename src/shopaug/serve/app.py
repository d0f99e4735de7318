"""The FastAPI application factory: search, recommendations, feedback, health, metrics, admin.

Import this module through :func:`shopaug.serve.create_app`, which names the missing extra
when FastAPI is not installed.

Handlers that do CPU work or block on the database are plain ``def`` functions, which FastAPI
runs in its thread pool, so the event loop keeps accepting requests.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Body, Depends, Header, Query
from pydantic import BaseModel

from shopaug.errors import require
from shopaug.feedback.store import FeedbackEvent, FeedbackStore, IdempotencyConflict
from shopaug.serve.backend import (
    BackendLoader,
    Hit,
    SearchBackend,
    UnknownProductError,
    UnsupportedFilterError,
)
from shopaug.serve.metrics import BodyLimitMiddleware, MetricsMiddleware, ServiceMetrics
from shopaug.serve.schemas import (
    FeedbackAck,
    FeedbackBatchIn,
    FeedbackEventIn,
    ModelSwap,
    PromoteRequest,
    RecommendRequest,
    RecommendResponse,
    Result,
    SearchRequest,
    SearchResponse,
    Status,
)
from shopaug.serve.settings import Settings
from shopaug.serve.state import ModelHolder, ModelLoadError, Swap

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)


@dataclass
class _Runtime:
    """What the lifespan opens and the handlers use."""

    holder: ModelHolder
    metrics: ServiceMetrics
    store: FeedbackStore | None = None
    loader_thread: threading.Thread | None = field(default=None, repr=False)


def _invalid(location: Sequence[str | int], message: str) -> Exception:
    """A 422 in FastAPI's own error format, naming the field."""
    fastapi = require("fastapi", "serve")
    return fastapi.HTTPException(
        status_code=422,
        detail=[{"loc": list(location), "msg": message, "type": "value_error"}],
    )


class _Detail(BaseModel):
    detail: str


def _statuses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the error answers a route can give."""
    meaning = {
        400: "The body is not parseable JSON.",
        401: "Missing or malformed admin token.",
        403: "Wrong admin token.",
        404: "Admin routes disabled, or nothing logged for the session.",
        409: "Idempotency-Key reused with a different body.",
        413: "Request body larger than max_body_bytes.",
        503: "No model loaded yet, or the feedback store is unavailable.",
    }
    return {code: {"model": _Detail, "description": meaning[code]} for code in codes}


def _results(hits: Sequence[Hit]) -> list[Result]:
    return [
        Result(rank=rank, product_id=hit.product_id, score=float(hit.score), title=hit.title)
        for rank, hit in enumerate(hits, start=1)
    ]


def create_app(settings: Settings, loader: BackendLoader) -> FastAPI:
    """Build the service.

    Args:
        settings: paths, database and limits.
        loader: builds a :class:`~shopaug.serve.backend.SearchBackend` from a model directory;
            called once at start-up and once per reload/promotion.

    Returns:
        A FastAPI app. Its lifespan opens the feedback store and loads the model (see
        ``Settings.load_in_background``); use it as ``with TestClient(app): ...`` in tests.
    """
    fastapi = require("fastapi", "serve")
    responses = require("fastapi.responses", "serve")
    sqlalchemy = require("sqlalchemy", "serve")
    metrics = ServiceMetrics()

    def on_swap(new_version: str, previous_version: str | None) -> None:
        metrics.set_model_version(new_version, previous_version)
        if previous_version is not None:
            metrics.model_swaps.inc()

    runtime = _Runtime(
        holder=ModelHolder(loader, settings.pointer, settings.run_dir, on_swap=on_swap),
        metrics=metrics,
    )

    def load_initial_model() -> None:
        try:
            runtime.holder.reload()
        except ModelLoadError:
            logger.error("the service has no model: %s", runtime.holder.load_error)
            if not settings.load_in_background:
                raise

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        runtime.store = FeedbackStore(settings.feedback_url, table_prefix=settings.table_prefix)
        metrics.set_backlog_source(runtime.store.backlog)
        if settings.load_in_background:
            runtime.loader_thread = threading.Thread(
                target=load_initial_model, name="shopaug-model-loader", daemon=True
            )
            runtime.loader_thread.start()
        else:
            load_initial_model()
        try:
            yield
        finally:
            metrics.set_backlog_source(None)
            runtime.store.close()

    app = fastapi.FastAPI(
        title="shopaug",
        summary="Product search and recommendations with feedback logging.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    async def store_unavailable(_request: Any, error: Exception) -> Any:
        logger.error("feedback store error: %s", error)
        return responses.JSONResponse(
            status_code=503,
            content={"detail": "the feedback store is unavailable; retry later"},
            headers={"Retry-After": "1"},
        )

    # -- helpers that need the settings ------------------------------------------------------

    def backend() -> SearchBackend:
        current = runtime.holder.backend
        if current is None:
            raise fastapi.HTTPException(
                status_code=503,
                detail=f"no model is loaded yet ({runtime.holder.load_error or 'loading'})",
            )
        return current

    def store() -> FeedbackStore:
        if runtime.store is None:
            raise fastapi.HTTPException(status_code=503, detail="the feedback store is not open")
        return runtime.store

    def check_query(text: str, location: Sequence[str | int]) -> str:
        if len(text) > settings.max_query_chars:
            raise _invalid(
                location,
                f"query is {len(text)} characters; at most {settings.max_query_chars} "
                "(max_query_chars) are accepted",
            )
        if not text.strip():
            raise _invalid(location, "query is empty")
        return text

    def check_k(k: int, location: Sequence[str | int]) -> int:
        if not 1 <= k <= settings.max_k:
            raise _invalid(location, f"k is {k}; expected 1 to {settings.max_k} (max_k)")
        return k

    def run_search(query: str, k: int, filters: dict[str, str] | None) -> SearchResponse:
        model = backend()
        try:
            hits = model.search(query, k, filters or None)
        except UnsupportedFilterError as error:
            raise _invalid(["filters"], str(error)) from error
        return SearchResponse(model_version=model.version, query=query, results=_results(hits))

    def require_admin(
        authorization: Annotated[str | None, Header(description="Bearer <admin token>")] = None,
    ) -> None:
        if settings.admin_token is None:
            raise fastapi.HTTPException(
                status_code=404, detail="admin routes are disabled: no admin_token is configured"
            )
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise fastapi.HTTPException(
                status_code=401,
                detail="admin routes need the header 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        expected = settings.admin_token.get_secret_value().encode("utf-8")
        if not hmac.compare_digest(token.strip().encode("utf-8"), expected):
            raise fastapi.HTTPException(status_code=403, detail="the admin token is wrong")

    def swap_response(do_swap: Any) -> ModelSwap:
        try:
            swap: Swap = do_swap()
        except ModelLoadError as error:
            current = runtime.holder.backend
            serving = "no model" if current is None else f"still serving {current.version}"
            raise fastapi.HTTPException(status_code=422, detail=f"{error}; {serving}") from error
        return ModelSwap(
            model_version=swap.model_version,
            previous_version=swap.previous_version,
            model_dir=str(swap.model_dir),
        )

    # -- routes ----------------------------------------------------------------------------

    @app.get("/search", response_model=SearchResponse, responses=_statuses(503))
    def search_get(
        q: Annotated[str, Query(description="Query text.")],
        k: Annotated[int, Query(description="Number of results.")] = 10,
        filter: Annotated[
            list[str] | None, Query(description="Filters as field:value, repeatable.")
        ] = None,
    ) -> SearchResponse:
        """Rank products for a query (query-string form)."""
        filters: dict[str, str] = {}
        for position, item in enumerate(filter or []):
            name, separator, value = item.partition(":")
            if not separator or not name:
                raise _invalid(["query", "filter", position], f"{item!r} is not field:value")
            filters[name] = value
        return run_search(check_query(q, ["query", "q"]), check_k(k, ["query", "k"]), filters)

    @app.post("/search", response_model=SearchResponse, responses=_statuses(400, 413, 503))
    def search_post(request: SearchRequest) -> SearchResponse:
        """Rank products for a query."""
        query = check_query(request.query, ["body", "query"])
        return run_search(query, check_k(request.k, ["body", "k"]), request.filters)

    @app.post(
        "/recommend", response_model=RecommendResponse, responses=_statuses(400, 404, 413, 503)
    )
    def recommend(request: RecommendRequest) -> RecommendResponse:
        """Items similar to / following a history of product ids or a logged session."""
        k = check_k(request.k, ["body", "k"])
        if (request.history is None) == (request.session_id is None):
            raise _invalid(["body"], "give exactly one of 'history' and 'session_id'")
        if request.history is not None:
            history = request.history
            if not history:
                raise _invalid(["body", "history"], "history is empty")
            if len(history) > settings.max_history:
                raise _invalid(
                    ["body", "history"],
                    f"history has {len(history)} items; at most {settings.max_history}",
                )
            for index, product_id in enumerate(history):
                if not product_id or len(product_id) > 200:
                    raise _invalid(["body", "history", index], "expected 1 to 200 characters")
        else:
            assert request.session_id is not None
            history = store().session_history(request.session_id, limit=settings.max_history)
            if not history:
                raise fastapi.HTTPException(
                    status_code=404,
                    detail=f"session {request.session_id!r} has no logged clicks, carts or "
                    "purchases; send 'history' instead",
                )
        model = backend()
        try:
            hits = model.recommend(history, k)
        except UnknownProductError as error:
            raise _invalid(["body", "history"], str(error)) from error
        return RecommendResponse(model_version=model.version, history=history, items=_results(hits))

    @app.post("/feedback", response_model=FeedbackAck, responses=_statuses(400, 409, 413, 503))
    def feedback(
        body: Annotated[FeedbackEventIn | FeedbackBatchIn, Body()],
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
        ] = None,
    ) -> FeedbackAck:
        """Log one event or a batch; answered only after the events are committed."""
        incoming = body.events if isinstance(body, FeedbackBatchIn) else [body]
        prefix: list[str | int] = ["body", "events"] if isinstance(body, FeedbackBatchIn) else []
        if len(incoming) > settings.max_batch_events:
            raise _invalid(
                ["body", "events"],
                f"{len(incoming)} events in one request; at most {settings.max_batch_events} "
                "(max_batch_events)",
            )
        model = backend()
        unknown: list[str] = []
        for index, event in enumerate(incoming):
            location = [*prefix, index] if prefix else ["body"]
            if event.query is not None and len(event.query) > settings.max_query_chars:
                raise _invalid(
                    [*location, "query"],
                    f"query is {len(event.query)} characters; at most {settings.max_query_chars} "
                    "(max_query_chars)",
                )
            if not model.has_product(event.product_id) and event.product_id not in unknown:
                unknown.append(event.product_id)
        if unknown:
            raise _invalid(
                [*prefix, "product_id"] if prefix else ["body", "product_id"],
                "unknown product ids: " + ", ".join(repr(pid) for pid in unknown[:20]),
            )
        events = [FeedbackEvent(**item.model_dump()) for item in incoming]
        try:
            acknowledgement = store().record(events, idempotency_key)
        except IdempotencyConflict as error:
            raise fastapi.HTTPException(status_code=409, detail=str(error)) from error
        if not acknowledgement.replayed:
            for stored in events:
                metrics.feedback_events.labels(event=stored.event).inc()
        return FeedbackAck(
            accepted=acknowledgement.accepted,
            event_ids=list(acknowledgement.event_ids),
            idempotency_key=acknowledgement.idempotency_key,
            replayed=acknowledgement.replayed,
        )

    @app.get("/healthz", response_model=Status)
    def healthz() -> Status:
        """The process is up (says nothing about the model)."""
        return Status(status="ok")

    @app.get("/readyz", response_model=Status, responses={503: {"model": Status}})
    def readyz() -> Any:
        """Ready when the model is loaded and the feedback store answers."""
        current = runtime.holder.backend
        if current is None:
            detail = runtime.holder.load_error or "the model is loading"
            return responses.JSONResponse(
                status_code=503, content=Status(status="not ready", detail=detail).model_dump()
            )
        try:
            store().ping()
        except Exception as error:
            return responses.JSONResponse(
                status_code=503,
                content=Status(
                    status="not ready",
                    model_version=current.version,
                    detail=f"feedback store unreachable: {type(error).__name__}",
                ).model_dump(),
            )
        return Status(status="ready", model_version=current.version)

    @app.get("/metrics", response_class=responses.PlainTextResponse)
    def prometheus_metrics() -> Any:
        """Prometheus text format."""
        payload, content_type = metrics.render()
        return responses.Response(content=payload, media_type=content_type)

    @app.post(
        "/admin/reload",
        response_model=ModelSwap,
        responses=_statuses(400, 401, 403, 404, 413),
        dependencies=[Depends(require_admin)],
    )
    def admin_reload() -> ModelSwap:
        """Load the model the pointer designates now (after an external promotion)."""
        return swap_response(runtime.holder.reload)

    @app.post(
        "/admin/promote",
        response_model=ModelSwap,
        responses=_statuses(400, 401, 403, 404, 413),
        dependencies=[Depends(require_admin)],
    )
    def admin_promote(request: PromoteRequest) -> ModelSwap:
        """Copy a model directory into the run, load it, move the pointer, swap."""
        return swap_response(lambda: runtime.holder.promote(Path(request.model_dir)))

    return app
