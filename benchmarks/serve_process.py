"""``shopaug serve`` in a subprocess for the benchmarks that talk to a real service over HTTP
(serve_latency.py, recommend_replay.py): a free port, optional CPU pinning, ready on
``/readyz``, stopped with SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


class ServeProcess:
    """``shopaug serve RUN OPTIONS`` on a free port, pinned to ``cpus``; its stderr goes to
    ``log`` (appended when ``append_log``). The constructor returns once ``/readyz`` answers
    200 (``startup_seconds``), or raises with the log's tail when the process exits, or after
    ``ready_timeout`` seconds."""

    def __init__(
        self,
        run: Path,
        options: Sequence[str],
        *,
        log: Path,
        cpus: str | None,
        env: Mapping[str, str] | None = None,
        append_log: bool = False,
        ready_timeout: float = 900.0,
        poll_seconds: float = 0.5,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-c", "from shopaug.cli import app; app()", "serve", str(run)]
        environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        with log.open("ab" if append_log else "wb") as stream:
            self.process = subprocess.Popen(
                [*pinned(cpus), *command, "--port", str(self.port), *options],
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=stream,
            )
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                tail = log.read_text("utf-8", errors="replace")[-2000:]
                raise RuntimeError(f"shopaug serve exited with {self.process.returncode}:\n{tail}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > ready_timeout:
                raise RuntimeError(f"the service did not become ready in {ready_timeout:.0f} s")
            time.sleep(poll_seconds)
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
