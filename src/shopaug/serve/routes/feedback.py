"""``POST /feedback``: log one event or a batch, answered after the commit.

The write goes through the bounded :class:`~shopaug.serve.write_queue.WriteQueue` and runs in a
worker thread. Every way it can fail without writing is answered so that a client knows to
retry, and nothing is acknowledged that was not committed:

* 503 + ``Retry-After``: the write queue is full or the wait for a slot timed out, or the
  store cannot take the write (down, read-only, locked past its timeout, file gone);
* 507 + ``Retry-After``: the database or its disk is full.

A retry with the same ``Idempotency-Key`` is never counted twice.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Body, Header, HTTPException

from shopaug.feedback.store import FeedbackEvent, IdempotencyConflict, StoreFull, StoreUnavailable
from shopaug.serve.deps import (
    Backend,
    Limits,
    Metrics,
    ServiceSettings,
    Store,
    Writes,
    invalid,
    retry_later,
)
from shopaug.serve.schemas import FeedbackAck, FeedbackBatchIn, FeedbackEventIn, error_responses
from shopaug.serve.write_queue import WriteQueueFull

router = APIRouter(tags=["feedback"])


@router.post(
    "/feedback", response_model=FeedbackAck, responses=error_responses(400, 409, 413, 503, 507)
)
async def feedback(
    body: Annotated[FeedbackEventIn | FeedbackBatchIn, Body()],
    backend: Backend,
    limits: Limits,
    store: Store,
    metrics: Metrics,
    writes: Writes,
    settings: ServiceSettings,
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
        async with writes.slot():
            acknowledgement = await anyio.to_thread.run_sync(store.record, events, idempotency_key)
    except IdempotencyConflict as error:
        raise HTTPException(status_code=409, detail=str(error)) from error
    except WriteQueueFull as error:
        raise retry_later(503, f"{error}; retry later", settings) from error
    except StoreFull as error:
        raise retry_later(507, f"{error}; nothing was written, retry later", settings) from error
    except StoreUnavailable as error:
        raise retry_later(503, f"{error}; nothing was written, retry later", settings) from error
    if not acknowledgement.replayed:
        for stored in events:
            metrics.feedback_events.labels(event=stored.event).inc()
    return FeedbackAck(
        accepted=acknowledgement.accepted,
        event_ids=list(acknowledgement.event_ids),
        idempotency_key=acknowledgement.idempotency_key,
        replayed=acknowledgement.replayed,
    )
