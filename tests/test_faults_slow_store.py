"""A slow store: writes are bounded (in flight, waiting, wait time), the rest is refused at once.

The store is held by a gate the test opens, so what is in flight and what waits is known
exactly; no assertion depends on timing.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fault_injection import SenderTally, record_figures, wait_until
from shopaug.feedback.store import Acknowledgement, FeedbackEvent, FeedbackStore
from shopaug.serve import Settings, create_app
from shopaug.serve.deps import get_store
from shopaug.serve.testing import SMALL_CATALOG, load_fake_backend, write_fake_model
from shopaug.serve.write_queue import WriteQueue


class GatedStore:
    """The real store behind a gate: ``record`` waits until the test opens it."""

    def __init__(self, store: FeedbackStore) -> None:
        self.store = store
        self.gate = threading.Event()
        self.entered = 0
        self._lock = threading.Lock()

    def record(
        self, events: Sequence[FeedbackEvent], idempotency_key: str | None = None
    ) -> Acknowledgement:
        with self._lock:
            self.entered += 1
        if not self.gate.wait(timeout=60):
            raise RuntimeError("the test never opened the gate")
        return self.store.record(events, idempotency_key)


def gated_app(tmp_path: Path, **settings: object) -> tuple[FastAPI, GatedStore]:
    write_fake_model(tmp_path / "model", "v1", SMALL_CATALOG)
    app = create_app(Settings(run_dir=tmp_path, **settings), load_fake_backend)
    gated = GatedStore(FeedbackStore(f"sqlite:///{tmp_path / 'gated.sqlite'}"))
    app.dependency_overrides[get_store] = lambda: gated
    return app, gated


def post_in_thread(client: TestClient, key: str, out: dict[str, int]) -> threading.Thread:
    def send() -> None:
        body = {"event": "click", "product_id": "p1"}
        out[key] = client.post("/feedback", json=body, headers={"Idempotency-Key": key}).status_code

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_full_queue_is_refused_at_once_and_bounded(tmp_path: Path) -> None:
    app, gated = gated_app(
        tmp_path,
        feedback_writes_in_flight=1,
        feedback_writes_waiting=2,
        feedback_wait_timeout_s=60,
    )
    statuses: dict[str, int] = {}
    with TestClient(app) as client:
        queue: WriteQueue = app.state.runtime.writes
        first = post_in_thread(client, "a", statuses)
        wait_until(lambda: gated.entered == 1, "the first write in the store")
        waiting = [post_in_thread(client, key, statuses) for key in ("b", "c")]
        wait_until(lambda: queue.waiting == 2, "two writes waiting for a slot")
        flood = [
            client.post("/feedback", json={"event": "click", "product_id": "p2"}) for _ in range(20)
        ]
        search = client.get("/search", params={"q": "oak", "k": 1})
        gated.gate.set()
        for thread in [first, *waiting]:
            thread.join(timeout=60)
        stored = gated.store.count()
    assert statuses == {"a": 200, "b": 200, "c": 200}
    assert {response.status_code for response in flood} == {503}
    assert all(response.headers["Retry-After"] == "1" for response in flood)
    assert "queue is full" in flood[0].json()["detail"]
    assert search.status_code == 200  # searches do not wait behind writes
    assert stored == 3  # the refused requests wrote nothing
    assert gated.entered == 3
    assert (queue.stats.peak_in_flight, queue.stats.peak_waiting) == (1, 2)
    assert queue.stats.rejected_full == 20
    answers = Counter([*statuses.values(), *(response.status_code for response in flood)])
    tally = SenderTally(acknowledged={key: [] for key in statuses}, statuses=answers)
    record_figures("slow store: write queue full (1 in flight, 2 waiting)", tally, 3 - stored)


def test_wait_for_a_slot_times_out_with_503(tmp_path: Path) -> None:
    app, gated = gated_app(
        tmp_path,
        feedback_writes_in_flight=1,
        feedback_writes_waiting=4,
        feedback_wait_timeout_s=0.2,
        retry_after_s=7,
    )
    statuses: dict[str, int] = {}
    with TestClient(app) as client:
        first = post_in_thread(client, "a", statuses)
        wait_until(lambda: gated.entered == 1, "the first write in the store")
        late = client.post("/feedback", json={"event": "click", "product_id": "p3"})
        gated.gate.set()
        first.join(timeout=60)
        stored = gated.store.count()
        queue: WriteQueue = app.state.runtime.writes
    assert statuses == {"a": 200}
    assert late.status_code == 503
    assert late.headers["Retry-After"] == "7"
    assert "within 0.2 s" in late.json()["detail"]
    assert stored == 1
    assert queue.stats.timed_out == 1


def test_write_queue_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_in_flight=0"):
        WriteQueue(max_in_flight=0, max_waiting=1, wait_timeout_s=1)
    with pytest.raises(ValueError, match="feedback_writes_waiting"):
        Settings(run_dir=Path("run"), feedback_writes_waiting=-1)
