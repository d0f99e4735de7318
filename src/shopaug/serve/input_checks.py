"""Checks at the HTTP edge for what a hostile or broken client sends, and safe error answers.

A fuzzer of valid JSON never reaches these cases; a client that sends raw bytes does:

* :class:`RawInputMiddleware` looks at the bytes before FastAPI parses them. A query string
  whose percent-escapes are not UTF-8 (``?q=%ED%A0%80``) is a 400, a control character in a
  query parameter a 422; a request body must be JSON (``Content-Type: application/json``, else
  415) in UTF-8 (else 400 naming the byte), with no duplicate key, no ``NaN``/``Infinity``
  literal and at most :data:`MAX_JSON_DEPTH` levels of nesting (else 400). Each of these answers
  keeps the keep-alive connection usable: the whole body has been read.
* :class:`BodyReadTimeoutMiddleware` answers 408 (and closes the connection) when a body has
  not arrived in full within a deadline, so a slow client cannot hold a worker forever.
* :func:`validation_error_handler` and :func:`http_error_handler` render 422 and other errors
  without ever echoing what cannot be encoded (a lone surrogate, bytes that are not UTF-8, an
  infinite number): such values are escaped with ``backslashreplace``, long inputs are cut and
  at most :data:`MAX_REPORTED_ERRORS` errors are listed.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from email.message import Message as MimeHeader
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from shopaug.serve.text_fields import text_problem

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]

#: Deepest JSON nesting accepted (the request models need 4 levels).
MAX_JSON_DEPTH = 32
#: Most validation errors listed in one 422 answer.
MAX_REPORTED_ERRORS = 20
#: Longest echoed input (characters); longer ones are cut.
MAX_ECHO_CHARS = 200
#: Seconds a client has to send a whole request body (408 after).
BODY_READ_TIMEOUT_SECONDS = 30.0

_METHODS_WITH_BODY = {"POST", "PUT", "PATCH", "DELETE"}


# -- rendering errors safely ------------------------------------------------------------------


def safe_json(value: Any, *, levels: int = 4) -> Any:
    """``value`` as JSON-encodable data that UTF-8 can always carry.

    Strings with lone surrogates and bytes that are not UTF-8 are escaped
    (``backslashreplace``), non-finite floats become strings (``"inf"``), long strings are cut
    at :data:`MAX_ECHO_CHARS`, containers at 20 items and ``levels`` levels.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes | bytearray):
        return _cut(bytes(value).decode("utf-8", "backslashreplace"))
    if isinstance(value, str):
        return _cut(value.encode("utf-8", "backslashreplace").decode("utf-8"))
    if levels <= 0:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())
        safe = {str(safe_json(str(k))): safe_json(v, levels=levels - 1) for k, v in items[:20]}
        if len(items) > 20:
            safe["..."] = f"{len(items) - 20} more keys"
        return safe
    if isinstance(value, list | tuple | set | frozenset):
        values = list(value)
        safe_list = [safe_json(v, levels=levels - 1) for v in values[:20]]
        if len(values) > 20:
            safe_list.append(f"... {len(values) - 20} more items")
        return safe_list
    return safe_json(str(value))


def _cut(text: str) -> str:
    if len(text) <= MAX_ECHO_CHARS:
        return text
    return f"{text[:MAX_ECHO_CHARS]}... ({len(text)} characters)"


def safe_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic/FastAPI validation errors made safe (see :func:`safe_json`) and capped."""
    errors = list(errors)
    rendered = []
    for error in errors[:MAX_REPORTED_ERRORS]:
        item = {key: error[key] for key in ("type", "loc", "msg") if key in error}
        if "input" in error:
            item["input"] = error["input"]
        if "ctx" in error:
            item["ctx"] = {key: str(value) for key, value in error["ctx"].items()}
        rendered.append(safe_json(item, levels=6))
    if len(errors) > MAX_REPORTED_ERRORS:
        rendered.append(
            {
                "type": "too_many_errors",
                "loc": ["body"],
                "msg": f"{len(errors) - MAX_REPORTED_ERRORS} more errors are not listed",
            }
        )
    return rendered


async def validation_error_handler(_request: Request, error: Exception) -> Response:
    """A 422 in FastAPI's format that never fails to render (see :func:`safe_errors`)."""
    errors = error.errors() if isinstance(error, RequestValidationError) else []
    return JSONResponse(status_code=422, content={"detail": safe_errors(errors)})


async def http_error_handler(request: Request, error: Exception) -> Response:
    """FastAPI's HTTP error answer, with its detail made safe to encode."""
    if isinstance(error, StarletteHTTPException):
        error.detail = safe_json(error.detail, levels=8)
    return await http_exception_handler(request, error)  # type: ignore[arg-type]


# -- raw bytes at the edge ----------------------------------------------------------------------


class BadInput(Exception):
    """A request refused before parsing: its status and FastAPI-style detail."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check_query_string(raw: bytes) -> None:
    """Every query parameter name and value is UTF-8 without control characters.

    Raises:
        BadInput: 400 for bytes that are not UTF-8, 422 for a control character.
    """
    for part in raw.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        try:
            name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadInput(400, f"a query parameter name is not UTF-8 ({error.reason})") from None
        decoded = unquote_to_bytes(raw_value.replace(b"+", b" "))
        try:
            value = decoded.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadInput(
                400,
                f"query parameter {name!r} is not UTF-8: byte {error.start + 1} of its "
                f"percent-decoded value ({decoded[error.start : error.start + 1].hex().upper()}) "
                f"is {error.reason}",
            ) from None
        problem = text_problem(value) or text_problem(name)
        if problem is not None:
            location = ["query", name if text_problem(name) is None else "?"]
            raise BadInput(422, [{"loc": location, "msg": problem, "type": "value_error"}])


def check_json_body(body: bytes, content_type: str | None) -> None:
    """The body is UTF-8 JSON without duplicate keys, NaN/Infinity or deep nesting.

    A body that is not JSON at all passes (FastAPI answers 422 with the position).

    Raises:
        BadInput: 415 for another content type, 400 for the rest.
    """
    if not _is_json(content_type):
        raise BadInput(
            415,
            f"Content-Type is {content_type!r}; expected 'application/json' (UTF-8)",
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadInput(
            400,
            f"the body is not UTF-8: byte {error.start + 1} "
            f"(0x{body[error.start]:02X}) is {error.reason}; send JSON encoded as UTF-8",
        ) from None
    try:
        parsed = json.loads(
            text.removeprefix("\ufeff"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constant,
        )
    except json.JSONDecodeError:
        return
    except RecursionError:
        raise BadInput(400, f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except _RefusedJson as error:
        raise BadInput(400, str(error)) from None
    if _depth(parsed) > MAX_JSON_DEPTH:
        raise BadInput(400, f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    header = MimeHeader()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    charset = header.get_param("charset")
    return (
        header.get_content_maintype() == "application"
        and (subtype == "json" or subtype.endswith("+json"))
        and (charset is None or str(charset).lower() in ("utf-8", "utf8"))
    )


class _RefusedJson(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            shown = key.encode("utf-8", "backslashreplace").decode("utf-8")
            raise _RefusedJson(f"duplicate key {_cut(shown)!r} in a JSON object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise _RefusedJson(f"{name} is not JSON; send numbers as finite decimals")


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


class RawInputMiddleware:
    """Runs :func:`check_query_string` and :func:`check_json_body` before the app.

    Place it inside the body-size limit, which bounds what is read here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_query_string(scope.get("query_string", b""))
        except BadInput as refused:
            await _answer(send, refused.status, refused.detail)
            return
        if scope.get("method") not in _METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            headers = dict(scope.get("headers") or [])
            content_type = headers.get(b"content-type")
            try:
                check_json_body(
                    body, None if content_type is None else content_type.decode("latin-1")
                )
            except BadInput as refused:
                await _answer(send, refused.status, refused.detail)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class BodyReadTimeoutMiddleware:
    """408 and a closed connection when the request body is not in within ``seconds``.

    The deadline covers the whole body from the request's start; once the body is complete,
    later ``receive`` calls (waiting for a disconnect) are not timed.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.seconds
        body_done = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            remaining = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(remaining, 0.0))
            except TimeoutError:
                raise _BodyTimeout from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except _BodyTimeout:
            if started:
                raise
            await _answer(
                send,
                408,
                f"the request body did not arrive within {self.seconds:g} seconds",
                close=True,
            )


class _BodyTimeout(Exception):
    pass


async def _answer(send: Send, status: int, detail: Any, *, close: bool = False) -> None:
    body = json.dumps({"detail": safe_json(detail, levels=8)}).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
