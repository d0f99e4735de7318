"""Every route of the service with the fake backend, through FastAPI's TestClient."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from shopaug.feedback.store import FeedbackStore
from shopaug.models.registry import CURRENT, resolve_model_dir
from shopaug.serve import Settings, create_app
from shopaug.serve.testing import SMALL_CATALOG, load_fake_backend, write_fake_model

TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    write_fake_model(tmp_path / "model", "v1", SMALL_CATALOG)
    return tmp_path


def make_client(run_dir: Path, **overrides: object) -> TestClient:
    settings = Settings(run_dir=run_dir, **overrides)  # type: ignore[arg-type]
    return TestClient(create_app(settings, load_fake_backend))


@pytest.fixture
def client(run_dir: Path) -> Iterator[TestClient]:
    with make_client(run_dir, admin_token=TOKEN, max_batch_events=5, max_body_bytes=4096) as c:
        yield c


def ids(results: list[dict[str, object]]) -> list[object]:
    return [r["product_id"] for r in results]


# -- search ----------------------------------------------------------------------------------


def test_search_get_ranks_by_known_overlap(client: TestClient) -> None:
    response = client.get("/search", params={"q": "blue velvet sofa", "k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "v1"
    assert ids(body["results"]) == ["p1", "p2", "p5"]  # 3 words, then 1 (sofa), then 1 (blue)
    assert [r["score"] for r in body["results"]] == [3.0, 1.0, 1.0]
    assert [r["rank"] for r in body["results"]] == [1, 2, 3]


def test_search_post_with_filters(client: TestClient) -> None:
    response = client.post(
        "/search", json={"query": "blue", "k": 5, "filters": {"category": "lamps"}}
    )
    assert response.status_code == 200
    assert ids(response.json()["results"]) == ["p5", "p6"]


def test_search_get_filter_syntax(client: TestClient) -> None:
    response = client.get("/search", params={"q": "oak", "filter": "category:tables"})
    assert ids(response.json()["results"]) == ["p3", "p4"]
    bad = client.get("/search", params={"q": "oak", "filter": "no-colon"})
    assert bad.status_code == 422
    assert "field:value" in bad.text


def test_search_unsupported_filter_is_422_naming_it(client: TestClient) -> None:
    response = client.post("/search", json={"query": "oak", "filters": {"colour": "red"}})
    assert response.status_code == 422
    assert "colour" in response.text


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"q": "x" * 513}, "max_query_chars"),
        ({"q": "sofa", "k": 0}, "max_k"),
        ({"q": "sofa", "k": 101}, "max_k"),
        ({"q": "   "}, "empty"),
        ({"q": "sofa", "k": "many"}, "integer"),
    ],
)
def test_search_limits_are_422(client: TestClient, params: dict[str, object], needle: str) -> None:
    response = client.get("/search", params=params)
    assert response.status_code == 422
    assert needle in response.text


def test_body_over_limit_is_413(client: TestClient) -> None:
    big = {"query": "sofa", "filters": {"category": "x" * 5000}}
    response = client.post("/search", json=big)
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["detail"]


def test_chunked_body_over_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    response = client.post(
        "/search", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


# -- recommend -------------------------------------------------------------------------------


def test_recommend_reaches_items_without_interactions(client: TestClient) -> None:
    response = client.post("/recommend", json={"history": ["p3"], "k": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["history"] == ["p3"]
    # p4 shares "oak" and "table"; nobody ever interacted with it.
    assert ids(body["items"])[0] == "p4"
    assert "p3" not in ids(body["items"])


def test_recommend_unknown_history_is_422_naming_ids(client: TestClient) -> None:
    response = client.post("/recommend", json={"history": ["p1", "nope"]})
    assert response.status_code == 422
    assert "'nope'" in response.text


@pytest.mark.parametrize(
    "body", [{"k": 3}, {"history": ["p1"], "session_id": "s"}, {"history": []}]
)
def test_recommend_needs_exactly_one_source(client: TestClient, body: dict[str, object]) -> None:
    assert client.post("/recommend", json=body).status_code == 422


def test_recommend_from_logged_session(client: TestClient) -> None:
    assert client.post("/recommend", json={"session_id": "fresh"}).status_code == 404
    event = {"event": "click", "product_id": "p6", "session_id": "s1", "query": "lamp"}
    assert client.post("/feedback", json=event).status_code == 200
    response = client.post("/recommend", json={"session_id": "s1", "k": 1})
    assert response.status_code == 200
    assert response.json()["history"] == ["p6"]
    assert ids(response.json()["items"]) == ["p5"]  # the other lamp


# -- feedback --------------------------------------------------------------------------------


def test_feedback_single_and_batch_are_stored(client: TestClient, run_dir: Path) -> None:
    one = client.post(
        "/feedback",
        json={"event": "impression", "product_id": "p1", "query": "sofa", "position": 1},
    )
    assert one.status_code == 200
    assert one.json()["accepted"] == 1
    batch = client.post(
        "/feedback",
        json={
            "events": [
                {"event": "click", "product_id": "p1", "position": 1, "user_id": "u"},
                {"event": "purchase", "product_id": "p1", "timestamp": 1700000000.5},
            ]
        },
    )
    assert batch.status_code == 200
    assert batch.json()["accepted"] == 2
    store = FeedbackStore(f"sqlite:///{run_dir / 'feedback.sqlite'}")
    stored = store.read_new(0)
    store.close()
    assert [(e.event, e.product_id, e.position) for e in stored] == [
        ("impression", "p1", 1),
        ("click", "p1", 1),
        ("purchase", "p1", None),
    ]
    assert stored[2].timestamp == 1700000000.5
    assert [e.id for e in stored] == [*one.json()["event_ids"], *batch.json()["event_ids"]]


def test_feedback_idempotency_key_is_counted_once(client: TestClient) -> None:
    body = {"events": [{"event": "click", "product_id": "p2"}]}
    first = client.post("/feedback", json=body, headers={"Idempotency-Key": "abc"})
    again = client.post("/feedback", json=body, headers={"Idempotency-Key": "abc"})
    assert first.status_code == again.status_code == 200
    assert again.json()["event_ids"] == first.json()["event_ids"]
    assert again.json()["replayed"] is True
    other = {"events": [{"event": "click", "product_id": "p3"}]}
    conflict = client.post("/feedback", json=other, headers={"Idempotency-Key": "abc"})
    assert conflict.status_code == 409
    metrics = client.get("/metrics").text
    assert 'shopaug_feedback_events_total{event="click"} 1.0' in metrics


def test_feedback_unknown_product_is_422_naming_it(client: TestClient) -> None:
    response = client.post(
        "/feedback",
        json={
            "events": [
                {"event": "click", "product_id": "p1"},
                {"event": "click", "product_id": "ghost"},
            ]
        },
    )
    assert response.status_code == 422
    assert "'ghost'" in response.text
    assert "'p1'" not in response.text


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"events": [{"event": "click", "product_id": "p1"}] * 6}, "max_batch_events"),
        ({"event": "hover", "product_id": "p1"}, "event"),
        ({"event": "click", "product_id": "p1", "position": 0}, "position"),
        ({"event": "click", "product_id": "p1", "query": "q" * 600}, "max_query_chars"),
        ({"events": []}, "events"),
    ],
)
def test_feedback_invalid_is_422(client: TestClient, body: dict[str, object], needle: str) -> None:
    response = client.post("/feedback", json=body)
    assert response.status_code == 422
    assert needle in response.text


# -- health, readiness, metrics --------------------------------------------------------------


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model_version": "v1", "detail": None}


def test_background_load_turns_ready(tmp_path: Path) -> None:
    # long enough that the first requests surely arrive before it is loaded, on a busy machine
    write_fake_model(tmp_path / "model", "slow", SMALL_CATALOG, load_seconds=5.0)
    with make_client(tmp_path, load_in_background=True) as c:
        assert c.get("/healthz").status_code == 200
        first = c.get("/readyz")
        assert first.status_code == 503
        assert c.get("/search", params={"q": "sofa"}).status_code == 503
        deadline = time.monotonic() + 30
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/readyz").json()["model_version"] == "slow"


def test_missing_model_fails_start_or_reports_not_ready(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="does not exist"), make_client(tmp_path):
        pass
    with make_client(tmp_path, load_in_background=True) as c:
        deadline = time.monotonic() + 30
        while "does not exist" not in c.get("/readyz").text and time.monotonic() < deadline:
            time.sleep(0.05)
        response = c.get("/readyz")
        assert response.status_code == 503
        assert "does not exist" in response.json()["detail"]


def test_metrics_text_has_counters_version_and_backlog(client: TestClient) -> None:
    client.get("/search", params={"q": "sofa"})
    client.get("/search", params={"q": "sofa"})
    client.post("/feedback", json={"events": [{"event": "impression", "product_id": "p1"}] * 3})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'shopaug_http_requests_total{method="GET",route="/search",status="200"} 2.0' in text
    assert 'shopaug_http_request_duration_seconds_count{method="GET",route="/search"} 2.0' in text
    assert 'shopaug_model_info{version="v1"} 1.0' in text
    assert "shopaug_feedback_backlog 3.0" in text


def test_apps_do_not_share_metrics(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path_factory.mktemp("other")
    write_fake_model(other / "model", "v9", SMALL_CATALOG)
    with make_client(run_dir) as first, make_client(other) as second:
        first.get("/search", params={"q": "sofa"})
        text = second.get("/metrics").text
    assert 'route="/search"' not in text
    assert 'shopaug_model_info{version="v9"} 1.0' in text


# -- admin -----------------------------------------------------------------------------------


def test_admin_disabled_without_token(run_dir: Path) -> None:
    with make_client(run_dir) as c:
        response = c.post("/admin/reload", headers=BEARER)
    assert response.status_code == 404
    assert "disabled" in response.text


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": TOKEN}, 401),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        (BEARER, 200),
    ],
)
def test_admin_token(client: TestClient, headers: dict[str, str], status: int) -> None:
    assert client.post("/admin/reload", headers=headers).status_code == status


def test_admin_checks_token_before_body(client: TestClient) -> None:
    assert client.post("/admin/promote", json={}).status_code == 401


def test_promote_swaps_version_and_keeps_old_dirs(
    client: TestClient, run_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    candidate = write_fake_model(tmp_path_factory.mktemp("cand") / "retrained", "v2", SMALL_CATALOG)
    response = client.post("/admin/promote", json={"model_dir": str(candidate)}, headers=BEARER)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "v2"
    assert response.json()["previous_version"] == "v1"
    assert client.get("/search", params={"q": "sofa"}).json()["model_version"] == "v2"
    assert (
        resolve_model_dir(run_dir / CURRENT) == (run_dir / "models" / "v0001-retrained").resolve()
    )
    assert (run_dir / "model" / "fake_model.json").exists()
    assert (candidate / "fake_model.json").exists()
    text = client.get("/metrics").text
    assert 'shopaug_model_info{version="v2"} 1.0' in text
    assert 'version="v1"' not in text
    assert "shopaug_model_swaps_total 1.0" in text


def test_promote_broken_model_changes_nothing(
    client: TestClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    broken = tmp_path_factory.mktemp("broken")
    (broken / "README").write_text("not a model")
    response = client.post("/admin/promote", json={"model_dir": str(broken)}, headers=BEARER)
    assert response.status_code == 422
    assert "still serving v1" in response.text
    missing = client.post(
        "/admin/promote", json={"model_dir": str(broken / "nope")}, headers=BEARER
    )
    assert missing.status_code == 422
    assert client.get("/readyz").json()["model_version"] == "v1"


# -- dependency overrides ----------------------------------------------------------------------


def test_routes_take_their_inputs_from_overridable_dependencies(tmp_path: Path) -> None:
    """No lifespan, no model directory, no database: every input comes from an override."""
    from shopaug.serve import deps
    from shopaug.serve.testing import FakeBackend

    recorded: list[list[str]] = []

    class MemoryStore:
        def record(self, events, idempotency_key=None):
            from shopaug.feedback.store import Acknowledgement

            recorded.append([event.product_id for event in events])
            return Acknowledgement(len(events), tuple(range(1, len(events) + 1)), None)

        def session_history(self, session_id: str, limit: int) -> list[str]:
            return ["p1"] if session_id == "known" else []

    app = create_app(Settings(run_dir=tmp_path / "nothing-here", max_k=3), load_fake_backend)
    app.dependency_overrides[deps.get_backend] = lambda: FakeBackend("v-test", SMALL_CATALOG)
    app.dependency_overrides[deps.get_store] = MemoryStore
    client = TestClient(app)  # not entered: the lifespan never runs

    search = client.get("/search", params={"q": "blue velvet sofa", "k": 3})
    assert search.status_code == 200, search.text
    assert search.json()["model_version"] == "v-test"
    assert ids(search.json()["results"]) == ["p1", "p2", "p5"]
    # the limits come from the app's settings through the same dependency path
    too_many = client.get("/search", params={"q": "sofa", "k": 4})
    assert too_many.status_code == 422 and "max_k" in too_many.text
    ack = client.post("/feedback", json={"event": "click", "product_id": "p2", "query": "sofa"})
    assert ack.status_code == 200 and recorded == [["p2"]]
    session = client.post("/recommend", json={"session_id": "known", "k": 2})
    assert session.status_code == 200 and "p1" not in ids(session.json()["items"])
    assert client.post("/recommend", json={"session_id": "x", "k": 2}).status_code == 404

    app.dependency_overrides.clear()
    assert client.get("/search", params={"q": "sofa"}).status_code == 503  # no model loaded


def test_the_query_limit_is_checked_the_same_way_for_search_and_feedback(client) -> None:
    long = "x" * 600  # max_query_chars is 512 by default
    search = client.post("/search", json={"query": long})
    event = client.post("/feedback", json={"event": "click", "product_id": "p1", "query": long})
    assert search.status_code == event.status_code == 422
    assert search.json()["detail"][0]["loc"] == ["body", "query"]
    assert event.json()["detail"][0]["loc"] == ["body", "query"]
    assert search.json()["detail"][0]["msg"] == event.json()["detail"][0]["msg"]
