"""A tiny OpenAI-compatible HTTP server for tests: canned, deterministic completions and a
record of every request. Runs ``http.server`` in a background thread on a free local port."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: body of a request -> completion text.
Completer = Callable[[dict[str, Any]], str]


def echo_last_line(body: dict[str, Any]) -> str:
    """Default completer: a short text derived from the prompt, the same for the same body."""
    prompt = body.get("prompt") or body["messages"][-1]["content"]
    product = [line for line in prompt.split("\n") if line.startswith("Product: ")]
    words = product[-1][len("Product: ") :].split(" (")[0].split() if product else ["item"]
    return " " + " ".join(words[-2:]) + f"\nQuery: seed {body.get('seed')}"


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeOpenAIServer:
    """Use as a context manager; ``base_url`` is set while it runs.

    Args:
        completer: makes the completion text of a request.
        fail_first: answer the first ``fail_first`` requests with ``fail_status``.
        fail_status: status of those failures (503: retried; 400/401/404: not retried).
        chat_reply: answer with the chat shape (``choices[0].message.content``).
    """

    completer: Completer = echo_last_line
    fail_first: int = 0
    fail_status: int = 503
    requests: list[RecordedRequest] = field(default_factory=list)
    base_url: str = ""

    def __enter__(self) -> FakeOpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(RecordedRequest(self.path, dict(self.headers), body))
                if len(server.requests) <= server.fail_first:
                    self._reply(server.fail_status, {"error": {"message": "canned failure"}})
                    return
                if self.path not in ("/v1/completions", "/v1/chat/completions"):
                    self._reply(404, {"error": {"message": f"no route {self.path}"}})
                    return
                text = server.completer(body)
                if self.path == "/v1/chat/completions":
                    choice: dict[str, Any] = {"message": {"role": "assistant", "content": text}}
                else:
                    choice = {"text": text}
                self._reply(200, {"object": "text_completion", "choices": [choice]})

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host!s}:{port}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
