"""``shopaug serve`` on a recommendation run: ``/recommend`` by customer id, by an ad-hoc history
and by session, through the run's trained two-tower model, end to end with the TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from shopaug.data.retail import load_retail, time_split
from shopaug.experiment.recommend import parse_config, run
from shopaug.models.two_tower import TwoTowerRecommender
from shopaug.serve import Settings, create_app
from shopaug.serve.catalog_backend import make_catalog_loader
from shopaug.serve.testing import SMALL_CATALOG, load_fake_backend, write_fake_model
from test_recommend_task import CONFIG, retail_file

NEW_ITEM = "20080"  # "RED LAMP 80": first sold after the cut, no purchase history
LOOKALIKES = ["20020", "20050"]  # "RED LAMP 20", "RED LAMP 50": sold before the cut


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retail-serve")
    retail_file(root / "data")
    config = parse_config(
        {
            **CONFIG,
            "data_dir": str(root / "data"),
            "baselines": ["popularity", "repeat"],
            "repeat_then": False,  # the served model's own ranking (repeat-first: its own test)
            "rows": [
                {"name": "zero-shot", "sampler": "none"},
                {"name": "uniform", "sampler": "uniform", "negatives": 4},
            ],
        },
        "test",
    )
    run(config, root / "run", "test")
    return root / "run"


@pytest.fixture(scope="module")
def client(run_dir: Path) -> Iterator[TestClient]:
    app = create_app(Settings(run_dir=run_dir), make_catalog_loader(run_dir))
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def model(run_dir: Path) -> TwoTowerRecommender:
    return TwoTowerRecommender.load(run_dir / "model")


def assert_model_top_k(
    items: list[dict[str, object]], model: TwoTowerRecommender, history: list[str], k: int
) -> None:
    """``items`` are the model's own top ``k`` for ``history`` (what the run evaluated): each
    score is the model's score of that item, and no item left out scores higher (ties at the
    cut may go either way)."""
    scores = model.score_histories([[model.rows[item] for item in history]])[0]
    assert len(items) == k
    served = [str(item["product_id"]) for item in items]
    for item in items:
        assert item["score"] == pytest.approx(
            float(scores[model.rows[str(item["product_id"])]]), abs=1e-5
        )
    assert [item["score"] for item in items] == sorted(
        (item["score"] for item in items), reverse=True
    )
    left_out = np.delete(scores, [model.rows[item] for item in served])
    assert float(left_out.max()) <= min(float(item["score"]) for item in items) + 1e-5


def histories_before_cut(run_dir: Path) -> dict[str, list[str]]:
    data = load_retail(Path(str(run_dir.parent / "data")), title_cut=CONFIG["cut"])
    split = time_split(data.lines, CONFIG["cut"])
    return split.histories()


def test_recommend_by_customer_ranks_the_stored_history(
    client: TestClient, run_dir: Path, model: TwoTowerRecommender
) -> None:
    histories = histories_before_cut(run_dir)
    customer = "1003"
    expected_history = histories[customer][-model.max_history :]
    answer = client.post("/recommend", json={"customer_id": customer, "k": 8})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["customer_id"] == customer
    assert body["history"] == expected_history
    assert body["model_version"].startswith("two-tower-recommender@")
    ranked = [item["product_id"] for item in body["items"]]
    assert_model_top_k(body["items"], model, expected_history, 8)
    # the same history sent ad hoc gets the same answer
    adhoc = client.post("/recommend", json={"history": expected_history, "k": 8}).json()
    assert [item["product_id"] for item in adhoc["items"]] == ranked
    assert adhoc["customer_id"] is None


def test_new_items_stay_reachable_through_their_text(
    client: TestClient, run_dir: Path, model: TwoTowerRecommender
) -> None:
    histories = histories_before_cut(run_dir)
    assert all(NEW_ITEM not in items for items in histories.values())  # never bought before
    answer = client.post("/recommend", json={"history": LOOKALIKES, "k": 5})
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    ranked = [item["product_id"] for item in items]
    assert NEW_ITEM in ranked, ranked
    assert_model_top_k(items, model, LOOKALIKES, 5)
    assert {item["title"] for item in items if item["product_id"] == NEW_ITEM} == {"RED LAMP 80"}


def test_unknown_customer_and_bad_input(client: TestClient) -> None:
    unknown = client.post("/recommend", json={"customer_id": "99999"})
    assert unknown.status_code == 404
    assert "99999" in unknown.json()["detail"] and "unknown" in unknown.json()["detail"]
    for body, field in (
        ({"customer_id": "1003", "history": ["20020"]}, "exactly one"),
        ({}, "exactly one"),
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": 1003}, "customer_id"),
        ({"customer_id": "10\u000003"}, "customer_id"),
        ({"history": ["20020", "nope"]}, "nope"),
        ({"customer_id": "1003", "k": 0}, "k"),
    ):
        answer = client.post("/recommend", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert field in answer.text, (body, answer.text)
    search = client.get("/search", params={"q": "red lamp"})
    assert search.status_code == 404 and "next-basket recommender" in search.text


def test_session_history_is_ranked_by_the_recommender(
    client: TestClient, model: TwoTowerRecommender
) -> None:
    events = [
        {"event": "click", "product_id": item, "session_id": "retail-s1"} for item in LOOKALIKES
    ]
    assert client.post("/feedback", json={"events": events}).status_code == 200
    answer = client.post("/recommend", json={"session_id": "retail-s1", "k": 5})
    assert answer.status_code == 200, answer.text
    assert answer.json()["history"] == LOOKALIKES
    assert_model_top_k(answer.json()["items"], model, LOOKALIKES, 5)


def test_openapi_documents_customer_id_and_ad_propensities(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    customer = schemas["RecommendRequest"]["properties"]["customer_id"]
    assert any(branch.get("maxLength") == 200 for branch in customer["anyOf"])
    assert "customer_id" in schemas["RecommendResponse"]["properties"]
    assert schemas["AdRankRequest"]["properties"]["epsilon"]["maximum"] == 1.0
    assert "propensity" in schemas["RankedAd"]["required"]


def test_a_search_model_knows_no_customers(tmp_path: Path) -> None:
    write_fake_model(tmp_path / "model", "v1", SMALL_CATALOG)
    with TestClient(create_app(Settings(run_dir=tmp_path), load_fake_backend)) as client:
        answer = client.post("/recommend", json={"customer_id": "c1"})
        assert answer.status_code == 404 and "knows no customers" in answer.text
        by_history = client.post("/recommend", json={"history": ["p1"], "k": 2})
        assert by_history.status_code == 200 and by_history.json()["customer_id"] is None


def test_repeat_first_ranks_own_items_by_count_then_recency(
    run_dir: Path, model: TwoTowerRecommender, tmp_path: Path
) -> None:
    from shopaug.models.recommenders import repeat_order
    from shopaug.models.two_tower import load_serving_data, save_serving_data
    from shopaug.serve.recommender_backend import RecommenderBackend

    items = list(model.item_ids)
    a, b, c = items[3], items[7], items[11]
    history = [b, a, c, a, b, c, c]  # c three times, then a and b twice (b bought last)
    assert repeat_order(history) == [c, b, a]
    backend = RecommenderBackend(
        "v", model, titles={}, histories={"u": history}, cut="2011-10-01", repeat_first=True
    )
    hits = backend.recommend(backend.customer_history("u"), 6)
    assert [hit.product_id for hit in hits[:3]] == [c, b, a]
    scores = model.score_histories([[model.rows[item] for item in history]])[0]
    for hit in hits:  # every score is still the model's own
        assert hit.score == pytest.approx(float(scores[model.rows[hit.product_id]]), abs=1e-5)
    # the rest is the model's ranking without the own items
    plain = RecommenderBackend("v", model, titles={}, histories={}, cut="2011-10-01")
    rest = [
        hit.product_id for hit in plain.recommend(history, 10) if hit.product_id not in {a, b, c}
    ]
    assert [hit.product_id for hit in hits[3:]] == rest[:3]
    assert "own past items first" in backend.ranking

    # the flag and the whole history (the counts need it) survive the model directory
    long_history = [a] * (model.max_history + 5) + [b]
    save_serving_data(
        tmp_path, model, titles={}, histories={"u": long_history}, cut="x", repeat_first=True
    )
    data = load_serving_data(tmp_path)
    assert data.repeat_first and data.histories["u"] == tuple(long_history)
    save_serving_data(tmp_path, model, titles={}, histories={"u": long_history}, cut="x")
    data = load_serving_data(tmp_path)
    assert not data.repeat_first and len(data.histories["u"]) == model.max_history


def test_the_run_serves_repeat_first_when_it_chose_it(run_dir: Path) -> None:
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    customers = json.loads((run_dir / "model" / "customers.json").read_text())
    # this run has repeat_then off: no combined system, the plain model is served
    assert not any(e["kind"].startswith("repeat +") for e in metrics["systems"])
    assert metrics["served"]["repeat_first"] is False
    assert customers["repeat_first"] is False


def served(answer: dict[str, object]) -> list[tuple[str, float]]:
    items = answer["items"]
    assert isinstance(items, list)
    return [(str(item["product_id"]), float(item["score"])) for item in items]


def test_a_new_customers_purchase_is_ranked_at_once_and_after_a_restart(
    run_dir: Path, model: TwoTowerRecommender, tmp_path: Path
) -> None:
    from shopaug.serve.recommender_backend import load_recommender_backend

    settings = Settings(run_dir=run_dir, database_url=f"sqlite:///{tmp_path / 'f.sqlite'}")
    customer = "7001"  # bought nothing before the cut: the model holds no history for them
    items = list(model.item_ids)
    bought = [items[5], items[9], items[5]]
    events = [
        {"event": "purchase", "product_id": items[5], "user_id": customer},
        {"event": "impression", "product_id": items[1], "user_id": customer},  # not bought
        {"event": "click", "product_id": items[2], "user_id": customer},  # not bought
        {"event": "add_to_cart", "product_id": items[9], "user_id": customer},
        {"event": "purchase", "product_id": items[5], "user_id": customer},
        {"event": "purchase", "product_id": items[7], "user_id": "7002"},  # someone else
    ]
    with TestClient(create_app(settings, make_catalog_loader(run_dir))) as client:
        before = client.post("/recommend", json={"customer_id": customer})
        assert before.status_code == 404
        assert "no purchase or add_to_cart event" in before.json()["detail"]
        assert client.post("/feedback", json={"events": events}).status_code == 200
        answer = client.post("/recommend", json={"customer_id": customer, "k": 6})
        assert answer.status_code == 200, answer.text
        assert answer.json()["history"] == bought
        first = served(answer.json())
    # what the backend computes from the history (frozen: none) + the logged events
    backend = load_recommender_backend(run_dir / "model")
    expected = backend.recommend(bought, 6)
    assert [item for item, _ in first] == [hit.product_id for hit in expected]
    assert [score for _, score in first] == pytest.approx([hit.score for hit in expected])
    assert_model_top_k(answer.json()["items"], model, bought, 6)
    # a restart: a new app over the same store answers the same
    with TestClient(create_app(settings, make_catalog_loader(run_dir))) as client:
        again = client.post("/recommend", json={"customer_id": customer, "k": 6})
        assert again.status_code == 200, again.text
        assert served(again.json()) == first


def test_a_known_customers_history_grows_by_each_logged_purchase(
    run_dir: Path, model: TwoTowerRecommender, tmp_path: Path
) -> None:
    from shopaug.feedback.store import FeedbackEvent, FeedbackStore
    from shopaug.serve.recommender_backend import RecommenderBackend

    customer = "1003"
    frozen = histories_before_cut(run_dir)[customer]
    items = list(model.item_ids)
    new = next(item for item in items if item not in frozen)
    # repeat-first, so one logged purchase visibly moves the ranking: a new item bought three
    # times after the cut outranks every item bought fewer times before it
    backend = RecommenderBackend(
        "v-test", model, titles={}, histories={customer: frozen}, cut="x", repeat_first=True
    )
    url = f"sqlite:///{tmp_path / 'f.sqlite'}"
    settings = Settings(run_dir=run_dir, database_url=url)
    with TestClient(create_app(settings, lambda _path: backend)) as client:
        start = client.post("/recommend", json={"customer_id": customer, "k": 5}).json()
        assert start["history"] == frozen
        assert new not in [item for item, _ in served(start)]
        for _ in range(max(frozen.count(item) for item in frozen) + 1):
            logged = client.post(
                "/feedback",
                json={"event": "purchase", "product_id": new, "user_id": customer},
            )
            assert logged.status_code == 200, logged.text
        # an item the model in service does not know (logged under another model) is left out
        store = FeedbackStore(url)
        store.record([FeedbackEvent("purchase", "not-in-this-model", user_id=customer)])
        store.close()
        answer = client.post("/recommend", json={"customer_id": customer, "k": 5})
        assert answer.status_code == 200, answer.text
    history = [*frozen, *[new] * (max(frozen.count(item) for item in frozen) + 1)]
    assert answer.json()["history"] == history
    assert served(answer.json())[0][0] == new  # bought most often now
    expected = backend.recommend(history, 5)
    assert served(answer.json()) == [(hit.product_id, pytest.approx(hit.score)) for hit in expected]
