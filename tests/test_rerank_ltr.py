"""LambdaMART reranking: candidate features with known values, a model that learns a planted
signal, a round trip through its files, and the config's reranker kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopaug.data.records import Product
from shopaug.errors import ConfigError
from shopaug.experiment.config import parse_run_config
from shopaug.models.ltr_reranker import LambdaMartReranker, LambdaMartSettings
from shopaug.retrieval.rerank_features import FEATURE_NAMES, RerankFeatures, terms

pytest.importorskip("lightgbm")

PRODUCTS = [
    Product("p1", "Blue Velvet Sofa", category=("Furniture", "Sofas")),
    Product("p2", "Red Leather Sofa", category=("Furniture", "Sofas")),
    Product("p3", "Blue Table Lamp", category=("Lighting", "Lamps")),
    Product("p4", "Oak Dining Table", category=("Furniture", "Tables")),
]


def builder() -> RerankFeatures:
    texts = [f"{p.title} {' '.join(p.category)}" for p in PRODUCTS]
    vectors = np.eye(4)  # product i is the unit vector e_i
    return RerankFeatures(PRODUCTS, texts, vectors)


def test_terms_lowercase_and_drop_plural_s() -> None:
    assert terms("Blue SOFAS, 2 chairs!") == {"blue", "sofa", "2", "chair"}


def test_features_of_a_candidate_list_have_known_values() -> None:
    column = {name: i for i, name in enumerate(FEATURE_NAMES)}
    query_vector = np.array([0.1, 0.9, 0.0, 0.0])  # closest to p2
    features = builder().matrix("blue sofa", query_vector, ["p1", "p2", "p3", "p4"])
    assert features.shape == (4, len(FEATURE_NAMES))
    np.testing.assert_allclose(features[:, column["list_position"]], [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(features[:, column["dense_cosine"]], [0.1, 0.9, 0, 0])
    np.testing.assert_allclose(features[:, column["dense_rank"]], [0.25, 0, 0.5, 0.75])
    np.testing.assert_allclose(features[:, column["title_overlap"]], [1, 0.5, 0.5, 0])
    np.testing.assert_allclose(features[:, column["all_in_title"]], [1, 0, 0, 0])
    np.testing.assert_allclose(features[:, column["category_overlap"]], [0.5, 0.5, 0, 0])
    # two of the four listed candidates are sofas
    np.testing.assert_allclose(features[:, column["class_consensus"]], [0.5, 0.5, 0.25, 0.25])
    share = features[:, column["bm25_share"]]
    assert share[0] == pytest.approx(1.0) and share[3] == 0.0 and 0 < share[1] < 1
    assert (features[:, column["query_terms"]] == 2).all()


def test_lambdamart_learns_a_planted_signal_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    queries, per_query = 60, 20
    features = rng.normal(size=(queries * per_query, 3))
    # grade 2 when feature 1 is high, 1 when middling: the other features are noise
    gains = np.digitize(features[:, 1], [0.3, 1.0])
    reranker = LambdaMartReranker(
        LambdaMartSettings(trees=50, leaves=7, min_data_in_leaf=5), feature_names=("a", "b", "c")
    )
    reranker.fit(features, gains, [per_query] * queries)
    test = rng.normal(size=(per_query, 3))
    scores = reranker.score(test)
    assert np.corrcoef(scores, test[:, 1])[0, 1] > 0.8
    candidates = [(f"p{i}", 0.0) for i in range(per_query)]
    reordered = reranker.rerank(candidates, test)
    assert reordered[0][0] == f"p{int(np.argmax(scores))}"
    reranker.save(tmp_path / "ltr")
    loaded = LambdaMartReranker.load(tmp_path / "ltr")
    np.testing.assert_allclose(loaded.score(test), scores)
    assert loaded.feature_names == ("a", "b", "c")


def test_lambdamart_refuses_bad_input(tmp_path: Path) -> None:
    reranker = LambdaMartReranker()
    with pytest.raises(RuntimeError, match="not trained"):
        reranker.score(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="group sizes"):
        reranker.fit(np.zeros((4, 2)), np.zeros(4, dtype=int), [3])
    with pytest.raises(ValueError, match="grades"):
        reranker.fit(np.zeros((2, 2)), np.array([0, 5]), [2])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "lambdamart.json").write_text("{}", "utf-8")
    with pytest.raises(ConfigError, match=r"lambdamart\.json"):
        LambdaMartReranker.load(tmp_path / "broken")


def test_reranker_kind_is_checked() -> None:
    config = parse_run_config({"reranker": {"enabled": True, "kind": "lambdamart"}}, source="t")
    assert config.reranker.kind == "lambdamart"
    with pytest.raises(ConfigError, match=r"reranker\.kind must be one of"):
        parse_run_config({"reranker": {"kind": "oracle"}}, source="t")


def test_class_prior_counts_training_judgments_and_leaves_a_query_out() -> None:
    from shopaug.retrieval.rerank_features import ClassPrior

    prior = ClassPrior(
        [
            ("blue sofa", "Sofas", 2.0),
            ("blue sofa", "Lamps", 1.0),
            ("sofa bed", "Sofas", 2.0),
        ]
    )
    # "blue": 3 in all, 2 in Sofas; "sofa": 5 in all, 4 in Sofas -> mean(2/3, 4/5)
    assert prior.score("blue sofa", "Sofas") == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert prior.score("green chair", "Sofas") == 0.0
    # without its own judgments, "blue sofa" only knows "sofa bed": "blue" unseen, "sofa" 2/2
    assert prior.score("blue sofa", "Sofas", leave_out=True) == pytest.approx((0 + 1) / 2)
    assert prior.score("blue sofa", "Lamps", leave_out=True) == pytest.approx(0.0)
    column = FEATURE_NAMES.index("class_prior")
    features = builder().matrix("blue sofa", np.ones(4) / 2, ["p1", "p3"], prior=prior)
    assert features[0, column] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert features[1, column] == pytest.approx((1 / 3 + 1 / 5) / 2)


class _FixedEncoder:
    """Every query lands nearest p4 (the oak table), then p1, p2, p3."""

    id = "fixed"
    dim = 4

    def encode(self, texts, *, show_progress: bool = False) -> np.ndarray:
        return np.tile(np.array([0.3, 0.2, 0.1, 0.9], dtype=np.float32), (len(texts), 1))


def _title_reranker(tmp_path: Path):
    """A reranker trained to put products whose title holds every query term first."""
    from shopaug.retrieval.rerank_features import ClassPrior
    from shopaug.retrieval.reranking import FeatureReranker, save_feature_reranker

    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, len(FEATURE_NAMES)))
    column = FEATURE_NAMES.index("all_in_title")
    features[:, column] = rng.integers(0, 2, size=400)
    gains = 2 * features[:, column].astype(int)
    model = LambdaMartReranker(
        LambdaMartSettings(trees=30, leaves=4, min_data_in_leaf=5), feature_names=FEATURE_NAMES
    )
    model.fit(features, gains, [20] * 20)
    prior = ClassPrior([("blue sofa", "Sofas", 2.0)])
    folder = save_feature_reranker(tmp_path / "reranker", model, prior, top_k=3)
    texts = [f"{p.title} {' '.join(p.category)}" for p in PRODUCTS]
    return FeatureReranker.load(folder, PRODUCTS, texts, np.eye(4, dtype=np.float32))


def test_a_saved_reranker_round_trips_and_reorders_only_its_top_k(tmp_path: Path) -> None:
    reranker = _title_reranker(tmp_path)
    assert reranker.top_k == 3 and reranker.prior.judged == [("blue sofa", "Sofas", 2.0)]
    ranked = [("p4", 0.9), ("p3", 0.8), ("p1", 0.7), ("p2", 0.1)]
    reordered = reranker.rerank("blue velvet sofa", np.array([0, 0, 0, 1.0]), ranked)
    assert reordered[0][0] == "p1"  # the only title with every query term
    assert {pid for pid, _ in reordered[:3]} == {"p4", "p3", "p1"}
    assert reordered[3] == ("p2", 0.1)  # beyond top_k: untouched


def test_a_broken_reranker_folder_names_its_file(tmp_path: Path) -> None:
    from shopaug.retrieval.reranking import FeatureReranker

    (tmp_path / "reranker").mkdir()
    (tmp_path / "reranker" / "reranker.json").write_text('{"top_k": "many"}', "utf-8")
    with pytest.raises(ConfigError, match=r"reranker\.json"):
        FeatureReranker.load(tmp_path / "reranker", PRODUCTS, ["a"] * 4, np.eye(4))


def test_the_service_reranks_its_first_stage(tmp_path: Path) -> None:
    from shopaug.serve.catalog_backend import CatalogBackend

    vectors = np.eye(4, dtype=np.float32)
    plain = CatalogBackend("v", PRODUCTS, vectors, _FixedEncoder(), query_cache_size=0)
    assert [h.product_id for h in plain.search("blue velvet sofa", 2)] == ["p4", "p1"]
    reranked = CatalogBackend(
        "v",
        PRODUCTS,
        vectors,
        _FixedEncoder(),
        query_cache_size=0,
        reranker=_title_reranker(tmp_path),
    )
    hits = reranked.search("blue velvet sofa", 2)
    assert hits[0].product_id == "p1" and hits[0].title == "Blue Velvet Sofa"
    assert len(hits) == 2
    assert "reranked (lambdamart)" in reranked.ranking


def _force_selection(monkeypatch, first_stage: str) -> None:
    """Selection picks ``first_stage`` and the gate serves its reranker, whatever validation
    says (on the tiny demo data it would prefer BM25)."""
    from shopaug.experiment import runner

    gate = runner.gate_reranker
    monkeypatch.setattr(
        runner,
        "select_system",
        lambda systems, scored: next(s for s in systems if s.name == first_stage),
    )

    def always_serve(first_stage, reranked, scored):
        _, decision = gate(first_stage, reranked, scored)
        return reranked, {**decision, "served": True}

    monkeypatch.setattr(runner, "gate_reranker", always_serve)


def test_a_run_that_chooses_the_reranker_serves_it(tmp_path: Path, monkeypatch) -> None:
    """Whatever selection chose is what model/ serves: here the zero-shot hybrid + LambdaMART
    (selection forced, since on the tiny demo data validation prefers BM25): the base encoder,
    RRF fusion and the reranker trained on every judged query."""
    import json

    from shopaug.experiment import runner
    from shopaug.experiment.tasks import read_config
    from shopaug.retrieval.fusion import read_fusion
    from shopaug.serve.catalog_backend import load_catalog_backend

    _force_selection(monkeypatch, "zero-shot hybrid")
    mapping, _ = read_config("quick")
    mapping.update(ablation=[], reranker={"enabled": True, "kind": "lambdamart", "top_k": 10})
    mapping["reranker"].update(trees=20, leaves=4)
    config = parse_run_config(mapping, source="test")
    config.show_progress = False
    result = runner.run_experiment(config, tmp_path / "run")
    served = result["served"]
    assert result["selected"]["system"] == "zero-shot hybrid + reranker (lambdamart)"
    assert served["reranker"]["top_k"] == 10
    model = tmp_path / "run" / "model"
    assert (model / "reranker" / "lambdamart.txt").is_file()
    fusion = read_fusion(model)
    assert fusion is not None and fusion.method == "rrf"
    backend = load_catalog_backend(model)
    assert backend.reranker is not None and "reranked" in backend.ranking
    hits = backend.search("sofa", 5)
    assert len(hits) == 5 and len({h.product_id for h in hits}) == 5
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["served"] == served


def test_a_reranker_over_a_fine_tuned_first_stage_serves_the_base_features(
    tmp_path: Path, monkeypatch
) -> None:
    """When the first stage is a trained model, model/reranker/encoder holds the base encoder,
    and the service computes the reranker's features with it (as the run evaluated them), not
    with the fine-tuned query encoder."""
    from shopaug.experiment import runner
    from shopaug.experiment.tasks import read_config
    from shopaug.models.bi_encoder import BiEncoder
    from shopaug.serve.catalog_backend import load_catalog_backend
    from shopaug.serve.runtime import ServingOptions

    _force_selection(monkeypatch, "plain fine-tune")
    mapping, _ = read_config("quick")
    mapping.update(
        ablation=[{"name": "plain fine-tune", "methods": ["positives"]}],
        reranker={"enabled": True, "kind": "lambdamart", "top_k": 10, "trees": 20, "leaves": 4},
        fusion={"enabled": False},
    )
    mapping["train"].update(epochs=1)
    config = parse_run_config(mapping, source="test")
    config.show_progress = False
    result = runner.run_experiment(config, tmp_path / "run")
    assert result["selected"]["system"] == "plain fine-tune + reranker (lambdamart)"
    served = result["served"]
    assert served["reranker"]["top_k"] == 10 and "features_encoder" in served["reranker"]
    model = tmp_path / "run" / "model"
    assert (model / "reranker" / "encoder").is_dir()
    # torch: the features' encoder is compared with the base model's own vectors
    backend = load_catalog_backend(model, ServingOptions(encoder_runtime="torch"))
    reranker = backend.reranker
    assert reranker is not None and reranker.query_encoder is not None
    base = BiEncoder(None).encode(["modern sofa"])[0]
    np.testing.assert_allclose(reranker.query_encoder.encode(["modern sofa"])[0], base, atol=1e-5)
    assert not np.allclose(backend.query_vector("modern sofa"), base, atol=1e-3)
    hits = backend.search("sofa", 5)
    assert len(hits) == 5 and len({h.product_id for h in hits}) == 5
