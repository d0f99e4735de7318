"""``shopaug serve`` in a subprocess answers every route; ``shopaug online`` runs one round."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from shopaug.cli import app
from shopaug.data import kfold_queries, load_dataset, write_folds
from shopaug.feedback.store import FeedbackEvent, FeedbackStore
from shopaug.models.hashing_model import HashingProjection
from shopaug.models.model_dir import model_version, write_hashing_model
from shopaug.online.retrain import feedback_database_url

TOKEN = "test-admin-token"


def make_run_dir(root: Path) -> Path:
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        "data: demo\ntext_fields: [title, category]\nseed: 0\n", encoding="utf-8"
    )
    write_hashing_model(run / "model", 256)
    demo = load_dataset("demo")
    write_folds(
        kfold_queries([q.id for q in demo.queries], n_folds=3, seed=0), run / "folds.json", seed=0
    )
    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def service(tmp_path: Path):
    run = make_run_dir(tmp_path)
    port = free_port()
    env = {**os.environ, "SHOPAUG_ADMIN_TOKEN": TOKEN}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from shopaug.cli import app; app()",
            "serve",
            str(run),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"shopaug serve exited with {process.returncode}:\n{output}")
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("shopaug serve did not become ready within 120 s")
            time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=30) as client:
            yield run, client
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_serve_command_answers_every_route(service, tmp_path: Path) -> None:
    run, client = service
    version = model_version(run / "model")

    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz").json()
    assert ready["model_version"] == version

    found = client.get("/search", params={"q": "floor lamp", "k": 5})
    assert found.status_code == 200
    body = found.json()
    assert body["model_version"] == version and len(body["results"]) == 5
    assert all("lamp" in r["title"].lower() for r in body["results"])
    filtered = client.get(
        "/search", params={"q": "modern", "k": 5, "filter": "category:Lighting"}
    ).json()["results"]
    assert filtered and all("lamp" in r["title"].lower() for r in filtered)
    bad_filter = client.get("/search", params={"q": "sofa", "filter": "color:red"})
    assert bad_filter.status_code == 422 and "color" in bad_filter.text
    posted = client.post("/search", json={"query": "floor lamp", "k": 5})
    assert posted.json()["results"] == body["results"]

    top = body["results"][0]["product_id"]
    recommended = client.post("/recommend", json={"history": [top], "k": 4})
    assert recommended.status_code == 200
    items = [r["product_id"] for r in recommended.json()["items"]]
    assert len(items) == 4 and top not in items
    unknown = client.post("/recommend", json={"history": ["ghost"], "k": 4})
    assert unknown.status_code == 422 and "ghost" in unknown.text

    events = {
        "events": [
            {
                "event": "impression",
                "product_id": top,
                "position": 1,
                "query": "floor lamp",
                "session_id": "s1",
            },
            {
                "event": "click",
                "product_id": top,
                "position": 1,
                "query": "floor lamp",
                "session_id": "s1",
            },
        ]
    }
    ack = client.post("/feedback", json=events, headers={"Idempotency-Key": "k1"})
    assert ack.status_code == 200 and ack.json()["accepted"] == 2
    by_session = client.post("/recommend", json={"session_id": "s1", "k": 3})
    assert by_session.status_code == 200 and by_session.json()["history"] == [top]

    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "shopaug" in metrics.text

    assert client.post("/admin/reload").status_code == 401
    wrong = client.post("/admin/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    admin = {"Authorization": f"Bearer {TOKEN}"}
    reloaded = client.post("/admin/reload", headers=admin)
    assert reloaded.status_code == 200 and reloaded.json()["model_version"] == version

    weight = np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)
    HashingProjection(256, weight + np.eye(256, dtype=np.float32) * 4).save(tmp_path / "new")
    swapped = client.post(
        "/admin/promote", json={"model_dir": str(tmp_path / "new")}, headers=admin
    )
    assert swapped.status_code == 200, swapped.text
    new_version = model_version(tmp_path / "new")
    assert swapped.json()["model_version"] == new_version
    assert swapped.json()["previous_version"] == version
    assert client.get("/search", params={"q": "sofa"}).json()["model_version"] == new_version


def test_online_command_runs_one_round(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path)
    demo = load_dataset("demo")
    query = demo.queries[0]
    exact = [j.product_id for j in demo.judgments if j.query_id == query.id and j.label == "Exact"]
    store = FeedbackStore(feedback_database_url(run))
    common = {"query": query.text, "query_id": query.id, "session_id": "s"}
    store.record(
        [FeedbackEvent("impression", "p0000", position=1, **common)]
        + [FeedbackEvent("click", pid, position=2, **common) for pid in exact[:3]]
    )
    store.close()

    result = CliRunner().invoke(app, ["online", str(run), "--steps", "2", "--tolerance", "1.0"])

    assert result.exit_code == 0, result.output
    assert f"round 1: 4 events, {len(exact[:3])} clicks" in result.output
    assert "promoted: challenger is" in result.output
    assert (run / "current").exists() and (run / "model").is_dir()


def test_serve_command_names_a_run_dir_without_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", str(tmp_path)])
    assert result.exit_code == 2
    assert "config.yaml" in result.output
