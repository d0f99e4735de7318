"""A corpus with planted personal data: none of it reaches the feedback store, the samples file
or the outgoing LLM request; with scrubbing off it does (so the checks can fail)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("phonenumbers")
pytest.importorskip("stdnum")

from fake_openai_server import FakeOpenAIServer
from shopaug.augment.samples import read_samples, samples_frame, write_samples

#: (text with planted data, the planted values, counts the scrubber must report)
CORPUS: list[tuple[str, tuple[str, ...], dict[str, int]]] = [
    ("blue velvet sofa for jane.doe@example.com", ("jane.doe@example.com",), {"email": 1}),
    ("oak desk call (415) 555-2671", ("(415) 555-2671", "555-2671"), {"phone": 1}),
    ("lamp paid 4111 1111 1111 1111", ("4111 1111 1111 1111",), {"card": 1}),
    ("rug refund to DE89 3704 0044 0532 0130 00", ("DE89 3704 0044 0532 0130 00",), {"iban": 1}),
    ("bed ship to 12 Main St Apt 4B", ("12 Main St",), {"address": 1}),
    ("3-seat sofa 84 inch 60x120", (), {}),  # product text, nothing to scrub
]
PLANTED = [value for _, values, _ in CORPUS for value in values]
EXPECTED_COUNTS = {"email": 1, "phone": 1, "card": 1, "iban": 1, "address": 1}


def leaked(blob: str) -> list[str]:
    """Planted values found in ``blob``, written as planted or without spaces."""
    compact = blob.replace(" ", "")
    return [value for value in PLANTED if value in blob or value.replace(" ", "") in compact]


def database_text(path: Path) -> str:
    """Every value of every table of a SQLite file, and the raw bytes of the file and its
    write-ahead log, as one string."""
    raw = "".join(
        file.read_bytes().decode("utf-8", "replace")
        for file in sorted(path.parent.glob(path.name + "*"))
    )
    connection = sqlite3.connect(path)
    try:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        rows = [
            repr(row)
            for table in tables
            if not table.startswith("sqlite_")
            for row in connection.execute(f'SELECT * FROM "{table}"')
        ]
    finally:
        connection.close()
    return "\n".join([*rows, raw])


@pytest.mark.parametrize("scrub", [True, False])
def test_feedback_store_keeps_no_planted_data(tmp_path: Path, scrub: bool) -> None:
    pytest.importorskip("sqlalchemy")
    from shopaug.feedback.store import FeedbackEvent, FeedbackStore

    path = tmp_path / "feedback.sqlite"
    store = FeedbackStore(f"sqlite:///{path}", scrub_pii=scrub)
    events = [FeedbackEvent("click", "p1", query=text, position=1) for text, _, _ in CORPUS]
    store.record(events, idempotency_key="k1")
    counted = dict(store.scrubbed)
    again = store.record(events, idempotency_key="k1")  # a retry matches the scrubbed first
    store.close()
    assert again.replayed
    stored = database_text(path)
    if scrub:
        assert leaked(stored) == []
        assert counted == EXPECTED_COUNTS  # counts are per request received, replays included
        assert "oak desk call [PHONE]" in stored
        assert "3-seat sofa 84 inch 60x120" in stored
    else:
        assert leaked(stored) == PLANTED
        assert not store.scrubbed


def test_feedback_route_stores_scrubbed_queries(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from shopaug.serve import Settings, create_app
    from shopaug.serve.testing import SMALL_CATALOG, load_fake_backend, write_fake_model

    write_fake_model(tmp_path / "model", "v1", SMALL_CATALOG)
    product = SMALL_CATALOG[0]["id"]
    body = {
        "events": [
            {"event": "click", "product_id": product, "query": text, "position": 1}
            for text, _, _ in CORPUS
        ]
    }
    with TestClient(create_app(Settings(run_dir=tmp_path), load_fake_backend)) as client:
        response = client.post("/feedback", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(CORPUS)
    assert leaked(database_text(tmp_path / "feedback.sqlite")) == []


def _samples() -> pd.DataFrame:
    rows: list[dict[str, object]] = [
        {
            "query_id": f"q{index}",
            "query": text,
            "product_id": "p1",
            "label": 1,
            "kind": "positive",
            "method": "synthetic-queries",
            "source": "test",
            "seed": 0,
            "score": float("nan"),
            "rank": -1,
            "product_text": f"variant of {text}",
        }
        for index, (text, _, _) in enumerate(CORPUS)
    ]
    return samples_frame(rows)


def test_samples_file_keeps_no_planted_data(tmp_path: Path) -> None:
    frame = _samples()
    write_samples(frame, tmp_path / "samples.parquet")
    written = read_samples(tmp_path / "samples.parquet")
    assert leaked(written.to_csv()) == []
    assert written["query"].tolist()[1] == "oak desk call [PHONE]"
    assert written["product_text"].tolist()[-1] == "variant of 3-seat sofa 84 inch 60x120"
    assert leaked(frame.to_csv()) == PLANTED  # the caller's frame is not changed

    write_samples(frame, tmp_path / "raw.parquet", scrub_pii=False)
    assert leaked(read_samples(tmp_path / "raw.parquet").to_csv()) == PLANTED


@pytest.mark.parametrize("chat", [False, True])
def test_llm_request_carries_no_planted_data(chat: bool) -> None:
    pytest.importorskip("httpx")
    from shopaug.llm.openai_compatible import OpenAICompatibleGenerator

    prompts = [f"Product: {text} (Sofas)\nQuery:" for text, _, _ in CORPUS]
    with FakeOpenAIServer() as server:
        with OpenAICompatibleGenerator(server.base_url, "fake", chat=chat) as generator:
            completions = generator.generate(
                prompts, max_tokens=8, temperature=0.0, seed=1, stop=["\n"]
            )
        sent = json.dumps([request.body for request in server.requests])
    assert len(completions) == len(CORPUS)
    assert leaked(sent) == []
    assert "[EMAIL]" in sent and "[IBAN]" in sent
    assert dict(generator.scrubbed) == EXPECTED_COUNTS


def test_llm_request_unscrubbed_when_turned_off() -> None:
    pytest.importorskip("httpx")
    from shopaug.llm.openai_compatible import OpenAICompatibleGenerator

    prompts = [f"Product: {text}\nQuery:" for text, _, _ in CORPUS]
    with FakeOpenAIServer() as server:
        with OpenAICompatibleGenerator(server.base_url, "fake", scrub_pii=False) as generator:
            generator.generate(prompts, max_tokens=8, temperature=0.0, seed=1, stop=["\n"])
        sent = json.dumps([request.body for request in server.requests])
    assert leaked(sent) == PLANTED
    assert not generator.scrubbed
