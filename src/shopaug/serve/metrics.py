"""Prometheus metrics of one app (own registry, no global state), the per-stage timing of a
search, and the ASGI middlewares that measure requests and bound request bodies.

A search is timed stage by stage (:data:`SEARCH_STAGES`): the route opens
:func:`recording_stages` around ``backend.search``; the backend marks its stages with
:func:`timed_stage`, which adds to the recording of the current request (a
:class:`contextvars.ContextVar`, so any backend can mark stages without a new argument, and
one with no recording open, such as ``shopaug eval``'s, pays nothing); the route times the
response's serialisation itself and hands the whole :class:`StageTimes` to
:meth:`ServiceMetrics.observe_stages` (``shopaug_search_stage_seconds{stage}``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from shopaug.errors import require

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]

_METHODS_WITH_BODY = {"POST", "PUT", "PATCH", "DELETE"}

#: The stages of a search, in request order: encode the query, the dense (vector) search, BM25
#: of the query, the fusion of the two, the reranker's features, the reranker's prediction,
#: and the response's JSON. A stage a model does not have is not observed.
SEARCH_STAGES = ("encode", "dense_search", "bm25", "fusion", "features", "rerank", "serialise")
#: Histogram buckets of the stages, in seconds (50 us to 1 s).
STAGE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0
)  # fmt: skip


class StageTimes:
    """Seconds spent in each stage of one request (a stage entered twice adds up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)


_recording: ContextVar[StageTimes | None] = ContextVar("shopaug_search_stages", default=None)


@contextlib.contextmanager
def recording_stages() -> Iterator[StageTimes]:
    """Record the stages :func:`timed_stage` marks in this context (this request) meanwhile."""
    times = StageTimes()
    token = _recording.set(times)
    try:
        yield times
    finally:
        _recording.reset(token)


@contextlib.contextmanager
def timed_stage(name: str) -> Iterator[None]:
    """Time the block as stage ``name`` of the request being recorded, if any."""
    times = _recording.get()
    if times is None:
        yield
        return
    with times.stage(name):
        yield


class ServiceMetrics:
    """The service's metrics in a private :class:`prometheus_client.CollectorRegistry`.

    Metrics:
        ``shopaug_http_requests_total{method,route,status}``: counter.
        ``shopaug_http_request_duration_seconds{method,route}``: histogram.
        ``shopaug_model_info{version}``: 1 for the version being served.
        ``shopaug_model_swaps_total``: counter of successful reloads/promotions.
        ``shopaug_feedback_events_total{event}``: events committed to the store.
        ``shopaug_feedback_backlog``: events not yet consumed by the online loop.
        ``shopaug_search_stage_seconds{stage}``: histogram of each stage of a search
        (:data:`SEARCH_STAGES`).
    """

    def __init__(self, backlog: Callable[[], float] | None = None) -> None:
        prometheus = require("prometheus_client", "serve")
        self.registry = prometheus.CollectorRegistry(auto_describe=True)
        self.requests = prometheus.Counter(
            "shopaug_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = prometheus.Histogram(
            "shopaug_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.model_info = prometheus.Gauge(
            "shopaug_model_info",
            "1 for the model version being served.",
            ["version"],
            registry=self.registry,
        )
        self.model_swaps = prometheus.Counter(
            "shopaug_model_swaps",
            "Successful model reloads and promotions.",
            registry=self.registry,
        )
        self.feedback_events = prometheus.Counter(
            "shopaug_feedback_events",
            "Feedback events committed to the store, by event type.",
            ["event"],
            registry=self.registry,
        )
        self.backlog = prometheus.Gauge(
            "shopaug_feedback_backlog",
            "Feedback events not yet consumed by the online loop (NaN if the store is down).",
            registry=self.registry,
        )
        self._backlog_source = backlog
        self.backlog.set_function(self._read_backlog)
        self.search_stages = prometheus.Histogram(
            "shopaug_search_stage_seconds",
            "Time of each stage of a search: " + ", ".join(SEARCH_STAGES) + ".",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self._stage_series = {name: self.search_stages.labels(stage=name) for name in SEARCH_STAGES}

    def observe_stages(self, times: StageTimes) -> None:
        """Add one search's stage times to ``shopaug_search_stage_seconds``."""
        for stage, seconds in times.seconds.items():
            series = self._stage_series.get(stage)
            if series is None:  # a stage a backend named outside SEARCH_STAGES
                series = self.search_stages.labels(stage=stage)
            series.observe(seconds)

    def set_backlog_source(self, backlog: Callable[[], float] | None) -> None:
        self._backlog_source = backlog

    def _read_backlog(self) -> float:
        if self._backlog_source is None:
            return math.nan
        try:
            return float(self._backlog_source())
        except Exception:  # a scrape must not fail because the database is down
            logger.warning("could not count the feedback backlog", exc_info=True)
            return math.nan

    def set_model_version(self, version: str, previous: str | None = None) -> None:
        if previous is not None and previous != version:
            with contextlib.suppress(KeyError):
                self.model_info.remove(previous)
        self.model_info.labels(version=version).set(1)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        prometheus = require("prometheus_client", "serve")
        return prometheus.generate_latest(self.registry), prometheus.CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request, labelled by route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method=method, route=template, status=str(status)).inc()
            self.metrics.latency.labels(method=method, route=template).observe(
                time.perf_counter() - start
            )


class BodyLimitMiddleware:
    """Answers 413 to a request whose body is larger than ``max_bytes``.

    A declared ``Content-Length`` above the limit is refused before anything is read; otherwise
    the body is read (it is at most ``max_bytes``) and handed on unchanged.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _send_json(send, 400, "Content-Length header is not an integer")
                return
            if length > self.max_bytes:
                await self._refuse(send, length)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, size)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: int) -> None:
        await _send_json(
            send,
            413,
            f"request body is {size} bytes or more; the limit is {self.max_bytes} bytes "
            "(max_body_bytes)",
        )


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
