"""What the routes depend on, as FastAPI dependencies that tests can replace.

Every route takes what it needs through ``Depends``: the model in service
(:func:`get_backend`), the feedback store (:func:`get_store`), the request limits
(:func:`get_limits`), the metrics (:func:`get_metrics`), the model holder for admin swaps
(:func:`get_holder`), the bounded queue of feedback writes (:func:`get_write_queue`) and the
admin check (:func:`require_admin`). A test swaps any of them::

    app.dependency_overrides[get_backend] = lambda: FakeBackend("v-test", SMALL_CATALOG)

The app factory keeps one :class:`Runtime` in ``app.state.runtime``; the dependencies read it
from the request, so several apps can live in one process.

The dependencies are ``async def`` although none of them awaits: FastAPI runs a plain ``def``
dependency in its thread pool, so every request paid one thread hand-off per dependency (five
for ``/search``) on top of the route's own. Each one reads a field, so running them on the
event loop costs nothing; measured with ``benchmarks/serve_latency.py`` (ONNX int8, wrk at 50
requests/s, one core): new-query p99 13.5 -> 11.7 ms, capacity 764 -> 1,386 requests/s. They
must stay free of blocking work (I/O, waits on slow locks) for that reason.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from shopaug.feedback.store import FeedbackStore
from shopaug.serve.backend import SearchBackend
from shopaug.serve.metrics import ServiceMetrics
from shopaug.serve.settings import Settings
from shopaug.serve.state import ModelHolder
from shopaug.serve.write_queue import WriteQueue

#: Where a value sits in the request, as FastAPI reports it (``["body", "events", 2]``).
Location = Sequence[str | int]


@dataclass
class Runtime:
    """What the lifespan opens and the routes use."""

    settings: Settings
    holder: ModelHolder
    metrics: ServiceMetrics
    store: FeedbackStore | None = None
    loader_thread: threading.Thread | None = field(default=None, repr=False)
    writes: WriteQueue = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.writes = WriteQueue(
            max_in_flight=self.settings.feedback_writes_in_flight,
            max_waiting=self.settings.feedback_writes_waiting,
            wait_timeout_s=self.settings.feedback_wait_timeout_s,
        )


def invalid(location: Location, message: str) -> HTTPException:
    """A 422 in FastAPI's own error format, naming the field."""
    return HTTPException(
        status_code=422,
        detail=[{"loc": list(location), "msg": message, "type": "value_error"}],
    )


class RequestLimits:
    """The one validation path for the configurable limits of :class:`Settings`.

    Each check returns the value or raises a 422 naming the field (``location``).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def query(self, text: str, location: Location, *, allow_empty: bool = False) -> str:
        """At most ``max_query_chars`` characters; not blank unless ``allow_empty``."""
        limit = self.settings.max_query_chars
        if len(text) > limit:
            raise invalid(
                location,
                f"query is {len(text)} characters; at most {limit} (max_query_chars) are accepted",
            )
        if not allow_empty and not text.strip():
            raise invalid(location, "query is empty")
        return text

    def k(self, k: int, location: Location) -> int:
        """1 to ``max_k``."""
        if not 1 <= k <= self.settings.max_k:
            raise invalid(location, f"k is {k}; expected 1 to {self.settings.max_k} (max_k)")
        return k

    def history(self, history: list[str], location: Location) -> list[str]:
        """1 to ``max_history`` product ids of 1 to 200 characters."""
        if not history:
            raise invalid(location, "history is empty")
        if len(history) > self.settings.max_history:
            raise invalid(
                location,
                f"history has {len(history)} items; at most {self.settings.max_history}",
            )
        for index, product_id in enumerate(history):
            if not product_id or len(product_id) > 200:
                raise invalid([*location, index], "expected 1 to 200 characters")
        return history

    def batch(self, size: int, location: Location) -> int:
        """At most ``max_batch_events`` events in one request."""
        limit = self.settings.max_batch_events
        if size > limit:
            raise invalid(
                location,
                f"{size} events in one request; at most {limit} (max_batch_events)",
            )
        return size


async def get_runtime(request: Request) -> Runtime:
    """The app's :class:`Runtime`."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


async def get_limits(settings: Annotated[Settings, Depends(get_settings)]) -> RequestLimits:
    return RequestLimits(settings)


async def get_metrics(runtime: RuntimeDep) -> ServiceMetrics:
    return runtime.metrics


async def get_holder(runtime: RuntimeDep) -> ModelHolder:
    return runtime.holder


async def get_backend(runtime: RuntimeDep) -> SearchBackend:
    """The model in service for this request; 503 until one is loaded."""
    current = runtime.holder.backend
    if current is None:
        raise HTTPException(
            status_code=503,
            detail=f"no model is loaded yet ({runtime.holder.load_error or 'loading'})",
        )
    return current


async def get_write_queue(runtime: RuntimeDep) -> WriteQueue:
    """The bounded queue every ``/feedback`` write goes through."""
    return runtime.writes


def retry_later(status_code: int, detail: str, settings: Settings) -> HTTPException:
    """A 503/507 with ``Retry-After``: nothing was written, the same request may be retried."""
    return HTTPException(
        status_code=status_code,
        detail=detail,
        headers={"Retry-After": str(settings.retry_after_s)},
    )


async def get_store(runtime: RuntimeDep) -> FeedbackStore:
    """The open feedback store; 503 outside the app's lifespan."""
    if runtime.store is None:
        raise retry_later(503, "the feedback store is not open", runtime.settings)
    return runtime.store


async def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
    authorization: Annotated[str | None, Header(description="Bearer <admin token>")] = None,
) -> None:
    """404 without an admin token configured, 401 without a bearer token, 403 for a wrong one."""
    if settings.admin_token is None:
        raise HTTPException(
            status_code=404, detail="admin routes are disabled: no admin_token is configured"
        )
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            status_code=401,
            detail="admin routes need the header 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    expected = settings.admin_token.get_secret_value().encode("utf-8")
    if not hmac.compare_digest(token.strip().encode("utf-8"), expected):
        raise HTTPException(status_code=403, detail="the admin token is wrong")


Backend = Annotated[SearchBackend, Depends(get_backend)]
Store = Annotated[FeedbackStore, Depends(get_store)]
Limits = Annotated[RequestLimits, Depends(get_limits)]
Metrics = Annotated[ServiceMetrics, Depends(get_metrics)]
Holder = Annotated[ModelHolder, Depends(get_holder)]
Writes = Annotated[WriteQueue, Depends(get_write_queue)]
ServiceSettings = Annotated[Settings, Depends(get_settings)]
