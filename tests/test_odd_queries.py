"""Ordinary odd queries rank, never fail: every kind of served pipeline (dense, dense + BM25 by
RRF or convex fusion, each with and without a LambdaMART reranker) answers a corpus of short and
odd queries with ranked products, in process and through a real uvicorn server; BM25 itself, the
run's BM25 run and the reranker features take the same queries.

The bug these guard (issue 21): bm25s raised ``ValueError: The maximum token ID in the query ...``
whenever no query token survived its tokenizer and stop words ("the", "!!!", an emoji), and the
service answered 500.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipelines import write_reranker
from shopaug.data import load_dataset
from shopaug.encoders.bm25 import BM25Index
from shopaug.models.model_dir import write_hashing_model
from shopaug.retrieval.fusion import FUSION_FILE, bm25_run
from shopaug.retrieval.retrievers import BM25Retriever
from shopaug.serve.settings import Settings

#: A word and a space repeated up to the service's length limit (``max_query_chars``).
MAX_CHARS = Settings.model_fields["max_query_chars"].default

ODD_QUERIES = [
    "the",  # a stop word
    "a",
    "of the and",  # only stop words
    "x",  # one letter
    "!!!",  # punctuation
    "?",
    "-",
    "\U0001f600",  # an emoji
    "\U0001f6cb\ufe0f",  # couch and lamp emoji with a variation selector
    "\u0301",  # a lone combining accent
    "e\u0301",  # a letter with a combining accent
    "\ufe0f",  # a variation selector alone
    "\u202e",  # right-to-left override (a format character)
    "\u200b",  # zero-width space
    "42",  # digits
    "0",
    " ",  # blank
    "xylophonequux",  # a word no product has
    "sofa",  # one ordinary word
    ("sofa " * MAX_CHARS)[: MAX_CHARS - 1],  # one word repeated up to the length limit
    ("the " * MAX_CHARS)[: MAX_CHARS - 1],  # a stop word repeated up to the length limit
]


def test_bm25_answers_every_odd_query_without_error() -> None:
    index = BM25Index(["red velvet sofa", "oak dining table", "blue table lamp"])
    rows, scores = index.search(ODD_QUERIES, 3)
    assert rows.shape == scores.shape == (len(ODD_QUERIES), 3)
    for query, found, found_scores in zip(ODD_QUERIES, rows, scores):
        if query.split()[:1] == ["sofa"]:
            assert found[0] == 0 and np.isfinite(found_scores[0])
        else:  # nothing of the catalog's vocabulary survives the tokenizer
            assert (found == -1).all() and np.isneginf(found_scores).all()
        assert index.score_all(query).shape == (3,)


def test_a_batch_mixing_empty_and_real_queries_keeps_each_querys_rows() -> None:
    index = BM25Index(["red velvet sofa", "oak dining table", "blue table lamp"])
    rows, _ = index.search(["the", "table lamp", "!!!", "sofa"], 2)
    assert rows[0].tolist() == [-1, -1] and rows[2].tolist() == [-1, -1]
    assert rows[1][0] == 2 and rows[3].tolist() == [0, -1]


def test_the_runs_bm25_run_leaves_an_empty_query_empty() -> None:
    retriever = BM25Retriever(["red velvet sofa", "oak dining table"])
    run = bm25_run(retriever, ["p1", "p2"], {"q1": "the", "q2": "sofa", "q3": "\u202e"}, depth=5)
    assert run == {"q1": [], "q2": [("p1", run["q2"][0][1])], "q3": []}


# --- every served kind --------------------------------------------------------------------

DIM = 64
KINDS = ["dense", "rrf", "convex", "dense+reranker", "rrf+reranker", "convex+reranker"]


def _run_dir(root: Path, kind: str) -> Path:
    run = root / kind
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        "data: demo\ntext_fields: [title, category]\nseed: 0\n", encoding="utf-8"
    )
    model = write_hashing_model(run / "model", DIM)
    first_stage = kind.split("+")[0]
    if first_stage == "rrf":
        (model / FUSION_FILE).write_text(json.dumps({"method": "rrf"}), encoding="utf-8")
    elif first_stage == "convex":
        (model / FUSION_FILE).write_text(
            json.dumps({"method": "convex", "weight": 0.5}), encoding="utf-8"
        )
    if kind.endswith("+reranker"):
        write_reranker(model / "reranker")
    return run


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("odd")
    return {kind: _run_dir(root, kind) for kind in KINDS}


@pytest.fixture(scope="module")
def catalog_size() -> int:
    return len(load_dataset("demo").products)


@pytest.mark.parametrize("kind", KINDS)
def test_every_served_kind_ranks_every_odd_query_in_process(
    run_dirs: dict[str, Path], kind: str, catalog_size: int
) -> None:
    from shopaug.serve.catalog_backend import load_catalog_backend

    backend = load_catalog_backend(run_dirs[kind] / "model")
    assert ("reranked" in backend.ranking) == kind.endswith("+reranker")
    assert ("bm25" in backend.ranking) == (not kind.startswith("dense"))
    for query in ODD_QUERIES:
        hits = backend.search(query, 10)
        assert len(hits) == min(10, catalog_size), (kind, query)
        assert len({hit.product_id for hit in hits}) == len(hits)
        assert all(np.isfinite(hit.score) for hit in hits), (kind, query)


@pytest.fixture(scope="module")
def servers(run_dirs: dict[str, Path]) -> Iterator[dict[str, str]]:
    """One real uvicorn server per served kind, on loopback."""
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from shopaug.serve import create_app
    from shopaug.serve.catalog_backend import make_catalog_loader

    started: list[tuple[object, threading.Thread]] = []
    urls: dict[str, str] = {}
    for kind, run in run_dirs.items():
        app = create_app(Settings(run_dir=run), make_catalog_loader(run))
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        service = uvicorn.Server(config)
        thread = threading.Thread(target=service.run, name=f"odd-{kind}", daemon=True)
        thread.start()
        while not service.started:
            if not thread.is_alive():
                raise RuntimeError(f"uvicorn did not start for {kind}")
            time.sleep(0.05)
        port = service.servers[0].sockets[0].getsockname()[1]
        urls[kind] = f"http://127.0.0.1:{port}"
        started.append((service, thread))
    yield urls
    for service, thread in started:
        service.should_exit = True  # type: ignore[attr-defined]
        thread.join(timeout=30)


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.mark.parametrize("kind", KINDS)
def test_every_served_kind_answers_every_odd_query_over_http(
    servers: dict[str, str], kind: str
) -> None:
    base = servers[kind]
    failures = []
    for query in ODD_QUERIES:
        if not query.strip():
            continue  # a blank query is refused with 422 by design (nothing to search for)
        status, body = _get(f"{base}/search?{urllib.parse.urlencode({'q': query, 'k': 5})}")
        if status != 200 or len(body.get("results", [])) != 5:
            failures.append(("GET", query, status, body))
        status, body = _post(f"{base}/search", {"query": query, "k": 5})
        if status != 200 or len(body.get("results", [])) != 5:
            failures.append(("POST", query, status, body))
    assert not failures, failures
