"""A hostile client against a real uvicorn server on loopback: 4xx, never 5xx, and the
keep-alive connection keeps working.

Requests are raw bytes on a socket (an HTTP client would refuse to send most of them, and some
failures, like a connection reset after a 500, only show with a real server). Each case sends
one request, checks its status and that the answer is JSON, then sends ``GET /healthz`` on the
same connection. At the end the server's own metrics must count no 5xx answer.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from shopaug.serve import (  # noqa: E402
    Settings,
    create_app,
    input_checks,
)
from shopaug.serve.input_checks import safe_errors, safe_json  # noqa: E402
from shopaug.serve.testing import SMALL_CATALOG, load_fake_backend, write_fake_model  # noqa: E402
from shopaug.serve.text_fields import text_problem  # noqa: E402

MAX_BODY = 64 * 1024
TOKEN = "hostile-test-token"
BODY_TIMEOUT = 1.0


@dataclass
class Server:
    host: str
    port: int


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    run_dir = tmp_path_factory.mktemp("hostile")
    write_fake_model(run_dir / "model", "v1", SMALL_CATALOG)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(input_checks, "BODY_READ_TIMEOUT_SECONDS", BODY_TIMEOUT)
        app = create_app(
            Settings(
                run_dir=run_dir, max_body_bytes=MAX_BODY, max_batch_events=50, admin_token=TOKEN
            ),
            load_fake_backend,
        )
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    service = uvicorn.Server(config)
    thread = threading.Thread(target=service.run, name="hostile-uvicorn", daemon=True)
    thread.start()
    while not service.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    port = service.servers[0].sockets[0].getsockname()[1]
    yield Server("127.0.0.1", port)
    service.should_exit = True
    thread.join(timeout=30)


class Connection:
    """One keep-alive connection that sends raw request bytes and parses the answers."""

    def __init__(self, server: Server) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=30)

    def close(self) -> None:
        self.sock.close()

    def send(self, raw: bytes) -> http.client.HTTPResponse:
        self.sock.sendall(raw)
        return self.answer()

    def answer(self) -> http.client.HTTPResponse:
        response = http.client.HTTPResponse(self.sock)
        response.begin()
        response.body = response.read()  # type: ignore[attr-defined]
        return response


def request(
    method: str,
    target: str,
    body: bytes = b"",
    content_type: str | None = "application/json",
    *,
    length: int | None = None,
    headers: tuple[str, ...] = (),
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: test", *headers]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if body or method != "GET":
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def event(**fields: object) -> dict[str, object]:
    return {"event": "click", "product_id": "p1", "query": "sofa", **fields}


def dumps(value: object) -> bytes:
    """JSON as a client would send it (lone surrogates as \\u escapes, which JSON allows)."""
    return json.dumps(value).encode("ascii")


DEEP = b'{"query": "sofa", "filters": ' + b'{"a": ' * 40 + b'"x"' + b"}" * 40 + b"}"
UTF16 = json.dumps({"query": "sofa"}).encode("utf-16")  # with its byte-order mark

# (name, method, path, body, content type, expected status, field the 422 must name)
CORPUS: list[tuple[str, str, str, bytes, str | None, int, str | None]] = [
    # strings that are valid JSON but not acceptable text
    (
        "search lone surrogate",
        "POST",
        "/search",
        dumps({"query": "\ud800"}),
        "application/json",
        422,
        "query",
    ),
    (
        "search surrogate in extra field",
        "POST",
        "/search",
        dumps({"query": "sofa", "category": "\udfff"}),
        "application/json",
        422,
        "category",
    ),
    (
        "search surrogate as a key",
        "POST",
        "/search",
        dumps({"query": "sofa", "\udfff": 1}),
        "application/json",
        422,
        None,
    ),
    (
        "search NUL",
        "POST",
        "/search",
        dumps({"query": "so\x00fa"}),
        "application/json",
        422,
        "query",
    ),
    (
        "search escape sequence",
        "POST",
        "/search",
        dumps({"query": "\x1b[2J"}),
        "application/json",
        422,
        "query",
    ),
    (
        "search C1 control",
        "POST",
        "/search",
        dumps({"query": "sofa\x85"}),
        "application/json",
        422,
        "query",
    ),
    (
        "search surrogate in filter value",
        "POST",
        "/search",
        dumps({"query": "sofa", "filters": {"category": "\ud83d"}}),
        "application/json",
        422,
        "filters",
    ),
    (
        "feedback lone surrogate",
        "POST",
        "/feedback",
        dumps(event(query="\ud800")),
        "application/json",
        422,
        "query",
    ),
    (
        "feedback NUL in product id",
        "POST",
        "/feedback",
        dumps(event(product_id="p1\x00")),
        "application/json",
        422,
        "product_id",
    ),
    (
        "feedback tab in user id",
        "POST",
        "/feedback",
        dumps(event(user_id="u\t1")),
        "application/json",
        422,
        "user_id",
    ),
    (
        "feedback surrogate in batch",
        "POST",
        "/feedback",
        dumps({"events": [event(), event(session_id="\udfff")]}),
        "application/json",
        422,
        "session_id",
    ),
    (
        "recommend surrogate in history",
        "POST",
        "/recommend",
        dumps({"history": ["p1", "\ud800"]}),
        "application/json",
        422,
        "history",
    ),
    (
        "recommend NUL session",
        "POST",
        "/recommend",
        dumps({"session_id": "\x00"}),
        "application/json",
        422,
        "session_id",
    ),
    # strict numbers
    (
        "search k overflows to infinity",
        "POST",
        "/search",
        b'{"query": "sofa", "k": 1e309}',
        "application/json",
        422,
        "k",
    ),
    (
        "search k minus infinity",
        "POST",
        "/search",
        b'{"query": "sofa", "k": -1e309}',
        "application/json",
        422,
        "k",
    ),
    (
        "search k true",
        "POST",
        "/search",
        b'{"query": "sofa", "k": true}',
        "application/json",
        422,
        "k",
    ),
    (
        "search k float",
        "POST",
        "/search",
        b'{"query": "sofa", "k": 2.0}',
        "application/json",
        422,
        "k",
    ),
    (
        "search k string",
        "POST",
        "/search",
        b'{"query": "sofa", "k": "5"}',
        "application/json",
        422,
        "k",
    ),
    (
        "search k huge integer",
        "POST",
        "/search",
        b'{"query": "sofa", "k": ' + b"9" * 4000 + b"}",
        "application/json",
        422,
        "k",
    ),
    (
        "recommend k infinity",
        "POST",
        "/recommend",
        b'{"history": ["p1"], "k": 1e309}',
        "application/json",
        422,
        "k",
    ),
    (
        "feedback k-like extra",
        "POST",
        "/feedback",
        b'{"event": "click", "product_id": "p1", "k": 1e309}',
        "application/json",
        422,
        "k",
    ),
    (
        "feedback position true",
        "POST",
        "/feedback",
        dumps(event(position=True)),
        "application/json",
        422,
        "position",
    ),
    (
        "feedback position float",
        "POST",
        "/feedback",
        dumps(event(position=1.5)),
        "application/json",
        422,
        "position",
    ),
    (
        "feedback timestamp infinity",
        "POST",
        "/feedback",
        b'{"event": "click", "product_id": "p1", "timestamp": 1e400}',
        "application/json",
        422,
        "timestamp",
    ),
    (
        "NaN literal",
        "POST",
        "/search",
        b'{"query": "sofa", "k": NaN}',
        "application/json",
        400,
        None,
    ),
    (
        "Infinity literal",
        "POST",
        "/feedback",
        b'{"event": "click", "product_id": "p1", "timestamp": Infinity}',
        "application/json",
        400,
        None,
    ),
    # bodies that are not UTF-8
    (
        "overlong UTF-8 as JSON",
        "POST",
        "/search",
        b'{"query":"\xc0\xaf"}',
        "application/json",
        400,
        None,
    ),
    (
        "encoded surrogate as JSON",
        "POST",
        "/feedback",
        b'{"event":"click","product_id":"\xed\xa0\x80"}',
        "application/json",
        400,
        None,
    ),
    (
        "latin-1 as JSON",
        "POST",
        "/recommend",
        b'{"history":["caf\xe9"]}',
        "application/json",
        400,
        None,
    ),
    ("UTF-16 with BOM as JSON", "POST", "/search", UTF16, "application/json", 400, None),
    ("UTF-16 charset", "POST", "/search", UTF16, "application/json; charset=utf-16", 415, None),
    # wrong content types (the issue's bodies sent as text/plain included)
    ("overlong as text/plain", "POST", "/search", b'{"query":"\xc0\xaf"}', "text/plain", 415, None),
    (
        "encoded surrogate as text/plain",
        "POST",
        "/feedback",
        b'{"query":"\xed\xa0\x80"}',
        "text/plain",
        415,
        None,
    ),
    ("UTF-16 as text/plain", "POST", "/recommend", UTF16, "text/plain", 415, None),
    ("no content type", "POST", "/search", b'{"query": "sofa"}', None, 415, None),
    (
        "form body",
        "POST",
        "/feedback",
        b"event=click&product_id=p1",
        "application/x-www-form-urlencoded",
        415,
        None,
    ),
    (
        "multipart body",
        "POST",
        "/search",
        b"--x\r\n\r\nsofa\r\n--x--",
        "multipart/form-data; boundary=x",
        415,
        None,
    ),
    # structure
    (
        "duplicate keys",
        "POST",
        "/search",
        b'{"query": "sofa", "query": "lamp"}',
        "application/json",
        400,
        None,
    ),
    (
        "duplicate keys in an event",
        "POST",
        "/feedback",
        b'{"events": [{"event": "click", "product_id": "p1", "product_id": "p2"}]}',
        "application/json",
        400,
        None,
    ),
    ("nesting 40 deep", "POST", "/search", DEEP, "application/json", 400, None),
    (
        "nesting past the recursion limit",
        "POST",
        "/feedback",
        b"[" * 30_000 + b"]" * 30_000,
        "application/json",
        400,
        None,
    ),
    (
        "huge array of events",
        "POST",
        "/feedback",
        b'{"events": [' + b",".join([b"1"] * 30_000) + b"]}",
        "application/json",
        422,
        "events",
    ),
    (
        "huge valid batch over the limit",
        "POST",
        "/feedback",
        dumps({"events": [event()] * 500}),
        "application/json",
        422,
        "events",
    ),
    (
        "huge history",
        "POST",
        "/recommend",
        dumps({"history": ["p1"] * 5000}),
        "application/json",
        422,
        "history",
    ),
    ("truncated JSON", "POST", "/search", b'{"query": "so', "application/json", 422, None),
    ("JSON scalar", "POST", "/search", b"42", "application/json", 422, None),
    ("empty body", "POST", "/search", b"", "application/json", 422, None),
    (
        "admin promote NUL path",
        "POST",
        "/admin/promote",
        dumps({"model_dir": "/tmp/\x00x"}),
        "application/json",
        401,
        None,
    ),
    # query strings
    ("GET encoded surrogate", "GET", "/search?q=%ED%A0%80", b"", None, 400, None),
    ("GET overlong", "GET", "/search?q=%C0%AF", b"", None, 400, None),
    ("GET latin-1 filter", "GET", "/search?q=sofa&filter=category:caf%E9", b"", None, 400, None),
    ("GET bad parameter name", "GET", "/search?q=sofa&%FF=1", b"", None, 400, None),
    ("GET NUL", "GET", "/search?q=so%00fa", b"", None, 422, "q"),
    ("GET escape in filter", "GET", "/search?q=sofa&filter=category:%1B", b"", None, 422, "filter"),
    ("GET k infinity", "GET", "/search?q=sofa&k=1e309", b"", None, 422, "k"),
    ("GET k true", "GET", "/search?q=sofa&k=true", b"", None, 422, "k"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status", "field"),
    [case[1:] for case in CORPUS],
    ids=[case[0] for case in CORPUS],
)
def test_hostile_request_is_4xx_and_the_connection_survives(
    server: Server,
    method: str,
    path: str,
    body: bytes,
    content_type: str | None,
    status: int,
    field: str | None,
) -> None:
    connection = Connection(server)
    try:
        answer = connection.send(request(method, path, body, content_type))
        text = answer.body.decode("utf-8")  # type: ignore[attr-defined]  # always UTF-8
        assert answer.status == status, text[:500]
        detail = json.loads(text)["detail"]
        if field is not None:
            assert any(field in item["loc"] for item in detail), detail
        assert len(text) < 20_000  # errors are capped, never the whole hostile body echoed

        healthy = connection.send(request("GET", "/healthz"))
        assert healthy.status == 200
        assert json.loads(healthy.body)["status"] == "ok"  # type: ignore[attr-defined]
    finally:
        connection.close()


def test_valid_requests_still_work_on_one_connection(server: Server) -> None:
    connection = Connection(server)
    try:
        search = connection.send(request("POST", "/search", dumps({"query": "blue sofa", "k": 2})))
        get = connection.send(request("GET", "/search?q=blue%20sofa&k=2"))
        text = connection.send(
            request("POST", "/search", dumps({"query": "blue\tsofa\n"}))  # whitespace is fine
        )
        logged = connection.send(
            request("POST", "/feedback", dumps(event(query_id="", user_id="", position=2)))
        )
        bom = connection.send(
            request("POST", "/search", b"\xef\xbb\xbf" + dumps({"query": "sofa"}))
        )
    finally:
        connection.close()
    assert [search.status, get.status, text.status, logged.status, bom.status] == [200] * 5
    assert [r["product_id"] for r in json.loads(search.body)["results"]] == ["p1", "p2"]  # type: ignore[attr-defined]
    assert json.loads(get.body) == json.loads(search.body)  # type: ignore[attr-defined]


def test_admin_promote_of_a_path_with_nul_is_422(server: Server) -> None:
    connection = Connection(server)
    try:
        answer = connection.send(
            request(
                "POST",
                "/admin/promote",
                dumps({"model_dir": "/tmp/\x00model"}),
                headers=(f"Authorization: Bearer {TOKEN}",),
            )
        )
        assert connection.send(request("GET", "/healthz")).status == 200
    finally:
        connection.close()
    assert answer.status == 422
    detail = json.loads(answer.body)["detail"]  # type: ignore[attr-defined]
    assert detail[0]["loc"] == ["body", "model_dir"]
    assert "U+0000" in detail[0]["msg"]


def test_body_over_the_limit_is_413_and_closes(server: Server) -> None:
    connection = Connection(server)
    try:
        answer = connection.send(request("POST", "/search", b"x" * (MAX_BODY + 1)))
    finally:
        connection.close()
    assert answer.status == 413
    assert "max_body_bytes" in json.loads(answer.body)["detail"]  # type: ignore[attr-defined]


def test_slow_body_is_408_and_the_server_keeps_serving(server: Server) -> None:
    connection = Connection(server)
    try:
        # Declares 100 bytes, sends 10, then nothing: the deadline answers.
        connection.sock.sendall(request("POST", "/feedback", b'{"event": ', length=100))
        answer = connection.answer()
        assert answer.status == 408
        assert answer.getheader("connection") == "close"
    finally:
        connection.close()
    fresh = Connection(server)
    try:
        assert fresh.send(request("GET", "/healthz")).status == 200
    finally:
        fresh.close()


def test_no_request_made_the_server_answer_5xx(server: Server) -> None:
    """Runs after the corpus (same module): the server's own count of 5xx answers is 0."""
    connection = Connection(server)
    try:
        metrics = connection.send(request("GET", "/metrics")).body.decode()  # type: ignore[attr-defined]
    finally:
        connection.close()
    lines = [
        line for line in metrics.splitlines() if line.startswith("shopaug_http_requests_total")
    ]
    assert any('status="422"' in line for line in lines)  # the corpus did reach the server
    assert not [line for line in lines if 'status="5' in line]


def test_openapi_schema_states_the_limits(server: Server) -> None:
    connection = Connection(server)
    try:
        schema = json.loads(connection.send(request("GET", "/openapi.json")).body)  # type: ignore[attr-defined]
    finally:
        connection.close()
    models = schema["components"]["schemas"]
    assert models["SearchRequest"]["properties"]["query"]["maxLength"] == 512
    assert models["SearchRequest"]["properties"]["k"]["maximum"] == 100
    assert models["SearchRequest"]["properties"]["k"]["minimum"] == 1
    events = models["FeedbackBatchIn"]["properties"]["events"]
    assert events["maxItems"] == 50
    history = [
        b
        for b in models["RecommendRequest"]["properties"]["history"]["anyOf"]
        if b.get("type") == "array"
    ]
    assert history[0]["maxItems"] == 200
    parameters = {p["name"]: p["schema"] for p in schema["paths"]["/search"]["get"]["parameters"]}
    assert parameters["q"]["maxLength"] == 512 and parameters["k"]["maximum"] == 100
    assert schema["info"]["x-limits"]["max_body_bytes"] == MAX_BODY
    assert "pattern" in models["FeedbackEventIn"]["properties"]["product_id"]
    for status in ("400", "408", "413", "415", "422"):
        assert status in schema["paths"]["/feedback"]["post"]["responses"]


# -- the pieces, with known answers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "allowed", "expected"),
    [
        ("blue sofa", frozenset(), None),
        ("café ☕ 沙发", frozenset(), None),
        ("a\tb", frozenset("\t"), None),
        ("a\tb", frozenset(), "control character U+0009 at character 2"),
        ("\ud800x", frozenset(), "lone surrogate U+D800 at character 1"),
        ("ok\x7f", frozenset(), "control character U+007F at character 3"),
        ("\U0001f600", frozenset(), None),  # a real astral character is not a surrogate
    ],
)
def test_text_problem_names_the_character(
    text: str, allowed: frozenset[str], expected: str | None
) -> None:
    problem = text_problem(text, allowed=allowed)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem


def test_safe_json_escapes_what_utf8_cannot_carry() -> None:
    value = {"q": "\ud800", b"k": b"\xc0\xaf", "n": float("inf"), "long": "x" * 1000}
    safe = safe_json(value)
    assert safe["q"] == "\\ud800"
    assert safe["b'k'"] == "\\xc0\\xaf"
    assert safe["n"] == "inf"
    assert safe["long"].startswith("x" * 200) and safe["long"].endswith("(1000 characters)")
    json.dumps(safe).encode("utf-8")  # encodes


def test_safe_errors_are_capped() -> None:
    errors = [{"type": "int_type", "loc": ("body", i), "msg": "no", "input": i} for i in range(100)]
    rendered = safe_errors(errors)
    assert len(rendered) == 21
    assert rendered[-1]["msg"] == "80 more errors are not listed"
    assert rendered[0] == {"type": "int_type", "loc": ["body", 0], "msg": "no", "input": 0}
