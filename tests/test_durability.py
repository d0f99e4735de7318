"""Acknowledged feedback survives a SIGKILL of the real service (uvicorn in a subprocess)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from shopaug.feedback.store import FeedbackStore  # noqa: E402
from shopaug.serve.testing import SMALL_CATALOG, write_fake_model  # noqa: E402

pytestmark = [
    pytest.mark.slow,  # starts the service twice in subprocesses
    pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL"),
]

SERVER = """
import sys
from shopaug.serve import run
from shopaug.serve.testing import load_fake_backend
run(sys.argv[1], "127.0.0.1", int(sys.argv[2]), loader=load_fake_backend, log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(run_dir: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(run_dir), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not become ready within 60 s")


def test_acknowledged_events_survive_sigkill(tmp_path: Path) -> None:
    write_fake_model(tmp_path / "model", "v1", SMALL_CATALOG)
    port = free_port()
    server = start_server(tmp_path, port)
    acknowledged: dict[str, list[int]] = {}  # idempotency key -> event ids
    sent = threading.Event()
    stop = threading.Event()

    def send_events() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for number in range(100_000):
                if stop.is_set():
                    return
                key = f"event-{number}"
                body = {"event": "click", "product_id": f"p{number % 6 + 1}", "session_id": key}
                try:
                    response = client.post("/feedback", json=body, headers={"Idempotency-Key": key})
                except httpx.TransportError:
                    return  # the server is gone
                if response.is_success:
                    acknowledged[key] = response.json()["event_ids"]
                    if len(acknowledged) >= 40:
                        sent.set()

    sender = threading.Thread(target=send_events)
    sender.start()
    try:
        assert sent.wait(timeout=120), "the service acknowledged fewer than 40 events"
        os.kill(server.pid, signal.SIGKILL)  # mid-stream: the sender is still posting
        server.wait(timeout=30)
        sender.join(timeout=30)
    finally:
        stop.set()
        if server.poll() is None:
            server.kill()
    assert server.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 40

    restarted = start_server(tmp_path, port)
    try:
        store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.sqlite'}")
        stored = {event.idempotency_key: event.id for event in store.read_new(0)}
        store.close()
        missing = [key for key, ids in acknowledged.items() if stored.get(key) != ids[0]]
        assert missing == [], f"acknowledged but lost: {missing[:10]}"
        # A client retrying an acknowledged request after the crash is not counted twice.
        key, ids = next(iter(acknowledged.items()))
        number = int(key.split("-")[1])
        retry = httpx.post(
            f"http://127.0.0.1:{port}/feedback",
            json={"event": "click", "product_id": f"p{number % 6 + 1}", "session_id": key},
            headers={"Idempotency-Key": key},
            timeout=5,
        )
        assert retry.status_code == 200
        assert retry.json() == {
            "accepted": 1,
            "event_ids": ids,
            "idempotency_key": key,
            "replayed": True,
        }
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)
