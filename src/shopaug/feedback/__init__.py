"""shopaug.feedback: the durable feedback store, shared by the service and the online loop.

The service writes events through :class:`FeedbackStore` (``record``, ``session_history``,
``ping``); the online loop reads them (``read_new``, ``mark_consumed``). Neither package
imports the other: both depend on this one. SQLAlchemy is imported when a store is opened.
"""

from __future__ import annotations

from shopaug.feedback.store import (
    DEFAULT_CONSUMER,
    Acknowledgement,
    FeedbackEvent,
    FeedbackStore,
    IdempotencyConflict,
    StoredEvent,
    events_frame,
)

__all__ = [
    "DEFAULT_CONSUMER",
    "Acknowledgement",
    "FeedbackEvent",
    "FeedbackStore",
    "IdempotencyConflict",
    "StoredEvent",
    "events_frame",
]
