"""``POST /recommend``: items following a history, a logged session or a known customer.

The backend decides how: a search model ranks by content (history left out); a recommendation
run's two-tower model ranks by its user tower and knows its customers
(:mod:`shopaug.serve.recommender_backend`).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from shopaug.serve.backend import UnknownCustomerError, UnknownProductError
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
    """Items following a history of product ids, a logged session, or a customer's purchases
    known to the model (exactly one of ``history``, ``session_id``, ``customer_id``)."""
    k = limits.k(request.k, ["body", "k"])
    given = [
        name
        for name in ("history", "session_id", "customer_id")
        if getattr(request, name) is not None
    ]
    if len(given) != 1:
        found = f"got {', '.join(map(repr, given))}" if given else "got none"
        raise invalid(
            ["body"], f"give exactly one of 'history', 'session_id' and 'customer_id'; {found}"
        )
    if request.history is not None:
        history = limits.history(request.history, ["body", "history"])
        location = ["body", "history"]
    elif request.session_id is not None:
        history = store.session_history(request.session_id, limit=limits.settings.max_history)
        if not history:
            raise HTTPException(
                status_code=404,
                detail=f"session {request.session_id!r} has no logged clicks, carts or "
                "purchases; send 'history' instead",
            )
        location = ["body", "session_id"]
    else:
        assert request.customer_id is not None
        try:
            history = backend.customer_history(request.customer_id)
        except UnknownCustomerError as error:
            raise HTTPException(status_code=404, detail=str(error)) from error
        location = ["body", "customer_id"]
    try:
        hits = backend.recommend(history, k)
    except UnknownProductError as error:
        raise invalid(location, str(error)) from error
    return RecommendResponse(
        model_version=backend.version,
        history=history,
        customer_id=request.customer_id,
        items=results(hits),
    )
