"""Ads logged with their propensities: the real probabilities of the serving policy, stored in
the feedback store (old databases migrated), and usable by the off-policy estimators."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sklearn")
import sqlalchemy
from fastapi.testclient import TestClient

from ctr_fixtures import N_ITEMS
from shopaug.eval.logged_feedback import logged_rounds
from shopaug.eval.off_policy import importance_weights, ips, uniform_policy
from shopaug.feedback.store import (
    FeedbackEvent,
    FeedbackStore,
    events_frame,
    request_fingerprint,
)
from shopaug.serve import Settings, create_app
from shopaug.serve.routes.ads import explore_slate, get_ad_rng
from shopaug.serve.testing import load_fake_backend
from test_ctr_serve import USER, run_dir  # noqa: F401  (the fixture: a fake model + CTR ads)
from test_feedback_store import POSTGRES_URL, _postgres_reachable

EPSILON = 0.4


@pytest.fixture
def client(run_dir: Path) -> Iterator[TestClient]:  # noqa: F811
    app = create_app(Settings(run_dir=run_dir), load_fake_backend)
    rng = np.random.default_rng(7)  # one seeded generator for the whole test
    app.dependency_overrides[get_ad_rng] = lambda: rng
    with TestClient(app) as test_client:
        yield test_client


def rank(client: TestClient, **fields: object) -> dict:
    body = {"campaign": "men", "user_features": USER, "k": 3, **fields}
    answer = client.post("/ads/rank", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_explore_slate_propensities_by_hand() -> None:
    ranking = np.array([2, 0, 3, 1])
    rng = np.random.default_rng(0)
    shown, p = explore_slate(ranking, 2, 0.0, rng)
    assert shown.tolist() == [2, 0] and p.tolist() == [1.0, 1.0]
    for _ in range(20):
        shown, p = explore_slate(ranking, 3, 0.5, rng)
        expected = [0.5 * (s == g) + 0.5 / 4 for s, g in zip(shown, ranking[:3])]
        assert p.tolist() == pytest.approx(expected)
    shown, p = explore_slate(ranking, 9, 1.0, rng)  # all random, k above n: n slots
    assert sorted(shown.tolist()) == [0, 1, 2, 3] and p.tolist() == [0.25] * 4


def test_logged_propensities_are_the_policys_real_probabilities(client: TestClient) -> None:
    greedy = [ad["item_id"] for ad in rank(client, log_impressions=False)["ads"]]
    assert all(ad["propensity"] == 1.0 for ad in rank(client, log_impressions=False)["ads"])
    requests = 400
    shown: Counter[tuple[int, int]] = Counter()
    reported: dict[tuple[int, int], float] = {}
    for _ in range(requests):
        for ad in rank(client, log_impressions=False, epsilon=EPSILON)["ads"]:
            key = (ad["position"], ad["item_id"])
            shown[key] += 1
            reported.setdefault(key, ad["propensity"])
            assert ad["propensity"] == reported[key]  # a function of the context only
    for (position, item), propensity in reported.items():
        expected = (1 - EPSILON) * (greedy[position - 1] == item) + EPSILON / N_ITEMS
        assert propensity == pytest.approx(expected)
        frequency = shown[(position, item)] / requests
        spread = 4 * np.sqrt(expected * (1 - expected) / requests)
        assert abs(frequency - expected) <= spread, (position, item, frequency, expected)


def test_impressions_logged_through_the_route_give_ips_with_known_propensities(
    client: TestClient,
    run_dir: Path,  # noqa: F811
) -> None:
    clicked_item = 3  # users click item 3 wherever it is shown, nothing else
    served: dict[int, tuple[int, float]] = {}  # impression id -> (item, propensity)
    for request in range(60):
        session = f"s{request}"
        answer = rank(client, epsilon=0.5, session_id=session)
        for impression, ad in zip(answer["impression_ids"], answer["ads"], strict=True):
            served[impression] = (ad["item_id"], ad["propensity"])
            if ad["item_id"] == clicked_item:
                click = {
                    "campaign": "men",
                    "item_id": clicked_item,
                    "position": ad["position"],
                    "session_id": session,
                }
                assert client.post("/ads/click", json=click).status_code == 200
    store = FeedbackStore(f"sqlite:///{(run_dir / 'feedback.sqlite').resolve()}")
    try:
        logged = logged_rounds(events_frame(store.read_new(0, consumer="ope-test")))
    finally:
        store.close()
    rounds = logged.rounds
    assert rounds["id"].tolist() == sorted(served)  # every shown ad is one round
    assert logged.unmatched_clicks == 0 and logged.without_propensity == 0
    items = [int(product.rsplit(":", 1)[1]) for product in rounds["product_id"]]
    assert [served[i] for i in rounds["id"]] == list(zip(items, logged.propensities, strict=True))
    assert logged.rewards.tolist() == [float(item == clicked_item) for item in items]
    # the uniform policy's value: each slot shows item 3 with probability 1/4, so 0.25
    weights = importance_weights(
        action_dist=uniform_policy(rounds=len(items), n_items=N_ITEMS, n_slots=3),
        actions=np.array(items),
        slots=logged.slots,
        propensities=logged.propensities,
    )
    estimate = ips(rewards=logged.rewards, weights=weights)
    by_hand = np.mean([(1 / N_ITEMS) / p * (item == clicked_item) for item, p in served.values()])
    assert estimate == pytest.approx(by_hand)
    assert abs(estimate - 0.25) < 0.1  # unbiased; with propensity 1 logged it would be ~0.07


def test_old_rows_and_impressions_without_propensity_are_not_rounds() -> None:
    events = [
        FeedbackEvent("impression", "p1", query="sofa", position=1, session_id="s"),
        FeedbackEvent("impression", "ad:men:1", query_id="ads/men", position=1, propensity=0.5),
        FeedbackEvent("click", "p1", query="sofa", position=1, session_id="s"),
    ]
    frame = events_frame(events).assign(id=[1, 2, 3])
    logged = logged_rounds(frame)
    assert logged.rounds["product_id"].tolist() == ["ad:men:1"]
    assert logged.without_propensity == 1 and logged.unmatched_clicks == 1
    with pytest.raises(ValueError, match="propensity"):
        FeedbackEvent("impression", "ad:men:1", position=1, propensity=0.0)
    with pytest.raises(ValueError, match="lack the column"):
        logged_rounds(frame.drop(columns=["propensity"]))


def test_fingerprints_of_requests_without_propensity_are_unchanged() -> None:
    """A request stored before the column existed is fingerprinted as the old code did."""
    events = [FeedbackEvent("click", "p1", query="sofa", position=2)]
    old_fields = {
        "event": "click",
        "product_id": "p1",
        "query": "sofa",
        "query_id": None,
        "position": 2,
        "user_id": None,
        "session_id": None,
        "timestamp": None,
    }
    old = hashlib.sha256(json.dumps([old_fields], sort_keys=True).encode()).hexdigest()
    assert request_fingerprint(events) == old
    with_propensity = [FeedbackEvent("impression", "p1", position=1, propensity=0.5)]
    assert request_fingerprint(with_propensity) != request_fingerprint(
        [FeedbackEvent("impression", "p1", position=1)]
    )


def _old_database(url: str, prefix: str) -> None:
    """A store as the version before ``propensity`` left it: one event, one idempotency key."""
    store = FeedbackStore(url, table_prefix=prefix)
    store.record([FeedbackEvent("click", "p1", query="sofa", position=2)], idempotency_key="k1")
    with store.engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(f"ALTER TABLE {prefix}feedback_events DROP COLUMN propensity")
        )
    store.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.sqlite'}", ""
        return
    reason = _postgres_reachable()
    if reason is not None:
        pytest.skip(reason)
    prefix = f"m{uuid.uuid4().hex[:12]}_"
    yield POSTGRES_URL, prefix
    cleanup = FeedbackStore(POSTGRES_URL, table_prefix=prefix, create=False)
    cleanup.drop_tables()
    cleanup.close()


def test_an_existing_database_is_migrated_and_keeps_working(database: tuple[str, str]) -> None:
    url, prefix = database
    _old_database(url, prefix)
    engine = sqlalchemy.create_engine(url)
    columns = {
        c["name"] for c in sqlalchemy.inspect(engine).get_columns(f"{prefix}feedback_events")
    }
    engine.dispose()
    assert "propensity" not in columns
    store = FeedbackStore(url, table_prefix=prefix)  # opening adds the column
    try:
        old = store.read_new(0, consumer="m")
        assert [(e.product_id, e.position, e.propensity) for e in old] == [("p1", 2, None)]
        replay = store.record(
            [FeedbackEvent("click", "p1", query="sofa", position=2)], idempotency_key="k1"
        )
        assert replay.replayed  # a retry across the upgrade is still recognised
        store.record([FeedbackEvent("impression", "ad:men:2", position=1, propensity=0.125)])
        assert store.read_new(old[0].id, consumer="m")[0].propensity == 0.125
    finally:
        store.close()
    again = FeedbackStore(url, table_prefix=prefix)  # a second open finds nothing to add
    assert again.count() == 2
    again.close()
