"""``GET /search`` and ``POST /search``: rank products for a query."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from shopaug.serve.backend import SearchBackend, SearchNotSupportedError, UnsupportedFilterError
from shopaug.serve.deps import Backend, Limits, invalid
from shopaug.serve.schemas import SearchRequest, SearchResponse, error_responses, results

router = APIRouter(tags=["search"])


def _search(
    backend: SearchBackend, query: str, k: int, filters: dict[str, str] | None
) -> SearchResponse:
    try:
        hits = backend.search(query, k, filters or None)
    except UnsupportedFilterError as error:
        raise invalid(["filters"], str(error)) from error
    except SearchNotSupportedError as error:
        raise HTTPException(status_code=404, detail=str(error)) from error
    return SearchResponse(model_version=backend.version, query=query, results=results(hits))


@router.get("/search", response_model=SearchResponse, responses=error_responses(404, 503))
def search_get(
    backend: Backend,
    limits: Limits,
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
            raise invalid(["query", "filter", position], f"{item!r} is not field:value")
        filters[name] = value
    query = limits.query(q, ["query", "q"])
    return _search(backend, query, limits.k(k, ["query", "k"]), filters)


@router.post(
    "/search", response_model=SearchResponse, responses=error_responses(400, 404, 413, 503)
)
def search_post(request: SearchRequest, backend: Backend, limits: Limits) -> SearchResponse:
    """Rank products for a query."""
    query = limits.query(request.query, ["body", "query"])
    return _search(backend, query, limits.k(request.k, ["body", "k"]), request.filters)
