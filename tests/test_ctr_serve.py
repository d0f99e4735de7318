"""``/ads/rank`` and ``/ads/click``: ranked by calibrated CTR, impressions and clicks stored
through the write queue, 503/507 with ``Retry-After`` when the store is down or full."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from ctr_fixtures import write_bandit_data

pytest.importorskip("fastapi")
pytest.importorskip("sklearn")

from fastapi.testclient import TestClient

from shopaug.data.open_bandit import (
    candidate_table,
    impression_table,
    load_open_bandit,
)
from shopaug.feedback.store import FeedbackStore
from shopaug.models.ctr import CtrModel, CtrSettings
from shopaug.serve import Settings, create_app
from shopaug.serve.testing import SMALL_CATALOG, load_fake_backend, write_fake_model
from shopaug.serve.write_queue import WriteQueueFull

USER = {"user_feature_0": "u0", "user_feature_1": "v", "user_feature_2": "w", "user_feature_3": "x"}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    write_fake_model(tmp_path / "run" / "model", "v1", SMALL_CATALOG)
    log = load_open_bandit("random", "men", root=write_bandit_data(tmp_path / "data"))
    model = CtrModel.fit(impression_table(log), CtrSettings(model="logistic"))
    ads = model.save(tmp_path / "run" / "ads")
    items = candidate_table(log.head(1), position=1)
    keep = [
        "item_id",
        "campaign",
        "item",
        "item_feature_0",
        *(f"item_feature_{i}" for i in (1, 2, 3)),
    ]
    (ads / "items.json").write_text(json.dumps({"men": items[keep].to_dict("records")}))
    return tmp_path / "run"


@pytest.fixture
def client(run_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(run_dir=run_dir), load_fake_backend)) as test_client:
        yield test_client


def test_rank_returns_calibrated_ctrs_in_order_and_logs_impressions(
    client: TestClient, run_dir: Path
) -> None:
    body = {"campaign": "men", "user_features": USER, "k": 3, "session_id": "s1"}
    answer = client.post("/ads/rank", json=body)
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    ctrs = [ad["ctr"] for ad in payload["ads"]]
    assert ctrs == sorted(ctrs, reverse=True) and all(0 < c < 1 for c in ctrs)
    assert [ad["position"] for ad in payload["ads"]] == [1, 2, 3]
    assert payload["ads"][0]["item_id"] == 3  # the item the fixture's users click most
    model = CtrModel.load(run_dir / "ads")
    assert ctrs[0] == pytest.approx(
        float(client.app.state.ad_ranker.score("men", USER, {}, [3])[0])
    )
    assert model.settings.model == "logistic"
    click = client.post(
        "/ads/click", json={"campaign": "men", "item_id": 3, "position": 1, "session_id": "s1"}
    )
    assert click.status_code == 200 and click.json()["accepted"] == 1
    store = FeedbackStore(f"sqlite:///{(run_dir / 'feedback.sqlite').resolve()}")
    events = store.read_new(consumer="test")
    store.close()
    assert [e.event for e in events] == ["impression"] * 3 + ["click"]
    assert events[0].product_id == "ad:men:3" and events[0].query_id == "ads/men"
    assert len(payload["impression_ids"]) == 3


def test_candidates_affinity_and_bad_input(client: TestClient) -> None:
    body = {"campaign": "men", "user_features": USER, "candidates": [0, 1], "k": 5}
    ranked = client.post("/ads/rank", json={**body, "log_impressions": False}).json()
    assert sorted(ad["item_id"] for ad in ranked["ads"]) == [0, 1]
    assert ranked["impression_ids"] == []
    boosted = client.post(
        "/ads/rank", json={**body, "affinity": {"0": 50.0}, "log_impressions": False}
    ).json()
    assert np.isfinite([ad["ctr"] for ad in boosted["ads"]]).all()
    for bad, field in (
        ({**body, "campaign": "kids"}, "campaign"),
        ({**body, "candidates": [0, 9]}, "candidates"),
        ({**body, "user_features": {"user_feature_0": "u0"}}, "user_features"),
    ):
        answer = client.post("/ads/rank", json=bad)
        assert answer.status_code == 422, answer.text
        assert field in answer.text


def test_no_ad_model_is_404(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOPAUG_ADS_MODEL_DIR", raising=False)
    write_fake_model(tmp_path / "model", "v1", SMALL_CATALOG)
    with TestClient(create_app(Settings(run_dir=tmp_path), load_fake_backend)) as client:
        answer = client.post("/ads/rank", json={"campaign": "men", "user_features": USER})
    assert answer.status_code == 404 and "ads are disabled" in answer.text


def _rank_and_click(client: TestClient) -> tuple:
    rank = client.post(
        "/ads/rank", json={"campaign": "men", "user_features": USER, "k": 2, "session_id": "s"}
    )
    click = client.post(
        "/ads/click", json={"campaign": "men", "item_id": 3, "position": 1, "session_id": "s"}
    )
    return rank, click


def test_store_down_is_503_with_retry_after_and_nothing_is_written(
    run_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    url = f"sqlite:///{folder / 'feedback.sqlite'}"
    settings = Settings(run_dir=run_dir, database_url=url, retry_after_s=2)
    with TestClient(create_app(settings, load_fake_backend)) as client:
        assert all(answer.status_code == 200 for answer in _rank_and_click(client))
        os.rename(folder, tmp_path / "db-away")  # the database is gone (an unmounted volume)
        try:
            for answer in _rank_and_click(client):
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == "2"
                assert "nothing was written" in answer.text
        finally:
            os.rename(tmp_path / "db-away", folder)
        assert all(answer.status_code == 200 for answer in _rank_and_click(client))
    store = FeedbackStore(url, create=False)
    events = store.read_new(consumer="test")
    store.close()
    # two rounds acknowledged (2 impressions and a click each); the refused one left nothing
    assert [e.event for e in events] == (["impression"] * 2 + ["click"]) * 2


def test_store_full_is_507_and_a_full_write_queue_is_503(run_dir: Path) -> None:
    from fault_injection import SqliteFault

    with TestClient(create_app(Settings(run_dir=run_dir), load_fake_backend)) as client:
        assert all(answer.status_code == 200 for answer in _rank_and_click(client))
        store = client.app.state.runtime.store
        fault = SqliteFault(store, "PRAGMA max_page_count=1", "PRAGMA max_page_count=4294967294")
        with fault.injected():  # the file may not grow: writes succeed until its pages fill
            for _ in range(500):
                rank, click = _rank_and_click(client)
                if rank.status_code != 200 and click.status_code != 200:
                    break
            for answer in (rank, click):
                assert answer.status_code == 507, answer.text
                assert answer.headers["Retry-After"] == "1"
        assert all(answer.status_code == 200 for answer in _rank_and_click(client))
    queue = Settings(run_dir=run_dir, feedback_writes_in_flight=1, feedback_writes_waiting=0)
    app = create_app(queue, load_fake_backend)
    with TestClient(app) as client:

        @asynccontextmanager
        async def full() -> AsyncIterator[None]:
            raise WriteQueueFull("the feedback write queue is full; nothing was written")
            yield

        app.state.runtime.writes.slot = full
        for answer in _rank_and_click(client):
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"


def test_ads_model_dir_comes_from_settings(run_dir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    os.rename(run_dir / "ads", moved)
    settings = Settings(run_dir=run_dir, ads_model_dir=moved)
    with TestClient(create_app(settings, load_fake_backend)) as client:
        assert _rank_and_click(client)[0].status_code == 200
    with TestClient(create_app(Settings(run_dir=run_dir), load_fake_backend)) as client:
        assert _rank_and_click(client)[0].status_code == 404
