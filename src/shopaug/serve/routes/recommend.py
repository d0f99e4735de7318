"""``POST /recommend``: items following a history, a logged session or a known customer.

The backend decides how: a search model ranks by content (history left out); a recommendation
run's two-tower model ranks by its user tower and knows its customers
(:mod:`shopaug.serve.recommender_backend`).

A customer's history follows each purchase: it is the purchases the model was trained with,
then every ``purchase`` and ``add_to_cart`` event logged through ``/feedback`` with that
customer's id as ``user_id`` (:func:`customer_history`). The events are read from the feedback
store on each request, so an event counts from the request after its acknowledgement, survives
a restart and a model swap, and a customer the model never saw is answered once they have one;
the model itself changes only with the next retrain.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException

from shopaug.feedback.store import FeedbackStore
from shopaug.serve.backend import SearchBackend, UnknownCustomerError, UnknownProductError
from shopaug.serve.deps import Backend, Limits, Store, invalid
from shopaug.serve.schemas import (
    RecommendRequest,
    RecommendResponse,
    error_responses,
    results,
)

logger = logging.getLogger(__name__)
router = APIRouter(tags=["recommend"])


def customer_history(backend: SearchBackend, store: FeedbackStore, customer_id: str) -> list[str]:
    """The history ``/recommend`` ranks for ``customer_id``, oldest first: the purchases the
    model in service was trained with (:meth:`SearchBackend.customer_history`), then the
    customer's purchases and carts logged since (:meth:`FeedbackStore.user_history`, in the
    order the store committed them, repeats kept).

    Logged items the model in service does not know (logged under another model) are left out
    of the history, with a debug log line: the model could not rank from them.

    Raises:
        UnknownCustomerError: neither the model nor the store knows a purchase of the customer.
    """
    logged = store.user_history(customer_id)
    try:
        frozen = backend.customer_history(customer_id)
    except UnknownCustomerError as error:
        if not logged:
            raise UnknownCustomerError(
                customer_id,
                f"{error} (no purchase or add_to_cart event with user_id {customer_id!r} is "
                "logged either)",
            ) from error
        frozen = []
    known = [item for item in logged if backend.has_product(item)]
    if len(known) < len(logged):
        logger.debug(
            "customer %r: %d logged items unknown to %s left out of the history",
            customer_id,
            len(logged) - len(known),
            backend.version,
        )
    if not frozen and not known:
        raise UnknownCustomerError(
            customer_id,
            f"customer {customer_id!r}: none of the items logged for them is in the catalog of "
            f"the model in service ({backend.version}); send 'history' instead",
        )
    return [*frozen, *known]


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
            history = customer_history(backend, store, request.customer_id)
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
