"""shopaug.feedback: the durable feedback store, shared by the service and the online loop.

The service writes events through :class:`FeedbackStore` (``record``, ``session_history``,
``ping``); the online loop reads them (``read_new``, ``mark_consumed``). A write the database
cannot take raises :class:`StoreUnavailable` (:class:`StoreFull` when it is full). Neither package
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
    StoreFull,
    StoreUnavailable,
    events_frame,
)

__all__ = [
    "DEFAULT_CONSUMER",
    "Acknowledgement",
    "FeedbackEvent",
    "FeedbackStore",
    "IdempotencyConflict",
    "StoreFull",
    "StoreUnavailable",
    "StoredEvent",
    "events_frame",
]
