"""Promoting a model while requests flow: no request fails, the version changes once."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from shopaug.models.registry import CURRENT, resolve_model_dir  # noqa: E402
from shopaug.serve import Settings, create_app  # noqa: E402
from shopaug.serve.testing import SMALL_CATALOG, load_fake_backend, write_fake_model  # noqa: E402

TOKEN = "swap-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("route", ["promote", "reload"])
def test_swap_under_load_fails_no_request(tmp_path: Path, route: str) -> None:
    run_dir = tmp_path / "run"
    write_fake_model(run_dir / "model", "v1", SMALL_CATALOG)
    # The new model takes a while to load, so requests keep arriving during the load.
    candidate = write_fake_model(tmp_path / "retrained", "v2", SMALL_CATALOG, load_seconds=0.5)
    app = create_app(Settings(run_dir=run_dir, admin_token=TOKEN), load_fake_backend)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started

    stop = threading.Event()
    results: list[list[tuple[int, str | None]]] = [[], []]

    def load(out: list[tuple[int, str | None]]) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.get("/search", params={"q": "blue sofa", "k": 3})
                except httpx.HTTPError as error:
                    out.append((-1, repr(error)))
                    continue
                version = response.json().get("model_version") if response.is_success else None
                out.append((response.status_code, version))

    workers = [threading.Thread(target=load, args=(out,)) for out in results]
    try:
        for worker in workers:
            worker.start()
        time.sleep(0.3)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if route == "promote":
            swap = httpx.post(
                f"{base}/admin/promote",
                json={"model_dir": str(candidate)},
                headers=headers,
                timeout=60,
            )
        else:  # an external promotion moved the pointer; the service is told to reload
            from shopaug.online.gate import promote_model

            promote_model(run_dir, candidate)
            swap = httpx.post(f"{base}/admin/reload", headers=headers, timeout=60)
        assert swap.status_code == 200, swap.text
        assert swap.json()["model_version"] == "v2"
        time.sleep(0.3)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        server.should_exit = True
        serving.join(timeout=30)

    for out in results:
        assert out, "the load thread sent nothing"
        failures = [item for item in out if item[0] != 200]
        assert failures == []
        versions = [version for _, version in out]
        assert versions[0] == "v1"
        assert versions[-1] == "v2"
        first_new = versions.index("v2")
        assert set(versions[first_new:]) == {"v2"}  # never back to the old model
    assert resolve_model_dir(run_dir / CURRENT).name == "v0001-retrained"
