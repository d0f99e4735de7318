"""``POST /feedback``: log one event or a batch, answered after the commit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, HTTPException

from shopaug.feedback.store import FeedbackEvent, IdempotencyConflict
from shopaug.serve.deps import Backend, Limits, Metrics, Store, invalid
from shopaug.serve.schemas import FeedbackAck, FeedbackBatchIn, FeedbackEventIn, error_responses

router = APIRouter(tags=["feedback"])


@router.post("/feedback", response_model=FeedbackAck, responses=error_responses(400, 409, 413, 503))
def feedback(
    body: Annotated[FeedbackEventIn | FeedbackBatchIn, Body()],
    backend: Backend,
    limits: Limits,
    store: Store,
    metrics: Metrics,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> FeedbackAck:
    """Log one event or a batch; answered only after the events are committed."""
    batch = isinstance(body, FeedbackBatchIn)
    incoming = body.events if isinstance(body, FeedbackBatchIn) else [body]
    prefix: list[str | int] = ["body", "events"] if batch else ["body"]
    limits.batch(len(incoming), ["body", "events"])
    unknown: list[str] = []
    for index, event in enumerate(incoming):
        location = [*prefix, index] if batch else prefix
        if event.query is not None:
            limits.query(event.query, [*location, "query"], allow_empty=True)
        if not backend.has_product(event.product_id) and event.product_id not in unknown:
            unknown.append(event.product_id)
    if unknown:
        raise invalid(
            [*prefix, "product_id"],
            "unknown product ids: " + ", ".join(repr(pid) for pid in unknown[:20]),
        )
    events = [FeedbackEvent(**item.model_dump()) for item in incoming]
    try:
        acknowledgement = store.record(events, idempotency_key)
    except IdempotencyConflict as error:
        raise HTTPException(status_code=409, detail=str(error)) from error
    if not acknowledgement.replayed:
        for stored in events:
            metrics.feedback_events.labels(event=stored.event).inc()
    return FeedbackAck(
        accepted=acknowledgement.accepted,
        event_ids=list(acknowledgement.event_ids),
        idempotency_key=acknowledgement.idempotency_key,
        replayed=acknowledgement.replayed,
    )
