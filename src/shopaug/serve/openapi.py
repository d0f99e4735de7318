"""What the service's OpenAPI schema says beyond its models: limits and links.

* Limits: they live in :class:`~shopaug.serve.settings.Settings` (one service may allow
  longer queries than another) and are checked by :class:`~shopaug.serve.deps.RequestLimits`,
  so the request models cannot state them as fixed pydantic constraints. :func:`apply_limits`
  writes them into the schema (``maxLength``, ``minimum``/``maximum``, ``maxItems``, and all
  of them with the body size in ``info``), so clients and fuzzers see what is enforced.
* Links (:func:`add_links`): a search result's ``product_id`` is what ``/feedback`` logs and
  ``/recommend`` takes as history; a logged session can be recommended for. Clients read the
  workflow from them, and schemathesis' stateful phase follows them.

:func:`complete_openapi` makes an app serve the completed schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from shopaug.serve.input_checks import BODY_READ_TIMEOUT_SECONDS, MAX_JSON_DEPTH
from shopaug.serve.settings import Settings

Schema = dict[str, Any]


def _constrain(schema: Schema, **constraints: Any) -> None:
    """Add ``constraints`` to ``schema``, or to each non-null branch of its ``anyOf``."""
    branches = schema.get("anyOf")
    targets = [b for b in branches if b.get("type") != "null"] if branches else [schema]
    for target in targets:
        target.update(constraints)


def _property(components: Schema, model: str, name: str) -> Schema | None:
    return components.get(model, {}).get("properties", {}).get(name)


def limits_table(settings: Settings) -> dict[str, int | float]:
    """The enforced limits by name (as ``info.x-limits`` publishes them)."""
    return {
        "max_query_chars": settings.max_query_chars,
        "max_k": settings.max_k,
        "max_batch_events": settings.max_batch_events,
        "max_history": settings.max_history,
        "max_body_bytes": settings.max_body_bytes,
        "max_json_depth": MAX_JSON_DEPTH,
        "body_read_timeout_seconds": BODY_READ_TIMEOUT_SECONDS,
    }


def apply_limits(schema: Schema, settings: Settings) -> Schema:
    """Write ``settings``' limits into an OpenAPI ``schema`` (in place); return it."""
    query = {"minLength": 1, "maxLength": settings.max_query_chars}
    k = {"minimum": 1, "maximum": settings.max_k}
    components = schema.get("components", {}).get("schemas", {})
    placements: list[tuple[str, str, dict[str, int]]] = [
        ("SearchRequest", "query", query),
        ("SearchRequest", "k", k),
        ("RecommendRequest", "k", k),
        ("RecommendRequest", "history", {"minItems": 1, "maxItems": settings.max_history}),
        ("FeedbackEventIn", "query", {"maxLength": settings.max_query_chars}),
        ("FeedbackBatchIn", "events", {"minItems": 1, "maxItems": settings.max_batch_events}),
    ]
    for model, name, constraints in placements:
        found = _property(components, model, name)
        if found is not None:
            _constrain(found, **constraints)
    for parameter in (
        schema.get("paths", {}).get("/search", {}).get("get", {}).get("parameters", [])
    ):
        if parameter.get("name") == "q":
            _constrain(parameter["schema"], **query)
        elif parameter.get("name") == "k":
            _constrain(parameter["schema"], **k)
    limits = limits_table(settings)
    info = schema.setdefault("info", {})
    info["x-limits"] = limits
    info["description"] = (
        (info.get("description") or "")
        + "\n\nLimits this service enforces: "
        + ", ".join(f"{name} = {value}" for name, value in limits.items())
        + ". Request bodies are UTF-8 JSON (415 for another content type, 400 for bytes that "
        "are not UTF-8, duplicate keys, NaN/Infinity or deeper nesting); strings must be valid "
        "Unicode without control characters (422 naming the field)."
    ).strip()
    return schema


#: (source path, method) -> links of its 200 answer: (name, target path, method, body).
_LINKS: dict[tuple[str, str], list[tuple[str, str, str, dict[str, Any]]]] = {
    ("/search", "post"): [
        (
            "LogClickOnFirstResult",
            "/feedback",
            "post",
            {
                "event": "click",
                "product_id": "$response.body#/results/0/product_id",
                "query": "$response.body#/query",
                "position": 1,
            },
        ),
        (
            "RecommendFromFirstResult",
            "/recommend",
            "post",
            {"history": ["$response.body#/results/0/product_id"]},
        ),
    ],
    ("/search", "get"): [
        (
            "LogImpressionOfFirstResult",
            "/feedback",
            "post",
            {
                "event": "impression",
                "product_id": "$response.body#/results/0/product_id",
                "query": "$response.body#/query",
                "position": 1,
            },
        ),
    ],
    ("/recommend", "post"): [
        (
            "LogClickOnFirstItem",
            "/feedback",
            "post",
            {"event": "click", "product_id": "$response.body#/items/0/product_id"},
        ),
    ],
    ("/feedback", "post"): [
        (
            "RecommendForSession",
            "/recommend",
            "post",
            {"session_id": "$request.body#/session_id"},
        ),
    ],
}


def add_links(schema: Schema) -> Schema:
    """Add the OpenAPI links between operations (see the module docstring); in place."""
    paths = schema.get("paths", {})
    for (path, method), links in _LINKS.items():
        answer = paths.get(path, {}).get(method, {}).get("responses", {}).get("200")
        if answer is None:
            continue
        for name, target_path, target_method, body in links:
            target = paths.get(target_path, {}).get(target_method, {})
            if "operationId" in target:
                answer.setdefault("links", {})[name] = {
                    "operationId": target["operationId"],
                    "requestBody": body,
                }
    return schema


def complete_openapi(app: FastAPI, settings: Settings) -> None:
    """Make ``app`` serve its OpenAPI schema with ``settings``' limits and the links in it."""
    build: Callable[[], Schema] = app.openapi

    def openapi() -> Schema:
        if app.openapi_schema is None:
            app.openapi_schema = add_links(apply_limits(build(), settings))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
