"""LambdaMART reranking: candidate features with known values, a model that learns a planted
signal, a round trip through its files, and the config's reranker kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopaug.data.records import Dataset, Product
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
    dataset = Dataset(name="tiny", products=PRODUCTS, queries=[], judgments=[], gains={})
    texts = [f"{p.title} {' '.join(p.category)}" for p in PRODUCTS]
    vectors = np.eye(4)  # product i is the unit vector e_i
    return RerankFeatures(dataset, texts, vectors)


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
