"""The served pipeline (dense + BM25 fusion, LambdaMART over the top k) after its speed-up,
against the per-request code it replaced, written out here in plain Python: bm25s's own
tokenizer and retrieval, the dict-of-tuples RRF and convex fusions, the per-candidate feature
loop. On the demo catalog every ranking and every score must be the same; each stage must run
once per request; and ``/metrics`` must show every stage after a search."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lightgbm")
pytest.importorskip("fastapi")

import bm25s
from fastapi.testclient import TestClient

from shopaug.data import load_dataset
from shopaug.encoders.bm25 import BM25Index
from shopaug.models.ltr_reranker import LambdaMartReranker, LambdaMartSettings
from shopaug.models.model_dir import write_hashing_model
from shopaug.retrieval.fusion import FUSION_FILE, FusionSpec
from shopaug.retrieval.rerank_features import (
    CONSENSUS_DEPTH,
    FEATURE_NAMES,
    ClassPrior,
    RerankFeatures,
    terms,
)
from shopaug.retrieval.reranking import RERANKER_DIR, FeatureReranker, save_feature_reranker
from shopaug.serve import Settings, create_app
from shopaug.serve.catalog_backend import CatalogBackend, CatalogLoader
from shopaug.serve.metrics import SEARCH_STAGES

FIELDS = ("title", "category")
#: Ordinary odd queries: stop words only, punctuation, an emoji, a combining mark, format
#: characters, digits, one letter, one word repeated.
ODD_QUERIES = [
    "the",
    "a",
    "x",
    "!!!",
    "\U0001f600",
    "\u0301",
    "\ufe0f",
    "\u202e",
    "42",
    "rug " * 30,
]
#: The served pipelines compared: (fusion, reranker).
PIPELINES = [
    ("rrf", True),
    ("convex", True),
    ("rrf", False),
    ("convex", False),
    (None, True),
]


@pytest.fixture(scope="module")
def demo():
    return load_dataset("demo")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, demo) -> Path:
    """A demo run whose model is the hashing model, with a LambdaMART reranker (top 20)
    trained on the demo judgments of the dense candidates."""
    run = tmp_path_factory.mktemp("pipeline") / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: demo\ntext_fields: [title, category]\nseed: 0\n")
    write_hashing_model(run / "model", 256)
    loader = CatalogLoader(run)
    dense = loader(run / "model")
    assert isinstance(dense, CatalogBackend)
    texts = demo.product_texts(FIELDS)
    features = RerankFeatures(demo.products, texts, dense.item_vectors)
    qrels = demo.qrels()
    prior = ClassPrior(
        (query.text, features.leaf(pid), float(gain))
        for query in demo.queries
        for pid, gain in qrels.get(query.id, {}).items()
        if gain > 0
    )
    blocks, gains, groups = [], [], []
    for query in demo.queries:
        hits = dense.search(query.text, 20)
        products = [hit.product_id for hit in hits]
        vector = dense.query_vector(query.text)
        blocks.append(features.matrix(query.text, vector, products, prior=prior, leave_out=True))
        gains += [int(min(2, qrels.get(query.id, {}).get(pid, 0))) for pid in products]
        groups.append(len(products))
    model = LambdaMartReranker(
        LambdaMartSettings(trees=20, leaves=4, min_data_in_leaf=5), feature_names=FEATURE_NAMES
    )
    model.fit(np.vstack(blocks), np.array(gains), groups)
    save_feature_reranker(run / "reranker", model, prior, top_k=20)
    return run


def model_dir(run: Path, fusion: str | None, reranked: bool) -> Path:
    """``run/model-<fusion>-<reranked>``: the hashing model with that fusion and reranker."""
    import shutil

    folder = run / f"model-{fusion}-{reranked}"
    if not folder.is_dir():
        shutil.copytree(run / "model", folder)
        if fusion is not None:
            spec = FusionSpec("convex", weight=0.4) if fusion == "convex" else FusionSpec("rrf")
            (folder / FUSION_FILE).write_text(__import__("json").dumps(spec.to_json()))
        if reranked:
            shutil.copytree(run / "reranker", folder / RERANKER_DIR)
    return folder


@pytest.fixture(scope="module")
def loader(run_dir: Path, demo) -> CatalogLoader:
    return CatalogLoader(run_dir, dataset=demo, query_cache_size=0)


# -- the code the speed-up replaced, in plain Python -------------------------------------------


class ReferenceBM25:
    """bm25s as the service called it: tokenize the query, retrieve the top k."""

    def __init__(self, texts: list[str]) -> None:
        import Stemmer

        self.stemmer = Stemmer.Stemmer("english")
        self.size = len(texts)
        self.model = bm25s.BM25(k1=1.5, b=0.75)
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=self.stemmer, show_progress=False)
        self.model.index(tokens, show_progress=False)

    def tokens(self, query: str) -> list[str]:
        return bm25s.tokenize(
            [query], stopwords="en", stemmer=self.stemmer, show_progress=False, return_ids=False
        )[0]

    def ranked(self, query: str, k: int) -> list[tuple[int, float]]:
        tokens = self.tokens(query)
        if not tokens:
            return []
        rows, scores = self.model.retrieve(
            [tokens], k=min(k, self.size), show_progress=False, n_threads=1
        )
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if s > 0]

    def scores(self, query: str) -> np.ndarray:
        tokens = self.tokens(query)
        if not tokens:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.model.get_scores(tokens), dtype=np.float32)


def reference_rrf(runs, depth, rrf_k=60.0):
    scores: dict[str, float] = {}
    for run in runs:
        for rank, (pid, _) in enumerate(run, start=1):
            scores[pid] = scores.get(pid, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:depth]


def reference_convex(dense, bm25, weight, depth):
    def normalised(ranked):
        if not ranked:
            return {}
        values = [score for _, score in ranked]
        low, high = min(values), max(values)
        span = high - low
        return {pid: (score - low) / span if span > 0 else 1.0 for pid, score in ranked}

    a, b = normalised(dense), normalised(bm25)
    scores = {
        pid: weight * a.get(pid, 0.0) + (1.0 - weight) * b.get(pid, 0.0) for pid in a.keys() | b
    }
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:depth]


def reference_features(products, texts, vectors, bm25, query, vector, rows, prior, leave_out):
    """The per-candidate loop of the features (before vectorising)."""

    def overlap(q, t):
        return len(q & t) / len(q) if q else 0.0

    n = len(rows)
    leaf = [p.category[-1] if p.category else "" for p in products]
    cosine = vectors[rows] @ vector
    scores = bm25.scores(query)[rows].astype(np.float64)
    top = float(scores.max())
    words = terms(query)
    leaves = [leaf[r] for r in rows]
    listed = leaves[:CONSENSUS_DEPTH]
    by_dense = [leaves[i] for i in np.argsort(-cosine, kind="stable")[:CONSENSUS_DEPTH]]

    def ranks(values):
        order = np.argsort(-values, kind="stable")
        out = np.empty(len(values))
        out[order] = np.arange(len(values))
        return out

    features = np.zeros((n, len(FEATURE_NAMES)))
    features[:, 0] = np.arange(n) / n
    features[:, 1] = cosine
    features[:, 2] = ranks(cosine) / n
    features[:, 3] = scores
    features[:, 4] = scores / top if top > 0 else 0.0
    features[:, 5] = ranks(scores) / n
    for i, row in enumerate(rows):
        title = terms(products[row].title)
        features[i, 6] = overlap(words, title)
        features[i, 7] = overlap(words, terms(" ".join(products[row].category)))
        features[i, 8] = overlap(words, terms(texts[row]))
        features[i, 9] = float(bool(words) and words <= title)
        here = leaves[i]
        features[i, 10] = sum(x == here for x in listed) / len(listed) if here else 0.0
        features[i, 11] = sum(x == here for x in by_dense) / len(by_dense) if here else 0.0
        features[i, 13] = len(title)
        if prior is not None:
            features[i, 14] = reference_prior(prior, query, here, leave_out)
    features[:, 12] = len(words)
    return features


def reference_prior(prior: ClassPrior, query: str, leaf: str, leave_out: bool) -> float:
    words = terms(query)
    if not words or not leaf:
        return 0.0
    own = [(item, g) for q, item, g in prior.judged if q == query] if leave_out else []
    own_total = sum(g for _, g in own)
    own_leaf = sum(g for item, g in own if item == leaf)
    total_of, in_leaf_of = _prior_counts(prior)
    shares = []
    for term in words:
        total = total_of.get(term, 0.0) - own_total
        in_leaf = in_leaf_of[term].get(leaf, 0.0) - own_leaf if term in in_leaf_of else 0
        shares.append(in_leaf / total if total > 0 else 0.0)
    return float(np.mean(shares))


_COUNTS: dict[int, tuple[dict[str, float], dict[str, dict[str, float]]]] = {}


def _prior_counts(prior: ClassPrior) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Gain by query term, and by term and leaf, of the prior's judgments (counted once)."""
    if id(prior) not in _COUNTS:
        total_of: dict[str, float] = {}
        in_leaf_of: dict[str, dict[str, float]] = {}
        for q, item, gain in prior.judged:
            for term in terms(q):
                total_of[term] = total_of.get(term, 0.0) + gain
                in_leaf_of.setdefault(term, {})
                in_leaf_of[term][item] = in_leaf_of[term].get(item, 0.0) + gain
        _COUNTS[id(prior)] = (total_of, in_leaf_of)
    return _COUNTS[id(prior)]


def reference_search(backend: CatalogBackend, demo, bm25: ReferenceBM25, query, k, category):
    """The served ranking as the service computed it before: dicts of tuples, loops."""
    products = demo.products
    texts = demo.product_texts(FIELDS)
    allowed = None
    if category is not None:
        wanted = category.lower()
        allowed = np.array(
            [r for r, p in enumerate(products) if wanted in {c.lower() for c in p.category}],
            dtype=np.int64,
        )
    vector = backend.query_vector(query)
    reranker = backend.reranker
    depth = k if reranker is None else max(k, reranker.top_k)

    def dense(n):
        rows, scores = backend._ranker.search(vector, n, allowed)
        return [(products[r].id, float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]

    if backend.fusion is None:
        ranked = dense(depth)
    else:
        fusion = backend.fusion
        if allowed is None:
            lexical = bm25.ranked(query, fusion.depth)
        else:
            keep = set(allowed.tolist())
            lexical = [(r, s) for r, s in bm25.ranked(query, len(products)) if r in keep]
        lexical_run = [(products[r].id, s) for r, s in lexical[: fusion.depth]]
        if fusion.method == "rrf":
            ranked = reference_rrf([dense(fusion.depth), lexical_run], depth)
        else:
            ranked = reference_convex(dense(fusion.depth), lexical_run, fusion.weight, depth)
    if reranker is not None and ranked:
        head = ranked[: reranker.top_k]
        row = {p.id: r for r, p in enumerate(products)}
        rows = np.array([row[pid] for pid, _ in head])
        features = reference_features(
            products, texts, reranker.features.item_vectors, bm25, query, vector, rows,
            reranker.prior, False,
        )  # fmt: skip
        scores = reranker.model.score(features)
        order = np.argsort(-scores, kind="stable")
        ranked = [(head[i][0], float(scores[i])) for i in order] + ranked[reranker.top_k :]
    return ranked[:k]


# -- the tests -------------------------------------------------------------------------------


def test_bm25_tokens_and_rankings_are_bm25s_own(demo) -> None:
    texts = demo.product_texts(FIELDS)
    index, reference = BM25Index(texts), ReferenceBM25(texts)
    queries = [q.text for q in demo.queries] + ODD_QUERIES + ["Chairs CHAIRS", "café l'amour"]
    for query in queries:
        assert index.tokens(query) == reference.tokens(query), query
        np.testing.assert_array_equal(index.score_all(query), reference.scores(query))
        for k in (10, 200, len(texts) + 3):
            rows, scores = index.search([query], k)
            found = rows[0] >= 0
            expected = reference.ranked(query, k)
            assert rows[0][found].tolist() == [r for r, _ in expected], (query, k)
            assert scores[0][found].tolist() == [s for _, s in expected]


def test_features_over_rows_are_the_per_candidate_loop(demo, run_dir: Path) -> None:
    texts = demo.product_texts(FIELDS)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(texts), 8)).astype(np.float32)
    builder = RerankFeatures(demo.products, texts, vectors)
    bm25 = ReferenceBM25(texts)
    reranker = FeatureReranker.load(run_dir / "reranker", demo.products, texts, vectors)
    for i, query in enumerate([q.text for q in demo.queries] + ODD_QUERIES):
        vector = rng.normal(size=8).astype(np.float32)
        rows = rng.choice(len(texts), 30, replace=False)
        leave_out = bool(i % 2)
        expected = reference_features(
            demo.products, texts, vectors, bm25, query, vector, rows, reranker.prior, leave_out
        )
        got = builder.matrix_of_rows(query, vector, rows, prior=reranker.prior, leave_out=leave_out)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("fusion", "reranked"), PIPELINES)
def test_served_rankings_and_scores_are_unchanged(
    loader: CatalogLoader, run_dir: Path, demo, fusion, reranked
) -> None:
    backend = loader(model_dir(run_dir, fusion, reranked))
    assert isinstance(backend, CatalogBackend)
    assert (backend.reranker is not None) == reranked
    bm25 = ReferenceBM25(demo.product_texts(FIELDS))
    queries = [q.text for q in demo.queries] + ODD_QUERIES
    for query in queries:
        for k, category in ((10, None), (30, None), (5, "Lighting")):
            got = [(h.product_id, h.score) for h in backend.search(query, k, _filters(category))]
            assert got == reference_search(backend, demo, bm25, query, k, category), query


def _filters(category: str | None) -> dict[str, str] | None:
    return None if category is None else {"category": category}


class _Counting:
    """Counts the texts an encoder is asked to encode."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.id, self.dim = encoder.id, encoder.dim
        self.texts: list[str] = []

    def encode(self, texts, *, show_progress: bool = False):
        self.texts += list(texts)
        return self.encoder.encode(texts, show_progress=show_progress)


def test_each_stage_runs_once_per_request(
    loader: CatalogLoader, run_dir: Path, monkeypatch
) -> None:
    """One query encoding (the reranker's features reuse the first stage's vector, even with
    the query cache off) and one BM25 scoring of the catalog (shared by the fusion and the
    features) per search."""
    served = loader(model_dir(run_dir, "rrf", True))
    assert isinstance(served, CatalogBackend) and served.reranker is not None
    counting = _Counting(served._encoder)
    backend = CatalogBackend(
        served.version,
        loader.catalog().products,
        served.item_vectors,
        counting,
        query_cache_size=0,
        fusion=served.fusion,
        bm25=loader.bm25(),
        reranker=served.reranker,
    )
    scored: list[str] = []
    score_all = BM25Index.score_all

    def counted(index: BM25Index, query: str) -> np.ndarray:
        scored.append(query)
        return score_all(index, query)

    monkeypatch.setattr(BM25Index, "score_all", counted)
    hits = backend.search("brass floor lamp", 10)
    assert len(hits) == 10
    assert counting.texts == ["brass floor lamp"]
    assert scored == ["brass floor lamp"]


@pytest.fixture
def client(run_dir: Path) -> Iterator[TestClient]:
    served = run_dir.parent / "served"
    if not served.is_dir():
        served.mkdir()
        (served / "config.yaml").write_text((run_dir / "config.yaml").read_text())
        import shutil

        shutil.copytree(model_dir(run_dir, "rrf", True), served / "model")
    settings = Settings(run_dir=served)
    with TestClient(create_app(settings, CatalogLoader(served))) as test_client:
        yield test_client


def test_metrics_expose_every_stage_of_a_search(client: TestClient) -> None:
    assert client.get("/search", params={"q": "brass floor lamp", "k": 5}).status_code == 200
    response = client.post("/search", json={"query": "\U0001f600", "k": 3})
    assert response.status_code == 200 and len(response.json()["results"]) == 3
    text = client.get("/metrics").text
    for stage in SEARCH_STAGES:
        count = re.search(rf'shopaug_search_stage_seconds_count{{stage="{stage}"}} (\S+)', text)
        assert count is not None, stage
        assert float(count.group(1)) == 2.0, stage
        # prometheus_client versions write the two labels in either order
        infinite = re.search(
            rf'shopaug_search_stage_seconds_bucket{{(?:le="\+Inf",stage="{stage}"|'
            rf'stage="{stage}",le="\+Inf")}} (\S+)',
            text,
        )
        assert infinite is not None and float(infinite.group(1)) == 2.0, stage


def test_a_search_answers_the_same_json_as_before(client: TestClient) -> None:
    """The route serialises the response itself; the body keeps the schema's fields."""
    body = client.get("/search", params={"q": "rug", "k": 2}).json()
    assert set(body) == {"model_version", "query", "results"} and body["query"] == "rug"
    assert [r["rank"] for r in body["results"]] == [1, 2]
    assert set(body["results"][0]) == {"rank", "product_id", "score", "title"}
