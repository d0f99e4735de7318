"""``POST /recommend``: items similar to / following a history or a logged session."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from shopaug.serve.backend import UnknownProductError
from shopaug.serve.deps import Backend, Limits, Store, invalid
from shopaug.serve.schemas import (
    RecommendRequest,
    RecommendResponse,
    error_responses,
    results,
)

router = APIRouter(tags=["recommend"])


@router.post(
    "/recommend", response_model=RecommendResponse, responses=error_responses(400, 404, 413, 503)
)
def recommend(
    request: RecommendRequest, backend: Backend, limits: Limits, store: Store
) -> RecommendResponse:
    """Items similar to / following a history of product ids or a logged session."""
    k = limits.k(request.k, ["body", "k"])
    if request.history is not None and request.session_id is None:
        history = limits.history(request.history, ["body", "history"])
    elif request.session_id is not None and request.history is None:
        history = store.session_history(request.session_id, limit=limits.settings.max_history)
        if not history:
            raise HTTPException(
                status_code=404,
                detail=f"session {request.session_id!r} has no logged clicks, carts or "
                "purchases; send 'history' instead",
            )
    else:
        raise invalid(["body"], "give exactly one of 'history' and 'session_id'")
    try:
        hits = backend.recommend(history, k)
    except UnknownProductError as error:
        raise invalid(["body", "history"], str(error)) from error
    return RecommendResponse(model_version=backend.version, history=history, items=results(hits))
