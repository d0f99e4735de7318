"""``GET /search`` and ``POST /search``: rank products for a query."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from shopaug.serve.backend import SearchBackend, SearchNotSupportedError, UnsupportedFilterError
from shopaug.serve.deps import Backend, Limits, Metrics, invalid
from shopaug.serve.metrics import ServiceMetrics, recording_stages
from shopaug.serve.schemas import SearchRequest, SearchResponse, error_responses, results

router = APIRouter(tags=["search"])


def _search(
    backend: SearchBackend,
    metrics: ServiceMetrics,
    query: str,
    k: int,
    filters: dict[str, str] | None,
) -> Response:
    """The search, timed by stage, answered as JSON bytes made here.

    The route returns a ready :class:`Response`: for a model returned by a plain ``def`` route,
    FastAPI validates it again in another trip through its thread pool before serialising it;
    the same pydantic serialiser here gives the same bytes in this thread, timed as
    ``serialise``.
    """
    with recording_stages() as stages:
        try:
            hits = backend.search(query, k, filters or None)
        except UnsupportedFilterError as error:
            raise invalid(["filters"], str(error)) from error
        except SearchNotSupportedError as error:
            raise HTTPException(status_code=404, detail=str(error)) from error
    with stages.stage("serialise"):
        answer = SearchResponse(model_version=backend.version, query=query, results=results(hits))
        body = answer.model_dump_json().encode("utf-8")
    metrics.observe_stages(stages)
    return Response(content=body, media_type="application/json")


@router.get("/search", response_model=SearchResponse, responses=error_responses(404, 503))
def search_get(
    backend: Backend,
    limits: Limits,
    metrics: Metrics,
    q: Annotated[str, Query(description="Query text.")],
    k: Annotated[int, Query(description="Number of results.")] = 10,
    filter: Annotated[
        list[str] | None, Query(description="Filters as field:value, repeatable.")
    ] = None,
) -> Response:
    """Rank products for a query (query-string form)."""
    filters: dict[str, str] = {}
    for position, item in enumerate(filter or []):
        name, separator, value = item.partition(":")
        if not separator or not name:
            raise invalid(["query", "filter", position], f"{item!r} is not field:value")
        filters[name] = value
    query = limits.query(q, ["query", "q"])
    return _search(backend, metrics, query, limits.k(k, ["query", "k"]), filters)


@router.post(
    "/search", response_model=SearchResponse, responses=error_responses(400, 404, 413, 503)
)
def search_post(
    request: SearchRequest, backend: Backend, limits: Limits, metrics: Metrics
) -> Response:
    """Rank products for a query."""
    query = limits.query(request.query, ["body", "query"])
    return _search(backend, metrics, query, limits.k(request.k, ["body", "k"]), request.filters)
