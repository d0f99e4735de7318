"""``/admin/reload`` and ``/admin/promote`` of broken or half-written model directories while
searches flow: the old model keeps serving, the error names the file, no search fails.

The real catalog backend serves the demo catalog with a hashing model (no download).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient
from safetensors.numpy import save_file

from shopaug.models.model_dir import MODEL_DESCRIPTOR, PROJECTION_FILE, write_hashing_model
from shopaug.models.registry import CURRENT, activate_model, resolve_model_dir
from shopaug.serve import Settings, create_app
from shopaug.serve.catalog_backend import make_catalog_loader

TOKEN = "admin-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
DIM = 32


def hashing_model(directory: Path, scale: float) -> Path:
    """A hashing model whose map is ``scale * I`` (a different scale: a different version)."""
    write_hashing_model(directory, DIM)
    weight = (scale * np.eye(DIM)).astype(np.float32)
    save_file({"weight": weight}, str(directory / PROJECTION_FILE))
    return directory


def truncate(path: Path) -> None:
    """Cut a file in half, as a copy interrupted mid-way leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        "data: demo\ntext_fields: [title, category]\nseed: 0\n", encoding="utf-8"
    )
    hashing_model(run / "model", 1.0)
    settings = Settings(run_dir=run, admin_token=TOKEN)
    with TestClient(create_app(settings, make_catalog_loader(run))) as client:
        yield client, run


class SearchLoad:
    """Two threads searching until stopped; every answer kept."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def __enter__(self) -> SearchLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            response = self.client.get("/search", params={"q": "brass floor lamp", "k": 3})
            version = response.json().get("model_version") if response.is_success else None
            with self._lock:
                self.answers.append((response.status_code, version))


def test_broken_promotions_keep_the_old_model(served: tuple[TestClient, Path]) -> None:
    client, run = served
    tmp = run.parent
    old_version = client.get("/model").json()["model_version"]
    half_weights = hashing_model(tmp / "half-weights", 2.0)
    truncate(half_weights / PROJECTION_FILE)
    half_descriptor = hashing_model(tmp / "half-descriptor", 3.0)
    truncate(half_descriptor / MODEL_DESCRIPTOR)
    empty = tmp / "empty"
    empty.mkdir()
    broken = {
        half_weights: str(half_weights / PROJECTION_FILE),
        half_descriptor: str(half_descriptor / MODEL_DESCRIPTOR),
        empty: str(empty),
        tmp / "missing": str(tmp / "missing"),
    }
    with SearchLoad(client) as load:
        answers = {
            directory: client.post(
                "/admin/promote", json={"model_dir": str(directory)}, headers=HEADERS
            )
            for directory in broken
        }
        good = client.post(
            "/admin/promote",
            json={"model_dir": str(hashing_model(tmp / "good", 4.0))},
            headers=HEADERS,
        )
    for directory, response in answers.items():
        assert response.status_code == 422, response.text
        assert broken[directory] in response.json()["detail"]
        assert f"still serving {old_version}" in response.json()["detail"], response.text
    assert good.status_code == 200, good.text
    new_version = good.json()["model_version"]
    assert new_version != old_version
    statuses = {status for status, _ in load.answers}
    assert statuses == {200}
    versions = [version for _, version in load.answers]
    assert versions[0] == old_version
    # Nothing broken was copied in or pointed at: one promotion, the good one.
    assert [path.name for path in sorted((run / "models").iterdir())] == ["v0001-good"]
    assert resolve_model_dir(run / CURRENT).name == "v0001-good"


def test_reload_of_a_broken_pointer_keeps_the_old_model(served: tuple[TestClient, Path]) -> None:
    client, run = served
    old_version = client.get("/model").json()["model_version"]
    half = hashing_model(run / "models" / "v0001-half", 5.0)
    truncate(half / PROJECTION_FILE)
    with SearchLoad(client) as load:
        activate_model(run / CURRENT, half)  # an external promotion of a half-written model
        broken_model = client.post("/admin/reload", headers=HEADERS)
        (run / CURRENT).unlink()
        (run / CURRENT).write_text("\n", encoding="utf-8")  # an empty pointer file
        empty_pointer = client.post("/admin/reload", headers=HEADERS)
        (run / CURRENT).unlink()
        activate_model(run / CURRENT, hashing_model(run / "models" / "v0002-ok", 6.0))
        fixed = client.post("/admin/reload", headers=HEADERS)
    assert broken_model.status_code == 422
    assert str(half / PROJECTION_FILE) in broken_model.json()["detail"]
    assert empty_pointer.status_code == 422
    assert str(run / CURRENT) in empty_pointer.json()["detail"]
    assert f"still serving {old_version}" in empty_pointer.json()["detail"]
    assert fixed.status_code == 200
    assert {status for status, _ in load.answers} == {200}
    assert load.answers[0][1] == old_version
    assert json.loads(client.get("/model").text)["model_version"] == fixed.json()["model_version"]
