"""Request and response bodies of the service (they make its OpenAPI schema).

Request models are strict: every string is valid Unicode without control characters
(:mod:`shopaug.serve.text_fields`), integers are JSON integers (``true`` or ``2.0`` is not a
``k``), numbers are finite. Hard caps here protect the parser; the configurable limits of
:class:`Settings` are checked in the handlers, which answer 422 naming the field, and written
into the OpenAPI schema by :mod:`shopaug.serve.openapi`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shopaug.serve.backend import Hit
from shopaug.serve.text_fields import Identifier, IdentifierOrEmpty, QueryText, ServerPath

EventName = Literal["impression", "click", "add_to_cart", "purchase"]
#: ``k`` of /search and /recommend: a JSON integer (no bool, no float), range from Settings.
StrictK = Annotated[int, Field(strict=True, description="Number of results, 1 to Settings.max_k.")]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: QueryText = Field(
        description="Query text (at most Settings.max_query_chars characters)."
    )
    k: StrictK = 10
    filters: dict[Identifier, QueryText] | None = Field(
        None, description="Field -> required value."
    )


class Result(BaseModel):
    rank: int
    product_id: str
    score: float
    title: str


def results(hits: Sequence[Hit]) -> list[Result]:
    """Ranked hits as response rows, rank 1 first."""
    return [
        Result(rank=rank, product_id=hit.product_id, score=float(hit.score), title=hit.title)
        for rank, hit in enumerate(hits, start=1)
    ]


class SearchResponse(BaseModel):
    model_version: str
    query: str
    results: list[Result]


class RecommendRequest(BaseModel):
    """Exactly one of ``history``, ``session_id`` and ``customer_id``."""

    model_config = ConfigDict(extra="forbid")

    history: list[Identifier] | None = Field(
        None, description="Product ids the user interacted with, oldest first."
    )
    session_id: IdentifierOrEmpty | None = Field(
        None, description="Use the session's logged clicks/carts/purchases."
    )
    customer_id: Identifier | None = Field(
        None,
        description="Use the customer's purchases known when the model was trained (a "
        "recommendation run's model), then the purchase and add_to_cart events logged "
        "through /feedback with this id as user_id; 404 for a customer with neither.",
    )
    k: StrictK = 10


class RecommendResponse(BaseModel):
    model_version: str
    history: list[str] = Field(description="The history ranked from, oldest first.")
    customer_id: str | None = Field(None, description="The customer asked for, if any.")
    items: list[Result]


class FeedbackEventIn(BaseModel):
    """One logged event."""

    model_config = ConfigDict(extra="forbid")

    event: EventName
    product_id: Identifier
    query: QueryText | None = Field(
        None, description="At most Settings.max_query_chars characters."
    )
    query_id: IdentifierOrEmpty | None = None
    position: int | None = Field(
        None, ge=1, le=100_000, strict=True, description="1-based rank shown."
    )
    user_id: IdentifierOrEmpty | None = Field(
        None,
        description="The user or customer; a purchase or add_to_cart event extends the "
        "history /recommend ranks for this customer_id from the next request on.",
    )
    session_id: IdentifierOrEmpty | None = None
    timestamp: float | None = Field(
        None, ge=0, strict=True, description="Client time, Unix seconds."
    )

    @field_validator("timestamp")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("timestamp must be a finite number of seconds")
        return value


class FeedbackBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[FeedbackEventIn] = Field(
        min_length=1, description="At most Settings.max_batch_events events."
    )


class FeedbackAck(BaseModel):
    accepted: int
    event_ids: list[int]
    idempotency_key: str | None
    replayed: bool


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_dir: ServerPath = Field(description="Model directory on the server.")


class ModelSwap(BaseModel):
    model_version: str
    previous_version: str | None
    model_dir: str


class Status(BaseModel):
    status: str
    model_version: str | None = None
    detail: str | None = None


class ModelInfo(BaseModel):
    model_version: str
    ranking: str = Field(
        description="How /search ranks: 'dense', or the fusion with BM25 the run chose "
        "('dense + bm25 (convex, weight 0.6)', 'dense + bm25 (rrf)')."
    )


class Detail(BaseModel):
    detail: str


_MEANING = {
    400: "The body is not UTF-8 JSON (bytes that are not UTF-8, a duplicate key, NaN or "
    "Infinity, nesting too deep), or a query parameter is not UTF-8.",
    408: "The request body did not arrive in time (the connection is closed).",
    401: "Missing or malformed admin token.",
    403: "Wrong admin token.",
    404: "Admin routes or ads disabled, nothing logged for the session, a customer with no "
    "purchase known to the model or logged, or /search on a model that ranks no queries (a "
    "recommendation run).",
    409: "Idempotency-Key reused with a different body.",
    413: "Request body larger than max_body_bytes.",
    415: "The body is not sent as Content-Type: application/json (UTF-8).",
    503: "No model loaded yet, or the feedback store is unavailable, or the feedback write "
    "queue is full; nothing was written. Retry after the Retry-After header's seconds.",
    507: "The feedback database or its disk is full; nothing was written. Retry after the "
    "Retry-After header's seconds.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the error answers a route can give."""
    return {code: {"model": Detail, "description": _MEANING[code]} for code in codes}
